"""What hosts a running lab, for a student (``core.engine.runner``) and for ``lessons prove`` alike:
the frame ticker, and the lesson's step checks evaluated on every frame it takes. A lesson is so
proved by the same code that judges students.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.engine.checks import Evaluator, parse_check, parse_metric, read_metric
from core.engine.lab import Lab
from core.engine.lifecycle import Alive

log = logging.getLogger(__name__)
Emit = Callable[[dict[str, Any]], None]


class LiveChecks:
    """A lesson's step checks evaluated against every frame the lab publishes.

    ``seconds`` (how long a step took) is measured from when the step was unlocked *in this lab*:
    from the lab's start for the first step, or for any step whose predecessor has not passed in
    this lab (it may have passed in an earlier run); otherwise from the moment its predecessor
    passed. The engine alone knows both instants, so the browser's clock plays no part.
    """

    def __init__(self, checks: dict[str, str] | None, *, started: float,
                 measures: dict[str, str] | None = None, paused: bool = False) -> None:
        self.order: list[str] = []
        self.evaluator: Any = None
        self.started = started
        self.passed_at: dict[str, float] = {}
        self.measures: dict[str, str] = {}
        self.paused = paused  # judges nothing until restart(): a hot-pool lab nobody has claimed
        self._parsed: dict[str, Any] = {}
        if not checks:
            return
        for step, text in (measures or {}).items():  # a prediction's measure: metric(NAME) or NAME
            try:
                self.measures[step] = parse_metric(text)[0] if text.lstrip().startswith("metric") else text.strip()
            except Exception as exc:
                log.warning("step %s: measure does not parse: %s", step, exc)

        parsed = {}
        for step, source in (checks or {}).items():
            try:
                parsed[step] = parse_check(source)
            except Exception as exc:  # the loader validated it; a bad one must not kill the lab
                log.warning("step %s: check does not parse: %s", step, exc)
                continue
            self.order.append(step)
        self._parsed = parsed
        self.evaluator = Evaluator(parsed) if parsed else None

    def restart(self, *, started: float) -> None:
        """Judge afresh from ``started``, every step unpassed: a pool lab claimed by a student must
        judge them as a lab that has just started for them."""
        self.started, self.passed_at, self.paused = started, {}, False
        self.evaluator = Evaluator(self._parsed) if self._parsed else None

    def feed(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        """Messages for the steps this frame newly passed."""
        if self.evaluator is None or self.paused:
            return []
        out = []
        for step in self.evaluator.feed(frame):
            t = float(frame.get("t") or time.time())
            self.passed_at[step] = t
            message = {"type": "check", "step": step, "passed": True, "t": t,
                       "seconds": round(max(0.0, t - self.unlocked_at(step)), 2),
                       "detail": self.evaluator.verdict(step).detail}
            if step in self.measures:  # the value the student's prediction is compared with
                message["measured"] = read_metric(frame, self.measures[step])
            out.append(message)
        return out

    def unlocked_at(self, step: str) -> float:
        i = self.order.index(step)
        if i > 0 and self.order[i - 1] in self.passed_at:
            return max(self.started, self.passed_at[self.order[i - 1]])
        return self.started

    def verdict(self, step: str) -> dict[str, Any]:
        """The answer to "check now" for one step (unknown step: an error message)."""
        if self.evaluator is None or step not in self.order:
            return {"type": "error", "message": f"check: step {step!r} has no check in this lesson",
                    "command": {"action": "check", "step": step}}
        verdict = self.evaluator.verdict(step)
        passed = bool(verdict.passed) or step in self.passed_at
        return {"type": "check", "step": step, "passed": passed, "hint": None if passed else verdict.hint,
                "detail": verdict.detail, "t": time.time(), "now": True}


async def tick(lab: Lab, live: LiveChecks, emit: Emit, *, interval: float, alive: Alive,
               each_second: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> None:
    """Every ``interval`` s: take a frame, emit it, feed it to ``live`` and emit what newly passed;
    once a second also await ``each_second(frame)``. Ends when ``alive()`` turns false."""
    next_at = time.monotonic()
    last_second = 0.0
    while alive():
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        frame = lab.frame()
        emit(frame)
        for message in live.feed(frame):
            emit(message)
        if each_second is not None and frame["t"] - last_second >= 1.0:
            last_second = frame["t"]
            await each_second(frame)
