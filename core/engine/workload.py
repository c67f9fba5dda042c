"""The realistic workload (sans-I/O): what a client's next request is, and read-your-writes checks.

A real site's traffic is mostly reads, some writes, and a few popular users get most of it. So a
client draws each request's user from a Zipf distribution (rank k has weight 1/k^s; rank k is user
id k), sends a post write with probability ``write_ratio``, and otherwise one of ``READ_MIX``. That
skew is what makes caches, shards and hot keys behave as they do in life.

Read-your-writes: a client remembers, per user, the change-log position (LSN) of that user's last
acknowledged write (``LastWrites``). A later read of that user answered from data older than it
(a lagging replica, a stale cache) is a stale read.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# Of the requests that are not writes: the home page (web) or feed (mobile) is what people open
# most; then someone's profile; logins are rare. Fractions sum to 1.
READ_MIX: tuple[tuple[str, float], ...] = (("feed", 0.70), ("profile", 0.20), ("login", 0.10))
DEFAULT_USERS = 2000  # when no database in the topology says how many users there are
MAX_LAST_WRITES = 10_000  # users whose last write a client remembers (the oldest are forgotten)
HOME_PATHS = {"web": "/", "mobile": "/api/feed"}
CAPTIONS = ("sunset", "my cat", "lunch", "the mountains", "new shoes", "weekend", "coffee", "the sea")


class Zipf:
    """Draws ranks 1..n with weight 1/k^s: O(n) to build, O(log n) per draw. s=0 is uniform."""

    def __init__(self, n: int, s: float) -> None:
        if n < 1:
            raise ValueError("Zipf needs at least one rank")
        self.n = n
        self.s = float(s)
        self._cum = list(itertools.accumulate(k**-self.s for k in range(1, n + 1)))

    def sample(self, rng: random.Random) -> int:
        """One rank in 1..n."""
        total = self._cum[-1]
        return min(bisect.bisect_right(self._cum, rng.random() * total), self.n - 1) + 1

    def share(self, top: int) -> float:
        """The expected fraction of draws that land on ranks 1..top."""
        top = max(0, min(top, self.n))
        return self._cum[top - 1] / self._cum[-1] if top else 0.0


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the client will send it."""

    method: str  # "GET" | "POST"
    path: str  # without the query string
    body: dict[str, Any] | None  # sent as JSON
    user: int
    is_write: bool
    op: str  # "feed" | "profile" | "login" | "post"
    query: tuple[tuple[str, str], ...] = ()

    @property
    def target(self) -> str:
        """Path and query string, as on the request line."""
        if not self.query:
            return self.path
        return self.path + "?" + "&".join(f"{k}={v}" for k, v in self.query)

    @property
    def label(self) -> str:
        """The hop's op, e.g. ``POST /api/posts`` or ``GET /api/users/42``."""
        return f"{self.method} {self.target}"


class Workload:
    """A client's request mix; ``set_mix`` changes it live."""

    def __init__(
        self, *, users: int, flavor: str = "web", write_ratio: float = 0.0, zipf_s: float = 1.0, store: str = "sql"
    ) -> None:
        self.users = max(1, int(users))
        self.home = HOME_PATHS[flavor]
        self.store = store
        self.write_ratio = 0.0
        self.zipf = Zipf(self.users, min(3.0, max(0.0, float(zipf_s))))
        self.set_mix(write_ratio=write_ratio)

    @property
    def zipf_s(self) -> float:
        return self.zipf.s

    def set_mix(self, write_ratio: float | None = None, zipf_s: float | None = None) -> None:
        """Change the write fraction (clamped to 0..1) and/or the Zipf exponent (clamped to 0..3)."""
        if write_ratio is not None:
            self.write_ratio = min(1.0, max(0.0, float(write_ratio)))
        if zipf_s is not None:
            s = min(3.0, max(0.0, float(zipf_s)))
            if s != self.zipf.s:  # rebuilding the table is O(users): only when it changes
                self.zipf = Zipf(self.users, s)

    def next_request(self, rng: random.Random) -> Request:
        """Draw the next request (user, then write or which read) from ``rng``."""
        user = self.zipf.sample(rng)
        # The web server picks its data store from the query string, on every request.
        extra: tuple[tuple[str, str], ...] = (("store", "kv"),) if self.store == "kv" else ()
        if rng.random() < self.write_ratio:
            body = {"user": user, "caption": rng.choice(CAPTIONS)}
            return Request("POST", "/api/posts", body, user, True, "post", extra)
        op = _pick(READ_MIX, rng.random())
        if op == "feed":
            return Request("GET", self.home, None, user, False, op, (("user", str(user)), *extra))
        if op == "profile":
            return Request("GET", f"/api/users/{user}", None, user, False, op, extra)
        return Request("POST", "/api/login", {"user": user}, user, False, op, extra)


def _pick(mix: tuple[tuple[str, float], ...], x: float) -> str:
    for name, p in mix:
        if x < p:
            return name
        x -= p
    return mix[-1][0]  # float rounding at the top end


def is_stale_read(read_lsn: int, last_write_lsn: int | None) -> bool:
    """A read is stale when its data predate the user's last acknowledged write."""
    return last_write_lsn is not None and read_lsn < last_write_lsn


class LastWrites:
    """Per user, the LSN of their last acknowledged write; bounded, the least recent forgotten."""

    def __init__(self, capacity: int = MAX_LAST_WRITES) -> None:
        self.capacity = capacity
        self._lsn: OrderedDict[int, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lsn)

    def record(self, user: int, lsn: int) -> None:
        """Remember a write's LSN (acks of concurrent writes may arrive out of order: keep the max)."""
        old = self._lsn.pop(user, None)
        self._lsn[user] = lsn if old is None else max(old, lsn)
        while len(self._lsn) > self.capacity:
            self._lsn.popitem(last=False)

    def get(self, user: int) -> int | None:
        """The user's last write LSN, or None if none is remembered."""
        return self._lsn.get(user)

    def is_stale(self, user: int, read_lsn: int) -> bool:
        """True when ``read_lsn`` is older than the user's last acknowledged write."""
        return is_stale_read(read_lsn, self._lsn.get(user))
