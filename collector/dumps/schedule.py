"""COLLECTOR_SOURCE=dumps: the scheduler's pass applies DILA archives instead of calling the API.

`dump_pass_for(settings)` has harvest.run_pass's signature (scheduler.RunPass), so runtime.py
hands it to the scheduler and nothing else changes: MAINTENANCE checks the dump folder every
MAINTENANCE_INTERVAL_MINUTES and applies the new deltas, MASSIVE loads the newest global (then
the deltas after it); both with 0 API requests. The code scope is the MASSIVE list in both
modes (`load-dump --codes configured`), so the two modes build one consistent store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from collector.config import Mode, Settings
from collector.dumps.apply import CodeScope, DumpOptions, LoadSummary, LocalArchives, load_dumps
from collector.dumps.fetch import DumpFetcher
from collector.dumps.progress import to_status
from collector.harvest import HarvestOptions
from collector.models import PassSummary
from collector.status import StatusBoard
from collector.store.base import Store

if TYPE_CHECKING:
    from collector.demo.dumps import DemoDumpFolder

log = structlog.get_logger(__name__)

DumpPass = Callable[..., Any]


def summary_of(load: LoadSummary, mode: Mode, codes: int, started: datetime, finished: datetime) -> PassSummary:
    """A dump load as the PassSummary the scheduler and the page know: stored = rows that
    entered force or changed, skipped = rejected by the quality filter, repealed = rows taken
    out of force (deletions included), failed = bad files."""
    data = load.as_dict()
    return PassSummary(
        mode=str(mode), codes=codes, stored=data["stored"] + data["updated"], skipped=data["rejected"],
        repealed=data["retired"], failed=data["bad_files"], started_at=started, finished_at=finished,
        errors=load.errors + load.warnings,
    )


def dump_pass_for(settings: Settings, *, transport: httpx.BaseTransport | None = None,
                  demo_folder: DemoDumpFolder | None = None) -> DumpPass:
    """The pass applying the archives of settings.dump_folder; in demo mode without DUMP_URL,
    those of the in-process emulator's dump folder (the files /OPENDATA/LEGI/ serves), read
    where they are written."""
    source = settings.dump_folder
    scope = CodeScope(frozenset(settings.massive_codes))

    async def dump_pass(mode: Mode, codes: Sequence[str], *, client: Any, store: Store,
                        status: StatusBoard, options: HarvestOptions,
                        interrupt: asyncio.Event) -> PassSummary:
        del client, codes  # no API request; the scope is the MASSIVE list in both modes
        started = options.clock()
        run_id = await asyncio.to_thread(store.start_run, str(mode), sorted(scope.ids or ()))
        with status.update() as s:
            s.detail = f"{mode}: applying DILA archives from {source}"

        def load() -> LoadSummary:
            run = DumpOptions.for_settings(settings, clock=options.clock)
            if demo_folder is not None:
                demo_folder.paths()  # written on first use
                return load_dumps([str(demo_folder.folder)], scope, store, LocalArchives(), options=run,
                                  progress=to_status(status), should_stop=interrupt.is_set)
            with DumpFetcher(settings.dump_cache_dir, transport=transport) as fetcher:
                return load_dumps([source], scope, store, fetcher, options=run,
                                  progress=to_status(status), should_stop=interrupt.is_set)

        try:
            result = await asyncio.to_thread(load)
        except Exception as exc:  # a store failure: the run is recorded, the scheduler reports it
            await asyncio.to_thread(store.finish_run, run_id, {"mode": str(mode), "errors": [f"{type(exc).__name__}: {exc}"]})
            raise
        summary = summary_of(result, mode, len(scope.ids or ()), started, options.clock())
        summary.interrupted = interrupt.is_set()
        with status.update() as s:
            s.dump = {}
            s.pass_stored, s.pass_skipped = summary.stored, summary.skipped
        for error in result.errors:
            status.error(error)
        await asyncio.to_thread(store.finish_run, run_id, {**result.as_dict(), "mode": str(mode)})
        log.info("dump pass end", mode=str(mode), **{k: v for k, v in result.as_dict().items()
                                                     if k in ("stamp", "stored", "updated", "retired", "deleted")})
        return summary

    return dump_pass
