"""Run one lab wired to Redis: commands in on a pub/sub channel, frames and status out.

The frames and the lesson's live checks come from ``core.engine.host``, as for ``lessons prove``.

This is the only engine module that knows about Redis; a Celery task calls ``run_lab`` inside
``asyncio.run``. It returns when the lab is told to stop or has had no viewer for idle_seconds,
and always releases every socket before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis

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


class _Publisher:
    """Serialises messages once and sends them in order from one task (emit() never blocks)."""

    def __init__(self, r: aioredis.Redis, lab_id: str) -> None:
        self.r = r
        self.lab_id = lab_id
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1000)
        self.last_frame: dict[str, Any] | None = None

    def emit(self, message: dict[str, Any]) -> None:
        message["lab"] = self.lab_id
        with contextlib.suppress(asyncio.QueueFull):  # a stalled Redis must not stall the lab
            self.queue.put_nowait(message)

    async def run(self) -> None:
        channel = keys.out_channel(self.lab_id)
        while (message := await self.queue.get()) is not None:
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
            except aioredis.RedisError as exc:
                log.warning("lab %s: publish failed: %s", self.lab_id, exc)

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
) -> str:
    """Run the lab until stopped; returns why it stopped ("stopped", "idle" or "failed").

    ``checks`` maps a lesson step's id to its check's source: every published frame is evaluated,
    a newly passed step is published as ``{"type": "check", "passed": true, ...}``, and the
    ``{"action": "check", "step": ID}`` command answers with the step's current verdict.
    ``measures`` (step id -> metric name) adds the metric's value at the pass as ``measured``.
    """
    r = aioredis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    pubsub = r.pubsub()
    publisher = _Publisher(r, lab_id)
    publish_task = asyncio.create_task(publisher.run(), name=f"lab {lab_id}: publish")
    lab = Lab(topology_from_dict(topology), network=network, emit=publisher.emit, frame_interval=frame_interval)
    stop = asyncio.Event()
    reason = "stopped"
    background = Background(f"lab {lab_id}")
    waiting: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=MAX_WAITING_COMMANDS)
    try:
        await pubsub.subscribe(keys.in_channel(lab_id))
        try:
            await lab.start()
        except LabStartError:
            return "failed"
        live = LiveChecks(checks, started=time.time(), measures=measures)

        async def commands(alive: Alive) -> None:
            # Only reads: a command runs in apply(), so a stop takes effect even behind a slow one.
            while alive():
                item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
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
            tot = frame["totals"]
            point = [frame["t"], tot["rps"], tot["p50_ms"], tot["p95_ms"], tot["err_rps"]]
            pipe = r.pipeline(transaction=False)
            pipe.rpush(keys.history_key(lab_id), json.dumps(point))
            pipe.ltrim(keys.history_key(lab_id), -keys.HISTORY_POINTS, -1)
            pipe.expire(keys.history_key(lab_id), 3600)
            try:
                await pipe.execute()
            except aioredis.RedisError as exc:  # a point of history is not worth the lab
                log.warning("lab %s: history not saved: %s", lab_id, exc)

        async def frames(alive: Alive) -> None:
            await tick(lab, live, publisher.emit, interval=frame_interval, alive=alive, each_second=each_second)

        async def idle_watch(alive: Alive) -> None:
            nonlocal reason
            idle_since = time.monotonic()
            channel = keys.out_channel(lab_id)
            while alive():
                await asyncio.sleep(min(IDLE_CHECK_S, idle_seconds))
                [(_, viewers)] = await r.pubsub_numsub(channel)
                if viewers:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_seconds:
                    reason = "idle"
                    stop.set()
                    return

        tasks = [background.start(fn, fn.__name__) for fn in (commands, apply, frames, idle_watch)]
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        for t in done:
            if t is not waiter and not t.cancelled() and t.exception() is not None:
                log.error("lab %s: %r", lab_id, t.exception())
                reason = "failed"
        return reason
    finally:
        # Every step is bounded, so the lab's sockets, children and files are gone within seconds
        # whatever a node, a command in progress or Redis does.
        await background.stop()
        await lab.stop()
        if reason == "idle":
            publisher.emit(lab.status("stopped: nobody watched it for a while"))
        publisher.close()
        await wait_ended([publish_task], who=f"lab {lab_id}", what="its last messages to be published",
                         timeout=REDIS_TIMEOUT_S, cancel=False)
        for closing in (pubsub.aclose(), r.aclose()):
            try:
                async with asyncio.timeout(REDIS_TIMEOUT_S):
                    await closing
            except Exception as exc:
                log.warning("lab %s: closing its Redis connection: %r", lab_id, exc)
