"""Key placement (sans-I/O): which node of a sharded database (or cache tier) owns a key.

Two routers share one interface (``owner``, ``shares``, ``arcs``, ``nodes``, ``algorithm``):

- ``Modulo``: ``nodes[hash % N]``. Simple and even, but the owner of almost every key depends on
  N: going from N to N+1 nodes moves about N/(N+1) of all keys (4 -> 5 nodes: 80%), so a resize
  empties every cache and reshuffles every shard at once.
- ``HashRing`` (consistent hashing): nodes and keys hash onto the same circle and a key belongs
  to the first node point clockwise from it. A new node takes over only the arcs in front of its
  own points, so adding a node to N moves about 1/(N+1) of keys, all of them *to* the new node;
  removing one moves only the keys it owned.

Virtual nodes: with one point per node the arcs are as uneven as random cuts of a circle (one
node can own several times another's share). Placing each node at ``vnodes`` points averages
the arcs out, so shares approach 1/N and a leaving node's keys spread over all the others.

Hashes are md5-based, never ``hash()``: every process (web, workers, each run) must agree on
where a key lives. ``str(key)`` is hashed, so the key 42 and the key "42" are the same key.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence

ALGORITHMS: tuple[str, ...] = ("modulo", "consistent")
SPACE = 2**64  # size of the hash circle
MAX_VNODES = 1000


def key_hash(key: str | int) -> int:
    """A stable 64-bit hash: the first 8 bytes of md5(str(key)), big-endian."""
    return int.from_bytes(hashlib.md5(str(key).encode()).digest()[:8], "big")


def _fraction(h: int) -> float:
    # The top 53 bits fit a float exactly, so the result stays below 1.0 (h / SPACE can round up).
    return (h >> 11) / 2**53


def _checked(nodes: Sequence[str]) -> tuple[str, ...]:
    names = tuple(nodes)
    if not names:
        raise ValueError("a router needs at least one node")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate node names in {list(names)}")
    return names


class Modulo:
    """``nodes[key_hash(key) % N]``: even shares, but resizing moves most keys."""

    algorithm = "modulo"

    def __init__(self, nodes: Sequence[str]) -> None:
        self.nodes = _checked(nodes)

    def owner(self, key: str | int) -> str:
        return self.nodes[key_hash(key) % len(self.nodes)]

    def shares(self) -> dict[str, float]:
        return {n: 1 / len(self.nodes) for n in self.nodes}

    def arcs(self) -> list[tuple[float, float, str]]:
        return []  # no ring to draw


class HashRing:
    """Consistent hashing with ``vnodes`` points per node on a circle of 2**64 hashes."""

    algorithm = "consistent"

    def __init__(self, nodes: Sequence[str], vnodes: int = 64) -> None:
        self.nodes = _checked(nodes)
        if not 1 <= vnodes <= MAX_VNODES:
            raise ValueError(f"vnodes must be between 1 and {MAX_VNODES}, not {vnodes}")
        self.vnodes = vnodes
        # Ties (two points on one hash) break by node name so every process builds the same ring.
        ring = sorted((key_hash(f"{n}#{i}"), n) for n in self.nodes for i in range(vnodes))
        self._points = [p for p, _ in ring]
        self._owners = [n for _, n in ring]

    def _index(self, h: int) -> int:
        # The first point at or after h owns it; past the last point the ring wraps to the first.
        i = bisect_left(self._points, h)
        return 0 if i == len(self._points) else i

    def owner(self, key: str | int) -> str:
        return self._owners[self._index(key_hash(key))]

    def position(self, key: str | int) -> float:
        """The key's place on the circle, in [0, 1)."""
        return _fraction(key_hash(key))

    def _spans(self) -> list[tuple[int, int, str]]:
        """The ring cut at 0, as (start, end, owner) hash ranges in ring order (end inclusive)."""
        first, last = self._points[0], self._points[-1]
        spans = [(0, first, self._owners[0])]
        spans += [(self._points[i - 1], self._points[i], self._owners[i]) for i in range(1, len(self._points))]
        spans.append((last, SPACE, self._owners[0]))  # wraps round to the first point's owner
        return [s for s in spans if s[1] > s[0]]

    def shares(self) -> dict[str, float]:
        """Each node's fraction of the hash space; the fractions sum to 1."""
        owned = dict.fromkeys(self.nodes, 0)
        for start, end, node in self._spans():
            owned[node] += end - start
        return {n: size / SPACE for n, size in owned.items()}

    def arcs(self) -> list[tuple[float, float, str]]:
        """The circle as (start, end, node) arcs, fractions in [0, 1] in ring order, covering it once.

        A node owns the keys whose position is in (start, end]; the first arc also owns 0.
        Neighbouring arcs of one node are merged, so each arc is a run a diagram can draw.
        """
        merged: list[tuple[int, int, str]] = []
        for start, end, node in self._spans():
            if merged and merged[-1][2] == node:
                merged[-1] = (merged[-1][0], end, node)
            else:
                merged.append((start, end, node))
        return [(_fraction(s), 1.0 if e == SPACE else _fraction(e), n) for s, e, n in merged]


Router = Modulo | HashRing


def make_router(algorithm: str, nodes: Sequence[str], vnodes: int = 64) -> Router:
    """The router for ``algorithm`` (one of ``ALGORITHMS``); ``vnodes`` applies to the ring."""
    if algorithm == "modulo":
        return Modulo(nodes)
    if algorithm == "consistent":
        return HashRing(nodes, vnodes)
    raise ValueError(f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")


def moved(keys: Iterable[str | int], old: Router, new: Router) -> list[tuple[str | int, str, str]]:
    """The keys whose owner differs between ``old`` and ``new``: (key, old owner, new owner)."""
    result = []
    for key in keys:
        before, after = old.owner(key), new.owner(key)
        if before != after:
            result.append((key, before, after))
    return result
