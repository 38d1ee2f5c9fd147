"""Request budget: per second / per hour / per day windows plus a cap on requests in flight.

Every HTTP request to the API takes a slot: `async with budget.slot() as ticket: ...`.

* per second: a sliding log of start times over (1 s + `second_margin`), so a server that
  counts arrivals in a sliding 1 s window never sees more than `per_second`, even with a
  little network jitter; and, since a request may reach the server at any moment before its
  answer comes back (a busy event loop, a new connection, the server's own queue), each request
  also counts until 1 s (+ margin) after its answer, in-flight ones as "now" — or, when the
  caller reports the moment it finished writing the request (`ticket.sent()`, from the HTTP
  trace of a real connection), until 1 s (+ margin) after that moment: a request is late
  between its slot and its write (tens of ms on a loaded machine), a written one reaches the
  server within about a millisecond, and counting until the answer would cost the whole
  latency on every request (figures in docs/PERFORMANCE.md);
* per hour / per day: fixed UTC windows keyed "h:YYYY-MM-DDTHH" / "d:YYYY-MM-DD" so they can
  be persisted in a ledger (the Store) and shared across restarts and processes;
* in flight: at most `max_in_flight` slots are held at once;
* and two starts are at least half a window / `per_second` apart, so the requests reach the
  server spread out rather than in bursts it has to queue.

Waiting never polls: the exact time the binding window frees up is computed and slept to;
an in-flight wait is woken by the release of a slot.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

_HOUR = 3600.0
_DAY = 86400.0
_EPSILON = 0.001  # sleep a hair past the boundary so the re-check sees the window freed


class RequestLedger(Protocol):
    """Where spent requests are recorded so restarts and other processes see them (a Store)."""

    def add_requests(self, window_keys: Sequence[str], n: int) -> None: ...

    def get_requests(self, window_keys: Sequence[str]) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    second_used: int
    second_limit: int
    hour_used: int
    hour_limit: int
    day_used: int
    day_limit: int
    in_flight: int
    max_in_flight: int
    waiting_for: str | None  # None | "second" | "hour" | "day"
    waiting_until: datetime | None  # when the binding window frees up


def window_keys(epoch_seconds: float) -> tuple[str, str]:
    """The ledger keys of the UTC hour and day holding `epoch_seconds`."""
    moment = datetime.fromtimestamp(epoch_seconds, timezone.utc)
    return moment.strftime("h:%Y-%m-%dT%H"), moment.strftime("d:%Y-%m-%d")


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"RequestBudget: {name} must be an integer >= 1, got {value!r}")
    return value


class RequestBudget:
    """Async gate every HTTP request to the API passes through (thread-safe snapshot).

    Ledger: spent requests are batched and written every `flush_every` seconds or every
    `flush_batch` requests (checked when a slot is taken), and on `await flush()` — so a crash
    loses at most that many from the persisted counts. The ledger is re-read every
    `reload_every` seconds, so processes sharing one store share one budget. Ledger calls run
    in a worker thread; a ledger failure is logged and never fails a request.
    The constructor and `set_ledger` read the ledger once, synchronously (setup code).
    """

    def __init__(
        self,
        per_second: int,
        per_hour: int,
        per_day: int,
        max_in_flight: int,
        *,
        ledger: RequestLedger | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        second_margin: float = 0.025,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        flush_every: float = 1.0,
        flush_batch: int = 20,
        reload_every: float = 5.0,
    ) -> None:
        self.per_second = _positive_int("per_second", per_second)
        self.per_hour = _positive_int("per_hour", per_hour)
        self.per_day = _positive_int("per_day", per_day)
        self.max_in_flight = _positive_int("max_in_flight", max_in_flight)
        if second_margin < 0:
            raise ValueError(f"RequestBudget: second_margin must be >= 0, got {second_margin!r}")
        self._window = 1.0 + second_margin
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._flush_every = flush_every
        self._flush_batch = flush_batch
        self._reload_every = reload_every

        self._lock = threading.Lock()  # guards every field below (snapshot runs on other threads)
        self._io_lock = threading.Lock()  # one ledger exchange at a time
        self._starts: deque[float] = deque()  # monotonic start times inside the sliding window
        # When the server has surely seen each request of the window (monotonic): its answer,
        # or the end of its writing when the caller reported it (`SlotTicket.sent`). Appended at
        # that moment, so in order.
        self._seen: deque[float] = deque()
        self._in_flight = 0
        self._unsent = 0  # in flight and not reported written: counted as seen "now"
        self._waiters: list[asyncio.Future[None]] = []  # woken when a slot is released
        self._waits: dict[int, tuple[str, datetime]] = {}  # waiter id -> (window, frees at)
        self._hour_key, self._day_key = window_keys(clock())
        self._hour_used = 0
        self._day_used = 0
        self._pending: Counter[tuple[str, str]] = Counter()  # unflushed starts per (hour, day)
        self._needs_load = False
        self._last_sync = monotonic()
        self._sync_running = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._ledger: RequestLedger | None = None
        if ledger is not None:
            self.set_ledger(ledger)

    # ---- ledger ------------------------------------------------------------------------------
    def set_ledger(self, ledger: RequestLedger | None) -> None:
        """Attach (or detach) the ledger and load the current hour/day counts (blocking)."""
        with self._lock:
            self._ledger = ledger
            self._needs_load = ledger is not None
        if ledger is not None:
            self._sync_blocking()

    async def flush(self) -> None:
        """Write the unflushed requests to the ledger and re-read the shared counts."""
        if self._ledger is not None:
            await asyncio.to_thread(self._sync_blocking)

    def _sync_blocking(self) -> None:
        """Write pending counts, then read the current windows back (runs in a worker thread)."""
        with self._io_lock:
            with self._lock:
                ledger = self._ledger
                if ledger is None:
                    return
                batch = dict(self._pending)
                self._pending.clear()
                hour_key, day_key = self._hour_key, self._day_key
                self._needs_load = False
                self._last_sync = self._monotonic()
            failed: dict[tuple[str, str], int] = {}
            for keys, n in batch.items():
                try:
                    ledger.add_requests(list(keys), n)
                except Exception as exc:  # noqa: BLE001 - the ledger must never kill a request
                    failed[keys] = n
                    log.warning("budget ledger write failed", error=_describe(exc), requests=n)
            try:
                counts: dict[str, int] | None = ledger.get_requests([hour_key, day_key])
            except Exception as exc:  # noqa: BLE001
                counts = None
                log.warning("budget ledger read failed", error=_describe(exc))
            with self._lock:
                self._pending.update(failed)  # retried at the next flush
                if counts is None or (self._hour_key, self._day_key) != (hour_key, day_key):
                    return
                pending_hour = sum(n for (h, _), n in self._pending.items() if h == hour_key)
                pending_day = sum(n for (_, d), n in self._pending.items() if d == day_key)
                # never lower a count: the ledger may lag behind what this process spent
                self._hour_used = max(self._hour_used, int(counts.get(hour_key, 0)) + pending_hour)
                self._day_used = max(self._day_used, int(counts.get(day_key, 0)) + pending_day)

    def _stale(self, mono: float) -> bool:
        """The shared counts were last read over `reload_every` s ago (the process was idle,
        e.g. in standby behind another collector): read them before spending, or the first
        requests would be granted against what the others had spent long ago (caller holds
        the lock). A busy process syncs every `flush_every` s in the background instead."""
        return self._ledger is not None and not self._sync_running and mono - self._last_sync >= self._reload_every

    def _sync_due(self, mono: float) -> bool:
        """Whether to start a background ledger exchange (caller holds the lock)."""
        if self._ledger is None or self._sync_running:
            return False
        pending = sum(self._pending.values())
        age = mono - self._last_sync
        return (
            pending >= self._flush_batch
            or (pending > 0 and age >= self._flush_every)
            or age >= self._reload_every
        )

    def _start_background_sync(self) -> None:
        task = asyncio.get_running_loop().create_task(self._background_sync())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background_sync(self) -> None:
        try:
            await asyncio.to_thread(self._sync_blocking)
        finally:
            with self._lock:
                self._sync_running = False

    # ---- windows -----------------------------------------------------------------------------
    def _roll_windows(self, wall: float) -> None:
        """Start fresh counts when the UTC hour or day changed (caller holds the lock)."""
        hour_key, day_key = window_keys(wall)
        if hour_key != self._hour_key:
            self._hour_key, self._hour_used = hour_key, 0
            self._needs_load = self._ledger is not None
        if day_key != self._day_key:
            self._day_key, self._day_used = day_key, 0
            self._needs_load = self._ledger is not None

    def _binding(self, wall: float, mono: float) -> tuple[str | None, float]:
        """The window that forbids a start now and how long until it frees (caller holds lock)."""
        while self._starts and self._starts[0] <= mono - self._window:
            self._starts.popleft()
        while self._seen and self._seen[0] <= mono - self._window:
            self._seen.popleft()
        reason: str | None = None
        delay = 0.0
        if len(self._starts) >= self.per_second:
            reason, delay = "second", self._starts[-self.per_second] + self._window - mono
        # Never two starts closer than half the average spacing: the window alone would replay
        # its first burst every second, and a burst waits in the server's queue (late arrivals).
        gap = self._starts[-1] + self._window / self.per_second / 2 - mono if self._starts else 0.0
        if gap > delay:
            reason, delay = "second", gap
        # Seen requests in the window plus the unsent ones (in flight alone is capped in _acquire).
        excess = len(self._seen) + self._unsent - self.per_second + 1
        if 0 < excess <= len(self._seen):
            end_delay = self._seen[excess - 1] + self._window - mono
            if end_delay > delay:
                reason, delay = "second", end_delay
        if self._hour_used >= self.per_hour:
            hour_delay = (wall // _HOUR + 1) * _HOUR - wall
            if hour_delay > delay:
                reason, delay = "hour", hour_delay
        if self._day_used >= self.per_day:
            day_delay = (wall // _DAY + 1) * _DAY - wall
            if day_delay > delay:
                reason, delay = "day", day_delay
        return reason, max(delay, 0.0)

    # ---- slots -------------------------------------------------------------------------------
    @asynccontextmanager
    async def slot(self) -> AsyncIterator[SlotTicket]:
        """Wait (without busy-waiting) until every window allows one more request and an
        in-flight place is free; count the request; release the place on exit. The ticket's
        `sent()` reports that the request is fully written (see the module doc).
        Cancellation (stop) interrupts the wait at once and counts nothing."""
        await self._acquire()
        ticket = SlotTicket(self)
        try:
            yield ticket
        finally:
            self._release(ticket.was_sent)

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        me = object()
        try:
            while True:
                waiter: asyncio.Future[None] | None = None
                with self._lock:
                    wall, mono = self._clock(), self._monotonic()
                    self._roll_windows(wall)
                    load_first = self._needs_load or self._stale(mono)
                    if not load_first:
                        reason, delay = self._binding(wall, mono)
                        if reason is None and self._in_flight < min(self.max_in_flight, self.per_second):
                            self._take(mono)
                            if self._sync_due(mono):
                                self._sync_running = True
                                self._start_background_sync()
                            return
                        if reason is None:
                            waiter = loop.create_future()
                            self._waiters.append(waiter)
                            self._waits.pop(id(me), None)
                        else:
                            until = datetime.fromtimestamp(wall + delay, timezone.utc)
                            self._waits[id(me)] = (reason, until)
                if load_first:
                    await asyncio.to_thread(self._sync_blocking)  # a new window: read its count
                elif waiter is not None:
                    try:
                        await waiter
                    finally:
                        with self._lock:
                            if waiter in self._waiters:
                                self._waiters.remove(waiter)
                else:
                    await self._sleep(delay + _EPSILON)
        finally:
            with self._lock:
                self._waits.pop(id(me), None)

    def _take(self, mono: float) -> None:
        """Count one start (caller holds the lock)."""
        self._starts.append(mono)
        self._hour_used += 1
        self._day_used += 1
        self._in_flight += 1
        self._unsent += 1
        self._pending[(self._hour_key, self._day_key)] += 1

    def _mark_sent(self) -> None:
        with self._lock:
            self._unsent -= 1
            self._seen.append(self._monotonic())

    def _release(self, was_sent: bool) -> None:
        with self._lock:
            self._in_flight -= 1
            if not was_sent:
                self._unsent -= 1
                self._seen.append(self._monotonic())
            waiters, self._waiters = self._waiters, []
        # wake every in-flight waiter: they re-check, the first one takes the place
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for waiter in waiters:
            waiter_loop = waiter.get_loop()
            if waiter_loop is running:
                _wake(waiter)
            elif not waiter_loop.is_closed():
                waiter_loop.call_soon_threadsafe(_wake, waiter)

    # ---- status ------------------------------------------------------------------------------
    def snapshot(self) -> BudgetSnapshot:
        """A consistent copy of the counters; safe from any thread."""
        with self._lock:
            wall, mono = self._clock(), self._monotonic()
            hour_key, day_key = window_keys(wall)
            waiting_for: str | None = None
            waiting_until: datetime | None = None
            for rank in ("day", "hour", "second"):
                untils = [until for reason, until in self._waits.values() if reason == rank]
                if untils:
                    waiting_for, waiting_until = rank, max(untils)
                    break
            return BudgetSnapshot(
                second_used=sum(1 for start in self._starts if start > mono - 1.0),
                second_limit=self.per_second,
                hour_used=self._hour_used if hour_key == self._hour_key else 0,
                hour_limit=self.per_hour,
                day_used=self._day_used if day_key == self._day_key else 0,
                day_limit=self.per_day,
                in_flight=self._in_flight,
                max_in_flight=self.max_in_flight,
                waiting_for=waiting_for,
                waiting_until=waiting_until,
            )


class SlotTicket:
    """Yielded by `RequestBudget.slot()`; `sent()` once the request is fully written."""

    __slots__ = ("_budget", "was_sent")

    def __init__(self, budget: RequestBudget) -> None:
        self._budget = budget
        self.was_sent = False

    def sent(self) -> None:
        """From now on the request counts until a window after this moment, not its answer.
        Only the first call counts."""
        if not self.was_sent:
            self.was_sent = True
            self._budget._mark_sent()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
