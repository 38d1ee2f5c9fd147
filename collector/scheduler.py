"""CollectorScheduler: the one collector thread, its store lease and its passes.

The thread runs one asyncio loop for its life (APScheduler's shape): each turn does what is
due (publish the status; the lease tick: renew the lease and refresh the desired state from the
store; collect a finished pass; start the next one or wait in standby) and then waits on ONE
event until the next deadline. The event is set by control calls from other threads (through
`loop.call_soon_threadsafe`), by a pass ending and by a lost lease. A pass runs as a task with
an `interrupt` event: it stops between two articles, and is cancelled if it has not returned
`interrupt_grace` s after the interrupt. `run_once` runs the same loop for one pass in the
caller's event loop.

The desired state {running, mode} belongs to the DesiredState. Control calls change it under
the scheduler's lock, which also guards the thread handle: the thread makes its exit decision
under that lock, so a start() racing with a finishing thread makes that thread go on, and there
is never more than one collector thread.

Several instances on one store (a deploy overlap, two servers on one SQLite file): the lease
lets one harvest. Every tick, and before each attempt to take the lease, the desired state is
refreshed from the store row, so START, STOP, a mode change or a Reset pressed on any instance
reaches the others within a tick. An instance without a thread refreshes when its status is
read (the page, the routes), at most once a tick, and starts when the row says running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from collector import harvest
from collector.clock import utcnow
from collector.config import Mode, Settings, parse_mode
from collector.harvest import HarvestOptions
from collector.legifrance import LegifranceAuthError, LegifranceClient
from collector.models import PassSummary
from collector.ratelimit import RequestBudget
from collector.retry import backoff_delay
from collector.state import DesiredState, StateSaveError
from collector.status import StatusBoard, StatusSnapshot
from collector.store.base import Lease, Store, StoreFatal

THREAD_NAME = "legifrance-collector"
log = structlog.get_logger("collector.scheduler")

FATAL_ERRORS: tuple[type[BaseException], ...] = (LegifranceAuthError, StoreFatal)


class RunPass(Protocol):
    """The signature of `harvest.run_pass` (injectable for tests)."""

    def __call__(self, mode: Mode, codes: Sequence[str], *, client: LegifranceClient, store: Store,
                 status: StatusBoard, options: HarvestOptions, interrupt: asyncio.Event) -> Awaitable[PassSummary]: ...


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    """The collector thread's timings, in seconds.

    - `lease_ttl`: how long the store lease lasts unrenewed (a killed collector blocks its
      successor this long); `lease_renew_every`: the tick (lease renewal, desired-state refresh,
      standby retries);
    - `interrupt_grace`: how long an interrupted pass may take to commit and return before it
      is cancelled;
    - `fatal_retry_seconds`: the wait after an auth or permanent store error (Start retries at
      once); `backoff`: (first, longest) wait after a transient error, doubled each time;
    - `counters_every`: how often the store counters are read; `publish_every`: how often the
      budget is published into the status board.
    """

    lease_ttl: float = 30.0
    lease_renew_every: float = 10.0
    interrupt_grace: float = 1.5
    fatal_retry_seconds: float = 60.0
    backoff: tuple[float, float] = (5.0, 300.0)
    counters_every: float = 5.0
    publish_every: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> SchedulerOptions:
        """COLLECTOR_LEASE_TTL_SECONDS as the lease, renewed three times per lease; `changes` win."""
        ttl = settings.lease_ttl_seconds
        return cls(**{"lease_ttl": ttl, "lease_renew_every": ttl / 3, **changes})


class LeaseHeld(RuntimeError):
    """Another collector holds the store lease (raised by `run_once`)."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(f"another collector holds the store lease: {lease.owner} until "
                         f"{_hms(lease.expires_at)}; stop it or wait for its lease to expire")
        self.lease = lease


def default_owner(started: datetime | None = None) -> str:
    """`host:pid:start time`, unique per scheduler even within one process."""
    return f"{socket.gethostname()}:{os.getpid()}:{started or utcnow():%Y%m%dT%H%M%S.%fZ}"


def _hms(moment: datetime) -> str:
    return f"{moment:%H:%M:%S} UTC"


@dataclass
class _Pass:
    """The pass in flight: its task, its interrupt event and when it is cancelled (loop time)."""

    mode: Mode
    codes: tuple[str, ...]
    task: asyncio.Task[PassSummary]
    interrupt: asyncio.Event
    cancel_at: float | None = None


class CollectorScheduler:
    """One background collector thread per process, controlled from any thread.

    `settings` give the codes, intervals and secrets; `state` owns the desired state; `store`
    holds the lease and the counters; `status` is the board the page reads; `client_factory`
    makes the Légifrance client (one per thread life) from `budget`; `owner` names this
    collector in the lease (default `host:pid:start`); `clock` gives aware UTC datetimes;
    `run_pass` runs one pass (harvest.run_pass); `options` are the timings.
    """

    def __init__(self, settings: Settings, *, state: DesiredState, store: Store, status: StatusBoard,
                 client_factory: Callable[[RequestBudget], LegifranceClient], budget: RequestBudget,
                 options: SchedulerOptions | None = None, owner: str | None = None,
                 clock: Callable[[], datetime] = utcnow, run_pass: RunPass = harvest.run_pass) -> None:
        self.settings = settings
        self.options = options or SchedulerOptions()
        self._state = state
        self._store = store
        self._status = status
        self._client_factory = client_factory
        self._budget = budget
        self._clock = clock
        self._run_pass = run_pass
        self.owner = owner or default_owner(clock())

        self._lock = threading.Lock()  # guards the thread handle and serialises control calls
        self._shutdown = False
        self._thread: threading.Thread | None = None  # None once the thread decided to exit
        self._last_thread: threading.Thread | None = None
        self._on_fatal: Callable[[BaseException], None] | None = None
        self._counters_lock = threading.Lock()
        self._counters_at: datetime | None = None
        self._followed_at: datetime | None = None  # last refresh made by status() without a thread
        self._before_stop: tuple[str, str | None] | None = None  # phase shown before "stopping"
        # Owned by the running loop (the thread's, or run_once's caller's):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._reset_loop_state(None, None)

    def _reset_loop_state(self, once: Mode | None, interrupt: asyncio.Event | None) -> None:
        self._once = once  # run_once's mode: one pass, errors raised, desired state not followed
        self._interrupt = interrupt  # run_once's caller's event (SIGTERM)
        self._watcher: asyncio.Task[Any] | None = None  # wakes the loop when `interrupt` is set
        self._result: PassSummary | None = None  # run_once's summary
        self._client: LegifranceClient | None = None
        self._pass: _Pass | None = None
        self._lease_expires: datetime | None = None  # set while this collector holds the lease
        self._lease_lost = False
        self._next_at = 0.0  # loop time the next pass (or lease attempt) is due
        self._early: Callable[[], bool] | None = None  # makes it due sooner (mode change, Start)
        self._poked = False  # a control call woke the loop
        self._failures = 0  # transient errors in a row
        self._publish_at = self._tick_at = 0.0

    # ---- control (any thread) -------------------------------------------------------------
    def start(self) -> None:
        """Desire running, save it, make sure the thread runs (idempotent)."""
        with self._lock:
            self._save(running=True)
            self._ensure_thread_locked()

    def stop(self) -> None:
        """Desire stopped, save it; the thread commits what it fetched and ends (idempotent)."""
        with self._lock:
            self._save(running=False)
            self._notify_locked()

    def set_mode(self, mode: Mode | str) -> None:
        """Switch mode (InvalidMode on a bad value, nothing changed); a pass in the old mode
        is interrupted between two articles and a pass in the new mode starts at once."""
        new = parse_mode(mode)
        with self._lock:
            self._save(mode=new)
            self._notify_locked()

    def reset(self) -> None:
        """Back to the environment defaults (ENABLE_SCHEDULER, SIPHONNAGE_MODE), as a fresh
        process with no saved state would be: running in the default mode, or stopped."""
        with self._lock:
            with contextlib.suppress(StateSaveError):  # logged, and shown by status()
                self._state.reset()
            if self._state.running:
                self._ensure_thread_locked()
            else:
                self._notify_locked()

    def _save(self, **change: Any) -> None:
        with contextlib.suppress(StateSaveError):  # the change holds in memory; status() shows why
            self._state.save(**change)

    def resume(self) -> None:
        """Load the saved desired state and start if it says running."""
        if self.load():
            self.start_thread()

    def start_thread(self) -> None:
        """Start the thread for the current desired state without saving it (resume)."""
        with self._lock:
            if self._state.running:
                self._ensure_thread_locked()

    def load(self) -> bool:
        """Load the saved desired state (the newer of the file and the store row) without
        starting anything; its `running`."""
        return self._state.load().state.running

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Process exit: stop the thread (committing the batch in flight, releasing the lease,
        flushing the budget ledger) WITHOUT changing the saved desired state. Final: later
        start() calls only save the desired state. True when the thread ended."""
        with self._lock:
            self._shutdown = True
            thread = self._thread or self._last_thread
            self._notify_locked()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("collector thread did not stop in time", timeout=timeout)
                return False
        log.info("scheduler shut down", running=self.running, mode=str(self.mode))
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the collector thread to end; True when no thread is alive."""
        thread = self._thread or self._last_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def on_fatal(self, callback: Callable[[BaseException], None] | None) -> None:
        """Call `callback(exc)` from the thread on an auth / store fatal error (the CLI exits)."""
        self._on_fatal = callback

    # ---- status (any thread) --------------------------------------------------------------
    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def running(self) -> bool:
        return self._state.running

    @property
    def mode(self) -> Mode:
        return self._state.mode

    def status(self) -> StatusSnapshot:
        """A copy of the live status plus the desired state. Without a thread, the budget, the
        store counters (every `counters_every` s) and the desired state (every tick) are read
        here; a START saved by another instance starts the thread."""
        alive = self.alive
        if not alive:
            self._publish_budget()
            self._refresh_counters()
            self._follow_while_stopped()
        snap = self._status.snapshot()
        snap.running, snap.mode, snap.alive = self._state.running, self._state.mode.value, alive
        snap.state_saved, snap.state_error = self._state.saved, self._state.error
        return snap

    def _follow_while_stopped(self) -> None:
        now = self._clock()
        if self._shutdown or (self._followed_at is not None and
                              (now - self._followed_at).total_seconds() < self.options.lease_renew_every):
            return
        self._followed_at = now
        if self._state.refresh() is not None:
            self.start_thread()

    # ---- thread -----------------------------------------------------------------------------
    def _wanted(self) -> bool:
        return self._state.running and not self._shutdown

    def _ensure_thread_locked(self) -> None:
        if self._shutdown:
            log.warning("scheduler is shut down; the desired state is saved but no thread starts")
            return
        if self._thread is not None:  # alive and not exiting: it will see the new state
            self._notify_locked()
            return
        if self._last_thread is not None:
            self._last_thread.join()  # it has already decided to exit under this lock
        thread = threading.Thread(target=self._thread_main, name=THREAD_NAME, daemon=True)
        self._thread = self._last_thread = thread
        thread.start()

    def _notify_locked(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closing: the thread re-checks under the lock
                loop.call_soon_threadsafe(self._poke)

    def _thread_main(self) -> None:
        while True:
            try:
                asyncio.run(self._main())
            except Exception as exc:  # noqa: BLE001 - a bug; do not restart in a tight loop
                log.exception("collector thread crashed")
                self._status.error(f"collector thread crashed: {self._describe(exc)}")
                self._set(phase="error", detail="collector thread crashed; press Start to retry")
                with self._lock:
                    self._thread = self._loop = self._wake = None
                    return
            with self._lock:
                if self._wanted():  # started again while it was stopping: go on in this thread
                    continue
                self._thread = None
                return

    async def _main(self) -> None:
        self._enter(None)
        log.info("collector thread started", owner=self.owner, mode=str(self.mode))
        try:
            await self._serve()
        finally:
            await self._leave()
            log.info("collector thread stopped", running=self.running, mode=str(self.mode))

    async def run_once(self, mode: Mode | None = None, *, interrupt: asyncio.Event | None = None) -> PassSummary:
        """One pass in the current event loop, holding the lease (LeaseHeld if another
        collector holds it). Setting `interrupt` (SIGTERM) stops it between two articles."""
        if self.alive:
            raise RuntimeError("the collector thread is running; run_once needs it stopped")
        self._enter(mode or self.mode, interrupt or asyncio.Event())
        try:
            summary = await self._serve()
            assert summary is not None
            return summary
        finally:
            await self._leave()

    def _enter(self, once: Mode | None, interrupt: asyncio.Event | None = None) -> None:
        self._reset_loop_state(once, interrupt)
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
        self._tick_at = self._now() + self.options.lease_renew_every  # a lease attempt refreshes first
        if interrupt is not None:  # the caller's interrupt (SIGTERM) wakes the loop too
            self._watcher = asyncio.create_task(interrupt.wait())
            self._watcher.add_done_callback(lambda _: self._wake.set() if self._wake else None)

    async def _leave(self) -> None:
        """Whatever ended the loop: the pass is cancelled if still running, the client closed,
        the lease released and the budget ledger flushed."""
        self._set(phase="stopping", detail="stopping: closing the client")
        if self._watcher is not None:
            self._watcher.cancel()
        if self._pass is not None and not self._pass.task.done():
            self._pass.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pass.task
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception as exc:  # noqa: BLE001
                log.warning("client close failed", error=self._describe(exc))
        await self._release_lease()
        try:
            await self._budget.flush()
        except Exception as exc:  # noqa: BLE001
            log.warning("budget ledger flush failed", error=self._describe(exc))
        with self._lock:
            self._loop = self._wake = None
        self._publish_budget()
        self._before_stop = None
        self._set(phase="idle", detail=None, current_code=None, next_run_at=None)

    # ---- the loop ---------------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _serve(self) -> PassSummary | None:
        """Turn until done (thread: no longer wanted; run_once: its pass returned)."""
        wake = self._wake
        assert wake is not None
        while True:
            wake.clear()  # before the turn: a wake during it makes the wait below return at once
            wait = await self._turn()
            if wait is None:
                return self._result
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: it can swallow a cancel on 3.11
                    await wake.wait()

    async def _turn(self) -> float | None:
        """Do what is due; the seconds until the next deadline, or None when done."""
        now = self._now()
        if now >= self._publish_at:
            self._publish_at = now + self.options.publish_every
            self._publish_budget()
            await asyncio.to_thread(self._refresh_counters)
        if now >= self._tick_at:
            self._tick_at = now + self.options.lease_renew_every
            await self._tick()
        self._supervise()
        try:
            if self._pass is not None and self._pass.task.done():
                self._finish_pass()
            if self._pass is None:
                if self._result is not None or (self._once is None and not self._wanted()):
                    return None
                if self._now() >= self._next_at or (self._early is not None and self._early()):
                    await self._start_or_standby()
        except Exception as exc:  # noqa: BLE001 - a pass or lease error: run_once raises, the thread waits
            await self._failed(exc)
        deadlines = [self._publish_at, self._tick_at]
        if self._pass is None:
            deadlines.append(self._next_at)
        elif self._pass.cancel_at is not None:
            deadlines.append(self._pass.cancel_at)
        return max(0.0, min(deadlines) - self._now())

    def _poke(self) -> None:
        """In the loop, after a control call: wake the loop, show a pending stop, interrupt."""
        if self._wake is None:  # the loop is winding down: nothing left to wake
            return
        self._poked = True
        self._wake.set()
        self._show_stopping(self._once is None and not self._wanted())
        self._supervise()

    def _show_stopping(self, stopping: bool) -> None:
        """Phase "stopping" while a stop is pending; a start before the thread got there puts
        the previous phase back."""
        with self._status.update() as s:
            if stopping and self._before_stop is None:
                self._before_stop = (s.phase, s.detail)
                s.phase, s.detail = "stopping", "stopping: committing what was fetched"
            elif not stopping and self._before_stop is not None:
                if s.phase == "stopping":
                    s.phase, s.detail = self._before_stop
                self._before_stop = None

    async def _tick(self) -> None:
        """Renew the lease when held; apply a desired state another instance saved."""
        if self._lease_expires is not None:
            await self._renew()
        if self._once is None and await asyncio.to_thread(self._state.refresh) is not None:
            self._poke()

    # ---- passes -----------------------------------------------------------------------------
    async def _start_or_standby(self) -> None:
        """Take the lease if not held (standby when another collector has it), then start a pass."""
        if self._lease_expires is None:
            if self._once is None:
                await self._tick()  # a stop saved elsewhere: no takeover
                if not self._wanted():
                    return
            lease = await asyncio.to_thread(self._store.acquire_lease, self.owner, self.options.lease_ttl)
            if not lease.acquired:
                if self._once is not None:
                    raise LeaseHeld(lease)
                self._standby(lease)
                return
            self._lease_expires, self._lease_lost = lease.expires_at, False
            self._tick_at = self._now() + self.options.lease_renew_every
            log.info("lease acquired", owner=self.owner)
        if self._client is None:
            self._client = self._client_factory(self._budget)
        mode = self._once or self.mode
        codes = tuple(self.settings.codes_for(mode))
        with self._status.update() as s:
            s.phase, s.detail = "harvesting", f"{mode} pass over {len(codes)} codes"
            s.next_run_at, s.codes = None, []
            s.pass_fetched = s.pass_stored = s.pass_skipped = s.pass_failed = 0
        interrupt = self._interrupt or asyncio.Event()
        options = HarvestOptions(min_chars=self.settings.min_article_chars, max_in_flight=self.settings.max_in_flight)
        task = asyncio.create_task(self._run_pass(mode, codes, client=self._client, store=self._store,
                                                  status=self._status, options=options, interrupt=interrupt))
        task.add_done_callback(lambda _: self._wake.set() if self._wake else None)
        self._pass = _Pass(mode, codes, task, interrupt)
        self._supervise()

    def _standby(self, lease: Lease) -> None:
        self._set(phase="standby", detail=f"standby: collector held by {lease.owner} until {_hms(lease.expires_at)}",
                  current_code=None, next_run_at=lease.expires_at)
        log.info("standby", holder=lease.owner, until=lease.expires_at.isoformat())
        # Retry at expiry, or sooner (a released lease is taken within one tick).
        wait = min((lease.expires_at - self._clock()).total_seconds() + 0.05, self.options.lease_renew_every)
        self._next_at, self._early = self._now() + max(wait, 0.05), None

    def _supervise(self) -> None:
        """Interrupt the pass when it must not go on; cancel it `interrupt_grace` s later."""
        run = self._pass
        if run is None or run.task.done():
            return
        if run.cancel_at is None:
            moved_on = self._once is None and (not self._wanted() or self.mode is not run.mode)
            if run.interrupt.is_set() or moved_on or self._lease_lost:
                run.interrupt.set()
                run.cancel_at = self._now() + self.options.interrupt_grace
        elif self._now() >= run.cancel_at:
            log.warning("pass did not return after the interrupt; cancelling it", grace=self.options.interrupt_grace)
            run.task.cancel()

    def _finish_pass(self) -> None:
        """Take the ended pass's summary (raising its error); plan the next pass."""
        run, self._pass = self._pass, None
        assert run is not None
        self._set(last_run_at=self._clock(), current_code=None)
        if run.task.cancelled():
            summary = PassSummary(mode=str(run.mode), codes=len(run.codes), interrupted=True)
        else:
            summary = run.task.result()
        self._failures = 0
        if self._once is not None:
            self._result = summary
            return
        self._next_at, self._early = self._now(), None
        if summary.interrupted:  # a mode change, a stop undone by a start: the next pass at once
            return
        # The interval separates complete passes; a mode change ends the wait.
        interval = self.settings.interval_seconds(run.mode)
        next_run = self._clock() + timedelta(seconds=interval)
        self._set(phase="waiting", detail=f"next {run.mode} pass at {_hms(next_run)}",
                  current_code=None, next_run_at=next_run)
        self._next_at += interval
        self._early = lambda: self.mode is not run.mode

    async def _failed(self, exc: BaseException) -> None:
        """run_once raises; the thread releases the lease and waits (a Start retries at once)."""
        if self._once is not None:
            raise exc
        await self._release_lease()
        fatal = isinstance(exc, FATAL_ERRORS)
        if fatal:
            delay = self.options.fatal_retry_seconds
        else:
            self._failures += 1
            delay = backoff_delay(self._failures, *self.options.backoff)
        self._fail(exc, fatal=fatal, retry_in=delay)
        self._poked = False
        self._next_at, self._early = self._now() + delay, lambda: self._poked

    # ---- lease ------------------------------------------------------------------------------
    async def _renew(self) -> None:
        """Renew the lease; when it is gone (taken, or unrenewable until its expiry) interrupt
        the pass: the next turn tries to take it again, or waits in standby."""
        try:
            lease: Lease | None = await asyncio.to_thread(self._store.acquire_lease, self.owner, self.options.lease_ttl)
        except Exception as exc:  # noqa: BLE001 - keep the lease until it really expires
            log.warning("lease renewal failed", error=self._describe(exc))
            expires = self._lease_expires
            if expires is None or self._clock() < expires - timedelta(seconds=1):
                return
            lease = None
        if lease is not None and lease.acquired:
            self._lease_expires = lease.expires_at
            return
        log.warning("lease lost; interrupting the pass", holder=lease.owner if lease else "nobody (renewal failed)")
        self._lease_expires, self._lease_lost, self._next_at = None, True, self._now()
        self._supervise()

    async def _release_lease(self) -> None:
        if self._lease_expires is None:
            return
        self._lease_expires = None
        try:
            await asyncio.to_thread(self._store.release_lease, self.owner)
        except Exception as exc:  # noqa: BLE001 - it expires on its own anyway
            log.warning("lease release failed", error=self._describe(exc))
        else:
            log.info("lease released", owner=self.owner)

    # ---- status publishing ------------------------------------------------------------------
    def _publish_budget(self) -> None:
        try:
            snap = self._budget.snapshot()
        except Exception as exc:  # noqa: BLE001
            log.warning("budget snapshot failed", error=self._describe(exc))
            return
        with self._status.update() as s:
            s.budget = asdict(snap)
            long_wait = snap.waiting_for in ("hour", "day")
            if s.phase == "harvesting" and long_wait and snap.waiting_until is not None:
                s.phase = "waiting for budget"
                s.detail = f"waiting for the {snap.waiting_for} budget until {_hms(snap.waiting_until)}"
            elif s.phase == "waiting for budget" and not long_wait:
                s.phase, s.detail = "harvesting", "budget available again"

    def _refresh_counters(self) -> None:
        if not self._counters_lock.acquire(blocking=False):
            return  # another thread is reading them right now
        try:
            now = self._clock()
            if self._counters_at is not None and (now - self._counters_at).total_seconds() < self.options.counters_every:
                return
            self._counters_at = now
            try:
                stored, rejected = self._store.count_articles(), self._store.count_rejected()
            except Exception as exc:  # noqa: BLE001 - counters are cosmetic; retry next time
                log.warning("store counters unavailable", error=self._describe(exc))
                return
            with self._status.update() as s:
                s.stored_total, s.rejected_total = stored, rejected
            self._status.sample_throughput()
        finally:
            self._counters_lock.release()

    # ---- small helpers ----------------------------------------------------------------------
    def _set(self, **fields: Any) -> None:
        with self._status.update() as s:
            for name, value in fields.items():
                setattr(s, name, value)

    def _fail(self, exc: BaseException, *, fatal: bool, retry_in: float) -> None:
        message = self._describe(exc)
        self._status.error(message)
        if fatal:
            self._set(phase="error", detail=f"error: {message}; retrying in {retry_in:.0f} s or on Start")
            log.error("collector error; waiting", error=message, retry_in=retry_in)
            if self._on_fatal is not None:
                try:
                    self._on_fatal(exc)
                except Exception:  # noqa: BLE001 - a callback must not kill the thread
                    log.exception("on_fatal callback failed")
        else:
            self._set(phase="error", detail=f"error: {message}; retrying in {retry_in:.0f} s")
            log.warning("transient collector error; backing off", error=message, retry_in=retry_in)

    def _describe(self, exc: BaseException) -> str:
        """`Type: message`, with any secret value of the settings masked."""
        text = f"{type(exc).__name__}: {exc}"[:1000]
        for secret in self.settings.secrets():
            text = text.replace(secret, "***")
        return text
