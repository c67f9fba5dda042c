"""The stage page: a lesson's text, its steps with the session's progress, and its live lab."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _

from lessons.models import Lesson
from lessons.steps import steps_for_page
from visualizer.services import progress_for
from visualizer.texts import event_texts, kind_texts
from visualizer.workshops import participant_for_session


def lesson_detail(request: HttpRequest, slug: str) -> HttpResponse:
    lesson = get_object_or_404(Lesson, slug=slug)
    limit = settings.LAB_MAX_SECONDS
    # Labs belong to the browser's session, and the WebSocket needs its cookie: make sure it exists.
    if not request.session.session_key:
        request.session.save()
        request.session.modified = True
    participant = participant_for_session(request.session.session_key)
    locked = participant.workshop.locked_lesson if participant is not None else None
    if locked is not None and locked.pk != lesson.pk and not request.user.is_staff:
        # The instructor holds the room to one stage: the others wait.
        messages.info(request, _("Your instructor has asked everyone to stay on stage %(stage)s for now.")
                      % {"stage": locked.stage})
        return redirect("lesson", slug=locked.slug)
    return render(
        request,
        "lessons/lesson.html",
        {
            "lesson": lesson,
            "topology_json": json.dumps(lesson.topology),
            "ws_path": f"/ws/lab/{lesson.slug}/",
            # How long any lab lives (settings.LAB_MAX_SECONDS), said beside the Start button.
            "lab_max_hours": limit // 3600 if limit % 3600 == 0 else None,
            "lab_max_minutes": round(limit / 60),
            "event_texts": event_texts(),  # the event log's words, declared by the engine's kinds
            "kind_texts": kind_texts(),  # the words of the nodes' menus and boxes, likewise
            # The steps panel: text in the page's language; progress as the server recorded it.
            # Instructor notes go into the HTML for staff only, and never into the steps' JSON.
            "steps": steps_for_page(lesson, instructor=request.user.is_staff),
            "steps_data": {"lesson": lesson.slug, "steps": steps_for_page(lesson),
                           "progress": progress_for(session_key=request.session.session_key, lesson=lesson)},
        },
    )
