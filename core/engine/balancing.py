"""Load balancing (sans-I/O): which backend gets the next request, and which backends are healthy.

The load-balancer node (``core.engine.nodes.lb``) does the I/O: it asks ``Balancer.pick`` for a
backend, brackets the forwarded request with ``begin``/``end`` (so least connections and power of
two choices see the connections in flight), and reports what it learns about backend health:
``check(backend, ok)`` after each active health check, ``failed(backend)`` when a forwarded
request could not connect (passive detection). Both return the state change, if any.

Health state machine, per backend (HAProxy's ``rise``/``fall`` semantics)::

    up  --(fall consecutive failures: active checks or connection failures)-->  down
    down --(rise consecutive successful active checks)-->  up

A backend starts ``up`` (optimistic, as nginx and HAProxy do with no prior check). A down backend
gets no traffic, so only active checks can bring it back.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

ALGORITHMS: tuple[str, ...] = (
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "random",
    "power_of_two",
    "ip_hash",
    "sticky",
)
UP, DOWN = "up", "down"


@dataclass
class Backend:
    id: str
    weight: int = 1
    state: str = UP
    in_flight: int = 0
    successes: int = 0  # consecutive successful checks
    failures: int = 0  # consecutive failures (checks or connection failures)
    current_weight: int = 0  # smooth weighted round robin's running score
    picked: int = 0  # requests sent to it, all time


class Balancer:
    def __init__(
        self,
        backends: Iterable[str | tuple[str, int]],
        *,
        algorithm: str = "round_robin",
        rise: int = 2,
        fall: int = 2,
        rng: random.Random | None = None,
    ) -> None:
        self.backends: dict[str, Backend] = {}
        for b in backends:
            bid, weight = (b, 1) if isinstance(b, str) else b
            self.backends[bid] = Backend(bid, weight=max(1, int(weight)))
        self.algorithm = "round_robin"
        self.set_algorithm(algorithm)
        self.rise = max(1, rise)
        self.fall = max(1, fall)
        self.rng = rng or random.Random()
        self._rr = 0  # round robin's position in the list of all backends

    # Configuration --------------------------------------------------------------------------
    def set_algorithm(self, algorithm: str) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
        self.algorithm = algorithm
        for b in self.backends.values():
            b.current_weight = 0

    def add(self, backend: str, weight: int = 1) -> None:
        """A new backend joins (up: it takes traffic from the next request on)."""
        self.backends.setdefault(backend, Backend(backend, weight=max(1, int(weight))))

    def remove(self, backend: str) -> None:
        """A backend leaves rotation; requests already forwarded to it finish there."""
        self.backends.pop(backend, None)

    # Choosing -------------------------------------------------------------------------------
    def healthy(self) -> list[Backend]:
        return [b for b in self.backends.values() if b.state == UP]

    def pick(self, client: str | None = None, exclude: Iterable[str] = (), affinity: str | None = None) -> str | None:
        """The backend for the next request from ``client`` (its address), skipping ``exclude``
        (backends this request already failed on) and down backends; None if there is none.
        ``affinity``: the backend a sticky balancer's cookie names (only ``sticky`` reads it)."""
        skip = set(exclude)
        pool = [b for b in self.backends.values() if b.state == UP and b.id not in skip]
        if not pool:
            return None
        if self.algorithm == "sticky" and affinity is not None:
            for b in pool:
                if b.id == affinity:  # the user's server is up: they stay on it
                    b.picked += 1
                    return b.id
        choose = getattr(self, "_" + self.algorithm)
        chosen: Backend = choose(pool, client)
        chosen.picked += 1
        return chosen.id

    def _round_robin(self, pool: list[Backend], client: str | None) -> Backend:
        # Walk the full list so that a backend's recovery does not reshuffle everyone's turn.
        everyone = list(self.backends.values())
        allowed = {b.id for b in pool}
        for _ in range(len(everyone)):
            b = everyone[self._rr % len(everyone)]
            self._rr += 1
            if b.id in allowed:
                return b
        return pool[0]  # unreachable: pool is a non-empty subset of everyone

    def _weighted_round_robin(self, pool: list[Backend], client: str | None) -> Backend:
        # nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c.
        total = 0
        best = pool[0]
        for b in pool:
            b.current_weight += b.weight
            total += b.weight
            if b.current_weight > best.current_weight:
                best = b
        best.current_weight -= total
        return best

    def _least_connections(self, pool: list[Backend], client: str | None) -> Backend:
        fewest = min(b.in_flight for b in pool)
        tied = [b for b in pool if b.in_flight == fewest]
        return self._round_robin(tied, client) if len(tied) > 1 else tied[0]

    def _random(self, pool: list[Backend], client: str | None) -> Backend:
        return self.rng.choice(pool)

    def _power_of_two(self, pool: list[Backend], client: str | None) -> Backend:
        if len(pool) == 1:
            return pool[0]
        a, b = self.rng.sample(pool, 2)
        if a.in_flight == b.in_flight:
            return a
        return a if a.in_flight < b.in_flight else b

    def _sticky(self, pool: list[Backend], client: str | None) -> Backend:
        # Cookie stickiness (``pick``'s affinity): a user without a cookie, or whose server is gone,
        # gets the next in turn, and the balancer's cookie pins them there from then on.
        return self._round_robin(pool, client)

    def _ip_hash(self, pool: list[Backend], client: str | None) -> Backend:
        # Rendezvous (highest random weight) hashing: each client sticks to one backend, and when
        # that backend goes down only its own clients move; everyone else stays where they were.
        key = (client or "").encode()
        return max(pool, key=lambda b: (zlib.crc32(key + b"|" + b.id.encode()), b.id))

    # Connections ----------------------------------------------------------------------------
    def begin(self, backend: str) -> None:
        b = self.backends.get(backend)
        if b is not None:
            b.in_flight += 1

    def end(self, backend: str) -> None:
        b = self.backends.get(backend)
        if b is not None and b.in_flight > 0:
            b.in_flight -= 1

    # Health ---------------------------------------------------------------------------------
    def check(self, backend: str, ok: bool) -> str | None:
        """Account one active health check; returns the new state if it changed."""
        b = self.backends.get(backend)
        if b is None:
            return None
        if ok:
            b.successes += 1
            b.failures = 0
            if b.state == DOWN and b.successes >= self.rise:
                b.state = UP
                return UP
            return None
        return self._failure(b)

    def failed(self, backend: str) -> str | None:
        """Passive detection: a forwarded request could not connect (refused or reset)."""
        b = self.backends.get(backend)
        return None if b is None else self._failure(b)

    def _failure(self, b: Backend) -> str | None:
        b.failures += 1
        b.successes = 0
        if b.state == UP and b.failures >= self.fall:
            b.state = DOWN
            b.current_weight = 0
            return DOWN
        return None

    def states(self) -> dict[str, str]:
        return {b.id: b.state for b in self.backends.values()}
