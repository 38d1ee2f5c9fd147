"""Migration 0006 on a real PostgreSQL, through SupabaseStore: its REST calls (respx) are run on
the database as PostgREST runs them (`SELECT fn(name := value, ...)`, a row read by filter). The
same batches give SqliteStore and SupabaseStore the same rows, events and dump state; a stamp
already applied is refused whole."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx

from collector.models import DumpBatch
from collector.store import SqliteStore
from collector.store.supabase import SupabaseStore
from tests.store.helpers import article, rejected
from tests.store.test_changes_postgres import database  # noqa: F401 - the module's PostgreSQL database
from tests.store.test_postgres import apply_migrations, conninfo

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

pytestmark = pytest.mark.postgres

URL = "https://proj.supabase.co"
JSONB = {"p_articles", "p_rejected", "p_reconcile"}
EVENT = "kind, code_id, cid, id, previous_id, num, etat, content_sha256, run_id"
GLOBAL = "Freemium_legi_global_20260101-120000.tar.gz"


@pytest.fixture
def remote(database: str) -> Iterator[tuple[SupabaseStore, psycopg.Connection]]:  # noqa: F811
    with psycopg.connect(conninfo(database), autocommit=True) as conn:
        apply_migrations(conn)  # every migration again, 0006 included: idempotent
        conn.execute("TRUNCATE legifrance_articles, legifrance_rejected, legifrance_changes, collector_dump_state "
                     "RESTART IDENTITY")

        def postgrest(request: httpx.Request) -> httpx.Response:
            path = request.url.path.removeprefix("/rest/v1/")
            if path == "rpc/collector_apply_dump_batch":
                args = json.loads(request.content)
                call = sql.SQL("SELECT public.collector_apply_dump_batch({})").format(
                    sql.SQL(", ").join(sql.SQL("{} := %s").format(sql.Identifier(k)) for k in args))
                values = [Jsonb(v) if k in JSONB else v for k, v in args.items()]
                try:
                    return httpx.Response(200, json=conn.execute(call, values).fetchone()[0])
                except psycopg.Error as exc:
                    return httpx.Response(400, json={"code": exc.sqlstate, "message": str(exc.diag.message_primary),
                                                     "details": None, "hint": None})
            if path == "collector_dump_state" and request.method == "GET":
                cur = conn.execute("SELECT * FROM collector_dump_state WHERE id")
                names = [d.name for d in cur.description or ()]
                rows = [dict(zip(names, row)) for row in cur.fetchall()]
                return httpx.Response(200, content=json.dumps(rows, default=str),
                                      headers={"content-type": "application/json"})
            return httpx.Response(404, json={"code": "PGRST404", "message": f"not forwarded: {path}"})

        with respx.mock(base_url=URL, assert_all_called=False) as router:
            router.route(path__startswith="/rest/v1/").mock(side_effect=lambda r: postgrest(r))
            store = SupabaseStore(URL, "service-key", backoff=lambda n: 0.0, max_attempts=1)
            yield store, conn
            store.close()


def batches() -> list[DumpBatch]:
    code = article(1).code_id
    newer = dataclasses.replace(article(4), cid=article(2).cid, date_debut=article(2).date_debut)
    base = dict(stamp="20260101-120000", is_global=True, codes="all", archive=GLOBAL)
    delta = dict(stamp="20260102-210000", is_global=False, codes="all", archive="LEGI_20260102-210000.tar.gz")
    return [
        DumpBatch(**base, members=2, bytes_read=100, articles=(article(1), article(2), article(3)),
                  rejected=(rejected(8, 12),)),
        DumpBatch(**base, members=3, bytes_read=150, final=True,
                  reconcile=((code, (article(1).id, article(2).id), (article(1).cid, article(2).cid)),)),
        DumpBatch(**delta, members=1, bytes_read=10, articles=(newer,)),
        DumpBatch(**delta, members=2, bytes_read=20, final=True, retire=((article(2).id, "MODIFIE"),
                                                                          (article(1).id, "ABROGE"))),
    ]


def state_of(store: SqliteStore | SupabaseStore) -> tuple[object, ...]:
    s = store.get_dump_state()
    return s.last_stamp, s.last_archive, s.global_stamp, s.codes, s.archive, s.members, s.bytes_read


def test_same_batches_same_store_as_sqlite(remote: tuple[SupabaseStore, psycopg.Connection], tmp_path: Path) -> None:
    store, conn = remote
    lite = SqliteStore(tmp_path / "lite.sqlite3")
    try:
        for batch in batches():
            assert store.apply_dump_batch(batch) == lite.apply_dump_batch(batch)
            assert state_of(store) == state_of(lite)
        assert state_of(store)[:5] == ("20260102-210000", "LEGI_20260102-210000.tar.gz", "20260101-120000", "all", None)
        pg_events = conn.execute(f"SELECT {EVENT} FROM legifrance_changes ORDER BY seq").fetchall()
        lite_events = [tuple(c[k] for k in EVENT.split(", ")) for c in lite.read_changes(limit=1000)]
        assert pg_events == lite_events and {e[0] for e in pg_events} == {"added", "modified", "repealed"}
        pg_etats = dict(conn.execute("SELECT id, etat FROM legifrance_articles").fetchall())
        lite_etats = {i: r["etat"] for i, r in lite.get_articles(list(pg_etats)).items()}
        assert pg_etats == lite_etats
        assert conn.execute("SELECT count(*) FROM legifrance_rejected").fetchone()[0] == lite.count_rejected() == 1
    finally:
        lite.close()


def test_applied_stamp_refused_whole_and_replay_logs_nothing(remote: tuple[SupabaseStore, psycopg.Connection]) -> None:
    store, conn = remote
    first, final = batches()[:2]
    store.apply_dump_batch(first)
    assert sum(store.apply_dump_batch(first).get(k, 0) for k in ("added", "modified", "corrected")) == 0
    store.apply_dump_batch(final)
    events = conn.execute("SELECT count(*) FROM legifrance_changes").fetchone()[0]
    with pytest.raises(ValueError, match="already applied"):
        store.apply_dump_batch(dataclasses.replace(final, articles=(article(9),)))
    assert conn.execute("SELECT count(*) FROM legifrance_changes").fetchone()[0] == events
    assert conn.execute("SELECT count(*) FROM legifrance_articles WHERE id = %s", (article(9).id,)).fetchone()[0] == 0


def test_rls_on_and_no_grant_to_public(remote: tuple[SupabaseStore, psycopg.Connection]) -> None:
    _, conn = remote
    assert conn.execute("SELECT relrowsecurity FROM pg_class WHERE relname = 'collector_dump_state'").fetchone()[0]
    granted = conn.execute(
        "SELECT has_function_privilege('public', 'public.collector_apply_dump_batch(text, text, boolean, text, "
        "bigint, bigint, boolean, text, jsonb, jsonb, text[], text[], jsonb)', 'EXECUTE')").fetchone()[0]
    assert granted is False
