"""Scenario 5: store faults.

SQLite (real processes against the emulator process): a writer holding the database lock for
seconds mid-pass (the pass waits and completes without loss); the database file deleted
mid-run, and its file system made read-only mid-run (the process stops with a clear error and
exit code 4, the desired state stays saved). A collector that stays up after such an error
(the runtime the dashboard runs) does not spin: no API request and almost no CPU while it waits.

Supabase (the real SupabaseStore through supabase-py; respx serves the fake PostgREST of
tests/store, the emulator is a real process on loopback): 500 / 503 / timeouts / lost answers
are retried without loss; a key refused mid-pass (401) stops the pass with a clear error in the
status, keeps the desired state and does not spin.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import respx

from collector.config import Settings
from collector.runtime import Runtime, build_runtime, status_payload
from tests.reliability.conftest import (
    Emulator,
    Report,
    assert_exact_store,
    check_store,
    cli,
    collector_env,
    permissions_bind,
    run_cli,
    saved_state,
    stored_count,
    wait_for,
)
from tests.store.fake_postgrest import Fault, FakePostgrest

pytestmark = pytest.mark.reliability

RATE = 40
SUPABASE_URL = "https://reliabilitytest0001.supabase.co"
SUPABASE_KEY = "sb_secret_RELIABILITY-never-shown-4242"


@pytest.fixture
def emu(emulators: Any) -> Emulator:
    return emulators(articles=160, latency_ms=10, rate_limit=RATE)


def _first_commit(db: Path, proc: Any, what: str) -> int:
    wait_for(lambda: stored_count(db) > 0 or proc.poll() is not None, 60, what)
    assert proc.poll() is None, proc.stderr()[-3000:]
    return stored_count(db)


# ---- SQLite, real processes --------------------------------------------------------------------
def test_sqlite_locked_by_another_writer_then_released(tmp_path: Path, emu: Emulator, report: Report) -> None:
    env = collector_env(tmp_path, emu, rate=RATE)
    db = Path(env["COLLECTOR_DB"])
    proc = cli(env, tmp_path, "once", "run", "--once", "--mode", "MASSIVE")
    before = _first_commit(db, proc, "the first commit")
    hold_s = 4.0
    writer = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # another writer holds the lock (readers go on: WAL)
        api_at_lock = emu.stats()["api_requests"]
        time.sleep(hold_s)
        api_at_release = emu.stats()["api_requests"]
    finally:
        writer.execute("COMMIT")
        writer.close()
    assert proc.wait(120) == 0, proc.stderr()[-3000:]
    summary = proc.last_json()
    assert summary["failed"] == 0 and summary["interrupted"] is False
    figures = check_store(db, emu.expected())
    assert_exact_store(figures)
    report.record("store_sqlite_locked", {
        "lock_held_s": hold_s, "stored_before_lock": before,
        "api_requests_while_locked": api_at_release - api_at_lock,  # fetching goes on up to one batch
        **{k: figures[k] for k in ("expected", "stored", "duplicated", "half_written", "missing_count")},
    })


def test_sqlite_file_deleted_mid_run_stops_with_a_clear_error(tmp_path: Path, emu: Emulator, report: Report) -> None:
    """`run` (forever): the next write notices the file is gone -> exit 4, one clear line, the
    desired state kept; the next start resumes into a new database."""
    env = collector_env(tmp_path, emu, rate=RATE)
    db = Path(env["COLLECTOR_DB"])
    proc = cli(env, tmp_path, "deleted", "run", "--mode", "MASSIVE")
    _first_commit(db, proc, "the first commit")
    db.unlink()
    t0 = time.monotonic()
    code = proc.wait(60)
    exit_s = time.monotonic() - t0
    last = proc.stderr().strip().splitlines()[-1]
    assert code == 4, proc.stderr()[-3000:]
    assert last.startswith("error: store error (permanent):") and str(db) in last and "was removed" in last, last
    state = saved_state(env)
    assert state is not None and state["running"] is True and state["mode"] == "MASSIVE"
    report.record("store_sqlite_deleted", {"exit_code": code, "exit_after_fault_s": round(exit_s, 1),
                                           "error": last[:300], "state_kept": state})


def test_sqlite_made_read_only_mid_run(tmp_path: Path, emu: Emulator, report: Report) -> None:
    """chmod a-w on the database and its folder mid-run. Open handles stay writable (POSIX), so
    the running process goes on or stops with a clear error; the next start refuses with a
    clear error and exit 4, keeps the desired state, and once fixed finishes without loss."""
    prefix = permissions_bind()
    data = tmp_path / "data"
    env = collector_env(tmp_path, emu, rate=RATE, COLLECTOR_DB=str(data / "collector.sqlite3"))
    db = Path(env["COLLECTOR_DB"])
    proc = cli(env, tmp_path, "running", "run", "--mode", "MASSIVE", prefix=prefix)
    _first_commit(db, proc, "the first commit")
    files = [p for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")) if p.exists()]
    for path in files:
        path.chmod(0o444)
    data.chmod(0o555)
    try:
        time.sleep(1.5)
        proc.signal(signal.SIGTERM)
        first_code = proc.wait(10)
        assert first_code in (0, 4), proc.stderr()[-3000:]
        restart = run_cli(env, tmp_path, "restart", "run", prefix=prefix, timeout=60)
        last = restart.stderr().strip().splitlines()[-1]
        assert restart.poll() == 4, restart.stderr()[-3000:]
        assert last.startswith("error: store error (permanent):") and str(db) in last and "read-only" in last, last
        state = saved_state(env)
        assert state is not None and state["running"] is True and state["mode"] == "MASSIVE"
    finally:
        data.chmod(0o755)
        for path in files:
            path.chmod(0o644)
    fixed = run_cli(env, tmp_path, "fixed", "run", "--once", prefix=prefix, timeout=120)
    assert fixed.poll() == 0, fixed.stderr()[-3000:]
    figures = check_store(db, emu.expected())
    assert_exact_store(figures)
    report.record("store_sqlite_read_only", {
        "running_process_exit": first_code, "restart_exit": 4, "error": last[:300], "state_kept": state,
        **{k: figures[k] for k in ("expected", "stored", "duplicated", "half_written", "missing_count")},
    })


def _runtime(env: dict[str, str], **extra: str) -> Runtime:
    return build_runtime(Settings.from_env({**env, **extra}), resume=False)


def _cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def _idle_figures(runtime: Runtime, emu: Emulator, seconds: float = 3.0,
                  other_requests: Any = None) -> dict[str, Any]:
    """Requests and CPU spent by the (waiting) collector over `seconds`."""
    api0, cpu0 = emu.stats()["api_requests"], _cpu_s()
    other0 = other_requests() if other_requests else 0
    time.sleep(seconds)
    figures = {"window_s": seconds, "api_requests": emu.stats()["api_requests"] - api0,
               "cpu_s": round(_cpu_s() - cpu0, 3)}
    if other_requests:
        figures["store_requests"] = other_requests() - other0
    assert runtime.scheduler.alive  # waiting, not gone
    return figures


def test_deleted_database_in_a_live_runtime_does_not_spin(tmp_path: Path, emu: Emulator, report: Report) -> None:
    env = collector_env(tmp_path, emu, rate=RATE)
    db = Path(env["COLLECTOR_DB"])
    runtime = _runtime(env)
    try:
        runtime.scheduler.set_mode("MASSIVE")
        runtime.scheduler.start()
        wait_for(lambda: stored_count(db), 60, "the first commit")
        db.unlink()
        wait_for(lambda: runtime.scheduler.status().phase == "error", 30, "the error phase")
        time.sleep(0.5)  # the pass winds down
        idle = _idle_figures(runtime, emu)
        payload = status_payload(runtime)
        assert "was removed" in (payload["last_error"] or "") and str(db) in payload["last_error"], payload
        assert payload["running"] is True and payload["phase"] == "error"
        assert idle["api_requests"] == 0 and idle["cpu_s"] < 0.5, idle
        assert saved_state(env)["running"] is True
    finally:
        runtime.close(10)
    report.record("store_sqlite_deleted_live", {**idle, "last_error": payload["last_error"][:300],
                                                "phase": payload["phase"], "detail": payload["detail"]})


# ---- Supabase through respx ---------------------------------------------------------------------
@pytest.fixture
def postgrest(emu: Emulator) -> Iterator[FakePostgrest]:
    fake = FakePostgrest(SUPABASE_KEY)
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()  # the emulator is a real server
        router.route(url__startswith=SUPABASE_URL + "/rest/v1/").mock(side_effect=fake.handle)
        yield fake


def _supabase_env(tmp_path: Path, emu: Emulator) -> dict[str, str]:
    return collector_env(tmp_path, emu, rate=RATE, SUPABASE_URL=SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY=SUPABASE_KEY)


def _article_writes(fake: FakePostgrest) -> int:
    """Commit calls (collector_commit_batch: articles and their events in one transaction)."""
    return len([r for r in fake.requests if r.url.path == "/rest/v1/rpc/collector_commit_batch"])


def test_supabase_transient_faults_are_retried_without_loss(
    tmp_path: Path, emu: Emulator, postgrest: FakePostgrest, report: Report
) -> None:
    faults = [
        Fault(status=500, body={"code": "XX000", "message": "internal error"}, method="POST", path_contains="commit_batch"),
        Fault(status=503, body="<html><body>Service Unavailable</body></html>", method="POST", path_contains="commit_batch"),
        Fault(timeout=True, method="POST", path_contains="commit_batch"),
        Fault(status=504, body="<html>Gateway Timeout</html>", after=True, method="POST", path_contains="commit_batch"),
        Fault(status=503, body={"code": "PGRST003", "message": "Timed out acquiring connection"}, method="GET"),
        Fault(timeout=True, method="GET"),
        Fault(status=500, body="<html>oops</html>", path_contains="rpc"),
    ]
    env = _supabase_env(tmp_path, emu)
    runtime = _runtime(env)
    try:
        runtime.scheduler.set_mode("MASSIVE")
        postgrest.fail_next(*faults)
        runtime.scheduler.start()
        ids = wait_for(lambda: (rows := postgrest.rows("legifrance_articles")) and len(rows) >= len(emu.expected())
                       and rows, 120, "every article in the fake Supabase")
        wait_for(lambda: runtime.scheduler.status().phase == "waiting", 60, "the end of the pass")
        status = runtime.scheduler.status()
    finally:
        runtime.close(10)
    stored = [r["id"] for r in ids]
    assert sorted(stored) == sorted(emu.expected())
    events = sorted(r["id"] for r in postgrest.rows("legifrance_changes"))
    assert events == sorted(emu.expected())  # one added event each: the replayed calls wrote none twice
    assert postgrest.faults == []  # every fault was served
    assert status.pass_failed == 0
    report.record("store_supabase_transient", {
        "faults_injected": len(faults), "faults_survived": len(faults) - len(postgrest.faults),
        "expected": len(emu.expected()), "stored": len(stored), "duplicated": len(stored) - len(set(stored)),
        "article_writes": _article_writes(postgrest),
    })


def test_supabase_key_refused_mid_pass_stops_without_spinning(
    tmp_path: Path, emu: Emulator, postgrest: FakePostgrest, report: Report
) -> None:
    env = _supabase_env(tmp_path, emu)
    runtime = _runtime(env)
    try:
        runtime.scheduler.set_mode("MASSIVE")
        runtime.scheduler.start()
        wait_for(lambda: postgrest.rows("legifrance_articles"), 60, "the first commit")
        postgrest.key = "another-key-the-project-now-expects"  # our key was revoked
        wait_for(lambda: runtime.scheduler.status().phase == "error", 60, "the error phase")
        time.sleep(0.5)
        idle = _idle_figures(runtime, emu, other_requests=lambda: len(postgrest.requests))
        payload = status_payload(runtime)
        error = payload["last_error"] or ""
        assert "Supabase refused the key" in error and "SUPABASE_SERVICE_ROLE_KEY" in error, payload
        assert SUPABASE_KEY not in str(payload) and payload["running"] is True
        assert idle["api_requests"] == 0 and idle["cpu_s"] < 0.5 and idle["store_requests"] <= 6, idle
        assert saved_state(env)["running"] is True and saved_state(env)["mode"] == "MASSIVE"
    finally:
        runtime.close(10)
    report.record("store_supabase_bad_key", {**idle, "last_error": error[:300], "phase": payload["phase"],
                                             "stored_before": len(postgrest.rows("legifrance_articles"))})
