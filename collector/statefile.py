"""The desired-state record and its file.

`SchedulerState` is the record ({running, mode} and who wrote it when). `StateFile` keeps it in
one small JSON file, written atomically (temp file in the same folder, fsync, 0600, os.replace)
and read defensively: a bad entry never crashes a boot; it is moved aside as
`<name>.bad-<UTC>-<pid>` and the defaults are used. A symlink at the path is refused (moved
aside, never followed; a save replaces the link, never writes through it): point
SCHEDULER_STATE_FILE at the real file instead.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from collector.clock import as_utc, utcnow
from collector.config import InvalidMode, Mode, Settings, parse_mode

DEFAULT_MAX_BYTES = 64 * 1024

Source = Literal["file", "store", "defaults"]


def _log() -> Any:
    # Looked up per call so tests' structlog.testing.capture_logs() and later reconfigurations apply.
    return structlog.get_logger(__name__)


class InvalidState(ValueError):
    """A state record (file content or store row) that is not a valid state."""


class StateSaveError(RuntimeError):
    """The state could not be written. `str(exc)` is a message fit for the page (path + reason)."""

    def __init__(self, path: Path, reason: str, *, state: SchedulerState | None = None,
                 mirrored_to_store: bool | None = None) -> None:
        self.path, self.reason, self.state, self.mirrored_to_store = path, reason, state, mirrored_to_store
        message = f"state not saved to {path}: {reason}"
        if mirrored_to_store is not None:
            message += " (the store copy was updated)" if mirrored_to_store else \
                " (the store copy could not be updated either)"
        super().__init__(message)


def _parse_updated_at(value: object) -> datetime | None:
    """Lenient: metadata only. A missing or unreadable timestamp means "age unknown" (oldest)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return as_utc(value) if isinstance(value, datetime) else None


@dataclass(frozen=True, slots=True)
class SchedulerState:
    """The desired state of the collector and who wrote it when (`reset`: a Reset's row)."""

    running: bool
    mode: Mode
    updated_at: datetime | None = None
    pid: int | None = None
    host: str | None = None
    reset: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the file and in the store row."""
        data: dict[str, Any] = {
            "running": self.running,
            "mode": self.mode.value,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "pid": self.pid,
            "host": self.host,
        }
        if self.reset:
            data["reset"] = True
        return data

    @classmethod
    def from_json(cls, data: object) -> SchedulerState:
        """Validate a parsed JSON object; raise InvalidState with a clear reason.

        Strict on what matters (`running` a JSON bool, `mode` exactly "MASSIVE"/"MAINTENANCE");
        lenient on metadata (`updated_at`, `pid`, `host` of the wrong type read as unknown);
        other keys are ignored.
        """
        if not isinstance(data, Mapping):
            raise InvalidState(f"expected a JSON object, got {_json_type(data)}")
        for key in ("running", "mode"):
            if key not in data:
                raise InvalidState(f"missing key {key!r}")
        running, raw_mode = data["running"], data["mode"]
        if not isinstance(running, bool):
            raise InvalidState(f"'running' must be true or false, got {short(running)}")
        if not isinstance(raw_mode, str):
            raise InvalidState(f"'mode' must be a string, got {short(raw_mode)}")
        try:
            mode = parse_mode(raw_mode)
        except InvalidMode as exc:
            raise InvalidState(f"'mode': {exc}") from None
        pid, host = data.get("pid"), data.get("host")
        return cls(
            running=running,
            mode=mode,
            updated_at=_parse_updated_at(data.get("updated_at")),
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            host=host if isinstance(host, str) else None,
            reset=data.get("reset") is True,
        )

    def newer_than(self, other: SchedulerState) -> bool:
        """Written after `other` (a state without a timestamp is the oldest)."""
        if self.updated_at is None:
            return False
        return other.updated_at is None or self.updated_at > other.updated_at


def _json_type(value: object) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, (int, float)) else type(value).__name__


def short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def defaults_from_settings(settings: Settings) -> SchedulerState:
    """The state used when none was saved: ENABLE_SCHEDULER and SIPHONNAGE_MODE."""
    return SchedulerState(running=settings.enable_scheduler, mode=settings.default_mode)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load found. `problem` explains a fallback to the defaults; `moved_to` is where
    a bad file was put aside; `store_problem` says the store copy could not be used."""

    state: SchedulerState
    source: Source
    problem: str | None = None
    moved_to: Path | None = None
    store_problem: str | None = None


def _reason(exc: OSError) -> str:
    """"Read-only file system [EROFS]": the OS reason without the path (the caller names it)."""
    if exc.strerror and exc.errno is not None:
        return f"{exc.strerror} [{errno.errorcode.get(exc.errno, exc.errno)}]"
    return str(exc)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class StateFile:
    """The state JSON file: defensive load, atomic save (0600), clear."""

    def __init__(self, path: Path, defaults: SchedulerState, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.defaults = defaults
        self.max_bytes = max_bytes
        # Serialises this process's writes (save, clear, move aside); readers rely on os.replace.
        self._lock = threading.Lock()

    def load(self) -> LoadResult:
        """The saved state, or the defaults (missing file; or a bad one, moved aside and logged)."""
        state, problem = self._read()
        if state is not None:
            return LoadResult(state, "file")
        if problem is None:
            return LoadResult(self.defaults, "defaults")
        problem = f"state file {self.path} {problem}"
        moved_to, move_problem = self._move_aside()
        _log().warning("state_file_invalid", path=str(self.path), problem=problem,
                       moved_to=str(moved_to) if moved_to else None, move_problem=move_problem, using="defaults")
        return LoadResult(self.defaults, "defaults", problem, moved_to)

    def _read(self) -> tuple[SchedulerState | None, str | None]:
        """(state, None); (None, what is wrong with the entry); (None, None) when there is none."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"cannot examine the path: {_reason(exc)}"
        if stat.S_ISLNK(st.st_mode):
            return None, "is a symbolic link (refused: the state file must be a regular file)"
        if stat.S_ISDIR(st.st_mode):
            return None, "is a directory, not a file"
        if not stat.S_ISREG(st.st_mode):
            return None, "is not a regular file"
        if st.st_size > self.max_bytes:
            return None, f"is {st.st_size} bytes, over the {self.max_bytes}-byte limit"
        try:
            # O_NOFOLLOW: a link swapped in since lstat is not followed (ELOOP); O_NONBLOCK: a
            # FIFO swapped in cannot hang the boot.
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                data = f.read(self.max_bytes + 1)  # one byte more tells "too big"
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"cannot be read: {_reason(exc)}"
        if len(data) > self.max_bytes:
            return None, f"is over the {self.max_bytes}-byte limit"
        if not data.strip():
            return None, "is empty"
        try:
            parsed = json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            return None, f"is not UTF-8 text (byte {exc.start})"
        except json.JSONDecodeError as exc:
            return None, f"is not valid JSON: {exc}"
        except RecursionError:
            return None, "is not valid JSON: nested too deeply"
        try:
            return SchedulerState.from_json(parsed), None
        except InvalidState as exc:
            return None, f"is not a valid state: {exc}"

    def _move_aside(self) -> tuple[Path | None, str | None]:
        """Rename the bad entry to `<name>.bad-<UTC>-<pid>`: (moved_to, why it could not be)."""
        with self._lock:
            base = f"{self.path.name}.bad-{utcnow():%Y%m%dT%H%M%S.%fZ}-{os.getpid()}"
            target, n = self.path.with_name(base), 0
            while os.path.lexists(target):
                n += 1
                target = self.path.with_name(f"{base}-{n}")
            try:
                os.rename(self.path, target)
            except OSError as exc:
                return None, f"cannot move it aside: {_reason(exc)}"
            return target, None

    def save(self, state: SchedulerState) -> None:
        """Write atomically (temp file in the same folder, fsync, 0600, rename, fsync the folder).

        Raises StateSaveError; the previous file is then untouched and no temp file is left.
        A symlink at the path is replaced by the new file (its target is never written).
        """
        payload = (json.dumps(state.to_json(), indent=2) + "\n").encode("utf-8")
        folder = self.path.parent
        with self._lock:
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
            except BaseException as exc:
                _remove_quietly(tmp)
                if isinstance(exc, OSError):
                    raise StateSaveError(self.path, _reason(exc)) from exc
                raise
            try:  # the rename is visible; a failing folder fsync only weakens it across a power cut
                dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError as exc:
                _log().warning("state_dir_fsync_failed", path=str(folder), problem=_reason(exc))

    def save_problem(self) -> str | None:
        """Why a save would fail now, or None: a temp file created and removed where save()
        writes, nothing else changed (for readers such as `status`, which save nothing)."""
        try:
            if stat.S_ISDIR(os.lstat(self.path).st_mode):
                return "Is a directory [EISDIR]"
        except FileNotFoundError:
            pass
        except OSError as exc:
            return f"cannot examine the path: {_reason(exc)}"
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
                pass
            except OSError as exc:
                raise StateSaveError(self.path, f"cannot remove it: {_reason(exc)}") from exc
