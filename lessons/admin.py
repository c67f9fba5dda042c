"""Lessons in the admin: shown, never edited.

Every field is what the loader made of the lesson's source: body_html and the texts in i18n went
through the sanitiser, the topology and steps through validation. An edit here would skip both
(an admin could store a <script> that every student's stage page runs), so lessons change in the
stage's editor (/stage/<slug>/edit/, which validates and sanitises like `lessons check`) or in
their files.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from lessons.models import Lesson


@admin.register(Lesson)
class LessonAdmin(admin.ModelAdmin):
    list_display = ("stage", "slug", "title", "version", "edited_in_browser")
    fields = ("slug", "stage", "title", "summary", "minutes", "version", "source_path", "edited_in_browser", "editor")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # lessons come from files: `manage.py lessons load`

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="edit")
    def editor(self, obj: Lesson) -> str:
        return format_html('<a href="{}">the stage\'s editor</a>', reverse("lesson-edit", args=[obj.slug]))
