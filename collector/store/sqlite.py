"""SQLite backend (stdlib sqlite3, WAL): the zero-configuration default store.

Thread safety: a small pool of connections; each operation borrows one for its duration, so the
collector thread, Streamlit's script threads and asyncio.to_thread workers never share a
connection at the same time, and readers are not blocked by a writer (WAL).

Every write runs in one `BEGIN IMMEDIATE` transaction (the write lock is taken first, so the
busy timeout applies and a read-modify-write such as the lease is atomic across processes).

Deleted or replaced database file: SQLite keeps writing into the unlinked inode, so every write
after `rm collector.sqlite3` would vanish when the process exits. Each operation first checks that
the path still names the file that was opened; if not, it raises StoreFatal (the pass stops, the
error is shown) and the next operation opens a fresh database at the path (or the file put in
its place). We raise rather than silently reopen so that nobody believes data went into a file
that no longer exists; we reopen afterwards so that recovering needs no process restart. Before
letting go of the old file, its -wal is emptied by a checkpoint: SQLite keeps the -wal of a
moved file on close, and its frames would otherwise be replayed over the new file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from collector.clock import utcnow
from collector.models import Article, CodeMark, DumpBatch, DumpState, Rejected
from collector.search import parse_query
from collector.store import sqlite_search
from collector.store.base import Lease, Retired, StoreError, StoreFatal
from collector.store.rows import (
    ARTICLE_COLUMNS,
    DUMP_STATE_COLUMNS,
    MARK_COLUMNS,
    REJECTED_COLUMNS,
    change_args,
    change_from_row,
    cursor_args,
    dump_counts,
    dump_state_from_row,
    dump_state_row,
    event_tag,
    iso_ts,
    mark_from_row,
    mark_row,
    next_dump_state,
    no_change_counts,
    parse_ts,
    retire_args,
    run_from_row,
    split_articles_rejected,
    state_from_row,
    state_row,
    to_json,
    version_pairs,
)
from collector.store.sqlite_changes import (
    CHANGES_SCHEMA,
    retire_absent_logged,
    retire_versions_logged,
    select_in,
    upsert_articles_logged,
)

SCHEMA_VERSION = 2  # 2: the change log (legifrance_changes, legifrance_change_consumers)

SCHEMA = """
CREATE TABLE IF NOT EXISTS legifrance_articles (
    id             TEXT PRIMARY KEY NOT NULL,
    cid            TEXT NOT NULL,
    code_id        TEXT NOT NULL,
    code_title     TEXT,
    num            TEXT,
    etat           TEXT NOT NULL,
    date_debut     TEXT,
    date_fin       TEXT,
    section_path   TEXT NOT NULL DEFAULT '',
    text           TEXT NOT NULL,
    html           TEXT NOT NULL DEFAULT '',
    nota           TEXT,
    content_sha256 TEXT NOT NULL,
    collected_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS legifrance_articles_code_id_idx ON legifrance_articles (code_id);
CREATE INDEX IF NOT EXISTS legifrance_articles_cid_idx ON legifrance_articles (cid);

CREATE TABLE IF NOT EXISTS legifrance_rejected (
    id          TEXT PRIMARY KEY NOT NULL,
    code_id     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    length      INTEGER NOT NULL DEFAULT 0,
    rejected_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS legifrance_rejected_code_id_idx ON legifrance_rejected (code_id);

CREATE TRIGGER IF NOT EXISTS legifrance_articles_forget_rejected_ins
AFTER INSERT ON legifrance_articles
BEGIN DELETE FROM legifrance_rejected WHERE id = NEW.id; END;
CREATE TRIGGER IF NOT EXISTS legifrance_articles_forget_rejected_upd
AFTER UPDATE ON legifrance_articles
BEGIN DELETE FROM legifrance_rejected WHERE id = NEW.id; END;

CREATE TABLE IF NOT EXISTS collector_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    mode        TEXT NOT NULL,
    codes       TEXT NOT NULL DEFAULT '[]',
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    summary     TEXT,
    progress    TEXT
);

CREATE TABLE IF NOT EXISTS collector_code_marks (
    code_id     TEXT PRIMARY KEY NOT NULL,
    title       TEXT,
    modif_date  TEXT,
    last_update TEXT,
    walked_at   TEXT
);

CREATE TABLE IF NOT EXISTS collector_request_counters (
    window_key TEXT PRIMARY KEY NOT NULL,
    count      INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS collector_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    running    INTEGER NOT NULL CHECK (running IN (0, 1)),
    mode       TEXT NOT NULL CHECK (mode IN ('MASSIVE', 'MAINTENANCE')),
    updated_at TEXT,
    pid        INTEGER,
    host       TEXT,
    extra      TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS collector_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    owner       TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    acquired_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS collector_dump_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    last_stamp   TEXT,
    last_archive TEXT,
    global_stamp TEXT,
    codes        TEXT,
    archive      TEXT,
    members      INTEGER NOT NULL DEFAULT 0,
    bytes_read   INTEGER NOT NULL DEFAULT 0,
    updated_at   TEXT
);
""" + CHANGES_SCHEMA


def _upsert_sql(table: str, columns: Sequence[str], key: str) -> str:
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT({key}) DO UPDATE SET {updates}"


_UPSERT_REJECTED = _upsert_sql("legifrance_rejected", REJECTED_COLUMNS, "id")
_UPSERT_MARK = _upsert_sql("collector_code_marks", MARK_COLUMNS, "code_id")
_UPSERT_DUMP_STATE = _upsert_sql("collector_dump_state", ("id", *DUMP_STATE_COLUMNS), "id").replace(
    "VALUES (?", "VALUES (1", 1)

def translate_sqlite_error(exc: sqlite3.Error, path: Path, busy_timeout_s: float) -> StoreError:
    """Turn a raw sqlite3 error into a StoreError/StoreFatal that says what to check."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    where = f"SQLite database {path}"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return StoreError(
            f"{where} is locked by another connection (waited {busy_timeout_s:g} s); "
            "is another collector process writing to it?"
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return StoreFatal(
            f"{where} is read-only: check the permissions of the file and of its directory "
            "(set COLLECTOR_DB to a writable path)"
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreFatal(
            f"cannot open {where}: check that its directory exists and is writable "
            "(set COLLECTOR_DB to a writable path)"
        )
    if name == "SQLITE_FULL":
        return StoreFatal(f"disk full while writing {where}: free some space on its disk")
    if name in {"SQLITE_NOTADB", "SQLITE_CORRUPT"} or name.startswith("SQLITE_CORRUPT"):
        return StoreFatal(
            f"{path} is not a valid SQLite database (corrupt, or another kind of file): "
            "move it away to start a new database, or set COLLECTOR_DB to another path"
        )
    if name.startswith("SQLITE_IOERR"):
        return StoreFatal(
            f"I/O error on {where} ({text}): check the free disk space, that the file and its "
            "directory still exist, and the disk itself"
        )
    return StoreError(f"{where}: {text}")


class _Pool:
    """Connections handed to one operation at a time (any thread), closed on close()."""

    def __init__(self, factory: Callable[[], sqlite3.Connection], max_idle: int = 4) -> None:
        self._factory = factory
        self._max_idle = max_idle
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._flush_wal = False

    def take(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._factory()

    def give_back(self, conn: sqlite3.Connection, healthy: bool) -> None:
        with self._lock:
            if healthy and not conn.in_transaction and not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        self._close_one(conn)

    def close(self, *, flush_wal: bool = False) -> None:
        """Close every connection; `flush_wal` first empties the -wal file (see _close_one)."""
        with self._lock:
            self._closed, self._flush_wal = True, flush_wal
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close_one(conn)

    def _close_one(self, conn: sqlite3.Connection) -> None:
        # When the database file was removed or replaced, SQLite does not delete the -wal file
        # on close, and its frames would be replayed over whatever file is at the path next.
        # A TRUNCATE checkpoint moves them into the old inode and leaves an empty -wal.
        if self._flush_wal:
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
        conn.close()


class SqliteStore:
    """The Store protocol over one SQLite file (created with its schema if missing)."""

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_s: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.path = Path(path)
        self.label = f"SQLite ({self.path})"
        self._busy_timeout_s = busy_timeout_s
        self._clock = clock
        self._open_lock = threading.Lock()
        self._pool: _Pool | None = None
        self._identity: tuple[int, int] | None = None
        # A removed/replaced file noticed by another operation (a lease renewal, the budget
        # ledger, a status read: they log and go on): the next commit_batch raises it, so the
        # pass still stops and shows the loss instead of carrying on into the new database.
        self._lost: str | None = None
        self._closed = False
        self._open()

    # ---- opening, file checks, transactions ---------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,  # explicit BEGIN/COMMIT only
            check_same_thread=False,  # a pooled connection moves between threads (never shared)
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Rows are written once and read back through indexes: a small page cache per pooled
            # connection is enough (the default 2 MB each would grow the process with the corpus).
            conn.execute("PRAGMA cache_size = -512")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreFatal(
                f"cannot create the directory {self.path.parent} for the SQLite database: "
                f"{exc.strerror} (set COLLECTOR_DB to a writable path)"
            ) from None
        try:  # owner-only from the first byte: SQLite gives its -wal and -shm the same mode
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass  # an existing database keeps the mode its owner gave it
        except OSError as exc:
            raise StoreFatal(
                f"cannot create the SQLite database {self.path}: {exc.strerror} (set COLLECTOR_DB to a writable path)"
            ) from None
        pool = _Pool(self._connect)
        try:
            conn = pool.take()
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self.path, self._busy_timeout_s) from None
        healthy = False
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")
            sqlite_search.ensure_search_index(conn)
            healthy = True
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise translate_sqlite_error(exc, self.path, self._busy_timeout_s) from None
        finally:
            pool.give_back(conn, healthy)
            if not healthy:
                pool.close()
        stat = self.path.stat()
        self._pool, self._identity = pool, (stat.st_dev, stat.st_ino)

    def _current_pool(self, *, commit: bool = False) -> _Pool:
        """The pool, after checking the path still names the file we opened (see module doc).
        `commit`: the caller is commit_batch, which also raises a loss noticed earlier."""
        with self._open_lock:
            if self._closed:
                raise StoreError(f"{self.label} is closed")
            if commit and self._lost is not None:
                lost, self._lost = self._lost, None
                raise StoreFatal(lost)
            if self._pool is None:
                self._open()
            assert self._pool is not None
            try:
                stat = self.path.stat()
                identity: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
            except FileNotFoundError:
                identity = None
            if identity == self._identity:
                return self._pool
            self._pool.close(flush_wal=True)
            self._pool = None
            what = "removed" if identity is None else "replaced by another file"
            message = (
                f"the SQLite database file {self.path} was {what} while the collector was using it; "
                "nothing more was written to the old file. The next operation opens the database "
                "now at that path (a new, empty one if the file is gone)."
            )
            self._lost = None if commit else message
            raise StoreFatal(message)

    @contextmanager
    def _connection(self, write: bool, *, commit: bool = False) -> Iterator[sqlite3.Connection]:
        pool = self._current_pool(commit=commit)
        try:
            conn = pool.take()
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self.path, self._busy_timeout_s) from None
        healthy = False
        try:
            if write:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
            if write:
                conn.execute("COMMIT")
            healthy = True
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self.path, self._busy_timeout_s) from exc
        finally:
            if conn.in_transaction:
                try:
                    conn.rollback()
                except sqlite3.Error:
                    healthy = False
            pool.give_back(conn, healthy)

    def _read(self) -> Any:
        return self._connection(write=False)

    def _write(self) -> Any:
        return self._connection(write=True)

    # ---- articles ----------------------------------------------------------------------------
    def known_ids(self, code_id: str, min_chars: int) -> set[str]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id FROM legifrance_articles WHERE code_id = ? "
                "UNION SELECT id FROM legifrance_rejected WHERE code_id = ? AND length < ?",
                (code_id, code_id, int(min_chars)),
            ).fetchall()
        return {row[0] for row in rows}

    def commit_batch(
        self,
        articles: Sequence[Article],
        rejected: Sequence[Rejected] = (),
        run_id: int | None = None,
        run_progress: dict[str, Any] | None = None,
        *,
        tag: str | None = None,
    ) -> dict[str, int]:
        """See Store.commit_batch: rows, progress and events in one IMMEDIATE transaction."""
        article_rows, rejected_rows = split_articles_rejected(articles, rejected)
        events = no_change_counts()
        with self._connection(write=True, commit=True) as conn:
            if article_rows:
                events = upsert_articles_logged(conn, article_rows, event_tag(tag, run_id), at=iso_ts(self._clock()))
            if rejected_rows:
                conn.executemany(_UPSERT_REJECTED, [tuple(r[c] for c in REJECTED_COLUMNS) for r in rejected_rows])
            if run_id is not None and run_progress is not None:
                conn.execute("UPDATE collector_runs SET progress = ? WHERE id = ?", (to_json(run_progress), run_id))
        return events

    def retire_absent(
        self,
        code_id: str,
        in_force_ids: Collection[str],
        in_force_cids: Collection[str] | None = None,
        *,
        tag: str | None = None,
    ) -> Retired:
        """See Store.retire_absent: one IMMEDIATE transaction, two set-based UPDATEs + events."""
        code, ids, cids = retire_args(code_id, in_force_ids, in_force_cids)
        with self._write() as conn:
            return retire_absent_logged(conn, code, ids, cids, tag, at=iso_ts(self._clock()))

    def retire_versions(self, versions: Sequence[tuple[str, str]], *, tag: str | None = None) -> Retired:
        pairs = version_pairs(versions)
        with self._write() as conn:
            return retire_versions_logged(conn, pairs, tag, at=iso_ts(self._clock()))

    # ---- change log --------------------------------------------------------------------------
    def read_changes(
        self, since: int = 0, limit: int = 100, code_id: str | None = None, *, previous_text: bool = False
    ) -> list[dict[str, Any]]:
        since, limit = change_args(since, limit)
        where = "seq > ?" + (" AND code_id = ?" if code_id is not None else "")
        params = (since, code_id, limit) if code_id is not None else (since, limit)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT * FROM legifrance_changes WHERE {where} ORDER BY seq LIMIT ?", params
            ).fetchall()
        return [change_from_row(dict(row), previous_text=previous_text) for row in rows]

    def latest_change_seq(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT coalesce(max(seq), 0) FROM legifrance_changes").fetchone()[0])

    def get_articles(self, ids: Collection[str]) -> dict[str, dict[str, Any]]:
        sql = f"SELECT {', '.join(ARTICLE_COLUMNS)} FROM legifrance_articles WHERE id IN ({{marks}})"
        with self._read() as conn:
            return {row["id"]: dict(row) for row in select_in(conn, sql, list(dict.fromkeys(ids)))}

    def get_cursor(self, consumer: str) -> int:
        with self._read() as conn:
            row = conn.execute(
                "SELECT last_seq FROM legifrance_change_consumers WHERE consumer = ?", (consumer,)
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def set_cursor(self, consumer: str, seq: int) -> None:
        consumer, seq = cursor_args(consumer, seq)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO legifrance_change_consumers (consumer, last_seq, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(consumer) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), "
                "updated_at = excluded.updated_at",
                (consumer, seq, iso_ts(self._clock())),
            )

    def count_in_force(self, code_id: str) -> int:
        with self._read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM legifrance_articles WHERE code_id = ? AND etat LIKE 'VIGUEUR%'", (code_id,)
            ).fetchone()
        return int(row[0])

    def count_articles(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM legifrance_articles").fetchone()[0])

    def count_rejected(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM legifrance_rejected").fetchone()[0])

    def iter_article_ids(self, page_size: int = 5000) -> Iterator[str]:
        """Keyset pages, each read in its own short transaction (no connection held between pages)."""
        last = ""
        while True:
            with self._read() as conn:
                ids = [
                    row[0]
                    for row in conn.execute(
                        "SELECT id FROM legifrance_articles WHERE id > ? ORDER BY id LIMIT ?",
                        (last, page_size),
                    )
                ]
            yield from ids
            if len(ids) < page_size:
                return
            last = ids[-1]

    # ---- code marks --------------------------------------------------------------------------
    def get_code_marks(self) -> dict[str, CodeMark]:
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM collector_code_marks").fetchall()
        return {row["code_id"]: mark_from_row(dict(row)) for row in rows}

    def set_code_mark(self, mark: CodeMark) -> None:
        row = mark_row(mark)
        with self._write() as conn:
            conn.execute(_UPSERT_MARK, tuple(row[c] for c in MARK_COLUMNS))

    # ---- runs --------------------------------------------------------------------------------
    def start_run(self, mode: str, codes: Sequence[str]) -> int:
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO collector_runs (mode, codes, started_at) VALUES (?, ?, ?)",
                (str(getattr(mode, "value", mode)), to_json(list(codes)), iso_ts(self._clock())),
            )
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE collector_runs SET finished_at = ?, summary = ? WHERE id = ?",
                (iso_ts(self._clock()), to_json(summary), run_id),
            )

    def last_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM collector_runs ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()
        return [run_from_row(dict(row)) for row in rows]

    # ---- request counters --------------------------------------------------------------------
    def add_requests(self, window_keys: Sequence[str], n: int) -> None:
        if n < 0:
            raise ValueError(f"add_requests: n must be >= 0, got {n}")
        keys = sorted(set(window_keys))
        if not keys or n == 0:
            return
        now = iso_ts(self._clock())
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO collector_request_counters (window_key, count, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(window_key) DO UPDATE SET count = count + excluded.count, "
                "updated_at = excluded.updated_at",
                [(key, n, now) for key in keys],
            )

    def get_requests(self, window_keys: Sequence[str]) -> dict[str, int]:
        keys = list(dict.fromkeys(window_keys))
        if not keys:
            return {}
        marks = ", ".join("?" for _ in keys)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT window_key, count FROM collector_request_counters WHERE window_key IN ({marks})",
                keys,
            ).fetchall()
        found = {row[0]: int(row[1]) for row in rows}
        return {key: found.get(key, 0) for key in keys}

    # ---- desired state mirror ----------------------------------------------------------------
    def save_state(self, state: dict[str, Any]) -> None:
        row = state_row(state)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO collector_state (id, running, mode, updated_at, pid, host, extra) "
                "VALUES (1, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET running = excluded.running, "
                "mode = excluded.mode, updated_at = excluded.updated_at, pid = excluded.pid, "
                "host = excluded.host, extra = excluded.extra",
                (int(row["running"]), row["mode"], row["updated_at"], row["pid"], row["host"], to_json(row["extra"])),
            )

    def load_state(self) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM collector_state WHERE id = 1").fetchone()
        return state_from_row(dict(row)) if row is not None else None

    # ---- lease -------------------------------------------------------------------------------
    def acquire_lease(self, owner: str, ttl_seconds: float) -> Lease:
        """Same semantics as collector_acquire_lease() in the migration (one IMMEDIATE transaction)."""
        if not owner:
            raise ValueError("acquire_lease: owner must be a non-empty string")
        if not ttl_seconds > 0:
            raise ValueError(f"acquire_lease: ttl_seconds must be > 0, got {ttl_seconds}")
        with self._write() as conn:
            now = self._clock()
            row = conn.execute("SELECT owner, expires_at, acquired_at FROM collector_lease WHERE id = 1").fetchone()
            if row is not None:
                held_until = parse_ts(row["expires_at"])
                assert held_until is not None
                if row["owner"] != owner and held_until > now:
                    return Lease(owner=row["owner"], expires_at=held_until, acquired=False)
                renewing = row["owner"] == owner and held_until > now
                acquired_at = row["acquired_at"] if renewing else iso_ts(now)
            else:
                acquired_at = iso_ts(now)
            expires = now + timedelta(seconds=ttl_seconds)
            conn.execute(
                "INSERT INTO collector_lease (id, owner, expires_at, acquired_at) VALUES (1, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, "
                "acquired_at = excluded.acquired_at",
                (owner, iso_ts(expires), acquired_at),
            )
        return Lease(owner=owner, expires_at=parse_ts(iso_ts(expires)) or expires, acquired=True)

    def release_lease(self, owner: str) -> None:
        """Only the holder can release; the lease then expires now (the row stays)."""
        now = iso_ts(self._clock())
        with self._write() as conn:
            conn.execute(
                "UPDATE collector_lease SET expires_at = min(expires_at, ?) WHERE id = 1 AND owner = ?",
                (now, owner),
            )

    # ---- DILA dumps --------------------------------------------------------------------------
    def get_dump_state(self) -> DumpState:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM collector_dump_state WHERE id = 1").fetchone()
        return dump_state_from_row(dict(row) if row is not None else None)

    def apply_dump_batch(self, batch: DumpBatch) -> dict[str, int]:
        """See Store.apply_dump_batch: one IMMEDIATE transaction."""
        article_rows, rejected_rows = split_articles_rejected(batch.articles, batch.rejected)
        pairs = version_pairs(batch.retire)
        tag, at = batch.archive_tag, iso_ts(self._clock())
        with self._connection(write=True, commit=True) as conn:
            row = conn.execute("SELECT * FROM collector_dump_state WHERE id = 1").fetchone()
            state = next_dump_state(dump_state_from_row(dict(row) if row else None), batch, self._clock())
            counts = no_change_counts()
            if article_rows:
                counts = dict(upsert_articles_logged(conn, article_rows, tag, at=at))
            if rejected_rows:
                conn.executemany(_UPSERT_REJECTED, [tuple(r[c] for c in REJECTED_COLUMNS) for r in rejected_rows])
            retired = [retire_versions_logged(conn, pairs, tag, at=at)] if pairs else []
            for code_id, ids, cids in batch.reconcile:
                retired.append(retire_absent_logged(conn, code_id, list(ids), list(cids), tag, at=at))
            values = dump_state_row(state)
            conn.execute(_UPSERT_DUMP_STATE, tuple(values[c] for c in DUMP_STATE_COLUMNS))
        return dump_counts(counts, retired)

    # ---- search (collector/search.py, store/sqlite_search.py) ---------------------------------
    def search(
        self, query: str, code_id: str | None = None, etat: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """See Store.search: FTS5 MATCH of the query's terms, best first."""
        parsed = parse_query(query, code_id, etat, limit)
        with self._read() as conn:
            return sqlite_search.search(conn, parsed)

    def get_article(self, article_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            return sqlite_search.get_article(conn, article_id)

    def article_versions(self, cid: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            return sqlite_search.article_versions(conn, cid)

    def rebuild_search(self) -> None:
        """Refill the search index from the stored rows (needed after a VACUUM only)."""
        with self._write() as conn:
            sqlite_search.rebuild_search_index(conn)

    # ---- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._open_lock:
            self._closed = True
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"
