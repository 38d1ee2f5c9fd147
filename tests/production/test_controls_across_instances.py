"""Controls reach the collector whichever instance receives them: two real servers on one store
(a Render deploy overlap, or two local servers on one SQLite file); a mode change and a STOP
sent to the STANDBY instance's routes are followed by the instance holding the lease within a
few lease renewals (it re-reads the store's state record at each one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.production.conftest import Proc, Rig, wait_for

pytestmark = pytest.mark.e2e

LEASE_TTL = "6"  # COLLECTOR_LEASE_TTL_SECONDS: renewals (and state checks) every 2 s
FOLLOW_WITHIN = 30.0  # a few renewals, with slack for a busy 2-core machine


def roles(a: Proc, b: Proc) -> tuple[Proc, Proc] | None:
    """(holder, standby) once one harvests and the other waits for the lease."""
    phases = (a.status()["phase"], b.status()["phase"])
    if phases == ("harvesting", "standby"):
        return a, b
    if phases == ("standby", "harvesting"):
        return b, a
    return None


def saved(p: Proc) -> dict[str, Any] | None:
    assert p.state_file is not None
    return json.loads(p.state_file.read_text()) if p.state_file.exists() else None


def test_mode_and_stop_sent_to_the_standby_reach_the_holder(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("--articles", "3000", "--latency-ms", "10")
    env = {"ENABLE_SCHEDULER": "true", "SIPHONNAGE_MODE": "MASSIVE", "COLLECTOR_LEASE_TTL_SECONDS": LEASE_TTL}
    a = rig.dashboard(state_file=rig.root / "a-tmp" / "state.json", wait=False, **env)
    b = rig.dashboard(state_file=rig.root / "b-tmp" / "state.json", wait=False, **env)
    rig.wait_healthy(a)
    rig.wait_healthy(b)
    holder, standby = wait_for(lambda: roles(a, b), 60, "one harvesting and one standby")

    # A mode change sent to the standby: the holder interrupts its MASSIVE pass and switches.
    assert standby.post("/siphonnage/mode", {"mode": "MAINTENANCE"}).json()["state_saved"] is True
    wait_for(lambda: holder.status()["mode"] == "MAINTENANCE", FOLLOW_WITHIN, "the holder to switch mode")
    wait_for(lambda: ("MAINTENANCE",) in rig.query("SELECT mode FROM collector_runs"), FOLLOW_WITHIN,
             "a MAINTENANCE pass by the holder")
    assert holder.status()["running"] is True and standby.status()["phase"] == "standby"
    assert saved(holder)["mode"] == "MAINTENANCE"

    # STOP sent to the standby: the holder stops, commits, releases the lease.
    stop = standby.post("/aspirage/stop").json()
    assert stop["state_saved"] is True and stop["status"]["running"] is False
    status = wait_for(lambda: (s := holder.status())["alive"] is False and s, FOLLOW_WITHIN,
                      "the holder's collector to stop")
    assert (status["running"], status["phase"], status["collector_threads"]) == (False, "idle", 0)
    (change,) = [e for e in holder.events("desired state changed by another instance") if not e["running"]]
    assert change["pid"] == standby.proc.pid and change["level"] == "info"
    assert holder.events("lease released")
    owner, expires = rig.lease() or ("", "")
    assert f":{holder.proc.pid}:" in owner and datetime.fromisoformat(expires) <= datetime.now(UTC)

    # Both local copies say stopped (a restart of either agrees); the store keeps the standby's
    # record: the holder took it in without writing it back.
    record = rig.query("SELECT running, mode, pid FROM collector_state")
    assert record == [(0, "MAINTENANCE", standby.proc.pid)]
    for p in (holder, standby):
        assert (saved(p)["running"], saved(p)["pid"]) == (False, standby.proc.pid)
    assert not standby.events("lease acquired"), "the standby never took over"
    assert standby.status()["alive"] is False
    assert holder.terminate(30) < 20 and standby.terminate(30) < 20
    assert saved(holder)["running"] is False, "shutting down kept the followed state"

