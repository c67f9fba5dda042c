"""Writes for lessons: upsert validated lesson files into the database."""

from __future__ import annotations

from dataclasses import asdict

from django.db import transaction

from lessons.loader import LessonData
from lessons.models import Lesson


@transaction.atomic
def lessons_load(*, lessons: list[LessonData]) -> list[tuple[Lesson, bool]]:
    """Upsert lessons by slug (the front matter id); returns (lesson, created) pairs.

    The caller validates every file first: loading is all or nothing.
    """
    out = []
    for data in lessons:
        fields = asdict(data)
        slug = fields.pop("slug")
        out.append(Lesson.objects.update_or_create(slug=slug, defaults=fields))
    return out
