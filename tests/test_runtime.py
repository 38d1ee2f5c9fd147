"""build_runtime / get_runtime / status_payload with the real SQLite store, real state files and
the in-process emulator."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from collector import config
from collector.config import ConfigError, Mode, Settings
from collector.demo import DEMO_MAINTENANCE_CODES, DEMO_MASSIVE_CODES, DemoConfig, DemoServer, demo_transport
from collector.logs import reset_logging
from collector.runtime import Runtime, build_runtime, status_payload
from collector.shared_runtime import get_runtime
from collector.scheduler import THREAD_NAME
from collector.state import SchedulerState, StateFile, defaults_from_settings
from collector.store.sqlite import SqliteStore

CONTRACT_KEYS = {"running", "mode", "massive_active", "timestamp"}
SECRET = "pisteSecret-0123456789abcdef"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def collector_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_file=tmp_path / "scheduler_state.json",
        db_path=tmp_path / "collector.sqlite3",
        max_requests_per_second=200,
    )


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    made: list[Runtime] = []
    yield made
    for rt in made:
        rt.close()
    reset_logging()
    assert not collector_threads()


def test_demo_runtime_uses_the_emulator_and_its_codes(settings: Settings, runtimes: list[Runtime]) -> None:
    rt = build_runtime(settings, resume=False)
    runtimes.append(rt)
    assert rt.settings.maintenance_codes == DEMO_MAINTENANCE_CODES
    assert rt.settings.massive_codes == DEMO_MASSIVE_CODES
    assert isinstance(rt.demo, DemoServer)
    assert rt.store.label == f"SQLite ({settings.db_path})"
    assert not rt.scheduler.alive and not settings.state_file.exists()
    assert any(r["event"].startswith("source=DEMO") for r in rt.logs.records())


def test_codes_set_in_the_environment_win_over_the_demo_codes(settings: Settings, runtimes: list[Runtime]) -> None:
    mine = ("LEGITEXT000099900002",)
    rt = build_runtime(replace(settings, maintenance_codes=mine), resume=False)
    runtimes.append(rt)
    assert rt.settings.maintenance_codes == mine
    assert rt.settings.massive_codes == DEMO_MASSIVE_CODES
    prod = replace(settings, client_id="id", client_secret=SECRET)
    rt2 = build_runtime(prod, transport=demo_transport(DemoConfig()), resume=False)
    runtimes.append(rt2)
    assert rt2.settings.maintenance_codes == config.MAINTENANCE_CODES and rt2.demo is None


def test_resume_starts_from_the_saved_state_and_close_keeps_it(settings: Settings, runtimes: list[Runtime]) -> None:
    StateFile(settings.state_file, defaults_from_settings(settings)).save(
        SchedulerState(running=True, mode=Mode.MASSIVE)
    )
    rt = build_runtime(settings)
    runtimes.append(rt)
    assert rt.scheduler.alive and rt.scheduler.mode is Mode.MASSIVE
    assert wait_until(lambda: rt.store.count_articles() > 0, timeout=30)
    rt.close()
    rt.close()  # idempotent
    assert not collector_threads()
    saved = json.loads(settings.state_file.read_text())
    assert saved["running"] is True and saved["mode"] == "MASSIVE"
    store = SqliteStore(settings.db_path)
    try:
        assert store.acquire_lease("next", 30).acquired  # the lease was released
    finally:
        store.close()


def test_status_payload_live_and_from_the_saved_state(settings: Settings, runtimes: list[Runtime]) -> None:
    rt = build_runtime(settings, resume=False)
    runtimes.append(rt)
    rt.scheduler.set_mode(Mode.MASSIVE)
    rt.scheduler.start()
    assert wait_until(lambda: rt.scheduler.status().phase == "waiting", timeout=60)
    payload = status_payload(rt)
    assert CONTRACT_KEYS <= payload.keys()
    assert payload["running"] is True and payload["mode"] == "MASSIVE" and payload["massive_active"] is True
    assert payload["alive"] is True and payload["phase"] == "waiting" and payload["state_saved"] is True
    assert payload["source"] == "DEMO"
    assert payload["requests"]["hour"]["limit"] == 24_000 and payload["requests"]["hour"]["used"] > 0
    assert payload["last_run"]["mode"] == "MASSIVE"
    json.dumps(payload)  # JSON-ready as is (the route returns it directly)
    rt.scheduler.stop()
    assert rt.scheduler.join(5)

    # the CLI's view: the saved state and the store, nothing running
    offline = status_payload(rt.settings, rt.store)
    assert offline["running"] is False and offline["mode"] == "MASSIVE" and offline["massive_active"] is False
    assert offline["articles_stored"] == rt.store.count_articles() > 0
    assert "phase" not in offline


def test_status_payload_and_logs_carry_no_secret(settings: Settings, runtimes: list[Runtime]) -> None:
    # Real-looking credentials the emulator refuses: the pass fails with an auth error.
    prod = replace(settings, client_id="my-client", client_secret=SECRET, maintenance_codes=DEMO_MAINTENANCE_CODES,
                   dashboard_password="dash-pass-9876", api_token="api-token-5555")
    rt = build_runtime(prod, transport=demo_transport(DemoConfig()), resume=False)
    runtimes.append(rt)
    rt.scheduler.start()
    assert wait_until(lambda: rt.scheduler.status().phase == "error", timeout=30)
    payload = json.dumps(status_payload(rt))
    assert "LegifranceAuthError" in json.loads(payload)["last_error"]
    logs = json.dumps(rt.logs.records(limit=None), default=str)
    for secret in (SECRET, "dash-pass-9876", "api-token-5555"):
        assert secret not in payload
        assert secret not in logs


def test_bad_environment_raises_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGIFRANCE_MAX_REQUESTS_PER_HOUR", "lots")
    with pytest.raises(ConfigError, match="LEGIFRANCE_MAX_REQUESTS_PER_HOUR"):
        build_runtime()


def test_get_runtime_is_one_object_and_clearing_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtimes: list[Runtime]
) -> None:
    monkeypatch.setenv("SCHEDULER_STATE_FILE", str(tmp_path / "state.json"))
    monkeypatch.setenv("COLLECTOR_DB", str(tmp_path / "c.sqlite3"))
    get_runtime.clear()
    got: list[Runtime] = []
    threads = [threading.Thread(target=lambda: got.append(get_runtime())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 8 and all(rt is got[0] for rt in got)
    got[0].scheduler.start()
    got[0].scheduler.start()
    assert wait_until(lambda: len(collector_threads()) == 1)
    get_runtime.clear()  # on_release closes the runtime: the thread stops, the state stays
    assert not collector_threads()
    assert json.loads((tmp_path / "state.json").read_text())["running"] is True
    fresh = get_runtime()
    runtimes.append(fresh)
    assert fresh is not got[0] and fresh.scheduler.alive
    get_runtime.clear()
