"""The process-wide runtime: settings -> logging, store, state, budget, client, scheduler.

`build_runtime()` wires everything and auto-resumes from the saved state (the page's one
cached instance is collector.shared_runtime.get_runtime); `status_payload()` is the JSON of
`python -m collector status` and of `GET /aspirage/status` with the bearer token;
`public_status()` keeps what the anonymous `GET /aspirage/status` shows.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from collector import config
from collector.clock import utcnow
from collector.config import Mode, SecretMask, Settings
from collector.jsonable import jsonable
from collector.legifrance import LegifranceClient
from collector.logs import LogBuffer, configure_logging
from collector.pagetext import masked
from collector.ratelimit import RequestBudget, window_keys
from collector import harvest
from collector.scheduler import CollectorScheduler, RunPass, SchedulerOptions
from collector.state import DesiredState, LoadResult, StateFile, defaults_from_settings
from collector.status import StatusBoard, StatusSnapshot
from collector.store import open_store
from collector.store.base import Store

if TYPE_CHECKING:
    from collector.feed.export import ExportWorker  # imported when used: supabase-py is slow to import

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
    desired: DesiredState | None = None  # the desired state (its last_load: where the boot found it)
    export: ExportWorker | None = None  # the bucket + files_queue export (EXPORT_BUCKET set)
    _closed: bool = field(default=False, init=False, repr=False)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the threads within `timeout` in all (saved state untouched, lease released),
        then close the store. Every thread is asked first, then each is waited for against the
        one deadline: the stops run side by side, their waits do not add up."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        try:
            if self.export is not None:
                self.export.shutdown(0)  # asked now, waited for below
            self.scheduler.shutdown(timeout)
            if self.export is not None:
                self.export.close(max(0.0, deadline - time.monotonic()))
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
    scheduler_options: SchedulerOptions | None = None,
    store: Store | None = None,
    export: bool = True,
) -> Runtime:
    """Wire the runtime. `settings` default to the environment (ConfigError names the bad
    variable); `store` replaces the one the settings name (the runtime closes it);
    `transport` replaces the network (or the in-process emulator in demo mode);
    `resume` starts the collector when the saved state says running; `scheduler_options`
    replace the timings derived from the settings (tests: shorter leases); `export` starts the
    bucket export when EXPORT_BUCKET is set (not for a one-shot `run --once`)."""
    settings = with_demo_codes(settings or Settings.from_env())
    logs = configure_logging(settings)
    store = store if store is not None else open_store(settings)
    worker: ExportWorker | None = None
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
        desired = DesiredState(StateFile(settings.state_file, defaults_from_settings(settings)), store)
        run_pass: RunPass = harvest.run_pass
        if settings.source == "dumps":  # the one seam: the pass the scheduler runs
            from collector.dumps.schedule import dump_pass_for

            local = demo.dump_folder() if demo is not None and not settings.dump_url else None
            run_pass = dump_pass_for(settings, demo_folder=local)
        scheduler = CollectorScheduler(
            settings,
            state=desired,
            store=store,
            status=status,
            client_factory=client_factory,
            budget=budget,
            options=scheduler_options or SchedulerOptions.from_settings(settings),
            run_pass=run_pass,
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
        worker = _start_export(settings, store) if export else None
        runtime = Runtime(settings, store, scheduler, status, logs, demo, desired, worker)
        if resume:
            scheduler.resume()
        return runtime
    except BaseException:
        if worker is not None:  # a failed build leaves no thread behind over a closed store
            worker.close(5.0)
        store.close()
        raise


def _start_export(settings: Settings, store: Store) -> ExportWorker | None:
    """The export thread when EXPORT_BUCKET is set."""
    if not settings.export_bucket:
        return None
    if not (settings.supabase_url and settings.supabase_key):
        raise config.ConfigError("EXPORT_BUCKET needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
    from collector.feed.bucket import BucketQueue
    from collector.feed.export import ExportWorker

    bucket = BucketQueue.connect(settings.supabase_url, settings.supabase_key, settings.export_bucket)
    export = ExportWorker(
        store,
        bucket,
        path_template=settings.export_path_template,
        retired_status=settings.export_retired_status,
    )
    export.start()
    log.info("export started", bucket=settings.export_bucket, consumer=export.consumer)
    return export


def status_payload(
    source: Runtime | Settings,
    store: Store | None = None,
    snapshot: StatusSnapshot | None = None,
) -> dict[str, Any]:
    """The status JSON (no secrets): `status_payload(runtime)` for a live process, or
    `status_payload(settings, store)` from the saved state and the store alone (CLI)."""
    payload: dict[str, Any] = {}
    if isinstance(source, Runtime):
        settings, store, snapshot = source.settings, source.store, source.scheduler.status()
        booted = source.desired.last_load if source.desired is not None else None
        if booted is not None:  # where the state in effect came from when the process started
            payload.update(_state_origin(booted))
    else:
        settings = source
    if store is None:
        raise TypeError("status_payload(settings, store, ...) needs the store")
    if snapshot is not None:
        running, mode = snapshot.running, snapshot.mode
    else:
        state_file = StateFile(settings.state_file, defaults_from_settings(settings))
        loaded = DesiredState(state_file, store).load(write_back=False)
        payload.update(_state_origin(loaded))
        # Nothing is saved here; say whether a change (a button, a route, `run`) could be.
        problem = state_file.save_problem()
        payload["state_saved"] = problem is None
        if problem is not None:
            payload["state_error"] = f"state cannot be saved to {settings.state_file}: {problem}"
        running, mode = loaded.state.running, str(loaded.state.mode)
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
            last_error_at=jsonable(snapshot.last_error_at),
            last_run_at=jsonable(snapshot.last_run_at),
            next_run_at=jsonable(snapshot.next_run_at),
            state_saved=snapshot.state_saved,
            state_error=snapshot.state_error,
            queued_codes=snapshot.queued_codes,
        )
    if isinstance(source, Runtime) and source.export is not None:
        payload["export"] = source.export.status()
    elif settings.export_bucket:  # no export thread here (CLI): where its cursor stands
        payload["export"] = _export_cursor(settings.export_bucket, store)
    return _masked(payload, SecretMask(settings.secrets()))


PUBLIC_STATUS_FIELDS = (
    "running", "mode", "massive_active", "timestamp", "phase",
    "articles_stored", "articles_rejected", "requests", "last_run_at", "next_run_at",
)


def public_status(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a status payload an anonymous visitor may see: the desired state, the phase,
    the counters and the run times. Left out: the store and source labels (path, host), the
    lease holder (host, pid) in `detail`, error texts (they quote API bodies), state problems."""
    return {k: payload[k] for k in PUBLIC_STATUS_FIELDS if k in payload}


def _export_cursor(bucket: str, store: Store) -> dict[str, Any]:
    consumer = f"export:{bucket}"
    out: dict[str, Any] = {"bucket": bucket, "consumer": consumer}
    try:
        cursor = store.get_cursor(consumer)
        out.update(last_exported_seq=cursor, pending=max(0, store.latest_change_seq() - cursor))
    except Exception as exc:  # noqa: BLE001 - the status must answer even when the store does not
        out["store_error"] = masked(f"{type(exc).__name__}: {exc}", 300)
    return out


def _state_origin(loaded: LoadResult) -> dict[str, Any]:
    """`state_source` (file / store / defaults) plus why the file or the store copy was not used."""
    out: dict[str, Any] = {"state_source": loaded.source}
    if loaded.problem:
        out["state_problem"] = loaded.problem
    if loaded.store_problem:
        out["state_store_problem"] = masked(loaded.store_problem, 300)
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
        out["last_run"] = jsonable(runs[0]) if runs else None
    except Exception as exc:  # noqa: BLE001 - the status must answer even when the store does not
        out["store_error"] = masked(f"{type(exc).__name__}: {exc}", 300)
        log.warning("status counters unavailable", error=out["store_error"])
    try:
        dump = jsonable(dataclasses.asdict(store.get_dump_state()))
        if snapshot is not None and snapshot.dump:
            dump["live"] = dict(snapshot.dump)  # the archive being applied by this process
        out["dump"] = dump
    except Exception as exc:  # noqa: BLE001 - e.g. a Supabase project without 0006_dumps.sql
        if settings.source == "dumps":
            out["dump_error"] = masked(f"{type(exc).__name__}: {exc}", 300)
        log.debug("dump state unavailable", error=str(exc))
    return out


def _masked(value: Any, mask: SecretMask) -> Any:
    """Belt and braces: no secret value survives anywhere in the payload."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _masked(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    return value
