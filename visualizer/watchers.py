"""The watch WebSocket: staff follow one student's lab live, read-only (/ws/watch/<lab_id>/).

It is a LabConsumer for everything that shows the lab (hello, forwarding, resubscribing after a
Redis restart, noticing a dead worker) and refuses everything that would change it: every message
the browser sends gets an error frame, and nothing here calls lab_start, lab_stop or lab_command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from django.conf import settings

from visualizer import services
from visualizer.consumers import (
    CLOSE_NO_LAB,
    CLOSE_TOO_MANY,
    COMMAND_BURST,
    COMMAND_RATE,
    MAX_MESSAGE_BYTES,
    QUOTE_CHARS,
    LabConsumer,
    SocketLease,
    TokenBucket,
    _quote,
)
from visualizer.models import Lab

log = logging.getLogger(__name__)
CLOSE_NOT_STAFF = 4403  # only staff may watch another session's lab
READ_ONLY = "this view is read-only: commands are refused"
# The owner's socket records a passed step on the same message this one forwards, so the watcher
# looks for it in the database a few times before giving up (nobody records it if the owner's page
# is closed: then the step stays open here too, as it does for the owner).
PROGRESS_POLL_S = 0.2
PROGRESS_WAIT_S = 3.0
FOLLOW_S = 2.0  # how often a watcher looks whether the student has started a newer lab


class WatchConsumer(LabConsumer):
    """One lab's messages for a staff member's page. Its subscription counts as a viewer in the
    engine's idle timer (pubsub numsub), so a watched lab is not stopped as idle: acceptable, since
    someone is looking at it."""

    owner_key: str

    async def connect(self) -> None:
        self.redis = self.pubsub = self.reader = self.lab_id = self.lease = None
        self.bucket = TokenBucket(COMMAND_RATE, COMMAND_BURST)
        self.tasks: set[asyncio.Task[None]] = set()
        self.progress: dict[str, Any] = {}
        await self.accept()  # then close with a code: a refused handshake hides it from browsers
        user = await get_user(self.scope)
        if not (user.is_active and user.is_staff):
            await self.close(code=CLOSE_NOT_STAFF)
            return
        lab = await self._lab(self.scope["url_route"]["kwargs"]["lab_id"])
        if lab is None:
            await self.close(code=CLOSE_NO_LAB)
            return
        # The staff member's own session (it signed them in) pays for the socket, as their lab pages do.
        self.lease = SocketLease(self.scope["session"].session_key, uuid.uuid4().hex)
        if not await self.lease.take(settings.SOCKETS_PER_SESSION):
            await self.lease.release()
            self.lease = None
            await self.close(code=CLOSE_TOO_MANY)
            return
        # session_key and lesson are the owner's: the hello shows the student's progress.
        self.session_key = self.owner_key = lab.session_key
        self.lesson = lab.lesson
        await self._show(lab)
        self._spawn(self._follow_owner())

    async def _show(self, lab: Lab) -> None:
        await self._subscribe(lab)
        hello = await database_sync_to_async(services.lab_snapshot)(
            lesson=self.lesson, lab=lab, session_key=self.owner_key)
        self.progress = hello["progress"]
        await self.send_json(hello)
        self._start_reader()

    async def _follow_owner(self) -> None:
        """The student started again (a new lab): move to it with a fresh hello, as the workshop's
        grid links to their newest lab. A stopped lab with no successor stays on the page."""
        while True:
            await asyncio.sleep(FOLLOW_S)
            try:
                lab = await database_sync_to_async(services.lab_for_session)(
                    session_key=self.owner_key, lesson=self.lesson)
                if lab is not None and str(lab.id) != self.lab_id:
                    await self._unsubscribe()
                    await self._show(lab)
            except Exception:  # Redis or the database away: look again next time
                log.warning("watching lab %s: could not follow its student", self.lab_id, exc_info=True)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def disconnect(self, code: int) -> None:
        for task in list(getattr(self, "tasks", ())):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await super().disconnect(code)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else (bytes_data or b"").decode(errors="replace")
        if not self.bucket.take():
            await self._error(f"slow down: at most {COMMAND_RATE:g} commands a second", raw[:QUOTE_CHARS])
            return
        content: Any = None
        if len(raw) <= MAX_MESSAGE_BYTES:  # a bigger one is not a command: quote its text, unparsed
            with contextlib.suppress(ValueError, RecursionError):
                content = json.loads(raw)
        await self._command(content, raw)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self._command(content, None)

    async def _command(self, content: Any, raw: str | None) -> None:
        # Every path a command could take in LabConsumer ends here instead: nothing is sent on.
        # What did not parse (or was not parsed) is quoted as text, as LabConsumer quotes bad JSON.
        quoted = _quote(content, raw) if content is not None or raw is None else raw[:QUOTE_CHARS]
        await self._error(READ_ONLY, quoted)

    async def _progress(self, data: str | bytes, lab_id: str) -> None:
        """A passed check went by: show the owner's progress once their socket has recorded it.
        Never records it itself (a watcher's view is no source of progress)."""
        with contextlib.suppress(ValueError):
            message = json.loads(data)
            if (isinstance(message, dict) and message.get("type") == "check" and message.get("passed") is True
                    and isinstance(message.get("step"), str) and message["step"] not in self.progress):
                self._spawn(self._follow_progress(message["step"]))

    async def _follow_progress(self, step: str) -> None:
        deadline = asyncio.get_running_loop().time() + PROGRESS_WAIT_S
        while asyncio.get_running_loop().time() < deadline:
            progress = await database_sync_to_async(services.progress_for)(
                session_key=self.owner_key, lesson=self.lesson)
            if step in progress:
                if progress != self.progress:
                    self.progress = progress
                    await self.send_json({"type": "progress", "progress": progress})
                return
            await asyncio.sleep(PROGRESS_POLL_S)

    @database_sync_to_async
    def _lab(self, lab_id: uuid.UUID | str) -> Lab | None:
        return Lab.objects.select_related("lesson").filter(pk=lab_id, lesson__topology__isnull=False).first()
