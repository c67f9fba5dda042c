"""Pages: the course's stages, and one stage with its lesson text and live lab diagram."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from lessons.models import Lesson
from lessons.steps import steps_for_page
from visualizer.services import progress_for


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html", {"lessons": Lesson.objects.order_by("stage", "slug")})


def lesson_detail(request: HttpRequest, slug: str) -> HttpResponse:
    lesson = get_object_or_404(Lesson, slug=slug)
    # Labs belong to the browser's session, and the WebSocket needs its cookie: make sure it exists.
    if not request.session.session_key:
        request.session.save()
        request.session.modified = True
    return render(
        request,
        "lessons/lesson.html",
        {
            "lesson": lesson,
            "topology_json": json.dumps(lesson.topology),
            "ws_path": f"/ws/lab/{lesson.slug}/",
            # The steps panel: text in the page's language; progress as the server recorded it.
            "steps": (steps := steps_for_page(lesson)),
            "steps_data": {"lesson": lesson.slug, "steps": steps,
                           "progress": progress_for(session_key=request.session.session_key, lesson=lesson)},
        },
    )
