"""Workshops: a room of participants run by an instructor.

An instructor (staff) creates a workshop and opens it; students join with its short code and a
nickname, which binds their browser session to a Participant, so their progress (kept per session,
visualizer.models.Progress) is theirs across reloads and tabs. The instructor watches a grid of
who passed what, paces the room (an announcement, a lock to one stage), broadcasts a fault to every
participant's lab, and ends the workshop, which stops every lab and leaves a CSV of results.

Everything here reads the server's own records: progress as the labs' checks reported it, labs'
states from their rows, recovery from each lab's own telemetry history in Redis.
"""

from __future__ import annotations

import json
import math
import secrets
import statistics
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from core import redis as core_redis
from core.engine import keys
from core.engine.commands import CommandError, validate_command
from lessons.models import Lesson
from visualizer import pool, services
from visualizer.models import Broadcast, Lab, Participant, Prediction, Progress, Workshop

# No 0/O, 1/I/L: a code is read off a projector and typed on a phone.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
NICKNAME_MAX = 30
# Faults an instructor may broadcast: each lab applies them to its own topology (a node's, or a
# whole region's in a lab with regions).
BROADCAST_ACTIONS = ("kill", "restart", "slow", "outage", "recover")
FAILED_CHECKS_STUCK = 3  # "check now" failing this often on one step marks a participant stuck
RECOVERY_QUIET_S = 10.0  # a lab that shows no errors this long after a fault was not hurt by it
# A "slow" fault causes no errors, only latency: a lab is slow while its p95 is over SLOW_MARGIN ×
# its p95 before the fault + SLOW_MARGIN_MS. One second's p95 is noisy: at a stage's default
# traffic (8 req/s in stage 1) it is nearly the slowest of a handful of requests, and seconds of
# 2-3× the median are common with nothing wrong (measured on a stage-1 lab). So a fault hit a lab
# only after SLOW_HIT_POINTS slow seconds in a row, and it is back after RECOVERY_POINTS fine ones.
SLOW_MARGIN = 2.0
SLOW_MARGIN_MS = 10.0
SLOW_HIT_POINTS = 3
RECOVERY_POINTS = 2
BASELINE_POINTS = 10  # a lab's p95 before a fault: the median of this many seconds of its history


class JoinRefused(Exception):
    """Why a student cannot join, in words for the join page."""


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(text: str) -> str:
    """What a student typed, as codes are stored: upper case, no spaces or dashes."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


def workshop_create(*, title: str, lessons: list[Lesson], cap: int, ends_at: datetime,
                    pool_size: int = 0, user: Any = None) -> Workshop:
    for _attempt in range(10):  # a code collision is rare; a unique index decides
        try:
            with transaction.atomic():
                workshop = Workshop.objects.create(title=title, code=new_code(), cap=cap, ends_at=ends_at,
                                                   pool_size=pool_size, created_by=user)
                workshop.lessons.set(lessons)
                return workshop
        except IntegrityError:
            continue
    raise RuntimeError("could not find a free workshop code")


def workshop_pool_size(*, cap: int) -> int:
    """The hot pool sized to a room of ``cap`` participants: WORKSHOP_POOL_SHARE of it, rounded up,
    at most WORKSHOP_POOL_MAX (what a workshop gets when its instructor does not choose)."""
    share = round(cap * settings.WORKSHOP_POOL_SHARE, 6)  # 30 × 0.2 is 6.000000000000001
    return min(settings.WORKSHOP_POOL_MAX, math.ceil(share))


def workshop_lessons(workshop: Workshop) -> list[Lesson]:
    """The workshop's stages in course order."""
    return list(workshop.lessons.order_by("stage", "slug"))


def first_lesson(workshop: Workshop) -> Lesson | None:
    lessons = workshop_lessons(workshop)
    return lessons[0] if lessons else None


def is_open(workshop: Workshop, now: datetime | None = None) -> bool:
    return workshop.state == Workshop.State.OPEN and workshop.ends_at > (now or timezone.now())


def pool_key(workshop: Workshop) -> str:
    return f"workshop-{workshop.pk}"


def workshop_open(workshop: Workshop) -> None:
    """Open the doors; start the hot pool's labs for the first stage."""
    Workshop.objects.filter(pk=workshop.pk).update(state=Workshop.State.OPEN, opened_at=timezone.now())
    workshop.refresh_from_db()
    pool_refill(workshop)


def pool_refill(workshop: Workshop) -> int:
    """Top the hot pool up to the workshop's pool size (its first stage), while it is open."""
    lesson = first_lesson(workshop)
    if not workshop.pool_size or lesson is None or lesson.topology is None or not is_open(workshop):
        return 0
    # The pool refills until the workshop's end, however far off (a workshop may run for days).
    return pool.pool_fill(pool=pool_key(workshop), lesson=lesson, size=workshop.pool_size, until=workshop.ends_at)


def workshop_end(workshop: Workshop) -> int:
    """Close the doors, stop every participant's live lab and the pool; how many labs stopped.

    Works on any workshop, open, past its end time or already ended (it then stops what is left)."""
    Workshop.objects.filter(pk=workshop.pk).exclude(state=Workshop.State.ENDED).update(
        state=Workshop.State.ENDED, ended_at=timezone.now())
    workshop.refresh_from_db()
    return _labs_stop(workshop)


def workshop_expire_if_due(workshop: Workshop, *, now: datetime | None = None) -> int | None:
    """End an open workshop whose end time has passed, as the instructor's End would; None if it is
    not due, else how many labs this call stopped (0 when a concurrent call ended it first).

    Nothing else ends a room that runs past its time, so whatever touches a workshop (the
    participants' and the grid's polls, the join path, the control room) calls this first;
    otherwise its participants' watched labs would run on until LAB_MAX_SECONDS. (Its pool's
    unclaimed labs stop by themselves at the end time: Lab.pool_until.) It reads only the row the
    caller loaded: a workshop that is not due costs no query."""
    if workshop.state != Workshop.State.OPEN or workshop.ends_at > (now or timezone.now()):
        return None
    # Conditional: of the many polls that find the room due at once, one stops its labs.
    won = Workshop.objects.filter(pk=workshop.pk, state=Workshop.State.OPEN).update(
        state=Workshop.State.ENDED, ended_at=timezone.now())
    workshop.refresh_from_db()
    return _labs_stop(workshop) if won else 0


def _labs_stop(workshop: Workshop) -> int:
    stopped = 0
    sessions = list(workshop.participants.values_list("session_key", flat=True))
    for lab in Lab.objects.filter(session_key__in=sessions, state__in=Lab.LIVE_STATES):
        services.lab_stop(lab=lab)
        stopped += 1
    return stopped + pool.pool_drain(pool=pool_key(workshop))


def fold_nickname(nickname: str) -> str:
    """Two nicknames are the same if they differ only in case, accents' form or spacing."""
    return " ".join(unicodedata.normalize("NFKC", nickname).casefold().split())


def clean_nickname(raw: str) -> str:
    nickname = " ".join(unicodedata.normalize("NFKC", raw or "").split())
    if not nickname:
        raise JoinRefused(_("Choose a nickname."))
    if len(nickname) > NICKNAME_MAX:
        raise JoinRefused(_("A nickname has at most %(n)d characters.") % {"n": NICKNAME_MAX})
    if any(unicodedata.category(ch).startswith("C") for ch in nickname):
        raise JoinRefused(_("A nickname cannot contain control characters."))
    return nickname


def workshop_by_code(code: str) -> Workshop:
    """The open workshop with this code, or JoinRefused saying why not (ending it if its time is up)."""
    workshop = Workshop.objects.filter(code=normalise_code(code)).first()
    if workshop is None:
        raise JoinRefused(_("There is no workshop with this code. Check it with your instructor."))
    workshop_expire_if_due(workshop)
    if workshop.state == Workshop.State.DRAFT:
        raise JoinRefused(_("This workshop has not opened yet."))
    if not is_open(workshop):
        raise JoinRefused(_("This workshop has ended."))
    return workshop


def participant_join(*, code: str, nickname: str, session_key: str) -> Participant:
    """Join the open workshop with this code; a session that already joined gets its participant back."""
    workshop = workshop_by_code(code)
    existing = Participant.objects.filter(workshop=workshop, session_key=session_key).first()
    if existing is not None:
        return existing
    nickname = clean_nickname(nickname)
    with transaction.atomic():
        # Lock the workshop's row so that concurrent joins count the room one at a time.
        Workshop.objects.select_for_update().filter(pk=workshop.pk).first()
        if workshop.participants.count() >= workshop.cap:
            raise JoinRefused(_("This workshop is full."))
        try:
            with transaction.atomic():
                return Participant.objects.create(workshop=workshop, nickname=nickname,
                                                  nickname_key=fold_nickname(nickname), session_key=session_key)
        except IntegrityError:
            pass
    if Participant.objects.filter(workshop=workshop, session_key=session_key).exists():
        return Participant.objects.get(workshop=workshop, session_key=session_key)
    raise JoinRefused(_("Someone in this workshop is already called %(name)s: choose another nickname.")
                      % {"name": nickname})


def participant_for_session(session_key: str | None) -> Participant | None:
    """The session's participant in a workshop that is open now, if any.

    A workshop found open past its end time is ended here (workshop_expire_if_due): every page of
    a participant, the banner's poll and a lab's start ask this, so a room's labs stop at its end
    time as soon as one of its students is still around."""
    if not session_key:
        return None
    rooms = (Participant.objects.select_related("workshop", "workshop__locked_lesson")
             .filter(session_key=session_key, workshop__state=Workshop.State.OPEN).order_by("-joined"))
    participant = rooms.first()
    if participant is None or workshop_expire_if_due(participant.workshop) is None:
        return participant
    # That room's time was up and it has ended now; the session may be in another one still open.
    return rooms.filter(workshop__ends_at__gt=timezone.now()).first()


def held_elsewhere(participant: Participant | None, lesson: Lesson, *, staff: bool = False) -> Lesson | None:
    """The stage the participant's room is held to (workshop_lock), if it is not ``lesson``; None if
    they may be on ``lesson``. Staff are never held: an instructor looks at any stage."""
    if participant is None or staff:
        return None
    locked = participant.workshop.locked_lesson
    return locked if locked is not None and locked.pk != lesson.pk else None


def start_terms(session_key: str | None, lesson: Lesson, *, staff: bool = False) -> tuple[bool, str | None]:
    """How a start of this session on this lesson is served: whether the session is a workshop's
    participant (admitted by its code and cap, so not counted per client address), and the hot pool
    it may be served from (its workshop's, on the workshop's first stage).

    Raises services.LabRefused, in the active language, when the room is held to another stage: the
    lesson page redirects to the held stage, but a socket opened before the lock (or by hand) must
    not start a lab of another one."""
    participant = participant_for_session(session_key)
    if participant is None:
        return False, None
    held = held_elsewhere(participant, lesson, staff=staff)
    if held is not None:
        raise services.LabRefused(
            _("Your instructor has asked everyone to stay on stage %(stage)s for now, so this stage's lab "
              "cannot start.") % {"stage": held.stage})
    workshop = participant.workshop
    first = first_lesson(workshop) if workshop.pool_size else None
    return True, pool_key(workshop) if first is not None and first.pk == lesson.pk else None


def live_state(workshop: Workshop) -> dict[str, Any]:
    """What every participant's page polls: the banner, the lock, whether the room is open."""
    locked = workshop.locked_lesson
    return {"code": workshop.code, "title": workshop.title, "open": is_open(workshop),
            "announcement": workshop.announcement,
            "locked": locked.slug if locked else None,
            "locked_url": f"/stage/{locked.slug}/" if locked else None}


def workshop_announce(workshop: Workshop, text: str) -> None:
    Workshop.objects.filter(pk=workshop.pk).update(announcement=text.strip()[:500])


def workshop_lock(workshop: Workshop, lesson: Lesson | None) -> None:
    """Hold the room to one of its stages (None: everyone moves freely)."""
    if lesson is not None and not workshop.lessons.filter(pk=lesson.pk).exists():
        raise ValueError(f"{lesson.slug} is not one of this workshop's stages")
    Workshop.objects.filter(pk=workshop.pk).update(locked_lesson=lesson)


# Failed "check now" ---------------------------------------------------------------------------
def _fails_key(workshop_id: int) -> str:
    return f"{keys.PREFIX}:workshop:{workshop_id}:fails"


def check_failed(*, session_key: str, lesson: Lesson, step: str) -> None:
    """Count a participant's failed "check now" on a step (the grid calls repeated ones stuck)."""
    participant = participant_for_session(session_key)
    if participant is None:
        return
    r = core_redis.client()
    key = _fails_key(participant.workshop_id)
    pipe = r.pipeline(transaction=False)
    pipe.hincrby(key, f"{participant.pk}:{lesson.slug}:{step}", 1)
    pipe.expire(key, 24 * 3600)
    pipe.execute()


def prediction_save(*, session_key: str, lesson: Lesson, step_id: str, value: float) -> None:
    Prediction.objects.update_or_create(session_key=session_key, lesson=lesson, step_id=step_id,
                                        defaults={"value": value})


# The grid ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    state: str  # "passed" | "current" | "stuck" | "locked"
    seconds: float | None = None
    passed_at: float | None = None


def grid(workshop: Workshop, lesson: Lesson, *, now: datetime | None = None) -> dict[str, Any]:
    """Rows: participants; columns: the lesson's steps with checks. Each cell passed (with the time
    it took), current (the participant's next step) or stuck (current, with no step passed for
    WORKSHOP_STUCK_MINUTES, or "check now" failed FAILED_CHECKS_STUCK times on it)."""
    now = now or timezone.now()
    steps = [s for s in (lesson.steps or []) if s.get("check")]
    participants = list(workshop.participants.all())
    sessions = [p.session_key for p in participants]
    passed: dict[str, dict[str, Progress]] = {}
    for row in Progress.objects.filter(lesson=lesson, session_key__in=sessions):
        passed.setdefault(row.session_key, {})[row.step_id] = row
    labs: dict[str, Lab] = {}
    for lab in Lab.objects.filter(lesson=lesson, session_key__in=sessions).order_by("created"):
        labs[lab.session_key] = lab  # the newest wins
    try:
        fails = core_redis.client().hgetall(_fails_key(workshop.pk))
    except redis.RedisError:
        fails = {}
    stuck_after = timedelta(minutes=settings.WORKSHOP_STUCK_MINUTES)
    rows = []
    for p in participants:
        mine = passed.get(p.session_key, {})
        lab = labs.get(p.session_key)
        last = max([r.passed_at for r in mine.values()], default=None)
        since = max(filter(None, [last, lab.created if lab else None, p.joined]))
        cells = []
        current_found = False
        for step in steps:
            done = mine.get(step["id"])
            if done is not None:
                cells.append(Cell("passed", done.seconds, done.passed_at.timestamp()))
            elif not current_found:
                current_found = True
                failed = int(fails.get(f"{p.pk}:{lesson.slug}:{step['id']}", 0) or 0)
                stuck = failed >= FAILED_CHECKS_STUCK or now - since >= stuck_after
                cells.append(Cell("stuck" if stuck else "current"))
            else:
                cells.append(Cell("locked"))
        rows.append({
            "participant": p.pk, "nickname": p.nickname,
            "lab": str(lab.id) if lab is not None else None,
            "lab_state": lab.state if lab is not None else None,
            "lab_up": bool(lab is not None and lab.state == Lab.State.RUNNING),
            "cells": [cell.__dict__ for cell in cells],
            "passed": sum(cell.state == "passed" for cell in cells),
        })
    return {"lesson": lesson.slug, "steps": [{"id": s["id"], "title": s.get("title") or s["id"]} for s in steps],
            "rows": rows, "t": now.timestamp()}


# Broadcast faults -------------------------------------------------------------------------------
def broadcast_fault(workshop: Workshop, raw: dict[str, Any], *, label: str = "") -> Broadcast:
    """Send one command to every participant's live lab at once; each applies it to its own
    topology (a lab without the node answers its student with an error). CommandError if the
    command is not a fault an instructor may broadcast."""
    command = validate_command(raw)
    if command["action"] not in BROADCAST_ACTIONS:
        raise CommandError(f"only {', '.join(BROADCAST_ACTIONS)} can be broadcast")
    sessions = list(workshop.participants.values_list("session_key", flat=True))
    labs = list(Lab.objects.filter(session_key__in=sessions, state__in=Lab.LIVE_STATES))
    baselines: dict[str, float | None] = {}
    if command["action"] == "slow":  # read before the command can reach a lab and move its p95
        baselines = _slow_baselines(workshop, command, [str(lab.id) for lab in labs if lab.state == Lab.State.RUNNING])
    delivered: dict[str, str] = {}
    for lab in labs:
        if lab.state != Lab.State.RUNNING:
            delivered[str(lab.id)] = "not running"
            continue
        delivered[str(lab.id)] = "sent" if services.lab_command(lab=lab, command=command) else "not listening"
    baselines = {lab_id: ms for lab_id, ms in baselines.items() if delivered.get(lab_id) == "sent"}
    return Broadcast.objects.create(workshop=workshop, command=command, label=label[:200], delivered=delivered,
                                    baselines=baselines)


def _histories(lab_ids: list[str]) -> dict[str, list[list[Any]]]:
    """Each lab's history points from Redis (core.engine.runner: one a second)."""
    if not lab_ids:
        return {}
    pipe = core_redis.client().pipeline(transaction=False)
    for lab_id in lab_ids:
        pipe.lrange(keys.history_key(lab_id), -keys.HISTORY_POINTS, -1)
    return {lab_id: [json.loads(point) for point in points]
            for lab_id, points in zip(lab_ids, pipe.execute(), strict=True)}


def _slow_baselines(workshop: Workshop, command: dict[str, Any], lab_ids: list[str]) -> dict[str, float | None]:
    """Each lab's p95 before a "slow" fault. Undoing one ("slow X 0") is measured against the p95
    before X was slowed, as the last broadcast that slowed X recorded it: just before the undo the
    labs are still slow. A lab that broadcast did not reach is read from its history now."""
    before: dict[str, float | None] = {}
    if command["ms"] == 0:
        for earlier in workshop.broadcasts.all()[:50]:
            c = earlier.command
            if c.get("action") == "slow" and c.get("node") == command["node"] and c.get("ms"):
                before = {lab_id: ms for lab_id, ms in earlier.baselines.items() if ms is not None}
                break
    try:
        histories = _histories([lab_id for lab_id in lab_ids if lab_id not in before])
    except redis.RedisError:  # the fault matters more than its baseline: the grid will say "unknown"
        histories = {}
    now = timezone.now().timestamp()
    return {lab_id: before[lab_id] if lab_id in before else baseline_p95(histories.get(lab_id, []), now)
            for lab_id in lab_ids}


def recovery(history: list[list[float]], sent_at: float, now: float) -> dict[str, Any]:
    """How a lab took a fault sent at ``sent_at``, from its history points [t, rps, p50, p95, err_rps]
    (one a second, core.engine.runner): when errors began and when they ended.

    "recovered" once the error rate is back to 0 (its seconds count from the broadcast), "down"
    while it is not, "unhurt" if no error showed within RECOVERY_QUIET_S, "waiting" before that.
    """
    after = [p for p in history if p[0] >= sent_at]
    hurt = next((i for i, p in enumerate(after) if p[4] > 0), None)
    if hurt is None:
        return {"state": "unhurt" if now - sent_at >= RECOVERY_QUIET_S else "waiting"}
    for p in after[hurt:]:
        if p[4] == 0:
            return {"state": "recovered", "seconds": round(p[0] - sent_at, 1)}
    return {"state": "down", "seconds": round(now - sent_at, 1)}


def baseline_p95(history: list[list[Any]], before: float) -> float | None:
    """A lab's usual p95 before ``before``: the median p95 of its last BASELINE_POINTS seconds of
    history before then (None if it served nothing in them)."""
    p95s = [p[3] for p in [p for p in history if p[0] < before][-BASELINE_POINTS:] if p[3] is not None]
    return round(statistics.median(p95s), 2) if p95s else None


def latency_recovery(history: list[list[Any]], sent_at: float, now: float, *, baseline_ms: float | None,
                     undo: bool = False) -> dict[str, Any]:
    """How a lab took a "slow" fault sent at ``sent_at`` (with ``undo``: "slow X 0", its end),
    from its history points [t, rps, p50, p95, err_rps] against ``baseline_ms``, its p95 before.

    A second is slow when its p95 is over SLOW_MARGIN × baseline + SLOW_MARGIN_MS or it had errors
    (a slowed server's queue can overflow), fine when neither; a second that answered nothing says
    nothing. SLOW_HIT_POINTS slow seconds in a row mean the fault hit the lab; RECOVERY_POINTS fine
    ones after that mean "recovered" (its seconds count from the broadcast to the first of them);
    "slow" until then. "steady" if the lab was not slowed within RECOVERY_QUIET_S, "waiting" before that.
    An undo waits for nothing: the lab is "slow" until it is back. "unknown" without a baseline.
    Every answer but "unknown" also carries the baseline and the latest p95, for the instructor.
    """
    if baseline_ms is None:
        return {"state": "unknown"}
    limit = SLOW_MARGIN * baseline_ms + SLOW_MARGIN_MS
    seconds = [(p[0], p[4] > 0 or p[3] > limit) for p in history
               if p[0] >= sent_at and (p[4] > 0 or p[3] is not None)]  # (t, slow)
    latest = next((p[3] for p in reversed(history) if p[0] >= sent_at and p[3] is not None), None)
    facts = {"baseline_ms": baseline_ms, "p95_ms": latest}

    def run_of(slow: bool, length: int, start: int) -> int | None:  # where `length` such seconds in a row begin
        streak = 0
        for i in range(start, len(seconds)):
            streak = streak + 1 if seconds[i][1] == slow else 0
            if streak == length:
                return i - length + 1
        return None

    start = 0
    if not undo:
        hit = run_of(True, SLOW_HIT_POINTS, 0)
        if hit is None:
            return {"state": "steady" if now - sent_at >= RECOVERY_QUIET_S else "waiting", **facts}
        start = hit + SLOW_HIT_POINTS
    back = run_of(False, RECOVERY_POINTS, start)
    if back is not None:
        return {"state": "recovered", "seconds": round(seconds[back][0] - sent_at, 1), **facts}
    return {"state": "slow", "seconds": round(now - sent_at, 1), **facts}


def broadcast_recovery(broadcast: Broadcast) -> dict[str, dict[str, Any]]:
    """Per lab the broadcast reached: its recovery, read from the lab's own history in Redis: from
    its errors, or for a "slow" fault from its p95 against the one recorded before the fault."""
    lab_ids = [lab_id for lab_id, outcome in broadcast.delivered.items() if outcome == "sent"]
    histories = _histories(lab_ids)
    now = timezone.now().timestamp()
    sent_at = broadcast.sent_at.timestamp()
    command = broadcast.command
    out = {}
    for lab_id, history in histories.items():
        if command.get("action") == "slow":
            baseline = broadcast.baselines.get(lab_id)
            if baseline is None:  # not recorded (no traffic then): what the history before it holds
                baseline = baseline_p95(history, sent_at)
            out[lab_id] = latency_recovery(history, sent_at, now, baseline_ms=baseline, undo=not command.get("ms"))
        else:
            out[lab_id] = recovery(history, sent_at, now)
    return out


# The projector ----------------------------------------------------------------------------------
def projector(workshop: Workshop, lesson: Lesson) -> dict[str, Any]:
    """The room in aggregate, no names: per step how many passed, the median time it took, and the
    predictions beside the values measured when the step passed."""
    sessions = list(workshop.participants.values_list("session_key", flat=True))
    progress = list(Progress.objects.filter(lesson=lesson, session_key__in=sessions))
    predictions = list(Prediction.objects.filter(lesson=lesson, session_key__in=sessions))
    steps = []
    for step in lesson.steps or []:
        if not step.get("check"):
            continue
        rows = [p for p in progress if p.step_id == step["id"]]
        seconds = [p.seconds for p in rows if p.seconds is not None]
        steps.append({
            "id": step["id"], "title": step.get("title") or step["id"],
            "passed": len(rows),
            "median_s": round(statistics.median(seconds), 1) if seconds else None,
            "predicted": sorted(p.value for p in predictions if p.step_id == step["id"]),
            "measured": sorted(p.measured for p in rows if p.measured is not None),
        })
    return {"participants": len(sessions), "lesson": lesson.slug, "steps": steps}


# Results ----------------------------------------------------------------------------------------
CSV_HEADER = ["participant", "stage", "step", "passed_at", "seconds", "prediction", "measured"]


def results_rows(workshop: Workshop) -> list[list[Any]]:
    """One row per passed step of every participant in the workshop's stages (the CSV's body)."""
    participants = {p.session_key: p.nickname for p in workshop.participants.all()}
    lessons = workshop_lessons(workshop)
    predicted = {(p.session_key, p.lesson_id, p.step_id): p.value
                 for p in Prediction.objects.filter(session_key__in=participants, lesson__in=lessons)}
    rows = []
    progress = (Progress.objects.filter(session_key__in=participants, lesson__in=lessons)
                .select_related("lesson").order_by("session_key", "lesson__stage", "passed_at"))
    for p in progress:
        rows.append([participants[p.session_key], p.lesson.stage, p.step_id, p.passed_at.isoformat(),
                     "" if p.seconds is None else round(p.seconds, 1),
                     predicted.get((p.session_key, p.lesson_id, p.step_id), ""),
                     "" if p.measured is None else p.measured])
    rows.sort(key=lambda row: (row[0].casefold(), row[1], row[3]))
    return rows
