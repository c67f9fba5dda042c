"""The CDN's pure parts: an edge's cache (LRU by bytes, max-age, purge) and the asset catalogue."""

from __future__ import annotations

import pytest

from core.engine import assets
from core.engine.edgecache import GB, EdgeCache, cost_usd, max_age


def kb(n: int) -> bytes:
    return b"x" * (n * 1024)


def test_a_hit_is_the_stored_object_and_a_miss_is_counted():
    cache = EdgeCache(100 * 1024)
    assert cache.get("/static/hero.jpg", now=0) is None
    assert cache.put("/static/hero.jpg", kb(10), "image/jpeg", ttl_s=60, now=0)
    entry = cache.get("/static/hero.jpg", now=1)
    assert entry is not None and entry.body == kb(10) and entry.content_type == "image/jpeg"
    assert (cache.hits, cache.misses, len(cache), cache.used_bytes) == (1, 1, 1, 10 * 1024)


def test_the_least_recently_used_go_first_until_the_new_object_fits_in_bytes():
    cache = EdgeCache(100 * 1024)
    for name in ("a", "b", "c"):
        cache.put(name, kb(30), "x", 60, now=0)
    cache.get("a", now=1)  # a is now the most recently used: b is the oldest
    cache.put("d", kb(50), "x", 60, now=2)  # 90 + 50 > 100: b then c must go
    assert cache.paths() == ["a", "d"]
    assert cache.evictions == 2 and cache.used_bytes == 80 * 1024
    # Many small objects leave for one big one: it is bytes that are bounded, not objects.
    cache.put("big", kb(100), "x", 60, now=3)
    assert cache.paths() == ["big"] and cache.evictions == 4


def test_an_object_bigger_than_the_cache_or_without_max_age_is_not_kept_and_evicts_nothing():
    cache = EdgeCache(50 * 1024)
    cache.put("a", kb(20), "x", 60, now=0)
    assert not cache.put("huge", kb(51), "x", 60, now=0)
    assert not cache.put("nostore", kb(1), "x", 0, now=0)
    assert cache.paths() == ["a"] and cache.evictions == 0


def test_an_object_expires_after_its_max_age_and_the_next_lookup_misses():
    cache = EdgeCache(1024 * 1024)
    cache.put("logo", kb(20), "image/png", ttl_s=5, now=100)
    assert cache.get("logo", now=104.9) is not None
    assert cache.get("logo", now=105.0) is None  # expired exactly at stored + max-age
    assert "logo" not in cache and cache.used_bytes == 0
    assert (cache.hits, cache.misses, cache.expired, cache.evictions) == (1, 1, 1, 0)
    assert cache.put("logo", kb(20), "image/png", ttl_s=5, now=106)
    assert cache.get("logo", now=108).age(108) == 2  # the Age header: since it was stored


def test_purge_removes_one_object_or_everything():
    cache = EdgeCache(1024 * 1024)
    for path in ("/static/logo.v1.png", "/static/logo.v2.png", "/static/hero.jpg"):
        cache.put(path, kb(10), "x", 60, now=0)
    assert cache.purge(lambda p: assets.key_of(p) == "logo") == 2  # every version of the logo
    assert cache.paths() == ["/static/hero.jpg"]
    assert cache.get("/static/logo.v2.png", now=1) is None  # the next request is a miss
    assert cache.purge() == 1 and len(cache) == 0 and cache.used_bytes == 0
    assert cache.evictions == 0  # a purge is not an eviction


def test_a_smaller_bound_evicts_at_once():
    cache = EdgeCache(100 * 1024)
    for name in ("a", "b", "c"):
        cache.put(name, kb(30), "x", 60, now=0)
    cache.resize(40 * 1024)
    assert cache.paths() == ["c"] and cache.evictions == 2


@pytest.mark.parametrize(("header", "seconds"), [
    ("public, max-age=300", 300), ("max-age=0", 0), ("s-maxage=30, max-age=300", 30), ("no-store", 0),
    ("private, max-age=60", 0), ("no-cache", 0), (None, 7), ("public", 7),
])
def test_max_age_reads_cache_control_as_a_shared_cache_does(header, seconds):
    assert max_age(header, default_s=7) == seconds


def test_cost_is_bytes_times_the_price_per_gb():
    assert cost_usd(GB, 0.085) == pytest.approx(0.085)
    assert cost_usd(0, 1) == 0


def test_the_catalogue_names_and_bytes_are_stable_and_versioned():
    logo = assets.BY_KEY["logo"]
    assert assets.lookup("/static/logo.v2.png") == (logo, 2)
    assert assets.lookup("/static/hero.jpg")[0].size == 200 * 1024
    assert assets.lookup("/static/nope.png") is None and assets.lookup("/index.html") is None
    v1, v2 = assets.body("logo.v1.png", logo.size), assets.body("logo.v2.png", logo.size)
    assert len(v1) == logo.size and v1 != v2 and assets.body("logo.v1.png", logo.size) == v1
    assert assets.static_name("www.scalelab.test") == "static.scalelab.test"
    assert assets.cdn_name("www.scalelab.test") == "cdn.scalelab.test"
    assert assets.page_paths(3, "mobile") == ["/static/logo.v3.png", "/static/hero.jpg"]


def test_a_page_references_its_assets_on_the_static_name_with_a_fallback_on_the_site():
    page = f"<html><body>{assets.page_tags('www.scalelab.test', 8080, 2)}</body></html>"
    refs = assets.references(page)
    assert [r.path for r in refs] == ["/static/logo.v2.png", "/static/hero.jpg", "/static/app.css", "/static/app.js"]
    assert {r.host for r in refs} == {"static.scalelab.test:8080"} and refs[0].name == "static.scalelab.test"
    assert all(r.fallback == r.path for r in refs)
    mobile = assets.refs_from_json(assets.refs_to_json(assets.page_refs("www.scalelab.test", 8080, 1, "mobile")))
    assert [r.path for r in mobile] == ["/static/logo.v1.png", "/static/hero.jpg"]
    assert assets.refs_from_json([{"url": "ftp://x/static/a"}, 3, {"url": "http://h/other", "fallback": "/"}]) == []
