"""Request budget: per second / per hour / per day windows plus a cap on requests in flight.

STUB: signatures agreed between helpers; the implementation replaces the bodies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


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


class RequestBudget:
    """Async gate every HTTP request to the API passes through (thread-safe snapshot)."""

    def __init__(
        self,
        per_second: int,
        per_hour: int,
        per_day: int,
        max_in_flight: int,
        *,
        ledger: RequestLedger | None = None,
    ) -> None:
        raise NotImplementedError

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait (without busy-waiting) until every window allows one more request and an
        in-flight place is free; count the request; release the place on exit.
        Cancellation (stop) interrupts the wait at once."""
        raise NotImplementedError
        yield

    def snapshot(self) -> BudgetSnapshot:
        raise NotImplementedError
