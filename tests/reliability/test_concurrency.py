"""Scenario 6: 8 threads fire 400 random START / STOP / mode calls at one real CollectorScheduler
(real SQLite store, real harvest against the in-process emulator) while a reader parses the state
file continuously and a sampler counts the collector threads by name.

The desired state is the real DesiredState; a subclass only notes each save (saves happen under
the scheduler's lock, so the notes are in the order the calls took effect).
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from collector.config import InvalidMode, Mode, Settings
from collector.demo import DEMO_MAINTENANCE_CODES, DEMO_MASSIVE_CODES, DemoConfig, demo_transport
from collector.legifrance import LegifranceClient
from collector.ratelimit import RequestBudget
from collector.scheduler import THREAD_NAME, CollectorScheduler, SchedulerOptions
from collector.state import DesiredState, SchedulerState, StateFile, defaults_from_settings
from collector.status import StatusBoard
from collector.store.sqlite import SqliteStore
from tests.reliability.conftest import Report, check_store

pytestmark = pytest.mark.reliability

THREADS = 8
CALLS_PER_THREAD = 50
_current = threading.local()  # the call a control thread is making


class NotingKeeper(DesiredState):
    """The real DesiredState; each save is also noted with the call that made it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notes: list[tuple[str, bool, str]] = []

    def save(self, running: bool | None = None, mode: Mode | str | None = None) -> SchedulerState:
        state = super().save(running, mode)
        self.notes.append((getattr(_current, "call", "?"), state.running, state.mode.value))
        return state


def test_concurrent_start_stop_mode_calls(tmp_path: Path, seed: int, report: Report) -> None:
    settings = Settings(
        state_file=tmp_path / "state" / "scheduler_state.json", db_path=tmp_path / "collector.sqlite3",
        maintenance_codes=DEMO_MAINTENANCE_CODES, massive_codes=DEMO_MASSIVE_CODES, max_requests_per_second=200,
    )
    transport = demo_transport(DemoConfig(articles=150, latency_ms=5))
    store = SqliteStore(settings.db_path)
    keeper = NotingKeeper(StateFile(settings.state_file, defaults_from_settings(settings)), store)
    budget = RequestBudget(settings.max_requests_per_second, 24_000, 280_000, 8, ledger=store)
    scheduler = CollectorScheduler(
        settings, state=keeper, store=store, status=StatusBoard(), budget=budget,
        client_factory=lambda b: LegifranceClient.from_settings(settings, b, transport=transport),
        options=SchedulerOptions(lease_ttl=3.0, lease_renew_every=1.0),
    )
    done = threading.Event()
    watch = {"reads": 0, "unparsable": [], "max_threads": 0, "samples": 0}

    def reader() -> None:
        while not done.is_set():
            try:
                text = settings.state_file.read_text()
            except FileNotFoundError:
                continue  # before the first save
            try:
                data = json.loads(text)
                assert isinstance(data["running"], bool) and data["mode"] in ("MASSIVE", "MAINTENANCE")
            except (ValueError, KeyError, AssertionError):
                watch["unparsable"].append(text[:200])
            watch["reads"] += 1

    def sampler() -> None:
        while not done.is_set():
            count = sum(1 for t in threading.enumerate() if t.name == THREAD_NAME)
            watch["max_threads"] = max(watch["max_threads"], count)
            watch["samples"] += 1
            time.sleep(0.0005)

    errors: list[str] = []
    refused = 0

    def control(index: int) -> None:
        nonlocal refused
        rng = random.Random(f"{seed}-{index}")
        for _ in range(CALLS_PER_THREAD):
            call = rng.choice(["start", "start", "stop", "stop", "MASSIVE", "MAINTENANCE", "massive!"])
            _current.call = call
            try:
                if call == "start":
                    scheduler.start()
                elif call == "stop":
                    scheduler.stop()
                else:
                    scheduler.set_mode(call)
            except InvalidMode:
                refused += 1  # nothing changed, nothing saved
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{call}: {type(exc).__name__}: {exc}")
            time.sleep(rng.uniform(0, 0.01))

    watchers = [threading.Thread(target=reader, name="state-reader"), threading.Thread(target=sampler, name="sampler")]
    controls = [threading.Thread(target=control, args=(i,), name=f"control-{i}") for i in range(THREADS)]
    try:
        for t in watchers + controls:
            t.start()
        for t in controls:
            t.join(120)
        last = keeper.notes[-1]
        final_file = json.loads(settings.state_file.read_text())
        time.sleep(0.5)  # let the collector follow the last call
    finally:
        done.set()
        for t in watchers:
            t.join(10)
        scheduler.shutdown(10)
        rows = check_store(settings.db_path, set())  # integrity only: whatever the passes stored
        runs = store.last_runs(1000)
        store.close()

    notes = keeper.notes
    assert not errors, errors[:5]
    assert len(notes) == THREADS * CALLS_PER_THREAD - refused  # one save per accepted call
    # every save is its call applied to the state the previous save left (no lost update)
    running, mode = False, "MAINTENANCE"
    for call, saved_running, saved_mode in notes:
        if call == "start":
            running = True
        elif call == "stop":
            running = False
        else:
            mode = call
        assert (saved_running, saved_mode) == (running, mode), (call, saved_running, saved_mode)
    assert (final_file["running"], final_file["mode"]) == last[1:]  # the file is the last call
    assert (scheduler.running, scheduler.mode.value) == last[1:]
    assert watch["unparsable"] == [] and watch["reads"] > 0
    assert watch["max_threads"] <= 1 and watch["samples"] > 0
    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]
    assert rows["half_written"] == 0 and rows["duplicated"] == 0
    report.record("concurrency", {
        "threads": THREADS, "calls": THREADS * CALLS_PER_THREAD, "refused_invalid_mode": refused,
        "saves": len(notes), "state_file_reads": watch["reads"], "unparsable_reads": len(watch["unparsable"]),
        "thread_samples": watch["samples"], "max_collector_threads": watch["max_threads"],
        "last_call": last[0], "final_file": {"running": final_file["running"], "mode": final_file["mode"]},
        "passes_started": len(runs), "articles_stored": rows["stored"], "half_written": rows["half_written"],
    })
