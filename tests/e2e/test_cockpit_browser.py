"""The status line in headless Chromium on the real server: the badge and the alerts while
running, on a wrong PISTE secret (the emulator on a loopback port) and in standby, with zero
browser console warnings or errors over several refreshes of the live panel and the charts.
Screenshots go to $E2E_SCREENSHOTS (a directory) when set, else to the test's tmp dir."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.demo import DemoServerThread
from collector.store.sqlite import SqliteStore
from tests.e2e.conftest import Server, wait_for
from tests.e2e.test_browser import browser, open_page  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e

REFRESHES_SECONDS = 8.0  # four refreshes of the live panel (every 2 s)


def shots_dir(tmp_path: Path) -> Path:
    shots = Path(os.environ.get("E2E_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def watch_console(page: object) -> list[str]:
    """Every console warning or error and every uncaught page error, as they come."""
    problems: list[str] = []

    def on_console(message: object) -> None:
        if message.type in ("warning", "error"):  # type: ignore[attr-defined]
            problems.append(f"{message.type}: {message.text}")  # type: ignore[attr-defined]

    page.on("console", on_console)  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))  # type: ignore[attr-defined]
    return problems


def status_line(page: object) -> object:
    return page.locator(".st-key-status_line")  # type: ignore[attr-defined]


def alerts(page: object) -> object:
    return page.locator(".st-key-alerts").get_by_test_id("stAlert")  # type: ignore[attr-defined]


def test_running_badge_rates_chart_and_a_quiet_console(
    browser: object, launch: Callable[..., Server], tmp_path: Path  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    server = launch(state={"running": True, "mode": "MAINTENANCE"})
    page = open_page(browser, server)
    problems = watch_console(page)
    expect(status_line(page)).to_contain_text("RUNNING")
    expect(status_line(page)).to_contain_text("since")
    expect(alerts(page)).to_have_count(0)
    chart = page.get_by_test_id("stVegaLiteChart")  # type: ignore[attr-defined]
    expect(chart).to_have_count(1, timeout=90_000)  # two 15 s windows of measured requests
    wait_for(lambda: server.articles() >= 140, 90, "the first pass's articles (a few points on the chart)")
    page.wait_for_timeout(REFRESHES_SECONDS * 1000)  # type: ignore[attr-defined]
    expect(page.get_by_test_id("stApp")).to_contain_text("Recent passes")  # type: ignore[attr-defined]
    expect(page.get_by_test_id("stException")).to_have_count(0)  # type: ignore[attr-defined]
    expect(chart.locator("svg, canvas").first).to_be_visible()
    page.screenshot(path=str(shots_dir(tmp_path) / "cockpit-running.png"))  # type: ignore[attr-defined]
    assert not problems, problems


def test_wrong_secret_is_one_error_alert(
    browser: object, launch: Callable[..., Server], tmp_path: Path  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    with DemoServerThread() as piste:
        server = launch(
            state={"running": True, "mode": "MAINTENANCE"},
            LEGIFRANCE_CLIENT_ID="demo-client-id",
            LEGIFRANCE_CLIENT_SECRET="wrong-secret-e2e-77aa",
            LEGIFRANCE_OAUTH_URL=piste.oauth_url,
            LEGIFRANCE_API_BASE_URL=piste.api_base_url,
            MAINTENANCE_CODES="LEGITEXT000099900001",
        )
        page = open_page(browser, server)
        problems = watch_console(page)
        expect(status_line(page)).to_contain_text("ERROR", timeout=60_000)
        expect(status_line(page)).not_to_contain_text("RUNNING")
        expect(alerts(page)).to_have_count(1)
        alert = alerts(page).first
        expect(alert).to_contain_text("The collector stopped on an error")
        expect(alert).to_contain_text("LEGIFRANCE_CLIENT_SECRET")
        expect(alert.get_by_role("link")).to_have_count(0)  # the URLs in the message stay text
        expect(page.locator(".st-key-retry button")).to_be_enabled()
        expect(page.locator(".st-key-start button")).to_be_disabled()
        text = page.get_by_test_id("stMain").inner_text()  # type: ignore[attr-defined]
        assert "or on Start" not in text and "wrong-secret-e2e-77aa" not in text
        page.wait_for_timeout(REFRESHES_SECONDS * 1000)  # type: ignore[attr-defined]
        expect(alerts(page)).to_have_count(1)  # still said once after refreshes
        page.screenshot(path=str(shots_dir(tmp_path) / "cockpit-error.png"))  # type: ignore[attr-defined]
        assert not problems, problems


def test_standby_names_the_lease_holder(
    browser: object, launch: Callable[..., Server], tmp_path: Path  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    db = tmp_path / "shared.sqlite3"
    holder = "render-old-instance:7:20261201T000000Z"
    other = SqliteStore(db)
    try:
        assert other.acquire_lease(holder, 900).acquired
        server = launch(state={"running": True, "mode": "MAINTENANCE"}, COLLECTOR_DB=str(db))
        page = open_page(browser, server)
        problems = watch_console(page)
        expect(status_line(page)).to_contain_text("STANDBY")
        expect(status_line(page)).to_contain_text(holder)
        expect(alerts(page)).to_have_count(0)
        started = time.monotonic()
        wait_for(lambda: time.monotonic() - started > REFRESHES_SECONDS, REFRESHES_SECONDS + 5, "refreshes")
        expect(status_line(page)).to_contain_text("STANDBY")
        page.screenshot(path=str(shots_dir(tmp_path) / "cockpit-standby.png"))  # type: ignore[attr-defined]
        assert not problems, problems
    finally:
        other.close()
