"""Pages: the stage list and a stage page (which must hand the browser a session)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from lessons.loader import lessons_check
from lessons.models import Lesson
from lessons.services import lessons_load

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def lessons(db: None) -> list[Lesson]:
    data, errors = lessons_check([FIXTURES / "later.md", FIXTURES / "valid.md"])
    assert not errors
    return [lesson for lesson, _ in lessons_load(lessons=data)]


def test_it_lists_stages_in_order(client: Client, lessons: list[Lesson]) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert [lesson.slug for lesson in response.context["lessons"]] == ["fixture-single", "fixture-later"]


def test_it_shows_a_stage_with_its_topology_and_socket_path(client: Client, lessons: list[Lesson]) -> None:
    response = client.get("/stage/fixture-single/")
    assert response.status_code == 200
    assert response.context["ws_path"] == "/ws/lab/fixture-single/"
    assert json.loads(response.context["topology_json"])["domain"] == "www.scalelab.test"


def test_it_gives_the_browser_a_session(client: Client, lessons: list[Lesson]) -> None:
    response = client.get("/stage/fixture-single/")
    assert response.cookies["sessionid"].value


def test_it_passes_null_topology_for_a_stage_without_lab(client: Client, lessons: list[Lesson]) -> None:
    response = client.get("/stage/fixture-later/")
    assert response.context["topology_json"] == "null"


def test_it_404s_for_an_unknown_stage(client: Client, lessons: list[Lesson]) -> None:
    assert client.get("/stage/nope/").status_code == 404
