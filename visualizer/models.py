"""A lab: one run of a lesson's topology, owned by a browser session."""

from __future__ import annotations

import hashlib
import uuid

from django.db import models

from lessons.models import Lesson

_LIVE = models.Q(state__in=["queued", "starting", "running"])  # Lab.LIVE_STATES, for Lab.Meta


def session_tag(session_key: str) -> str:
    """A short name for a browser session that cannot be turned back into its key.

    What the admin shows instead of the key (with which anyone could act as that student): enough
    to tell one student's rows from another's.
    """
    return hashlib.sha256(session_key.encode()).hexdigest()[:8]


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
    # Where the start came from (the socket's peer, or the proxy's X-Forwarded-For under daphne's
    # --proxy-headers): live labs per address are capped (settings.LABS_PER_ADDRESS).
    client_address = models.GenericIPAddressField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]
        # The database, not the code path, keeps one live lab per session and one live lab per
        # network: two starts that arrive at once cannot both win (visualizer.services.lab_start).
        constraints = [
            models.UniqueConstraint(fields=["session_key"], condition=_LIVE,
                                    name="one_live_lab_per_session"),
            models.UniqueConstraint(fields=["network"], condition=_LIVE,
                                    name="one_live_lab_per_network"),
        ]

    def __str__(self) -> str:
        return f"lab {self.id} ({self.lesson_id}, {self.state})"

    @property
    def live(self) -> bool:
        return self.state in self.LIVE_STATES


class Progress(models.Model):
    """A lesson step a browser session has passed, as the engine's live check saw it.

    Written only by the server when the session's own lab reports the step passed (never on the
    browser's word), keyed by the step's stable id so it survives lesson edits that keep the id.
    ``seconds``: from the step being unlocked in that lab (the lab's start, or its predecessor
    passing in the same lab) to passing; see core.engine.host.LiveChecks.
    """

    session_key = models.CharField(max_length=40, db_index=True)
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="progress")
    step_id = models.CharField(max_length=64)
    passed_at = models.DateTimeField()
    seconds = models.FloatField(null=True, blank=True)
    detail = models.CharField(max_length=500, blank=True, help_text="what the check measured, e.g. web.p95_ms is 412")
    measured = models.FloatField(null=True, blank=True, help_text="the step's predict measure when it passed")

    class Meta:
        ordering = ["passed_at"]
        constraints = [
            models.UniqueConstraint(fields=["session_key", "lesson", "step_id"], name="progress_once_per_step"),
        ]

    def __str__(self) -> str:
        return f"{session_tag(self.session_key)} passed {self.lesson_id}/{self.step_id}"
