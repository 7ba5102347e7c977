"""The plan's lookups and its JSON, one behaviour per test (written against surviving mutants)."""

from __future__ import annotations

import pytest

from rangectl.plan import plan
from rangectl.scenario.validate import load_scenario
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def p2():
    return plan(load_scenario(ROOT / "scenarios" / "ward-portal-probe.yaml"), 2)


def test_lookups_of_unknown_names_say_which_name(p2):
    t1 = p2.team(1)
    for lookup, name in ((t1.node, "ghost"), (t1.network, "nowhere"), (p2.team, 9)):
        with pytest.raises(KeyError) as e:
            lookup(name)
        assert e.value.args == (name,)


def test_a_plan_is_for_one_team_unless_asked(p2):
    from rangectl.scenario.validate import load_scenario

    sc = load_scenario(ROOT / "scenarios" / "ward-portal-probe.yaml")
    assert [t.team for t in plan(sc).teams] == [1]
    assert [t["team"] for t in p2.as_dict()["teams"]] == [1, 2]


def _sc(extra_net: str | None = None, soc_nets: dict | None = None):
    from rangectl.scenario.model import Scenario

    nets = {"dmz": {"subnet": "10.40.1.0/24"}}
    if extra_net:
        nets["mgmt"] = {"subnet": extra_net}
    return Scenario.model_validate(
        {
            "rangectl": 1,
            "name": "probe-room",
            "title": "Probe room",
            "networks": nets,
            "nodes": {
                "gw": {"image": "router", "role": "infra", "forward": True, "interfaces": {"dmz": "10.40.1.1"}},
                "soc": {"image": "workstation", "role": "blue", "interfaces": soc_nets or {"dmz": "10.40.1.50"}},
            },
        }
    )


def test_the_probe_needs_its_own_address_beside_the_first_blue_node():
    from rangectl.errors import ScenarioError
    from rangectl.scenario.vantage import vantage_problems

    # a /30 holds two hosts: the blue node and the bridge; none left for the probe
    sc = _sc("10.40.9.0/30", {"dmz": "10.40.1.50", "mgmt": "10.40.9.1"})
    with pytest.raises(ScenarioError) as e:
        plan(sc)
    assert str(e.value) == (
        "network 'mgmt' (10.40.9.0/30) has no free address for rangectl's probe beside node 'soc' "
        "(it needs one besides the bridge's); use a larger subnet"
    )
    assert vantage_problems(sc) == [
        (("networks", "mgmt", "subnet"),
         "10.40.9.0/30 has 2 host address(es) and 1 node(s): the engine's bridge and rangectl's probe "
         "beside 'soc' need two more; use a larger subnet")
    ]


def test_a_point_to_point_subnet_counts_both_addresses_for_the_probe():
    from rangectl.scenario.vantage import vantage_problems

    sc = _sc("10.40.9.0/31", {"dmz": "10.40.1.50", "mgmt": "10.40.9.0"})
    assert vantage_problems(sc) == [
        (("networks", "mgmt", "subnet"),
         "10.40.9.0/31 has 2 host address(es) and 1 node(s): the engine's bridge and rangectl's probe "
         "beside 'soc' need two more; use a larger subnet")
    ]
    assert vantage_problems(_sc("10.40.9.0/29", {"dmz": "10.40.1.50", "mgmt": "10.40.9.1"})) == []


def test_node_json_gateway_and_sysctls_only_when_set():
    from rangectl.scenario.model import Scenario

    sc = Scenario.model_validate(
        {
            "rangectl": 1,
            "name": "json-shape",
            "title": "JSON shape",
            "networks": {"dmz": {"subnet": "10.41.1.0/24"}},
            "nodes": {
                "gw": {"image": "router", "role": "infra", "forward": True, "interfaces": {"dmz": "10.41.1.1"}},
                "web": {"image": "web", "role": "target", "gateway": "10.41.1.1", "interfaces": {"dmz": "10.41.1.10"},
                        "sysctls": {"net.ipv4.tcp_syncookies": 0}},
                "soc": {"image": "workstation", "role": "blue", "interfaces": {"dmz": "10.41.1.50"},
                        "capabilities": ["NET_ADMIN"]},
            },
        }
    )
    t2 = plan(sc, 2).team(2)
    web, gw, soc = t2.node("web"), t2.node("gw"), t2.node("soc")
    assert web.sysctls == {"net.ipv4.tcp_syncookies": "0"}
    assert web.as_dict()["sysctls"] == {"net.ipv4.tcp_syncookies": "0"} and "sysctls" not in gw.as_dict()
    assert web.as_dict()["gateway"] == "10.41.2.1" and gw.as_dict()["gateway"] is None
    assert soc.capabilities == ["NET_ADMIN"]  # asked for already: not added twice
    assert gw.capabilities == ["NET_ADMIN"]  # a router gets it
    assert t2.probe.image == "workstation" and t2.probe.role == "probe"  # where the first blue node stands
    assert t2.probe.gateway is None and t2.probe.as_dict()["gateway"] is None


def test_teams_below_one_are_refused():
    from rangectl.errors import ScenarioError

    with pytest.raises(ScenarioError) as e:
        plan(_sc(), 0)
    assert str(e.value) == "--teams must be at least 1"


def test_without_a_seed_the_scenario_name_draws_the_values():
    sc = load_scenario(ROOT / "scenarios" / "bank-phish.yaml")
    assert sc.variables, "bank-phish declares per-team variables"
    a, b = plan(sc, 2), plan(sc, 2, seed=sc.name)
    assert [t.values for t in a.teams] == [t.values for t in b.teams] and a.teams[0].values
    assert a.seed == b.seed == sc.name


def test_a_router_is_planned_as_a_router_and_other_nodes_are_not():
    """`forward: true` reaches the node's plan (the backend turns IP forwarding on from it); a node
    without it never forwards."""
    t2 = plan(_sc(), 2).team(2)
    assert t2.node("gw").forward is True and t2.node("gw").as_dict()["forward"] is True
    assert t2.node("soc").forward is False and t2.node("soc").as_dict()["forward"] is False


def test_a_plan_names_its_scenario_and_the_version_it_was_made_from():
    """The plan carries the scenario's name and the hash of its meaning: ranges.py refuses to touch a
    running range whose recorded hash differs, and the backend labels containers with both."""
    from rangectl.scenario.loader import scenario_hash

    sc = _sc()
    p = plan(sc, 2)
    assert p.scenario == "probe-room" and p.as_dict()["scenario"] == "probe-room"
    assert p.scenario_hash == scenario_hash(sc) and p.as_dict()["scenario_hash"] == scenario_hash(sc)
    assert len(p.scenario_hash) == 16 and int(p.scenario_hash, 16) >= 0
    # another subnet is another scenario version: the plan's hash follows it
    assert plan(_sc("10.40.9.0/29", {"dmz": "10.40.1.50", "mgmt": "10.40.9.1"})).scenario_hash != p.scenario_hash
