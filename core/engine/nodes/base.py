"""What every node has: an address, a lifecycle, and a snapshot for the frame."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.engine.spec import NodeSpec

if TYPE_CHECKING:
    from core.engine.lab import Lab


class Node:
    def __init__(self, spec: NodeSpec, lab: Lab) -> None:
        self.spec = spec
        self.lab = lab
        self.id = spec.id
        self.params = spec.params
        self.address = lab.address(spec.id)
        self.port = spec.kind_info.port
        self.up = False

    async def start(self) -> None:
        """Bind and serve; raise OSError if the address cannot be bound."""
        self.up = True

    async def stop(self) -> None:
        """Release every socket and task; safe to call twice."""
        self.up = False

    async def kill(self) -> None:
        """Crash: like stop, but abrupt (connections reset, in-flight work lost)."""
        await self.stop()

    def snapshot(self) -> dict[str, Any]:
        """Live gauges merged into this node's entry of each frame."""
        return {"up": self.up}
