"""The per-team addressing rule (rangectl/plan.py, docs/planning.md), example- and property-based."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rangectl.errors import ScenarioError
from rangectl.plan import MAX_TEAMS, bridge_offset, place_subnets, plan
from rangectl.scenario.loader import Loaded
from rangectl.scenario.model import Scenario
from rangectl.scenario.validate import check_meaning, load_scenario
from rangectl.scenario.vantage import RESERVED
from tests.conftest import ROOT

# --- building scenarios --------------------------------------------------------------------------


def scenario(networks: dict[str, str], nodes: dict[str, dict]) -> Scenario:
    return Scenario.model_validate(
        {
            "rangectl": 1,
            "name": "plan-test",
            "title": "Plan test",
            "networks": {n: {"subnet": s} for n, s in networks.items()},
            "nodes": nodes,
        }
    )


def meaning_problems(sc: Scenario) -> list:
    """Meaning problems of an in-memory scenario, policy lookup aside."""
    loaded = Loaded(path=Path("mem.yaml"), data={}, scenario=sc)
    return [p for p in check_meaning(loaded) if p.path != "scoring.policy"]


def _reserved(net: IPv4Network) -> bool:
    return any(net.overlaps(r) for r in RESERVED)


REGIONS = [
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
    IPv4Network("198.18.0.0/15"),
    IPv4Network("100.64.0.0/10"),
    IPv4Network("203.0.113.0/24"),
]


@st.composite
def subnets(draw) -> list[IPv4Network]:
    """1-5 non-overlapping, non-reserved subnets, /16 to /29, often packed close together."""
    count = draw(st.integers(1, 5))
    out: list[IPv4Network] = []
    region = draw(st.sampled_from(REGIONS))
    for _ in range(count * 3):
        if len(out) == count:
            break
        prefix = draw(st.integers(max(16, region.prefixlen), 29))
        size = 2 ** (32 - prefix)
        if draw(st.booleans()) and out:
            # right next to (or just above) an existing subnet: forces placement to skip
            anchor = draw(st.sampled_from(out))
            start = int(anchor.broadcast_address) + 1 + draw(st.integers(0, 3)) * size
        else:
            start = int(region.network_address) + draw(st.integers(0, region.num_addresses - 1))
        start -= start % size
        if start + size > 2**32:
            continue
        net = IPv4Network((start, prefix))
        if _reserved(net) or any(net.overlaps(o) for o in out):
            continue
        out.append(net)
    if not out:
        out.append(IPv4Network("10.1.0.0/24"))
    return out


@st.composite
def scenarios(draw) -> Scenario:
    """A valid scenario: a router on every network, hosts at random offsets, gateways set."""
    nets = draw(subnets())
    names = [f"n{i}" for i in range(len(nets))]
    used: dict[str, set[int]] = {n: set() for n in names}

    def host(i: int) -> IPv4Address:
        net = nets[i]
        usable = net.num_addresses - 2
        # leave at least two usable addresses free: the bridge's and rangectl's probe's (beside a blue node)
        free = [o for o in range(1, usable + 1) if o not in used[names[i]]] if usable <= 64 else None
        if free is not None:
            if len(free) <= 2:
                return None
            off = draw(st.sampled_from(free[:-1] if draw(st.booleans()) else free[1:]))
        else:
            off = draw(st.integers(1, usable).filter(lambda o: o not in used[names[i]]))
        used[names[i]].add(off)
        return net.network_address + off

    router_if = {}
    for i, n in enumerate(names):
        ip = host(i)
        if ip is not None:
            router_if[n] = str(ip)
    nodes: dict[str, dict] = {}
    if router_if:
        nodes["router"] = {"image": "router", "role": "infra", "forward": True, "interfaces": router_if}
    for k in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(names) - 1))
        ip = host(i)
        if ip is None:
            continue
        node = {
            "image": "workstation",
            "role": draw(st.sampled_from(["target", "blue", "red"])),
            "interfaces": {names[i]: str(ip)},
        }
        if names[i] in router_if and draw(st.booleans()):
            node["gateway"] = router_if[names[i]]
        nodes[f"h{k}"] = node
    if not nodes:
        nodes["lonely"] = {
            "image": "web",
            "role": "target",
            "interfaces": {names[0]: str(nets[0].network_address + 1)},
        }
    return scenario(dict(zip(names, map(str, nets), strict=True)), nodes)


def _offsets(sc: Scenario) -> dict[tuple[str, str], int]:
    return {
        (node, net): int(ip) - int(sc.networks[net].subnet.network_address)
        for node, n in sc.nodes.items()
        for net, ip in n.interfaces.items()
    }


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- properties ------------------------------------------------------------------------------


@SETTINGS
@given(sc=scenarios(), teams=st.integers(1, 16))
def test_plan_properties(sc, teams):
    assert meaning_problems(sc) == []
    p = plan(sc, teams)
    assert [t.team for t in p.teams] == list(range(1, teams + 1))

    # team 1 is the file, address for address
    t1 = p.team(1)
    assert {n.name: n.subnet for n in t1.networks} == {k: v.subnet for k, v in sc.networks.items()}
    for node in t1.nodes:
        assert node.interfaces == sc.nodes[node.name].interfaces
        assert node.gateway == sc.nodes[node.name].gateway

    # no two subnets overlap, across all teams; none touches reserved space
    everything = [n.subnet for t in p.teams for n in t.networks]
    for i, a in enumerate(everything):
        assert not _reserved(a), a
        for b in everything[i + 1 :]:
            assert not a.overlaps(b), (a, b)

    offsets = _offsets(sc)
    bridges = {}
    for t in p.teams:
        assert [n.name for n in t.networks] == list(sc.networks)
        for net in t.networks:
            assert net.subnet.prefixlen == sc.networks[net.name].subnet.prefixlen
            # the bridge: inside, usable, not a node's address, same offset in every team
            assert net.bridge in net.subnet
            if net.subnet.prefixlen < 31:
                assert net.bridge not in (net.subnet.network_address, net.subnet.broadcast_address)
            off = int(net.bridge) - int(net.subnet.network_address)
            assert bridges.setdefault(net.name, off) == off
            assert net.bridge not in {ip for n in t.nodes for ip in n.interfaces.values()}
        subnet_of = {n.name: n.subnet for n in t.networks}
        for node in t.nodes:
            assert node.role == sc.nodes[node.name].role and node.image == sc.nodes[node.name].image
            for net, ip in node.interfaces.items():
                # every host keeps its offset within its subnet
                assert ip in subnet_of[net]
                assert int(ip) - int(subnet_of[net].network_address) == offsets[(node.name, net)]
            # the gateway is the same team's router address
            if sc.nodes[node.name].gateway is not None:
                router = next(
                    n for n in t.nodes if sc.nodes[node.name].gateway in sc.nodes[n.name].interfaces.values()
                )
                assert node.gateway in router.interfaces.values()
                assert any(node.gateway in subnet_of[net] for net in node.interfaces)
            else:
                assert node.gateway is None
        # the address map covers every file address, one to one
        assert sorted(t.address_map) == sorted(
            {ip for n in sc.nodes.values() for ip in n.interfaces.values()}
        )
        assert len(set(t.address_map.values())) == len(t.address_map)


@SETTINGS
@given(sc=scenarios(), teams=st.integers(1, 16))
def test_plan_is_deterministic(sc, teams):
    a = plan(sc, teams).as_dict()
    b = plan(Scenario.model_validate(sc.model_dump(by_alias=True)), teams).as_dict()
    assert a == b


@SETTINGS
@given(sc=scenarios(), teams=st.integers(2, 16))
def test_more_teams_extend_fewer(sc, teams):
    """Adding a team never moves the teams already planned (ranges can grow)."""
    small = plan(sc, teams - 1).as_dict()["teams"]
    big = plan(sc, teams).as_dict()["teams"]
    assert big[: teams - 1] == small


def _naive_place(subnets_: list[IPv4Network], teams: int) -> list[list[IPv4Network]]:
    """The rule as docs/planning.md states it, one candidate at a time (slow, obvious)."""
    taken = list(subnets_)
    out = [list(subnets_)]
    for _ in range(2, teams + 1):
        row = []
        for net in subnets_:
            m = 1
            while True:
                cand = IPv4Network((int(net.network_address) + m * net.num_addresses, net.prefixlen))
                if not _reserved(cand) and not any(cand.overlaps(t) for t in taken):
                    break
                m += 1
            taken.append(cand)
            row.append(cand)
        out.append(row)
    return out


@SETTINGS
@given(nets=subnets(), teams=st.integers(1, 16))
def test_placement_matches_the_stated_rule(nets, teams):
    assert place_subnets(nets, teams) == _naive_place(nets, teams)


@SETTINGS
@given(nets=subnets(), teams=st.integers(2, 16))
def test_placement_is_aligned_and_moves_up(nets, teams):
    rows = place_subnets(nets, teams)
    for row in rows[1:]:
        for orig, new in zip(nets, row, strict=True):
            assert int(new.network_address) % new.num_addresses == 0
            assert new.network_address > orig.network_address
            assert (int(new.network_address) - int(orig.network_address)) % orig.num_addresses == 0


# --- examples ----------------------------------------------------------------------------------


def test_three_teams_of_the_district_portal():
    sc = load_scenario(ROOT / "scenarios" / "district-portal.yaml")
    p = plan(sc, 3)
    subnets_by_team = {t.team: [str(n.subnet) for n in t.networks] for t in p.teams}
    assert subnets_by_team == {
        1: ["203.0.113.0/24", "10.20.1.0/24", "10.20.2.0/24"],
        2: ["203.0.114.0/24", "10.20.3.0/24", "10.20.4.0/24"],
        3: ["203.0.115.0/24", "10.20.5.0/24", "10.20.6.0/24"],
    }
    assert [str(n.bridge) for n in p.team(3).networks] == ["203.0.115.254", "10.20.5.254", "10.20.6.254"]
    assert str(p.team(2).ip_of("portal")) == "10.20.3.10"
    assert str(p.team(3).node("soc").gateway) == "10.20.6.1"
    assert str(p.team(3).node("attacker").gateway) == "203.0.115.1"


def test_placement_skips_docker_default_bridge():
    rows = place_subnets([IPv4Network("172.16.0.0/16")], 3)
    assert [str(r[0]) for r in rows] == ["172.16.0.0/16", "172.18.0.0/16", "172.19.0.0/16"]


def test_placement_jumps_over_loopback_quickly():
    rows = place_subnets([IPv4Network("126.255.255.248/29")], 3)
    assert [str(r[0]) for r in rows[1:]] == ["128.0.0.0/29", "128.0.0.8/29"]


def test_no_space_above_the_subnet():
    with pytest.raises(
        ScenarioError, match="no free address space left for another copy of 223.255.255.248/29"
    ):
        place_subnets([IPv4Network("223.255.255.248/29")], 2)


def test_placement_skips_the_files_own_subnets():
    nets = [IPv4Network("10.0.0.0/24"), IPv4Network("10.0.1.0/24"), IPv4Network("10.0.3.0/24")]
    rows = place_subnets(nets, 2)
    assert [str(n) for n in rows[1]] == ["10.0.2.0/24", "10.0.4.0/24", "10.0.5.0/24"]


def test_mixed_sizes_keep_alignment():
    nets = [IPv4Network("10.0.0.0/16"), IPv4Network("10.1.0.0/29")]
    rows = place_subnets(nets, 3)
    assert [str(n) for n in rows[1]] == ["10.2.0.0/16", "10.1.0.8/29"]
    assert [str(n) for n in rows[2]] == ["10.3.0.0/16", "10.1.0.16/29"]


def test_bridge_is_highest_free_usable_address():
    net = IPv4Network("10.0.0.0/24")
    assert bridge_offset(net, set()) == 254
    assert bridge_offset(net, {IPv4Address("10.0.0.254")}) == 253
    assert bridge_offset(net, {IPv4Address("10.0.0.254"), IPv4Address("10.0.0.253")}) == 252


def test_bridge_on_a_30_with_one_host():
    net = IPv4Network("10.0.0.0/30")
    assert bridge_offset(net, {IPv4Address("10.0.0.1")}) == 2
    assert bridge_offset(net, {IPv4Address("10.0.0.2")}) == 1


def test_bridge_on_a_30_with_both_hosts_used():
    """A /30 has two usable addresses; with both taken by nodes the engine has none left."""
    net = IPv4Network("10.0.0.0/30")
    with pytest.raises(ScenarioError, match="10.0.0.0/30 has no free address for the engine's bridge"):
        bridge_offset(net, {IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")})
    sc = scenario(
        {"p2p": "10.0.0.0/30"},
        {
            "a": {"image": "router", "role": "infra", "interfaces": {"p2p": "10.0.0.1"}},
            "b": {"image": "router", "role": "infra", "interfaces": {"p2p": "10.0.0.2"}},
        },
    )
    with pytest.raises(ScenarioError, match="use a larger subnet"):
        plan(sc, 1)


def test_bridge_on_a_31_uses_either_address():
    net = IPv4Network("10.0.0.0/31")
    assert bridge_offset(net, set()) == 1
    assert bridge_offset(net, {IPv4Address("10.0.0.1")}) == 0


def test_full_subnet_is_a_clear_error():
    nodes = {
        f"h{i}": {"image": "workstation", "role": "target", "interfaces": {"lan": f"10.9.0.{i}"}}
        for i in range(1, 7)
    }
    sc = scenario({"lan": "10.9.0.0/29"}, nodes)
    # the validator says so with the field ...
    assert [p.path for p in meaning_problems(sc)] == ["networks.lan.subnet"]
    assert "the engine's bridge needs one more" in meaning_problems(sc)[0].message
    with pytest.raises(
        ScenarioError, match=r"subnet 10\.9\.0\.0/29 has no free address for the engine's bridge"
    ):
        plan(sc, 1)  # ... and the planner refuses it too


def test_team_counts():
    sc = load_scenario(ROOT / "scenarios" / "ward-portal-probe.yaml")
    assert len(plan(sc, MAX_TEAMS).teams) == MAX_TEAMS
    with pytest.raises(ScenarioError, match=f"at most {MAX_TEAMS}"):
        plan(sc, MAX_TEAMS + 1)
    with pytest.raises(ScenarioError, match="at least 1"):
        plan(sc, 0)


def test_capabilities_for_routers_and_blue_nodes():
    sc = load_scenario(ROOT / "scenarios" / "district-portal.yaml")
    t = plan(sc, 1).team(1)
    assert "NET_ADMIN" in t.node("edge").capabilities
    assert "NET_ADMIN" in t.node("soc").capabilities
    assert "NET_ADMIN" not in t.node("portal").capabilities


def test_plan_as_dict_shape():
    sc = load_scenario(ROOT / "scenarios" / "ward-portal-probe.yaml")
    d = plan(sc, 2).as_dict()
    assert set(d) == {"scenario", "scenario_hash", "seed", "teams"}
    assert d["teams"][1]["networks"][0] == {
        "name": "wan",
        "subnet": "198.51.101.0/24",
        "bridge": "198.51.101.254",
    }
    soc = next(n for n in d["teams"][1]["nodes"] if n["name"] == "soc")
    assert soc == {
        "name": "soc",
        "role": "blue",
        "image": "workstation",
        "interfaces": {"dmz": "10.30.2.50"},
        "gateway": "10.30.2.1",
        "forward": False,
        "capabilities": ["NET_ADMIN"],
    }
