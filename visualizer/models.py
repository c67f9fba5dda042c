"""A lab: one run of a lesson's topology, owned by a browser session."""

from __future__ import annotations

import uuid

from django.db import models

from lessons.models import Lesson


class Lab(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued"
        STARTING = "starting"
        RUNNING = "running"
        STOPPED = "stopped"
        FAILED = "failed"

    # States in which the lab holds (or waits for) a worker slot.
    LIVE_STATES = (State.QUEUED, State.STARTING, State.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session_key = models.CharField(max_length=40, db_index=True)
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="labs")
    network = models.CharField(max_length=15, help_text="127.A.B: node i is 127.A.B.(10+i)")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    task_id = models.CharField(max_length=255, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"lab {self.id} ({self.lesson_id}, {self.state})"

    @property
    def live(self) -> bool:
        return self.state in self.LIVE_STATES
