"""The emulator's Starlette app: PISTE token endpoint, Légifrance API routes, /_demo/ admin.

Behaviour choices where the real API is undocumented (see reference §12):
- expired/unknown/missing token -> 401 JSON + ``WWW-Authenticate: Bearer ...``;
- ``forbidden`` knob -> 403 JSON on every API route (token still granted);
- rate limit -> 429 JSON, ``Retry-After`` only when the ``retry_after`` knob is set;
- unknown ``textId`` on tableMatieres -> 404 JSON; unknown article id -> 200 ``"article": null``;
- a POST without ``Content-Type: application/json`` or with a malformed body -> 400 JSON.
The token endpoint is neither rate limited nor randomly faulted (scripted faults may target it).
The rate limit counts admitted API requests in a sliding 1-s window; rejected ones do not use quota.
An API request draws its fault only once its token is accepted (a 401 never consumes a fault).

Admin routes (no auth, never counted in stats; each is also a DemoServer method):
  POST /_demo/publish {"count": K, "code": optional LEGITEXT}  -> new versions, moved lastUpdate
  POST /_demo/repeal {"count": K, "code": optional LEGITEXT}   -> K articles repealed, moved lastUpdate
  GET|POST /_demo/faults {"plan": [{"kind", "count", "endpoint"}], "append", "fault_rate", "fault_kinds"}
  GET|POST /_demo/settings {"latency_ms", "rate_limit", "retry_after", "hang_s", "token_lifetime_s", "forbidden"}
  GET /_demo/stats[?per_id=1] (DELETE resets)    POST /_demo/expire-tokens
  GET /_demo/expected?codes=A,B&min_chars=100 -> the ids a correct collector stores
  GET /_demo/health

DILA's open-data folder (no auth, never counted, not faulted), generated on first request:
  GET /OPENDATA/LEGI/          an Apache-style index linking the synthetic archives
  GET /OPENDATA/LEGI/{name}    an archive (Range requests answered 206, as DILA's server)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from collector.demo.config import DemoConfig
from collector.demo.corpus import DAY_MS, DEMO_MASSIVE_CODES, EPOCH
from collector.demo.faults import FaultKind, FaultRule
from collector.demo.state import Admission, DemoServer

API_PREFIX = "/dila/legifrance/lf-engine-app"
TOKEN_PATH = "/api/oauth/token"
_RAW_SEND = "demo.raw_send"
_INVALID_CLIENT = {
    "error": "invalid_client",
    "error_description": "Client authentication failed (e.g. unknown client, no client authentication "
    "included, or unsupported authentication method).",
}
_HTML_500 = b"<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1></body></html>"
_HTML_503 = b"<html><head><title>503 Service Unavailable</title></head><body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your request.</p></body></html>"


class ConnectionDropped(Exception):
    """Raised when a dropped connection cannot be simulated by closing a socket (in-process)."""


class BadRequest(ValueError):
    """A malformed API request (answered 400)."""


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": error, "message": message}, status, headers)


class _DropResponse(Response):
    """Sends nothing and closes the client's connection (uvicorn), or raises in-process."""

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get(_RAW_SEND)
        transport = getattr(getattr(raw, "__self__", None), "transport", None)
        if transport is None or not hasattr(transport, "abort"):
            raise ConnectionDropped("demo fault: connection dropped")
        transport.abort()
        # Let the server see the connection loss before the app returns, so it does not try
        # to answer a 500 on the closed socket.
        for _ in range(3):
            await asyncio.sleep(0)


class _DemoStarlette(Starlette):
    """Starlette that keeps the server's own `send` in the scope (to drop connections)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_RAW_SEND] = send
        await super().__call__(scope, receive, send)


def _json_body(request: Request, raw: bytes) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("application/json"):
        raise BadRequest("Content-Type must be application/json")
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _parse_date(value: Any) -> date:
    """`date` of a TOC request: "YYYY-MM-DD" or epoch milliseconds."""
    if isinstance(value, bool):
        raise BadRequest("date must be 'YYYY-MM-DD' or epoch milliseconds")
    if isinstance(value, (int, float)):
        return date.fromordinal(EPOCH.toordinal() + int(value // DAY_MS))
    if isinstance(value, str):
        try:
            return datetime.strptime(value[:10], "%Y-%m-%d").date()
        except ValueError:
            pass
    raise BadRequest("date must be 'YYYY-MM-DD' or epoch milliseconds")


def _required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{name}' is required (a string)")
    return value.strip()


def _page_field(body: dict[str, Any], name: str, high: int | None) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"'{name}' is required (an integer >= 1)")
    if high is not None and value > high:
        raise BadRequest(f"'{name}' must be <= {high}")
    return value


Handler = Callable[[DemoServer, dict[str, Any]], Response]


def _api_route(server: DemoServer, path: str, endpoint: str, handler: Handler) -> Route:
    """Wrap a business handler with the gate: latency, rate limit, auth, 403, faults, stats."""

    async def call(request: Request) -> Response:
        admission = server.admit(endpoint)
        status: int | str = "error"
        try:
            raw = await request.body()
            cfg = server.config
            if cfg.latency_ms:
                await asyncio.sleep(cfg.latency_ms / 1000)
            response = await _gated(server, request, raw, handler, admission, endpoint)
            status = "dropped" if isinstance(response, _DropResponse) else response.status_code
            return response
        except ClientDisconnect:
            status = "client_gone"
            return Response(status_code=499)
        except asyncio.CancelledError:
            status = "cancelled"  # in-process read timeout
            raise
        finally:
            server.finish(endpoint, status)

    return Route(API_PREFIX + path, call, methods=["POST"])


async def _gated(
    server: DemoServer, request: Request, raw: bytes, handler: Handler, admission: Admission, endpoint: str
) -> Response:
    cfg = server.config
    if admission.rate_limited:
        return _too_many(cfg)
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "invalid_token", "missing bearer token", {"WWW-Authenticate": 'Bearer realm="demo"'})
    if not server.token_valid(token.strip()):
        return _unauthorized()
    if cfg.forbidden:
        return _error(403, "Forbidden", "application not subscribed to the Légifrance API (demo 'forbidden' knob)")
    fault = server.draw_fault(endpoint)
    if fault is FaultKind.HTTP_500:
        return Response(_HTML_500, status_code=500, media_type="text/html")
    if fault is FaultKind.HTTP_503:
        return Response(_HTML_503, status_code=503, media_type="text/html")
    if fault is FaultKind.HTTP_429:
        return _too_many(cfg)
    if fault is FaultKind.HTTP_401:
        return _unauthorized()
    if fault is FaultKind.DROP:
        return _DropResponse()
    if fault is FaultKind.HANG:
        await asyncio.sleep(cfg.hang_s)
    if fault is FaultKind.NULL_ARTICLE:
        return _json({"executionTime": 0, "dereferenced": False, "article": None})
    try:
        response = handler(server, _json_body(request, raw))
    except BadRequest as exc:
        return _error(400, "Bad Request", str(exc))
    if fault is FaultKind.TRUNCATED and response.status_code == 200:
        body = await _body(response)
        return Response(body[: len(body) // 2], media_type="application/json")
    if fault is FaultKind.EMPTY_TOC and response.status_code == 200:
        toc = json.loads(await _body(response))
        toc["sections"], toc["articles"] = [], []  # parses fine, lists nothing (an API glitch)
        return _json(toc)
    return response


async def _body(response: Response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join([bytes(chunk) async for chunk in response.body_iterator])
    return bytes(response.body)


def _too_many(cfg: DemoConfig) -> Response:
    headers = {"Retry-After": f"{cfg.retry_after:g}"} if cfg.retry_after is not None else None
    return _error(429, "Too Many Requests", "quota exceeded (demo rate limit)", headers)


def _unauthorized() -> Response:
    return _error(401, "invalid_token", "access token expired or unknown",
                  {"WWW-Authenticate": 'Bearer error="invalid_token"'})


# ---- business handlers ---------------------------------------------------------------------
def _list_code(server: DemoServer, body: dict[str, Any]) -> Response:
    page = _page_field(body, "pageNumber", None)
    size = _page_field(body, "pageSize", 100)
    corpus = server.corpus
    items = [corpus.list_code_item(c) for c in corpus.code_ids]
    states = body.get("states")
    if states is not None:
        if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
            raise BadRequest("'states' must be a list of strings")
        items = [i for i in items if i["etat"] in states]
    name = body.get("codeName")
    if isinstance(name, str) and name.strip():
        items = [i for i in items if name.strip().lower() in i["titre"].lower()]
    if body.get("sort") == "TITLE_ASC":
        items.sort(key=lambda i: i["titre"])
    start = (page - 1) * size
    return _json({
        "executionTime": 1, "dereferenced": False, "results": items[start : start + size],
        "totalResultNumber": len(items), "facets": [],
    })


def _table_matieres(server: DemoServer, body: dict[str, Any]) -> Response:
    text_id = _required_str(body, "textId").split("_", 1)[0]
    if "date" not in body:
        raise BadRequest("'date' is required ('YYYY-MM-DD' or epoch milliseconds)")
    on = _parse_date(body["date"])
    if not server.corpus.knows_code(text_id):
        return _error(404, "Not Found", f"no text with id {text_id[:40]}")
    return StreamingResponse(_encoded(server.corpus.table_matieres_chunks(text_id, on)), media_type="application/json")


async def _encoded(chunks: Iterator[str]) -> AsyncIterator[bytes]:
    """Stream a big body on the event loop, one piece at a time (no thread hop per piece)."""
    for chunk in chunks:
        yield chunk.encode()


def _get_article(server: DemoServer, body: dict[str, Any]) -> Response:
    article_id = _required_str(body, "id")
    article = server.corpus.article(article_id)
    server.served_article(article_id)
    return _json({"executionTime": 0, "dereferenced": False, "article": article})


def _get_article_by_cid(server: DemoServer, body: dict[str, Any]) -> Response:
    return _json({"executionTime": 0, "listArticle": server.corpus.articles_by_cid(_required_str(body, "cid"))})


# ---- token -----------------------------------------------------------------------------------
def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


def _token_route(server: DemoServer) -> Route:
    async def token(request: Request) -> Response:
        admission = server.admit("token", api=False)
        status: int | str = "error"
        try:
            raw = await request.body()
            response = await _token(server, request, raw, admission.fault)
            status = "dropped" if isinstance(response, _DropResponse) else response.status_code
            return response
        except ClientDisconnect:
            status = "client_gone"
            return Response(status_code=499)
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            server.finish("token", status, api=False)

    return Route(TOKEN_PATH, token, methods=["POST"])


async def _token(server: DemoServer, request: Request, raw: bytes, fault: FaultKind | None) -> Response:
    if fault is FaultKind.HTTP_500:
        return Response(_HTML_500, status_code=500, media_type="text/html")
    if fault is FaultKind.HTTP_503:
        return Response(_HTML_503, status_code=503, media_type="text/html")
    if fault is FaultKind.HTTP_429:
        return _too_many(server.config)
    if fault is FaultKind.DROP:
        return _DropResponse()
    if fault is FaultKind.HANG:
        await asyncio.sleep(server.config.hang_s)
    if fault is FaultKind.HTTP_401:
        return _json(_INVALID_CLIENT, 401)
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    client_id, client_secret = _basic_credentials(request.headers.get("authorization", ""))
    if client_id is None:
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
    if not server.credentials_ok(client_id, client_secret):
        return _json(_INVALID_CLIENT, 401)
    if form.get("grant_type") != "client_credentials":
        return _json({"error": "unsupported_grant_type",
                      "error_description": "grant_type must be client_credentials"}, 400)
    access_token, expires_in = server.issue_token()
    return _json({"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in, "scope": "openid"})


# ---- admin (/_demo/) -------------------------------------------------------------------------
def _admin_routes(server: DemoServer) -> list[Route]:
    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise BadRequest("body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("body must be a JSON object")
        return data

    def guarded(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await fn(request)
            except (BadRequest, ValueError, TypeError) as exc:
                return _error(400, "Bad Request", str(exc))

        return run

    async def count_and_code(request: Request) -> tuple[int, str | None]:
        data = await body_of(request)
        count = data.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool):
            raise BadRequest("'count' must be an integer")
        return count, data.get("code")

    @guarded
    async def publish(request: Request) -> Response:
        count, code = await count_and_code(request)
        published = server.publish(count, code_id=code)
        codes = {p.code_id for p in published}
        return _json({
            "published": [{"id": p.id, "cid": p.cid, "code_id": p.code_id, "previous_id": p.previous_id} for p in published],
            "last_update": {c: server.corpus.last_update(c).isoformat() for c in sorted(codes)},
        })

    @guarded
    async def repeal(request: Request) -> Response:
        count, code = await count_and_code(request)
        repealed = server.repeal(count, code_id=code)
        codes = {r.code_id for r in repealed}
        return _json({
            "repealed": [{"id": r.id, "cid": r.cid, "code_id": r.code_id} for r in repealed],
            "last_update": {c: server.corpus.last_update(c).isoformat() for c in sorted(codes)},
        })

    @guarded
    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return _json(server.faults())
        data = await body_of(request)
        unknown = set(data) - {"plan", "append", "fault_rate", "fault_kinds"}
        if unknown:
            raise BadRequest(f"unknown fields: {sorted(unknown)}")
        plan = data.get("plan", [])
        if not isinstance(plan, list) or not all(isinstance(r, dict) for r in plan):
            raise BadRequest("'plan' must be a list of rules like {\"kind\": \"http_429\", \"count\": 3, \"endpoint\": \"get_article\"}")
        rules = [FaultRule.from_dict(r) for r in plan]
        return _json(server.set_faults(rules, append=bool(data.get("append")), rate=data.get("fault_rate"),
                                       kinds=data.get("fault_kinds")))

    @guarded
    async def settings(request: Request) -> Response:
        if request.method == "POST":
            server.update(**await body_of(request))
        return _json(server.settings())

    async def stats(request: Request) -> Response:
        if request.method == "DELETE":
            server.reset_stats()
        per_id = request.query_params.get("per_id", "").lower() in {"1", "true", "yes"}
        return _json(server.stats(per_id=per_id))

    async def expire(request: Request) -> Response:
        return _json({"expired": server.expire_tokens()})

    @guarded
    async def expected(request: Request) -> Response:
        codes_param = request.query_params.get("codes")
        codes = [c for c in codes_param.split(",") if c] if codes_param else list(DEMO_MASSIVE_CODES)
        min_chars = int(request.query_params.get("min_chars", "100"))
        ids = sorted(server.expected_ids(codes, min_chars=min_chars))
        return _json({"codes": codes, "min_chars": min_chars, "count": len(ids), "ids": ids})

    async def health(request: Request) -> Response:
        return _json({"ok": True, "articles": server.config.articles, "seed": server.config.seed})

    return [
        Route("/_demo/publish", publish, methods=["POST"]),
        Route("/_demo/repeal", repeal, methods=["POST"]),
        Route("/_demo/faults", faults, methods=["GET", "POST"]),
        Route("/_demo/settings", settings, methods=["GET", "POST"]),
        Route("/_demo/stats", stats, methods=["GET", "DELETE"]),
        Route("/_demo/expire-tokens", expire, methods=["POST"]),
        Route("/_demo/expected", expected, methods=["GET"]),
        Route("/_demo/health", health, methods=["GET"]),
    ]


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    return _error(status, "Not Found" if status == 404 else "Error", f"no route {request.method} {request.url.path}")


DUMPS_PATH = "/OPENDATA/LEGI/"


def _dump_routes(server: DemoServer) -> list[Route]:
    """The synthetic DILA folder (collector.demo.dumps), written off the event loop once."""

    async def index(request: Request) -> Response:
        folder = server.dump_folder()
        await asyncio.to_thread(folder.paths)
        return HTMLResponse(folder.index_html(DUMPS_PATH))

    async def archive(request: Request) -> Response:
        folder = server.dump_folder()
        paths = await asyncio.to_thread(folder.paths)
        name = request.path_params["name"]
        for path in paths:
            if path.name == name:
                return FileResponse(path, media_type="application/gzip")
        return _error(404, "Not Found", f"no archive {name[:80]!r}")

    return [Route(DUMPS_PATH, index, methods=["GET"]),
            Route(DUMPS_PATH + "{name}", archive, methods=["GET"])]


def create_app(config: DemoConfig | DemoServer | None = None) -> Starlette:
    """The emulator as a Starlette app; `app.state.demo` is its DemoServer."""
    server = config if isinstance(config, DemoServer) else DemoServer(config)
    routes = [
        _token_route(server),
        _api_route(server, "/list/code", "list_code", _list_code),
        _api_route(server, "/consult/legi/tableMatieres", "table_matieres", _table_matieres),
        _api_route(server, "/consult/getArticle", "get_article", _get_article),
        _api_route(server, "/consult/getArticleByCid", "get_article_by_cid", _get_article_by_cid),
        *_admin_routes(server),
        *_dump_routes(server),
    ]
    app = _DemoStarlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    app.state.demo = server
    return app
