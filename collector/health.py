"""GET /healthz: whether this instance should keep serving (render.yaml's health check).

503 with the reason when the runtime could not be built (bad configuration, unusable store
path) or the collector thread died although it is meant to run: restarting the instance is
then the right move. 200 otherwise, including while the API or the store is failing: those are
error states the page shows and the collector retries; Render replacing the instance would not
fix them. The check does no I/O (no store read), so a slow store cannot time it out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.config import ConfigError
from collector.pagetext import masked

if TYPE_CHECKING:
    from collector.runtime import Runtime

PATH = "/healthz"
MAX_REASON = 400


def _masked(text: str) -> str:
    """One line, secret values of the environment masked, at most MAX_REASON characters."""
    return " ".join(masked(text, MAX_REASON).split())


def _build_failure(exc: Exception) -> str:
    """What an anonymous caller may read of a failed start: a configuration error is our own
    sentence naming the variable; any other failure only its type (its text may name paths,
    hosts or quote a server's answer: the logs have it)."""
    if isinstance(exc, ConfigError):
        return f"ConfigError: {exc}"
    return f"{type(exc).__name__} (details in the server logs)"


def check(get_runtime: Callable[[], Runtime]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of the health check. The body is public: no error text from
    the API or the store, no lease holder, only the state and a reason of our own words."""
    try:
        runtime = get_runtime()  # a build that failed is tried again (and fails again, quickly)
    except Exception as exc:  # noqa: BLE001 - any build failure is the reason
        return 503, {"status": "error", "reason": _masked(f"the collector runtime could not start: {_build_failure(exc)}")}
    scheduler = runtime.scheduler
    running, alive = scheduler.running, scheduler.alive
    snap = runtime.status.snapshot()
    body: dict[str, Any] = {"status": "ok", "running": running, "alive": alive, "phase": snap.phase}
    if running and not alive:
        reason = "the collector thread died while meant to run (the page and the server logs say why)"
        return 503, {**body, "status": "error", "reason": reason}
    return 200, body


def _shared_runtime() -> Runtime:
    from collector.shared_runtime import get_runtime

    return get_runtime()


def health_routes(get_runtime: Callable[[], Runtime] = _shared_runtime) -> list[Route]:
    """The /healthz route for st.App, reading the process-wide runtime through `get_runtime`."""
    from collector.routes import _route  # answers other methods with 405, not the page

    async def healthz(_request: Request) -> Response:
        status, body = await run_in_threadpool(check, get_runtime)
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    return [_route(PATH, "GET", healthz)]
