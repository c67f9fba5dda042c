"""Staff watch a student's stage 1 lab in another browser: live, read-only, and refused if they try."""

from __future__ import annotations

import os
import re
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_stage1 import wait_number
from tests.stack import Stack

pytestmark = pytest.mark.browser


def staff_page(browser: Browser, live: Stack, path: str) -> Page:
    """A second browser (its own cookies), signed in through the admin's form as a staff user."""
    live.shell("from django.contrib.auth.models import User; "
               "User.objects.filter(username='teacher').exists() or "
               "User.objects.create_user('teacher', password='watch-pw', is_staff=True)")
    page = browser.new_context().new_page()
    page.goto(f"{live.url}/admin/login/?next={quote(path)}")
    page.fill("#id_username", "teacher")
    page.fill("#id_password", "watch-pw")
    page.click("input[type=submit]")
    return page


def test_staff_watch_a_students_lab_live_and_read_only(page: Page, browser: Browser, live: Stack) -> None:
    page.goto(f"{live.url}/stage/single-server/")
    start = page.get_by_test_id("start-button")
    expect(start).to_be_enabled(timeout=10000)
    start.click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=30000)
    lab_id = page.evaluate("window.scaleLab.store.labId")

    watch = staff_page(browser, live, f"/watch/{lab_id}/?name=Ana")
    try:
        expect(watch.get_by_test_id("watch-banner")).to_have_text("Watching Ana — read-only", timeout=10000)
        expect(watch.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=10000)
        # Live: frames keep coming, the counters move and dots run along the edges.
        first = watch.evaluate("window.scaleLab.store.lastSeq")
        watch.wait_for_function("s => window.scaleLab.store.lastSeq > s + 2", arg=first, timeout=10000)
        wait_number(watch, "#total-rps", "v => v > 1")
        expect(watch.get_by_test_id("node-web-addr")).to_contain_text(re.compile(r"127\.\d+\.\d+\.80:8080"))
        expect(watch.get_by_test_id("dot").first).to_be_attached(timeout=10000)
        # The student's progress (stage 1's first step passes once the lab runs).
        expect(watch.get_by_test_id("step-start")).to_have_attribute("data-state", "done", timeout=20000)

        # No controls: no Start/Stop, no traffic, no "Check now", and a node opens no menu.
        for testid in ("start-button", "stop-button", "traffic-rate", "check-now-load-100", "predict-dns"):
            expect(watch.get_by_test_id(testid)).to_have_count(0)
        watch.get_by_test_id("node-web").click()
        expect(watch.locator("#node-menu, [data-testid^=node-menu-]")).to_have_count(0)

        # What the student does shows up here: they kill the web server.
        page.get_by_test_id("node-web").click()
        page.get_by_test_id("node-menu-kill").click()
        expect(watch.get_by_test_id("node-web-state")).to_have_text(re.compile("down", re.I), timeout=5000)
        if os.environ.get("SCREENSHOT_DIR"):
            os.makedirs(os.environ["SCREENSHOT_DIR"], exist_ok=True)
            watch.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "watch-read-only.png"), full_page=True)

        # A command sent by hand on the watch socket is refused by the server, and the lab runs on.
        watch.evaluate("window.scaleLab.socket.send({action: 'stop'})")
        expect(watch.locator("#toasts")).to_contain_text("this view is read-only: commands are refused")
        watch.wait_for_timeout(1500)
        expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "running")
        assert live.lab_state(lab_id) == "running"
    finally:
        watch.context.close()
    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("lab-state")).to_have_attribute("data-state", "stopped", timeout=10000)


def test_a_student_cannot_open_the_watch_page(page: Page, live: Stack) -> None:
    page.goto(f"{live.url}/stage/single-server/")
    page.goto(f"{live.url}/watch/00000000-0000-0000-0000-000000000000/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next="))
