"""What the page's cockpit shows, computed without Streamlit: the status badge, the alerts,
the passes and codes tables, a MASSIVE pass's progress and ETA, and humanised times.

dashboard.py only draws what these functions return. Texts that come from the API or the
store (error messages, titles, lease holders) are returned as they are: the page draws them
as plain text (md_text or text elements), never as Markdown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from collector.models import CodeMark, CodeProgress
from collector.status import StatusSnapshot
from collector.store.base import Store

if TYPE_CHECKING:
    from collector.runtime import Runtime

NOT_WALKED = "not walked yet"


# ---- humanised times -----------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    """`45 s`, `3 min 20 s`, `2 h 05 min`, `3 d 4 h`; an em dash for None."""
    if seconds is None:
        return "—"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, rest = divmod(s, 60)
        return f"{m} min {rest:02d} s" if rest else f"{m} min"
    if s < 86400:
        h, rest = divmod(s, 3600)
        return f"{h} h {rest // 60:02d} min"
    d, rest = divmod(s, 86400)
    return f"{d} d {rest // 3600} h"


def as_time(value: datetime | str | None) -> datetime | None:
    """An aware UTC datetime from a datetime or ISO text (naive = UTC); None when unreadable."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ago(value: datetime | str | None, now: datetime) -> str:
    """`5 min ago` / `in 40 s`; an em dash for None."""
    moment = as_time(value)
    if moment is None:
        return "—"
    delta = (moment - now).total_seconds()
    return f"in {duration(delta)}" if delta > 0.5 else f"{duration(-delta)} ago"


def when(value: datetime | str | None, now: datetime) -> str:
    """`23:31:18 UTC (5 min ago)`, with the date when it is not today's; an em dash for None."""
    moment = as_time(value)
    if moment is None:
        return "—" if value is None else str(value)
    clock = f"{moment:%H:%M:%S}" if moment.date() == now.date() else f"{moment:%Y-%m-%d %H:%M}"
    return f"{clock} UTC ({ago(moment, now)})"


# ---- the badge -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Badge:
    """One word for the collector's state, its colour (st.badge), what it does now, since when."""

    state: str  # running | waiting | standby | stopping | stopped | error
    colour: str
    icon: str
    doing: str  # plain text (may quote a code title or the lease holder)
    since: datetime | None


_COLOURS = {
    "running": ("green", ":material/play_circle:"),
    "waiting": ("blue", ":material/schedule:"),
    "standby": ("violet", ":material/pause_circle:"),
    "stopping": ("orange", ":material/stop_circle:"),
    "stopped": ("gray", ":material/stop_circle:"),
    "error": ("red", ":material/error:"),
}


def badge(snap: StatusSnapshot, now: datetime) -> Badge:
    """The one state the page shows: the desired state, the thread and the phase reconciled
    (never "running" next to an error)."""
    phase, detail = snap.phase, snap.detail or ""
    if snap.running and not snap.alive and phase == "error":
        state, doing = "error", "the collector thread ended on an error"
    elif phase == "error" and (snap.running or snap.alive):
        state = "error"
        doing = f"retrying {when(snap.next_run_at, now)}" if snap.next_run_at else "waiting to retry"
    elif not snap.running and not (snap.alive and phase in ("harvesting", "waiting for budget")):
        state = "stopping" if snap.alive else "stopped"
        doing = "committing what was fetched, then stopping" if snap.alive else "not collecting"
    elif phase == "standby":
        state, doing = "standby", detail.removeprefix("standby: ") or "another collector holds the lease"
    elif phase in ("waiting", "waiting for budget"):
        state = "waiting"
        if phase == "waiting" and snap.next_run_at is not None:
            doing = f"next pass {when(snap.next_run_at, now)}"
        else:
            doing = detail or phase
    elif phase == "harvesting":
        state, doing = "running", _harvesting(snap)
    else:  # idle or stopping while meant to run: the thread is (re)starting
        state, doing = "running", detail or "starting"
    colour, icon = _COLOURS[state]
    return Badge(state, colour, icon, doing, snap.phase_since)


def _harvesting(snap: StatusSnapshot) -> str:
    doing = snap.detail or "harvesting"
    if snap.current_code:
        title = next((p.title for p in snap.codes if p.code_id == snap.current_code and p.title), None)
        doing += f" — now {title} ({snap.current_code})" if title else f" — now {snap.current_code}"
    return doing


# ---- the alerts ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Alert:
    """One problem: `level` error / warning, what is wrong (our words), the message as the
    system said it (plain text, may be None), what to do; `retry`: offer a Retry now button."""

    level: str
    title: str
    message: str | None
    action: str
    retry: bool = False


def alerts(
    snap: StatusSnapshot,
    now: datetime,
    *,
    state_problem: str | None = None,
    state_store_problem: str | None = None,
    export: Mapping[str, Any] | None = None,
    locked: bool = False,
) -> list[Alert]:
    """Every problem the status knows, each said once (a message already shown by an earlier
    alert is not repeated), most urgent first."""
    out: list[Alert] = []
    if snap.phase == "error" and snap.last_error and (snap.running or snap.alive):
        if snap.running and not snap.alive:
            action = "Press Retry now to start a new collector thread; the logs below have the trace."
        else:
            retry = f" at {when(snap.next_run_at, now)}" if snap.next_run_at else ""
            action = f"{_hint(snap.last_error)}It retries by itself{retry}; press Retry now once the cause is fixed."
        out.append(Alert("error", "The collector stopped on an error", snap.last_error, action, retry=not locked))
    if snap.store_error:
        out.append(Alert("error", "The store does not answer", snap.store_error,
                         "Check the database (COLLECTOR_DB, or SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY); "
                         "the collector retries with backoff and loses nothing."))
    if not snap.state_saved:
        out.append(Alert("error", "The desired state could not be saved", snap.state_error or "unknown error",
                         "The change applies now but will not survive a restart: make SCHEDULER_STATE_FILE "
                         "writable, then press the button again."))
    elif snap.state_error:
        out.append(Alert("warning", "The state file is saved, but its copy in the store is not", snap.state_error,
                         "A redeploy would lose the change: check the store, then press the button again."))
    if state_problem:
        out.append(Alert("warning", "The state file could not be used at start-up", state_problem,
                         "It was moved aside and the store's copy (or the defaults) used: check that "
                         "START / STOP and the mode shown are what you want; the next press writes a new file."))
    if state_store_problem:
        out.append(Alert("warning", "The store's copy of the state could not be read at start-up",
                         state_store_problem, "The state file was used. Check the store settings; the "
                         "collector retries the store by itself."))
    if export and export.get("last_error"):
        out.append(Alert("warning", "The export to the workers' bucket failed", str(export["last_error"]),
                         "It retries with backoff and exports nothing twice; check the bucket and the key."))
    if snap.last_error and not (snap.phase == "error" and (snap.running or snap.alive)):
        out.append(Alert("warning", f"Last error ({ago(snap.last_error_at, now)})", snap.last_error,
                         "The collector went on; nothing to do unless it repeats."))
    return _once(out)


def _hint(message: str) -> str:
    if "LegifranceAuthError" in message or "invalid_client" in message:
        return "Check LEGIFRANCE_CLIENT_ID and LEGIFRANCE_CLIENT_SECRET (they restart the service). "
    if "Store" in message:
        return "Check the store settings. "
    return ""


def _once(items: list[Alert]) -> list[Alert]:
    """Drop an alert whose message is already said by an earlier one (same text, or inside it)."""
    said: list[str] = []
    out = []
    for item in items:
        text = " ".join((item.message or "").split())
        if text and any(text in other for other in said):
            continue
        said.append(text)
        out.append(item)
    return out


# ---- passes and codes ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class History:
    """What the passes and codes tables read from the store, in one go."""

    runs: list[dict[str, Any]]
    marks: dict[str, CodeMark]
    code_ids: list[str]  # the configured codes, then any other code the store has a mark for
    in_force: dict[str, int]
    last_change: dict[str, str]


def read_history(store: Store, code_ids: Iterable[str], runs: int, changes_scanned: int) -> History:
    """The newest `runs` passes, the code marks, each code's stored in-force count (one count
    per code) and its newest event among the last `changes_scanned` (StoreError propagates)."""
    marks = store.get_code_marks()
    codes = list(dict.fromkeys([*code_ids, *marks]))
    since = max(0, store.latest_change_seq() - changes_scanned)
    return History(
        runs=store.last_runs(runs),
        marks=marks,
        code_ids=codes,
        in_force={c: store.count_in_force(c) for c in codes},
        last_change=last_changes(store.read_changes(since, changes_scanned)),
    )


def pass_rows(runs: Sequence[Mapping[str, Any]], now: datetime, current_run: int | None = None) -> list[dict[str, Any]]:
    """Recent passes (Store.last_runs) as table rows, newest first."""
    rows = []
    for run in runs:
        summary = run.get("summary") or {}
        counts = summary or run.get("progress") or {}  # a pass in progress: what it committed so far
        started, finished = as_time(run.get("started_at")), as_time(run.get("finished_at"))
        end = finished or (now if run.get("id") == current_run else None)
        rows.append({
            "start": when(started, now),
            "duration": duration((end - started).total_seconds()) if started and end else "—",
            "mode": run.get("mode") or "",
            "codes": len(run.get("codes") or []),
            "requests": counts.get("requests"),
            "fetched": counts.get("fetched"),
            "stored": counts.get("stored"),
            "rejected (quality filter)": counts.get("skipped"),
            "failed": counts.get("failed"),
            "outcome": _outcome(run, summary, finished, run.get("id") == current_run),
        })
    return rows


def _outcome(run: Mapping[str, Any], summary: Mapping[str, Any], finished: datetime | None, current: bool) -> str:
    if finished is None:
        return "in progress" if current else "did not finish (process stopped)"
    if summary.get("interrupted"):
        return "interrupted"
    failed_codes, failed = summary.get("codes_failed") or 0, summary.get("failed") or 0
    if failed_codes or failed:
        return f"{failed_codes} code(s), {failed} article(s) failed"
    errors = summary.get("errors") or []
    if errors:  # e.g. the token refused before any code: nothing failed, nothing was done
        return f"error: {str(errors[-1])[:160]}"
    unchanged = summary.get("codes_unchanged") or 0
    return f"complete ({unchanged} unchanged)" if unchanged else "complete"


def code_rows(
    code_ids: Iterable[str],
    marks: Mapping[str, CodeMark],
    in_force: Mapping[str, int | None],
    last_change: Mapping[str, str],
    progress: Sequence[CodeProgress],
    now: datetime,
    queued: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per code: title, articles in force (stored), last complete walk, /list/code
    lastUpdate at that walk, the newest change-log event, and where this pass stands
    (`queued`: codes waiting for an extra pass, Collect now)."""
    in_pass = {p.code_id: p for p in progress}
    rows = []
    for code_id in dict.fromkeys(code_ids):
        mark, p = marks.get(code_id), in_pass.get(code_id)
        title = (p.title if p and p.title else None) or (mark.title if mark else None)
        rows.append({
            "code": code_id,
            "title": title or "",
            "in force (stored)": in_force.get(code_id),
            "last walked": when(mark.walked_at, now) if mark and mark.walked_at else NOT_WALKED,
            "lastUpdate (/list/code)": (mark.last_update or "—")[:10] if mark else "—",
            "last change": when(last_change[code_id], now) if code_id in last_change else "—",
            "this pass": pass_state(p) if p else "queued (collect now)" if code_id in queued else "not in this pass",
            "progress": pass_fraction(p) if p else None,
        })
    return rows


def pass_state(p: CodeProgress) -> str:
    """A code's place in the pass, in words (never "pending: 0/0")."""
    if p.state == "pending":
        return NOT_WALKED
    if p.state == "walking":
        return "reading its table of contents"
    done = p.stored + p.known + p.skipped + p.failed
    words = {"fetching": "fetching", "done": "done", "unchanged": "unchanged since the last walk",
             "failed": "failed", "interrupted": "interrupted"}.get(p.state, p.state)
    if p.total and p.state != "unchanged":
        words += (f" {done:,}/{p.total:,} (already stored {p.known:,}, new {p.stored:,}, "
                  f"rejected {p.skipped:,}, failed {p.failed:,})")
    return f"{words}: {p.error}" if p.error else words


def pass_fraction(p: CodeProgress) -> float:
    if p.state in ("done", "unchanged"):
        return 1.0
    done = p.stored + p.known + p.skipped + p.failed
    return min(1.0, done / p.total) if p.total > 0 else 0.0


def last_changes(changes: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """code id -> `at` of its newest event among `changes` (read in seq order)."""
    return {c["code_id"]: c["at"] for c in changes if c.get("code_id")}


# ---- a pass's overall progress and ETA -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class PassProgress:
    codes_done: int
    codes: int
    articles_done: int
    articles_known: int  # in-force ids of the codes walked so far
    requests_per_min: float | None  # measured over the recent samples
    eta_seconds: float | None  # for the articles of the walked codes plus one TOC per code left

    @property
    def fraction(self) -> float:
        return self.codes_done / self.codes if self.codes else 0.0


def pass_progress(snap: StatusSnapshot, rows: Sequence[Mapping[str, Any]], now: datetime) -> PassProgress:
    """Where the current pass stands; the ETA from the measured request rate, bounded by what
    is left of today's budget (the rest waits for the next UTC day, `day_limit` per day)."""
    codes = snap.codes
    done_states = ("done", "unchanged", "failed")
    codes_done = sum(1 for p in codes if p.state in done_states)
    walked = [p for p in codes if p.total]
    articles_done = sum(min(p.total, p.stored + p.known + p.skipped + p.failed) for p in walked)
    articles_known = sum(p.total for p in walked)
    recent = [r["requests/min"] for r in rows[-8:]]
    rate = sum(recent) / len(recent) if recent else None
    remaining = (articles_known - articles_done) + sum(1 for p in codes if p.state == "pending")
    day_left = max(0, int(snap.budget.get("day_limit", 0)) - int(snap.budget.get("day_used", 0)))
    eta = eta_seconds(remaining, (rate or 0) / 60, day_left, int(snap.budget.get("day_limit", 0)), now)
    return PassProgress(codes_done, len(codes), articles_done, articles_known, rate, eta)


def eta_seconds(remaining: int, per_second: float, day_left: int, day_limit: int, now: datetime) -> float | None:
    """Seconds to spend `remaining` requests at `per_second`, waiting for the next UTC day(s)
    when today's budget (`day_left`) is short; None without a measured rate."""
    if remaining <= 0:
        return 0.0
    if per_second <= 0:
        return None
    if remaining <= day_left or day_limit <= 0:
        return remaining / per_second
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    rest = remaining - day_left
    days, last = divmod(rest, day_limit)
    return (midnight - now).total_seconds() + days * 86400 + last / per_second


def massive_cost(
    source_in_force: Mapping[str, int] | None,
    stored_in_force: Mapping[str, int],
    runs: Sequence[Mapping[str, Any]],
) -> tuple[int, str] | None:
    """What the next full MASSIVE pass costs in requests, and on what basis. When the source's
    in-force counts per code are known (the demo): one token, one table of contents per code
    and each in-force article not stored yet. Otherwise the last complete MASSIVE pass's count.
    None when neither is known."""
    if source_in_force:
        fetch = sum(max(0, n - (stored_in_force.get(c) or 0)) for c, n in source_in_force.items())
        return 1 + len(source_in_force) + fetch, (
            f"one table of contents per code and the {fetch:,} in-force articles not stored yet")
    for run in runs:
        summary = run.get("summary") or {}
        if run.get("mode") == "MASSIVE" and run.get("finished_at") and not summary.get("interrupted"):
            requests = summary.get("requests")
            if isinstance(requests, int) and requests > 0:
                return requests + int(summary.get("token_requests") or 0), "what the last complete MASSIVE pass spent"
    return None


def next_massive_cost(runtime: Runtime) -> tuple[int, str] | None:
    """massive_cost for this runtime: the demo's corpus when the source is the demo, else the
    last MASSIVE passes in the store; None when the store does not answer."""
    codes = runtime.settings.massive_codes
    try:
        if runtime.demo is not None:
            corpus = runtime.demo.corpus
            source = {c: corpus.in_force_count(c) for c in codes if corpus.knows_code(c)}
            return massive_cost(source, {c: runtime.store.count_in_force(c) for c in source}, [])
        return massive_cost(None, {}, runtime.store.last_runs(20))
    except Exception:  # noqa: BLE001 - the store is down: the dialog quotes the quota instead
        return None


# ---- the rates chart ---------------------------------------------------------------------------
SERIES_COLOURS = {
    "requests/min": "#1f77b4",
    "articles/min": "#2ca02c",
    "hour limit": "#d62728",
    "day limit (average)": "#ff7f0e",
}


def rate_series(
    rows: Sequence[Mapping[str, Any]], budget: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """The chart's long-form points (time, segment, series, per minute) from throughput_rows,
    the limits as per-minute rates (hour limit / 60, day limit / 1440), and the y axis top."""
    points = [
        {"time": r["time"], "segment": r["segment"], "series": name, "per minute": r[name]}
        for r in rows
        for name in ("requests/min", "articles/min")
    ]
    limits = [
        {"series": "hour limit", "per minute": int(budget.get("hour_limit", 0)) / 60},
        {"series": "day limit (average)", "per minute": int(budget.get("day_limit", 0)) / 1440},
    ]
    limits = [item for item in limits if item["per minute"] > 0]
    top = max([p["per minute"] for p in points] + [item["per minute"] for item in limits] + [1.0]) * 1.1
    return points, limits, top
