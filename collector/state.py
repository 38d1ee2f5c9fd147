"""The scheduler's desired state ({running, mode, ...}) and where it survives restarts.

- `StateFile`: one small JSON file, read defensively and written atomically. A bad file never
  crashes a boot: it is moved aside for inspection and the defaults are used. A symlink at the
  path counts as invalid (moved aside, never followed): the collector never reads or writes the
  state through a link to some other file; point SCHEDULER_STATE_FILE at the real file instead.
- `StateKeeper`: the file plus an optional mirror in the store (the only copy that survives a
  Render redeploy, which wipes the filesystem). At load the newer `updated_at` wins. It remembers
  the newest `updated_at` this process saved, loaded or adopted (`seen_at`), so a running process
  can tell a change made by another instance (`newer_in_store`) from its own saves, and take it
  into its file without writing the store back (`adopt`).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import structlog

from collector.config import InvalidMode, Mode, Settings, parse_mode
from collector.store.base import Store

__all__ = [
    "InvalidState",
    "LoadResult",
    "SchedulerState",
    "StateFile",
    "StateKeeper",
    "StateSaveError",
    "StoreRecord",
    "defaults_from_settings",
]

DEFAULT_MAX_BYTES = 64 * 1024
# Key of the store record written by StateKeeper.clear(): "no desired state saved".
RESET_KEY = "reset"

Source = Literal["file", "store", "defaults"]


def _log() -> Any:
    # Looked up per call so tests' structlog.testing.capture_logs() and later reconfigurations apply.
    return structlog.get_logger(__name__)


class InvalidState(ValueError):
    """A state record (file content or store row) that is not a valid state."""


class StateSaveError(RuntimeError):
    """The state could not be written. `str(exc)` is a message fit for the page (path + reason)."""

    def __init__(
        self,
        path: Path,
        reason: str,
        *,
        state: SchedulerState | None = None,
        mirrored_to_store: bool | None = None,
    ) -> None:
        self.path = path
        self.reason = reason
        self.state = state
        self.mirrored_to_store = mirrored_to_store
        message = f"state not saved to {path}: {reason}"
        if mirrored_to_store is True:
            message += " (the store copy was updated)"
        elif mirrored_to_store is False:
            message += " (the store copy could not be updated either)"
        super().__init__(message)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _parse_updated_at(value: object) -> datetime | None:
    """Lenient: metadata only. A missing or unreadable timestamp means "age unknown" (oldest)."""
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, str):
        try:
            return _utc(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class SchedulerState:
    """The desired state of the collector and who wrote it when."""

    running: bool
    mode: Mode
    updated_at: datetime | None = None
    pid: int | None = None
    host: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the file and mirrored in the store."""
        return {
            "running": self.running,
            "mode": self.mode.value,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "pid": self.pid,
            "host": self.host,
        }

    @classmethod
    def from_json(cls, data: object) -> SchedulerState:
        """Validate a parsed JSON object; raise InvalidState with a clear reason.

        Strict on what matters (`running` a JSON bool, `mode` exactly "MASSIVE"/"MAINTENANCE");
        lenient on metadata (`updated_at`, `pid`, `host` of the wrong type read as unknown);
        other keys are ignored.
        """
        if not isinstance(data, Mapping):
            raise InvalidState(f"expected a JSON object, got {_json_type(data)}")
        if "running" not in data:
            raise InvalidState("missing key 'running'")
        running = data["running"]
        if not isinstance(running, bool):
            raise InvalidState(f"'running' must be true or false, got {_short(running)}")
        if "mode" not in data:
            raise InvalidState("missing key 'mode'")
        raw_mode = data["mode"]
        if not isinstance(raw_mode, str):
            raise InvalidState(f"'mode' must be a string, got {_short(raw_mode)}")
        try:
            mode = parse_mode(raw_mode)
        except InvalidMode as exc:
            raise InvalidState(f"'mode': {exc}") from None
        pid = data.get("pid")
        host = data.get("host")
        return cls(
            running=running,
            mode=mode,
            updated_at=_parse_updated_at(data.get("updated_at")),
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            host=host if isinstance(host, str) else None,
        )


def _json_type(value: object) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def defaults_from_settings(settings: Settings) -> SchedulerState:
    """The state used when none was saved: ENABLE_SCHEDULER and SIPHONNAGE_MODE."""
    return SchedulerState(running=settings.enable_scheduler, mode=settings.default_mode)


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """The store's state record as another instance left it. A reset record (`reset`) carries
    this process's defaults as `running`/`mode`: a reset means "the environment defaults"."""

    state: SchedulerState
    reset: bool = False


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What load() found. `problem` explains a fallback to the defaults; `moved_to` is where
    a bad file was put aside; `store_problem` says the store copy could not be used."""

    state: SchedulerState
    source: Source
    problem: str | None = None
    moved_to: Path | None = None
    store_problem: str | None = None


@dataclass(frozen=True, slots=True)
class _Read:
    """The outcome of reading the path once."""

    state: SchedulerState | None = None
    problem: str | None = None
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) of what was examined
    missing: bool = False
    changed: bool = False  # the path changed while we looked at it: read again


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _reason(exc: OSError) -> str:
    """"Read-only file system [EROFS]": the OS reason without the path (the caller names it)."""
    if exc.strerror and exc.errno is not None:
        return f"{exc.strerror} [{errno.errorcode.get(exc.errno, exc.errno)}]"
    return str(exc)


class StateFile:
    """The state JSON file: defensive load, atomic save (0600), clear."""

    def __init__(self, path: Path, defaults: SchedulerState, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.defaults = defaults
        self.max_bytes = max_bytes
        # Serialises this process's mutations (save, clear, moving a bad file aside); readers
        # never take it: they rely on os.replace being atomic.
        self._lock = threading.Lock()

    # ---- load --------------------------------------------------------------------------------
    def load(self) -> LoadResult:
        """The saved state, or the defaults (missing file; or a bad one, moved aside and logged)."""
        for _ in range(5):
            read = self._read()
            if read.changed:
                continue
            if read.missing:
                return LoadResult(self.defaults, "defaults")
            if read.state is not None:
                return LoadResult(read.state, "file")
            assert read.problem is not None
            problem = f"state file {self.path} {read.problem}"
            moved_to, move_problem, changed = self._move_aside(read.identity)
            if changed:
                continue
            _log().warning(
                "state_file_invalid",
                path=str(self.path),
                problem=problem,
                moved_to=str(moved_to) if moved_to else None,
                move_problem=move_problem,
                using="defaults",
            )
            return LoadResult(self.defaults, "defaults", problem, moved_to)
        problem = f"state file {self.path} kept changing while being read"
        _log().warning("state_file_invalid", path=str(self.path), problem=problem, moved_to=None, using="defaults")
        return LoadResult(self.defaults, "defaults", problem, None)

    def _read(self) -> _Read:
        try:
            before = os.lstat(self.path)
        except FileNotFoundError:
            return _Read(missing=True)
        except OSError as exc:
            return _Read(problem=f"cannot examine the path: {_reason(exc)}")
        identity = _identity(before)
        if stat.S_ISLNK(before.st_mode):
            return _Read(problem="is a symbolic link (refused: the state file must be a regular file)", identity=identity)
        if stat.S_ISDIR(before.st_mode):
            return _Read(problem="is a directory, not a file", identity=identity)
        if not stat.S_ISREG(before.st_mode):
            return _Read(problem="is not a regular file", identity=identity)
        if before.st_size > self.max_bytes:
            return _Read(problem=f"is {before.st_size} bytes, over the {self.max_bytes}-byte limit", identity=identity)
        try:
            # O_NOFOLLOW: never read through a link swapped in after lstat; O_NONBLOCK: a FIFO
            # swapped in cannot hang the boot.
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return _Read(changed=True)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return _Read(changed=True)
            return _Read(problem=f"cannot be read: {_reason(exc)}", identity=identity)
        try:
            if _identity(os.fstat(fd)) != identity:
                return _Read(changed=True)
            data = self._read_capped(fd)
        except OSError as exc:
            return _Read(problem=f"cannot be read: {_reason(exc)}", identity=identity)
        finally:
            os.close(fd)
        if len(data) > self.max_bytes:
            return _Read(problem=f"is over the {self.max_bytes}-byte limit", identity=identity)
        return self._parse(data, identity)

    def _read_capped(self, fd: int) -> bytes:
        chunks: list[bytes] = []
        remaining = self.max_bytes + 1  # one byte more tells "too big" without reading it all
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _parse(self, data: bytes, identity: tuple[int, int]) -> _Read:
        if not data.strip():
            return _Read(problem="is empty", identity=identity)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return _Read(problem=f"is not UTF-8 text (byte {exc.start})", identity=identity)
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            return _Read(problem=f"is not valid JSON: {exc}", identity=identity)
        except RecursionError:
            return _Read(problem="is not valid JSON: nested too deeply", identity=identity)
        try:
            return _Read(state=SchedulerState.from_json(parsed), identity=identity)
        except InvalidState as exc:
            return _Read(problem=f"is not a valid state: {exc}", identity=identity)

    def _move_aside(self, identity: tuple[int, int] | None) -> tuple[Path | None, str | None, bool]:
        """Rename the bad entry to `<name>.bad-<UTC>-<pid>`: (moved_to, problem, path_changed)."""
        with self._lock:
            try:
                current = os.lstat(self.path)
            except FileNotFoundError:
                return None, None, True
            except OSError as exc:
                return None, f"cannot move it aside: {_reason(exc)}", False
            if identity is None:
                return None, "cannot move it aside: the path cannot be examined", False
            if _identity(current) != identity:
                return None, None, True  # replaced (by a save?) since we read it: look again
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            base = f"{self.path.name}.bad-{stamp}-{os.getpid()}"
            target = self.path.with_name(base)
            n = 1
            while os.path.lexists(target):
                target = self.path.with_name(f"{base}-{n}")
                n += 1
            try:
                os.rename(self.path, target)
            except OSError as exc:
                return None, f"cannot move it aside: {_reason(exc)}", False
            return target, None, False

    # ---- save / clear --------------------------------------------------------------------------
    def save(self, state: SchedulerState) -> None:
        """Write atomically (temp file in the same folder, fsync, 0600, rename, fsync the folder).

        Raises StateSaveError; the previous file is then untouched and no temp file is left.
        A symlink at the path is replaced by the new file (its target is never written).
        """
        payload = (json.dumps(state.to_json(), indent=2) + "\n").encode("utf-8")
        with self._lock:
            folder = self.path.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateSaveError(self.path, f"cannot create the folder {folder}: {_reason(exc)}") from exc
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
            except OSError as exc:
                raise StateSaveError(self.path, f"cannot create a file in {folder}: {_reason(exc)}") from exc
            try:
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fchmod(fd, 0o600)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
            except OSError as exc:
                _remove_quietly(tmp)
                raise StateSaveError(self.path, _reason(exc)) from exc
            except BaseException:
                _remove_quietly(tmp)
                raise
            self._fsync_folder(folder)

    def _fsync_folder(self, folder: Path) -> None:
        # The rename is done and visible; a failing directory fsync only weakens durability
        # across a power cut, so it is logged, not raised.
        try:
            dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            _log().warning("state_dir_fsync_failed", path=str(folder), problem=_reason(exc))

    def save_problem(self) -> str | None:
        """Why a save would fail now, or None. Probes where save() writes (a temp file created
        and removed at once; nothing else changes), for status readers that save nothing."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            return f"cannot examine the path: {_reason(exc)}"
        if st is not None and stat.S_ISDIR(st.st_mode):
            return "Is a directory [EISDIR]"
        folder = self.path.parent
        while not os.path.lexists(folder) and folder != folder.parent:
            folder = folder.parent  # save() creates the missing folders below this one
        if not folder.is_dir():
            return f"cannot create the folder {self.path.parent}: {folder} is not a directory"
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".probe", dir=folder)
        except OSError as exc:
            return f"cannot create a file in {folder}: {_reason(exc)}"
        os.close(fd)
        _remove_quietly(tmp)
        return None

    def clear(self) -> None:
        """Remove the file (a missing file is fine); raise StateSaveError if it cannot be removed."""
        with self._lock:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise StateSaveError(self.path, f"cannot remove it: {_reason(exc)}") from exc


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class StateKeeper:
    """The state file plus its mirror in the store; every save goes to both.

    `last_store_error` is None after a successful mirror (or without a store), else the reason the
    store copy is stale: on Render the store copy is the only one surviving a redeploy.
    """

    def __init__(
        self,
        file: StateFile,
        store: Store | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        pid: int | None = None,
        host: str | None = None,
    ) -> None:
        self.file = file
        self.store = store
        self._clock = clock
        self._pid = pid if pid is not None else os.getpid()
        self._host = host if host is not None else socket.gethostname()
        self._lock = threading.Lock()
        self._last_stamp: datetime | None = None
        self._seen_at: datetime | None = None
        self.last_store_error: str | None = None
        # The result of the last load() (at boot: where the state in effect came from).
        self.last_load: LoadResult | None = None

    @property
    def defaults(self) -> SchedulerState:
        return self.file.defaults

    @property
    def seen_at(self) -> datetime | None:
        """The newest `updated_at` this process saved, loaded (file or store) or adopted."""
        return self._seen_at

    def _see(self, moment: datetime | None) -> None:
        if moment is not None and (self._seen_at is None or moment > self._seen_at):
            self._seen_at = moment

    def load(self) -> LoadResult:
        """The newer of the file and the store record (by `updated_at`; a tie goes to the file).

        A missing or bad file with a store record uses the store record. A store that cannot
        be reached, or holds an invalid record, is logged and the file result is used (with
        `store_problem` saying why). The result is also kept in `last_load`.
        """
        result = self._load()
        self.last_load = result
        return result

    def _load(self) -> LoadResult:
        from_file = self.file.load()
        self._see(from_file.state.updated_at)
        if self.store is None:
            return from_file
        try:
            raw = self.store.load_state()
        except Exception as exc:  # any backend failure: the file is the fallback
            problem = f"store unreachable: {type(exc).__name__}: {exc}"
            _log().warning("state_store_unreachable", problem=problem, using=from_file.source)
            return replace(from_file, store_problem=problem)
        if isinstance(raw, Mapping):
            self._see(_parse_updated_at(raw.get("updated_at")))
        if raw is None or (isinstance(raw, Mapping) and raw.get(RESET_KEY) is True):
            return from_file
        try:
            stored = SchedulerState.from_json(raw)
        except InvalidState as exc:
            problem = f"store record invalid: {exc}"
            _log().warning("state_store_invalid", problem=problem, using=from_file.source)
            return replace(from_file, store_problem=problem)
        if from_file.source == "file" and not _newer(stored, from_file.state):
            return from_file
        return LoadResult(stored, "store", from_file.problem, from_file.moved_to)

    def save(self, running: bool, mode: Mode) -> SchedulerState:
        """Stamp and save the desired state to the file, then mirror it to the store.

        Returns the saved state. A store failure is logged and kept in `last_store_error`
        (the file write stands). A file failure raises StateSaveError (after the store mirror
        was still tried; see its `mirrored_to_store`).
        """
        if not isinstance(running, bool):
            raise TypeError(f"running must be a bool, got {_short(running)}")
        mode = parse_mode(mode)
        with self._lock:
            state = SchedulerState(running, mode, self._stamp(), self._pid, self._host)
            self._see(state.updated_at)
            file_error: StateSaveError | None = None
            try:
                self.file.save(state)
            except StateSaveError as exc:
                file_error = exc
                _log().error("state_file_save_failed", path=str(self.file.path), problem=exc.reason)
            mirrored = self._mirror(state.to_json())
            if file_error is not None:
                raise StateSaveError(
                    file_error.path,
                    file_error.reason,
                    state=state,
                    mirrored_to_store=mirrored if self.store is not None else None,
                ) from file_error
            return state

    def clear(self) -> None:
        """Back to the environment defaults: remove the file and mark the store copy as reset,
        so the next boot uses ENABLE_SCHEDULER / SIPHONNAGE_MODE as they are then.

        The store has no delete, so a tombstone row `{"reset": true, ...}` is written (it also
        carries the current defaults, so a backend that drops unknown keys still means
        "defaults"). Raises StateSaveError if the file cannot be removed.
        """
        with self._lock:
            stamp = self._stamp()
            self._see(stamp)
            tombstone = replace(self.defaults, updated_at=stamp, pid=self._pid, host=self._host).to_json()
            tombstone[RESET_KEY] = True
            file_error: StateSaveError | None = None
            try:
                self.file.clear()
            except StateSaveError as exc:
                file_error = exc
            self._mirror(tombstone)
            if file_error is not None:
                raise file_error

    def newer_in_store(self) -> StoreRecord | None:
        """The store's record when it is newer than `seen_at` (written by another instance
        since this process last saved or read the state); None otherwise or without a store.
        One single-row read. Raises what the store raises, InvalidState on a bad record."""
        if self.store is None:
            return None
        raw = self.store.load_state()
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise InvalidState(f"store record: expected a JSON object, got {_json_type(raw)}")
        updated_at = _parse_updated_at(raw.get("updated_at"))
        if updated_at is None or (self._seen_at is not None and updated_at <= self._seen_at):
            return None
        if raw.get(RESET_KEY) is True:
            pid, host = raw.get("pid"), raw.get("host")
            state = replace(
                self.defaults,
                updated_at=updated_at,
                pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                host=host if isinstance(host, str) else None,
            )
            return StoreRecord(state, reset=True)
        return StoreRecord(SchedulerState.from_json(raw))

    def adopt(self, record: StoreRecord) -> bool:
        """Take another instance's record into the file (a reset record removes the file), the
        store untouched. False, doing nothing, when it is no longer newer than `seen_at` (this
        process saved since it was read). StateSaveError when the file cannot be written; the
        record then counts as seen all the same."""
        with self._lock:
            updated_at = record.state.updated_at
            if updated_at is None or (self._seen_at is not None and updated_at <= self._seen_at):
                return False
            self._see(updated_at)
            if record.reset:
                self.file.clear()
            else:
                self.file.save(record.state)
            return True

    def _mirror(self, record: dict[str, Any]) -> bool:
        if self.store is None:
            self.last_store_error = None
            return False
        try:
            self.store.save_state(record)
        except Exception as exc:  # any backend failure: logged and reported, the file stands
            self.last_store_error = f"store copy not updated: {type(exc).__name__}: {exc}"
            _log().warning("state_store_save_failed", problem=self.last_store_error)
            return False
        self.last_store_error = None
        return True

    def _stamp(self) -> datetime:
        # Strictly increasing, so "newer wins" orders this process's saves even within a clock tick
        # or after the wall clock stepped back.
        now = _utc(self._clock())
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now


def _newer(candidate: SchedulerState, current: SchedulerState) -> bool:
    if candidate.updated_at is None:
        return False
    return current.updated_at is None or candidate.updated_at > current.updated_at
