"""`python -m collector load-dump` as a user runs it: against `demo-server`'s /OPENDATA/LEGI/ over
a real socket (index parsed, archives downloaded into DUMP_CACHE_DIR, applied), its JSON summary
as the last line, its exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.demo.dumps import DemoDumps
from tests.conftest import COLLECTOR_ENV, REPO, free_port


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "demo-server", "--port", str(port), "--articles", "200", "--seed", "5"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("demo-server listening"), proc.stderr.read() if proc.poll() else ""
        yield f"http://127.0.0.1:{port}/OPENDATA/LEGI/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in COLLECTOR_ENV}
    env.update(COLLECTOR_DB=str(tmp_path / "db.sqlite3"), DUMP_CACHE_DIR=str(tmp_path / "cache"),
               LOG_LEVEL="WARNING", MIN_ARTICLE_CHARS="0")
    return subprocess.run([sys.executable, "-m", "collector", "load-dump", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_load_dump_from_the_emulator_folder(server: str, tmp_path: Path) -> None:
    done = run(tmp_path, server, "--codes", "all")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    dumps = DemoDumps(200, seed=5)
    assert [a["stamp"] for a in summary["archives"]] == [n.stamp for n in dumps.names]
    assert summary["ok"] and summary["stamp"] == dumps.names[-1].stamp and summary["bad_files"] == 0
    assert summary["deleted"] > 0 and summary["retired"] > 0 and summary["updated"] > 0
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(n.name for n in dumps.names)
    again = run(tmp_path, server, "--codes", "all")  # nothing new: nothing downloaded or applied
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["archives"] == []
    status = subprocess.run([sys.executable, "-m", "collector", "status"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "COLLECTOR_DB": str(tmp_path / "db.sqlite3"),
                                 "SCHEDULER_STATE_FILE": str(tmp_path / "state.json")}, timeout=60)
    assert json.loads(status.stdout)["dump"]["last_stamp"] == dumps.names[-1].stamp


def test_bad_arguments_and_sources_fail_clearly(tmp_path: Path) -> None:
    bad = run(tmp_path, str(tmp_path), "--codes", "LEGITEXT12")
    assert bad.returncode == 2 and "--codes" in bad.stderr
    missing = run(tmp_path, str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert "no such file or folder" in json.loads(missing.stdout.strip().splitlines()[-1])["errors"][0]
    (tmp_path / "notes.txt").write_text("x")
    nothing = run(tmp_path, str(tmp_path))  # a folder without any archive: no global to start from
    assert nothing.returncode == 1 and "no global archive" in nothing.stdout
