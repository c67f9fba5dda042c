"""Node kinds: what each kind of node is, declared once.

The spec parser validates parameters against these declarations, the engine picks the runtime
class by ``runtime``, the checks' metric catalog reads ``gauges``, ``add``/``remove`` read
``scalable``, and the diagram reads title, tier, port, scalable and the modelled flag from
``Topology.to_dict()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.engine.assets import PURGE_TARGETS
from core.engine.balancing import ALGORITHMS
from core.engine.cacheaside import WRITE_POLICIES
from core.engine.edgecache import EDGE_PRICE_PER_GB, ORIGIN_PRICE_PER_GB
from core.engine.kvwire import PORT as KV_PORT
from core.engine.ring import ALGORITHMS as RING_ALGORITHMS
from core.engine.sqlwire import PORT as SQL_PORT


@dataclass(frozen=True)
class Size:
    """One modelled server size for vertical scaling (the ``resize`` command)."""

    workers: int
    service_ms: float

    @property
    def max_rps(self) -> float:
        return self.workers * 1000.0 / self.service_ms


# A web server's sizes, smallest first; the last is the largest there is: the ceiling of scaling up.
# The CPU is modelled (workers × mean service time), so the ceiling stays within what one laptop's
# real sockets can carry: the largest size serves about 400 req/s.
SIZES: dict[str, Size] = {
    "small": Size(workers=2, service_ms=25.0),  # 80 req/s
    "medium": Size(workers=4, service_ms=25.0),  # 160 req/s: stage 1's server
    "large": Size(workers=6, service_ms=20.0),  # 300 req/s
    "xlarge": Size(workers=8, service_ms=20.0),  # 400 req/s
}
LARGEST_SIZE = list(SIZES)[-1]


def sizes_list() -> list[dict[str, Any]]:
    """SIZES as the diagram reads them (Topology.to_dict), smallest first."""
    return [{"name": k, "workers": v.workers, "service_ms": v.service_ms} for k, v in SIZES.items()]


def size_of(workers: int, service_ms: float) -> str | None:
    """The size's name for this modelled CPU, or None when it is none of SIZES (a custom one)."""
    for name, size in SIZES.items():
        if size.workers == workers and size.service_ms == float(service_ms):
            return name
    return None


@dataclass(frozen=True)
class Param:
    type: type
    default: Any
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    # A reference to another node's id in the same topology (checked by the spec parser).
    ref: bool = False
    # A modelled quantity stands in for something one machine cannot have (CPU size, distance);
    # the UI labels it as modelled.
    modelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type.__name__, "default": self.default, "doc": self.doc}
        for key in ("min", "max", "choices"):
            value = getattr(self, key)
            if value is not None:
                d[key] = list(value) if key == "choices" else value
        d["modelled"] = self.modelled
        d["ref"] = self.ref
        return d


def gettext_noop(text: str) -> str:
    """Marks an English text for the project's i18n (``makemessages`` collects it by this name);
    the web side translates it for the page. The engine itself never translates."""
    return text


@dataclass(frozen=True)
class EventKind:
    """How the event log words an event: ``text`` with %(field)s from the event's fields, or,
    when the event's ``otherwise[0]`` field is empty or 0, ``otherwise[1]``."""

    text: str
    otherwise: tuple[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, **({"otherwise": list(self.otherwise)} if self.otherwise else {})}


# Events the lab itself emits, for any node (commands and faults); a kind adds its own in ``events``.
LAB_EVENTS: dict[str, EventKind] = {
    "lab_started": EventKind(gettext_noop("lab started")),
    "traffic_set": EventKind(gettext_noop("traffic for %(node)s set to %(rate)s req/s"),
                             ("node", gettext_noop("traffic set to %(rate)s req/s total"))),
    "mix_set": EventKind(
        gettext_noop("%(node)s now sends %(write_ratio)s of its requests as writes, popularity skew %(zipf_s)s"),
        ("node", gettext_noop("every client now sends %(write_ratio)s of its requests as writes,"
                              " popularity skew %(zipf_s)s"))),
    "node_killed": EventKind(gettext_noop("%(node)s killed")),
    "node_restarted": EventKind(gettext_noop("%(node)s restarted")),
    "node_slowed": EventKind(gettext_noop("%(node)s slowed down by %(ms)s ms"),
                             ("ms", gettext_noop("%(node)s back to normal speed"))),
    "node_resized": EventKind(
        gettext_noop("%(node)s resized to %(size)s (modelled CPU: %(workers)s × %(service_ms)s ms)")),
    "node_added": EventKind(gettext_noop("%(node)s added, a copy of %(like)s")),
    "node_removed": EventKind(gettext_noop("%(node)s removed (its requests in flight finished first)")),
    "partitioned": EventKind(gettext_noop("%(node)s cut off from %(peer)s: traffic between them is dropped")),
    "healed": EventKind(gettext_noop("%(node)s reconnected to %(peer)s")),
    "region_down": EventKind(gettext_noop("data centre %(region)s down: %(nodes)s killed"),
                             ("killed", gettext_noop("data centre %(region)s cut off from the rest of the world"))),
    "region_up": EventKind(gettext_noop("data centre %(region)s back")),
}


@dataclass(frozen=True)
class Field:
    """One field of a kind's command: its type and range (the command's validation), and the values
    the node's menu offers (``choices``, else ``presets``). ``labels`` words a choice for the menu
    (English, translated by the page); ``unit`` follows a number there (``ms``, ``%``)."""

    type: type
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    presets: tuple[float, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    unit: str = ""
    label: str = ""  # the menu's caption for this field's control
    # The gauge (else parameter) that holds its value now, if not its own name; "" for none: an
    # action's argument rather than a setting (what a purge removes), which the menu leaves unselected.
    current: str | None = None

    def check(self, value: Any) -> Any:
        """The value normalised, or ValueError saying what it must be."""
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"must be a number, got {value!r}")
        if self.type is int and value != int(value):
            raise ValueError(f"must be a whole number, got {value!r}")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise ValueError(f"must be between {self.min:g} and {self.max:g}")
        return self.type(value)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type.__name__, "label": self.label, "unit": self.unit,
                             "current": self.current}
        if self.choices is not None:
            d["choices"] = list(self.choices)
        if self.presets:
            d["presets"] = list(self.presets)
        if self.labels:
            d["labels"] = dict(self.labels)
        for key in ("min", "max"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d


@dataclass(frozen=True)
class Command:
    """A command a kind's nodes accept, beyond every node's (kill, restart, slow, partition, ...).

    The lab validates its fields from here and hands it to the node's ``command()``; the node's menu
    draws a button (no fields) or one control a field; ``when`` shows it only while the node's
    frame has that gauge value (a replica's promote). In the ```solution language ``word`` names
    the field a second word sets (``algorithm lb random``), ``number`` the one a bare number sets."""

    label: str
    fields: dict[str, Field] = field(default_factory=dict)
    required: tuple[str, ...] | None = None  # the fields that must be given (None: all of them)
    when: tuple[str, Any] | None = None
    word: str | None = None
    number: str | tuple[str, ...] | None = None
    # A control per field that sends just that field (the workload mix: writes, skew).
    testids: dict[str, str] = field(default_factory=dict)
    menu: bool = True  # False: the menu draws it from another declaration (a web server's sizes)

    @property
    def needed(self) -> tuple[str, ...]:
        return tuple(self.fields) if self.required is None else self.required

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, "fields": {k: f.to_dict() for k, f in self.fields.items()},
                             "required": list(self.needed)}
        if self.when is not None:
            d["when"] = list(self.when)
        if self.testids:
            d["testids"] = dict(self.testids)
        d["menu"] = self.menu
        return d


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    tier: float  # diagram column: 0 clients, 1 edge services, 2 web tier, 3 caches, 4 data
    role: str  # "client" (no listener) or "server"
    runtime: str  # dotted path of the class that runs it, imported lazily by the lab
    port: int | None = None
    proto: str | None = None
    params: dict[str, Param] = field(default_factory=dict)
    # Vertical scaling: the ``resize`` command may set this kind's workers/service_ms to one of SIZES.
    resizable: bool = False
    # Horizontal scaling: a node of this kind may be added (a copy, with its edges) and removed live.
    scalable: bool = False
    # The numeric gauges its runtime's snapshot() adds to the frame, beyond every node's request
    # statistics: what a check may read as metric(NODE.GAUGE). A gauge absent from a frame reads null.
    gauges: tuple[str, ...] = ()
    # The events its nodes (or the code that manages them) emit, beyond LAB_EVENTS.
    events: dict[str, EventKind] = field(default_factory=dict)
    # The diagram's name for its column when the tier is none of the usual ones (English, translated).
    tier_title: str = ""
    # What a node of this kind tells the diagram about the whole topology (``data_tier``: there is
    # data to read and write, so clients show their workload mix; ``sharded``: databases are shards;
    # ``sessions``: where sessions live is the lesson, so the page counts logouts).
    context: tuple[str, ...] = ()
    # "top": the diagram draws it in a lane above the request path (a side service the web tier or
    # clients consult: DNS, a cache), so the path's lines stay straight and never cross its box.
    lane: str = "main"
    # The commands its nodes accept (Node.command), beyond the lab's own.
    commands: dict[str, Command] = field(default_factory=dict)
    # The lines its box shows under the title, beyond every node's rate/errors/latency lines: English
    # templates (translated by the page) whose %(gauge)s is a live value from the frame and
    # %(param.NAME)s a parameter. Kinds drawn by hand in diagram.js (the first stages') leave it empty.
    lines: tuple[str, ...] = ()
    # A drawing of its own in the box, static/js/lab/kinds/<drawing>.js (e.g. the hash ring).
    drawing: str | None = None
    # Frame tables its nodes add (metric(TABLE.KEY) in checks): {table: its keys}.
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)


# A cache's eviction policies (Redis's maxmemory-policy), the default first.
EVICTION_POLICIES = ("allkeys-lru", "allkeys-lfu", "volatile-ttl", "allkeys-random", "noeviction")

KINDS: dict[str, Kind] = {
    "client": Kind(
        name="client",
        title="Client",
        tier=0,
        role="client",
        runtime="core.engine.nodes.client:ClientNode",
        # failover_s: how long its users' last outage lasted (first failed to first good request
        # after it; core.engine.telemetry.Outages), null before one ended. static_rps, static_p95_ms:
        # its asset fetches (a page's images, CSS, JS), from the telemetry.
        gauges=("rate", "in_flight", "dropped", "write_ratio", "zipf_s", "failover_s", "static_rps",
                "static_p95_ms"),
        # Also lab-wide (no node: every client). Its menu controls each send one field; shown once
        # there is data to read and write.
        commands={"mix": Command(gettext_noop("Workload"), number=("write_ratio", "zipf_s"), required=(),
                                 when=("data_tier", True), testids={"write_ratio": "writes", "zipf_s": "zipf"}, fields={
            "write_ratio": Field(float, min=0, max=1, presets=(0, 0.05, 0.1, 0.2, 0.5), unit="%",
                                 label=gettext_noop("Writes")),
            "zipf_s": Field(float, min=0, max=3, presets=(0, 0.8, 1, 1.2, 1.5, 2, 3),
                            label=gettext_noop("Popularity skew (Zipf s)"),
                            labels={"0": gettext_noop("none (uniform)")}),
        })},
        events={
            "stale_read": EventKind(gettext_noop(
                "%(node)s read stale data for user %(user)s (position %(read_lsn)s, its own write was %(write_lsn)s)")),
        },
        params={
            "flavor": Param(
                str,
                "web",
                "web browser (asks for HTML) or mobile app (asks for JSON)",
                choices=("web", "mobile"),
            ),
            "rate": Param(float, 2.0, "requests per second this client sends (Poisson arrivals)", min=0, max=2000),
            "timeout_s": Param(float, 3.0, "give up on a request after this many seconds", min=0.1, max=30),
            "write_ratio": Param(float, 0.0, "fraction of requests that write a post; the rest read", min=0, max=1),
            "zipf_s": Param(
                float, 1.0, "how skewed user popularity is (Zipf exponent; 0: every user alike)", min=0, max=3
            ),
            "users": Param(
                int, 0, "users the requests are spread over (0: as many as the SQL database has)", min=0, max=50000
            ),
            "store": Param(str, "sql", "which data store the web server should read and write", choices=("sql", "kv")),
        },
    ),
    "dns": Kind(
        name="dns",
        title="DNS server",
        tier=1,
        role="server",
        runtime="core.engine.nodes.dns:DnsNode",
        lane="top",
        # healthy: how many of the site name's targets pass the health checks (with checks on).
        gauges=("slow_ms", "healthy"),
        port=8053,
        proto="udp",
        events={
            "cdn_set": EventKind(gettext_noop("%(name)s now points at the CDN (CNAME %(cdn)s)"),
                                 ("on", gettext_noop("%(name)s now points at the origin again"))),
            "dns_target_down": EventKind(gettext_noop("%(node)s stopped answering with %(target)s (%(reason)s)")),
            "dns_target_up": EventKind(gettext_noop("%(node)s answers with %(target)s again (%(reason)s)")),
        },
        commands={
            "cdn": Command(gettext_noop("Static assets"), word="value", when=("static", True), fields={
                "value": Field(str, choices=("off", "on"), current="cdn", label=gettext_noop("Static assets"),
                               labels={"off": gettext_noop("from the origin"),
                                       "on": gettext_noop("from the CDN's edges (CNAME)")})}),
        },
        params={
            "ttl": Param(int, 5, "seconds a resolver may cache the answer", min=0, max=3600),
            "target": Param(str, "web", "the node whose address the site's name resolves to", ref=True),
            "cdn": Param(str, "off", "on: the static assets' name is a CNAME to the CDN's name (its edges);"
                         " off: it points at the origin", choices=("off", "on")),
            "geo": Param(str, "off", "off: every target, in rotating order; nearest: the one nearest the"
                         " client's region that passes its health checks (GeoDNS)", choices=("off", "nearest")),
            "health_interval_s": Param(float, 0.0, "seconds between health checks of each target (GET /health);"
                                       " 0: none, DNS knows nothing of health", min=0, max=60),
            "fall": Param(int, 2, "failed health checks in a row that take a target out of the answers",
                          min=1, max=10),
            "rise": Param(int, 2, "good health checks in a row that put it back", min=1, max=10),
        },
    ),
    "lb": Kind(
        name="lb",
        title="Load balancer",
        tier=1,
        role="server",
        runtime="core.engine.nodes.lb:LbNode",
        # `conns` and `backends` are per-backend maps, not numbers; `in_flight` is their total.
        gauges=("in_flight", "slow_ms"),
        events={
            "algorithm_set": EventKind(gettext_noop("%(node)s now balances by %(value)s")),
            "backend_down": EventKind(gettext_noop("%(node)s took %(backend)s out of rotation (%(reason)s)")),
            "backend_up": EventKind(gettext_noop("%(node)s put %(backend)s back in rotation")),
        },
        commands={
            "algorithm": Command(gettext_noop("Algorithm"), word="value", fields={
                "value": Field(str, choices=ALGORITHMS, label=gettext_noop("Algorithm"), current="algorithm", labels={
                    "round_robin": gettext_noop("round robin"),
                    "weighted_round_robin": gettext_noop("weighted round robin"),
                    "least_connections": gettext_noop("least connections"),
                    "random": gettext_noop("random"),
                    "power_of_two": gettext_noop("power of two choices"),
                    "ip_hash": gettext_noop("IP hash (sticky)"),
                    "sticky": gettext_noop("sticky cookie"),
                })}),
        },
        port=8080,  # the site's port: clients call http://<domain>:8080/ whoever answers
        proto="tcp",
        params={
            "algorithm": Param(
                str, "round_robin", "how the next request's backend is chosen", choices=ALGORITHMS
            ),
            "health_interval_s": Param(
                float, 1.0, "seconds between active health checks (GET /health) of each backend", min=0.1, max=60
            ),
            "rise": Param(int, 2, "consecutive passed checks that bring a down backend back", min=1, max=10),
            "fall": Param(
                int, 2, "consecutive failures (checks or refused connections) that take a backend out", min=1, max=10
            ),
            "retries": Param(
                int, 1, "times an idempotent GET is retried on another backend after a connection failure",
                min=0, max=5,
            ),
        },
    ),
    "web": Kind(
        name="web",
        title="Web server",
        tier=2,
        role="server",
        runtime="core.engine.nodes.web:WebNode",
        port=8080,
        proto="tcp",
        resizable=True,
        scalable=True,
        # `workers` and `service_ms`: the current modelled CPU (a resize changes them; `size` is its name).
        # coalesced: cache misses that waited for another request's database load (with a cache tier).
        # static_bytes: asset bytes it served (to edges and clients); asset_version: the logo's (assets on).
        # sessions: log-in sessions it keeps in its own memory (core.engine.sessiontier).
        gauges=("in_flight", "queued", "util", "slow_ms", "workers", "service_ms", "coalesced", "static_bytes",
                "asset_version", "sessions"),
        # Drawn by the menu from the topology's ``sizes`` (each size's modelled CPU), not as a list.
        commands={"resize": Command(gettext_noop("Size (modelled)"), word="size", menu=False,
                                    fields={"size": Field(str, choices=(*SIZES, "up", "down"))}),
                  "version": Command(gettext_noop("Deploy a new logo (versioned URL)"), when=("assets", "on"))},
        events={
            "asset_versioned": EventKind(gettext_noop("%(node)s deployed %(asset)s: its pages now reference the"
                                                      " new name")),
        },
        params={
            "workers": Param(int, 4, "requests served at once (modelled CPU cores)", min=1, max=64, modelled=True),
            "service_ms": Param(
                float,
                25.0,
                "mean CPU time per request (modelled, exponential)",
                min=0,
                max=5000,
                modelled=True,
            ),
            "queue_limit": Param(int, 64, "requests that may wait for a worker before 503", min=0, max=10000),
            "assets": Param(str, "off", "on: its pages reference static assets (images, CSS, JS) on the static"
                            " name, and it serves them under /static/", choices=("off", "on")),
            "static_max_age_s": Param(float, 300.0, "the Cache-Control max-age of its static assets: how long an"
                                      " edge may keep them", min=0, max=86400),
        },
    ),
    "cdn": Kind(
        name="cdn",
        title=gettext_noop("CDN edge"),
        tier=1,
        role="server",
        runtime="core.engine.nodes.cdn:CdnNode",
        port=8080,  # the site's port: an asset's URL is http://<cdn name>:8080/static/...
        proto="tcp",
        # hits, misses, evictions, bytes_out: since the lab started (a kill empties the cache, not
        # the counts); hit_ratio over the last ~10 s (null without lookups). Sizes in bytes and MB.
        gauges=("hit_ratio", "hits", "misses", "evictions", "bytes_out", "objects", "used_mb", "max_mb", "out_mb",
                "fetched_mb", "cost_usd", "slow_ms"),
        # The whole CDN and the origin's static bytes, priced (modelled): the first edge adds it.
        tables={"cdn": ("hit_ratio", "edge_bytes", "origin_bytes", "edge_cost_usd", "origin_cost_usd",
                        "cost_usd", "usd_per_hour")},
        lines=(
            gettext_noop("hit ratio %(hit_ratio)s · %(hits)s hits · %(misses)s misses"),
            gettext_noop("%(objects)s objects · %(used_mb)s of %(max_mb)s MB · %(evictions)s evicted"),
            gettext_noop("served %(out_mb)s MB · modelled cost $%(cost_usd)s"),
        ),
        events={
            "purged": EventKind(gettext_noop("%(node)s purged %(what)s from every edge (%(objects)s objects"
                                             " removed)")),
            "edge_memory_set": EventKind(gettext_noop("%(node)s may now keep %(mb)s MB of objects")),
        },
        commands={
            "purge": Command(gettext_noop("Purge"), word="what", fields={
                "what": Field(str, choices=PURGE_TARGETS, label=gettext_noop("Purge"), current="",
                              labels={"all": gettext_noop("everything"), "logo": gettext_noop("the logo"),
                                      "hero": gettext_noop("the hero image"), "app-css": gettext_noop("the CSS"),
                                      "app-js": gettext_noop("the JavaScript")})}),
            "memory": Command(gettext_noop("Memory"), number="mb", fields={
                # 0.25 MB holds the logo, the hero image and the CSS but not the script too: evictions.
                "mb": Field(float, min=0.05, max=1024, presets=(0.25, 1, 16, 64), unit="MB", current="max_mb",
                            label=gettext_noop("Memory (MB)"))}),
        },
        params={
            "origin": Param(str, "web", "the node a miss fetches the object from", ref=True),
            "max_mb": Param(float, 16.0, "bytes of objects the edge may keep; past it the least recently used"
                            " go", min=0.05, max=1024),
            "default_ttl_s": Param(float, 60.0, "how long an object is kept when the origin's Cache-Control says"
                                   " nothing", min=0, max=86400),
            "price_per_gb": Param(float, EDGE_PRICE_PER_GB, "US dollars per GB the edge sends (modelled CDN"
                                  " price)", min=0, max=10, modelled=True),
            "origin_price_per_gb": Param(float, ORIGIN_PRICE_PER_GB, "US dollars per GB the origin sends"
                                         " (modelled egress price)", min=0, max=10, modelled=True),
        },
    ),
    "sqldb": Kind(
        name="sqldb",
        title="Database (SQL)",
        tier=4,
        role="server",
        runtime="core.engine.nodes.sqldb:SqlDbNode",
        context=("data_tier",),
        port=SQL_PORT,
        proto="tcp",
        scalable=True,  # a copy is a replica of its cluster's primary
        # lag, lag_ms, received and delay_ms are in a frame only for a replica; lost_writes only once > 0.
        # rows: the application's rows it holds; share: a shard's fraction of its router's rows.
        gauges=("in_flight", "queued", "util", "queries", "slow_ms", "lsn", "received", "lag", "lag_ms",
                "delay_ms", "lost_writes", "rows", "share"),
        # Emitted by core.engine.replication, which manages the SQL databases' roles.
        events={
            "primary_lost": EventKind(
                gettext_noop("%(node)s lost: no replica can reach the primary (failover after %(after_s)s s)"),
                ("after_s", gettext_noop("%(node)s lost: no replica can reach the primary"
                                         " (automatic failover is off)"))),
            "promoted": EventKind(gettext_noop("%(node)s promoted to primary in place of %(old)s"
                                               " (%(lost)s writes lost)")),
            "failover_failed": EventKind(gettext_noop("failover of %(node)s failed: %(reason)s")),
            "delay_set": EventKind(gettext_noop("%(node)s now applies changes %(ms)s ms after the primary"),
                                   ("ms", gettext_noop("%(node)s applies changes as soon as they arrive"))),
        },
        commands={
            "promote": Command(gettext_noop("Promote to primary"), when=("role", "replica")),
            "delay": Command(gettext_noop("Replication delay…"), number="ms", when=("role", "replica"), fields={
                "ms": Field(float, min=0, max=10000, presets=(0, 100, 500, 2000, 5000), unit="ms", current="delay_ms",
                            label=gettext_noop("Replication delay…"), labels={"0": gettext_noop("no delay")})}),
        },
        params={
            "workers": Param(
                int, 8, "queries served at once (modelled connection slots)", min=1, max=256, modelled=True
            ),
            "service_ms": Param(
                float,
                3.0,
                "mean modelled time per query, added to the real SQLite time",
                min=0,
                max=5000,
                modelled=True,
            ),
            "queue_limit": Param(int, 128, "queries that may wait for a slot before 'overloaded'", min=0, max=10000),
            "users": Param(int, 2000, "users seeded into the photo-sharing tables", min=10, max=50000),
            "posts": Param(int, 20000, "posts seeded, spread over the users", min=0, max=500000),
            "replica_of": Param(
                str, "", "the primary this database replicates (empty: it is a primary)", ref=True
            ),
            "delay_ms": Param(
                float, 0.0, "a replica applies each change this long after the primary wrote it (modelled"
                " distance)", min=0, max=10000, modelled=True,
            ),
            "data": Param(
                str, "seeded", "seeded: starts with the photo-sharing data (a shard: its own users' rows);"
                " empty: only the tables (a shard added live, filled by its router)", choices=("seeded", "empty"),
            ),
            "failover_after_s": Param(
                float, 3.0, "a primary every replica has lost for this long is replaced by the most advanced"
                " replica (0: only by the promote command)", min=0, max=600,
            ),
        },
    ),
    "cache": Kind(
        name="cache",
        title=gettext_noop("Cache (Redis)"),
        tier=3,
        role="server",
        runtime="core.engine.nodes.cache:CacheNode",
        lane="top",
        port=KV_PORT,  # Redis's port, on the cache's own address
        proto="tcp",
        scalable=True,  # added and removed live, like a web server
        # hit_ratio: over the last ~10 s (null without lookups); hits, misses, evictions: since the
        # redis-server started (a restart starts them, and the cache, from zero).
        gauges=("hit_ratio", "hits", "misses", "evictions", "keys", "used_memory_mb", "maxmemory_mb", "ttl_s",
                "slow_ms"),
        lines=(
            gettext_noop("hit ratio %(hit_ratio)s · %(hits)s hits · %(misses)s misses"),
            gettext_noop("%(keys)s keys · %(used_memory_mb)s of %(maxmemory_mb)s MB · %(evictions)s evicted"),
            gettext_noop("TTL %(ttl_s)s s · %(policy)s · writes: %(write_policy)s"),
        ),
        events={
            "cache_memory_set": EventKind(gettext_noop("%(node)s may now hold %(mb)s MB (eviction policy"
                                                       " %(policy)s)")),
            "cache_policy_set": EventKind(gettext_noop("%(node)s's eviction policy is now %(value)s")),
            "cache_ttl_set": EventKind(gettext_noop("the web tier now keeps a page in %(node)s for %(s)s s"),
                                       ("s", gettext_noop("the web tier no longer keeps pages in %(node)s"))),
            "cache_writes_set": EventKind(gettext_noop("%(node)s's write policy is now %(value)s")),
            "cache_coalesce_set": EventKind(
                gettext_noop("concurrent misses on one key in %(node)s now share one database load"),
                ("on", gettext_noop("every miss in %(node)s now loads from the database on its own"))),
        },
        commands={
            "memory": Command(gettext_noop("Memory"), number="mb", fields={
                # An empty redis-server already takes about 0.9 MB: 1.1 leaves room for a couple of hundred pages.
                "mb": Field(float, min=1, max=1024, presets=(1.1, 2, 4, 16, 64), unit="MB", current="maxmemory_mb",
                            label=gettext_noop("Memory (MB)"))}),
            "policy": Command(gettext_noop("Eviction"), word="value", fields={
                "value": Field(str, choices=EVICTION_POLICIES, current="policy", label=gettext_noop("Eviction"),
                               labels={"allkeys-lru": gettext_noop("least recently used"),
                                       "allkeys-lfu": gettext_noop("least frequently used"),
                                       "volatile-ttl": gettext_noop("nearest expiry first"),
                                       "allkeys-random": gettext_noop("random"),
                                       "noeviction": gettext_noop("none: refuse writes when full")})}),
            "ttl": Command(gettext_noop("TTL"), number="s", fields={
                "s": Field(float, min=0, max=3600, presets=(0, 1, 5, 30, 300), unit="s", current="ttl_s",
                           label=gettext_noop("TTL (s)"), labels={"0": gettext_noop("0: do not cache")})}),
            "writes": Command(gettext_noop("On a write"), word="value", testids={"value": "write-policy"}, fields={
                "value": Field(str, choices=WRITE_POLICIES, current="write_policy", label=gettext_noop("On a write"),
                               labels={"none": gettext_noop("nothing (stale until the TTL)"),
                                       "invalidate": gettext_noop("invalidate (delete the copy)"),
                                       "update": gettext_noop("update (write the new copy)")})}),
            "coalesce": Command(gettext_noop("Coalesce misses"), word="value", fields={
                "value": Field(str, choices=("off", "on"), current="coalesce", label=gettext_noop("Coalesce misses"),
                               labels={"off": gettext_noop("off: every miss loads"),
                                       "on": gettext_noop("on: one load a key")})}),
        },
        params={
            "maxmemory_mb": Param(float, 16.0, "memory the cache may use; past it, it evicts (or refuses writes)",
                                  min=1, max=1024),
            "policy": Param(str, "allkeys-lru", "which keys make room when the memory is full (Redis's"
                            " maxmemory-policy)", choices=EVICTION_POLICIES),
            "ttl_s": Param(float, 30.0, "seconds the web tier keeps a page in the cache (0: do not cache)", min=0,
                           max=3600),
            "write_policy": Param(str, "invalidate", "what a write does to the cached copy: none (stale until the"
                                  " TTL), invalidate (delete it), update (write the new one)", choices=WRITE_POLICIES),
            "coalesce": Param(str, "off", "on: concurrent misses on one key share one database load (single"
                              " flight)", choices=("off", "on")),
        },
    ),
    "router": Kind(
        name="router",
        title=gettext_noop("Shard router"),
        tier=3.5,  # between the web tier and the shards it routes to
        tier_title=gettext_noop("shard router"),
        role="server",
        runtime="core.engine.nodes.router:RouterNode",
        context=("sharded",),
        port=SQL_PORT,  # it speaks the SQL node's protocol: the web tier sees one database
        proto="tcp",
        gauges=("vnodes", "shards", "queries", "scattered", "precomputed", "fanned_out", "moving", "moved_rows",
                "moved_fraction", "rows", "slow_ms"),
        tables={"sharding": ("moved_rows", "moved_fraction", "rows", "algorithm", "moving", "shards", "vnodes")},
        drawing="ring",
        lines=(
            gettext_noop("%(algorithm)s · %(shards)s shards · %(rows)s rows"),
            gettext_noop("moved %(moved_rows)s rows (%(moved_fraction)s) · %(moving)s to go"),
            gettext_noop("feeds %(feed)s: %(scattered)s gathered, %(precomputed)s read"),
        ),
        events={
            "placement_set": EventKind(gettext_noop("%(node)s now places users by %(algorithm)s hashing"
                                                    " (%(vnodes)s points a shard on the ring)")),
            "resharding": EventKind(gettext_noop("%(node)s moves %(users)s users to their new shards"
                                                 " (%(algorithm)s, %(shards)s shards)")),
            "resharded": EventKind(gettext_noop("%(node)s moved %(rows)s rows (%(fraction)s of all) in %(s)s s")),
            "resharding_failed": EventKind(gettext_noop("%(node)s stopped moving rows: %(reason)s")),
            "feed_set": EventKind(gettext_noop("%(node)s now reads each feed precomputed, from the reader's shard"),
                                  ("precomputed", gettext_noop("%(node)s now gathers each feed from every shard"))),
        },
        commands={
            "algorithm": Command(gettext_noop("Placement"), word="value", fields={
                "value": Field(str, choices=RING_ALGORITHMS, label=gettext_noop("Placement"), current="algorithm",
                               labels={"modulo": gettext_noop("modulo (hash mod N)"),
                                       "consistent": gettext_noop("consistent hashing (ring)")})}),
            "feed": Command(gettext_noop("Feeds"), word="value", fields={
                "value": Field(str, choices=("scatter", "precomputed"), current="feed", label=gettext_noop("Feeds"),
                               labels={"scatter": gettext_noop("gathered from every shard"),
                                       "precomputed": gettext_noop("precomputed, with the reader")})}),
            "vnodes": Command(gettext_noop("Points a shard"), number="n", when=("algorithm", "consistent"), fields={
                "n": Field(int, min=1, max=1000, presets=(1, 8, 64, 256), current="vnodes",
                           label=gettext_noop("Points a shard (virtual nodes)"))}),
        },
        params={
            "algorithm": Param(str, "modulo", "how a user's shard is found: modulo (hash mod N) or consistent"
                               " (a hash ring)", choices=RING_ALGORITHMS),
            "vnodes": Param(int, 64, "points a shard has on the ring (virtual nodes; consistent only)", min=1,
                            max=1000),
            "feed": Param(str, "scatter", "how a feed is read: scatter (gathered from every shard) or precomputed"
                          " (the reader's denormalised copy, on their shard)", choices=("scatter", "precomputed")),
        },
    ),
    "kvdb": Kind(
        name="kvdb",
        title="Database (KV)",  # key-value: short enough for the diagram's box
        tier=4,
        role="server",
        runtime="core.engine.nodes.kvdb:KvDbNode",
        context=("data_tier",),
        port=KV_PORT,
        proto="tcp",
        gauges=("keys", "ops", "used_memory_mb", "slow_ms"),
        params={
            "users": Param(int, 2000, "users seeded (the same data as the SQL database)", min=10, max=50000),
            "posts": Param(int, 20000, "posts seeded, spread over the users", min=0, max=500000),
            "appendonly": Param(
                str,
                "everysec",
                "everysec: every write goes to an append-only file, so a crash keeps the data;"
                " no: memory only, a restart starts empty (and is seeded again)",
                choices=("everysec", "no"),
            ),
        },
    ),
    "sessions": Kind(
        name="sessions",
        title=gettext_noop("Session store (Redis)"),
        tier=3,
        role="server",
        runtime="core.engine.nodes.sessions:SessionStoreNode",
        context=("sessions",),
        lane="top",
        port=KV_PORT,  # Redis's port, on the store's own address
        proto="tcp",
        # sessions: the sessions it holds; shared: 1 while the web tier keeps its sessions here.
        gauges=("sessions", "shared", "slow_ms"),
        lines=(gettext_noop("%(sessions)s sessions · the web tier keeps them: %(mode)s"),),
        events={
            "sessions_set": EventKind(
                gettext_noop("the web tier now keeps its sessions in %(node)s (%(moved)s moved there from the"
                             " servers' memory)"),
                ("shared", gettext_noop("the web servers now keep their sessions in their own memory"))),
        },
        commands={
            "sessions": Command(gettext_noop("Sessions"), word="value", fields={
                "value": Field(str, choices=("memory", "shared"), current="mode", label=gettext_noop("Sessions"),
                               labels={"memory": gettext_noop("in each server's memory"),
                                       "shared": gettext_noop("in this shared store")})}),
        },
        params={
            "sessions": Param(str, "memory", "where the web servers with an edge to it keep their sessions: memory"
                              " (each its own) or shared (here)", choices=("memory", "shared")),
        },
    ),
    "autoscaler": Kind(
        name="autoscaler",
        title=gettext_noop("Autoscaler"),
        tier=1,
        role="client",  # it listens on nothing: it starts after the servers and stops before them
        runtime="core.engine.nodes.autoscaler:AutoscalerNode",
        lane="top",
        # servers: web servers behind its balancer; util: their mean utilisation over the last second.
        gauges=("servers", "target_util", "util", "min_servers", "max_servers", "cooldown_s", "cooldown_left_s",
                "enabled"),
        lines=(
            gettext_noop("%(state)s · %(servers)s servers (min %(min_servers)s, max %(max_servers)s)"),
            gettext_noop("utilisation %(util)s · target %(target_util)s"),
            gettext_noop("cool-down %(cooldown_s)s s · %(cooldown_left_s)s s left"),
        ),
        events={
            "scaled_out": EventKind(gettext_noop("%(node)s scaled out to %(servers)s servers, adding %(nodes)s"
                                                 " (utilisation %(util)s, target %(target)s)")),
            "scaled_in": EventKind(gettext_noop("%(node)s scaled in to %(servers)s servers, draining and removing"
                                                " %(nodes)s (utilisation %(util)s, target %(target)s)")),
            "autoscale_set": EventKind(gettext_noop("%(node)s now adds and removes servers as the load changes"),
                                       ("on", gettext_noop("%(node)s is off: the servers stay as they are"))),
            "autoscale_policy_set": EventKind(gettext_noop(
                "%(node)s now keeps utilisation near %(target)s with %(min)s to %(max)s servers, cool-down"
                " %(cooldown_s)s s")),
        },
        commands={
            "autoscale": Command(gettext_noop("Autoscaling"), word="value", fields={
                "value": Field(str, choices=("off", "on"), current="state", label=gettext_noop("Autoscaling"),
                               labels={"off": gettext_noop("off"), "on": gettext_noop("on")})}),
            "target": Command(gettext_noop("Target utilisation"), number="util", fields={
                "util": Field(float, min=0.1, max=1, presets=(0.3, 0.5, 0.7, 0.9), current="target_util",
                              label=gettext_noop("Target utilisation"))}),
            "limits": Command(gettext_noop("Servers"), number=("min", "max"), required=(),
                              testids={"min": "min-servers", "max": "max-servers"}, fields={
                "min": Field(int, min=1, max=16, presets=(1, 2, 3, 4), current="min_servers",
                             label=gettext_noop("Fewest servers")),
                "max": Field(int, min=1, max=16, presets=(2, 4, 6, 8, 12, 16), current="max_servers",
                             label=gettext_noop("Most servers")),
            }),
            "cooldown": Command(gettext_noop("Cool-down"), number="s", fields={
                "s": Field(float, min=0, max=600, presets=(0, 5, 10, 30, 60), unit="s", current="cooldown_s",
                           label=gettext_noop("Cool-down (s)"))}),
        },
        params={
            "enabled": Param(str, "off", "on: it adds and removes the web servers behind its balancer",
                             choices=("off", "on")),
            "target_util": Param(float, 0.5, "the mean utilisation it keeps the web servers near", min=0.1, max=1),
            "min": Param(int, 2, "fewest web servers it leaves running", min=1, max=16),
            "max": Param(int, 6, "most web servers it starts", min=1, max=16),
            "cooldown_s": Param(float, 10.0, "seconds it waits after a change before the next", min=0, max=600),
        },
    ),
}


# Every command a kind declares, by action: an action's fields must mean the same in every kind
# that declares it (they may differ in the values they allow: each kind validates its own).
KIND_COMMANDS: dict[str, dict[str, Command]] = {}
for _kind in KINDS.values():
    for _action, _command in _kind.commands.items():
        KIND_COMMANDS.setdefault(_action, {})[_kind.name] = _command

# Every kind of event the engine emits (Telemetry.event), with its wording: lesson checks may only
# name these, and the page's event log words them from here (translated by the web side).
EVENTS: dict[str, EventKind] = {
    **LAB_EVENTS, **{name: event for kind in KINDS.values() for name, event in kind.events.items()}
}
