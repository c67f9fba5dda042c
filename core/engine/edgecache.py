"""A CDN edge's cache (sans-I/O): objects kept for their ``Cache-Control: max-age``, bounded in
bytes, the least recently used evicted first; purges; and the modelled price of the bytes served.

The edge node (``core.engine.nodes.cdn``) does the sockets; this module decides what a lookup
finds. Time is passed in (monotonic seconds), so tests need no clock.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Modelled prices, US dollars per GB sent to users: an edge's egress is what a CDN bills (a typical
# list price of the first tier), the origin's is a cloud region's internet egress. Both are
# parameters of the ``cdn`` kind; these are their defaults.
EDGE_PRICE_PER_GB = 0.085
ORIGIN_PRICE_PER_GB = 0.09
GB = 1024**3
_MAX_AGE = re.compile(r"(?:^|[,\s])(?:s-maxage|max-age)\s*=\s*(\d+)")


def max_age(cache_control: str | None, default_s: float) -> float:
    """Seconds a shared cache may keep a response: ``s-maxage`` or ``max-age`` (the first given),
    0 for ``no-store``/``no-cache``/``private``, ``default_s`` when the header says nothing."""
    if not cache_control:
        return default_s
    value = cache_control.lower()
    if any(word in value for word in ("no-store", "no-cache", "private")):
        return 0.0
    m = _MAX_AGE.search(value)
    return float(m.group(1)) if m else default_s


def cost_usd(nbytes: int, price_per_gb: float) -> float:
    """The modelled price of sending ``nbytes``."""
    return nbytes / GB * price_per_gb


@dataclass
class Entry:
    body: bytes
    content_type: str
    stored_at: float
    expires_at: float

    @property
    def size(self) -> int:
        return len(self.body)

    def age(self, now: float) -> int:
        """The HTTP ``Age`` header's value: whole seconds since the edge stored it."""
        return max(0, int(now - self.stored_at))


class EdgeCache:
    """Path → Entry, LRU by bytes. ``get`` counts hits and misses; ``put`` evicts to fit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # removed to make room (not expiries, not purges)
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: str) -> bool:
        return path in self._entries

    def get(self, path: str, now: float) -> Entry | None:
        """The fresh entry (now the most recently used), else None; an expired one is dropped."""
        entry = self._entries.get(path)
        if entry is not None and entry.expires_at <= now:
            self._drop(path)
            self.expired += 1
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(path)
        self.hits += 1
        return entry

    def put(self, path: str, body: bytes, content_type: str, ttl_s: float, now: float) -> bool:
        """Keep ``body`` for ``ttl_s`` seconds, evicting the least recently used until it fits;
        False (nothing stored, nothing evicted) when it may not be kept or can never fit."""
        if ttl_s <= 0 or len(body) > self.max_bytes:
            return False
        if path in self._entries:
            self._drop(path)
        self._make_room(len(body))
        self._entries[path] = Entry(body, content_type, now, now + ttl_s)
        self.used_bytes += len(body)
        return True

    def purge(self, match: Callable[[str], bool] | None = None) -> int:
        """Remove every entry (or those whose path ``match`` accepts); how many were removed."""
        paths = [p for p in self._entries if match is None or match(p)]
        for p in paths:
            self._drop(p)
        return len(paths)

    def resize(self, max_bytes: int) -> None:
        """A new bound, live: a smaller one evicts the least recently used at once."""
        self.max_bytes = max(0, int(max_bytes))
        self._make_room(0)

    def clear(self) -> None:
        """Everything lost (a crashed edge keeps nothing in memory); the counters stay."""
        self._entries.clear()
        self.used_bytes = 0

    def paths(self) -> list[str]:
        """Cached paths, least recently used first."""
        return list(self._entries)

    def _make_room(self, size: int) -> None:
        while self._entries and self.used_bytes + size > self.max_bytes:
            path = next(iter(self._entries))
            self._drop(path)
            self.evictions += 1

    def _drop(self, path: str) -> None:
        self.used_bytes -= self._entries.pop(path).size
