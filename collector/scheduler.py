"""CollectorScheduler: the one collector thread, its store lease and its passes.

Each life of the thread is one `_Run`, an asyncio loop in APScheduler's shape: each turn does
what is due (publish the status; the tick: renew the lease, refresh the desired state from the
store; collect a finished pass; start the next or stand by), then waits on ONE event until the
next deadline. Control calls change the DesiredState under the scheduler's lock and set that
event; a pass is interrupted between two articles, cancelled `interrupt_grace` s later if it
has not returned. `run_once` is the same loop for one pass. The thread decides to exit under
the same lock, so a start() racing with its end makes it go on: one collector thread at most.
`collect_code` queues an extra pass over one code: the loop runs it between two passes (at once
when idle), and a stopped scheduler starts a short-lived thread for it (the same loop, lease and
budget), the desired state untouched.
Several instances on one store: the lease lets one harvest; START, STOP, a mode or a Reset
pressed on any instance reaches the others within a tick (thread-less: when its status is read).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from collector import harvest
from collector.clock import utcnow
from collector.config import Mode, Settings, mask, parse_mode
from collector.extra_passes import CollectRefused, check_now, check_request, massive_on
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
RunPass = Callable[..., Awaitable[PassSummary]]  # harvest.run_pass's signature


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    """The collector thread's timings, in seconds."""

    lease_ttl: float = 30.0  # how long the lease lasts unrenewed (blocks a killed collector's successor)
    lease_renew_every: float = 10.0  # the tick: lease renewal, desired-state refresh, standby retries
    interrupt_grace: float = 1.5  # an interrupted pass may take this long to commit, then is cancelled
    fatal_retry_seconds: float = 60.0  # wait after an auth / permanent store error (Start: at once)
    backoff: tuple[float, float] = (5.0, 300.0)  # first and longest wait after transient errors
    counters_every: float = 5.0  # store counters refresh
    publish_every: float = 1.0  # budget refresh

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


class CollectorScheduler:
    """One background collector thread per process, controlled from any thread.

    `settings`: codes, intervals, secrets; `state`: the desired state's owner; `store`: lease and
    counters; `status`: the board the page reads; `client_factory(budget)`: the Légifrance client
    (one per loop); `owner`: this collector's name in the lease (`host:pid:start`); `clock`: aware
    UTC datetimes; `run_pass`: one pass (harvest.run_pass); `options`: the timings.
    """

    def __init__(self, settings: Settings, *, state: DesiredState, store: Store, status: StatusBoard,
                 client_factory: Callable[[RequestBudget], LegifranceClient], budget: RequestBudget,
                 options: SchedulerOptions | None = None, owner: str | None = None,
                 clock: Callable[[], datetime] = utcnow, run_pass: RunPass = harvest.run_pass) -> None:
        self.settings = settings
        self.options = options or SchedulerOptions()
        self.state = state
        self.store = store
        self.board = status
        self.client_factory = client_factory
        self.budget = budget
        self.clock = clock
        self.run_pass = run_pass
        self.owner = owner or default_owner(clock())
        self._lock = threading.Lock()  # serialises control calls; guards the thread and the run
        self._shutdown = False
        self._thread: threading.Thread | None = None  # None once the thread decided to exit
        self._last_thread: threading.Thread | None = None
        self._run: _Run | None = None  # the loop in progress (thread or run_once)
        self._on_fatal: Callable[[BaseException], None] | None = None
        self._counters_lock = threading.Lock()
        self._counters_at: datetime | None = None
        self._followed_at: datetime | None = None  # last refresh made by status() without a thread
        self._queued: list[str] = []  # codes of the extra passes asked for (collect_code); under _lock
        self._stops = 0  # stop() calls: an extra pass started before a stop is interrupted by it

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
            self._stops += 1
            self._queued.clear()
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
                self.state.reset()
            if self.state.running:
                self._ensure_thread_locked()
            else:
                self._notify_locked()

    def collect_code(self, code_id: str) -> None:
        """Queue one extra pass over `code_id` (a LEGITEXT id) within the same budget and lease,
        without changing the saved {running, mode}: run between two passes, at once when idle, or
        in a short-lived thread when the collector is stopped. The pass walks the code's table of
        contents whatever /list/code says and fetches only what the store lacks (a MASSIVE walk
        of that one code). CollectRefused(reason) when it cannot: not a code id, a MASSIVE pass
        on, another collector holding the lease (named), a run_once in progress, shut down, or
        MAX_QUEUED_CODES already waiting."""
        check_request(code_id, self.settings.source)
        with self._lock:
            self._refuse_collect_locked()
            if code_id in self._queued:
                return  # already waiting: one walk serves both requests
            take_lease = self._run is None or self._run.lease_expires is None
        if take_lease:  # store I/O outside the lock: status() and the controls never wait on it
            lease = self.store.acquire_lease(self.owner, self.options.lease_ttl)
            if not lease.acquired:
                raise CollectRefused(f"another collector holds the store lease: {lease.owner} until "
                                     f"{_hms(lease.expires_at)}; ask there or wait for it")
        with self._lock:
            self._refuse_collect_locked()  # again: a stop, a mode change or a shutdown meanwhile
            if code_id not in self._queued:
                self._queued.append(code_id)
                log.info("extra pass queued", code_id=code_id, queued=len(self._queued))
            if self._thread is None:
                self._ensure_thread_locked()
            elif self._run is not None:  # wake the loop without a poke: an error backoff stays as it was
                with contextlib.suppress(RuntimeError):
                    self._run.loop.call_soon_threadsafe(self._run.wake.set)

    def _refuse_collect_locked(self) -> None:
        run = self._run
        busy = run.current if run is not None and run.current is not None and not run.current.extra else None
        check_now(shutting_down=self._shutdown, once_running=run is not None and run.once is not None,
                  massive_on=massive_on(self.state.running, self.state.mode, busy.mode if busy else None),
                  waiting=len(self._queued))

    @property
    def queued_codes(self) -> tuple[str, ...]:
        """The codes of the extra passes waiting (collect_code), oldest first. Read without the
        lock (status() must never wait on a control call's store I/O): `_queued` only changes
        under the lock, and copying a list is atomic under the GIL."""
        return tuple(self._queued)

    def _next_queued(self) -> str | None:
        """Pop the oldest queued code (the loop's side of collect_code)."""
        with self._lock:
            return self._queued.pop(0) if self._queued and not self._shutdown else None

    def _has_queued(self) -> bool:
        return bool(self._queued) and not self._shutdown

    def _drop_queued(self, why: str) -> None:
        with self._lock:
            dropped, self._queued = self._queued, []
        for code_id in dropped:
            message = f"collect {code_id} dropped: {why}"
            log.warning("extra pass dropped", code_id=code_id, reason=why)
            self.board.error(message)

    def _save(self, **change: Any) -> None:
        with contextlib.suppress(StateSaveError):  # the change holds in memory; status() says why
            self.state.save(**change)

    def resume(self) -> None:
        """Load the saved desired state and start the thread (saving nothing) if it says running."""
        self.load()
        self._start_if_running()

    def _start_if_running(self) -> None:
        with self._lock:
            if self.state.running:
                self._ensure_thread_locked()

    def load(self) -> bool:
        """Load the saved desired state (the newer copy) without starting anything; its `running`."""
        return self.state.load().state.running

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
        return self.state.running

    @property
    def mode(self) -> Mode:
        return self.state.mode

    def wanted(self) -> bool:
        """The thread should run: desired running and not shut down."""
        return self.state.running and not self._shutdown

    def status(self) -> StatusSnapshot:
        """A copy of the live status plus the desired state. Without a thread, the budget, the
        store counters (every `counters_every` s) and the desired state (every tick) are read
        here; a START saved by another instance starts the thread."""
        alive = self.alive
        if not alive:
            self.publish()
            now = self.clock()
            if not self._shutdown and (self._followed_at is None or (now - self._followed_at).total_seconds()
                                       >= self.options.lease_renew_every):
                self._followed_at = now
                if self.state.refresh() is not None:
                    self._start_if_running()
        snap = self.board.snapshot()
        snap.running, snap.mode, snap.alive = self.state.running, self.state.mode.value, alive
        snap.state_saved, snap.state_error = self.state.saved, self.state.error
        snap.queued_codes = list(self.queued_codes)
        return snap

    def publish(self) -> None:
        """The budget into the status board, and the store counters at most every `counters_every` s."""
        try:
            self.board.show_budget(self.budget.snapshot())
        except Exception as exc:  # noqa: BLE001 - the status is best effort
            log.warning("budget snapshot failed", error=self.describe(exc))
        if not self._counters_lock.acquire(blocking=False):
            return  # another thread is reading them right now
        try:
            now = self.clock()
            if self._counters_at is None or (now - self._counters_at).total_seconds() >= self.options.counters_every:
                self._counters_at = now
                self.board.show_totals(self.store.count_articles(), self.store.count_rejected(), sample=self.alive)
        except Exception as exc:  # noqa: BLE001 - counters are cosmetic; retry next time
            log.warning("store counters unavailable", error=self.describe(exc))
            self.board.set(store_error=self.describe(exc))  # the page's store alert
        finally:
            self._counters_lock.release()

    # ---- the thread and run_once --------------------------------------------------------------
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
        run = self._run
        if run is not None:
            with contextlib.suppress(RuntimeError):  # loop closing: the thread re-checks under the lock
                run.loop.call_soon_threadsafe(run.poke)

    def _thread_main(self) -> None:
        while True:
            try:
                asyncio.run(self._serve(None, None))
            except Exception as exc:  # noqa: BLE001 - a bug; do not restart in a tight loop
                log.exception("collector thread crashed")
                self.board.error(f"collector thread crashed: {self.describe(exc)}")
                self.board.set(phase="error", detail="the collector thread crashed")
                with self._lock:
                    self._thread = self._run = None
                    return
            with self._lock:
                if self.wanted() or self._has_queued():  # started again (or a code queued) while stopping
                    continue
                self._thread = None
                return

    async def run_once(self, mode: Mode | None = None, *, interrupt: asyncio.Event | None = None) -> PassSummary:
        """One pass in the current event loop, holding the lease (LeaseHeld if another
        collector holds it). Setting `interrupt` (SIGTERM) stops it between two articles."""
        if self.alive:
            raise RuntimeError("the collector thread is running; run_once needs it stopped")
        summary = await self._serve(mode or self.mode, interrupt or asyncio.Event())
        assert summary is not None
        return summary

    async def _serve(self, once: Mode | None, interrupt: asyncio.Event | None) -> PassSummary | None:
        run = _Run(self, asyncio.get_running_loop(), once, interrupt)
        with self._lock:
            self._run = run
        log.info("collector loop started", owner=self.owner, mode=str(once or self.mode), once=once is not None)
        try:
            return await run.serve()
        finally:
            await run.close()
            with self._lock:
                self._run = None
            self.publish()
            self.board.show_idle()
            log.info("collector loop stopped", running=self.running, mode=str(self.mode))

    def describe(self, exc: BaseException) -> str:
        """`Type: message`, with any secret value of the settings masked."""
        return mask(f"{type(exc).__name__}: {exc}", self.settings.secrets())[:1000]  # masked, then cut


@dataclass
class _Pass:
    """The pass in flight: its task, its interrupt event and when it is cancelled (loop time)."""

    mode: Mode
    codes: tuple[str, ...]
    task: asyncio.Task[PassSummary]
    interrupt: asyncio.Event
    cancel_at: float | None = None
    extra: bool = False  # a collect_code pass: runs whatever the desired state, until a stop
    stops: int = 0  # the scheduler's stop count when it started


@dataclass(eq=False)
class _Run:
    """One life of the loop: the thread's (`once` None: passes while wanted, errors waited out)
    or run_once's (one pass in `once`, errors raised, the desired state not followed)."""

    s: CollectorScheduler
    loop: asyncio.AbstractEventLoop
    once: Mode | None
    interrupt: asyncio.Event | None  # run_once's caller's event (SIGTERM)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    client: LegifranceClient | None = None
    current: _Pass | None = None
    result: PassSummary | None = None
    lease_expires: datetime | None = None  # set while this collector holds the lease
    lease_lost: bool = False
    next_at: float = 0.0  # loop time the next pass (or lease attempt) is due
    early: Callable[[], bool] | None = None  # makes it due sooner (a mode change, a Start)
    poked: bool = False  # a control call woke the loop
    closed: bool = False  # close() ran: a poke queued before _run was cleared changes nothing
    failures: int = 0  # transient errors in a row
    publish_at: float = 0.0
    tick_at: float = 0.0

    async def serve(self) -> PassSummary | None:
        """Turn until done (thread: no longer wanted; run_once: its pass returned)."""
        self.tick_at = self.loop.time() + self.s.options.lease_renew_every  # a lease attempt refreshes first
        if self.interrupt is not None:
            waiter = asyncio.ensure_future(self.interrupt.wait())
            waiter.add_done_callback(lambda _: self.wake.set())
        try:
            while True:
                self.wake.clear()  # before the turn: a wake during it makes the wait return at once
                wait = await self._turn()
                if wait is None:
                    return self.result
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):  # not wait_for: it can swallow a cancel on 3.11
                        await self.wake.wait()
        finally:
            if self.interrupt is not None:
                waiter.cancel()

    async def _turn(self) -> float | None:
        """Do what is due; the seconds until the next deadline, or None when done."""
        s, now = self.s, self.loop.time()
        if now >= self.publish_at:
            self.publish_at = now + s.options.publish_every
            await asyncio.to_thread(s.publish)
        if now >= self.tick_at:
            self.tick_at = now + s.options.lease_renew_every
            await self._tick()
        self._supervise()
        try:
            if self.current is not None and self.current.task.done():
                self._finish_pass()
            if self.current is None:
                queued = self.once is None and s._has_queued()
                if self.result is not None or (self.once is None and not s.wanted() and not queued):
                    return None
                due = self.loop.time() >= self.next_at or (self.early is not None and self.early())
                if due or queued:
                    await self._start_or_standby(due)
        except Exception as exc:  # noqa: BLE001 - a pass or lease error: run_once raises, the thread waits
            await self._failed(exc)
        deadlines = [self.publish_at, self.tick_at]
        if self.current is None:
            deadlines.append(self.next_at)
        elif self.current.cancel_at is not None:
            deadlines.append(self.current.cancel_at)
        return max(0.0, min(deadlines) - self.loop.time())

    def poke(self) -> None:
        """In the loop, after a control call or a change from elsewhere: wake the loop, show a
        pending stop (a start before the thread got there puts the previous phase back)."""
        if self.closed:  # asyncio.run's clean-up can run it after the loop showed "idle"
            return
        self.poked = True
        self.wake.set()
        self._supervise()
        s, current = self.s, self.current
        extra_on = s._has_queued() or (current is not None and current.extra and current.cancel_at is None)
        s.board.show_stopping(self.once is None and not s.wanted() and not extra_on)

    async def _tick(self) -> None:
        """Renew the lease when held; apply a desired state another instance saved."""
        if self.lease_expires is not None:
            await self._renew()
        if self.once is None and await asyncio.to_thread(self.s.state.refresh) is not None:
            self.poke()

    async def _start_or_standby(self, due: bool = True) -> None:
        """Take the lease if not held (standby when another collector has it), then start a
        pass: a queued extra pass first, else the mode's pass when `due`."""
        s = self.s
        if self.lease_expires is None:
            if self.once is None:
                await self._tick()  # a stop saved elsewhere: no takeover
                if not s.wanted() and not s._has_queued():
                    return
            lease = await asyncio.to_thread(s.store.acquire_lease, s.owner, s.options.lease_ttl)
            if not lease.acquired:
                if self.once is not None:
                    raise LeaseHeld(lease)
                s._drop_queued(f"another collector holds the store lease: {lease.owner}")
                s.board.set(phase="standby", detail=f"standby: collector held by {lease.owner} until "
                      f"{_hms(lease.expires_at)}", current_code=None, next_run_at=lease.expires_at)
                log.info("standby", holder=lease.owner, until=lease.expires_at.isoformat())
                # Retry at expiry, or sooner (a released lease is taken within one tick).
                wait = min((lease.expires_at - s.clock()).total_seconds() + 0.05, s.options.lease_renew_every)
                self.next_at, self.early = self.loop.time() + max(wait, 0.05), None
                return
            self.lease_expires, self.lease_lost = lease.expires_at, False
            self.tick_at = self.loop.time() + s.options.lease_renew_every
            log.info("lease acquired", owner=s.owner)
        extra = s._next_queued() if self.once is None else None
        if extra is None and not (due and (self.once is not None or s.wanted())):
            return
        self.client = self.client or s.client_factory(s.budget)
        mode = Mode.MASSIVE if extra else self.once or s.mode  # MASSIVE: the TOC is walked, no /list/code
        codes = (extra,) if extra else tuple(s.settings.codes_for(mode))
        with s.board.update() as b:
            b.phase = "harvesting"
            b.detail = f"extra pass over {extra} (collect now)" if extra else f"{mode} pass over {len(codes)} codes"
            b.next_run_at, b.codes = None, []
            b.pass_fetched = b.pass_stored = b.pass_skipped = b.pass_failed = 0
        interrupt = self.interrupt or asyncio.Event()
        options = HarvestOptions(min_chars=s.settings.min_article_chars, max_in_flight=s.settings.max_in_flight)
        task = asyncio.create_task(s.run_pass(mode, codes, client=self.client, store=s.store, status=s.board,
                                              options=options, interrupt=interrupt))
        task.add_done_callback(lambda _: self.wake.set())
        self.current = _Pass(mode, codes, task, interrupt, extra=extra is not None, stops=s._stops)
        if extra:
            log.info("extra pass start", code_id=extra)
        self._supervise()

    def _supervise(self) -> None:
        """Interrupt the pass when it must not go on; cancel it `interrupt_grace` s later."""
        run, s = self.current, self.s
        if run is None or run.task.done():
            return
        if run.cancel_at is None:
            if run.extra:
                moved_on = s._shutdown or s._stops != run.stops
            else:
                moved_on = self.once is None and (not s.wanted() or s.mode is not run.mode)
            if run.interrupt.is_set() or moved_on or self.lease_lost:
                run.interrupt.set()
                run.cancel_at = self.loop.time() + s.options.interrupt_grace
        elif self.loop.time() >= run.cancel_at:
            log.warning("pass did not return after the interrupt; cancelling it", grace=s.options.interrupt_grace)
            run.task.cancel()

    def _finish_pass(self) -> None:
        """Take the ended pass's summary (raising its error) and plan the next pass: at once
        after an interrupted one, else after the mode's interval or at a mode change."""
        run, s = self.current, self.s
        assert run is not None
        self.current = None
        s.board.set(last_run_at=s.clock(), current_code=None)
        if run.task.cancelled():
            summary = PassSummary(mode=str(run.mode), codes=len(run.codes), interrupted=True)
        else:
            summary = run.task.result()
        self.failures = 0
        if self.once is not None:
            self.result = summary
            return
        if run.extra:  # the mode's schedule stands: the next pass is due when it was
            log.info("extra pass end", code_id=run.codes[0], stored=summary.stored, failed=summary.failed,
                     codes_failed=summary.codes_failed, interrupted=summary.interrupted)
            wait = self.next_at - self.loop.time()
            if s.wanted() and wait > 0 and not s._has_queued():
                next_run = s.clock() + timedelta(seconds=wait)
                s.board.set(phase="waiting", detail=f"next {s.mode} pass at {_hms(next_run)}", next_run_at=next_run)
            return
        self.next_at, self.early = self.loop.time(), None
        if summary.interrupted:
            return
        interval = s.settings.interval_seconds(run.mode)
        next_run = s.clock() + timedelta(seconds=interval)
        s.board.set(phase="waiting", detail=f"next {run.mode} pass at {_hms(next_run)}", current_code=None,
              next_run_at=next_run)
        self.next_at += interval
        self.early = lambda: s.mode is not run.mode

    async def _failed(self, exc: BaseException) -> None:
        """run_once raises; the thread releases the lease, shows the error and waits (a fatal
        error `fatal_retry_seconds`, a transient one a growing backoff; a Start retries at once)."""
        if self.once is not None:
            raise exc
        s = self.s
        await self._release_lease()
        message = s.describe(exc)
        s.board.error(message)
        fatal = isinstance(exc, FATAL_ERRORS)
        if not fatal:
            self.failures += 1
        delay = s.options.fatal_retry_seconds if fatal else backoff_delay(self.failures, *s.options.backoff)
        retry_at = s.clock() + timedelta(seconds=delay)
        # The message is in last_error; the detail says only what happens next (said once).
        s.board.set(phase="error", detail=f"retrying at {_hms(retry_at)}", next_run_at=retry_at)
        if fatal:
            log.error("collector error; waiting", error=message, retry_in=delay)
            if s._on_fatal is not None:
                try:
                    s._on_fatal(exc)
                except Exception:  # noqa: BLE001 - a callback must not kill the thread
                    log.exception("on_fatal callback failed")
        else:
            log.warning("transient collector error; backing off", error=message, retry_in=delay)
        self.poked = False
        self.next_at, self.early = self.loop.time() + delay, lambda: self.poked

    async def _renew(self) -> None:
        """Renew the lease; when it is gone (taken, or unrenewable until its expiry) interrupt
        the pass: the next turn takes it again or stands by."""
        s = self.s
        try:
            lease: Lease | None = await asyncio.to_thread(s.store.acquire_lease, s.owner, s.options.lease_ttl)
        except Exception as exc:  # noqa: BLE001 - keep the lease until it really expires
            log.warning("lease renewal failed", error=s.describe(exc))
            if self.lease_expires is None or s.clock() < self.lease_expires - timedelta(seconds=1):
                return
            lease = None
        if lease is not None and lease.acquired:
            self.lease_expires = lease.expires_at
            return
        log.warning("lease lost; interrupting the pass", holder=lease.owner if lease else "nobody (renewal failed)")
        self.lease_expires, self.lease_lost, self.next_at = None, True, self.loop.time()
        self._supervise()

    async def _release_lease(self) -> None:
        if self.lease_expires is None:
            return
        self.lease_expires = None
        try:
            await asyncio.to_thread(self.s.store.release_lease, self.s.owner)
        except Exception as exc:  # noqa: BLE001 - it expires on its own anyway
            log.warning("lease release failed", error=self.s.describe(exc))
        else:
            log.info("lease released", owner=self.s.owner)

    async def close(self) -> None:
        """Whatever ended the loop: cancel a pass still running, close the client, release the
        lease, flush the budget ledger."""
        self.closed = True
        s = self.s
        s.board.set(phase="stopping", detail="stopping: closing the client")
        if self.current is not None and not self.current.task.done():
            self.current.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.current.task
        if self.client is not None:
            try:
                await self.client.aclose()
            except Exception as exc:  # noqa: BLE001
                log.warning("client close failed", error=s.describe(exc))
        await self._release_lease()
        try:
            await s.budget.flush()
        except Exception as exc:  # noqa: BLE001
            log.warning("budget ledger flush failed", error=s.describe(exc))
