"""The real server without any browser: auto-resume at start, control routes, SIGTERM."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import TOKEN, Server, wait_for

pytestmark = pytest.mark.e2e


def test_saved_running_state_resumes_without_a_browser(launch: Callable[..., Server]) -> None:
    server = launch(state={"running": True, "mode": "MASSIVE"}, LEGIFRANCE_MAX_REQUESTS_PER_SECOND="20")

    status = wait_for(lambda: (s := server.status())["running"] and s, 20, "status running")
    assert status["mode"] == "MASSIVE" and status["massive_active"] is True
    wait_for(server.articles, 20, "articles stored in the SQLite file")
    assert server.status()["collector_threads"] == 1
    assert TOKEN not in server.output()

    stored = server.articles()
    server.terminate(10)
    # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit.
    assert server.proc.returncode in (0, -signal.SIGTERM), server.output()[-3000:]
    assert '"runtime closed"' in server.output(), "the lifespan's shutdown ran"
    assert server.saved() == {"running": True, "mode": "MASSIVE"}, "shutdown keeps the desired state"
    assert server.articles() >= stored, "what was stored stays stored"
    assert '"scheduler shut down"' in server.output()


def test_saved_stopped_state_collects_nothing_until_started(launch: Callable[..., Server]) -> None:
    server = launch(state={"running": False, "mode": "MASSIVE"}, LEGIFRANCE_MAX_REQUESTS_PER_SECOND="20")

    status = server.status()
    assert (status["running"], status["mode"], status["collector_threads"]) == (False, "MASSIVE", 0)
    time.sleep(4)
    assert server.articles() == 0, "nothing collected while stopped"
    assert server.saved() == {"running": False, "mode": "MASSIVE"}

    resp = server.post("/siphonnage/mode", {"mode": "MAINTENANCE"})
    assert resp.status_code == 200
    assert server.saved() == {"running": False, "mode": "MAINTENANCE"}
    resp = server.post("/aspirage/start")
    assert resp.status_code == 200 and resp.json()["state_saved"] is True
    assert server.saved() == {"running": True, "mode": "MAINTENANCE"}
    wait_for(server.articles, 30, "articles after POST /aspirage/start")

    resp = server.post("/aspirage/stop")
    assert resp.status_code == 200
    assert server.saved() == {"running": False, "mode": "MAINTENANCE"}
    wait_for(lambda: server.status()["collector_threads"] == 0, 10, "the thread to end after stop")
    after_stop = server.articles()
    time.sleep(3)
    assert server.articles() == after_stop, "nothing collected after stop"

    server.terminate(10)
    assert server.saved() == {"running": False, "mode": "MAINTENANCE"}
    assert TOKEN not in server.output()

