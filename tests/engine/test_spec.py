import pytest

from core.engine.spec import SpecError, format_path, parse_topology, topology_from_dict
from tests.engine.topologies import stage1


def errors_of(data) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_topology(data)
    return {format_path(e.path): e.reason for e in info.value.errors}


def test_it_fills_in_defaults_and_addresses():
    topo = stage1()
    web = topo.node("web")
    assert web.params == {"workers": 4, "service_ms": 25.0, "queue_limit": 64, "assets": "off",
                          "static_max_age_s": 300.0}
    assert topo.node("browser").host == 10  # unset hosts count up from .10
    assert topo.node("phone").host == 11


def test_it_round_trips_through_the_normalised_form():
    topo = stage1(ttl=9)
    assert topology_from_dict(topo.to_dict()) == topo


def test_it_reports_every_error_with_its_path():
    errs = errors_of(
        {
            "nodes": [
                {"id": "Web", "kind": "web"},
                {"id": "db", "kind": "mainframe"},
                {"id": "w2", "kind": "web", "params": {"workers": 0, "colour": "red"}},
                {"id": "dns", "kind": "dns", "params": {"target": "nowhere"}},
            ],
            "edges": [["w2", "ghost"]],
        }
    )
    assert "must be lower-case" in errs["topology.nodes[0].id"]
    assert "unknown kind 'mainframe'" in errs["topology.nodes[1].kind"]
    assert "at least 1" in errs["topology.nodes[2].params.workers"]
    assert "unknown parameter" in errs["topology.nodes[2].params.colour"]
    assert "no node with id 'nowhere'" in errs["topology.nodes[3].params.target"]
    assert "no node with id 'ghost'" in errs["topology.edges[0][1]"]


def test_it_rejects_duplicate_ids_and_hosts():
    errs = errors_of({"nodes": [{"id": "a", "kind": "web", "host": 7}, {"id": "a", "kind": "web", "host": 7}]})
    assert "duplicate node id" in errs["topology.nodes[1].id"]
    assert "already used" in errs["topology.nodes[1].host"]


@pytest.mark.parametrize("bad", [None, [], "x", {"nodes": []}, {"nodes": [1]}, {"nodes": [{}]}])
def test_it_gives_a_clear_error_for_garbage(bad):
    with pytest.raises(SpecError) as info:
        parse_topology(bad)
    assert info.value.errors
