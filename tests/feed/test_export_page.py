"""The page shows the export's status (Streamlit's AppTest on the real runtime: demo source,
the Supabase store and the export talking to a fake Supabase over a socket)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from collector.store.supabase import SupabaseStore
from tests.conftest import COLLECTOR_ENV, REPO
from tests.feed.test_export import BUCKET, KEY, version
from tests.store.fake_postgrest import Fault
from tests.store.fake_storage import FakeSupabaseServer


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSupabaseServer]:
    for name in COLLECTOR_ENV:
        monkeypatch.delenv(name, raising=False)
    with FakeSupabaseServer(KEY, (BUCKET,)) as s:
        monkeypatch.setenv("SCHEDULER_STATE_FILE", str(tmp_path / "state.json"))
        monkeypatch.setenv("SUPABASE_URL", s.url)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", KEY)
        monkeypatch.setenv("EXPORT_BUCKET", BUCKET)
        st.cache_resource.clear()
        yield s
        st.cache_resource.clear()  # on_release closes the runtime: the export thread stops


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_the_page_shows_the_export_and_its_last_error(server: FakeSupabaseServer) -> None:
    store = SupabaseStore(server.url, KEY)
    store.commit_batch([version(1, 1), version(2, 1)])
    server.storage.fail_next(*[Fault(status=503, body="<b>**Service Unavailable**</b>", path_contains="/object/")
                               for _ in range(3)])
    at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=30).run()
    deadline = time.monotonic() + 20
    while metrics(at).get("Last exported event") != "2" and time.monotonic() < deadline:
        time.sleep(0.1)
        at.run()
    shown = metrics(at)
    assert "Export to the workers' bucket" in [h.value for h in at.subheader]
    assert (shown["Bucket"], shown["Last exported event"], shown["Events pending"]) == (BUCKET, "2", "0")
    assert shown["Uploads / queue writes"] == "2 / 2"
    said = [re.sub(r"\\(.)", r"\1", w.value) for w in at.warning if "503" in w.value]  # escapes removed
    assert len(said) == 1 and said[0].startswith("The export to the workers' bucket failed")
    assert "**Service Unavailable**" in said[0], "the server's text, as it said it"
    assert not any("**Service" in w.value for w in at.warning), "as literal text: escaped for Markdown"
    assert KEY not in str([e.value for e in at.main if hasattr(e, "value")])
    store.close()
