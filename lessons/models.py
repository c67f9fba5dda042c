"""A lesson (one stage of the course), loaded from lessons/content/*.md by `manage.py lessons load`."""

from __future__ import annotations

from django.db import models


class Lesson(models.Model):
    slug = models.SlugField(unique=True, help_text="the front matter's id")
    stage = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True)
    minutes = models.PositiveIntegerField(default=0)
    version = models.PositiveIntegerField(default=1)
    objectives = models.JSONField(default=list)
    body_md = models.TextField(blank=True)
    # Rendered and sanitised once at load time, so pages never render untrusted Markdown.
    body_html = models.TextField(blank=True)
    # Topology.to_dict(); null while a stage has no runnable lab yet.
    topology = models.JSONField(null=True, blank=True)
    source_path = models.CharField(max_length=500, blank=True)
    # [{id, title, check, hints, solution, predict}] in order: what the runtime and `prove` use.
    # Students' progress attaches to a step's id, which survives edits of its text.
    steps = models.JSONField(default=list, blank=True)
    # Texts per language: {"en": {title, summary, objectives, body_html (the intro),
    # steps: {id: {title, html, instructor_html, hints, predict}}}, "bg": {...}}.
    i18n = models.JSONField(default=dict, blank=True)
    # The lesson file's text as loaded (or as an instructor last saved it in the editor), and its
    # translations' texts by language ({"bg": "..."}): `lessons export` writes them back to files.
    source = models.TextField(blank=True)
    source_translations = models.JSONField(default=dict, blank=True)
    # Saved in the browser editor and not yet exported: `lessons load` keeps such a row rather
    # than overwrite the instructor's work with the older file.
    edited_in_browser = models.BooleanField(default=False)

    class Meta:
        ordering = ["stage", "slug"]

    def __str__(self) -> str:
        return f"{self.stage}. {self.title}"

    @property
    def runnable(self) -> bool:
        return self.topology is not None
