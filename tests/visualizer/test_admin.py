"""Labs and progress in the admin: a student's session key never shows, a short tag does.

The key is what the student's browser holds; anyone who reads it can act as that student.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from lessons.models import Lesson
from visualizer.models import Lab, Progress, session_tag

KEY = "q7wz2mdk9vxa4lr8yt0cbe5nh3jf6sgu"  # as Django makes them: 32 characters


@pytest.fixture
def lab(lesson: Lesson) -> Lab:
    return Lab.objects.create(session_key=KEY, lesson=lesson, network="127.31.7", state=Lab.State.RUNNING)


@pytest.fixture
def progress(lesson: Lesson) -> Progress:
    return Progress.objects.create(session_key=KEY, lesson=lesson, step_id="start", passed_at=timezone.now())


def assert_no_key(page: str) -> None:
    assert KEY[:8] not in page and KEY[-8:] not in page
    assert session_tag(KEY) in page


@pytest.mark.parametrize("path", ["/admin/visualizer/lab/", "/admin/visualizer/lab/{id}/change/"])
def test_it_never_shows_a_labs_session_key(admin_client: Client, lab: Lab, path: str) -> None:
    response = admin_client.get(path.format(id=lab.pk))
    assert response.status_code == 200
    assert_no_key(response.content.decode())


@pytest.mark.parametrize("path", ["/admin/visualizer/progress/", "/admin/visualizer/progress/{id}/change/"])
def test_it_never_shows_a_progress_rows_session_key(admin_client: Client, progress: Progress, path: str) -> None:
    response = admin_client.get(path.format(id=progress.pk))
    assert response.status_code == 200
    assert_no_key(response.content.decode())


def test_the_tag_cannot_be_read_back_as_the_key() -> None:
    assert session_tag(KEY) != KEY[:8]
    assert len(session_tag(KEY)) == 8


def test_it_edits_no_lab(admin_client: Client, lab: Lab) -> None:
    response = admin_client.post(f"/admin/visualizer/lab/{lab.pk}/change/", {"state": "stopped", "session_key": "x"})
    assert response.status_code == 403
    lab.refresh_from_db()
    assert (lab.state, lab.session_key) == (Lab.State.RUNNING, KEY)
