"""Every node kind is declared once (core.engine.kinds), and what its runtime reports matches that."""

from __future__ import annotations

import asyncio
import numbers
from pathlib import Path

import pytest

from core.engine.checks import KIND_GAUGES, NODE_KEYS
from core.engine.kinds import KINDS
from core.engine.lab import Lab, _runtime
from core.engine.nodes.base import Node
from core.engine.spec import parse_topology

ARCHITECTURE = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_is_declared_whole(name):
    kind = KINDS[name]
    assert kind.name == name and kind.title
    assert issubclass(_runtime(kind.runtime), Node)
    assert (kind.port is None) == (kind.role == "client")
    assert KIND_GAUGES[name] == kind.gauges  # the checks' catalog is the declaration itself
    assert not set(kind.gauges) & set(NODE_KEYS)
    assert f"(`{name}` kind)" in ARCHITECTURE, f"docs/architecture.md has no section on the {name} kind"


def every_kind() -> dict:
    return {
        "nodes": [
            {"id": "dns", "kind": "dns", "host": 53, "params": {"target": "lb", "cdn": "on"}},
            {"id": "lb", "kind": "lb", "host": 100, "params": {"health_interval_s": 0.2}},
            {"id": "web", "kind": "web", "host": 21, "params": {"service_ms": 1, "assets": "on"}},
            {"id": "edge", "kind": "cdn", "host": 90, "params": {"origin": "web"}},
            {"id": "db", "kind": "sqldb", "host": 31, "params": {"users": 50, "posts": 200, "service_ms": 0}},
            {"id": "db-2", "kind": "sqldb", "host": 32,
             "params": {"users": 50, "posts": 200, "service_ms": 0, "replica_of": "db", "delay_ms": 200}},
            {"id": "kv", "kind": "kvdb", "host": 41, "params": {"users": 50, "posts": 200}},
            {"id": "cache", "kind": "cache", "host": 71},
            {"id": "web-s", "kind": "web", "host": 22, "params": {"service_ms": 1}},
            {"id": "router", "kind": "router", "host": 60, "params": {"algorithm": "consistent"}},
            {"id": "s-1", "kind": "sqldb", "host": 61, "params": {"users": 50, "posts": 200, "service_ms": 0}},
            {"id": "s-2", "kind": "sqldb", "host": 62, "params": {"users": 50, "posts": 200, "service_ms": 0}},
            {"id": "browser", "kind": "client", "params": {"rate": 30, "write_ratio": 0.3}},
            {"id": "app", "kind": "client", "params": {"rate": 10, "store": "kv"}},
            {"id": "store", "kind": "sessions", "host": 81, "params": {"sessions": "shared"}},
            {"id": "scaler", "kind": "autoscaler", "params": {"min": 2, "max": 2}},
        ],
        "edges": [["browser", "dns"], ["browser", "lb"], ["app", "dns"], ["app", "lb"], ["lb", "web"],
                  ["web", "db"], ["web", "db-2"], ["browser", "edge"],
                  ["edge", "web"], ["web", "kv"], ["web", "cache"], ["lb", "web-s"],
                  ["web-s", "router"], ["router", "s-1"], ["router", "s-2"],
                  ["web", "store"], ["scaler", "lb"]],
    }


async def test_what_each_node_reports_is_what_its_kind_declares(network):
    topology = parse_topology(every_kind())
    assert {n.kind for n in topology.nodes} == set(KINDS), "the test lab must hold every kind"
    async with Lab(topology, network=network) as lab:
        for node_id in ("dns", "lb", "web", "db", "db-2", "kv", "router", "cache", "edge", "store"):
            await lab.command({"action": "slow", "node": node_id, "ms": 1})  # slow_ms shows while slowed
        seen: dict[str, set[str]] = {n.id: set() for n in topology.nodes}
        keys: dict[str, set[str]] = {n.id: set() for n in topology.nodes}
        for _ in range(8):
            await asyncio.sleep(0.25)
            for node_id, entry in lab.frame()["nodes"].items():
                keys[node_id] |= set(entry)
                seen[node_id] |= {k for k, v in entry.items()
                                  if isinstance(v, numbers.Number) and not isinstance(v, bool)}
    for node in topology.nodes:
        undeclared = seen[node.id] - set(NODE_KEYS) - set(node.kind_info.gauges)
        assert not undeclared, f"{node.id} ({node.kind}) reports gauges its kind does not declare: {undeclared}"
        assert seen[node.id] & set(node.kind_info.gauges) or not node.kind_info.gauges, node.id
        for action, command in node.kind_info.commands.items():  # the menu shows each field's current value
            for field_name, f in command.fields.items():
                if f.current == "":  # an action's argument (what a purge removes): no current value
                    continue
                current = f.current or field_name
                assert current in keys[node.id] or current in node.params, f"{node.id} {action}: no {current}"


@pytest.mark.parametrize("name", sorted(n for n, k in KINDS.items() if k.commands))
def test_a_kind_that_declares_commands_handles_them_and_offers_valid_values(name):
    kind = KINDS[name]
    runtime = _runtime(kind.runtime)
    assert runtime.command is not Node.command, f"{name} declares commands its runtime does not handle"
    for action, command in kind.commands.items():
        assert command.label, f"{name}.{action} has no label for its menu"
        assert set(command.needed) <= set(command.fields)
        for field_name, f in command.fields.items():
            for value in (*(f.choices or ()), *f.presets):  # everything the menu offers is accepted
                assert f.check(value) == (value if f.choices else f.type(value))
            assert set(f.labels) <= {str(v) for v in (*(f.choices or ()), *f.presets)}, (
                f"{name}.{action}.{field_name} words a value it does not offer")
