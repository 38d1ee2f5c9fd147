"""The dashboard page through Streamlit's AppTest, on the real runtime (demo source, SQLite).

Each test gets its own state file and database; the runtime singleton is cleared around
every test (its on_release stops the collector thread). AppTest runs whole script runs only,
so the live fragment is checked for its content, not its timer.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import COLLECTOR_ENV, REPO

DASHBOARD = str(REPO / "dashboard.py")
PASSWORD = "Pw-7f3a9c-correct horse"  # distinctive, so a leak anywhere is unambiguous


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A demo-source environment with a private state file and database."""
    for name in COLLECTOR_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCHEDULER_STATE_FILE", str(tmp_path / "state.json"))
    monkeypatch.setenv("COLLECTOR_DB", str(tmp_path / "collector.sqlite3"))
    monkeypatch.setenv("LEGIFRANCE_MAX_REQUESTS_PER_SECOND", "20")
    st.cache_resource.clear()
    yield tmp_path
    st.cache_resource.clear()  # on_release closes the runtime: the thread stops


def app() -> AppTest:
    return AppTest.from_file(DASHBOARD, default_timeout=30).run()


def saved(env: Path) -> dict[str, Any] | None:
    """{running, mode} from the state file, or None when there is no file."""
    path = env / "state.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"running": data["running"], "mode": data["mode"]}


def keys(at: AppTest) -> set[str]:
    return {b.key for b in at.button if b.key}


def rendered_text(at: AppTest) -> str:
    """Every proto of the rendered tree as text (labels, values, bodies, options)."""
    return "\n".join(str(node.proto) for node in at if getattr(node, "proto", None) is not None)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def badge(at: AppTest) -> str:
    """The status line's badge word ("RUNNING", "ERROR", ...)."""
    found = [m.value for m in at.markdown if "-badge[" in m.value]
    assert len(found) == 1, found
    return found[0].rsplit(" ", 1)[-1].rstrip("]")


def table(at: AppTest, column: str) -> Any:
    """The first dataframe with that column."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def unescaped(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def wait_until(at: AppTest, cond: Callable[[AppTest], bool], timeout: float = 45.0) -> AppTest:
    deadline = time.monotonic() + timeout
    while not cond(at.run()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.5)
    return at


def test_page_shows_demo_source_and_store(env: Path) -> None:
    at = app()
    assert not at.exception
    text = rendered_text(at)
    assert "**Source:** DEMO" in text and "not real law" in text.replace("\n", " ")
    assert str(env / "collector.sqlite3") in text
    assert keys(at) >= {"start", "stop", "reset"}
    assert not at.button(key="start").disabled and at.button(key="stop").disabled
    assert badge(at) == "STOPPED"
    assert not at.error and not [w for w in at.warning if "DEMO" not in w.value], "no problem, no alert"


def test_start_and_stop_save_the_state(env: Path) -> None:
    at = app()
    assert saved(env) is None  # nothing saved before a press

    at.button(key="start").click().run()
    assert saved(env) == {"running": True, "mode": "MAINTENANCE"}
    assert any("saved" in t.value for t in at.toast)
    assert at.button(key="start").disabled and not at.button(key="stop").disabled
    assert badge(at) == "RUNNING"

    at.button(key="stop").click().run()
    assert saved(env) == {"running": False, "mode": "MAINTENANCE"}
    assert not at.button(key="start").disabled and at.button(key="stop").disabled
    assert not at.exception


def test_massive_needs_confirmation(env: Path) -> None:
    at = app()
    at.button(key="start").click().run()

    at.segmented_control(key="mode_choice").set_value("MASSIVE").run()
    assert {"confirm_massive", "cancel_massive"} <= keys(at), "the dialog asks first"
    assert saved(env) == {"running": True, "mode": "MAINTENANCE"}

    at.button(key="cancel_massive").click().run()
    assert saved(env) == {"running": True, "mode": "MAINTENANCE"}
    assert at.segmented_control(key="mode_choice").value == "MAINTENANCE"
    assert "confirm_massive" not in keys(at)

    at.segmented_control(key="mode_choice").set_value("MASSIVE").run()
    at.button(key="confirm_massive").click().run()
    assert saved(env) == {"running": True, "mode": "MASSIVE"}
    assert at.segmented_control(key="mode_choice").value == "MASSIVE"
    assert "mode **MASSIVE**" in rendered_text(at)
    assert "confirm_massive" not in keys(at)

    at.segmented_control(key="mode_choice").set_value("MAINTENANCE").run()  # no confirmation
    assert saved(env) == {"running": True, "mode": "MAINTENANCE"}
    assert not at.exception


def test_mode_switch_while_stopped_keeps_it_stopped(env: Path) -> None:
    at = app()
    at.segmented_control(key="mode_choice").set_value("MASSIVE").run()
    at.button(key="confirm_massive").click().run()
    assert saved(env) == {"running": False, "mode": "MASSIVE"}


def test_reset_needs_confirmation_and_clears_the_state(env: Path) -> None:
    at = app()
    at.button(key="start").click().run()
    at.segmented_control(key="mode_choice").set_value("MASSIVE").run()
    at.button(key="confirm_massive").click().run()
    assert saved(env) == {"running": True, "mode": "MASSIVE"}

    at.button(key="reset").click().run()
    assert {"confirm_reset_button", "cancel_reset"} <= keys(at)
    at.button(key="cancel_reset").click().run()
    assert saved(env) == {"running": True, "mode": "MASSIVE"}

    at.button(key="reset").click().run()
    at.button(key="confirm_reset_button").click().run()
    assert saved(env) is None  # cleared: the next start uses the environment defaults
    assert at.segmented_control(key="mode_choice").value == "MAINTENANCE"
    assert not at.button(key="start").disabled  # ENABLE_SCHEDULER unset: stopped
    assert not at.exception


def test_status_and_logs_are_rendered(env: Path) -> None:
    at = app()
    at.button(key="start").click().run()
    wait_until(at, lambda a: int(metric(a, "Articles stored").replace(",", "")) > 0)

    assert badge(at) in {"RUNNING", "WAITING"}
    assert any(m.label == "Requests this day" for m in at.metric)
    assert any(m.label == "Rejected (quality filter)" for m in at.metric)
    codes = table(at, "last walked")
    assert {"LEGITEXT000099900001", "LEGITEXT000099900005"} <= set(codes["code"])
    unwalked = codes[codes["code"] == "LEGITEXT000099900005"].iloc[0]  # a MASSIVE-only code
    assert unwalked["last walked"] == "not walked yet" and unwalked["this pass"] == "not in this pass"
    assert "pending: 0/0" not in rendered_text(at)
    assert "collect_now" in keys(at)

    logs = table(at, "level")
    assert list(logs.columns) == ["time (UTC)", "level", "event", "fields"]
    assert list(logs["time (UTC)"]) == sorted(logs["time (UTC)"], reverse=True), "newest first"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", t) for t in logs["time (UTC)"])
    assert "state saved" in set(logs["event"])
    fields = json.loads(logs[logs["event"] == "state saved"].iloc[0]["fields"])
    assert fields["running"] is True, "the extra fields as JSON the table expands"

    at.segmented_control(key="log_level").set_value("WARNING").run()
    levels = set(table(at, "level")["level"])
    assert levels and levels <= {"WARNING", "ERROR", "CRITICAL"}


def test_passes_table_after_a_pass(env: Path) -> None:
    at = app()
    at.button(key="start").click().run()
    wait_until(at, lambda a: badge(a) == "WAITING", timeout=90)  # the pass ended; the next is planned
    assert any("next pass" in m.value for m in at.markdown)
    ended = lambda a: any(  # noqa: E731 - the tables read the store through a short cache
        "outcome" in d.value.columns and d.value.iloc[0]["outcome"] != "in progress" for d in a.dataframe)
    wait_until(at, ended, timeout=30)
    passes = table(at, "outcome")
    first = passes.iloc[0]
    assert (first["mode"], first["codes"], first["outcome"]) == ("MAINTENANCE", 2, "complete")
    assert first["stored"] > 0 and first["requests"] >= first["fetched"] > 0
    assert re.fullmatch(r"\d+ (s|min( \d\d s)?)", first["duration"]), first["duration"]
    codes = table(at, "last walked")
    walked = codes[codes["code"] == "LEGITEXT000099900001"].iloc[0]
    assert walked["in force (stored)"] > 0 and walked["last walked"].endswith("ago)")
    assert walked["lastUpdate (/list/code)"] != "—" and walked["last change"] != "—"
    assert walked["this pass"] == "done" or walked["this pass"].startswith("done ")


def test_unsaved_state_is_reported(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = env / "not-a-directory"
    blocker.write_text("a file where the state file's directory should be")
    monkeypatch.setenv("SCHEDULER_STATE_FILE", str(blocker / "state.json"))
    at = app()
    at.button(key="start").click().run()
    assert [unescaped(e.value).split(":")[0] for e in at.error] == ["The desired state could not be saved"]
    assert any("NOT be saved" in t.value for t in at.toast)
    assert badge(at) == "RUNNING", "the action still applies in memory"


def test_password_gate(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_PASSWORD", PASSWORD)
    at = app()
    assert not keys(at) and not at.metric and not at.dataframe, "nothing but the password box"
    assert len(at.text_input) == 1

    at.text_input[0].input("wrong password 123").run()
    assert any("Wrong password" in e.value for e in at.error)
    assert not keys(at)
    assert "wrong password 123" not in rendered_text(at), "never echoed"
    assert at.text_input[0].value == "", "the box is cleared after each attempt"
    assert at.session_state["password_failures"] == 1, "the next attempt of this session waits"

    at.text_input[0].input(PASSWORD).run()
    assert keys(at) >= {"start", "stop", "reset"}
    assert [t.key for t in at.text_input] == ["search_query"] and not at.error  # the password box is gone
    assert not at.button(key="start").disabled

    at.button(key="start").click().run()  # still signed in on the next run
    assert saved(env) == {"running": True, "mode": "MAINTENANCE"}
    assert PASSWORD not in rendered_text(at)
    state = at.session_state
    names = list(state)
    assert names and all(PASSWORD not in repr(state[k]) for k in names), "nor kept in the session"

    from collector.shared_runtime import get_runtime

    records = json.dumps(get_runtime().logs.records(limit=None), default=str)
    assert PASSWORD not in records
    assert "dashboard password refused" in records, "the failure is logged"
    assert "wrong password 123" not in records, "without what was typed"


def test_on_render_without_password_controls_are_disabled(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENDER", "true")
    at = app()
    assert all(at.button(key=k).disabled for k in ("start", "stop", "reset"))
    assert at.segmented_control(key="mode_choice").disabled
    assert any("DASHBOARD_PASSWORD" in w.value for w in at.warning)
    assert badge(at) == "STOPPED", "the status stays readable"
    assert at.button(key="collect_now").disabled
    assert saved(env) is None


def test_on_render_with_password_controls_work_after_sign_in(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENDER", "true")
    monkeypatch.setenv("DASHBOARD_PASSWORD", PASSWORD)
    at = app()
    at.text_input[0].input(PASSWORD).run()
    assert not at.button(key="start").disabled
    assert not any("DASHBOARD_PASSWORD" in w.value for w in at.warning)


def test_bad_configuration_is_shown_without_secrets(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_DAILY_REQUESTS", "lots")
    monkeypatch.setenv("DASHBOARD_PASSWORD", PASSWORD)
    at = app()
    shown = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]  # Markdown escapes removed
    assert any("could not start" in e and "MAX_DAILY_REQUESTS" in e for e in shown)
    assert not keys(at)
    assert PASSWORD not in rendered_text(at)


def test_throughput_is_per_minute_over_windows_not_between_close_samples() -> None:
    from dashboard import throughput_rows

    start = 1_800_000_000.0  # a window boundary
    samples = [(start + 1, 0, 0), (start + 1.001, 100, 5)]  # a batch commit a millisecond later
    samples += [(start + 15 * i + 1, 100 + 10 * i, 5 + 20 * i) for i in range(1, 5)]  # 10 per 15 s
    rows = throughput_rows(samples)
    rates = [row["articles/min"] for row in rows]
    assert rates[1:] == pytest.approx([40.0, 40.0, 40.0])
    assert [row["requests/min"] for row in rows[1:]] == pytest.approx([80.0, 80.0, 80.0])
    assert max(rates) < 500, "no spike from two samples a millisecond apart"
    assert throughput_rows(samples[:1]) == []


def test_throughput_breaks_the_line_where_nothing_ran() -> None:
    from collector.status import throughput_rows

    start = 1_800_000_000.0
    busy = [(start + 15 * i, 10 * i, 20 * i) for i in range(4)]
    later = [(start + 3600 + 15 * i, 100 + 10 * i, 80 + 20 * i) for i in range(3)]  # an hour idle
    rows = throughput_rows(busy + later)
    assert [r["segment"] for r in rows] == [0, 0, 0, 1, 1], "a new segment after the idle hour, no row across it"
    assert all(r["requests/min"] == pytest.approx(80.0) for r in rows)
    midnight = [(start, 0, 279_990), (start + 15, 5, 10)]  # the day's count restarts at 0 UTC
    assert throughput_rows(midnight)[0]["requests/min"] == pytest.approx(40.0)


HOSTILE = (
    "![x](http://evil/x.png) [Click to re-authenticate](http://evil) <img src=x onerror=alert(1)> "
    "&lt;b&gt; :red[alarm] www.evil.example\n# heading"
)
RAW = ("![", "](http", "<img", "&lt;", ":red[", "\n#")


def test_api_text_never_reaches_markdown_unescaped(env: Path) -> None:
    """A hostile code title, error and detail, put on the status board the way the collector
    thread publishes them, appear as literal text: no Markdown-rendered element (markdown,
    caption, alerts, progress labels, metrics, toasts) carries link, image or HTML syntax."""
    from collector.shared_runtime import get_runtime

    app()  # builds the runtime
    board = get_runtime().status
    with board.update() as s:
        s.current_code = "LEGITEXT000099900001"
        progress = board.progress("LEGITEXT000099900001")
        progress.title, progress.error, progress.total = HOSTILE, HOSTILE, 10
        progress.state = "fetching"
        s.phase, s.detail = "harvesting", HOSTILE  # the pass's current code is drawn with its title
        s.last_error = HOSTILE
        s.state_saved, s.state_error = False, HOSTILE
    at = AppTest.from_file(DASHBOARD, default_timeout=30).run()
    assert not at.exception

    plain_kinds = {"arrow_data_frame", "dataframe", "selectbox", "text", "code", "json", "text_input",
                   "button_group", "button"}  # options and cells are drawn as plain text
    bodies = []
    for node in at:
        proto = getattr(node, "proto", None)
        if proto is None or getattr(node, "type", "") in plain_kinds:
            continue
        bodies.append(str(proto))
    shown = "\n".join(bodies)
    assert "evil" in shown and "Click to re" in shown, "the hostile text is shown, as text"
    assert shown.count("evil") >= 3 * 3, "the title, the error of the current code and the last error reached the page"
    for raw in RAW:  # escaped, each special character is preceded by a backslash
        assert not re.search(r"(?<!\\)" + re.escape(raw), shown), f"{raw!r} reached a Markdown element unescaped"


def test_md_text_keeps_the_characters_and_neutralises_the_syntax() -> None:
    from dashboard import md_text

    assert md_text("Code civil") == "Code civil"
    assert md_text("Art. L1-2 [x](y)") == "Art\\. L1\\-2 \\[x\\]\\(y\\)"
    assert md_text("a\n\n# b") == "a \\# b"
    assert md_text("é ü 日本") == "é ü 日本", "only ASCII punctuation is escaped"
    linked = md_text("see https://piste.gouv.fr, www.evil.example or ops@example.org")
    plain = re.sub(r"\\(.)", r"\1", linked)
    assert not re.search(r"https?://|www\.|@\w", plain), "no GFM autolink literal survives"
    assert plain.replace("\u2060", "") == "see https://piste.gouv.fr, www.evil.example or ops@example.org"
