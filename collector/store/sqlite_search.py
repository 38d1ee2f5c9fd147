"""Full-text search for the SQLite store: an FTS5 index over legifrance_articles.text.

The index is an external-content FTS5 table (the text is not stored twice) keyed by the
articles' rowid and kept in step by triggers (insert, delete, update of text, code_id or etat) in the
same transaction as the row. `unicode61 remove_diacritics 2` folds case and accents on both sides
("DELIBERATION" finds "délibération"); there is no stemming (a plural is another word).
Invariants: FTS rowid == legifrance_articles.rowid, and rows change through INSERT, UPDATE
(upserts with ON CONFLICT DO UPDATE) or DELETE only: INSERT OR REPLACE deletes the old row
without firing the delete trigger and would leave its words in the index. VACUUM may renumber the rowids of a table
without an INTEGER PRIMARY KEY; after one, call `rebuild_search_index` (SqliteStore does it
through `rebuild_search()`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from collector.search import ELLIPSIS, HIGHLIGHT, VERSION_COLUMNS, SearchQuery

FTS_TABLE = "legifrance_articles_fts"
SNIPPET_TOKENS = 24

# code_id and etat are indexed too, so filters are doclist intersections inside MATCH (a join
# to the articles would read each match's whole row); bm25 weighs them 0.
_CREATE_FTS = f"""
CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(
    text, code_id, etat, content='legifrance_articles', content_rowid='rowid',
    tokenize = "unicode61 remove_diacritics 2"
)
"""
_COLUMNS = "text, code_id, etat"
_NEW = "new.text, new.code_id, new.etat"
_OLD = "old.text, old.code_id, old.etat"
_TRIGGERS = (
    f"""CREATE TRIGGER IF NOT EXISTS legifrance_articles_fts_ins AFTER INSERT ON legifrance_articles
    BEGIN INSERT INTO {FTS_TABLE} (rowid, {_COLUMNS}) VALUES (new.rowid, {_NEW}); END""",
    f"""CREATE TRIGGER IF NOT EXISTS legifrance_articles_fts_del AFTER DELETE ON legifrance_articles
    BEGIN INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rowid, {_COLUMNS}) VALUES ('delete', old.rowid, {_OLD}); END""",
    f"""CREATE TRIGGER IF NOT EXISTS legifrance_articles_fts_upd AFTER UPDATE OF {_COLUMNS} ON legifrance_articles
    WHEN old.text IS NOT new.text OR old.code_id IS NOT new.code_id OR old.etat IS NOT new.etat
    BEGIN
        INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rowid, {_COLUMNS}) VALUES ('delete', old.rowid, {_OLD});
        INSERT INTO {FTS_TABLE} (rowid, {_COLUMNS}) VALUES (new.rowid, {_NEW});
    END""",
)
_REBUILD = f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('rebuild')"

# Ranking: bm25() is lower for better matches (rank = -bm25, higher is better). Scoring costs
# a lookup per match (~1.5 µs), so a query matching more than RANK_CAP articles ranks its
# RANK_CAP most recently stored matches only: the p95 of bench/search.py stays far under 100 ms.
RANK_CAP = 10_000
_RANKED = f"""
SELECT rid, score FROM (
    SELECT rowid AS rid, bm25({FTS_TABLE}, 1.0, 0.0, 0.0) AS score
    FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match ORDER BY rowid DESC LIMIT {RANK_CAP}
) ORDER BY score, rid LIMIT :limit
"""
# Snippets for the kept rows only (a literal rowid list: FTS5 seeks each one).
_PAGE = f"""
SELECT f.rowid AS rid, a.id, a.code_id, a.code_title, a.num, a.etat, a.section_path,
       snippet({FTS_TABLE}, 0, ?, ?, ?, {SNIPPET_TOKENS}) AS snippet
FROM {FTS_TABLE} f JOIN legifrance_articles a ON a.rowid = f.rowid
WHERE {FTS_TABLE} MATCH ? AND f.rowid IN ({{marks}})
"""


def match_expression(query: SearchQuery) -> str:
    """The FTS5 MATCH for a query: its terms in the text column, AND the filters as tokens
    of their own columns (etat "VIGUEUR" also matches VIGUEUR_DIFF: "_" splits tokens).
    Every value is a double-quoted string of letters and digits (see collector.search)."""
    parts = [f"text : ({query.fts5_match()})"]
    if query.code_id is not None:
        parts.append(f'code_id : "{query.code_id}"')
    if query.etat is not None:
        parts.append(f'etat : "{query.etat}"')
    return " AND ".join(parts)


def ensure_search_index(conn: sqlite3.Connection) -> bool:
    """Create the index and its triggers if missing, filling it from the stored rows once
    (one IMMEDIATE transaction: a second process or a crash cannot leave it half built).
    True when it was created now."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (FTS_TABLE,)
        ).fetchone()
        if not exists:
            conn.execute(_CREATE_FTS)
            conn.execute(_REBUILD)
        for trigger in _TRIGGERS:
            conn.execute(trigger)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return not exists


def rebuild_search_index(conn: sqlite3.Connection) -> None:
    """Refill the index from legifrance_articles (after a VACUUM; see the module doc)."""
    conn.execute(_REBUILD)


def search(conn: sqlite3.Connection, query: SearchQuery) -> list[dict[str, Any]]:
    """The best `query.limit` matches, best first, each with a bracket-marked snippet; both
    statements read one snapshot."""
    match = match_expression(query)
    conn.execute("BEGIN")
    try:
        ranked = conn.execute(_RANKED, {"match": match, "limit": query.limit}).fetchall()
        if not ranked:
            return []
        order = {row["rid"]: (row["score"], n) for n, row in enumerate(ranked)}
        sql = _PAGE.format(marks=", ".join("?" for _ in order))
        rows = conn.execute(sql, (HIGHLIGHT[0], HIGHLIGHT[1], ELLIPSIS, match, *order)).fetchall()
    finally:
        conn.execute("COMMIT")
    out = []
    for row in sorted(rows, key=lambda r: order[r["rid"]][1]):
        hit = dict(row)
        hit["rank"] = -order[hit.pop("rid")][0]
        out.append(hit)
    return out


def get_article(conn: sqlite3.Connection, article_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM legifrance_articles WHERE id = ?", (article_id,)).fetchone()
    return dict(row) if row is not None else None


def article_versions(conn: sqlite3.Connection, cid: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT {', '.join(VERSION_COLUMNS)} FROM legifrance_articles WHERE cid = ? ORDER BY date_debut DESC, id DESC",
        (cid,),
    ).fetchall()
    return [dict(row) for row in rows]
