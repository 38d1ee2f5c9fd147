"""The real dashboard server as a subprocess (`python -m streamlit run dashboard.py`), demo
source, private state file and database; every server started is killed in a finalizer."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import COLLECTOR_ENV, REPO, free_port

START_TIMEOUT = 90.0  # a slow, shared 2-core machine
TOKEN = "e2e-token-4c2d1a"


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll `cond` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def saved(self) -> dict[str, Any] | None:
        """{running, mode} from the state file, or None when there is none."""
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return {"running": data["running"], "mode": data["mode"]}

    def articles(self) -> int:
        """Rows in the SQLite store, read from the file like any other client would."""
        db = self.root / "collector.sqlite3"
        if not db.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
                return int(conn.execute("SELECT count(*) FROM legifrance_articles").fetchone()[0])
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0

    def status(self) -> dict[str, Any]:
        """The full status (the bearer token shows what the anonymous one leaves out)."""
        resp = httpx.get(f"{self.url}/aspirage/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=15)
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM; the seconds it took to exit (fails if it did not exit within `timeout`)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running {timeout:.0f} s after SIGTERM\n{self.output()[-3000:]}")
        return time.monotonic() - started


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """`launch(state=..., **env)` starts the real server and waits for its health check."""
    started: list[Server] = []

    def start(state: dict[str, Any] | None = None, **extra_env: str) -> Server:
        root = tmp_path / f"server{len(started)}"
        root.mkdir()
        if state is not None:
            (root / "state.json").write_text(json.dumps(state), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in COLLECTOR_ENV and not k.startswith("STREAMLIT_")}
        env.update(
            SCHEDULER_STATE_FILE=str(root / "state.json"),
            COLLECTOR_DB=str(root / "collector.sqlite3"),
            COLLECTOR_API_TOKEN=TOKEN,
            LEGIFRANCE_MAX_REQUESTS_PER_SECOND="5",  # the demo answers at once: keep it visible
            MAINTENANCE_INTERVAL_MINUTES="0.05",
            MASSIVE_INTERVAL_MINUTES="0.05",
            LOG_FORMAT="json",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env)
        port = free_port()
        log = root / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
                 "--server.address", "127.0.0.1", "--server.headless", "true"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        server = Server(proc, port, root, log)
        started.append(server)

        def healthy() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}\n{server.output()[-3000:]}")
            try:
                return httpx.get(f"{server.url}/_stcore/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, START_TIMEOUT, "the server's health check")
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(10)
