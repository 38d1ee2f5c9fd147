"""The hourly request budget lives in the store (collector_request_counters), so a restarted
process goes on from what the hour already spent, and processes sharing the store share one
budget. Real processes against the emulator, whose own request count is the referee."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from collector.ratelimit import window_keys
from tests.production.conftest import Demo, Proc, Rig, wait_for

FLUSH_BATCH = 20  # RequestBudget(flush_batch=...): spent requests not yet in the ledger, at most
MAX_IN_FLIGHT = 8  # LEGIFRANCE_MAX_IN_FLIGHT default


def same_hour_for(seconds: float) -> None:
    """Start on this side of an hour boundary: the hourly window must not roll mid-test."""
    left = 3600 - time.time() % 3600
    if left < seconds:
        time.sleep(left + 1)


def settled(demo: Demo, quiet: float = 3.0) -> Callable[[], int | None]:
    """A poll: the emulator's API request count once it has not moved for `quiet` seconds."""
    seen: dict[str, float] = {"count": -1, "since": time.monotonic()}

    def poll() -> int | None:
        count = demo.api_requests()
        now = time.monotonic()
        if count != seen["count"]:
            seen["count"], seen["since"] = count, now
            return None
        return count if count > 0 and now - seen["since"] >= quiet else None

    return poll


def ledger_hour(rig: Rig) -> int:
    hour_key, _ = window_keys(time.time())
    rows = rig.query("SELECT count FROM collector_request_counters WHERE window_key = ?", hour_key)
    return int(rows[0][0]) if rows else 0


def test_a_process_restarted_mid_hour_goes_on_from_the_hours_count(make_rig: Callable[..., Rig]) -> None:
    same_hour_for(180)
    rig = make_rig("--articles", "600")
    state = rig.root / "tmp" / "state.json"
    first = rig.cli("run", "--once", "--mode", "MAINTENANCE", state_file=state)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    spent, tokens = summary["requests"], summary["token_requests"]
    used = rig.cli_status(state)["requests"]["hour"]["used"]
    assert tokens == 1 and used == spent + tokens and spent == rig.demo.api_requests() > 0  # tokens take slots too

    # The next process may spend only `extra` more this hour: it starts from `used`, not from 0.
    extra = 15
    rig.demo.reset_stats()
    second = rig.collector("run", "--once", "--mode", "MASSIVE", state_file=state,
                           LEGIFRANCE_MAX_REQUESTS_PER_HOUR=str(used + extra))
    # one of the `extra` slots goes to the second process's token request
    assert wait_for(settled(rig.demo), 60, "the second process to stop at the hour's limit") == extra - 1
    assert second.alive(), "it waits for the next hour instead of spending more"
    assert second.terminate(30) < 20 and second.proc.returncode == 0
    summary = pass_summary(second)
    assert summary["requests"] + summary["token_requests"] == extra and summary["interrupted"] is True
    assert rig.cli_status(state)["requests"]["hour"]["used"] == used + extra == ledger_hour(rig)


def pass_summary(proc: Proc) -> dict[str, Any]:
    """The pass summary: the last JSON line the CLI printed that carries `requests` and `codes`."""
    for line in reversed(proc.output().splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            if "event" not in data and {"codes", "requests"} <= data.keys():
                return data
    pytest.fail("no summary line")


def holder_and_standby(a: Proc, b: Proc) -> tuple[Proc, Proc] | None:
    if a.events("lease acquired") and b.events("standby"):
        return a, b
    if b.events("lease acquired") and a.events("standby"):
        return b, a
    return None


@pytest.mark.parametrize("case", ["kill-9 mid-budget", "sigterm once spent"])
def test_two_processes_on_one_store_share_one_hourly_budget(make_rig: Callable[..., Rig], case: str) -> None:
    """Two collectors on one store with a small hourly limit: the lease lets one spend at a
    time; the holder ends (a crash halfway, or a deploy's SIGTERM once the hour is spent) and
    the other takes over with what is left. The emulator's request count is the truth."""
    same_hour_for(180)
    limit = 160
    rig = make_rig("--articles", "3000")
    env = {"LEGIFRANCE_MAX_REQUESTS_PER_HOUR": str(limit), "LEGIFRANCE_MAX_REQUESTS_PER_SECOND": "20",
           "COLLECTOR_LEASE_TTL_SECONDS": "3"}
    one = rig.collector("run", "--mode", "MASSIVE", state_file=rig.root / "one.json", **env)
    two = rig.collector("run", "--mode", "MASSIVE", state_file=rig.root / "two.json", **env)
    try:
        a, b = wait_for(lambda: holder_and_standby(one, two), 60, "one collector and one standby")
    except pytest.fail.Exception:  # say what each process was doing
        print("--- one\n" + one.output()[-3000:] + "\n--- two\n" + two.output()[-3000:])
        raise
    if case == "kill-9 mid-budget":
        wait_for(lambda: ledger_hour(rig) >= limit // 2, 60, "A to spend half the budget")
        assert ledger_hour(rig) < limit
        a.kill9()  # its last requests, not yet written to the ledger, are invisible to B
    else:
        assert wait_for(settled(rig.demo), 60, "A to spend the whole budget") <= limit
        assert a.alive(), "A waits for the next hour"
        a.terminate(30)  # flushes its count and releases the lease
    wait_for(lambda: b.events("lease acquired"), 60, "B to take over")
    total = wait_for(settled(rig.demo), 90, "B to stop at the hour's limit")
    assert b.alive() and b.terminate(30) < 20

    print(f"{case}: {total} API requests for a limit of {limit} (slack {total - limit}), "
          f"ledger {ledger_hour(rig)}")
    if case == "kill-9 mid-budget":
        assert total <= limit + FLUSH_BATCH + MAX_IN_FLIGHT
    else:
        assert total <= limit, "A flushed its count on exit: B, idle until then, spends nothing more"
