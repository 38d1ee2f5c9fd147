"""SqliteStore on real files: upserts, known ids, transactions, threads, lease, counters, errors."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from collector.config import InvalidMode, Mode
from collector.models import CodeMark
from collector.store import SqliteStore, Store, StoreError, StoreFatal
from collector.store.sqlite import translate_sqlite_error
from tests.conftest import REPO
from tests.store.helpers import T0, FakeClock, article, in_child, rejected

CODE = "LEGITEXT000099900001"
OTHER = "LEGITEXT000099900002"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "collector.sqlite3"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db: Path, clock: FakeClock) -> Iterator[SqliteStore]:
    s = SqliteStore(db, clock=clock)
    yield s
    s.close()


def rows(db: Path, table: str) -> list[dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1")]


# ---- schema -------------------------------------------------------------------------------------

def migration_columns() -> dict[str, list[str]]:
    """Column names per table, read from the reference migrations."""
    sql = "\n".join(p.read_text() for p in sorted((REPO / "supabase" / "migrations").glob("*.sql")))
    tables: dict[str, list[str]] = {}
    for name, body in re.findall(r"create table if not exists public\.(\w+) \((.*?)\n\);", sql, re.S):
        tables[name] = [line.split()[0] for line in body.strip().splitlines() if line.strip()]
    return tables


def test_creates_parent_directory_and_the_same_columns_as_the_migration(store: SqliteStore, db: Path) -> None:
    assert db.is_file() and isinstance(store, Store)
    assert store.label == f"SQLite ({db})"
    expected = {t: c for t, c in migration_columns().items() if t != "files_queue"}  # the workers' table
    assert len(expected) == 10  # 0001: 7 tables, 0002: the change log and its cursors, 0006: the dump state
    with sqlite3.connect(db) as conn:
        for table, columns in expected.items():
            assert [r[1] for r in conn.execute(f"PRAGMA table_info({table})")] == columns, table
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_keeps_the_data(db: Path) -> None:
    first = SqliteStore(db)
    first.commit_batch([article(1)])
    first.close()
    second = SqliteStore(db)
    assert second.count_articles() == 1
    second.close()


# ---- articles -----------------------------------------------------------------------------------

def test_same_batch_twice_gives_one_row_each_with_identical_content(store: SqliteStore, db: Path) -> None:
    batch = [article(n) for n in range(1, 51)]
    store.commit_batch(batch)
    first = rows(db, "legifrance_articles")
    store.commit_batch(batch)
    assert rows(db, "legifrance_articles") == first
    assert len(first) == 50 and store.count_articles() == 50
    one = next(r for r in first if r["id"] == batch[0].id)
    assert one["text"] == batch[0].text and one["date_debut"] == "2001-01-02"
    assert one["date_fin"] is None and one["collected_at"] == "2026-11-28T15:00:00.000000+00:00"


def test_replay_changes_only_collected_at_and_new_content_wins(store: SqliteStore, db: Path) -> None:
    a = article(1)
    store.commit_batch([a])
    later = replace(a, collected_at=T0 + timedelta(hours=1))
    store.commit_batch([later])
    (row,) = rows(db, "legifrance_articles")
    assert row["collected_at"].startswith("2026-11-28T16:00")
    store.commit_batch([replace(a, text="Nouveau texte", content_sha256="x")])
    (row,) = rows(db, "legifrance_articles")
    assert row["text"] == "Nouveau texte" and row["content_sha256"] == "x"


def test_known_ids_are_stored_plus_rejected_below_the_threshold(store: SqliteStore) -> None:
    store.commit_batch(
        [article(1), article(2), article(3, OTHER)],
        [rejected(10, 40), rejected(11, 99), rejected(12, 0, reason="null_article"), rejected(13, 30, OTHER)],
    )
    ids = lambda *ns: {f"LEGIARTI{n:012d}" for n in ns}  # noqa: E731
    assert store.known_ids(CODE, 100) == ids(1, 2, 10, 11, 12)
    # Lowering the threshold makes the rejected ids that would now pass fetchable again.
    assert store.known_ids(CODE, 50) == ids(1, 2, 10, 12)
    assert store.known_ids(CODE, 0) == ids(1, 2)
    assert store.known_ids(OTHER, 100) == ids(3, 13)
    assert store.known_ids("LEGITEXT000099900009", 100) == set()
    assert store.count_rejected() == 4


def test_a_stored_article_is_no_longer_rejected(store: SqliteStore) -> None:
    store.commit_batch([], [rejected(1, 60), rejected(2, 60)])
    store.commit_batch([article(1)])  # refetched after the threshold went down, now kept
    assert store.count_rejected() == 1
    # In one batch, an id both stored and rejected is stored.
    store.commit_batch([article(2)], [rejected(2, 10)])
    assert store.count_rejected() == 0
    assert store.known_ids(CODE, 100) == {article(1).id, article(2).id}


def test_progress_is_committed_with_the_data_and_rolled_back_with_it(store: SqliteStore) -> None:
    run = store.start_run(Mode.MASSIVE, [CODE])
    store.commit_batch([article(1)], [rejected(5, 3)], run_id=run, run_progress={"stored": 1, "at": T0})
    assert store.last_runs()[0]["progress"] == {"stored": 1, "at": "2026-11-28T15:00:00.000000+00:00"}
    bad = replace(rejected(6, 3), reason=None)  # type: ignore[arg-type]  # NOT NULL violation
    with pytest.raises(StoreError):
        store.commit_batch([article(2)], [bad], run_id=run, run_progress={"stored": 2})
    assert store.count_articles() == 1 and store.count_rejected() == 1
    assert store.last_runs()[0]["progress"]["stored"] == 1


def test_iter_article_ids_pages_through_everything_in_order(store: SqliteStore) -> None:
    store.commit_batch([article(n) for n in range(250, 0, -1)])
    ids = list(store.iter_article_ids(page_size=64))
    assert ids == sorted(article(n).id for n in range(1, 251))


def test_concurrent_commits_and_reads_from_threads(store: SqliteStore, db: Path) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(9)

    def writer(k: int) -> None:
        try:
            start.wait(timeout=30)
            for b in range(10):
                base = (k * 10 + b) * 20
                store.commit_batch([article(n) for n in range(base, base + 25)])  # overlaps the next batch
                store.add_requests(["d:2026-11-28"], 1)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            start.wait(timeout=30)
            for _ in range(40):
                store.known_ids(CODE, 100)
                store.count_articles()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert store.count_articles() == 8 * 10 * 20 + 5
    assert len(rows(db, "legifrance_articles")) == 1605
    assert store.get_requests(["d:2026-11-28"]) == {"d:2026-11-28": 80}


def test_two_stores_on_one_file_share_data_and_counters(db: Path) -> None:
    a, b = SqliteStore(db), SqliteStore(db)
    try:
        a.commit_batch([article(1)])
        b.commit_batch([article(2)])
        a.add_requests(["h:x"], 2)
        b.add_requests(["h:x"], 3)
        assert a.count_articles() == b.count_articles() == 2
        assert b.get_requests(["h:x", "h:y"]) == {"h:x": 5, "h:y": 0}
    finally:
        a.close()
        b.close()


# ---- marks, runs, counters, state ----------------------------------------------------------------

def test_code_marks_round_trip(store: SqliteStore) -> None:
    mark = CodeMark(CODE, "Code fictif", "2026-11-01", "2026-11-02", T0)
    store.set_code_mark(mark)
    store.set_code_mark(CodeMark(OTHER, None, None, None, None))
    assert store.get_code_marks() == {CODE: mark, OTHER: CodeMark(OTHER, None, None, None, None)}
    store.set_code_mark(replace(mark, modif_date="2026-11-20"))
    assert store.get_code_marks()[CODE].modif_date == "2026-11-20"


def test_runs_newest_first_with_summary(store: SqliteStore, clock: FakeClock) -> None:
    first = store.start_run("MAINTENANCE", [CODE])
    clock.advance(60)
    second = store.start_run(Mode.MASSIVE, [CODE, OTHER])
    store.finish_run(first, {"stored": 3, "errors": []})
    runs = store.last_runs(10)
    assert [r["id"] for r in runs] == [second, first]
    assert runs[0]["mode"] == "MASSIVE" and runs[0]["codes"] == [CODE, OTHER] and runs[0]["finished_at"] is None
    assert runs[1]["summary"] == {"stored": 3, "errors": []}
    assert runs[1]["finished_at"] == "2026-11-28T15:01:00.000000+00:00"
    assert len(store.last_runs(1)) == 1


def test_request_counters_add_atomically(store: SqliteStore) -> None:
    store.add_requests(["h:2026-11-28T15", "d:2026-11-28"], 3)
    store.add_requests(["h:2026-11-28T15", "h:2026-11-28T15"], 2)  # a key counts once per call
    store.add_requests(["d:2026-11-28"], 0)
    assert store.get_requests(["h:2026-11-28T15", "d:2026-11-28", "d:2026-11-29"]) == {
        "h:2026-11-28T15": 5,
        "d:2026-11-28": 3,
        "d:2026-11-29": 0,
    }
    with pytest.raises(ValueError):
        store.add_requests(["d:2026-11-28"], -1)


def test_state_row_round_trip(store: SqliteStore) -> None:
    assert store.load_state() is None
    store.save_state({"running": True, "mode": Mode.MASSIVE, "updated_at": T0, "pid": 42, "host": "h", "note": [1]})
    assert store.load_state() == {
        "running": True,
        "mode": "MASSIVE",
        "updated_at": "2026-11-28T15:00:00.000000+00:00",
        "pid": 42,
        "host": "h",
        "note": [1],
    }
    store.save_state({"running": False, "mode": "MAINTENANCE", "updated_at": "2026-11-28T16:00:00Z"})
    state = store.load_state()
    assert state is not None and state["running"] is False and state["mode"] == "MAINTENANCE"
    assert state["updated_at"] == "2026-11-28T16:00:00.000000+00:00" and "note" not in state
    assert len(rows(store.path, "collector_state")) == 1
    with pytest.raises(InvalidMode):
        store.save_state({"running": True, "mode": "TURBO"})


# ---- lease --------------------------------------------------------------------------------------

def test_lease_two_owners_expiry_renewal_release(store: SqliteStore, clock: FakeClock) -> None:
    a = store.acquire_lease("A", 30)
    assert a.acquired and a.owner == "A" and a.expires_at == T0 + timedelta(seconds=30)
    b = store.acquire_lease("B", 30)
    assert not b.acquired and b.owner == "A" and b.expires_at == a.expires_at
    clock.advance(20)
    renewed = store.acquire_lease("A", 30)  # only the holder renews
    assert renewed.acquired and renewed.expires_at == T0 + timedelta(seconds=50)
    clock.advance(29)
    assert not store.acquire_lease("B", 30).acquired  # A's renewal still runs
    clock.advance(1)  # exactly at expiry: free
    taken = store.acquire_lease("B", 30)
    assert taken.acquired and taken.owner == "B"
    assert not store.acquire_lease("A", 30).acquired
    store.release_lease("A")  # not the holder: nothing happens
    assert not store.acquire_lease("A", 30).acquired
    store.release_lease("B")
    assert store.acquire_lease("A", 30).acquired
    with pytest.raises(ValueError):
        store.acquire_lease("", 30)
    with pytest.raises(ValueError):
        store.acquire_lease("A", 0)


def test_lease_is_exclusive_across_stores_and_threads(db: Path) -> None:
    stores = [SqliteStore(db) for _ in range(4)]
    winners: list[str] = []
    start = threading.Barrier(8)

    def contend(i: int) -> None:
        start.wait(timeout=30)
        lease = stores[i % 4].acquire_lease(f"owner-{i}", 60)
        if lease.acquired:
            winners.append(lease.owner)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in stores:
        s.close()
    assert len(winners) == 1


# ---- failures -----------------------------------------------------------------------------------

def test_locked_database_gives_store_error_after_the_busy_timeout(db: Path) -> None:
    store = SqliteStore(db, busy_timeout_s=0.2)
    store.commit_batch([article(1)])
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError) as caught:
            store.commit_batch([article(2)])
        assert not isinstance(caught.value, StoreFatal)
        assert "locked" in str(caught.value) and str(db) in str(caught.value)
        assert store.count_articles() == 1  # readers still work under WAL
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.commit_batch([article(2)])
    assert store.count_articles() == 2
    store.close()


def test_new_database_and_its_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask, which would give 0644
    try:
        path = tmp_path / "fresh" / "collector.sqlite3"
        store = SqliteStore(path)
        store.commit_batch([article(1)])  # data written: the -wal and -shm exist now
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
        store.close()
    finally:
        os.umask(old_umask)
    assert modes == {"collector.sqlite3": 0o600, "collector.sqlite3-wal": 0o600, "collector.sqlite3-shm": 0o600}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder outside pytest's root-only tmp tree, so a `nobody` child can reach it."""
    folder = Path(tempfile.mkdtemp(prefix="store-test-", dir="/tmp"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _open_and_write(path: Path) -> dict:
    store = SqliteStore(path, busy_timeout_s=1)
    store.commit_batch([article(9)])
    return {"raised": None}


def test_read_only_file_gives_a_clear_fatal_error(shared_dir: Path) -> None:
    path = shared_dir / "collector.sqlite3"
    SqliteStore(path).close()
    path.chmod(0o444)
    out = in_child(lambda: _open_and_write(path), as_nobody=os.geteuid() == 0)
    assert out["raised"] == "StoreFatal", out
    assert "read-only" in out["message"] and str(path) in out["message"]
    assert "Traceback" not in out["message"]


def test_unwritable_directory_gives_a_clear_fatal_error(shared_dir: Path) -> None:
    folder = shared_dir / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    out = in_child(lambda: _open_and_write(folder / "collector.sqlite3"), as_nobody=os.geteuid() == 0)
    assert out["raised"] == "StoreFatal", out
    assert str(folder / "collector.sqlite3") in out["message"] and "COLLECTOR_DB" in out["message"]


def test_parent_path_that_is_a_file_gives_a_clear_fatal_error(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(StoreFatal, match="cannot create the directory .*plain.txt"):
        SqliteStore(tmp_path / "plain.txt" / "collector.sqlite3")


def test_corrupt_file_gives_a_clear_fatal_error(tmp_path: Path) -> None:
    path = tmp_path / "collector.sqlite3"
    path.write_bytes(b"this is not a database at all " * 200)
    with pytest.raises(StoreFatal, match="not a valid SQLite database"):
        SqliteStore(path)
    assert path.read_bytes().startswith(b"this is not")  # left untouched for the user to inspect


def test_disk_full_while_writing_gives_a_clear_fatal_error(tmp_path: Path) -> None:
    path = tmp_path / "collector.sqlite3"
    SqliteStore(path).close()

    def write_past_the_limit() -> dict:
        store = SqliteStore(path, busy_timeout_s=1)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # files stop growing here
        store.commit_batch([article(n, text="x" * 5000) for n in range(200)])
        return {"raised": None}

    out = in_child(write_past_the_limit)
    assert out["raised"] == "StoreFatal", out
    assert str(path) in out["message"] and ("disk" in out["message"])
    assert SqliteStore(path).count_articles() == 0  # the failed batch left nothing behind


def test_disk_full_error_from_sqlite_is_translated(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "full.sqlite3")
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.Error) as caught:
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    conn.close()
    err = translate_sqlite_error(caught.value, tmp_path / "full.sqlite3", 30)
    assert isinstance(err, StoreFatal) and "disk full" in str(err)


def test_deleted_database_file_is_detected_then_recreated(store: SqliteStore, db: Path) -> None:
    store.commit_batch([article(1)])
    db.unlink()  # `rm collector.sqlite3`: the -wal and -shm files stay behind
    with pytest.raises(StoreFatal, match="was removed"):
        store.commit_batch([article(2)])
    store.commit_batch([article(3)])  # a fresh database at the same path, no stale WAL replayed
    assert db.is_file() and store.known_ids(CODE, 100) == {article(3).id}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_deleted_file_noticed_by_another_operation_still_stops_the_next_commit(store: SqliteStore, db: Path) -> None:
    """A lease renewal or the budget ledger may be first to see the loss (they log and go on):
    the next commit still raises it, rather than filling the new database as if nothing happened."""
    store.commit_batch([article(1)])
    db.unlink()
    with pytest.raises(StoreFatal, match="was removed"):
        store.count_articles()
    assert store.count_articles() == 0  # reads (status, lease) go on with the new database
    with pytest.raises(StoreFatal, match="was removed"):
        store.commit_batch([article(2)])
    store.commit_batch([article(3)])  # raised once: the next pass writes again
    assert store.known_ids(CODE, 100) == {article(3).id}


def test_deleted_directory_is_detected_then_recreated(store: SqliteStore, db: Path) -> None:
    store.commit_batch([article(1)])
    shutil.rmtree(db.parent)
    with pytest.raises(StoreFatal, match="was removed"):
        store.commit_batch([article(2)])
    store.commit_batch([article(3)])
    assert db.is_file() and store.count_articles() == 1


def test_replaced_database_file_is_detected_and_the_new_file_used(store: SqliteStore, db: Path, tmp_path: Path) -> None:
    store.commit_batch([article(1)])
    other = SqliteStore(tmp_path / "backup.sqlite3")
    other.commit_batch([article(7), article(8)])
    other.close()
    os.replace(tmp_path / "backup.sqlite3", db)
    with pytest.raises(StoreFatal, match="replaced"):
        store.count_articles()
    assert store.count_articles() == 2  # the old WAL was not replayed over the new file
    assert store.known_ids(CODE, 100) == {article(7).id, article(8).id}


def test_closed_store_refuses_work(db: Path) -> None:
    store = SqliteStore(db)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count_articles()
