"""The emulator over a real loopback socket (uvicorn in a thread, and the CLI in a subprocess)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from collector.demo import DemoConfig, DemoServerThread, FaultRule
from tests.conftest import REPO, free_port
from tests.demo.conftest import Api

BODY = {"pageNumber": 1, "pageSize": 10}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def socket_api(demo: DemoServerThread, read_timeout: float = 10.0) -> Api:
    return Api(None, oauth_url=demo.oauth_url, api_base_url=demo.api_base_url, read_timeout=read_timeout)


def test_sliding_window_limiter_over_a_real_socket() -> None:
    rate = 5
    with DemoServerThread(DemoConfig(rate_limit=rate, retry_after=1), port=free_port()) as demo:

        async def burst() -> list[httpx.Response]:
            async with socket_api(demo) as api:
                await api.get_token()  # the token endpoint is not rate limited
                return await asyncio.gather(*(api.post("/list/code", BODY) for _ in range(rate + 5)))

        statuses = [r.status_code for r in run(burst())]
        assert statuses.count(429) >= 5 and statuses.count(200) <= rate
        stats = demo.server.stats()
        assert stats["rate_limited"] == statuses.count(429)
        assert stats["max_requests_in_1s_window"] == rate + 5

        time.sleep(1.1)  # let the window empty
        demo.server.reset_stats()

        async def paced() -> list[int]:
            async with socket_api(demo) as api:
                await api.get_token()
                out = []
                for _ in range(8):
                    out.append((await api.post("/list/code", BODY)).status_code)
                    await asyncio.sleep(1.3 / rate)
                return out

        assert run(paced()) == [200] * 8
        assert demo.server.stats()["rate_limited"] == 0
        assert demo.server.stats()["max_requests_in_1s_window"] <= rate


def test_dropped_connection_and_hang_over_a_real_socket() -> None:
    with DemoServerThread(DemoConfig(hang_s=5), port=free_port()) as demo:
        demo.server.set_faults([FaultRule("drop", endpoint="list_code"), FaultRule("hang", endpoint="list_code")])

        async def go() -> None:
            async with socket_api(demo, read_timeout=0.5) as api:
                await api.get_token()
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                    await api.post("/list/code", BODY)
                with pytest.raises(httpx.ReadTimeout):
                    await api.post("/list/code", BODY)
                assert (await api.post("/list/code", BODY)).status_code == 200

        run(go())
        assert demo.server.stats()["by_endpoint"]["list_code"]["dropped"] == 1


def test_cli_demo_server_prints_its_url_and_serves() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "demo-server", "--port", str(port), "--articles", "50",
         "--rate-limit", "20", "--token-lifetime", "30", "--seed", "3"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"demo-server listening on http://127.0.0.1:{port}", (line, proc.stderr.read() if proc.poll() is not None else "")
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(base + "/api/oauth/token", data={"grant_type": "client_credentials",
                                                        "client_id": "demo-client-id", "client_secret": "demo-client-secret"},
                       timeout=10)
        assert r.status_code == 200 and r.json()["expires_in"] == 30
        expected = httpx.get(base + "/_demo/expected?min_chars=0", timeout=10).json()
        assert expected["count"] == 50
        assert httpx.get(base + "/_demo/settings", timeout=10).json()["rate_limit"] == 20
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_cli_rejects_bad_options_clearly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "collector", "demo-server", "--port", str(free_port()), "--fault-rate", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and "fault_rate" in proc.stderr
