"""The topology spec: parse and validate what a lesson declares (pure, no I/O).

Errors carry a path into the document (``("topology", "nodes", 2, "params", "workers")``) so the
lesson loader can point at the file line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from core.engine.kinds import KINDS, Kind, sizes_list

Path = tuple[str | int, ...]
NODE_ID = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
FIRST_HOST = 10
NUMBERED = re.compile(r"^(.*?)-?(\d+)$")  # web-3 -> ("web", "3")
REGION_ID = re.compile(r"^[a-z][a-z0-9]{0,11}$")
# Regions: each is a block of host octets in the lab's 127.A.B network, so a source address says
# where its sender is, as on the internet (region i: 50(i+1) .. 50(i+1)+49). A node in no region
# (a DNS server: anycast, near everyone) takes an octet outside every block.
REGION_BLOCK = 50
MAX_REGIONS = 4
MAX_RTT_MS = 2000.0
OUTSIDE_REGIONS = (
    *range(FIRST_HOST, REGION_BLOCK), *range(REGION_BLOCK * (MAX_REGIONS + 1), 255), *range(1, FIRST_HOST)
)


def region_block(index: int) -> range:
    """The host octets of the index-th region (0-based)."""
    first = REGION_BLOCK * (index + 1)
    return range(first, first + REGION_BLOCK)


def rtt_key(a: str, b: str) -> str:
    """The latency matrix's key for a pair of regions, in either order: ``eu-us``."""
    return "-".join(sorted((a, b)))


@dataclass(frozen=True)
class FieldError:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{format_path(self.path)}: {self.reason}"


class SpecError(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(frozen=True)
class NodeSpec:
    id: str
    kind: str
    host: int
    params: dict[str, Any]
    region: str = ""  # one of the topology's regions, or "" (none: no modelled distance to anyone)

    @property
    def kind_info(self) -> Kind:
        return KINDS[self.kind]


@dataclass(frozen=True)
class Topology:
    domain: str
    nodes: tuple[NodeSpec, ...]
    edges: tuple[tuple[str, str], ...]
    # Region id -> its title ("eu" -> "Europe"), in declaration order (which fixes each one's block).
    regions: dict[str, str] = field(default_factory=dict)
    # The modelled round trip between two regions, by rtt_key: what one machine cannot have.
    latency_ms: dict[str, float] = field(default_factory=dict)

    def rtt_ms(self, a: str, b: str) -> float:
        """The modelled round trip between regions ``a`` and ``b`` (0 within one, or for no region)."""
        if not a or not b or a == b:
            return 0.0
        return self.latency_ms.get(rtt_key(a, b), 0.0)

    def hosts_of(self, region: str) -> range | tuple[int, ...]:
        """The host octets a node of ``region`` may take ("": those outside every region's block)."""
        if not region:
            return OUTSIDE_REGIONS
        return region_block(list(self.regions).index(region))

    def node(self, node_id: str) -> NodeSpec:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def peers(self, node_id: str) -> list[str]:
        """Ids this node has an edge to (the nodes it calls)."""
        return [b for a, b in self.edges if a == node_id]

    def with_clone(self, like: str, **params: Any) -> tuple[Topology, NodeSpec]:
        """A new topology with a copy of node ``like`` (kind, params but those given, every edge
        in both directions) under the next free id and host octet; KeyError if ``like`` does not
        exist, ValueError if no host octet is left."""
        base = self.node(like)
        ids = [n.id for n in self.nodes]
        spec = replace(
            base, id=next_node_id(ids, like), host=self._free_host(base), params={**base.params, **params}
        )
        edges = [*self.edges]
        edges += [(a, spec.id) for a, b in self.edges if b == like]
        edges += [(spec.id, b) for a, b in self.edges if a == like]
        return replace(self, nodes=(*self.nodes, spec), edges=tuple(edges)), spec

    def without(self, node_id: str) -> Topology:
        """A new topology without the node and every edge that touches it."""
        self.node(node_id)  # KeyError if unknown
        return replace(
            self,
            nodes=tuple(n for n in self.nodes if n.id != node_id),
            edges=tuple(e for e in self.edges if node_id not in e),
        )

    def _free_host(self, base: NodeSpec) -> int:
        used = {n.host for n in self.nodes}
        after = base.host
        # Next to its kin first (web-1 on .21 gets .24 after .22 and .23), then anywhere; with
        # regions, only inside its region's block, so the copy's address says where it is.
        hosts = (*range(after + 1, 255), *range(FIRST_HOST, after))
        if self.regions:
            allowed = set(self.hosts_of(base.region))
            hosts = tuple(h for h in hosts if h in allowed)
        for host in hosts:
            if host not in used:
                return host
        where = f" for region {base.region}" if base.region else ""
        raise ValueError(f"no free address left in this lab's network{where}")

    def to_dict(self) -> dict[str, Any]:
        """Normalised form, defaults filled in: what the engine receives and the diagram draws."""
        regions = (
            {"regions": dict(self.regions), "latency_ms": dict(self.latency_ms),
             # Derived: each region's first and last host octet (the diagram shows the block).
             "region_hosts": {r: [self.hosts_of(r)[0], self.hosts_of(r)[-1]] for r in self.regions}}
            if self.regions else {}
        )
        return {
            "domain": self.domain,
            **regions,
            "nodes": [
                {
                    "id": n.id,
                    "kind": n.kind,
                    "host": n.host,
                    **({"region": n.region} if n.region else {}),
                    "params": dict(n.params),
                    "title": n.kind_info.title,
                    "tier": n.kind_info.tier,
                    "role": n.kind_info.role,
                    "port": n.kind_info.port,
                    "proto": n.kind_info.proto,
                    "modelled": sorted(k for k, p in n.kind_info.params.items() if p.modelled),
                    "scalable": n.kind_info.scalable,
                    # What its menu offers and its box shows, as the kind declares them (English:
                    # the page translates them, visualizer/texts.py).
                    "commands": {a: c.to_dict() for a, c in n.kind_info.commands.items()},
                    "lines": list(n.kind_info.lines),
                    "lane": n.kind_info.lane,
                    "context": list(n.kind_info.context),
                    **({"tier_title": n.kind_info.tier_title} if n.kind_info.tier_title else {}),
                    **({"drawing": n.kind_info.drawing} if n.kind_info.drawing else {}),
                    **({"sizes": sizes_list()} if n.kind_info.resizable else {}),
                }
                for n in self.nodes
            ],
            "edges": [list(e) for e in self.edges],
        }


def next_node_id(ids: list[str], like: str) -> str:
    """The id a copy of ``like`` gets: same prefix, one more than the highest number in use
    (``web-1`` among web-1..3 gives ``web-4``; an unnumbered ``db`` gives ``db-2``)."""
    m = NUMBERED.match(like)
    prefix = m.group(1) if m and m.group(1) else like
    highest = 1
    for other in ids:
        mo = NUMBERED.match(other)
        if other == prefix:
            continue
        if mo and mo.group(1) == prefix:
            highest = max(highest, int(mo.group(2)))
    return f"{prefix}-{highest + 1}"


def parse_topology(data: Any, *, path: Path = ("topology",)) -> Topology:
    """Validate a topology document and return it normalised, or raise SpecError with every error."""
    errors: list[FieldError] = []

    def err(p: Path, reason: str) -> None:
        errors.append(FieldError(p, reason))

    if not isinstance(data, dict):
        raise SpecError([FieldError(path, "must be a mapping with 'nodes' and 'edges'")])
    for key in data:
        if key not in ("domain", "regions", "latency_ms", "nodes", "edges"):
            err((*path, str(key)), "unknown field (expected domain, regions, latency_ms, nodes, edges)")
    regions, latency = _parse_regions(data, path, err)
    blocks = {r: list(region_block(i)) for i, r in enumerate(regions)}
    blocks[""] = list(OUTSIDE_REGIONS) if regions else list(range(FIRST_HOST, 255))

    domain = data.get("domain", "www.scalelab.test")
    if not isinstance(domain, str) or not DOMAIN.match(domain):
        err((*path, "domain"), f"not a valid domain name: {domain!r}")

    raw_nodes = data.get("nodes")
    nodes: list[NodeSpec] = []
    if not isinstance(raw_nodes, list) or not raw_nodes:
        err((*path, "nodes"), "must be a non-empty list of nodes")
        raw_nodes = []
    seen_ids: set[str] = set()
    seen_hosts: dict[int, str] = {}
    refs: list[tuple[Path, str]] = []
    for i, raw in enumerate(raw_nodes):
        npath = (*path, "nodes", i)
        if not isinstance(raw, dict):
            err(npath, "must be a mapping with id and kind")
            continue
        for key in raw:
            if key not in ("id", "kind", "host", "params", "region"):
                err((*npath, str(key)), "unknown field (expected id, kind, host, region, params)")
        region = raw.get("region", "")
        if region != "" and region not in regions:
            known = ", ".join(regions) if regions else "none: declare them under topology.regions"
            err((*npath, "region"), f"unknown region {region!r} (known: {known})")
            region = ""
        node_id = raw.get("id")
        if not isinstance(node_id, str) or not NODE_ID.match(node_id):
            err((*npath, "id"), f"must be lower-case letters, digits and '-', got {node_id!r}")
            node_id = None
        elif node_id in seen_ids:
            err((*npath, "id"), f"duplicate node id {node_id!r}")
        else:
            seen_ids.add(node_id)
        kind_name = raw.get("kind")
        kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            err((*npath, "kind"), f"unknown kind {kind_name!r} (known: {', '.join(sorted(KINDS))})")
        host = raw.get("host")
        if host is None:
            host = next((h for h in blocks[region] if h not in seen_hosts), 0)
            if not host:
                err((*npath, "host"), f"no free address left{f' in region {region}' if region else ''}")
        elif not isinstance(host, int) or isinstance(host, bool) or not 1 <= host <= 254:
            err((*npath, "host"), f"must be an integer 1-254 (the address's last octet), got {host!r}")
            host = 0
        elif regions and host not in blocks[region]:
            if region:
                span = f"{blocks[region][0]}-{blocks[region][-1]}"
                err((*npath, "host"), f"host {host} is outside region {region}'s block ({span})")
            else:
                span = f"1-{REGION_BLOCK - 1} or {REGION_BLOCK * (MAX_REGIONS + 1)}-254"
                err((*npath, "host"), f"host {host} is in a region's block: a node in no region takes {span}")
        if host and host in seen_hosts:
            err((*npath, "host"), f"host {host} is already used by node {seen_hosts[host]!r}")
        elif host:
            seen_hosts[host] = node_id or "?"
        params: dict[str, Any] = {}
        if kind is not None:
            params = _parse_params(raw.get("params", {}), kind, (*npath, "params"), err, refs)
        if node_id and kind is not None:
            nodes.append(NodeSpec(id=node_id, kind=kind.name, host=host, params=params, region=region))

    for rpath, ref in refs:
        if ref not in seen_ids:
            err(rpath, f"no node with id {ref!r}")

    raw_edges = data.get("edges", [])
    edges: list[tuple[str, str]] = []
    if not isinstance(raw_edges, list):
        err((*path, "edges"), "must be a list of [from, to] pairs")
        raw_edges = []
    for i, raw in enumerate(raw_edges):
        epath = (*path, "edges", i)
        if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) for x in raw)):
            err(epath, f"must be a pair [from, to] of node ids, got {raw!r}")
            continue
        a, b = raw
        for j, end in enumerate((a, b)):
            if end not in seen_ids:
                err((*epath, j), f"no node with id {end!r}")
        if a == b:
            err(epath, "an edge must join two different nodes")
        elif (a, b) in edges:
            err(epath, f"duplicate edge {a} -> {b}")
        else:
            edges.append((a, b))

    if errors:
        raise SpecError(errors)
    return Topology(domain=domain, nodes=tuple(nodes), edges=tuple(edges), regions=regions, latency_ms=latency)


def _parse_regions(data: dict[str, Any], path: Path, err) -> tuple[dict[str, str], dict[str, float]]:
    """``regions`` (id -> title) and ``latency_ms`` (``a-b`` -> modelled round trip) of a topology."""
    raw = data.get("regions", {})
    regions: dict[str, str] = {}
    if not isinstance(raw, dict):
        err((*path, "regions"), "must be a mapping of region ids to titles (eu: Europe)")
        raw = {}
    if len(raw) > MAX_REGIONS:
        err((*path, "regions"), f"at most {MAX_REGIONS} regions, got {len(raw)}")
    for rid, title in list(raw.items())[:MAX_REGIONS]:
        if not isinstance(rid, str) or not REGION_ID.match(rid):
            err((*path, "regions", str(rid)), f"a region id is lower-case letters and digits, got {rid!r}")
        elif not isinstance(title, str) or not title.strip():
            err((*path, "regions", rid), f"must be the region's title (Europe), got {title!r}")
        else:
            regions[rid] = title.strip()
    raw_latency = data.get("latency_ms", {})
    latency: dict[str, float] = {}
    if not isinstance(raw_latency, dict):
        err((*path, "latency_ms"), "must be a mapping of region pairs to milliseconds (eu-us: 90)")
        raw_latency = {}
    for key, value in raw_latency.items():
        kpath = (*path, "latency_ms", str(key))
        ends = key.split("-") if isinstance(key, str) else []
        if len(ends) != 2 or ends[0] == ends[1] or not all(e in regions for e in ends):
            err(kpath, f"must name two different regions as a-b (regions: {', '.join(regions) or 'none'})")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_RTT_MS:
            err(kpath, f"must be a round trip in ms, 0-{MAX_RTT_MS:g}, got {value!r}")
        elif rtt_key(*ends) in latency:
            err(kpath, f"the pair {rtt_key(*ends)} is given twice")
        else:
            latency[rtt_key(*ends)] = float(value)
    ids = list(regions)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if rtt_key(a, b) not in latency and isinstance(raw_latency, dict):
                err((*path, "latency_ms"), f"no round trip given for {rtt_key(a, b)}")
    return regions, latency


def _parse_params(raw: Any, kind: Kind, path: Path, err, refs: list) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        err(path, "must be a mapping of parameter names to values")
        raw = {}
    out: dict[str, Any] = {}
    for key in raw:
        if key not in kind.params:
            known = ", ".join(sorted(kind.params)) or "none"
            err((*path, str(key)), f"unknown parameter for kind {kind.name!r} (known: {known})")
    for name, param in kind.params.items():
        value = raw.get(name, param.default)
        ppath = (*path, name)
        if param.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, param.type) or isinstance(value, bool):
            err(ppath, f"must be {param.type.__name__}, got {value!r}")
            continue
        if param.min is not None and value < param.min:
            err(ppath, f"must be at least {param.min:g}, got {value!r}")
        elif param.max is not None and value > param.max:
            err(ppath, f"must be at most {param.max:g}, got {value!r}")
        elif param.choices is not None and value not in param.choices:
            err(ppath, f"must be one of {', '.join(param.choices)}, got {value!r}")
        if param.ref and value != "":  # an empty reference means "none"
            refs.append((ppath, value))
        out[name] = value
    return out


_DERIVED = frozenset(
    {"title", "tier", "role", "port", "proto", "modelled", "sizes", "scalable", "commands", "lines", "drawing",
     "tier_title", "lane", "context"}
)


def topology_from_dict(data: dict[str, Any]) -> Topology:
    """Parse either an author's topology or the normalised ``to_dict()`` form (derived keys dropped)."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "region_hosts"}
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if isinstance(nodes, list):
        data = {
            **data,
            "nodes": [{k: v for k, v in n.items() if k not in _DERIVED} if isinstance(n, dict) else n for n in nodes],
        }
    return parse_topology(data)
