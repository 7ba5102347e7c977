"""Operable nodes (``operate:`` on a blue node): validation, the ports `ssh NODE` uses, shipped grants.

The Docker half (``ssh NODE`` from a team's workstation, refusals, the attacker's
view unchanged) is tests/integration/test_operate_docker.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from rangectl.access.install import WS_OPERATE_BASE, operate_ports, operated_nodes
from rangectl.scenario.validate import load_scenario
from tests.conftest import ROOT
from tests.unit.test_validate import BASE, check, line_of, sub

SOC = "  soc:\n    image: workstation\n    role: blue\n"


def _with(text: str, operate: str, node_head: str = SOC) -> str:
    return sub(text, node_head, node_head + f"    operate: {operate}\n")


def test_a_blue_node_may_operate_its_teams_own_nodes(project):
    text = _with(BASE, "[gw, portal]")
    assert check(project, text) == []


@pytest.mark.parametrize(
    ("operate", "index", "fragment"),
    [
        ("[portal, nowhere]", 1, "unknown node 'nowhere' (nodes: gw, portal, scanner, soc)"),
        ("[soc]", 0, "a node cannot list itself: trainees are already on it (the trainer resets it)"),
        ("[gw, scanner]", 1, "'scanner' is a red node: teams operate their own nodes, never the attacker's "
                             "(a team's own host the attacker controls is marked compromised: true)"),
        ("[portal, gw, portal]", 2, "'portal' is listed twice"),
    ],
)  # fmt: skip
def test_bad_grants_name_the_file_line_and_field(project, operate, index, fragment):
    text = _with(BASE, operate)
    probs = check(project, text)
    assert [p.path for p in probs] == [f"nodes.soc.operate[{index}]"], probs
    assert probs[0].message == fragment
    assert probs[0].line == line_of(text, "operate:")


def test_only_a_blue_node_lists_nodes_to_operate(project):
    head = "  portal:\n    image: web\n    role: target\n"
    text = _with(BASE, "[gw]", head)
    probs = check(project, text)
    assert [p.path for p in probs] == ["nodes.portal.operate[0]"]
    assert probs[0].message == "only a blue node (where trainees log in) may list nodes to operate or reset"


def test_a_compromised_red_node_is_the_teams_own_and_may_be_operated(project):
    red = "  scanner:\n    image: attacker\n    role: red\n"
    text = _with(sub(BASE, red, red + "    compromised: true\n"), "[scanner]")
    assert check(project, text) == []


def test_only_a_red_node_can_be_compromised(project):
    head = "  portal:\n    image: web\n    role: target\n"
    text = sub(BASE, head, head + "    compromised: true\n")
    probs = check(project, text)
    assert [p.path for p in probs] == ["nodes.portal.compromised"]
    assert probs[0].line == line_of(text, "compromised:")


def test_ports_follow_the_order_of_the_grant(project):
    f = project / "s.yaml"
    f.write_text(_with(BASE, "[portal, gw]"))
    sc = load_scenario(f)
    assert operated_nodes(sc, "soc") == ["portal", "gw"]
    assert operate_ports(sc, "soc") == {"portal": WS_OPERATE_BASE, "gw": WS_OPERATE_BASE + 1}
    assert operate_ports(sc, "portal") == {}


def _solution_exec_nodes(path: Path) -> set[str]:
    data = YAML(typ="safe").load(path.read_text())
    return {s["exec"]["node"] for s in data["steps"] if "exec" in s}


@pytest.mark.parametrize(
    "solution", sorted((ROOT / "scenarios").glob("*.solution.yaml")), ids=lambda p: p.name.split(".")[0]
)
def test_shipped_scenarios_grant_every_node_their_solution_operates(solution: Path):
    """A trainee can do every step of the reference solution: each node it runs commands on is granted."""
    sc = load_scenario(solution.with_name(solution.name.replace(".solution", "")))
    blue = [n for n, spec in sc.nodes.items() if spec.role == "blue"]
    granted = {n for b in blue for n in sc.nodes[b].operate}
    needed = _solution_exec_nodes(solution)
    assert needed, "the solution has exec steps"
    assert needed <= granted, f"not granted: {sorted(needed - granted)}"


def test_reset_grants_follow_the_same_rules(project):
    """`reset:` (respond reset NODE) is validated like `operate:`: own nodes only, on a blue node."""
    ok = sub(BASE, SOC, SOC + "    reset: [portal]\n")
    assert check(project, ok) == []
    bad = sub(BASE, SOC, SOC + "    reset: [portal, scanner]\n")
    probs = check(project, bad)
    assert [p.path for p in probs] == ["nodes.soc.reset[1]"] and "'scanner' is a red node" in probs[0].message
