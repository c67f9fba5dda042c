"""The autoscaling policy (sans-I/O): its decisions on recorded load series."""

from __future__ import annotations

import itertools

import pytest

from core.engine.autoscale import Autoscaler, Policy


def run(policy: Policy, series: list[float], servers: int, *, capacity: float | None = None) -> list[tuple]:
    """Feed one sample a second and carry out every decision at once; (t, action, servers) each.

    ``series`` is the offered load in units of one server's capacity (2.0: two servers' worth), so a
    sample's utilisation is load / servers, capped at 1, as a tier of identical servers measures it."""
    scaler = Autoscaler(policy)
    log = []
    for t, load in enumerate(series):
        scaler.observe(min(1.0, load / servers))
        decision = scaler.decide(float(t), servers)
        if decision is not None:
            servers = decision.servers
            scaler.acted(float(t))
            log.append((t, decision.action, servers))
    return log


POLICY = Policy(target_util=0.5, min_servers=2, max_servers=6, cooldown_s=5)


def test_a_steady_load_at_the_target_changes_nothing():
    assert run(POLICY, [1.5] * 60, servers=3) == []  # 3 servers at 0.5 each


def test_a_surge_scales_out_at_once_to_what_the_load_needs():
    # 1.0 → 2.4 servers' worth on 3 servers: 0.8 each; 3 × 0.8 / 0.5 = 4.8, so 5 servers at once,
    # once three samples in a row say so; there it stays (0.48 each).
    log = run(POLICY, [1.0] * 10 + [2.4] * 30, servers=3)
    assert log == [(12, "out", 5)]


def test_one_noisy_second_is_not_a_trend():
    assert run(POLICY, [1.5] * 10 + [3.0] + [1.5] * 20, servers=3) == []


def test_scale_out_is_capped_at_the_maximum_and_waits_out_the_cooldown():
    log = run(POLICY, [20.0] * 30, servers=2)
    assert log[0] == (2, "out", 4)  # saturated servers read 1.0: 2 × 1.0 / 0.5
    assert [s for _, _, s in log] == [4, 6]
    assert log[1][0] - log[0][0] >= POLICY.cooldown_s
    assert max(s for _, _, s in log) == POLICY.max_servers


def test_when_the_load_falls_it_scales_in_one_server_at_a_time_down_to_the_minimum():
    log = run(POLICY, [2.4] * 5 + [0.2] * 60, servers=5)
    assert [a for _, a, _ in log] == ["in", "in", "in"]
    assert [s for _, _, s in log] == [4, 3, 2]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(log)]
    assert all(g >= POLICY.cooldown_s for g in gaps)


def test_it_does_not_scale_in_when_the_rest_would_go_over_the_target():
    # 4 servers at 0.4: removing one leaves 3 at 0.53, above 0.5: stay (no flapping).
    assert run(POLICY, [1.6] * 60, servers=4) == []
    # At 0.3 the other three would run at 0.4, below 0.45 (the target less the tolerance): one goes.
    assert run(POLICY, [1.2] * 10, servers=4)[0][1:] == ("in", 3)


def test_a_tier_outside_its_bounds_is_brought_back_whatever_the_load():
    assert run(POLICY, [0.0] * 3, servers=1)[0] == (0, "out", 2)
    assert run(Policy(target_util=0.5, min_servers=1, max_servers=2, cooldown_s=0), [0.9] * 3, servers=4)[:2] == [
        (0, "in", 3), (1, "in", 2)]


def test_a_change_of_policy_applies_to_the_next_decision():
    scaler = Autoscaler(POLICY)
    for _ in range(3):
        scaler.observe(0.6)
    assert scaler.decide(0.0, 3).servers == 4  # ceil(3 × 0.6 / 0.5)
    scaler.set_policy(Policy(target_util=0.3, min_servers=2, max_servers=6, cooldown_s=5))
    assert scaler.decide(0.0, 3).servers == 6
    scaler.acted(0.0)
    assert scaler.decide(1.0, 3) is None and scaler.cooldown_left(1.0) == 4.0
    assert scaler.util is None  # measured afresh after an action


@pytest.mark.parametrize("bad", [dict(target_util=0), dict(target_util=1.5), dict(min_servers=0),
                                 dict(min_servers=5, max_servers=3)])
def test_an_impossible_policy_is_refused(bad):
    with pytest.raises(ValueError):
        Policy(**{"target_util": 0.5, "min_servers": 1, "max_servers": 4, **bad})
