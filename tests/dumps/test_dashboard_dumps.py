"""The page with COLLECTOR_SOURCE=dumps and nothing else configured (Streamlit's AppTest, the real
runtime): the source, the last dump stamp applied and the next check are shown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from collector.config import Mode
from collector.shared_runtime import get_runtime
from tests.conftest import COLLECTOR_ENV, REPO


def test_page_shows_the_dump_source_and_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in COLLECTOR_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLLECTOR_SOURCE", "dumps")
    monkeypatch.setenv("COLLECTOR_DB", str(tmp_path / "db.sqlite3"))
    monkeypatch.setenv("SCHEDULER_STATE_FILE", str(tmp_path / "state.json"))
    monkeypatch.setenv("DUMP_CACHE_DIR", str(tmp_path / "cache"))
    get_runtime.clear()
    try:
        at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=60).run()
        assert not at.exception
        texts = [t.value for t in at.text]
        assert any("Last dump applied: none yet" in t for t in texts), texts
        assert any("DILA LEGI dumps" in m.value for m in at.markdown)
        summary = asyncio.run(get_runtime().scheduler.run_once(Mode.MAINTENANCE))
        assert summary.stored > 0 and summary.requests == 0
        at.run()
        texts = [t.value for t in at.text]
        assert any("stamp 20250717-213000" in t for t in texts), texts
    finally:
        get_runtime().close()
        get_runtime.clear()
