"""The migration on a real PostgreSQL (127.0.0.1:5432, user postgres): schema, RLS, the SQL that
PostgREST runs for the store's requests, and the lease / counter functions under concurrency."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from collector.config import Mode
from collector.models import CodeMark
from collector.store.rows import ARTICLE_COLUMNS
from collector.store.supabase import SupabaseStore
from tests.conftest import REPO, require
from tests.store.fake_postgrest import KEYS, FakePostgrest
from tests.store.helpers import T0, article, rejected

psycopg = pytest.importorskip("psycopg")
from psycopg import errors, sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

pytestmark = pytest.mark.postgres

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"
MIGRATIONS = sorted((REPO / "supabase" / "migrations").glob("*.sql"))
TABLES = sorted(KEYS)
JSONB_ARGS = {"p_articles", "p_rejected", "p_progress"}  # the functions' jsonb parameters
SUPABASE_ROLES_LOCK = 0x636F6C6C  # advisory lock serialising the tests that create roles


def conninfo(db: str) -> str:
    return f"host=127.0.0.1 port=5432 user=postgres dbname={db} connect_timeout=5"


def server_available() -> bool:
    try:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def apply_migrations(conn: psycopg.Connection) -> None:
    """Every file of supabase/migrations, in name order (as the README tells users to)."""
    for path in MIGRATIONS:
        conn.execute(path.read_text())


def create_db() -> str:
    name = f"collector_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_db(name: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A throwaway database with the migration applied (dropped afterwards)."""
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
    """An autocommit connection to empty tables."""
    with psycopg.connect(conninfo(database), autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(sql.Identifier(t) for t in TABLES))
        )
        yield conn


# ---- schema -------------------------------------------------------------------------------------

def test_migration_is_idempotent_and_creates_the_tables(db: psycopg.Connection) -> None:
    apply_migrations(db)  # a second run changes nothing and does not fail
    tables = db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
    ).fetchall()
    assert [t[0] for t in tables] == TABLES
    columns = db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'legifrance_articles' "
        "ORDER BY ordinal_position"
    ).fetchall()
    assert tuple(c[0] for c in columns) == ARTICLE_COLUMNS
    indexes = {r[0] for r in db.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'legifrance_articles'")}
    assert any("(code_id)" in i for i in indexes) and any("(cid)" in i for i in indexes)
    for table, key in KEYS.items():
        pk = db.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (f"public.{table}",),
        ).fetchall()
        assert pk == [(key,)], table


def test_rls_is_enabled_on_every_table(db: psycopg.Connection) -> None:
    rows = db.execute(
        "SELECT relname, relrowsecurity FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
    ).fetchall()
    assert sorted(rows) == [(t, True) for t in TABLES]


def test_primary_key_and_single_row_tables_hold(db: psycopg.Connection) -> None:
    insert = (
        "INSERT INTO legifrance_articles (id, cid, code_id, etat, text, content_sha256) "
        "VALUES ('LEGIARTI1', 'LEGIARTI1', 'LEGITEXT1', 'VIGUEUR', 't', 'h')"
    )
    db.execute(insert)
    with pytest.raises(errors.UniqueViolation):
        db.execute(insert)
    with pytest.raises(errors.CheckViolation):
        db.execute("INSERT INTO collector_state (id, running, mode) VALUES (false, true, 'MASSIVE')")
    with pytest.raises(errors.CheckViolation):
        db.execute("INSERT INTO collector_state (running, mode) VALUES (true, 'TURBO')")


# ---- the SQL PostgREST runs for the store's own requests ----------------------------------------

def postgrest_write(conn: psycopg.Connection, request: httpx.Request) -> None:
    """Run a captured write the way PostgREST does (json_populate_recordset of the body, with
    `columns` selecting the payload keys and ON CONFLICT ... DO UPDATE for merge-duplicates)."""
    table = request.url.path.removeprefix("/rest/v1/")
    params = {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}
    body = json.loads(request.content)
    t = sql.Identifier("public", table)
    if request.method == "PATCH":  # UPDATE ... SET col = body.col WHERE id = N
        column, value = params.popitem()
        assert value.startswith("eq.")
        sets = sql.SQL(", ").join(
            sql.SQL("{} = pgrst_body.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in body
        )
        conn.execute(
            sql.SQL("UPDATE {t} SET {sets} FROM (SELECT * FROM json_populate_record(NULL::{t}, %s::json)) pgrst_body "
                    "WHERE {t}.{col} = %s").format(t=t, sets=sets, col=sql.Identifier(column)),
            (json.dumps(body), value.removeprefix("eq.")),
        )
        return
    rows = body if isinstance(body, list) else [body]
    columns = [c.strip('"') for c in params["columns"].split(",")] if "columns" in params else list(rows[0])
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    picked = sql.SQL(", ").join(sql.SQL("pgrst_body.{}").format(sql.Identifier(c)) for c in columns)
    statement = sql.SQL("INSERT INTO {t} ({names}) SELECT {picked} FROM json_populate_recordset(NULL::{t}, %s::json) pgrst_body").format(
        t=t, names=names, picked=picked
    )
    if "resolution=merge-duplicates" in request.headers.get("prefer", ""):
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in columns
        )
        statement += sql.SQL(" ON CONFLICT ({key}) DO UPDATE SET {updates}").format(
            key=sql.Identifier(params["on_conflict"]), updates=updates
        )
    conn.execute(statement, (json.dumps(rows),))


def postgrest_rpc(conn: psycopg.Connection, request: httpx.Request) -> list[tuple[Any, ...]]:
    name = request.url.path.removeprefix("/rest/v1/rpc/")
    args = json.loads(request.content)
    call = sql.SQL("SELECT * FROM {fn}({args})").format(
        fn=sql.Identifier("public", name),
        args=sql.SQL(", ").join(sql.SQL("{} := %s").format(sql.Identifier(k)) for k in args),
    )
    values = [Jsonb(v) if k in JSONB_ARGS and v is not None else v for k, v in args.items()]
    return conn.execute(call, values).fetchall()


def replay(conn: psycopg.Connection, fake: FakePostgrest) -> None:
    for request in fake.requests:
        if request.url.path.startswith("/rest/v1/rpc/"):
            postgrest_rpc(conn, request)
        elif request.method in {"POST", "PATCH"}:
            postgrest_write(conn, request)
    fake.requests.clear()


@pytest.fixture
def captured() -> Iterator[tuple[SupabaseStore, FakePostgrest]]:
    fake = FakePostgrest("service-key")
    with respx.mock(base_url="https://proj.supabase.co", assert_all_called=False) as router:
        router.route(path__startswith="/rest/v1/").mock(side_effect=fake.handle)
        store = SupabaseStore("https://proj.supabase.co", "service-key", backoff=lambda n: 0.0)
        yield store, fake
        store.close()


def test_the_store_requests_run_as_postgrest_sql_on_the_real_schema(
    db: psycopg.Connection, captured: tuple[SupabaseStore, FakePostgrest]
) -> None:
    store, fake = captured
    batch = [article(n) for n in range(1, 8)]
    run = store.start_run(Mode.MASSIVE, ["LEGITEXT000099900001"])
    store.commit_batch(batch[:3], [rejected(4, 40), rejected(9, 3)], run_id=run, run_progress={"stored": 3, "at": T0})
    replay(db, fake)
    store.commit_batch(batch, run_id=run, run_progress={"stored": 7})  # replays 1-3, stores the rejected 4
    replay(db, fake)
    store.commit_batch(batch)  # the same upsert statement twice
    replay(db, fake)
    store.set_code_mark(CodeMark("LEGITEXT000099900001", "Code fictif", "2026-11-01", "2026-11-02", T0))
    store.save_state({"running": True, "mode": "MASSIVE", "updated_at": T0, "pid": 12, "host": "h", "extra_key": 1})
    store.save_state({"running": False, "mode": "MAINTENANCE", "updated_at": T0, "pid": 13, "host": "h"})
    store.add_requests(["d:2026-11-28", "h:2026-11-28T15"], 4)
    store.acquire_lease("A", 30)
    replay(db, fake)

    rows = db.execute(
        "SELECT id, text, date_debut::text, date_fin::text, nota, collected_at FROM legifrance_articles ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == [a.id for a in batch]  # one row each
    for row, a in zip(rows, batch, strict=True):
        assert row[1:] == (a.text, a.date_debut.isoformat(), a.date_fin and a.date_fin.isoformat(), a.nota, T0)
    assert db.execute("SELECT id FROM legifrance_rejected").fetchall() == [(rejected(9, 0).id,)]  # trigger
    assert db.execute("SELECT id, mode, codes, progress FROM collector_runs").fetchall() == [
        (run, "MASSIVE", ["LEGITEXT000099900001"], {"stored": 7})
    ]
    assert db.execute("SELECT running, mode, pid, extra FROM collector_state").fetchall() == [(False, "MAINTENANCE", 13, {})]
    assert db.execute("SELECT walked_at FROM collector_code_marks").fetchall() == [(T0,)]
    assert dict(db.execute("SELECT window_key, count FROM collector_request_counters").fetchall()) == {
        "d:2026-11-28": 4, "h:2026-11-28T15": 4,
    }
    assert db.execute("SELECT owner FROM collector_lease").fetchall() == [("A",)]


def test_one_upsert_statement_cannot_touch_a_row_twice(db: psycopg.Connection) -> None:
    """Why the store de-duplicates each batch: PostgreSQL refuses it (SQLSTATE 21000)."""
    with pytest.raises(errors.CardinalityViolation):
        db.execute(
            "INSERT INTO legifrance_rejected (id, code_id, reason, length) "
            "SELECT * FROM (VALUES ('X', 'C', 'too_short', 1), ('X', 'C', 'too_short', 2)) v "
            "ON CONFLICT (id) DO UPDATE SET length = EXCLUDED.length"
        )


# ---- lease and counters -------------------------------------------------------------------------

def acquire(conn: psycopg.Connection, owner: str, ttl: float) -> tuple[str, datetime, bool]:
    row = conn.execute("SELECT * FROM collector_acquire_lease(%s, %s)", (owner, ttl)).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_lease_expiry_renewal_and_release(db: psycopg.Connection) -> None:
    owner, first_expiry, ok = acquire(db, "A", 0.5)
    assert (owner, ok) == ("A", True)
    assert acquire(db, "B", 0.5) == ("A", first_expiry, False)
    owner, renewed, ok = acquire(db, "A", 0.5)  # only the holder renews
    assert ok and renewed > first_expiry
    acquired_at = db.execute("SELECT acquired_at FROM collector_lease").fetchone()
    while db.execute("SELECT clock_timestamp() < %s", (renewed,)).fetchone()[0]:
        time.sleep(0.05)
    assert acquire(db, "B", 30)[2] is True  # expired: taken
    assert db.execute("SELECT acquired_at FROM collector_lease").fetchone() != acquired_at
    assert acquire(db, "A", 30)[:1] == ("B",)
    db.execute("SELECT collector_release_lease('A')")  # not the holder: no effect
    assert acquire(db, "A", 30)[2] is False
    db.execute("SELECT collector_release_lease('B')")
    assert acquire(db, "A", 30)[2] is True
    with pytest.raises(errors.InvalidParameterValue):
        acquire(db, "", 30)
    with pytest.raises(errors.InvalidParameterValue):
        acquire(db, "A", 0)


def test_lease_under_concurrency_has_at_most_one_holder(database: str, db: psycopg.Connection) -> None:
    ttl = 0.2
    rounds = 5
    pause_before = [0.0, 0.0, 0.3, 0.0, 0.3]  # some rounds start after the lease expired
    owners = ["A"] * 5 + ["B"] * 5  # 10 threads x 5 rounds = 50 attempts
    results: list[tuple[int, str, str, datetime, bool]] = []
    errors_seen: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(owners))

    def contend(me: str) -> None:
        try:
            with psycopg.connect(conninfo(database), autocommit=True) as conn:
                for r in range(rounds):
                    barrier.wait(timeout=60)
                    time.sleep(pause_before[r])
                    holder, expires, ok = acquire(conn, me, ttl)
                    with lock:
                        results.append((r, me, holder, expires, ok))
        except BaseException as exc:
            errors_seen.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=contend, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors_seen and len(results) == 50
    for r in range(rounds):
        winners = {me for (rr, me, _, _, ok) in results if rr == r and ok}
        assert len(winners) == 1, (r, winners)  # someone holds it after every round, never two
    for _, me, holder, _, ok in results:
        assert (holder == me) == ok
    # Intervals [expires - ttl, expires) of successive holders never overlap.
    grants = sorted((exp - timedelta(seconds=ttl), exp, me) for (_, me, _, exp, ok) in results if ok)
    holder, held_until = grants[0][2], grants[0][1]
    for start, end, me in grants[1:]:
        if me != holder:
            assert start >= held_until, (me, start, holder, held_until)
            holder, held_until = me, end
        else:
            held_until = max(held_until, end)


def test_add_requests_concurrent_increments_sum_exactly(database: str, db: psycopg.Connection) -> None:
    errors_seen: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        try:
            with psycopg.connect(conninfo(database), autocommit=True) as conn:
                barrier.wait(timeout=60)
                for i in range(25):
                    keys = ["d:2026-11-28", "h:2026-11-28T15", f"h:new-{i}"]
                    conn.execute("SELECT collector_add_requests(%s, %s)", (keys if k % 2 else keys[::-1], 1))
        except BaseException as exc:
            errors_seen.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors_seen
    counts = dict(db.execute("SELECT window_key, count FROM collector_request_counters").fetchall())
    assert counts.pop("d:2026-11-28") == 200 and counts.pop("h:2026-11-28T15") == 200
    assert counts == {f"h:new-{i}": 8 for i in range(25)}


# ---- on a Supabase-like cluster (roles anon / authenticated / service_role) ------------------------

def test_with_supabase_roles_anon_is_shut_out_and_service_role_works() -> None:
    require(server_available(), "no PostgreSQL server on 127.0.0.1:5432 (user postgres)")
    created: list[str] = []
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute("SELECT pg_advisory_lock(%s)", (SUPABASE_ROLES_LOCK,))
        try:
            for role, extra in (("anon", ""), ("authenticated", ""), ("service_role", " BYPASSRLS")):
                if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN" + extra).format(sql.Identifier(role)))
                    created.append(role)
            name = create_db()
            try:
                with psycopg.connect(conninfo(name), autocommit=True) as conn:
                    # Supabase grants table privileges to its API roles by default; RLS is the gate.
                    conn.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated")
                    conn.execute("GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role")
                    apply_migrations(conn)
                    apply_migrations(conn)
                    conn.execute(
                        "INSERT INTO legifrance_articles (id, cid, code_id, etat, text, content_sha256) "
                        "VALUES ('LEGIARTI1', 'LEGIARTI1', 'LEGITEXT1', 'VIGUEUR', 't', 'h')"
                    )
                    conn.execute("SET ROLE anon")
                    assert conn.execute("SELECT count(*) FROM legifrance_articles").fetchone() == (0,)
                    with pytest.raises(errors.InsufficientPrivilege):
                        conn.execute("INSERT INTO collector_state (running, mode) VALUES (true, 'MASSIVE')")
                    with pytest.raises(errors.InsufficientPrivilege):
                        conn.execute("SELECT * FROM collector_acquire_lease('intruder', 60)")
                    for call in ("SELECT count(*) FROM legifrance_changes", "SELECT * FROM legifrance_change_consumers",
                                 "SELECT collector_commit_batch('[]'::jsonb)", "SELECT * FROM collector_claim_changes('x', 1)",
                                 "SELECT * FROM collector_retire_versions('{}', '{}')"):
                        with pytest.raises(errors.InsufficientPrivilege):
                            conn.execute(call)
                    conn.execute("RESET ROLE")
                    conn.execute("SET ROLE service_role")
                    assert conn.execute("SELECT count(*) FROM legifrance_articles").fetchone() == (1,)
                    assert acquire(conn, "collector", 60)[2] is True
                    conn.execute("SELECT collector_add_requests(ARRAY['d:1'], 2)")
                    conn.execute("INSERT INTO collector_runs (mode) VALUES ('MASSIVE')")
                    row = {"id": "LEGIARTI2", "cid": "LEGIARTI2", "code_id": "LEGITEXT1", "etat": "VIGUEUR",
                           "text": "t", "html": "", "section_path": "", "content_sha256": "h",
                           "collected_at": "2026-01-01T00:00:00Z"}
                    assert conn.execute("SELECT collector_commit_batch(%s)", (Jsonb([row]),)).fetchone() == (
                        {"added": 1, "modified": 0, "repealed": 0, "corrected": 0},)
                    assert [r[1] for r in conn.execute("SELECT * FROM collector_claim_changes('w', 5)")] == ["added"]
                    conn.execute("RESET ROLE")
            finally:
                drop_db(name)
        finally:
            for role in created:
                try:
                    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
                except psycopg.Error:
                    pass  # still used by a concurrent run's database: NOLOGIN, harmless
            admin.execute("SELECT pg_advisory_unlock(%s)", (SUPABASE_ROLES_LOCK,))
