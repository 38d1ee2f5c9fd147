"""Where the state in effect came from, in the status JSON (route and CLI): `state_source`
(file / store / defaults) and `state_store_problem` when the store copy could not be used.
In-process and fast; the same behaviour is shown with real processes in the other tests."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.config import Mode, Settings
from collector.logs import reset_logging
from collector.runtime import Runtime, build_runtime, status_payload
from collector.state import SchedulerState
from collector.store.sqlite import SqliteStore


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_file=tmp_path / "tmp" / "state.json", db_path=tmp_path / "store.sqlite3")


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    made: list[Runtime] = []
    yield made
    for rt in made:
        rt.close()
    reset_logging()


def test_a_wiped_state_file_resumes_from_the_store_and_the_status_says_so(
    settings: Settings, runtimes: list[Runtime]
) -> None:
    store = SqliteStore(settings.db_path)
    try:
        record = SchedulerState(running=False, mode=Mode.MASSIVE).to_json()
        store.save_state({**record, "updated_at": "2026-11-28T10:00:00+00:00"})
    finally:
        store.close()
    assert not settings.state_file.exists()

    rt = build_runtime(settings)
    runtimes.append(rt)
    live = status_payload(rt)
    assert (live["running"], live["mode"], live["state_source"]) == (False, "MASSIVE", "store")
    assert "state_store_problem" not in live
    offline = status_payload(settings, rt.store)
    assert (offline["mode"], offline["state_source"]) == ("MASSIVE", "store")


def test_an_unusable_store_copy_is_reported_and_the_file_used(settings: Settings, runtimes: list[Runtime]) -> None:
    settings.state_file.parent.mkdir()
    settings.state_file.write_text(json.dumps({"running": False, "mode": "MASSIVE"}))
    store = SqliteStore(settings.db_path)
    try:
        store.save_state({"running": True, "mode": "MAINTENANCE", "updated_at": "2999-01-01T00:00:00+00:00"})
    finally:
        store.close()
    # A row the collector cannot read (as another tool could leave it): the file wins, said so.
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE collector_state SET mode = 'FAST'")

    rt = build_runtime(settings)
    runtimes.append(rt)
    live = status_payload(rt)
    assert (live["running"], live["mode"], live["state_source"]) == (False, "MASSIVE", "file")
    assert "store record invalid" in live["state_store_problem"]
    json.dumps(live)
