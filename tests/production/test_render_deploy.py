"""A Render deploy on the real server (`python -m streamlit run dashboard.py`, as render.yaml
starts it): the new instance starts on a wiped /tmp next to the old one and resumes from the
store's copy of the state (in standby behind the lease); SIGTERM -> the old one stops between
two articles, commits, releases the lease, keeps the desired state and exits well within
Render's 30 s; the new one takes over at once. Also: a store unreachable at boot."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from tests.conftest import free_port
from tests.production.conftest import Rig, wait_for

pytestmark = pytest.mark.e2e

BATCH = 100  # HarvestOptions.batch_size
MAX_IN_FLIGHT = 8  # LEGIFRANCE_MAX_IN_FLIGHT default
RENDER_GRACE = 30.0  # SIGTERM -> SIGKILL on Render
EXIT_WITHIN = 20.0  # what we require: well within the grace period
LEASE_TTL = 30.0  # COLLECTOR_LEASE_TTL_SECONDS default


def test_deploy_overlap_then_sigterm_hands_over_with_a_wiped_tmp(make_rig: Callable[..., Rig]) -> None:
    """Render's zero-downtime deploy: the new instance starts (fresh /tmp) while the old one
    still collects, waits in standby, and takes over as soon as SIGTERM made the old one go."""
    rig = make_rig("--articles", "3000", "--latency-ms", "10")
    old_tmp = rig.root / "old-instance-tmp" / "scheduler_state.json"
    old = rig.dashboard(state_file=old_tmp)  # ENABLE_SCHEDULER unset: stopped until asked
    status = old.status()
    assert (status["running"], status["state_source"]) == (False, "defaults")
    assert old.post("/siphonnage/mode", {"mode": "MASSIVE"}).json()["state_saved"] is True
    assert old.post("/aspirage/start").json()["state_saved"] is True
    wait_for(lambda: rig.articles() >= BATCH, 90, "a committed batch")

    # The new instance: a fresh filesystem (nothing in its /tmp), same store, same environment.
    new_tmp = rig.root / "new-instance-tmp" / "scheduler_state.json"
    new = rig.dashboard(state_file=new_tmp)
    status = wait_for(lambda: (s := new.status())["phase"] == "standby" and s, 60, "the new instance in standby")
    assert (status["running"], status["mode"], status["massive_active"]) == (True, "MASSIVE", True)
    assert status["state_source"] == "store", "its /tmp is empty: the state came from the store"
    assert f":{old.proc.pid}:" in status["detail"], status["detail"]
    assert old.status()["phase"] == "harvesting", "SIGTERM lands in the middle of a pass"

    took = old.terminate(RENDER_GRACE)
    stopped = time.monotonic()
    print(f"SIGTERM -> exit: {took:.2f} s")
    assert took < EXIT_WITHIN
    assert old.proc.returncode in (0, -signal.SIGTERM), old.output()[-3000:]
    assert old.events("lease released") and old.events("runtime closed")
    # The desired state is kept: still running, in the old instance's file and in the store.
    assert json.loads(old_tmp.read_text())["running"] is True
    assert rig.query("SELECT running, mode FROM collector_state") == [(1, "MASSIVE")]
    # Stopped between two articles and committed: every article the emulator answered is in
    # the store, except at most the requests in flight at the signal (cancelled, fetched again).
    lost = set(rig.demo.served_by_id()) - rig.known_ids()
    print(f"answered but not stored at SIGTERM: {len(lost)}")
    assert len(lost) <= MAX_IN_FLIGHT, sorted(lost)[:20]

    # Released, not left to expire: the standby takes it well before the 30 s expiry.
    stored = rig.articles()
    wait_for(lambda: new.status()["phase"] == "harvesting", LEASE_TTL - 5, "the new instance to take over")
    print(f"handover after the old instance exited: {time.monotonic() - stopped:.1f} s")
    owner, _ = rig.lease() or ("", "")
    assert f":{new.proc.pid}:" in owner
    wait_for(lambda: rig.articles() >= stored + BATCH, 90, "articles stored by the new instance")
    assert new.status()["collector_threads"] == 1
    assert new.terminate(RENDER_GRACE) < EXIT_WITHIN


def test_store_unreachable_at_boot_falls_back_to_the_file_and_says_so(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    state = rig.root / "tmp" / "scheduler_state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"running": True, "mode": "MASSIVE"}))
    key = "sb_secret_unreachable_0c9f4e21"
    server = rig.dashboard(
        state_file=state,
        SUPABASE_URL=f"http://127.0.0.1:{free_port()}",  # nobody listens: connection refused
        SUPABASE_SERVICE_ROLE_KEY=key,
    )
    status = server.status()
    assert (status["running"], status["mode"], status["state_source"]) == (True, "MASSIVE", "file")
    assert status["store"] == "Supabase (127.0.0.1)"
    assert "store unreachable" in status["state_store_problem"]
    warnings = server.events("state_store_unreachable")
    assert warnings and warnings[0]["using"] == "file" and warnings[0]["level"] == "warning"
    assert "Supabase unreachable" in status["store_error"]  # the counters could not be read either
    assert key not in json.dumps(status) and key not in server.output()
    assert server.terminate(RENDER_GRACE) < EXIT_WITHIN
