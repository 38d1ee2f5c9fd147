"""Production-shaped rigs: real processes (`python -m collector ...`, `python -m streamlit run
dashboard.py`) against the emulator served by `python -m collector demo-server` on loopback, as
if it were PISTE (real credentials path, not the in-process demo source), sharing one SQLite
file the way Render instances share Supabase, each process with its own state file (Render
wipes /tmp on every deploy). Every process started is killed in a finalizer."""

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

from collector.demo import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from collector.demo.corpus import DEMO_MAINTENANCE_CODES, DEMO_MASSIVE_CODES
from tests.conftest import REPO, free_port

START_TIMEOUT = 90.0  # a streamlit server on a slow, shared 2-core machine
API_TOKEN = "production-test-token-91f3"
# Never inherited from the developer's shell: every test sets what it needs.
DROPPED_ENV = ("LEGIFRANCE_", "SUPABASE_", "MAINTENANCE_", "MASSIVE_", "MAX_DAILY", "STREAMLIT_", "COLLECTOR_")
DROPPED_NAMES = {"SCHEDULER_STATE_FILE", "ENABLE_SCHEDULER", "SIPHONNAGE_MODE", "DASHBOARD_PASSWORD", "RENDER",
                 "LOG_LEVEL", "LOG_FORMAT", "MIN_ARTICLE_CHARS"}


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll `cond` until it returns something truthy; fail naming `what` at the deadline."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        value = cond()
        if value:
            print(f"waited {time.monotonic() - started:.1f} s for {what}")  # shown with -s / on failure
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Demo:
    """The emulator process (`python -m collector demo-server`)."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self, per_id: bool = False) -> dict[str, Any]:
        resp = httpx.get(f"{self.url}/_demo/stats", params={"per_id": "1"} if per_id else None, timeout=15)
        resp.raise_for_status()
        return resp.json()

    def api_requests(self) -> int:
        return int(self.stats()["api_requests"])

    def served_by_id(self) -> dict[str, int]:
        """getArticle answers (HTTP 200) per article id since the emulator started."""
        return {k: int(v) for k, v in self.stats(per_id=True)["articles_served_by_id"].items()}

    def reset_stats(self) -> None:
        httpx.delete(f"{self.url}/_demo/stats", timeout=15).raise_for_status()


@dataclass
class Proc:
    """A collector or dashboard process; output (stdout + stderr) in `log`."""

    proc: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    state_file: Path | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        assert self.port is not None, "not a streamlit server"
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log records whose event is `name`."""
        found = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("event") == name:
                    found.append(record)
        return found

    def status(self) -> dict[str, Any]:
        """GET /aspirage/status with the bearer token: the full status."""
        resp = httpx.get(f"{self.url}/aspirage/status", timeout=30,
                         headers={"Authorization": f"Bearer {API_TOKEN}"})
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {API_TOKEN}"})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 30.0) -> float:
        """SIGTERM (what Render sends); the seconds it took to exit. Fails past `timeout`
        (Render's SIGKILL comes 30 s after SIGTERM)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout:.0f} s after SIGTERM\n{self.output()[-3000:]}")
        return time.monotonic() - t0

    def kill9(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs (a crashed instance)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)


@dataclass
class Rig:
    """One shared store (SQLite file), the emulator, and a launcher of processes."""

    root: Path
    demo: Demo
    procs: list[Proc]

    @property
    def db(self) -> Path:
        return self.root / "store.sqlite3"

    def env(self, state_file: Path, **extra: str) -> dict[str, str]:
        """The environment of one instance: emulator as PISTE, shared store, own state file."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(DROPPED_ENV) and k not in DROPPED_NAMES}
        env.update(
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            LEGIFRANCE_CLIENT_ID=DEMO_CLIENT_ID,
            LEGIFRANCE_CLIENT_SECRET=DEMO_CLIENT_SECRET,
            LEGIFRANCE_OAUTH_URL=f"{self.demo.url}/api/oauth/token",
            LEGIFRANCE_API_BASE_URL=f"{self.demo.url}/dila/legifrance/lf-engine-app",
            MASSIVE_CODES=",".join(DEMO_MASSIVE_CODES),
            MAINTENANCE_CODES=",".join(DEMO_MAINTENANCE_CODES),
            LEGIFRANCE_MAX_REQUESTS_PER_SECOND="50",  # fast; the budget itself is tested elsewhere
            SCHEDULER_STATE_FILE=str(state_file),
            COLLECTOR_DB=str(self.db),
            COLLECTOR_API_TOKEN=API_TOKEN,
            LOG_FORMAT="json",
        )
        env.update(extra)
        return env

    def _spawn(self, argv: list[str], name: str, env: dict[str, str], **kw: Any) -> Proc:
        log = self.root / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        p = Proc(proc, log, **kw)
        self.procs.append(p)
        return p

    def collector(self, *args: str, state_file: Path, **extra_env: str) -> Proc:
        """`python -m collector <args>` in the background."""
        return self._spawn(["-m", "collector", *args], "collector", self.env(state_file, **extra_env),
                           state_file=state_file)

    def cli(self, *args: str, state_file: Path, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """`python -m collector <args>` to completion (stdout: JSON; stderr: logs)."""
        return subprocess.run([sys.executable, "-m", "collector", *args], cwd=REPO,
                              env=self.env(state_file, **extra_env), capture_output=True, text=True,
                              timeout=timeout)

    def cli_status(self, state_file: Path, **extra_env: str) -> dict[str, Any]:
        done = self.cli("status", state_file=state_file, **extra_env)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def dashboard(self, *, state_file: Path, wait: bool = True, **extra_env: str) -> Proc:
        """`python -m streamlit run dashboard.py` on a free port, as Render starts it."""
        port = free_port()
        p = self._spawn(
            ["-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            "dashboard", self.env(state_file, **extra_env), port=port, state_file=state_file,
        )
        if wait:
            self.wait_healthy(p)
        return p

    def wait_healthy(self, p: Proc) -> None:
        def healthy() -> bool:
            if p.proc.poll() is not None:
                pytest.fail(f"server exited with {p.proc.returncode}\n{p.output()[-3000:]}")
            try:
                return httpx.get(f"{p.url}/_stcore/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, START_TIMEOUT, f"the health check of the server on port {p.port}")

    # ---- reading the shared store like any other client ----------------------------------------
    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise

    def articles(self) -> int:
        rows = self.query("SELECT count(*) FROM legifrance_articles")
        return int(rows[0][0]) if rows else 0

    def known_ids(self) -> set[str]:
        """Ids in the store: kept articles and ids the quality filter rejected."""
        return {r[0] for r in self.query("SELECT id FROM legifrance_articles UNION SELECT id FROM legifrance_rejected")}

    def lease(self) -> tuple[str, str] | None:
        rows = self.query("SELECT owner, expires_at FROM collector_lease")
        return (rows[0][0], rows[0][1]) if rows else None


def start_demo(root: Path, *args: str) -> Demo:
    port = free_port()
    log = root / "demo-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "demo-server", "--port", str(port), *args],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    demo = Demo(proc, port)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"demo-server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{demo.url}/_demo/stats", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "the demo-server")
    return demo


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """`make_rig(*demo_server_args)`: the emulator process plus a process launcher."""
    rigs: list[Rig] = []

    def make(*demo_args: str) -> Rig:
        root = tmp_path / f"rig{len(rigs)}"
        root.mkdir()
        rig = Rig(root, start_demo(root, *demo_args), [])
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        for p in [*rig.procs, rig.demo]:
            if p.proc.poll() is None:
                try:
                    os.killpg(p.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.proc.wait(15)
