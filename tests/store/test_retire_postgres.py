"""collector_retire_absent() on a real PostgreSQL: same results as SqliteStore.retire_absent for
the same steps (the Supabase store's own requests replayed as PostgREST runs them), scale and
privileges."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx

from collector.store import SqliteStore
from collector.store.supabase import SupabaseStore
from tests.conftest import require
from tests.store.fake_postgrest import FakePostgrest
from tests.store.test_postgres import (
    apply_migrations,
    conninfo,
    create_db,
    drop_db,
    postgrest_rpc,
    replay,
    server_available,
)
from tests.store.test_retire import CODE, OTHER, version

psycopg = pytest.importorskip("psycopg")
from psycopg import errors, sql  # noqa: E402

pytestmark = pytest.mark.postgres

URL = "https://proj.supabase.co"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    require(server_available(), "no PostgreSQL server on 127.0.0.1:5432 (user postgres)")
    name = create_db()
    try:
        with psycopg.connect(conninfo(name), autocommit=True) as conn:
            apply_migrations(conn)
        yield name
    finally:
        drop_db(name)


@pytest.fixture
def db(database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(conninfo(database), autocommit=True) as conn:
        conn.execute("TRUNCATE legifrance_articles, legifrance_rejected")
        yield conn


def pg_etats(db: psycopg.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT id, etat FROM legifrance_articles").fetchall())


def retire(db: psycopg.Connection, code_id: str, ids: list[str], cids: list[str] | None = None) -> tuple[int, int]:
    row = db.execute("SELECT * FROM collector_retire_absent(%s, %s::text[], %s::text[])", (code_id, ids, cids)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_same_results_as_sqlite_through_the_supabase_requests(db: psycopg.Connection, tmp_path: Path) -> None:
    rows = [
        version(1, 1), version(1, 2), version(2, 1), version(3, 1, etat="VIGUEUR_DIFF"),
        version(4, 1, etat="MODIFIE"), version(5, 1), version(9, 1, OTHER),
    ]
    ids = {(c, v): version(c, v).id for c in range(1, 10) for v in (1, 2)}
    steps: list[tuple[str, list[str], list[str] | None]] = [
        (CODE, [ids[1, 2], ids[2, 1], ids[6, 2]], ["C1", "C2", "C6"]),  # 6.2 not stored
        (CODE, [ids[1, 1], ids[4, 1], ids[3, 1]], None),  # roll back 1, restore 4
        (OTHER, [], None),
        (CODE, [], []),
        (CODE, list(ids.values()), None),  # everything listed again
    ]
    lite = SqliteStore(tmp_path / "parity.sqlite3")
    fake = FakePostgrest("service-key")
    try:
        with respx.mock(base_url=URL, assert_all_called=False) as router:
            router.route(path__startswith="/rest/v1/").mock(side_effect=fake.handle)
            remote = SupabaseStore(URL, "service-key", backoff=lambda n: 0.0)
            lite.commit_batch(rows)
            remote.commit_batch(rows)
            replay(db, fake)
            for n, (code_id, listed, cids) in enumerate(steps):
                expected = lite.retire_absent(code_id, listed, cids, tag=str(n))
                remote.retire_absent(code_id, listed, cids, tag=str(n))
                (request,) = fake.requests
                fake.requests.clear()
                assert postgrest_rpc(db, request) == [(*expected, expected.events)], (code_id, listed, cids)
                with sqlite3.connect(lite.path) as conn:
                    assert pg_etats(db) == dict(conn.execute("SELECT id, etat FROM legifrance_articles"))
            remote.close()
        # the same change log, event for event
        assert db.execute(
            "SELECT kind, code_id, cid, id, previous_id, num, etat, content_sha256, run_id FROM legifrance_changes "
            "ORDER BY seq").fetchall() == [tuple(c[k] for k in list(c)[1:-1]) for c in lite.read_changes(limit=1000)]
    finally:
        lite.close()
    final = db.execute("SELECT code_id, etat FROM legifrance_articles").fetchall()
    assert {etat for code_id, etat in final if code_id == CODE} == {"VIGUEUR"}  # the last step restored all
    assert {etat for code_id, etat in final if code_id == OTHER} == {"ABROGE"}


def test_superseded_repealed_and_one_vigueur_row_per_cid(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO legifrance_articles (id, cid, code_id, etat, text, content_sha256) "
        "SELECT 'A' || g || '_' || v, 'C' || g, %s, 'VIGUEUR', 't', 'h' "
        "FROM generate_series(1, 12000) g, generate_series(1, 2) v WHERE v = 1 OR g <= 7",
        (CODE,),
    )
    listed = [f"A{g}_{2 if g <= 7 else 1}" for g in range(1, 12001) if g % 1000]  # 12 cids gone
    assert retire(db, CODE, listed) == (7, 12)
    assert db.execute(
        "SELECT count(*) FROM (SELECT cid FROM legifrance_articles WHERE etat LIKE 'VIGUEUR%%' "
        "GROUP BY cid HAVING count(*) > 1) twice"
    ).fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM legifrance_articles").fetchone() == (12_007,)
    assert retire(db, CODE, listed) == (0, 0)


def test_missing_arguments_are_refused(db: psycopg.Connection) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        retire(db, "", [])
    with pytest.raises(errors.InvalidParameterValue):
        db.execute("SELECT * FROM collector_retire_absent(%s, NULL)", (CODE,))


def test_only_granted_roles_may_call_it(db: psycopg.Connection) -> None:
    role = f"collector_probe_{uuid.uuid4().hex[:10]}"
    db.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        with pytest.raises(errors.InsufficientPrivilege):
            retire(db, CODE, [])
        db.execute("RESET ROLE")
    finally:
        db.execute("RESET ROLE")
        db.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
