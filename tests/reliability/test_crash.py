"""Scenario 1: SIGKILL a MASSIVE collector at random moments, restart it from the saved state
each time, let it finish; the store then holds exactly the expected articles, once, complete,
and the change log is exactly the one an uninterrupted pass writes (one `added` per stored
article with its values, nothing twice, nothing else).

The kill moments come from random.Random(seed) (RELIABILITY_SEED replays a run). The collector's
lease TTL is 2 s (COLLECTOR_LEASE_TTL_SECONDS) so a restart waits at most that long for the dead
process's lease; the standby that follows a kill is itself one of the moments a kill can hit.
"""

from __future__ import annotations

import collections
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.demo import DEMO_MASSIVE_CODES
from tests.conftest import free_port
from tests.reliability.conftest import (
    Emulator,
    Proc,
    Report,
    assert_exact_store,
    check_store,
    cli,
    collector_env,
    saved_state,
    store_scalar,
    stored_count,
    wait_for,
)

pytestmark = pytest.mark.reliability

RATE = 40  # requests per second: the client's budget and the emulator's limit
ARTICLES = 400  # in-force articles of the emulator corpus (about 390 pass the quality filter)
KILLS = 20
DASHBOARD_KILLS = 3


def _phase(proc: Proc) -> str:
    """What the process was doing when it died: its last log event (or 'booting')."""
    events = [e.get("event", "?") for e in proc.events()]
    return events[-1] if events else "booting"


def _finish(proc: Proc, what: str, timeout: float = 120, ok: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Wait for a complete (not interrupted) pass in `proc`, then SIGTERM it: it exits within 10 s
    with a status in `ok`."""
    end = wait_for(lambda: proc.event("pass end", interrupted=False) or proc.poll() is not None, timeout,
                   f"a complete pass of {what}")
    assert proc.poll() is None, f"{what} exited on its own: {proc.stderr()[-3000:]}"
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) in ok, proc.stderr()[-3000:]
    assert isinstance(end, dict)
    return end


def _rework(emu: Emulator) -> dict[str, Any]:
    stats = emu.stats(per_id=True)
    served = stats["articles_served_by_id"]
    return {
        "get_article_answers": sum(served.values()),
        "ids_answered": len(served),
        "ids_answered_more_than_once": sum(1 for n in served.values() if n > 1),
        "get_article_answers_beyond_first": sum(n - 1 for n in served.values()),
        "api_requests": stats["api_requests"],
        "max_requests_in_1s_window": stats["max_requests_in_1s_window"],
        "rate_limited_429": stats["rate_limited"],
    }


def _check_change_log(db: Path) -> int:
    """The events equal those of an uninterrupted first pass over a corpus that does not change:
    one `added` per stored row, with that row's values. Returns how many."""
    columns = "code_id, cid, id, num, etat, content_sha256"
    with sqlite3.connect(db) as conn:
        events = conn.execute(f"SELECT kind, previous_id, {columns} FROM legifrance_changes ORDER BY seq").fetchall()
        rows = conn.execute(f"SELECT {columns} FROM legifrance_articles").fetchall()
    assert sorted(events) == sorted(("added", None, *row) for row in rows)
    return len(events)


def _check_outcome(env: dict[str, str], emu: Emulator) -> dict[str, Any]:
    db = Path(env["COLLECTOR_DB"])
    figures = check_store(db, emu.expected(DEMO_MASSIVE_CODES))
    too_short = emu.expected(DEMO_MASSIVE_CODES, min_chars=0) - emu.expected(DEMO_MASSIVE_CODES)
    rejected = int(store_scalar(db, "SELECT count(*) FROM legifrance_rejected"))
    figures.update(rejected=rejected, rejected_expected=len(too_short))
    assert_exact_store(figures)
    assert rejected == len(too_short)  # the short ones are remembered as rejected, not stored
    figures["change_log_events"] = _check_change_log(db)
    state = saved_state(env)
    assert state is not None and state["running"] is True and state["mode"] == "MASSIVE"
    return figures


def test_sigkill_the_cli_at_random_moments_then_resume(
    tmp_path: Path, emulators: Any, seed: int, report: Report
) -> None:
    rng = random.Random(seed)
    emu = emulators(articles=ARTICLES, latency_ms=10, rate_limit=RATE)
    env = collector_env(tmp_path / "cli", emu, rate=RATE)
    folder = tmp_path / "cli"
    kills: list[dict[str, Any]] = []
    resumed_modes: list[str] = []
    started = time.monotonic()

    for n in range(KILLS):
        args = ("run", "--mode", "MASSIVE") if n == 0 else ("run",)  # restarts: mode from the state file
        proc = cli(env, folder, f"run-{n:02d}", *args)
        if n == 0:  # the desired state must exist before the first kill, or nothing can resume
            wait_for(lambda: (saved_state(env) or {}).get("mode") == "MASSIVE", 60, "the first state save")
        delay = rng.uniform(0.3, 4.0)
        time.sleep(delay)
        assert proc.poll() is None, f"run {n} exited on its own: {proc.stderr()[-3000:]}"
        proc.kill()
        loaded = proc.event("state loaded")
        if n > 0 and loaded is not None:
            resumed_modes.append(f"{loaded['mode']}/{'running' if loaded['running'] else 'stopped'}")
        kills.append({"delay_s": round(delay, 2), "phase": _phase(proc), "stored_after": stored_count(Path(env["COLLECTOR_DB"]))})
        state = saved_state(env)  # never torn by a kill (atomic replace)
        assert state is not None and state["mode"] == "MASSIVE" and state["running"] is True

    final = cli(env, folder, "run-final", "run")
    end = _finish(final, "the final run")
    assert end["failed"] == 0 and end["codes_failed"] == 0
    wall = time.monotonic() - started

    figures = _check_outcome(env, emu)
    rework = _rework(emu)
    leftovers = sorted(p.name for p in Path(env["SCHEDULER_STATE_FILE"]).parent.iterdir() if p.name.endswith(".tmp"))
    report.record("crash_cli", {
        "kills": len(kills), "kills_survived": len(kills), "seed": seed, "articles_in_corpus": ARTICLES,
        "rate_per_second": RATE, **figures, **rework, "wall_s": round(wall, 1),
        "phases_at_kill": dict(collections.Counter(k["phase"] for k in kills)),
        "restarts_resumed": collections.Counter(resumed_modes), "state_temp_files_left": len(leftovers),
        "kill_log": kills, "final_pass": {k: end.get(k) for k in ("fetched", "stored", "skipped", "article_requests")},
    })
    assert set(resumed_modes) == {"MASSIVE/running"}, resumed_modes  # every restart resumed MASSIVE
    assert rework["ids_answered"] == figures["expected"] + figures["rejected"]


def _dashboard(env: dict[str, str], folder: Path, name: str, port: int) -> Proc:
    args = ["-m", "streamlit", "run", "dashboard.py", "--server.port", str(port), "--server.address", "127.0.0.1",
            "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    return Proc(args, env, folder, name).start()


def test_sigkill_the_dashboard_server_at_random_moments_then_resume(
    tmp_path: Path, emulators: Any, seed: int, report: Report
) -> None:
    """`streamlit run dashboard.py`: its lifespan resumes the collector with no browser. Fewer
    kills than the CLI (each server start costs seconds); each kill falls at a random moment
    within 3 s after the runtime is ready."""
    rng = random.Random(seed + 1)
    emu = emulators(articles=ARTICLES, latency_ms=10, rate_limit=RATE)
    folder = tmp_path / "dashboard"
    env = collector_env(folder, emu, rate=RATE)
    state_path = Path(env["SCHEDULER_STATE_FILE"])
    state_path.parent.mkdir(parents=True)
    state_path.write_text('{"running": true, "mode": "MASSIVE"}')  # as left by a previous run
    port = free_port()
    kills: list[dict[str, Any]] = []
    boot_s: list[float] = []
    started = time.monotonic()

    for n in range(DASHBOARD_KILLS):
        t0 = time.monotonic()
        proc = _dashboard(env, folder, f"dashboard-{n}", port)
        loaded = wait_for(lambda: proc.event("state loaded") or proc.poll() is not None, 90, "the dashboard runtime")
        assert proc.poll() is None, proc.stderr()[-3000:]
        boot_s.append(time.monotonic() - t0)
        assert loaded["mode"] == "MASSIVE" and loaded["running"] is True
        delay = rng.uniform(0.0, 3.0)
        time.sleep(delay)
        proc.kill()
        kills.append({"delay_after_ready_s": round(delay, 2), "phase": _phase(proc),
                      "stored_after": stored_count(Path(env["COLLECTOR_DB"]))})

    final = _dashboard(env, folder, "dashboard-final", port)
    wait_for(lambda: final.event("state loaded") or final.poll() is not None, 90, "the dashboard runtime")
    status = wait_for(lambda: _status(port), 60, "GET /aspirage/status")
    assert status["running"] is True and status["mode"] == "MASSIVE" and status["massive_active"] is True
    # Streamlit re-raises SIGTERM once its shutdown (our lifespan included) is done: status -15.
    end = _finish(final, "the final dashboard", ok=(0, -signal.SIGTERM))
    assert final.event("runtime closed") is not None  # the lifespan closed the runtime on SIGTERM
    figures = _check_outcome(env, emu)
    rework = _rework(emu)
    report.record("crash_dashboard", {
        "kills": len(kills), "kills_survived": len(kills), "seed": seed + 1, **figures, **rework,
        "server_boot_s": [round(b, 1) for b in boot_s], "wall_s": round(time.monotonic() - started, 1),
        "kill_log": kills, "final_pass": {k: end.get(k) for k in ("fetched", "stored", "skipped", "article_requests")},
    })


def _status(port: int) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/aspirage/status", timeout=5)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None
