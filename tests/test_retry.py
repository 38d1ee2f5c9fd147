"""collector.retry: the pure delay functions (fixed random sources and clocks) and the retry loops
(the waits recorded instead of slept)."""

from __future__ import annotations

import asyncio

import pytest

from collector.retry import backoff_delay, jittered, retry_after_seconds, retry_async, retry_call


def test_backoff_doubles_up_to_the_cap_and_jitter_takes_a_share() -> None:
    assert [backoff_delay(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff_delay(3, 0.5, 3.0, rng=lambda: 0.25) == 0.5
    assert jittered(1.0, 10.0, rng=lambda: 0.5)(4) == 4.0
    assert backoff_delay(5000, 5.0, 300.0) == 300.0  # days of failures in a row: the cap, no OverflowError


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),  # an HTTP-date, 10 s after `now`
        ("soon", None),
        ("", None),
        (None, None),
        ("inf", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str | None, seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_seconds(header, now) == seconds


class Flaky:
    """Fails with the given errors in turn, then returns "ok"; counts the calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retry_call_retries_what_it_is_told_and_waits_the_delays() -> None:
    waits: list[float] = []
    seen: list[tuple[int, str, float]] = []
    flaky = Flaky(TimeoutError("a"), TimeoutError("b"))
    result = retry_call(flaky, attempts=3, retry_on=(TimeoutError,), delay=lambda n: n * 10.0,
                        on_retry=lambda n, exc, d: seen.append((n, str(exc), d)), sleep=waits.append)
    assert (result, flaky.calls, waits) == ("ok", 3, [10.0, 20.0])
    assert seen == [(1, "a", 10.0), (2, "b", 20.0)]


def test_retry_call_reraises_the_last_error_and_never_retries_the_others() -> None:
    waits: list[float] = []
    exhausted = Flaky(TimeoutError("1"), TimeoutError("2"), TimeoutError("3"))
    with pytest.raises(TimeoutError, match="3"):
        retry_call(exhausted, attempts=3, retry_on=(TimeoutError,), delay=lambda n: 1.0, sleep=waits.append)
    assert exhausted.calls == 3 and waits == [1.0, 1.0]

    other = Flaky(KeyError("no"))
    with pytest.raises(KeyError):
        retry_call(other, attempts=5, retry_on=(TimeoutError,), delay=lambda n: 1.0, sleep=waits.append)
    assert other.calls == 1


def test_give_up_wins_over_retry_on() -> None:
    class Permanent(OSError):
        pass

    flaky = Flaky(Permanent("bad key"))
    with pytest.raises(Permanent):
        retry_call(flaky, attempts=5, retry_on=(OSError,), give_up=(Permanent,), delay=lambda n: 1.0,
                   sleep=lambda s: None)
    assert flaky.calls == 1


def test_retry_async_follows_the_same_rules() -> None:
    flaky = Flaky(ConnectionError("x"))

    async def attempt() -> str:
        return flaky()

    assert asyncio.run(retry_async(attempt, attempts=2, retry_on=(ConnectionError,), delay=lambda n: 0.0)) == "ok"
    assert flaky.calls == 2
    gives_up = Flaky(ConnectionError("y"), ConnectionError("z"))

    async def failing() -> str:
        return gives_up()

    with pytest.raises(ConnectionError, match="z"):
        asyncio.run(retry_async(failing, attempts=2, retry_on=(ConnectionError,), delay=lambda n: 0.0))


def test_an_error_that_names_its_wait_is_waited_instead_of_the_backoff() -> None:
    class Busy(Exception):
        def __init__(self, after: float | None) -> None:
            self.after = after

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    flaky = Flaky(Busy(7.0), Busy(None), Busy(2.0))

    async def attempt() -> str:
        return flaky()

    result = asyncio.run(retry_async(attempt, attempts=4, retry_on=(Busy,), delay=lambda n: n * 100.0,
                                     retry_after=lambda exc: exc.after if isinstance(exc, Busy) else None, sleep=sleep))
    assert (result, waits) == ("ok", [7.0, 200.0, 2.0])
