"""COLLECTOR_SOURCE=dumps with nothing else configured: the scheduler's pass applies the
in-process emulator's archives (0 API requests), and the status shows the source and the stamp."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

from collector.config import Mode, Settings
from collector.demo.dumps import DemoDumps
from collector.runtime import build_runtime, status_payload


def test_dump_source_pass_applies_the_demo_archives(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings.from_env({"COLLECTOR_SOURCE": "dumps"}),
        db_path=tmp_path / "db.sqlite3", state_file=tmp_path / "state.json",
        dump_cache_dir=tmp_path / "cache", min_article_chars=0)
    runtime = build_runtime(settings, resume=False)
    try:
        summary = asyncio.run(runtime.scheduler.run_once(Mode.MAINTENANCE))
        assert summary.requests == 0 and not summary.errors, summary
        truth = DemoDumps(runtime.demo.config.articles, runtime.demo.config.seed).truth(3)
        wanted = {i: c for i, c in truth.items() if c in runtime.settings.massive_codes}
        with sqlite3.connect(settings.db_path) as conn:
            stored = dict(conn.execute("SELECT id, code_id FROM legifrance_articles WHERE etat LIKE 'VIGUEUR%'"))
        assert stored == wanted and summary.stored >= len(wanted)
        payload = status_payload(runtime)
        assert payload["collector_source"] == "dumps"
        assert payload["dump"]["last_stamp"] == "20250717-213000"
        assert payload["last_run"]["summary"]["stamp"] == "20250717-213000"
        again = asyncio.run(runtime.scheduler.run_once(Mode.MAINTENANCE))
        assert again.stored == 0 and again.requests == 0
    finally:
        runtime.close()
