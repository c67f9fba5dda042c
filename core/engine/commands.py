"""The lab's command language: what the diagram's controls send (validated, never trusted)."""

from __future__ import annotations

import re
from typing import Any

from core.engine.balancing import ALGORITHMS
from core.engine.kinds import LARGEST_SIZE, SIZES
from core.engine.spec import NODE_ID

MAX_RATE = 5000.0
MAX_SLOW_MS = 10000.0
MAX_ZIPF_S = 3.0  # the mix command's skew: 0 uniform, ~1 typical web popularity, 3 one hot key
RELATIVE_SIZES = ("up", "down")  # resize: one size bigger or smaller than the current one
STEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a lesson step's stable id
# action -> (required fields, optional fields)
ACTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "start": (frozenset(), frozenset()),
    "stop": (frozenset(), frozenset()),
    "traffic": (frozenset({"rate"}), frozenset({"node"})),
    "kill": (frozenset({"node"}), frozenset()),
    "restart": (frozenset({"node"}), frozenset()),
    "slow": (frozenset({"node", "ms"}), frozenset()),  # add ms to every request the node serves; 0 undoes it
    "algorithm": (frozenset({"node", "value"}), frozenset()),  # a load balancer's algorithm
    "resize": (frozenset({"node", "size"}), frozenset()),  # a web server's modelled CPU size (kinds.SIZES)
    "check": (frozenset({"step"}), frozenset()),  # "check now": the engine answers with a verdict
    "add": (frozenset({"like"}), frozenset()),  # horizontal scaling: a new node cloned from "like"
    "remove": (frozenset({"node"}), frozenset()),  # drained first: requests in flight finish
    "partition": (frozenset({"node", "peer"}), frozenset()),  # drop traffic between two nodes
    "heal": (frozenset({"node"}), frozenset({"peer"})),  # without peer: every partition of node
    "promote": (frozenset({"node"}), frozenset()),  # a database replica becomes the primary
    "delay": (frozenset({"node", "ms"}), frozenset()),  # a replica's modelled replication delay
    "mix": (frozenset(), frozenset({"node", "write_ratio", "zipf_s"})),  # clients' workload mix
}
# the rest are lifecycle, not engine
LAB_ACTIONS = frozenset(ACTIONS) - {"start", "stop", "check"}
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
    for field in ("node", "like", "peer"):  # every field naming a node
        if field in raw and raw[field] is not None:
            node = raw[field]
            if not isinstance(node, str) or not NODE_ID.match(node):
                raise CommandError(f"{action}: {field} must be a node id, got {node!r}")
            if node_ids is not None and node not in node_ids:
                raise CommandError(f"{action}: unknown node {node!r}")
            cmd[field] = node
    if cmd.get("peer") is not None and cmd.get("peer") == cmd.get("node"):
        raise CommandError(f"{action}: a node cannot be cut off from itself")
    if action == "mix" and not ({"write_ratio", "zipf_s"} & raw.keys()):
        raise CommandError("mix: give write_ratio (0-1), zipf_s (0-3) or both")
    for field, top in (("write_ratio", 1.0), ("zipf_s", MAX_ZIPF_S)):
        if field in raw:
            value = raw[field]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise CommandError(f"{action}: {field} must be a number, got {value!r}")
            if not 0 <= value <= top:
                raise CommandError(f"{action}: {field} must be between 0 and {top:g}")
            cmd[field] = float(value)
    if "step" in raw:
        step = raw["step"]
        if not isinstance(step, str) or not STEP_ID.match(step):
            raise CommandError(f"{action}: step must be a step id, got {step!r}")
        cmd["step"] = step
    if "ms" in raw:
        ms = raw["ms"]
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms != ms:
            raise CommandError(f"{action}: ms must be a number, got {ms!r}")
        if not 0 <= ms <= MAX_SLOW_MS:
            raise CommandError(f"{action}: ms must be between 0 and {MAX_SLOW_MS:g}")
        cmd["ms"] = float(ms)
    if "value" in raw:
        value = raw["value"]
        if value not in ALGORITHMS:
            raise CommandError(f"{action}: value must be one of {', '.join(ALGORITHMS)}, got {value!r}")
        cmd["value"] = value
    if "size" in raw:
        size = raw["size"]
        if not isinstance(size, str) or (size not in SIZES and size not in RELATIVE_SIZES):
            raise CommandError(
                f"{action}: size must be one of {', '.join(SIZES)} ({LARGEST_SIZE} is the largest there is)"
                f" or up/down, got {size!r}"
            )
        cmd["size"] = size
    if "rate" in raw:
        rate = raw["rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate != rate:
            raise CommandError(f"{action}: rate must be a number, got {rate!r}")
        if not 0 <= rate <= MAX_RATE:
            raise CommandError(f"{action}: rate must be between 0 and {MAX_RATE:g} req/s")
        cmd["rate"] = float(rate)
    return cmd
