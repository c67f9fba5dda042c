"""The load balancer on real loopback sockets: spreading, failover, algorithms, the slow fault."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
import pytest

from core.engine.commands import CommandError
from core.engine.lab import Lab
from core.engine.telemetry import HOPS_HEADER, hops_from_header
from tests.engine.topologies import stage4


@dataclass
class Result:
    at: float  # seconds since the run started
    status: str
    upstreams: list[str]  # backends the balancer tried, in order
    ms: float


async def drive(
    lab: Lab, *, rate: float, seconds: float, source_host: int = 200, path: str = "/", during=None
) -> list[Result]:
    """Open-loop load on the balancer from one source address; ``during(t)`` runs at t seconds."""
    results: list[Result] = []
    url = f"http://{lab.address('lb')}:8080{path}"
    connector = aiohttp.TCPConnector(local_addr=(f"{lab.network}.{source_host}", 0), limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as s:
        t0 = time.monotonic()

        async def one() -> None:
            start = time.monotonic()
            try:
                async with s.get(url) as r:
                    await r.read()
                    hops = hops_from_header(r.headers.get(HOPS_HEADER))
                    status = str(r.status)
            except TimeoutError:
                status, hops = "timeout", []
            except aiohttp.ClientError as exc:
                status, hops = type(exc).__name__, []
            ms = (time.monotonic() - start) * 1000
            results.append(Result(start - t0, status, [h.dst for h in hops if h.src == "lb"], ms))

        tasks = []
        n = int(rate * seconds)
        hooks = sorted(during or [])
        for i in range(n):
            at = i / rate
            while hooks and hooks[0][0] <= at:
                _, hook = hooks.pop(0)
                await hook()
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return sorted(results, key=lambda r: r.at)


def p99(results: list[Result]) -> float:
    ms = sorted(r.ms for r in results)
    return ms[int(0.99 * (len(ms) - 1))]


async def test_requests_cross_the_balancer_to_every_backend_and_show_as_hops(network):
    async with Lab(stage4(), network=network) as lab:
        results = await drive(lab, rate=60, seconds=0.5)
        assert all(r.status == "200" for r in results)
        assert Counter(r.upstreams[0] for r in results) == {"web-1": 10, "web-2": 10, "web-3": 10}
        # A client's trace holds its hop to the balancer and the balancer's hop to a backend.
        lab.frame()
        await lab.nodes["browser"].request()
        frame = lab.frame()
        [sample] = frame["samples"]
        client_hop, lb_hop = sample["hops"][-2:]
        assert (client_hop["src"], client_hop["dst"], lb_hop["src"]) == ("browser", "lb", "lb")
        assert lb_hop["dst"] in ("web-1", "web-2", "web-3")
        assert lb_hop["ok"] and lb_hop["status"] == "200" and lb_hop["at_ms"] >= sample["hops"][-2]["at_ms"]
        assert frame["edges"][f"lb>{lb_hop['dst']}"]["rps"] > 0
        assert frame["nodes"]["lb"]["algorithm"] == "round_robin"
        assert frame["nodes"]["lb"]["backends"] == {"web-1": "up", "web-2": "up", "web-3": "up"}


async def test_backends_see_the_balancer_calling_and_the_request_id_forwarded(network):
    async with Lab(stage4(backends=1), network=network) as lab:
        seen = []
        web = lab.nodes["web-1"]
        original = web.handle

        async def spy(request):
            if request.path != "/health":
                seen.append((request.remote, request.headers.get("X-Request-Id"), request.headers["X-Forwarded-For"]))
            return await original(request)

        web.handle = spy
        await web.stop()
        await web.start()
        await lab.nodes["phone"].request()
        [(remote, request_id, forwarded_for)] = seen
        assert remote == lab.address("lb")
        assert request_id.startswith("r-")
        assert forwarded_for == lab.address("phone")


async def test_a_killed_backend_stops_getting_traffic_within_a_health_window_and_errors_stop(network):
    interval, fall = 0.5, 2
    async with Lab(stage4(health_interval_s=interval, fall=fall, retries=0, workers=8), network=network) as lab:
        killed_at = 1.0

        async def kill():
            await lab.command({"action": "kill", "node": "web-2"})

        results = await drive(lab, rate=60, seconds=3.0, during=[(killed_at, kill)])
        errors = [r for r in results if r.status != "200"]
        assert errors, "without retries the first requests to the dead backend fail"
        burst_end = max(r.at for r in errors)
        assert burst_end - killed_at < interval * fall  # detected within one health-check window
        assert all(r.status == "200" for r in results if r.at > killed_at + interval * fall)
        assert all("web-2" not in r.upstreams for r in results if r.at > burst_end)
        frame = lab.frame()
        assert frame["nodes"]["lb"]["backends"]["web-2"] == "down"
        assert next(e for e in frame["events"] if e["kind"] == "backend_down")["backend"] == "web-2"
        # Restarted, it passes `rise` health checks and is back in rotation.
        await lab.command({"action": "restart", "node": "web-2"})
        await asyncio.sleep(interval * 2 + 0.6)
        assert lab.nodes["lb"].balancer.states()["web-2"] == "up"
        later = await drive(lab, rate=60, seconds=0.5)
        assert "web-2" in {r.upstreams[-1] for r in later}
        assert "backend_up" in [e["kind"] for e in lab.frame()["events"]]


async def test_with_retries_a_killed_backend_costs_no_failed_request(network):
    async with Lab(stage4(retries=1, workers=8), network=network) as lab:

        async def kill():
            await lab.command({"action": "kill", "node": "web-3"})

        results = await drive(lab, rate=60, seconds=2.0, during=[(0.8, kill)])
        assert [r.status for r in results if r.status != "200"] == []
        assert any(len(r.upstreams) == 2 and r.upstreams[0] == "web-3" for r in results)  # retried elsewhere


async def test_least_connections_has_a_lower_p99_than_round_robin_when_one_backend_is_slow(network):
    async with Lab(stage4(workers=2, service_ms=5), network=network) as lab:
        await lab.command({"action": "slow", "node": "web-3", "ms": 200})
        assert lab.frame()["nodes"]["web-3"]["slow_ms"] == 200
        rr = await drive(lab, rate=60, seconds=2.0)
    async with Lab(stage4(workers=2, service_ms=5), network=network) as lab:
        await lab.command({"action": "slow", "node": "web-3", "ms": 200})
        await lab.command({"action": "algorithm", "node": "lb", "value": "least_connections"})
        lc = await drive(lab, rate=60, seconds=2.0)
        assert lab.frame()["nodes"]["lb"]["algorithm"] == "least_connections"
    share = {name: Counter(r.upstreams[-1] for r in res)["web-3"] / len(res) for name, res in (("rr", rr), ("lc", lc))}
    assert share["rr"] > 0.3 and share["lc"] < 0.2, share
    assert p99(rr) > 500  # the slow server's queue grows without bound under round robin
    assert p99(lc) < p99(rr) / 2, (p99(lc), p99(rr))


async def test_ip_hash_keeps_each_client_on_one_backend(network):
    async with Lab(stage4(algorithm="ip_hash"), network=network) as lab:
        homes = {}
        for host in (201, 202, 203, 204, 205, 206):
            results = await drive(lab, rate=50, seconds=0.2, source_host=host)
            assert len({r.upstreams[0] for r in results}) == 1
            homes[host] = results[0].upstreams[0]
        assert len(set(homes.values())) > 1


async def test_no_healthy_backend_answers_503(network):
    async with Lab(stage4(backends=1, fall=1, retries=0), network=network) as lab:
        await lab.command({"action": "kill", "node": "web-1"})
        first, second = await drive(lab, rate=10, seconds=0.2)
        assert (first.status, second.status) == ("502", "503")


async def test_slow_and_algorithm_commands_are_checked(network):
    async with Lab(stage4(), network=network) as lab:
        with pytest.raises(CommandError, match="not a load balancer"):
            await lab.command({"action": "algorithm", "node": "web-1", "value": "random"})
        with pytest.raises(CommandError, match="must be one of"):
            await lab.command({"action": "algorithm", "node": "lb", "value": "fastest"})
        with pytest.raises(CommandError, match="only servers"):
            await lab.command({"action": "slow", "node": "phone", "ms": 100})
        await lab.command({"action": "slow", "node": "dns", "ms": 150})
        start = time.monotonic()
        await lab.nodes["browser"].resolve()
        assert time.monotonic() - start >= 0.15  # the slow fault is not per kind: DNS answers late too
        await lab.command({"action": "slow", "node": "dns", "ms": 0})
        assert "slow_ms" not in lab.frame()["nodes"]["dns"]
