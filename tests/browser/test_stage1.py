"""A student runs stage 1 in real Chromium: start, watch traffic, kill the server, restart it."""

from __future__ import annotations

import re

import psutil
import pytest
from playwright.sync_api import Page, expect

from tests.stack import Stack
from tests.visualizer.test_worker import owners

pytestmark = pytest.mark.browser


def number(page: Page, selector: str) -> float:
    text = page.locator(selector).inner_text().strip()
    match = re.match(r"[\d.]+", text)
    return float(match.group()) if match else 0.0


def wait_number(page: Page, selector: str, predicate, timeout_ms: int = 15000) -> None:
    page.wait_for_function(
        """([sel, fn]) => { const t = document.querySelector(sel)?.textContent || '';
                            const v = parseFloat(t); return !isNaN(v) && eval(fn)(v); }""",
        arg=[selector, predicate], timeout=timeout_ms)


def test_a_student_runs_stage_1_kills_the_server_and_recovers(page: Page, live: Stack) -> None:
    page.goto(f"{live.url}/stage/single-server/")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    start = page.get_by_test_id("start-button")
    expect(start).to_be_enabled(timeout=10000)
    start.click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=30000)
    # Real addresses, from the running lab.
    expect(page.get_by_test_id("node-web-addr")).to_contain_text(re.compile(r"127\.\d+\.\d+\.80:8080"))

    # Traffic flows: the counter rises and dots run along the edges.
    wait_number(page, "#total-rps", "v => v > 1")
    expect(page.get_by_test_id("dot").first).to_be_attached(timeout=10000)
    # A page read (one request in ten is a log-in, a POST: that one would say POST).
    page.get_by_test_id("recent-requests").locator("li", has_text="GET").first.click()
    expect(page.get_by_test_id("request-detail")).to_contain_text("GET")

    # Kill the one web server: the whole site fails.
    page.get_by_test_id("node-web").click()
    page.get_by_test_id("node-menu-kill").click()
    expect(page.get_by_test_id("node-web-state")).to_have_text(re.compile("down", re.I), timeout=5000)
    wait_number(page, "#total-err", "v => v > 0.5")
    assert number(page, "#total-rps") > 0  # clients keep trying

    # A reload resumes the same lab, still showing the outage.
    page.reload()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=10000)
    expect(page.get_by_test_id("node-web-state")).to_have_text(re.compile("down", re.I), timeout=5000)

    # Restart: errors stop.
    page.get_by_test_id("node-web").click()
    page.get_by_test_id("node-menu-restart").click()
    expect(page.get_by_test_id("node-web-state")).to_have_text(re.compile("up", re.I), timeout=5000)
    wait_number(page, "#total-err", "v => v === 0", timeout_ms=10000)

    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "stopped", timeout=10000)


def test_a_student_is_told_when_the_worker_hosting_their_lab_dies(page: Page, live: Stack) -> None:
    page.goto(f"{live.url}/stage/single-server/")
    expect(page.get_by_test_id("lab-limit")).to_have_text("Labs stop after 2 h")  # LAB_MAX_SECONDS
    page.get_by_test_id("start-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=30000)
    address = (page.get_by_test_id("node-web-addr").text_content() or "").split(":")[0]
    [host] = owners(address.rsplit(".", 1)[0])
    psutil.Process(host).kill()  # the pool process hosting this lab, as the OOM killer would

    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "lost", timeout=20000)
    expect(page.locator("#lab-message")).to_have_text("lost: the worker hosting this lab stopped; start again")
    start = page.get_by_test_id("start-button")
    expect(start).to_be_enabled()
    start.click()  # the worker replaced its pool process
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=30000)
    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "stopped", timeout=10000)
