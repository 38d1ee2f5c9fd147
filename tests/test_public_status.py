"""The anonymous GET /aspirage/status over a real socket (uvicorn in a thread, the real
routes and runtime, SQLite): parallel anonymous calls cost at most one store read per cache
period, and none of them waits while that read is slow."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from collector.config import Settings
from collector.logs import reset_logging
from collector.routes import STATUS_CACHE_SECONDS, StatusCache, build_routes
from collector.runtime import PUBLIC_STATUS_FIELDS, Runtime, build_runtime
from collector.store.sqlite import SqliteStore
from tests.conftest import free_port

TOKEN = "public-status-token-77a2"
PARALLEL = 40


class CountingStore:
    """A SqliteStore whose every call is counted; `gate` (when cleared) holds calls back."""

    def __init__(self, inner: SqliteStore) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.label = inner.label

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name == "close":
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            self.entered.set()
            assert self.gate.wait(30), "the test never released the store"
            return attr(*args, **kwargs)

        return counted

    def close(self) -> None:
        self._inner.close()


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Runtime, CountingStore, ManualClock]]:
    settings = Settings(state_file=tmp_path / "state.json", db_path=tmp_path / "collector.sqlite3",
                        api_token=TOKEN)
    store = CountingStore(SqliteStore(settings.db_path))
    rt = build_runtime(settings, store=store, resume=False)  # type: ignore[arg-type]
    clock = ManualClock()
    app = Starlette(routes=build_routes(lambda: rt, StatusCache(clock=clock)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/aspirage/status"
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    try:
        yield url, rt, store, clock
    finally:
        store.gate.set()
        server.should_exit = True
        thread.join(10)
        rt.close()
        reset_logging()


def burst(url: str, n: int = PARALLEL) -> list[httpx.Response]:
    """`n` anonymous GETs at once, each on its own connection."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    with httpx.Client(timeout=20, limits=limits) as client, ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: client.get(url), range(n)))


def test_parallel_anonymous_calls_read_the_store_once_per_period(
    served: tuple[str, Runtime, CountingStore, ManualClock],
) -> None:
    url, rt, store, clock = served
    store.calls.clear()
    first = burst(url)
    assert {r.status_code for r in first} == {200}
    assert store.calls["last_runs"] == 1, f"{PARALLEL} parallel calls, one status computation: {store.calls}"
    assert max(store.calls.values()) == 1, store.calls
    assert len({r.json()["timestamp"] for r in first}) == 1, "all served the same copy"
    assert set(first[0].json()) == set(PUBLIC_STATUS_FIELDS)

    clock.now += STATUS_CACHE_SECONDS / 2
    burst(url)
    assert store.calls["last_runs"] == 1, "still within the period: no store read at all"

    clock.now += STATUS_CACHE_SECONDS
    burst(url)
    assert store.calls["last_runs"] == 2 and max(store.calls.values()) <= 2, store.calls


def test_anonymous_calls_do_not_wait_for_a_slow_store(
    served: tuple[str, Runtime, CountingStore, ManualClock],
) -> None:
    """While the store hangs in the one refresh of a period, the other anonymous calls get the
    previous copy at once; the authenticated full status still reads the store itself."""
    url, rt, store, clock = served
    before = httpx.get(url, timeout=20).json()
    clock.now += STATUS_CACHE_SECONDS + 1
    store.gate.clear()
    store.entered.clear()
    with ThreadPoolExecutor(1) as pool:
        refresher = pool.submit(httpx.get, url, timeout=30)
        assert store.entered.wait(20), "the refresh reached the store"
        during = burst(url, 20)  # the store is held: these would hang if they queued behind it
        assert [r.json() for r in during] == [before] * 20
        store.gate.set()
        after = refresher.result().json()
    assert after["timestamp"] != before["timestamp"]


def test_public_status_leaves_out_what_only_the_operator_needs(
    served: tuple[str, Runtime, CountingStore, ManualClock], tmp_path: Path,
) -> None:
    url, rt, store, clock = served
    rt.status.error(f"HTTP 500 from {rt.settings.api_base_url}: <html>upstream body</html>")
    with rt.status.update() as s:
        s.detail = "standby: collector held by otherhost:4242:20260101 until 12:00:00"
    public = httpx.get(url, timeout=20)
    full = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
    assert full.status_code == 200
    for text in (str(tmp_path), "otherhost", "4242", "upstream body", "SQLite"):
        assert text not in public.text, text
        assert text in full.text, text
    assert json.loads(public.text)["phase"] == full.json()["phase"]
