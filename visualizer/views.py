"""The stage page: a lesson's text, its steps with the session's progress, and its live lab; and the
same page read-only, for staff watching one student's lab."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _

from lessons.models import Lesson
from lessons.steps import steps_for_page
from visualizer.context import participant_of
from visualizer.models import Lab
from visualizer.services import progress_for
from visualizer.texts import event_texts, kind_texts
from visualizer.workshops import held_elsewhere

WATCH_NAME_CHARS = 80  # a participant's nickname, as the workshop page passes it


def lesson_detail(request: HttpRequest, slug: str) -> HttpResponse:
    lesson = get_object_or_404(Lesson, slug=slug)
    # Labs belong to the browser's session, and the WebSocket needs its cookie: make sure it exists.
    if not request.session.session_key:
        request.session.save()
        request.session.modified = True
    locked = held_elsewhere(participant_of(request), lesson, staff=request.user.is_staff)
    if locked is not None:
        # The instructor holds the room to one stage: the others wait (and cannot start a lab there
        # either: workshops.start_terms refuses it).
        messages.info(request, _("Your instructor has asked everyone to stay on stage %(stage)s for now.")
                      % {"stage": locked.stage})
        return redirect("lesson", slug=locked.slug)
    return render(request, "lessons/lesson.html", _page(
        request, lesson, ws_path=f"/ws/lab/{lesson.slug}/", session_key=request.session.session_key))


@staff_member_required
def lab_watch(request: HttpRequest, lab_id: uuid.UUID) -> HttpResponse:
    """One student's lab, live and read-only: no controls here, and its socket refuses commands."""
    lab = get_object_or_404(Lab.objects.select_related("lesson"), pk=lab_id)
    name = request.GET.get("name", "").strip()[:WATCH_NAME_CHARS]
    context = _page(request, lab.lesson, ws_path=f"/ws/watch/{lab.id}/", session_key=lab.session_key)
    return render(request, "lessons/lesson.html", context | {"readonly": True, "watch_name": name,
                                                             "watch_lab": str(lab.id)[:8]})


def _page(request: HttpRequest, lesson: Lesson, *, ws_path: str, session_key: str) -> dict[str, Any]:
    """The stage page's context; progress is ``session_key``'s (the visitor's, or the watched lab's)."""
    limit = settings.LAB_MAX_SECONDS
    return {
        "lesson": lesson,
        "topology_json": json.dumps(lesson.topology),
        "ws_path": ws_path,
        # How long any lab lives (settings.LAB_MAX_SECONDS), said beside the Start button.
        "lab_max_hours": limit // 3600 if limit % 3600 == 0 else None,
        "lab_max_minutes": round(limit / 60),
        "event_texts": event_texts(),  # the event log's words, declared by the engine's kinds
        "kind_texts": kind_texts(),  # the words of the nodes' menus and boxes, likewise
        # The steps panel: text in the page's language; progress as the server recorded it.
        # Instructor notes go into the HTML for staff only, and never into the steps' JSON.
        "steps": steps_for_page(lesson, instructor=request.user.is_staff),
        "steps_data": {"lesson": lesson.slug, "steps": steps_for_page(lesson),
                       "progress": progress_for(session_key=session_key, lesson=lesson)},
    }
