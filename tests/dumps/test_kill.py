"""kill -9 during `load-dump` (a real subprocess, killed at random points several times), then a
rerun: the store ends identical to an uninterrupted load, no change-log event twice, the stamp
right, and the global's two reader processes (DUMP_READERS=2) gone with the killed load. The
demo global of 8,000 articles takes seconds to load, so kills land mid-archive."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from collector.demo.dumps import DemoDumps
from tests.conftest import COLLECTOR_ENV, REPO

ARTICLE_COLUMNS = "id, cid, code_id, code_title, num, etat, date_debut, date_fin, section_path, text, html, nota, content_sha256"
EVENT_COLUMNS = "kind, code_id, cid, id, previous_id, num, etat, content_sha256, run_id"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archives")
    DemoDumps(8000, seed=7).write_all(path, compresslevel=1)
    return path


def command(db: Path, folder: Path) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in COLLECTOR_ENV}
    env.update(COLLECTOR_DB=str(db), LOG_LEVEL="WARNING", PYTHONPATH=str(REPO),
               DUMP_CACHE_DIR=str(db.parent / "cache"), DUMP_READERS="2")
    return [sys.executable, "-m", "collector", "load-dump", str(folder), "--codes", "all"], env


def snapshot(db: Path) -> dict[str, object]:
    with sqlite3.connect(db) as conn:
        return {
            "articles": conn.execute(f"SELECT {ARTICLE_COLUMNS} FROM legifrance_articles ORDER BY id").fetchall(),
            "rejected": conn.execute("SELECT id, code_id, reason, length FROM legifrance_rejected ORDER BY id").fetchall(),
            "events": conn.execute(f"SELECT {EVENT_COLUMNS} FROM legifrance_changes ORDER BY seq").fetchall(),
            "state": conn.execute("SELECT last_stamp, last_archive, global_stamp, codes, archive "
                                  "FROM collector_dump_state").fetchall(),
        }


def test_kill_9_mid_load_then_rerun_equals_an_uninterrupted_load(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    (tmp_path / "victim").mkdir()
    ref_db, victim_db = tmp_path / "ref" / "db.sqlite3", tmp_path / "victim" / "db.sqlite3"
    args, env = command(ref_db, folder)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = snapshot(ref_db)
    assert reference["state"][0][0] == "20250717-213000" and reference["state"][0][4] is None

    rng = random.Random()
    kills: list[tuple[float, object]] = []
    orphans = 0  # reader processes seen at a kill (all must end)
    args, env = command(victim_db, folder)
    for _ in range(4):
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and not in_progress(victim_db):
            time.sleep(0.05)
        delay = rng.uniform(0.0, 0.6)  # somewhere in the archive, past its first batch
        time.sleep(delay)
        readers = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(readers, timeout=30)  # a global's reader processes end with it
        assert not alive, f"reader processes outlived the killed load: {alive}"
        orphans += len(readers)
        kills.append((round(delay, 2), snapshot(victim_db)["state"]))
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (kills, done.stderr[-2000:])
    after = snapshot(victim_db)
    assert after["state"] == reference["state"], kills
    assert after["articles"] == reference["articles"], kills
    assert after["rejected"] == reference["rejected"], kills
    events = after["events"]
    assert len(events) == len(set(events)), f"an event was written twice; kills {kills}"
    assert events == reference["events"], kills
    assert any(state and state[0][4] is not None for _, state in kills), f"no kill landed mid-archive: {kills}"
    assert orphans, "no kill landed while the global's reader processes ran"


def in_progress(db: Path) -> bool:
    """An archive is half-applied (its first batches are committed)."""
    try:
        with sqlite3.connect(db, timeout=0.1) as conn:
            row = conn.execute("SELECT archive FROM collector_dump_state").fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] is not None
