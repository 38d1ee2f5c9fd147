"""collector.gate.PasswordGate with a fake clock: per-session backoff, the process-wide queue
that slows a script opening a new session per guess, refusals instead of unbounded waits."""

from __future__ import annotations

import json
import threading

import pytest
import structlog

from collector.gate import PasswordGate, backoff

PASSWORD = "gate-test-password-1c9e"


class FakeTime:
    """A clock that only moves when the gate sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.advance = True
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        if self.advance:
            self.now += seconds


@pytest.fixture
def t() -> FakeTime:
    return FakeTime()


def gate(t: FakeTime, **kw: float) -> PasswordGate:
    return PasswordGate(clock=t.clock, sleep=t.sleep, **kw)


def test_backoff_doubles_from_half_a_second_and_is_capped() -> None:
    assert [backoff(n, 30.0) for n in range(8)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert backoff(10_000, 5.0) == 5.0, "no overflow on huge counts"


def test_one_session_waits_longer_after_each_wrong_password(t: FakeTime) -> None:
    g = gate(t, process_cap=0.0)  # isolate the per-session delay
    failures = 0
    for _ in range(8):
        assert g.attempt("wrong password!", PASSWORD, failures).ok is False
        failures += 1
    assert t.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0], "the first try is free, then doubling to the cap"
    assert g.attempt(PASSWORD, PASSWORD, failures).ok is True
    assert t.sleeps[-1] == 30.0, "the right password waits its turn too: timing tells nothing"


def test_new_sessions_do_not_escape_the_process_throttle(t: FakeTime) -> None:
    """A script opening a fresh session per guess (session_failures always 0) is spaced by
    the process-wide delay: at most one check per PROCESS_CAP seconds once it has grown."""
    g = gate(t)
    start = t.now
    checked = 0
    while t.now - start < 600:
        verdict = g.attempt(f"guess-{checked}", PASSWORD, 0)
        assert verdict.ok is False and verdict.retry_after is None
        checked += 1
    assert t.sleeps[:5] == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert checked <= 600 / 5 + 5, f"{checked} guesses in 10 min"
    assert g.failures == checked


def test_a_crowd_of_sessions_is_refused_instead_of_queued_without_bound(t: FakeTime) -> None:
    """Concurrent checks each take the next slot; one whose slot is too far ahead is refused
    unchecked (the right password included) and says when to come back."""
    g = gate(t, max_queue=15.0)
    for i in range(6):
        g.attempt(f"guess-{i}", PASSWORD, 0)  # the process spacing reaches its 5 s cap
    t.advance = False  # eight sessions arrive at the same instant and wait side by side
    t.sleeps.clear()
    barrier = threading.Barrier(8)
    verdicts = []

    def one(i: int) -> None:
        barrier.wait()
        verdicts.append(g.attempt(PASSWORD if i == 7 else f"crowd-{i}", PASSWORD, 0))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    refused = [v for v in verdicts if v.retry_after is not None]
    assert sorted(t.sleeps) == [5.0, 10.0, 15.0], "one check per 5 s, at most 15 s ahead"
    assert len(refused) == 5 and all(v.retry_after == 20.0 for v in refused)


def test_failures_are_logged_without_the_attempt(t: FakeTime) -> None:
    with structlog.testing.capture_logs() as logs:
        g = gate(t)
        g.attempt("hunter2-the-guess", PASSWORD, 3)
    assert [e["event"] for e in logs] == ["dashboard password refused"]
    assert logs[0]["session_failures"] == 4 and logs[0]["process_failures"] == 1
    assert "hunter2-the-guess" not in json.dumps(logs) and PASSWORD not in json.dumps(logs)


def test_the_count_of_the_process_is_forgotten_after_a_quiet_spell(t: FakeTime) -> None:
    g = gate(t, quiet_reset=900.0)
    for i in range(5):
        g.attempt(f"guess-{i}", PASSWORD, 0)
    t.now += 901
    t.sleeps.clear()
    assert g.attempt(PASSWORD, PASSWORD, 0).ok is True
    assert t.sleeps == [] and g.failures == 0
