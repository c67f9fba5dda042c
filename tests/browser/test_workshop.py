"""A workshop in real Chromium: the instructor creates and opens it, two students join in browsers of
their own, one passes a step in a real lab, and the instructor's grid shows it without a reload."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.stack import Stack, wait_for

pytestmark = pytest.mark.browser
PASSWORD = "Workshop-teacher-2026"


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_an_instructor_watches_two_students_join_and_one_pass_a_step(page: Page, browser: Browser,
                                                                       live: Stack) -> None:
    live.shell("from django.contrib.auth.models import User\n"
               f"User.objects.filter(username='teacher').exists() or User.objects.create_superuser("
               f"'teacher', 'teacher@example.org', '{PASSWORD}')")
    page.goto(f"{live.url}/admin/login/?next=/workshops/")
    page.fill("#id_username", "teacher")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.get_by_test_id("workshop-form")).to_be_visible()

    page.fill("#id_title", "Tuesday class")
    page.locator("input[name=lessons]").first.check()  # stage 1: stages are listed in order
    page.fill("#id_cap", "10")
    page.fill("#id_pool_size", "1")  # one stage-1 lab started ahead, for the first to press Start
    page.get_by_test_id("workshop-create").click()
    page.get_by_test_id("open-workshop").click()
    expect(page.get_by_test_id("workshop-state")).to_have_text("Open")
    expect(page.get_by_test_id("join-qr")).to_be_visible()
    code = page.get_by_test_id("join-code-big").inner_text().strip()
    join_url = page.get_by_test_id("join-url").inner_text().strip()
    assert join_url.endswith(f"/join/{code}/")

    students = {}
    for nickname in ("Ana", "Ben"):
        context = browser.new_context()
        student = context.new_page()
        if nickname == "Ana":  # by the link (the QR's), the code filled in
            student.goto(join_url)
            expect(student.get_by_test_id("join-code")).to_have_value(code)
        else:  # by typing the code
            student.goto(f"{live.url}/join/")
            student.get_by_test_id("join-code").fill(code.lower())
        student.get_by_test_id("join-nickname").fill(nickname)
        student.get_by_test_id("join-submit").click()
        expect(student).to_have_url(f"{live.url}/stage/single-server/")
        expect(student.get_by_test_id("workshop-strip")).to_contain_text(f"You are {nickname}")
        students[nickname] = student

    grid = page.get_by_test_id("room-grid")
    expect(grid.locator("tr[data-participant=Ana]")).to_be_visible(timeout=10000)
    expect(grid.locator("tr[data-participant=Ben]")).to_be_visible()
    ana_start = grid.locator("tr[data-participant=Ana] td[data-step=start]")
    expect(ana_start).to_have_attribute("data-state", "current")

    # The pool's lab runs before anyone asks for it.
    def pool_labs(state: str) -> list[str]:
        return live.shell("from visualizer.models import Lab\n"
                          f"print('IDS', *(l.id for l in Lab.objects.filter(pool__startswith='workshop-', "
                          f"state='{state}')))").split("IDS")[-1].split()

    wait_for(lambda: len(pool_labs("running")) == 1, 30, "the pool's lab to run")
    [pooled] = pool_labs("running")

    # Ana starts her lab: the pool's, already running. The engine's check passes her first step.
    ana = students["Ana"]
    expect(ana.get_by_test_id("start-button")).to_be_enabled(timeout=10000)
    ana.get_by_test_id("start-button").click()
    expect(ana.get_by_test_id("step-start")).to_have_attribute("data-state", "done", timeout=30000)
    ana_lab = live.shell("from visualizer.models import Lab\n"
                         "print(Lab.objects.filter(session_key__startswith='pool-').count(), "
                         "Lab.objects.exclude(session_key__startswith='pool-').get().id)").split()[-1]
    assert ana_lab == pooled  # served from the pool, which refills behind her

    # The instructor's grid shows it live: passed, with the time it took; Ben's is still current.
    expect(ana_start).to_have_attribute("data-state", "passed", timeout=10000)
    expect(ana_start).to_contain_text(re.compile(r"✓ \d+ s"))
    expect(grid.locator("tr[data-participant=Ben] td[data-step=start]")).to_have_attribute("data-state", "current")
    expect(grid.locator("tr[data-participant=Ana] td.lab-up")).to_be_visible()

    # The broadcast form asks "by how many ms" only for a slow-down.
    expect(page.get_by_test_id("broadcast-ms")).to_be_hidden()
    page.get_by_test_id("broadcast-action").select_option("slow")
    expect(page.get_by_test_id("broadcast-ms")).to_be_visible()
    page.get_by_test_id("broadcast-action").select_option("kill")
    expect(page.get_by_test_id("broadcast-ms")).to_be_hidden()

    # An announcement reaches both students' pages without a reload.
    page.get_by_test_id("announce-text").fill("Stop here: we discuss DNS")
    page.get_by_test_id("announce-send").click()
    for student in students.values():
        expect(student.get_by_test_id("announcement")).to_have_text("Stop here: we discuss DNS", timeout=10000)
    screenshot(page, "workshop-room.png")

    # Clicking Ana's nickname opens her lab read-only, live.
    href = grid.locator("tr[data-participant=Ana] a[data-testid=watch-link]").get_attribute("href")
    watch = page.context.new_page()
    watch.goto(f"{live.url}{href}")
    expect(watch.get_by_text("Watching Ana — read-only")).to_be_visible()
    expect(watch.get_by_test_id("lab-state")).to_have_attribute("data-state", "running", timeout=10000)
    expect(watch.get_by_test_id("start-button")).to_have_count(0)
    watch.close()
    screenshot(ana, "workshop-student.png")

    # Ending it stops Ana's lab; her page says the lab stopped.
    page.get_by_test_id("end-workshop").click()
    expect(page.get_by_test_id("workshop-state")).to_have_text("Ended")
    expect(ana.get_by_test_id("lab-state")).to_have_attribute("data-state", "stopped", timeout=15000)
    for student in students.values():
        student.context.close()
