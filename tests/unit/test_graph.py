"""Topology drawings: the graph, plain text, Mermaid and Graphviz dot."""

from __future__ import annotations

import pytest

from rangectl.graph import render, to_dot, to_mermaid, to_text, topology
from rangectl.scenario.model import Scenario
from rangectl.scenario.validate import load_scenario
from tests.conftest import ROOT, scenario_files


@pytest.fixture(scope="module")
def small() -> Scenario:
    return Scenario.model_validate(
        {
            "rangectl": 1,
            "name": "g-test",
            "title": "Graph test",
            "networks": {"wan": {"subnet": "198.51.100.0/24"}, "dmz-net": {"subnet": "10.0.1.0/24"}},
            "nodes": {
                "edge-gw": {
                    "image": "router",
                    "role": "infra",
                    "forward": True,
                    "interfaces": {"wan": "198.51.100.1", "dmz-net": "10.0.1.1"},
                },
                "web": {"image": "web", "role": "target", "interfaces": {"dmz-net": "10.0.1.10"}},
                "red-1": {"image": "attacker", "role": "red", "interfaces": {"wan": "198.51.100.9"}},
            },
        }
    )


def test_topology_graph(small):
    g = topology(small)
    assert {n for n, d in g.nodes(data=True) if d["kind"] == "network"} == {"net:wan", "net:dmz-net"}
    assert {n for n, d in g.nodes(data=True) if d["kind"] == "node"} == {
        "node:edge-gw",
        "node:web",
        "node:red-1",
    }
    assert g.edges["node:edge-gw", "net:dmz-net"]["ip"] == "10.0.1.1"
    assert g.degree("node:edge-gw") == 2 and g.degree("net:wan") == 2


def test_topology_is_connected_through_the_router():
    import networkx as nx

    sc = load_scenario(ROOT / "scenarios" / "district-portal.yaml")
    g = topology(sc)
    assert nx.is_connected(g)
    path = nx.shortest_path(g, "node:attacker", "node:db")
    assert path == ["node:attacker", "net:wan", "node:edge", "net:internal", "node:db"]


def test_text(small):
    out = to_text(small)
    assert out.splitlines() == [
        "g-test",
        "├── network wan 198.51.100.0/24",
        "│   ├── edge-gw [infra, router] 198.51.100.1 (forwards)",
        "│   └── red-1 [red, attacker] 198.51.100.9",
        "└── network dmz-net 10.0.1.0/24",
        "    ├── edge-gw [infra, router] 10.0.1.1 (forwards)",
        "    └── web [target, web] 10.0.1.10",
    ]


def test_mermaid_ids_have_no_hyphens(small):
    out = to_mermaid(small)
    assert out.startswith("graph LR\n")
    assert 'net_dmz_net(["dmz-net<br/>10.0.1.0/24"])' in out
    assert 'node_edge_gw ---|"10.0.1.1"| net_dmz_net' in out
    assert "node_red_1" in out and ":::red" in out
    for line in out.splitlines()[1:]:
        ident = line.strip().split("[")[0].split("(")[0].split(" ")[0]
        assert "-" not in ident, line


def test_dot(small):
    out = to_dot(small)
    assert out.startswith('graph "g-test" {') and out.endswith("}")
    assert out.count("{") == out.count("}")
    assert '"node:web" -- "net:dmz-net" [label="10.0.1.10"];' in out
    assert 'fillcolor="#f56c6c"' in out  # red
    assert out.count(" -- ") == 4


@pytest.mark.parametrize("fmt", ["text", "mermaid", "dot"])
def test_render_dispatch(small, fmt):
    assert render(small, fmt) == {"text": to_text, "mermaid": to_mermaid, "dot": to_dot}[fmt](small)


def test_render_unknown_format(small):
    with pytest.raises(KeyError):
        render(small, "png")


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.name)
def test_examples_draw(path):
    sc = load_scenario(path)
    for fmt in ("text", "mermaid", "dot"):
        out = render(sc, fmt)
        for name in sc.nodes:
            assert name in out
