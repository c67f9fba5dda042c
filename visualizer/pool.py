"""A workshop's hot pool: labs of one lesson started ahead, so a student's start is a claim, not a boot.

A pool is named by a key of its caller's choosing (a workshop's, say) and holds labs of one lesson.
Its labs are ordinary Lab rows with ``pool`` set and a placeholder session of their own; the
engine runs them as ``pooled`` (core.engine.runner): no idle stop, no checks, until a claim hands
one to a student. Each pool lab holds a worker slot while it waits (see docs/deploy.md), at most
until the pool's end (``until``, its workshop's end time), when the engine stops it by itself:
a workshop nobody touches after its end (so nobody drains) does not keep its pool running.

pool_claim tops the pool up itself (one replacement per claim, under the pool's lock), as long as
the pool has not been drained since its last pool_fill; so a caller fills once and drains once.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from contextlib import AbstractContextManager
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from core import redis as core_redis
from core.engine import keys
from lessons.models import Lesson
from visualizer import services
from visualizer.models import Lab

log = logging.getLogger(__name__)
LOCK_S = 30  # a fill or drain holds its pool's lock at most this long (a process that dies frees it)
LOCK_WAIT_S = 10
REFILL_WAIT_S = 2  # a claim's refill waits no longer for the lock: the student is waiting for their lab
# A pool's size is forgotten this long after its last fill when the caller names no end (a workshop
# names its own: it may stay open for days).
FILL_TTL_S = 24 * 3600
CLAIM_ATTEMPTS = 5  # running pool labs tried before a claim gives up (and the caller starts one)


def _fill_key(pool: str) -> str:
    """The pool's lesson and size, from its last fill: set while the pool is open, gone once drained."""
    return f"{keys.PREFIX}:pool:{pool}:fill"


def _lock(pool: str, wait: float = LOCK_WAIT_S) -> AbstractContextManager[object]:
    # Fills, refills and the drain of one pool one at a time (across web processes): a refill
    # racing a drain must not leave a lab that nobody will stop.
    return core_redis.client().lock(f"{keys.PREFIX}:pool:{pool}:lock", timeout=LOCK_S, blocking_timeout=wait)


def _waiting(pool: str, lesson: Lesson):
    return Lab.objects.filter(pool=pool, lesson=lesson, state__in=Lab.LIVE_STATES)


def pool_fill(*, pool: str, lesson: Lesson, size: int, until: datetime | None = None) -> int:
    """Queue pool labs of ``lesson`` until ``size`` live unclaimed ones exist; how many it queued.

    Remembers the size, by which pool_claim replaces each lab it hands out, until ``until`` (the
    end of the workshop the pool serves; FILL_TTL_S from now if None). Past it claims no longer
    refill, and every lab still unclaimed stops by itself (Lab.pool_until); the caller's drain
    stops them sooner, and any still queued."""
    if lesson.topology is None:
        raise ValueError(f"lesson {lesson.slug!r} has no lab")
    ttl_s = FILL_TTL_S if until is None else max(1, math.ceil((until - timezone.now()).total_seconds()))
    with _lock(pool):
        fill = {"lesson": lesson.pk, "size": size, "until": until.isoformat() if until else None}
        core_redis.client().set(_fill_key(pool), json.dumps(fill), ex=ttl_s)
        return _fill(pool, lesson, size, until)


def _fill(pool: str, lesson: Lesson, size: int, until: datetime | None) -> int:
    missing = max(0, size - _waiting(pool, lesson).count())
    for _ in range(missing):
        # A placeholder session of its own (37 characters): the constraint of one live lab per
        # session then holds for pool labs as for any other.
        services.lab_queue(session_key=f"pool-{uuid.uuid4().hex}", lesson=lesson, pool=pool, pool_until=until)
    return missing


def pool_claim(*, pool: str, session_key: str, lesson: Lesson, client_address: str | None = None) -> Lab | None:
    """Hand a running unclaimed lab of the pool to ``session_key``; None if the pool has none running.

    Like lab_start, it stops the session's previous live lab first and raises services.LabRefused
    for an address at its cap. The claim is one conditional UPDATE, so two claims never get the same
    lab. The engine is told (``{"action": "claim"}`` on its in channel); a lab whose engine does not
    hear it is stopped and the next one tried. Then the pool is topped up (see the module's doc).
    """
    services.address_check(session_key=session_key, client_address=client_address)
    r = core_redis.client()
    for _ in range(CLAIM_ATTEMPTS):
        candidate = (Lab.objects.filter(pool=pool, lesson=lesson, state=Lab.State.RUNNING)
                     .order_by("created").values_list("pk", flat=True).first())
        if candidate is None:
            return None
        for previous in Lab.objects.filter(session_key=session_key, state__in=Lab.LIVE_STATES):
            services.lab_stop(lab=previous)
        try:
            with transaction.atomic():
                won = Lab.objects.filter(pk=candidate, pool=pool, state=Lab.State.RUNNING).update(
                    session_key=session_key, pool="", pool_until=None, client_address=client_address or None)
        except IntegrityError:
            # Another start of this session got its lab between our stop and our claim: as new
            # as ours, it is the answer (as in lab_start).
            return services.lab_for_session(session_key=session_key, lesson=lesson)
        if not won:
            continue  # another claim took it first
        lab = Lab.objects.get(pk=candidate)
        if not r.publish(keys.in_channel(str(lab.id)), json.dumps({"action": "claim"})):
            log.warning("lab %s: its engine did not hear the claim; stopped", lab.id)
            services.lab_stop(lab=lab)  # lab_run repeats the stop until the engine has gone
            continue
        _refill(pool, lesson)
        return lab
    return None


def _refill(pool: str, lesson: Lesson) -> None:
    try:
        with _lock(pool, REFILL_WAIT_S):
            raw = core_redis.client().get(_fill_key(pool))
            fill = json.loads(raw) if raw else None
            if fill and fill.get("lesson") == lesson.pk:
                until = fill.get("until")
                _fill(pool, lesson, int(fill["size"]), datetime.fromisoformat(until) if until else None)
    except Exception:  # the student has their lab; a smaller pool only makes later starts slower
        log.exception("pool %s: could not top up", pool)


def pool_drain(*, pool: str) -> int:
    """Stop every unclaimed lab of the pool and forget its size (no more refills); how many it stopped."""
    with _lock(pool):
        core_redis.client().delete(_fill_key(pool))
        stopped = 0
        for lab in Lab.objects.filter(pool=pool, state__in=Lab.LIVE_STATES):
            # Conditional, as a claim is: a lab claimed since the query is the student's, not ours.
            if Lab.objects.filter(pk=lab.pk, pool=pool, state__in=Lab.LIVE_STATES).update(state=Lab.State.STOPPED):
                services.lab_stop(lab=lab)
                stopped += 1
        return stopped
