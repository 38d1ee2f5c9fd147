"""CollectorScheduler: threading, state saving, errors and the lease.

The threading tests inject a tiny fake `run_pass` (it walks "articles" and honours the
interrupt event like harvest does); everything else is real: the SQLite store, the state file
in tmp_path, the request budget. The integration tests at the end run the real harvest against
the in-process emulator.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from collector.config import InvalidMode, Mode, Settings
from collector.legifrance import LegifranceAuthError
from collector.models import PassSummary
from collector.ratelimit import RequestBudget
from collector.scheduler import THREAD_NAME, CollectorScheduler, CollectRefused, LeaseHeld, SchedulerOptions
from collector.state import DesiredState, StateFile, defaults_from_settings
from collector.clock import utcnow
from collector.status import StatusBoard
from collector.store.base import StoreError, StoreFatal
from collector.store.sqlite import SqliteStore

MAINT = ("LEGITEXT000099900001", "LEGITEXT000099900002")
MASSIVE = MAINT + ("LEGITEXT000099900003",)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def collector_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


class NullClient:
    """The fake run_pass never uses the client; the scheduler only creates and closes it."""

    closed = 0

    async def aclose(self) -> None:
        NullClient.closed += 1


@dataclass
class FakePasses:
    """A run_pass stand-in: `steps` articles of `step` s each, checking `interrupt` between
    articles (or ignoring it, like a request that hangs); records every call."""

    step: float = 0.02
    steps: int = 10**6
    honour_interrupt: bool = True
    error: BaseException | None = None
    calls: list[tuple[Mode, tuple[str, ...]]] = field(default_factory=list)
    results: list[PassSummary] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: int = 0
    max_active: int = 0

    async def __call__(self, mode: Mode, codes: Sequence[str], *, client: Any, store: Any,
                       status: StatusBoard, options: Any, interrupt: asyncio.Event) -> PassSummary:
        with self.lock:
            self.calls.append((mode, tuple(codes)))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.error is not None:
                raise self.error
            summary = PassSummary(mode=str(mode), codes=len(codes))
            for _ in range(self.steps):
                if interrupt.is_set() and self.honour_interrupt:
                    summary.interrupted = True
                    break
                await asyncio.sleep(self.step)
                summary.fetched += 1
            self.results.append(summary)
            return summary
        finally:
            with self.lock:
                self.active -= 1

    def modes(self) -> list[Mode]:
        with self.lock:
            return [m for m, _ in self.calls]


@dataclass
class Rig:
    settings: Settings
    store: SqliteStore
    status: StatusBoard
    keeper: DesiredState
    passes: FakePasses
    budget: RequestBudget
    made: list[CollectorScheduler] = field(default_factory=list)

    def scheduler(self, **options: Any) -> CollectorScheduler:
        run_pass = options.pop("run_pass", self.passes)
        timings = {f.name: options.pop(f.name) for f in fields(SchedulerOptions) if f.name in options}
        sched = CollectorScheduler(
            self.settings,
            state=options.pop("state", self.keeper),
            store=options.pop("store", self.store),
            status=options.pop("status", self.status),
            client_factory=options.pop("client_factory", lambda budget: NullClient()),
            budget=self.budget,
            run_pass=run_pass,
            options=SchedulerOptions(**timings),
            **options,
        )
        self.made.append(sched)
        return sched

    def saved(self) -> dict[str, Any] | None:
        path = self.settings.state_file
        return json.loads(path.read_text()) if path.exists() else None


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    base = Settings(
        state_file=tmp_path / "state" / "scheduler_state.json",
        db_path=tmp_path / "collector.sqlite3",
        maintenance_codes=MAINT,
        massive_codes=MASSIVE,
        maintenance_interval_minutes=120,
        massive_interval_minutes=10,
    )
    return replace(base, **changes)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    settings = make_settings(tmp_path)
    store = SqliteStore(settings.db_path)
    keeper = DesiredState(StateFile(settings.state_file, defaults_from_settings(settings)), store)
    budget = RequestBudget(15, 24_000, 280_000, 4, ledger=store)
    r = Rig(settings, store, StatusBoard(), keeper, FakePasses(), budget)
    yield r
    for sched in r.made:
        sched.shutdown(5)
    assert not collector_threads(), "a collector thread outlived its test"
    store.close()


# ---- start / stop -----------------------------------------------------------------------------
def test_start_stop_are_idempotent_and_saved_before_returning(rig: Rig) -> None:
    sched = rig.scheduler()
    sched.start()
    assert rig.saved()["running"] is True  # saved before start() returned
    sched.start()
    assert wait_until(lambda: len(rig.passes.calls) == 1)
    assert len(collector_threads()) == 1
    snap = sched.status()
    assert snap.running and snap.alive and snap.mode == "MAINTENANCE"
    assert snap.phase == "harvesting" and snap.state_saved

    sched.stop()
    assert rig.saved()["running"] is False
    sched.stop()
    assert sched.join(5)
    assert not collector_threads()
    assert rig.passes.results[-1].interrupted
    snap = sched.status()
    assert not snap.running and not snap.alive and snap.phase == "idle"
    assert rig.store.load_state()["running"] is False  # mirrored in the store too


def test_hammering_from_eight_threads_never_makes_two_collector_threads(rig: Rig) -> None:
    rig.passes.step = 0.005
    sched = rig.scheduler()
    seen_max = 0
    stop_watch = threading.Event()

    def watch() -> None:
        nonlocal seen_max
        while not stop_watch.wait(0.0005):
            seen_max = max(seen_max, len(collector_threads()))

    def hammer(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(15):
            action = rnd.choice(("start", "stop", "mode"))
            if action == "start":
                sched.start()
            elif action == "stop":
                sched.stop()
            else:
                sched.set_mode(rnd.choice((Mode.MASSIVE, Mode.MAINTENANCE)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=hammer, args=(seed,)) for seed in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    # the file holds the last call: the in-memory desired state set under the same lock
    saved = rig.saved()
    assert saved == {**saved, "running": sched.running, "mode": sched.mode.value}
    sched.set_mode(Mode.MASSIVE)
    sched.start()
    assert rig.saved()["running"] is True and rig.saved()["mode"] == "MASSIVE"
    assert wait_until(lambda: rig.passes.modes()[-1:] == [Mode.MASSIVE])
    sched.stop()
    assert sched.join(5)
    stop_watch.set()
    watcher.join()
    assert seen_max <= 1
    assert rig.passes.max_active <= 1
    assert rig.saved()["running"] is False and rig.saved()["mode"] == "MASSIVE"


def test_start_while_the_thread_is_stopping_reuses_or_replaces_it(rig: Rig) -> None:
    sched = rig.scheduler()
    for _ in range(20):
        sched.start()
        sched.stop()
        sched.start()
        assert len(collector_threads()) <= 1
    assert wait_until(lambda: sched.status().phase == "harvesting")
    assert len(collector_threads()) == 1
    assert rig.passes.max_active == 1


def test_stop_interrupts_a_pass_that_ignores_the_interrupt(rig: Rig) -> None:
    # A pass stuck in a request that never checks the event: cancelled after the grace period.
    rig.passes.honour_interrupt = False
    sched = rig.scheduler(interrupt_grace=0.5)
    sched.start()
    assert wait_until(lambda: len(rig.passes.calls) == 1)
    t0 = time.monotonic()
    sched.stop()
    assert sched.join(3.0), "stop did not take effect"  # contract: within 2 s (+ slack for a busy CI)
    assert time.monotonic() - t0 >= 0.4  # it waited for the pass to commit first
    assert rig.passes.active == 0


# ---- modes ------------------------------------------------------------------------------------
def test_mode_change_interrupts_the_pass_and_starts_the_new_mode_at_once(rig: Rig) -> None:
    sched = rig.scheduler()
    sched.start()
    assert wait_until(lambda: len(rig.passes.calls) == 1)
    sched.set_mode("MASSIVE")
    assert rig.saved()["mode"] == "MASSIVE"
    assert wait_until(lambda: len(rig.passes.calls) == 2, timeout=3.0)
    assert rig.passes.calls[0] == (Mode.MAINTENANCE, MAINT)
    assert rig.passes.calls[1] == (Mode.MASSIVE, MASSIVE)
    assert rig.passes.results[0].interrupted  # stopped between two "articles"
    assert sched.status().mode == "MASSIVE"


def test_mode_change_while_waiting_between_passes_runs_a_pass_at_once(rig: Rig) -> None:
    rig.passes.steps = 2
    sched = rig.scheduler()
    sched.start()
    assert wait_until(lambda: sched.status().phase == "waiting")
    snap = sched.status()
    assert snap.next_run_at is not None and snap.last_run_at is not None
    assert snap.next_run_at - snap.last_run_at >= timedelta(minutes=119)
    sched.set_mode(Mode.MASSIVE)
    assert wait_until(lambda: len(rig.passes.calls) == 2, timeout=3.0)
    assert rig.passes.calls[1][0] is Mode.MASSIVE
    assert wait_until(lambda: sched.status().phase == "waiting")
    snap = sched.status()
    assert timedelta(minutes=9) <= snap.next_run_at - snap.last_run_at <= timedelta(minutes=11)


def test_invalid_mode_raises_and_changes_nothing(rig: Rig) -> None:
    sched = rig.scheduler()
    sched.set_mode(Mode.MASSIVE)
    before = rig.settings.state_file.read_bytes()
    for bad in ("massive", "TURBO", "", None, 3):
        with pytest.raises(InvalidMode, match="expected one of"):
            sched.set_mode(bad)  # type: ignore[arg-type]
    assert sched.mode is Mode.MASSIVE
    assert rig.settings.state_file.read_bytes() == before


# ---- saving -----------------------------------------------------------------------------------
def test_state_save_failure_shows_in_status_and_the_action_still_happens(tmp_path: Path, rig: Rig) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    settings = replace(rig.settings, state_file=blocker / "state.json")
    keeper = DesiredState(StateFile(settings.state_file, defaults_from_settings(settings)), rig.store)
    sched = rig.scheduler(state=keeper)
    sched.start()
    snap = sched.status()
    assert snap.running and not snap.state_saved
    assert snap.state_error and "state.json" in snap.state_error
    assert wait_until(lambda: len(rig.passes.calls) == 1)  # it runs anyway
    sched.stop()
    assert sched.join(5)
    assert not sched.status().state_saved


def test_shutdown_keeps_the_saved_state_running_and_releases_the_lease(rig: Rig) -> None:
    sched = rig.scheduler()
    sched.set_mode(Mode.MASSIVE)
    sched.start()
    assert wait_until(lambda: len(rig.passes.calls) == 1)
    saved = rig.saved()
    assert sched.shutdown(timeout=10)
    assert not collector_threads()
    assert rig.saved() == saved and saved["running"] is True and saved["mode"] == "MASSIVE"
    assert rig.passes.results[-1].interrupted
    assert rig.store.acquire_lease("someone-else", 30).acquired  # released, not left to expire
    # resume in a "new process" picks the saved state up
    rig.store.release_lease("someone-else")
    again = rig.scheduler(status=StatusBoard())
    again.resume()
    assert wait_until(lambda: len(rig.passes.calls) == 2)
    assert rig.passes.calls[-1][0] is Mode.MASSIVE and again.status().running


def test_resume_with_no_saved_state_uses_the_env_defaults(tmp_path: Path, rig: Rig) -> None:
    sched = rig.scheduler()
    sched.resume()
    assert not sched.alive and not sched.running
    assert rig.saved() is None  # resume writes nothing

    settings = replace(rig.settings, enable_scheduler=True, default_mode=Mode.MASSIVE)
    keeper = DesiredState(StateFile(settings.state_file, defaults_from_settings(settings)), None)
    auto = CollectorScheduler(settings, state=keeper, store=rig.store, status=StatusBoard(),
                              client_factory=lambda b: NullClient(), budget=rig.budget, run_pass=rig.passes)
    rig.made.append(auto)
    auto.resume()
    assert wait_until(lambda: len(rig.passes.calls) == 1)
    assert rig.passes.calls[0][0] is Mode.MASSIVE


def test_reset_clears_the_state_and_applies_the_defaults(tmp_path: Path, rig: Rig) -> None:
    sched = rig.scheduler()
    sched.set_mode(Mode.MASSIVE)
    sched.start()
    assert wait_until(lambda: len(rig.passes.calls) == 1)
    sched.reset()  # ENABLE_SCHEDULER=false, SIPHONNAGE_MODE=MAINTENANCE
    assert rig.saved() is None
    assert sched.join(5)
    assert not sched.running and sched.mode is Mode.MAINTENANCE
    assert rig.keeper.load().source == "defaults"

    settings = replace(rig.settings, enable_scheduler=True)
    keeper = DesiredState(StateFile(settings.state_file, defaults_from_settings(settings)), rig.store)
    auto = rig.scheduler(state=keeper)
    auto.settings = settings
    auto.set_mode(Mode.MASSIVE)
    auto.reset()  # ENABLE_SCHEDULER=true: runs in the default mode, like a fresh process would
    assert rig.saved() is None
    assert wait_until(lambda: rig.passes.modes()[-1:] == [Mode.MAINTENANCE])
    assert auto.running and auto.alive


# ---- errors -----------------------------------------------------------------------------------
def test_auth_error_parks_the_thread_in_error_without_spinning(rig: Rig) -> None:
    rig.passes.error = LegifranceAuthError("credentials refused (401): check LEGIFRANCE_CLIENT_ID")
    sched = rig.scheduler(fatal_retry_seconds=60)
    sched.start()
    assert wait_until(lambda: sched.status().phase == "error")
    time.sleep(1.0)
    snap = sched.status()
    assert len(rig.passes.calls) == 1  # no retry loop
    assert snap.running and snap.alive
    assert "LegifranceAuthError" in (snap.last_error or "") and "credentials refused" in snap.last_error
    assert rig.saved()["running"] is True
    sched.start()  # a button press retries at once
    assert wait_until(lambda: len(rig.passes.calls) == 2, timeout=3)
    rig.passes.error = None
    sched.start()
    assert wait_until(lambda: sched.status().phase == "harvesting")
    sched.stop()
    assert sched.join(3)


def test_store_fatal_is_an_error_phase_too(rig: Rig) -> None:
    rig.passes.error = StoreFatal("table legifrance_articles missing")
    sched = rig.scheduler()
    sched.start()
    assert wait_until(lambda: sched.status().phase == "error")
    time.sleep(0.5)
    assert len(rig.passes.calls) == 1
    sched.stop()
    assert sched.join(3)  # the error wait is interruptible


def test_transient_errors_back_off(rig: Rig) -> None:
    rig.passes.error = StoreError("database is locked")
    sched = rig.scheduler(backoff=(0.2, 0.4))
    sched.start()
    time.sleep(1.5)
    calls = len(rig.passes.calls)
    assert 2 <= calls <= 6  # 0.2, 0.4, 0.4, ... not a tight loop
    assert "database is locked" in (sched.status().last_error or "")
    sched.stop()
    assert sched.join(3)


def test_errors_never_show_a_secret(rig: Rig) -> None:
    settings = replace(rig.settings, client_id="id", client_secret="s3cr3t-value-123")
    rig.passes.error = LegifranceAuthError("bad client s3cr3t-value-123")
    sched = rig.scheduler()
    sched.settings = settings
    sched.start()
    assert wait_until(lambda: sched.status().phase == "error")
    snap = sched.status()
    assert "s3cr3t-value-123" not in json.dumps(snap.to_dict(), default=str)
    assert "***" in (snap.last_error or "")


# ---- lease ------------------------------------------------------------------------------------
def test_standby_while_another_owner_holds_the_lease_then_takeover(rig: Rig) -> None:
    held = rig.store.acquire_lease("other-host:42:20261128T120000Z", ttl_seconds=1.5)
    assert held.acquired
    sched = rig.scheduler(lease_renew_every=5.0)
    sched.start()
    assert wait_until(lambda: sched.status().phase == "standby")
    snap = sched.status()
    assert "standby: collector held by other-host:42:20261128T120000Z until" in (snap.detail or "")
    assert rig.passes.calls == []
    assert wait_until(lambda: len(rig.passes.calls) == 1, timeout=6)  # lease expired: taken over
    assert sched.status().phase == "harvesting"


def test_two_schedulers_on_one_sqlite_file(tmp_path: Path, rig: Rig) -> None:
    other_store = SqliteStore(rig.settings.db_path)  # a second "process" on the same file
    try:
        other_passes = FakePasses()
        other_state = DesiredState(StateFile(tmp_path / "b" / "state.json", defaults_from_settings(rig.settings)),
                                   other_store)
        a = rig.scheduler(owner="host-a:1:t", lease_ttl=2.0, lease_renew_every=0.3)
        b = rig.scheduler(owner="host-b:2:t", state=other_state, store=other_store, status=StatusBoard(),
                          run_pass=other_passes, lease_ttl=2.0, lease_renew_every=0.3)
        a.start()
        assert wait_until(lambda: len(rig.passes.calls) == 1)
        b.start()
        assert wait_until(lambda: b.status().phase == "standby")
        assert "held by host-a:1:t" in (b.status().detail or "")
        time.sleep(1.0)  # a keeps renewing: b stays in standby
        assert other_passes.calls == [] and b.status().phase == "standby"

        # a's process exits (a STOP would stop b too: the desired state is shared through the
        # store): the lease is released and b takes over within one renewal period.
        assert a.shutdown(3)
        assert wait_until(lambda: len(other_passes.calls) == 1, timeout=3)

        # The lease is stolen under b's feet: the renewal sees it and b goes to standby.
        with sqlite3.connect(rig.settings.db_path) as conn:
            until = (utcnow() + timedelta(seconds=30)).isoformat()
            conn.execute("UPDATE collector_lease SET owner = 'thief:9:t', expires_at = ?", (until,))
        assert wait_until(lambda: b.status().phase == "standby", timeout=3)
        assert other_passes.results[-1].interrupted
        assert "held by thief:9:t" in (b.status().detail or "")
        b.stop()
        assert b.join(3)
    finally:
        for s in rig.made:
            s.shutdown(5)
        other_store.close()


# ---- several instances on one store: controls reach the one holding the lease ---------------------
@dataclass
class Instance:
    """A second "process" on the same SQLite file: its own store handle, state file (its own
    /tmp), keeper with its own pid/host, status board and passes."""

    scheduler: CollectorScheduler
    store: SqliteStore
    keeper: DesiredState
    passes: FakePasses
    state_file: Path

    def saved(self) -> dict[str, Any] | None:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else None


FAST_LEASE = {"lease_ttl": 1.5, "lease_renew_every": 0.5}  # renewals (and state checks) every 0.5 s
FOLLOW_WITHIN = 15.0


@pytest.fixture
def instances(tmp_path: Path, rig: Rig) -> Iterator[Callable[[str, int], Instance]]:
    opened: list[SqliteStore] = []

    def make(host: str, pid: int) -> Instance:
        store = SqliteStore(rig.settings.db_path)
        opened.append(store)
        state_file = tmp_path / host / "scheduler_state.json"
        keeper = DesiredState(StateFile(state_file, defaults_from_settings(rig.settings)), store, pid=pid, host=host)
        passes = FakePasses()
        sched = rig.scheduler(owner=f"{host}:{pid}:t", state=keeper, store=store, status=StatusBoard(),
                              run_pass=passes, **FAST_LEASE)
        return Instance(sched, store, keeper, passes, state_file)

    yield make
    for sched in rig.made:
        sched.shutdown(5)
    for store in opened:
        store.close()


def changes_by_others(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "desired state changed by another instance"]


def holder_and_standby(make: Callable[[str, int], Instance]) -> tuple[Instance, Instance]:
    a, b = make("instance-a", 1111), make("instance-b", 2222)
    a.scheduler.start()
    assert wait_until(lambda: len(a.passes.calls) == 1)
    b.scheduler.start()
    assert wait_until(lambda: b.scheduler.status().phase == "standby")
    return a, b


def test_stop_pressed_on_the_standby_stops_the_holder(rig: Rig, instances: Callable[[str, int], Instance]) -> None:
    a, b = holder_and_standby(instances)
    with capture_logs() as logs:
        b.scheduler.stop()
        pressed = rig.store.load_state()
        assert b.scheduler.join(3)
        assert wait_until(lambda: not a.scheduler.running, timeout=FOLLOW_WITHIN), "the holder did not follow"
        assert a.scheduler.join(5)
    assert a.passes.results[-1].interrupted and b.passes.calls == []
    assert rig.store.acquire_lease("someone-else", 30).acquired  # released, not left to expire
    (change,) = changes_by_others(logs)
    assert (change["host"], change["pid"], change["running"], change["was_running"]) == ("instance-b", 2222, False, True)
    # Both local copies say stopped (a restart of either agrees); the store was not written back.
    assert a.saved() == b.saved() == pressed and pressed["running"] is False
    assert rig.store.load_state() == pressed
    assert not a.scheduler.status().running


def test_mode_change_pressed_on_the_standby_switches_the_holder(
    rig: Rig, instances: Callable[[str, int], Instance]
) -> None:
    a, b = holder_and_standby(instances)
    b.scheduler.set_mode(Mode.MASSIVE)
    pressed = rig.store.load_state()
    assert wait_until(lambda: a.passes.modes()[-1:] == [Mode.MASSIVE], timeout=FOLLOW_WITHIN)
    assert a.passes.results[0].interrupted  # interrupted between two "articles", like set_mode()
    assert a.scheduler.alive and a.scheduler.running and a.scheduler.status().mode == "MASSIVE"
    assert a.saved() == pressed and rig.store.load_state() == pressed
    assert b.scheduler.status().phase == "standby" and b.passes.calls == []

    a.scheduler.set_mode(Mode.MAINTENANCE)  # and back, pressed on the holder: the standby follows
    # in memory, then in its file (the same refresh writes it just after: wait for both)
    assert wait_until(lambda: b.scheduler.mode is Mode.MAINTENANCE and (b.saved() or {}).get("mode") == "MAINTENANCE",
                      timeout=FOLLOW_WITHIN)
    assert b.saved()["host"] == "instance-a"


def test_stop_pressed_on_the_holder_stops_the_standby_instead_of_a_takeover(
    rig: Rig, instances: Callable[[str, int], Instance]
) -> None:
    a, b = holder_and_standby(instances)
    a.scheduler.stop()
    assert a.scheduler.join(3)
    assert wait_until(lambda: not b.scheduler.alive, timeout=FOLLOW_WITHIN), "the standby took over"
    assert not b.scheduler.running and b.saved()["running"] is False
    assert len(b.passes.calls) <= 1  # it may have grabbed the lease in the instant before it read the stop
    assert rig.store.acquire_lease("someone-else", 30).acquired


def test_reset_pressed_elsewhere_applies_this_instances_defaults(
    rig: Rig, instances: Callable[[str, int], Instance]
) -> None:
    a, b = holder_and_standby(instances)
    a.scheduler.set_mode(Mode.MASSIVE)
    b.scheduler.reset()  # ENABLE_SCHEDULER=false, SIPHONNAGE_MODE=MAINTENANCE
    assert wait_until(lambda: not a.scheduler.alive, timeout=FOLLOW_WITHIN)
    assert (a.scheduler.running, a.scheduler.mode) == (False, Mode.MAINTENANCE)
    assert a.saved() is None and a.keeper.load().source == "defaults"  # a restart agrees


def test_own_saves_do_not_echo(rig: Rig, instances: Callable[[str, int], Instance]) -> None:
    a = instances("instance-a", 1111)
    with capture_logs() as logs:
        a.scheduler.start()
        for mode in (Mode.MASSIVE, Mode.MAINTENANCE, Mode.MASSIVE):
            a.scheduler.set_mode(mode)
        saved = a.saved()
        time.sleep(4 * FAST_LEASE["lease_renew_every"])  # several state checks
    assert changes_by_others(logs) == []
    assert a.saved() == saved == rig.store.load_state()
    assert a.scheduler.running and a.passes.modes()[-1] is Mode.MASSIVE


def test_an_unreadable_state_record_warns_once_a_minute_and_the_collector_goes_on(
    rig: Rig, instances: Callable[[str, int], Instance]
) -> None:
    class Flaky(SqliteStore):
        failing = False

        def load_state(self) -> dict[str, Any] | None:
            if self.failing:
                raise StoreError("database is locked")
            return super().load_state()

    store = Flaky(rig.settings.db_path)
    keeper = DesiredState(StateFile(rig.settings.state_file, defaults_from_settings(rig.settings)), store)
    sched = rig.scheduler(state=keeper, store=store, lease_ttl=1.5, lease_renew_every=0.1)
    try:
        sched.start()
        assert wait_until(lambda: len(rig.passes.calls) == 1)
        with capture_logs() as logs:
            store.failing = True
            time.sleep(1.5)  # ~15 checks
            store.failing = False
        warnings = [e for e in logs if e["event"].startswith("store state record unreadable")]
        assert [e["log_level"] for e in warnings].count("warning") == 1
        assert "database is locked" in warnings[0]["error"]
        assert sched.alive and sched.status().phase == "harvesting" and len(rig.passes.calls) == 1
        sched.stop()
        assert sched.join(3)
    finally:
        sched.shutdown(5)
        store.close()


def test_run_once_refuses_when_the_lease_is_held(rig: Rig) -> None:
    rig.store.acquire_lease("other-host:1:t", ttl_seconds=30)
    sched = rig.scheduler()
    with pytest.raises(LeaseHeld, match="other-host:1:t"):
        asyncio.run(sched.run_once(Mode.MAINTENANCE))
    assert rig.passes.calls == []


def test_run_once_runs_one_pass_and_releases_the_lease(rig: Rig) -> None:
    rig.passes.steps = 3
    sched = rig.scheduler()
    summary = asyncio.run(sched.run_once(Mode.MASSIVE))
    assert summary.codes == len(MASSIVE) and not summary.interrupted
    assert rig.passes.calls == [(Mode.MASSIVE, MASSIVE)]
    assert rig.store.acquire_lease("someone-else", 30).acquired
    assert not collector_threads()


# ---- status -----------------------------------------------------------------------------------
def test_status_publishes_budget_and_store_counters(rig: Rig) -> None:
    sched = rig.scheduler(counters_every=0.2, publish_every=0.1)
    snap = sched.status()
    assert snap.budget["hour_limit"] == 24_000 and snap.stored_total == 0
    assert not snap.throughput and snap.store_error is None, "no sample while no collector runs"
    sched.start()
    assert wait_until(lambda: sched.status().budget.get("max_in_flight") == 4)
    assert wait_until(lambda: sched.status().throughput)  # counter samples for the page's chart


# ---- real harvest against the in-process emulator ----------------------------------------------
@dataclass
class Live:
    scheduler: CollectorScheduler
    demo: Any  # DemoServer
    store: SqliteStore
    budget: RequestBudget


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Callable[..., Live]]:
    from collector.demo import DEMO_MAINTENANCE_CODES, DEMO_MASSIVE_CODES, DemoConfig, demo_transport
    from collector.legifrance import LegifranceClient

    made: list[tuple[CollectorScheduler, SqliteStore]] = []

    def build(*, latency_ms: float = 0.0, per_second: int = 200, per_hour: int = 24_000,
              max_in_flight: int = 4) -> Live:
        settings = make_settings(tmp_path, maintenance_codes=DEMO_MAINTENANCE_CODES,
                                 massive_codes=DEMO_MASSIVE_CODES, max_in_flight=max_in_flight)
        store = SqliteStore(settings.db_path)
        transport = demo_transport(DemoConfig(latency_ms=latency_ms))
        budget = RequestBudget(per_second, per_hour, 280_000, max_in_flight, ledger=store)
        sched = CollectorScheduler(
            settings,
            state=DesiredState(StateFile(settings.state_file, defaults_from_settings(settings)), store),
            store=store,
            status=StatusBoard(),
            client_factory=lambda b: LegifranceClient.from_settings(settings, b, transport=transport),
            budget=budget,
        )
        made.append((sched, store))
        return Live(sched, transport.server, store, budget)

    yield build
    for sched, store in made:
        sched.shutdown(5)
        store.close()
    assert not collector_threads()


def test_live_pass_stores_articles_and_publishes_counters(live: Callable[..., Live]) -> None:
    rt = live()
    rt.scheduler.options = replace(rt.scheduler.options, counters_every=0.2)  # sooner than in production
    rt.scheduler.start()
    assert wait_until(lambda: rt.scheduler.status().phase == "waiting", timeout=60)
    snap = rt.scheduler.status()
    assert rt.store.count_articles() > 0
    assert wait_until(lambda: rt.scheduler.status().stored_total == rt.store.count_articles(), timeout=5)
    run = rt.store.last_runs(1)[0]
    assert run["mode"] == "MAINTENANCE" and run["summary"]["stored"] == rt.store.count_articles()
    assert snap.budget["hour_used"] >= run["summary"]["requests"]
    assert snap.next_run_at is not None


def test_live_stop_during_a_slow_request(live: Callable[..., Live]) -> None:
    rt = live(latency_ms=20_000)  # every API request takes 20 s
    rt.scheduler.start()
    assert wait_until(lambda: rt.budget.snapshot().in_flight >= 1, timeout=10)
    time.sleep(0.2)
    t0 = time.monotonic()
    rt.scheduler.stop()
    assert rt.scheduler.join(3.0), "stop did not take effect"  # contract 2 s, + slack for CI
    assert time.monotonic() - t0 < 3.0
    assert rt.scheduler.status().phase == "idle"
    assert rt.store.acquire_lease("next-owner", 30).acquired  # lease released on the way out


def test_live_stop_during_a_budget_wait(live: Callable[..., Live]) -> None:
    rt = live(per_hour=5)  # spent after 5 requests: the pass waits for the next UTC hour
    rt.scheduler.options = replace(rt.scheduler.options, publish_every=0.1)
    rt.scheduler.start()
    assert wait_until(lambda: rt.scheduler.status().phase == "waiting for budget", timeout=15)
    snap = rt.scheduler.status()
    assert "hour budget" in (snap.detail or "") and snap.budget["waiting_for"] == "hour"
    rt.scheduler.stop()
    assert rt.scheduler.join(3.0)
    # what was fetched before the wait is committed
    assert rt.store.count_articles() + rt.store.count_rejected() >= 1


def test_live_mode_change_takes_effect_between_articles(live: Callable[..., Live]) -> None:
    from collector.demo import DEMO_MASSIVE_CODES

    rt = live(latency_ms=40, max_in_flight=2)
    rt.scheduler.start()
    assert wait_until(lambda: rt.scheduler.status().pass_stored + rt.store.count_articles() > 0, timeout=30)
    rt.scheduler.set_mode(Mode.MASSIVE)
    t0 = time.monotonic()
    assert wait_until(lambda: rt.store.last_runs(1)[0]["mode"] == "MASSIVE", timeout=5)
    assert time.monotonic() - t0 < 3.0  # not at the end of the pass (it has ~150 articles left)
    first = rt.store.last_runs(2)[1]
    assert first["mode"] == "MAINTENANCE" and first["summary"]["interrupted"] is True
    assert rt.store.count_articles() >= first["summary"]["stored"] > 0  # its batch was committed
    assert rt.store.last_runs(1)[0]["codes"] == list(DEMO_MASSIVE_CODES)
    rt.scheduler.stop()
    assert rt.scheduler.join(3.0)


# ---- collect one code now (collect_code) --------------------------------------------------------
EXTRA = "LEGITEXT000099900004"  # a demo code in neither list of these settings' MAINTENANCE pass


def codes_stored(store: SqliteStore) -> dict[str, int]:
    with sqlite3.connect(store.path) as conn:
        return dict(conn.execute("SELECT code_id, count(*) FROM legifrance_articles GROUP BY code_id"))


def test_collect_code_while_stopped_runs_one_short_lived_pass(live: Callable[..., Live]) -> None:
    rt = live()
    sched = rt.scheduler
    sched.collect_code(EXTRA)
    assert wait_until(lambda: rt.store.last_runs(1) and rt.store.last_runs(1)[0]["finished_at"] is not None,
                      timeout=60)
    assert sched.join(5), "the short-lived thread ended after its pass"
    run = rt.store.last_runs(1)[0]
    assert run["codes"] == [EXTRA] and run["summary"]["stored"] > 0 and run["summary"]["codes_failed"] == 0
    assert set(codes_stored(rt.store)) == {EXTRA}
    assert not sched.settings.state_file.exists(), "the desired state was not saved"
    snap = sched.status()
    assert not snap.running and not snap.alive and snap.phase == "idle" and snap.queued_codes == []
    assert rt.store.acquire_lease("next-owner", 30).acquired  # released on the way out


def test_collect_code_while_running_waits_for_the_pass_and_keeps_the_schedule(
        live: Callable[..., Live]) -> None:
    rt = live()
    sched = rt.scheduler
    sched.start()
    assert wait_until(lambda: sched.status().phase == "waiting", timeout=60)
    next_run = sched.status().next_run_at
    saved = json.loads(sched.settings.state_file.read_text())
    sched.collect_code(EXTRA)
    assert wait_until(lambda: EXTRA in codes_stored(rt.store), timeout=60)
    assert wait_until(lambda: sched.status().phase == "waiting", timeout=30)
    snap = sched.status()
    assert snap.alive and snap.running and snap.mode == "MAINTENANCE"
    assert abs((snap.next_run_at - next_run).total_seconds()) < 2, "the MAINTENANCE schedule stands"
    assert json.loads(sched.settings.state_file.read_text()) == saved
    runs = rt.store.last_runs(2)
    assert runs[0]["codes"] == [EXTRA] and runs[1]["mode"] == "MAINTENANCE"


def test_collect_code_is_refused_with_a_reason(live: Callable[..., Live]) -> None:
    rt = live()
    sched = rt.scheduler
    for bad in ("LEGITEXT0000999", "legitext000099900004", "LEGIARTI000006812345", ""):
        with pytest.raises(CollectRefused, match="not a LEGITEXT code id"):
            sched.collect_code(bad)
    held = rt.store.acquire_lease("render-old:7:20261128T120000Z", 30)
    assert held.acquired
    with pytest.raises(CollectRefused, match="render-old:7:20261128T120000Z"):
        sched.collect_code(EXTRA)
    rt.store.release_lease("render-old:7:20261128T120000Z")
    sched.set_mode(Mode.MASSIVE)
    sched.start()
    with pytest.raises(CollectRefused, match="MASSIVE pass is on"):
        sched.collect_code(EXTRA)
    sched.stop()
    assert sched.join(5)
    assert sched.queued_codes == () and rt.store.last_runs(1) == []


def test_stop_interrupts_an_extra_pass(live: Callable[..., Live]) -> None:
    rt = live(latency_ms=20_000)  # every request takes 20 s
    sched = rt.scheduler
    sched.collect_code(EXTRA)
    assert wait_until(lambda: rt.budget.snapshot().in_flight >= 1, timeout=10)
    assert sched.status().phase == "harvesting" and "extra pass over" in (sched.status().detail or "")
    t0 = time.monotonic()
    sched.stop()
    assert sched.join(3.0) and time.monotonic() - t0 < 3.0
    assert json.loads(sched.settings.state_file.read_text())["running"] is False


def test_collect_code_waits_for_the_pass_in_progress_without_interrupting_it(rig: Rig) -> None:
    rig.passes.steps = 25  # a MAINTENANCE pass of about 0.5 s
    sched = rig.scheduler()
    sched.start()
    assert wait_until(lambda: len(rig.passes.calls) == 1)
    saved = rig.saved()
    sched.collect_code(EXTRA)
    sched.collect_code(EXTRA)  # asked twice while waiting: one walk
    assert sched.queued_codes == (EXTRA,) and sched.status().queued_codes == [EXTRA]
    assert wait_until(lambda: len(rig.passes.calls) == 2)
    assert rig.passes.calls == [(Mode.MAINTENANCE, MAINT), (Mode.MASSIVE, (EXTRA,))]
    assert wait_until(lambda: len(rig.passes.results) == 2)
    assert not rig.passes.results[0].interrupted and not rig.passes.results[1].interrupted
    assert wait_until(lambda: sched.status().phase == "waiting")
    assert rig.saved() == saved and sched.queued_codes == ()
    assert len(rig.passes.calls) == 2, "the MAINTENANCE schedule stands: no pass before its interval"


def test_collect_code_is_refused_when_the_source_is_the_dumps(tmp_path: Path) -> None:
    """A dump pass applies whole archives: one code cannot be collected on its own."""
    settings = make_settings(tmp_path, source="dumps")
    store = SqliteStore(settings.db_path)
    try:
        sched = CollectorScheduler(
            settings,
            state=DesiredState(StateFile(settings.state_file, defaults_from_settings(settings)), store),
            store=store, status=StatusBoard(), client_factory=lambda b: None,  # type: ignore[arg-type, return-value]
            budget=RequestBudget(10, 100, 1000, 1, ledger=store),
        )
        with pytest.raises(CollectRefused, match="COLLECTOR_SOURCE=dumps"):
            sched.collect_code("LEGITEXT000099900001")
        assert sched.queued_codes == () and not sched.alive
    finally:
        store.close()
