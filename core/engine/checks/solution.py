"""The ```solution language: one lab action a line, as the diagram would send it."""

from __future__ import annotations

import re
from typing import Any

from core.engine.checks.syntax import UNITS, CheckSyntaxError, _is_plain_number, tokenize
from core.engine.kinds import KIND_COMMANDS

# Parsing solutions ------------------------------------------------------------------------------


class SolutionSyntaxError(CheckSyntaxError):
    """A ```solution line that is not a lab action; same fields as CheckSyntaxError."""


# action -> the field its bare number sets (`mix 0.2`: a fifth of requests are writes); a kind's
# commands say theirs (Command.number, Command.word).
# Several fields: the numbers fill them in order (`mix 0.05 1.5`: writes, then the skew).
SOLUTION_NUMBER: dict[str, tuple[str, ...]] = {"traffic": ("rate",), "slow": ("ms",)} | {
    action: (c.number,) if isinstance(c.number, str) else c.number
    for action, by in KIND_COMMANDS.items() for c in by.values() if c.number
}
# action -> the field its word after the node sets
SOLUTION_WORD = {"partition": "peer", "heal": "peer", "outage": "mode"} | {
    action: c.word for action, by in KIND_COMMANDS.items() for c in by.values() if c.word
}
# action -> the field its first word sets, when not "node": `outage eu isolate`, `recover eu`
SOLUTION_NODE = {"add": "like", "outage": "region", "recover": "region"}


def parse_solution(text: str, *, node_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """One lab action per line: `traffic 150`, `traffic phone 30`, `kill web`, `restart web`,
    `slow web-3 200` (ms added per request; 0 undoes it), `algorithm lb least_connections`,
    `resize web large` (a web server's size, kinds.SIZES), `add web-1` (a copy named like
    web-4: later lines may name it), `remove web-4`, `partition web-1 db`, `heal web-1 db` (or
    `heal web-1`: all of its partitions), `outage eu` (every server of region eu killed; `outage eu
    isolate`: cut off from the rest), `recover eu`, `promote db-2`, `delay db-2 300`, `mix 0.2` (or `mix phone
    0.2`: the fraction of requests that are writes; `mix 0.2 1.5`: and the popularity skew), `vnodes router
    64`, `wait 6s`.

    Returns the command dicts the diagram sends (checked by validate_command, and against node_ids
    when given) plus {"action": "wait", "seconds": N}.
    """
    from core.engine.commands import ACTIONS, LAB_ACTIONS, CommandError, validate_command
    from core.engine.spec import next_node_id

    actions: list[dict[str, Any]] = []
    node_ids = list(node_ids) if node_ids is not None else None  # grows with `add`, shrinks with `remove`
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            tokens = [t for t in tokenize(line) if t.kind != "eof"]
        except CheckSyntaxError as exc:
            raise SolutionSyntaxError(lineno, exc.col, exc.token, exc.reason) from None
        if not tokens:
            continue
        head = tokens[0]
        if head.kind != "ident":
            raise SolutionSyntaxError(
                lineno,
                head.col,
                head.text,
                "a line starts with an action: traffic, kill, restart, slow, algorithm, resize or wait",
            )
        if head.text == "wait":
            if len(tokens) != 2:
                tok = tokens[2] if len(tokens) > 2 else head
                raise SolutionSyntaxError(lineno, tok.col, tok.text, "write wait DURATION, e.g. wait 6s")
            m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", tokens[1].text)
            if m is None:
                raise SolutionSyntaxError(
                    lineno, tokens[1].col, tokens[1].text, "expected a duration such as 6s, 500ms or 1m"
                )
            seconds = float(m.group(1)) * UNITS[m.group(2)]
            if seconds > 600:
                raise SolutionSyntaxError(lineno, tokens[1].col, tokens[1].text, "wait at most 10m")
            actions.append({"action": "wait", "seconds": seconds})
            continue
        if head.text not in ACTIONS or head.text not in LAB_ACTIONS:
            known = ", ".join(sorted(LAB_ACTIONS | {"wait"}))
            raise SolutionSyntaxError(lineno, head.col, head.text, f"unknown action (expected one of {known})")
        cmd: dict[str, Any] = {"action": head.text}
        number = SOLUTION_NUMBER.get(head.text, ())  # the fields bare numbers fill: traffic 150, slow web 200
        word = SOLUTION_WORD.get(head.text)  # a second word's field: algorithm lb least_connections
        first = SOLUTION_NODE.get(head.text, "node")  # the first word's field: add web-1
        for tok in tokens[1:]:
            if tok.kind == "ident" and first not in cmd:
                cmd[first] = tok.text
            elif tok.kind == "ident" and word is not None and word not in cmd:
                cmd[word] = tok.text
            elif tok.kind == "number" and _is_plain_number(tok.text) and any(f not in cmd for f in number):
                cmd[next(f for f in number if f not in cmd)] = float(tok.text)
            elif tok.kind == "name" or tok.kind == "ident":
                raise SolutionSyntaxError(lineno, tok.col, tok.text, f"unexpected word in '{head.text}'")
            else:
                raise SolutionSyntaxError(lineno, tok.col, tok.text, f"unexpected {tok.text!r} in '{head.text}'")
        try:
            actions.append(validate_command(cmd, node_ids=node_ids))
            if node_ids is not None and head.text == "add":
                node_ids.append(next_node_id(node_ids, cmd["like"]))
            elif node_ids is not None and head.text == "remove":
                node_ids.remove(cmd["node"])
        except CommandError as exc:
            bad = cmd.get(first) if "node" in str(exc) and first in cmd else None
            tok = next((t for t in tokens if bad is not None and t.text == bad), None)
            if any(f in str(exc) for f in number):
                tok = tok or next((t for t in tokens if t.kind == "number"), None)
            if word is not None and word in str(exc):
                tok = tok or next((t for t in tokens[1:] if t.kind == "ident" and t.text != cmd.get("node")), None)
            tok = tok or head
            raise SolutionSyntaxError(lineno, tok.col, tok.text, str(exc)) from None
    return actions
