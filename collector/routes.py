"""HTTP routes served by the Streamlit server through st.App (see dashboard.py).

GET /aspirage/status is public (the status carries no secret). The control routes need
`Authorization: Bearer $COLLECTOR_API_TOKEN` and call the same scheduler methods as the
page's buttons, so each one saves the desired state before answering. GET /changes (the
change log, paged by seq) needs the same token.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.config import InvalidMode, Mode, parse_mode
from collector.store.base import StoreError

if TYPE_CHECKING:
    from collector.runtime import Runtime

RuntimeGetter = Callable[[], "Runtime"]
Handler = Callable[[Request], Awaitable[Response]]

MAX_BODY_BYTES = 4096
log = structlog.get_logger("collector.routes")


def _default_runtime() -> Runtime:
    from collector.shared_runtime import get_runtime

    return get_runtime()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _authorize(request: Request, token: str | None) -> JSONResponse | None:
    """None when the request carries the API token, else the error response to send."""
    if not token:
        return _error(
            403,
            "control routes are disabled: set COLLECTOR_API_TOKEN on the server to enable them",
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(
            401,
            "missing bearer token: send 'Authorization: Bearer <COLLECTOR_API_TOKEN>'",
            {"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(401, "invalid bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return None


async def _read_mode(request: Request) -> Mode | JSONResponse:
    """The parsed `mode` field of the JSON body, or the error response to send."""
    body = b""
    async for chunk in request.stream():  # bounded: never buffer a huge body
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"request body too large (max {MAX_BODY_BYTES} bytes)")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, 'body must be JSON like {"mode": "MASSIVE"} or {"mode": "MAINTENANCE"}')
    if not isinstance(data, dict) or "mode" not in data:
        return _error(422, 'body must be a JSON object with a "mode" field: "MASSIVE" or "MAINTENANCE"')
    try:
        return parse_mode(data["mode"])
    except InvalidMode as exc:
        return _error(422, str(exc))


def collector_threads() -> int:
    """Live collector threads in this process (should never exceed one)."""
    from collector.scheduler import THREAD_NAME

    return sum(1 for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive())


def build_routes(get_runtime: RuntimeGetter = _default_runtime) -> list[Route]:
    """The st.App routes, reading the process-wide runtime through `get_runtime`."""
    from collector.runtime import status_payload

    async def runtime_or_error() -> Runtime | JSONResponse:
        try:
            return await run_in_threadpool(get_runtime)
        except Exception as exc:  # the page shows the details; never echo them here
            log.error("runtime unavailable", error_type=type(exc).__name__)
            return _error(503, "collector runtime unavailable; see the server logs")

    async def status(request: Request) -> Response:
        rt = await runtime_or_error()
        if isinstance(rt, JSONResponse):
            return rt
        payload = await run_in_threadpool(status_payload, rt)
        payload["collector_threads"] = collector_threads()
        return JSONResponse(payload)

    def control(
        action: str, call: Callable[[Runtime, Mode | None], None], needs_mode: bool = False
    ) -> Handler:
        async def handler(request: Request) -> Response:
            rt = await runtime_or_error()
            if isinstance(rt, JSONResponse):
                return rt
            denied = _authorize(request, rt.settings.api_token)
            if denied is not None:
                log.warning("control route refused", action=action, status=denied.status_code)
                return denied
            mode: Mode | None = None
            if needs_mode:
                parsed = await _read_mode(request)
                if isinstance(parsed, JSONResponse):
                    return parsed
                mode = parsed
            await run_in_threadpool(call, rt, mode)  # saves the state before returning
            payload = await run_in_threadpool(status_payload, rt)
            payload["collector_threads"] = collector_threads()
            snap = rt.scheduler.status()
            log.info("control route", action=action, mode=str(mode) if mode else None, state_saved=snap.state_saved)
            body = {
                "ok": True,
                "action": action,
                "state_saved": snap.state_saved,
                "state_error": snap.state_error,
                "status": payload,
            }
            return JSONResponse(body)

        return handler

    async def changes(request: Request) -> Response:
        from collector.feed.reader import BadPageArgs, page_args, read_page

        rt = await runtime_or_error()
        if isinstance(rt, JSONResponse):
            return rt
        denied = _authorize(request, rt.settings.api_token)
        if denied is not None:
            log.warning("changes route refused", status=denied.status_code)
            return denied
        try:
            since, limit, code_id = page_args(request.query_params)
        except BadPageArgs as exc:
            return _error(400, str(exc))
        try:
            page = await run_in_threadpool(read_page, rt.store, since, limit, code_id)
        except StoreError as exc:
            log.error("changes unreadable", error=str(exc))
            return _error(503, "the change log cannot be read now; see the server logs")
        return JSONResponse(page)

    return [
        _route("/aspirage/status", "GET", status),
        _route("/changes", "GET", changes),
        _route("/aspirage/start", "POST", control("start", lambda rt, _: rt.scheduler.start())),
        _route("/aspirage/stop", "POST", control("stop", lambda rt, _: rt.scheduler.stop())),
        _route(
            "/siphonnage/mode",
            "POST",
            control("set_mode", lambda rt, mode: rt.scheduler.set_mode(mode), needs_mode=True),
        ),
    ]


def _route(path: str, method: str, handler: Handler) -> Route:
    """A route that answers every method itself: a partial match would otherwise fall
    through to Streamlit's catch-all and serve the page's HTML with a 200."""

    async def endpoint(request: Request) -> Response:
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            return _error(405, f"use {method} on {path}", {"Allow": method})
        return await handler(request)

    return Route(path, endpoint, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
