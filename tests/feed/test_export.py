"""The bucket + files_queue export, from the real SQLite change log to a fake Supabase (Storage
and PostgREST) served over a real socket, through supabase-py's own clients."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
import structlog
from supabase import create_client

from collector.config import DEFAULT_EXPORT_PATH_TEMPLATE, ConfigError, Settings
from collector.feed.bucket import BucketQueue
from collector.feed.export import ExportWorker, export_backoff
from collector.feed.export_file import article_json, category_slug, epoch_ms, file_path
from collector.models import Article, CodeToc, TocEntry
from collector.parse import article_from_api
from collector.logs import reset_logging
from collector.runtime import build_runtime, status_payload
from collector.store import SqliteStore
from collector.store.supabase import SupabaseStore
from tests.store.fake_postgrest import Fault
from tests.store.fake_storage import FakeSupabaseServer
from tests.store.helpers import T0, FakeClock, article

KEY = "sb_secret_EXPORT-DO-NOT-LEAK-0a1b2c3d"
BUCKET = "agentbasic-legifrance-raw"
CODE = "LEGITEXT000006074075"
CIVIL = "LEGITEXT000006070721"
TITLE = "Code de l'urbanisme"
FOLDER = "legifrance/code_de_l_urbanisme"
UPLOAD_ROUTE = f"/storage/v1/object/{BUCKET}/"


def version(cid: int, v: int, *, text: str | None = None, code_id: str = CODE, title: str = TITLE) -> Article:
    """Version `v` of article C<cid> (id LEGIARTI<cid><v>), later versions start later."""
    base = article(cid * 10 + v, code_id, text=text)
    return replace(base, id=f"LEGIARTI{cid:08d}{v:04d}", cid=f"LEGIARTI{cid:08d}0000", code_title=title,
                   date_debut=date(2000 + v, 1, 1))


def path(a: Article) -> str:
    return f"{FOLDER}/{a.id}.json" if a.code_title == TITLE else f"legifrance/{category_slug(a.code_title)}/{a.id}.json"


@pytest.fixture
def server() -> Iterator[FakeSupabaseServer]:
    with FakeSupabaseServer(KEY, (BUCKET,)) as s:
        yield s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "collector.sqlite3", clock=FakeClock())
    yield s
    s.close()


@pytest.fixture
def bucket(server: FakeSupabaseServer) -> Iterator[BucketQueue]:
    b = BucketQueue.connect(server.url, KEY, BUCKET)
    yield b
    b.close()


def worker(store: SqliteStore, bucket: BucketQueue, **kw: object) -> ExportWorker:
    kw.setdefault("backoff", lambda attempt: 0.0)
    kw.setdefault("poll_seconds", 0.05)
    return ExportWorker(store, bucket, path_template=DEFAULT_EXPORT_PATH_TEMPLATE, **kw)  # type: ignore[arg-type]


def queue_writes(server: FakeSupabaseServer) -> int:
    return len(server.postgrest.writes("files_queue"))


def wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# ---- the file: path and JSON ----------------------------------------------------------------------

@pytest.mark.parametrize(("title", "slug"), [
    ("Code de l'urbanisme", "code_de_l_urbanisme"),
    ("Code général des impôts", "code_general_des_impots"),
    ("Code de la construction et de l'habitation", "code_de_la_construction_et_de_l_habitation"),
    ("  Œuvres — « test »  ", "uvres_test"),
    ("", "sans_titre"),
    (None, "sans_titre"),
])
def test_category_is_a_slug_of_the_code_title(title: str | None, slug: str) -> None:
    assert category_slug(title) == slug


def test_path_template_placeholders() -> None:
    row = {"id": "LEGIARTI000024376802", "cid": "LEGIARTI000006814419", "code_id": CODE, "code_title": TITLE}
    assert file_path(DEFAULT_EXPORT_PATH_TEMPLATE, row) == "legifrance/code_de_l_urbanisme/LEGIARTI000024376802.json"
    assert file_path("x/{code_id}/{cid}/{id}.json", row) == f"x/{CODE}/LEGIARTI000006814419/LEGIARTI000024376802.json"


@pytest.mark.parametrize(("env", "variable"), [
    ({"EXPORT_BUCKET": BUCKET}, "EXPORT_BUCKET"),  # no Supabase settings
    ({"EXPORT_BUCKET": "a/b", "SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": KEY}, "EXPORT_BUCKET"),
    ({"EXPORT_PATH_TEMPLATE": "legifrance/{title}/{id}.json"}, "EXPORT_PATH_TEMPLATE"),
    ({"EXPORT_PATH_TEMPLATE": "legifrance/{category}.json"}, "EXPORT_PATH_TEMPLATE"),  # no {id}
    ({"EXPORT_PATH_TEMPLATE": "legifrance/{id:>5}.json"}, "EXPORT_PATH_TEMPLATE"),
    ({"EXPORT_PATH_TEMPLATE": "legifrance/{id"}, "EXPORT_PATH_TEMPLATE"),
    ({"EXPORT_PATH_TEMPLATE": "../{id}.json"}, "EXPORT_PATH_TEMPLATE"),
    ({"EXPORT_PATH_TEMPLATE": "/abs/{id}.json"}, "EXPORT_PATH_TEMPLATE"),
    ({"EXPORT_RETIRED_STATUS": "pending"}, "EXPORT_RETIRED_STATUS"),
    ({"EXPORT_RETIRED_STATUS": "a b"}, "EXPORT_RETIRED_STATUS"),
])
def test_bad_export_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable) as caught:
        Settings.from_env(env)
    assert KEY not in str(caught.value)


def test_export_settings() -> None:
    assert Settings.from_env({}).export_bucket is None
    s = Settings.from_env({"EXPORT_BUCKET": BUCKET, "SUPABASE_URL": "https://x.supabase.co",
                           "SUPABASE_SERVICE_ROLE_KEY": KEY, "EXPORT_PATH_TEMPLATE": "raw/{code_id}/{id}.json",
                           "EXPORT_RETIRED_STATUS": "obsolete"})
    assert (s.export_bucket, s.export_path_template, s.export_retired_status) == (BUCKET, "raw/{code_id}/{id}.json", "obsolete")
    assert KEY not in repr(s)


def test_json_keeps_the_api_values_of_a_real_article(real_fixtures: Path) -> None:
    """A real getArticleByCid answer -> the stored row -> the exported JSON: the API's own
    values for the keys the store keeps (dates as the same epoch milliseconds)."""
    answer = json.loads((real_fixtures / "articles" / "LEGIARTI000006398191.json").read_text())["listArticle"][0]
    entry = TocEntry(answer["id"], answer["cid"], answer["num"], answer["etat"], "Chapitre I > Section I")
    code = CodeToc("LEGITEXT000006070666", "Code des instruments monétaires et des médailles", None, (entry,))
    stored = article_from_api(answer, entry, code, 0, T0)
    assert isinstance(stored, Article)
    row = dict(zip(("id", "cid", "code_id", "code_title", "num", "etat", "date_debut", "date_fin", "section_path",
                    "text", "html", "nota"), (stored.id, stored.cid, stored.code_id, stored.code_title, stored.num,
                    stored.etat, stored.date_debut.isoformat() if stored.date_debut else None, None,
                    stored.section_path, stored.text, stored.html, stored.nota), strict=True))
    out = article_json(row)
    for key in ("id", "cid", "num", "etat", "texteHtml", "dateDebut", "dateFin", "nota"):
        assert out[key] == answer[key], key
    assert out["texte"] == stored.text and answer["texte"].split()[:5] == out["texte"].split()[:5]
    assert (out["code_id"], out["code_title"], out["section_path"]) == (code.code_id, code.title, entry.section_path)
    assert epoch_ms("1952-06-29") == -552528000000  # before 1970: negative, like the API


# ---- exporting the change log -------------------------------------------------------------------

def test_every_event_is_exported_once_and_retired_versions_are_flagged(
    store: SqliteStore, bucket: BucketQueue, server: FakeSupabaseServer
) -> None:
    a1, b1, c1, other = version(1, 1), version(2, 1), version(3, 1), version(4, 1, title="Code civil", code_id=CIVIL)
    store.commit_batch([a1, b1, c1, other])
    w = worker(store, bucket)
    assert w.export_pending() == 4
    assert server.storage.writes == {f"{BUCKET}/{path(a)}": 1 for a in (a1, b1, c1, other)}
    assert server.queue() == {path(a): "pending" for a in (a1, b1, c1, other)}

    a2 = version(1, 2)  # a new version of article 1: `modified`, a1 retired
    b1_fixed = replace(b1, text=b1.text + " (corrigé)", content_sha256="f" * 64)  # same id, new text: `corrected`
    store.commit_batch([a2, b1_fixed])
    store.retire_absent(CODE, [a2.id, b1.id], [a2.cid, b1.cid])  # article 3 left the TOC: `repealed`
    kinds = [e["kind"] for e in store.read_changes(limit=100)]
    assert kinds == ["added"] * 4 + ["modified", "corrected", "repealed"]
    assert w.export_pending() == 3
    assert w.export_pending() == 0

    assert server.storage.writes == {f"{BUCKET}/{path(a)}": 1 for a in (a1, c1, other, a2)} | {f"{BUCKET}/{path(b1)}": 2}
    assert server.queue() == {
        path(a1): "retired", path(a2): "pending", path(b1): "pending", path(c1): "retired", path(other): "pending",
    }
    assert {r["bucket_id"] for r in server.postgrest.rows("files_queue")} == {BUCKET}
    assert store.get_cursor(f"export:{BUCKET}") == store.latest_change_seq() == 7

    uploaded = server.storage.json(BUCKET, path(b1))
    assert uploaded["texte"] == b1_fixed.text and uploaded["id"] == b1.id and uploaded["code_title"] == TITLE
    assert uploaded["dateFin"] == 32472144000000 and uploaded["dateDebut"] == epoch_ms(b1.date_debut)
    assert server.storage.objects[BUCKET][path(a2)].content_type == "application/json"
    assert all(r.headers["x-upsert"] == "true" for r in server.storage.uploads())
    status = w.status()
    assert (status["exported"], status["uploads"], status["queue_writes"], status["pending"]) == (7, 6, 8, 0)
    assert status["last_exported_seq"] == 7 and status["last_error"] is None


def test_a_late_backlog_uploads_no_version_already_retired(
    store: SqliteStore, bucket: BucketQueue, server: FakeSupabaseServer
) -> None:
    """The export was behind (Storage down for a while): a version added then replaced before it
    is exported is never uploaded, only marked retired; a version repealed then back in force
    is never marked retired (each of its two `added` events uploads it)."""
    a1, b1 = version(1, 1), version(2, 1)
    store.commit_batch([a1, b1])
    store.commit_batch([version(1, 2)])  # a1 -> MODIFIE
    store.retire_absent(CODE, [version(1, 2).id], [version(1, 2).cid])  # b1 repealed
    store.retire_absent(CODE, [version(1, 2).id, b1.id], [version(1, 2).cid, b1.cid])  # b1 back
    assert [e["kind"] for e in store.read_changes()] == ["added", "added", "modified", "repealed", "added"]
    worker(store, bucket).export_pending()
    assert server.storage.writes == {f"{BUCKET}/{path(version(1, 2))}": 1, f"{BUCKET}/{path(b1)}": 2}
    assert server.queue() == {path(a1): "retired", path(version(1, 2)): "pending", path(b1): "pending"}
    statuses = [json.loads(r.content)["status"] for r in server.postgrest.writes("files_queue")]
    assert statuses.count("pending") == 3 and statuses.count("retired") == 2  # a1, by `added` then `modified`


def test_unchanged_passes_upload_and_queue_nothing(store: SqliteStore, bucket: BucketQueue, server: FakeSupabaseServer) -> None:
    batch = [version(n, 1) for n in range(1, 6)]
    store.commit_batch(batch)
    w = worker(store, bucket)
    assert w.export_pending() == 5
    uploads, queued = len(server.storage.uploads()), queue_writes(server)
    assert (uploads, queued) == (5, 5)
    for later in (1, 2):  # the second and third passes see the same articles
        store.commit_batch([replace(a, collected_at=T0.replace(hour=15 + later)) for a in batch])
        assert w.export_pending() == 0
    assert (len(server.storage.uploads()), queue_writes(server)) == (5, 5)


def test_custom_retired_status(store: SqliteStore, bucket: BucketQueue, server: FakeSupabaseServer) -> None:
    old = version(1, 1)
    store.commit_batch([old])
    store.commit_batch([version(1, 2)])
    worker(store, bucket, retired_status="obsolete").export_pending()
    assert server.queue()[path(old)] == "obsolete"


def test_storage_503s_interrupt_the_export_then_a_restart_exports_every_event_once(
    store: SqliteStore, bucket: BucketQueue, server: FakeSupabaseServer
) -> None:
    first = [version(n, 1) for n in range(1, 4)]
    store.commit_batch(first)
    w = worker(store, bucket, backoff=lambda attempt: 0.02)
    w.start()
    wait_for(lambda: w.status()["exported"] == 3)
    outage = [Fault(status=503, body="<html>503 Service Unavailable</html>", method="POST", path_contains=UPLOAD_ROUTE)
              for _ in range(100)]
    server.storage.fail_next(*outage)
    later = [version(n, 1) for n in range(4, 9)] + [version(1, 2)]
    store.commit_batch(later)
    w.wake()
    wait_for(lambda: len(server.storage.faults) < 80)  # the outage is being retried
    status = w.status()
    assert "503" in status["last_error"] and status["next_retry_at"] is not None and status["alive"]
    assert status["last_exported_seq"] == 3 and status["pending"] == 6
    assert w.shutdown(5.0)  # the process stops in the middle of the outage
    assert store.get_cursor(w.consumer) == 3 and not w.status()["alive"]

    server.storage.keep_faults(3)  # the outage ends after a few more failures
    again = worker(store, bucket, backoff=lambda attempt: 0.0)
    again.start()
    wait_for(lambda: again.status()["last_exported_seq"] == store.latest_change_seq())
    assert again.shutdown(5.0)
    assert server.storage.faults == []
    expected = {f"{BUCKET}/{path(a)}": 1 for a in first + later}
    assert server.storage.writes == expected  # every event's file written exactly once
    assert server.queue()[path(first[0])] == "retired"
    assert sum(1 for s in server.queue().values() if s == "pending") == 8


def test_a_failed_queue_write_is_retried_without_uploading_again(
    store: SqliteStore, bucket: BucketQueue, server: FakeSupabaseServer
) -> None:
    store.commit_batch([version(1, 1)])
    server.postgrest.fail_next(*[Fault(status=503, body="<html>busy</html>", path_contains="/files_queue") for _ in range(4)])
    w = worker(store, bucket)
    assert w.export_pending() == 1
    assert server.storage.writes == {f"{BUCKET}/{path(version(1, 1))}": 1}
    assert queue_writes(server) == 5 and server.queue() == {path(version(1, 1)): "pending"}
    assert "files_queue" in w.status()["last_error"] and w.status()["next_retry_at"] is None


def test_reconcile_restores_files_and_queue_rows_the_downstream_lost(
    store: SqliteStore, server: FakeSupabaseServer
) -> None:
    articles = [version(n, 1) for n in range(1, 8)] + [version(9, 1, title="Code civil", code_id=CIVIL)]
    store.commit_batch(articles)
    store.retire_absent(CODE, [a.id for a in articles[1:7]], [a.cid for a in articles[1:7]])  # article 1 repealed
    small_pages = BucketQueue.connect(server.url, KEY, BUCKET, page_size=2)  # several list / queue pages per folder
    w = worker(store, small_pages)
    w.export_pending()
    assert w.reconcile() == {"checked": 7, "folders": 2, "uploaded": 0, "requeued": 0}

    gone, unqueued, repealed = articles[3], articles[5], articles[0]
    downstream = create_client(server.url, KEY)  # someone cleaning the bucket and the queue by hand
    downstream.storage.from_(BUCKET).remove([path(gone), path(repealed)])
    downstream.table("files_queue").delete().eq("file_path", path(unqueued)).execute()
    writes_before = dict(server.storage.writes)

    restarted = worker(store, small_pages)
    assert restarted.reconcile() == {"checked": 7, "folders": 2, "uploaded": 1, "requeued": 1}
    assert path(gone) in server.storage.paths(BUCKET) and path(repealed) not in server.storage.paths(BUCKET)
    assert server.storage.writes[f"{BUCKET}/{path(gone)}"] == writes_before[f"{BUCKET}/{path(gone)}"] + 1
    queue = server.queue()
    assert queue[path(gone)] == "pending" and queue[path(unqueued)] == "pending" and queue[path(repealed)] == "retired"
    assert restarted.status()["reconcile"]["uploaded"] == 1
    small_pages.close()


def test_no_key_in_errors_status_or_logs(store: SqliteStore, bucket: BucketQueue, server: FakeSupabaseServer) -> None:
    store.commit_batch([version(1, 1)])
    echo = {"statusCode": "400", "error": "InvalidHeader", "message": f"bad header: Bearer {KEY}"}
    server.storage.fail_next(Fault(status=400, body=echo, path_contains=UPLOAD_ROUTE))
    server.postgrest.fail_next(Fault(status=400, body={"code": "PGRST301", "message": f"JWT {KEY} rejected"},
                                     path_contains="/files_queue"))
    w = worker(store, bucket)
    with structlog.testing.capture_logs() as logs:
        assert w.export_pending() == 1
    seen = json.dumps(w.status()) + json.dumps(logs, default=str)
    assert "bad header" in seen and "rejected" in seen and "***" in seen
    assert KEY not in seen


def test_wrong_key_is_reported_and_retried(store: SqliteStore, server: FakeSupabaseServer) -> None:
    store.commit_batch([version(1, 1)])
    wrong = BucketQueue.connect(server.url, "not-the-key", BUCKET)
    w = worker(store, wrong, backoff=lambda attempt: 0.02)
    w.start()
    wait_for(lambda: w.status()["last_error"] is not None)
    assert w.shutdown(5.0)
    assert "SUPABASE_SERVICE_ROLE_KEY" in w.status()["last_error"]
    assert store.get_cursor(w.consumer) == 0 and server.storage.writes == {}
    wrong.close()


def test_shutdown_is_prompt_while_idle_and_wake_exports_at_once(
    store: SqliteStore, bucket: BucketQueue, server: FakeSupabaseServer
) -> None:
    w = worker(store, bucket, poll_seconds=60.0)
    w.start()
    wait_for(lambda: w.status()["phase"] == "idle")
    store.commit_batch([version(1, 1)])
    w.wake()  # no 60 s poll to wait for
    wait_for(lambda: w.status()["exported"] == 1)
    stopper = threading.Thread(target=w.shutdown)
    stopper.start()
    stopper.join(5.0)
    assert not stopper.is_alive() and not w.status()["alive"] and w.status()["phase"] == "stopped"


def test_backoff_grows_is_capped_and_jittered() -> None:
    assert [export_backoff(n, rng=lambda: 1.0) for n in (1, 2, 3, 10, 50)] == [1.0, 2.0, 4.0, 300.0, 300.0]
    assert export_backoff(3, rng=lambda: 0.0) == 2.0


# ---- the runtime ----------------------------------------------------------------------------------

def test_the_runtime_exports_what_its_supabase_store_logs(tmp_path: Path, server: FakeSupabaseServer) -> None:
    """Production's wiring: the Supabase store writes the events (collector_commit_batch), the
    runtime's export thread uploads them, the status payload shows it under `export`."""
    settings = Settings(state_file=tmp_path / "state.json", db_path=tmp_path / "unused.sqlite3",
                        supabase_url=server.url, supabase_key=KEY, export_bucket=BUCKET)
    rt = build_runtime(settings, resume=False)
    try:
        assert rt.export is not None
        old, other = version(1, 1), version(2, 1)
        rt.store.commit_batch([old, other])
        rt.export.wake()
        wait_for(lambda: status_payload(rt)["export"]["last_exported_seq"] == 2)
        rt.store.commit_batch([version(1, 2)])
        rt.export.wake()
        wait_for(lambda: status_payload(rt)["export"]["last_exported_seq"] == 3)
        export = status_payload(rt)["export"]
        assert export["bucket"] == BUCKET and export["consumer"] == f"export:{BUCKET}" and export["alive"]
        assert (export["uploads"], export["pending"], export["last_error"]) == (3, 0, None)
        assert server.queue() == {path(old): "retired", path(other): "pending", path(version(1, 2)): "pending"}
        assert rt.store.get_cursor(f"export:{BUCKET}") == 3
        assert KEY not in json.dumps(status_payload(rt))
    finally:
        rt.close()
        reset_logging()
    assert not rt.export.status()["alive"]
    assert not [t for t in threading.enumerate() if t.name == "collector-export"]
    cli_store = SupabaseStore(server.url, KEY)  # `python -m collector status`: no thread, the cursor
    try:
        assert status_payload(settings, cli_store)["export"] == {
            "bucket": BUCKET, "consumer": f"export:{BUCKET}", "last_exported_seq": 3, "pending": 0}
    finally:
        cli_store.close()


def test_no_export_without_a_bucket(tmp_path: Path) -> None:
    rt = build_runtime(Settings(state_file=tmp_path / "state.json", db_path=tmp_path / "c.sqlite3"), resume=False)
    try:
        assert rt.export is None and "export" not in status_payload(rt)
    finally:
        rt.close()
        reset_logging()
