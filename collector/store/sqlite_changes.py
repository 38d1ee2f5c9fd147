"""SQLite change log: article writes and retirements that record their events (Store contract
in base.py) on an OPEN connection, so any store method (commit_batch, retire_absent, a dump
loader's own transaction) calls them inside its `BEGIN IMMEDIATE` and rows and events commit
or vanish together.

Cost: per batch one SELECT of the batch's ids and one of the cids entering force (both on
indexes), a loop in Python, and one INSERT per event; an unchanged replay writes no event.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from collector.store.base import Retired
from collector.clock import utcnow
from collector.store.rows import ARTICLE_COLUMNS, in_force, iso_ts, no_change_counts

CHANGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS legifrance_changes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL CHECK (kind IN ('added', 'modified', 'repealed', 'corrected')),
    code_id        TEXT NOT NULL,
    cid            TEXT NOT NULL,
    id             TEXT NOT NULL,
    previous_id    TEXT,
    num            TEXT,
    etat           TEXT NOT NULL,
    content_sha256 TEXT,
    run_id         TEXT,
    at             TEXT NOT NULL,
    previous_text  TEXT
);
CREATE INDEX IF NOT EXISTS legifrance_changes_code_id_seq_idx ON legifrance_changes (code_id, seq);

CREATE TABLE IF NOT EXISTS legifrance_change_consumers (
    consumer   TEXT PRIMARY KEY NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
"""

_EVENT_COLUMNS = (
    "kind", "code_id", "cid", "id", "previous_id", "num", "etat", "content_sha256", "run_id", "at",
    "previous_text",
)
_INSERT_EVENT = (
    f"INSERT INTO legifrance_changes ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS)})"
)
# A batch's rows go through a temp table and ONE upsert statement: FTS5 writes its pending
# terms out as an index segment at the end of every statement that touched it (the search
# triggers), so one statement per row cost a segment per row (61,693 rows of a DILA global:
# 4.2 s of writes through executemany, 1.6 s staged; /tmp measurement, see docs/PERFORMANCE.md).
_STAGE_TABLE = (
    f"CREATE TEMP TABLE IF NOT EXISTS stage_articles ({', '.join(ARTICLE_COLUMNS)})"
)
_STAGE_ARTICLE = (
    f"INSERT INTO temp.stage_articles ({', '.join(ARTICLE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in ARTICLE_COLUMNS)})"
)
_UPSERT_STAGED = (  # "WHERE true": SQLite's parser needs it between a SELECT and ON CONFLICT
    f"INSERT INTO legifrance_articles ({', '.join(ARTICLE_COLUMNS)}) "
    f"SELECT {', '.join(ARTICLE_COLUMNS)} FROM temp.stage_articles WHERE true ORDER BY rowid "
    "ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ARTICLE_COLUMNS if c != "id")
)
_CHUNK = 500  # bound parameters per IN (...) list


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def select_in(conn: sqlite3.Connection, sql: str, keys: Sequence[str]) -> Iterator[sqlite3.Row]:
    """Run `sql`, whose `IN ({marks})` takes the keys, over `keys` in chunks."""
    for chunk in _chunks(keys):
        yield from conn.execute(sql.format(marks=", ".join("?" for _ in chunk)), tuple(chunk))


def _stamp(at: str | None) -> str:
    return at or iso_ts(utcnow()) or ""


def _cids_in_force(conn: sqlite3.Connection, cids: Sequence[str]) -> set[str]:
    """Those of `cids` with a stored row in force."""
    sql = "SELECT DISTINCT cid FROM legifrance_articles WHERE cid IN ({marks}) AND etat LIKE 'VIGUEUR%'"
    return {row[0] for row in select_in(conn, sql, list(dict.fromkeys(cids)))}


def _event(kind: str, row: Mapping[str, Any], run_id: str | None, at: str, *,
           previous_id: str | None = None, previous_text: str | None = None) -> tuple[Any, ...]:
    return (kind, row["code_id"], row["cid"], row["id"], previous_id, row["num"], row["etat"],
            row["content_sha256"], run_id, at, previous_text)


def _write_events(conn: sqlite3.Connection, events: list[tuple[Any, ...]]) -> dict[str, int]:
    counts = no_change_counts()
    if events:
        conn.executemany(_INSERT_EVENT, events)
        for event in events:
            counts[event[0]] += 1
    return counts


def upsert_articles_logged(
    conn: sqlite3.Connection, rows: Sequence[Mapping[str, Any]], tag: str | None, *, at: str | None = None
) -> dict[str, int]:
    """Upsert article rows (rows.py form, one per id) and write their events (rules in
    Store.commit_batch) on `conn`, which must be inside a write transaction. Returns the
    events written, by kind."""
    if not rows:
        return no_change_counts()
    stamp = _stamp(at)
    ids = [r["id"] for r in rows]
    # id -> (etat, content_sha256) of the stored rows of this batch
    stored = {
        row[0]: (row[1], row[2])
        for row in select_in(
            conn, "SELECT id, etat, content_sha256 FROM legifrance_articles WHERE id IN ({marks})", ids
        )
    }
    moving = list(dict.fromkeys(  # cids of rows entering or leaving the in-force set
        r["cid"] for r in rows if in_force(r["etat"]) != in_force(stored.get(r["id"], (None,))[0])
    ))
    # cid -> {id: date_debut} of its rows in force, for those cids
    live: dict[str, dict[str, str]] = {}
    for row in select_in(
        conn,
        "SELECT id, cid, date_debut FROM legifrance_articles WHERE cid IN ({marks}) AND etat LIKE 'VIGUEUR%'",
        moving,
    ):
        live.setdefault(row[1], {})[row[0]] = row[2] or ""
    events: list[tuple[Any, ...]] = []
    retired: dict[str, None] = {}
    # Rows entering force first: a batch [V1 leaving, V2 of the same cid entering] is one
    # `modified` event whatever the order, not a repeal followed by an addition.
    for r in sorted(rows, key=lambda r: not in_force(r["etat"])):
        rid, cid = r["id"], r["cid"]
        before = stored.get(rid)
        stored[rid] = (r["etat"], r["content_sha256"])
        if not in_force(r["etat"]):
            still = live.get(cid, {})
            still.pop(rid, None)
            if before is not None and in_force(before[0]) and not still:  # leaves with no successor
                events.append(_event("repealed", r, tag, stamp))
            continue
        retired.pop(rid, None)
        if before is not None and in_force(before[0]):
            if before[1] != r["content_sha256"]:
                old = conn.execute("SELECT text FROM legifrance_articles WHERE id = ?", (rid,)).fetchone()
                events.append(_event("corrected", r, tag, stamp, previous_text=old[0] if old else None))
            continue
        others = {i: d for i, d in live.get(cid, {}).items() if i != rid}
        if others:
            newest = max(others, key=lambda i: (others[i], i))
            events.append(_event("modified", r, tag, stamp, previous_id=newest))
            retired.update(dict.fromkeys(others))
            for other in others:  # a later row of this batch with that id is no longer in force
                if other in stored:
                    stored[other] = ("MODIFIE", stored[other][1])
        else:
            events.append(_event("added", r, tag, stamp))
        live[cid] = {rid: r["date_debut"] or ""}
    upsert_articles(conn, rows)
    for chunk in _chunks(list(retired)):  # one statement per chunk, for the same reason
        conn.execute(
            "UPDATE legifrance_articles SET etat = 'MODIFIE' "
            f"WHERE id IN ({', '.join('?' for _ in chunk)}) AND etat LIKE 'VIGUEUR%'",
            tuple(chunk),
        )
    return _write_events(conn, events)


def upsert_articles(conn: sqlite3.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or replace article rows (rows.py form, one per id), in one statement."""
    conn.execute(_STAGE_TABLE)
    conn.execute("DELETE FROM temp.stage_articles")
    conn.executemany(_STAGE_ARTICLE, [tuple(r[c] for c in ARTICLE_COLUMNS) for r in rows])
    conn.execute(_UPSERT_STAGED)
    conn.execute("DELETE FROM temp.stage_articles")


def _retire_events(
    conn: sqlite3.Connection,
    retired: Iterable[Mapping[str, Any]],
    restored: Iterable[Mapping[str, Any]],
    tag: str | None,
    stamp: str,
) -> dict[str, int]:
    """Events of rows just taken out of force (`retired`, with their new etat) and put back in
    force (`restored`), written after both UPDATEs (rules in Store.retire_absent)."""
    restored_by_cid = {r["cid"]: r for r in sorted(restored, key=lambda r: r["id"])}
    paired: set[str] = set()
    events: list[tuple[Any, ...]] = []
    unpaired: list[Mapping[str, Any]] = []
    for row in sorted(retired, key=lambda r: r["id"]):
        successor = restored_by_cid.get(row["cid"])
        if successor is not None and successor["id"] not in paired:
            paired.add(successor["id"])
            events.append(_event("modified", successor, tag, stamp, previous_id=row["id"]))
        elif successor is None:
            unpaired.append(row)
    still_live = _cids_in_force(conn, [r["cid"] for r in unpaired if r["etat"] == "MODIFIE"])
    events += [_event("repealed", r, tag, stamp) for r in unpaired
               if not (r["etat"] == "MODIFIE" and r["cid"] in still_live)]
    events += [_event("added", r, tag, stamp) for r in restored_by_cid.values() if r["id"] not in paired]
    return _write_events(conn, events)


_RETIRE_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS retire_ids (id TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TEMP TABLE IF NOT EXISTS retire_cids (cid TEXT PRIMARY KEY) WITHOUT ROWID",
)
_RETURNING = "RETURNING id, cid, code_id, num, etat, content_sha256"
_RETIRE = f"""
UPDATE legifrance_articles
SET etat = CASE
    WHEN cid IN (SELECT cid FROM temp.retire_cids)
      OR cid IN (SELECT a.cid FROM temp.retire_ids r JOIN legifrance_articles a ON a.id = r.id)
    THEN 'MODIFIE' ELSE 'ABROGE' END
WHERE code_id = :code AND etat LIKE 'VIGUEUR%' AND id NOT IN (SELECT id FROM temp.retire_ids)
{_RETURNING}
"""
_RESTORE = f"""
UPDATE legifrance_articles SET etat = 'VIGUEUR'
WHERE code_id = :code AND etat NOT LIKE 'VIGUEUR%' AND id IN (SELECT id FROM temp.retire_ids)
{_RETURNING}
"""


_RETIRE_PAIRS_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS retire_pairs (rid TEXT PRIMARY KEY, new_etat TEXT NOT NULL) WITHOUT ROWID"
)
_RETIRE_PAIRS = f"""
UPDATE legifrance_articles SET etat = p.new_etat FROM temp.retire_pairs p
WHERE legifrance_articles.id = p.rid AND legifrance_articles.etat LIKE 'VIGUEUR%'
{_RETURNING}
"""


def retire_absent_logged(
    conn: sqlite3.Connection,
    code_id: str,
    ids: Sequence[str],
    cids: Sequence[str],
    tag: str | None,
    *,
    at: str | None = None,
) -> Retired:
    """Store.retire_absent on `conn` (inside a write transaction), events included.

    The in-force ids/cids go into two temp tables of the connection (keys only, emptied
    before returning); `IN (SELECT ... FROM temp.x)` reads their primary key, so the code's
    rows are scanned once (code_id index)."""
    for create in _RETIRE_TABLES:
        conn.execute(create)
    conn.executemany("INSERT INTO temp.retire_ids VALUES (?)", ((i,) for i in ids))
    conn.executemany("INSERT INTO temp.retire_cids VALUES (?)", ((c,) for c in cids))
    restored = [dict(row) for row in conn.execute(_RESTORE, {"code": code_id})]
    retired = [dict(row) for row in conn.execute(_RETIRE, {"code": code_id})]
    conn.execute("DELETE FROM temp.retire_ids")
    conn.execute("DELETE FROM temp.retire_cids")
    events = _retire_events(conn, retired, restored, tag, _stamp(at))
    etats = [row["etat"] for row in retired]
    return Retired(etats.count("MODIFIE"), etats.count("ABROGE"), events)


def retire_versions_logged(
    conn: sqlite3.Connection, pairs: Sequence[tuple[str, str]], tag: str | None, *, at: str | None = None
) -> Retired:
    """Store.retire_versions on `conn` (inside a write transaction): `pairs` are checked
    (id, new_etat) pairs (rows.version_pairs). One UPDATE for them all (the search index's
    triggers: see _STAGE_TABLE); events in the order of `pairs`."""
    conn.execute(_RETIRE_PAIRS_TABLE)
    conn.executemany("INSERT INTO temp.retire_pairs (rid, new_etat) VALUES (?, ?)", pairs)
    order = {rid: n for n, (rid, _) in enumerate(pairs)}
    retired = sorted((dict(row) for row in conn.execute(_RETIRE_PAIRS)), key=lambda r: order[r["id"]])
    conn.execute("DELETE FROM temp.retire_pairs")
    still_live = _cids_in_force(conn, [r["cid"] for r in retired])
    events = _write_events(
        conn, [_event("repealed", r, tag, _stamp(at)) for r in retired if r["cid"] not in still_live]
    )
    etats = [r["etat"] for r in retired]
    return Retired(etats.count("MODIFIE"), len(etats) - etats.count("MODIFIE"), events)
