"""GeoDNS's decisions, pure: which of a name's targets a client is sent to, and their health.

A DNS server that knows where each of its targets is (its region) and where the query came from
(the source address's region) answers with the nearest target that passes its health checks: the
client's own region first, then the next nearest by the modelled round trip. A target is taken
out after ``fall`` failed checks in a row and put back after ``rise`` good ones (as a balancer's
health checks do), so an outage is seen no sooner than the checks can see it, and a client that
cached the old answer keeps using it until its TTL runs out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

UP, DOWN = "up", "down"


@dataclass
class _Target:
    state: str = UP
    failures: int = 0
    successes: int = 0


class Health:
    """Per target: up or down, from consecutive check results (HAProxy's rise/fall)."""

    def __init__(self, *, rise: int = 2, fall: int = 2) -> None:
        self.rise = max(1, rise)
        self.fall = max(1, fall)
        self._targets: dict[str, _Target] = {}

    def is_up(self, target: str) -> bool:
        return self._targets.get(target, _Target()).state == UP

    def check(self, target: str, passed: bool) -> str | None:
        """Record one check; the new state ("up" or "down") when it changed, else None."""
        t = self._targets.setdefault(target, _Target())
        if passed:
            t.failures = 0
            t.successes += 1
            if t.state == DOWN and t.successes >= self.rise:
                t.state = UP
                return UP
        else:
            t.successes = 0
            t.failures += 1
            if t.state == UP and t.failures >= self.fall:
                t.state = DOWN
                return DOWN
        return None

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the targets no longer in ``keep`` (removed nodes)."""
        keep = set(keep)
        for target in [t for t in self._targets if t not in keep]:
            del self._targets[target]


@dataclass(frozen=True)
class Choice:
    targets: list[str]  # what to answer, in order
    why: str  # how the choice was made, for the clicked request


def nearest(
    candidates: list[str],
    *,
    client_region: str,
    region_of: Callable[[str], str],
    rtt_ms: Callable[[str, str], float],
    healthy: Callable[[str], bool],
) -> Choice:
    """The one healthy candidate nearest the client (its own region first, then by round trip;
    ties keep the candidates' order). With none healthy, every candidate: an answer that may fail
    beats none, as real GeoDNS services fail open."""
    up = [c for c in candidates if healthy(c)]
    if not up:
        return Choice(list(candidates), "no healthy target: every one")
    ranked = sorted(up, key=lambda c: rtt_ms(client_region, region_of(c)))
    best = ranked[0]
    region = region_of(best) or "no region"
    down = [c for c in candidates if c not in up]
    if client_region and region_of(best) == client_region:
        why = f"client in {client_region}: {best}, its own region"
    else:
        ms = rtt_ms(client_region, region_of(best))
        why = f"client in {client_region or 'no region'}: {best} in {region}, nearest healthy ({ms:g} ms)"
    if down:
        why += f"; down: {', '.join(down)}"
    return Choice([best], why)
