"""A student kills the cache in real Chromium and sees the database's load rise (stage 7)."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from tests.stack import Stack

pytestmark = pytest.mark.browser


def db_rate(page: Page) -> float:
    """The database box's req/s, as the page shows it."""
    text = page.get_by_test_id("node-db-rps").text_content() or ""
    return float(text) if re.fullmatch(r"[\d.]+", text) else -1.0


def hit_ratio(page: Page) -> float:
    m = re.search(r"hit ratio ([\d.]+) %", page.get_by_test_id("node-cache-1").text_content() or "")
    return float(m.group(1)) / 100 if m else -1.0


def test_a_student_kills_the_cache_and_sees_the_database_load_rise(page: Page, live: Stack) -> None:
    page.set_viewport_size({"width": 1500, "height": 1000})
    page.goto(f"{live.url}/stage/cache/")
    start = page.get_by_test_id("start-button")
    expect(start).to_be_enabled(timeout=10000)
    start.click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=40000)

    # The cache warms up: its box shows the hit ratio climbing over half.
    page.wait_for_function(
        """() => { const box = document.querySelector('[data-testid=node-cache-1]');
                   const m = /hit ratio ([\\d.]+) %/.exec(box.textContent);
                   return m && Number(m[1]) >= 50; }""", timeout=40000)
    assert hit_ratio(page) >= 0.5
    page.wait_for_timeout(2000)
    warm = db_rate(page)
    assert warm > 0

    # Kill the cache from its menu: every read now goes to the database.
    page.get_by_test_id("node-cache-1").click()
    page.get_by_test_id("node-menu-kill").click()
    expect(page.get_by_test_id("node-cache-1-state")).to_have_text(re.compile("down", re.I), timeout=5000)
    page.wait_for_function(
        f"() => Number(document.querySelector('[data-testid=node-db-rps]').textContent) >= {max(2 * warm, warm + 20)}",
        timeout=20000)
    assert page.locator("#total-err").text_content() in ("0.0", "0")  # slower pages, none failed
    if os.environ.get("SCREENSHOT_DIR"):
        page.wait_for_timeout(1000)
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "stage7-cache-killed.png"), full_page=True)

    # The cache's own menu changes its TTL live (declared by the kind, drawn by the generic menu).
    page.get_by_test_id("node-cache-1").click()
    page.get_by_test_id("node-menu-restart").click()
    expect(page.get_by_test_id("node-cache-1-state")).to_have_text(re.compile("up", re.I), timeout=10000)
    page.get_by_test_id("node-cache-1").click()
    page.get_by_test_id("node-menu-ttl").select_option("300")
    expect(page.get_by_test_id("node-cache-1")).to_contain_text("TTL 300 s", timeout=5000)

    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "stopped", timeout=10000)
