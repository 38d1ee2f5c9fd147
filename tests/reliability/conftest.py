"""The reliability rig: the emulator as a real `demo-server` process on a loopback port, the
collector as real `python -m collector ...` processes, store integrity checks and the figures
report (JSON at $RELIABILITY_REPORT, default build/reliability.json).

Seeds: every random choice of the suite comes from `random.Random(seed)`; the seed is printed
and can be replayed with RELIABILITY_SEED=<seed>.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.demo import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_MASSIVE_CODES
from tests.conftest import REPO, require

REPORT_PATH = Path(os.environ.get("RELIABILITY_REPORT") or REPO / "build" / "reliability.json")
HASH_SEPARATOR = "\x1e"  # content_sha256 = sha256(text + U+001E + (nota or "")), see collector/parse.py
_ENV_PREFIXES = ("LEGIFRANCE_", "SUPABASE_", "MAINTENANCE_", "MASSIVE_", "MAX_DAILY", "COLLECTOR_",
                 "SCHEDULER_", "ENABLE_SCHEDULER", "SIPHONNAGE_", "MIN_ARTICLE", "LOG_", "DASHBOARD_")


# ---- seed and report ----------------------------------------------------------------------------
def suite_seed() -> int:
    raw = os.environ.get("RELIABILITY_SEED", "").strip()
    return int(raw) if raw else random.SystemRandom().randrange(1, 10**9)


_used: dict[str, Any] = {}  # the seed and report of this session, for the terminal summary


@pytest.fixture(scope="session")
def seed() -> int:
    value = suite_seed()
    _used["seed"] = value
    print(f"\nreliability seed: {value} (replay with RELIABILITY_SEED={value})")
    return value


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if "seed" in _used:
        terminalreporter.write_line(
            f"reliability seed: {_used['seed']} (replay with RELIABILITY_SEED={_used['seed']}); "
            f"figures: {REPORT_PATH}"
        )


class Report:
    """Figures of the run, merged into one JSON file as each scenario ends."""

    def __init__(self, path: Path, seed: int) -> None:
        self.path = path
        self.seed = seed
        self._lock = threading.Lock()

    def record(self, section: str, figures: dict[str, Any]) -> None:
        with self._lock:
            data: dict[str, Any] = {}
            if self.path.exists():
                try:
                    data = json.loads(self.path.read_text())
                except ValueError:
                    data = {}
            data[section] = figures
            data["meta"] = {"seed": self.seed, "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "python": sys.version.split()[0]}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            os.replace(tmp, self.path)


@pytest.fixture(scope="session")
def report(seed: int) -> Report:
    return Report(REPORT_PATH, seed)


# ---- waiting --------------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


# ---- the emulator as a real process ---------------------------------------------------------------
class Emulator:
    """`python -m collector demo-server` on 127.0.0.1 (any free port), driven through /_demo/."""

    def __init__(self, folder: Path, *, articles: int, latency_ms: float, rate_limit: int | None = None,
                 retry_after: float | None = None, hang_s: float | None = None, seed: int = 0) -> None:
        self.folder = folder
        self.args = ["--port", "0", "--articles", str(articles), "--latency-ms", str(latency_ms), "--seed", str(seed)]
        if rate_limit is not None:
            self.args += ["--rate-limit", str(rate_limit)]
        if retry_after is not None:
            self.args += ["--retry-after", str(retry_after)]
        if hang_s is not None:
            self.args += ["--hang-s", str(hang_s)]
        self.rate_limit = rate_limit
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._http = httpx.Client(timeout=10)

    def start(self, timeout: float = 30) -> Emulator:
        self.folder.mkdir(parents=True, exist_ok=True)
        err = (self.folder / "demo-server.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "collector", "demo-server", *self.args],
                                     cwd=REPO, env=base_env(), stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = ""
        deadline = time.monotonic() + timeout
        while "listening on" not in line:  # the first line, printed once the socket accepts
            line = self.proc.stdout.readline()
            if not line and (self.proc.poll() is not None or time.monotonic() > deadline):
                pytest.fail(f"demo-server did not start: {(self.folder / 'demo-server.log').read_text()[-2000:]}")
        self.url = line.strip().rsplit(" ", 1)[-1]
        return self

    @property
    def oauth_url(self) -> str:
        return self.url + "/api/oauth/token"

    @property
    def api_base_url(self) -> str:
        return self.url + "/dila/legifrance/lf-engine-app"

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, f"{self.url}/_demo/{path}", **kwargs)
        assert response.status_code == 200, f"/_demo/{path}: {response.status_code} {response.text[:300]}"
        return response.json()

    def stats(self, per_id: bool = False) -> dict[str, Any]:
        return self.admin("GET", "stats", params={"per_id": "1"} if per_id else None)

    def expected(self, codes: tuple[str, ...] = DEMO_MASSIVE_CODES, min_chars: int = 100) -> set[str]:
        data = self.admin("GET", "expected", params={"codes": ",".join(codes), "min_chars": str(min_chars)})
        return set(data["ids"])

    def faults(self, plan: list[dict[str, Any]] | None = None, **options: Any) -> dict[str, Any]:
        return self.admin("POST", "faults", json={"plan": plan or [], **options})

    def expire_tokens(self) -> int:
        return int(self.admin("POST", "expire-tokens")["expired"])

    def stop(self) -> None:
        self._http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def emulators(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """`emulators(name, articles=..., latency_ms=..., ...)` starts one; all stop at teardown."""
    started: list[Emulator] = []

    def start(name: str = "demo", **options: Any) -> Emulator:
        emu = Emulator(tmp_path / name, **options)
        started.append(emu)
        return emu.start()

    yield start
    for emu in started:
        emu.stop()


# ---- the collector as real processes --------------------------------------------------------------
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def permissions_bind() -> list[str]:
    """A command prefix under which file permissions bind: as root, `setpriv` without
    CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (still uid 0, so the interpreter under /root stays
    reachable); nothing for an unprivileged user."""
    if os.geteuid() != 0:
        return []
    require(shutil.which("setpriv") is not None, "setpriv (util-linux) to drop CAP_DAC_* as root")
    return NO_DAC


def base_env() -> dict[str, str]:
    """The current environment without any collector setting, plus the repo on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


def collector_env(folder: Path, emu: Emulator | None, *, rate: int, codes: tuple[str, ...] = DEMO_MASSIVE_CODES,
                  **extra: str) -> dict[str, str]:
    """Settings of a collector harvesting `emu` (None = the in-process demo), files in `folder`."""
    env = base_env()
    env.update(
        SCHEDULER_STATE_FILE=str(folder / "state" / "scheduler_state.json"),
        COLLECTOR_DB=str(folder / "collector.sqlite3"),
        LEGIFRANCE_MAX_REQUESTS_PER_SECOND=str(rate),
        MASSIVE_CODES=",".join(codes),
        MAINTENANCE_CODES=",".join(codes),
        COLLECTOR_LEASE_TTL_SECONDS="2",
        LOG_FORMAT="json",
        ENABLE_SCHEDULER="false",
        SIPHONNAGE_MODE="MAINTENANCE",
    )
    if emu is not None:
        env.update(
            LEGIFRANCE_CLIENT_ID=DEMO_CLIENT_ID,
            LEGIFRANCE_CLIENT_SECRET=DEMO_CLIENT_SECRET,
            LEGIFRANCE_OAUTH_URL=emu.oauth_url,
            LEGIFRANCE_API_BASE_URL=emu.api_base_url,
        )
    env.update(extra)
    return env


@dataclass
class Proc:
    """A collector process; stdout and stderr go to files (no pipe can fill up and block it)."""

    args: list[str]
    env: dict[str, str]
    folder: Path
    name: str
    prefix: list[str] = field(default_factory=list)  # e.g. setpriv / unshare wrappers
    popen: subprocess.Popen[bytes] | None = None

    @property
    def out_path(self) -> Path:
        return self.folder / f"{self.name}.out"

    @property
    def err_path(self) -> Path:
        return self.folder / f"{self.name}.err"

    def start(self) -> Proc:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen = subprocess.Popen([*self.prefix, sys.executable, *self.args], cwd=REPO, env=self.env,
                                          stdout=out, stderr=err, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def poll(self) -> int | None:
        assert self.popen is not None
        return self.popen.poll()

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL the process (and anything it started) and reap it."""
        if self.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait(10)

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (other lines are skipped)."""
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by SIGKILL
        return out

    def event(self, name: str, **match: Any) -> dict[str, Any] | None:
        for record in self.events():
            if record.get("event") == name and all(record.get(k) == v for k, v in match.items()):
                return record
        return None

    def last_json(self) -> dict[str, Any]:
        lines = [line for line in self.stdout().splitlines() if line.strip()]
        assert lines, f"{self.name}: no output; stderr: {self.stderr()[-2000:]}"
        return json.loads(lines[-1])


def cli(env: dict[str, str], folder: Path, name: str, *args: str, prefix: list[str] | None = None) -> Proc:
    return Proc(["-m", "collector", *args], env, folder, name, prefix or []).start()


def run_cli(env: dict[str, str], folder: Path, name: str, *args: str, timeout: float = 120,
            prefix: list[str] | None = None) -> Proc:
    """Run to completion (killed and failed after `timeout`)."""
    proc = cli(env, folder, name, *args, prefix=prefix)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{name} did not finish in {timeout} s; stderr: {proc.stderr()[-2000:]}")
    return proc


def saved_state(env: dict[str, str]) -> dict[str, Any] | None:
    path = Path(env["SCHEDULER_STATE_FILE"])
    return json.loads(path.read_text()) if path.exists() else None


# ---- the store, checked from outside ------------------------------------------------------------
def store_rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM legifrance_articles")]
    finally:
        conn.close()


def store_scalar(db: Path, sql: str) -> Any:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def stored_count(db: Path) -> int:
    try:
        return int(store_scalar(db, "SELECT count(*) FROM legifrance_articles"))
    except sqlite3.Error:
        return 0


def row_problems(row: dict[str, Any], today: date) -> list[str]:
    """What is wrong with one stored article row (empty list: complete and consistent)."""
    problems = []
    for column in ("id", "cid", "code_id", "etat", "text", "html", "content_sha256", "collected_at"):
        if not isinstance(row.get(column), str) or not row[column].strip():
            problems.append(f"{column} empty")
    if problems:
        return problems
    digest = hashlib.sha256(f"{row['text']}{HASH_SEPARATOR}{row['nota'] or ''}".encode()).hexdigest()
    if digest != row["content_sha256"]:
        problems.append("content_sha256 does not match the text")
    if len(row["text"]) < 100:
        problems.append(f"text shorter than the quality threshold ({len(row['text'])})")
    if not row["etat"].startswith("VIGUEUR"):
        problems.append(f"etat {row['etat']}")
    try:
        debut = date.fromisoformat(row["date_debut"]) if row["date_debut"] else None
        fin = date.fromisoformat(row["date_fin"]) if row["date_fin"] else None
        datetime.fromisoformat(row["collected_at"])
    except (TypeError, ValueError) as exc:
        return [*problems, f"unreadable date: {exc}"]
    if debut is None or debut > today:
        problems.append(f"date_debut {debut} not in force today")
    if fin is not None and (debut is None or fin <= debut or fin <= today):
        problems.append(f"date_fin {fin} inconsistent with date_debut {debut}")
    return problems


def check_store(db: Path, expected: set[str]) -> dict[str, Any]:
    """Exactly `expected`, once each, every row complete: the figures, asserted by the caller."""
    rows = store_rows(db)
    ids = [r["id"] for r in rows]
    today = datetime.now(timezone.utc).date()
    bad = {r["id"]: p for r in rows if (p := row_problems(r, today))}
    return {
        "expected": len(expected),
        "stored": len(rows),
        "distinct_ids": len(set(ids)),
        "distinct_cids": len({r["cid"] for r in rows}),
        "missing": sorted(expected - set(ids))[:20],
        "missing_count": len(expected - set(ids)),
        "unexpected": sorted(set(ids) - expected)[:20],
        "duplicated": len(ids) - len(set(ids)),
        "half_written": len(bad),
        "half_written_examples": dict(list(bad.items())[:5]),
    }


def assert_exact_store(figures: dict[str, Any]) -> None:
    assert figures["missing_count"] == 0, f"missing articles: {figures['missing']}"
    assert figures["unexpected"] == [], f"articles that should not be stored: {figures['unexpected']}"
    assert figures["duplicated"] == 0 and figures["distinct_cids"] == figures["stored"], figures
    assert figures["half_written"] == 0, figures["half_written_examples"]
    assert figures["stored"] == figures["expected"]
