"""A redeploy with real processes: Render wipes /tmp (the state file) but the store keeps its
copy of the desired state, so the next process resumes in the saved mode, from the store."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

from tests.production.conftest import Rig, wait_for

BATCH = 100  # HarvestOptions.batch_size: articles per commit


def test_cli_run_resumes_from_the_store_record_after_the_state_file_is_wiped(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("--articles", "3000", "--latency-ms", "10")
    state = rig.root / "tmp" / "scheduler_state.json"  # the instance's /tmp

    first = rig.collector("run", "--mode", "MASSIVE", state_file=state)
    wait_for(lambda: rig.articles() >= BATCH, 90, "the first committed batch")
    assert first.terminate(30) < 30
    assert first.proc.returncode == 0, first.output()[-3000:]
    assert json.loads(state.read_text())["running"] is True, "SIGTERM keeps the desired state running"
    stored = rig.articles()

    state.unlink()  # the redeploy: a fresh filesystem, the store kept
    offline = rig.cli_status(state)
    assert (offline["running"], offline["mode"], offline["massive_active"]) == (True, "MASSIVE", True)
    assert offline["state_source"] == "store"

    second = rig.collector("run", state_file=state)  # no --mode, no state file
    loaded = wait_for(lambda: second.events("state loaded"), 60, "the second process to load its state")[0]
    assert (loaded["source"], loaded["running"], loaded["mode"]) == ("store", True, "MASSIVE")
    wait_for(lambda: second.events("lease acquired"), 60, "the second process to take the lease")
    wait_for(lambda: rig.articles() >= stored + BATCH, 90, "articles stored after the resume")
    assert json.loads(state.read_text())["mode"] == "MASSIVE", "the new instance wrote its own copy back"
    runs = rig.query("SELECT mode FROM collector_runs ORDER BY id")
    assert [r[0] for r in runs] == ["MASSIVE", "MASSIVE"], "the resumed pass is a MASSIVE one"

    second.proc.send_signal(signal.SIGTERM)
    second.proc.wait(30)
    assert second.proc.returncode == 0, second.output()[-3000:]
    online = rig.cli_status(state)
    assert (online["running"], online["mode"]) == (True, "MASSIVE")
    dupes = rig.query("SELECT count(*) - count(DISTINCT cid) FROM legifrance_articles WHERE etat LIKE 'VIGUEUR%'")
    assert dupes == [(0,)], "one in-force row per article cid"
