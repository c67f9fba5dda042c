"""Lessons in the admin: shown, never edited, so nothing reaches a stage page past the sanitiser.

The operator is pytest-django's admin_client (a superuser); the student an anonymous browser.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from lessons.loader import lessons_check
from lessons.models import Lesson
from lessons.services import lessons_load

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPT = "<script>alert(document.cookie)</script>"


@pytest.fixture
def lesson(db: None) -> Lesson:
    data, errors = lessons_check([FIXTURES / "valid.md"])
    assert not errors
    [(row, _)] = lessons_load(lessons=data)
    return row


def change_url(lesson: Lesson) -> str:
    return f"/admin/lessons/lesson/{lesson.pk}/change/"


def form_of(lesson: Lesson, **changes: str) -> dict[str, str]:
    """Every field of the lesson as an admin change form posts it (JSON fields as JSON)."""
    data = {}
    for field in Lesson._meta.concrete_fields:
        if field.primary_key:
            continue
        value = getattr(lesson, field.attname)
        if field.get_internal_type() == "JSONField":
            value = json.dumps(value)
        elif field.get_internal_type() == "BooleanField":
            if not value:
                continue
            value = "on"
        data[field.name] = "" if value is None else str(value)
    return {**data, **changes}


def scripted(lesson: Lesson) -> dict[str, str]:
    """The lesson's form with a script in each rendered-HTML field the stage page shows."""
    i18n = {**lesson.i18n, "en": {**lesson.i18n.get("en", {}), "body_html": SCRIPT}}
    return form_of(lesson, body_html=SCRIPT, i18n=json.dumps(i18n))


def test_it_ignores_rendered_html_posted_to_the_lesson_admin(admin_client: Client, lesson: Lesson) -> None:
    response = admin_client.post(change_url(lesson), scripted(lesson))
    assert response.status_code == 403
    lesson.refresh_from_db()
    assert SCRIPT not in lesson.body_html
    assert SCRIPT not in json.dumps(lesson.i18n)


def test_no_script_from_the_admin_reaches_the_stage_page(admin_client: Client, lesson: Lesson) -> None:
    admin_client.post(change_url(lesson), scripted(lesson))
    page = Client().get(f"/stage/{lesson.slug}/")
    assert page.status_code == 200
    assert "alert(document.cookie)" not in page.content.decode()


def test_it_shows_a_lesson_with_a_link_to_its_editor(admin_client: Client, lesson: Lesson) -> None:
    page = admin_client.get(change_url(lesson)).content.decode()
    assert lesson.title in page
    assert f'href="/stage/{lesson.slug}/edit/"' in page
    assert 'name="body_html"' not in page


def test_it_offers_no_lesson_to_add(admin_client: Client, lesson: Lesson) -> None:
    assert admin_client.get("/admin/lessons/lesson/add/").status_code == 403
