"""A student kills the primary database in real Chromium and sees a replica promoted (stage 5)."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from tests.stack import Stack

pytestmark = pytest.mark.browser

BADGE = '[data-testid="node-{}"] .role-badge'


def test_a_student_kills_the_primary_and_sees_a_replica_promoted(page: Page, live: Stack) -> None:
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{live.url}/stage/database-replication/")
    start = page.get_by_test_id("start-button")
    expect(start).to_be_enabled(timeout=10000)
    start.click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=30000)

    # The read/write split and the cluster as the frames describe it.
    expect(page.locator(BADGE.format("db-1"))).to_have_text("PRIMARY", timeout=10000)
    expect(page.locator(BADGE.format("db-2"))).to_have_text("REPLICA")
    expect(page.get_by_test_id("replication-db-1-db-2")).to_be_attached()
    expect(page.get_by_test_id("replication-db-1-db-3")).to_be_attached()
    if os.environ.get("SCREENSHOT_DIR"):
        page.wait_for_timeout(1500)
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "stage5-before.png"), full_page=True)

    # Scale out live: a replica like db-2 joins; the diagram re-lays itself out without a reload.
    page.get_by_test_id("node-db-2").click()
    page.get_by_test_id("node-menu-add").click()
    expect(page.get_by_test_id("node-db-4")).to_be_attached(timeout=10000)
    expect(page.locator(BADGE.format("db-4"))).to_have_text("REPLICA", timeout=10000)
    expect(page.get_by_test_id("replication-db-1-db-4")).to_be_attached()
    expect(page.get_by_test_id("node-db-4-state")).to_have_text(re.compile("up", re.I), timeout=10000)

    # The workload is the student's to change: half of the phone's requests become writes.
    page.get_by_test_id("node-phone").click()
    page.get_by_test_id("node-menu-writes").select_option("0.5")
    expect(page.get_by_test_id("node-phone")).to_contain_text("writes 50 %", timeout=5000)

    # Kill the primary from the diagram.
    page.get_by_test_id("node-db-1").click()
    page.get_by_test_id("node-menu-kill").click()
    expect(page.get_by_test_id("node-db-1-state")).to_have_text(re.compile("down", re.I), timeout=5000)

    # Within the detection delay (3 s here) one replica is promoted and the other follows it.
    page.wait_for_function(
        """() => ['db-2', 'db-3'].some((id) =>
             document.querySelector(`[data-testid="node-${id}"] .role-badge`)?.textContent === 'PRIMARY')""",
        timeout=20000,
    )
    new = "db-2" if page.locator(BADGE.format("db-2")).text_content() == "PRIMARY" else "db-3"
    for other in {"db-2", "db-3", "db-4"} - {new}:
        expect(page.get_by_test_id(f"replication-{new}-{other}")).to_be_attached(timeout=5000)
    expect(page.get_by_test_id("replication-db-1-db-2")).to_have_count(0)
    # Worded as the engine declares the event (core/engine/kinds.py), not as a raw kind name.
    expect(page.locator("#event-log, [data-testid=event-log]").first).to_contain_text(
        f"{new} promoted to primary in place of db-1", timeout=5000)
    if os.environ.get("SCREENSHOT_DIR"):
        page.wait_for_timeout(1500)
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "stage5-promoted.png"), full_page=True)

    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "stopped", timeout=10000)
