"""A web server as the origin of static assets (``assets: on``): ``/static/<name>`` answered with
the catalogue's bytes (``core.engine.assets``) and a ``Cache-Control: max-age``, pages that reference
the assets on the static name, and the logo's version (the ``version`` command).

A mixin of ``WebNode`` (``nodes/web.py``), kept apart so the web tier's application code stays as
it was: with ``assets: off`` (the default) none of this runs and a web server answers exactly as
in the earlier stages. Static files are served as a web server's file handler serves them, outside
the application's modelled workers (a static file costs no application CPU); the "slow" fault and
partitions apply to them as to every request.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.engine import assets
from core.engine.commands import CommandError


class StaticOrigin:
    """What a WebNode adds to serve assets; ``self`` is the WebNode (id, params, ctx, port, slowdown)."""

    id: str
    params: dict[str, Any]
    port: int | None

    def _init_static(self) -> None:
        self.assets_on = self.params.get("assets") == "on"
        self.asset_version = 1  # the logo's: pages reference logo.v<N>.png; a restart keeps it (a deploy)
        self.static_bytes = 0  # bytes of assets served, to edges and clients alike: the origin's egress
        self.static_served = 0

    def bump_version(self) -> str:
        """Deploy a new logo: pages reference the new name from now on; the old stays servable."""
        if self.asset_version >= assets.MAX_VERSION:
            raise CommandError(f"{self.id} is at logo version {assets.MAX_VERSION}, the last there is")
        self.asset_version += 1
        name = assets.filename(assets.BY_KEY["logo"], self.asset_version)
        self.ctx.event("asset_versioned", node=self.id, asset=name)  # type: ignore[attr-defined]
        return name

    async def serve_static(self, request: web.BaseRequest, headers: dict[str, str]) -> web.StreamResponse:
        """One asset, or 404 for a name the catalogue lacks or a version not deployed yet."""
        await self.slowdown()  # type: ignore[attr-defined]
        found = assets.lookup(request.path)
        if found is None or found[1] > self.asset_version or request.method not in ("GET", "HEAD"):
            return web.Response(status=404, text="no such asset", headers=headers)
        asset, version = found
        name = assets.filename(asset, version)
        data = assets.body(name, asset.size)
        max_age = int(self.params["static_max_age_s"])
        headers = {**headers, "Cache-Control": f"public, max-age={max_age}",
                   "ETag": f'"{name}"', "Content-Type": asset.content_type}
        self.static_served += 1
        if request.method == "HEAD":
            return web.Response(headers=headers)
        self.static_bytes += len(data)
        return web.Response(body=data, headers=headers)

    def page_with_assets(self, page: str) -> str:
        """An HTML page with its asset tags (before ``</body>``), when assets are on."""
        if not self.assets_on:
            return page
        tags = assets.page_tags(self.ctx.domain, self.port or 8080, self.asset_version)  # type: ignore[attr-defined]
        head, sep, tail = page.rpartition("</body>")
        return f"{head}{tags}{sep}{tail}" if sep else page + tags

    def api_assets(self, body: dict[str, Any]) -> dict[str, Any]:
        """A mobile feed's reply with the images it shows (``assets``), when assets are on."""
        if self.assets_on:
            refs = assets.page_refs(self.ctx.domain, self.port or 8080, self.asset_version, "mobile")  # type: ignore[attr-defined]
            body["assets"] = assets.refs_to_json(refs)
        return body

    def static_snapshot(self) -> dict[str, Any]:
        if not self.assets_on:
            return {}
        return {"assets": "on", "asset_version": self.asset_version, "static_bytes": self.static_bytes}
