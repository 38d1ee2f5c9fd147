"""`python -m collector changes` as a real subprocess over a real SQLite change log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from collector.store import SqliteStore
from collector.store.rows import CHANGE_KEYS
from tests.conftest import REPO
from tests.store.helpers import article

CODE, OTHER = "LEGITEXT000099900001", "LEGITEXT000099900002"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LEGIFRANCE_", "SUPABASE_"))}
    base.update(PYTHONPATH=str(REPO), COLLECTOR_DB=str(tmp_path / "collector.sqlite3"), LOG_FORMAT="json",
                SCHEDULER_STATE_FILE=str(tmp_path / "state.json"))
    return base


def changes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "changes", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_prints_one_event_per_line_in_seq_order_and_pages(env: dict[str, str]) -> None:
    assert lines(changes(env)) == []  # a new database: an empty log, exit 0
    store = SqliteStore(env["COLLECTOR_DB"])
    try:
        rows = [article(n, CODE if n % 3 else OTHER) for n in range(1, 1203)]  # more than a page
        store.commit_batch(rows, run_id=4)
        new = replace(rows[0], id="LEGIARTI000000999999", content_sha256="e" * 64)
        store.commit_batch([new], tag="5")
        expected = store.read_changes(limit=5000)
    finally:
        store.close()
    printed = lines(changes(env))
    assert printed == expected and len(printed) == 1203
    assert all(tuple(p) == CHANGE_KEYS for p in printed)
    assert printed[-1]["kind"] == "modified" and printed[-1]["previous_id"] == rows[0].id
    assert [p["seq"] for p in lines(changes(env, "--since", "1200"))] == [1201, 1202, 1203]
    assert [p["seq"] for p in lines(changes(env, "--since", "10", "--limit", "2"))] == [11, 12]
    by_code = lines(changes(env, "--code", OTHER, "--limit", "1000"))
    assert len(by_code) == 400 and {p["code_id"] for p in by_code} == {OTHER}


@pytest.mark.parametrize("args", [["--since", "-1"], ["--since", "x"], ["--limit", "0"]])
def test_bad_arguments_exit_2_with_a_clear_line(env: dict[str, str], args: list[str]) -> None:
    result = changes(env, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert "expected an integer" in result.stderr


def test_the_command_does_not_import_streamlit(env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "collector", "changes"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "collector.feed.reader" in imported and "streamlit" not in imported
