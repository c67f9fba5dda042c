"""An autoscaler: adds and removes the web servers behind a balancer as their load changes.

It listens on nothing. Its edge names the balancer whose web servers it manages (the "target
group"). Once a second it measures their mean utilisation (each up server's modelled CPU busy time
over the last second), and ``core.engine.autoscale`` decides; the lab's own ``add`` (a copy of the
newest server) and ``remove`` (drained first, the newest first) carry the decision out, exactly as
the student's commands would, each emitting its ``node_added``/``node_removed`` as well as this
node's ``scaled_out``/``scaled_in``. It starts ``off`` unless its ``enabled`` param says ``on``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from core.engine import autoscale
from core.engine.commands import CommandError
from core.engine.lifecycle import Alive
from core.engine.nodes.base import Node

log = logging.getLogger(__name__)
TICK_S = 1.0  # one utilisation sample, and one decision, a second


class AutoscalerNode(Node):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        self.enabled = p["enabled"] == "on"
        self.scaler = autoscale.Autoscaler(self._policy(p["target_util"], p["min"], p["max"], p["cooldown_s"]))
        self._busy: dict[str, tuple[int, float, float]] = {}  # server -> (capacity id, busy_s, at)
        self.last_util: float | None = None
        self.errors = 0  # decisions the lab refused (e.g. the lab's node limit)

    @staticmethod
    def _policy(target: float, lo: int, hi: int, cooldown: float) -> autoscale.Policy:
        try:
            return autoscale.Policy(target_util=float(target), min_servers=int(lo), max_servers=int(hi),
                                    cooldown_s=float(cooldown))
        except ValueError as exc:
            raise CommandError(f"autoscaler: {exc}") from None

    def balancer(self) -> str | None:
        peers = self.ctx.peers(self.id, "lb")
        return peers[0] if peers else None

    def servers(self) -> list[str]:
        """The web servers behind the balancer, in topology order (the newest last)."""
        lb = self.balancer()
        return self.ctx.peers(lb, "web") if lb else []

    # Measuring --------------------------------------------------------------------------------
    def _sample(self) -> float | None:
        """The mean utilisation of the up servers since the previous sample (None: none up)."""
        now = time.monotonic()
        utils = []
        seen = {}
        for server in self.servers():
            node = self.ctx.peer(server)
            capacity = getattr(node, "capacity", None)
            if node is None or capacity is None or not node.up:
                continue
            mark = (id(capacity), capacity.busy_s, now)
            seen[server] = mark
            before = self._busy.get(server)
            if before is None or before[0] != mark[0] or now <= before[2]:
                continue  # new (or restarted) since the last sample: measured from the next one
            utils.append(min(1.0, (mark[1] - before[1]) / ((now - before[2]) * capacity.workers)))
        self._busy = seen
        return sum(utils) / len(utils) if utils else None

    async def _loop(self, alive: Alive) -> None:
        while alive():
            await asyncio.sleep(TICK_S)
            util = self._sample()
            self.last_util = None if util is None else round(util, 3)
            if not self.enabled:
                continue
            if util is not None:
                self.scaler.observe(util)
            servers = len(self.servers())
            if not servers:  # nothing behind the balancer to copy (they were all removed)
                continue
            decision = self.scaler.decide(time.monotonic(), servers)
            if decision is not None and alive():
                await self._carry_out(decision)

    async def _carry_out(self, decision: autoscale.Decision) -> None:
        servers = self.servers()
        changed: list[str] = []
        try:
            if decision.action == "out":
                for _ in range(decision.servers - len(servers)):
                    changed.append(await self.ctx.scale("add", self.servers()[-1]))
            else:
                changed.append(await self.ctx.scale("remove", servers[-1]))
        except CommandError as exc:
            self.errors += 1
            log.info("%s: scaling %s stopped: %s", self.who, decision.action, exc)
        self.scaler.acted(time.monotonic())  # a refusal cools down too: no retry storm
        if not changed:
            return
        fields = {"node": self.id, "servers": len(self.servers()), "util": decision.util,
                  "target": self.scaler.policy.target_util, "nodes": ", ".join(changed), "reason": decision.reason}
        if decision.action == "out":
            self.ctx.event("scaled_out", **fields)
        else:
            self.ctx.event("scaled_in", **fields)

    # Control ----------------------------------------------------------------------------------
    async def command(self, action: str, cmd: dict[str, Any]) -> None:
        p = self.scaler.policy
        if action == "autoscale":
            self.enabled = cmd["value"] == "on"
            self.ctx.event("autoscale_set", node=self.id, value=cmd["value"], on=self.enabled)
            return
        if action == "target":
            policy = self._policy(cmd["util"], p.min_servers, p.max_servers, p.cooldown_s)
        elif action == "limits":
            policy = self._policy(p.target_util, cmd.get("min", p.min_servers), cmd.get("max", p.max_servers),
                                  p.cooldown_s)
        else:  # cooldown
            policy = self._policy(p.target_util, p.min_servers, p.max_servers, cmd["s"])
        self.scaler.set_policy(policy)
        self.ctx.event("autoscale_policy_set", node=self.id, target=policy.target_util, min=policy.min_servers,
                       max=policy.max_servers, cooldown_s=policy.cooldown_s)

    # Lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._busy = {}
        self.background.start(self._loop, "autoscale")
        self.up = True

    async def stop(self) -> None:
        self.up = False
        await self.background.stop()

    def snapshot(self) -> dict[str, Any]:
        p = self.scaler.policy
        return {
            "up": self.up, "servers": len(self.servers()), "target_util": p.target_util, "util": self.last_util,
            "min_servers": p.min_servers, "max_servers": p.max_servers, "cooldown_s": p.cooldown_s,
            "cooldown_left_s": round(self.scaler.cooldown_left(time.monotonic()), 1),
            "enabled": 1 if self.enabled else 0, "state": "on" if self.enabled else "off",
        }
