"""The topology spec: parse and validate what a lesson declares (pure, no I/O).

Errors carry a path into the document (``("topology", "nodes", 2, "params", "workers")``) so the
lesson loader can point at the file line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from core.engine.kinds import KINDS, Kind, sizes_list

Path = tuple[str | int, ...]
NODE_ID = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
FIRST_HOST = 10
NUMBERED = re.compile(r"^(.*?)-?(\d+)$")  # web-3 -> ("web", "3")


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

    @property
    def kind_info(self) -> Kind:
        return KINDS[self.kind]


@dataclass(frozen=True)
class Topology:
    domain: str
    nodes: tuple[NodeSpec, ...]
    edges: tuple[tuple[str, str], ...]

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
            base, id=next_node_id(ids, like), host=self._free_host(base.host), params={**base.params, **params}
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

    def _free_host(self, after: int) -> int:
        used = {n.host for n in self.nodes}
        # Next to its kin first (web-1 on .21 gets .24 after .22 and .23), then anywhere.
        for host in (*range(after + 1, 255), *range(FIRST_HOST, after)):
            if host not in used:
                return host
        raise ValueError("no free address left in this lab's network")

    def to_dict(self) -> dict[str, Any]:
        """Normalised form, defaults filled in: what the engine receives and the diagram draws."""
        return {
            "domain": self.domain,
            "nodes": [
                {
                    "id": n.id,
                    "kind": n.kind,
                    "host": n.host,
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
        if key not in ("domain", "nodes", "edges"):
            err((*path, str(key)), "unknown field (expected domain, nodes, edges)")

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
    next_host = FIRST_HOST
    refs: list[tuple[Path, str]] = []
    for i, raw in enumerate(raw_nodes):
        npath = (*path, "nodes", i)
        if not isinstance(raw, dict):
            err(npath, "must be a mapping with id and kind")
            continue
        for key in raw:
            if key not in ("id", "kind", "host", "params"):
                err((*npath, str(key)), "unknown field (expected id, kind, host, params)")
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
            while next_host in seen_hosts:
                next_host += 1
            host = next_host
            next_host += 1
        elif not isinstance(host, int) or isinstance(host, bool) or not 1 <= host <= 254:
            err((*npath, "host"), f"must be an integer 1-254 (the address's last octet), got {host!r}")
            host = 0
        if host and host in seen_hosts:
            err((*npath, "host"), f"host {host} is already used by node {seen_hosts[host]!r}")
        elif host:
            seen_hosts[host] = node_id or "?"
        params: dict[str, Any] = {}
        if kind is not None:
            params = _parse_params(raw.get("params", {}), kind, (*npath, "params"), err, refs)
        if node_id and kind is not None:
            nodes.append(NodeSpec(id=node_id, kind=kind.name, host=host, params=params))

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
    return Topology(domain=domain, nodes=tuple(nodes), edges=tuple(edges))


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
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if isinstance(nodes, list):
        data = {
            **data,
            "nodes": [{k: v for k, v in n.items() if k not in _DERIVED} if isinstance(n, dict) else n for n in nodes],
        }
    return parse_topology(data)
