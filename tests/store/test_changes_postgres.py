"""Migration 0002 on a real PostgreSQL: the SupabaseStore's calls (captured by the fake PostgREST,
run as PostgREST runs them) write the same change log as SqliteStore, in one transaction per
call; collector_claim_changes hands each event to exactly one of several concurrent claimers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from collector.models import Rejected
from collector.store import SqliteStore
from collector.store.rows import article_row, rejected_row
from collector.store.supabase import SupabaseStore
from tests.store.fake_postgrest import FakePostgrest, supabase_over
from tests.store.helpers import T0
from tests.store.test_changes import CODE, OTHER, version
from tests.store.test_postgres import conninfo, database, db, postgrest_rpc, replay  # noqa: F401 - fixtures

psycopg = pytest.importorskip("psycopg")
from psycopg import errors  # noqa: E402

pytestmark = pytest.mark.postgres

URL = "https://proj.supabase.co"
EVENT = "kind, code_id, cid, id, previous_id, num, etat, content_sha256, run_id"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[SqliteStore, SupabaseStore, FakePostgrest]]:
    lite = SqliteStore(tmp_path / "parity.sqlite3")
    fake = FakePostgrest("service-key")
    with supabase_over(fake, URL) as remote:
        yield lite, remote, fake
    lite.close()


def pg_log(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute(f"SELECT {EVENT} FROM legifrance_changes ORDER BY seq").fetchall()


def lite_log(store: SqliteStore) -> list[tuple[object, ...]]:
    return [tuple(c[k] for k in EVENT.split(", ")) for c in store.read_changes(limit=10_000)]


def test_the_same_steps_write_the_same_log_as_sqlite(
    db: psycopg.Connection, pair: tuple[SqliteStore, SupabaseStore, FakePostgrest]
) -> None:
    lite, remote, fake = pair
    v11, v12, v13, v21, v31, v41 = version(1, 1), version(1, 2), version(1, 3), version(2, 1), version(3, 1), version(4, 1)
    edited = replace(v21, text=v21.text + " Modifié sur place.", content_sha256="c" * 64)
    steps = [
        lambda s: s.commit_batch([v11, v21, v31, version(9, 1, OTHER)], run_id=1),
        lambda s: s.commit_batch([v11, v21], run_id=2),  # replay: nothing
        lambda s: s.commit_batch([v12, edited, v41], tag="3"),  # modified, corrected, added
        lambda s: s.commit_batch([v13, replace(v13, etat="VIGUEUR")], tag="4"),  # one id twice: once
        lambda s: s.retire_absent(CODE, [v13.id, edited.id], ["C1", "C2", "C4"], tag="5"),  # C3 gone, C4 rejected
        lambda s: s.retire_absent(CODE, [v13.id, edited.id, v31.id, v41.id], tag="6"),  # C3, C4 back
        lambda s: s.retire_versions([(v31.id, "ABROGE"), (v13.id, "MODIFIE"), ("LEGIARTI404", "ABROGE")], tag="LEGI_7"),
        lambda s: s.commit_batch([v31], tag="8"),  # re-enters
        lambda s: s.commit_batch([version(1, 4), v13], tag="9"),  # 1.4 retires 1.3, which then retires 1.4
        lambda s: s.commit_batch([replace(v31, etat="ABROGE"), replace(v13, etat="MODIFIE")], tag="10"),  # leave
        lambda s: s.commit_batch([version(5, 1)], tag="11"),
        lambda s: s.commit_batch([replace(version(5, 1), etat="MODIFIE"), version(5, 2)], tag="12"),  # one modified
    ]
    for n, step in enumerate(steps):
        expected = step(lite)
        assert step(remote) == expected, n
        replay(db, fake)
        assert pg_log(db) == lite_log(lite), n
    assert len(pg_log(db)) == 21
    assert db.execute("SELECT previous_text FROM legifrance_changes WHERE kind = 'corrected'").fetchall() == [(v21.text,)]
    assert dict(db.execute("SELECT id, etat FROM legifrance_articles").fetchall()) == dict(
        (a["id"], a["etat"]) for a in lite.get_articles([r.id for r in (v11, v12, v13, version(1, 4), v21, v31, v41, version(5, 1), version(5, 2))]).values()
    ) | {version(9, 1, OTHER).id: "VIGUEUR"}


def test_a_failing_call_writes_neither_rows_nor_events(db: psycopg.Connection) -> None:
    bad = Rejected(id="LEGIARTI000000000099", code_id=CODE, reason=None, length=0, rejected_at=T0)  # type: ignore[arg-type]
    body = {"p_articles": [article_row(version(1, 1))], "p_rejected": [rejected_row(bad)], "p_tag": "1"}
    with pytest.raises(errors.NotNullViolation):
        postgrest_rpc(db, httpx.Request("POST", f"{URL}/rest/v1/rpc/collector_commit_batch", json=body))
    assert db.execute("SELECT count(*) FROM legifrance_articles").fetchone() == (0,) and pg_log(db) == []
    postgrest_rpc(db, httpx.Request("POST", f"{URL}/rest/v1/rpc/collector_commit_batch", json=body | {"p_rejected": []}))
    assert len(pg_log(db)) == 1


def test_concurrent_claimers_get_each_event_once(database: str, db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO legifrance_changes (kind, code_id, cid, id, etat) "
        "SELECT 'added', 'LEGITEXT1', 'C' || g, 'A' || g, 'VIGUEUR' FROM generate_series(1, 1500) g"
    )
    claimed: dict[str, list[int]] = {}
    errors_seen: list[BaseException] = []

    def worker(name: str, consumer: str) -> None:
        mine = claimed.setdefault(name, [])
        empty = 0
        try:
            with psycopg.connect(conninfo(database), autocommit=True) as conn:
                while empty < 20:  # an empty answer: the log is drained, or another worker holds the cursor
                    rows = conn.execute("SELECT seq FROM collector_claim_changes(%s, 13)", (consumer,)).fetchall()
                    mine.extend(r[0] for r in rows)
                    empty = 0 if rows else empty + 1
        except BaseException as exc:
            errors_seen.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{k}", "search")) for k in range(6)]
    threads.append(threading.Thread(target=worker, args=("other", "export")))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors_seen
    shared = [seq for name, seqs in claimed.items() if name != "other" for seq in seqs]
    assert sorted(shared) == list(range(1, 1501))  # every event once, to one worker
    assert sum(1 for name, seqs in claimed.items() if name != "other" and seqs) >= 2  # they did share
    assert claimed["other"] == list(range(1, 1501))  # another consumer has its own cursor
    assert dict(db.execute("SELECT consumer, last_seq FROM legifrance_change_consumers").fetchall()) == {
        "search": 1500, "export": 1500}
    assert db.execute("SELECT * FROM collector_claim_changes('search', 5)").fetchall() == []


def test_claim_refuses_bad_arguments(db: psycopg.Connection) -> None:
    for consumer, rows in (("", 5), (None, 5), ("w", 0)):
        with pytest.raises(errors.InvalidParameterValue):
            db.execute("SELECT * FROM collector_claim_changes(%s, %s)", (consumer, rows))


def test_store_cursor_is_the_claim_cursor(
    db: psycopg.Connection, pair: tuple[SqliteStore, SupabaseStore, FakePostgrest]
) -> None:
    _, remote, fake = pair
    remote.set_cursor("export", 7)
    replay(db, fake)
    assert db.execute("SELECT last_seq FROM legifrance_change_consumers WHERE consumer = 'export'").fetchone() == (7,)
    remote.set_cursor("export", 5)  # a late writer never moves it back, on PostgreSQL too
    replay(db, fake)
    assert db.execute("SELECT last_seq FROM legifrance_change_consumers WHERE consumer = 'export'").fetchone() == (7,)
    assert remote.get_cursor("export") == 7
