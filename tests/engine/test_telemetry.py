import json
import random

from core.engine.telemetry import Hop, Telemetry, Trace

NODES = ["dns", "web", "browser", "phone"]
EDGES = [("browser", "dns"), ("phone", "dns"), ("browser", "web"), ("phone", "web")]


def trace(i: int, ok: bool = True, ms: float = 10.0) -> Trace:
    client = "browser" if i % 2 else "phone"
    hops = []
    if i % 50 == 0:
        hops.append(Hop(client, "dns", "dns", "A www.scalelab.test", True, "NOERROR", 0.3, 0.0))
    hops.append(Hop(client, "web", "http", "GET /", ok, "200" if ok else "503", ms, 0.3))
    return Trace(id=f"r-{i}", client=client, t=1000.0, ok=ok, ms=ms + 0.3, hops=hops)


def test_it_summarises_rates_and_percentiles_over_the_window():
    tel = Telemetry(window_s=1.0, frame_interval=0.25, rng=random.Random(0))
    t = 100.0
    tel.frame(t, NODES, EDGES)
    for step in range(4):  # one second of 100 req/s, latencies 1..100 ms
        for i in range(25):
            n = step * 25 + i
            tel.record(trace(n, ok=n % 10 != 0, ms=float(n % 100 + 1)))
        frame = tel.frame(t + 0.25 * (step + 1), NODES, EDGES)
    assert frame["totals"]["rps"] == 100.0
    assert frame["totals"]["err_rps"] == 10.0
    assert frame["edges"]["browser>web"]["rps"] == 50.0
    assert frame["nodes"]["dns"]["rps"] == 2.0
    assert 40 <= frame["nodes"]["web"]["p50_ms"] <= 60
    assert 90 <= frame["nodes"]["web"]["p95_ms"] <= 100


def test_it_forgets_what_left_the_window():
    tel = Telemetry(window_s=1.0, frame_interval=0.25)
    tel.frame(0.0, NODES, EDGES)
    tel.record(trace(1))
    assert tel.frame(0.25, NODES, EDGES)["totals"]["rps"] > 0
    for k in range(2, 7):
        frame = tel.frame(0.25 * k, NODES, EDGES)
    assert frame["totals"]["rps"] == 0 and frame["totals"]["p50_ms"] is None


def test_frames_stay_bounded_at_1000_requests_per_second():
    """Ten simulated seconds at 1,000 req/s: 4 frames a second, each small, whatever the load."""
    tel = Telemetry(window_s=1.0, frame_interval=0.25, samples_per_frame=6)
    sizes = []
    frames = 0
    n = 0
    for tick in range(1, 41):
        for _ in range(250):
            tel.record(trace(n, ok=n % 7 != 0, ms=float(n % 300)))
            n += 1
        tel.event(tick * 0.25, "traffic_set", rate=tick)
        sizes.append(len(json.dumps(tel.frame(tick * 0.25, NODES, EDGES))))
        frames += 1
    assert frames / 10 == 4  # frames per simulated second
    assert n == 10_000
    assert max(sizes) < 8 * 1024  # bytes per frame
    last = json.loads(json.dumps(tel.frame(10.25, NODES, EDGES)))
    assert len(last["samples"]) <= 6


def test_samples_and_events_reset_each_frame():
    tel = Telemetry(samples_per_frame=3)
    for i in range(10):
        tel.record(trace(i))
    tel.event(1.0, "node_killed", node="web")
    frame = tel.frame(1.0, NODES, EDGES)
    assert len(frame["samples"]) == 3
    assert frame["events"] == [{"t": 1.0, "kind": "node_killed", "node": "web"}]
    frame = tel.frame(1.25, NODES, EDGES)
    assert frame["samples"] == [] and frame["events"] == []


def rw_trace(i: int, *, write: bool = False, stale: bool = False) -> Trace:
    t = trace(i)
    t.op, t.write, t.stale = ("post" if write else "feed"), write, stale
    return t


def test_it_counts_writes_and_stale_reads_per_window_and_since_the_start():
    tel = Telemetry(window_s=1.0, frame_interval=0.25)
    tel.frame(0.0, NODES, EDGES)
    for i in range(20):
        tel.record(rw_trace(i, write=i % 4 == 0, stale=i % 10 == 1))
    for step in range(1, 5):  # fill the one-second window exactly
        totals = tel.frame(0.25 * step, NODES, EDGES)["totals"]
    assert (totals["writes_rps"], totals["stale_rps"]) == (5.0, 2.0)
    assert (totals["writes_total"], totals["stale_total"]) == (5, 2)
    for k in range(2, 4):  # the window moves on; the totals since the start stay
        totals = tel.frame(float(k), NODES, EDGES)["totals"]
    assert (totals["writes_rps"], totals["stale_rps"]) == (0.0, 0.0)
    assert (totals["writes_total"], totals["stale_total"]) == (5, 2)


def test_it_reports_one_stale_read_event_per_frame():
    tel = Telemetry()
    assert tel.stale_read(1.0, node="browser", user=3, read_lsn=4, write_lsn=9)
    assert not tel.stale_read(1.1, node="phone", user=5, read_lsn=1, write_lsn=2)
    assert tel.frame(1.25, NODES, EDGES)["events"] == [
        {"t": 1.0, "kind": "stale_read", "node": "browser", "user": 3, "read_lsn": 4, "write_lsn": 9}
    ]
    assert tel.stale_read(1.3, node="phone", user=5, read_lsn=1, write_lsn=2)
    assert [e["user"] for e in tel.frame(1.5, NODES, EDGES)["events"]] == [5]


def test_samples_carry_the_operation_and_flag_writes_and_stale_reads_only_when_true():
    tel = Telemetry(samples_per_frame=6)
    tel.record(rw_trace(1, write=True))
    tel.record(rw_trace(2, stale=True))
    tel.record(rw_trace(3))
    write, stale, plain = tel.frame(1.0, NODES, EDGES)["samples"]
    assert (write["op"], write["write"], "stale" in write) == ("post", True, False)
    assert (stale["op"], stale["stale"], "write" in stale) == ("feed", True, False)
    assert "write" not in plain and "stale" not in plain
