"""The lesson check language: parse (never eval) and evaluate against a lab's frames (sans-I/O).

API CONTRACT (keep these names and shapes):

    parse_check(text: str) -> Check
        Parses one ```check block. Raises CheckSyntaxError(line, col, token, reason) where line is
        1-based within the block, so the lesson loader can add the block's first line.

    Check.node_refs() -> set[str]      node ids it mentions (loader checks they exist)
    Check.metric_refs() -> set[str]    metric names it mentions, e.g. {"web.p95_ms", "totals.rps"}

    Evaluator(checks: dict[str, Check])          step id -> its check
        .feed(frame: dict) -> list[str]           a frame exactly as the runner publishes it
                                                  ({"t", "totals", "nodes", "edges", "events"});
                                                  returns step ids that newly passed (sticky)
        .verdict(step: str) -> Verdict            the current verdict of one step
    Verdict(passed: bool, hint: int | None, detail: str)
        hint is the index of the first hint whose condition holds now (texts live in the lesson,
        per language); detail says in words what was measured, e.g. "web.p95_ms is 412 (> 300)".

Metrics: metric(NODE.KEY) reads frame["nodes"][NODE][KEY]; metric(totals.KEY) reads
frame["totals"][KEY]; metric(A>B.KEY) reads frame["edges"]["A>B"][KEY]. Events come from
frame["events"] ({"t", "kind", ...fields}).

The language (docs/authoring.md has the author's version):

    block     := condition hint*
    hint      := 'when' condition 'say' STRING
    condition := and ('or' and)*
    and       := timed ('and' timed)*
    timed     := atom ['for' DURATION] ['within' DURATION 'after' event]
    atom      := metric OP NUMBER | event | '(' condition ')'
    metric    := 'metric' '(' NAME ')'            NAME: node.key, totals.key or a>b.key
    event     := 'event' '(' KIND (',' FIELD '=' VALUE)* ')'
    DURATION  := NUMBER ('ms' | 's' | 'm')

Semantics, frame by frame (frames arrive in time order, ``t`` in seconds):
- a comparison with a null metric (no traffic in the window, unknown node) is false;
- ``event(...)`` is true from the first frame carrying a matching event on ("it has happened");
- ``X for D`` is true once X has held in every frame spanning at least D seconds (a gap of more
  than MAX_GAP_S between frames breaks the run);
- ``X within D after E`` is true in a frame at most D seconds after the latest E when X holds;
  each E starts X afresh (its ``for`` runs and remembered events reset), so X must happen after E.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from core.engine.kinds import KINDS
from core.engine.telemetry import EVENT_KINDS

MAX_GAP_S = 2.0  # frames come 4 a second; a longer silence (lab restarted) breaks a `for` run
OPS = (">=", "<=", "==", "!=", ">", "<")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
KEYWORDS = frozenset({"metric", "event", "for", "within", "after", "and", "or", "when", "say"})

# Metric keys a check may read. Every node has the request statistics; each kind adds the numeric
# gauges it declares (``Kind.gauges`` in core.engine.kinds). Edges carry only rates; totals add ok_rps.
NODE_KEYS = ("rps", "err_rps", "p50_ms", "p95_ms", "up")
# `slow_ms` (the "slow" fault, every server kind) is in a frame only while the node is slowed:
# null otherwise, so write `metric(web-3.slow_ms) > 0`, never `== 0`.
KIND_GAUGES: dict[str, tuple[str, ...]] = {name: kind.gauges for name, kind in KINDS.items()}
# writes_rps/stale_rps cover the window like rps; writes_total/stale_total count since the lab started.
TOTALS_KEYS = (
    "rps", "ok_rps", "err_rps", "p50_ms", "p95_ms", "writes_rps", "stale_rps", "writes_total", "stale_total"
)
EDGE_KEYS = ("rps", "err_rps")
# metric(replication.KEY): the lab's database cluster (core.engine.replication.frame_fields).
REPLICATION_KEYS = ("promotions", "lost_writes", "primary_lost", "failover_in_s")
TABLES = ("totals", "replication")  # metric names whose first part is a frame table, not a node

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<bad_string>"[^\n]*)
  | (?P<name>[A-Za-z][A-Za-z0-9_-]*(?:>[A-Za-z][A-Za-z0-9_-]*)?\.[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>-?\d+(?:\.\d+)?(?:[A-Za-z][A-Za-z0-9_]*)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<op>>=|<=|==|!=|>|<|=)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)


class CheckSyntaxError(ValueError):
    """A check (or solution) the parser cannot read; ``line`` is 1-based within the block."""

    def __init__(self, line: int, col: int, token: str, reason: str) -> None:
        self.line, self.col, self.token, self.reason = line, col, token, reason
        where = f"'{token}'" if token else "the end"
        super().__init__(f"line {line}, col {col}: {reason} (at {where})")


@dataclass(frozen=True)
class Token:
    kind: str  # name, number, ident, op, punct, string, eof
    text: str
    line: int
    col: int


def tokenize(text: str) -> list[Token]:
    """Split a block into tokens with their 1-based line and column; raises on a stray character."""
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            raise CheckSyntaxError(line, col, text[pos], "unexpected character")
        kind, value = m.lastgroup or "", m.group()
        if kind == "bad_string":
            raise CheckSyntaxError(line, col, value, 'unterminated string (close it with " on the same line)')
        if kind not in ("ws", "comment"):
            tokens.append(Token(kind, value, line, col))
        newlines = value.count("\n")
        if newlines:
            line += newlines
            line_start = pos + value.rindex("\n") + 1
        pos = m.end()
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens


# The syntax tree --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A name a check mentions, with where, so the loader can point at it."""

    what: str  # "metric" or "node"
    name: str
    line: int
    col: int


@dataclass(frozen=True)
class Compare:
    metric: str  # "web.p95_ms", "totals.rps", "browser>web.rps"
    op: str
    value: float


@dataclass(frozen=True)
class Event:
    kind: str
    fields: tuple[tuple[str, str | float], ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class For:
    inner: Expr
    seconds: float


@dataclass(frozen=True)
class Within:
    inner: Expr
    seconds: float
    after: Event


Expr = Compare | Event | BoolOp | For | Within


@dataclass(frozen=True)
class Hint:
    condition: Expr
    text: str
    line: int


@dataclass(frozen=True)
class Check:
    source: str
    condition: Expr
    hints: tuple[Hint, ...] = ()
    refs: tuple[Ref, ...] = field(default=(), compare=False)

    def node_refs(self) -> set[str]:
        return {r.name for r in self.refs if r.what == "node"}

    def metric_refs(self) -> set[str]:
        return {r.name for r in self.refs if r.what == "metric"}


# The parser -------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.refs: list[Ref] = []

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def fail(self, reason: str, tok: Token | None = None) -> CheckSyntaxError:
        tok = tok or self.tok
        return CheckSyntaxError(tok.line, tok.col, tok.text, reason)

    def next(self) -> Token:
        tok = self.tok
        if tok.kind != "eof":
            self.i += 1
        return tok

    def at(self, text: str) -> bool:
        return self.tok.kind in ("ident", "punct", "op") and self.tok.text == text

    def expect(self, text: str, reason: str) -> Token:
        if not self.at(text):
            raise self.fail(reason)
        return self.next()

    def block(self, source: str) -> Check:
        if self.tok.kind == "eof":
            raise self.fail("empty check: write a condition such as metric(web.p95_ms) > 300")
        if self.at("when"):
            raise self.fail("the check's condition comes first; hints ('when … say …') follow it")
        condition = self.condition()
        hints: list[Hint] = []
        while self.at("when"):
            when = self.next()
            hint_condition = self.condition()
            self.expect("say", "expected 'say \"…\"' after the hint's condition")
            text = self.tok
            if text.kind != "string":
                raise self.fail('expected the hint\'s text in double quotes, e.g. say "Raise the traffic"')
            self.next()
            body = _unquote(text.text).strip()
            if not body:
                raise self.fail("a hint's text cannot be empty", text)
            hints.append(Hint(hint_condition, body, when.line))
        if self.tok.kind != "eof":
            if self.tok.kind in ("ident", "name", "number") and self.tok.text not in KEYWORDS:
                raise self.fail("expected 'and', 'or', 'for', 'within' or a new line starting with 'when'")
            raise self.fail("unexpected token")
        return Check(source, condition, tuple(hints), tuple(self.refs))

    def condition(self) -> Expr:
        parts = [self.conjunction()]
        while self.at("or"):
            self.next()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def conjunction(self) -> Expr:
        parts = [self.timed()]
        while self.at("and"):
            self.next()
            parts.append(self.timed())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def timed(self) -> Expr:
        expr = self.atom()
        if self.at("for"):
            self.next()
            expr = For(expr, self.duration())
        if self.at("within"):
            self.next()
            seconds = self.duration()
            self.expect("after", "expected 'after event(…)' after 'within DURATION'")
            if not self.at("event"):
                raise self.fail("'within … after' needs an event, e.g. after event(node_killed, node=web)")
            expr = Within(expr, seconds, self.event())
        return expr

    def atom(self) -> Expr:
        if self.at("("):
            opening = self.next()
            expr = self.condition()
            if not self.at(")"):
                raise self.fail(f"expected ')' to close the '(' at line {opening.line}, col {opening.col}")
            self.next()
            return expr
        if self.at("metric"):
            return self.compare()
        if self.at("event"):
            return self.event()
        if self.tok.kind == "eof":
            raise self.fail("the condition stops too early: expected metric(…), event(…) or '('")
        raise self.fail("expected metric(…), event(…) or '('")

    def compare(self) -> Compare:
        self.next()
        self.expect("(", "expected '(' after 'metric'")
        name = self.tok
        if name.kind != "name":
            raise self.fail("expected a metric name such as web.p95_ms, totals.rps or browser>web.rps")
        self.next()
        self.expect(")", "expected ')' after the metric name")
        node = name.text.split(".", 1)[0]
        self.refs.append(Ref("metric", name.text, name.line, name.col))
        for part in node.split(">"):
            if part not in TABLES:
                self.refs.append(Ref("node", part, name.line, name.col))
        op = self.tok
        if op.kind != "op" or op.text not in OPS:
            raise self.fail(f"expected a comparison ({' '.join(OPS)}) after metric({name.text})")
        self.next()
        number = self.tok
        if number.kind != "number" or not _is_plain_number(number.text):
            raise self.fail("expected a number to compare with, e.g. 300 or 0.8")
        self.next()
        return Compare(name.text, op.text, float(number.text))

    def event(self) -> Event:
        self.next()
        self.expect("(", "expected '(' after 'event'")
        kind = self.tok
        if kind.kind != "ident" or kind.text in KEYWORDS:
            raise self.fail("expected an event kind such as node_killed")
        if kind.text not in EVENT_KINDS:
            raise self.fail(f"unknown event kind (known: {', '.join(sorted(EVENT_KINDS))})")
        self.next()
        fields: list[tuple[str, str | float]] = []
        while self.at(","):
            self.next()
            key = self.tok
            if key.kind != "ident" or key.text in KEYWORDS or key.text in ("t", "kind"):
                raise self.fail("expected a field name such as node")
            self.next()
            self.expect("=", f"expected '=' after {key.text}")
            value = self.tok
            if value.kind == "ident":
                fields.append((key.text, value.text))
            elif value.kind == "string":
                fields.append((key.text, _unquote(value.text)))
            elif value.kind == "number" and _is_plain_number(value.text):
                fields.append((key.text, float(value.text)))
            else:
                raise self.fail(f"expected a value for {key.text}, e.g. {key.text}=web")
            if key.text == "node" and value.kind == "ident":
                self.refs.append(Ref("node", value.text, value.line, value.col))
            self.next()
        self.expect(")", "expected ',' or ')' in event(…)")
        return Event(kind.text, tuple(fields))

    def duration(self) -> float:
        tok = self.tok
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z0-9_]*)", tok.text) if tok.kind == "number" else None
        if m is None:
            raise self.fail("expected a duration such as 10s, 500ms or 2m")
        if not m.group(2):
            raise self.fail("a duration needs a unit: ms, s or m (e.g. 10s)")
        if m.group(2) not in UNITS:
            raise self.fail(f"unknown duration unit '{m.group(2)}' (use ms, s or m)")
        seconds = float(m.group(1)) * UNITS[m.group(2)]
        if not math.isfinite(seconds) or seconds > 24 * 3600:
            raise self.fail("a duration must be at most 24 hours")
        self.next()
        return seconds


def _is_plain_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+(?:\.\d+)?", text) is not None and math.isfinite(float(text))


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse_check(text: str) -> Check:
    """Parse one ```check block (its condition, then any `when … say "…"` hint lines)."""
    if not isinstance(text, str):
        raise CheckSyntaxError(1, 1, "", "a check must be text")
    return _Parser(text).block(text)


def parse_metric(text: str) -> tuple[str, list[Ref]]:
    """Parse a lone `metric(NAME)` (a prediction's `measure`); returns the name and its refs."""
    parser = _Parser(text)
    if not parser.at("metric"):
        raise parser.fail("expected metric(NAME), e.g. metric(web.p95_ms)")
    parser.next()
    parser.expect("(", "expected '(' after 'metric'")
    name = parser.tok
    if name.kind != "name":
        raise parser.fail("expected a metric name such as web.p95_ms, totals.rps or browser>web.rps")
    parser.next()
    parser.expect(")", "expected ')' after the metric name")
    if parser.tok.kind != "eof":
        raise parser.fail("unexpected token after metric(…)")
    refs = [Ref("metric", name.text, name.line, name.col)]
    refs += [Ref("node", p, name.line, name.col) for p in name.text.split(".", 1)[0].split(">") if p not in TABLES]
    return name.text, refs


def metric_problem(name: str, topology: dict[str, Any] | None) -> str | None:
    """Why a metric name cannot exist in this topology (Topology.to_dict()), or None if it can."""
    where, _, key = name.partition(".")
    if where == "totals":
        return None if key in TOTALS_KEYS else f"unknown metric {key!r} for totals (known: {', '.join(TOTALS_KEYS)})"
    if where == "replication":
        if not any(n.get("params", {}).get("replica_of") for n in (topology or {}).get("nodes", [])):
            return "this topology has no replica (no sqldb node with replica_of)"
        known_r = REPLICATION_KEYS
        return None if key in known_r else f"unknown metric {key!r} for replication (known: {', '.join(known_r)})"
    nodes = {n["id"]: n["kind"] for n in (topology or {}).get("nodes", [])}
    if ">" in where:
        a, b = where.split(">", 1)
        missing = [x for x in (a, b) if x not in nodes]
        if missing:
            return f"no node with id {missing[0]!r}"
        if [a, b] not in [list(e) for e in (topology or {}).get("edges", [])]:
            return f"no edge {a}>{b} in the topology"
        return None if key in EDGE_KEYS else f"unknown metric {key!r} for an edge (known: {', '.join(EDGE_KEYS)})"
    if where not in nodes:
        return f"no node with id {where!r}"
    known = NODE_KEYS + KIND_GAUGES.get(nodes[where], ())
    return (
        None
        if key in known
        else f"unknown metric {key!r} for {nodes[where]} node {where!r} (known: {', '.join(known)})"
    )


# Parsing solutions ------------------------------------------------------------------------------


class SolutionSyntaxError(CheckSyntaxError):
    """A ```solution line that is not a lab action; same fields as CheckSyntaxError."""


# action -> the field its bare number sets (`mix 0.2`: a fifth of requests are writes)
SOLUTION_NUMBER = {"traffic": "rate", "slow": "ms", "delay": "ms", "mix": "write_ratio"}
# action -> the field its word after the node sets
SOLUTION_WORD = {"algorithm": "value", "resize": "size", "partition": "peer", "heal": "peer"}
SOLUTION_NODE = {"add": "like"}  # action -> the field its first word sets, when not "node"


def parse_solution(text: str, *, node_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """One lab action per line: `traffic 150`, `traffic phone 30`, `kill web`, `restart web`,
    `slow web-3 200` (ms added per request; 0 undoes it), `algorithm lb least_connections`,
    `resize web large` (a web server's size, kinds.SIZES), `add web-1` (a copy named like
    web-4: later lines may name it), `remove web-4`, `partition web-1 db`, `heal web-1 db` (or
    `heal web-1`: all of its partitions), `promote db-2`, `delay db-2 300`, `mix 0.2` (or `mix phone
    0.2`: the fraction of requests that are writes), `wait 6s`.

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
        number = SOLUTION_NUMBER.get(head.text)  # the field a bare number fills: traffic 150, slow web 200
        word = SOLUTION_WORD.get(head.text)  # a second word's field: algorithm lb least_connections
        first = SOLUTION_NODE.get(head.text, "node")  # the first word's field: add web-1
        for tok in tokens[1:]:
            if tok.kind == "ident" and first not in cmd:
                cmd[first] = tok.text
            elif tok.kind == "ident" and word is not None and word not in cmd:
                cmd[word] = tok.text
            elif tok.kind == "number" and _is_plain_number(tok.text) and number is not None and number not in cmd:
                cmd[number] = float(tok.text)
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
            if number is not None and number in str(exc):
                tok = tok or next((t for t in tokens if t.kind == "number"), None)
            if word is not None and word in str(exc):
                tok = tok or next((t for t in tokens[1:] if t.kind == "ident" and t.text != cmd.get("node")), None)
            tok = tok or head
            raise SolutionSyntaxError(lineno, tok.col, tok.text, str(exc)) from None
    return actions


# The evaluator ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    passed: bool
    hint: int | None
    detail: str


def _fmt(value: float | None) -> str:
    if value is None:
        return "null"
    return f"{value:g}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _read(frame: dict[str, Any], name: str) -> float | None:
    where, _, key = name.partition(".")
    if where in TABLES:
        table = frame.get(where)
    elif ">" in where:
        table = (frame.get("edges") or {}).get(where)
    else:
        table = (frame.get("nodes") or {}).get(where)
    value = table.get(key) if isinstance(table, dict) else None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _compare(value: float | None, op: str, limit: float) -> bool:
    if value is None:
        return False
    return {
        ">": value > limit,
        ">=": value >= limit,
        "<": value < limit,
        "<=": value <= limit,
        "==": value == limit,
        "!=": value != limit,
    }[op]


def _event_matches(ev: Any, pattern: Event) -> bool:
    if not isinstance(ev, dict) or ev.get("kind") != pattern.kind:
        return False
    for key, want in pattern.fields:
        got = ev.get(key)
        if isinstance(want, float):
            if isinstance(got, bool) or not isinstance(got, (int, float)) or float(got) != want:
                return False
        elif got != want:
            return False
    return True


def _event_text(pattern: Event) -> str:
    fields = "".join(f", {k}={_fmt(v) if isinstance(v, float) else v}" for k, v in pattern.fields)
    return f"event({pattern.kind}{fields})"


def _events(frame: dict[str, Any], pattern: Event) -> Iterator[float]:
    t = float(frame.get("t") or 0.0)
    for ev in frame.get("events") or ():
        if _event_matches(ev, pattern):
            et = ev.get("t")
            yield float(et) if isinstance(et, (int, float)) and not isinstance(et, bool) else t


class _Node:
    """Evaluation state of one syntax-tree node: ``step(frame)`` returns whether it holds now."""

    value = False
    detail = ""

    def step(self, frame: dict[str, Any], t: float) -> bool:
        raise NotImplementedError

    def reset(self, since: float) -> None:
        pass


class _CompareNode(_Node):
    def __init__(self, expr: Compare) -> None:
        self.expr = expr

    def step(self, frame: dict[str, Any], t: float) -> bool:
        e = self.expr
        measured = _read(frame, e.metric)
        self.value = _compare(measured, e.op, e.value)
        if measured is None:
            self.detail = f"{e.metric} is null (no requests in the window; needs {e.op} {_fmt(e.value)})"
        else:
            self.detail = f"{e.metric} is {_fmt(measured)} ({e.op} {_fmt(e.value)})"
        return self.value


class _EventNode(_Node):
    def __init__(self, expr: Event) -> None:
        self.expr = expr
        self.since = -math.inf
        self.seen: float | None = None

    def reset(self, since: float) -> None:
        self.since, self.seen = since, None

    def step(self, frame: dict[str, Any], t: float) -> bool:
        if self.seen is None:
            self.seen = next((et for et in _events(frame, self.expr) if et >= self.since), None)
        self.value = self.seen is not None
        self.detail = f"{_event_text(self.expr)} {'happened' if self.value else 'has not happened yet'}"
        return self.value


class _BoolNode(_Node):
    def __init__(self, expr: BoolOp) -> None:
        self.op = expr.op
        self.parts = [_build(p) for p in expr.parts]

    def reset(self, since: float) -> None:
        for p in self.parts:
            p.reset(since)

    def step(self, frame: dict[str, Any], t: float) -> bool:
        values = [p.step(frame, t) for p in self.parts]  # every part: they keep state
        self.value = all(values) if self.op == "and" else any(values)
        shown = [p for p in self.parts if not p.value] if self.op == "and" and not self.value else self.parts
        self.detail = (
            f" {self.op} ".join(p.detail for p in shown) if self.op == "or" else "; ".join(p.detail for p in shown)
        )
        return self.value


class _ForNode(_Node):
    def __init__(self, expr: For) -> None:
        self.inner = _build(expr.inner)
        self.seconds = expr.seconds
        self.start: float | None = None
        self.last: float | None = None

    def reset(self, since: float) -> None:
        self.inner.reset(since)
        self.start = self.last = None

    def step(self, frame: dict[str, Any], t: float) -> bool:
        holds = self.inner.step(frame, t)
        if self.last is not None and t - self.last > MAX_GAP_S:
            self.start = None
        self.last = t
        if not holds:
            self.start = None
        elif self.start is None:
            self.start = t
        held = 0.0 if self.start is None else t - self.start
        self.value = holds and held >= self.seconds - 1e-6
        self.detail = f"{self.inner.detail}, held {_fmt(round(held, 2))} s of {_fmt(self.seconds)} s"
        return self.value


class _WithinNode(_Node):
    def __init__(self, expr: Within) -> None:
        self.inner = _build(expr.inner)
        self.seconds = expr.seconds
        self.after = expr.after
        self.anchor: float | None = None

    def reset(self, since: float) -> None:
        self.inner.reset(since)
        self.anchor = None

    def step(self, frame: dict[str, Any], t: float) -> bool:
        times = list(_events(frame, self.after))
        if times:
            self.anchor = max(times)
            self.inner.reset(self.anchor)
        holds = self.inner.step(frame, t)
        after = _event_text(self.after)
        if self.anchor is None:
            self.value = False
            self.detail = f"waiting for {after}"
        elif t - self.anchor > self.seconds:
            self.value = False
            self.detail = f"{_fmt(self.seconds)} s after {after} have passed; repeat the experiment"
        else:
            self.value = holds
            self.detail = f"{self.inner.detail}, {_fmt(round(t - self.anchor, 2))} s after {after}"
        return self.value


def _build(expr: Expr) -> _Node:
    if isinstance(expr, Compare):
        return _CompareNode(expr)
    if isinstance(expr, Event):
        return _EventNode(expr)
    if isinstance(expr, BoolOp):
        return _BoolNode(expr)
    if isinstance(expr, For):
        return _ForNode(expr)
    return _WithinNode(expr)


class _Step:
    def __init__(self, check: Check) -> None:
        self.condition = _build(check.condition)
        self.hints = [_build(h.condition) for h in check.hints]
        self.passed = False
        self.detail = "no frame yet: start the lab"
        self.hint: int | None = None


class Evaluator:
    """Every step's check, fed the lab's frames in time order; a passed step stays passed."""

    def __init__(self, checks: dict[str, Check]) -> None:
        self.steps = {step: _Step(check) for step, check in checks.items()}
        self.last_t: float | None = None

    def feed(self, frame: dict[str, Any]) -> list[str]:
        """Evaluate one frame; returns the ids of the steps that passed with it."""
        t = frame.get("t")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            return []
        if self.last_t is not None and t < self.last_t:
            return []  # out of order: durations would run backwards
        self.last_t = float(t)
        newly: list[str] = []
        for step_id, step in self.steps.items():
            if step.passed:
                continue
            holds = step.condition.step(frame, float(t))
            step.detail = step.condition.detail
            step.hint = None
            for i, hint in enumerate(step.hints):
                if hint.step(frame, float(t)) and step.hint is None:
                    step.hint = i
            if holds:
                step.passed = True
                step.hint = None
                newly.append(step_id)
        return newly

    def verdict(self, step: str) -> Verdict:
        """The step's state as of the last frame: passed, the first hint that holds, what was measured."""
        s = self.steps[step]
        return Verdict(s.passed, None if s.passed else s.hint, s.detail)
