"""Evaluating parsed checks against a lab's frames, frame by frame (``Evaluator``, ``Verdict``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.engine.checks.catalog import TABLES
from core.engine.checks.syntax import MAX_GAP_S, BoolOp, Check, Compare, Event, Expr, For, Within

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


def read_metric(frame: dict[str, Any], name: str) -> float | None:
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
        measured = read_metric(frame, e.metric)
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
