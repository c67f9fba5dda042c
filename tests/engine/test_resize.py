"""Vertical scaling: a web server's modelled CPU resized live (the ``resize`` command)."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import pytest

from core.engine.capacity import Capacity
from core.engine.checks import parse_solution
from core.engine.commands import CommandError, validate_command
from core.engine.kinds import LARGEST_SIZE, SIZES
from core.engine.lab import Lab
from tests.engine.topologies import stage1


async def burst(lab: Lab, n: int) -> tuple[list[int], float]:
    """n concurrent GETs to the web server: their statuses and the seconds until the last answer."""
    start = time.monotonic()
    async with aiohttp.ClientSession() as s:

        async def one() -> int:
            async with s.get(f"http://{lab.address('web')}:8080/") as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(one() for _ in range(n)))
    return list(statuses), time.monotonic() - start


async def test_growing_hands_the_new_slots_to_waiters_and_shrinking_lets_work_finish():
    cap = Capacity(workers=1, service_ms=1, queue_limit=10, rng=random.Random(3))
    await cap.acquire()
    waiting = [asyncio.create_task(cap.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    cap.resize(workers=3, service_ms=5)
    await asyncio.sleep(0)
    assert [w.done() for w in waiting] == [True, True, False]
    assert (cap.busy, cap.queued, cap.service_ms) == (3, 1, 5)
    cap.resize(workers=1, service_ms=5)  # shrink: the three in flight carry on
    cap.release()  # slot gone (busy 3 > 1 worker): the waiter keeps waiting
    assert (cap.busy, cap.queued) == (2, 1) and not waiting[2].done()
    cap.release()
    assert (cap.busy, cap.queued) == (1, 1)
    cap.release()  # now below the new size: handed on
    await asyncio.sleep(0)
    assert waiting[2].done() and (cap.busy, cap.queued) == (1, 0)
    cap.release()
    assert cap.busy == 0


async def test_resizing_up_raises_the_throughput_ceiling_without_dropping_requests(network):
    small, big = SIZES["small"], SIZES[LARGEST_SIZE]
    topo = stage1(workers=small.workers, service_ms=small.service_ms, queue_limit=500)
    async with Lab(topo, network=network, seed=5) as lab:
        assert lab.frame()["nodes"]["web"]["size"] == "small"
        n = 80
        statuses, before = await burst(lab, n)
        assert statuses == [200] * n
        # Resize while a burst is queued: every request in flight or waiting is still answered.
        task = asyncio.create_task(burst(lab, n))
        deadline = time.monotonic() + 3  # the burst reaches the queue within ~0.1 s on an idle machine
        while lab.nodes["web"].capacity.queued == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert lab.nodes["web"].capacity.queued > 0
        await lab.command({"action": "resize", "node": "web", "size": LARGEST_SIZE})
        statuses, _ = await task
        assert statuses == [200] * n
        statuses, after = await burst(lab, n)
        assert statuses == [200] * n
        # small: 80 req/s, so n requests take about 1 s; the largest: 400 req/s, about 0.2 s.
        assert before > n / small.max_rps * 0.6
        assert after < before / 2.5
        frame = lab.frame()
        web = frame["nodes"]["web"]
        assert (web["size"], web["workers"], web["service_ms"]) == (LARGEST_SIZE, big.workers, big.service_ms)
        resized = [e for e in frame["events"] if e["kind"] == "node_resized"]
        assert [(e["node"], e["size"], e["workers"]) for e in resized] == [("web", LARGEST_SIZE, big.workers)]


async def test_resizing_beyond_the_largest_is_an_error_that_changes_nothing(network):
    async with Lab(stage1(), network=network) as lab:
        assert lab.nodes["web"].size == "medium"  # stage 1's server: 4 workers × 25 ms
        await lab.command({"action": "resize", "node": "web", "size": "up"})
        await lab.command({"action": "resize", "node": "web", "size": "up"})
        assert lab.nodes["web"].size == LARGEST_SIZE
        lab.frame()  # drops the events so far
        for bad, says in [
            ({"size": "up"}, "the largest size there is"),
            ({"size": "xxlarge"}, "size must be one of small"),
            ({"size": LARGEST_SIZE}, "already"),
            ({"node": "dns", "size": "small"}, "not a web server"),
        ]:
            with pytest.raises(CommandError, match=says):
                await lab.command({"action": "resize", "node": "web", **bad})
        frame = lab.frame()
        assert frame["nodes"]["web"]["size"] == LARGEST_SIZE
        assert lab.nodes["web"].capacity.workers == SIZES[LARGEST_SIZE].workers
        assert not [e for e in frame["events"] if e["kind"] == "node_resized"]
        # The size models the machine: a restart keeps it.
        await lab.command({"action": "restart", "node": "web"})
        assert lab.nodes["web"].capacity.workers == SIZES[LARGEST_SIZE].workers


def test_the_resize_command_and_its_solution_line():
    assert validate_command({"action": "resize", "node": "web", "size": "large"}) == {
        "action": "resize",
        "node": "web",
        "size": "large",
    }
    for bad in ({"action": "resize", "node": "web"}, {"action": "resize", "node": "web", "size": ["large"]}):
        with pytest.raises(CommandError):
            validate_command(bad)
    assert parse_solution("resize web large\nresize web up\n", node_ids=["web"]) == [
        {"action": "resize", "node": "web", "size": "large"},
        {"action": "resize", "node": "web", "size": "up"},
    ]
