"""KEEP_AWAKE: ping the service's own public URL so Render's free instance keeps collecting.

A free web service on Render spins down after 15 minutes without inbound traffic, and the
collector thread stops with it (its calls to PISTE are outbound). A GET of its own public URL
(RENDER_EXTERNAL_URL + /healthz) every 10 minutes goes out through Render's proxy and comes back
in as inbound traffic. The trade-off: the instance then runs all month, which uses up the
workspace's free instance hours (750 h per month, shared by every free service of the
workspace; one always-on service needs ~730 h). Off by default.

One daemon thread; `stop()` ends it within one HTTP timeout. A failed ping is logged and the
next one goes ahead: a ping never stops the collector or the server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import structlog

from collector.config import Settings
from collector.health import PATH

INTERVAL_SECONDS = 600.0  # 10 min: under Render's 15 min idle limit, with margin for a slow ping
TIMEOUT_SECONDS = 10.0
THREAD_NAME = "keep-awake"
log = structlog.get_logger("collector.keepawake")


class KeepAwake:
    """Pings `url` every `interval` seconds from a daemon thread until `stop()`."""

    def __init__(
        self,
        url: str,
        interval: float = INTERVAL_SECONDS,
        *,
        client_factory: Callable[[], httpx.Client] = lambda: httpx.Client(timeout=TIMEOUT_SECONDS),
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.url = url
        self.interval = interval
        self._client_factory = client_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0  # attempts so far (successful or not)
        self.failures = 0

    def start(self) -> None:
        """Start the thread (idempotent); the first ping goes out after one interval."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()
            log.info("keep-awake started", url=self.url, every_s=self.interval)

    def stop(self, timeout: float = TIMEOUT_SECONDS + 1) -> bool:
        """Ask the thread to end and wait for it; True when it has ended."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        ended = not thread.is_alive()
        log.info("keep-awake stopped", pings=self.pings, failures=self.failures, ended=ended)
        return ended

    def _run(self) -> None:
        with self._client_factory() as client:
            while not self._stop.wait(self.interval):
                self.ping(client)

    def ping(self, client: httpx.Client) -> bool:
        """One GET of the URL; True on a 2xx answer. Never raises."""
        self.pings += 1
        try:
            response = client.get(self.url)
        except httpx.HTTPError as exc:
            self.failures += 1
            log.warning("keep-awake ping failed", url=self.url, error=f"{type(exc).__name__}: {exc}"[:200])
            return False
        if response.is_success:
            log.info("keep-awake ping", url=self.url, status=response.status_code)
            return True
        self.failures += 1
        log.warning("keep-awake ping answered an error", url=self.url, status=response.status_code)
        return False


def start_keep_awake(settings: Settings, interval: float = INTERVAL_SECONDS) -> KeepAwake | None:
    """A started KeepAwake when KEEP_AWAKE is on and Render gave the public URL, else None
    (with a warning when it is on but there is nothing to ping)."""
    if not settings.keep_awake:
        return None
    if not settings.external_url:
        log.warning("KEEP_AWAKE is true but RENDER_EXTERNAL_URL is not set (only Render sets it): not pinging")
        return None
    pinger = KeepAwake(f"{settings.external_url}{PATH}", interval)
    pinger.start()
    return pinger
