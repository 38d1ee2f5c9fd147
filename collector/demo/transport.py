"""In-process transport: httpx talks to the emulator app without a socket."""

from __future__ import annotations

import asyncio

import httpx

from collector.demo.app import ConnectionDropped, create_app
from collector.demo.config import DemoConfig
from collector.demo.state import DemoServer


class DemoTransport(httpx.ASGITransport):
    """ASGITransport that behaves like a network for the faults: a dropped connection raises
    httpx.RemoteProtocolError and the request's read timeout raises httpx.ReadTimeout (plain
    ASGITransport ignores timeouts, so a "hang" fault would otherwise block for hang_s)."""

    def __init__(self, server: DemoServer) -> None:
        super().__init__(app=create_app(server))
        self.server = server

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read")
        try:
            async with asyncio.timeout(timeout):  # no task per request, unlike wait_for
                return await super().handle_async_request(request)
        except ConnectionDropped:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request) from None
        except asyncio.TimeoutError:
            raise httpx.ReadTimeout("demo: no response within the read timeout", request=request) from None


def demo_transport(config: DemoConfig | DemoServer | None = None) -> DemoTransport:
    """An httpx transport serving the emulator in-process; `.server` is its DemoServer."""
    server = config if isinstance(config, DemoServer) else DemoServer(config)
    return DemoTransport(server)
