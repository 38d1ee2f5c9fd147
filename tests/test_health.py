"""collector.health.check on real runtimes (demo source, SQLite, the real collector thread):
503 with the reason for a runtime that cannot be built or a dead thread, 200 otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.config import Settings
from collector.health import check
from collector.logs import reset_logging
from collector.runtime import Runtime, build_runtime
from collector.scheduler import CollectorScheduler, SchedulerOptions
from collector.store.base import StoreError
from tests.test_runtime import wait_until

SECRET = "pw-health-5e1f0c"


class ThreadKiller(BaseException):
    """Escapes every handler of the collector thread: a bug that ends it."""


async def dies(*_: Any, **__: Any) -> Any:
    raise ThreadKiller("simulated bug")


async def store_down(*_: Any, **__: Any) -> Any:
    raise StoreError("store unreachable (simulated outage)")


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    made: list[Runtime] = []

    def build(run_pass: Any = None, **timings: Any) -> Runtime:
        root = tmp_path / f"rt{len(made)}"  # own store: no lease shared with another runtime
        settings = Settings(state_file=root / "state.json", db_path=root / "collector.sqlite3",
                            max_requests_per_second=200)
        options = SchedulerOptions.from_settings(settings, **timings)
        rt = build_runtime(settings, resume=False, scheduler_options=options)
        made.append(rt)
        if run_pass is not None:  # the same parts, with this pass function
            old = rt.scheduler
            rt.scheduler = CollectorScheduler(
                settings, state=old.state, store=rt.store, status=rt.status, client_factory=old.client_factory,
                budget=old.budget, options=options, run_pass=run_pass)
        return rt

    yield build
    for rt in made:
        rt.close()
    reset_logging()


def test_a_runtime_that_cannot_be_built_is_503_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIN_ARTICLE_CHARS", "abc")
    monkeypatch.setenv("DASHBOARD_PASSWORD", SECRET)
    status, body = check(lambda: build_runtime(Settings.from_env()))
    assert status == 503 and body["status"] == "error"
    assert "could not start" in body["reason"] and "MIN_ARTICLE_CHARS" in body["reason"]

    def leaky() -> Runtime:
        raise RuntimeError(f"cannot open with password {SECRET}")

    status, body = check(leaky)  # not our own sentence: its type only, the text stays in the logs
    assert status == 503 and SECRET not in body["reason"] and "RuntimeError (details in the server logs)" in body["reason"]


def test_stopped_running_and_failing_collectors_are_healthy(make: Any) -> None:
    rt = make()
    assert check(lambda: rt) == (200, {"status": "ok", "running": False, "alive": False, "phase": "idle"})
    rt.scheduler.start()
    status, body = check(lambda: rt)
    assert status == 200 and body["running"] and body["alive"]

    down = make(run_pass=store_down, backoff=(30.0, 30.0))  # an outage: the thread retries
    down.scheduler.start()
    assert wait_until(lambda: down.status.snapshot().phase == "error")
    status, body = check(lambda: down)
    assert (status, body["phase"], body["alive"]) == (200, "error", True)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the point
def test_a_dead_collector_thread_is_503(make: Any) -> None:
    rt = make(run_pass=dies)
    rt.scheduler.start()
    assert wait_until(lambda: not rt.scheduler.alive)
    status, body = check(lambda: rt)
    assert status == 503 and (body["running"], body["alive"]) == (True, False)
    assert body["reason"].startswith("the collector thread died while meant to run")
    rt.scheduler.stop()  # stopped on purpose: healthy again
    assert check(lambda: rt)[0] == 200
