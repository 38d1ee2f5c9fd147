"""GET /healthz on the real server (`streamlit run dashboard.py`): a bad setting is a 503 with
the reason while Streamlit's own /_stcore/health still says 200; good settings are a 200."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def healthz(server: Server) -> httpx.Response:
    resp = httpx.get(f"{server.url}/healthz", timeout=15)
    print(f"GET /healthz -> {resp.status_code} {resp.text}")  # shown with -s: the answer itself
    return resp


def test_bad_setting_is_503_with_the_reason(launch: Callable[..., Server]) -> None:
    server = launch(MIN_ARTICLE_CHARS="abc")
    assert httpx.get(f"{server.url}/_stcore/health", timeout=15).status_code == 200  # what Render used to see
    resp = healthz(server)
    assert resp.status_code == 503
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["status"] == "error" and "MIN_ARTICLE_CHARS" in body["reason"]
    assert httpx.post(f"{server.url}/healthz", timeout=15).status_code == 405  # not the page


def test_good_settings_are_200(launch: Callable[..., Server]) -> None:
    server = launch(state={"running": True, "mode": "MAINTENANCE"})
    resp = healthz(server)
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "running": True, "alive": True, "phase": resp.json()["phase"]}
    assert httpx.head(f"{server.url}/healthz", timeout=15).status_code == 200
