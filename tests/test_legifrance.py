"""LegifranceClient against the emulator over a real loopback socket (uvicorn in a thread).

Backoffs are shortened so the fault scenarios run in seconds; the emulator's own counters
(`server.stats()`) check what actually reached the wire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import structlog

from collector.config import DEMO_API_BASE_URL, DEMO_OAUTH_URL, ConfigError, Settings
from collector.demo import (
    API_PREFIX,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    TOKEN_PATH,
    DemoConfig,
    DemoServerThread,
    FaultRule,
    demo_transport,
)
from collector.demo.corpus import DEMO_MASSIVE_CODES
from collector.legifrance import (
    LegifranceAuthError,
    LegifranceClient,
    LegifranceError,
    LegifranceNotFound,
    decode_object,
    nested_over,
    retry_after_seconds,
    token_lifetime,
)
from collector.models import CodeToc
from collector.parse import TocError, parse_toc
from collector.ratelimit import RequestBudget, SlotTicket
from tests.conftest import REPO
from tests.reliability.hostile_server import Hostility, HostileServer

FAST = dict(backoff_base=0.02, backoff_cap=0.1, retry_after_cap=1.0)


@pytest.fixture
def start_demo() -> Iterator[Callable[..., DemoServerThread]]:
    """Start emulators on free loopback ports; all stopped at teardown."""
    started: list[DemoServerThread] = []

    def start(**knobs: Any) -> DemoServerThread:
        demo = DemoServerThread(DemoConfig(articles=120, **knobs)).start()
        started.append(demo)
        return demo

    yield start
    for demo in started:
        demo.stop()


class RecordingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, remembering the bearer tokens it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            self.tokens.add(auth[7:])
        return await super().handle_async_request(request)


def make_client(
    demo: DemoServerThread,
    budget: RequestBudget | None = None,
    *,
    secret: str = DEMO_CLIENT_SECRET,
    transport: httpx.AsyncBaseTransport | None = None,
    **options: Any,
) -> LegifranceClient:
    return LegifranceClient(
        client_id=DEMO_CLIENT_ID,
        client_secret=secret,
        oauth_url=demo.oauth_url,
        api_base_url=demo.api_base_url,
        budget=budget or RequestBudget(1000, 1_000_000, 1_000_000, 8),
        transport=transport,
        **{**FAST, **options},
    )


def served_toc(demo: DemoServerThread, code_id: str) -> CodeToc:
    """What the emulator's TOC of the code (today) parses to, read whole."""
    return parse_toc(demo.server.corpus.table_matieres_json(code_id, date.today()).encode(), code_id)


def article_ids(demo: DemoServerThread, n: int) -> list[str]:
    ids = sorted(demo.server.expected_ids(min_chars=0))
    assert len(ids) >= n
    return ids[:n]


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=120))  # type: ignore[arg-type]


async def fetch_all(client: LegifranceClient, ids: list[str]) -> list[dict[str, Any] | None]:
    try:
        return await asyncio.gather(*(client.get_article(i) for i in ids))
    finally:
        await client.aclose()


def assert_each_returned_once(ids: list[str], articles: list[dict[str, Any] | None]) -> None:
    assert [a["id"] if a else None for a in articles] == ids


# ---- endpoints ------------------------------------------------------------------------------


def test_endpoints_return_the_api_objects(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()

    async def scenario() -> tuple[Any, ...]:
        async with make_client(demo) as client:
            codes = await client.list_codes()
            toc = await client.table_matieres(DEMO_MASSIVE_CODES[0], date.today())
            first = article_ids(demo, 1)[0]
            article = await client.get_article(first)
            versions = await client.get_article_by_cid(article["cid"])
            return codes, toc, article, versions, client.stats.as_dict()

    codes, toc, article, versions, stats = run(scenario())
    assert {c["id"] for c in codes} >= set(DEMO_MASSIVE_CODES)
    assert all(c["etat"] == "VIGUEUR" for c in codes) and all(c["titre"] for c in codes)
    assert toc == served_toc(demo, DEMO_MASSIVE_CODES[0]) and toc.entries
    assert {e.id for e in toc.entries} <= demo.server.expected_ids(min_chars=0)
    assert article["id"] == article_ids(demo, 1)[0] and article["texte"] is not None
    assert any(v["id"] == article["id"] for v in versions)
    assert stats["requests"] == {"list_code": 1, "table_matieres": 1, "get_article": 1, "get_article_by_cid": 1}
    assert stats["retries"] == 0 and stats["statuses"] == {"200": 4} and stats["token_requests"] == 1


def test_list_codes_reads_every_page(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with make_client(demo) as client:
            return await client.list_codes(), await client.list_codes(page_size=2)

    whole, paged = run(scenario())
    assert len(whole) > 2 and [c["id"] for c in paged] == [c["id"] for c in whole]
    pages = -(-len(whole) // 2)
    assert demo.server.stats()["requests"]["list_code"] == 1 + pages


def test_unknown_code_is_not_found_and_not_retried(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()
    unknown = "LEGITEXT000099999998"

    async def scenario() -> None:
        async with make_client(demo) as client:
            await client.table_matieres(unknown, date.today())

    with pytest.raises(LegifranceNotFound, match=unknown):
        run(scenario())
    assert demo.server.stats()["requests"]["table_matieres"] == 1


def test_unknown_article_is_none(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()

    async def scenario() -> Any:
        async with make_client(demo) as client:
            return await client.get_article("LEGIARTI000099999998")

    assert run(scenario()) is None


def test_400_is_not_retried(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()

    async def scenario() -> None:
        async with make_client(demo) as client:
            await client.get_article("")  # the emulator answers 400: 'id' is required

    with pytest.raises(LegifranceError, match="HTTP 400"):
        run(scenario())
    assert demo.server.stats()["by_endpoint"]["get_article"] == {"400": 1}


def test_table_matieres_gets_the_longer_read_timeout(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo(latency_ms=600)

    async def scenario() -> tuple[Any, Any]:
        async with make_client(demo, read_timeout=0.3, toc_read_timeout=5.0, max_attempts=2) as client:
            toc = await client.table_matieres(DEMO_MASSIVE_CODES[0], date.today())
            with pytest.raises(LegifranceError, match="after 2 attempts.*ReadTimeout") as err:
                await client.get_article(article_ids(demo, 1)[0])
            return toc, err.value

    toc, _ = run(scenario())
    assert toc == served_toc(demo, DEMO_MASSIVE_CODES[0])


class ReChunkingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, handing every answer's body over in `size`-byte pieces."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_Pieces(response.stream, self.size), extensions=response.extensions)


class _Pieces(httpx.AsyncByteStream):
    def __init__(self, stream: Any, size: int) -> None:
        self.stream, self.size = stream, size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            for start in range(0, len(chunk), self.size):
                yield chunk[start : start + self.size]

    async def aclose(self) -> None:
        await self.stream.aclose()


class TocRewritingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, as if the API had answered tableMatieres with `rewrite`
    applied to its JSON."""

    def __init__(self, rewrite: Callable[[dict[str, Any]], Any]) -> None:
        super().__init__()
        self.rewrite = rewrite

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if not request.url.path.endswith("/tableMatieres") or response.status_code != 200:
            return response
        body = json.loads(b"".join([chunk async for chunk in response.stream]))  # type: ignore[union-attr]
        await response.aclose()
        return httpx.Response(200, json=self.rewrite(body))


def test_toc_streamed_in_tiny_pieces_parses_as_a_whole_body(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()

    async def scenario() -> CodeToc:
        async with make_client(demo, transport=ReChunkingTransport(7)) as client:
            return await client.table_matieres(DEMO_MASSIVE_CODES[0], date.today())

    assert run(scenario()) == served_toc(demo, DEMO_MASSIVE_CODES[0])


@pytest.mark.parametrize("kind", ["truncated", "drop", "http_503"])
def test_toc_faults_are_retried_with_a_fresh_parser(
    start_demo: Callable[..., DemoServerThread], kind: str
) -> None:
    """A cut body (invalid JSON), a dropped connection or a 503 is asked again; the retry's
    parser starts from nothing (the first half of a cut body leaves no trace)."""
    demo = start_demo()
    demo.server.set_faults([FaultRule(kind=kind, count=2, endpoint="table_matieres")])  # type: ignore[arg-type]

    async def scenario() -> tuple[CodeToc, dict[str, Any]]:
        async with make_client(demo) as client:
            toc = await client.table_matieres(DEMO_MASSIVE_CODES[0], date.today())
            return toc, client.stats.as_dict()

    toc, stats = run(scenario())
    assert toc == served_toc(demo, DEMO_MASSIVE_CODES[0])
    assert stats["retries"] == 2 and demo.server.stats()["requests"]["table_matieres"] == 3
    if kind == "truncated":
        assert stats["errors"] == {"invalid JSON": 2}


def test_a_toc_with_bad_lists_fails_without_retry(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()

    async def scenario() -> None:
        transport = TocRewritingTransport(lambda toc: {**toc, "articles": "none"})
        async with make_client(demo, transport=transport) as client:
            await client.table_matieres(DEMO_MASSIVE_CODES[0], date.today())

    with pytest.raises(TocError, match="must be lists"):
        run(scenario())
    assert demo.server.stats()["requests"]["table_matieres"] == 1


@pytest.mark.parametrize(
    "rewrite, error",
    [
        (lambda toc: {"title": toc["title"]}, LegifranceNotFound),  # no list at the top
        (lambda toc: {"title": toc["title"], "sections": "nope"}, LegifranceNotFound),  # as before
        (lambda toc: [toc], LegifranceError),  # not an object: asked again, then given up
    ],
)
def test_a_toc_that_is_no_toc(
    start_demo: Callable[..., DemoServerThread], rewrite: Callable[[Any], Any], error: type[Exception]
) -> None:
    demo = start_demo()

    async def scenario() -> None:
        async with make_client(demo, transport=TocRewritingTransport(rewrite), max_attempts=2) as client:
            await client.table_matieres(DEMO_MASSIVE_CODES[0], date.today())

    with pytest.raises(error) as err:
        run(scenario())
    attempts = 2 if error is LegifranceError else 1
    assert type(err.value) is error and demo.server.stats()["requests"]["table_matieres"] == attempts
    if attempts == 2:
        assert "JSON body is not an object" in str(err.value)


# ---- faults: every article still comes back exactly once ----------------------------------


@pytest.mark.parametrize(
    "kind, count",
    [("http_503", 4), ("http_500", 2), ("http_429", 3), ("drop", 3), ("truncated", 3), ("hang", 2)],
)
def test_faults_are_retried_until_every_article_is_returned(
    start_demo: Callable[..., DemoServerThread], kind: str, count: int
) -> None:
    demo = start_demo(hang_s=2.0)
    ids = article_ids(demo, 12)
    demo.server.set_faults([FaultRule(kind=kind, count=count, endpoint="get_article")])  # type: ignore[arg-type]
    budget = RequestBudget(1000, 1_000_000, 1_000_000, 4)
    client = make_client(demo, budget, read_timeout=1.0 if kind == "hang" else 30.0)

    articles = run(fetch_all(client, ids))

    assert_each_returned_once(ids, articles)
    stats = client.stats.as_dict()
    assert stats["retries"] == count
    assert demo.server.stats()["faults"] == {kind: count}
    # every attempt, and the token request, took a budget slot and reached the server
    assert stats["attempts"] == len(ids) + count and stats["token_requests"] == 1
    assert budget.snapshot().day_used == stats["attempts"] + stats["token_requests"]
    assert demo.server.stats()["requests"]["get_article"] == len(ids) + count


def test_mixed_random_faults_and_token_expiry_mid_pass(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo(fault_rate=0.2, fault_kinds=("http_500", "http_503", "drop", "truncated"), seed=3)
    ids = article_ids(demo, 60)
    client = make_client(demo, max_attempts=12)

    async def scenario() -> list[dict[str, Any] | None]:
        try:
            first = await asyncio.gather(*(client.get_article(i) for i in ids[:30]))
            demo.server.expire_tokens()  # every request in flight from now on gets 401
            rest = await asyncio.gather(*(client.get_article(i) for i in ids[30:]))
            return [*first, *rest]
        finally:
            await client.aclose()

    articles = run(scenario())
    assert_each_returned_once(ids, articles)
    stats = client.stats.as_dict()
    assert stats["auth_renewals"] == 1  # concurrent 401s shared one token fetch
    assert demo.server.stats()["tokens_issued"] == 2
    assert stats["retries"] > 0 and sum(demo.server.stats()["faults"].values()) > 0


def test_expiring_token_is_renewed_before_it_is_refused(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo(token_lifetime_s=2.0)  # the client renews a quarter of the life early
    ids = article_ids(demo, 2)

    async def scenario() -> list[Any]:
        async with make_client(demo, min_token_lifetime=1.0) as client:
            first = await client.get_article(ids[0])
            await asyncio.sleep(1.6)
            second = await client.get_article(ids[1])
            return [first, second, client.stats.as_dict()]

    first, second, stats = run(scenario())
    assert first and second
    assert stats["auth_renewals"] == 1 and stats["statuses"] == {"200": 2}
    assert "401" not in demo.server.stats()["statuses"]


def test_a_second_401_after_reauthentication_is_fatal(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()
    demo.server.set_faults([FaultRule(kind="http_401", count=5, endpoint="get_article")])  # type: ignore[arg-type]

    async def scenario() -> None:
        async with make_client(demo) as client:
            await client.get_article(article_ids(demo, 1)[0])

    with pytest.raises(LegifranceAuthError, match="PISTE console"):
        run(scenario())
    assert demo.server.stats()["requests"]["get_article"] == 2
    assert demo.server.stats()["tokens_issued"] == 2


def test_token_endpoint_failures_are_retried(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()
    demo.server.set_faults(
        [FaultRule(kind="http_503", endpoint="token"), FaultRule(kind="drop", endpoint="token")]  # type: ignore[arg-type]
    )

    async def scenario() -> Any:
        async with make_client(demo) as client:
            return await client.get_article(article_ids(demo, 1)[0]), client.stats.as_dict()

    article, stats = run(scenario())
    assert article and stats["token_requests"] == 3 and stats["auth_renewals"] == 0
    assert demo.server.stats()["tokens_issued"] == 1


def test_retries_give_up_after_max_attempts(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()
    demo.server.set_faults([FaultRule(kind="http_503", count=50, endpoint="get_article")])  # type: ignore[arg-type]

    async def scenario() -> None:
        async with make_client(demo, max_attempts=3) as client:
            await client.get_article(article_ids(demo, 1)[0])

    with pytest.raises(LegifranceError, match="after 3 attempts.*HTTP 503"):
        run(scenario())
    assert demo.server.stats()["requests"]["get_article"] == 3


# ---- 429 and Retry-After ------------------------------------------------------------------


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(delay)


@pytest.mark.parametrize("retry_after, expected", [(0.2, 0.2), (7.0, 0.4)])  # 7 s is capped
def test_429_honours_retry_after(
    start_demo: Callable[..., DemoServerThread], retry_after: float, expected: float
) -> None:
    demo = start_demo(retry_after=retry_after)
    demo.server.set_faults([FaultRule(kind="http_429", count=2, endpoint="get_article")])  # type: ignore[arg-type]
    sleeps = SleepRecorder()

    async def scenario() -> Any:
        async with make_client(demo, sleep=sleeps, retry_after_cap=0.4) as client:
            return await client.get_article(article_ids(demo, 1)[0])

    assert run(scenario())
    assert sleeps.delays == [expected, expected]


def test_429_without_retry_after_backs_off_exponentially_with_jitter(
    start_demo: Callable[..., DemoServerThread],
) -> None:
    demo = start_demo()
    demo.server.set_faults([FaultRule(kind="http_429", count=4, endpoint="get_article")])  # type: ignore[arg-type]
    sleeps = SleepRecorder()

    async def scenario() -> Any:
        async with make_client(demo, sleep=sleeps, rng=lambda: 1.0, backoff_base=0.01, backoff_cap=0.05) as c:
            return await c.get_article(article_ids(demo, 1)[0])

    assert run(scenario())
    assert sleeps.delays == pytest.approx([0.01, 0.02, 0.04, 0.05])


def test_backoff_sleep_is_cancellable(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo()
    demo.server.set_faults([FaultRule(kind="http_503", count=50, endpoint="get_article")])  # type: ignore[arg-type]
    budget = RequestBudget(1000, 1_000_000, 1_000_000, 4)

    async def scenario() -> None:
        async with make_client(demo, budget, backoff_base=600.0, backoff_cap=600.0, rng=lambda: 1.0) as client:
            task = asyncio.create_task(client.get_article(article_ids(demo, 1)[0]))
            while client.stats.retries == 0:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)

    run(scenario())
    assert budget.snapshot().in_flight == 0
    assert demo.server.stats()["requests"]["get_article"] == 1


# ---- budget against the emulator's limiter ------------------------------------------------


@pytest.fixture
def demo_process() -> Iterator[str]:
    """The emulator as its own process (`python -m collector demo-server`): rate limit 10/s,
    120 ms latency (longer than the budget's minimal spacing of starts, 55 ms here, so requests
    overlap). Yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "demo-server", "--port", "0", "--rate-limit", "10",
         "--latency-ms", "120", "--articles", "120"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "demo-server listening on http://127.0.0.1:PORT"
        assert proc.poll() is None and "listening on http://" in line, f"demo-server did not start: {line!r}"
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_budget_keeps_the_server_under_its_rate_limit(demo_process: str) -> None:
    """Limits matched (10/s both sides): the server never counts more than 10 arrivals in a
    sliding second and never answers 429. The 100 ms margin absorbs the scheduling jitter
    between the client's slot and the server's arrival clock on a loaded test machine."""
    admin = httpx.Client(base_url=demo_process, timeout=10)
    ids = admin.get("/_demo/expected", params={"min_chars": 0}).json()["ids"][:30]
    budget = RequestBudget(10, 1_000_000, 1_000_000, 6, second_margin=0.1)
    client = LegifranceClient(
        client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET,
        oauth_url=demo_process + TOKEN_PATH, api_base_url=demo_process + API_PREFIX,
        budget=budget, **FAST,  # type: ignore[arg-type]
    )

    articles = run(fetch_all(client, ids))

    assert_each_returned_once(ids, articles)
    server = admin.get("/_demo/stats").json()
    admin.close()
    assert server["requests"]["get_article"] == 30
    assert server["max_requests_in_1s_window"] <= 10
    assert server["rate_limited"] == 0 and "429" not in server["statuses"]
    assert 1 < server["max_in_flight"] <= 6  # several requests in flight, within the cap


class TicketRecordingBudget(RequestBudget):
    """The real budget, keeping the ticket of every slot it gave."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tickets: list[SlotTicket] = []

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[SlotTicket]:
        async with super().slot() as ticket:
            self.tickets.append(ticket)
            yield ticket


def test_over_a_socket_each_attempt_reports_when_it_was_written(
    start_demo: Callable[..., DemoServerThread],
) -> None:
    """The budget counts a request from the moment it was written when told so (ratelimit):
    every attempt over a real connection tells it, retries and the token request included."""
    demo = start_demo()
    demo.server.set_faults([FaultRule(kind="http_503", count=2, endpoint="get_article")])  # type: ignore[arg-type]
    budget = TicketRecordingBudget(1000, 1_000_000, 1_000_000, 4)
    ids = article_ids(demo, 5)

    articles = run(fetch_all(make_client(demo, budget), ids))

    assert_each_returned_once(ids, articles)
    assert len(budget.tickets) == 1 + 7 and all(t.was_sent for t in budget.tickets)


def test_in_process_requests_count_until_their_answer() -> None:
    """The in-process emulator has no wire and sends no trace: nothing is reported, so each
    request counts until a window after its answer."""
    budget = TicketRecordingBudget(1000, 1_000_000, 1_000_000, 4)
    transport = demo_transport(DemoConfig(articles=120))
    client = LegifranceClient(client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET, oauth_url=DEMO_OAUTH_URL,
                              api_base_url=DEMO_API_BASE_URL, budget=budget, transport=transport)
    ids = sorted(transport.server.expected_ids(min_chars=0))[:3]

    articles = run(fetch_all(client, ids))

    assert_each_returned_once(ids, articles)
    assert len(budget.tickets) == 1 + 3 and not any(t.was_sent for t in budget.tickets)


class CookieSettingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, as behind a gateway that sets a session cookie on every
    answer; remembers the Cookie headers the client sent."""

    def __init__(self) -> None:
        super().__init__()
        self.cookie_headers: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.cookie_headers.append(request.headers.get("cookie"))
        response = await super().handle_async_request(request)
        response.headers["set-cookie"] = "GATEWAY_SESSION=abc123; Path=/"
        return response


def test_cookies_set_by_the_gateway_are_never_sent_back(start_demo: Callable[..., DemoServerThread]) -> None:
    """PISTE authenticates by bearer token: a cookie from the way in stays out of later requests."""
    demo = start_demo()
    transport = CookieSettingTransport()
    client = make_client(demo, transport=transport)
    ids = article_ids(demo, 3)

    articles = run(fetch_all(client, ids))

    assert_each_returned_once(ids, articles)
    assert len(transport.cookie_headers) == 4  # token + 3 articles
    assert transport.cookie_headers == [None] * 4


# ---- auth errors and secrets ---------------------------------------------------------------


def test_bad_credentials_are_fatal_and_never_leak(
    start_demo: Callable[..., DemoServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    demo = start_demo()
    secret = "s3cr3t-value-that-must-not-leak"

    async def scenario() -> None:
        async with make_client(demo, secret=secret) as client:
            await client.get_article(article_ids(demo, 1)[0])

    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events, pytest.raises(LegifranceAuthError) as err:
        run(scenario())
    message = str(err.value)
    assert "PISTE console" in message and "subscribed" in message and "CGU" in message
    assert "sandbox" in message and "401" in message
    assert secret not in message and secret not in repr(err.value)
    assert secret not in caplog.text and secret not in repr(events)
    stats = demo.server.stats()
    assert stats["requests"] == {"token": 1}  # not retried, no API call


def test_forbidden_is_fatal(start_demo: Callable[..., DemoServerThread]) -> None:
    demo = start_demo(forbidden=True)

    async def scenario() -> None:
        async with make_client(demo) as client:
            await client.table_matieres(DEMO_MASSIVE_CODES[0], date.today())

    with pytest.raises(LegifranceAuthError, match="403.*subscribed"):
        run(scenario())
    assert demo.server.stats()["requests"]["table_matieres"] == 1


def test_tokens_and_secret_never_reach_logs_or_errors(
    start_demo: Callable[..., DemoServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    demo = start_demo(fault_rate=0.3, seed=5, fault_kinds=("http_503", "drop", "truncated"))
    demo.server.set_faults([FaultRule(kind="http_401", endpoint="get_article")])  # type: ignore[arg-type]
    transport = RecordingTransport()
    ids = article_ids(demo, 30)
    caplog.set_level(logging.DEBUG)
    client = make_client(demo, transport=transport, max_attempts=12)
    with structlog.testing.capture_logs() as events:
        articles = run(fetch_all(client, ids))
    assert_each_returned_once(ids, articles)
    assert transport.tokens and any(e["event"] == "legifrance retry" for e in events)
    text = caplog.text + repr(events) + repr(client) + repr(client.stats.as_dict())
    for value in [DEMO_CLIENT_SECRET, *transport.tokens]:
        assert value not in text


def test_missing_credentials_fail_clearly() -> None:
    with pytest.raises(LegifranceAuthError, match="LEGIFRANCE_CLIENT_ID"):
        LegifranceClient(
            client_id="", client_secret="", oauth_url="http://x", api_base_url="http://x",
            budget=RequestBudget(1, 1, 1, 1),
        )


# ---- construction from settings -----------------------------------------------------------


def test_from_settings_in_demo_mode_uses_the_in_process_emulator() -> None:
    settings = Settings()
    assert settings.is_demo

    async def scenario() -> list[dict[str, Any]]:
        async with LegifranceClient.from_settings(settings, RequestBudget(20, 100, 100, 2)) as client:
            return await client.list_codes()

    codes = run(scenario())
    assert {c["id"] for c in codes} >= set(DEMO_MASSIVE_CODES)


def test_from_settings_with_credentials_targets_the_configured_urls(
    start_demo: Callable[..., DemoServerThread],
) -> None:
    demo = start_demo()
    settings = Settings(
        client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET,
        oauth_url=demo.oauth_url, api_base_url=demo.api_base_url,
    )

    async def scenario() -> dict[str, Any]:
        async with LegifranceClient.from_settings(settings, RequestBudget(20, 100, 100, 2), **FAST) as client:
            return await client.table_matieres(DEMO_MASSIVE_CODES[1], date.today())

    assert run(scenario()) == served_toc(demo, DEMO_MASSIVE_CODES[1])
    assert demo.server.stats()["requests"] == {"token": 1, "table_matieres": 1}


# ---- pure helpers -------------------------------------------------------------------------


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc).timestamp()
    later = format_datetime(datetime(2026, 11, 28, 12, 0, 42, tzinfo=timezone.utc), usegmt=True)
    earlier = format_datetime(datetime(2026, 11, 28, 11, 0, tzinfo=timezone.utc), usegmt=True)
    assert retry_after_seconds("3", now) == 3.0
    assert retry_after_seconds(" 1.5 ", now) == 1.5
    assert retry_after_seconds(later, now) == pytest.approx(42.0)
    assert retry_after_seconds(earlier, now) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert retry_after_seconds(bad, now) is None
    assert retry_after_seconds("-5", now) == 0.0
    assert timedelta(seconds=retry_after_seconds("120", now) or 0) == timedelta(minutes=2)


# ---- hostile answers: every attempt bounded in time and bytes ------------------------------


@pytest.fixture
def hostile() -> Iterator[Callable[..., HostileServer]]:
    """Start hostile servers (tests/reliability/hostile_server.py) on loopback; stopped at teardown."""
    started: list[HostileServer] = []

    def start(**hostility: Any) -> HostileServer:
        server = HostileServer(120, 0, Hostility(**hostility)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def hostile_client(server: HostileServer, **options: Any) -> LegifranceClient:
    return LegifranceClient(
        client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET, oauth_url=server.oauth_url,
        api_base_url=server.api_base_url,
        **{"budget": RequestBudget(1000, 1_000_000, 1_000_000, 8), **FAST, "max_attempts": 2, **options},
    )


def first_article(server: HostileServer) -> str:
    return sorted(server.corpus.expected_ids(DEMO_MASSIVE_CODES[:1]))[0]


@pytest.mark.parametrize(
    "hostility, options, error",
    [
        ("drip", {"article_timeout": 0.5}, r"within 0.5 s \(LEGIFRANCE_ARTICLE_TIMEOUT_SECONDS\)"),
        ("huge", {"max_body_bytes": 1 << 20}, r"body over 1048576 bytes \(LEGIFRANCE_MAX_BODY_BYTES\)"),
        ("gzip_bomb", {"max_body_bytes": 1 << 20}, r"body over 1048576 bytes \(LEGIFRANCE_MAX_BODY_BYTES\)"),
        ("deep", {}, "JSON nested over 512 deep"),
    ],
)
def test_a_hostile_article_answer_is_a_failed_attempt_naming_its_bound(
    hostile: Callable[..., HostileServer], hostility: str, options: dict[str, Any], error: str
) -> None:
    """Dripping one byte a second (the read timeout alone resets on every byte), a 500 MB body
    (streamed, or gzip-compressed to about 1 MB: the client stops at its cap of decoded bytes)
    or nesting 200,000 deep: retried, then given up
    with the bound's setting in the message; the healthy articles still come back."""
    server = hostile()
    bad = first_article(server)
    good = sorted(server.corpus.expected_ids(DEMO_MASSIVE_CODES[:1]))[1]
    server.hostility = Hostility(article=hostility, articles=frozenset({bad}))

    async def scenario() -> tuple[Any, Any]:
        async with hostile_client(server, **options) as client:
            with pytest.raises(LegifranceError, match=f"after 2 attempts.*{error}") as err:
                await client.get_article(bad)
            return err.value, await client.get_article(good)

    _, article = run(scenario())
    assert article["id"] == good
    assert server.seen.hostile["article"] == 2


@pytest.mark.parametrize(
    "hostility, options, error",
    [
        ("drip", {"toc_timeout": 0.5}, r"within 0.5 s \(LEGIFRANCE_TOC_TIMEOUT_SECONDS\)"),
        ("huge", {"max_toc_bytes": 2 << 20}, r"body over 2097152 bytes \(LEGIFRANCE_MAX_TOC_BYTES\)"),
        ("deep_title", {}, "a value nested over 64 deep"),
        ("nested_sections", {}, "sections nested over 64 deep"),
        ("giant_string", {}, "a JSON token over 1048576 bytes"),
    ],
)
def test_a_hostile_toc_answer_is_a_failed_attempt_naming_its_bound(
    hostile: Callable[..., HostileServer], hostility: str, options: dict[str, Any], error: str
) -> None:
    code = DEMO_MASSIVE_CODES[0]
    server = hostile(toc=hostility, toc_code=code)

    async def scenario() -> CodeToc:
        async with hostile_client(server, **options) as client:
            with pytest.raises(LegifranceError, match=f"code {code} failed after 2 attempts.*{error}"):
                await client.table_matieres(code, date.today())
            return await client.table_matieres(DEMO_MASSIVE_CODES[1], date.today())

    assert run(scenario()).entries
    assert server.seen.hostile["toc"] == 2


def test_a_dripping_token_answer_times_out_and_is_asked_again(hostile: Callable[..., HostileServer]) -> None:
    server = hostile(token="drip", first_tokens=1)

    async def scenario() -> Any:
        async with hostile_client(server, token_timeout=0.5) as client:
            with structlog.testing.capture_logs() as events:
                article = await client.get_article(first_article(server))
            return article, events

    article, events = run(scenario())
    assert article and server.seen.requests["token"] == 2
    retry = next(e for e in events if e["event"] == "legifrance token retry")
    assert "LEGIFRANCE_TOKEN_TIMEOUT_SECONDS" in retry["error"]


@pytest.mark.parametrize("expires_in", [-1, 0, "soon", None, [1], 1e308, float("nan")])
def test_an_absurd_token_lifetime_is_clamped_and_logged_once(
    hostile: Callable[..., HostileServer], expires_in: Any
) -> None:
    """`expires_in: -1` once meant one token request per call, outside the budget."""
    server = hostile(expires_in=expires_in)
    ids = sorted(server.corpus.expected_ids())[:20]
    budget = RequestBudget(1000, 1_000_000, 1_000_000, 4)

    async def scenario() -> Any:
        async with hostile_client(server, budget=budget) as client:
            with structlog.testing.capture_logs() as events:
                articles = [await client.get_article(i) for i in ids]
            return articles, events, client.stats.as_dict()

    articles, events, stats = run(scenario())
    assert [a["id"] for a in articles] == ids
    assert server.seen.requests["token"] == stats["token_requests"] == 1
    assert budget.snapshot().day_used == len(ids) + 1  # the token request took a slot too
    clamped = [e for e in events if e["event"] == "legifrance token lifetime clamped"]
    assert len(clamped) == (0 if expires_in is None else 1)


def test_token_lifetime_bounds() -> None:
    assert token_lifetime(3600, 60, 86_400) == (3600.0, False)
    assert token_lifetime(None, 60, 86_400) == (3600.0, False)
    assert token_lifetime("1200", 60, 86_400) == (1200.0, False)
    for absurd in (-1, 0, 59.9, "soon", [], {}, True, float("nan"), float("-inf")):
        assert token_lifetime(absurd, 60, 86_400) == (60.0, True), absurd
    for endless in (86_401, 10**400, float("inf"), "1e999"):
        assert token_lifetime(endless, 60, 86_400) == (86_400.0, True), endless


@pytest.mark.parametrize("where", ["token", "article"])
def test_redirects_are_never_followed(hostile: Callable[..., HostileServer], where: str) -> None:
    """A 307/308 to another host (127.0.0.2) would carry the secret or the bearer token there."""
    server = hostile()
    article_id = first_article(server)
    if where == "token":
        server.hostility = Hostility(token="redirect", first_tokens=1)
    else:
        server.hostility = Hostility(article="redirect", articles=frozenset({article_id}))

    async def scenario() -> None:
        async with hostile_client(server) as client:
            await client.get_article(article_id)

    message = "LEGIFRANCE_OAUTH_URL" if where == "token" else "redirects are not followed"
    with pytest.raises(LegifranceError, match=message) as err:
        run(scenario())
    assert not isinstance(err.value, LegifranceAuthError)
    assert server.seen.thief == [] and server.seen.hostile[where] == 1  # not retried either
    assert DEMO_CLIENT_SECRET not in str(err.value)


def test_the_bounds_come_from_the_settings(hostile: Callable[..., HostileServer]) -> None:
    env = {"LEGIFRANCE_TOKEN_TIMEOUT_SECONDS": "2", "LEGIFRANCE_TOC_TIMEOUT_SECONDS": "3",
           "LEGIFRANCE_ARTICLE_TIMEOUT_SECONDS": "0.5", "LEGIFRANCE_MAX_BODY_BYTES": "65536",
           "LEGIFRANCE_MAX_TOC_BYTES": "1048576"}
    settings = Settings.from_env(env)
    assert (settings.token_timeout_seconds, settings.toc_timeout_seconds, settings.article_timeout_seconds,
            settings.max_body_bytes, settings.max_toc_bytes) == (2.0, 3.0, 0.5, 65536, 1 << 20)
    defaults = Settings.from_env({})
    assert (defaults.token_timeout_seconds, defaults.toc_timeout_seconds, defaults.article_timeout_seconds,
            defaults.max_body_bytes, defaults.max_toc_bytes) == (30.0, 300.0, 60.0, 4 << 20, 64 << 20)
    server = hostile()
    bad = first_article(server)
    server.hostility = Hostility(article="drip", articles=frozenset({bad}))
    settings = replace(settings, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET,
                       oauth_url=server.oauth_url, api_base_url=server.api_base_url)

    async def scenario() -> None:
        budget = RequestBudget(1000, 1_000_000, 1_000_000, 4)
        async with LegifranceClient.from_settings(settings, budget, max_attempts=1) as client:
            await client.get_article(bad)

    with pytest.raises(LegifranceError, match=r"within 0.5 s \(LEGIFRANCE_ARTICLE_TIMEOUT_SECONDS\)"):
        run(scenario())


@pytest.mark.parametrize(
    "name, value",
    [("LEGIFRANCE_ARTICLE_TIMEOUT_SECONDS", "0"), ("LEGIFRANCE_TOC_TIMEOUT_SECONDS", "nan"),
     ("LEGIFRANCE_TOKEN_TIMEOUT_SECONDS", "inf"), ("LEGIFRANCE_MAX_TOC_BYTES", "lots"),
     ("LEGIFRANCE_MAX_BODY_BYTES", "10")],
)
def test_bad_bounds_are_configuration_errors_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (iterative)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack += [(child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)]
    return deepest


def test_nested_over_agrees_with_the_decoded_depth() -> None:
    """Brackets and escaped quotes inside strings never count."""
    rng = random.Random(14)
    tricky = ['a"b', "[{\\", ' ]}\\"', "\\", "x", 1, None]

    def value(depth: int) -> Any:
        roll = rng.random()
        if depth > 8 or roll < 0.3:
            return rng.choice(tricky)
        if roll < 0.65:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(["k", "[", '"}']): value(depth + 1) for _ in range(rng.randrange(4))}

    for _ in range(2000):
        data = value(0)
        body = json.dumps(data, ensure_ascii=rng.random() < 0.5).encode()
        for limit in (0, 1, 2, 3, 5):
            assert nested_over(body, limit) == (_depth(data) > limit), (body, limit)


def test_a_deep_body_is_refused_before_json_loads_whatever_the_recursion_limit() -> None:
    """json.loads recurses in C: under a raised recursion limit, 200,000 levels crash the
    process (in a thread too); the depth is measured first."""
    script = (
        "import sys, threading\n"
        "sys.setrecursionlimit(1_000_000)\n"
        "from collector.legifrance import decode_object\n"
        "body = b'{\"a\": ' + b'[' * 200_000 + b']' * 200_000 + b'}'\n"
        "out = []\n"
        "worker = threading.Thread(target=lambda: out.append(decode_object(body)))\n"
        "worker.start(); worker.join()\n"
        "print(out[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("JSON nested over 512 deep")
    assert isinstance(decode_object(b'{"a": ' + b"[" * 500 + b"]" * 500 + b"}"), dict)


def test_token_retries_stop_within_the_window_and_name_the_host() -> None:
    """An unreachable token host (a closed loopback port: every connection refused): retries
    stop once the next one could not start within TOKEN_GIVE_UP_SECONDS of the first attempt;
    the error names the host and never the secret. The clock only moves with the waits."""
    from collector.legifrance import TOKEN_GIVE_UP_SECONDS, LegifranceTokenError
    from tests.conftest import free_port

    now = [1000.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    port = free_port()
    secret = "never-in-a-message-0123"

    async def scenario() -> None:
        async with LegifranceClient(
            client_id="my-app", client_secret=secret, oauth_url=f"http://127.0.0.1:{port}/api/oauth/token",
            api_base_url=f"http://127.0.0.1:{port}/dila/legifrance/lf-engine-app",
            budget=RequestBudget(1000, 1_000_000, 1_000_000, 8), clock=lambda: now[0], sleep=sleep,
            rng=lambda: 1.0, backoff_base=4.0, backoff_cap=30.0, max_attempts=10,
        ) as client:
            await client.get_article("LEGIARTI000006812345")

    with pytest.raises(LegifranceTokenError) as caught:
        run(scenario())
    assert TOKEN_GIVE_UP_SECONDS == 15.0
    assert waits == [4.0, 8.0], "a third wait (16 s) would end past the window"
    message = str(caught.value)
    assert "could not get a token from 127.0.0.1 (LEGIFRANCE_OAUTH_URL) after 3 attempts in 12.0 s" in message
    assert "ConnectError" in message and secret not in message and "my-app" not in message
