"""The workload without sockets: Zipf skew, the request mix, read-your-writes bookkeeping."""

import random
from collections import Counter

import pytest

from core.engine.workload import READ_MIX, LastWrites, Workload, Zipf

DRAWS = 50_000


def test_it_gives_the_top_one_percent_of_users_their_zipf_share():
    zipf = Zipf(1000, 1.2)
    weights = [k**-1.2 for k in range(1, 1001)]
    expected = sum(weights[:10]) / sum(weights)  # about 0.59
    assert zipf.share(10) == pytest.approx(expected)
    rng = random.Random(1)
    top = sum(zipf.sample(rng) <= 10 for _ in range(DRAWS))
    assert top / DRAWS == pytest.approx(expected, abs=0.015)
    assert all(1 <= zipf.sample(rng) <= 1000 for _ in range(1000))


def test_it_is_uniform_with_exponent_zero():
    zipf = Zipf(1000, 0.0)
    rng = random.Random(2)
    counts = Counter(zipf.sample(rng) for _ in range(DRAWS))
    top = sum(counts[k] for k in range(1, 11))
    assert top / DRAWS == pytest.approx(0.01, abs=0.003)
    assert set(counts) <= set(range(1, 1001)) and len(counts) > 990


def test_it_draws_the_requested_mix_of_writes_and_reads():
    wl = Workload(users=500, flavor="web", write_ratio=0.25)
    rng = random.Random(3)
    ops = Counter(wl.next_request(rng).op for _ in range(DRAWS))
    assert ops["post"] / DRAWS == pytest.approx(0.25, abs=0.01)
    reads = DRAWS - ops["post"]
    for op, share in READ_MIX:
        assert ops[op] / reads == pytest.approx(share, abs=0.015)


def test_each_operation_has_its_method_path_and_body():
    wl = Workload(users=50, flavor="mobile", write_ratio=0.5)
    rng = random.Random(4)
    seen = {}
    for _ in range(500):
        req = wl.next_request(rng)
        seen[req.op] = req
        assert 1 <= req.user <= 50
        assert req.is_write == (req.op == "post")
    feed, profile, login, post = seen["feed"], seen["profile"], seen["login"], seen["post"]
    assert (feed.method, feed.target, feed.body) == ("GET", f"/api/feed?user={feed.user}", None)
    assert (profile.method, profile.label) == ("GET", f"GET /api/users/{profile.user}")
    assert (login.method, login.path, login.body) == ("POST", "/api/login", {"user": login.user})
    assert (post.method, post.path, post.label) == ("POST", "/api/posts", "POST /api/posts")
    assert post.body is not None and post.body["user"] == post.user and post.body["caption"]


def test_the_web_flavor_reads_the_home_page_and_kv_store_goes_in_every_query():
    wl = Workload(users=10, flavor="web", write_ratio=0.3, store="kv")
    rng = random.Random(5)
    reqs = [wl.next_request(rng) for _ in range(300)]
    assert all(r.target.endswith("store=kv") for r in reqs)
    feed = next(r for r in reqs if r.op == "feed")
    assert feed.target == f"/?user={feed.user}&store=kv"


def test_set_mix_changes_writes_and_skew_live_and_clamps():
    wl = Workload(users=1000, write_ratio=0.0, zipf_s=1.0)
    rng = random.Random(6)
    assert not any(wl.next_request(rng).is_write for _ in range(1000))
    wl.set_mix(write_ratio=1.0)
    assert all(wl.next_request(rng).is_write for _ in range(200))
    wl.set_mix(zipf_s=0.0)
    assert wl.zipf_s == 0.0 and wl.write_ratio == 1.0
    wl.set_mix(write_ratio=7, zipf_s=9)
    assert (wl.write_ratio, wl.zipf_s) == (1.0, 3.0)


def test_last_writes_flags_reads_older_than_the_users_last_write():
    lw = LastWrites()
    assert not lw.is_stale(7, 0)  # never wrote: nothing can be stale
    lw.record(7, 40)
    lw.record(7, 35)  # an earlier write acknowledged late does not lower the bar
    assert lw.get(7) == 40
    assert lw.is_stale(7, 39)
    assert not lw.is_stale(7, 40) and not lw.is_stale(7, 41)
    assert not lw.is_stale(8, 0)


def test_last_writes_is_bounded_and_forgets_the_least_recent_writer():
    lw = LastWrites(capacity=100)
    for user in range(1, 151):
        lw.record(user, user)
    assert len(lw) == 100
    assert lw.get(50) is None and lw.get(51) == 51
    lw.record(51, 500)  # writing again makes 51 the most recent
    lw.record(1000, 1)
    assert lw.get(51) == 500 and lw.get(52) is None
