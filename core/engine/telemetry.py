"""Telemetry aggregation (sans-I/O): completed requests in, bounded frames out.

Clients record each finished request as a Trace of Hops. Nothing is sent per request: every
``frame()`` call closes the current bucket and summarises the last ``window_s`` seconds per node,
per edge and in total, plus a few sampled requests for the diagram's dots. A frame's size depends
on the topology and the sample limit, never on the request rate.
"""

from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from core.engine.kinds import EVENTS

# Every kind of event the engine emits (Telemetry.event), declared with its wording in
# core.engine.kinds: lesson checks may only name these, so a typo in `event(node_kiled)` fails
# `lessons check` instead of never passing.
EVENT_KINDS = frozenset(EVENTS)
RESERVOIR = 256  # latency samples kept per key per bucket (reservoir sampling beyond that)
MAX_EVENTS = 20
# A server that calls other servers (a load balancer, later a web node calling its database)
# reports those calls back to its caller in this response header; the client appends them to
# its trace, so a request's trace holds every hop it made however deep it went.
HOPS_HEADER = "X-Hops"
MAX_HEADER_HOPS = 16
# A Trace's op for a page's asset fetch (an image, the CSS, the JS; core.engine.assets): counted
# apart from the pages (totals.static_*, a client's static_*), so ``rps`` and the page latencies
# mean what they always did; its hops count for the nodes and edges they reach like any other.
STATIC_OP = "static"


@dataclass(slots=True)
class Hop:
    src: str
    dst: str
    proto: str  # "dns" | "http"
    op: str  # "A www.scalelab.test", "GET /api/feed"
    ok: bool
    status: str  # "NOERROR 127.20.0.80 ttl=5", "200", "503", "connection refused"
    ms: float
    at_ms: float  # start, relative to the request's start


def hops_to_header(hops: list[Hop]) -> str:
    """Encode hops (``at_ms`` relative to when this server received the request) as ASCII JSON."""
    return json.dumps(
        [
            [h.src, h.dst, h.proto, h.op, h.ok, h.status, round(h.ms, 2), round(h.at_ms, 2)]
            for h in hops[-MAX_HEADER_HOPS:]
        ],
        separators=(",", ":"),
    )


def hops_from_header(value: str | None, offset_ms: float = 0.0) -> list[Hop]:
    """Decode a HOPS_HEADER value, shifting ``at_ms`` by ``offset_ms`` (when the call to the server
    that sent it started); a missing or malformed header gives no hops."""
    if not value:
        return []
    try:
        rows = json.loads(value)
        return [
            Hop(str(src), str(dst), str(proto), str(op), bool(ok), str(status), float(ms), float(at) + offset_ms)
            for src, dst, proto, op, ok, status, ms, at in rows[:MAX_HEADER_HOPS]
        ]
    except (ValueError, TypeError):
        return []


@dataclass(slots=True)
class Trace:
    id: str
    client: str
    t: float  # wall-clock start
    ok: bool = True
    ms: float = 0.0
    hops: list[Hop] = field(default_factory=list)
    error: str | None = None  # why it failed where no hop says so (e.g. a shared DNS query failed)
    op: str = ""  # what the user did: "feed" | "profile" | "login" | "post" (core.engine.workload)
    write: bool = False
    stale: bool = False  # a read answered with data older than this user's last write
    logout: bool = False  # a logged-in user answered as anonymous: their session was lost

    def to_dict(self) -> dict[str, Any]:
        """The sample as a frame carries it; ``write`` and ``stale`` only when true (frame size)."""
        d = asdict(self)
        d["ms"] = round(self.ms, 2)
        for h in d["hops"]:
            h["ms"] = round(h["ms"], 2)
            h["at_ms"] = round(h["at_ms"], 2)
        for flag in ("write", "stale", "logout"):
            if not d[flag]:
                del d[flag]
        return d


class _Stat:
    """Count, errors and a latency reservoir for one key in one bucket."""

    __slots__ = ("count", "errors", "lat", "seen")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.lat: list[float] = []
        self.seen = 0

    def add(self, ms: float, ok: bool, rng: random.Random) -> None:
        self.count += 1
        if not ok:
            self.errors += 1
            return  # latency percentiles describe answered requests
        self.seen += 1
        if len(self.lat) < RESERVOIR:
            self.lat.append(ms)
        else:
            j = rng.randrange(self.seen)
            if j < RESERVOIR:
                self.lat[j] = ms


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values.sort()
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


class Outages:
    """Per client, how long its users' last outage lasted: from the first request that failed to
    the first one after it that succeeded, by when each was sent (a region's users see a data
    centre's failover as this). Requests are recorded as they finish, out of order: a late failure
    sent before the last outage ended belongs to that outage, not to a new one. A run of failures
    shorter than MIN_OUTAGE_S is a blip (one failed write among good reads), not an outage."""

    MIN_OUTAGE_S = 0.5

    def __init__(self) -> None:
        self._since: dict[str, float] = {}  # client -> when the first failed request of its outage was sent
        self._ended: dict[str, float] = {}  # client -> when its last outage ended
        self.last: dict[str, float] = {}  # client -> seconds its last outage lasted
        self.latest: float | None = None  # the most recently ended outage of any client, in seconds
        self._latest_end = 0.0

    def record(self, client: str, t: float, ok: bool) -> None:
        since = self._since.get(client)
        if not ok:
            if t > self._ended.get(client, 0.0) and (since is None or t < since):
                self._since[client] = t
        elif since is not None and t > since:
            del self._since[client]
            if t - since < self.MIN_OUTAGE_S:
                return
            self.last[client] = round(t - since, 2)
            self._ended[client] = t
            if t >= self._latest_end:
                self._latest_end, self.latest = t, self.last[client]


class Telemetry:
    def __init__(
        self,
        *,
        window_s: float = 1.0,
        frame_interval: float = 0.25,
        samples_per_frame: int = 6,
        rng: random.Random | None = None,
    ) -> None:
        self.window_s = window_s
        self.samples_per_frame = samples_per_frame
        self.rng = rng or random.Random()
        self.frame_interval = frame_interval
        # (start, stats) of the closed buckets inside the sliding window
        self._buckets: deque[tuple[float, dict[str, _Stat]]] = deque(maxlen=max(1, round(window_s / frame_interval)))
        self._current: dict[str, _Stat] = {}
        self._current_start: float | None = None
        self._samples: list[Trace] = []
        self._sample_seen = 0
        self._events: list[dict[str, Any]] = []
        self._events_dropped = 0
        self._stale_reported = False  # one stale_read event per frame; the rest are only counted
        self.seq = 0
        self.recorded = 0
        # Since the lab started (the per-window rates are in the "writes"/"stale" stats).
        self.writes_total = 0
        self.stale_total = 0
        self._static_clients: set[str] = set()  # clients that fetched assets: their frames add static_*
        self.outages = Outages()
        self.logouts_total = 0

    def _stat(self, key: str) -> _Stat:
        s = self._current.get(key)
        if s is None:
            s = self._current[key] = _Stat()
        return s

    def record(self, trace: Trace) -> None:
        """Account one finished request: O(hops), no I/O."""
        self.recorded += 1
        rng = self.rng
        if trace.op == STATIC_OP:
            self._static_clients.add(trace.client)
            self._stat("static").add(trace.ms, trace.ok, rng)
            self._stat("s:" + trace.client).add(trace.ms, trace.ok, rng)
        else:
            self._stat("total").add(trace.ms, trace.ok, rng)
            self._stat("n:" + trace.client).add(trace.ms, trace.ok, rng)
            self.outages.record(trace.client, trace.t, trace.ok)  # the users' pages, not their assets
        if trace.write:
            self.writes_total += 1
            self._stat("writes").add(trace.ms, trace.ok, rng)
        if trace.stale:
            self.stale_total += 1
            self._stat("stale").add(trace.ms, trace.ok, rng)
        if trace.logout:
            self.logouts_total += 1
            self._stat("logouts").add(trace.ms, trace.ok, rng)
        for hop in trace.hops:
            self._stat("n:" + hop.dst).add(hop.ms, hop.ok, rng)
            self._stat(f"e:{hop.src}>{hop.dst}").add(hop.ms, hop.ok, rng)
        self._sample_seen += 1
        if len(self._samples) < self.samples_per_frame:
            self._samples.append(trace)
        else:
            j = rng.randrange(self._sample_seen)
            if j < self.samples_per_frame:
                self._samples[j] = trace

    def event(self, t: float, kind: str, **fields: Any) -> None:
        """Put an event in the next frame; ``kind`` must be declared (core.engine.kinds.EVENTS),
        or the page could not word it and no check could name it."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"event kind {kind!r} is not declared in core.engine.kinds")
        if len(self._events) >= MAX_EVENTS:
            self._events_dropped += 1
            return
        self._events.append({"t": round(t, 3), "kind": kind, **fields})

    def stale_read(self, t: float, *, node: str, user: int, read_lsn: int, write_lsn: int) -> bool:
        """Report a stale read as a ``stale_read`` event, at most once per frame so a lagging
        replica cannot flood frames; returns whether it was reported. (Counting is ``record``'s.)"""
        if self._stale_reported:
            return False
        self._stale_reported = True
        self.event(t, "stale_read", node=node, user=user, read_lsn=read_lsn, write_lsn=write_lsn)
        return True

    def frame(self, now: float, nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, Any]:
        """Close the current bucket and summarise the sliding window; resets samples and events."""
        start = self._current_start if self._current_start is not None else now - self.frame_interval
        self._buckets.append((start, self._current))
        self._current = {}
        self._current_start = now
        # Rates divide by the time the window really covers (shorter just after start).
        span = max(now - self._buckets[0][0], 1e-3)

        def summary(key: str) -> dict[str, Any]:
            count = errors = 0
            lat: list[float] = []
            for _, bucket in self._buckets:
                s = bucket.get(key)
                if s is not None:
                    count += s.count
                    errors += s.errors
                    lat.extend(s.lat)
            return {
                "rps": round(count / span, 2),
                "err_rps": round(errors / span, 2),
                "p50_ms": _percentile(lat, 0.50),
                "p95_ms": _percentile(lat, 0.95),
            }

        total = summary("total")
        total["ok_rps"] = round(total["rps"] - total["err_rps"], 2)
        total["writes_rps"] = round(sum(b["writes"].count for _, b in self._buckets if "writes" in b) / span, 2)
        total["stale_rps"] = round(sum(b["stale"].count for _, b in self._buckets if "stale" in b) / span, 2)
        total["writes_total"] = self.writes_total
        total["stale_total"] = self.stale_total
        total["failover_s"] = self.outages.latest
        total["logouts_rps"] = round(sum(b["logouts"].count for _, b in self._buckets if "logouts" in b) / span, 2)
        total["logouts_total"] = self.logouts_total
        frame = {
            "type": "frame",
            "seq": self.seq,
            "t": round(now, 3),
            "window_s": self.window_s,
            "totals": total,
            "nodes": {n: {**summary("n:" + n), **({"failover_s": self.outages.last[n]} if n in self.outages.last
                                                   else {})} for n in nodes},
            "edges": {
                f"{a}>{b}": {k: v for k, v in summary(f"e:{a}>{b}").items() if k.endswith("rps")} for a, b in edges
            },
            "samples": [t.to_dict() for t in self._samples],
            "events": self._events,
        }
        if self._static_clients:
            self._static_fields(frame, summary)
        if self._events_dropped:
            frame["events_dropped"] = self._events_dropped
        self.seq += 1
        self._samples = []
        self._sample_seen = 0
        self._events = []
        self._events_dropped = 0
        self._stale_reported = False
        return frame

    def _static_fields(self, frame: dict[str, Any], summary: Any) -> None:
        """Asset fetches (STATIC_OP) in the frame: totals.static_* and each fetching client's
        static_rps and static_p95_ms (one client a region: its region's asset latency)."""
        static = summary("static")
        frame["totals"].update({f"static_{k}": v for k, v in static.items()})
        for client in self._static_clients:
            entry = frame["nodes"].get(client)
            if entry is not None:
                mine = summary("s:" + client)
                entry["static_rps"], entry["static_p95_ms"] = mine["rps"], mine["p95_ms"]
