"""SupabaseStore through real supabase-py, with respx serving a small fake PostgREST."""

from __future__ import annotations

import json
import threading
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from collector.config import Mode, Settings
from collector.models import CodeMark
from collector.store import Store, StoreError, StoreFatal, open_store
from collector.store.rows import ARTICLE_COLUMNS, article_row
from collector.store.supabase import SupabaseStore
from tests.store.fake_postgrest import Fault, FakePostgrest
from tests.store.helpers import T0, FakeClock, article, rejected

URL = "https://abcdefghijklmnop.supabase.co"
KEY = "sb_secret_DO-NOT-LEAK-9f8e7d6c5b4a"
CODE = "LEGITEXT000099900001"
OTHER = "LEGITEXT000099900002"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakePostgrest:
    return FakePostgrest(KEY, clock=clock)


@pytest.fixture
def router(fake: FakePostgrest) -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as r:
        r.route(path__startswith="/rest/v1/").mock(side_effect=fake.handle)
        yield r


def make_store(**kwargs: object) -> SupabaseStore:
    kwargs.setdefault("backoff", lambda attempt: 0.0)
    return SupabaseStore(URL, KEY, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def store(router: respx.MockRouter) -> Iterator[SupabaseStore]:
    s = make_store()
    yield s
    s.close()


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(str(request.url)).query)


COMMIT = "/rest/v1/rpc/collector_commit_batch"


def commits(fake: FakePostgrest, param: str = "p_articles") -> list[httpx.Request]:
    """The collector_commit_batch calls that carried rows in `param`."""
    return [r for r in fake.requests if r.url.path == COMMIT and json.loads(r.content)[param]]


def sent(fake: FakePostgrest, param: str = "p_articles") -> list[list[dict[str, object]]]:
    return [json.loads(r.content)[param] for r in commits(fake, param)]


# ---- construction -------------------------------------------------------------------------------

def test_open_store_picks_supabase_and_labels_it(router: respx.MockRouter) -> None:
    store = open_store(Settings(supabase_url=URL, supabase_key=KEY))
    assert isinstance(store, SupabaseStore) and isinstance(store, Store)
    assert store.label == "Supabase (abcdefghijklmnop.supabase.co)"
    store.close()


@pytest.mark.parametrize("url", ["", "abcdefghijklmnop.supabase.co", "ftp://", "ftp://host.example"])
def test_bad_url_is_a_clear_fatal_error(url: str) -> None:
    with pytest.raises(StoreFatal, match="SUPABASE_URL|Supabase client") as caught:
        SupabaseStore(url, KEY)
    assert KEY not in str(caught.value)


def test_empty_key_is_a_clear_fatal_error() -> None:
    with pytest.raises(StoreFatal, match="SUPABASE_SERVICE_ROLE_KEY"):
        SupabaseStore(URL, "")


# ---- upserts ------------------------------------------------------------------------------------

def test_commit_is_one_rpc_call_with_the_rows_and_returns_the_events(store: SupabaseStore, fake: FakePostgrest) -> None:
    assert store.commit_batch([article(1), article(2)], run_id=3) == {
        "added": 2, "modified": 0, "repealed": 0, "corrected": 0}
    (request,) = fake.requests
    assert (request.method, request.url.path, request.url.host) == ("POST", COMMIT, "abcdefghijklmnop.supabase.co")
    assert request.headers["apikey"] == KEY
    body = json.loads(request.content)
    assert body == {"p_articles": [article_row(article(1)), article_row(article(2))], "p_rejected": [],
                    "p_run_id": 3, "p_progress": None, "p_tag": "3"}
    assert all(set(row) == set(ARTICLE_COLUMNS) for row in body["p_articles"])  # homogeneous rows
    assert store.commit_batch([article(1)], tag="LEGI_X") == {"added": 0, "modified": 0, "repealed": 0, "corrected": 0}
    assert [c["id"] for c in store.read_changes()] == [article(1).id, article(2).id]


def test_same_batch_twice_leaves_one_row_each_identical(store: SupabaseStore, fake: FakePostgrest) -> None:
    batch = [article(n) for n in range(1, 31)]
    store.commit_batch(batch)
    first = fake.rows("legifrance_articles")
    store.commit_batch(batch + batch[:5])  # duplicates inside one batch too
    assert fake.rows("legifrance_articles") == first
    assert len(first) == 30 and first[0] == article_row(batch[0])
    assert [len(rows) for rows in sent(fake)] == [30, 30]


def test_batches_are_bounded_by_rows(store: SupabaseStore, fake: FakePostgrest) -> None:
    store.commit_batch([article(n) for n in range(1201)])
    assert [len(rows) for rows in sent(fake)] == [500, 500, 201]
    assert len(fake.rows("legifrance_articles")) == 1201


def test_batches_are_bounded_by_bytes(router: respx.MockRouter, fake: FakePostgrest) -> None:
    store = make_store(batch_bytes=20_000)
    big = [article(n, text="é" * 2000) for n in range(40)]  # ~ 6 kB of JSON each (text + html)
    store.commit_batch(big)
    bodies = [r.content for r in commits(fake)]
    assert len(bodies) > 10 and all(len(b) <= 20_000 for b in bodies)
    assert sum(len(rows) for rows in sent(fake)) == 40 and len(fake.rows("legifrance_articles")) == 40


def test_413_from_the_proxy_halves_the_batch(router: respx.MockRouter, fake: FakePostgrest) -> None:
    fake.max_body_bytes = 60_000
    store = make_store()
    store.commit_batch([article(n, text="x" * 1000) for n in range(100)])  # ~ 230 kB in one batch
    statuses = [len(r.content) <= 60_000 for r in commits(fake)]
    assert statuses[0] is False and statuses.count(False) >= 2  # refused, then halved
    assert len(fake.rows("legifrance_articles")) == 100


def test_statement_timeout_halves_the_batch(router: respx.MockRouter, fake: FakePostgrest) -> None:
    fake.statement_max_rows = 120
    store = make_store()
    store.commit_batch([article(n) for n in range(500)])
    sizes = [len(rows) for rows in sent(fake)]
    assert sizes == [500, 250, 125, 62, 63, 125, 62, 63, 250, 125, 62, 63, 125, 62, 63]
    assert len(fake.rows("legifrance_articles")) == 500


def test_a_row_too_large_even_alone_is_a_clear_error(router: respx.MockRouter, fake: FakePostgrest) -> None:
    fake.max_body_bytes = 5_000
    store = make_store()
    with pytest.raises(StoreError, match=r"LEGIARTI000000000003.*even alone") as caught:
        store.commit_batch([article(3, text="x" * 10_000)])
    assert not isinstance(caught.value, StoreFatal)


def test_commit_order_articles_then_rejected_then_progress(store: SupabaseStore, fake: FakePostgrest) -> None:
    store.commit_batch([], [rejected(7, 20)])
    run = store.start_run(Mode.MAINTENANCE, [CODE])
    fake.requests.clear()
    store.commit_batch([article(7), article(8)], [rejected(9, 12), rejected(8, 3)], run_id=run, run_progress={"stored": 2})
    calls = [json.loads(r.content) for r in fake.requests]
    assert [r.url.path for r in fake.requests] == [COMMIT, COMMIT]
    assert [len(c["p_articles"]) for c in calls] == [2, 0] and [len(c["p_rejected"]) for c in calls] == [0, 1]
    assert [(c["p_run_id"], c["p_progress"]) for c in calls] == [(None, None), (run, {"stored": 2})]  # with the last
    assert [r["id"] for r in fake.rows("legifrance_rejected")] == [rejected(9, 0).id]  # 7 stored now; 8 stored
    assert fake.rows("collector_runs")[0]["progress"] == {"stored": 2}


def test_progress_is_not_written_when_the_data_write_fails(store: SupabaseStore, fake: FakePostgrest) -> None:
    run = store.start_run("MASSIVE", [CODE])
    fake.requests.clear()
    fake.fail_next(Fault(status=400, body={"code": "22P02", "message": "invalid input"}, path_contains="commit"))
    with pytest.raises(StoreError, match="22P02"):
        store.commit_batch([article(1)] * 2 + [article(3)], [rejected(2, 5)], run_id=run, run_progress={"stored": 1})
    assert len(fake.requests) == 1  # nothing after the failed call
    assert fake.rows("legifrance_articles") == [] and store.read_changes() == []  # the call is one transaction
    assert fake.rows("collector_runs")[0]["progress"] is None  # progress never ahead of the data


# ---- retries and fatal errors -------------------------------------------------------------------

def test_retries_5xx_and_timeouts_then_succeeds_without_duplicates(store: SupabaseStore, fake: FakePostgrest) -> None:
    fake.fail_next(
        Fault(status=500, body={"code": "XX000", "message": "internal"}, method="POST"),
        Fault(status=503, body="<html>Service Unavailable</html>", method="POST"),
        Fault(timeout=True, method="POST"),
        Fault(status=504, body="<html>Gateway Timeout</html>", after=True, method="POST"),  # written, answer lost
    )
    assert store.commit_batch([article(n) for n in range(10)])["added"] == 0  # its answer was lost
    assert len(commits(fake)) == 5
    assert len(fake.rows("legifrance_articles")) == 10
    assert len(store.read_changes()) == 10  # the replay wrote no second event


def test_reads_are_retried_too(store: SupabaseStore, fake: FakePostgrest) -> None:
    store.commit_batch([article(1)])
    fake.fail_next(Fault(status=520, body="origin error", method="GET"), Fault(timeout=True, method="GET"))
    assert store.known_ids(CODE, 100) == {article(1).id}


def test_gives_up_after_max_attempts_with_a_store_error(router: respx.MockRouter, fake: FakePostgrest) -> None:
    store = make_store(max_attempts=3)
    fake.fail_next(*[Fault(status=502, body="<html>Bad Gateway</html>") for _ in range(3)])
    with pytest.raises(StoreError, match="after 3 attempt") as caught:
        store.commit_batch([article(1)])
    assert not isinstance(caught.value, StoreFatal)
    assert len(fake.requests) == 3


def test_connection_errors_are_retried_then_reported(router: respx.MockRouter) -> None:
    router.routes.clear()
    router.route(path__startswith="/rest/v1/").mock(side_effect=httpx.ConnectError("connection refused"))
    store = make_store(max_attempts=2)
    with pytest.raises(StoreError, match="unreachable.*ConnectError"):
        store.count_articles()
    assert router.calls.call_count == 2


def test_bad_key_is_fatal_at_once_and_never_shows_the_key(router: respx.MockRouter, fake: FakePostgrest) -> None:
    fake.key = "the-right-key"
    store = make_store()
    with pytest.raises(StoreFatal) as caught:
        store.commit_batch([article(1)])
    text = "".join(traceback.format_exception(caught.value))
    assert "SUPABASE_SERVICE_ROLE_KEY" in str(caught.value) and KEY not in text
    assert len(fake.requests) == 1  # no retry on a bad key


def test_jwt_rejected_by_postgrest_is_fatal(store: SupabaseStore, fake: FakePostgrest) -> None:
    fake.fail_next(Fault(status=401, body={"code": "PGRST301", "message": "Expected 3 parts in JWT; got 1"}))
    with pytest.raises(StoreFatal, match="refused the key") as caught:
        store.known_ids(CODE, 100)
    assert KEY not in str(caught.value)


def test_missing_table_or_function_says_to_run_the_migration(router: respx.MockRouter, fake: FakePostgrest) -> None:
    fake.missing_tables = {"legifrance_articles"}
    store = make_store()
    with pytest.raises(StoreFatal, match="supabase/migrations/0001_collector.sql and 0002_changes.sql"):
        store.count_articles()
    fake.fail_next(Fault(status=404, body={"code": "PGRST202", "message": "Could not find the function"}))
    with pytest.raises(StoreFatal, match="0002_changes.sql"):
        store.commit_batch([article(1)])
    fake.fail_next(Fault(status=404, body={"code": "PGRST202", "message": "Could not find the function"}))
    with pytest.raises(StoreFatal, match="0001_collector.sql"):
        store.acquire_lease("A", 30)


# ---- reads --------------------------------------------------------------------------------------

def test_reads_page_past_the_row_cap_with_keyset_paging(store: SupabaseStore, fake: FakePostgrest) -> None:
    store.commit_batch([article(n) for n in range(2500, 0, -1)])
    fake.requests.clear()
    ids = list(store.iter_article_ids())
    assert ids == sorted(article(n).id for n in range(1, 2501))
    gets = [query(r) for r in fake.requests]
    assert [g["limit"] for g in gets] == [["1000"]] * 4 and all(g["order"] == ["id.asc"] for g in gets)
    assert "id" not in gets[0] and gets[1]["id"] == [f"gt.{ids[999]}"] and gets[3]["id"] == [f"gt.{ids[-1]}"]


def test_a_lower_server_row_cap_does_not_truncate_silently(store: SupabaseStore, fake: FakePostgrest) -> None:
    store.commit_batch([article(n) for n in range(1, 1001)], [rejected(n, 10) for n in range(5000, 5300)])
    fake.max_rows = 250  # a project whose "Max rows" is below our page size
    assert len(store.known_ids(CODE, 100)) == 1300


def test_known_ids_filters_by_code_and_threshold(store: SupabaseStore, fake: FakePostgrest) -> None:
    store.commit_batch(
        [article(1), article(2, OTHER)],
        [rejected(10, 40), rejected(11, 99), rejected(12, 30, OTHER)],
    )
    fake.requests.clear()
    assert store.known_ids(CODE, 100) == {article(1).id, rejected(10, 0).id, rejected(11, 0).id}
    assert store.known_ids(CODE, 50) == {article(1).id, rejected(10, 0).id}
    first = query(fake.requests[0])
    assert first["code_id"] == [f"eq.{CODE}"] and first["select"] == ["id"]
    assert query(fake.requests[2])["length"] == ["lt.100"]


def test_counts_use_exact_count_headers(store: SupabaseStore, fake: FakePostgrest) -> None:
    store.commit_batch([article(n) for n in range(1500)], [rejected(n, 1) for n in range(9000, 9007)])
    fake.requests.clear()
    assert store.count_articles() == 1500 and store.count_rejected() == 7
    assert fake.requests[0].method == "HEAD" and "count=exact" in fake.requests[0].headers["prefer"]


# ---- runs, marks, state, counters, lease --------------------------------------------------------

def test_runs_marks_and_state_round_trip(store: SupabaseStore, fake: FakePostgrest) -> None:
    first = store.start_run(Mode.MAINTENANCE, [CODE])
    second = store.start_run("MASSIVE", [CODE, OTHER])
    store.finish_run(first, {"stored": 4, "started_at": T0})
    runs = store.last_runs(5)
    assert [r["id"] for r in runs] == [second, first] and runs[1]["summary"]["stored"] == 4
    assert runs[1]["summary"]["started_at"] == "2026-11-28T15:00:00.000000+00:00" and runs[1]["finished_at"]

    mark = CodeMark(CODE, "Code fictif", "2026-11-01", None, T0)
    store.set_code_mark(mark)
    assert store.get_code_marks() == {CODE: mark}

    assert store.load_state() is None
    store.save_state({"running": True, "mode": Mode.MASSIVE, "updated_at": T0, "pid": 7, "host": "h", "x": 1})
    store.save_state({"running": False, "mode": "MAINTENANCE", "updated_at": T0 + timedelta(minutes=1)})
    assert len(fake.rows("collector_state")) == 1
    assert store.load_state() == {
        "running": False, "mode": "MAINTENANCE", "updated_at": "2026-11-28T15:01:00.000000+00:00", "pid": None, "host": None,
    }


def test_request_counters_go_through_the_rpc(store: SupabaseStore, fake: FakePostgrest) -> None:
    store.add_requests(["h:2026-11-28T15", "d:2026-11-28", "d:2026-11-28"], 3)
    store.add_requests(["d:2026-11-28"], 2)
    store.add_requests(["d:2026-11-28"], 0)  # nothing to send
    calls = [r for r in fake.requests if r.url.path == "/rest/v1/rpc/collector_add_requests"]
    assert len(calls) == 2 and json.loads(calls[0].content) == {"p_keys": ["d:2026-11-28", "h:2026-11-28T15"], "p_n": 3}
    assert store.get_requests(["d:2026-11-28", "h:2026-11-28T15", "h:x"]) == {"d:2026-11-28": 5, "h:2026-11-28T15": 3, "h:x": 0}


def test_lease_through_the_rpc(store: SupabaseStore, fake: FakePostgrest, clock: FakeClock) -> None:
    a = store.acquire_lease("A", 30)
    (call,) = [r for r in fake.requests if r.url.path == "/rest/v1/rpc/collector_acquire_lease"]
    assert call.method == "POST" and json.loads(call.content) == {"p_owner": "A", "p_ttl_seconds": 30.0}
    assert a.acquired and a.owner == "A" and a.expires_at == T0 + timedelta(seconds=30)
    assert a.expires_at.tzinfo is not None
    b = store.acquire_lease("B", 30)
    assert not b.acquired and b.owner == "A"
    clock.advance(31)
    assert store.acquire_lease("B", 30).acquired
    store.release_lease("A")  # not the holder
    assert not store.acquire_lease("A", 30).acquired
    store.release_lease("B")
    assert store.acquire_lease("A", 30).acquired
    assert [r.url.path for r in fake.requests].count("/rest/v1/rpc/collector_release_lease") == 2


# ---- threads ------------------------------------------------------------------------------------

def test_commits_from_several_threads(store: SupabaseStore, fake: FakePostgrest) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for b in range(5):
                base = (k * 5 + b) * 30
                store.commit_batch([article(n) for n in range(base, base + 30)])
                store.known_ids(CODE, 100)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(fake.rows("legifrance_articles")) == 900
    assert store.count_articles() == 900


def test_timestamps_are_sent_as_utc_iso(store: SupabaseStore, fake: FakePostgrest) -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    store.commit_batch([article(1, collected_at=naive.replace(tzinfo=UTC))])
    assert fake.rows("legifrance_articles")[0]["collected_at"] == "2026-01-02T03:04:05.000000+00:00"
