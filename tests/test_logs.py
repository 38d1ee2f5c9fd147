"""configure_logging: masking, rendering, level filter, stdlib routing and the ring buffer.

Every record goes through the real structlog + logging chain into a StringIO, and the buffer is
the process-wide one the dashboard reads.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from collector.config import Mode, Settings
from collector.logs import (
    BUFFER_CAPACITY,
    MASK,
    LogBuffer,
    configure_logging,
    get_log_buffer,
    reset_logging,
)
from collector.state import SchedulerState, StateFile

SECRETS = {
    "client_secret": "cl1ent-S3cret/with+special&chars",
    "supabase_key": "eyJhbGciOiJIUzI1NiJ9.service-role.sig",
    "dashboard_password": "hunter2-dashboard",
    "api_token": "api-T0ken-7f3a9",
}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"client_id": "public-client-id", "log_format": "json", **SECRETS}
    values.update(overrides)
    return Settings(**values)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    get_log_buffer().clear()
    yield stream
    reset_logging()
    get_log_buffer().clear()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def assert_no_secret(text: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} leaked"
        assert value[:12] not in text, f"part of {name} leaked"


# ---- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secret_values_never_reach_the_output_or_the_buffer(out: io.StringIO, fmt: str) -> None:
    buffer = configure_logging(make_settings(log_format=fmt), stream=out)
    log = structlog.get_logger("collector.test")
    secret, key = SECRETS["client_secret"], SECRETS["supabase_key"]

    log.info(f"token request with {secret}", body={"grant": [f"x {key} y", (secret,)]}, raw=secret.encode())
    log.warning("url", url=f"https://h/?client_secret={httpx.QueryParams({'s': secret})}")
    try:
        raise RuntimeError(f"auth failed for {SECRETS['dashboard_password']}")
    except RuntimeError as exc:
        log.exception("failure", error=exc)
    try:
        raise ValueError(SECRETS["api_token"])
    except ValueError:
        logging.getLogger("some.library").exception("stdlib %s", key, extra={"detail": secret})

    rendered = out.getvalue()
    records = buffer.records(limit=None)
    assert len(records) == 4
    assert_no_secret(rendered)
    assert_no_secret(json.dumps(records))
    assert rendered.count(MASK) >= 6
    by_event = {r["event"]: r for r in records}
    assert by_event["token request with ***"]["body"] == {"grant": ["x *** y", ["***"]]}
    assert by_event["failure"]["error"] == "RuntimeError: auth failed for ***"
    assert "RuntimeError: auth failed for ***" in by_event["failure"]["exception"]
    assert "ValueError: ***" in by_event["stdlib ***"]["exception"]
    assert by_event["stdlib ***"]["detail"] == "***"


def test_secret_looking_keys_are_masked_at_any_depth(out: io.StringIO) -> None:
    buffer = configure_logging(make_settings(), stream=out)
    structlog.get_logger("t").info(
        "request",
        access_token="abc.def",
        api_key="k1",
        apiKey="k2",
        password="p",
        client_secret="s",
        supabase_key="x",
        headers={"Authorization": "Bearer zzz", "Accept": "application/json"},
        attempts=[{"refresh_token": "r"}],
        code_id="LEGITEXT000006070721",
        count=3,
        ok=True,
        token_missing=None,
    )
    [record] = buffer.records()
    assert record["access_token"] == record["api_key"] == record["apiKey"] == MASK
    assert record["password"] == record["client_secret"] == record["supabase_key"] == MASK
    assert record["headers"] == {"Authorization": MASK, "Accept": "application/json"}
    assert record["attempts"] == [{"refresh_token": MASK}]
    assert (record["code_id"], record["count"], record["ok"], record["token_missing"]) == (
        "LEGITEXT000006070721", 3, True, None,
    )
    assert lines(out)[0]["headers"]["Authorization"] == MASK
    assert "zzz" not in out.getvalue() and "abc.def" not in out.getvalue()


def test_httpx_request_logs_stay_out_even_at_debug(out: io.StringIO) -> None:
    """httpx logs each request URL at INFO; it stays at WARNING whatever LOG_LEVEL says."""
    buffer = configure_logging(make_settings(log_level="DEBUG"), stream=out)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    with httpx.Client(transport=transport) as client:
        client.get("https://oauth.example/token", params={"client_secret": "plain-in-url"})
    structlog.get_logger("t").debug("after")
    assert [r["event"] for r in buffer.records()] == ["after"]
    assert "plain-in-url" not in out.getvalue()


# ---- rendering and levels ------------------------------------------------------------------------


def test_json_lines_carry_timestamp_level_event_and_fields(out: io.StringIO) -> None:
    configure_logging(make_settings(), stream=out)
    structlog.contextvars.bind_contextvars(run_id=12)
    try:
        structlog.get_logger("collector.harvest").info("code_done", code_id="LEGITEXT000006070721", n=5)
    finally:
        structlog.contextvars.clear_contextvars()
    [line] = lines(out)
    assert ISO_UTC.match(line["timestamp"])
    assert line["level"] == "info" and line["event"] == "code_done" and line["logger"] == "collector.harvest"
    assert (line["code_id"], line["n"], line["run_id"]) == ("LEGITEXT000006070721", 5, 12)


def test_console_on_a_tty_json_otherwise_unless_forced(out: io.StringIO) -> None:
    tty = Tty()
    configure_logging(make_settings(log_format=None), stream=tty)
    structlog.get_logger("t").info("on_tty")
    assert "on_tty" in tty.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(tty.getvalue().splitlines()[0])

    configure_logging(make_settings(log_format=None), stream=out)
    structlog.get_logger("t").info("not_a_tty")
    assert lines(out)[0]["event"] == "not_a_tty"

    forced = Tty()
    configure_logging(make_settings(log_format="json"), stream=forced)
    structlog.get_logger("t").info("forced")
    assert json.loads(forced.getvalue())["event"] == "forced"


def test_level_filter_applies_to_structlog_and_stdlib(out: io.StringIO) -> None:
    buffer = configure_logging(make_settings(log_level="WARNING"), stream=out)
    log = structlog.get_logger("t")
    log.info("quiet")
    logging.getLogger("lib").info("quiet too")
    log.warning("loud")
    logging.getLogger("lib").error("loud too")
    assert [r["event"] for r in buffer.records()] == ["loud too", "loud"]
    assert [r["event"] for r in lines(out)] == ["loud", "loud too"]


def test_configure_is_idempotent(out: io.StringIO) -> None:
    first = configure_logging(make_settings(), stream=out)
    second = configure_logging(make_settings(), stream=out)
    assert first is second is get_log_buffer()
    ours = [h for h in logging.getLogger().handlers if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)]
    assert len(ours) == 1
    structlog.get_logger("t").info("once")
    assert len(lines(out)) == 1 and len(first.records()) == 1


def test_concurrent_configure_calls_leave_one_handler(out: io.StringIO) -> None:
    threads = [threading.Thread(target=configure_logging, args=(make_settings(),), kwargs={"stream": out}) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    structlog.get_logger("t").info("once")
    assert len(lines(out)) == 1


def test_other_modules_loggers_reach_the_buffer(out: io.StringIO, tmp_path: Path) -> None:
    """collector.state logs through structlog; its warning lands in the dashboard buffer."""
    buffer = configure_logging(make_settings(), stream=out)
    path = tmp_path / "state.json"
    path.write_text("{")
    StateFile(path, SchedulerState(False, Mode.MAINTENANCE)).load()
    [record] = buffer.records(min_level="warning")
    assert record["event"] == "state_file_invalid" and record["path"] == str(path)


# ---- ring buffer ---------------------------------------------------------------------------------


class Color(Enum):
    RED = "red"


def test_records_are_json_safe(out: io.StringIO) -> None:
    buffer = configure_logging(make_settings(), stream=out)
    when = datetime(2026, 11, 28, tzinfo=timezone.utc)
    structlog.get_logger("t").info("values", when=when, path=Path("/x"), color=Color.RED, ids={"a"}, obj=object())
    [record] = buffer.records()
    assert json.loads(json.dumps(record))["when"] == "2026-11-28T00:00:00+00:00"
    assert (record["path"], record["color"], record["ids"]) == ("/x", "red", ["a"])


def test_buffer_keeps_the_last_records_newest_first(out: io.StringIO) -> None:
    buffer = configure_logging(make_settings(), stream=out)
    log = structlog.get_logger("t")
    for i in range(BUFFER_CAPACITY + 100):
        (log.warning if i % 10 == 0 else log.info)("n", i=i)
    everything = buffer.records(limit=None)
    assert len(everything) == BUFFER_CAPACITY == len(buffer)
    assert [r["i"] for r in everything] == list(range(BUFFER_CAPACITY + 99, 99, -1))
    assert [r["i"] for r in buffer.records()] == list(range(BUFFER_CAPACITY + 99, BUFFER_CAPACITY - 101, -1))
    assert [r["i"] for r in buffer.records(limit=3, min_level="WARNING")] == [1090, 1080, 1070]
    assert len(buffer.records(limit=None, min_level=logging.WARNING)) == 100
    assert len(buffer.records(limit=None, min_level="warn")) == 100
    assert buffer.records(limit=0) == []
    # records are copies: the caller cannot alter the buffer
    buffer.records(limit=1)[0]["i"] = -1
    assert buffer.records(limit=1)[0]["i"] == BUFFER_CAPACITY + 99


def test_records_rejects_bad_arguments() -> None:
    buffer = LogBuffer(5)
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        buffer.records(min_level="loud")
    with pytest.raises(ValueError):
        buffer.records(limit=-1)
    with pytest.raises(ValueError):
        LogBuffer(0)


def test_buffer_under_concurrent_writers_and_readers(out: io.StringIO) -> None:
    buffer = configure_logging(make_settings(), stream=out)
    per_thread, writers = 300, 6
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        log = structlog.get_logger("t")
        for i in range(per_thread):
            log.info("w", thread=n, i=i)

    def read() -> None:
        try:
            while not stop.is_set():
                for record in buffer.records(limit=None, min_level="info"):
                    assert record["event"] == "w"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    for t in readers:
        t.join(timeout=30)
    assert errors == []
    assert len(lines(out)) == per_thread * writers  # every line whole, none interleaved
    kept = buffer.records(limit=None)
    assert len(kept) == BUFFER_CAPACITY
    for n in range(writers):
        seq = [r["i"] for r in kept if r["thread"] == n]
        assert seq == sorted(seq, reverse=True) and len(seq) == len(set(seq))


def test_other_handlers_never_see_a_raw_structlog_secret(out: io.StringIO) -> None:
    """The LogRecord itself is masked, so a foreign handler on root (here a plain one) is safe."""
    configure_logging(make_settings(), stream=out)
    seen = io.StringIO()
    plain = logging.StreamHandler(seen)
    logging.getLogger().addHandler(plain)
    try:
        structlog.get_logger("t").info("hello", secret_value=SECRETS["client_secret"], text=SECRETS["api_token"])
    finally:
        logging.getLogger().removeHandler(plain)
    assert "hello" in seen.getvalue()
    assert_no_secret(seen.getvalue())
