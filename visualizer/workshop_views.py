"""Workshop pages: joining (students), and the instructor's control room, grid, projector and CSV.

Students need no account: joining binds their browser session to a nickname. Every instructor
page is staff-only; the JSON the grid and projector poll is too.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import segno
from django import forms
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from core.engine.commands import CommandError
from lessons.models import Lesson
from visualizer import workshops
from visualizer.models import Workshop


def _session_key(request: HttpRequest) -> str:
    if not request.session.session_key:
        request.session.save()
    return request.session.session_key


# Students ---------------------------------------------------------------------------------------
def join(request: HttpRequest, code: str = "") -> HttpResponse:
    """The join form (code and nickname); the QR code's link fills the code in."""
    error = ""
    code = workshops.normalise_code(request.POST.get("code", code))
    nickname = request.POST.get("nickname", "")
    workshop = None
    if code:
        try:
            workshop = workshops.workshop_by_code(code)
        except workshops.JoinRefused as exc:
            error = str(exc)
    if request.method == "POST" and not error:
        try:
            participant = workshops.participant_join(code=code, nickname=nickname,
                                                     session_key=_session_key(request))
        except workshops.JoinRefused as exc:
            error = str(exc)
        else:
            first = workshops.first_lesson(participant.workshop)
            return redirect("lesson", slug=first.slug) if first is not None else redirect("home")
    return render(request, "workshops/join.html", {"code": code, "nickname": nickname, "error": error,
                                                   "workshop": workshop}, status=400 if error else 200)


def live(request: HttpRequest) -> JsonResponse:
    """What a participant's page polls: the banner and the lock (null outside a workshop)."""
    participant = workshops.participant_for_session(request.session.session_key)
    return JsonResponse({"workshop": workshops.live_state(participant.workshop) if participant else None})


@require_POST
def predict(request: HttpRequest, slug: str) -> JsonResponse:
    """Keep a session's prediction for a step (the projector sets it beside what was measured)."""
    lesson = get_object_or_404(Lesson, slug=slug)
    try:
        data = json.loads(request.body or b"{}")
        step, value = str(data["step"]), float(data["value"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "send {\"step\": ID, \"value\": NUMBER}"}, status=400)
    if step not in {s.get("id") for s in lesson.steps or []} or value != value or abs(value) > 1e12:
        return JsonResponse({"error": "no such step, or not a number"}, status=400)
    workshops.prediction_save(session_key=_session_key(request), lesson=lesson, step_id=step, value=value)
    return JsonResponse({"ok": True})


# Instructors ------------------------------------------------------------------------------------
class WorkshopForm(forms.Form):
    title = forms.CharField(max_length=120, label=gettext_lazy("Title"))
    lessons = forms.ModelMultipleChoiceField(queryset=Lesson.objects.filter(topology__isnull=False),
                                             widget=forms.CheckboxSelectMultiple, label=gettext_lazy("Stages"))
    cap = forms.IntegerField(min_value=1, max_value=500, initial=30, label=gettext_lazy("Participants at most"))
    hours = forms.FloatField(min_value=0.25, max_value=24 * 7, initial=3, label=gettext_lazy("Open for (hours)"))
    pool_size = forms.IntegerField(min_value=0, max_value=200, required=False,
                                   label=gettext_lazy("Labs started ahead (hot pool)"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Blank by default, so the pool follows whatever cap is typed (workshops.workshop_pool_size).
        field = self.fields["pool_size"]
        field.widget.attrs["placeholder"] = _("sized to the room")
        field.help_text = _("Leave it blank to start %(share)s of the participants' labs ahead, at most %(max)s; "
                            "0 turns hot start off.") % {"share": f"{settings.WORKSHOP_POOL_SHARE:.0%}",
                                                         "max": settings.WORKSHOP_POOL_MAX}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("pool_size") is None and data.get("cap") is not None:
            data["pool_size"] = workshops.workshop_pool_size(cap=data["cap"])
        return data


@staff_member_required
def workshop_list(request: HttpRequest) -> HttpResponse:
    form = WorkshopForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        workshop = workshops.workshop_create(
            title=data["title"], lessons=list(data["lessons"]), cap=data["cap"],
            ends_at=timezone.now() + timedelta(hours=data["hours"]), pool_size=data["pool_size"],
            user=request.user)
        return redirect("workshop", pk=workshop.pk)
    return render(request, "workshops/list.html", {"form": form, "workshops": Workshop.objects.all()[:50]})


def _join_url(request: HttpRequest, workshop: Workshop) -> str:
    return request.build_absolute_uri(reverse("join-code", args=[workshop.code]))


def _lesson_of(request: HttpRequest, workshop: Workshop) -> Lesson | None:
    """The stage the instructor looks at: ?lesson=, else the locked one, else the first."""
    lessons = workshops.workshop_lessons(workshop)
    wanted = request.GET.get("lesson")
    for lesson in lessons:
        if lesson.slug == wanted:
            return lesson
    if workshop.locked_lesson_id:
        return next((lesson for lesson in lessons if lesson.pk == workshop.locked_lesson_id), None)
    return lessons[0] if lessons else None


@staff_member_required
def workshop_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The control room: open and end, the join code and QR, announcement, lock, broadcast, grid."""
    workshop = get_object_or_404(Workshop, pk=pk)
    message = ""
    if request.method == "POST":
        message = _control(request, workshop)
        workshop.refresh_from_db()
    expired = workshops.workshop_expire_if_due(workshop)
    if expired is not None:
        message = _("The workshop's time is up, so it has ended; %(n)d labs were stopped.") % {"n": expired}
    lesson = _lesson_of(request, workshop)
    nodes = [n["id"] for n in (lesson.topology or {}).get("nodes", [])] if lesson else []
    regions = dict((lesson.topology or {}).get("regions") or {}) if lesson else {}
    return render(request, "workshops/detail.html", {
        "workshop": workshop, "lessons": workshops.workshop_lessons(workshop), "lesson": lesson,
        "join_url": _join_url(request, workshop), "is_open": workshops.is_open(workshop),
        "message": message, "nodes": nodes, "regions": regions, "broadcasts": workshop.broadcasts.all()[:5],
        "grid_url": reverse("workshop-grid", args=[workshop.pk]) + (f"?lesson={lesson.slug}" if lesson else ""),
    })


def _control(request: HttpRequest, workshop: Workshop) -> str:
    action = request.POST.get("do")
    if action == "open":
        workshops.workshop_open(workshop)
        return _("The workshop is open: students can join.")
    if action == "end":
        stopped = workshops.workshop_end(workshop)
        return _("The workshop has ended; %(n)d labs were stopped.") % {"n": stopped}
    if action == "announce":
        workshops.workshop_announce(workshop, request.POST.get("text", ""))
        return _("Announcement sent.") if request.POST.get("text", "").strip() else _("Announcement cleared.")
    if action == "lock":
        slug = request.POST.get("lesson") or ""
        lesson = Lesson.objects.filter(slug=slug).first() if slug else None
        try:
            workshops.workshop_lock(workshop, lesson)
        except ValueError as exc:
            return str(exc)
        if lesson is None:
            return _("The room runs free.")
        return _("The room is held to stage %(stage)s.") % {"stage": lesson.stage}
    if action == "broadcast":
        command: dict[str, Any] = {"action": request.POST.get("action")}
        if command["action"] in ("outage", "recover"):  # a whole data centre: the region form
            command["region"] = request.POST.get("region")
            if command["action"] == "outage":
                command["mode"] = request.POST.get("mode") or "down"
        else:
            command["node"] = request.POST.get("node")
        if command["action"] == "slow":
            try:
                command["ms"] = float(request.POST.get("ms") or 0)
            except ValueError:
                return _("Slow by how many milliseconds?")
        try:
            sent = workshops.broadcast_fault(workshop, command, label=request.POST.get("label", ""))
        except CommandError as exc:
            return str(exc)
        count = sum(outcome == "sent" for outcome in sent.delivered.values())
        return _("Sent to %(n)d labs.") % {"n": count}
    return ""


@staff_member_required
def workshop_grid(request: HttpRequest, pk: int) -> JsonResponse:
    """The grid's data, polled every few seconds by the control room, with the last broadcast's recovery."""
    workshop = get_object_or_404(Workshop, pk=pk)
    workshops.workshop_expire_if_due(workshop)
    lesson = _lesson_of(request, workshop)
    if lesson is None:
        return JsonResponse({"rows": [], "steps": []})
    data = workshops.grid(workshop, lesson)
    last = workshop.broadcasts.first()
    if last is not None:
        target = last.command.get("node") or last.command.get("region", "")  # a node's fault, or a region's
        data["broadcast"] = {"label": last.label or f"{last.command['action']} {target}",
                             "sent_at": last.sent_at.timestamp(), "labs": workshops.broadcast_recovery(last)}
    return JsonResponse(data)


@staff_member_required
def workshop_projector(request: HttpRequest, pk: int) -> HttpResponse:
    workshop = get_object_or_404(Workshop, pk=pk)
    workshops.workshop_expire_if_due(workshop)
    lesson = _lesson_of(request, workshop)
    if request.GET.get("format") == "json":
        return JsonResponse(workshops.projector(workshop, lesson) if lesson else {"steps": []})
    return render(request, "workshops/projector.html", {
        "workshop": workshop, "lesson": lesson, "join_url": _join_url(request, workshop),
        "data_url": reverse("workshop-projector", args=[workshop.pk]) + "?format=json"
                    + (f"&lesson={lesson.slug}" if lesson else "")})


@staff_member_required
def workshop_qr(request: HttpRequest, pk: int) -> HttpResponse:
    workshop = get_object_or_404(Workshop, pk=pk)
    qr = segno.make(_join_url(request, workshop), error="m")
    out = io.BytesIO()
    qr.save(out, kind="svg", scale=6, border=2)  # a standalone SVG document, with its namespace
    return HttpResponse(out.getvalue(), content_type="image/svg+xml")


@staff_member_required
def workshop_results(request: HttpRequest, pk: int) -> HttpResponse:
    workshop = get_object_or_404(Workshop, pk=pk)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="workshop-{workshop.code}-results.csv"'
    writer = csv.writer(response)
    writer.writerow(workshops.CSV_HEADER)
    for row in workshops.results_rows(workshop):
        # A nickname that starts like a formula must not run as one in a spreadsheet.
        if isinstance(row[0], str) and row[0][:1] in ("=", "+", "-", "@"):
            row[0] = "'" + row[0]
        writer.writerow(row)
    return response
