"""The process-wide runtime: settings -> logging, store, state, budget, client, scheduler.

`build_runtime()` wires everything and auto-resumes from the saved state (the page's one
cached instance is collector.shared_runtime.get_runtime); `status_payload()` is the JSON of `python -m collector status` and `GET /aspirage/status`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import structlog

from collector import config
from collector.config import Mode, Settings
from collector.legifrance import LegifranceClient
from collector.logs import LogBuffer, configure_logging
from collector.ratelimit import RequestBudget, window_keys
from collector.scheduler import CollectorScheduler
from collector.state import LoadResult, SchedulerState, StateFile, StateKeeper, defaults_from_settings
from collector.status import StatusBoard, StatusSnapshot, utcnow
from collector.store import open_store
from collector.store.base import Store

log = structlog.get_logger("collector.runtime")


@dataclass
class Runtime:
    """Everything one process runs with. `close()` stops the collector and the store."""

    settings: Settings
    store: Store
    scheduler: CollectorScheduler
    status: StatusBoard
    logs: LogBuffer
    demo: Any = None  # the in-process emulator's DemoServer (demo source only)
    keeper: StateKeeper | None = None  # the state file + store mirror (its last_load: boot)
    _closed: bool = field(default=False, init=False, repr=False)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (saved state untouched, lease released), then close the store."""
        if self._closed:
            return
        self._closed = True
        try:
            self.scheduler.shutdown(timeout)
        finally:
            self.store.close()
            log.info("runtime closed")


def with_demo_codes(settings: Settings) -> Settings:
    """In demo mode, the emulator's own code ids replace the built-in (real) code lists;
    lists set through MAINTENANCE_CODES / MASSIVE_CODES (anything but the built-ins) stay."""
    if not settings.is_demo:
        return settings
    from collector.demo.corpus import DEMO_MAINTENANCE_CODES, DEMO_MASSIVE_CODES

    changes: dict[str, tuple[str, ...]] = {}
    if settings.maintenance_codes == config.MAINTENANCE_CODES:
        changes["maintenance_codes"] = tuple(DEMO_MAINTENANCE_CODES)
    if settings.massive_codes == config.MASSIVE_CODES:
        changes["massive_codes"] = tuple(DEMO_MASSIVE_CODES)
    return dataclasses.replace(settings, **changes) if changes else settings


def build_runtime(
    settings: Settings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resume: bool = True,
    scheduler_options: Mapping[str, Any] | None = None,
) -> Runtime:
    """Wire the runtime. `settings` default to the environment (ConfigError names the bad
    variable); `transport` replaces the network (or the in-process emulator in demo mode);
    `resume` starts the collector when the saved state says running; `scheduler_options`
    are extra CollectorScheduler keyword arguments (tests: lease timings, run_pass, ...)."""
    settings = with_demo_codes(settings or Settings.from_env())
    logs = configure_logging(settings)
    store = open_store(settings)
    try:
        if settings.is_demo and transport is None:
            from collector.demo import DemoConfig, demo_transport

            transport = demo_transport(DemoConfig())  # one emulator for the process's life
        demo = getattr(transport, "server", transport) if settings.is_demo else None

        def client_factory(budget: RequestBudget) -> LegifranceClient:
            return LegifranceClient.from_settings(settings, budget, transport=transport)

        budget = RequestBudget(
            settings.max_requests_per_second,
            settings.max_requests_per_hour,
            settings.max_daily_requests,
            settings.max_in_flight,
            ledger=store,
        )
        status = StatusBoard()
        keeper = StateKeeper(StateFile(settings.state_file, defaults_from_settings(settings)), store)
        options: dict[str, Any] = {"lease_ttl": settings.lease_ttl_seconds,
                                   "lease_renew_every": settings.lease_ttl_seconds / 3}
        if settings.source == "dumps":  # the one seam: the pass the scheduler runs
            from collector.dumps.schedule import dump_pass_for

            local = demo.dump_folder() if demo is not None and not settings.dump_url else None
            options["run_pass"] = dump_pass_for(settings, demo_folder=local)
        scheduler = CollectorScheduler(
            settings,
            state=keeper,
            store=store,
            status=status,
            client_factory=client_factory,
            budget=budget,
            **{**options, **dict(scheduler_options or {})},
        )
        log.info(
            "runtime ready",
            source=settings.source_label,
            store=store.label,
            state_file=str(settings.state_file),
            maintenance_codes=len(settings.maintenance_codes),
            massive_codes=len(settings.massive_codes),
            owner=scheduler.owner,
        )
        if settings.is_demo:
            log.warning("source=DEMO: synthetic articles from the offline emulator, not real law")
        runtime = Runtime(settings, store, scheduler, status, logs, demo, keeper)
        if resume:
            scheduler.resume()
        return runtime
    except BaseException:
        store.close()
        raise


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def status_payload(
    source: Runtime | Settings,
    store: Store | None = None,
    snapshot: StatusSnapshot | None = None,
    *,
    state: SchedulerState | None = None,
) -> dict[str, Any]:
    """The status JSON (no secrets): `status_payload(runtime)` for a live process, or
    `status_payload(settings, store)` from the saved state and the store alone (CLI)."""
    payload: dict[str, Any] = {}
    if isinstance(source, Runtime):
        settings, store, snapshot = source.settings, source.store, source.scheduler.status()
        booted = source.keeper.last_load if source.keeper is not None else None
        if booted is not None:  # where the state in effect came from when the process started
            payload.update(_state_origin(booted))
    else:
        settings = source
    if store is None:
        raise TypeError("status_payload(settings, store, ...) needs the store")
    if snapshot is not None:
        running, mode = snapshot.running, snapshot.mode
    else:
        if state is None:
            state_file = StateFile(settings.state_file, defaults_from_settings(settings))
            loaded = StateKeeper(state_file, store).load()
            state = loaded.state
            payload.update(_state_origin(loaded))
            # Nothing is saved here; say whether a change (a button, a route, `run`) could be.
            problem = state_file.save_problem()
            payload["state_saved"] = problem is None
            if problem is not None:
                payload["state_error"] = f"state cannot be saved to {settings.state_file}: {problem}"
        running, mode = state.running, str(state.mode)
    payload = {
        "running": running,
        "mode": mode,
        "massive_active": bool(running and mode == Mode.MASSIVE.value),
        "timestamp": utcnow().isoformat(),
        "source": settings.source_label,
        "store": store.label,
        "collector_source": settings.source,
        **payload,
    }
    if settings.source == "dumps":
        payload["dump_folder"] = settings.dump_folder
    payload.update(_counters(settings, store, snapshot))
    if snapshot is not None:
        payload.update(
            phase=snapshot.phase,
            detail=snapshot.detail,
            alive=snapshot.alive,
            current_code=snapshot.current_code,
            last_error=snapshot.last_error,
            last_error_at=_iso(snapshot.last_error_at),
            last_run_at=_iso(snapshot.last_run_at),
            next_run_at=_iso(snapshot.next_run_at),
            state_saved=snapshot.state_saved,
            state_error=snapshot.state_error,
        )
    return _masked(payload, settings.secrets())


def _state_origin(loaded: LoadResult) -> dict[str, Any]:
    """`state_source` (file / store / defaults) plus why the file or the store copy was not used."""
    out: dict[str, Any] = {"state_source": loaded.source}
    if loaded.problem:
        out["state_problem"] = loaded.problem
    if loaded.store_problem:
        out["state_store_problem"] = loaded.store_problem[:300]
    return out


def _counters(settings: Settings, store: Store, snapshot: StatusSnapshot | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        if snapshot is not None and snapshot.budget:
            b = snapshot.budget
            hour_used, day_used = int(b["hour_used"]), int(b["day_used"])
        else:
            hour_key, day_key = window_keys(time.time())
            spent = store.get_requests([hour_key, day_key])
            hour_used, day_used = int(spent.get(hour_key, 0)), int(spent.get(day_key, 0))
        out["requests"] = {
            "hour": {"used": hour_used, "limit": settings.max_requests_per_hour},
            "day": {"used": day_used, "limit": settings.max_daily_requests},
        }
        if snapshot is not None:  # refreshed every few seconds by the scheduler
            out["articles_stored"], out["articles_rejected"] = snapshot.stored_total, snapshot.rejected_total
        else:
            out["articles_stored"], out["articles_rejected"] = store.count_articles(), store.count_rejected()
        runs = store.last_runs(1)
        out["last_run"] = _jsonable(runs[0]) if runs else None
    except Exception as exc:  # noqa: BLE001 - the status must answer even when the store does not
        out["store_error"] = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("status counters unavailable", error=out["store_error"])
    try:
        dump = _jsonable(dataclasses.asdict(store.get_dump_state()))
        if snapshot is not None and snapshot.dump:
            dump["live"] = dict(snapshot.dump)  # the archive being applied by this process
        out["dump"] = dump
    except Exception as exc:  # noqa: BLE001 - e.g. a Supabase project without 0004_dumps.sql
        if settings.source == "dumps":
            out["dump_error"] = f"{type(exc).__name__}: {exc}"[:300]
        log.debug("dump state unavailable", error=str(exc))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return _iso(value) if isinstance(value, datetime) else str(value)


def _masked(value: Any, secrets: tuple[str, ...]) -> Any:
    """Belt and braces: no secret value survives anywhere in the payload."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _masked(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, secrets) for v in value]
    return value
