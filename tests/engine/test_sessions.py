"""Sessions (sans-I/O): a server's own table, the cookies a client keeps per user, what a logout
is, and how the telemetry totals count logouts; the sticky balancer's affinity."""

from __future__ import annotations

from core.engine.balancing import Balancer
from core.engine.sessions import (
    ANONYMOUS,
    KNOWN,
    SessionTable,
    UserSessions,
    cookie_header,
    cookie_value,
    parse_set_cookie,
)
from core.engine.telemetry import Telemetry, Trace


def test_a_servers_table_forgets_its_least_recently_used_sessions_first():
    table = SessionTable(capacity=2)
    a = table.create(1)
    b = table.create(2)
    assert table.get(a) == 1  # a is now the most recent
    table.create(3)
    assert table.get(b) is None and table.get(a) == 1 and len(table) == 2
    table.clear()
    assert table.get(a) is None


def test_cookies_round_trip_between_headers():
    assert parse_set_cookie(["sid=abc; Path=/; HttpOnly", "lb=web-2; Path=/", "junk"]) == {"sid": "abc", "lb": "web-2"}
    assert cookie_header({"sid": "abc", "lb": "web-2"}) == "sid=abc; lb=web-2"
    assert cookie_header({}) is None


def test_a_logout_is_a_session_sent_and_answered_as_anonymous_and_counts_once():
    jar = UserSessions()
    assert not jar.answered(7, {}, ANONYMOUS, {})  # a stranger stays a stranger: no logout
    assert not jar.answered(7, {}, KNOWN, {"sid": "t1", "lb": "web-1"})  # the log-in
    sent = jar.cookies(7)
    assert sent == {"sid": "t1", "lb": "web-1"} and jar.logged_in(7)
    assert not jar.answered(7, sent, KNOWN, {})
    assert not jar.answered(7, sent, None, {})  # a failed request (no answer) is not a logout
    assert jar.answered(7, sent, ANONYMOUS, {"lb": "web-3"})
    assert not jar.logged_in(7) and jar.cookies(7) == {"lb": "web-3"}  # the balancer's cookie stays
    assert not jar.answered(7, jar.cookies(7), ANONYMOUS, {})  # counted once, not at every request
    assert jar.logouts == 1


def test_a_new_session_made_while_an_old_one_was_lost_is_kept():
    jar = UserSessions()
    jar.answered(7, {}, KNOWN, {"sid": "old"})
    old = jar.cookies(7)
    jar.answered(7, old, KNOWN, {"sid": "new"})  # a second log-in answered first
    assert jar.answered(7, old, ANONYMOUS, {})  # the old one's answer comes late
    assert jar.cookies(7) == {"sid": "new"}


def test_the_totals_count_logouts_in_the_window_and_since_the_start():
    telemetry = Telemetry(frame_interval=0.25)
    for i in range(3):
        telemetry.record(Trace(id=f"r{i}", client="browser", t=0.0, logout=i < 2))
    totals = telemetry.frame(1.0, ["browser"], [])["totals"]
    assert totals["logouts_total"] == 2 and totals["logouts_rps"] > 0
    for t in (1.25, 1.5, 1.75, 2.0):  # the window (four frames) moves past them
        later = telemetry.frame(t, ["browser"], [])["totals"]
    assert later["logouts_total"] == 2 and later["logouts_rps"] == 0


def test_sticky_keeps_a_user_on_the_backend_their_cookie_names_while_it_is_up():
    lb = Balancer(["web-1", "web-2", "web-3"], algorithm="sticky")
    assert [lb.pick(affinity="web-2") for _ in range(5)] == ["web-2"] * 5
    assert [lb.pick() for _ in range(3)] == ["web-1", "web-2", "web-3"]  # no cookie: round robin
    lb.failed("web-2"), lb.failed("web-2")
    assert lb.pick(affinity="web-2") != "web-2"  # its server is down: the next in turn
    assert lb.pick(affinity="web-9") in {"web-1", "web-3"}  # a server that is gone
    lb.set_algorithm("round_robin")
    assert {lb.pick(affinity="web-1") for _ in range(4)} == {"web-1", "web-3"}  # only sticky reads it


def test_one_cookie_is_read_from_a_cookie_header():
    assert cookie_value("lb=web-2; sid=abc", "sid") == "abc"
    assert cookie_value("xsid=1; sid=2", "sid") == "2"
    assert cookie_value("lb=web-2", "sid") is None and cookie_value(None, "sid") is None
