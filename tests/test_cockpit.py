"""collector.cockpit without Streamlit: humanised times, the badge, the alerts said once, the
passes and codes rows, the ETA against the daily budget, a MASSIVE pass's quoted cost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collector import cockpit
from collector.models import CodeMark, CodeProgress
from collector.status import StatusBoard, StatusSnapshot

NOW = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)


def test_durations_and_times_read_like_words() -> None:
    assert [cockpit.duration(s) for s in (0.4, 45, 60, 200, 3600, 7500, 90000)] == [
        "0 s", "45 s", "1 min", "3 min 20 s", "1 h 00 min", "2 h 05 min", "1 d 1 h"]
    assert cockpit.when(NOW - timedelta(minutes=5), NOW) == "23:25:00 UTC (5 min ago)"
    assert cockpit.when("2026-12-01T23:30:40.123456+00:00", NOW) == "23:30:40 UTC (in 40 s)"
    assert cockpit.when("2026-11-30T08:00:00", NOW) == "2026-11-30 08:00 UTC (1 d 15 h ago)"
    assert cockpit.when(None, NOW) == "—"


def snap(**fields: object) -> StatusSnapshot:
    return StatusSnapshot(**{"phase_since": NOW - timedelta(minutes=2), **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "state", "doing"),
    [
        ({}, "stopped", "not collecting"),
        ({"running": True, "alive": True, "phase": "harvesting", "detail": "MASSIVE pass over 5 codes",
          "current_code": "C1", "codes": [CodeProgress("C1", title="Code civil")]},
         "running", "MASSIVE pass over 5 codes — now Code civil (C1)"),
        ({"running": True, "alive": True, "phase": "waiting", "next_run_at": NOW + timedelta(minutes=20)},
         "waiting", "next pass 23:50:00 UTC (in 20 min)"),
        ({"running": True, "alive": True, "phase": "standby",
          "detail": "standby: collector held by h:1:x until 23:31:00 UTC"},
         "standby", "collector held by h:1:x until 23:31:00 UTC"),
        ({"running": True, "alive": True, "phase": "error", "last_error": "boom",
          "next_run_at": NOW + timedelta(seconds=60)}, "error", "retrying 23:31:00 UTC (in 1 min)"),
        ({"running": True, "alive": False, "phase": "error", "last_error": "crash"},
         "error", "the collector thread ended on an error"),
        ({"running": False, "alive": True, "phase": "harvesting", "detail": "extra pass over C2 (collect now)"},
         "running", "extra pass over C2 (collect now)"),  # Collect now while stopped
        ({"running": False, "alive": True, "phase": "stopping"}, "stopping",
         "committing what was fetched, then stopping"),
    ],
)
def test_one_badge_state(fields: dict[str, object], state: str, doing: str) -> None:
    badge = cockpit.badge(snap(**fields), NOW)
    assert (badge.state, badge.doing, badge.since) == (state, doing, NOW - timedelta(minutes=2))


def test_an_error_while_running_is_never_a_running_badge() -> None:
    badge = cockpit.badge(snap(running=True, alive=True, phase="error", last_error="x"), NOW)
    assert badge.state == "error" and badge.colour == "red"


def test_alerts_say_each_problem_once_with_what_to_do() -> None:
    auth = "LegifranceAuthError: the token endpoint refused the credentials (HTTP 401 invalid_client)"
    s = snap(running=True, alive=True, phase="error", last_error=auth, store_error=auth,
             next_run_at=NOW + timedelta(seconds=60), state_saved=False, state_error="read-only")
    shown = cockpit.alerts(s, NOW, state_problem="not JSON: moved aside", state_store_problem="timeout",
                           export={"last_error": "HTTP 503"})
    assert [a.title for a in shown] == [
        "The collector stopped on an error",  # the store error repeats it: said once
        "The desired state could not be saved",
        "The state file could not be used at start-up",
        "The store's copy of the state could not be read at start-up",
        "The export to the workers' bucket failed",
    ]
    first = shown[0]
    assert first.level == "error" and first.retry and "LEGIFRANCE_CLIENT_SECRET" in first.action
    assert "23:31:00 UTC" in first.action and "Start" not in first.action
    assert all(a.action for a in shown)
    assert not cockpit.alerts(s, NOW, locked=True)[0].retry, "no Retry now on a locked page"


def test_an_old_error_is_a_warning_once_the_collector_went_on() -> None:
    s = snap(running=True, alive=True, phase="waiting", last_error="timeout", last_error_at=NOW - timedelta(hours=1))
    [alert] = cockpit.alerts(s, NOW)
    assert (alert.level, alert.title, alert.retry) == ("warning", "Last error (1 h 00 min ago)", False)
    assert cockpit.alerts(snap(), NOW) == []


def test_pass_rows_and_outcomes() -> None:
    base = {"mode": "MAINTENANCE", "codes": ["A", "B"], "started_at": "2026-12-01T23:00:00+00:00"}
    done = {"requests": 12, "fetched": 10, "stored": 9, "skipped": 1, "failed": 0}
    runs = [
        {**base, "id": 4, "finished_at": None, "summary": None},
        {**base, "id": 3, "finished_at": None, "summary": None},
        {**base, "id": 2, "finished_at": "2026-12-01T23:03:20+00:00", "summary": {**done, "interrupted": True}},
        {**base, "id": 1, "finished_at": "2026-12-01T23:03:20+00:00", "summary": {**done, "codes_unchanged": 1}},
    ]
    rows = cockpit.pass_rows(runs, NOW, current_run=4)
    assert [r["outcome"] for r in rows] == [
        "in progress", "did not finish (process stopped)", "interrupted", "complete (1 unchanged)"]
    assert [r["duration"] for r in rows] == ["30 min", "—", "3 min 20 s", "3 min 20 s"]
    assert (rows[3]["codes"], rows[3]["requests"], rows[3]["rejected (quality filter)"]) == (2, 12, 1)
    failed = cockpit.pass_rows([{**runs[3], "summary": {**done, "failed": 2, "codes_failed": 1}}], NOW)
    assert failed[0]["outcome"] == "1 code(s), 2 article(s) failed"


def test_code_rows_say_not_walked_yet() -> None:
    marks = {"A": CodeMark("A", "Code A", "2026-11-30", "2026-11-30T00:00:00.000+0000", NOW - timedelta(hours=3))}
    progress = [CodeProgress("A", title="Code A", total=10, known=4, stored=3, state="fetching"),
                CodeProgress("B")]
    rows = cockpit.code_rows(["A", "B", "C"], marks, {"A": 40, "B": 0}, {"A": "2026-12-01T23:00:00+00:00"},
                             progress, NOW)
    a, b, c = rows
    assert a["last walked"] == "20:30:00 UTC (3 h 00 min ago)" and a["lastUpdate (/list/code)"] == "2026-11-30"
    assert a["last change"] == "23:00:00 UTC (30 min ago)" and a["in force (stored)"] == 40
    assert a["this pass"] == "fetching 7/10 (already stored 4, new 3, rejected 0, failed 0)"
    assert a["progress"] == pytest.approx(0.7)
    assert (b["last walked"], b["this pass"], b["progress"]) == ("not walked yet", "not walked yet", 0.0)
    assert (c["this pass"], c["in force (stored)"]) == ("not in this pass", None)


def test_eta_waits_for_the_next_day_when_the_budget_is_short() -> None:
    assert cockpit.eta_seconds(600, 10.0, 10_000, 280_000, NOW) == pytest.approx(60)
    # 1,000 left today at 10/s, then 280,000 tomorrow and 500 the day after
    eta = cockpit.eta_seconds(281_500, 10.0, 1_000, 280_000, NOW)
    assert eta == pytest.approx(30 * 60 + 86400 + 50)
    assert cockpit.eta_seconds(10, 0.0, 1_000, 280_000, NOW) is None
    assert cockpit.eta_seconds(0, 0.0, 0, 280_000, NOW) == 0


def test_pass_progress_counts_walked_codes_and_the_measured_rate() -> None:
    s = snap(running=True, alive=True, phase="harvesting", budget={"day_used": 100, "day_limit": 280_000},
             codes=[CodeProgress("A", total=100, known=50, stored=10, state="fetching"),
                    CodeProgress("B", state="done", total=20, stored=20), CodeProgress("C")])
    rows = [{"requests/min": 120.0}, {"requests/min": 60.0}]
    p = cockpit.pass_progress(s, rows, NOW)
    assert (p.codes_done, p.codes, p.articles_done, p.articles_known) == (1, 3, 80, 120)
    assert p.requests_per_min == pytest.approx(90.0)
    assert p.eta_seconds == pytest.approx((40 + 1) / 1.5)  # 40 articles + C's table of contents at 90/min


def test_massive_cost_from_the_source_or_the_last_pass() -> None:
    cost = cockpit.massive_cost({"A": 60, "B": 90}, {"A": 59}, [])
    assert cost is not None and cost[0] == 1 + 2 + 1 + 90
    last = [{"mode": "MASSIVE", "finished_at": "x", "summary": {"requests": 285, "token_requests": 1}}]
    assert cockpit.massive_cost(None, {}, last) == (286, "what the last complete MASSIVE pass spent")
    assert cockpit.massive_cost(None, {}, []) is None


def test_the_board_stamps_when_the_phase_changed() -> None:
    clock = [1_800_000_000.0]
    board = StatusBoard(clock=lambda: clock[0])
    start = board.snapshot().phase_since
    clock[0] += 30
    board.set(phase="harvesting", detail="pass")
    clock[0] += 30
    board.set(detail="still the same phase")
    with board.update() as s:
        s.current_code = "A"
    assert board.snapshot().phase_since == start + timedelta(seconds=30)
    board.show_idle()
    assert board.snapshot().phase_since == start + timedelta(seconds=60)


def test_rate_series_long_form_with_limits_per_minute() -> None:
    rows = [{"time": NOW, "segment": 0, "requests/min": 300.0, "articles/min": 250.0}]
    points, limits, top = cockpit.rate_series(rows, {"hour_limit": 24_000, "day_limit": 288_000})
    assert [(p["series"], p["per minute"]) for p in points] == [("requests/min", 300.0), ("articles/min", 250.0)]
    assert [(x["series"], x["per minute"]) for x in limits] == [("hour limit", 400.0), ("day limit (average)", 200.0)]
    assert top == pytest.approx(440.0)
    assert cockpit.rate_series([], {})[1:] == ([], pytest.approx(1.1))
