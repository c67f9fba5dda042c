"""The lab WebSocket: hello on connect, commands in, the lab's Redis messages out verbatim."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from typing import Any

import redis.asyncio
from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest
from django.utils import translation

from core import redis as core_redis
from core.client_ip import address_from
from core.engine import keys
from core.engine.commands import CommandError, validate_command
from lessons.models import Lesson
from visualizer import services, workshops
from visualizer.models import Lab

log = logging.getLogger(__name__)
CLOSE_NO_SESSION = 4401
CLOSE_NO_LAB = 4404
# "Message too big" from the consumer itself. Under daphne the protocol layer closes such a message with
# RFC 6455's 1009 first (core/daphne_serve.py, same cap), so this is the second line, for a server
# started otherwise; it cannot be 1009, which autobahn refuses from an application.
CLOSE_TOO_BIG = 4009
CLOSE_TOO_MANY = 4429  # the session already has settings.SOCKETS_PER_SESSION lab pages open
# A command is a few hundred bytes; anything much bigger is not one. Daphne is started with this
# same cap (Procfile, tests/stack.py; test_daphne_limits.py checks they agree).
MAX_MESSAGE_BYTES = 16 * 1024
QUOTE_CHARS = 200  # an error frame quotes at most this much of a bad command
# Commands a socket may send: RATE a second, in bursts of BURST (the diagram sends a few a second).
COMMAND_RATE = 20.0
COMMAND_BURST = 40.0
WATCH_S = 2.0  # how often a socket looks whether its lab's worker is still alive (services.lab_watch)
RESUBSCRIBE_S = (0.5, 5.0)  # backoff while Redis is unreachable: first wait, longest wait
# A socket holds a lease in Redis (so the cap counts every daphne process's sockets); a process
# that dies without closing its sockets lets their leases lapse after this.
SOCKET_LEASE_S = 60.0


class TokenBucket:
    """``take()`` is True while the socket is within its rate; a refused command costs nothing."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _quote(command: Any, raw: str | None = None) -> Any:
    """What an error frame may echo: a small command as it came, else a short prefix of its text."""
    try:
        text = json.dumps(command, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = None
    if text is not None and len(text) <= QUOTE_CHARS:
        return command
    return (raw if raw is not None else (text or ""))[:QUOTE_CHARS]


def _as_bytes(data: str | bytes) -> bytes:
    return data if isinstance(data, bytes) else data.encode()


class SocketLease:
    """One socket's place among its session's open sockets, counted in Redis across processes.

    A sorted set per session (named by a hash: the key is a credential) of socket -> expiry; a
    live socket renews its lease, a socket of a dead process drops out when its lease lapses.
    """

    def __init__(self, session_key: str, socket_id: str) -> None:
        digest = hashlib.sha256(session_key.encode()).hexdigest()[:24]
        self.key = f"{keys.PREFIX}:session:{digest}:sockets"
        self.member = socket_id
        self.redis = core_redis.async_client()
        self.renewer: asyncio.Task[None] | None = None

    async def take(self, cap: int) -> bool:
        """Join the session's sockets; False (and not joined) if it already has ``cap``."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.zremrangebyscore(self.key, 0, now)
        pipe.zadd(self.key, {self.member: now + SOCKET_LEASE_S})
        pipe.zcard(self.key)
        pipe.expire(self.key, int(SOCKET_LEASE_S) + 1)
        async with asyncio.timeout(core_redis.TIMEOUT_S):
            _, _, count, _ = await pipe.execute()
        if count > cap:
            return False
        self.renewer = asyncio.create_task(self._renew())
        return True

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(SOCKET_LEASE_S / 3)
            with contextlib.suppress(Exception):  # a missed renewal is retried; two lapse a lease
                async with asyncio.timeout(core_redis.TIMEOUT_S):
                    await self.redis.zadd(self.key, {self.member: time.time() + SOCKET_LEASE_S})
                    await self.redis.expire(self.key, int(SOCKET_LEASE_S) + 1)

    async def release(self) -> None:
        if self.renewer is not None:
            self.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.renewer
        with contextlib.suppress(Exception):
            async with asyncio.timeout(core_redis.TIMEOUT_S):
                await self.redis.zrem(self.key, self.member)
        with contextlib.suppress(Exception):
            await self.redis.aclose()


class LabConsumer(AsyncJsonWebsocketConsumer):
    lesson: Lesson
    session_key: str
    watcher: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.redis: redis.asyncio.Redis | None = None
        self.pubsub: redis.asyncio.client.PubSub | None = None
        self.reader: asyncio.Task[None] | None = None
        self.lab_id: str | None = None
        self.bucket = TokenBucket(COMMAND_RATE, COMMAND_BURST)
        self.lease: SocketLease | None = None
        self.checks_asked: set[str] = set()  # steps whose "check now" verdict this socket awaits
        # A workshop's hot pool (visualizer.pool) that serves this socket's start, if any.
        self.pool: str | None = None
        # Accept first, then close with a code: a refused handshake hides the code from browsers.
        await self.accept()
        session_key = await self._session_key()
        if session_key is None:
            await self.close(code=CLOSE_NO_SESSION)
            return
        lesson = await self._runnable_lesson(self.scope["url_route"]["kwargs"]["slug"])
        if lesson is None:
            await self.close(code=CLOSE_NO_LAB)
            return
        self.session_key, self.lesson = session_key, lesson
        self.lease = SocketLease(session_key, uuid.uuid4().hex)
        if not await self.lease.take(settings.SOCKETS_PER_SESSION):
            await self.lease.release()
            self.lease = None
            await self.close(code=CLOSE_TOO_MANY)
            return
        lab = await database_sync_to_async(services.lab_for_session)(session_key=session_key, lesson=lesson)
        await self._subscribe(lab)
        await self.send_json(await database_sync_to_async(services.lab_snapshot)(
            lesson=lesson, lab=lab, session_key=session_key))
        self._start_reader()

    async def disconnect(self, code: int) -> None:
        await self._unsubscribe()
        if self.lease is not None:
            await self.lease.release()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Parse here rather than in decode_json: bad JSON must get an error frame, not a dropped socket.
        size = len(text_data) if text_data is not None else len(bytes_data or b"")
        if size > MAX_MESSAGE_BYTES:
            await self.close(code=CLOSE_TOO_BIG)
            return
        raw = text_data if text_data is not None else (bytes_data or b"").decode(errors="replace")
        if not self.bucket.take():
            await self._error(f"slow down: at most {COMMAND_RATE:g} commands a second", _quote(None, raw))
            return
        try:
            content = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested too deep ("[" * 5000)
            await self._error("a command must be a JSON object", raw[:QUOTE_CHARS])
            return
        await self._command(content, raw)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self._command(content, None)

    async def _command(self, content: Any, raw: str | None) -> None:
        # The form only: nodes come and go at run time (add/remove), so the engine, which knows
        # the live topology, rejects an unknown node with an error message of its own.
        try:
            command = validate_command(content)
        except CommandError as exc:
            await self._error(str(exc)[:QUOTE_CHARS * 2], _quote(content, raw))
            return
        except RecursionError:
            await self._error("a command must be a flat JSON object", _quote(None, raw))
            return
        action = command["action"]
        lab = await database_sync_to_async(services.lab_for_session)(
            session_key=self.session_key, lesson=self.lesson)
        if action == "start":
            try:
                user = await get_user(self.scope)  # staff are not held to a workshop's stage
                lab = await database_sync_to_async(self._start)(staff=bool(user.is_active and user.is_staff))
            except services.LabRefused as exc:
                await self._error(str(exc), _quote(content, raw))
                return
            await self._unsubscribe()
            await self._subscribe(lab)
            # The queued status went out before we subscribed: send what Redis holds now.
            status = await self.redis.get(keys.status_key(str(lab.id)))
            if status:
                await self.send(text_data=status)
            self._start_reader()
        elif lab is None:
            await self._error("lab is not running", _quote(content, raw))
        elif action == "stop":
            await database_sync_to_async(services.lab_stop)(lab=lab)
        else:
            if action == "check":
                self.checks_asked.add(command["step"])
            await self._send_command(lab, command, _quote(content, raw))

    def _start(self, *, staff: bool) -> Lab:
        # Refusals are worded in the page's language (the socket's request carries its cookie).
        with translation.override(self._language()):
            in_workshop, pool = workshops.start_terms(self.session_key, self.lesson, staff=staff)
            # A room behind one NAT address must not hit the per-address cap.
            return services.lab_start(session_key=self.session_key, lesson=self.lesson,
                                      client_address=None if in_workshop else self._client_address(),
                                      pool=self.pool if self.pool is not None else pool)

    def _language(self) -> str:
        """The page's language, chosen as LocaleMiddleware chose it for the page: the language
        cookie, else the browser's Accept-Language."""
        request = HttpRequest()
        request.COOKIES = self.scope.get("cookies") or {}
        accept = dict(self.scope.get("headers") or []).get(b"accept-language", b"")
        request.META["HTTP_ACCEPT_LANGUAGE"] = accept.decode("latin-1")
        return translation.get_language_from_request(request)

    async def _subscribe(self, lab: Lab | None) -> None:
        self.lab_id = str(lab.id) if lab is not None else None
        if lab is None:
            return
        self.redis = core_redis.async_client()
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self.pubsub.subscribe(keys.out_channel(str(lab.id)))

    def _start_reader(self) -> None:
        # Started after hello (or the start reply) so messages buffered meanwhile follow it in order.
        if self.pubsub is not None and self.reader is None:
            self.reader = asyncio.create_task(self._forward(self.pubsub, self.lab_id))
        if self.lab_id is not None and self.watcher is None:
            self.watcher = asyncio.create_task(self._watch(self.lab_id))

    async def _forward(self, pubsub: redis.asyncio.client.PubSub, lab_id: str | None) -> None:
        try:
            while True:
                try:
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            await self.send(text_data=message["data"])
                            if lab_id is not None and b'"check"' in _as_bytes(message["data"]):
                                await self._progress(message["data"], lab_id)
                    return
                except (redis.RedisError, OSError) as exc:
                    await self._resubscribe(pubsub, lab_id, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("lost the lab's event stream")
            await self._error("lost the lab's event stream; reload the page", None)

    async def _resubscribe(self, pubsub: redis.asyncio.client.PubSub, lab_id: str | None, exc: BaseException) -> None:
        """Redis went away (a restart): wait for it with backoff, subscribe again, and send the
        lab's status as Redis has it now, since what was published meanwhile is lost."""
        log.warning("lab %s: lost its event stream (%r); resubscribing", lab_id, exc)
        await self._error("lost contact with the lab's messages; reconnecting…", None)
        delay = RESUBSCRIBE_S[0]
        while True:
            await asyncio.sleep(delay)
            delay = min(RESUBSCRIBE_S[1], delay * 2)
            try:
                await pubsub.ping()  # reconnects, and redis-py subscribes the channel again
                status = await self.redis.get(keys.status_key(lab_id)) if self.redis and lab_id else None
            except (redis.RedisError, OSError):
                continue
            if status:
                await self.send(text_data=status)
            return

    async def _watch(self, lab_id: str) -> None:
        """While this socket shows a live lab: notice a dead worker or a queued lab Redis lost."""
        while True:
            try:
                live = await database_sync_to_async(services.lab_watch)(lab_id=lab_id)
            except (redis.RedisError, OSError):
                live = True  # Redis is away: look again later
            except Exception:
                log.exception("lab %s: watching it failed", lab_id)
                return
            if not live:
                return
            await asyncio.sleep(WATCH_S)

    async def _send_command(self, lab: Lab, command: dict[str, Any], quoted: Any) -> None:
        if await database_sync_to_async(services.lab_command)(lab=lab, command=command):
            return
        # Nobody received it: say so rather than let it vanish (and look at once whether it died).
        if lab.state == Lab.State.QUEUED:
            await self._error("the lab is not running yet: this command was not sent", quoted)
            return
        await self._error("the lab did not receive this command: its worker is not answering", quoted)
        if self.lab_id == str(lab.id):
            with contextlib.suppress(redis.RedisError, OSError):
                await database_sync_to_async(services.lab_watch)(lab_id=self.lab_id)

    async def _unsubscribe(self) -> None:
        reader, watcher, pubsub, client = self.reader, self.watcher, self.pubsub, self.redis
        self.reader = self.watcher = self.pubsub = self.redis = None
        for task in (reader, watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _progress(self, data: str | bytes, lab_id: str) -> None:
        """A step the session's own lab passed: record it (idempotently) and send the progress."""
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not (isinstance(message, dict) and message.get("type") == "check"):
            return
        if message.get("passed") is False and message.get("step") in self.checks_asked:
            # This socket's own "check now" failed: a workshop's grid counts repeated ones as stuck.
            self.checks_asked.discard(message["step"])
            await database_sync_to_async(workshops.check_failed)(
                session_key=self.session_key, lesson=self.lesson, step=message["step"])
            return
        if message.get("passed") is not True:
            return
        created = await database_sync_to_async(services.progress_record)(
            session_key=self.session_key, lesson=self.lesson, lab_id=lab_id, message=message)
        if created:
            progress = await database_sync_to_async(services.progress_for)(
                session_key=self.session_key, lesson=self.lesson)
            await self.send_json({"type": "progress", "progress": progress})

    async def _error(self, message: str, command: Any) -> None:
        await self.send_json({"type": "error", "message": message, "command": command})

    def _client_address(self) -> str | None:
        client = self.scope.get("client")
        headers = dict(self.scope.get("headers") or [])
        forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
        return address_from(client[0] if client else "", forwarded) or None

    async def _session_key(self) -> str | None:
        session: SessionBase | None = self.scope.get("session")
        key = session.session_key if session is not None else None
        # The cookie value alone proves nothing: the session must exist on the server.
        if not key or not await database_sync_to_async(session.exists)(key):
            return None
        return key

    @database_sync_to_async
    def _runnable_lesson(self, slug: str) -> Lesson | None:
        return Lesson.objects.filter(slug=slug, topology__isnull=False).first()
