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
    # A lab started ahead for a workshop's hot pool (visualizer.pool): its session_key is a
    # placeholder of its own until a participant claims it, when this is cleared.
    pool = models.CharField(max_length=40, blank=True, db_index=True)
    # When that pool closes (its workshop's end): a pool lab still unclaimed then stops by itself,
    # whether or not anything drains the pool (core.engine.runner's pool_seconds). A claim clears it.
    pool_until = models.DateTimeField(null=True, blank=True)
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


class Prediction(models.Model):
    """What a session predicted for a step's question, before measuring it (the projector compares)."""

    session_key = models.CharField(max_length=40, db_index=True)
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="predictions")
    step_id = models.CharField(max_length=64)
    value = models.FloatField()
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session_key", "lesson", "step_id"], name="prediction_once_per_step"),
        ]


class Workshop(models.Model):
    """A room of participants run by an instructor: which stages, how many, until when."""

    class State(models.TextChoices):
        DRAFT = "draft"
        OPEN = "open"
        ENDED = "ended"

    title = models.CharField(max_length=120)
    # Short, unambiguous, typed by students from a projector (visualizer.workshops.new_code).
    code = models.CharField(max_length=12, unique=True)
    lessons = models.ManyToManyField(Lesson, related_name="workshops")
    cap = models.PositiveIntegerField(default=50, help_text="most participants")
    ends_at = models.DateTimeField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.DRAFT)
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    announcement = models.CharField(max_length=500, blank=True)
    # The stage the room is held to; null lets everyone move freely.
    locked_lesson = models.ForeignKey(Lesson, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    pool_size = models.PositiveIntegerField(default=0, help_text="labs of the first stage started ahead")
    created = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.title} ({self.code}, {self.state})"


class Participant(models.Model):
    """A student in a workshop: a nickname and the browser session that holds their progress."""

    workshop = models.ForeignKey(Workshop, on_delete=models.CASCADE, related_name="participants")
    nickname = models.CharField(max_length=30)
    nickname_key = models.CharField(max_length=30, help_text="the nickname folded, for uniqueness")
    session_key = models.CharField(max_length=40, db_index=True)
    joined = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["joined"]
        constraints = [
            models.UniqueConstraint(fields=["workshop", "nickname_key"], name="nickname_once_per_workshop"),
            models.UniqueConstraint(fields=["workshop", "session_key"], name="session_once_per_workshop"),
        ]

    def __str__(self) -> str:
        return f"{self.nickname} in {self.workshop.code}"


class Broadcast(models.Model):
    """A fault the instructor sent to every participant's lab at once; recovery is read from each
    lab's own history (visualizer.workshops.recovery, latency_recovery)."""

    workshop = models.ForeignKey(Workshop, on_delete=models.CASCADE, related_name="broadcasts")
    command = models.JSONField()
    label = models.CharField(max_length=200, blank=True)
    sent_at = models.DateTimeField(auto_now_add=True)
    # {lab id: "sent" | "not running" | error text}: what each lab was told.
    delivered = models.JSONField(default=dict)
    # {lab id: p95 ms}: a "slow" fault's latency before it, recorded when sent, since a lab's
    # history keeps only its last few minutes and a slow fault shows in latency, not errors.
    baselines = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-sent_at"]
