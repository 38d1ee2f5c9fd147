"""Scenario 3: bad state files, given to the real processes `python -m collector status` and
`python -m collector run --once`. Each starts with the defaults (ENABLE_SCHEDULER=false,
SIPHONNAGE_MODE=MAINTENANCE), logs why, and keeps the bad entry aside (`<name>.bad-*`) when the
folder allows it. Where the state cannot be written, it is said, not pretended: `status` has
state_saved=false and state_error, `run --mode MASSIVE` warns "mode not saved: ...", and
the live status payload (the page, GET /aspirage/status) has state_saved=false and state_error.

Permission cases need permissions to bind: as root the collector runs under `setpriv` without
CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (still root, so the interpreter under /root stays
reachable), unprivileged users need nothing.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import stat
import subprocess
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collector.demo import DEMO_MASSIVE_CODES
from tests.conftest import require
from tests.reliability.conftest import Proc, Report, cli, collector_env, permissions_bind, run_cli, wait_for

pytestmark = pytest.mark.reliability

VALID_MASSIVE = b'{"running": true, "mode": "MASSIVE"}'  # what a bad file pretends, vs the defaults
LIVE_STATUS = (  # the real runtime, a save attempt, then its status payload (as the page and routes see it)
    "import json; from collector.runtime import build_runtime, status_payload; "
    "rt = build_runtime(resume=False); rt.scheduler.load(); rt.scheduler.set_mode('MASSIVE'); "
    "print(json.dumps(status_payload(rt), default=str)); rt.close()"
)


@dataclass(frozen=True)
class BadState:
    name: str
    make: Callable[[Path], None]  # creates the bad entry at the state path (its folder exists)
    problem: str  # regex the logged problem must match
    moved: bool = True  # put aside as <name>.bad-*
    unwritable: bool = False  # a save to the path fails
    needs_dac: bool = False  # root must drop CAP_DAC_* for the permission to bind


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(path.name).randbytes(4096))


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("kept")


def _symlink_elsewhere(path: Path) -> None:
    target = path.parent.parent / "elsewhere" / "real.json"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(VALID_MASSIVE)
    path.symlink_to(target)


def _unreadable(path: Path) -> None:
    path.write_bytes(VALID_MASSIVE)
    path.chmod(0o000)


def _read_only_folder(path: Path) -> None:
    path.write_bytes(b"{broken")
    path.parent.chmod(0o555)


def _parent_is_a_file(path: Path) -> None:
    shutil.rmtree(path.parent)
    path.parent.write_text("a file where the state folder should be")


CASES = [
    BadState("empty file", _bytes(b""), "is empty"),
    BadState("truncated JSON", _bytes(b'{"running": true, "mo'), "is not valid JSON"),
    BadState("a JSON list", _bytes(b'[true, "MASSIVE"]'), "expected a JSON object, got a list"),
    BadState("running is a string", _bytes(b'{"running": "yes", "mode": "MASSIVE"}'), "'running' must be true or false"),
    BadState("mode is a number", _bytes(b'{"running": true, "mode": 1}'), "'mode' must be a string"),
    BadState("unknown mode", _bytes(b'{"running": true, "mode": "TURBO"}'), "invalid mode 'TURBO'"),
    BadState("lowercase mode", _bytes(b'{"running": true, "mode": "massive"}'), "invalid mode 'massive'"),
    BadState("huge file (1 MB)", _bytes(b'{"running": true, "mode": "MASSIVE", "pad": "' + b"x" * 1_000_000 + b'"}'),
             "over the 65536-byte limit"),
    BadState("binary garbage", _garbage, "is not UTF-8|is not valid JSON"),
    BadState("nested 60 000 deep", _bytes(b"[" * 60_000), "nested too deeply|is not valid JSON"),
    BadState("a directory at the path", _directory, "is a directory"),
    BadState("a FIFO at the path", lambda p: os.mkfifo(p), "is not a regular file"),
    BadState("a symlink to elsewhere", _symlink_elsewhere, "is a symbolic link"),
    BadState("no read permission", _unreadable, "cannot be read: Permission denied", needs_dac=True),
    BadState("read-only folder", _read_only_folder, "is not valid JSON", moved=False, unwritable=True, needs_dac=True),
    BadState("parent is a file", _parent_is_a_file, "cannot examine the path: Not a directory", moved=False,
             unwritable=True),
]


def _prefix(case: BadState) -> list[str]:
    return permissions_bind() if case.needs_dac else []


def _describe(path: Path) -> Any:
    """What is at `path`, comparable before and after (bytes, a folder listing, a link target)."""
    if path.is_symlink():
        return ("symlink", os.readlink(path))
    if path.is_dir():
        return ("dir", sorted(p.name for p in path.iterdir()))
    if stat.S_ISFIFO(path.lstat().st_mode):
        return ("fifo",)
    mode = path.stat().st_mode
    path.chmod(mode | 0o400)
    try:
        return ("file", path.read_bytes())
    finally:
        path.chmod(stat.S_IMODE(mode))


def _setup(case: BadState, folder: Path, emu_env: dict[str, str]) -> tuple[dict[str, str], Path, Any]:
    env = {**emu_env, "SCHEDULER_STATE_FILE": str(folder / "state" / "scheduler_state.json"),
           "COLLECTOR_DB": str(folder / "collector.sqlite3")}
    path = Path(env["SCHEDULER_STATE_FILE"])
    path.parent.mkdir(parents=True)
    case.make(path)
    return env, path, None if case.name == "parent is a file" else _describe(path)


def _aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".bad-*")) if path.parent.is_dir() else []


def _check_logged(proc: Proc, case: BadState, path: Path) -> dict[str, Any]:
    warning = proc.event("state_file_invalid")
    assert warning is not None, proc.stderr()[-2000:]
    assert re.search(case.problem, warning["problem"]) and str(path) in warning["problem"], warning
    assert warning["using"] == "defaults"
    if case.moved:
        assert warning["moved_to"] and warning.get("move_problem") is None, warning
    else:
        assert warning["moved_to"] is None and "cannot move it aside" in warning["move_problem"], warning
    return warning


def _check_kept(case: BadState, path: Path, before: Any) -> None:
    if case.name == "parent is a file":
        assert path.parent.read_text() == "a file where the state folder should be"
        return
    aside = _aside(path)
    if case.moved:
        assert len(aside) == 1 and not os.path.lexists(path), aside
        assert _describe(aside[0]) == before  # the bad entry is kept, as it was
    else:
        assert aside == [] and _describe(path) == before
    if case.name == "a symlink to elsewhere":  # the link's target is never touched
        assert (path.parent.parent / "elsewhere" / "real.json").read_bytes() == VALID_MASSIVE


def _run_case(case: BadState, folder: Path, emu_env: dict[str, str]) -> dict[str, Any]:
    prefix = _prefix(case)
    checks: dict[str, Any] = {}

    env, path, before = _setup(case, folder / "status", emu_env)
    status = run_cli(env, folder / "status", "status", "status", prefix=prefix, timeout=60)
    assert status.poll() == 0, status.stderr()[-2000:]
    payload = status.last_json()
    assert (payload["running"], payload["mode"], payload["massive_active"]) == (False, "MAINTENANCE", False), payload
    assert payload["state_source"] == "defaults" and re.search(case.problem, payload["state_problem"]), payload
    if case.unwritable:  # nothing was saved, but a change could not be either: said, not pretended
        assert payload["state_saved"] is False and f"state cannot be saved to {path}" in payload["state_error"]
    else:
        assert payload["state_saved"] is True and "state_error" not in payload, payload
    _check_logged(status, case, path)
    _check_kept(case, path, before)
    checks["status"] = payload.get("state_error") or "defaults"

    env, path, before = _setup(case, folder / "once", emu_env)
    once = run_cli(env, folder / "once", "once", "run", "--once", prefix=prefix, timeout=90)
    assert once.poll() == 0, once.stderr()[-2000:]
    summary = once.last_json()
    assert summary["mode"] == "MAINTENANCE" and summary["interrupted"] is False, summary
    loaded = once.event("state loaded")
    assert loaded is not None and loaded["source"] == "defaults" and re.search(case.problem, loaded["problem"])
    _check_logged(once, case, path)
    _check_kept(case, path, before)
    checks["run --once"] = "defaults"

    if case.unwritable:
        env, path, before = _setup(case, folder / "save", emu_env)
        # `run --mode M` saves M (`--once` saves nothing): in the foreground until SIGTERM
        save = cli(env, folder / "save", "save", "run", "--mode", "MASSIVE", prefix=prefix)
        try:
            wait_for(lambda: save.event("pass start") or save.poll() is not None, 90, "a pass of run --mode MASSIVE")
            save.signal(signal.SIGTERM)
            # Its exit within 10 s is test_graceful_stop's; here, 4 cases run at once on a loaded
            # machine: the wait is a safety net, and its output is shown if it ever runs out.
            try:
                code = save.wait(30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"no exit 30 s after SIGTERM: {save.stderr()[-3000:]}") from None
            assert code == 0, save.stderr()[-2000:]
        finally:
            save.kill()
        started = save.event("pass start")
        assert started is not None and started["mode"] == "MASSIVE"  # the action still happens, in memory
        warning = [line for line in save.stderr().splitlines() if line.startswith("warning: mode not saved:")]
        assert warning and f"state not saved to {path}" in warning[0], save.stderr()[-2000:]
        env, path, before = _setup(case, folder / "live", emu_env)
        live = Proc(["-c", LIVE_STATUS], env, folder / "live", "live", prefix).start()
        assert live.wait(60) == 0, live.stderr()[-2000:]
        payload = live.last_json()
        assert payload["state_saved"] is False and f"state not saved to {path}" in payload["state_error"], payload
        assert payload["mode"] == "MASSIVE"  # in memory, and said to be unsaved
        checks["save"] = payload["state_error"]
    return checks


def test_bad_state_files(tmp_path: Path, emulators: Any, report: Report) -> None:
    emu = emulators(articles=30, latency_ms=2)
    emu_env = collector_env(tmp_path, emu, rate=100, codes=DEMO_MASSIVE_CODES[:1])
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}

    def run(index: int, case: BadState) -> None:
        try:
            results[case.name] = _run_case(case, tmp_path / f"case-{index:02d}", emu_env)
        except BaseException:  # noqa: BLE001 - collected and reported per case below
            failures[case.name] = traceback.format_exc()[-3000:]

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(run, range(len(CASES)), CASES))
    finally:
        for folder in tmp_path.glob("case-*/*/state"):  # let pytest clean up the read-only folders
            if folder.is_dir():
                folder.chmod(0o755)
    if any("required in CI" in tb or "Skipped" in tb for tb in failures.values()):
        require(False, "setpriv (util-linux) to drop CAP_DAC_* as root")
    report.record("state_files", {
        "cases": len(CASES), "cases_passed": len(results), "unwritable_cases": sum(c.unwritable for c in CASES),
        "processes": 2 * len(CASES) + 2 * sum(c.unwritable for c in CASES),
        "by_case": results, "failures": sorted(failures),
    })
    assert not failures, "\n\n".join(f"--- {name}\n{tb}" for name, tb in failures.items())
