"""Thread-safe status board: the collector thread writes, the page and the routes read snapshots."""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from collector.models import CodeProgress

PHASES = ("idle", "harvesting", "waiting", "waiting for budget", "standby", "stopping", "error")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


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
    throughput: list[tuple[float, int]] = field(default_factory=list)  # (epoch s, stored so far)
    dump: dict[str, Any] = field(default_factory=dict)  # archive being applied: bytes, articles

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (datetimes as ISO strings)."""

        def conv(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: conv(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [conv(v) for v in value]
            return value

        return conv(asdict(self))


class StatusBoard:
    """Holds the live status behind one lock. Writers mutate through `update()`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._s = StatusSnapshot()
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque(maxlen=180)

    @contextmanager
    def update(self) -> Iterator[StatusSnapshot]:
        """`with board.update() as s: s.phase = "harvesting"` (keep the block short)."""
        with self._lock:
            yield self._s

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

    def sample_throughput(self) -> None:
        """Record (now, stored_total) so the page can chart articles per minute."""
        with self._lock:
            self._samples.append((self._clock(), self._s.stored_total))

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            snap = copy.deepcopy(self._s)
            snap.throughput = list(self._samples)
        return snap
