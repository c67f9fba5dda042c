"""Through the real daphne, started as the Procfile starts it: a huge WebSocket message is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.stack import CONTENT, run_stack

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_2_mb_message_closes_as_too_big_and_a_new_socket_works(tmp_path: Path, redis_url: str) -> None:
    with run_stack(tmp_path, redis_url, lessons=[CONTENT / "01-single-server.md"], web=True, redis_db=3) as stack:

        async def scenario() -> tuple[int | None, str]:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # an IP host
                async with http.get(f"{stack.url}/stage/single-server/") as resp:
                    assert resp.status == 200
                url = stack.url.replace("http://", "ws://") + "/ws/lab/single-server/"
                ws = await http.ws_connect(url, headers={"Origin": stack.url})
                assert (await ws.receive_json(timeout=10))["type"] == "hello"
                await ws.send_str('{"action": "start", "id": "' + "x" * 2_000_000 + '"}')
                msg = await ws.receive(timeout=10)
                code = ws.close_code if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) else None
                again = await http.ws_connect(url, headers={"Origin": stack.url})  # the server is fine
                hello = await again.receive_json(timeout=10)
                await again.close()
                return code, hello["type"]

        code, hello = asyncio.run(scenario())
        assert code == 4009  # the application's "message too big" (1009 is the transport's own)
        assert hello == "hello"
