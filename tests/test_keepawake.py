"""KEEP_AWAKE's pinger against a real HTTP server on a loopback socket (interval injected)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from collector.config import ConfigError, Settings
from collector.keepawake import THREAD_NAME, KeepAwake, start_keep_awake
from tests.conftest import free_port
from tests.test_runtime import wait_until


class Target:
    """A loopback HTTP server recording the paths it was asked for; answers `statuses` in turn
    (200 once they run out)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.paths: list[str] = []
        statuses = list(statuses or [])
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                target.paths.append(self.path)
                self.send_response(statuses.pop(0) if statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target([503, 500])
    yield t
    t.close()


def pinger_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_pings_the_url_every_interval_tolerates_errors_and_stops(target: Target) -> None:
    pinger = KeepAwake(f"{target.url}/healthz", interval=0.05)
    pinger.start()
    pinger.start()  # idempotent: one thread
    assert len(pinger_threads()) == 1
    assert wait_until(lambda: len(target.paths) >= 5)  # went on after the 503 and the 500
    assert pinger.stop() is True
    assert not pinger_threads()
    seen = len(target.paths)
    assert set(target.paths) == {"/healthz"} and pinger.failures == 2 and pinger.pings == seen
    time.sleep(0.2)
    assert len(target.paths) == seen, "no ping after stop"


def test_an_unreachable_url_is_logged_and_retried() -> None:
    pinger = KeepAwake(f"http://127.0.0.1:{free_port()}/healthz", interval=0.05)  # nothing listens
    pinger.start()
    assert wait_until(lambda: pinger.failures >= 3)
    assert pinger_threads() and pinger.stop() and not pinger_threads()


def test_the_first_ping_waits_one_interval(target: Target) -> None:
    pinger = KeepAwake(f"{target.url}/healthz", interval=30)
    pinger.start()
    time.sleep(0.3)
    assert target.paths == []
    started = time.monotonic()
    assert pinger.stop() and time.monotonic() - started < 1.0, "stop does not wait for the interval"


def test_settings_turn_it_on_only_with_a_public_url(target: Target) -> None:
    assert start_keep_awake(Settings.from_env({})) is None  # off by default
    assert start_keep_awake(Settings.from_env({"KEEP_AWAKE": "true"})) is None  # not on Render
    settings = Settings.from_env({"KEEP_AWAKE": "true", "RENDER_EXTERNAL_URL": f"{target.url}/"})
    pinger = start_keep_awake(settings, interval=0.05)
    assert pinger is not None and pinger.url == f"{target.url}/healthz"
    assert wait_until(lambda: len(target.paths) >= 1)
    assert pinger.stop()
    with pytest.raises(ConfigError, match="KEEP_AWAKE"):
        Settings.from_env({"KEEP_AWAKE": "sometimes"})
    with pytest.raises(ConfigError, match="RENDER_EXTERNAL_URL"):
        Settings.from_env({"KEEP_AWAKE": "true", "RENDER_EXTERNAL_URL": "my-service.onrender.com"})
