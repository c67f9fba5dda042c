"""A lab: every node of one topology running in this event loop, on its own 127.A.B.x address."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.engine.commands import CommandError, validate_command
from core.engine.context import NodeContext
from core.engine.fdlimit import raise_open_files_limit
from core.engine.kinds import KIND_COMMANDS, KINDS
from core.engine.looplag import LoopLag
from core.engine.nodes.base import Node
from core.engine.replication import Replication
from core.engine.spec import NodeSpec, Topology
from core.engine.telemetry import Telemetry, Trace

log = logging.getLogger(__name__)
Emit = Callable[[dict[str, Any]], None]
# Horizontal scaling: the kinds a student may add and remove live (``Kind.scalable``: servers behind
# a balancer, database replicas). Clients, DNS and balancers are the lesson's fixed frame.
SCALABLE_KINDS = frozenset(name for name, kind in KINDS.items() if kind.scalable)
_scalable = [name for name in KINDS if name in SCALABLE_KINDS]
_SCALABLE_TITLES = " and ".join(filter(None, (", ".join(_scalable[:-1]), _scalable[-1]))) + " nodes"  # a, b and c
MAX_NODES = 32  # per lab: every node is real sockets in one worker process
DRAIN_TIMEOUT_S = 5.0  # how long a removed node may finish the requests it was sent
START_TIMEOUT_S = 30.0  # a node that is not serving by then failed to start
STOP_DEADLINE_S = 5.0  # a lab's stop: every node stopped, or forced, within this
# The longest any one command may take (an add starts a node; a remove drains for DRAIN_TIMEOUT_S,
# then stops it): past it the command fails with a message and the lab goes on.
COMMAND_TIMEOUT_S = 15.0


class LabStartError(Exception):
    pass


async def _each(
    nodes: list[Node], work: Callable[[Node], Awaitable[None]], name: str, timeout: float
) -> tuple[dict[asyncio.Task[None], Node], set[asyncio.Task[None]]]:
    """Run ``work(node)`` for every node at once, waiting at most ``timeout``: (task -> node, the
    tasks still running, now cancelled). Cancelling the caller cancels them all."""
    tasks = {asyncio.ensure_future(work(n)): n for n in nodes}
    for task, node in tasks.items():
        task.set_name(f"{name} {node.id}")
    if not tasks:
        return tasks, set()
    try:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    for task in pending:
        task.cancel()
    return tasks, pending


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
        stop_deadline: float = STOP_DEADLINE_S,
        command_timeout: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self.topology = topology
        self.network = network
        self.emit = emit or (lambda message: None)
        self.rng = random.Random(seed)
        self.stop_timeout = stop_timeout  # the clients' share of the stop; servers have the rest
        self.stop_deadline = max(stop_deadline, stop_timeout)
        self.command_timeout = command_timeout
        self.forced: list[str] = []  # the nodes the last stop had to force
        self.telemetry = Telemetry(frame_interval=frame_interval, rng=self.rng)
        self.state = "stopped"
        self._initial_topology = topology
        self._topology_dict: dict[str, Any] | None = None  # cached: the status carries it every second
        self._by_address = {self.address(n.id): n.id for n in topology.nodes}
        # The password of each node's own redis-server (core.engine.nodes.redisproc): made on first
        # use, kept for the lab's life (a restarted server takes the same), and only ever handed to
        # the lab's own nodes; never in the topology, a status, a frame or a log line.
        self._passwords: dict[str, str] = {}
        self.context = NodeContext(self)  # all a node sees of the lab
        self.nodes: dict[str, Node] = {n.id: _runtime(n.kind_info.runtime)(n, self.context) for n in topology.nodes}
        self._node_state = {n.id: "stopped" for n in topology.nodes}
        self._node_ids = [n.id for n in topology.nodes]
        # The "partition" fault: unordered pairs of node ids that cannot reach each other.
        self.partitions: set[frozenset[str]] = set()
        # Data centre outages by region ("down" or "cut off"), and the partitions each cut made.
        self._outages: dict[str, str] = {}
        self._isolated: dict[str, set[frozenset[str]]] = {}
        self._reshaping = asyncio.Lock()  # one add/remove at a time
        self.replication = Replication(self)
        self.loop_lag = LoopLag()

    # Addresses -----------------------------------------------------------------------------
    def address(self, node_id: str) -> str:
        return f"{self.network}.{self.topology.node(node_id).host}"

    def node_at(self, address: str) -> str | None:
        return self._by_address.get(address)

    def partitioned(self, a: str, b: str) -> bool:
        """True when a partition separates nodes ``a`` and ``b`` (in either direction)."""
        return frozenset((a, b)) in self.partitions

    def server_password(self, node_id: str) -> str:
        """The password of ``node_id``'s own server, random and known only to this lab."""
        password = self._passwords.get(node_id)
        if password is None:
            password = self._passwords[node_id] = secrets.token_urlsafe(32)
        return password

    # Lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start servers, then clients, publishing each node's progress; LabStartError on failure."""
        raise_open_files_limit()  # once is enough, but it is cheap: see core.engine.fdlimit
        self._set_state("starting")
        servers = [n for n in self.nodes.values() if n.spec.kind_info.role == "server"]
        clients = [n for n in self.nodes.values() if n.spec.kind_info.role == "client"]
        for group in (servers, clients):
            for node in group:
                self._node_state[node.id] = "starting"
            self._publish_status()
            results = await self._start_all(group)
            failed = [(n, r) for n, r in zip(group, results, strict=True) if isinstance(r, BaseException)]
            for node, result in zip(group, results, strict=True):
                self._node_state[node.id] = "down" if isinstance(result, BaseException) else "up"
            if failed:
                await self.stop()
                node, exc = failed[0]
                self._set_state("failed", f"{node.id} could not start on {node.address}:{node.port}: {exc}")
                raise LabStartError(f"{node.id}: {exc}") from exc
        await self.replication.start()
        self.loop_lag.start()
        self.telemetry.event(time.time(), "lab_started")
        self._set_state("running")

    async def _start_all(self, nodes: list[Node]) -> list[BaseException | None]:
        """Start ``nodes`` concurrently; per node None, or why it did not start within START_TIMEOUT_S."""
        tasks, pending = await _each(nodes, lambda n: n.start(), "start", START_TIMEOUT_S)
        results: list[BaseException | None] = []
        for task, node in tasks.items():
            if task in pending:
                log.warning("lab %s: %s did not start within %.0f s", self.network, node.who, START_TIMEOUT_S)
                results.append(TimeoutError(f"did not start within {START_TIMEOUT_S:g} s"))
            else:
                results.append(asyncio.CancelledError() if task.cancelled() else task.exception())
        return results

    async def stop(self) -> None:
        """Stop within ``stop_deadline`` seconds, whatever the nodes do.

        Clients first (no new traffic; they get ``stop_timeout``), then every server at once. A
        node that has not stopped and discarded its files by then is forced (``Node.force``: its
        sockets closed, children killed and reaped, files removed) and the log names it. If this
        stop is itself cancelled, every node is forced before the cancellation goes on."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + self.stop_deadline
        if self.state not in ("stopped", "failed"):
            self._set_state("stopping")
        self.forced = []
        try:
            await self.replication.stop()
            await self.loop_lag.stop()
            clients = [n for n in self.nodes.values() if n.spec.kind_info.role == "client"]
            self.forced += await self._retire(clients, min(deadline, loop.time() + self.stop_timeout))
            await self._settle(deadline - loop.time() - 1.0)
            servers = [n for n in self.nodes.values() if n.spec.kind_info.role != "client"]  # after any add
            self.forced += await self._retire(servers, deadline)
        except BaseException:
            for node in self.nodes.values():
                node.force()
            raise
        finally:
            for node_id in self._node_state:
                self._node_state[node_id] = "stopped"
        if self.forced:
            took = loop.time() - began
            log.warning("lab %s: stopped in %.1f s; forced %s", self.network, took, ", ".join(self.forced))
        if self.state != "failed":
            self._set_state("stopped")

    async def _retire(self, nodes: list[Node], deadline: float) -> list[str]:
        """Stop and discard ``nodes`` concurrently, forcing those not done by ``deadline`` (loop
        time); the ids of the forced ones. One stuck node never keeps the others' sockets."""

        async def retire(node: Node) -> None:
            await node.stop()
            await node.discard()

        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        tasks, pending = await _each(nodes, retire, "stop", timeout)
        forced = []
        for task, node in tasks.items():
            if task in pending:
                log.warning("lab %s: %s did not stop within %.1f s; forcing it", self.network, node.who, timeout)
            elif task.cancelled() or task.exception() is not None:
                why = "cancelled" if task.cancelled() else repr(task.exception())
                log.warning("lab %s: %s failed to stop (%s); forcing it", self.network, node.who, why)
            else:
                continue
            node.force()
            forced.append(node.id)
        return forced

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # Commands ------------------------------------------------------------------------------
    async def command(self, raw: Any) -> None:
        """Apply one command; raises CommandError (and changes nothing) if it is invalid, and
        CommandError if it did not finish within ``command_timeout`` (the lab goes on)."""
        cmd = validate_command(raw, node_ids={i: self.nodes[i].spec.kind for i in self._node_ids})
        try:
            async with asyncio.timeout(self.command_timeout):
                await self._command(cmd)
        except TimeoutError:
            what = " ".join(str(v) for v in cmd.values())
            log.warning("lab %s: command %r did not finish within %.0f s", self.network, cmd, self.command_timeout)
            raise CommandError(f"{what}: did not finish within {self.command_timeout:g} s") from None

    async def _command(self, cmd: dict[str, Any]) -> None:
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
        elif action == "mix" and node_id is None:
            self._mix({k: cmd[k] for k in ("write_ratio", "zipf_s") if k in cmd})
        elif action in KIND_COMMANDS:  # validated against the node's kind: its runtime does it
            await self.nodes[node_id].command(action, cmd)
        elif action in ("add", "remove") and self.state != "running":
            raise CommandError(f"{action}: the lab is {self.state}: nodes are added and removed while it runs")
        elif action == "add":
            await self._add(cmd["like"])
        elif action == "remove":
            await self._remove(node_id)
        elif action == "partition":
            self._partition(node_id, cmd["peer"])
        elif action == "heal":
            self._heal(node_id, cmd.get("peer"))
        elif action == "outage":
            await self._outage(cmd["region"], cmd["mode"])
        elif action == "recover":
            await self._recover(cmd["region"])

    # Horizontal scaling --------------------------------------------------------------------
    async def _add(self, like: str) -> str:
        """Start a copy of ``like`` (kind, params, edges) and tell every node; returns its id."""
        async with self._reshaping:
            if self.state != "running":  # a stop began while this add waited its turn
                raise CommandError(f"add: the lab is {self.state}")
            base = self._spec("add", like)
            if base.kind not in SCALABLE_KINDS:
                raise CommandError(f"add: {like} is a {base.kind}: only {_SCALABLE_TITLES} can be added")
            if len(self.nodes) >= MAX_NODES:
                raise CommandError(f"add: a lab holds at most {MAX_NODES} nodes")
            # What a copy's parameters change is the kind's to say (a database's copy is a replica).
            extra = _runtime(base.kind_info.runtime).clone_params(base, self.topology)
            try:
                topology, spec = self.topology.with_clone(like, **extra)
            except ValueError as exc:
                raise CommandError(f"add: {exc}") from exc
            previous = self.topology
            self._swap(topology)
            node = self._install(spec)
            try:
                await node.start()
            except OSError as exc:
                with contextlib.suppress(Exception):
                    await node.stop()
                self._uninstall(spec.id)
                self._swap(previous)
                raise CommandError(f"add: {spec.id} could not start on {node.address}:{node.port}: {exc}") from exc
            self._node_state[spec.id] = "up"
            self._peers_changed()
            await self.replication.start()  # idempotent: watches failover once there is a replica
            self.telemetry.event(time.time(), "node_added", node=spec.id, like=like)
            self._publish_topology()
            self._publish_status(f"{spec.id} added, like {like}")
            return spec.id

    async def _remove(self, node_id: str) -> None:
        """Take a node out of every rotation, let the requests already sent to it finish
        (bounded by DRAIN_TIMEOUT_S), then stop it and free what it holds."""
        async with self._reshaping:
            spec = self._spec("remove", node_id)
            self._check_removable(spec)
            self._swap(self.topology.without(node_id))
            self.partitions = {p for p in self.partitions if node_id not in p}
            self._peers_changed()  # callers stop picking it from here on
            self._publish_topology()
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline and any(n.in_flight_to(node_id) for n in self.nodes.values()):
                await asyncio.sleep(0.02)
            node = self.nodes[node_id]
            await self._retire([node], asyncio.get_running_loop().time() + self.stop_deadline)  # logs a force
            self._uninstall(node_id)
            self.telemetry.event(time.time(), "node_removed", node=node_id)
            self._publish_status(f"{node_id} removed")

    async def scale(self, action: str, node_id: str) -> str:
        """``add`` a copy of ``node_id`` (returns the new id) or ``remove`` it (drained first) on a
        node's behalf (an autoscaler: core.engine.nodes.autoscaler): the student's own machinery,
        bounded by ``command_timeout``. A caller that stops meanwhile does not cut it short (a
        half-done remove would leave a node running outside the topology); ``stop`` waits for it."""
        if self.state != "running":
            raise CommandError(f"{action}: the lab is {self.state}")

        async def bounded() -> str:
            try:
                async with asyncio.timeout(self.command_timeout):
                    if action == "add":
                        return await self._add(node_id)
                    await self._remove(node_id)
                    return node_id
            except TimeoutError:
                raise CommandError(f"{action} {node_id}: did not finish within {self.command_timeout:g} s") from None

        task = asyncio.ensure_future(bounded())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: the caller may be gone
        return await asyncio.shield(task)

    async def _settle(self, timeout: float) -> None:
        """Let an add or remove under way finish (at most ``timeout``), so that its node is stopped too."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                async with self._reshaping:
                    pass

    def _spec(self, action: str, node_id: str) -> NodeSpec:
        try:
            return self.topology.node(node_id)
        except KeyError:  # validated, so it was removed while this command waited its turn
            raise CommandError(f"{action}: {node_id} has been removed") from None

    def _check_removable(self, spec: NodeSpec) -> None:
        node_id = spec.id
        if spec.kind not in SCALABLE_KINDS:
            raise CommandError(f"remove: {node_id} is a {spec.kind}: only {_SCALABLE_TITLES} can be removed")
        kin = [n for n in self.topology.nodes if n.kind == spec.kind and n.id != node_id]
        if not kin and any(b == node_id for _, b in self.topology.edges):
            raise CommandError(f"remove: {node_id} is the last {spec.kind} and other nodes depend on it")
        problem = self.nodes[node_id].removal_problem()
        if problem:
            raise CommandError(f"remove: {node_id} {problem}")
        for other in self.topology.nodes:  # e.g. a DNS node's target
            for name, param in other.kind_info.params.items():
                if param.ref and other.params.get(name) == node_id:
                    raise CommandError(f"remove: {other.id} refers to {node_id} ({name})")

    def _swap(self, topology: Topology) -> None:
        self.topology = topology
        self._topology_dict = None

    def _install(self, spec: NodeSpec) -> Node:
        node = _runtime(spec.kind_info.runtime)(spec, self.context)
        self.nodes[spec.id] = node
        self._by_address[node.address] = spec.id
        self._node_state[spec.id] = "starting"
        self._node_ids.append(spec.id)
        return node

    def _uninstall(self, node_id: str) -> None:
        node = self.nodes.pop(node_id)
        self._by_address.pop(node.address, None)
        self._node_state.pop(node_id, None)
        self._node_ids.remove(node_id)
        self.partitions = {p for p in self.partitions if node_id not in p}

    def _peers_changed(self) -> None:
        for node in list(self.nodes.values()):
            if node.up:
                node.peers_changed()

    def topology_dict(self) -> dict[str, Any]:
        """The live topology's to_dict(), cached until the next change."""
        if self._topology_dict is None:
            self._topology_dict = self.topology.to_dict()
        return self._topology_dict

    def _publish_topology(self) -> None:
        self.emit({"type": "topology", "topology": self.topology_dict()})

    # Partitions ------------------------------------------------------------------------------
    def _partition(self, a: str, b: str) -> None:
        pair = frozenset((a, b))
        if pair in self.partitions:
            raise CommandError(f"partition: {a} and {b} are already cut off from each other")
        self.partitions.add(pair)
        self.telemetry.event(time.time(), "partitioned", node=a, peer=b)

    def _heal(self, node_id: str, peer: str | None) -> None:
        """Heal one partition, or without ``peer`` every partition of ``node_id``."""
        pairs = [p for p in self.partitions if node_id in p and (peer is None or peer in p)]
        if not pairs:
            between = f" and {peer}" if peer else ""
            raise CommandError(f"heal: no partition between {node_id}{between}")
        now = time.time()
        for pair in pairs:
            self.partitions.discard(pair)
            other = peer or next(x for x in pair if x != node_id)
            self.telemetry.event(now, "healed", node=node_id, peer=other)

    # Data centres ----------------------------------------------------------------------------
    def _region_servers(self, region: str) -> list[str]:
        if region not in self.topology.regions:
            known = ", ".join(self.topology.regions) or "none: this lab has no regions"
            raise CommandError(f"unknown region {region!r} (known: {known})")
        return [i for i in self._node_ids
                if self.nodes[i].spec.region == region and self.nodes[i].spec.kind_info.role == "server"]

    async def _outage(self, region: str, mode: str) -> None:
        """A data centre fails: its servers crash together ("down"), or its link to the world is cut
        ("isolate": every pair of one of its servers and a node outside the region partitioned)."""
        servers = self._region_servers(region)
        if region in self._outages:
            raise CommandError(f"outage: data centre {region} is already {self._outages[region]}; recover it first")
        if mode == "down":
            up = [i for i in servers if self.nodes[i].up]
            await asyncio.gather(*(self.nodes[i].kill() for i in up))  # at once, as a power cut would
            for node_id in up:
                self._node_state[node_id] = "down"
            self._outages[region] = "down"
            self.telemetry.event(time.time(), "region_down", region=region, mode=mode, nodes=", ".join(up),
                                 killed=len(up))
            self._publish_status()
        else:
            # Its users too: they reach the centre over the internet, like everyone else.
            outside = [i for i in self._node_ids if i not in servers]
            self._isolated[region] = {frozenset((a, b)) for a in servers for b in outside} - self.partitions
            self.partitions |= self._isolated[region]
            self._outages[region] = "cut off"
            self.telemetry.event(time.time(), "region_down", region=region, mode=mode, nodes=", ".join(servers),
                                 killed=0)

    async def _recover(self, region: str) -> None:
        servers = self._region_servers(region)
        state = self._outages.pop(region, None)
        if state is None:
            raise CommandError(f"recover: data centre {region} has no outage")
        if state == "down":
            for node_id in servers:
                node = self.nodes[node_id]
                if node.up:
                    continue
                try:
                    await node.start()
                    self._node_state[node_id] = "up"
                except OSError as exc:
                    log.warning("lab %s: %s could not restart: %s", self.network, node.who, exc)
            self._publish_status()
        else:
            self.partitions -= self._isolated.pop(region, set())
        self.telemetry.event(time.time(), "region_up", region=region)

    # Workload --------------------------------------------------------------------------------
    def _mix(self, mix: dict[str, float]) -> None:
        """Every client's workload mix at once (a client's own: ClientNode.command)."""
        clients = [n for n in self.nodes.values() if n.spec.kind == "client"]
        if not clients:
            raise CommandError("mix: this lab has no clients")
        for c in clients:
            c.set_mix(**mix)  # type: ignore[attr-defined]
        workload = clients[0].workload  # the event says the whole mix, also the part left as it was
        self.telemetry.event(time.time(), "mix_set", node=None,
                             write_ratio=workload.write_ratio, zipf_s=workload.zipf_s)

    # Telemetry -----------------------------------------------------------------------------
    def record(self, trace: Trace) -> None:
        self.telemetry.record(trace)

    def frame(self, now: float | None = None) -> dict[str, Any]:
        # The live node list and edges: a node added since the last frame shows in this one (a
        # removed one shows until it has drained and stopped).
        frame = self.telemetry.frame(time.time() if now is None else now, self._node_ids, list(self.topology.edges))
        for node_id in self._node_ids:
            node = self.nodes[node_id]
            frame["nodes"][node_id].update(node.snapshot())
            frame.update(node.tables())
            if node.slow_ms:
                frame["nodes"][node_id]["slow_ms"] = node.slow_ms
        frame["partitions"] = sorted(sorted(p) for p in self.partitions)
        if self.topology.regions:
            frame["outages"] = dict(self._outages)  # region -> "down" or "cut off"
        frame["engine"] = {"lag_ms": self.loop_lag.lag_ms}  # the machine's own delay: see looplag
        rep = self.replication.frame_fields()
        if rep is not None:
            frame["replication"] = rep
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
        if self.topology is not self._initial_topology:  # a reconnecting page redraws from it
            status["topology"] = self.topology_dict()
        if message:
            status["message"] = message
        return status

    def _set_state(self, state: str, message: str | None = None) -> None:
        self.state = state
        self._publish_status(message)

    def _publish_status(self, message: str | None = None) -> None:
        self.emit(self.status(message))
