"""The real page in headless Chromium (Debian's /usr/bin/chromium through Playwright)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e.conftest import Server, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 45_000  # auto-waiting locators on a slow shared machine
PASSWORD = "e2e-dash-pass-8b1e"


@pytest.fixture
def browser() -> Iterator[object]:
    require(CHROMIUM.exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed")
    import playwright.sync_api as sync_api
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: object, server: Server) -> object:
    """A fresh browser context (its own Streamlit session) on the page, fully loaded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1600})  # type: ignore[attr-defined]
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(server.url)
    page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for()
    return page


def metric(page: object, label: str) -> int:
    value = (
        page.get_by_test_id("stMetric")  # type: ignore[attr-defined]
        .filter(has_text=label)
        .get_by_test_id("stMetricValue")
        .inner_text()
    )
    return int(value.replace(",", ""))


def test_controls_drive_the_collector(browser: object, launch: Callable[..., Server]) -> None:
    from playwright.sync_api import expect

    server = launch()
    page = open_page(browser, server)
    start, stop = page.locator(".st-key-start button"), page.locator(".st-key-stop button")
    mode = page.locator(".st-key-mode_choice")
    dialog = page.get_by_test_id("stDialog")
    expect(page.get_by_test_id("stApp")).to_contain_text("Source: DEMO")

    expect(stop).to_be_disabled()
    start.click()
    expect(stop).to_be_enabled()
    expect(start).to_be_disabled()
    wait_for(lambda: server.saved() == {"running": True, "mode": "MAINTENANCE"}, 10, "state after START")
    expect(page.get_by_test_id("stToast").first).to_contain_text("saved")
    expect(page.locator(".st-key-status_line")).to_contain_text("RUNNING")

    # The fragment refreshes the counters without reloading the page (5 requests/s).
    first = wait_for(lambda: metric(page, "Fetched this pass"), 45, "a first fetched article")
    wait_for(lambda: metric(page, "Fetched this pass") > first, 45, "the counter to move")
    wait_for(lambda: metric(page, "Articles stored"), 60, "the first committed batch on the page")

    # MASSIVE asks first; Cancel leaves MAINTENANCE.
    mode.get_by_role("radio", name="MASSIVE").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("daily quota")
    expect(dialog).to_contain_text("A full pass costs about")  # the demo's real cost
    page.locator(".st-key-cancel_massive button").click()
    expect(dialog).to_be_hidden()
    expect(mode.get_by_role("radio", name="MAINTENANCE")).to_have_attribute("aria-checked", "true")
    assert server.saved() == {"running": True, "mode": "MAINTENANCE"}

    mode.get_by_role("radio", name="MASSIVE").click()
    expect(dialog).to_be_visible()
    page.locator(".st-key-confirm_massive button").click()
    expect(dialog).to_be_hidden()
    wait_for(lambda: server.saved() == {"running": True, "mode": "MASSIVE"}, 10, "state after MASSIVE")
    expect(page.locator(".st-key-status_line")).to_contain_text("mode MASSIVE")

    stop.click()
    expect(start).to_be_enabled()
    wait_for(lambda: server.saved() == {"running": False, "mode": "MASSIVE"}, 10, "state after STOP")
    wait_for(lambda: server.status()["collector_threads"] == 0, 15, "the thread to end")

    # Reset asks first, then clears the saved state (defaults: stopped, MAINTENANCE).
    page.locator(".st-key-reset button").click()
    expect(dialog).to_be_visible()
    page.locator(".st-key-confirm_reset_button button").click()
    expect(dialog).to_be_hidden()
    wait_for(lambda: server.saved() is None, 10, "the state file to be cleared")
    expect(mode.get_by_role("radio", name="MAINTENANCE")).to_have_attribute("aria-checked", "true")

    # SIGTERM with a browser still connected: a clean, quick exit.
    server.terminate(10)
    assert '"runtime closed"' in server.output()


def test_two_sessions_share_the_lifespan_collector(browser: object, launch: Callable[..., Server]) -> None:
    from playwright.sync_api import expect

    server = launch(state={"running": True, "mode": "MAINTENANCE"})
    wait_for(lambda: server.status()["collector_threads"] == 1, 20, "the lifespan to resume the collector")
    first, second = open_page(browser, server), open_page(browser, server)
    for page in (first, second):  # the pages read the lifespan's runtime, not a new one
        expect(page.locator(".st-key-stop button")).to_be_enabled()
    assert server.status()["collector_threads"] == 1

    second.locator(".st-key-stop button").click()
    # The other session sees it on its next refresh, without a reload.
    expect(first.locator(".st-key-start button")).to_be_enabled()
    wait_for(lambda: server.saved() == {"running": False, "mode": "MAINTENANCE"}, 10, "state after STOP")
    wait_for(lambda: server.status()["collector_threads"] == 0, 15, "the thread to end")

    first.locator(".st-key-start button").click()
    expect(second.locator(".st-key-stop button")).to_be_enabled()
    expect(second.locator(".st-key-start button")).to_be_disabled()
    wait_for(lambda: server.saved() == {"running": True, "mode": "MAINTENANCE"}, 10, "state after START")
    wait_for(lambda: metric(second, "Fetched this pass") > 0, 45, "progress on the second page")
    assert server.status()["collector_threads"] == 1, "two sessions, one collector thread"


def test_password_gate(browser: object, launch: Callable[..., Server]) -> None:
    from playwright.sync_api import expect

    server = launch(DASHBOARD_PASSWORD=PASSWORD)
    page = open_page(browser, server)
    box = page.locator(".st-key-password_input input")
    expect(box).to_be_visible()
    expect(page.locator(".st-key-start")).to_have_count(0)

    box.fill("not the password")
    box.press("Enter")
    expect(page.get_by_test_id("stAlert")).to_contain_text("Wrong password")
    expect(page.locator(".st-key-start")).to_have_count(0)

    box.fill(PASSWORD)
    box.press("Enter")
    expect(page.locator(".st-key-start button")).to_be_enabled()
    expect(box).to_have_count(0)  # the box (holding what the user typed) leaves the page
    assert PASSWORD not in page.content()
    assert not re.search(re.escape(PASSWORD), server.output())
