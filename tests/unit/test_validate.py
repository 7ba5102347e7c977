"""Validation: every rule with a bad file, hostile input, and the scenario CLI commands.

Each rule test writes a small scenario into a temporary project (its own
``scoring/standard.yaml``, ``RANGECTL_ROOT`` pointing at it) and asserts the
exact field path, the exact line and a fragment of the message.
"""

from __future__ import annotations

import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import pytest
import typer
from ruamel.yaml import YAML

from rangectl.scenario import loader
from rangectl.scenario.loader import Problem, load_file
from rangectl.scenario.model import Scenario
from rangectl.scenario.validate import expand_paths, load_scenario, validate_file
from tests.conftest import ROOT, run_cli, scenario_files

EXAMPLES = scenario_files()

BASE = """\
rangectl: 1
name: base
title: Base
networks:
  wan:
    subnet: 198.51.100.0/24
  dmz:
    subnet: 10.10.1.0/24
nodes:
  gw:
    image: router
    role: infra
    forward: true
    interfaces:
      wan: 198.51.100.1
      dmz: 10.10.1.1
  portal:
    image: web
    role: target
    gateway: 10.10.1.1
    interfaces:
      dmz: 10.10.1.10
    services:
      - name: http
        port: 80
  soc:
    image: workstation
    role: blue
    gateway: 10.10.1.1
    interfaces:
      dmz: 10.10.1.50
  scanner:
    image: attacker
    role: red
    gateway: 198.51.100.1
    interfaces:
      wan: 198.51.100.66
injects:
  - id: kickoff
    at: 0s
    message:
      en: Start.
      vi: Bắt đầu.
  - id: recon
    after: kickoff
    delay: 1m
    traffic:
      kind: portscan
      from: scanner
      target: portal
      ports: "80"
objectives:
  - id: scanner-ip
    category: detection
    after: recon
    points: 100
    answer:
      ip_of: scanner
  - id: block
    category: containment
    after: recon
    points: 200
    check:
      blocked:
        from: scanner
        to: portal
        port: 80
availability:
  - node: portal
    service: http
    points: 5
    every: 30s
scoring:
  policy: standard
"""

POLICY = "policy: 1\nname: standard\nhalf_life_minutes: 30\n"


def sub(text: str, old: str, new: str, nth: int = 0) -> str:
    """Replace the nth occurrence of ``old`` (which must exist)."""
    starts = [m.start() for m in re.finditer(re.escape(old), text)]
    assert len(starts) > nth, f"{old!r} occurs {len(starts)} time(s) in the scenario"
    i = starts[nth]
    return text[:i] + new + text[i + len(old) :]


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line of the nth occurrence of ``needle``."""
    starts = [m.start() for m in re.finditer(re.escape(needle), text)]
    assert len(starts) > nth, f"{needle!r} occurs {len(starts)} time(s)"
    return text.count("\n", 0, starts[nth]) + 1


def check(project: Path, text: str, name: str = "s.yaml") -> list[Problem]:
    f = project / name
    f.write_text(text, encoding="utf-8")
    res = validate_file(f)
    for p in res.problems:
        assert p.file == str(f)
    return res.problems


def expect(problems: list[Problem], path: str, line: int, fragment: str, *, alone: bool = True) -> Problem:
    """One problem at ``path`` on ``line`` whose message holds ``fragment`` (and, by default, no other)."""
    shown = "\n".join(str(p) for p in problems)
    hits = [p for p in problems if p.path == path]
    assert hits, f"no problem at {path!r}; got:\n{shown}"
    assert any(fragment in p.message for p in hits), f"no {fragment!r} at {path!r}; got:\n{shown}"
    p = next(p for p in hits if fragment in p.message)
    assert p.line == line, f"{path}: line {p.line}, expected {line}; got:\n{shown}"
    if alone:
        assert len(problems) == 1, f"expected one problem; got:\n{shown}"
    return p


# --- the base file and the examples -----------------------------------------------------------


def test_base_is_valid(project):
    assert check(project, BASE) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_with_the_project_policy(path):
    res = validate_file(path)
    assert res.problems == [], "\n".join(map(str, res.problems))
    assert res.scenario is not None


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"district-portal.yaml", "ward-portal-probe.yaml"} <= names


def test_load_scenario_raises_with_first_problem(project):
    from rangectl.errors import ScenarioError

    f = project / "bad.yaml"
    f.write_text(sub(sub(BASE, "points: 100", "points: -1"), "points: 200", "points: -2"))
    with pytest.raises(ScenarioError, match=r"bad\.yaml:\d+:\d+: objectives\[0\]\.points: .*\(\+1 more"):
        load_scenario(f)


# --- shape: unknown, missing, types -------------------------------------------------------------


def test_unknown_key(project):
    text = sub(BASE, "    image: web\n", "    image: web\n    colour: red\n")
    p = expect(check(project, text), "nodes.portal.colour", line_of(text, "colour: red"), "unknown field")
    assert p.col == 13  # the value's column


def test_unknown_top_level_key(project):
    text = BASE + "nmae: typo\n"
    expect(check(project, text), "nmae", line_of(text, "nmae:"), "unknown field")


def test_missing_required_top_level(project):
    text = sub(BASE, "title: Base\n", "")
    expect(check(project, text), "title", 1, "required field is missing")


def test_missing_required_in_node_points_at_the_node(project):
    text = sub(BASE, "    image: web\n", "")
    expect(
        check(project, text), "nodes.portal.image", line_of(text, "  portal:"), "required field is missing"
    )


def test_missing_required_in_objective(project):
    text = sub(BASE, "    category: detection\n", "")
    expect(
        check(project, text),
        "objectives[0].category",
        line_of(text, "- id: scanner-ip"),
        "required field is missing",
    )


def test_wrong_type_integer(project):
    text = sub(BASE, "points: 100", "points: lots")
    expect(check(project, text), "objectives[0].points", line_of(text, "points: lots"), "valid integer")


def test_wrong_type_boolean(project):
    text = sub(BASE, "forward: true", "forward: maybe")
    expect(check(project, text), "nodes.gw.forward", line_of(text, "forward: maybe"), "valid boolean")


def test_wrong_type_enum(project):
    text = sub(BASE, "role: target", "role: victim")
    expect(
        check(project, text),
        "nodes.portal.role",
        line_of(text, "role: victim"),
        "'infra', 'target', 'blue' or 'red'",
    )


def test_list_where_a_map_belongs(project):
    text = sub(BASE, "    interfaces:\n      dmz: 10.10.1.10\n", "    interfaces: [dmz]\n")
    expect(
        check(project, text),
        "nodes.portal.interfaces",
        line_of(text, "interfaces: [dmz]"),
        "valid dictionary",
    )


def test_map_where_a_list_belongs(project):
    text = sub(
        BASE,
        "  - node: portal\n    service: http\n    points: 5\n    every: 30s\n",
        "  node: portal\n  service: http\n  points: 5\n",
    )
    expect(check(project, text), "availability", line_of(text, "availability:"), "valid list")


def test_bad_slug(project):
    text = sub(BASE, "name: base", "name: Base_Scenario")
    expect(check(project, text), "name", 2, "must be a slug")


def test_bad_node_name(project):
    text = sub(BASE, "  soc:\n", "  SOC!:\n")
    probs = check(project, text)
    assert any("must be a name" in p.message and p.path.startswith("nodes") for p in probs), probs


def test_bad_inject_id(project):
    text = sub(BASE, "- id: kickoff", "- id: Kick Off")
    expect(check(project, text), "injects[0].id", line_of(text, "Kick Off"), "must be a slug")


def test_bad_duration(project):
    text = sub(BASE, "delay: 1m", "delay: 1 minute")
    expect(
        check(project, text),
        "injects[1].delay",
        line_of(text, "delay: 1 minute"),
        "'1 minute' is not a duration",
    )


def test_bad_duration_in_optional_field(project):
    text = sub(BASE, "at: 0s", "at: soon")
    expect(check(project, text), "injects[0].at", line_of(text, "at: soon"), "'soon' is not a duration")


def test_negative_duration(project):
    text = sub(BASE, "every: 30s", "every: -30")
    expect(check(project, text), "availability[0].every", line_of(text, "every: -30"), "cannot be negative")


def test_zero_availability_interval(project):
    text = sub(BASE, "every: 30s", "every: 0s")
    expect(check(project, text), "availability[0].every", line_of(text, "every: 0s"), "longer than 0s")


def test_negative_points(project):
    text = sub(BASE, "points: 200", "points: -200")
    expect(
        check(project, text),
        "objectives[1].points",
        line_of(text, "points: -200"),
        "greater than or equal to 0",
    )


def test_negative_hint_cost(project):
    text = sub(
        BASE,
        "    answer:\n      ip_of: scanner\n",
        "    answer:\n      ip_of: scanner\n    hints:\n      - text: Look.\n        cost: -5\n",
    )
    expect(
        check(project, text),
        "objectives[0].hints[0].cost",
        line_of(text, "cost: -5"),
        "greater than or equal to 0",
    )


def test_level_out_of_range(project):
    text = sub(BASE, "title: Base\n", "title: Base\nlevel: 6\n")
    expect(check(project, text), "level", 4, "less than or equal to 5")


def test_port_out_of_range(project):
    text = sub(BASE, "port: 80\n  soc", "port: 80000\n  soc")
    expect(
        check(project, text),
        "nodes.portal.services[0].port",
        line_of(text, "port: 80000"),
        "less than or equal to 65535",
    )


# --- addresses ---------------------------------------------------------------------------------


def test_bad_cidr(project):
    text = sub(BASE, "subnet: 10.10.1.0/24", "subnet: 10.10.1.0/33")
    expect(check(project, text), "networks.dmz.subnet", line_of(text, "10.10.1.0/33"), "not an IPv4 CIDR")


def test_cidr_with_host_bits(project):
    text = sub(BASE, "subnet: 10.10.1.0/24", "subnet: 10.10.1.1/24")
    expect(check(project, text), "networks.dmz.subnet", line_of(text, "10.10.1.1/24"), "host bits set")


def test_bad_address(project):
    text = sub(BASE, "dmz: 10.10.1.50", "dmz: 10.10.1.500")
    expect(
        check(project, text), "nodes.soc.interfaces.dmz", line_of(text, "10.10.1.500"), "valid IPv4 address"
    )


def test_address_outside_subnet(project):
    text = sub(BASE, "dmz: 10.10.1.50", "dmz: 10.10.2.50")
    p = expect(
        check(project, text),
        "nodes.soc.interfaces.dmz",
        line_of(text, "10.10.2.50"),
        "not inside dmz's subnet 10.10.1.0/24",
    )
    assert p.col == 12


def test_duplicate_address(project):
    text = sub(BASE, "dmz: 10.10.1.50", "dmz: 10.10.1.10")
    expect(
        check(project, text),
        "nodes.soc.interfaces.dmz",
        line_of(text, "dmz: 10.10.1.10", nth=1),
        "10.10.1.10 is already used by node 'portal' on 'dmz'",
    )


def test_network_address(project):
    text = sub(BASE, "dmz: 10.10.1.50", "dmz: 10.10.1.0")
    expect(
        check(project, text),
        "nodes.soc.interfaces.dmz",
        line_of(text, "dmz: 10.10.1.0\n"),
        "network address of 10.10.1.0/24",
    )


def test_broadcast_address(project):
    text = sub(BASE, "dmz: 10.10.1.50", "dmz: 10.10.1.255")
    expect(
        check(project, text),
        "nodes.soc.interfaces.dmz",
        line_of(text, "10.10.1.255"),
        "broadcast address of 10.10.1.0/24",
    )


def test_point_to_point_subnet_uses_both_addresses(project):
    text = sub(
        BASE,
        "  dmz:\n    subnet: 10.10.1.0/24\n",
        "  dmz:\n    subnet: 10.10.1.0/24\n  p2p:\n    subnet: 10.10.9.0/31\n",
    )
    text = sub(text, "      dmz: 10.10.1.1\n", "      dmz: 10.10.1.1\n      p2p: 10.10.9.0\n")
    assert check(project, text) == []  # .0 of a /31 is a host address, and .1 is left for the bridge
    text = sub(text, "      dmz: 10.10.1.50\n", "      dmz: 10.10.1.50\n      p2p: 10.10.9.1\n")
    expect(check(project, text), "networks.p2p.subnet", line_of(text, "10.10.9.0/31"), "bridge needs one more")


def test_overlapping_subnets(project):
    text = sub(
        BASE, "    subnet: 10.10.1.0/24\n", "    subnet: 10.10.1.0/24\n  lan:\n    subnet: 10.10.1.128/25\n"
    )
    expect(
        check(project, text),
        "networks.lan.subnet",
        line_of(text, "10.10.1.128/25"),
        "overlaps network 'dmz' (10.10.1.0/24)",
    )


def test_unknown_network_in_interfaces(project):
    text = sub(BASE, "      dmz: 10.10.1.1\n", "      dmz: 10.10.1.1\n      lan: 10.99.0.1\n")
    expect(
        check(project, text),
        "nodes.gw.interfaces.lan",
        line_of(text, "lan: 10.99.0.1"),
        "unknown network 'lan' (networks: dmz, wan)",
    )


def test_gateway_not_on_attached_network(project):
    text = sub(BASE, "gateway: 10.10.1.1", "gateway: 198.51.100.1")
    expect(
        check(project, text),
        "nodes.portal.gateway",
        line_of(text, "gateway: 198.51.100.1"),
        "gateway 198.51.100.1 is not on any network this node is attached to",
    )


def test_gateway_not_a_forwarding_node(project):
    text = sub(BASE, "gateway: 10.10.1.1", "gateway: 10.10.1.50")
    expect(
        check(project, text),
        "nodes.portal.gateway",
        line_of(text, "gateway: 10.10.1.50"),
        "gateway node 'soc' does not forward",
    )


def test_gateway_without_a_node(project):
    text = sub(BASE, "gateway: 10.10.1.1", "gateway: 10.10.1.2")
    expect(
        check(project, text),
        "nodes.portal.gateway",
        line_of(text, "gateway: 10.10.1.2"),
        "no node has address 10.10.1.2",
    )


def test_gateway_is_own_address(project):
    text = sub(BASE, "gateway: 10.10.1.1", "gateway: 10.10.1.10")
    expect(
        check(project, text),
        "nodes.portal.gateway",
        line_of(text, "gateway: 10.10.1.10"),
        "this node's own address",
    )


def test_no_forwarding_router_flags_every_gateway(project):
    text = sub(BASE, "    forward: true\n", "")
    probs = check(project, text)
    assert [p.path for p in probs] == ["nodes.portal.gateway", "nodes.soc.gateway", "nodes.scanner.gateway"]
    assert all("gateway node 'gw' does not forward" in p.message for p in probs)


# --- node references ---------------------------------------------------------------------------


def test_duplicate_service(project):
    text = sub(
        BASE, "        port: 80\n  soc:", "        port: 80\n      - name: http\n        port: 8080\n  soc:"
    )
    expect(
        check(project, text),
        "nodes.portal.services[1].name",
        line_of(text, "- name: http", nth=1),
        "service 'http' is listed twice",
    )


def test_missing_playbook(project):
    text = sub(
        BASE, "      dmz: 10.10.1.50\n", "      dmz: 10.10.1.50\n    provision:\n      - playbooks/nope.yml\n"
    )
    expect(
        check(project, text),
        "nodes.soc.provision[0]",
        line_of(text, "playbooks/nope.yml"),
        "playbook 'playbooks/nope.yml' not found",
    )


@pytest.mark.parametrize("where", ["scen", "playbooks"], ids=["beside", "playbooks"])
def test_playbook_resolution(project, where):
    """A playbook is found beside the scenario or in <root>/playbooks (docs/security.md: side files
    resolve inside the scenario's folder or the project's playbooks/ and scenarios/)."""
    (project / "scen").mkdir()
    (project / where).mkdir(exist_ok=True)
    (project / where / "setup.yml").write_text("- hosts: \"{{ rangectl_hosts | default('all') }}\"\n")
    text = sub(BASE, "      dmz: 10.10.1.50\n", "      dmz: 10.10.1.50\n    provision: [setup.yml]\n")
    assert check(project, text, "scen/s.yaml") == []


def test_playbook_at_the_project_root_is_outside_the_allowed_folders(project):
    (project / "scen").mkdir()
    (project / "setup.yml").write_text("- hosts: \"{{ rangectl_hosts | default('all') }}\"\n")
    text = sub(BASE, "      dmz: 10.10.1.50\n", "      dmz: 10.10.1.50\n    provision: [setup.yml]\n")
    p = expect(check(project, text, "scen/s.yaml"), "nodes.soc.provision[0]", line_of(text, "provision: [setup.yml]"),
               "outside the scenario's folder")
    assert str(project / "setup.yml") in p.message


def test_missing_pcap(project):
    text = sub(
        BASE,
        "objectives:\n",
        "  - id: replay\n    at: 5m\n    traffic: {kind: pcap, from: scanner, file: nope.pcap}\nobjectives:\n",
    )
    expect(
        check(project, text),
        "injects[2].traffic.file",
        line_of(text, "nope.pcap"),
        "capture 'nope.pcap' not found",
        alone=False,
    )


def test_pcap_found_in_scenarios_folder(project):
    (project / "scenarios").mkdir()
    (project / "scenarios" / "cap.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    text = sub(
        BASE,
        "objectives:\n",
        "  - id: replay\n    at: 5m\n    traffic: {kind: pcap, from: scanner, file: cap.pcap}\nobjectives:\n",
    )
    assert not [p for p in check(project, text, "sub.yaml") if p.path == "injects[2].traffic.file"]


def test_pcap_map_unknown_node(project):
    (project / "cap.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    text = sub(
        BASE,
        "objectives:\n",
        "  - id: replay\n    at: 5m\n    traffic:\n      kind: pcap\n      from: scanner\n      file: cap.pcap\n"
        "      map:\n        192.0.2.1: ghost\nobjectives:\n",
    )
    expect(
        check(project, text),
        "injects[2].traffic.map.192.0.2.1",
        line_of(text, "192.0.2.1: ghost"),
        "unknown node 'ghost'",
        alone=False,
    )


def test_unknown_policy(project):
    text = sub(BASE, "policy: standard", "policy: nonexistent")
    expect(
        check(project, text),
        "scoring.policy",
        line_of(text, "policy: nonexistent"),
        "no scoring policy 'nonexistent'",
    )


def test_policy_found_beside_the_scenario(project):
    other = project / "elsewhere"
    (other / "scoring").mkdir(parents=True)
    (other / "scoring" / "strict.yml").write_text(POLICY)
    text = sub(BASE, "policy: standard", "policy: strict")
    assert check(project, text, "elsewhere/s.yaml") == []
    (other / "drills").mkdir()
    assert check(project, text, "elsewhere/drills/s.yaml") == []  # scoring/ one folder up


def test_bad_policy_name(project):
    text = sub(BASE, "policy: standard", "policy: ../etc/passwd")
    expect(
        check(project, text), "scoring.policy", line_of(text, "../etc/passwd"), "does not match the pattern"
    )


# --- the timeline -------------------------------------------------------------------------------


def test_duplicate_inject_id(project):
    text = sub(BASE, "objectives:\n", "  - id: recon\n    at: 5m\n    message: Again.\nobjectives:\n")
    expect(
        check(project, text),
        "injects[2].id",
        line_of(text, "- id: recon", nth=1),
        "inject id 'recon' is used twice",
    )


def test_duplicate_objective_id(project):
    text = sub(BASE, "- id: block", "- id: scanner-ip")
    expect(
        check(project, text),
        "objectives[1].id",
        line_of(text, "- id: scanner-ip", nth=1),
        "objective id 'scanner-ip' is used twice",
    )


def test_unknown_after_in_inject(project):
    text = sub(BASE, "after: kickoff", "after: kick-off")
    expect(
        check(project, text),
        "injects[1].after",
        line_of(text, "after: kick-off"),
        "unknown inject 'kick-off'",
    )


def test_unknown_after_in_objective(project):
    text = sub(BASE, "    after: recon\n", "    after: recce\n", nth=1)
    expect(
        check(project, text), "objectives[1].after", line_of(text, "after: recce"), "unknown inject 'recce'"
    )


def test_after_cycle(project):
    text = sub(
        BASE,
        "objectives:\n",
        "  - id: ping\n    after: pong\n    message: Ping.\n  - id: pong\n    after: ping\n    message: Pong.\nobjectives:\n",
    )
    p = expect(
        check(project, text), "injects[3].after", line_of(text, "after: ping"), "'after' chain has a cycle"
    )
    assert "ping -> pong -> ping" in p.message or "pong -> ping -> pong" in p.message


def test_self_cycle(project):
    text = sub(BASE, "objectives:\n", "  - id: loop\n    after: loop\n    message: Again.\nobjectives:\n")
    expect(check(project, text), "injects[2].after", line_of(text, "after: loop"), "loop -> loop")


def test_at_and_after_both(project):
    text = sub(BASE, "    after: kickoff\n", "    after: kickoff\n    at: 2m\n")
    p = expect(
        check(project, text),
        "injects[1]",
        line_of(text, "- id: recon"),
        "give either 'at' or 'after', not both",
    )
    assert p.col == 5  # the item's first key, after "- "


def test_neither_at_nor_after(project):
    text = sub(BASE, "    at: 0s\n", "")
    expect(check(project, text), "injects[0]", line_of(text, "- id: kickoff"), "give a time")


def test_delay_with_at(project):
    text = sub(BASE, "    at: 0s\n", "    at: 0s\n    delay: 5s\n")
    expect(check(project, text), "injects[0]", line_of(text, "- id: kickoff"), "'delay' goes with 'after'")


def test_no_action(project):
    text = sub(BASE, "    message:\n      en: Start.\n      vi: Bắt đầu.\n", "")
    expect(check(project, text), "injects[0]", line_of(text, "- id: kickoff"), "give exactly one action")


def test_two_actions(project):
    text = sub(BASE, "    delay: 1m\n", "    delay: 1m\n    message: Scan starts.\n")
    expect(check(project, text), "injects[1]", line_of(text, "- id: recon"), "give exactly one action")


def test_traffic_from_non_red_node(project):
    text = sub(BASE, "from: scanner\n      target", "from: soc\n      target")
    expect(
        check(project, text),
        "injects[1].traffic.from",
        line_of(text, "from: soc"),
        "traffic originates from a red node; 'soc' is blue",
        alone=False,
    )


def test_traffic_from_unknown_node(project):
    text = sub(BASE, "from: scanner\n      target", "from: ghost\n      target")
    expect(
        check(project, text),
        "injects[1].traffic.from",
        line_of(text, "from: ghost"),
        "unknown node 'ghost'",
        alone=False,
    )


def test_traffic_unknown_target(project):
    text = sub(BASE, "target: portal", "target: ghost")
    expect(
        check(project, text),
        "injects[1].traffic.target",
        line_of(text, "target: ghost"),
        "unknown node 'ghost'",
        alone=False,
    )


@pytest.mark.parametrize("kind", ["portscan", "http"])
def test_traffic_inject_needs_a_target(project, kind):
    """A traffic inject without `target` (other than pcap replay) is refused, naming the inject's traffic."""
    text = sub(BASE, "      target: portal\n", "")
    text = sub(text, "kind: portscan", f"kind: {kind}")
    if kind != "portscan":
        text = sub(text, '      ports: "80"\n', "")
    problems = check(project, text)
    expect(problems, "injects[1].traffic", line_of(text, "    traffic:"), f"a {kind} inject needs a 'target' node", alone=False)


def test_traffic_bad_kind(project):
    text = sub(BASE, "kind: portscan", "kind: Port Scan")
    expect(
        check(project, text),
        "injects[1].traffic.kind",
        line_of(text, "kind: Port Scan"),
        "does not match the pattern",
    )


def test_traffic_missing_from(project):
    text = sub(BASE, "      from: scanner\n      target", "      target")
    expect(
        check(project, text),
        "injects[1].traffic.from",
        line_of(text, "    traffic:"),
        "required field is missing",
    )


# --- objectives --------------------------------------------------------------------------------


def test_objectives_without_a_blue_node(project):
    text = sub(BASE, "role: blue", "role: target")
    expect(
        check(project, text), "objectives", line_of(text, "objectives:"), "at least one node with role 'blue'"
    )


def test_objective_with_zero_kinds(project):
    text = sub(BASE, "    answer:\n      ip_of: scanner\n", "")
    expect(
        check(project, text),
        "objectives[0]",
        line_of(text, "- id: scanner-ip"),
        "give exactly one of: answer, check, report",
    )


def test_objective_with_two_kinds(project):
    text = sub(
        BASE,
        "      ip_of: scanner\n",
        "      ip_of: scanner\n    report:\n      deadline: 10m\n      fields: [{name: who}]\n",
    )
    expect(
        check(project, text),
        "objectives[0]",
        line_of(text, "- id: scanner-ip"),
        "give exactly one of: answer, check, report",
    )


def test_answer_with_zero_kinds(project):
    text = sub(BASE, "ip_of: scanner", "case_sensitive: true")
    expect(
        check(project, text),
        "objectives[0].answer",
        line_of(text, "    answer:"),
        "give exactly one of: ip_of, value, one_of, regex",
    )


def test_answer_with_two_kinds(project):
    text = sub(BASE, "      ip_of: scanner\n", "      ip_of: scanner\n      value: 198.51.100.66\n")
    expect(
        check(project, text),
        "objectives[0].answer",
        line_of(text, "    answer:"),
        "give exactly one of: ip_of, value, one_of, regex",
    )


def test_bad_regex(project):
    text = sub(BASE, "ip_of: scanner", "regex: 'a(b'")
    expect(
        check(project, text), "objectives[0].answer", line_of(text, "    answer:"), "regex does not compile"
    )


def test_unknown_ip_of_node(project):
    text = sub(BASE, "ip_of: scanner", "ip_of: ghost")
    expect(
        check(project, text),
        "objectives[0].answer.ip_of",
        line_of(text, "ip_of: ghost"),
        "unknown node 'ghost'",
    )


def test_unknown_ip_of_in_report_field(project):
    text = sub(
        BASE,
        "    answer:\n      ip_of: scanner\n",
        "    report:\n      deadline: 30m\n      fields:\n        - name: source\n          answer: {ip_of: ghost}\n",
    )
    expect(
        check(project, text),
        "objectives[0].report.fields[0].answer.ip_of",
        line_of(text, "{ip_of: ghost}"),
        "unknown node 'ghost'",
    )


def test_duplicate_report_field(project):
    text = sub(
        BASE,
        "    answer:\n      ip_of: scanner\n",
        "    report:\n      deadline: 30m\n      fields:\n        - name: source\n        - name: source\n",
    )
    expect(
        check(project, text),
        "objectives[0].report.fields[1].name",
        line_of(text, "- name: source", nth=1),
        "listed twice",
    )


def test_report_without_fields(project):
    text = sub(
        BASE, "    answer:\n      ip_of: scanner\n", "    report:\n      deadline: 30m\n      fields: []\n"
    )
    expect(
        check(project, text), "objectives[0].report.fields", line_of(text, "fields: []"), "at least 1 item"
    )


def test_check_unknown_node(project):
    text = sub(BASE, "to: portal", "to: ghost")
    expect(
        check(project, text),
        "objectives[1].check.blocked.to",
        line_of(text, "to: ghost"),
        "unknown node 'ghost'",
    )


@pytest.mark.parametrize(
    "spec, path",
    [
        ("http: {from: gw, to: ghost}", "objectives[1].check.http.to"),
        ("dns: {from: gw, server: ghost, name: portal.range.test}", "objectives[1].check.dns.server"),
        ("file: {node: ghost, path: /etc/hosts}", "objectives[1].check.file.node"),
        ("command: {node: ghost, run: 'true'}", "objectives[1].check.command.node"),
        ("reachable: {from: ghost, to: portal, port: 80}", "objectives[1].check.reachable.from"),
    ],
)
def test_check_kinds_unknown_node(project, spec, path):
    text = sub(
        BASE,
        "      blocked:\n        from: scanner\n        to: portal\n        port: 80\n",
        f"      {spec}\n",
    )
    expect(check(project, text), path, line_of(text, spec), "unknown node 'ghost'")


def test_check_from_a_node_to_itself(project):
    text = sub(BASE, "to: portal", "to: scanner")
    expect(
        check(project, text), "objectives[1].check.blocked.to", line_of(text, "to: scanner"), "tests nothing"
    )


def test_check_with_two_kinds(project):
    text = sub(
        BASE,
        "        port: 80\navailability",
        "        port: 80\n      http: {from: soc, to: portal}\navailability",
    )
    expect(check(project, text), "objectives[1].check", line_of(text, "    check:"), "give exactly one check")


@pytest.mark.parametrize(
    "spec",
    [
        "reachable: {from: scanner, to: portal, port: 80, control: gw}",
        "reachable: {from: scanner, to: portal, port: 80, outage_ok: true}",
        "reachable: {from: scanner, to: portal, port: 80, control: gw, outage_ok: false}",
    ],
    ids=["control", "outage_ok", "control-and-outage_ok-false"],
)
def test_control_and_outage_ok_only_on_blocked_checks(project, spec):
    """`control` and `outage_ok` mean something only for a `blocked` check; elsewhere they are refused."""
    text = sub(
        BASE,
        "      blocked:\n        from: scanner\n        to: portal\n        port: 80\n",
        f"      {spec}\n",
    )
    kind = spec.split(":")[0]
    p = expect(
        check(project, text),
        f"objectives[1].check.{kind}",
        line_of(text, spec),
        "`control` and `outage_ok` belong to `blocked` checks",
    )
    assert p.file.endswith("s.yaml")


def test_blocked_check_may_have_control_and_outage_ok(project):
    text = sub(BASE, "        port: 80\navailability", "        port: 80\n        control: gw\n        outage_ok: true\navailability")
    assert check(project, text) == []


@pytest.mark.parametrize("node", ["scanner", "portal"])
def test_blocked_control_must_differ_from_both_ends(project, node):
    text = sub(BASE, "        port: 80\navailability", f"        port: 80\n        control: {node}\navailability")
    expect(
        check(project, text),
        "objectives[1].check.blocked.control",
        line_of(text, f"control: {node}"),
        "the control node must be neither `from` nor `to`",
    )


def test_tcp_check_needs_a_port(project):
    text = sub(BASE, "        port: 80\navailability", "availability")
    expect(
        check(project, text),
        "objectives[1].check.blocked",
        line_of(text, "      blocked:"),
        "a tcp check needs a port",
    )


def test_dns_expect_unknown_ip_of(project):
    spec = "dns: {from: gw, server: portal, name: portal.range.test, expect: {ip_of: ghost}}"
    text = sub(
        BASE,
        "      blocked:\n        from: scanner\n        to: portal\n        port: 80\n",
        f"      {spec}\n",
    )
    expect(
        check(project, text),
        "objectives[1].check.dns.expect.ip_of",
        line_of(text, "ip_of: ghost"),
        "unknown node 'ghost'",
    )


# --- availability ------------------------------------------------------------------------------


def test_availability_unknown_node(project):
    text = sub(BASE, "  - node: portal", "  - node: ghost")
    expect(check(project, text), "availability[0].node", line_of(text, "node: ghost"), "unknown node 'ghost'")


def test_availability_unknown_service(project):
    text = sub(BASE, "service: http", "service: https")
    expect(
        check(project, text),
        "availability[0].service",
        line_of(text, "service: https"),
        "node 'portal' has no service 'https'",
    )


def test_availability_unknown_probe_node(project):
    text = sub(BASE, "    service: http\n", "    service: http\n    from: ghost\n")
    expect(check(project, text), "availability[0].from", line_of(text, "from: ghost"), "unknown node 'ghost'")


def test_availability_bad_probe(project):
    text = sub(BASE, "    service: http\n", "    service: http\n    probe: icmp\n")
    expect(
        check(project, text), "availability[0].probe", line_of(text, "probe: icmp"), "'tcp', 'http' or 'udp'"
    )


# --- texts, versions --------------------------------------------------------------------------


def test_unknown_language_key(project):
    text = sub(BASE, "      vi: Bắt đầu.\n", "      vi: Bắt đầu.\n      fr: Début.\n")
    expect(
        check(project, text),
        "injects[0].message",
        line_of(text, "    message:"),
        "unknown language 'fr' (use one of: en, vi)",
    )


def test_empty_language_map(project):
    text = sub(BASE, "title: Base", "title: {}")
    expect(check(project, text), "title", 3, "at least one language")


def test_per_language_title_is_fine(project):
    text = sub(BASE, "title: Base", "title: {en: Base, vi: Cơ sở}")
    assert check(project, text) == []


def test_format_version_2(project):
    text = sub(BASE, "rangectl: 1", "rangectl: 2")
    p = expect(check(project, text), "rangectl", 1, "unsupported format version 2")
    assert p.col == 11


def test_format_version_missing(project):
    text = sub(BASE, "rangectl: 1\n", "")
    expect(check(project, text), "rangectl", 1, "required field is missing")


def test_problem_string_format(project):
    text = sub(BASE, "points: 200", "points: -200")
    (p,) = check(project, text)
    line = line_of(text, "points: -200")
    assert str(p) == f"{project / 's.yaml'}:{line}:13: objectives[1].points: {p.message}"
    assert p.as_dict() == {
        "file": str(project / "s.yaml"),
        "line": line,
        "col": 13,
        "path": "objectives[1].points",
        "message": p.message,
    }


def test_several_problems_sorted_by_line(project):
    text = sub(sub(BASE, "policy: standard", "policy: nope"), "dmz: 10.10.1.50", "dmz: 10.10.9.50")
    probs = check(project, text)
    assert [p.path for p in probs] == ["nodes.soc.interfaces.dmz", "scoring.policy"]
    assert probs == sorted(probs, key=lambda p: (p.line, p.col))


# --- hostile input -----------------------------------------------------------------------------


def _only(f: Path) -> Problem:
    res = validate_file(f)
    assert res.scenario is None
    assert len(res.problems) >= 1
    return res.problems[0]


HOSTILE: dict[str, tuple[bytes, int, str]] = {
    "empty": (b"", 1, "empty file"),
    "whitespace": (b"  \n\n\t \n   ", 1, "empty file"),
    "comments-only": (b"# nothing\n# here\n", 1, "empty file"),
    "nul-bytes": (b"rangectl: 1\nname: x\x00y\n", 1, "NUL bytes"),
    "invalid-utf8": (b"rangectl: 1\nname: x\ntitle: \xff\xfe\n", 3, "not UTF-8"),
    "latin1": (b"rangectl: 1\ntitle: caf\xe9\n", 2, "not UTF-8"),
    "top-level-list": (b"- rangectl: 1\n- name: x\n", 1, "not a list"),
    "top-level-scalar": (b"just some words\n", 1, "a scenario is a mapping"),
    "top-level-number": (b"42\n", 1, "not a int"),
    "several-documents": (b"rangectl: 1\n---\nrangectl: 1\n", 1, "several YAML documents"),
    "duplicate-key": (b"rangectl: 1\nname: a\nname: b\n", 3, "duplicate key"),
    "tab-indent": (b"rangectl: 1\nnodes:\n\tgw: {}\n", 3, "invalid YAML"),
    # round-trip loading never builds Python objects: the tag is just a value of the wrong type
    "python-tag": (b"rangectl: 1\nname: !!python/object:os.system ls\n", 2, "name must be a valid string"),
    "version-string": (b"rangectl: '1'\nname: x\n", 1, "unsupported format version '1'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input(tmp_path, case):
    data, line, fragment = HOSTILE[case]
    f = tmp_path / f"{case}.yaml"
    f.write_bytes(data)
    _only(f)
    hits = [p for p in validate_file(f).problems if fragment in f"{p.path} {p.message}"]
    assert hits, validate_file(f).problems
    assert hits[0].line == line, str(hits[0])


def test_binary_junk(tmp_path):
    import random

    rnd = random.Random(1234)
    for i in range(20):
        f = tmp_path / f"junk{i}.yaml"
        f.write_bytes(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4096))))
        p = _only(f)
        assert p.line >= 1 and p.col >= 1 and p.message


def test_yaml_syntax_error_line_and_col(tmp_path):
    f = tmp_path / "syntax.yaml"
    f.write_text("rangectl: 1\nname: x\nnetworks: [a, b\ntitle: x\n")
    p = _only(f)
    assert (p.line, p.col) == (4, 6)
    assert p.message.startswith("invalid YAML:")


def test_yaml_unclosed_quote(tmp_path):
    f = tmp_path / "quote.yaml"
    f.write_text('rangectl: 1\nname: "x\ntitle: y\n')
    p = _only(f)
    assert p.message.startswith("invalid YAML:") and p.line >= 2


def test_yaml_alias_bomb(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    f = tmp_path / "bomb.yaml"
    f.write_text("\n".join(lines) + "\n")
    p = _only(f)
    assert "alias bomb" in p.message


def test_yaml_recursive_alias(tmp_path):
    f = tmp_path / "rec.yaml"
    f.write_text("rangectl: 1\nname: &n [*n]\n")
    assert _only(f)


def test_file_just_over_one_megabyte(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_bytes(b"rangectl: 1\n# " + b"x" * loader.MAX_BYTES + b"\n")
    p = _only(f)
    assert "may be at most 1,000,000" in p.message


def test_fifty_megabyte_sparse_file(tmp_path):
    f = tmp_path / "huge.yaml"
    with f.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)  # sparse: no real disk use, no time
    p = _only(f)
    assert "52,428,800 bytes" in p.message


def test_missing_file(tmp_path):
    p = _only(tmp_path / "nope.yaml")
    assert p.message == "file not found"


def test_directory_given_as_file(tmp_path):
    p = _only(tmp_path)
    assert "is a directory" in p.message


def test_unreadable_file(tmp_path):
    """A regular file that exists but cannot be read, even by root: x.yaml is a link to /proc/self/mem,
    whose first page is never mapped (read() fails with EIO). The loader names the file and says why,
    in one line; nothing raises."""
    f = tmp_path / "x.yaml"
    f.symlink_to("/proc/self/mem")
    assert f.is_file()
    p = _only(f)
    assert p.message == "cannot read: Input/output error"
    assert (p.file, p.line, p.col) == (str(f), 1, 1)
    assert str(p).startswith(f"{f}:1:1: ") and "\n" not in str(p)


def test_unreadable_file_without_permission(tmp_path):
    """The plain permission case, where it can happen (root reads everything; the socket case above always runs)."""
    if os.geteuid() == 0:
        pytest.skip("root reads everything; test_unreadable_file covers root")
    f = tmp_path / "locked.yaml"
    f.write_text(BASE)
    f.chmod(0)
    try:
        assert _only(f).message == "cannot read: Permission denied"
    finally:
        f.chmod(0o644)


def test_directory_with_no_scenarios(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    files, extra = expand_paths([tmp_path])
    assert files == []
    assert len(extra) == 1 and "holds no scenario files" in extra[0].message
    assert extra[0].file == str(tmp_path)


def test_directory_expansion_skips_side_files(project):
    d = project / "drills"
    (d / "scoring").mkdir(parents=True)
    (d / "a.yaml").write_text(BASE)
    (d / "b.yml").write_text(BASE)
    (d / "a.solution.yaml").write_text("steps: []\n")
    (d / "scoring" / "custom.yaml").write_text(POLICY)
    (d / "readme.md").write_text("x")
    files, extra = expand_paths([d])
    assert [f.name for f in files] == ["a.yaml", "b.yml"] and extra == []


@pytest.mark.parametrize("depth", [100, 5000])
def test_deep_flow_nesting(tmp_path, depth):
    f = tmp_path / "deep.yaml"
    f.write_text("rangectl: 1\nname: " + "{a: " * depth + "1" + "}" * depth + "\n")
    p = _only(f)
    assert "nested too deeply" in p.message or "recursion" in p.message


def test_deep_block_nesting(tmp_path):
    f = tmp_path / "deep.yaml"
    f.write_text("rangectl: 1\n" + "".join("  " * i + f"k{i}:\n" for i in range(120)) + "  " * 120 + "v\n")
    assert "nested too deeply" in _only(f).message


def test_deep_sequence_nesting(tmp_path):
    f = tmp_path / "deep.yaml"
    f.write_text("tags: " + "[" * 80 + "]" * 80 + "\n")
    assert "nested too deeply" in _only(f).message


def test_huge_numbers_and_strings(project):
    text = sub(BASE, "points: 100", "points: " + "9" * 5000)
    probs = check(project, text)
    assert probs == [] or all(p.line >= 1 for p in probs)
    text = sub(BASE, "title: Base", "title: " + "x" * 200_000)
    assert check(project, text) == []


# --- model and loader details -----------------------------------------------------------------


def test_loaded_digest_and_locate(project):
    f = project / "s.yaml"
    f.write_text(BASE)
    ld = load_file(f)
    assert len(ld.digest) == 64 and ld.scenario is not None
    assert ld.locate(("nodes", "soc", "interfaces", "dmz")) == (line_of(BASE, "dmz: 10.10.1.50"), 12)
    assert ld.locate(("nodes", "ghost", "image")) == (line_of(BASE, "nodes:"), 1)


def test_scenario_hash_ignores_formatting(project):
    from rangectl.scenario.loader import scenario_hash

    a = project / "a.yaml"
    a.write_text(BASE)
    b = project / "b.yaml"
    b.write_text(
        "# a comment\n" + BASE.replace("    subnet: 10.10.1.0/24", "    subnet: '10.10.1.0/24'  # dmz")
    )
    assert scenario_hash(load_scenario(a)) == scenario_hash(load_scenario(b))


# --- the CLI -----------------------------------------------------------------------------------


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run rangectl's real entry point in-process; return (exit code, stdout, stderr)."""
    from rangectl import cli as cli_mod

    code: int | str | None = 0
    with mock.patch.object(sys, "argv", ["rangectl", *map(str, args)]):
        try:
            cli_mod.main()
        except SystemExit as exc:
            code = exc.code
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else (0 if code is None else 1)), out, err


@pytest.fixture
def files(project) -> dict[str, Path]:
    d = project / "scen"
    d.mkdir()
    good = d / "good.yaml"
    good.write_text(BASE)
    bad = d / "bad.yaml"
    bad.write_text(sub(sub(BASE, "name: base", "name: bad"), "dmz: 10.10.1.50", "dmz: 10.10.1.10"))
    return {"dir": d, "good": good, "bad": bad}


def test_cli_validate_ok(capsys, files):
    code, out, _ = cli(capsys, "validate", files["good"])
    assert code == 0
    assert "ok" in out and "1 file(s) valid" in out


def test_cli_validate_invalid(capsys, files):
    code, out, _ = cli(capsys, "validate", files["dir"])
    assert code == 1
    line = line_of(files["bad"].read_text(), "dmz: 10.10.1.10", nth=1)
    assert f"{files['bad']}:{line}:12: nodes.soc.interfaces.dmz: 10.10.1.10 is already used" in out
    assert "1 of 2 file(s) invalid, 1 problem(s)" in out


def test_cli_validate_empty_dir(capsys, tmp_path):
    code, out, _ = cli(capsys, "validate", tmp_path)
    assert code == 1 and "holds no scenario files" in out


def test_cli_validate_missing_file(capsys, tmp_path):
    code, out, _ = cli(capsys, "validate", tmp_path / "nope.yaml")
    assert code == 1 and "file not found" in out


def test_cli_validate_usage_errors(capsys, files):
    assert cli(capsys, "validate")[0] == 2
    assert cli(capsys, "validate", files["good"], "--format", "xml")[0] == 2
    assert cli(capsys, "validate", files["good"], "--no-such-option")[0] == 2


def test_cli_validate_json(capsys, files):
    code, out, _ = cli(capsys, "validate", files["dir"], "--format", "json")
    assert code == 1
    doc = json.loads(out)
    assert doc["valid"] is False and doc["errors"] == []
    by_name = {Path(f["file"]).name: f for f in doc["files"]}
    assert by_name["good.yaml"] == {"file": str(files["good"]), "valid": True, "problems": []}
    (prob,) = by_name["bad.yaml"]["problems"]
    assert set(prob) == {"file", "line", "col", "path", "message"}
    assert prob["path"] == "nodes.soc.interfaces.dmz" and isinstance(prob["line"], int)


def test_cli_validate_json_valid_and_extra(capsys, files, tmp_path):
    code, out, _ = cli(capsys, "validate", files["good"], "-f", "json")
    assert code == 0 and json.loads(out)["valid"] is True
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = cli(capsys, "validate", files["good"], empty, "-f", "json")
    doc = json.loads(out)
    assert code == 1 and doc["valid"] is False and "holds no scenario files" in doc["errors"][0]["message"]


def test_cli_validate_junit(capsys, files):
    code, out, _ = cli(capsys, "validate", files["dir"], "--format", "junit")
    assert code == 1
    root = ET.fromstring(out)
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 2
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 and failed[0].get("name") == str(files["bad"])
    assert "nodes.soc.interfaces.dmz" in failed[0].find("failure").get("message")


def test_cli_validate_junit_escapes_hostile_text(capsys, tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text('rangectl: 1\nname: "<&>\\"]]>"\n')
    code, out, _ = cli(capsys, "validate", f, "--format", "junit")
    assert code == 1
    ET.fromstring(out)


def test_cli_validate_github(capsys, files):
    code, out, _ = cli(capsys, "validate", files["dir"], "--format", "github")
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 1
    m = re.fullmatch(r"::error file=([^,]+),line=(\d+),col=(\d+),title=([^:]+)::(.+)", lines[0])
    assert m, lines[0]
    assert m.group(1) == str(files["bad"]) and m.group(4) == "rangectl%3A nodes.soc.interfaces.dmz"
    assert "already used" in m.group(5)


def test_cli_validate_output_file(capsys, files, tmp_path):
    report = tmp_path / "report.json"
    code, out, _ = cli(capsys, "validate", files["dir"], "-f", "json", "-o", report)
    assert code == 1 and out == ""
    assert json.loads(report.read_text())["valid"] is False
    text_report = tmp_path / "report.txt"
    code, out, _ = cli(capsys, "validate", files["good"], "-o", text_report)
    assert code == 0 and out == "" and "1 file(s) valid" in text_report.read_text()


def test_cli_validate_examples(capsys):
    code, out, _ = cli(capsys, "validate", ROOT / "scenarios")
    assert code == 0, out
    assert f"{len(EXAMPLES)} file(s) valid" in out


def test_cli_new_writes_a_valid_file(capsys, project):
    out_file = project / "drills" / "ward-7.yaml"
    out_file.parent.mkdir()
    code, out, _ = cli(capsys, "new", "ward-7", "-o", out_file)
    assert code == 0 and out_file.is_file()
    assert validate_file(out_file).problems == []
    assert cli(capsys, "validate", out_file)[0] == 0
    assert load_scenario(out_file).name == "ward-7"


def test_cli_new_default_name_and_refusals(capsys, project, monkeypatch):
    monkeypatch.chdir(project)
    assert cli(capsys, "new", "drill-one")[0] == 0
    assert (project / "drill-one.yaml").is_file()
    code, _, err = cli(capsys, "new", "drill-one")
    assert code == 2 and "exists" in err
    assert cli(capsys, "new", "drill-one", "--force")[0] == 0
    code, _, err = cli(capsys, "new", "Bad_Name")
    assert code == 2 and "not a valid scenario name" in err


# schema ---------------------------------------------------------------------------------------


def _schema(capsys) -> dict:
    code, out, _ = cli(capsys, "schema")
    assert code == 0
    return json.loads(out)


def _mini_validate(schema: dict, node: dict, value, where: str = "") -> list[str]:
    """A small JSON Schema checker (types, $ref, anyOf, enum/const, pattern, required,
    properties/patternProperties/additionalProperties, minimum/maximum, min sizes): enough to
    show the schema accepts the examples and rejects what the loader rejects. Names that match
    no patternProperties entry count as errors here (the loader rejects them too)."""
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        return _mini_validate(schema, schema["$defs"][name], value, where)
    if "anyOf" in node:
        branches = [_mini_validate(schema, b, value, where) for b in node["anyOf"]]
        return [] if any(not b for b in branches) else [f"{where}: no anyOf branch matches"]
    errs: list[str] = []
    if "const" in node and value != node["const"]:
        errs.append(f"{where}: not {node['const']!r}")
    if "enum" in node and value not in node["enum"]:
        errs.append(f"{where}: not in {node['enum']}")
    typ = node.get("type")
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    if typ:
        if not isinstance(value, types[typ]) or (typ in ("integer", "number") and isinstance(value, bool)):
            return errs + [f"{where}: not {typ}"]
    if isinstance(value, str) and "pattern" in node and not re.search(node["pattern"], value):
        errs.append(f"{where}: does not match {node['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            errs.append(f"{where}: below minimum")
        if "maximum" in node and value > node["maximum"]:
            errs.append(f"{where}: above maximum")
    if isinstance(value, dict):
        props = node.get("properties", {})
        for req in node.get("required", []):
            if req not in value:
                errs.append(f"{where}.{req}: required")
        for k, v in value.items():
            if k in props:
                errs += _mini_validate(schema, props[k], v, f"{where}.{k}")
            elif any(re.search(pat, k) for pat in node.get("patternProperties", {})):
                pat = next(pat for pat in node["patternProperties"] if re.search(pat, k))
                errs += _mini_validate(schema, node["patternProperties"][pat], v, f"{where}.{k}")
            elif node.get("additionalProperties") is False or "patternProperties" in node:
                errs.append(f"{where}.{k}: not allowed")
            elif isinstance(node.get("additionalProperties"), dict):
                errs += _mini_validate(schema, node["additionalProperties"], v, f"{where}.{k}")
            if "propertyNames" in node:
                errs += _mini_validate(schema, node["propertyNames"], k, f"{where}.{k}(name)")
    if isinstance(value, dict | list) and len(value) < node.get("minProperties", node.get("minItems", 0)):
        errs.append(f"{where}: too few entries")
    if isinstance(value, list) and "items" in node:
        for i, v in enumerate(value):
            errs += _mini_validate(schema, node["items"], v, f"{where}[{i}]")
    return errs


def _yaml_as_json(path: Path):
    return json.loads(json.dumps(YAML(typ="safe").load(path.read_text()), default=str))


def test_cli_schema_structure(capsys):
    doc = _schema(capsys)
    assert doc["$schema"].startswith("https://json-schema.org/")
    assert doc["type"] == "object" and doc["additionalProperties"] is False
    assert set(doc["required"]) >= {"rangectl", "name", "title", "networks", "nodes"}
    assert set(doc["properties"]) == set(Scenario.model_fields)
    for name in ("Node", "Network", "Inject", "Objective", "Answer", "Check", "Availability", "Traffic"):
        assert name in doc["$defs"], name
    assert "from" in doc["$defs"]["Traffic"]["properties"]  # aliases, not python names
    assert "from_" not in json.dumps(doc)
    refs = set(re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(doc)))
    assert refs <= set(doc["$defs"]), refs - set(doc["$defs"])


@pytest.mark.parametrize(
    "path", EXAMPLES + [ROOT / "tests" / "fixtures" / "mini-range.yaml"], ids=lambda p: p.name
)
def test_cli_schema_accepts_examples(capsys, path):
    doc = _schema(capsys)
    data = _yaml_as_json(path)
    assert _mini_validate(doc, doc, data) == []
    try:
        import jsonschema
    except ImportError:  # a dev dependency (pyproject.toml): a missing one must not pass silently
        pytest.fail("jsonschema is not installed (pip install -e '.[dev]'): the JSON Schema check cannot run")
    jsonschema.Draft202012Validator.check_schema(doc)
    jsonschema.validate(data, doc)


def test_cli_schema_rejects_what_the_loader_rejects(capsys, project):
    doc = _schema(capsys)
    for bad in (
        sub(BASE, "    image: web\n", "    image: web\n    colour: red\n"),
        sub(BASE, "role: target", "role: victim"),
        sub(BASE, "points: 100", "points: -1"),
        sub(BASE, "title: Base\n", ""),
        sub(BASE, "delay: 1m", "delay: 1 minute"),
    ):
        f = project / "bad.yaml"
        f.write_text(bad)
        assert validate_file(f).problems
        assert _mini_validate(doc, doc, _yaml_as_json(f)), bad


def test_starter_matches_schema(capsys, project):
    doc = _schema(capsys)
    f = project / "starter.yaml"
    assert cli(capsys, "new", "starter", "-o", f)[0] == 0
    assert _mini_validate(doc, doc, _yaml_as_json(f)) == []


# graph, plan -----------------------------------------------------------------------------------


DISTRICT = ROOT / "scenarios" / "district-portal.yaml"


def test_cli_graph_text(capsys):
    code, out, _ = cli(capsys, "graph", DISTRICT)
    assert code == 0
    assert out.startswith("district-portal\n")
    assert "network dmz 10.20.1.0/24" in out and "portal [target, web] 10.20.1.10" in out


def test_cli_graph_mermaid(capsys):
    code, out, _ = cli(capsys, "graph", DISTRICT, "--format", "mermaid")
    assert code == 0 and out.startswith("graph LR\n")
    assert 'node_portal ---|"10.20.1.10"| net_dmz' in out
    assert "classDef blue" in out


def test_cli_graph_dot(capsys):
    code, out, _ = cli(capsys, "graph", DISTRICT, "-f", "dot")
    assert code == 0
    assert out.startswith('graph "district-portal" {') and out.rstrip().endswith("}")
    assert out.count("{") == out.count("}")
    assert '"node:edge" -- "net:internal" [label="10.20.2.1"];' in out


def test_cli_graph_errors(capsys, files):
    assert cli(capsys, "graph", files["bad"])[0] == 1
    assert cli(capsys, "graph", DISTRICT, "-f", "png")[0] == 2


def test_cli_plan_json_shape(capsys):
    code, out, _ = cli(capsys, "plan", DISTRICT, "--teams", "3", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["scenario"] == "district-portal"
    assert [t["team"] for t in doc["teams"]] == [1, 2, 3]
    for team in doc["teams"]:
        assert [n["name"] for n in team["networks"]] == ["wan", "dmz", "internal"]
        for net in team["networks"]:
            assert {"name", "subnet"} <= set(net)
        assert {n["name"] for n in team["nodes"]} == {"edge", "attacker", "portal", "dns", "db", "soc"}
        for node in team["nodes"]:
            assert {"name", "role", "image", "interfaces"} <= set(node)
            assert isinstance(node["interfaces"], dict)
    portal = {t["team"]: next(n for n in t["nodes"] if n["name"] == "portal") for t in doc["teams"]}
    assert portal[1]["interfaces"] == {"dmz": "10.20.1.10"}
    assert portal[2]["interfaces"]["dmz"] != portal[1]["interfaces"]["dmz"]


def test_cli_plan_table_and_errors(capsys, files):
    code, out, _ = cli(capsys, "plan", DISTRICT, "-t", "2")
    assert code == 0 and "team 2" in out
    code, _, err = cli(capsys, "plan", files["bad"])
    assert code == 1 and "already used" in err
    assert cli(capsys, "plan", DISTRICT, "--teams", "0")[0] == 2
    code, _, err = cli(capsys, "plan", DISTRICT, "--teams", "65")
    assert code == 2 and "64" in err


# version and help -------------------------------------------------------------------------------


def test_cli_version(capsys):
    from rangectl import __version__

    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"rangectl {__version__}"


def _command_paths() -> list[tuple[str, ...]]:
    from rangectl.cli import app

    root = typer.main.get_command(app)
    out: list[tuple[str, ...]] = []

    def walk(cmd, prefix: tuple[str, ...]) -> None:
        for name, sub_cmd in getattr(cmd, "commands", {}).items():
            out.append(prefix + (name,))
            walk(sub_cmd, prefix + (name,))

    walk(root, ())
    return out


def test_every_scenario_command_is_registered():
    names = {p[0] for p in _command_paths()}
    assert {"validate", "plan", "graph", "schema", "new"} <= names


@pytest.mark.parametrize("path", [()] + _command_paths(), ids=lambda p: " ".join(p) or "rangectl")
def test_cli_help(capsys, path):
    code, out, err = cli(capsys, *path, "--help")
    assert code == 0, err
    assert "Usage" in out


def test_cli_no_args_shows_help(capsys):
    code, out, err = cli(capsys)
    assert code in (0, 2)  # click's no_args_is_help
    assert "Usage" in out + err


def test_cli_unknown_command(capsys):
    code, _, err = cli(capsys, "frobnicate")
    assert code == 2 and "No such command" in err


# the installed console script, as a user runs it (a few subprocesses only) ----------------------


def test_console_script_exit_codes(files):
    env = {**os.environ, "RANGECTL_ROOT": str(files["dir"].parent)}
    assert run_cli("--version", env=env, timeout=60).returncode == 0
    ok = run_cli("validate", str(files["good"]), env=env, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = run_cli("validate", str(files["dir"]), "--format", "json", env=env, timeout=60)
    assert bad.returncode == 1 and json.loads(bad.stdout)["valid"] is False
    usage = run_cli("validate", env=env, timeout=60)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr


# --- address space the engine needs -----------------------------------------------------------


def test_subnet_in_reserved_space(project):
    text = sub(sub(BASE, "10.10.1.0/24", "169.254.7.0/24"), "10.10.1.", "169.254.7.")
    text = text.replace("10.10.1.", "169.254.7.")
    expect(check(project, text), "networks.dmz.subnet", line_of(text, "169.254.7.0/24"), "reserved address space")


def test_subnet_without_room_for_the_bridge(project):
    # gw .1 and portal .2 fill a /30's two host addresses: none left for the engine's bridge
    text = BASE.replace("10.10.1.0/24", "10.10.1.0/30").replace("10.10.1.10", "10.10.1.2")
    text = text.replace("    gateway: 10.10.1.1\n    interfaces:\n      dmz: 10.10.1.50", "    gateway: 198.51.100.1\n    interfaces:\n      wan: 198.51.100.50")
    expect(check(project, text), "networks.dmz.subnet", line_of(text, "10.10.1.0/30"), "the engine's bridge needs one more")


def test_flow_nesting_is_refused_fast(tmp_path):
    import time

    f = tmp_path / "deep.yaml"
    f.write_text("a: " + "[" * 300_000 + "]" * 300_000 + "\n")
    t0 = time.monotonic()
    p = _only(f)
    assert time.monotonic() - t0 < 2.0
    assert "nested too deeply" in p.message and p.line == 1


def test_plan_teams_above_the_limit_is_a_usage_error():
    p = run_cli("plan", str(EXAMPLES[0]), "--teams", "65")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr


def test_blocked_control_node_must_exist_and_differ(project):
    text = sub(BASE, "        port: 80\n", "        port: 80\n        control: nosuch\n", 1)
    expect(check(project, text), "objectives[1].check.blocked.control", line_of(text, "control: nosuch"), "unknown node 'nosuch'")
    text = sub(BASE, "        port: 80\n", "        port: 80\n        control: portal\n", 1)
    expect(check(project, text), "objectives[1].check.blocked.control", line_of(text, "control: portal"), "neither")
    text = sub(BASE, "        port: 80\n", "        port: 80\n        control: gw\n        outage_ok: false\n", 1)
    assert check(project, text) == []
