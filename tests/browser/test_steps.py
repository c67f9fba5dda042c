"""A student, in Bulgarian, completes stage 1's first step by starting the lab and sees it marked done."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.stack import Stack

pytestmark = pytest.mark.browser


def test_a_student_completes_a_step_by_acting_in_the_lab_in_bulgarian(page: Page, live: Stack) -> None:
    page.context.add_cookies([{"name": "django_language", "value": "bg",
                               "domain": urlsplit(live.url).hostname, "path": "/"}])
    # The prediction typed for the DNS step (kept in the browser), to compare with the measurement.
    page.goto(f"{live.url}/stage/single-server/")
    page.evaluate("localStorage.setItem('scalelab:predict:single-server:dns', '0.4')")
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "bg")

    start_step = page.get_by_test_id("step-start")
    expect(start_step).to_have_attribute("data-state", "current")
    expect(page.get_by_test_id("step-dns")).to_have_attribute("data-state", "locked")
    check_now = page.get_by_test_id("check-now-start")
    expect(check_now).to_have_text("Провери сега")

    # "Check now" before the lab runs answers on the page, without asking the server.
    expect(page.get_by_test_id("start-button")).to_be_enabled(timeout=10000)
    check_now.click()
    expect(page.get_by_test_id("verdict-start")).not_to_be_empty()

    # Acting in the lab: start it. The server sees traffic for 3 s and marks the step done.
    page.get_by_test_id("start-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=30000)
    expect(start_step).to_have_attribute("data-state", "done", timeout=20000)
    expect(page.get_by_test_id("step-done-start")).to_contain_text(re.compile(r"✓.*\d"))
    # The next step unlocks (and, with DNS answers already flowing, may be done by now too).
    expect(page.get_by_test_id("step-dns")).to_have_attribute("data-state", re.compile("current|done"))
    expect(page.get_by_test_id("step-load-150")).to_have_attribute("data-state", "locked")

    # Once the DNS step passes, the prediction stands beside the measured value.
    expect(page.get_by_test_id("step-dns")).to_have_attribute("data-state", "done", timeout=20000)
    expect(page.get_by_test_id("predict-result-dns")).to_contain_text("0.4")
    # "Check now" on the current step: the engine's verdict, with the hint its condition picks.
    load_check = page.get_by_test_id("check-now-load-100")
    expect(load_check).to_be_visible()
    load_check.click()
    verdict = page.get_by_test_id("verdict-load-100")
    expect(verdict).to_have_attribute("data-passed", "false", timeout=5000)
    expect(page.get_by_test_id("hint-load-100")).not_to_be_empty()

    # Progress lives on the server: a reload still shows the steps done.
    page.reload()
    expect(start_step).to_have_attribute("data-state", "done", timeout=10000)
    expect(page.get_by_test_id("step-done-start")).to_contain_text("✓")
    expect(page.get_by_test_id("step-load-100")).to_have_attribute("data-state", "current")
