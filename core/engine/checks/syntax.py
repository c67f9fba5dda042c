"""The check language's tokenizer, syntax tree and parser (``parse_check``, ``parse_metric``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from core.engine.checks.catalog import TABLES
from core.engine.telemetry import EVENT_KINDS

MAX_GAP_S = 2.0  # frames come 4 a second; a longer silence (lab restarted) breaks a `for` run
OPS = (">=", "<=", "==", "!=", ">", "<")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
KEYWORDS = frozenset({"metric", "event", "for", "within", "after", "and", "or", "when", "say"})
# Parentheses a condition may nest; a real check needs two or three. The parser, the evaluator and
# the tree's repr recurse about 14 frames a level at worst (a level can hold an 'or', an 'and', a
# 'within' and a 'for'), so 20 keeps them all under 300 frames, far from Python's limit of 1000.
MAX_NESTING = 20

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
        self.depth = 0  # parentheses open around the current token
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
            if self.depth == MAX_NESTING:
                raise self.fail(f"parentheses nested more than {MAX_NESTING} deep")
            opening = self.next()
            self.depth += 1
            expr = self.condition()
            if not self.at(")"):
                raise self.fail(f"expected ')' to close the '(' at line {opening.line}, col {opening.col}")
            self.next()
            self.depth -= 1
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
