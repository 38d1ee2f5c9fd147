"""The export on real answers: the time-travel code (tests/feed/real_api.py) harvested three
times by `python -m collector run --once` over a real socket, the export run after each pass
into a fake Supabase (Storage + PostgREST over a socket): the first pass's versions uploaded, the
second's changes uploaded or retired, the third (unchanged) pass: 0 events, 0 uploads, 0 queue
writes."""

from __future__ import annotations

import json
from pathlib import Path

from collector.config import DEFAULT_EXPORT_PATH_TEMPLATE
from collector.feed.bucket import BucketQueue
from collector.feed.export import ExportWorker
from collector.store import SqliteStore
from tests.feed.real_api import API_PREFIX, TOKEN_PATH, RealApi, RealApiServer
from tests.feed.test_time_travel import BEFORE, NEW_ARTICLE, env, run_once  # noqa: F401 - env is a fixture
from tests.store.fake_storage import FakeSupabaseServer

KEY = "sb_secret_TIME-TRAVEL-0f9e8d7c"
BUCKET = "agentbasic-legifrance-raw"
FOLDER = "legifrance/code_des_instruments_monetaires_et_des_medailles"


def export(env: dict[str, str], supabase: FakeSupabaseServer) -> dict[str, object]:
    """One export run over the pass's SQLite file, as the runtime's thread does it."""
    store = SqliteStore(Path(env["COLLECTOR_DB"]))
    bucket = BucketQueue.connect(supabase.url, KEY, BUCKET)
    try:
        worker = ExportWorker(store, bucket, path_template=DEFAULT_EXPORT_PATH_TEMPLATE, backoff=lambda a: 0.0)
        worker.reconcile()
        while worker.export_pending():
            pass
        return worker.status()
    finally:
        bucket.close()
        store.close()


def test_three_passes_export_what_changed_and_nothing_else(real_fixtures: Path, env: dict[str, str]) -> None:  # noqa: F811
    api = RealApi(real_fixtures, not_yet_created=frozenset({NEW_ARTICLE}))
    api.as_of = BEFORE
    then = api.in_force_ids()
    with RealApiServer(api) as server, FakeSupabaseServer(KEY, (BUCKET,)) as supabase:
        env.update(LEGIFRANCE_OAUTH_URL=server.url + TOKEN_PATH, LEGIFRANCE_API_BASE_URL=server.url + API_PREFIX)
        storage, postgrest = supabase.storage, supabase.postgrest

        assert sum(run_once(env)["events"].values()) == len(then)  # type: ignore[attr-defined]
        first = export(env, supabase)
        assert storage.paths(BUCKET) == {f"{FOLDER}/{i}.json" for i in then}
        assert set(supabase.queue().values()) == {"pending"} and first["uploads"] == len(then)

        api.as_of = None  # the code as captured
        second_events = run_once(env)["events"]
        assert second_events == {"added": 1, "modified": 2, "repealed": 12, "corrected": 0}
        writes, queue_writes = dict(storage.writes), len(postgrest.writes("files_queue"))
        second = export(env, supabase)
        new = {"LEGIARTI000006398192", "LEGIARTI000006398239", NEW_ARTICLE}
        assert {p for p, n in storage.writes.items() if n > writes.get(p, 0)} == {f"{BUCKET}/{FOLDER}/{i}.json" for i in new}
        assert all(n == 1 for n in storage.writes.values())  # every version uploaded once over both passes
        queue = supabase.queue()
        retired = {p for p, s in queue.items() if s == "retired"}  # replaced (191, 238) or repealed (12)
        assert retired == {f"{FOLDER}/{i}.json" for i in then - api.in_force_ids()} and len(retired) == 14
        assert second["queue_writes"] == 3 + 14
        assert {p for p, s in queue.items() if s == "pending"} == {f"{FOLDER}/{i}.json" for i in api.in_force_ids()} - {
            f"{FOLDER}/LEGIARTI000020630534.json"}  # in force but under the quality filter: never stored
        assert len(postgrest.writes("files_queue")) == queue_writes + 17

        captured = json.loads((real_fixtures / "articles" / "LEGIARTI000006398191.json").read_text())["listArticle"][0]
        exported = storage.json(BUCKET, f"{FOLDER}/LEGIARTI000006398192.json")
        for key in ("id", "cid", "num", "etat", "texteHtml", "dateDebut", "dateFin"):
            assert exported[key] == captured[key], key
        assert exported["code_title"] == "Code des instruments monétaires et des médailles"

        uploads, queue_writes = len(storage.uploads()), len(postgrest.writes("files_queue"))
        third_events = run_once(env)["events"]
        third = export(env, supabase)
        assert third_events == {"added": 0, "modified": 0, "repealed": 0, "corrected": 0}
        assert (len(storage.uploads()), len(postgrest.writes("files_queue"))) == (uploads, queue_writes)
        assert (third["exported"], third["reconcile"]["uploaded"], third["reconcile"]["requeued"]) == (0, 0, 0)  # type: ignore[index]
        assert third["reconcile"]["checked"] == len(queue) - 14  # type: ignore[index]
