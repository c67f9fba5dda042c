"""Autoscaling policy (sans-I/O): how many web servers a tier should run for the load it sees.

Target tracking, as cloud autoscalers do it: keep the servers' mean utilisation near
``target_util``. The autoscaler node (``core.engine.nodes.autoscaler``) feeds one utilisation
sample a second (``observe``) and asks ``decide`` what to do; the lab's own ``add``/``remove`` do
it (a removal drains first). This module decides only:

- It judges the last ``window`` samples, never one noisy second (as an alarm wants N of N
  datapoints), and only once it has that many since its last action: the load measured before a
  change says nothing about after.
- Out: when every sample is above the target, to ``ceil(servers × mean util / target)`` servers at
  once (a surge needs capacity now), at most ``max_servers``.
- In: one server at a time, only when even the busiest sample spread over one server fewer stays
  below the target by a margin (``TOLERANCE``), so that removing one does not push the rest over
  it and flap back out.
- Never below ``min_servers`` nor above ``max_servers``: a tier outside them is brought back.
- After an action, nothing more for ``cooldown_s``: new servers need time to take their share.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

TOLERANCE = 0.1  # scale in only if the remaining servers would run below target × (1 - this)
WINDOW = 3  # samples (one a second) the decision averages


@dataclass(frozen=True)
class Policy:
    target_util: float = 0.5
    min_servers: int = 1
    max_servers: int = 6
    cooldown_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.target_util <= 1:
            raise ValueError("target_util must be in (0, 1]")
        if not 1 <= self.min_servers <= self.max_servers:
            raise ValueError("need 1 <= min_servers <= max_servers")


@dataclass(frozen=True)
class Decision:
    action: str  # "out" | "in"
    servers: int  # how many the tier should run after it
    util: float | None  # the mean utilisation it was judged on (None: bounds only)
    reason: str


class Autoscaler:
    def __init__(self, policy: Policy, *, window: int = WINDOW) -> None:
        self.policy = policy
        self.window = window
        self._samples: deque[float] = deque(maxlen=window)
        self._last_action: float | None = None

    @property
    def util(self) -> float | None:
        """The mean of the samples since the last action (None before any)."""
        return round(sum(self._samples) / len(self._samples), 3) if self._samples else None

    def set_policy(self, policy: Policy) -> None:
        """A new policy applies to the next decision; the samples and the cool-down stand."""
        self.policy = policy

    def observe(self, util: float) -> None:
        self._samples.append(min(1.0, max(0.0, util)))

    def cooldown_left(self, now: float) -> float:
        if self._last_action is None:
            return 0.0
        return max(0.0, self.policy.cooldown_s - (now - self._last_action))

    def acted(self, now: float) -> None:
        """The decision was carried out: start the cool-down and measure afresh."""
        self._last_action = now
        self._samples.clear()

    def decide(self, now: float, servers: int) -> Decision | None:
        """What to do now with ``servers`` running, or None (call ``acted`` once it is done)."""
        p = self.policy
        if self.cooldown_left(now) > 0:
            return None
        if servers < p.min_servers:
            return Decision("out", p.min_servers, self.util, "below the minimum")
        if servers > p.max_servers:
            return Decision("in", servers - 1, self.util, "above the maximum")
        if len(self._samples) < self.window:
            return None
        util = sum(self._samples) / len(self._samples)
        if min(self._samples) > p.target_util:  # every sample over it: a trend, not a noisy second
            wanted = min(p.max_servers, math.ceil(servers * util / p.target_util - 1e-9))
            if wanted > servers:
                return Decision("out", wanted, round(util, 3), "above the target")
        elif servers > p.min_servers and servers * max(self._samples) / (servers - 1) < p.target_util * (
            1 - TOLERANCE
        ):
            return Decision("in", servers - 1, round(util, 3), "below the target")
        return None
