"""CollectorScheduler: owns the one collector thread; start / stop / set_mode / reset / status.

The thread runs one asyncio event loop for its whole life: take the store lease, run a pass,
wait for the next one. Every wait is an asyncio.Event woken from other threads through
`loop.call_soon_threadsafe`, so stop, mode changes and button presses take effect at once
(a pass in flight is interrupted between two articles through its `interrupt` event and is
cancelled if it has not returned after `interrupt_grace` seconds).

Control calls (start / stop / set_mode / reset) take one lock, change the desired state in
memory, save it through the StateKeeper before returning and wake the thread. The thread
makes its exit decision under the same lock, so there is never more than one collector
thread: a start() racing with a finishing thread makes that thread go on instead of exiting.

Several instances on one store (a deploy overlap, two servers on one SQLite file): the lease
lets one harvest, and while its thread lives every instance follows the desired state the
others save. Every `lease_renew_every` s, and before each attempt to take the lease, the thread
reads the store's state record; one newer than what this process last saved or read is applied
like the matching control call (stop, mode switch) and written to the local state file, never
back to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from collector import harvest
from collector.config import Mode, Settings, parse_mode
from collector.harvest import HarvestOptions
from collector.legifrance import LegifranceAuthError, LegifranceClient
from collector.models import PassSummary
from collector.ratelimit import RequestBudget
from collector.state import StateKeeper, StateSaveError, StoreRecord
from collector.status import StatusBoard, StatusSnapshot, utcnow
from collector.store.base import Lease, Store, StoreFatal

THREAD_NAME = "legifrance-collector"
log = structlog.get_logger("collector.scheduler")

FATAL_ERRORS: tuple[type[BaseException], ...] = (LegifranceAuthError, StoreFatal)
FOLLOW_WARN_EVERY = 60.0  # seconds between two warnings that the store's state could not be read


class RunPass(Protocol):
    """The signature of `harvest.run_pass` (injectable for tests)."""

    def __call__(
        self,
        mode: Mode,
        codes: Sequence[str],
        *,
        client: LegifranceClient,
        store: Store,
        status: StatusBoard,
        options: HarvestOptions,
        interrupt: asyncio.Event,
    ) -> Awaitable[PassSummary]: ...


class LeaseHeld(RuntimeError):
    """Another collector holds the store lease (raised by `run_once`)."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(
            f"another collector holds the store lease: {lease.owner} until "
            f"{_hms(lease.expires_at)}; stop it or wait for its lease to expire"
        )
        self.lease = lease


def default_owner(started: datetime | None = None) -> str:
    """`host:pid:start time`, unique per scheduler even within one process."""
    started = started or utcnow()
    return f"{socket.gethostname()}:{os.getpid()}:{started:%Y%m%dT%H%M%S.%fZ}"


def _hms(moment: datetime) -> str:
    return f"{moment:%H:%M:%S} UTC"


class CollectorScheduler:
    """One background collector thread per process, controlled from any thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        state: StateKeeper,
        store: Store,
        status: StatusBoard,
        client_factory: Callable[[RequestBudget], LegifranceClient],
        budget: RequestBudget,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        run_pass: RunPass = harvest.run_pass,
        lease_ttl: float = 30.0,
        lease_renew_every: float = 10.0,
        interrupt_grace: float = 1.5,
        fatal_retry_seconds: float = 60.0,
        backoff: tuple[float, float] = (5.0, 300.0),
        counters_every: float = 5.0,
        publish_every: float = 1.0,
    ) -> None:
        self.settings = settings
        self._state = state
        self._store = store
        self._status = status
        self._client_factory = client_factory
        self._budget = budget
        self._clock = clock
        self._run_pass = run_pass
        self.owner = owner or default_owner(clock())
        self._lease_ttl = lease_ttl
        self._lease_renew_every = lease_renew_every
        self._grace = interrupt_grace
        self._fatal_retry = fatal_retry_seconds
        self._backoff = backoff
        self._counters_every = counters_every
        self._publish_every = publish_every

        self._lock = threading.Lock()  # guards the desired state and the thread handle
        self._running = False  # desired state
        self._mode: Mode = settings.default_mode
        self._shutdown = False
        self._thread: threading.Thread | None = None  # None once the thread decided to exit
        self._last_thread: threading.Thread | None = None
        # Owned by the collector thread's loop (written under the lock, read anywhere):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._wake_seq = 0
        self._interrupt: asyncio.Event | None = None
        self._pass_mode: Mode | None = None
        self._lease_lost: Lease | None = None
        self._lease_expires: datetime | None = None
        self._counters_lock = threading.Lock()
        self._counters_at: datetime | None = None
        self._on_fatal: Callable[[BaseException], None] | None = None
        self._before_stop: tuple[str, str | None] | None = None  # phase shown before "stopping"
        self._follow_warned_at: datetime | None = None

    # ---- control (any thread) -------------------------------------------------------------
    def start(self) -> None:
        """Desire running, save it, make sure the thread runs (idempotent)."""
        with self._lock:
            self._running = True
            self._save_locked("start")
            self._ensure_thread_locked()

    def stop(self) -> None:
        """Desire stopped, save it; the thread commits what it fetched and ends (idempotent)."""
        with self._lock:
            self._running = False
            self._save_locked("stop")
            self._notify_locked()

    def set_mode(self, mode: Mode | str) -> None:
        """Switch mode (InvalidMode on a bad value, nothing changed); a pass in the old mode
        is interrupted between two articles and a pass in the new mode starts at once."""
        new = parse_mode(mode)
        with self._lock:
            self._mode = new
            self._save_locked("set_mode")
            self._notify_locked()

    def reset(self) -> None:
        """Clear the saved state and go back to the environment defaults
        (ENABLE_SCHEDULER, SIPHONNAGE_MODE) without saving anything.

        The collector then does exactly what a fresh process with no saved state would do:
        with ENABLE_SCHEDULER=true it keeps (or starts) running in the default mode, otherwise
        it stops. Acting like a restart keeps "now" and "after the next restart" identical."""
        with self._lock:
            self._running = self.settings.enable_scheduler
            self._mode = self.settings.default_mode
            try:
                self._state.clear()
            except Exception as exc:  # noqa: BLE001 - reported in the status, action still done
                self._record_save(False, exc, "reset")
            else:
                self._record_save(True, None, "reset")
                log.info("state reset to defaults", running=self._running, mode=str(self._mode))
            if self._running:
                self._ensure_thread_locked()
            else:
                self._notify_locked()

    def resume(self) -> None:
        """Load the saved desired state (file or store mirror) and start if it says running."""
        if self.load():
            self.start_thread()

    def start_thread(self) -> None:
        """Start the thread for the current desired state without saving it (resume)."""
        with self._lock:
            if self._running:
                self._ensure_thread_locked()

    def load(self) -> bool:
        """Load the saved desired state into memory without starting anything; its `running`."""
        try:
            result = self._state.load()
        except Exception as exc:  # noqa: BLE001 - a broken state must not stop the process
            log.error("state load failed; using defaults", error=self._describe(exc))
            running, mode = self.settings.enable_scheduler, self.settings.default_mode
        else:
            running, mode = result.state.running, parse_mode(result.state.mode)
            fields: dict[str, Any] = {"source": str(result.source), "running": running, "mode": str(mode)}
            if result.problem:
                fields["problem"] = result.problem
            if result.moved_to:
                fields["moved_to"] = str(result.moved_to)
            (log.warning if result.problem else log.info)("state loaded", **fields)
        with self._lock:
            self._running, self._mode = running, mode
        return running

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Process exit: stop the thread (committing the batch in flight, releasing the lease,
        flushing the budget ledger) WITHOUT changing the saved desired state. Final: later
        start() calls only record and save the desired state. True when the thread ended."""
        with self._lock:
            self._shutdown = True
            thread = self._thread or self._last_thread
            self._notify_locked()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("collector thread did not stop in time", timeout=timeout)
                return False
        log.info("scheduler shut down", running=self._running, mode=str(self._mode))
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
        return self._running

    @property
    def mode(self) -> Mode:
        return self._mode

    def status(self) -> StatusSnapshot:
        """A copy of the live status plus the desired state. Cheap: when the thread is not
        alive the budget and (at most every `counters_every` s) the store counters are read here."""
        alive = self.alive
        if not alive:
            self._publish_budget()
            self._refresh_counters()
        snap = self._status.snapshot()
        snap.running = self._running
        snap.mode = self._mode.value
        snap.alive = alive
        return snap

    # ---- helpers used under the lock -------------------------------------------------------
    def _save_locked(self, action: str) -> None:
        try:
            self._state.save(self._running, self._mode)
        except Exception as exc:  # noqa: BLE001 - the action still takes effect in memory
            self._record_save(False, exc, action)
        else:
            self._record_save(True, None, action)
            log.info("state saved", action=action, running=self._running, mode=str(self._mode))

    def _record_save(self, ok: bool, exc: BaseException | None, action: str) -> None:
        if exc is not None:
            message: str | None = str(exc) if isinstance(exc, StateSaveError) else self._describe(exc)
            log.error("state not saved; the change holds in memory only", action=action, error=message)
        else:
            # The file is written; a stale store copy is worth showing (it is the one copy
            # that survives a redeploy on Render).
            message = self._state.last_store_error
        self._set(state_saved=ok, state_error=message)

    def _ensure_thread_locked(self) -> None:
        if self._shutdown:
            log.warning("scheduler is shut down; the desired state is saved but no thread starts")
            return
        if self._thread is not None:  # alive and not exiting: it will see the new state
            self._notify_locked()
            return
        if self._last_thread is not None:
            # It has already decided to exit under this lock; only its return is left.
            self._last_thread.join()
        thread = threading.Thread(target=self._thread_main, name=THREAD_NAME, daemon=True)
        self._thread = self._last_thread = thread
        thread.start()

    def _notify_locked(self) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closing: the thread re-checks under the lock
            loop.call_soon_threadsafe(self._on_wake)

    # ---- thread -----------------------------------------------------------------------------
    def _wanted(self) -> bool:
        return self._running and not self._shutdown

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
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
        publisher = asyncio.create_task(self._publish_loop())
        follower = asyncio.create_task(self._follow_loop())
        client: LegifranceClient | None = None
        failures = 0
        log.info("collector thread started", owner=self.owner, mode=str(self._mode))
        try:
            while self._wanted():
                seq = self._wake_seq
                try:
                    if client is None:
                        client = self._client_factory(self._budget)
                    await asyncio.to_thread(self._follow_store)  # a stop saved elsewhere: no takeover
                    if not self._wanted():
                        break
                    lease = await self._acquire_lease()
                    if not lease.acquired:
                        await self._standby(lease)
                        continue
                    await self._hold_lease_and_run(client)
                    failures = 0
                except FATAL_ERRORS as exc:
                    self._fail(exc, fatal=True)
                    await self._sleep(self._fatal_retry, lambda: self._wake_seq != seq or not self._wanted())
                except Exception as exc:  # noqa: BLE001 - transient (network, store busy, ...)
                    failures += 1
                    delay = min(self._backoff[0] * 2 ** (failures - 1), self._backoff[1])
                    self._fail(exc, fatal=False, retry_in=delay)
                    await self._sleep(delay, lambda: self._wake_seq != seq or not self._wanted())
        finally:
            self._set(phase="stopping", detail="stopping: closing the client")
            for task in (publisher, follower):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._close(client)
            with self._lock:
                self._loop = self._wake = None
            self._publish_budget()
            self._before_stop = None
            self._set(phase="idle", detail=None, current_code=None, next_run_at=None)
            log.info("collector thread stopped", running=self._running, mode=str(self._mode))

    def _on_wake(self) -> None:
        """In the loop: wake every wait and interrupt the pass if it must not go on."""
        if self._wake is None:  # the loop is winding down: nothing left to wake
            return
        self._wake_seq += 1
        self._wake.set()
        self._show_stopping(not self._wanted())
        if self._interrupt is not None and self._must_interrupt():
            self._interrupt.set()

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

    def _must_interrupt(self) -> bool:
        return not self._wanted() or self._mode != self._pass_mode or self._lease_lost is not None

    async def _sleep(self, seconds: float, done: Callable[[], bool]) -> None:
        """Wait up to `seconds`, returning early once `done()` holds (checked on every wake)."""
        wake = self._wake
        assert wake is not None
        deadline = asyncio.get_running_loop().time() + max(seconds, 0.0)
        while True:
            wake.clear()  # no await between clear and the check: no wake can be lost
            if done():
                return
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for: it can swallow a cancel on 3.11
                    await wake.wait()

    async def _close(self, client: LegifranceClient | None) -> None:
        if client is not None:
            try:
                await client.aclose()
            except Exception as exc:  # noqa: BLE001
                log.warning("client close failed", error=self._describe(exc))
        await self._release_lease()
        try:
            await self._budget.flush()
        except Exception as exc:  # noqa: BLE001
            log.warning("budget ledger flush failed", error=self._describe(exc))

    # ---- the desired state saved by other instances --------------------------------------------
    async def _follow_loop(self) -> None:
        """Every `lease_renew_every` s: apply a desired state another instance saved."""
        while True:
            await asyncio.sleep(self._lease_renew_every)
            await asyncio.to_thread(self._follow_store)

    def _follow_store(self) -> None:
        """Read the store's state record (one row); when another instance saved it since this
        process last saved or read it, apply it in memory like stop() / set_mode() / start()
        and write it to the local state file only (writing the store would echo it back)."""
        try:
            record = self._state.newer_in_store()
        except Exception as exc:  # noqa: BLE001 - the collector goes on with what it has
            self._follow_failed(exc)
            return
        if record is None:
            return
        with self._lock:
            # A start from elsewhere is not followed by a thread that already decided to exit.
            if self._shutdown or (record.state.running and self._thread is None):
                return
            try:
                if not self._state.adopt(record):
                    return  # saved here since it was read: this process's choice is newer
            except Exception as exc:  # noqa: BLE001 - the change still applies in memory
                self._record_save(False, exc, "follow")
            self._apply_locked(record)

    def _apply_locked(self, record: StoreRecord) -> None:
        new = record.state
        if (new.running, new.mode) == (self._running, self._mode):
            return
        log.info(
            "desired state changed by another instance",
            host=new.host,
            pid=new.pid,
            updated_at=new.updated_at.isoformat() if new.updated_at else None,
            running=new.running,
            mode=str(new.mode),
            was_running=self._running,
            was_mode=str(self._mode),
            reset=record.reset,
        )
        self._running, self._mode = new.running, new.mode
        self._notify_locked()

    def _follow_failed(self, exc: BaseException) -> None:
        now = self._clock()
        last = self._follow_warned_at
        if last is not None and (now - last).total_seconds() < FOLLOW_WARN_EVERY:
            log.debug("store state record unreadable", error=self._describe(exc))
            return
        self._follow_warned_at = now
        log.warning("store state record unreadable; changes made by other instances are not followed "
                    "until it can be read", error=self._describe(exc), next_warning_in=FOLLOW_WARN_EVERY)

    # ---- lease ------------------------------------------------------------------------------
    async def _acquire_lease(self) -> Lease:
        lease = await asyncio.to_thread(self._store.acquire_lease, self.owner, self._lease_ttl)
        if lease.acquired:
            self._lease_expires = lease.expires_at
            self._lease_lost = None
        return lease

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

    async def _standby(self, lease: Lease) -> None:
        detail = f"standby: collector held by {lease.owner} until {_hms(lease.expires_at)}"
        self._set(phase="standby", detail=detail, current_code=None, next_run_at=lease.expires_at)
        log.info("standby", holder=lease.owner, until=lease.expires_at.isoformat())
        # Retry at expiry, or sooner (a released lease is taken within one renewal period).
        wait = min((lease.expires_at - self._clock()).total_seconds() + 0.05, self._lease_renew_every)
        await self._sleep(max(wait, 0.05), lambda: not self._wanted())

    async def _renew_loop(self, on_lost: Callable[[Lease | None], None]) -> None:
        """Renew the lease every `lease_renew_every` s; call `on_lost` when it is gone."""
        while True:
            await asyncio.sleep(self._lease_renew_every)
            try:
                lease = await asyncio.to_thread(self._store.acquire_lease, self.owner, self._lease_ttl)
            except Exception as exc:  # noqa: BLE001 - keep the lease until it really expires
                log.warning("lease renewal failed", error=self._describe(exc))
                expires = self._lease_expires
                if expires is not None and self._clock() >= expires - timedelta(seconds=1):
                    on_lost(None)
                    return
                continue
            if lease.acquired:
                self._lease_expires = lease.expires_at
            else:
                on_lost(lease)
                return

    @contextlib.asynccontextmanager
    async def _renewing(self, on_lost: Callable[[Lease | None], None]) -> AsyncIterator[None]:
        task = asyncio.create_task(self._renew_loop(on_lost))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _lost(self, lease: Lease | None) -> None:
        holder = lease.owner if lease is not None else "nobody (renewal failed)"
        log.warning("lease lost; interrupting the pass", holder=holder)
        self._lease_lost = lease or Lease(owner="unknown", expires_at=self._clock(), acquired=False)
        self._lease_expires = None
        self._on_wake()

    # ---- passes -----------------------------------------------------------------------------
    async def _hold_lease_and_run(self, client: LegifranceClient) -> None:
        """Run passes while desired and the lease holds (releases it on any exit)."""
        log.info("lease acquired", owner=self.owner)
        try:
            async with self._renewing(self._lost):
                while self._wanted() and self._lease_lost is None:
                    mode = self._mode
                    summary = await self._one_pass(client, mode)
                    # The interval separates complete passes: after an interrupted one (mode
                    # change, or a stop undone by a start) the next pass starts at once.
                    if summary.interrupted:
                        continue
                    if self._wanted() and self._lease_lost is None and self._mode == mode:
                        await self._between_passes(mode)
        finally:
            await self._release_lease()  # no-op when the lease was lost

    async def _between_passes(self, mode: Mode) -> None:
        next_run = self._clock() + timedelta(seconds=self.settings.interval_seconds(mode))
        self._set(phase="waiting", detail=f"next {mode} pass at {_hms(next_run)}",
                  current_code=None, next_run_at=next_run)
        await self._sleep(
            (next_run - self._clock()).total_seconds(),
            lambda: not self._wanted() or self._mode != mode or self._lease_lost is not None,
        )

    async def _one_pass(self, client: LegifranceClient, mode: Mode) -> PassSummary:
        interrupt = asyncio.Event()
        self._pass_mode, self._interrupt = mode, interrupt
        if self._must_interrupt():
            interrupt.set()
        codes = tuple(self.settings.codes_for(mode))
        with self._status.update() as s:
            s.phase, s.detail = "harvesting", f"{mode} pass over {len(codes)} codes"
            s.next_run_at, s.codes = None, []
            s.pass_fetched = s.pass_stored = s.pass_skipped = s.pass_failed = 0
        try:
            summary = await self._supervised_pass(mode, codes, client, interrupt)
        finally:
            self._interrupt = self._pass_mode = None
            self._set(last_run_at=self._clock(), current_code=None)
        return summary

    async def _supervised_pass(
        self, mode: Mode, codes: Sequence[str], client: LegifranceClient, interrupt: asyncio.Event
    ) -> PassSummary:
        """Run the pass; once `interrupt` is set give it `interrupt_grace` s to commit and
        return, then cancel it."""
        task = asyncio.create_task(
            self._run_pass(
                mode,
                codes,
                client=client,
                store=self._store,
                status=self._status,
                options=HarvestOptions(
                    min_chars=self.settings.min_article_chars,
                    max_in_flight=self.settings.max_in_flight,
                ),
                interrupt=interrupt,
            )
        )
        interrupted = asyncio.create_task(interrupt.wait())
        try:
            await asyncio.wait({task, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=self._grace)
            if not task.done():
                log.warning("pass did not return after the interrupt; cancelling it", grace=self._grace)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return PassSummary(mode=str(mode), codes=len(codes), interrupted=True)
            return task.result()
        finally:
            interrupted.cancel()
            if not task.done():  # we were cancelled ourselves
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # ---- single pass in the caller's loop (CLI `run --once`) --------------------------------
    async def run_once(self, mode: Mode | None = None, *, interrupt: asyncio.Event | None = None) -> PassSummary:
        """One pass in the current event loop, holding the lease (LeaseHeld if another
        collector holds it). Setting `interrupt` (SIGTERM) stops it between two articles."""
        if self.alive:
            raise RuntimeError("the collector thread is running; run_once needs it stopped")
        mode = mode or self._mode
        interrupt = interrupt or asyncio.Event()
        client = self._client_factory(self._budget)
        try:
            lease = await self._acquire_lease()
            if not lease.acquired:
                raise LeaseHeld(lease)

            def lost(lease: Lease | None) -> None:
                self._lease_lost = lease
                self._lease_expires = None
                log.warning("lease lost; interrupting the pass")
                interrupt.set()

            async with self._renewing(lost):
                codes = tuple(self.settings.codes_for(mode))
                self._set(phase="harvesting", detail=f"{mode} pass over {len(codes)} codes")
                summary = await self._supervised_pass(mode, codes, client, interrupt)
            return summary
        finally:
            await self._close(client)
            self._set(phase="idle", detail=None, current_code=None)

    # ---- status publishing ------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        """Publish the budget every `publish_every` s and the store counters every
        `counters_every` s into the status board (the page reads the board only)."""
        while True:
            self._publish_budget()
            await asyncio.to_thread(self._refresh_counters)
            await asyncio.sleep(self._publish_every)

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

    def _refresh_counters(self, force: bool = False) -> None:
        if not self._counters_lock.acquire(blocking=False):
            return  # another thread is reading them right now
        try:
            now = self._clock()
            fresh = self._counters_at is not None and (now - self._counters_at).total_seconds() < self._counters_every
            if fresh and not force:
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

    def _fail(self, exc: BaseException, *, fatal: bool, retry_in: float | None = None) -> None:
        message = self._describe(exc)
        self._status.error(message)
        if fatal:
            self._set(phase="error", detail=f"error: {message}; retrying in {self._fatal_retry:.0f} s or on Start")
            log.error("collector error; waiting", error=message, retry_in=self._fatal_retry)
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


def summary_dict(summary: PassSummary) -> dict[str, Any]:
    """PassSummary as a JSON-ready dict (datetimes as ISO strings)."""
    data = asdict(summary)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    return data
