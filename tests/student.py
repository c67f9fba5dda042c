"""A student as daphne sees one: a cookie session from the stage page, then the lab's WebSocket."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp


class Student:
    def __init__(self, base_url: str, slug: str) -> None:
        self.base_url, self.slug = base_url, slug
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.hello: dict[str, Any] = {}
        self.seen: list[dict[str, Any]] = []

    async def __aenter__(self) -> Student:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),  # an IP host
                                          timeout=aiohttp.ClientTimeout(total=30))
        async with self.http.get(f"{self.base_url}/stage/{self.slug}/") as resp:
            assert resp.status == 200, resp.status  # the page makes the session the socket needs
        url = self.base_url.replace("http://", "ws://") + f"/ws/lab/{self.slug}/"
        self.ws = await self.http.ws_connect(url, headers={"Origin": self.base_url})
        self.hello = await self.ws.receive_json(timeout=10)
        assert self.hello["type"] == "hello", self.hello
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()

    @property
    def session_key(self) -> str:
        assert self.http is not None
        return next(c.value for c in self.http.cookie_jar if c.key == "sessionid")

    async def send(self, command: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_json(command)

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        """The first message from now on that satisfies predicate; an error message fails at once."""
        assert self.ws is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {self.seen[-3:]}")
            try:
                message = await self.ws.receive_json(timeout=left)
            except TimeoutError:
                continue
            self.seen.append(message)
            assert message.get("type") != "error", message
            if predicate(message):
                return message
