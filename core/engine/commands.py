"""The lab's command language: what the diagram's controls send (validated, never trusted)."""

from __future__ import annotations

from typing import Any

from core.engine.spec import NODE_ID

MAX_RATE = 5000.0
# action -> (required fields, optional fields)
ACTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "start": (frozenset(), frozenset()),
    "stop": (frozenset(), frozenset()),
    "traffic": (frozenset({"rate"}), frozenset({"node"})),
    "kill": (frozenset({"node"}), frozenset()),
    "restart": (frozenset({"node"}), frozenset()),
}
LAB_ACTIONS = frozenset({"traffic", "kill", "restart"})  # the rest are lifecycle, not engine
OPTIONAL_ALWAYS = frozenset({"id"})  # a client-chosen id, echoed back in errors


class CommandError(ValueError):
    pass


def validate_command(raw: Any, *, node_ids: list[str] | None = None) -> dict[str, Any]:
    """Return the command normalised, or raise CommandError saying what is wrong with it.

    With ``node_ids`` the node must also exist in the lab; without, only its form is checked.
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
    if "node" in raw and raw["node"] is not None:
        node = raw["node"]
        if not isinstance(node, str) or not NODE_ID.match(node):
            raise CommandError(f"{action}: node must be a node id, got {node!r}")
        if node_ids is not None and node not in node_ids:
            raise CommandError(f"{action}: unknown node {node!r}")
        cmd["node"] = node
    if "rate" in raw:
        rate = raw["rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate != rate:
            raise CommandError(f"{action}: rate must be a number, got {rate!r}")
        if not 0 <= rate <= MAX_RATE:
            raise CommandError(f"{action}: rate must be between 0 and {MAX_RATE:g} req/s")
        cmd["rate"] = float(rate)
    return cmd
