"""HTTP routes served by the Streamlit server through st.App (see dashboard.py).

GET /aspirage/status has two levels. Without credentials it answers what an anonymous
visitor may know (runtime.public_status: running, mode, phase, counters, last and next run),
from a copy refreshed at most once per STATUS_CACHE_SECONDS, so anonymous calls never queue
behind the store. With `Authorization: Bearer $COLLECTOR_API_TOKEN` it answers the full status
(store, lease holder, errors, state problems). The control routes need the same bearer token and
call the same scheduler methods as the page's buttons, so each one saves the desired state
before answering. Request bodies are read with a size cap and a nesting cap; every answer,
errors included, is JSON. GET /changes (the change log, paged
by seq) needs the same token. POST /collect/code {"code_id": ...} (same token) queues one extra
pass over one code (CollectorScheduler.collect_code): 202 when accepted, 409 with the reason when
refused (a MASSIVE pass on, the lease held elsewhere), 400 on a body without a LEGITEXT id; the
saved state is not touched.

Unknown paths: every path whose first segment is one of the routes' (aspirage, siphonnage,
changes, collect, healthz) belongs to this API, so one that names no route (/aspirage/nope,
/changes/x, /collect) answers 404 JSON listing the routes, never the page's HTML (Streamlit's
catch-all would serve it with a 200). Any other path is the page's.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.config import InvalidMode, Mode, is_code_id, mode_from_text
from collector.store.base import StoreError

if TYPE_CHECKING:
    from collector.runtime import Runtime

RuntimeGetter = Callable[[], "Runtime"]
Handler = Callable[[Request], Awaitable[Response]]

MAX_BODY_BYTES = 4096
MAX_BODY_DEPTH = 8  # {"mode": ...} needs 1; a deeper body is refused before json.loads
STATUS_CACHE_SECONDS = 3.0
log = structlog.get_logger("collector.routes")


class StatusCache:
    """The public status of one runtime, computed at most once per `ttl` seconds. While one
    caller computes it, the others get the previous copy at once (only the very first callers
    of a runtime wait for it)."""

    def __init__(self, ttl: float = STATUS_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._clock = ttl, clock
        self._lock = threading.Lock()
        self._owner: object = None  # the runtime the copy belongs to
        self._value: dict[str, Any] | None = None
        self._at = float("-inf")

    def peek(self, owner: object) -> dict[str, Any] | None:
        """The copy when it is fresh, without blocking (callable from the event loop)."""
        if self._owner is owner and self._clock() - self._at < self._ttl:
            return self._value
        return None

    def get(self, owner: object, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A fresh copy, or the previous one while another caller computes (may block: a thread)."""
        fresh = self.peek(owner)
        if fresh is not None:
            return fresh
        if not self._lock.acquire(blocking=False):
            if self._owner is owner and self._value is not None:
                return self._value  # stale by at most one computation
            self._lock.acquire()  # nothing to serve yet: wait for the first computation
        try:
            fresh = self.peek(owner)
            if fresh is not None:
                return fresh
            value = compute()
            self._owner, self._value, self._at = owner, value, self._clock()
            return value
        finally:
            self._lock.release()


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


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


async def read_json(request: Request, example: str) -> Any | JSONResponse:
    """The decoded JSON body, or the error response to send: 413 over MAX_BODY_BYTES (read
    with that cap, never buffered whole), 400 when nested deeper than MAX_BODY_DEPTH or not
    JSON. `example` shows the expected body in the 400 message."""
    too_large = _error(413, f"request body too large (max {MAX_BODY_BYTES} bytes)")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return too_large
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return too_large
    if json_depth(body) > MAX_BODY_DEPTH:
        return _error(400, f"body nested too deeply (max {MAX_BODY_DEPTH} levels): send {example}")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _error(400, f"body must be JSON like {example}")


async def _read_mode(request: Request) -> Mode | JSONResponse:
    """The parsed `mode` field of the JSON body, or the error response to send."""
    data = await read_json(request, '{"mode": "MASSIVE"} or {"mode": "MAINTENANCE"} (any case)')
    if isinstance(data, JSONResponse):
        return data
    if not isinstance(data, dict) or "mode" not in data:
        return _error(422, 'body must be a JSON object with a "mode" field: "MASSIVE" or "MAINTENANCE"')
    try:
        return mode_from_text(data["mode"])  # as the CLI and SIPHONNAGE_MODE read it
    except InvalidMode as exc:
        return _error(422, str(exc))


def collector_threads() -> int:
    """Live collector threads in this process (should never exceed one)."""
    from collector.scheduler import THREAD_NAME

    return sum(1 for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive())


def build_routes(
    get_runtime: RuntimeGetter = _default_runtime, status_cache: StatusCache | None = None
) -> list[Route]:
    """The st.App routes, reading the process-wide runtime through `get_runtime`;
    `status_cache` keeps the anonymous status (tests pass one with their own clock)."""
    from collector.runtime import public_status, status_payload

    cache = status_cache or StatusCache()

    def full_status(rt: Runtime) -> dict[str, Any]:
        payload = status_payload(rt)
        payload["collector_threads"] = collector_threads()
        return payload

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
        if "authorization" in request.headers:  # asks for the full status: the token decides
            denied = _authorize(request, rt.settings.api_token)
            if denied is not None:
                log.warning("status route refused", status=denied.status_code)
                return denied
            return JSONResponse(await run_in_threadpool(full_status, rt))
        public = cache.peek(rt)
        if public is None:
            public = await run_in_threadpool(cache.get, rt, lambda: public_status(full_status(rt)))
        return JSONResponse(public)

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
            payload = await run_in_threadpool(full_status, rt)
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

    async def collect_code(request: Request) -> Response:
        from collector.scheduler import CollectRefused

        rt = await runtime_or_error()
        if isinstance(rt, JSONResponse):
            return rt
        denied = _authorize(request, rt.settings.api_token)
        if denied is not None:
            log.warning("control route refused", action="collect_code", status=denied.status_code)
            return denied
        data = await read_json(request, '{"code_id": "LEGITEXT000006074075"}')
        if isinstance(data, JSONResponse):
            return data
        code_id = data.get("code_id") if isinstance(data, dict) else None
        if not is_code_id(code_id):
            return _error(400, 'body must be a JSON object with "code_id": a LEGITEXT id (LEGITEXT + 12 digits)')
        try:
            await run_in_threadpool(rt.scheduler.collect_code, code_id)
        except CollectRefused as exc:
            log.info("collect refused", code_id=code_id, reason=exc.reason)
            return JSONResponse({"error": exc.reason, "code_id": code_id}, status_code=409)
        log.info("control route", action="collect_code", code_id=code_id)
        body = {"ok": True, "action": "collect_code", "code_id": code_id,
                "queued_codes": list(rt.scheduler.queued_codes)}
        return JSONResponse(body, status_code=202)

    routes = [
        _route("/aspirage/status", "GET", status),
        _route("/collect/code", "POST", collect_code),
        _route("/changes", "GET", changes),
        _route("/aspirage/start", "POST", control("start", lambda rt, _: rt.scheduler.start())),
        _route("/aspirage/stop", "POST", control("stop", lambda rt, _: rt.scheduler.stop())),
        _route(
            "/siphonnage/mode",
            "POST",
            control("set_mode", lambda rt, mode: rt.scheduler.set_mode(mode), needs_mode=True),
        ),
    ]
    return routes + not_found_routes(routes)


def not_found_routes(routes: list[Route]) -> list[Route]:
    """404 JSON for the paths under the API's first segments that name no route (mounted
    after the routes, before the page). /healthz (collector.health) counts as one of them."""
    from collector.health import PATH as HEALTH_PATH

    known = sorted({r.path for r in routes} | {HEALTH_PATH})
    listed = ", ".join(known)

    async def not_found(request: Request) -> Response:
        return _error(404, f"no route {request.method} {request.url.path[:200]}; the routes are {listed}")

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    out: list[Route] = []
    for prefix in dict.fromkeys("/" + path.split("/")[1] for path in known):
        out.append(Route(prefix + "/{rest:path}", not_found, methods=methods))
        if prefix not in known:
            out.append(Route(prefix, not_found, methods=methods))
    return out


def _route(path: str, method: str, handler: Handler) -> Route:
    """A route that answers every method itself: a partial match would otherwise fall
    through to Streamlit's catch-all and serve the page's HTML with a 200."""

    async def endpoint(request: Request) -> Response:
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            return _error(405, f"use {method} on {path}", {"Allow": method})
        try:
            return await handler(request)
        except Exception as exc:  # never Starlette's plain-text 500 with a traceback
            log.error("route failed", path=path, error_type=type(exc).__name__, error=str(exc)[:300])
            return _error(500, "internal error; see the server logs")

    return Route(path, endpoint, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
