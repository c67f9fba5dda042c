"""A student adds a shard in real Chromium and sees the rows the router moved (stage 6)."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from tests.stack import Stack

pytestmark = pytest.mark.browser


def moved_rows(page: Page) -> int:
    """The router box's moved-row count, as the page shows it."""
    text = page.get_by_test_id("node-router").text_content() or ""
    m = re.search(r"moved ([\d ]+) rows", text)
    return int(m.group(1).replace(" ", "")) if m else -1


def test_a_student_adds_a_shard_and_sees_the_moved_rows(page: Page, live: Stack) -> None:
    page.set_viewport_size({"width": 1500, "height": 1000})
    page.goto(f"{live.url}/stage/database-sharding/")
    start = page.get_by_test_id("start-button")
    expect(start).to_be_enabled(timeout=10000)
    start.click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=40000)

    # The router's drawing: each shard's share of the rows, about a third each.
    expect(page.get_by_test_id("ring-share-db-3")).to_be_attached(timeout=10000)
    expect(page.get_by_test_id("node-router")).to_contain_text("modulo · 3 shards", timeout=10000)
    expect(page.get_by_test_id("node-router")).to_contain_text("moved 0 rows")

    # Add a shard like db-3: an empty db-4 joins and the router moves the users whose shard changed.
    page.get_by_test_id("node-db-3").click()
    page.get_by_test_id("node-menu-add").click()
    expect(page.get_by_test_id("node-db-4")).to_be_attached(timeout=10000)
    expect(page.get_by_test_id("node-router")).to_contain_text("4 shards", timeout=30000)
    page.wait_for_function("() => /moved [1-9]/.test(document.querySelector('[data-testid=node-router]').textContent)",
                           timeout=30000)
    assert moved_rows(page) > 1000
    # About three quarters of the rows moved (modulo, 3 -> 4 shards), as the box and the log say.
    expect(page.get_by_test_id("node-router")).to_contain_text(re.compile(r"\((7\d|8\d)\.\d %\)"), timeout=30000)
    expect(page.locator("#event-log, [data-testid=event-log]").first).to_contain_text(
        re.compile(r"router moved [\d ]+ rows"), timeout=10000)

    # Switch to consistent hashing from the router's menu: the ring is drawn.
    page.get_by_test_id("node-router").click()
    page.get_by_test_id("node-menu-algorithm").select_option("consistent")
    expect(page.get_by_test_id("node-router")).to_contain_text("consistent · 4 shards", timeout=30000)
    expect(page.locator('[data-testid="node-router-drawing"] .ring-arc').first).to_be_attached(timeout=10000)
    if os.environ.get("SCREENSHOT_DIR"):
        page.wait_for_timeout(1500)
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "stage6-ring.png"), full_page=True)

    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "stopped", timeout=10000)
