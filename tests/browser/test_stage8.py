"""A student turns the CDN on in real Chromium and sees a far region's assets come from its edge (stage 8)."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from tests.stack import Stack

pytestmark = pytest.mark.browser


def test_a_student_turns_the_cdn_on_and_a_far_edge_starts_serving(page: Page, live: Stack) -> None:
    page.set_viewport_size({"width": 1500, "height": 1200})
    page.goto(f"{live.url}/stage/cdn/")
    expect(page.get_by_test_id("region-asia-title")).to_contain_text("asia")
    page.get_by_test_id("start-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=40000)
    page.wait_for_timeout(3000)
    if os.environ.get("SCREENSHOT_DIR"):
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "stage8-before.png"), full_page=True)

    # The DNS server's menu switches the static name to the CDN (a CNAME); Asia's edge fills, then hits.
    page.get_by_test_id("node-dns").click()
    page.get_by_test_id("node-menu-cdn").select_option("on")
    expect(page.locator("#events")).to_contain_text("cdn", timeout=5000)
    page.wait_for_function(
        """() => { const box = document.querySelector('[data-testid=node-edge-asia]');
                   const m = /hit ratio ([\\d.]+) %/.exec(box.textContent);
                   return m && Number(m[1]) >= 80; }""", timeout=40000)
    hits = re.search(r"(\d+) hits", page.get_by_test_id("node-edge-asia").text_content() or "")
    assert hits and int(hits.group(1)) > 0
    if os.environ.get("SCREENSHOT_DIR"):
        page.wait_for_timeout(1500)
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "stage8-cdn-on.png"), full_page=True)

    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "stopped", timeout=15000)
