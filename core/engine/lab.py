"""A lab: every node of one topology running in this event loop, on its own 127.A.B.x address."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import time
from collections.abc import Callable
from typing import Any

from core.engine.commands import CommandError, validate_command
from core.engine.kinds import SIZES
from core.engine.nodes.base import Node
from core.engine.spec import Topology
from core.engine.telemetry import Telemetry, Trace

Emit = Callable[[dict[str, Any]], None]


class LabStartError(Exception):
    pass


def _target_size(node_id: str, current: str | None, wanted: str) -> str:
    """The size a resize goes to (``up``/``down`` step from the current one); CommandError if none."""
    names = list(SIZES)
    if wanted in SIZES:
        if wanted == current:
            raise CommandError(f"{node_id} is already {wanted}")
        return wanted
    if current is None:
        raise CommandError(f"{node_id} has a custom size: resize it to one of {', '.join(names)} first")
    i = names.index(current) + (1 if wanted == "up" else -1)
    if i >= len(names):
        raise CommandError(f"{node_id} is already {current}, the largest size there is: the ceiling of scaling up")
    if i < 0:
        raise CommandError(f"{node_id} is already {current}, the smallest size")
    return names[i]


def _runtime(path: str) -> type[Node]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class Lab:
    """Start with ``async with Lab(...)`` (or start()/stop()); feed commands; take frames."""

    def __init__(
        self,
        topology: Topology,
        *,
        network: str,
        emit: Emit | None = None,
        frame_interval: float = 0.25,
        seed: int | None = None,
        stop_timeout: float = 2.0,
    ) -> None:
        self.topology = topology
        self.network = network
        self.emit = emit or (lambda message: None)
        self.rng = random.Random(seed)
        self.stop_timeout = stop_timeout
        self.telemetry = Telemetry(frame_interval=frame_interval, rng=self.rng)
        self.state = "stopped"
        self._by_address = {self.address(n.id): n.id for n in topology.nodes}
        self.nodes: dict[str, Node] = {n.id: _runtime(n.kind_info.runtime)(n, self) for n in topology.nodes}
        self._node_state = {n.id: "stopped" for n in topology.nodes}
        self._node_ids = [n.id for n in topology.nodes]

    # Addresses -----------------------------------------------------------------------------
    def address(self, node_id: str) -> str:
        return f"{self.network}.{self.topology.node(node_id).host}"

    def node_at(self, address: str) -> str | None:
        return self._by_address.get(address)

    # Lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start servers, then clients, publishing each node's progress; LabStartError on failure."""
        self._set_state("starting")
        servers = [n for n in self.nodes.values() if n.spec.kind_info.role == "server"]
        clients = [n for n in self.nodes.values() if n.spec.kind_info.role == "client"]
        for group in (servers, clients):
            for node in group:
                self._node_state[node.id] = "starting"
            self._publish_status()
            results = await asyncio.gather(*(n.start() for n in group), return_exceptions=True)
            failed = [(n, r) for n, r in zip(group, results, strict=True) if isinstance(r, BaseException)]
            for node, result in zip(group, results, strict=True):
                self._node_state[node.id] = "down" if isinstance(result, BaseException) else "up"
            if failed:
                await self.stop()
                node, exc = failed[0]
                self._set_state("failed", f"{node.id} could not start on {node.address}:{node.port}: {exc}")
                raise LabStartError(f"{node.id}: {exc}") from exc
        self.telemetry.event(time.time(), "lab_started")
        self._set_state("running")

    async def stop(self) -> None:
        """Stop clients first (no new traffic), then servers; every node gets stop_timeout."""
        if self.state not in ("stopped", "failed"):
            self._set_state("stopping")
        order = sorted(self.nodes.values(), key=lambda n: n.spec.kind_info.role != "client")
        for node in order:
            # One stuck node must not keep the others' sockets.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.stop(), self.stop_timeout)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.discard(), self.stop_timeout)
            self._node_state[node.id] = "stopped"
        if self.state != "failed":
            self._set_state("stopped")

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # Commands ------------------------------------------------------------------------------
    async def command(self, raw: Any) -> None:
        """Apply one command; raises CommandError (and changes nothing) if it is invalid."""
        cmd = validate_command(raw, node_ids=self._node_ids)
        action, node_id = cmd["action"], cmd.get("node")
        now = time.time()
        if action == "traffic":
            clients = [n for n in self.nodes.values() if n.spec.kind == "client"]
            if node_id is not None:
                if self.nodes[node_id].spec.kind != "client":
                    raise CommandError(f"{node_id} is not a client: only clients send traffic")
                self.nodes[node_id].set_rate(cmd["rate"])  # type: ignore[attr-defined]
            else:
                for c in clients:  # split the total evenly
                    c.set_rate(cmd["rate"] / max(1, len(clients)))  # type: ignore[attr-defined]
            self.telemetry.event(now, "traffic_set", rate=cmd["rate"], node=node_id)
        elif action == "kill":
            node = self.nodes[node_id]
            if not node.up:
                raise CommandError(f"{node_id} is already down")
            await node.kill()
            self._node_state[node_id] = "down"
            self.telemetry.event(now, "node_killed", node=node_id)
            self._publish_status()
        elif action == "restart":
            node = self.nodes[node_id]
            if node.up:
                await node.stop()
            try:
                await node.start()
            except OSError as exc:
                self._node_state[node_id] = "down"
                raise CommandError(f"{node_id} could not restart: {exc}") from exc
            self._node_state[node_id] = "up"
            self.telemetry.event(now, "node_restarted", node=node_id)
            self._publish_status()
        elif action == "slow":  # one fault for every server kind (Node.slow_ms)
            node = self.nodes[node_id]
            if node.spec.kind_info.role != "server":
                raise CommandError(f"{node_id} is a client: only servers can be slowed down")
            node.slow_ms = cmd["ms"]
            self.telemetry.event(now, "node_slowed", node=node_id, ms=cmd["ms"])
        elif action == "algorithm":
            node = self.nodes[node_id]
            if node.spec.kind != "lb":
                raise CommandError(f"{node_id} is not a load balancer: only a balancer has an algorithm")
            node.set_algorithm(cmd["value"])  # type: ignore[attr-defined]
            self.telemetry.event(now, "algorithm_set", node=node_id, value=cmd["value"])
        elif action == "resize":  # vertical scaling: a web server's modelled CPU, live
            node = self.nodes[node_id]
            if not node.spec.kind_info.resizable:
                raise CommandError(f"{node_id} is not a web server: only a web server can be resized")
            size = _target_size(node_id, node.size, cmd["size"])  # type: ignore[attr-defined]
            node.resize(size)  # type: ignore[attr-defined]
            self.telemetry.event(
                now,
                "node_resized",
                node=node_id,
                size=size,
                workers=node.capacity.workers,  # type: ignore[attr-defined]
                service_ms=node.capacity.service_ms,  # type: ignore[attr-defined]
            )

    # Telemetry -----------------------------------------------------------------------------
    def record(self, trace: Trace) -> None:
        self.telemetry.record(trace)

    def frame(self, now: float | None = None) -> dict[str, Any]:
        frame = self.telemetry.frame(time.time() if now is None else now, self._node_ids, list(self.topology.edges))
        for node_id, node in self.nodes.items():
            frame["nodes"][node_id].update(node.snapshot())
            if node.slow_ms:
                frame["nodes"][node_id]["slow_ms"] = node.slow_ms
        return frame

    def status(self, message: str | None = None) -> dict[str, Any]:
        status: dict[str, Any] = {
            "type": "status",
            "state": self.state,
            "nodes": {
                n.id: {
                    "state": self._node_state[n.id],
                    "address": n.address,
                    "port": n.port,
                    "proto": n.spec.kind_info.proto,
                }
                for n in self.nodes.values()
            },
        }
        if message:
            status["message"] = message
        return status

    def _set_state(self, state: str, message: str | None = None) -> None:
        self.state = state
        self._publish_status(message)

    def _publish_status(self, message: str | None = None) -> None:
        self.emit(self.status(message))
