"""The lab's command language: what the diagram's controls send (validated, never trusted)."""

from __future__ import annotations

import re
from typing import Any

from core.engine.kinds import KIND_COMMANDS, KINDS
from core.engine.spec import NODE_ID, REGION_ID

MAX_RATE = 5000.0
MAX_SLOW_MS = 10000.0
STEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a lesson step's stable id
# The lab's own actions, for any node or none: action -> (required fields, optional fields). Each
# kind's commands (core.engine.kinds: Kind.commands) are added below from their declarations.
LAB_COMMANDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "start": (frozenset(), frozenset()),
    "stop": (frozenset(), frozenset()),
    "traffic": (frozenset({"rate"}), frozenset({"node"})),
    "kill": (frozenset({"node"}), frozenset()),
    "restart": (frozenset({"node"}), frozenset()),
    "slow": (frozenset({"node", "ms"}), frozenset()),  # add ms to every request the node serves; 0 undoes it
    "check": (frozenset({"step"}), frozenset()),  # "check now": the engine answers with a verdict
    "add": (frozenset({"like"}), frozenset()),  # horizontal scaling: a new node cloned from "like"
    "remove": (frozenset({"node"}), frozenset()),  # drained first: requests in flight finish
    "partition": (frozenset({"node", "peer"}), frozenset()),  # drop traffic between two nodes
    "heal": (frozenset({"node"}), frozenset({"peer"})),  # without peer: every partition of node
    # A data centre fails: every server of a region killed ("down") or cut off from every node
    # outside it ("isolate"); its users (clients) stay. "recover" undoes either.
    "outage": (frozenset({"region"}), frozenset({"mode"})),
    "recover": (frozenset({"region"}), frozenset()),
}
OUTAGE_MODES = ("down", "isolate")
# Kind commands that may also name no node: the lab applies them to every node of the kind.
LAB_WIDE = frozenset({"mix"})


def _kind_forms() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    forms = {}
    for action, by_kind in KIND_COMMANDS.items():
        first = next(iter(by_kind.values()))
        node = frozenset() if action in LAB_WIDE else frozenset({"node"})
        forms[action] = (node | set(first.needed), frozenset(first.fields) - set(first.needed) | ({"node"} - node))
    return forms


ACTIONS = {**LAB_COMMANDS, **_kind_forms()}
# the rest are lifecycle, not engine
LAB_ACTIONS = frozenset(ACTIONS) - {"start", "stop", "check"}
OPTIONAL_ALWAYS = frozenset({"id"})  # a client-chosen id, echoed back in errors


class CommandError(ValueError):
    pass


def validate_command(raw: Any, *, node_ids: list[str] | dict[str, str] | None = None) -> dict[str, Any]:
    """Return the command normalised, or raise CommandError saying what is wrong with it.

    With ``node_ids`` the node must also exist in the lab; given as {id: kind}, a kind's command
    must also be one that node's kind accepts, with values it allows. Without, only the form is
    checked (a value must be allowed by some kind that has the command).
    """
    if not isinstance(raw, dict):
        raise CommandError('a command must be a JSON object like {"action": "kill", "node": "web"}')
    action = raw.get("action")
    if action not in ACTIONS:
        raise CommandError(f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
    required, optional = ACTIONS[action]
    missing = required - raw.keys()
    if missing:
        raise CommandError(f"{action}: missing {', '.join(sorted(missing))}")
    extra = raw.keys() - required - optional - OPTIONAL_ALWAYS - {"action"}
    if extra:
        raise CommandError(f"{action}: unexpected field {', '.join(sorted(extra))}")
    cmd: dict[str, Any] = {"action": action}
    for field in ("node", "like", "peer"):  # every field naming a node
        if field in raw and raw[field] is not None:
            node = raw[field]
            if not isinstance(node, str) or not NODE_ID.match(node):
                raise CommandError(f"{action}: {field} must be a node id, got {node!r}")
            if node_ids is not None and node not in node_ids:
                raise CommandError(f"{action}: unknown node {node!r}")
            cmd[field] = node
    if "region" in raw:
        region = raw["region"]
        if not isinstance(region, str) or not REGION_ID.match(region):
            raise CommandError(f"{action}: region must be a region id such as eu, got {region!r}")
        cmd["region"] = region
    if action == "outage":
        mode = raw.get("mode", "down")
        if mode not in OUTAGE_MODES:
            raise CommandError(f"{action}: mode must be one of {', '.join(OUTAGE_MODES)}, got {mode!r}")
        cmd["mode"] = mode
    if cmd.get("peer") is not None and cmd.get("peer") == cmd.get("node"):
        raise CommandError(f"{action}: a node cannot be cut off from itself")
    if action in KIND_COMMANDS:
        kind = node_ids.get(cmd["node"]) if isinstance(node_ids, dict) and "node" in cmd else None
        cmd.update(_kind_fields(action, raw, kind))
    if "step" in raw:
        step = raw["step"]
        if not isinstance(step, str) or not STEP_ID.match(step):
            raise CommandError(f"{action}: step must be a step id, got {step!r}")
        cmd["step"] = step
    if action == "slow":
        ms = raw["ms"]
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms != ms:
            raise CommandError(f"{action}: ms must be a number, got {ms!r}")
        if not 0 <= ms <= MAX_SLOW_MS:
            raise CommandError(f"{action}: ms must be between 0 and {MAX_SLOW_MS:g}")
        cmd["ms"] = float(ms)
    if "rate" in raw:
        rate = raw["rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate != rate:
            raise CommandError(f"{action}: rate must be a number, got {rate!r}")
        if not 0 <= rate <= MAX_RATE:
            raise CommandError(f"{action}: rate must be between 0 and {MAX_RATE:g} req/s")
        cmd["rate"] = float(rate)
    return cmd


def _kind_fields(action: str, raw: dict[str, Any], kind: str | None) -> dict[str, Any]:
    """A kind command's fields, checked against the node's kind (or, without it, any kind that has it)."""
    by_kind = KIND_COMMANDS[action]
    if kind is not None and kind not in by_kind:
        owners = " or a ".join(KINDS[k].title.lower() for k in by_kind)
        raise CommandError(f"{action}: {raw['node']} is not a {owners}: only a {owners} has it")
    declarations = [by_kind[kind]] if kind is not None else list(by_kind.values())
    fields = declarations[0].fields
    if fields and not declarations[0].needed and not set(fields) & raw.keys():
        raise CommandError(f"{action}: give {' or '.join(_field_help(declarations[0], f) for f in fields)} or both")
    out: dict[str, Any] = {}
    for name in declarations[0].fields:
        if name not in raw:
            continue
        problems = []
        for declared in declarations:
            try:
                out[name] = declared.fields[name].check(raw[name])
                break
            except ValueError as exc:
                problems.append(str(exc))
        else:
            raise CommandError(f"{action}: {name} {problems[0]}")
    return out


def _field_help(command: Any, name: str) -> str:
    f = command.fields[name]
    return f"{name} ({f.min:g}-{f.max:g})" if f.min is not None and f.max is not None else name
