"""LegifranceClient: OAuth2 token, retries, endpoints (list/code, tableMatieres, getArticle).

Every attempt (retries included), token requests too, takes a `RequestBudget` slot. Use one
client from one event loop. Answers are read as streams: a tableMatieres body (many MB for a
big code) goes through the TOC push parser chunk by chunk, so it never exists whole in memory.

Every attempt is bounded in total time (connection, request, the whole body, its parse:
`asyncio.timeout`, one limit per endpoint kind) and in bytes (the body is counted as it streams
in and dropped past the cap). An answer over a bound, or one that cannot be decoded (invalid
UTF-8 or JSON, nested too deep, wrong types), is a failed attempt like a 503: retried within
the usual policy, then a LegifranceError for that article or code, never a hung or dead pass.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import httpx
import structlog

from collector.config import mask
from collector.models import CodeToc
from collector.parse import TocBodyError, TocError, TocParser
from collector.ratelimit import RequestBudget, SlotTicket
from collector.retry import backoff_delay, retry_after_seconds, retry_async

if TYPE_CHECKING:
    from collector.config import Settings

log = structlog.get_logger(__name__)

ENDPOINT_PATHS: dict[str, str] = {
    "list_code": "list/code",
    "table_matieres": "consult/legi/tableMatieres",
    "get_article": "consult/getArticle",
    "get_article_by_cid": "consult/getArticleByCid",
}
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# dropped / refused connections and timeouts; not LocalProtocolError or UnsupportedProtocol
RETRY_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
_TOC_BATCH = 1 << 18  # bytes of a TOC body parsed per hop to a worker thread
_ERROR_DETAIL_BYTES = 64 << 10  # of an error body, read for its message
# Token, article and error bodies (real ones nest under 10 deep and hold under 200 brackets, so
# they are never scanned): deep enough that json.loads, which recurses in C once per level,
# stays far from the C stack's end even under a raised recursion limit.
MAX_JSON_DEPTH = 512
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'[]{}"')))  # all but brackets and quotes
_STRING = re.compile(rb'"[^"]*"')  # a string once escapes are gone
_PAGE_SIZE = 100  # the API's maximum
TOKEN_GIVE_UP_SECONDS = 15.0  # no token request is retried once this long has passed since the first
_MIN_TOKEN_ATTEMPT = 1.0  # a retry with less of the window left is not worth starting
_MAX_PAGES = 1000

_PISTE_CONSOLE = (
    "In the PISTE console (https://piste.gouv.fr, menu Applications) check: "
    "LEGIFRANCE_CLIENT_ID / LEGIFRANCE_CLIENT_SECRET are the OAuth credentials of your "
    "application; the application is subscribed to the Légifrance API; the Légifrance CGU "
    "are accepted; and LEGIFRANCE_OAUTH_URL / LEGIFRANCE_API_BASE_URL are both sandbox "
    "(sandbox-oauth / sandbox-api.piste.gouv.fr) or both production "
    "(oauth / api.piste.gouv.fr), matching where the application lives."
)


class LegifranceError(RuntimeError):
    """A request failed for good (after retries); the message never holds a secret."""


class LegifranceAuthError(LegifranceError):
    """Bad credentials or 403: fatal; the message says what to check in the PISTE console."""


class LegifranceTokenError(LegifranceError):
    """No token within the token retry window (host unreachable, failing or too slow): the pass
    ends, since every request needs one; the message names the host, never the secret."""


class LegifranceNotFound(LegifranceError):
    """The API does not know this id (unknown code id, ...)."""


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one attempt of an endpoint kind may take, with the settings that say so."""

    seconds: float
    seconds_setting: str
    max_bytes: int
    bytes_setting: str

    def timed_out(self) -> str:
        return f"no complete answer within {self.seconds:g} s ({self.seconds_setting})"

    def too_big(self) -> str:
        return f"body over {self.max_bytes} bytes ({self.bytes_setting})"


def token_lifetime(expires_in: Any, floor: float, ceiling: float) -> tuple[float, bool]:
    """Seconds to trust a token for, from the token answer's `expires_in` (missing: 3600), and
    whether it was clamped: at least `floor` (a negative, zero or non-numeric value would
    otherwise mean one token request per call), at most `ceiling`. A token the server expires
    sooner is refused with 401, which fetches a new one."""
    if expires_in is None:
        return min(max(3600.0, floor), ceiling), False
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float, str)):
        return floor, True
    try:
        seconds = float(expires_in)
    except ValueError:
        return floor, True
    except OverflowError:  # an integer beyond any float: "forever"
        return ceiling, True
    if math.isnan(seconds) or seconds < floor:
        return floor, True
    if seconds > ceiling:  # +inf included
        return ceiling, True
    return seconds, False


def declared_over(response: httpx.Response, limit: int) -> bool:
    """The answer's Content-Length says more than `limit` bytes."""
    declared = response.headers.get("content-length", "")
    return declared.isascii() and declared.isdigit() and int(declared) > limit


async def read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The (decoded) body, or None as soon as it is known to exceed `limit` bytes; the rest is
    never read."""
    if declared_over(response, limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def nested_over(content: bytes, limit: int) -> bool:
    """Whether the JSON text nests arrays/objects more than `limit` deep. Free for a body with
    fewer brackets than that; else the brackets outside strings are counted (C-speed passes,
    then a loop over the brackets alone)."""
    if content.count(b"[") + content.count(b"{") <= limit:
        return False
    # an escape is a backslash and the next byte: without \\ and \" the quotes left delimit strings
    marks = content.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_MARKS)
    depth = 0
    for byte in _STRING.sub(b"", marks):
        if byte == 0x5B or byte == 0x7B:  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def decode_object(content: bytes) -> dict[str, Any] | str:
    """A JSON object, or why the body is not one (invalid UTF-8 or JSON, nested over
    MAX_JSON_DEPTH, too big to decode, another JSON value). The depth is checked first:
    json.loads recurses in C, so its RecursionError is only as safe as the recursion limit."""
    if nested_over(content, MAX_JSON_DEPTH):
        return f"JSON nested over {MAX_JSON_DEPTH} deep"
    try:
        data = json.loads(content)
    except RecursionError:
        return "JSON nested too deep"
    except MemoryError:
        return "JSON too big to decode"
    except ValueError:  # UnicodeDecodeError included
        return "invalid JSON"
    return data if isinstance(data, dict) else "JSON body is not an object"


@dataclass
class ClientStats:
    """Counters of what the client sent and got (updated on the loop, readable anywhere)."""

    requests: Counter[str] = field(default_factory=Counter)  # logical calls by endpoint
    attempts: int = 0  # HTTP attempts to the API (each took a budget slot)
    retries: int = 0  # attempts after a retryable failure
    statuses: Counter[int] = field(default_factory=Counter)  # API statuses received
    errors: Counter[str] = field(default_factory=Counter)  # transport errors / bad bodies
    token_requests: int = 0
    auth_renewals: int = 0  # tokens fetched after the first (expiry or 401)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy; safe from any thread."""
        with self._lock:
            return {
                "requests": dict(self.requests),
                "attempts": self.attempts,
                "retries": self.retries,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "errors": dict(self.errors),
                "token_requests": self.token_requests,
                "auth_renewals": self.auth_renewals,
            }

    def record(self, **changes: Any) -> None:
        """`record(requests="get_article")` counts one under that key; `record(retries=1)` adds."""
        with self._lock:
            for name, value in changes.items():
                if name in ("requests", "statuses", "errors"):
                    getattr(self, name)[value] += 1
                else:
                    setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True, slots=True)
class _Retryable:
    """Why an attempt failed in a way worth retrying."""

    reason: str  # "HTTP 503", "ReadTimeout", "invalid JSON"
    status: int | None = None
    retry_after: float | None = None


class _Failed(Exception):
    """A retryable outcome, raised so that collector.retry's loop retries it."""

    def __init__(self, outcome: _Retryable) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def _outcome(exc: BaseException) -> _Retryable:
    """What a retried error carries (collector.retry hands back only the _Failed it retries)."""
    assert isinstance(exc, _Failed)
    return exc.outcome


# Reads the body of a 200 answer (a stream): the value, or a retryable failure; may raise.
BodyReader = Callable[[httpx.Response], Awaitable[T | _Retryable]]


def _finish_toc(parser: TocParser, tail: bytes) -> CodeToc:
    parser.feed(tail)
    return parser.close()


def _report_sent(ticket: SlotTicket) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpcore trace callback telling the budget when the request is fully written
    (real connections only: the in-process transport sends no trace, so its requests count
    until their answer)."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_body.complete"):  # http11.* and http2.*
            ticket.sent()

    return trace


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps nothing. PISTE authenticates by bearer token only: a gateway's cookie
    never goes back, and the Set-Cookie parsing httpx runs on every response is skipped."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


def _host(url: str) -> str:
    """The host of a settings URL: messages never echo a whole URL (it may carry userinfo)."""
    return urlparse(url).hostname or "?"


class LegifranceClient:
    """Async client. All requests pass through `budget.slot()`."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        oauth_url: str,
        api_base_url: str,
        budget: RequestBudget,
        transport: httpx.AsyncBaseTransport | None = None,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 60.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        toc_read_timeout: float = 120.0,
        token_timeout: float = 30.0,
        token_give_up: float = TOKEN_GIVE_UP_SECONDS,
        toc_timeout: float = 300.0,
        article_timeout: float = 60.0,
        max_body_bytes: int = 4 << 20,
        max_toc_bytes: int = 64 << 20,
        token_margin: float = 60.0,
        min_token_lifetime: float = 60.0,
        max_token_lifetime: float = 86_400.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not client_id or not client_secret:
            raise LegifranceAuthError(
                "Légifrance credentials missing: set LEGIFRANCE_CLIENT_ID and "
                "LEGIFRANCE_CLIENT_SECRET (or neither, for the offline demo)."
            )
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self._client_id = client_id
        self._secret = client_secret
        self.oauth_url = oauth_url
        self.api_base_url = api_base_url.rstrip("/")
        self.budget = budget
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._toc_read_timeout = toc_read_timeout
        self._token_margin = token_margin
        self._token_give_up = token_give_up
        self._token_lifetime = (min_token_lifetime, max_token_lifetime)
        self._clamp_logged = False
        body_setting = "LEGIFRANCE_MAX_BODY_BYTES"
        self._bounds = {
            "token": Bounds(token_timeout, "LEGIFRANCE_TOKEN_TIMEOUT_SECONDS", max_body_bytes, body_setting),
            "toc": Bounds(toc_timeout, "LEGIFRANCE_TOC_TIMEOUT_SECONDS", max_toc_bytes, "LEGIFRANCE_MAX_TOC_BYTES"),
            "article": Bounds(article_timeout, "LEGIFRANCE_ARTICLE_TIMEOUT_SECONDS", max_body_bytes, body_setting),
        }
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.stats = ClientStats()
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._had_token = False
        self._token_lock: asyncio.Lock | None = None
        self._token_lock_loop: asyncio.AbstractEventLoop | None = None
        pool = max(budget.max_in_flight + 2, 10)
        self._http = httpx.AsyncClient(
            transport=transport,
            base_url=self.api_base_url + "/",
            headers={"Accept": "application/json", "User-Agent": "legifrance-collector/0.1"},
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            timeout=self._timeout(read_timeout),
            cookies=_NoCookies(),
            follow_redirects=False,  # a redirect would carry the bearer token or the secret elsewhere
        )
        # Joined once: httpx would parse and join a relative path again on every request.
        self._urls = {name: self._http.base_url.join(path) for name, path in ENDPOINT_PATHS.items()}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        budget: RequestBudget,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> LegifranceClient:
        """PISTE when credentials are set; else the in-process demo emulator (unless
        `transport` is given). The time and size bounds come from `settings`; `options`
        override any argument."""
        options = {
            "token_timeout": settings.token_timeout_seconds,
            "toc_timeout": settings.toc_timeout_seconds,
            "article_timeout": settings.article_timeout_seconds,
            "max_body_bytes": settings.max_body_bytes,
            "max_toc_bytes": settings.max_toc_bytes,
            **options,
        }
        if settings.is_demo:
            from collector import demo  # lazy: the emulator is only needed in demo mode
            from collector.config import DEMO_API_BASE_URL, DEMO_OAUTH_URL

            return cls(
                client_id=demo.DEMO_CLIENT_ID,
                client_secret=demo.DEMO_CLIENT_SECRET,
                oauth_url=DEMO_OAUTH_URL,
                api_base_url=DEMO_API_BASE_URL,
                budget=budget,
                transport=transport or demo.demo_transport(demo.DemoConfig()),
                **options,
            )
        return cls(
            client_id=settings.client_id or "",
            client_secret=settings.client_secret or "",
            oauth_url=settings.oauth_url,
            api_base_url=settings.api_base_url,
            budget=budget,
            transport=transport,
            **options,
        )

    async def __aenter__(self) -> LegifranceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"LegifranceClient(api={_host(self.api_base_url)!r}, oauth={_host(self.oauth_url)!r})"

    # ---- endpoints ---------------------------------------------------------------------------
    async def list_codes(self, *, page_size: int = _PAGE_SIZE) -> list[dict[str, Any]]:
        """/list/code, every page, in-force codes: the raw result items."""
        items: list[dict[str, Any]] = []
        for page in range(1, _MAX_PAGES + 1):
            body = {"pageNumber": page, "pageSize": page_size, "states": ["VIGUEUR"]}
            data = await self._call("list_code", body, subject=None)
            results = data.get("results")
            if not isinstance(results, list):
                raise LegifranceError("/list/code answered without a 'results' list")
            items.extend(r for r in results if isinstance(r, dict))
            total = data.get("totalResultNumber")
            if isinstance(total, int) and not isinstance(total, bool):
                done = len(items) >= total
            else:
                done = len(results) < page_size
            if done or not results:
                return items
        raise LegifranceError(f"/list/code still had results after {_MAX_PAGES} pages")

    async def table_matieres(self, code_id: str, on: date) -> CodeToc:
        """/consult/legi/tableMatieres for a code (nature CODE) at a date, reduced to its
        in-force entries as the body streams in (collector.parse.TocParser).

        Invalid JSON is retried like any bad body; a JSON object without a list of sections
        or articles raises LegifranceNotFound; bad "articles"/"sections" values raise TocError.
        """
        body = {"textId": code_id, "date": on.isoformat(), "nature": "CODE"}

        async def read(response: httpx.Response) -> CodeToc | _Retryable:
            return await self._read_toc(response, code_id)

        return await self._request(
            "table_matieres", body, read, subject=f"code {code_id}", kind="toc",
            read_timeout=self._toc_read_timeout,
        )

    async def get_article(self, article_id: str) -> dict[str, Any] | None:
        """/consult/getArticle: the `article` object, or None when the API returns none."""
        data = await self._call("get_article", {"id": article_id}, subject=f"article {article_id}")
        article = data.get("article")
        return article if isinstance(article, dict) and article else None

    async def get_article_by_cid(self, cid: str) -> list[dict[str, Any]]:
        """/consult/getArticleByCid: every version of the article (possibly empty)."""
        data = await self._call("get_article_by_cid", {"cid": cid}, subject=f"article cid {cid}")
        versions = data.get("listArticle")
        return [v for v in versions if isinstance(v, dict)] if isinstance(versions, list) else []

    # ---- requests ----------------------------------------------------------------------------
    def _timeout(self, read: float) -> httpx.Timeout:
        return httpx.Timeout(read, connect=self._connect_timeout)

    async def _call(self, endpoint: str, body: dict[str, Any], *, subject: str | None) -> dict[str, Any]:
        """POST with auth, budget, retries; the decoded JSON object."""
        return await self._request(endpoint, body, self._read_json, subject=subject)

    async def _request(
        self,
        endpoint: str,
        body: dict[str, Any],
        read: BodyReader[T],
        *,
        subject: str | None,
        kind: str = "article",
        read_timeout: float | None = None,
    ) -> T:
        """POST with auth, budget, retries; what `read` makes of the 200 body. `kind` names the
        bounds of each attempt (toc, article)."""
        self.stats.record(requests=endpoint)
        url = self._urls[endpoint]
        timeout = self._timeout(read_timeout or self._read_timeout)
        bounds = self._bounds[kind]
        reauthenticated = False

        async def attempt() -> T:
            nonlocal reauthenticated
            token = await self._get_token()
            outcome = await self._attempt(endpoint, url, body, token, timeout, bounds, subject, read)
            if outcome is None:  # 401: the token was refused; one fresh token, at once, per call
                if reauthenticated:
                    raise LegifranceAuthError(
                        f"the API refused a freshly issued token (HTTP 401 on {endpoint}). "
                        + _PISTE_CONSOLE
                    )
                reauthenticated = True
                self._forget_token(token)
                log.warning("legifrance token refused, re-authenticating", endpoint=endpoint)
                return await attempt()
            if isinstance(outcome, _Retryable):
                raise _Failed(outcome)
            return outcome

        try:
            return await self._retry(attempt, "legifrance retry", counted=True, endpoint=endpoint)
        except _Failed as exc:
            what = f" for {subject}" if subject else ""
            raise LegifranceError(
                f"{endpoint}{what} failed after {self.max_attempts} attempts; last error: {exc.outcome.reason}"
            ) from None

    async def _attempt(
        self,
        endpoint: str,
        url: httpx.URL,
        body: dict[str, Any],
        token: str,
        timeout: httpx.Timeout,
        bounds: Bounds,
        subject: str | None,
        read: BodyReader[T],
    ) -> T | _Retryable | None:
        """One budgeted HTTP attempt: what `read` makes of a 200 body, a retryable failure, or
        None for 401. Fatal answers raise. The whole body is read within the slot and within
        `bounds.seconds` (the budget wait is not part of it)."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self.budget.slot() as ticket:
            self.stats.record(attempts=1)
            request = self._http.build_request(
                "POST", url, json=body, headers=headers, timeout=timeout,
                extensions={"trace": _report_sent(ticket)},
            )
            try:
                async with asyncio.timeout(bounds.seconds):
                    response = await self._http.send(request, stream=True)
                    try:
                        status = response.status_code
                        self.stats.record(statuses=status)
                        if status == 200:
                            return await read(response)
                        # an error body, read (up to a bound) for its detail only
                        content = await read_capped(response, _ERROR_DETAIL_BYTES)
                    finally:
                        await response.aclose()
            except TimeoutError:
                self.stats.record(errors="timeout")
                return _Retryable(bounds.timed_out())
            except RETRY_EXCEPTIONS as exc:
                self.stats.record(errors=type(exc).__name__)
                return _Retryable(type(exc).__name__)
        if status == 401:
            return None
        if status == 403:
            raise LegifranceAuthError(
                f"the API refused access (HTTP 403 on {endpoint}): the token is valid but the "
                "application may not call the Légifrance API. " + _PISTE_CONSOLE
            )
        if status in RETRY_STATUSES:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), self._clock())
            return _Retryable(f"HTTP {status}", status, retry_after)
        detail = self._error_detail(content)
        if subject and status in (400, 404):
            raise LegifranceNotFound(f"{subject} not found (HTTP {status} on {endpoint}){detail}")
        if status == 404:
            raise LegifranceError(
                f"HTTP 404 on {endpoint}: is LEGIFRANCE_API_BASE_URL (host {_host(self.api_base_url)}) right?"
            )
        if 300 <= status < 400:  # never followed: the request carries the bearer token
            what = f" for {subject}" if subject else ""
            raise LegifranceError(f"HTTP {status} on {endpoint}{what}: redirects are not followed")
        raise LegifranceError(f"HTTP {status} on {endpoint}{detail}")

    async def _read_json(self, response: httpx.Response) -> dict[str, Any] | _Retryable:
        """A small JSON body (every endpoint but tableMatieres): the decoded object."""
        bounds = self._bounds["article"]
        content = await read_capped(response, bounds.max_bytes)
        if content is None:
            self.stats.record(errors="body too big")
            return _Retryable(bounds.too_big(), 200)
        data = decode_object(content)
        if isinstance(data, str):
            self.stats.record(errors="invalid JSON")
            return _Retryable(data, 200)
        return data

    async def _read_toc(self, response: httpx.Response, code_id: str) -> CodeToc | _Retryable:
        """A tableMatieres body through a fresh TocParser, in batches of about _TOC_BATCH
        bytes each parsed in a worker thread, so the event loop stays free."""
        bounds = self._bounds["toc"]
        if declared_over(response, bounds.max_bytes):
            self.stats.record(errors="body too big")
            return _Retryable(bounds.too_big(), 200)
        parser = TocParser(code_id)
        pending: list[bytes] = []
        size = total = 0
        try:
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > bounds.max_bytes:
                    self.stats.record(errors="body too big")
                    return _Retryable(bounds.too_big(), 200)
                pending.append(chunk)
                size += len(chunk)
                if size >= _TOC_BATCH:
                    await asyncio.to_thread(parser.feed, b"".join(pending))
                    pending, size = [], 0
            toc: CodeToc | None = await asyncio.to_thread(_finish_toc, parser, b"".join(pending))
        except TocBodyError as exc:
            self.stats.record(errors="invalid JSON")
            return _Retryable(exc.reason, 200)
        except TocError:
            if parser.listed:
                raise
            toc = None  # no list at the top: the not-found answer wins, as it always did
        if toc is None or not parser.listed:
            raise LegifranceNotFound(
                f"code {code_id} not found: tableMatieres answered without sections or articles "
                f"(is {code_id} the LEGITEXT id of a code in force?)"
            )
        return toc

    def _error_detail(self, content: bytes | None) -> str:
        """A short, scrubbed hint from an error body (a JSON 'message'/'error' string only)."""
        data = decode_object(content) if content is not None else None
        if not isinstance(data, dict):
            return ""
        text = next(
            (data[k] for k in ("message", "error_description", "error") if isinstance(data.get(k), str) and data[k]),
            "",
        )
        return f": {self._scrub(text)[:200]}" if text else ""

    def _scrub(self, text: str) -> str:
        return mask(text, (self._secret or "", self._token or ""))

    async def _retry(self, attempt: Callable[[], Awaitable[T]], event: str, *, counted: bool,
                     before_wait: Callable[[int, BaseException, float], None] | None = None, **context: Any) -> T:
        """`attempt()` until it returns, `max_attempts` tries at most, each _Failed followed by
        the server's Retry-After (capped) or a full-jitter exponential backoff. Each retry is
        logged as `event` with `context`; `counted` ones (API calls, not tokens) add to
        stats.retries. `before_wait(failures, exc, delay)` may raise `exc` to stop early."""

        def retrying(failures: int, exc: BaseException, delay: float) -> None:
            if before_wait is not None:
                before_wait(failures, exc, delay)
            outcome = _outcome(exc)
            if counted:
                self.stats.record(retries=1)
            log.warning(event, **context, status=outcome.status, error=outcome.reason, attempt=failures,
                        delay=round(delay, 3))

        return await retry_async(
            attempt, attempts=self.max_attempts, retry_on=(_Failed,), on_retry=retrying, sleep=self._sleep,
            delay=lambda failures: backoff_delay(failures, self.backoff_base, self.backoff_cap, self._rng),
            retry_after=self._retry_after,
        )

    def _retry_after(self, exc: BaseException) -> float | None:
        """The server's Retry-After for a failure, at most `retry_after_cap`."""
        after = _outcome(exc).retry_after
        return None if after is None else min(after, self.retry_after_cap)

    # ---- token -------------------------------------------------------------------------------
    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._token_lock is None or self._token_lock_loop is not loop:
            self._token_lock, self._token_lock_loop = asyncio.Lock(), loop
        return self._token_lock

    def _token_valid(self) -> bool:
        return self._token is not None and self._clock() < self._token_expires_at

    def _forget_token(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _get_token(self) -> str:
        """The cached token, or one fetch shared by every concurrent caller."""
        if self._token_valid():
            return self._token  # type: ignore[return-value]
        async with self._lock():
            if not self._token_valid():
                await self._fetch_token()
            return self._token  # type: ignore[return-value]

    async def _fetch_token(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret,
            "scope": "openid",
        }
        bounds = self._bounds["token"]
        started = self._clock()
        tries = 0
        limit = bounds.seconds  # the first attempt may take its whole bound; retries what is left

        async def attempt() -> None:
            nonlocal tries
            tries += 1
            outcome = await self._token_attempt(form, bounds, limit)
            if outcome is not None:
                raise _Failed(outcome)

        def within_window(_failures: int, exc: BaseException, delay: float) -> None:
            nonlocal limit
            left = self._token_give_up - (self._clock() - started) - delay
            if left < _MIN_TOKEN_ATTEMPT:  # not worth another try: give up now
                raise exc
            limit = min(bounds.seconds, left)

        try:
            await self._retry(attempt, "legifrance token retry", counted=False, before_wait=within_window)
        except _Failed as exc:
            host = _host(self.oauth_url)
            raise LegifranceTokenError(
                f"could not get a token from {host} (LEGIFRANCE_OAUTH_URL) after {tries} attempts "
                f"in {self._clock() - started:.1f} s; last error: {exc.outcome.reason}. Check that "
                f"LEGIFRANCE_OAUTH_URL is right and that {host} is reachable from this machine"
            ) from None

    async def _token_attempt(self, form: dict[str, str], bounds: Bounds, limit: float) -> _Retryable | None:
        """One budgeted token request, bounded like an API attempt and by `limit` seconds (what
        is left of the retry window): None once the token is stored, a retryable failure, or a
        raise for refused credentials."""
        async with self.budget.slot() as ticket:
            self.stats.record(token_requests=1)
            request = self._http.build_request(
                "POST", self.oauth_url, data=form, timeout=self._timeout(self._read_timeout),
                extensions={"trace": _report_sent(ticket)},
            )
            try:
                async with asyncio.timeout(limit):
                    response = await self._http.send(request, stream=True)
                    try:
                        content = await read_capped(response, bounds.max_bytes)
                    finally:
                        await response.aclose()
            except TimeoutError:
                if limit < bounds.seconds:
                    return _Retryable(f"no complete answer within the {limit:.1f} s left to retry")
                return _Retryable(bounds.timed_out())
            except RETRY_EXCEPTIONS as exc:
                return _Retryable(type(exc).__name__)
        return self._token_outcome(response.status_code, response.headers, content, bounds)

    def _token_outcome(
        self, status: int, headers: httpx.Headers, content: bytes | None, bounds: Bounds
    ) -> _Retryable | None:
        """Store the token and return None, or a retryable failure; fatal answers raise."""
        if status in RETRY_STATUSES:
            retry_after = retry_after_seconds(headers.get("Retry-After"), self._clock())
            return _Retryable(f"HTTP {status}", status, retry_after)
        data = decode_object(content) if content is not None else None
        if 300 <= status < 400:  # never followed: the form carries the client secret
            raise LegifranceError(
                f"the token endpoint at {_host(self.oauth_url)} answered a redirect (HTTP {status}); "
                "redirects are not followed: set LEGIFRANCE_OAUTH_URL to the token URL itself"
            )
        if status != 200:
            code = ""
            if isinstance(data, dict) and isinstance(data.get("error"), str):
                code = " " + "".join(c for c in data["error"] if c.isalnum() or c == "_")[:40]
            raise LegifranceAuthError(
                f"the token endpoint at {_host(self.oauth_url)} refused the credentials "
                f"(HTTP {status}{code}). " + _PISTE_CONSOLE
            )
        if content is None:
            return _Retryable(bounds.too_big(), status)
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            return _Retryable("token response without access_token", status)
        assert isinstance(data, dict)
        lifetime, clamped = token_lifetime(data.get("expires_in"), *self._token_lifetime)
        if clamped and not self._clamp_logged:
            self._clamp_logged = True  # a server that says it once says it every time
            raw = data.get("expires_in")
            shown = str(raw)[:40] if isinstance(raw, (int, float, str)) else type(raw).__name__
            log.warning("legifrance token lifetime clamped", expires_in=shown, lifetime=lifetime)
        # renew `token_margin` early; short-lived tokens (tests) keep most of their life
        margin = min(self._token_margin, lifetime / 4)
        if self._had_token:
            self.stats.record(auth_renewals=1)
        self._had_token = True
        self._token = token
        self._token_expires_at = self._clock() + lifetime - margin
        return None
