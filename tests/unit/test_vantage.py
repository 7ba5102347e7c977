"""Where probes run from (docs/scoring.md, "Probe vantage"): rangectl's hidden probe node, never a
node trainees control. Finding 2 of issue 16: availability and checks ran from the blue
workstation, where trainees are root, so one iptables REDIRECT faked them.

The Docker side (the REDIRECT itself) is tests/integration/test_vantage_docker.py.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Network
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rangectl.drill import checks
from rangectl.errors import ScenarioError
from rangectl.plan import plan
from rangectl.scenario.model import Availability, Check, Scenario
from rangectl.scenario.validate import load_scenario, validate_file
from rangectl.scenario.vantage import PROBE, PROBE_ROLE, probe_host, vantage_problems
from tests.conftest import FIXTURES, run_cli, scenario_files

BASE = """\
rangectl: 1
name: vantage
title: Vantage test
networks:
  wan: {subnet: 198.51.100.0/24}
  dmz: {subnet: 10.10.1.0/24}
  lan: {subnet: 10.10.2.0/24}
nodes:
  gw: {image: router, role: infra, forward: true, interfaces: {wan: 198.51.100.1, dmz: 10.10.1.1, lan: 10.10.2.1}}
  portal:
    image: web
    role: target
    gateway: 10.10.1.1
    interfaces: {dmz: 10.10.1.10}
    services: [{name: http, port: 80}]
  soc: {image: workstation, role: blue, gateway: 10.10.2.1, interfaces: {lan: 10.10.2.50}}
  soc2: {image: workstation, role: blue, gateway: 10.10.1.1, interfaces: {dmz: 10.10.1.51}}
  scanner: {image: attacker, role: red, gateway: 198.51.100.1, interfaces: {wan: 198.51.100.66}}
objectives:
  - id: restore
    category: recovery
    points: 150
    check:
      http: {from: probe, to: portal, contains: ok}
  - id: block
    category: containment
    points: 200
    check:
      blocked: {from: scanner, to: portal, port: 80}
availability:
  - {node: portal, service: http, points: 5}
scoring: {policy: standard}
"""


def write(project: Path, text: str) -> Path:
    f = project / "s.yaml"
    f.write_text(text, encoding="utf-8")
    return f


def problems(project: Path, text: str) -> list:
    return validate_file(write(project, text)).problems


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


# --- validation: a probe vantage trainees control is refused --------------------------------------


def test_base_is_valid(project):
    assert problems(project, BASE) == []


@pytest.mark.parametrize(
    "old, new, path",
    [
        ("http: {from: probe,", "http: {from: soc,", "objectives[0].check.http.from"),
        (
            "http: {from: probe, to: portal, contains: ok}",
            "dns: {from: soc2, server: portal, name: x.test}",
            "objectives[0].check.dns.from",
        ),
        (
            "blocked: {from: scanner, to: portal, port: 80}",
            "blocked: {from: scanner, to: portal, port: 80, control: soc}",
            "objectives[1].check.blocked.control",
        ),
        ("blocked: {from: scanner,", "blocked: {from: soc,", "objectives[1].check.blocked.from"),
        ("blocked: {from: scanner,", "reachable: {from: soc2,", "objectives[1].check.reachable.from"),
        (
            "{node: portal, service: http, points: 5}",
            "{node: portal, service: http, points: 5, from: soc}",
            "availability[0].from",
        ),
    ],
)
def test_a_blue_vantage_is_refused_with_file_line_and_field(project, old, new, path):
    text = BASE.replace(old, new)
    assert text != BASE
    probs = problems(project, text)
    assert len(probs) == 1, probs
    (p,) = probs
    assert p.path == path
    assert p.line == line_of(text, new)
    assert "blue node" in p.message and "trainees" in p.message and PROBE in p.message
    assert str(p).startswith(f"{project / 's.yaml'}:{p.line}:")


@pytest.mark.parametrize(
    "old, new",
    [
        ("http: {from: probe,", "http: {from: gw,"),  # infra
        ("http: {from: probe,", "http: {from: scanner,"),  # red
        (
            "{node: portal, service: http, points: 5}",
            "{node: portal, service: http, points: 5, from: scanner}",
        ),
        ("{node: portal, service: http, points: 5}", "{node: portal, service: http, points: 5, from: probe}"),
        (
            "blocked: {from: scanner, to: portal, port: 80}",
            "blocked: {from: scanner, to: portal, port: 80, control: gw}",
        ),
        (
            "blocked: {from: scanner, to: portal, port: 80}",
            "blocked: {from: scanner, to: portal, port: 80, control: probe}",
        ),
    ],
)
def test_vantages_trainees_do_not_control_stay_allowed(project, old, new):
    text = BASE.replace(old, new)
    assert text != BASE
    assert problems(project, text) == []


def test_the_cli_exits_non_zero_with_one_line(project):
    text = BASE.replace("http: {from: probe,", "http: {from: soc,")
    f = write(project, text)
    proc = run_cli("validate", str(f), env={**os.environ, "RANGECTL_ROOT": str(project)})
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "objectives[0].check.http.from" in ln]
    assert len(lines) == 1
    assert f"{f}:{line_of(text, 'http: {from: soc,')}:" in lines[0] and "blue node" in lines[0]


def test_probe_is_a_reserved_node_name(project):
    text = BASE.replace("  scanner: {image: attacker", "  probe: {image: attacker").replace(
        "from: scanner", "from: probe"
    )
    probs = problems(project, text)
    assert any(p.path == "nodes.probe" and "reserved" in p.message for p in probs), probs


def test_probe_needs_a_blue_node(project):
    # without a blue node there is no probe: `from: probe` names nothing
    text = BASE.replace("role: blue", "role: target").replace("objectives:", "objectives_off:", 1)
    text = (
        text.split("objectives_off:")[0]
        + "availability:\n  - {node: portal, service: http, points: 5, from: probe}\n"
    )
    text += "scoring: {policy: standard}\n"
    probs = problems(project, text)
    assert [p.path for p in probs] == ["availability[0].from"] and "unknown node 'probe'" in probs[0].message


def test_a_full_subnet_leaves_no_room_for_the_probe(project):
    # /29: 6 hosts; lan holds gw, soc and four more: the bridge fits, the probe does not
    extra = "".join(
        f"  h{i}: {{image: web, role: target, gateway: 10.10.2.1, interfaces: {{lan: 10.10.2.{i}}}}}\n"
        for i in (2, 3, 4)
    )
    text = (
        BASE.replace("lan: {subnet: 10.10.2.0/24}", "lan: {subnet: 10.10.2.0/29}")
        .replace("10.10.2.50", "10.10.2.5")
        .replace("  scanner:", extra + "  scanner:")
    )
    probs = problems(project, text)
    assert [p.path for p in probs] == ["networks.lan.subnet"], probs
    assert "rangectl's probe" in probs[0].message
    with pytest.raises(ScenarioError, match="no free address for rangectl's probe"):
        plan(Scenario.model_validate(yaml.safe_load(text)), 1)


# --- the plan: a probe beside the first blue node, on its own address ----------------------------


def _sc(project: Path) -> Scenario:
    return load_scenario(write(project, BASE))


def test_the_probe_stands_where_the_first_blue_node_stands(project):
    sc = _sc(project)
    assert probe_host(sc) == "soc"
    p = plan(sc, 3)
    for t in p.teams:
        soc = t.node("soc")
        probe = t.probe
        assert probe is not None and probe.name == PROBE and probe.role == PROBE_ROLE
        assert PROBE not in [n.name for n in t.nodes]  # not a scenario node: not provisioned, not handed out
        assert list(probe.interfaces) == list(soc.interfaces)  # same networks
        assert probe.gateway == soc.gateway
        assert probe.capabilities == [] and not probe.forward
        lan = t.network("lan")
        ip = probe.interfaces["lan"]
        assert ip in lan.subnet and ip != lan.bridge
        assert ip not in {a for n in t.nodes for a in n.interfaces.values()}
        assert int(ip) - int(lan.subnet.network_address) == 253  # below the bridge's .254, every team
    d = p.as_dict()["teams"][0]
    assert d["probe"]["name"] == PROBE and all(n["name"] != PROBE for n in d["nodes"])


def test_no_blue_node_no_probe():
    sc = load_scenario(FIXTURES / "mini-range.yaml")
    data = sc.model_dump(by_alias=True, exclude_none=True)
    data["nodes"]["soc"]["role"] = "target"
    data["objectives"] = []
    sc2 = Scenario.model_validate(data)
    assert probe_host(sc2) is None
    assert all(t.probe is None for t in plan(sc2, 2).teams)
    assert checks.control_vantage(sc2, set()) is None


@st.composite
def blue_scenarios(draw):
    """A router, a blue node and targets on 1-3 subnets of /24 to /28 at random offsets."""
    count = draw(st.integers(1, 3))
    prefix = [draw(st.integers(24, 28)) for _ in range(count)]
    nets = {f"n{i}": IPv4Network((0x0A000000 + (i << 16), prefix[i])) for i in range(count)}
    nodes: dict = {}
    used: dict[str, set[int]] = {n: set() for n in nets}

    def addr(net: str) -> str:
        size = nets[net].num_addresses - 2
        off = draw(st.integers(1, size - 2).filter(lambda o: o not in used[net]))
        used[net].add(off)
        return str(nets[net].network_address + off)

    nodes["gw"] = {
        "image": "router",
        "role": "infra",
        "forward": True,
        "interfaces": {n: addr(n) for n in nets},
    }
    blue_nets = draw(st.lists(st.sampled_from(sorted(nets)), min_size=1, max_size=count, unique=True))
    nodes["soc"] = {"image": "workstation", "role": "blue", "interfaces": {n: addr(n) for n in blue_nets}}
    nodes["soc"]["gateway"] = nodes["gw"]["interfaces"][blue_nets[0]]
    for k in range(draw(st.integers(0, 4))):
        net = draw(st.sampled_from(sorted(nets)))
        if len(used[net]) + 3 >= nets[net].num_addresses - 2:
            continue
        nodes[f"t{k}"] = {
            "image": "web",
            "role": draw(st.sampled_from(["target", "red", "blue"])),
            "interfaces": {net: addr(net)},
        }
    return Scenario.model_validate(
        {
            "rangectl": 1,
            "name": "prop",
            "title": "p",
            "networks": {n: {"subnet": str(s)} for n, s in nets.items()},
            "nodes": nodes,
        }
    )


@settings(max_examples=150, deadline=None)
@given(sc=blue_scenarios(), teams=st.integers(1, 8))
def test_probe_addresses_never_collide(sc, teams):
    assert vantage_problems(sc) == []
    p = plan(sc, teams)
    offsets = None
    for t in p.teams:
        probe = t.probe
        host = t.node(probe_host(sc))
        assert list(probe.interfaces) == list(host.interfaces) and probe.gateway == host.gateway
        taken = {a for n in t.nodes for a in n.interfaces.values()} | {n.bridge for n in t.networks}
        mine = {}
        for net, ip in probe.interfaces.items():
            subnet = t.network(net).subnet
            assert ip in subnet and ip not in taken
            assert ip not in (subnet.network_address, subnet.broadcast_address)
            mine[net] = int(ip) - int(subnet.network_address)
        offsets = offsets or mine
        assert mine == offsets  # same place in every team


# --- the checks: default vantage is the probe, a blue vantage is refused at run time too ------------


class RecordingVantage(checks.Vantage):
    """Records the node every probe job is sent to; ``answer(node, kind, args)`` answers it."""

    def __init__(self, team):
        self.asked: list[str] = []
        self.answer = default_answer
        super().__init__(team, self._run, lambda *a: (1, ""))

    def _run(self, node, job):
        self.asked.append(node)
        self.calls.append((node, job.args["kind"], job.args["args"]))
        return self.answer(node, job.args["kind"], job.args["args"])


def default_answer(node, kind, args):
    if kind == "http":
        return 200, "ok", "http ok"
    if kind == "dns":
        return "NOERROR", ["1.2.3.4"], "dns ok"
    return True, f"{kind} ok"


@pytest.fixture
def mini():
    sc = load_scenario(FIXTURES / "mini-range.yaml")
    v = RecordingVantage(plan(sc, 2).team(2))
    v.calls = calls = []
    return sc, v, calls


def test_availability_runs_from_the_probe(mini):
    sc, v, calls = mini
    av = sc.availability[0]
    assert checks.availability_vantage(sc, av) == PROBE
    res = checks.availability_probe(sc, av, v)
    assert res.passed and v.asked == [PROBE] and calls[0][0] == PROBE
    assert calls[0][2][0] == str(v.team.ip_of("portal"))  # team 2's portal


def test_blocked_control_is_the_probe(mini):
    sc, v, calls = mini
    reach = {"scanner": False, PROBE: True}
    v.answer = lambda node, kind, args: (reach[node], "x")
    res = checks.run_check(
        sc, Check.model_validate({"blocked": {"from": "scanner", "to": "portal", "port": 80}}), v
    )
    assert res.passed and v.asked == ["scanner", PROBE]
    assert checks.control_vantage(sc, {"scanner", "portal"}) == PROBE
    assert checks.control_vantage(sc, {PROBE}) is None


def test_http_and_dns_from_probe(mini):
    sc, v, calls = mini
    checks.run_check(sc, Check.model_validate({"http": {"from": PROBE, "to": "portal"}}), v)
    checks.run_check(
        sc, Check.model_validate({"dns": {"from": PROBE, "server": "portal", "name": "x.test"}}), v
    )
    assert v.asked == [PROBE, PROBE]


@pytest.mark.parametrize(
    "check",
    [
        {"http": {"from": "soc", "to": "portal"}},
        {"dns": {"from": "soc", "server": "portal", "name": "x.test"}},
        {"reachable": {"from": "soc", "to": "portal", "port": 80}},
        {"blocked": {"from": "scanner", "to": "portal", "port": 80, "control": "soc"}},
    ],
)
def test_a_blue_vantage_is_refused_at_run_time(mini, check, monkeypatch):
    """Defence in depth: a scenario that skipped validation still never probes from soc."""
    sc, v, calls = mini
    v.answer = lambda node, kind, a: (False, "refused") if kind != "http" else (None, "", "x")
    with pytest.raises(checks.VantageRefused, match="trainees control it"):
        checks.run_check(sc, Check.model_validate(check), v)
    assert "soc" not in v.asked


def test_availability_from_blue_is_refused_at_run_time(mini):
    sc, v, calls = mini
    av = Availability.model_validate({"node": "portal", "service": "http", "points": 5, "from": "soc"})
    with pytest.raises(checks.VantageRefused):
        checks.availability_probe(sc, av, v)
    assert v.asked == []


# --- the shipped scenarios ------------------------------------------------------------------------


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.name)
def test_shipped_scenarios_probe_from_where_the_soc_sits(path):
    sc = load_scenario(path)
    assert vantage_problems(sc) == []
    host = probe_host(sc)
    assert host is not None
    for t in plan(sc, 2).teams:
        soc = t.node(host)
        # same subnets as the SOC workstation: a router filter that lets the SOC subnet in
        # lets the probe in too; same gateway, so the same path through the range
        for net, ip in t.probe.interfaces.items():
            assert ip in t.network(net).subnet and soc.interfaces[net] in t.network(net).subnet
        assert set(t.probe.interfaces) == set(soc.interfaces) and t.probe.gateway == soc.gateway
    for obj in sc.objectives:
        if obj.check is not None and obj.check.kind in ("http", "dns", "blocked", "reachable"):
            for ref in (obj.check.spec.from_, getattr(obj.check.spec, "control", None)):
                assert ref is None or ref == PROBE or sc.nodes[ref].role != "blue"


@pytest.mark.parametrize(
    ("kind", "args"),
    [("tcp", ["10.10.1.10", 80, 4.0]), ("udp", ["10.10.1.10", 53, 3.0]), ("icmp", ["10.10.1.10", 2.0]),
     ("http", ["10.10.1.10", 80, "/", 5.0]), ("dns", ["10.10.1.1", "portal.", "A", 6.0])],  # fmt: skip
)
def test_a_probe_job_carries_its_timeout_as_its_deadline(kind, args):
    """So a probe whose engine stopped answering is given up soon after (RESULT_GRACE) instead of
    holding the team's availability rounds ("still running") until the drill ends."""
    import time

    seen = []
    v = checks.Vantage(None, lambda node, job: seen.append((node, job)) or "ok", None)  # type: ignore[arg-type]
    t0 = time.time()
    assert v.probe(PROBE, kind, *args) == "ok"
    ((node, job),) = seen
    assert node == PROBE and job.args == {"kind": kind, "args": args}
    assert t0 + args[-1] <= job.deadline <= time.time() + args[-1]
