"""supabase/migrations/0004_files_queue.sql on a real PostgreSQL: it creates the downstream's
queue only where there is none, and the upsert the export sends through PostgREST works on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import REPO, require
from tests.store.test_postgres import conninfo, create_db, drop_db, server_available

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

MIGRATION = (REPO / "supabase" / "migrations" / "0004_files_queue.sql").read_text()
# What PostgREST runs for `upsert(..., on_conflict="file_path")` (resolution=merge-duplicates).
UPSERT = (
    "INSERT INTO public.files_queue (file_path, bucket_id, status) VALUES (%s, %s, %s) "
    "ON CONFLICT (file_path) DO UPDATE SET file_path = EXCLUDED.file_path, "
    "bucket_id = EXCLUDED.bucket_id, status = EXCLUDED.status"
)


@pytest.fixture
def db() -> Iterator[psycopg.Connection]:
    require(server_available(), "no PostgreSQL server on 127.0.0.1:5432 (user postgres)")
    name = create_db()
    try:
        with psycopg.connect(conninfo(name), autocommit=True) as conn:
            yield conn
    finally:
        drop_db(name)


def columns(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    return conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = 'files_queue' ORDER BY ordinal_position"
    ).fetchall()


def rls(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.files_queue'::regclass").fetchone()[0])


def test_creates_the_queue_once_and_the_export_upsert_works(db: psycopg.Connection) -> None:
    db.execute(MIGRATION)
    db.execute(MIGRATION)  # running it again changes nothing
    assert [c[0] for c in columns(db)] == ["file_path", "bucket_id", "status", "created_at"]
    assert rls(db)
    path = "legifrance/code_de_l_urbanisme/LEGIARTI000024376802.json"
    db.execute(UPSERT, (path, "agentbasic-legifrance-raw", "pending"))
    db.execute("UPDATE public.files_queue SET status = 'done'")  # a worker processed it
    db.execute(UPSERT, (path, "agentbasic-legifrance-raw", "retired"))
    assert db.execute("SELECT file_path, status FROM public.files_queue").fetchall() == [(path, "retired")]
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("INSERT INTO public.files_queue (file_path, bucket_id) VALUES (%s, 'b')", (path,))
    assert db.execute("SELECT status FROM public.files_queue WHERE file_path = 'x'").fetchall() == []
    db.execute("INSERT INTO public.files_queue (file_path, bucket_id) VALUES ('x', 'b')")
    assert db.execute("SELECT status FROM public.files_queue WHERE file_path = 'x'").fetchone() == ("pending",)


def test_leaves_an_existing_queue_untouched(db: psycopg.Connection) -> None:
    db.execute(
        "CREATE TABLE public.files_queue (file_path text PRIMARY KEY, bucket_id text, status text, "
        "worker_id text, attempts int DEFAULT 0)"
    )
    db.execute("INSERT INTO public.files_queue VALUES ('a.json', 'b', 'done', 'w1', 2)")
    before = columns(db)
    db.execute(MIGRATION)
    assert columns(db) == before and not rls(db)
    assert db.execute("SELECT * FROM public.files_queue").fetchall() == [("a.json", "b", "done", "w1", 2)]
