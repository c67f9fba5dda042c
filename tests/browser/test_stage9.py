"""A student moves the sessions to the shared store and turns the autoscaler on, in real Chromium
(stage 9): the generic menus of the two new kinds send their commands and the boxes show the result."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from tests.stack import Stack

pytestmark = pytest.mark.browser


def test_a_student_moves_the_sessions_to_the_store_and_lets_the_autoscaler_work(page: Page, live: Stack) -> None:
    page.set_viewport_size({"width": 1500, "height": 1000})
    page.goto(f"{live.url}/stage/stateless-web-tier/")
    start = page.get_by_test_id("start-button")
    expect(start).to_be_enabled(timeout=10000)
    start.click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=40000)
    store = page.get_by_test_id("node-store")
    expect(store).to_contain_text("the web tier keeps them: memory", timeout=10000)

    # Round robin over sessions in memory: users are logged out, and the totals count them.
    page.wait_for_function(
        "() => Number(document.querySelector('#total-logouts').textContent) > 0", timeout=20000)
    page.get_by_test_id("node-store").click()
    page.get_by_test_id("node-menu-sessions").select_option("shared")
    expect(store).to_contain_text("the web tier keeps them: shared", timeout=5000)
    expect(page.get_by_test_id("event-log")).to_contain_text(re.compile(r"now keeps its sessions in store"),
                                                             timeout=5000)
    page.wait_for_function(
        """() => { const m = /(\\d+) sessions/.exec(document.querySelector('[data-testid=node-store]').textContent);
                   return m && Number(m[1]) > 0; }""", timeout=15000)

    # The autoscaler's menu: on, then a new maximum, each shown on its box.
    scaler = page.get_by_test_id("node-scaler")
    expect(scaler).to_contain_text("off ·", timeout=5000)
    scaler.click()
    page.get_by_test_id("node-menu-autoscale").select_option("on")
    expect(scaler).to_contain_text("on ·", timeout=5000)
    scaler.click()
    page.get_by_test_id("node-menu-max-servers").select_option("8")
    expect(scaler).to_contain_text("max 8", timeout=5000)
    if os.environ.get("SCREENSHOT_DIR"):
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "stage9-shared-sessions.png"), full_page=True)

    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "stopped", timeout=10000)
