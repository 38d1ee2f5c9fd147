"""The search section in headless Chromium on the real server: the demo collector stores
articles, an unaccented query finds them, one opens with its text, versions and link.
Screenshots go to $E2E_SCREENSHOTS (a directory) when set, else to the test's tmp dir."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, wait_for
from tests.e2e.test_browser import browser, open_page  # noqa: F401 - fixture
from tests.e2e.test_cockpit_browser import watch_console

pytestmark = pytest.mark.e2e


def test_search_and_open_an_article(browser: object, launch: Callable[..., Server], tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    shots = Path(os.environ.get("E2E_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    server = launch(state={"running": True, "mode": "MAINTENANCE"}, LEGIFRANCE_MAX_REQUESTS_PER_SECOND="50")
    wait_for(lambda: server.articles() >= 20, 60, "demo articles in the store")
    # Stopped, so the live panel above keeps its height: passes 3 s apart would make the page
    # move under an open drop-down (it closes when the page scrolls).
    assert server.post("/aspirage/stop").status_code == 200
    wait_for(lambda: server.status()["collector_threads"] == 0, 20, "the collector to stop")
    page = open_page(browser, server)
    problems = watch_console(page)

    box = page.locator(".st-key-search_query input")  # type: ignore[attr-defined]
    box.fill("declaration PREALABLE")  # the demo text says "déclaration préalable"
    box.press("Enter")
    app = page.get_by_test_id("stApp")  # type: ignore[attr-defined]
    expect(app).to_contain_text("matched words are in [brackets]")
    expect(page.locator(".st-key-search_matches").get_by_test_id("stDataFrame")).to_be_visible()  # type: ignore[attr-defined]
    section = page.get_by_text("Search the collected articles")  # type: ignore[attr-defined]
    section.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "search-results.png"))  # type: ignore[attr-defined]

    page.locator(".st-key-search_open").click()  # type: ignore[attr-defined]
    page.keyboard.press("ArrowDown")  # type: ignore[attr-defined]  # opens the list if the click only focused it
    page.get_by_role("option").first.click()  # type: ignore[attr-defined]
    article = page.locator(".st-key-search_article")  # type: ignore[attr-defined]
    expect(article).to_contain_text("in force from")
    expect(article).to_contain_text("Versions of this article in the store")
    expect(article).to_contain_text("A DEMO article: it does not exist on legifrance.gouv.fr")
    expect(article.get_by_role("link")).to_have_count(0)
    article.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "search-article.png"))  # type: ignore[attr-defined]
    assert not problems, problems
