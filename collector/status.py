"""Thread-safe status board: the collector thread writes, the page and the routes read snapshots."""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.clock import utcnow
from collector.jsonable import jsonable
from collector.models import CodeProgress
from collector.ratelimit import BudgetSnapshot

THROUGHPUT_BUCKET_SECONDS = 15.0
THROUGHPUT_SAMPLES = 720  # about an hour at one sample every 5 s


@dataclass(slots=True)
class StatusSnapshot:
    """An immutable-by-convention copy of the board, safe to render."""

    running: bool = False  # desired state: the collector is meant to run
    alive: bool = False  # the thread is alive
    mode: str = "MAINTENANCE"
    phase: str = "idle"
    detail: str | None = None  # e.g. "standby: collector held by host:1 until 12:00:30"
    current_code: str | None = None
    codes: list[CodeProgress] = field(default_factory=list)
    stored_total: int = 0  # rows in the store
    rejected_total: int = 0
    pass_fetched: int = 0
    pass_stored: int = 0
    pass_skipped: int = 0
    pass_failed: int = 0
    budget: dict[str, Any] = field(default_factory=dict)  # ratelimit.BudgetSnapshot as dict
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_run_at: datetime | None = None
    next_run_at: datetime | None = None
    state_saved: bool = True  # False when the state file could not be written
    state_error: str | None = None
    store_error: str | None = None  # the store's counters could not be read at the last try
    phase_since: datetime | None = None  # when `phase` last changed (the board's creation at first)
    # (epoch s, articles stored so far, requests spent today) while the collector thread runs
    throughput: list[tuple[float, int, int]] = field(default_factory=list)
    queued_codes: list[str] = field(default_factory=list)  # extra passes waiting (collect_code)
    dump: dict[str, Any] = field(default_factory=dict)  # archive being applied: bytes, articles

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (datetimes as ISO strings)."""
        return jsonable(asdict(self))


class StatusBoard:
    """Holds the live status behind one lock. Writers mutate through `update()`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._s = StatusSnapshot(phase_since=self._now())
        self._phase_seen = self._s.phase
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=THROUGHPUT_SAMPLES)
        self._before_stop: tuple[str, str | None] | None = None  # the phase a pending stop covers

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _note_phase(self) -> None:
        """Under the lock, after any write: stamp `phase_since` when the phase changed."""
        if self._s.phase != self._phase_seen:
            self._phase_seen, self._s.phase_since = self._s.phase, self._now()

    @contextmanager
    def update(self) -> Iterator[StatusSnapshot]:
        """`with board.update() as s: s.phase = "harvesting"` (keep the block short)."""
        with self._lock:
            try:
                yield self._s
            finally:
                self._note_phase()

    def progress(self, code_id: str) -> CodeProgress:
        """The CodeProgress of a code in the current pass (created on first use). Mutate it
        only inside `update()`."""
        for p in self._s.codes:
            if p.code_id == code_id:
                return p
        p = CodeProgress(code_id=code_id)
        self._s.codes.append(p)
        return p

    def error(self, message: str) -> None:
        with self._lock:
            self._s.last_error = message
            self._s.last_error_at = utcnow()

    def set(self, **fields: Any) -> None:
        """Set some fields at once: `board.set(phase="waiting", next_run_at=...)`."""
        with self._lock:
            for name, value in fields.items():
                setattr(self._s, name, value)
            self._note_phase()

    def show_stopping(self, stopping: bool) -> None:
        """Phase "stopping" while a stop is pending; a start before the collector got there puts
        the previous phase back."""
        with self._lock:
            s = self._s
            if stopping and self._before_stop is None:
                self._before_stop = (s.phase, s.detail)
                s.phase, s.detail = "stopping", "stopping: committing what was fetched"
            elif not stopping and self._before_stop is not None:
                if s.phase == "stopping":
                    s.phase, s.detail = self._before_stop
                self._before_stop = None
            self._note_phase()

    def show_idle(self) -> None:
        """The collector loop ended: phase "idle", nothing current or planned."""
        self.set(phase="idle", detail=None, current_code=None, next_run_at=None)
        with self._lock:
            self._before_stop = None

    def show_budget(self, snap: BudgetSnapshot) -> None:
        """Publish the request budget. A pass waiting for the hour or day window shows
        "waiting for budget" (and "harvesting" again once it is available)."""
        with self._lock:
            s = self._s
            s.budget = asdict(snap)
            long_wait = snap.waiting_for in ("hour", "day")
            if s.phase == "harvesting" and long_wait and snap.waiting_until is not None:
                s.phase = "waiting for budget"
                s.detail = f"waiting for the {snap.waiting_for} budget until {snap.waiting_until:%H:%M:%S} UTC"
            elif s.phase == "waiting for budget" and not long_wait:
                s.phase, s.detail = "harvesting", "budget available again"
            self._note_phase()

    def show_totals(self, stored: int, rejected: int, *, sample: bool = True) -> None:
        """The store's row counts (the store answered: no store error), sampled for the
        throughput chart when `sample` (the collector thread runs)."""
        with self._lock:
            self._s.stored_total, self._s.rejected_total = stored, rejected
            self._s.store_error = None
        if sample:
            self.sample_throughput()

    def sample_throughput(self) -> None:
        """Record (now, stored_total, requests today) so the page can chart per-minute rates."""
        with self._lock:
            day_used = int(self._s.budget.get("day_used", 0)) if self._s.budget else 0
            self._samples.append((self._clock(), self._s.stored_total, day_used))

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            snap = copy.deepcopy(self._s)
            snap.throughput = list(self._samples)
        return snap


def throughput_rows(
    samples: list[tuple[float, int, int]], bucket: float = THROUGHPUT_BUCKET_SECONDS
) -> list[dict[str, Any]]:
    """Articles stored and requests spent per minute over consecutive `bucket`-second windows
    (the last sample of each window counts), so bursts of close samples and batch commits do
    not spike the chart. Windows more than two buckets apart (nothing ran between them) start
    a new `segment`, so a chart draws a gap there instead of a line across the idle time.
    The day's request count restarting at midnight UTC counts from zero."""
    last: dict[int, tuple[float, int, int]] = {}
    for t, n, r in samples:
        last[int(t // bucket)] = (t, n, r)
    points = [last[k] for k in sorted(last)]
    rows: list[dict[str, Any]] = []
    segment = 0
    for (t0, n0, r0), (t1, n1, r1) in zip(points, points[1:], strict=False):
        if t1 <= t0:
            continue
        if t1 - t0 > 2 * bucket:
            segment += 1
            continue
        spent = r1 - r0 if r1 >= r0 else r1
        rows.append({
            "time": datetime.fromtimestamp(t1, UTC),
            "articles/min": max(0.0, (n1 - n0) * 60 / (t1 - t0)),
            "requests/min": spent * 60 / (t1 - t0),
            "segment": segment,
        })
    return rows
