"""Standing actors for lab tests: a runnable lesson, and two browser sessions (alice and bob)."""

from __future__ import annotations

from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore

from core.asgi import application
from lessons.loader import lessons_check
from lessons.models import Lesson
from lessons.services import lessons_load

FIXTURES = Path(__file__).parent.parent / "lessons" / "fixtures"


@pytest.fixture
def lesson(transactional_db: None) -> Lesson:
    data, errors = lessons_check([FIXTURES / "valid.md", FIXTURES / "later.md"])
    assert not errors
    lessons_load(lessons=data)
    return Lesson.objects.get(slug="fixture-single")


def session_create() -> str:
    store = SessionStore()
    store.create()
    return store.session_key


@pytest.fixture
def alice(transactional_db: None) -> str:
    return session_create()


@pytest.fixture
def bob(transactional_db: None) -> str:
    return session_create()


def communicator(session_key: str | None, slug: str = "fixture-single") -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    return WebsocketCommunicator(application, f"/ws/lab/{slug}/", headers=headers)
