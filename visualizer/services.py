"""Lab lifecycle as seen from the web side: start, stop, command, snapshot, and running it in a worker.

Consumers and tasks are thin adapters over these functions. Redis carries the live state
(status/frame/history keys and pub/sub, see core.engine.keys); the Lab row records ownership.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from core import redis as core_redis
from core.engine import keys
from lessons.models import Lesson
from visualizer import hosting
from visualizer.models import Lab, Progress

log = logging.getLogger(__name__)
QUEUED_STATUS_TTL_S = 3600  # nobody refreshes a queued lab's status while it waits for a slot
STOP_POLL_S = 1.0
ENGINE_STOP_S = 8.0  # a cancelled engine's own stop is bounded well within this (core.engine.runner)
# A Redis that has just (re)started holds no heartbeats yet: running labs write theirs again within
# a second or two of reconnecting, so a missing one means nothing until Redis has been up this long.
REDIS_SETTLE_S = keys.HEARTBEAT_TTL_S + 5
LOST_MESSAGE = "lost: the worker hosting this lab stopped; start again"
REDIS_FAILED_MESSAGE = "failed: the lab ended while Redis was unreachable"
UNCLAIMED_MESSAGE = "stopped: its workshop ended before anyone claimed it"  # as core.engine.runner says it
START_ATTEMPTS = 5  # inserts lost to a concurrent start's network before giving up


def lab_slots() -> int:
    """Labs the workers of this deployment run at once (those of `make run`, one machine's)."""
    return settings.LAB_SLOTS * settings.LAB_PROCESSES


def lab_for_session(*, session_key: str, lesson: Lesson) -> Lab | None:
    """The session's live lab for this lesson, if any."""
    return (
        Lab.objects.filter(session_key=session_key, lesson=lesson, state__in=Lab.LIVE_STATES)
        .order_by("-created")
        .first()
    )


class LabRefused(Exception):
    """A start the server will not do; the message says why, for the student."""


def lab_start(*, session_key: str, lesson: Lesson, client_address: str | None = None,
              pool: str | None = None) -> Lab:
    """Stop the session's previous live lab, then queue a new one on a free 127.A.B network.

    Race-free: the database holds one live lab per session and per network (Lab.Meta), so of two
    starts that arrive at once for one session, the one that loses the insert returns the winner's
    lab. Raises LabRefused when the client's address already has settings.LABS_PER_ADDRESS live labs.
    With ``pool`` (a workshop's hot pool, visualizer.pool), a running lab is claimed from it if
    one is there; otherwise the lab starts as usual.
    """
    if lesson.topology is None:
        raise ValueError(f"lesson {lesson.slug!r} has no lab")
    if pool:
        from visualizer.pool import pool_claim  # the pool module imports this one

        claimed = pool_claim(pool=pool, session_key=session_key, lesson=lesson, client_address=client_address)
        if claimed is not None:
            return claimed
    address_check(session_key=session_key, client_address=client_address)
    return lab_queue(session_key=session_key, lesson=lesson, client_address=client_address)


def address_check(*, session_key: str, client_address: str | None) -> None:
    """Raise LabRefused if the address already has settings.LABS_PER_ADDRESS live labs (besides the
    session's own, which a start replaces)."""
    if not (client_address and settings.LABS_PER_ADDRESS):
        return
    others = (Lab.objects.filter(client_address=client_address, state__in=Lab.LIVE_STATES)
              .exclude(session_key=session_key))
    count = others.count()
    # At the cap, count again once the address's labs whose worker died are recorded lost: with no
    # page open on them, no lab_watch has noticed. Below the cap there is nothing to gain.
    if count >= settings.LABS_PER_ADDRESS and lab_sweep(client_address=client_address):
        count = others.count()
    if count >= settings.LABS_PER_ADDRESS:
        raise LabRefused(f"your address already has {count} labs running, the most this server "
                         "allows: stop one of them first")


def lab_queue(*, session_key: str, lesson: Lesson, client_address: str | None = None, pool: str = "",
              pool_until: datetime | None = None) -> Lab:
    """lab_start's work once the start is allowed: the row, its network, its queued status, its task.

    ``pool`` and ``pool_until``: a hot-pool lab's pool and when it closes (visualizer.pool)."""
    r = core_redis.client()
    for _ in range(START_ATTEMPTS):
        for previous in Lab.objects.filter(session_key=session_key, state__in=Lab.LIVE_STATES):
            lab_stop(lab=previous)
        network = _network_allocate(r)
        try:
            with transaction.atomic():
                lab = Lab.objects.create(session_key=session_key, lesson=lesson, network=network,
                                         client_address=client_address or None, pool=pool,
                                         pool_until=pool_until if pool else None)
        except IntegrityError:
            # Another start of this session got in between our stop and our insert: it is as new
            # as ours, so it is the answer. Otherwise the network was taken meanwhile: try again.
            winner = lab_for_session(session_key=session_key, lesson=lesson)
            if winner is not None:
                return winner
            continue
        break
    else:
        raise LabRefused("could not start a lab right now; try again")
    lab.task_id = str(lab.id)
    lab.save(update_fields=["task_id"])
    status = {"type": "status", "lab": str(lab.id), "state": Lab.State.QUEUED.value,
              "slots": lab_slots(), "nodes": {}}
    _status_publish(r, lab, status, ttl=QUEUED_STATUS_TTL_S)

    from visualizer.tasks import run_lab  # the task module imports this one

    # Enqueue only once the row is committed, or the worker might not find it.
    transaction.on_commit(lambda: run_lab.apply_async(args=[str(lab.id)], task_id=lab.task_id))
    return lab


def _network_allocate(r: redis.Redis) -> str:
    """The next 127.A.B block no live lab holds (the counter wraps after keys.NETBLOCKS)."""
    # Start the counter at a random block: labs of another Redis (or of one that was flushed) on
    # the same machine then rarely meet on the same 127.A.B network.
    r.set(keys.NETBLOCK_COUNTER, secrets.randbelow(keys.NETBLOCKS), nx=True)
    lab_sweep()  # a dead lab that no page shows would hold its block until someone looked
    held = set(Lab.objects.filter(state__in=Lab.LIVE_STATES).values_list("network", flat=True))
    return keys.network_allocate(lambda: r.incr(keys.NETBLOCK_COUNTER), held)


def lab_stop(*, lab: Lab) -> None:
    """Ask the engine to stop (it closes every socket) and record the lab as stopped."""
    r = core_redis.client()
    r.publish(keys.in_channel(str(lab.id)), json.dumps({"action": "stop"}))
    Lab.objects.filter(pk=lab.pk).update(state=Lab.State.STOPPED)
    lab.state = Lab.State.STOPPED
    _status_publish(r, lab, {"type": "status", "lab": str(lab.id), "state": "stopped", "nodes": {}},
                    ttl=keys.STATUS_TTL_S)


def lab_command(*, lab: Lab, command: dict[str, Any]) -> bool:
    """Forward a shape-checked command to the running engine; False if no engine was listening
    (the lab is still queued, or its worker died): the caller must tell the user it was lost."""
    return core_redis.client().publish(keys.in_channel(str(lab.id)), json.dumps(command)) > 0


def lab_snapshot(*, lesson: Lesson, lab: Lab | None, session_key: str | None = None) -> dict[str, Any]:
    """The `hello` message: topology, the session's progress, the lab's last status, frame and history."""
    hello: dict[str, Any] = {"type": "hello", "lesson": lesson.slug, "topology": lesson.topology,
                             "status": {"state": "stopped"}, "frame": None, "history": [],
                             "progress": progress_for(session_key=session_key, lesson=lesson) if session_key else {}}
    if lab is None:
        return hello
    r = core_redis.client()
    lab_id = str(lab.id)
    pipe = r.pipeline()
    pipe.get(keys.status_key(lab_id))
    pipe.get(keys.frame_key(lab_id))
    pipe.lrange(keys.history_key(lab_id), -keys.HISTORY_POINTS, -1)
    pipe.get(keys.topology_key(lab_id))
    status, frame, history, topology = pipe.execute()
    if status:
        hello["status"] = json.loads(status)
    if topology and status:  # nodes were added or removed in the running lab: draw what runs
        hello["topology"] = json.loads(topology)["topology"]
    if frame:
        hello["frame"] = json.loads(frame)
    hello["history"] = [json.loads(point) for point in history]
    return hello


def lesson_checks(lesson: Lesson) -> dict[str, str]:
    """Step id -> check source, in step order, for the steps that have a check."""
    steps = getattr(lesson, "steps", None) or []
    return {step["id"]: step["check"] for step in steps if step.get("check")}


def lesson_measures(lesson: Lesson) -> dict[str, str]:
    """Step id -> the metric its prediction is compared with (the predict block's measure)."""
    steps = getattr(lesson, "steps", None) or []
    out = {}
    for step in steps:
        predict = step.get("predict")
        if isinstance(predict, dict) and isinstance(predict.get("measure"), str) and predict["measure"].strip():
            out[step["id"]] = predict["measure"]
    return out


def progress_for(*, session_key: str, lesson: Lesson) -> dict[str, dict[str, Any]]:
    """The steps this session has passed: {step_id: {"passed_at": epoch s, "seconds": s, "detail": text}}."""
    rows = Progress.objects.filter(session_key=session_key, lesson=lesson)
    return {p.step_id: {"passed_at": p.passed_at.timestamp(), "seconds": p.seconds, "detail": p.detail,
                        "measured": p.measured} for p in rows}


def progress_record(*, session_key: str, lesson: Lesson, lab_id: str, message: dict[str, Any]) -> bool:
    """Record a step the session's own lab reported passed; True if it was new.

    Idempotent (the first pass is kept). Only for a lab this session owns, for this lesson, and a
    step the lesson has: the engine's message is the only source, never the browser.
    """
    step = message.get("step")
    if message.get("type") != "check" or message.get("passed") is not True or not isinstance(step, str):
        return False
    if str(message.get("lab")) != str(lab_id):
        return False
    if not Lab.objects.filter(pk=lab_id, session_key=session_key, lesson=lesson).exists():
        return False
    steps = getattr(lesson, "steps", None)
    if steps is not None and step not in {s.get("id") for s in steps}:
        return False
    t = _number(message.get("t"))
    passed_at = datetime.fromtimestamp(t, tz=UTC) if t is not None else timezone.now()
    seconds = _number(message.get("seconds"))
    _, created = Progress.objects.get_or_create(
        session_key=session_key, lesson=lesson, step_id=step,
        defaults={"passed_at": passed_at, "seconds": seconds,
                  "detail": str(message.get("detail") or "")[:500],
                  "measured": _number(message.get("measured"))})
    return created


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def lab_run(*, lab_id: str) -> None:
    """Run a lab in this (worker) process until it stops; record how it ended.

    Idempotent: only the delivery that moves the row from queued to starting runs it, so a lab
    enqueued again after a Redis restart (lab_watch) never runs twice."""
    lab = Lab.objects.select_related("lesson").filter(pk=lab_id).first()
    if lab is None:
        log.warning("lab %s does not exist; nothing to run", lab_id)
        return
    if lab.lesson.topology is None:
        return
    # The claim is the update's row count, not the state read above: two deliveries may read
    # "queued" at once, and only one of them moves the row.
    if not Lab.objects.filter(pk=lab_id, state=Lab.State.QUEUED).update(state=Lab.State.STARTING):
        return  # stopped while it waited for a slot, or run by another delivery
    r = core_redis.client()
    pool_seconds = _pool_seconds(lab)
    if pool_seconds is not None and pool_seconds <= 0:
        # Its pool closed while it waited for a slot: nobody can claim it now, so it does not start.
        _lab_end(lab_id, Lab.State.STOPPED)
        try:
            _status_publish(r, lab, {"type": "status", "lab": lab_id, "state": "stopped", "reason": "unclaimed",
                                     "message": UNCLAIMED_MESSAGE, "nodes": {}}, ttl=keys.STATUS_TTL_S)
        except redis.RedisError:
            log.warning("lab %s: its end could not be published", lab_id)
        return
    try:
        _lab_claimed(r, lab)
    except redis.RedisError as exc:
        log.warning("lab %s: no first heartbeat: %r", lab_id, exc)
    close_old_connections()
    try:
        # On the process's lab loop, beside its other labs (visualizer.hosting).
        reason = hosting.run(_lab_run_async(
            lab_id=lab_id, topology=lab.lesson.topology, network=lab.network,
            checks=lesson_checks(lab.lesson), measures=lesson_measures(lab.lesson),
            # A hot-pool lab waits for its claim (visualizer.pool), until its pool closes.
            pooled=bool(lab.pool), pool_seconds=pool_seconds),
            beat=lambda: _lab_beat(r, lab_id))
    except hosting.ShutDown:
        # The worker is shutting down: the lab has stopped (or the exit will close what it holds)
        # and nobody will run it again, so its page is told what a killed worker's page is told.
        log.warning("lab %s: stopped by the worker's shutdown", lab_id)
        try:
            lab_mark_lost(lab=lab)
        except redis.RedisError:
            log.warning("lab %s: its loss could not be published", lab_id)
    except Exception as exc:
        log.exception("lab %s failed", lab_id)
        _lab_end(lab_id, Lab.State.FAILED)
        status = {"type": "status", "lab": lab_id, "state": "failed", "reason": "error",
                  "message": str(exc), "nodes": {}}
        try:
            _status_publish(r, lab, status, ttl=keys.STATUS_TTL_S)
        except redis.RedisError:  # lab_watch words it for the page once Redis is back
            log.warning("lab %s: its failure could not be published", lab_id)
    else:
        _lab_end(lab_id, Lab.State.FAILED if reason == "failed" else Lab.State.STOPPED)
    finally:
        close_old_connections()


def _pool_seconds(lab: Lab) -> float | None:
    """How long a hot-pool lab may wait for its claim: until its pool closes (None: no such bound)."""
    if not lab.pool or lab.pool_until is None:
        return None
    return (lab.pool_until - timezone.now()).total_seconds()


def _lab_claimed(r: Any, lab: Lab) -> None:
    """Say "starting" and beat a first heartbeat with the start-up's grace: until the engine beats
    itself, a worker that dies from here on leaves a lab that lab_watch finds lost (a lab that
    still said "queued" would pass for one waiting for a slot)."""
    status = {"type": "status", "lab": str(lab.id), "state": Lab.State.STARTING.value, "nodes": {}}
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.heartbeat_key(str(lab.id)), os.getpid(), ex=keys.STARTING_GRACE_S)
    pipe.set(keys.status_key(str(lab.id)), json.dumps(status), ex=keys.STATUS_TTL_S)
    pipe.publish(keys.out_channel(str(lab.id)), json.dumps(status))
    pipe.execute()


def _lab_beat(r: Any, lab_id: str) -> None:
    """The lab's heartbeat from its waiting task thread (hosting.run): alive while this process is."""
    with contextlib.suppress(redis.RedisError):  # the engine's own beat and Redis link deal with an outage
        r.set(keys.heartbeat_key(lab_id), os.getpid(), ex=keys.HEARTBEAT_TTL_S)


def _lab_end(lab_id: str, state: Lab.State) -> None:
    # Only a live row: one stopped by its student stays stopped, one recorded lost stays failed.
    Lab.objects.filter(pk=lab_id, state__in=(Lab.State.STARTING, Lab.State.RUNNING)).update(state=state)


async def _lab_run_async(*, lab_id: str, topology: dict[str, Any], network: str,
                         checks: dict[str, str] | None = None, measures: dict[str, str] | None = None,
                         pooled: bool = False, pool_seconds: float | None = None) -> str:
    from core.engine.runner import run_lab  # imported late: only workers need the engine

    async def running() -> None:
        await asyncio.to_thread(_lab_mark_running, lab_id)

    engine = asyncio.create_task(run_lab(
        lab_id=lab_id, topology=topology, network=network, redis_url=settings.REDIS_URL,
        idle_seconds=settings.LAB_IDLE_SECONDS, max_seconds=settings.LAB_MAX_SECONDS,
        checks=checks, measures=measures, on_running=running, pooled=pooled, pool_seconds=pool_seconds,
    ))
    # A stop published before the engine subscribed to its in channel would be lost: while the row
    # says stopped (or failed: recorded lost by the web side, whose word the engine must follow),
    # repeat the stop command until the engine has gone.
    while True:
        try:
            done, _ = await asyncio.wait({engine}, timeout=STOP_POLL_S)
        except asyncio.CancelledError:  # a worker's shutdown (hosting.shutdown): the engine stops too
            engine.cancel()
            await asyncio.wait({engine}, timeout=ENGINE_STOP_S)
            raise
        if done:
            return engine.result()
        if await asyncio.to_thread(_lab_stopped, lab_id):
            r = core_redis.async_client()
            try:
                async with asyncio.timeout(core_redis.TIMEOUT_S):  # the next poll tries again
                    await r.publish(keys.in_channel(lab_id), json.dumps({"action": "stop"}))
            except (TimeoutError, redis.RedisError) as exc:
                log.warning("lab %s: could not repeat the stop: %r", lab_id, exc)
            finally:
                await r.aclose()


def _lab_stopped(lab_id: str) -> bool:
    try:
        return Lab.objects.filter(pk=lab_id, state__in=(Lab.State.STOPPED, Lab.State.FAILED)).exists()
    finally:
        close_old_connections()


def _lab_mark_running(lab_id: str) -> None:
    try:
        Lab.objects.filter(pk=lab_id, state=Lab.State.STARTING).update(state=Lab.State.RUNNING)
    finally:
        close_old_connections()


def lab_watch(*, lab_id: str) -> bool:
    """Bring a live lab's row in line with what Redis shows; False once the lab is no longer live.

    For a page that shows the lab (the consumer calls it every few seconds), so that no lab is
    silently dead:
    - starting or running and silent (_labs_silent: no heartbeat) once Redis has settled: its
      worker died. It is recorded failed, with a status ``lost`` that says so (lab_sweep does the
      same for labs nobody watches).
    - queued with no status key: Redis lost it (a restart; the broker's message went with it). It is
      enqueued again; ``lab_run`` runs a lab once however often it is delivered.
    - ended with no status key: its last status was lost with Redis; one is published from the row.
    Raises redis.RedisError while Redis is unreachable (call again later).
    """
    r = core_redis.client()
    silent = _labs_silent(r, [lab_id])
    if lab_id not in silent:
        return True  # the common case costs one round trip and no query
    status = silent[lab_id]
    lab = Lab.objects.filter(pk=lab_id).first()
    if lab is None:
        return False
    if lab.state == Lab.State.QUEUED:
        _lab_requeue(r, lab)
        return True
    if not lab.live:
        if status is None:
            state = "failed" if lab.state == Lab.State.FAILED else "stopped"
            ended = {"type": "status", "lab": lab_id, "state": state, "nodes": {}}
            if state == "failed":
                ended |= {"reason": "redis", "message": REDIS_FAILED_MESSAGE}
            if r.set(keys.status_key(lab_id), json.dumps(ended), ex=keys.STATUS_TTL_S, nx=True):
                r.publish(keys.out_channel(lab_id), json.dumps(ended))
        return False
    if not _redis_settled(r):
        return True
    lab_mark_lost(lab=lab)
    return False


def lab_sweep(*, client_address: str | None = None) -> int:
    """Record lost every starting or running lab (of ``client_address``, if given) whose worker
    died, by lab_watch's rule, whether or not a page shows it; return how many.

    lab_watch notices a dead lab only while its page is open; this is for the places where one
    nobody watches would still count: the per-address cap and the network allocator. One query
    and one Redis round trip (two if a lab is silent). Raises redis.RedisError like lab_watch.
    """
    labs = Lab.objects.filter(state__in=(Lab.State.STARTING, Lab.State.RUNNING))
    if client_address is not None:
        labs = labs.filter(client_address=client_address)
    lab_ids = [str(pk) for pk in labs.values_list("pk", flat=True)]
    if not lab_ids:
        return 0
    r = core_redis.client()
    silent = _labs_silent(r, lab_ids)
    if not silent or not _redis_settled(r):
        return 0
    for lab in Lab.objects.filter(pk__in=list(silent)):
        lab_mark_lost(lab=lab)  # a lab that ended meanwhile is left as it ended
    return len(silent)


def _labs_silent(r: Any, lab_ids: list[str]) -> dict[str, str | None]:
    """The labs of ``lab_ids`` that Redis shows no sign of life of, each with its status key's text.

    Silent: no heartbeat (keys.HEARTBEAT_TTL_S; the worker's first one covers the start-up), and no
    status that says queued: a worker that has just moved the row to starting beats first and then
    says so (_lab_claimed), so until then the queued status stands for it. A live lab that is
    silent has lost its worker, once Redis has been up long enough to hold the heartbeats again
    (_redis_settled). The common case, every lab beating, costs one round trip.

    A quiet lab's heartbeat is read again with its status, in one MULTI: a worker that claimed it
    after the first read has set both (heartbeat first), and the status alone would say
    "starting" beside a heartbeat read before it existed: a lab recorded lost as it started.
    """
    pipe = r.pipeline(transaction=False)
    for lab_id in lab_ids:
        pipe.exists(keys.heartbeat_key(lab_id))
    quiet = [lab_id for lab_id, beating in zip(lab_ids, pipe.execute(), strict=True) if not beating]
    if not quiet:
        return {}
    pipe = r.pipeline(transaction=True)
    pipe.mget([keys.status_key(lab_id) for lab_id in quiet])
    for lab_id in quiet:
        pipe.exists(keys.heartbeat_key(lab_id))
    statuses, *beating = pipe.execute()
    return {lab_id: status for lab_id, status, beats in zip(quiet, statuses, beating, strict=True)
            if not beats and not (status and json.loads(status).get("state") == Lab.State.QUEUED)}


def _redis_settled(r: Any) -> bool:
    """False while Redis has just (re)started: it holds no heartbeats until running labs beat again."""
    return int(r.info("server").get("uptime_in_seconds", 0)) >= REDIS_SETTLE_S


def lab_mark_lost(*, lab: Lab) -> None:
    """Record a lab whose worker died as failed, and tell its pages (status ``lost``)."""
    if not Lab.objects.filter(pk=lab.pk, state__in=(Lab.State.STARTING, Lab.State.RUNNING)).update(
            state=Lab.State.FAILED):
        return  # it ended meanwhile: its own last status stands
    lab.state = Lab.State.FAILED
    log.warning("lab %s: its worker stopped beating; recorded lost", lab.id)
    r = core_redis.client()
    # If its engine does run on (it could not reach Redis for a while), it stops: the row is final.
    r.publish(keys.in_channel(str(lab.id)), json.dumps({"action": "stop"}))
    status = {"type": "status", "lab": str(lab.id), "state": "lost", "reason": "lost", "message": LOST_MESSAGE,
              "nodes": {}}
    _status_publish(r, lab, status, ttl=keys.STATUS_TTL_S)


def _lab_requeue(r: Any, lab: Lab) -> None:
    status = {"type": "status", "lab": str(lab.id), "state": Lab.State.QUEUED.value,
              "slots": lab_slots(), "nodes": {}}
    if not r.set(keys.status_key(str(lab.id)), json.dumps(status), ex=QUEUED_STATUS_TTL_S, nx=True):
        return  # another page of the session got there first
    from visualizer.tasks import run_lab  # the task module imports this one

    run_lab.apply_async(args=[str(lab.id)], task_id=lab.task_id or str(lab.id))
    r.publish(keys.out_channel(str(lab.id)), json.dumps(status))
    log.warning("lab %s: enqueued again (Redis lost it while it waited for a slot)", lab.id)


def _status_publish(r: Any, lab: Lab, status: dict[str, Any], *, ttl: int) -> None:
    text = json.dumps(status)
    r.set(keys.status_key(str(lab.id)), text, ex=ttl)
    r.publish(keys.out_channel(str(lab.id)), text)
