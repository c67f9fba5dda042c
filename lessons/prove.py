"""`manage.py lessons prove`: run a lesson's lab in this process and play every step's solution.

For each step in order its `solution` actions are applied to a real lab (the same commands the
diagram sends; `{"action": "wait", "seconds": N}` sleeps), while frames are taken every
FRAME_INTERVAL seconds and fed to the lesson's checks by ``core.engine.host``: the same ticker and
the same live checks that judge a student's lab in the runner.
A step passes when its check passes before `step_timeout`; a step without a check is skipped.
No Redis, Celery or database: the lab runs on a random 127.A.B network inside asyncio.run().
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from core.engine import keys
from core.engine.commands import CommandError
from core.engine.host import LiveChecks, tick
from core.engine.lab import Lab
from core.engine.lifecycle import Background
from core.engine.looplag import BUSY_MS
from core.engine.spec import topology_from_dict

FRAME_INTERVAL = 0.25
STEP_TIMEOUT_S = 30.0
LIFECYCLE = frozenset({"start", "stop", "check"})  # the lab is already running while steps play


@dataclass(frozen=True)
class StepResult:
    step: str
    outcome: str  # "PASS", "FAIL" or "SKIP" (no check)
    seconds: float
    detail: str = ""
    lag_ms: float = 0.0  # the worst lateness of the lab's event loop while the step was judged

    @property
    def machine_busy(self) -> bool:
        """A failure the machine may have caused: the loop ran so late that the lab's numbers
        described the machine, not the modelled servers (core.engine.looplag)."""
        return self.outcome == "FAIL" and self.lag_ms >= BUSY_MS

    def __str__(self) -> str:
        text = f"{self.step}: {self.outcome} in {self.seconds:.1f} s"
        return f"{text} ({self.detail})" if self.detail else text


def random_network() -> str:
    """A 127.A.B network unlikely to clash with labs the web process hands out (they count up)."""
    return keys.network_for(random.randrange(20_000, 60_000))


async def prove_steps(
    topology: dict[str, Any],
    steps: list[dict[str, Any]],
    *,
    network: str | None = None,
    step_timeout: float = STEP_TIMEOUT_S,
    report: Callable[[StepResult], None] = lambda result: None,
) -> list[StepResult]:
    """Start the lab, play each step's solution, wait for its check; one result per step."""
    checks = {s["id"]: s["check"] for s in steps if s.get("check")}
    passed: dict[str, float] = {}
    changed = asyncio.Event()
    recent: deque[dict[str, Any]] = deque(maxlen=8)  # the last 2 s of frames, to say why a step failed
    worst_lag = [0.0]  # the step's worst loop lateness, reset as each step begins
    lab = Lab(topology_from_dict(topology), network=network or random_network(), frame_interval=FRAME_INTERVAL)

    def emit(message: dict[str, Any]) -> None:  # the frames and verdicts a student's page would get
        if message.get("type") == "frame":
            recent.append(message)
            worst_lag[0] = max(worst_lag[0], (message.get("engine") or {}).get("lag_ms") or 0.0)
        if message.get("type") == "check" and message.get("passed"):
            passed.setdefault(message["step"], time.monotonic())
            changed.set()

    results: list[StepResult] = []
    await lab.start()
    live = LiveChecks(checks, started=time.time())
    background = Background(f"prove {lab.network}")
    ticker = background.start(lambda alive: tick(lab, live, emit, interval=FRAME_INTERVAL, alive=alive), "frames")
    try:
        for step in steps:
            step_id = step["id"]
            began = time.monotonic()
            worst_lag[0] = 0.0
            error = await _play(lab, step.get("solution") or [])
            if error:
                result = StepResult(step_id, "FAIL", time.monotonic() - began, error)
            elif step_id not in checks:
                result = StepResult(step_id, "SKIP", time.monotonic() - began, "no check")
            else:
                deadline = began + step_timeout
                while step_id not in passed and time.monotonic() < deadline and not ticker.done():
                    changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                            await changed.wait()
                if ticker.done() and ticker.exception() is not None:
                    raise ticker.exception()  # type: ignore[misc]
                if step_id in passed:
                    early = passed[step_id] < began  # its check held while an earlier step played
                    result = StepResult(step_id, "PASS", max(0.0, passed[step_id] - began),
                                        "already passed during an earlier step" if early else "")
                else:
                    detail = live.verdict(step_id).get("detail", "")
                    busy = (f"; the machine was busy: the lab's event loop ran up to {worst_lag[0]:g} ms late"
                            if worst_lag[0] >= BUSY_MS else "")
                    result = StepResult(step_id, "FAIL", time.monotonic() - began,
                                        f"check did not pass within {step_timeout:g} s: {detail}; "
                                        f"the lab showed: {lab_showed(recent)}{busy}", lag_ms=worst_lag[0])
            results.append(result)
            report(result)
    finally:
        await background.stop()
        await lab.stop()  # bounded: Lab.stop_deadline
    return results


def prove_again(results: Iterable[StepResult]) -> bool:
    """Whether a lesson deserves a second run: some step failed, and every failure happened while
    the machine was too busy for the lab's numbers to mean anything. A failure on a quiet loop is
    the lesson's own and is never retried."""
    failed = [r for r in results if r.outcome == "FAIL"]
    return bool(failed) and all(r.machine_busy for r in failed)


def lab_showed(frames: Iterable[dict[str, Any]]) -> str:
    """What a failed step's last frames say about why: nodes down, nodes failing requests, and the
    commonest failed hops of the sampled requests (for instance "client-1>lb: timeout x12")."""
    frames = list(frames)
    if not frames:
        return "no frames"
    last = frames[-1]
    nodes = last.get("nodes", {})
    down = sorted(n for n, v in nodes.items() if v.get("up") is False)
    failing = sorted(((v.get("err_rps", 0), n) for n, v in nodes.items() if v.get("err_rps", 0) > 0), reverse=True)
    hops: Counter[str] = Counter()
    for frame in frames:
        for sample in frame.get("samples", []):
            for h in sample.get("hops", []):
                if not h.get("ok", True):
                    hops[f"{h.get('src')}>{h.get('dst')}: {h.get('status')}"] += 1
            if sample.get("error") and not any(not h.get("ok", True) for h in sample.get("hops", [])):
                hops[f"{sample.get('client', '?')}: {sample['error']}"] += 1
    parts = [f"down {', '.join(down)}" if down else "every node up"]
    if failing:
        parts.append("failing " + ", ".join(f"{n} {rate:g}/s" for rate, n in failing[:4]))
    if hops:
        parts.append("failed hops " + ", ".join(f"{k} x{c}" for k, c in hops.most_common(4)))
    return "; ".join(parts)


async def _play(lab: Lab, solution: list[dict[str, Any]]) -> str:
    """Apply a step's solution actions in order; an error message, or "" if they all applied."""
    for action in solution:
        name = action.get("action") if isinstance(action, dict) else None
        if name == "wait":
            await asyncio.sleep(float(action.get("seconds", 0)))
        elif name in LIFECYCLE:
            continue
        else:
            try:
                await lab.command(action)
            except CommandError as exc:
                return f"solution action {action!r} failed: {exc}"
    return ""
