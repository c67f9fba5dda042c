"""Key placement on plain numbers (core.engine.ring): modulo against consistent hashing, no sockets."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.engine.ring import ALGORITHMS, HashRing, Modulo, key_hash, make_router, moved

FOUR = ["db-1", "db-2", "db-3", "db-4"]
KEYS = range(10_000)
ROOT = Path(__file__).resolve().parents[2]


def test_it_hashes_keys_to_the_first_8_bytes_of_md5():
    assert key_hash("user:1") == int.from_bytes(hashlib.md5(b"user:1").digest()[:8], "big")
    assert key_hash("user:1") == 13668949406286190492  # pinned: a change would move every stored key
    assert key_hash(42) == key_hash("42")
    assert all(0 <= key_hash(k) < 2**64 for k in range(1000))


def test_it_hashes_the_same_in_another_process_with_another_hash_seed():
    code = "from core.engine.ring import key_hash; print(key_hash('user:1'), key_hash(7))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(key_hash("user:1")), str(key_hash(7))]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_keys_owner_is_stable_and_one_of_the_nodes(algorithm):
    router = make_router(algorithm, FOUR)
    again = make_router(algorithm, FOUR)
    owners = [router.owner(k) for k in KEYS]
    assert set(owners) == set(FOUR)  # every node gets keys, and only nodes do
    assert owners == [again.owner(k) for k in KEYS]
    assert owners == [router.owner(k) for k in KEYS]


def test_modulo_is_the_hash_mod_the_node_count():
    router = Modulo(FOUR)
    assert all(router.owner(k) == FOUR[key_hash(k) % 4] for k in range(500))
    assert router.nodes == tuple(FOUR)
    assert router.shares() == dict.fromkeys(FOUR, 0.25)
    assert router.arcs() == []


def test_the_ring_owner_is_the_first_point_at_or_after_the_key_wrapping_round():
    ring = HashRing(["a", "b", "c"], vnodes=2)
    points = sorted((key_hash(f"{n}#{i}"), n) for n in "abc" for i in range(2))
    wrapped = 0
    for k in range(2000):
        h = key_hash(k)
        after = [n for p, n in points if p >= h]
        wrapped += not after
        assert ring.owner(k) == (after[0] if after else points[0][1])
    assert wrapped > 0  # some keys lie past the last point and belong to the first


def test_a_key_that_hashes_exactly_onto_a_point_belongs_to_that_points_node():
    ring = HashRing(FOUR, vnodes=16)
    # "db-2#5" is the name of db-2's sixth virtual node, so as a key it hashes onto that very point.
    assert all(ring.owner(f"{n}#{i}") == n for n in FOUR for i in range(16))


def test_adding_a_fifth_node_to_a_ring_moves_about_a_fifth_of_keys_all_to_the_new_node():
    changes = moved(KEYS, HashRing(FOUR), HashRing([*FOUR, "db-5"]))
    assert abs(len(changes) / len(KEYS) - 1 / 5) <= 0.04
    assert {new for _, _, new in changes} == {"db-5"}
    assert {old for _, old, _ in changes} == set(FOUR)  # the new node takes keys from everyone


def test_adding_a_fifth_node_under_modulo_moves_about_four_fifths_of_keys():
    changes = moved(KEYS, Modulo(FOUR), Modulo([*FOUR, "db-5"]))
    assert abs(len(changes) / len(KEYS) - 4 / 5) <= 0.04


def test_removing_a_node_from_a_ring_moves_only_that_nodes_keys():
    before, after = HashRing(FOUR), HashRing(["db-1", "db-2", "db-4"])
    changes = moved(KEYS, before, after)
    owned = [k for k in KEYS if before.owner(k) == "db-3"]
    assert [k for k, _, _ in changes] == owned
    assert {old for _, old, _ in changes} == {"db-3"}
    assert {new for _, _, new in changes} == {"db-1", "db-2", "db-4"}  # virtual nodes spread them


def test_moved_reports_each_changed_key_with_its_old_and_new_owner():
    old, new = Modulo(["a", "b"]), Modulo(["b", "a"])  # same nodes, swapped: every key changes
    assert moved([1, "x"], old, new) == [(1, old.owner(1), new.owner(1)), ("x", old.owner("x"), new.owner("x"))]
    assert moved(KEYS, HashRing(FOUR), HashRing(FOUR)) == []


def test_one_virtual_node_gives_uneven_shares():
    shares = HashRing(FOUR, vnodes=1).shares()
    assert max(shares.values()) - min(shares.values()) > 0.2


def test_many_virtual_nodes_give_even_shares_that_the_keys_follow():
    ring = HashRing(FOUR, vnodes=200)
    shares = ring.shares()
    assert all(abs(s - 1 / 4) <= 0.05 for s in shares.values())
    counts = Counter(ring.owner(k) for k in KEYS)
    assert all(abs(counts[n] / len(KEYS) - shares[n]) <= 0.03 for n in FOUR)


@pytest.mark.parametrize("vnodes", [1, 3, 64])
def test_shares_sum_to_one_and_equal_the_arcs_each_node_owns(vnodes):
    ring = HashRing(FOUR, vnodes=vnodes)
    shares = ring.shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    by_arcs = Counter[str]()
    for start, end, node in ring.arcs():
        by_arcs[node] += end - start
    assert by_arcs == pytest.approx(shares)


@pytest.mark.parametrize("vnodes", [1, 5, 64])
def test_arcs_cover_the_circle_exactly_once_in_order_with_neighbours_merged(vnodes):
    arcs = HashRing(FOUR, vnodes=vnodes).arcs()
    assert arcs[0][0] == 0.0
    assert arcs[-1][1] == 1.0
    assert all(start < end for start, end, _ in arcs)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(arcs))  # no gap, no overlap
    assert all(a[2] != b[2] for a, b in itertools.pairwise(arcs))
    assert len(arcs) <= 4 * vnodes + 1  # the run through 0 may show as two arcs


def test_a_single_node_owns_the_whole_circle():
    ring = HashRing(["only"], vnodes=3)
    assert ring.arcs() == [(0.0, 1.0, "only")]
    assert ring.shares() == {"only": 1.0}


def test_the_owner_of_a_key_is_the_arc_that_holds_its_position():
    ring = HashRing(FOUR, vnodes=8)
    arcs = ring.arcs()
    for k in range(2000):
        p = ring.position(k)
        assert 0.0 <= p < 1.0
        holding = [node for start, end, node in arcs if start < p <= end or (start == p == 0.0)]
        assert holding == [ring.owner(k)]


def test_make_router_builds_the_named_algorithm():
    ring = make_router("consistent", FOUR, vnodes=7)
    assert isinstance(ring, HashRing)
    assert (ring.algorithm, ring.vnodes, ring.nodes) == ("consistent", 7, tuple(FOUR))
    modulo = make_router("modulo", FOUR)
    assert isinstance(modulo, Modulo)
    assert (modulo.algorithm, modulo.nodes) == ("modulo", tuple(FOUR))


def test_an_unknown_algorithm_names_the_known_ones():
    with pytest.raises(ValueError, match="known: modulo, consistent"):
        make_router("rendezvous", FOUR)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nodes", [[], ["a", "b", "a"]], ids=["empty", "duplicate"])
def test_it_refuses_an_empty_or_duplicated_node_list(algorithm, nodes):
    with pytest.raises(ValueError):
        make_router(algorithm, nodes)


@pytest.mark.parametrize("vnodes", [0, -1, 1001])
def test_it_refuses_vnodes_outside_1_to_1000(vnodes):
    with pytest.raises(ValueError, match="vnodes"):
        HashRing(FOUR, vnodes=vnodes)
    assert HashRing(FOUR, vnodes=1000).vnodes == 1000
