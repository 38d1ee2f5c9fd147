"""Retries in one place: how long to wait before the next attempt, and the loop that waits.

The delay functions are pure: they take the random source (and `now`, for an HTTP-date), so a
test passes fixed ones. `retry_call` / `retry_async` run an attempt until it succeeds, raises an
exception that does not retry (not in `retry_on`, or in `give_up`), or has used every attempt
(the last error is then re-raised).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TypeVar

T = TypeVar("T")

Delay = Callable[[int], float]  # seconds to wait after failed attempt number n (1, 2, ...)
OnRetry = Callable[[int, BaseException, float], None]  # (failed attempt, its error, delay)


def backoff_delay(failure: int, base: float, cap: float, rng: Callable[[], float] | None = None) -> float:
    """base * 2**(failure - 1), at most `cap`; with `rng` (a uniform [0, 1) source), full
    jitter: a uniform share of it, so clients that failed together do not retry together."""
    delay = min(cap, base * 2 ** (failure - 1))
    return delay * rng() if rng is not None else delay


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A Retry-After header (delay seconds or HTTP-date) as seconds from `now` (epoch s)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def jittered(base: float, cap: float, rng: Callable[[], float] = random.random) -> Delay:
    """A Delay: full-jitter exponential backoff from `base` up to `cap`."""
    return lambda failure: backoff_delay(failure, base, cap, rng)


Errors = tuple[type[BaseException], ...]


def retry_call(attempt: Callable[[], T], *, attempts: int, retry_on: Errors, delay: Delay, give_up: Errors = (),
               on_retry: OnRetry | None = None, sleep: Callable[[float], None] = time.sleep) -> T:
    """`attempt()` until it returns; an error in `retry_on` (and not in `give_up`) is retried
    after `delay(n)`, up to `attempts` tries in all, then re-raised; any other is raised at once."""
    for failure in range(1, attempts + 1):
        try:
            return attempt()
        except retry_on as exc:
            if failure >= attempts or isinstance(exc, give_up):
                raise
            wait = delay(failure)
            if on_retry is not None:
                on_retry(failure, exc, wait)
        sleep(wait)
    raise AssertionError("unreachable: attempts must be >= 1")


async def retry_async(attempt: Callable[[], Awaitable[T]], *, attempts: int, retry_on: Errors, delay: Delay,
                      give_up: Errors = (), on_retry: OnRetry | None = None) -> T:
    """`retry_call` for a coroutine function; waits with asyncio.sleep (cancellable)."""
    for failure in range(1, attempts + 1):
        try:
            return await attempt()
        except retry_on as exc:
            if failure >= attempts or isinstance(exc, give_up):
                raise
            wait = delay(failure)
            if on_retry is not None:
                on_retry(failure, exc, wait)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable: attempts must be >= 1")
