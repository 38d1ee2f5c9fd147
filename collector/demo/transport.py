"""In-process transport: httpx talks to the emulator app without a socket, the body streaming.

httpx.ASGITransport awaits the whole app and joins every body chunk before it returns the
Response (httpx 0.28.1, `ASGIResponseStream`), which would hold an in-process table of contents
(~26 MB at 100,000 articles) in memory whole; httpx offers no streaming one (encode/httpx#2186),
and fastmcp's StreamingASGITransport targets the httpx2 fork inside an anyio task group. This
one is small and asyncio only, as the collector.

Each request runs the app on its own task. `handle_async_request` returns once the response
has started and its first body message is in (a small JSON answer is then complete); the rest
of the body comes through a pipe of a few messages, so a slow reader pauses the app.
Closing the response before its end cancels the app, as a peer hanging up would. Faults look
like a network's: a dropped connection raises httpx.RemoteProtocolError, the request's read
timeout (for the start and for each chunk) httpx.ReadTimeout, an app failing mid-body
RemoteProtocolError from the stream read; other app errors propagate as with ASGITransport."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, NoReturn

import httpx

from collector.demo.app import ConnectionDropped, create_app
from collector.demo.config import DemoConfig
from collector.demo.state import DemoServer

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]
# The app's messages as the reader gets them: the start message, (body, more_body), and
# None once the app has returned (its error, if any, is in _Exchange.error).
_Item = Message | tuple[bytes, bool] | None

QUEUE_MESSAGES = 4  # how far the app may run ahead of the reader (64 KB TOC chunks)


class _Pipe:
    """Bounded FIFO from the app's task to the reader (asyncio.Queue without its task accounting).
    Only one side ever waits: the reader when it is empty, the app when it is full."""

    def __init__(self, size: int) -> None:
        self._items: deque[_Item] = deque()
        self._size = size
        self._waiter: asyncio.Future[None] | None = None

    def __bool__(self) -> bool:
        return bool(self._items)

    async def put(self, item: _Item) -> None:
        while len(self._items) >= self._size:
            await self.wait()
        self._items.append(item)
        self._wake()

    def get_nowait(self) -> _Item:
        item = self._items.popleft()
        self._wake()
        return item

    async def wait(self) -> None:
        """Until the other side has put or taken an item."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            if self._waiter is waiter:  # the other side may be waiting by now
                self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Exchange(httpx.AsyncByteStream):
    """One request served by the app on its own task; also the response's byte stream."""

    def __init__(self, app: ASGIApp, scope: Message, request: httpx.Request, queue_size: int) -> None:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        self.request = request
        self.error: Exception | None = None
        self._timeout: float | None = request.extensions.get("timeout", {}).get("read")
        self._head = request.method == "HEAD"
        self._request_body = aiter(request.stream)
        self._request_done = False
        self._response_done = asyncio.Event()
        self._items = _Pipe(queue_size)
        self._started = False
        self._eof = False  # the reader has the last body message
        self._first = b""
        self._task = asyncio.create_task(self._serve(app, scope))

    # ---- app side ----------------------------------------------------------------------------
    async def _serve(self, app: ASGIApp, scope: Message) -> None:
        try:
            await app(scope, self._receive, self._send)
        except Exception as exc:  # handed to the reader, never left unretrieved in the task
            self.error = exc
        finally:
            self._response_done.set()
        await self._items.put(None)

    async def _receive(self) -> Message:
        if self._request_done:
            await self._response_done.wait()
            return {"type": "http.disconnect"}
        try:
            # An in-memory body (json=, data=, content=) goes whole: iterating its stream would leave
            # an async generator for the loop to finalize (a task and a self-pipe write per request).
            body = self.request.content
        except httpx.RequestNotRead:
            chunk = await anext(self._request_body, None)
            if chunk is not None:
                return {"type": "http.request", "body": chunk, "more_body": True}
            body = b""
        self._request_done = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._items.put(message)
        elif message["type"] == "http.response.body":
            more = bool(message.get("more_body", False))
            body = b"" if self._head else bytes(message.get("body", b""))
            if body or not more:
                await self._items.put((body, more))  # waits while the queue is full: backpressure
            if not more:
                self._response_done.set()  # only once queued: set, it ends Starlette's stream

    # ---- reader side -------------------------------------------------------------------------
    async def response(self) -> httpx.Response:
        """The response once it has started and its first body message is in."""
        # Let the app's task take its first step before looking: a quick answer is queued by
        # then, so no timer is armed and no wake-up costs another turn of the loop.
        await asyncio.sleep(0)
        start = await self._next()
        if start is None or isinstance(start, tuple):
            self._fail()
        self._started = True
        self._first = await self._body()
        if self._eof:  # complete: the app is returning; an error it raises wins over the answer
            await self.aclose()
        return httpx.Response(start["status"], headers=start.get("headers", []), stream=self)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk, self._first = self._first, b""
        if chunk:
            yield chunk
        while not self._eof:
            chunk = await self._body()
            if chunk:
                yield chunk

    async def aclose(self) -> None:
        """Cancel the app if the body was not read to its end, then wait for its task."""
        if not self._eof:
            self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just the app
        if self._eof and self.error is not None:
            self._fail()  # failed after a complete answer (Starlette answers 500, then raises)

    async def _body(self) -> bytes:
        item = await self._next()
        if not isinstance(item, tuple):
            self._fail()
        body, more = item
        self._eof = not more
        return body

    async def _next(self) -> _Item:
        """The app's next message, waiting at most the read timeout; None once the app is gone."""
        if not self._items:
            if self._task.done():
                return None  # cancelled, or its end already read: nothing more will come
            try:
                async with asyncio.timeout(self._timeout):
                    await self._items.wait()
            except TimeoutError:
                raise httpx.ReadTimeout("demo: no answer within the read timeout", request=self.request) from None
        return self._items.get_nowait()

    def _fail(self) -> NoReturn:
        """Raise what a client sees when the app failed (or ended without a complete answer)."""
        error, self.error = self.error, None  # raised once
        if self._started and not self._eof:
            raise httpx.RemoteProtocolError(
                "demo: the connection closed before the end of the body", request=self.request
            ) from error
        if error is None or isinstance(error, ConnectionDropped):
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                            request=self.request) from None
        raise error


class DemoTransport(httpx.AsyncBaseTransport):
    """Serves the emulator in-process, streaming bodies, with a network's fault behaviour.
    `.app` is looked up on each request (a wrapper may replace it)."""

    def __init__(self, server: DemoServer, *, queue_size: int = QUEUE_MESSAGES) -> None:
        self.server = server
        self.app: ASGIApp = create_app(server)
        self.queue_size = queue_size

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = _Exchange(self.app, _scope(request), request, self.queue_size)
        try:
            return await exchange.response()
        except BaseException:
            await exchange.aclose()
            raise


def _scope(request: httpx.Request) -> Message:
    """The ASGI scope of `request`, as httpx.ASGITransport builds it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "headers": [(k.lower(), v) for (k, v) in request.headers.raw],
        "scheme": request.url.scheme,
        "path": request.url.path,
        "raw_path": request.url.raw_path.split(b"?")[0],
        "query_string": request.url.query,
        "server": (request.url.host, request.url.port),
        "client": ("127.0.0.1", 123),
        "root_path": "",
    }


def demo_transport(config: DemoConfig | DemoServer | None = None) -> DemoTransport:
    """An httpx transport serving the emulator in-process; `.server` is its DemoServer."""
    server = config if isinstance(config, DemoServer) else DemoServer(config)
    return DemoTransport(server)
