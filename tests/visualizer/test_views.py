"""The stage page says how long any lab lives (settings.LAB_MAX_SECONDS), in the page's language."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from lessons.models import Lesson


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
