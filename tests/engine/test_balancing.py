"""The balancing algorithms and the health state machine, without sockets."""

import random
from collections import Counter

import pytest

from core.engine.balancing import ALGORITHMS, DOWN, UP, Balancer

THREE = ["web-1", "web-2", "web-3"]


def spread(bal: Balancer, n: int, client: str | None = None) -> Counter:
    return Counter(bal.pick(client) for _ in range(n))


def test_round_robin_spreads_evenly_in_turn():
    bal = Balancer(THREE)
    assert [bal.pick() for _ in range(6)] == THREE + THREE
    assert spread(bal, 300) == {"web-1": 100, "web-2": 100, "web-3": 100}


def test_weighted_round_robin_follows_the_weights_smoothly():
    bal = Balancer([("big", 4), ("small-1", 1), ("small-2", 1)], algorithm="weighted_round_robin")
    first = [bal.pick() for _ in range(6)]
    assert Counter(first) == {"big": 4, "small-1": 1, "small-2": 1}
    assert "big,big,big" not in ",".join(first)  # interleaved, not a burst of four
    assert spread(bal, 600) == {"big": 400, "small-1": 100, "small-2": 100}


def test_random_and_power_of_two_use_every_backend():
    for algorithm in ("random", "power_of_two"):
        counts = spread(Balancer(THREE, algorithm=algorithm, rng=random.Random(1)), 3000)
        assert set(counts) == set(THREE)
        assert all(800 < c < 1200 for c in counts.values()), counts


def hold(bal: Balancer, slow: str, steps: int, slow_holds: int = 10) -> Counter:
    """Requests arrive one at a time; each finishes before the next, except on ``slow``, where a
    request stays open for ``slow_holds`` arrivals (a slowed backend)."""
    open_until: list[tuple[int, str]] = []
    counts: Counter = Counter()
    for t in range(steps):
        for due, b in [x for x in open_until if x[0] <= t]:
            bal.end(b)
            open_until.remove((due, b))
        b = bal.pick()
        counts[b] += 1
        bal.begin(b)
        if b == slow:
            open_until.append((t + slow_holds, b))
        else:
            bal.end(b)
    return counts


def test_least_connections_favours_the_fast_backends_when_one_is_slow():
    rr = hold(Balancer(THREE), "web-3", 300)
    lc = hold(Balancer(THREE, algorithm="least_connections"), "web-3", 300)
    assert rr["web-3"] == 100  # round robin does not care
    assert lc["web-3"] <= 300 / 10 + 1  # one open request at a time on the slow backend
    assert lc["web-1"] > 130 and lc["web-2"] > 130
    p2 = hold(Balancer(THREE, algorithm="power_of_two", rng=random.Random(2)), "web-3", 300)
    assert p2["web-3"] < 60


def test_least_connections_breaks_ties_in_turn():
    bal = Balancer(THREE, algorithm="least_connections")
    assert [bal.pick() for _ in range(3)] == THREE


def test_ip_hash_is_sticky_and_moves_only_the_dead_backends_clients():
    bal = Balancer(THREE, algorithm="ip_hash")
    clients = [f"127.20.0.{i}" for i in range(10, 70)]
    home = {c: bal.pick(c) for c in clients}
    assert all(bal.pick(c) == home[c] for c in clients for _ in range(3))
    assert len(set(home.values())) == 3  # 60 clients land on all three
    victim = home[clients[0]]
    bal.failed(victim)
    bal.failed(victim)
    moved = {c: bal.pick(c) for c in clients}
    assert victim not in moved.values()
    assert all(moved[c] == home[c] for c in clients if home[c] != victim)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_skips_down_backends_and_excluded_ones(algorithm):
    bal = Balancer(THREE, algorithm=algorithm, fall=1, rng=random.Random(3))
    assert bal.failed("web-2") == DOWN
    picks = {bal.pick(f"127.0.0.{i}") for i in range(200)}
    assert picks == {"web-1", "web-3"}
    assert {bal.pick(f"127.0.0.{i}", exclude=["web-1"]) for i in range(50)} == {"web-3"}
    assert bal.pick(exclude=["web-1", "web-3"]) is None


def test_health_falls_after_fall_failures_and_rises_after_rise_checks():
    bal = Balancer(["a"], rise=3, fall=2)
    assert bal.states() == {"a": UP}  # optimistic start
    assert bal.check("a", False) is None  # one failure: still up
    assert bal.check("a", True) is None  # a success resets the count
    assert bal.check("a", False) is None
    assert bal.failed("a") == DOWN  # passive failure counts too: two in a row
    assert bal.pick() is None
    assert [bal.check("a", True) for _ in range(3)] == [None, None, UP]
    assert bal.pick() == "a"


def test_adding_and_removing_backends():
    bal = Balancer(["a", "b"])
    bal.add("c")
    assert spread(bal, 30) == {"a": 10, "b": 10, "c": 10}
    bal.remove("a")
    bal.end("a")  # a request that was in flight on it finishes harmlessly
    assert set(spread(bal, 10)) == {"b", "c"}


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="unknown algorithm"):
        Balancer(THREE, algorithm="fastest")
