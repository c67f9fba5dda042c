"""A site's static assets (sans-I/O): the catalogue, their bytes, the names they are served under,
and how a page refers to them.

One small catalogue, in one place: what the origin (a ``web`` node with ``assets: on``) serves under
``/static/<name>``, what its pages reference and what an edge (``cdn`` node) caches. The bytes are
deterministic (the same name is always the same bytes), so a test can tell an edge's copy from the
origin's by content, and the sizes are those of a real page's images, stylesheet and script.

The logo is *versioned*: a page references ``logo.v<N>.png`` (the origin's ``version`` command
bumps N), the alternative to purging an edge: a new name is a new object, a miss everywhere at once,
while the old one simply stops being asked for.
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
from dataclasses import dataclass
from typing import Any

STATIC_PREFIX = "/static/"
MAX_VERSION = 99  # the logo's versions the origin can have deployed (each kept, as deployed files are)


@dataclass(frozen=True)
class Asset:
    key: str  # a purge names it (``purge edge-eu logo``): every version of the object
    size: int  # bytes
    content_type: str
    mobile: bool  # a mobile app bundles its own CSS and JS: it fetches only the images
    versioned: bool = False


# The catalogue: a typical landing page's weight (~330 KB), images the heaviest.
CATALOGUE: tuple[Asset, ...] = (
    Asset("logo", 20 * 1024, "image/png", mobile=True, versioned=True),
    Asset("hero", 200 * 1024, "image/jpeg", mobile=True),
    Asset("app-css", 30 * 1024, "text/css", mobile=False),
    Asset("app-js", 80 * 1024, "application/javascript", mobile=False),
)
BY_KEY = {a.key: a for a in CATALOGUE}
# The object a purge may name (or every object), as the edge's menu offers them.
PURGE_TARGETS = ("all", *BY_KEY)
_FILES = {"hero": "hero.jpg", "app-css": "app.css", "app-js": "app.js"}
_LOGO = re.compile(r"^logo\.v([1-9][0-9]?)\.png$")


def filename(asset: Asset, version: int = 1) -> str:
    """The file's name under /static/: ``logo.v2.png``, ``hero.jpg``."""
    return f"logo.v{version}.png" if asset.versioned else _FILES[asset.key]


def lookup(path: str) -> tuple[Asset, int] | None:
    """The asset (and its version) a request path names, or None: ``/static/logo.v2.png`` →
    (logo, 2). Any version up to MAX_VERSION parses; whether it is deployed is the origin's to say."""
    if not path.startswith(STATIC_PREFIX):
        return None
    name = path[len(STATIC_PREFIX):]
    m = _LOGO.match(name)
    if m:
        return BY_KEY["logo"], int(m.group(1))
    for key, file in _FILES.items():
        if name == file:
            return BY_KEY[key], 1
    return None


def key_of(path: str) -> str | None:
    """The catalogue key of a cached path (what ``purge <key>`` removes), or None."""
    found = lookup(path)
    return found[0].key if found else None


@functools.lru_cache(maxsize=2 * MAX_VERSION)
def body(name: str, size: int) -> bytes:
    """The asset's bytes: a SHA-256 stream seeded by its name, so every version differs."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def parent_domain(domain: str) -> str:
    """``www.scalelab.test`` → ``scalelab.test``: the zone the static and CDN names live in."""
    labels = domain.split(".")
    return ".".join(labels[1:]) if len(labels) > 2 else domain


def static_name(domain: str) -> str:
    """The name the pages put on their assets' URLs (DNS points it at the origin or the CDN)."""
    return f"static.{parent_domain(domain)}"


def cdn_name(domain: str) -> str:
    """The CDN's own name: the static name's CNAME while the CDN is on."""
    return f"cdn.{parent_domain(domain)}"


# Who serves assets in a topology, said once (a ``Topology``: anything with ``nodes``) ---------------
def origins(topology: Any) -> list[str]:
    """The web servers that serve the assets (``assets: on``), in topology order."""
    return [n.id for n in topology.nodes if n.kind == "web" and n.params.get("assets") == "on"]


def edges(topology: Any) -> list[str]:
    """The CDN's edges (``cdn`` nodes), in topology order."""
    return [n.id for n in topology.nodes if n.kind == "cdn"]


_REF = re.compile(r'(?:src|href)="(http://[^"/]+)(/static/[^"]+)"\s+data-fallback="([^"]+)"')


@dataclass(frozen=True)
class AssetRef:
    host: str  # "static.scalelab.test:8080"
    path: str  # "/static/logo.v2.png"
    fallback: str  # the same path on the site's own host

    @property
    def name(self) -> str:
        """The host name alone, what DNS is asked."""
        return self.host.rpartition(":")[0] or self.host


def page_paths(version: int, flavor: str = "web") -> list[str]:
    """The paths a page of this flavor references (``mobile``: only the images)."""
    return [STATIC_PREFIX + filename(a, version) for a in CATALOGUE if flavor == "web" or a.mobile]


def page_refs(domain: str, port: int, version: int, flavor: str = "web") -> list[AssetRef]:
    """What a page of this flavor references: each asset on the static name, with its fallback."""
    host = f"{static_name(domain)}:{port}"
    return [AssetRef(host, path, path) for path in page_paths(version, flavor)]


def refs_to_json(refs: list[AssetRef]) -> list[dict[str, str]]:
    """The ``assets`` list of a mobile API reply."""
    return [{"url": f"http://{r.host}{r.path}", "fallback": r.fallback} for r in refs]


def refs_from_json(value: object, limit: int = 16) -> list[AssetRef]:
    """An API reply's ``assets`` list back into references; anything malformed is skipped."""
    refs: list[AssetRef] = []
    for item in value[:limit] if isinstance(value, list) else []:
        url = item.get("url") if isinstance(item, dict) else None
        fallback = item.get("fallback") if isinstance(item, dict) else None
        if not (isinstance(url, str) and isinstance(fallback, str) and url.startswith("http://")):
            continue
        host, slash, path = url.removeprefix("http://").partition("/")
        if slash and ("/" + path).startswith(STATIC_PREFIX):
            refs.append(AssetRef(host, "/" + path, fallback))
    return refs


def page_tags(domain: str, port: int, version: int) -> str:
    """HTML tags referencing the assets on the static name, each with its fallback on the site's
    own host (``data-fallback``: what the page loads when the static host fails)."""
    host = f"http://{static_name(domain)}:{port}"
    tags = []
    for path in page_paths(version):
        url, fallback = html.escape(host + path), html.escape(path)
        if path.endswith(".css"):
            tags.append(f'<link rel="stylesheet" href="{url}" data-fallback="{fallback}">')
        elif path.endswith(".js"):
            tags.append(f'<script src="{url}" data-fallback="{fallback}"></script>')
        else:
            tags.append(f'<img src="{url}" data-fallback="{fallback}" alt="">')
    return "".join(tags)


def references(page: str, limit: int = 16) -> list[AssetRef]:
    """The assets an HTML page references (as ``page_tags`` writes them), in order, at most ``limit``."""
    refs = []
    for m in _REF.finditer(page):
        host = m.group(1).removeprefix("http://")
        refs.append(AssetRef(host, html.unescape(m.group(2)), html.unescape(m.group(3))))
        if len(refs) >= limit:
            break
    return refs
