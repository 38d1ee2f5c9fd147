"""DemoTransport streams bodies: a big TOC reaches the client while the emulator app is still
writing it, a slow reader pauses the app, closing early cancels it, and faults look like a
network's (drop -> RemoteProtocolError, hang -> ReadTimeout), before and during the body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from collector.demo import (
    API_PREFIX,
    DEMO_API_BASE_URL,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_MASSIVE_CODES,
    DEMO_OAUTH_URL,
    DemoConfig,
    DemoServer,
    FaultRule,
)
from collector.demo.app import ConnectionDropped
from collector.demo.transport import QUEUE_MESSAGES, DemoTransport, demo_transport

BIG_CODE = DEMO_MASSIVE_CODES[-1]  # the largest TOC: ~5 MB, 70+ chunks at 20,000 articles
ARTICLE = "LEGIARTI000099000000"
TOC_BODY = {"textId": BIG_CODE, "date": "2025-06-01", "nature": "CODE"}
TOC_URL = DEMO_API_BASE_URL + "/consult/legi/tableMatieres"
ARTICLE_URL = DEMO_API_BASE_URL + "/consult/getArticle"
# What the app can have sent beyond what the reader took: the queue, plus one message waiting to get in.
AHEAD = QUEUE_MESSAGES + 1


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Watched:
    """ASGI wrapper around the real emulator app: counts the body messages the app sends, records
    how its run ended, and can make the connection fail after `fail_after` body messages."""

    def __init__(self, app: Callable[..., Any], *, fail_after: int | None = None,
                 fail: Callable[[], Any] | None = None) -> None:
        self.app = app
        self.sent = 0
        self.outcome: str | None = None  # "returned", "raised" or "cancelled" once the app is done
        self.task: asyncio.Task[Any] | None = None
        self._fail_after = fail_after
        self._fail = fail

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def watched_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if self._fail is not None and self.sent == self._fail_after:
                    await self._fail()
                self.sent += 1
            await send(message)

        self.task = asyncio.current_task()
        try:
            await self.app(scope, receive, watched_send)
        except asyncio.CancelledError:
            self.outcome = "cancelled"
            raise
        except Exception:
            self.outcome = "raised"
            raise
        self.outcome = "returned"


async def _drop() -> None:
    raise ConnectionDropped("test: connection lost mid-body")


async def _stall() -> None:
    await asyncio.sleep(30)


async def authorized(http: httpx.AsyncClient) -> dict[str, str]:
    r = await http.post(DEMO_OAUTH_URL, data={"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID,
                                              "client_secret": DEMO_CLIENT_SECRET})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def client(transport: DemoTransport, read_timeout: float = 10.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10.0, read=read_timeout))


def watch(transport: DemoTransport, **kwargs: Any) -> Watched:
    """Wrap the transport's app from the next request on (the transport looks `.app` up per request)."""
    watched = Watched(transport.app, **kwargs)
    transport.app = watched
    return watched


@asynccontextmanager
async def streamed_toc(transport: DemoTransport, read_timeout: float = 10.0,
                       **watch_kwargs: Any) -> AsyncIterator[tuple[Watched, httpx.Response]]:
    """The big code's TOC asked for as a stream, the app watched from that request on: the
    response has started (200) and its body is left to the caller."""
    async with client(transport, read_timeout) as http:
        headers = await authorized(http)
        watched = watch(transport, **watch_kwargs)
        async with http.stream("POST", TOC_URL, json=TOC_BODY, headers=headers) as r:
            assert r.status_code == 200
            yield watched, r


def test_big_toc_streams_in_chunks_while_the_app_writes_it_and_a_slow_reader_pauses_it() -> None:
    transport = demo_transport(DemoConfig(articles=20_000))

    async def go() -> None:
        async with streamed_toc(transport) as (watched, r):
            assert watched.outcome is None  # returned while the app is still writing the TOC
            assert watched.sent <= 1 + AHEAD  # the first body message, read with the start
            chunks: list[bytes] = []
            async for chunk in r.aiter_raw():
                chunks.append(chunk)
                for _ in range(5):
                    await asyncio.sleep(0)  # a slow reader: the app gets every chance to run ahead
                assert watched.sent <= len(chunks) + AHEAD  # ... and is held back by the queue
        assert watched.outcome == "returned"
        assert len(chunks) > 3 * AHEAD
        toc = json.loads(b"".join(chunks))
        assert toc["cid"] == BIG_CODE and toc["sections"]

    run(go())


def test_closing_the_response_early_cancels_the_app() -> None:
    transport = demo_transport(DemoConfig(articles=20_000))

    async def go() -> None:
        async with streamed_toc(transport) as (watched, _):
            pass
        # leaving the block closed the response after its first chunk
        assert watched.outcome == "cancelled"
        assert watched.task is not None and watched.task.cancelled()  # awaited, not left pending

    run(go())


def test_a_drop_before_the_response_raises_remote_protocol_error() -> None:
    server = DemoServer()
    server.set_faults([FaultRule("drop", endpoint="table_matieres")])
    transport = demo_transport(server)

    async def go() -> None:
        async with client(transport) as http:
            headers = await authorized(http)
            watched = watch(transport)
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post(TOC_URL, json=TOC_BODY, headers=headers)
            assert watched.outcome == "raised"
            r = await http.post(TOC_URL, json=TOC_BODY, headers=headers)  # the next one is served
            assert r.status_code == 200 and r.json()["cid"] == BIG_CODE

    run(go())
    assert server.stats()["by_endpoint"]["table_matieres"]["dropped"] == 1


def test_a_drop_mid_body_raises_from_the_stream_read() -> None:
    transport = demo_transport(DemoConfig(articles=20_000))

    async def go() -> None:
        async with streamed_toc(transport, fail_after=3, fail=_drop) as (watched, r):  # it had started
            received = 0
            with pytest.raises(httpx.RemoteProtocolError):
                async for _ in r.aiter_raw():
                    received += 1
            assert received == 3
        assert watched.outcome == "raised"

    run(go())


def test_a_hang_before_the_response_raises_read_timeout_and_cancels_the_app() -> None:
    server = DemoServer(DemoConfig(hang_s=30))
    server.set_faults([FaultRule("hang", endpoint="get_article")])
    transport = demo_transport(server)

    async def go() -> None:
        async with client(transport, read_timeout=0.2) as http:
            headers = await authorized(http)
            watched = watch(transport)
            with pytest.raises(httpx.ReadTimeout):
                await http.post(ARTICLE_URL, json={"id": ARTICLE}, headers=headers)
            assert watched.outcome == "cancelled"

    run(go())
    assert server.stats()["by_endpoint"]["get_article"]["cancelled"] == 1


def test_a_stall_mid_body_raises_read_timeout_from_the_stream_read() -> None:
    transport = demo_transport(DemoConfig(articles=20_000))

    async def go() -> None:
        async with streamed_toc(transport, read_timeout=0.2, fail_after=3, fail=_stall) as (watched, r):
            with pytest.raises(httpx.ReadTimeout):
                async for _ in r.aiter_raw():
                    pass
        assert watched.outcome == "cancelled"

    run(go())


def test_a_small_answer_is_complete_when_the_response_is_returned() -> None:
    transport = demo_transport(DemoConfig())

    async def go() -> None:
        async with client(transport) as http:
            headers = await authorized(http)
            watched = watch(transport)
            async with http.stream("POST", ARTICLE_URL, json={"id": ARTICLE}, headers=headers) as r:
                assert r.status_code == 200
                assert watched.outcome == "returned"  # the app is done: nothing left to wait for
                body = await r.aread()
            assert json.loads(body)["article"]["id"] == ARTICLE
            r = await http.post(ARTICLE_URL, json={"id": ARTICLE}, headers=headers)
            assert r.json()["article"]["id"] == ARTICLE

    run(go())


def test_a_streamed_request_body_reaches_the_app() -> None:
    transport = demo_transport(DemoConfig())

    async def body() -> AsyncIterator[bytes]:
        yield b'{"id": '
        yield json.dumps(ARTICLE).encode() + b"}"

    async def go() -> None:
        async with client(transport) as http:
            headers = await authorized(http) | {"Content-Type": "application/json"}
            r = await http.post(ARTICLE_URL, content=body(), headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["article"]["id"] == ARTICLE

    run(go())


def test_other_app_errors_propagate() -> None:
    transport = demo_transport(DemoConfig())

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug in the app")

    async def go() -> None:
        transport.app = broken
        async with client(transport) as http:
            with pytest.raises(RuntimeError, match="a bug in the app"):
                await http.get(DEMO_API_BASE_URL.removesuffix(API_PREFIX) + "/_demo/health")

    run(go())
