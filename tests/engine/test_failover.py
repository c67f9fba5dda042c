"""The failover policy on plain numbers (core.engine.failover): no sockets, no clock."""

from __future__ import annotations

import pytest

from core.engine.failover import Detector, choose_promotion, lost_writes


def test_it_waits_until_every_replica_has_lost_the_primary():
    d = Detector(after_s=3.0)
    assert d.observe(10.0, [9.0, None]) == (False, False)  # one replica still reaches it
    assert d.lost_since is None
    assert d.observe(10.1, [9.0, 10.1]) == (True, False)  # now both: lost since the later one
    assert d.lost_since == 10.1
    assert d.observe(13.0, [9.0, 10.1]) == (False, False)
    assert d.observe(13.1, [9.0, 10.1]) == (False, True)  # after_s later: fail over


def test_a_replica_that_reaches_the_primary_again_cancels_the_countdown():
    d = Detector(after_s=1.0)
    d.observe(0.0, [0.0, 0.0])
    assert d.observe(0.5, [0.0, None]) == (False, False)
    assert d.lost_since is None
    assert d.observe(0.6, [0.0, 0.6]) == (True, False)  # a new loss, counted afresh
    assert d.observe(1.5, [0.0, 0.6]) == (False, False)


def test_no_replicas_is_no_verdict_and_zero_means_never_automatically():
    assert Detector(after_s=1.0).observe(5.0, []) == (False, False)
    d = Detector(after_s=0.0)
    assert d.observe(0.0, [0.0]) == (True, False)
    assert d.observe(1e6, [0.0]) == (False, False)


def test_it_promotes_the_replica_that_received_most_ties_to_the_first_in_the_topology():
    order = ["db-1", "db-2", "db-3", "db-4"]
    assert choose_promotion([("db-2", 40), ("db-3", 42)], order) == "db-3"
    assert choose_promotion([("db-4", 42), ("db-3", 42), ("db-2", 41)], order) == "db-3"
    with pytest.raises(ValueError):
        choose_promotion([], order)


def test_lost_writes_are_those_past_the_new_head():
    assert lost_writes(120, 117) == 3
    assert lost_writes(117, 120) == 0  # a promoted replica may have applied more than was reported
