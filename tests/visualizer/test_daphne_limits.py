"""Through the real daphne, started as the Procfile starts it: a huge WebSocket message is refused."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from tests.stack import BASE_DIR, CONTENT, DAPHNE, DAPHNE_LIMITS, run_stack
from visualizer.consumers import MAX_MESSAGE_BYTES


def test_it_starts_daphne_with_the_consumers_cap_in_the_procfile_and_the_tests() -> None:
    web = next(line for line in (BASE_DIR / "Procfile").read_text().splitlines() if line.startswith("web:"))
    assert " ".join(DAPHNE) in web
    caps = dict(re.findall(r"(--websocket-max-(?:message|frame)-size) (\d+)", web))
    # A frame over the consumer's cap is refused by autobahn with 1009. Its message cap also holds
    # what the server sends (autobahn's sendMessage raises past it, and the page loses its stream:
    # a stage-6 frame is over 16 KB), so it stays far above any frame the lab sends.
    assert caps == {"--websocket-max-message-size": str(4 * 1024 * 1024),
                    "--websocket-max-frame-size": str(MAX_MESSAGE_BYTES)}
    assert dict(zip(DAPHNE_LIMITS[::2], DAPHNE_LIMITS[1::2], strict=True)) == caps


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_2_mb_message_closes_with_1009_and_a_new_socket_works(tmp_path: Path, redis_url: str) -> None:
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
        assert code == 1009  # RFC 6455's "message too big", sent by the protocol layer (core.daphne_serve)
        assert hello == "hello"
