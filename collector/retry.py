"""Retries in one place: how long to wait before the next attempt, and the loop that waits.

The delay functions are pure: they take the random source (and `now`, for an HTTP-date), so a
test passes fixed ones. `retry_call` / `retry_async` run an attempt until it succeeds, raises an
exception that does not retry (not in `retry_on`, or in `give_up`), or has used every attempt
(the last error is then re-raised). Between attempts they wait the error's own delay (a server's
Retry-After) when it has one, else the backoff.
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
RetryAfter = Callable[[BaseException], float | None]  # the wait an error asks for (Retry-After), or None


def backoff_delay(failure: int, base: float, cap: float, rng: Callable[[], float] | None = None) -> float:
    """base * 2**(failure - 1), at most `cap`; with `rng` (a uniform [0, 1) source), full
    jitter: a uniform share of it, so clients that failed together do not retry together."""
    delay = min(cap, base * 2.0 ** min(failure - 1, 64))  # past 2**64 any cap is reached: no overflow
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


def _wait(failure: int, exc: BaseException, attempts: int, give_up: Errors, delay: Delay,
          retry_after: RetryAfter | None, on_retry: OnRetry | None) -> float | None:
    """The wait after failed attempt `failure`, or None when `exc` is to be raised: the last
    attempt, or an error in `give_up`. The error's own wait (`retry_after`) wins over `delay`."""
    if failure >= attempts or isinstance(exc, give_up):
        return None
    wait = retry_after(exc) if retry_after is not None else None
    if wait is None:
        wait = delay(failure)
    if on_retry is not None:
        on_retry(failure, exc, wait)
    return wait


def retry_call(attempt: Callable[[], T], *, attempts: int, retry_on: Errors, delay: Delay, give_up: Errors = (),
               retry_after: RetryAfter | None = None, on_retry: OnRetry | None = None,
               sleep: Callable[[float], object] = time.sleep) -> T:
    """`attempt()` until it returns; an error in `retry_on` (and not in `give_up`) is retried
    after `retry_after(error)` when that says, else `delay(n)`, up to `attempts` tries in all,
    then re-raised; any other is raised at once."""
    for failure in range(1, attempts + 1):
        try:
            return attempt()
        except retry_on as exc:
            wait = _wait(failure, exc, attempts, give_up, delay, retry_after, on_retry)
            if wait is None:
                raise
        sleep(wait)
    raise AssertionError("unreachable: attempts must be >= 1")


async def retry_async(attempt: Callable[[], Awaitable[T]], *, attempts: int, retry_on: Errors, delay: Delay,
                      give_up: Errors = (), retry_after: RetryAfter | None = None, on_retry: OnRetry | None = None,
                      sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> T:
    """`retry_call` for a coroutine function; waits with `sleep` (asyncio.sleep: cancellable)."""
    for failure in range(1, attempts + 1):
        try:
            return await attempt()
        except retry_on as exc:
            wait = _wait(failure, exc, attempts, give_up, delay, retry_after, on_retry)
            if wait is None:
                raise
        await sleep(wait)
    raise AssertionError("unreachable: attempts must be >= 1")
