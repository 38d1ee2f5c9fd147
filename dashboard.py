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
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import streamlit as st

from collector.config import MODES, SECRET_SETTINGS, mask, parse_mode
from collector.gate import PasswordGate
from collector.health import health_routes
from collector.keepawake import start_keep_awake
from collector.routes import build_routes
from collector.search_page import search_section
from collector.shared_runtime import get_runtime
from collector.status import throughput_rows

if TYPE_CHECKING:
    from collector.config import Settings
    from collector.scheduler import CollectorScheduler
    from collector.status import StatusSnapshot
    from collector.store.base import Store

REFRESH_SECONDS = 2
LOG_REFRESH_SECONDS = 5  # the log table is the heaviest element to redraw
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
        if pinger is not None:
            await asyncio.to_thread(pinger.stop)
        if runtime is not None:
            await asyncio.to_thread(runtime.close, SHUTDOWN_TIMEOUT_SECONDS)
            get_runtime.clear()  # its on_release finds the runtime closed already


def safe_error(exc: BaseException) -> str:
    """`Type: message` with every secret value from the environment masked."""
    secrets = ((os.environ.get(name) or "").strip() for name in SECRET_SETTINGS.values())
    return mask(f"{type(exc).__name__}: {exc}", secrets)


# ---- formatting helpers ----------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def md_text(value: object) -> str:
    """`value` as literal text inside Markdown (st.markdown, captions, alerts, progress labels):
    every ASCII punctuation is backslash-escaped, so API text cannot form a link, an image, an
    HTML tag, an entity, an autolink, a directive or a heading; line breaks become spaces."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def _when(value: datetime | str | None) -> str:
    """A UTC time with how long ago / until, or an em dash."""
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = (value - datetime.now(timezone.utc)).total_seconds()
    span = abs(delta)
    rel = f"{span:.0f} s" if span < 90 else f"{span / 60:.0f} min" if span < 5400 else f"{span / 3600:.1f} h"
    rel = f"in {rel}" if delta > 0 else f"{rel} ago"
    return f"{value.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC ({rel})"


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
def _massive_dialog(massive_codes: int, daily_budget: int) -> None:
    if not st.session_state.get("pending_mode"):
        st.rerun()  # a button closed it: redraw the whole page
    st.write(
        f"MASSIVE harvests all {massive_codes} codes back to back and spends most of the daily "
        f"request quota ({daily_budget:,} requests/day). MAINTENANCE only refreshes the priority "
        "codes every couple of hours."
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


def _open_dialog(settings: Settings, locked: bool) -> None:
    """Open the confirmation a control asked for. Runs in the full script run only: a dialog
    opened from the refreshing fragment would stay mounted after it closes."""
    st.session_state.pop("needs_full_run", None)
    if locked:
        return
    if st.session_state.get("pending_mode"):
        _massive_dialog(len(settings.massive_codes), settings.max_daily_requests)
    elif st.session_state.get("confirm_reset"):
        _reset_dialog(settings)


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
    if st.session_state.get("action_error"):
        st.error(md_text(st.session_state["action_error"]))
    if not snap.state_saved:
        st.error(
            f"The state could not be saved: {md_text(snap.state_error or 'unknown error')}. The "
            "change applies now but will not survive a restart."
        )
    elif snap.state_error:
        st.warning(f"The state file is saved, but its copy in the store is not: {md_text(snap.state_error)}")


def _overview(snap: StatusSnapshot) -> None:
    state = "running" if snap.running else "stopped"
    if snap.running != snap.alive:  # transient, or the thread ended on an error (see phase)
        state += " (no thread)" if snap.running else " (finishing)"
    cols = st.columns(3)
    cols[0].metric("Collector", state)
    cols[1].metric("Mode", snap.mode)
    cols[2].metric("Phase", snap.phase)
    if snap.detail:
        st.caption(md_text(snap.detail))
    if snap.current_code:
        title = next((p.title for p in snap.codes if p.code_id == snap.current_code and p.title), None)
        name = f"{title} ({snap.current_code})" if title else snap.current_code
        st.markdown(f"**Current code:** {md_text(name)}")
    cols = st.columns(6)
    cols[0].metric("Articles stored", f"{snap.stored_total:,}")
    cols[1].metric("Rejected (filter)", f"{snap.rejected_total:,}")
    cols[2].metric("Fetched this pass", f"{snap.pass_fetched:,}")
    cols[3].metric("Stored this pass", f"{snap.pass_stored:,}")
    cols[4].metric("Skipped this pass", f"{snap.pass_skipped:,}")
    cols[5].metric("Failed this pass", f"{snap.pass_failed:,}")
    times = st.columns(2)
    times[0].markdown(f"**Last run:** {_when(snap.last_run_at)}")
    times[1].markdown(f"**Next run:** {_when(snap.next_run_at)}")
    if snap.last_error:
        st.warning(f"Last error ({_when(snap.last_error_at)}): {md_text(snap.last_error)}")


def _export(status: dict[str, Any] | None) -> None:
    """The bucket + files_queue export (EXPORT_BUCKET), when this process runs it."""
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
    if status["last_error"]:  # server text: shown as plain text, never as Markdown
        st.warning(f"Export: last error ({_when(status['last_error_at'])}), retried with backoff:")
        st.text(status["last_error"])


def _dumps(store: Store, snap: StatusSnapshot) -> None:
    """COLLECTOR_SOURCE=dumps: the last stamp applied, the archive being applied, the next check."""
    try:
        state = store.get_dump_state()
    except Exception as exc:  # noqa: BLE001 - the page must render without the store
        st.caption(f"Dump state unavailable: {safe_error(exc)}")
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


def _codes(snap: StatusSnapshot) -> None:
    st.subheader("Codes in this pass")
    if not snap.codes:
        st.caption("No pass yet.")
        return
    for p in snap.codes:
        done = p.stored + p.known + p.skipped + p.failed
        name = f"{p.title} ({p.code_id})" if p.title else p.code_id
        label = (
            f"{md_text(name)} — {md_text(p.state)}: {done:,}/{p.total:,} (stored {p.stored:,}, "
            f"known {p.known:,}, skipped {p.skipped:,}, failed {p.failed:,})"
        )
        if p.error:
            label += f" — {md_text(p.error)}"
        st.progress(_fraction(done, p.total), text=label)


def _throughput(samples: list[tuple[float, int]]) -> None:
    st.subheader("Throughput")
    rows = throughput_rows(samples)
    if not rows:
        st.caption("Not enough samples yet.")
        return
    st.line_chart(rows, x="time", y="articles/min", height=180)


@st.fragment(run_every=REFRESH_SECONDS)
def _live_panel(locked: bool) -> None:
    """Controls and status, redrawn every couple of seconds without reloading the page."""
    if st.session_state.get("needs_full_run"):
        st.rerun()  # a control asked for a confirmation: the full run opens the dialog
    runtime = get_runtime()
    snap = runtime.scheduler.status()
    _controls(snap, locked)
    _overview(snap)
    if runtime.settings.source == "dumps":
        _dumps(runtime.store, snap)
    _budget(snap.budget)
    _codes(snap)
    _throughput(snap.throughput)
    _export(runtime.export.status() if runtime.export is not None else None)


def _log_rows(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One readable row per record (kept newest first), extra fields folded into one column."""
    rows = []
    for rec in records:
        extra = {k: v for k, v in rec.items() if k not in {"timestamp", "level", "event"}}
        rows.append(
            {
                "time": str(rec.get("timestamp", "")),
                "level": str(rec.get("level", "")).upper(),
                "event": str(rec.get("event", "")),
                "fields": " ".join(f"{k}={v}" for k, v in extra.items()),
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
    st.dataframe(rows, hide_index=True, width="stretch", height=320)


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
        st.warning(f"The change log cannot be read now: {safe_error(exc)}")
        return
    if not changes:
        st.caption("No change recorded yet: the change log fills as passes store new or changed articles.")
        return
    for group in group_by_run(changes):
        st.text(f"Pass {group.run_id or '?'}: {group.summary()}")
        st.dataframe(
            [{"seq": c["seq"], "kind": c["kind"], "num": c["num"] or "", "id": c["id"],
              "previous_id": c["previous_id"] or "", "etat": c["etat"], "code_id": c["code_id"],
              "at": c["at"], "legifrance": article_url(c["id"])} for c in reversed(group.changes)],
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
    _open_dialog(settings, locked)
    _live_panel(locked)
    _logs_panel()
    _changes_panel()
    search_section(runtime.store, (*settings.maintenance_codes, *settings.massive_codes))


if __name__ == "__main__":
    main()  # a page run: Streamlit executes this file as __main__
else:
    app = st.App(__file__, lifespan=lifespan, routes=[*build_routes(), *health_routes()])
