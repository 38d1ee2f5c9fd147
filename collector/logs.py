"""structlog setup + the in-memory ring buffer the dashboard reads.

Everything goes through the stdlib `logging` root handler with structlog's `ProcessorFormatter`,
so structlog events and foreign records (httpx, uvicorn, streamlit, ...) share one chain:

    [structlog: contextvars, level filter, logger name, level, ISO UTC time, exception text]
    [stdlib records: contextvars, logger name, level, ISO UTC time, `extra` fields]
      -> exception text -> SecretMasker -> LogBuffer -> JSONRenderer | ConsoleRenderer

Only two processors are ours: `SecretMasker` (secret values and secret-looking keys -> "***",
values made JSON-safe) and `LogBuffer` (the last N records as plain dicts). They run after the
exception is rendered to text, so tracebacks are masked too, and before rendering. structlog
events are also masked before they become a LogRecord, so no other handler sees a raw secret;
a foreign (stdlib) record is masked in our handler only (other handlers on the root logger, which
production does not add, format it themselves).
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from enum import Enum
from os import PathLike
from typing import IO, Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from collector.config import MASK, SecretMask, Settings

__all__ = [
    "BUFFER_CAPACITY",
    "MASK",
    "LogBuffer",
    "SecretMasker",
    "configure_logging",
    "get_log_buffer",
    "reset_logging",
]

BUFFER_CAPACITY = 1000
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Libraries whose INFO records carry request URLs (query strings may hold credentials), and
# libarchive-c, which says at import that the system library cannot rewrite entry digests.
QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "urllib3", "libarchive")
_SENSITIVE_PARTS = ("token", "secret", "passw", "authorization", "apikey", "api_key", "cookie", "credential")
# Counts whose names contain a sensitive word but hold no secret.
_NOT_SENSITIVE = frozenset({"event", "level", "timestamp", "logger", "exception", "stack_info", "token_requests"})
_MAX_DEPTH = 8


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.strip().lower()
    name = {"warn": "warning", "exception": "error", "fatal": "critical"}.get(name, name)
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: expected one of {', '.join(LEVELS)}")
    return LEVELS[name]


def is_sensitive_key(key: str) -> bool:
    """token / secret / password / authorization / api key / ...key: its value is masked."""
    lowered = key.lower()
    if lowered in _NOT_SENSITIVE:
        return False
    return any(part in lowered for part in _SENSITIVE_PARTS) or lowered.endswith("key")


class SecretMasker:
    """Processor: replaces every secret value (and its URL-encoded forms) anywhere in the event
    with "***", masks the value of any secret-looking key, and makes every value JSON-safe."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.mask_text = SecretMask(secrets)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        return {str(k): self._field(str(k), v) for k, v in event_dict.items()}

    def _field(self, key: str, value: Any, depth: int = 0) -> Any:
        if value is not None and not isinstance(value, bool) and is_sensitive_key(key):
            return MASK
        return self._value(value, depth)

    def _value(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self.mask_text(value)
        if depth >= _MAX_DEPTH:
            return self.mask_text(_text(value))
        if isinstance(value, Mapping):
            return {str(k): self._field(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset, collections.deque)):
            return [self._value(v, depth + 1) for v in value]
        return self.mask_text(_text(value))


def _text(value: Any) -> str:
    """A readable string for a non-JSON value (exception, date, path, enum, object)."""
    try:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value).decode("utf-8", "replace")
        if isinstance(value, BaseException):
            return f"{type(value).__name__}: {value}"
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        if isinstance(value, Enum):
            return str(value.value)
        if isinstance(value, PathLike):
            return str(value)
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the record
        return f"<unprintable {type(value).__name__}>"


class LogBuffer:
    """Processor and thread-safe ring buffer of the last `capacity` records (masked, JSON-safe)."""

    def __init__(self, capacity: int = BUFFER_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        record = dict(event_dict)
        record.setdefault("level", "info")
        record.setdefault("timestamp", None)
        with self._lock:
            self._records.append(record)
        return event_dict

    def records(self, limit: int | None = 200, min_level: str | int | None = None) -> list[dict[str, Any]]:
        """Newest first; at most `limit` records at `min_level` or above ("warning", 30, ...)."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        threshold = _level_number(min_level) if min_level is not None else None
        with self._lock:
            snapshot = list(self._records)
        out: list[dict[str, Any]] = []
        for record in reversed(snapshot):
            if limit is not None and len(out) >= limit:
                break
            if threshold is not None and LEVELS.get(str(record.get("level")), logging.INFO) < threshold:
                continue
            out.append(dict(record))
        return out

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at emit time (survives pytest/streamlit swapping it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


_BUFFER = LogBuffer(BUFFER_CAPACITY)
_LOCK = threading.Lock()
_HANDLER_MARK = "_legifrance_collector_handler"


def get_log_buffer() -> LogBuffer:
    """The process-wide ring buffer (the same object configure_logging returns)."""
    return _BUFFER


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> LogBuffer:
    """Set up structlog and stdlib logging for the process; idempotent and thread-safe.

    Calling again replaces the previous setup (one handler, the same buffer). `stream` defaults
    to the current sys.stderr; the renderer is JSON or console per settings.log_format, else
    console on a TTY and JSON otherwise.
    """
    level = _level_number(settings.log_level)
    target = stream if stream is not None else sys.stderr
    fmt = settings.log_format or ("console" if _isatty(target) else "json")
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=_isatty(target))
        if fmt == "console"
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    masker = SecretMasker(settings.secrets())
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            timestamper,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            masker,
            _BUFFER,
            renderer,
        ],
    )
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    with _LOCK:
        root = logging.getLogger()
        for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
            root.removeHandler(old)
        root.addHandler(handler)
        root.setLevel(level)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.filter_by_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.stdlib.PositionalArgumentsFormatter(),
                timestamper,
                structlog.processors.StackInfoRenderer(),
                structlog.processors.format_exc_info,
                # Masked before the event becomes a LogRecord: other root handlers (pytest's
                # capture, a library's) only ever see masked values.
                masker,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            # Not cached: a later configure_logging (or a test's capture_logs) applies everywhere.
            cache_logger_on_first_use=False,
        )
    return _BUFFER


def reset_logging() -> None:
    """Undo configure_logging (for tests): remove our handler, restore structlog's defaults."""
    with _LOCK:
        root = logging.getLogger()
        for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
            root.removeHandler(old)
        root.setLevel(logging.WARNING)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        structlog.reset_defaults()


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
