"""The stage page says how long any lab lives (settings.LAB_MAX_SECONDS), in the page's language."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from lessons.loader import lessons_check
from lessons.models import Lesson
from lessons.services import lessons_load
from visualizer.models import Lab

STAGE_1 = Path(django_settings.BASE_DIR) / "lessons" / "content" / "01-single-server.md"


def limit_note(client: Client) -> str:
    html = client.get("/stage/fixture-single/").content.decode()
    match = re.search(r'data-testid="lab-limit">([^<]*)<', html)
    assert match, "no lifetime note beside the Start button"
    return match.group(1)


def test_it_says_labs_stop_after_two_hours_by_default(client: Client, lesson: Lesson) -> None:
    assert limit_note(client) == "Labs stop after 2 h"


def test_it_says_it_in_bulgarian(client: Client, lesson: Lesson) -> None:
    client.cookies[django_settings.LANGUAGE_COOKIE_NAME] = "bg"
    assert limit_note(client) == "Лабораториите спират след 2 ч"


@pytest.mark.parametrize(("seconds", "note"), [(5400, "Labs stop after 90 min"), (3600, "Labs stop after 1 h")])
def test_it_follows_the_setting(client: Client, lesson: Lesson, settings: Any, seconds: int, note: str) -> None:
    settings.LAB_MAX_SECONDS = seconds
    assert limit_note(client) == note


# ---- the watch page: one student's lab, read-only, for staff ------------------------------------


CONTROLS = ('id="start-button"', 'id="stop-button"', 'id="traffic-rate"', 'id="node-menu"',
            'class="btn check-now"', 'class="predict-input"')


@pytest.fixture
def watched(transactional_db: None) -> str:
    """A student's lab on stage 1 (its steps have checks and predictions), as /watch/<lab_id>/.
    The row alone: the page needs no worker."""
    data, errors = lessons_check([STAGE_1])
    assert not errors
    [(lesson, _)] = lessons_load(lessons=data)
    lab = Lab.objects.create(session_key="s" * 32, lesson=lesson, network="127.9.9")
    return f"/watch/{lab.id}/"


def test_the_watch_page_sends_anonymous_visitors_to_sign_in(client: Client, watched: str) -> None:
    response = client.get(watched)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_the_watch_page_refuses_a_signed_in_user_who_is_not_staff(
    client: Client, watched: str, django_user_model: Any
) -> None:
    client.force_login(django_user_model.objects.create_user("student", password="pw"))
    response = client.get(watched)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert b"data-readonly" not in response.content


def test_staff_get_the_lab_read_only(admin_client: Client, watched: str) -> None:
    html = admin_client.get(watched + "?name=<b>Ana</b>").content.decode()
    assert 'data-readonly="1"' in html and f'data-ws-path="/ws/watch/{watched.split("/")[2]}/"' in html
    assert "Watching &lt;b&gt;Ana&lt;/b&gt; — read-only" in html  # the nickname, escaped
    student = admin_client.get("/stage/single-server/").content.decode()
    for control in CONTROLS:
        assert control in student and control not in html, control


def test_staff_without_a_name_see_which_lab(admin_client: Client, watched: str) -> None:
    html = admin_client.get(watched).content.decode()
    assert f"Watching lab {watched.split('/')[2][:8]} — read-only" in html


def test_the_watch_page_is_404_for_an_unknown_lab(admin_client: Client, lesson: Lesson) -> None:
    assert admin_client.get("/watch/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_the_watch_banner_speaks_bulgarian(admin_client: Client, watched: str) -> None:
    admin_client.cookies[django_settings.LANGUAGE_COOKIE_NAME] = "bg"
    assert "Наблюдаваш Ana — само за четене" in admin_client.get(watched + "?name=Ana").content.decode()
