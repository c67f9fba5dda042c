"""A student takes a data centre down from the diagram in real Chromium and sees its users move (stage 10)."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from tests.stack import Stack

pytestmark = pytest.mark.browser


def edge_rate(page: Page, a: str, b: str) -> float:
    text = page.get_by_test_id(f"edge-{a}-{b}-rps").text_content() or ""
    m = re.match(r"[\d.]+", text)
    return float(m.group(0)) if m else 0.0


def wait_edge_busy(page: Page, a: str, b: str, timeout: int) -> None:
    page.wait_for_function(
        f"""() => parseFloat(document.querySelector('[data-testid="edge-{a}-{b}-rps"]').textContent) > 2""",
        timeout=timeout)


def test_a_student_takes_europe_down_and_sees_its_users_move_to_the_us_centre(page: Page, live: Stack) -> None:
    page.set_viewport_size({"width": 1500, "height": 1100})
    page.goto(f"{live.url}/stage/multiple-data-centers/")
    # The diagram draws a box per region and the modelled distance between them.
    expect(page.get_by_test_id("region-eu-title")).to_contain_text("eu · Europe")
    expect(page.get_by_test_id("region-us-title")).to_contain_text("us · North America")
    expect(page.get_by_test_id("latency-matrix")).to_contain_text("eu–us 90 ms")
    page.get_by_test_id("start-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=40000)

    # GeoDNS: each region's users go to their own centre.
    wait_edge_busy(page, "users-eu", "lb-eu", 20000)
    wait_edge_busy(page, "users-us", "lb-us", 20000)
    assert edge_rate(page, "users-eu", "lb-us") == 0

    # Take Europe down from its box's menu.
    page.get_by_test_id("region-eu-title").click()
    page.get_by_test_id("region-menu-down").click()
    expect(page.get_by_test_id("region-eu-state")).to_have_text("DOWN", timeout=5000)
    expect(page.get_by_test_id("node-lb-eu-state")).to_have_text(re.compile("down", re.I), timeout=5000)
    expect(page.locator("#events")).to_contain_text("data centre eu down", timeout=5000)

    # Once DNS has seen it and their cached answers expire, Europe's users reach the us centre.
    wait_edge_busy(page, "users-eu", "lb-us", 30000)
    expect(page.locator("#events")).to_contain_text("dns stopped answering with lb-eu", timeout=5000)
    if os.environ.get("SCREENSHOT_DIR"):
        page.wait_for_timeout(1500)
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "stage10-eu-down.png"), full_page=True)

    # Recover it: its users come home.
    page.get_by_test_id("region-eu-title").click()
    page.get_by_test_id("region-menu-recover").click()
    expect(page.get_by_test_id("region-eu-state")).to_have_text("", timeout=5000)
    wait_edge_busy(page, "users-eu", "lb-eu", 30000)

    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "stopped", timeout=15000)
