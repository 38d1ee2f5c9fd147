"""Légifrance Collector dashboard: the Streamlit page and the st.App that serves it.

`streamlit run dashboard.py` finds the `app = st.App(...)` assignment below by AST and serves
it with uvicorn, which imports this file as the module `dashboard`: only the app (lifespan +
HTTP routes) is built then. Streamlit executes the same file as `__main__` for every page
run: only the page is drawn then. The page and the lifespan share one runtime through the
`st.cache_resource` accessor `collector.shared_runtime.get_runtime`.

The collector thread never calls `st.*`: the page only reads `scheduler.status()` and
`logs.records()`, and every control goes through an `on_click` callback (callbacks run before
the script body, so the status drawn afterwards is fresh).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import streamlit as st

from collector import cockpit
from collector.clock import utcnow
from collector.config import MODES, parse_mode
from collector.gate import PasswordGate
from collector.health import health_routes
from collector.keepawake import start_keep_awake
from collector.pagetext import md_text, safe_error
from collector.routes import build_routes
from collector.scheduler import CollectRefused
from collector.search_page import search_section
from collector.shared_runtime import get_runtime
from collector.status import throughput_rows

if TYPE_CHECKING:
    from collector.config import Settings
    from collector.runtime import Runtime
    from collector.scheduler import CollectorScheduler
    from collector.status import StatusSnapshot
    from collector.store.base import Store

REFRESH_SECONDS = 2
LOG_REFRESH_SECONDS = 5  # the log table is the heaviest element to redraw
HISTORY_REFRESH_SECONDS = 15  # passes and codes: store reads (one count per code)
PASSES_SHOWN = 15
CHANGES_SCANNED = 2000  # the newest events read for each code's "last change"
LOG_ROWS = 150
SHUTDOWN_TIMEOUT_SECONDS = 7.0  # Render allows 30 s; tests demand an exit within 10 s
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# ---- process lifespan (server start / SIGTERM) ----------------------------------------------
@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    """Build the runtime at server start (load state, auto-resume) and stop it at shutdown
    (SIGTERM included): stop the thread, commit, release the lease, keep the saved state."""
    runtime = None
    try:
        runtime = await asyncio.to_thread(get_runtime)
    except Exception as exc:  # keep serving: the page shows the error to the operator
        print(f"collector runtime failed to start: {safe_error(exc)}", file=sys.stderr, flush=True)
    pinger = start_keep_awake(runtime.settings) if runtime is not None else None
    try:
        yield
    finally:
        if pinger is not None:  # a daemon thread: asked to end, not waited for
            pinger.stop(timeout=0)
        if runtime is not None:
            await asyncio.to_thread(runtime.close, SHUTDOWN_TIMEOUT_SECONDS)
            get_runtime.clear()  # its on_release finds the runtime closed already


def _when(value: datetime | str | None) -> str:
    """A UTC time with how long ago / until, or an em dash."""
    return cockpit.when(value, utcnow())


def _fraction(done: int, total: int) -> float:
    return min(1.0, done / total) if total > 0 else 0.0


# ---- control callbacks (run before the script body) --------------------------------------------
def _act(label: str, call: Callable[[CollectorScheduler], object]) -> None:
    """Run one scheduler action and report it with a toast (the thread itself never calls st.*)."""
    scheduler = get_runtime().scheduler
    try:
        call(scheduler)
    except Exception as exc:
        st.session_state["action_error"] = f"{label} failed: {safe_error(exc)}"
        return
    st.session_state.pop("action_error", None)
    if scheduler.status().state_saved:
        _notify(f"{label} — state saved", "✅")
    else:
        _notify(f"{label} — applied, but the state could NOT be saved", "⚠️")


def _notify(message: str, icon: str) -> None:
    """Queue a toast for the body to show (elements drawn from a fragment callback misplace)."""
    st.session_state["toast"] = (message, icon)


def _start() -> None:
    _act("Collector started", lambda s: s.start())


def _stop() -> None:
    _act("Collector stopped", lambda s: s.stop())


def _retry() -> None:
    """Retry now after an error: START wakes a waiting collector (or starts a new thread)."""
    _act("Retrying now", lambda s: s.start())


def _collect_code() -> None:
    """One extra pass over the chosen code, within the budget and the lease; a refusal (a
    MASSIVE pass is on, ...) is shown with its reason."""
    code_id = st.session_state.get("collect_code_choice")
    if not code_id:
        return
    try:
        get_runtime().scheduler.collect_code(code_id)
    except CollectRefused as exc:
        st.session_state["action_error"] = f"Collect now refused: {exc}"
        return
    except Exception as exc:
        st.session_state["action_error"] = f"Collect now failed: {safe_error(exc)}"
        return
    st.session_state.pop("action_error", None)
    _notify(f"Collecting {code_id} now (one extra pass)", "▶️")


def _on_mode_change() -> None:
    choice = st.session_state.get("mode_choice")
    if choice == "MASSIVE":
        st.session_state["pending_mode"] = "MASSIVE"  # the dialog asks first
        st.session_state["needs_full_run"] = True
    elif choice in MODES:
        _act(f"Mode set to {choice}", lambda s: s.set_mode(parse_mode(choice)))


def _confirm_massive() -> None:
    st.session_state.pop("pending_mode", None)
    _act("Mode set to MASSIVE", lambda s: s.set_mode(parse_mode("MASSIVE")))


def _cancel_massive() -> None:
    st.session_state.pop("pending_mode", None)
    st.session_state["mode_choice"] = get_runtime().scheduler.status().mode
    _notify("Mode unchanged", "↩️")


def _ask_reset() -> None:
    st.session_state["confirm_reset"] = True
    st.session_state["needs_full_run"] = True


def _confirm_reset() -> None:
    st.session_state.pop("confirm_reset", None)
    _act("State reset", lambda s: s.reset())


def _cancel_reset() -> None:
    st.session_state.pop("confirm_reset", None)


@st.cache_resource
def _gate() -> PasswordGate:
    """The process-wide throttle shared by every session (see collector.gate)."""
    return PasswordGate()


def _check_password() -> None:
    entered = str(st.session_state.get("password_input") or "")
    st.session_state["password_input"] = ""  # never keep it in the widget
    expected = get_runtime().settings.dashboard_password or ""
    failures = int(st.session_state.get("password_failures", 0))
    verdict = _gate().attempt(entered, expected, failures)
    if expected and verdict.ok:
        st.session_state["authenticated"] = True
        st.session_state.pop("password_failures", None)
        st.session_state.pop("password_message", None)
    elif verdict.retry_after is not None:
        st.session_state["password_message"] = (
            f"Too many attempts on this server: try again in {verdict.retry_after:.0f} s."
        )
    else:
        st.session_state["password_failures"] = failures + 1
        st.session_state["password_message"] = "Wrong password."


# ---- dialogs (opened from the live fragment; buttons use on_click callbacks) --------------------
@st.dialog("Switch to MASSIVE?", on_dismiss=_cancel_massive)
def _massive_dialog(massive_codes: int, daily_budget: int, cost: tuple[int, str] | None) -> None:
    if not st.session_state.get("pending_mode"):
        st.rerun()  # a button closed it: redraw the whole page
    if cost is None:
        price = f"can spend up to the whole daily request quota ({daily_budget:,} requests/day)"
    else:
        requests, basis = cost
        price = (f"costs about {requests:,} requests ({basis}), {requests / daily_budget:.1%} of the "
                 f"daily quota of {daily_budget:,}")
    st.write(
        f"MASSIVE harvests all {massive_codes} codes back to back, with a pause between passes. "
        f"A full pass {price}. MAINTENANCE only refreshes the priority codes every couple of hours."
    )
    left, right = st.columns(2)
    left.button("Switch to MASSIVE", key="confirm_massive", type="primary", on_click=_confirm_massive)
    right.button("Cancel", key="cancel_massive", on_click=_cancel_massive)


@st.dialog("Reset the saved state?", on_dismiss=_cancel_reset)
def _reset_dialog(settings: Settings) -> None:
    if not st.session_state.get("confirm_reset"):
        st.rerun()
    running = "running" if settings.enable_scheduler else "stopped"
    st.write(
        "Reset clears the saved state and goes back to the environment defaults, like a "
        f"fresh start: collector {running} (ENABLE_SCHEDULER), mode "
        f"{settings.default_mode} (SIPHONNAGE_MODE). Stored articles are kept."
    )
    left, right = st.columns(2)
    left.button("Reset", key="confirm_reset_button", type="primary", on_click=_confirm_reset)
    right.button("Cancel", key="cancel_reset", on_click=_cancel_reset)


# ---- page sections ---------------------------------------------------------------------------
def _password_gate(password: str | None) -> bool:
    """True when the session may see the page (no password set, or it was entered)."""
    if not password or st.session_state.get("authenticated"):
        return True
    st.title("Légifrance Collector")
    st.text_input("Password", type="password", key="password_input", on_change=_check_password)
    if st.session_state.get("password_message"):
        st.error(st.session_state["password_message"])
    return False


def _header(settings: Settings) -> None:
    st.title("Légifrance Collector")
    source, store = st.columns(2)
    label = f"DILA LEGI dumps ({settings.dump_folder})" if settings.source == "dumps" else settings.source_label
    source.markdown(f"**Source:** {md_text(label)}")
    store.markdown(f"**Store:** {md_text(settings.store_label)}")
    if settings.is_demo:
        st.info(
            "DEMO source: an offline emulator serving synthetic codes (ids LEGITEXT0000999…). "
            "Nothing here is real law. Set LEGIFRANCE_CLIENT_ID and LEGIFRANCE_CLIENT_SECRET "
            "to collect from PISTE.",
            icon="🧪",
        )


def _open_dialog(runtime: Runtime, locked: bool) -> None:
    """Open the confirmation a control asked for. Runs in the full script run only: a dialog
    opened from the refreshing fragment would stay mounted after it closes."""
    st.session_state.pop("needs_full_run", None)
    if locked:
        return
    settings = runtime.settings
    if st.session_state.get("pending_mode"):
        _massive_dialog(len(settings.massive_codes), settings.max_daily_requests, cockpit.next_massive_cost(runtime))
    elif st.session_state.get("confirm_reset"):
        _reset_dialog(settings)


def _status_line(runtime: Runtime, snap: StatusSnapshot, locked: bool) -> None:
    """One coloured badge (what the collector is doing, since when) and every problem once."""
    now = utcnow()
    badge = cockpit.badge(snap, now)
    with st.container(key="status_line"):
        left, right = st.columns([1, 5], vertical_alignment="center")
        left.badge(badge.state.upper(), icon=badge.icon, color=badge.colour)
        since = f" — since {md_text(_when(badge.since))}" if badge.since else ""
        right.markdown(f"{md_text(badge.doing)}{since} · mode **{md_text(snap.mode)}**")
    booted = runtime.desired.last_load if runtime.desired is not None else None
    problems = cockpit.alerts(
        snap,
        now,
        state_problem=booted.problem if booted else None,
        state_store_problem=booted.store_problem if booted else None,
        export=runtime.export.status() if runtime.export is not None else None,
        locked=locked,
    )
    with st.container(key="alerts"):
        for alert in problems:
            said = f"{alert.title}: {alert.message}" if alert.message else alert.title
            body = f"{md_text(said)}  \n**What to do:** {md_text(alert.action)}"
            (st.error if alert.level == "error" else st.warning)(body)
            if alert.retry:
                st.button("Retry now", key="retry", on_click=_retry)
        if st.session_state.get("action_error"):
            st.error(md_text(st.session_state["action_error"]))


def _controls(snap: StatusSnapshot, locked: bool) -> None:
    start, stop, mode, reset = st.columns([1, 1, 3, 1.4], vertical_alignment="bottom")
    start.button("START", key="start", type="primary", disabled=locked or snap.running, on_click=_start)
    stop.button("STOP", key="stop", disabled=locked or not snap.running, on_click=_stop)
    if not st.session_state.get("pending_mode"):
        st.session_state["mode_choice"] = snap.mode  # follow changes made elsewhere (API, tabs)
    with mode:
        st.segmented_control(
            "Mode", MODES, key="mode_choice", required=True, disabled=locked, on_change=_on_mode_change
        )
    reset.button("Reset state", key="reset", disabled=locked, on_click=_ask_reset)
    if "toast" in st.session_state:
        message, icon = st.session_state.pop("toast")
        st.toast(message, icon=icon)


def _overview(snap: StatusSnapshot) -> None:
    cols = st.columns(6)
    cols[0].metric("Articles stored", f"{snap.stored_total:,}")
    cols[1].metric("Rejected (quality filter)", f"{snap.rejected_total:,}",
                   help="In-force ids whose cleaned text is shorter than MIN_ARTICLE_CHARS: remembered, "
                        "not fetched again (articles_rejected in the status JSON).")
    cols[2].metric("Fetched this pass", f"{snap.pass_fetched:,}")
    cols[3].metric("Stored this pass", f"{snap.pass_stored:,}")
    cols[4].metric("Rejected this pass", f"{snap.pass_skipped:,}", help="By the quality filter.")
    cols[5].metric("Failed this pass", f"{snap.pass_failed:,}", help="Fetched again at the next pass.")
    times = st.columns(2)
    times[0].markdown(f"**Last pass ended:** {_when(snap.last_run_at)}")
    times[1].markdown(f"**Next pass:** {_when(snap.next_run_at) if snap.phase == 'waiting' else '—'}")


def _dumps(store: Store, snap: StatusSnapshot) -> None:
    """COLLECTOR_SOURCE=dumps: the last stamp applied, the archive being applied, the next check."""
    try:
        state = store.get_dump_state()
    except Exception as exc:  # noqa: BLE001 - the page must render without the store
        st.caption(f"Dump state unavailable: {md_text(safe_error(exc))}")
        return
    applied = f"{state.last_archive} (stamp {state.last_stamp})" if state.last_stamp else "none yet"
    st.text(f"Last dump applied: {applied}; global: {state.global_stamp or '-'}; "
            f"next check: {_when(snap.next_run_at)}")
    live = snap.dump
    if live and live.get("bytes_total"):
        share = min(1.0, live["bytes_read"] / live["bytes_total"])
        st.progress(share, text=f"{live['archive']}: {live['bytes_read'] / 1e6:.1f} / "
                                f"{live['bytes_total'] / 1e6:.1f} MB, {live['articles']:,} articles")


def _budget(budget: dict[str, Any]) -> None:
    st.subheader("Request budget")
    if not budget:
        st.caption("No request made yet.")
        return
    cols = st.columns(4)
    for col, window in zip(cols, ("second", "hour", "day"), strict=False):
        used, limit = int(budget.get(f"{window}_used", 0)), int(budget.get(f"{window}_limit", 0))
        col.metric(f"Requests this {window}", f"{used:,} / {limit:,}")
        col.progress(_fraction(used, limit))
    cols[3].metric("In flight", f"{budget.get('in_flight', 0)} / {budget.get('max_in_flight', 0)}")
    waiting = budget.get("waiting_for")
    if waiting in ("hour", "day"):
        st.info(f"Waiting for the {waiting} budget: it frees up at {_when(budget.get('waiting_until'))}.")
    elif waiting:
        st.caption(f"Pacing at the per-{waiting} limit.")


def _pass_progress(snap: StatusSnapshot, rows: list[dict[str, Any]]) -> None:
    """The pass in progress: codes done, articles of the walked codes, ETA, the current code."""
    if not snap.codes or snap.phase not in ("harvesting", "waiting for budget"):
        return
    now = utcnow()
    progress = cockpit.pass_progress(snap, rows, now)
    rate = "—" if progress.requests_per_min is None else f"{progress.requests_per_min:,.0f} requests/min"
    eta = "unknown until requests are measured" if progress.eta_seconds is None else (
        f"about {cockpit.duration(progress.eta_seconds)}")
    label = (
        f"{snap.mode} pass: {progress.codes_done}/{progress.codes} codes, "
        f"{progress.articles_done:,}/{progress.articles_known:,} articles of the codes walked so far · "
        f"{rate} · ETA {eta}"
    )
    st.progress(progress.fraction, text=md_text(label))
    current = next((p for p in snap.codes if p.code_id == snap.current_code), None)
    if current is not None:
        name = f"{current.title} ({current.code_id})" if current.title else current.code_id
        st.progress(cockpit.pass_fraction(current), text=md_text(f"{name}: {cockpit.pass_state(current)}"))


def _vl_time(moment: datetime) -> Any:
    """A UTC datetime as a Vega-Lite DateTime (a scale domain; plain numbers are misread)."""
    import altair as alt

    m = moment.astimezone(timezone.utc)
    return alt.DateTime(year=m.year, month=m.month, date=m.day, hours=m.hour, minutes=m.minute,
                        seconds=m.second, utc=True)


def _rates_chart(rows: list[dict[str, Any]], budget: dict[str, Any]) -> None:
    """Requests and articles per minute over time, against the hour and day limits (as
    per-minute rates); one line per stretch of activity, so idle time is a gap."""
    import altair as alt
    import pandas as pd

    st.subheader("Requests per minute")
    if not any(r["requests/min"] or r["articles/min"] for r in rows):  # no flat zero line before a pass
        st.caption("Nothing measured yet: the chart starts with the collector's first requests.")
        return
    points, limits, top = cockpit.rate_series(rows, budget)
    # Explicit domains: Streamlit mounts the chart before its data arrives, and Vega warns
    # "Infinite extent" for every scale computed from data it does not have yet.
    start, end = rows[0]["time"], max(rows[-1]["time"], rows[0]["time"] + timedelta(minutes=1))
    colour = alt.Color("series:N", title=None, scale=alt.Scale(domain=list(cockpit.SERIES_COLOURS),
                                                               range=list(cockpit.SERIES_COLOURS.values())))
    y = alt.Y("per minute:Q", title="per minute", scale=alt.Scale(domain=[0, top]))
    lines = alt.Chart(pd.DataFrame(points)).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        x=alt.X("time:T", title="UTC", scale=alt.Scale(type="utc", domain=[_vl_time(start), _vl_time(end)]),
                axis=alt.Axis(format="%H:%M:%S" if end - start < timedelta(minutes=10) else "%H:%M",
                              tickCount=6, labelOverlap=True)),
        y=y,
        color=colour,
        detail="segment:N",
        tooltip=[alt.Tooltip("time:T", timeUnit="utchoursminutesseconds", title="UTC"), "series:N",
                 alt.Tooltip("per minute:Q", format=",.0f")],
    )
    chart = lines
    if limits:
        rules = alt.Chart(pd.DataFrame(limits)).mark_rule(strokeDash=[6, 4]).encode(y=y, color=colour)
        chart = alt.layer(lines, rules)
    st.altair_chart(chart.properties(height=220), width="stretch")


def _export(status: dict[str, Any] | None) -> None:
    """The bucket + files_queue export (EXPORT_BUCKET), when this process runs it (its last
    error is one of the status line's alerts)."""
    if status is None:
        return
    st.subheader("Export to the workers' bucket")
    seq, pending = status["last_exported_seq"], status["pending"]
    cols = st.columns(4)
    cols[0].metric("Bucket", status["bucket"])
    cols[1].metric("Last exported event", "—" if seq is None else f"{seq:,}")
    cols[2].metric("Events pending", "—" if pending is None else f"{pending:,}")
    cols[3].metric("Uploads / queue writes", f"{status['uploads']:,} / {status['queue_writes']:,}")
    retry = f", next retry {_when(status['next_retry_at'])}" if status["next_retry_at"] else ""
    st.caption(f"Phase: {status['phase']}{retry}")


@st.fragment(run_every=REFRESH_SECONDS)
def _live_panel(locked: bool) -> None:
    """Status line, controls and live counters, redrawn every couple of seconds without
    reloading the page."""
    if st.session_state.get("needs_full_run"):
        st.rerun()  # a control asked for a confirmation: the full run opens the dialog
    runtime = get_runtime()
    snap = runtime.scheduler.status()
    _status_line(runtime, snap, locked)
    _controls(snap, locked)
    _overview(snap)
    if runtime.settings.source == "dumps":
        _dumps(runtime.store, snap)
    rows = throughput_rows(snap.throughput)
    _pass_progress(snap, rows)
    _budget(snap.budget)
    _rates_chart(rows, snap.budget)
    _export(runtime.export.status() if runtime.export is not None else None)


@st.cache_data(ttl=HISTORY_REFRESH_SECONDS, show_spinner=False)
def _history(_store: Store, label: str, code_ids: tuple[str, ...]) -> cockpit.History:
    """The store reads of the passes and codes tables, shared by every session for a while
    (on Supabase: one count request per code); `label` names the store in the cache key."""
    return cockpit.read_history(_store, code_ids, PASSES_SHOWN, CHANGES_SCANNED)


@st.fragment(run_every=HISTORY_REFRESH_SECONDS)
def _history_panel(locked: bool) -> None:
    """Recent passes and the per-code table (with Collect now), from the store."""
    runtime = get_runtime()
    store, settings = runtime.store, runtime.settings
    snap = runtime.scheduler.status()
    now = utcnow()
    st.subheader("Recent passes")
    try:
        history = _history(store, store.label, (*settings.maintenance_codes, *settings.massive_codes))
    except Exception as exc:  # the store is down: the status line says so too
        st.warning("The passes and codes cannot be read from the store now.")
        st.text(safe_error(exc))
        return
    runs = history.runs
    # The newest run is this collector's while its thread lives (the cached row may lag the end).
    current = runs[0]["id"] if runs and snap.alive else None
    if runs:
        st.dataframe(cockpit.pass_rows(runs, now, current), hide_index=True, width="stretch")
    else:
        st.caption("No pass yet.")
    st.subheader("Codes")
    rows = cockpit.code_rows(history.code_ids, history.marks, history.in_force, history.last_change,
                             snap.codes, now, snap.queued_codes)
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("this pass (share)", min_value=0.0, max_value=1.0),
            "in force (stored)": st.column_config.NumberColumn(format="%d"),
        },
    )
    st.caption(
        "in force (stored): articles of the code stored with etat VIGUEUR; lastUpdate: the code's "
        "/list/code date at its last complete walk; last change: its newest change-log event "
        f"among the last {CHANGES_SCANNED:,}."
    )
    titles = {r["code"]: r["title"] for r in rows}
    if snap.queued_codes:
        st.caption(md_text(f"Waiting for Collect now: {', '.join(snap.queued_codes)}"))
    pick, act = st.columns([4, 1], vertical_alignment="bottom")
    pick.selectbox("Collect one code now", history.code_ids, key="collect_code_choice",
                   format_func=lambda c: f"{titles[c]} ({c})" if titles.get(c) else c, disabled=locked)
    act.button("Collect now", key="collect_now", disabled=locked, on_click=_collect_code,
               help="One extra pass over this code, within the same request budget and lease; "
                    "the saved START/STOP and mode do not change.")


def _log_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per record (kept newest first): a readable UTC time, and the extra fields as a
    JSON column the table expands."""
    rows = []
    for rec in records:
        extra = {k: v for k, v in rec.items() if k not in {"timestamp", "level", "event"}}
        moment = cockpit.as_time(rec.get("timestamp"))
        rows.append(
            {
                "time (UTC)": f"{moment:%Y-%m-%d %H:%M:%S}" if moment else str(rec.get("timestamp", "")),
                "level": str(rec.get("level", "")).upper(),
                "event": str(rec.get("event", "")),
                "fields": json.dumps(extra, ensure_ascii=False, default=str) if extra else None,
            }
        )
    return rows


@st.fragment(run_every=LOG_REFRESH_SECONDS)
def _logs_panel() -> None:
    st.subheader("Recent logs")
    level = st.segmented_control("Minimum level", LOG_LEVELS, default="INFO", key="log_level", required=True)
    records = get_runtime().logs.records(limit=LOG_ROWS, min_level=level)
    rows = _log_rows(records)
    if not rows:
        st.caption("No log records at this level yet.")
        return
    st.dataframe(rows, hide_index=True, width="stretch", height=320,
                 column_config={"fields": st.column_config.JsonColumn("fields")})


CHANGES_SHOWN = 200  # newest change-log events on the page
CHANGES_REFRESH_SECONDS = 10


@st.fragment(run_every=CHANGES_REFRESH_SECONDS)
def _changes_panel() -> None:
    """'What changed': the newest events by pass, counts by kind, and a word diff of the text
    a modified / corrected event replaced. Texts from the API only go through plain-text
    elements (st.text, st.code, st.dataframe)."""
    from collector.feed.diff import article_url, group_by_run, recent_changes, texts_of, word_diff

    st.subheader("What changed")
    store = get_runtime().store
    try:
        changes = recent_changes(store, CHANGES_SHOWN)
    except Exception as exc:  # the store may be down: the rest of the page still works
        st.warning(f"The change log cannot be read now: {md_text(safe_error(exc))}")
        return
    if not changes:
        st.caption("No change recorded yet: the change log fills as passes store new or changed articles.")
        return
    for group in group_by_run(changes):
        st.text(f"Pass {group.run_id or '?'}: {group.summary()}")
        st.dataframe(
            [{"seq": c["seq"], "kind": c["kind"], "num": c["num"] or "", "id": c["id"],
              "previous_id": c["previous_id"] or "", "etat": c["etat"], "code_id": c["code_id"],
              "at": _when(c["at"]), "legifrance": article_url(c["id"])} for c in reversed(group.changes)],
            hide_index=True,
            width="stretch",
            column_config={"legifrance": st.column_config.LinkColumn("legifrance", display_text="open")},
        )
    diffable = {c["seq"]: c for c in reversed(changes) if c["kind"] in ("modified", "corrected")}
    if not diffable:
        return
    seq = st.selectbox(
        "Word diff of a modified or corrected article",
        list(diffable),
        format_func=lambda s: f"#{s} {diffable[s]['kind']} {diffable[s]['id']}",
        key="change_diff",
    )
    change = diffable[seq]
    texts = texts_of(store, change, changes)
    if texts is None:
        st.caption("The previous text is not stored.")
        return
    st.text(f"[-removed-] {{+added+}}  ({change['previous_id'] or change['id']} -> {change['id']})")
    st.code(word_diff(*texts), language=None, wrap_lines=True)
    for label, article_id in (("Previous version", change["previous_id"]), ("This version", change["id"])):
        url = article_url(article_id or "")
        if url is not None:
            st.link_button(f"{label} on legifrance.gouv.fr", url)


def main() -> None:
    """Draw the page."""
    st.set_page_config(page_title="Légifrance Collector", page_icon="⚖️", layout="wide")
    try:
        runtime = get_runtime()  # before the gate: the collector warms up even while locked
    except Exception as exc:
        st.error(f"The collector could not start: {md_text(safe_error(exc))}")
        st.stop()
    settings = runtime.settings
    if not _password_gate(settings.dashboard_password):
        st.stop()
    _header(settings)
    locked = settings.controls_locked
    if locked:
        st.warning(
            "Controls are disabled: this dashboard is public on Render and has no password. "
            "Set DASHBOARD_PASSWORD in the service's Environment settings on Render "
            "(the service restarts), then sign in here to use the controls.",
            icon="🔒",
        )
    _open_dialog(runtime, locked)
    _live_panel(locked)
    _history_panel(locked)
    _logs_panel()
    _changes_panel()
    search_section(runtime.store, (*settings.maintenance_codes, *settings.massive_codes))


if __name__ == "__main__":
    main()  # a page run: Streamlit executes this file as __main__
else:
    app = st.App(__file__, lifespan=lifespan, routes=[*build_routes(), *health_routes()])
