"""The desired state {running, mode}: `DesiredState`, its one owner, and its two copies.

The file (collector.statefile.StateFile) survives a restart; the store row survives a Render
redeploy (which wipes the filesystem) and is what other instances on the same store read.
Every change is stamped with a strictly increasing `updated_at` and written to both copies.
The newer copy wins: at boot between the file and the row (and is written back to the other),
afterwards when `refresh()` finds a row another instance saved. A Reset is a row marked
`reset`: whoever reads it uses its own environment defaults (ENABLE_SCHEDULER,
SIPHONNAGE_MODE), and the file is removed.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from collector.clock import as_utc, utcnow
from collector.config import Mode, parse_mode
from collector.statefile import (
    InvalidState,
    LoadResult,
    SchedulerState,
    Source,
    StateFile,
    StateSaveError,
    defaults_from_settings,
    short,
)
from collector.store.base import Store

__all__ = ["DesiredState", "InvalidState", "LoadResult", "SchedulerState", "StateFile", "StateSaveError",
           "defaults_from_settings"]

UNREADABLE_WARN_EVERY = 60.0  # seconds between two warnings that the store row could not be read


def _log() -> Any:
    # Looked up per call so tests' structlog.testing.capture_logs() and later reconfigurations apply.
    return structlog.get_logger(__name__)


class DesiredState:
    """The one owner of {running, mode}: held under its own lock, written to the file and the
    store row on every change, loaded from the newer copy, refreshed from the store row.

    After each write, `saved` says whether the file took it and `error` why not (or that only
    the store copy is stale: on Render it is the one surviving a redeploy).
    """

    def __init__(self, file: StateFile, store: Store | None = None, *, clock: Callable[[], datetime] = utcnow,
                 pid: int | None = None, host: str | None = None) -> None:
        self.file = file
        self.store = store
        self._clock = clock
        self._pid = pid if pid is not None else os.getpid()
        self._host = host if host is not None else socket.gethostname()
        self._lock = threading.Lock()
        self._state = file.defaults
        self._last_stamp: datetime | None = None
        self._warned_at: datetime | None = None
        self.saved = True
        self.error: str | None = None
        self.last_load: LoadResult | None = None  # the boot's load: where the state came from

    @property
    def running(self) -> bool:
        return self._state.running

    @property
    def mode(self) -> Mode:
        return self._state.mode

    # ---- boot --------------------------------------------------------------------------------
    def load(self, *, write_back: bool = True) -> LoadResult:
        """Hold the newer of the file and the store row (a tie goes to the file). With
        `write_back`, a file newer than the row (or the only copy) is written to the store, so a
        state only the file knew survives a redeploy; the file takes the row at the next change.
        A store that cannot be read or holds an invalid row is logged and the file is used
        (`store_problem` says why). Never raises."""
        from_file = self.file.load()
        stored, store_problem = self._read_store(using=from_file.source)
        result = replace(from_file, store_problem=store_problem)
        held = from_file.state if from_file.source == "file" else None
        to_store = held is not None and store_problem is None and (stored is None or held.newer_than(stored))
        if stored is not None and (held is None or stored.newer_than(held)):
            held = self._resolve(stored)
            result = replace(result, state=self.file.defaults if stored.reset else stored,
                             source="defaults" if stored.reset else "store")
        with self._lock:
            self._state = held or self.file.defaults
            if write_back and to_store and self.store is not None:
                try:
                    self.store.save_state(self._state.to_json())
                except Exception as exc:  # noqa: BLE001 - the store takes it at the next change
                    _log().warning("state_write_back_failed", problem=f"{type(exc).__name__}: {exc}")
        self.last_load = result
        fields = {"source": result.source, "running": result.state.running, "mode": str(result.state.mode)}
        fields.update({k: str(v) for k, v in (("problem", result.problem), ("moved_to", result.moved_to)) if v})
        (_log().warning if result.problem else _log().info)("state loaded", **fields)
        return result

    def _read_store(self, *, using: Source) -> tuple[SchedulerState | None, str | None]:
        if self.store is None:
            return None, None
        try:
            raw = self.store.load_state()
        except Exception as exc:  # any backend failure: the file is the fallback
            problem = f"store unreachable: {type(exc).__name__}: {exc}"
            _log().warning("state_store_unreachable", problem=problem, using=using)
            return None, problem
        try:
            return (SchedulerState.from_json(raw) if raw is not None else None), None
        except InvalidState as exc:
            problem = f"store record invalid: {exc}"
            _log().warning("state_store_invalid", problem=problem, using=using)
            return None, problem

    def _resolve(self, record: SchedulerState) -> SchedulerState:
        """A Reset's row means this process's defaults, stamped as the row is."""
        if not record.reset:
            return record
        return replace(self.file.defaults, updated_at=record.updated_at, pid=record.pid, host=record.host, reset=True)

    # ---- changes -----------------------------------------------------------------------------
    def save(self, running: bool | None = None, mode: Mode | str | None = None) -> SchedulerState:
        """Change `running` and/or `mode` (None keeps it), stamp it and write both copies.

        The change holds in memory even when a write fails: a store failure is logged and kept
        in `error`; a file failure raises StateSaveError (after the store write was tried)."""
        if running is not None and not isinstance(running, bool):
            raise TypeError(f"running must be a bool, got {short(running)}")
        new_mode = parse_mode(mode) if mode is not None else None
        with self._lock:
            current = self._state
            state = SchedulerState(current.running if running is None else running, new_mode or current.mode,
                                   self._stamp(), self._pid, self._host)
            return self._write(state)

    def reset(self) -> SchedulerState:
        """Back to the environment defaults: the file is removed and the store row marked
        `reset`, so every instance (and the next boot) uses its own defaults as they are then."""
        with self._lock:
            return self._write(replace(self.file.defaults, updated_at=self._stamp(), pid=self._pid,
                                       host=self._host, reset=True))

    def _write(self, state: SchedulerState) -> SchedulerState:
        self._state = state
        file_error: StateSaveError | None = None
        try:
            self._write_file(state)
        except StateSaveError as exc:
            file_error = exc
        mirrored, store_error = False, None
        if self.store is not None:
            try:
                self.store.save_state(state.to_json())
                mirrored = True
            except Exception as exc:  # any backend failure: logged and shown, the file stands
                store_error = f"store copy not updated: {type(exc).__name__}: {exc}"
                _log().warning("state_store_save_failed", problem=store_error)
        fields = {"running": state.running, "mode": str(state.mode), "reset": state.reset}
        if file_error is None:
            self.saved, self.error = True, store_error
            _log().info("state saved", **fields)
            return state
        error = StateSaveError(file_error.path, file_error.reason, state=state,
                               mirrored_to_store=mirrored if self.store is not None else None)
        self.saved, self.error = False, str(error)
        _log().error("state not saved; the change holds in memory only", error=str(error), **fields)
        raise error from file_error

    def _write_file(self, state: SchedulerState) -> None:
        if state.reset:
            self.file.clear()
        else:
            self.file.save(state)

    def _stamp(self) -> datetime:
        # After every stamp this process made or took in (a clock ahead of ours included), so
        # "newer wins" orders its saves within a clock tick, after the clock stepped back, and
        # after a change another instance stamped.
        now = as_utc(self._clock())
        floor = max((t for t in (self._last_stamp, self._state.updated_at) if t is not None), default=None)
        if floor is not None and now <= floor:
            now = floor + timedelta(microseconds=1)
        self._last_stamp = now
        return now

    # ---- other instances ---------------------------------------------------------------------
    def refresh(self) -> SchedulerState | None:
        """Apply a store row newer than the state held (another instance's change) to memory and
        the file, never back to the store. The new state when `running` or `mode` changed, else
        None. A row that cannot be read changes nothing (a warning a minute, debug otherwise)."""
        if self.store is None:
            return None
        try:
            raw = self.store.load_state()
            record = SchedulerState.from_json(raw) if raw is not None else None
        except Exception as exc:  # noqa: BLE001 - the collector goes on with what it holds
            self._unreadable(exc)
            return None
        with self._lock:
            before = self._state
            if record is None or not record.newer_than(before):
                return None
            self._state = new = self._resolve(record)
            try:
                self._write_file(new)
            except StateSaveError as exc:
                self.saved, self.error = False, str(exc)
                _log().error("state not saved; the change holds in memory only", error=str(exc))
        if (new.running, new.mode) == (before.running, before.mode):
            return None
        _log().info("desired state changed by another instance", host=new.host, pid=new.pid,
                    updated_at=new.updated_at.isoformat() if new.updated_at else None, running=new.running,
                    mode=str(new.mode), was_running=before.running, was_mode=str(before.mode), reset=new.reset)
        return new

    def _unreadable(self, exc: BaseException) -> None:
        now, error = self._clock(), f"{type(exc).__name__}: {exc}"
        if self._warned_at is not None and (now - self._warned_at).total_seconds() < UNREADABLE_WARN_EVERY:
            _log().debug("store state record unreadable", error=error)
            return
        self._warned_at = now
        _log().warning("store state record unreadable; changes made by other instances are not followed "
                       "until it can be read", error=error, next_warning_in=UNREADABLE_WARN_EVERY)
