"""Labs and progress for the instructor to look at. Both are written only by the server (the lab's
services and worker), so the admin shows them and edits nothing: changing a row here would not
change the running lab. A student's session key never appears (it would let anyone act as that
student); a short tag from session_tag tells sessions apart instead."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from visualizer.models import Lab, Progress, session_tag


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="session")
    def session(self, obj: Lab | Progress) -> str:
        return session_tag(obj.session_key)


@admin.register(Lab)
class LabAdmin(ReadOnlyAdmin):
    list_display = ("id", "lesson", "state", "network", "session", "created")
    list_filter = ("state",)
    fields = ("id", "lesson", "state", "network", "session", "task_id", "created", "updated")
    readonly_fields = fields


@admin.register(Progress)
class ProgressAdmin(ReadOnlyAdmin):
    list_display = ("lesson", "step_id", "session", "passed_at", "seconds", "detail")
    list_filter = ("lesson",)
    fields = ("lesson", "step_id", "session", "passed_at", "seconds", "detail", "measured")
    readonly_fields = fields
