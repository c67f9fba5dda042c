"""Stress: many labs of every shipped lesson started, commanded and stopped one after another in
one process (each in its own ``asyncio.run``, as a Celery pool process hosts lab after lab).

Every cycle: start the lesson's lab, send traffic, then random commands a student could send
(kill, restart, add, remove, promote, partition, heal, slow), then stop. Reports hangs (a cycle
that did not end within --hang-s: the asyncio tasks and thread stacks are dumped to a file and the
run ends), the slowest stop, and what was left over after each stop: listeners on the lab's
network, child processes, node directories.

With --kv-kills N it does the targeted race instead: one stage-2 lab at 200 req/s, its key-value
node killed and restarted N times at random moments (the hang `lessons prove` once had: a kill whose
cancel of the node's gauge refresher is lost inside redis-py). Reports the slowest kill.

Run: .venv/bin/python -m bench.stress_bench [--cycles 200] [--seed 1] [--json FILE]
     .venv/bin/python -m bench.stress_bench --kv-kills 1000
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from core.engine import keys, scratch
from core.engine.commands import CommandError
from core.engine.lab import Lab
from core.engine.spec import topology_from_dict

ROOT = Path(__file__).resolve().parent.parent


def shipped_topologies() -> list[tuple[str, dict[str, Any]]]:
    """(lesson id, topology) of every shipped lesson with a lab, from the lesson files."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    import django

    django.setup()
    from lessons.loader import lessons_check

    lessons, errors = lessons_check([ROOT / "lessons" / "content"])
    if errors:
        raise SystemExit("\n".join(map(str, errors)))
    seen: dict[str, dict[str, Any]] = {}
    for lesson in lessons:
        if lesson.topology and lesson.slug not in seen:
            seen[lesson.slug] = lesson.topology
    return sorted(seen.items())


def leftovers(network: str) -> dict[str, int]:
    """What a stopped lab on ``network`` still holds: listeners, children, node directories."""
    prefix = network + "."
    me = psutil.Process()
    listeners = sum(
        1
        for c in me.net_connections(kind="inet")
        if c.laddr and c.laddr.ip.startswith(prefix) and (c.status == psutil.CONN_LISTEN or not c.raddr)
    )
    children = len(me.children(recursive=True))
    dirs = len(list(Path(tempfile.gettempdir()).glob(f"{scratch.PREFIX}{os.getpid()}-*")))
    return {"listeners": listeners, "children": children, "dirs": dirs}


def pick_command(lab: Lab, rng: random.Random, initial: set[str]) -> dict[str, Any]:
    nodes = list(lab.nodes.values())
    node = rng.choice(nodes)
    roll = rng.random()
    if roll < 0.25:
        return {"action": "kill", "node": node.id}
    if roll < 0.5:
        return {"action": "restart", "node": node.id}
    if roll < 0.62:
        scalable = [n.id for n in nodes if n.spec.kind in ("web", "sqldb")]
        return {"action": "add", "like": rng.choice(scalable or [node.id])}
    if roll < 0.72:
        added = [n.id for n in nodes if n.id not in initial]
        return {"action": "remove", "node": rng.choice(added or [node.id])}
    if roll < 0.8:
        return {"action": "promote", "node": node.id}
    if roll < 0.88:
        other = rng.choice(nodes)
        return {"action": "partition", "node": node.id, "peer": other.id}
    if roll < 0.94:
        return {"action": "heal", "node": node.id}
    return {"action": "slow", "node": node.id, "ms": rng.choice([0, 50, 300])}


async def cycle(topology: dict[str, Any], network: str, rng: random.Random, commands: int) -> dict[str, Any]:
    lab = Lab(topology_from_dict(topology), network=network, seed=rng.randrange(1 << 30))
    await lab.start()
    initial = set(lab.nodes)
    await lab.command({"action": "traffic", "rate": 20})
    sent = refused = 0
    for _ in range(commands):
        try:
            await lab.command(pick_command(lab, rng, initial))
            sent += 1
        except CommandError:
            refused += 1
        await asyncio.sleep(rng.uniform(0.0, 0.4))
    began = time.monotonic()
    await lab.stop()
    return {"stop_s": time.monotonic() - began, "applied": sent, "refused": refused}


class Watchdog:
    """Dumps every asyncio task and thread stack if a cycle runs past ``hang_s``, then ends the run."""

    def __init__(self, hang_s: float, dump: Path) -> None:
        self.hang_s = hang_s
        self.dump = dump
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: threading.Timer | None = None

    def arm(self, label: str) -> None:
        self._timer = threading.Timer(self.hang_s, self._fire, args=(label,))
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self, label: str) -> None:
        with open(self.dump, "w") as f:
            f.write(f"HANG: {label} ran past {self.hang_s:g} s\n\n== threads\n")
            f.flush()
            faulthandler.dump_traceback(file=f, all_threads=True)
            done = threading.Event()

            def tasks() -> None:
                f.write("\n== asyncio tasks\n")
                for task in asyncio.all_tasks(self.loop):
                    task.print_stack(file=f)
                done.set()

            if self.loop is not None and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(tasks)
                if not done.wait(5.0):
                    f.write("\n(the event loop did not run for 5 s: it is blocked)\n")
        print(f"HANG in {label}: stacks in {self.dump}", flush=True)
        os._exit(2)


async def kv_kills(topology: dict[str, Any], network: str, rng: random.Random, kills: int,
                   dog: Watchdog) -> dict[str, Any]:
    dog.loop = asyncio.get_running_loop()
    times = []
    async with Lab(topology_from_dict(topology), network=network) as lab:
        await lab.command({"action": "traffic", "rate": 200})
        for i in range(kills):
            await asyncio.sleep(rng.uniform(0.05, 1.05))  # anywhere in the refresher's 1 s cycle
            dog.arm(f"kill {i}")
            began = time.monotonic()
            await lab.command({"action": "kill", "node": "kv"})
            times.append(time.monotonic() - began)
            dog.disarm()
            await lab.command({"action": "restart", "node": "kv"})
            if i % 100 == 0:
                print(f"{i:5d} kills, slowest {max(times):.3f} s", flush=True)
    return {"kills": kills, "hangs": 0, "kill_s": {"median": round(statistics.median(times), 3),
                                                    "max": round(max(times), 3)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--commands", type=int, default=8, help="random commands per cycle")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hang-s", type=float, default=60.0)
    ap.add_argument("--kv-kills", type=int, default=0, help="the targeted key-value kill race instead")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    lessons = shipped_topologies()
    rng = random.Random(args.seed)
    dog = Watchdog(args.hang_s, Path(tempfile.gettempdir()) / f"stress-hang-{os.getpid()}.txt")
    if args.kv_kills:
        network = keys.network_for(40_000 + os.getpid() % 20_000)
        summary = asyncio.run(kv_kills(dict(lessons)["web-and-data-tiers"], network, rng, args.kv_kills, dog))
        summary["left"] = leftovers(network)
        print(json.dumps(summary, indent=2))
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2))
        return
    stops: list[float] = []
    worst: dict[str, int] = {"listeners": 0, "children": 0, "dirs": 0}
    leaked_cycles = 0
    began = time.monotonic()
    for i in range(args.cycles):
        slug, topology = lessons[i % len(lessons)]
        network = keys.network_for(40_000 + (os.getpid() * 7 + i) % 20_000)

        async def one(topology: dict[str, Any] = topology, network: str = network) -> dict[str, Any]:
            dog.loop = asyncio.get_running_loop()
            return await cycle(topology, network, rng, args.commands)

        dog.arm(f"cycle {i} ({slug})")
        result = asyncio.run(one())
        dog.disarm()
        left = leftovers(network)
        stops.append(result["stop_s"])
        if any(left.values()):
            leaked_cycles += 1
            worst = {k: max(worst[k], v) for k, v in left.items()}
        print(f"{i:4d} {slug:24s} stop {result['stop_s']:.2f} s  applied {result['applied']} "
              f"refused {result['refused']}  left {left}", flush=True)
    summary = {
        "cycles": args.cycles,
        "hangs": 0,
        "stop_s": {"median": round(statistics.median(stops), 3), "max": round(max(stops), 3)},
        "cycles_with_leftovers": leaked_cycles,
        "worst_leftover": worst,
        "seconds": round(time.monotonic() - began, 1),
        "python": sys.version.split()[0],
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
