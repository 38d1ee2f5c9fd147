"""The page's status line through AppTest on the real runtime: the badge and the alerts for a
garbage state file, a store that stops answering, a wrong PISTE secret (the emulator on a
loopback port), another collector holding the lease; the MASSIVE dialog's quoted cost."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from collector.demo import DemoServerThread
from collector.store.sqlite import SqliteStore
from tests.test_dashboard import (  # noqa: F401 - env is a fixture
    app, badge, env, keys, rendered_text, saved, table, unescaped, wait_until,
)

WRONG_SECRET = "wrong-secret-5e1d0c77"


def alerts(at: AppTest) -> list[str]:
    """The status line's alerts as plain text (Markdown escapes removed)."""
    return [unescaped(a.value) for a in (*at.error, *at.warning) if "DEMO source" not in a.value]


def test_a_garbage_state_file_is_said_once(env: Path) -> None:
    (env / "state.json").write_text("{oops", encoding="utf-8")
    at = app()
    shown = alerts(at)
    assert len(shown) == 1, shown
    assert shown[0].startswith("The state file could not be used at start-up")
    assert "What to do:" in shown[0]
    assert badge(at) == "STOPPED"


def test_a_store_that_stops_answering_is_an_error_alert(env: Path) -> None:
    at = app()
    assert alerts(at) == []
    db = env / "collector.sqlite3"
    garbage = env / "garbage"
    garbage.write_bytes(b"not a database " * 400)
    garbage.replace(db)  # the path now names a file that is not SQLite
    wait_until(at, lambda a: any("store does not answer" in t for t in alerts(a)), timeout=30)
    shown = [t for t in alerts(at) if "store does not answer" in t]
    assert len(shown) == 1 and str(db) in shown[0] and "COLLECTOR_DB" in shown[0]
    assert not at.exception


@pytest.fixture
def piste(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoServerThread]:
    """The emulator on a loopback port as PISTE, with a wrong client secret."""
    with DemoServerThread() as server:
        monkeypatch.setenv("LEGIFRANCE_CLIENT_ID", "demo-client-id")
        monkeypatch.setenv("LEGIFRANCE_CLIENT_SECRET", WRONG_SECRET)
        monkeypatch.setenv("LEGIFRANCE_OAUTH_URL", server.oauth_url)
        monkeypatch.setenv("LEGIFRANCE_API_BASE_URL", server.api_base_url)
        monkeypatch.setenv("MAINTENANCE_CODES", "LEGITEXT000099900001")
        yield server


def test_a_wrong_secret_is_one_error_alert(piste: DemoServerThread) -> None:
    at = app()
    at.button(key="start").click().run()
    wait_until(at, lambda a: badge(a) == "ERROR", timeout=60)
    shown = alerts(at)
    assert len(shown) == 1, shown
    assert shown[0].startswith("The collector stopped on an error") and "LEGIFRANCE_CLIENT_SECRET" in shown[0]
    assert "retries by itself at" in shown[0]
    assert "retry" in keys(at), "Retry now, since START is disabled while running"
    assert at.button(key="start").disabled
    text = rendered_text(at)
    assert "or on Start" not in text
    message = shown[0].split(": ", 1)[1].split("  \n**What to do:**")[0]
    assert message.startswith("LegifranceAuthError") and "401" in message
    elements = [*at.markdown, *at.caption, *at.error, *at.warning, *at.info, *at.text]
    assert sum(message in unescaped(e.value) for e in elements) == 1, "the message is said once"
    assert "RUNNING" not in text, "no running next to the error"
    assert WRONG_SECRET not in text


def test_standby_names_the_lease_holder(env: Path) -> None:
    holder = "other-host:4242:20261201T000000Z"
    other = SqliteStore(env / "collector.sqlite3")
    try:
        assert other.acquire_lease(holder, 600).acquired
        at = app()
        at.button(key="start").click().run()
        wait_until(at, lambda a: badge(a) == "STANDBY", timeout=30)
        line = next(unescaped(m.value) for m in at.markdown if "collector held by" in m.value)
        assert holder in line and "since" in line
        assert alerts(at) == [], "standby is a state, not a problem"
    finally:
        other.close()


def test_the_massive_dialog_quotes_the_demo_pass_cost(env: Path) -> None:
    at = app()
    at.segmented_control(key="mode_choice").set_value("MASSIVE").run()
    text = " ".join(unescaped(m.value) for m in at.markdown)
    cost = re.search(r"A full pass costs about ([\d,]+) requests", text)
    assert cost, text
    requests = int(cost.group(1).replace(",", ""))
    assert 5 < requests < 5_000, "the demo's real cost, not the daily quota"
    assert "280,000" in text and "of the daily quota" in text


def test_collect_now_walks_one_code_and_is_refused_during_massive(env: Path) -> None:
    code = "LEGITEXT000099900004"  # a MASSIVE-only demo code, never walked by MAINTENANCE

    def walked(a: AppTest) -> bool:
        rows = table(a, "last walked")
        return rows[rows["code"] == code].iloc[0]["last walked"] != "not walked yet"

    at = app()
    at.selectbox(key="collect_code_choice").set_value(code).run()
    at.button(key="collect_now").click().run()
    assert any(f"Collecting {code} now" in t.value for t in at.toast)
    wait_until(at, walked, timeout=60)
    assert saved(env) is None, "the saved {running, mode} is untouched"
    assert badge(at) in {"STOPPED", "RUNNING"}

    at.segmented_control(key="mode_choice").set_value("MASSIVE").run()
    at.button(key="confirm_massive").click().run()
    at.button(key="start").click().run()
    at.button(key="collect_now").click().run()
    refused = [t for t in alerts(at) if t.startswith("Collect now refused")]
    assert len(refused) == 1 and "MASSIVE pass is on" in refused[0]
