"""`python -m collector ...` as real subprocesses: temporary state file and SQLite database,
the in-process demo source (or the emulator on a real socket for the auth error)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.demo import DEMO_MAINTENANCE_CODES, DemoConfig
from collector.demo.server import DemoServerThread
from collector.store.sqlite import SqliteStore
from tests.conftest import REPO, free_port

SUMMARY_KEYS = {"codes", "requests", "fetched", "stored", "skipped", "failed", "article_requests", "interrupted"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("LEGIFRANCE_", "SUPABASE_", "MAINTENANCE_", "MASSIVE_", "MAX_DAILY"))}
    base.update(
        PYTHONPATH=str(REPO),
        SCHEDULER_STATE_FILE=str(tmp_path / "state" / "scheduler_state.json"),
        COLLECTOR_DB=str(tmp_path / "collector.sqlite3"),
        LEGIFRANCE_MAX_REQUESTS_PER_SECOND="200",
        LOG_FORMAT="json",
        ENABLE_SCHEDULER="false",
        SIPHONNAGE_MODE="MAINTENANCE",
    )
    return base


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], env=env, cwd=env["PYTHONPATH"],
                          capture_output=True, text=True, timeout=timeout)


def spawn(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    err = tmp_path / f"stderr-{time.monotonic_ns()}.log"
    proc = subprocess.Popen([sys.executable, "-m", "collector", *args], env=env, cwd=env["PYTHONPATH"],
                            stdout=subprocess.PIPE, stderr=err.open("w"), text=True)
    return proc, err


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def saved_state(env: dict[str, str]) -> dict[str, Any] | None:
    path = Path(env["SCHEDULER_STATE_FILE"])
    return json.loads(path.read_text()) if path.exists() else None


def last_json_line(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])


def articles_by_code(env: dict[str, str]) -> dict[str, int]:
    with sqlite3.connect(env["COLLECTOR_DB"]) as conn:
        return dict(conn.execute("SELECT code_id, count(*) FROM legifrance_articles GROUP BY code_id").fetchall())


def test_run_once_then_again_then_status_then_reset(env: dict[str, str]) -> None:
    first = cli(env, "run", "--once", "--mode", "MAINTENANCE")
    assert first.returncode == 0, first.stderr
    summary = last_json_line(first.stdout)
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["codes"] == len(DEMO_MAINTENANCE_CODES) and summary["stored"] > 0
    assert summary["article_requests"] > 0 and not summary["interrupted"]
    counts = articles_by_code(env)
    assert all(counts.get(code, 0) >= 1 for code in DEMO_MAINTENANCE_CODES), counts
    assert saved_state(env) is None  # --once saves nothing: neither --mode nor running
    assert '"source": "DEMO"' in first.stderr or "source=DEMO" in first.stderr

    again = cli(env, "run", "--once")
    assert again.returncode == 0, again.stderr
    assert last_json_line(again.stdout)["article_requests"] == 0  # nothing fetched twice

    status = cli(env, "status")
    assert status.returncode == 0, status.stderr
    assert len(status.stdout.strip().splitlines()) == 1  # exactly one JSON object
    payload = json.loads(status.stdout)
    assert {"running", "mode", "massive_active", "timestamp"} <= payload.keys()
    assert payload["running"] is False and payload["mode"] == "MAINTENANCE" and payload["massive_active"] is False
    assert payload["articles_stored"] == sum(articles_by_code(env).values())
    assert payload["last_run"]["summary"]["article_requests"] == 0

    reset = cli(env, "reset")
    assert reset.returncode == 0, reset.stderr
    assert not Path(env["SCHEDULER_STATE_FILE"]).exists()
    assert json.loads(reset.stdout)["reset"] is True


def test_status_starts_nothing_and_reads_the_saved_state(env: dict[str, str]) -> None:
    state = Path(env["SCHEDULER_STATE_FILE"])
    state.parent.mkdir(parents=True)
    state.write_text('{"running": true, "mode": "MASSIVE"}')
    result = cli(env, "status")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["running"] is True and payload["mode"] == "MASSIVE" and payload["massive_active"] is True
    assert payload["articles_stored"] == 0 and payload["last_run"] is None
    assert json.loads(state.read_text()) == {"running": True, "mode": "MASSIVE"}  # untouched


def test_cli_commands_run_without_importing_streamlit(env: dict[str, str]) -> None:
    """The CLI builds its runtime without the page's machinery (importing Streamlit made
    `status` take 0.8-1.05 s instead of 0.5-0.6 s); `-X importtime` lists every module a
    command imports."""
    for args in (("status",), ("run", "--once")):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "collector", *args], env=env,
                                cwd=env["PYTHONPATH"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "collector.runtime" in imported and "streamlit" not in imported, args


@pytest.mark.parametrize(
    ("name", "value"),
    [("MAX_DAILY_REQUESTS", "lots"), ("SIPHONNAGE_MODE", "TURBO"), ("MAINTENANCE_CODES", "not-a-code")],
)
def test_bad_environment_exits_non_zero_with_one_clear_line(env: dict[str, str], name: str, value: str) -> None:
    env[name] = value
    for args in (("status",), ("run", "--once")):
        result = cli(env, *args)
        assert result.returncode == 2
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: configuration error:") and name in lines[0]


def test_bad_mode_argument_is_refused(env: dict[str, str]) -> None:
    result = cli(env, "run", "--mode", "TURBO", "--once")
    assert result.returncode == 2 and "expected one of 'MASSIVE', 'MAINTENANCE'" in result.stderr
    assert saved_state(env) is None


def test_sigterm_during_run_exits_quickly_and_keeps_running_state(env: dict[str, str], tmp_path: Path) -> None:
    env["LEGIFRANCE_MAX_REQUESTS_PER_SECOND"] = "5"  # a pass long enough to be caught mid-way
    proc, err = spawn(env, tmp_path, "run", "--mode", "MASSIVE")
    try:
        assert wait_for(lambda: '"pass start"' in err.read_text()), err.read_text()
        time.sleep(2.0)  # a few articles fetched, not yet committed (batches of 100)
        assert saved_state(env)["running"] is True and saved_state(env)["mode"] == "MASSIVE"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, err.read_text()
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    state = saved_state(env)
    assert state["running"] is True and state["mode"] == "MASSIVE"  # the next start resumes
    store = SqliteStore(env["COLLECTOR_DB"])
    try:
        run = store.last_runs(1)[0]
        assert run["summary"]["interrupted"] is True  # stopped between two articles
        assert run["summary"]["stored"] > 0  # the batch in flight was committed
        assert store.count_articles() == sum(r["summary"]["stored"] for r in store.last_runs(10))
        assert store.acquire_lease("next", 30).acquired  # the lease was released
    finally:
        store.close()


def test_sigterm_during_run_once(env: dict[str, str], tmp_path: Path) -> None:
    env["LEGIFRANCE_MAX_REQUESTS_PER_SECOND"] = "5"
    proc, err = spawn(env, tmp_path, "run", "--once", "--mode", "MASSIVE")
    try:
        assert wait_for(lambda: '"pass start"' in err.read_text()), err.read_text()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.read_text()
    summary = last_json_line(out)
    assert summary["interrupted"] is True
    assert saved_state(env) is None  # --once never saves the desired state


def test_run_once_when_another_collector_holds_the_lease(env: dict[str, str]) -> None:
    store = SqliteStore(env["COLLECTOR_DB"])
    try:
        assert store.acquire_lease("render-old:7:20261128T120000Z", 60).acquired
        result = cli(env, "run", "--once")
    finally:
        store.close()
    assert result.returncode == 5
    assert result.stderr.strip().splitlines()[-1].startswith("error: another collector holds the store lease")
    assert "render-old:7:20261128T120000Z" in result.stderr


def test_auth_error_exits_non_zero_and_says_what_to_check(env: dict[str, str]) -> None:
    secret = "wrong-secret-0123456789"
    with DemoServerThread(DemoConfig()) as demo:
        env.update(
            LEGIFRANCE_CLIENT_ID="my-app",
            LEGIFRANCE_CLIENT_SECRET=secret,
            LEGIFRANCE_OAUTH_URL=demo.oauth_url,
            LEGIFRANCE_API_BASE_URL=demo.api_base_url,
            MAINTENANCE_CODES=",".join(DEMO_MAINTENANCE_CODES),
        )
        once = cli(env, "run", "--once")
        forever = cli(env, "run", timeout=60)  # a foreground run also stops on a fatal error
    for result in (once, forever):
        assert result.returncode == 3, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: authentication refused by the API")
        assert "LEGIFRANCE_CLIENT_SECRET" in last
        assert secret not in result.stderr and secret not in result.stdout


def test_demo_server_command_serves_the_emulator(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    proc, err = spawn(env, tmp_path, "demo-server", "--port", str(port), "--articles", "50")
    try:
        def token() -> httpx.Response | None:
            try:
                return httpx.post(f"http://127.0.0.1:{port}/api/oauth/token",
                                  data={"grant_type": "client_credentials", "client_id": "demo-client-id",
                                        "client_secret": "demo-client-secret"}, timeout=2)
            except httpx.TransportError:
                return None

        assert wait_for(lambda: token() is not None, timeout=30), err.read_text()
        answer = token()
        assert answer is not None and answer.status_code == 200 and answer.json()["access_token"]
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_store_fatal_error_exits_non_zero_with_one_clear_line(env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env["COLLECTOR_DB"] = str(blocker / "collector.sqlite3")
    for args in (("status",), ("run", "--once")):
        result = cli(env, *args)
        assert result.returncode == 4, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: store error (permanent):") and "COLLECTOR_DB" in last


def test_run_once_with_a_mode_leaves_the_saved_desired_state_alone(env: dict[str, str]) -> None:
    state = Path(env["SCHEDULER_STATE_FILE"])
    state.parent.mkdir(parents=True)
    state.write_text('{"running": true, "mode": "MAINTENANCE"}')
    result = cli(env, "run", "--once", "--mode", "massive")  # any case, as SIPHONNAGE_MODE
    assert result.returncode == 0, result.stderr
    assert last_json_line(result.stdout)["mode"] == "MASSIVE"
    saved = saved_state(env)
    assert (saved["running"], saved["mode"]) == (True, "MAINTENANCE"), "the server's desired state stands"
    assert json.loads(cli(env, "status").stdout)["mode"] == "MAINTENANCE"


def test_run_once_exits_1_when_a_code_failed_and_says_so(env: dict[str, str]) -> None:
    unknown = "LEGITEXT000099999999"  # well formed, unknown to the API: a failed code
    env["MAINTENANCE_CODES"] = ",".join((*DEMO_MAINTENANCE_CODES, unknown))
    result = cli(env, "run", "--once")
    assert result.returncode == 1, result.stderr
    summary = last_json_line(result.stdout)
    assert summary["codes_failed"] == 1 and summary["stored"] > 0
    assert any(unknown in e and "unknown code" in e for e in summary["errors"])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the pass had failures: 1 code(s) and 0 article(s) failed")


@pytest.mark.parametrize("given", ["LEGIFRANCE_CLIENT_ID", "LEGIFRANCE_CLIENT_SECRET"])
def test_half_a_credential_exits_2_naming_both_variables(env: dict[str, str], given: str) -> None:
    env[given] = "only-half-of-it-0123"
    result = cli(env, "run", "--once")
    assert result.returncode == 2 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: configuration error:")
    assert "LEGIFRANCE_CLIENT_ID" in last and "LEGIFRANCE_CLIENT_SECRET" in last
    assert "only-half-of-it-0123" not in result.stderr
    assert not Path(env["COLLECTOR_DB"]).exists(), "nothing ran"


def test_unreachable_token_host_gives_up_within_15_s_naming_the_host(env: dict[str, str]) -> None:
    secret = "secret-never-shown-0123"
    port = free_port()  # nothing listens there: every connection is refused
    env.update(
        LEGIFRANCE_CLIENT_ID="my-app",
        LEGIFRANCE_CLIENT_SECRET=secret,
        LEGIFRANCE_OAUTH_URL=f"http://127.0.0.1:{port}/api/oauth/token",
        LEGIFRANCE_API_BASE_URL=f"http://127.0.0.1:{port}/dila/legifrance/lf-engine-app",
        MAINTENANCE_CODES=",".join(DEMO_MAINTENANCE_CODES),
    )
    t0 = time.monotonic()
    result = cli(env, "run", "--once")
    elapsed = time.monotonic() - t0
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: API error: could not get a token from 127.0.0.1 (LEGIFRANCE_OAUTH_URL)")
    assert "ConnectError" in last
    assert secret not in result.stderr and secret not in result.stdout
    retries = [json.loads(line) for line in result.stderr.splitlines() if '"legifrance token retry"' in line]
    assert retries, "the token request was retried"
    assert elapsed < 15 + 10, elapsed  # the 15 s retry window, plus the interpreter's start and the store's


def test_demo_server_says_how_to_point_the_collector_at_it(env: dict[str, str], tmp_path: Path) -> None:
    """The lines `demo-server` prints are enough to run the collector against it."""
    port = free_port()
    proc, err = spawn(env, tmp_path, "demo-server", "--port", str(port), "--articles", "50")
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().rstrip("\n") for _ in range(6)]
        assert lines[0] == f"demo-server listening on http://127.0.0.1:{port}", err.read_text()
        text = "\n".join(lines)
        assert f"http://127.0.0.1:{port}/api/oauth/token" in text
        assert f"http://127.0.0.1:{port}/dila/legifrance/lf-engine-app" in text
        assert "demo-client-id" in text and "demo-client-secret" in text and "ALLOW_INSECURE_HTTP" not in text
        settings = dict(word.split("=", 1) for word in lines[5].split() if "=" in word)
        assert set(settings) == {"LEGIFRANCE_OAUTH_URL", "LEGIFRANCE_API_BASE_URL",
                                 "LEGIFRANCE_CLIENT_ID", "LEGIFRANCE_CLIENT_SECRET"}
        env.update(settings, MAINTENANCE_CODES=DEMO_MAINTENANCE_CODES[0])
        result = cli(env, "run", "--once")
        assert result.returncode == 0, result.stderr
        assert last_json_line(result.stdout)["stored"] > 0
        assert "custom API (127.0.0.1)" in cli(env, "status").stdout  # not DEMO: the API at that address
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
