"""A lab always stops: a lost cancellation, a node that will not stop, a command that hangs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from core.engine import keys
from core.engine.commands import CommandError
from core.engine.lab import Lab
from core.engine.nodes.web import WebNode
from core.engine.runner import run_lab
from tests.engine.test_kvdb import kv_topology, redis_children, refused, running
from tests.engine.test_runner import next_message
from tests.engine.topologies import stage1


async def test_killing_kv_ends_even_when_its_refresher_loses_the_cancel(network, monkeypatch):
    # The hang seen in `lessons prove` (stage 2, step kill-kv): the kv node's gauge refresher sends
    # through redis-py, which wraps the send in asyncio.wait_for. A kill that cancels the refresher
    # in the loop turn in which that send completes is lost (Python 3.11), and the old kill
    # awaited the refresher forever, its redis-server still up. Here the kill is started exactly
    # then: as the send completes, inside wait_for's inner task.
    lab = Lab(kv_topology(), network=network)
    await lab.start()
    node = lab.nodes["kv"]
    pid = node.proc.pid
    kill: asyncio.Task[None] | None = None
    original = Connection._send_packed_command

    async def send_then_kill(self, command) -> None:
        nonlocal kill
        await original(self, command)
        if kill is None and self.host == node.address:
            kill = asyncio.create_task(node.kill())

    try:
        monkeypatch.setattr(Connection, "_send_packed_command", send_then_kill)
        deadline = time.monotonic() + 5
        while kill is None and time.monotonic() < deadline:  # the refresher sends once a second
            await asyncio.sleep(0.01)
        assert kill is not None, "the refresher never sent"
        done, _ = await asyncio.wait([kill], timeout=10)
        assert done, "kill kv hung"
        assert await refused(node.address)
        assert not running(pid)
        assert not redis_children(network)
    finally:
        await lab.stop()


async def stuck(seconds: float = 6.0) -> None:
    """A stop that ignores every cancellation for a while (then ends, so the test loop can close)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)


async def test_a_node_that_will_not_stop_is_forced_within_the_deadline(network, caplog):
    lab = Lab(kv_topology(), network=network, stop_timeout=0.5, stop_deadline=1.5)
    await lab.start()
    node = lab.nodes["kv"]
    pid, data_dir = node.proc.pid, Path(node.dir)
    node.stop = stuck  # whatever its tasks do
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="core.engine.lab"):
        await lab.stop()
    assert time.monotonic() - began < 2.5
    assert lab.state == "stopped" and lab.forced == ["kv"]
    assert await refused(node.address)
    assert not running(pid) and not redis_children(network)
    assert not data_dir.exists()
    assert any("kv" in r.getMessage() and "forcing it" in r.getMessage() for r in caplog.records)


async def test_a_stop_that_is_itself_cancelled_still_releases_everything(network):
    # As when the worker shuts down while a lab is stopping: nothing may outlive the cancel.
    lab = Lab(kv_topology(), network=network)
    await lab.start()
    node = lab.nodes["kv"]
    pid, data_dir = node.proc.pid, Path(node.dir)
    node.stop = stuck
    stopping = asyncio.create_task(lab.stop())
    await asyncio.sleep(0.3)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert await refused(node.address)
    assert not running(pid) and not redis_children(network)
    assert not data_dir.exists()


async def test_a_command_that_hangs_fails_with_a_message_and_the_lab_goes_on(network, monkeypatch):
    async def hang(self) -> None:
        await asyncio.sleep(60)

    monkeypatch.setattr(WebNode, "kill", hang)
    async with Lab(stage1(rate=20, service_ms=1), network=network, command_timeout=0.5) as lab:
        began = time.monotonic()
        with pytest.raises(CommandError, match=r"did not finish within 0\.5 s"):
            await lab.command({"action": "kill", "node": "web"})
        assert time.monotonic() - began < 2
        await lab.command({"action": "traffic", "rate": 10})  # the lab takes commands still
        await asyncio.sleep(0.6)
        assert lab.frame()["totals"]["ok_rps"] > 0


async def test_a_stop_is_obeyed_while_a_command_hangs(redis_url, network, monkeypatch):
    # The stop used to be read by the loop that ran commands: behind a hung command, never.
    async def hang(self) -> None:
        await asyncio.sleep(60)

    monkeypatch.setattr(WebNode, "kill", hang)
    r = aioredis.from_url(redis_url)
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.out_channel("hang"))
    task = asyncio.create_task(
        run_lab(lab_id="hang", topology=stage1(rate=10, service_ms=1).to_dict(), network=network, redis_url=redis_url)
    )
    try:
        await next_message(pubsub, "status", where=lambda m: m["state"] == "running")
        await r.publish(keys.in_channel("hang"), json.dumps({"action": "kill", "node": "web"}))
        await asyncio.sleep(0.3)
        await r.publish(keys.in_channel("hang"), json.dumps({"action": "stop"}))
        began = time.monotonic()
        done, _ = await asyncio.wait([task], timeout=8)
        assert done, "the lab did not stop behind a hung command"
        assert task.result() == "stopped"
        assert time.monotonic() - began < 8
        assert await refused(f"{network}.80", 8080)
        assert json.loads(await r.get(keys.status_key("hang")))["state"] == "stopped"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.aclose()
        await r.aclose()
