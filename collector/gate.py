"""The dashboard's password check, throttled per session and per process.

Two delays, because a script can open a new session for every guess:

- per session: after n wrong passwords in a session, its next check waits
  `min(SESSION_CAP, BASE * 2**(n-1))` (0.5 s, 1 s, 2 s, ... 30 s); only that session waits.
- per process: every check, from any session, takes the next free slot of one shared queue;
  slots are spaced by `min(PROCESS_CAP, BASE * 2**(f-1))` where f counts the wrong passwords
  of the whole process (forgotten after QUIET_RESET seconds without one). So the process
  checks at most one password per PROCESS_CAP seconds under a sustained attack, however many
  sessions it comes from. A check whose slot lies more than MAX_QUEUE seconds ahead is refused
  unchecked (the caller says "try again in N s") instead of holding a thread that long: under
  attack the rightful user may have to retry, never wait without bound.

Wrong passwords are logged with the counters, never with what was typed.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("collector.gate")

BASE_DELAY = 0.5
SESSION_CAP = 30.0
PROCESS_CAP = 5.0
MAX_QUEUE = 15.0
QUIET_RESET = 900.0


def backoff(failures: int, cap: float, base: float = BASE_DELAY) -> float:
    """0 before the first failure, then base, 2*base, 4*base, ... up to cap."""
    return 0.0 if failures <= 0 else min(cap, base * 2 ** min(failures - 1, 32))


@dataclass(frozen=True)
class Verdict:
    """The outcome of one attempt: `ok`, or refused unchecked for `retry_after` seconds."""

    ok: bool
    retry_after: float | None = None


class PasswordGate:
    """Process-wide: one instance shared by every session (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        session_cap: float = SESSION_CAP,
        process_cap: float = PROCESS_CAP,
        max_queue: float = MAX_QUEUE,
        quiet_reset: float = QUIET_RESET,
    ) -> None:
        self._clock, self._sleep = clock, sleep
        self._session_cap, self._process_cap = session_cap, process_cap
        self._max_queue, self._quiet_reset = max_queue, quiet_reset
        self._lock = threading.Lock()
        self._failures = 0  # wrong passwords of the whole process, since the last quiet spell
        self._last_failure = float("-inf")
        self._next_slot = float("-inf")

    @property
    def failures(self) -> int:
        return self._failures

    def attempt(self, entered: str, expected: str, session_failures: int) -> Verdict:
        """Wait this attempt's turn, then compare in constant time. `session_failures`: wrong
        passwords so far in the caller's session (the caller keeps and updates it)."""
        with self._lock:
            now = self._clock()
            if now - self._last_failure > self._quiet_reset:
                self._failures = 0
            earliest = now + backoff(session_failures, self._session_cap)
            slot = max(earliest, self._next_slot)
            if slot - earliest > self._max_queue:
                log.warning("dashboard password attempt refused: too many attempts",
                            retry_after_s=round(slot - now, 1), process_failures=self._failures)
                return Verdict(False, retry_after=slot - now)
            self._next_slot = slot + backoff(self._failures, self._process_cap)
        if slot > now:
            self._sleep(slot - now)
        if hmac.compare_digest(entered.encode(), expected.encode()):
            return Verdict(True)
        with self._lock:
            self._failures += 1
            self._last_failure = self._clock()
            failures = self._failures
            # the next check, from any session, waits at least the new spacing
            self._next_slot = max(self._next_slot, self._last_failure + backoff(failures, self._process_cap))
        log.warning("dashboard password refused", session_failures=session_failures + 1,
                    process_failures=failures, waited_s=round(max(0.0, slot - now), 2))
        return Verdict(False)
