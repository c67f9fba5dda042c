"""Run one lab wired to Redis: commands in on a pub/sub channel, frames and status out.

The frames and the lesson's live checks come from ``core.engine.host``, as for ``lessons prove``.

This is the only engine module that knows about Redis; a Celery task calls ``run_lab`` inside
``asyncio.run``. It returns when the lab is told to stop, has had no viewer for idle_seconds, has
run for max_seconds, or has not reached Redis for redis_outage_s; it always releases every socket
before it returns.

Redis may restart under a running lab (the test and `make run` Redis keeps nothing on disk): every
call to it is guarded, the command reader reconnects with backoff (redis-py resubscribes the in
channel on reconnect), and the lab carries on; only an outage longer than redis_outage_s ends it,
as failed. While it runs, the lab refreshes its heartbeat key every second (keys.HEARTBEAT_S),
by which the web side tells a live lab from one whose worker was killed.

A hot-pool lab (``pooled``, see visualizer.pool) runs ahead for a workshop: it does not stop for
idleness and judges no step until the web side hands it to a student and publishes
``{"action": "claim"}``. From then on it is what a lab that has just started for that student is.
Its pool may close before anyone claims it (the workshop ended): ``pool_seconds`` ends it then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.engine import keys
from core.engine.commands import CommandError, validate_command
from core.engine.host import LiveChecks, tick
from core.engine.lab import Lab, LabStartError
from core.engine.lifecycle import Alive, Background, wait_ended
from core.engine.spec import topology_from_dict

log = logging.getLogger(__name__)
IDLE_CHECK_S = 2.0
REDIS_TIMEOUT_S = 5.0  # every round trip to Redis (a stalled Redis must not hold up a stop)
POLL_S = 1.0  # the command reader's longest wait for a message before it looks whether to end
MAX_WAITING_COMMANDS = 100  # commands received and not yet applied; beyond this they are refused
REDIS_OUTAGE_S = 30.0  # how long a lab waits for an unreachable Redis before it ends as failed
STATUS_RETRY_S = 0.5  # how soon a status that Redis did not take is sent again
RECONNECT_S = (0.1, 2.0)  # the command reader's backoff while Redis is unreachable: first, longest
CLAIM_VIEWER_WAIT_S = 3.0  # how long a claimed lab waits for its claimant's page to listen
CLAIM_POLL_S = 0.05


class RedisLink:
    """Whether the lab's Redis answers, as its calls find out: since when it has not, and whether
    the lab should give up. Logs once when Redis goes away and once when it is back."""

    def __init__(self, who: str, *, give_up_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.who = who
        self.give_up_after = give_up_after
        self.clock = clock
        self.down_since: float | None = None

    def ok(self) -> None:
        if self.down_since is not None:
            log.warning("%s: Redis answers again after %.1f s", self.who, self.clock() - self.down_since)
            self.down_since = None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = self.clock()
            log.warning("%s: Redis unreachable (%r); retrying for up to %g s", self.who, exc, self.give_up_after)

    @property
    def gave_up(self) -> bool:
        return self.down_since is not None and self.clock() - self.down_since >= self.give_up_after


def duration_text(seconds: float) -> str:
    """A lifetime as the final status says it: "2-hour", "90-minute", "45-second"."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}-{unit}"
    return f"{seconds:g}-second"


class _Publisher:
    """Serialises messages once and sends them in order from one task (emit() never blocks)."""

    def __init__(self, r: aioredis.Redis, lab_id: str, link: RedisLink) -> None:
        self.r = r
        self.lab_id = lab_id
        self.link = link
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1000)
        self.last_frame: dict[str, Any] | None = None

    def emit(self, message: dict[str, Any]) -> None:
        message["lab"] = self.lab_id
        with contextlib.suppress(asyncio.QueueFull):  # a stalled Redis must not stall the lab
            self.queue.put_nowait(message)

    async def run(self) -> None:
        # A status Redis did not take is sent again (until a newer one is sent), also after
        # close() within the caller's bound: the lab's last status, which says why it ended, must
        # reach a Redis that comes back in time. Frames are not worth it: the next one follows.
        unsent: dict[str, Any] | None = None
        closing = False
        while not closing or unsent is not None:
            message: dict[str, Any] | None
            if closing:
                await asyncio.sleep(STATUS_RETRY_S)
                message = unsent
            else:
                try:
                    async with asyncio.timeout(STATUS_RETRY_S if unsent is not None else None):
                        message = await self.queue.get()
                except TimeoutError:
                    message = unsent
                if message is None:
                    closing = True
                    continue
            sent = await self._send(message)
            if message["type"] == "status":
                unsent = None if sent else message

    async def _send(self, message: dict[str, Any]) -> bool:
        channel = keys.out_channel(self.lab_id)
        text = json.dumps(message, separators=(",", ":"))
        pipe = self.r.pipeline(transaction=False)
        pipe.publish(channel, text)
        if message["type"] == "status":
            pipe.set(keys.status_key(self.lab_id), text, ex=keys.STATUS_TTL_S)
        elif message["type"] == "frame":
            pipe.set(keys.frame_key(self.lab_id), text, ex=keys.STATUS_TTL_S)
        elif message["type"] == "topology":  # a page that (re)connects draws the live one
            pipe.set(keys.topology_key(self.lab_id), text, ex=keys.TOPOLOGY_TTL_S)
        if message["type"] == "status" and "topology" in message:
            pipe.expire(keys.topology_key(self.lab_id), keys.TOPOLOGY_TTL_S)
        try:
            await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:  # the message is lost; the lab is not
            self.link.failed(exc)
            return False
        self.link.ok()
        return True

    def close(self) -> None:
        """Publish what is queued, then end (a full queue loses its oldest message, never the last)."""
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()


async def run_lab(
    *,
    lab_id: str,
    topology: dict[str, Any],
    network: str,
    redis_url: str,
    idle_seconds: float = 600.0,
    frame_interval: float = 0.25,
    checks: dict[str, str] | None = None,
    measures: dict[str, str] | None = None,
    max_seconds: float | None = None,
    redis_outage_s: float = REDIS_OUTAGE_S,
    on_running: Callable[[], Awaitable[None]] | None = None,
    pooled: bool = False,
    pool_seconds: float | None = None,
) -> str:
    """Run the lab until stopped; returns why it stopped ("stopped", "idle", "limit", "unclaimed" or
    "failed").

    ``max_seconds``: the lab's lifetime, after which it stops even if watched ("limit").
    ``redis_outage_s``: how long Redis may stay unreachable before the lab ends ("failed").
    ``on_running`` is awaited once the lab runs (the worker records it).
    The last status says why a lab ended other than by a stop command: ``message`` in words,
    ``reason`` ("idle", "limit", "unclaimed", "redis", "error") for a page that words it in its own
    language.

    ``checks`` maps a lesson step's id to its check's source: every published frame is evaluated,
    a newly passed step is published as ``{"type": "check", "passed": true, ...}``, and the
    ``{"action": "check", "step": ID}`` command answers with the step's current verdict.
    ``measures`` (step id -> metric name) adds the metric's value at the pass as ``measured``.

    ``pooled``: the lab waits for a claim (above). Until then idleness does not stop it and its
    checks are paused; ``max_seconds`` still bounds the wait, so a pool nobody drained ends too, and
    so does ``pool_seconds``, the time left until the pool closes (its workshop's end): a lab still
    unclaimed then ends ("unclaimed") whether or not anyone drains the pool. The claim lifts that
    bound, starts the idle timer, the lifetime and the checks afresh, and puts a ``lab_started``
    event (``claimed: true``) in the next frame, once the claimant's page listens (at most
    CLAIM_VIEWER_WAIT_S): a step passed before that would never reach the student's progress.
    """
    # One quick retry (a pooled connection left over from before a Redis restart fails once, and
    # the retry reconnects); redis-py's default of ten would stretch every call's bound tenfold.
    r = aioredis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
                          retry=Retry(NoBackoff(), 1))
    pubsub = r.pubsub()
    link = RedisLink(f"lab {lab_id}", give_up_after=redis_outage_s)
    publisher = _Publisher(r, lab_id, link)
    publish_task = asyncio.create_task(publisher.run(), name=f"lab {lab_id}: publish")
    lab = Lab(topology_from_dict(topology), network=network, emit=publisher.emit, frame_interval=frame_interval)
    stop = asyncio.Event()
    reason = "stopped"
    failure = ""  # why, when reason is "failed"
    background = Background(f"lab {lab_id}")
    waiting: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=MAX_WAITING_COMMANDS)
    started = time.monotonic()  # of the lifetime: the claim restarts it
    idle_since = started

    def end(why: str, message: str = "") -> None:
        nonlocal reason, failure
        if not stop.is_set():
            reason, failure = why, message
            stop.set()

    async def clock(alive: Alive) -> None:
        # The heartbeat (from before the lab starts: starting may take a while), the lifetime,
        # and whether Redis has been away too long.
        beat = str(os.getpid())
        while alive():
            try:
                await r.set(keys.heartbeat_key(lab_id), beat, ex=keys.HEARTBEAT_TTL_S)
            except (aioredis.RedisError, OSError) as exc:
                link.failed(exc)
            else:
                link.ok()
            if link.gave_up:
                end("failed", f"failed: lost its connection to Redis for {redis_outage_s:g} s")
                return
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                end("limit")
                return
            # Read at each beat: a claim (in commands) clears ``pooled`` and restarts ``started``.
            if pooled and pool_seconds is not None and time.monotonic() - started >= pool_seconds:
                end("unclaimed")
                return
            await asyncio.sleep(keys.HEARTBEAT_S)

    try:
        clock_task = background.start(clock, "clock")
        await pubsub.subscribe(keys.in_channel(lab_id))
        try:
            await lab.start()
        except LabStartError:
            reason = "failed"  # the lab's own status says why
            return reason
        if on_running is not None:
            try:
                await on_running()
            except Exception as exc:  # recording it is not worth the lab
                log.warning("lab %s: could not record it running: %r", lab_id, exc)
        live = LiveChecks(checks, started=time.time(), measures=measures, paused=pooled)

        async def claimed(alive: Alive) -> None:
            deadline = time.monotonic() + CLAIM_VIEWER_WAIT_S
            while alive() and time.monotonic() < deadline:
                try:
                    [(_, viewers)] = await r.pubsub_numsub(keys.out_channel(lab_id))
                except (aioredis.RedisError, OSError) as exc:
                    link.failed(exc)
                    viewers = 0
                if viewers:
                    break
                await asyncio.sleep(CLAIM_POLL_S)
            if alive():
                live.restart(started=time.time())
                lab.telemetry.event(time.time(), "lab_started", claimed=True)
                publisher.emit(lab.status())

        async def commands(alive: Alive) -> None:
            nonlocal pooled, started, idle_since
            # Only reads: a command runs in apply(), so a stop takes effect even behind a slow one.
            delay = RECONNECT_S[0]
            while alive():
                try:
                    # Reconnects first if the last call lost the connection (and then subscribes
                    # the in channel again): commands published meanwhile are lost, not the lab.
                    item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
                except (aioredis.RedisError, OSError) as exc:
                    link.failed(exc)
                    await asyncio.sleep(delay)
                    delay = min(RECONNECT_S[1], delay * 2)
                    continue
                delay = RECONNECT_S[0]
                if item is None or item["type"] != "message":
                    continue
                try:
                    command = json.loads(item["data"])
                except ValueError:
                    publisher.emit({"type": "error", "message": "command is not JSON"})
                    continue
                if isinstance(command, dict) and command.get("action") == "stop":
                    stop.set()
                    return
                if isinstance(command, dict) and command.get("action") == "claim":
                    if pooled:  # a repeated claim changes nothing
                        pooled = False
                        started = idle_since = time.monotonic()
                        background.start(claimed, "claimed")
                    continue
                if isinstance(command, dict) and command.get("action") == "check":
                    try:
                        step = validate_command(command)["step"]
                    except CommandError as exc:
                        publisher.emit({"type": "error", "message": str(exc), "command": command})
                        continue
                    publisher.emit(live.verdict(step))
                    continue
                try:
                    waiting.put_nowait(command)
                except asyncio.QueueFull:
                    publisher.emit({"type": "error", "command": command,
                                    "message": "too many commands are waiting: this one was dropped"})

        async def apply(alive: Alive) -> None:
            while alive():
                command = await waiting.get()
                try:
                    await lab.command(command)  # bounded: Lab.command_timeout
                except CommandError as exc:
                    publisher.emit({"type": "error", "message": str(exc), "command": command})

        async def each_second(frame: dict[str, Any]) -> None:  # keep-alive and history
            publisher.emit(lab.status())
            if pooled:  # the claimant's chart starts at the claim
                return
            tot = frame["totals"]
            point = [frame["t"], tot["rps"], tot["p50_ms"], tot["p95_ms"], tot["err_rps"]]
            pipe = r.pipeline(transaction=False)
            pipe.rpush(keys.history_key(lab_id), json.dumps(point))
            pipe.ltrim(keys.history_key(lab_id), -keys.HISTORY_POINTS, -1)
            pipe.expire(keys.history_key(lab_id), 3600)
            try:
                await pipe.execute()
            except (aioredis.RedisError, OSError) as exc:  # a point of history is not worth the lab
                link.failed(exc)

        async def frames(alive: Alive) -> None:
            await tick(lab, live, publisher.emit, interval=frame_interval, alive=alive, each_second=each_second)

        async def idle_watch(alive: Alive) -> None:
            nonlocal idle_since
            idle_since = time.monotonic()
            channel = keys.out_channel(lab_id)
            while alive():
                await asyncio.sleep(min(IDLE_CHECK_S, idle_seconds))
                if pooled:
                    continue
                try:
                    [(_, viewers)] = await r.pubsub_numsub(channel)
                except (aioredis.RedisError, OSError) as exc:  # nobody can be counted: wait
                    link.failed(exc)
                    continue
                if viewers:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_seconds:
                    end("idle")
                    return

        tasks = [background.start(fn, fn.__name__) for fn in (commands, apply, frames, idle_watch)]
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, clock_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        for t in done:
            if t is not waiter and not t.cancelled() and t.exception() is not None:
                log.error("lab %s: %r", lab_id, t.exception())
                reason, failure = "failed", f"failed: {t.exception()!r}"
        return reason
    finally:
        # Every step is bounded, so the lab's sockets, children and files are gone within seconds
        # whatever a node, a command in progress or Redis does.
        await background.stop()
        await lab.stop()
        if reason == "idle":
            publisher.emit({**lab.status("stopped: nobody watched it for a while"), "reason": "idle"})
        elif reason == "limit":
            limit = duration_text(max_seconds or 0)
            publisher.emit({**lab.status(f"stopped: reached the {limit} limit"), "reason": "limit",
                            "limit_s": max_seconds})
        elif reason == "unclaimed":
            publisher.emit({**lab.status("stopped: its workshop ended before anyone claimed it"),
                            "reason": "unclaimed"})
        elif reason == "failed" and failure:
            publisher.emit({**lab.status(failure), "state": "failed",
                            "reason": "redis" if link.gave_up else "error"})
        # The heartbeat is left to expire: by then the worker has recorded how the lab ended, so
        # the web side never mistakes a lab that ended for one whose worker died.
        publisher.close()
        await wait_ended([publish_task], who=f"lab {lab_id}", what="its last messages to be published",
                         timeout=REDIS_TIMEOUT_S, cancel=False)
        for closing in (pubsub.aclose(), r.aclose()):
            try:
                async with asyncio.timeout(REDIS_TIMEOUT_S):
                    await closing
            except Exception as exc:
                log.warning("lab %s: closing its Redis connection: %r", lab_id, exc)
