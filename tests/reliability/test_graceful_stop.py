"""Scenario 2: SIGTERM during a pass. The batch in flight is committed (nothing logged as
fetched is lost), the state file still says running (the next start resumes), and the process
exits within 10 s — for the CLI (`run`) and for the dashboard server (`streamlit run`)."""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.reliability.conftest import Proc, Report, cli, collector_env, saved_state, store_scalar, stored_count, wait_for

pytestmark = pytest.mark.reliability

RATE = 40
ROUNDS = {"cli": 2, "dashboard": 1}


def _fetched(proc: Proc) -> tuple[set[str], set[str]]:
    """Ids the process logged as fetched: (kept as articles, turned down by the quality filter)."""
    kept: set[str] = set()
    rejected: set[str] = set()
    for record in proc.events():
        if record.get("event") == "article fetched":
            (kept if record.get("kept") else rejected).add(record["id"])
    return kept, rejected


def _ids(db: Path, table: str) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute(f"SELECT id FROM {table}")}  # noqa: S608 - fixed names
    finally:
        conn.close()


def _start(kind: str, env: dict[str, str], folder: Path, name: str, port: int, first: bool) -> Proc:
    if kind == "cli":
        return cli(env, folder, name, *(("run", "--mode", "MASSIVE") if first else ("run",)))
    args = ["-m", "streamlit", "run", "dashboard.py", "--server.port", str(port), "--server.address",
            "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    return Proc(args, env, folder, name).start()


@pytest.mark.parametrize("kind", ["cli", "dashboard"])
def test_sigterm_mid_pass_commits_the_batch_in_flight(
    kind: str, tmp_path: Path, emulators: Any, seed: int, report: Report
) -> None:
    rng = random.Random(f"{seed}-{kind}")
    emu = emulators(articles=400, latency_ms=10, rate_limit=RATE)
    folder = tmp_path / kind
    env = collector_env(folder, emu, rate=RATE, LOG_LEVEL="DEBUG")  # DEBUG: one "article fetched" per id
    db = Path(env["COLLECTOR_DB"])
    if kind == "dashboard":
        state = Path(env["SCHEDULER_STATE_FILE"])
        state.parent.mkdir(parents=True)
        state.write_text('{"running": true, "mode": "MASSIVE"}')
    port = free_port()
    rounds: list[dict[str, Any]] = []
    for n in range(ROUNDS[kind]):
        proc = _start(kind, env, folder, f"{kind}-{n}", port, first=n == 0)
        # mid-pass: a batch committed and more articles fetched since, then a random moment
        base = stored_count(db)
        wait_for(lambda: stored_count(db) > base or proc.poll() is not None, 90, "a committed batch")
        time.sleep(rng.uniform(0.1, 1.5))
        assert proc.poll() is None, proc.stderr()[-3000:]
        before = stored_count(db)
        fetched_before = len(_fetched(proc)[0])
        t0 = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait(10)  # raises if it takes longer
        exit_s = time.monotonic() - t0
        assert code in ((0,) if kind == "cli" else (0, -signal.SIGTERM)), proc.stderr()[-3000:]
        kept, turned_down = _fetched(proc)
        after = stored_count(db)
        assert after >= before
        assert kept <= _ids(db, "legifrance_articles"), sorted(kept - _ids(db, "legifrance_articles"))[:10]
        assert turned_down <= _ids(db, "legifrance_rejected") | _ids(db, "legifrance_articles")
        state = saved_state(env)
        assert state is not None and state["running"] is True and state["mode"] == "MASSIVE"
        end = proc.event("pass end")
        assert end is not None and end["interrupted"] is True
        assert proc.event("lease released") is not None
        lease_until = datetime.fromisoformat(store_scalar(db, "SELECT expires_at FROM collector_lease"))
        assert lease_until <= datetime.now(timezone.utc)  # released: the next start need not wait
        rounds.append({"stored_before_sigterm": before, "stored_after_exit": after,
                       "committed_after_sigterm": after - before, "fetched_logged_before_sigterm": fetched_before,
                       "fetched_logged_total": len(kept), "exit_s": round(exit_s, 2), "exit_code": code})
    report.record(f"graceful_stop_{kind}", {"sigterms": len(rounds), "rounds": rounds,
                                           "max_exit_s": max(r["exit_s"] for r in rounds)})
