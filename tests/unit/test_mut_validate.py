"""Scenario validation, one documented behaviour per test (written against surviving mutants of
rangectl/scenario/validate.py; docs/testing.md, "Mutation testing"). Everything goes through the
functions callers use: validate_file, load_scenario, expand_paths, playbook_problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from rangectl.errors import ScenarioError
from rangectl.scenario.loader import Problem
from rangectl.scenario.validate import expand_paths, load_scenario, playbook_problems, validate_file
from tests.unit.test_validate import BASE, POLICY, sub

HOST_SIDE = "- hosts: localhost\n  tasks:\n    - shell: id\n"
REFUSED = "(refused unless the trainer passes --trust-playbooks)"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A throw-away project root (RANGECTL_ROOT) with its own scoring/standard.yaml."""
    root = tmp_path / "proj"
    (root / "scoring").mkdir(parents=True)
    (root / "scoring" / "standard.yaml").write_text(POLICY)
    monkeypatch.setenv("RANGECTL_ROOT", str(root))
    return root


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _provision(text: str, node: str, playbook: str) -> str:
    """BASE with ``provision: [playbook]`` on ``node`` (soc or portal)."""
    anchor = {"soc": "      dmz: 10.10.1.50\n", "portal": "      dmz: 10.10.1.10\n"}[node]
    return sub(text, anchor, anchor + f"    provision: [{playbook}]\n")


# --- captures ------------------------------------------------------------------------------------


def test_a_capture_outside_the_allowed_folders_is_refused_naming_the_capture(project):
    """A pcap that resolves outside the scenario's folder and the project's playbooks/ and scenarios/
    is refused with the word "capture", the name as written and where it really is."""
    outside = project.parent / "outside.pcap"
    outside.write_bytes(b"\xd4\xc3\xb2\xa1")
    text = sub(BASE, "objectives:\n",
               "  - id: replay\n    at: 5m\n    traffic: {kind: pcap, from: scanner, file: ../outside.pcap}\n"
               "objectives:\n")
    res = validate_file(_write(project / "s.yaml", text), check_playbooks=False)
    hits = [p for p in res.problems if p.path == "injects[2].traffic.file"]
    assert [p.message for p in hits] == [
        f"capture '../outside.pcap' resolves to {outside.resolve()}, outside the scenario's folder and the "
        "project's playbooks/ and scenarios/"
    ]


def test_a_variable_in_traffic_parameters_without_declared_variables_is_a_problem_not_a_crash(project):
    """``{var:NAME}`` in a traffic parameter of a scenario that declares no variables is reported
    (unknown variable) like any other mistake; validation does not raise."""
    text = sub(BASE, '      ports: "80"\n', '      ports: "{var:port}"\n')
    res = validate_file(_write(project / "s.yaml", text), check_playbooks=False)
    assert not res.ok
    assert any("port" in p.message and p.path.startswith("injects[1].traffic") for p in res.problems), res.problems


# --- host-side plays in playbooks ----------------------------------------------------------------


def test_host_side_plays_are_found_in_a_playbook_from_the_projects_playbooks_folder(project):
    """The scan reads playbooks where provisioning finds them, including <root>/playbooks/ (not only
    beside the scenario), and refuses their host-side plays unless the trainer trusts them."""
    book = _write(project / "playbooks" / "evil.yml", HOST_SIDE)
    f = _write(project / "scen" / "s.yaml", _provision(BASE, "soc", "evil.yml"))
    probs = validate_file(f).problems
    assert probs and all(p.file == str(book.resolve()) and p.message.endswith(REFUSED) for p in probs), probs
    assert validate_file(f, check_playbooks=False).ok  # trusted: the same file is fine


def test_a_playbook_two_nodes_share_is_scanned_once(project):
    """Each finding is reported once, however many nodes run the playbook."""
    _write(project / "playbooks" / "evil.yml", HOST_SIDE)
    one = _provision(BASE, "soc", "evil.yml")
    f1 = _write(project / "scen" / "one.yaml", one)
    f2 = _write(project / "scen" / "two.yaml", _provision(one, "portal", "evil.yml"))
    first = validate_file(f1).problems
    assert first and validate_file(f2).problems == first
    sc2 = validate_file(f2, check_playbooks=False).scenario
    assert sc2 is not None and playbook_problems(sc2, f2) == first


def test_load_scenario_scans_playbooks_only_when_asked(project):
    """``load_scenario(..., check_playbooks=True)`` (where playbooks are about to run) refuses a
    host-side play; reading a range's scenario back (the default) does not scan."""
    _write(project / "playbooks" / "evil.yml", HOST_SIDE)
    f = _write(project / "scen" / "s.yaml", _provision(BASE, "soc", "evil.yml"))
    assert load_scenario(f).name == "base"
    with pytest.raises(ScenarioError) as e:
        load_scenario(f, check_playbooks=True)
    assert REFUSED in str(e.value)


# --- load_scenario's one-line error ----------------------------------------------------------------


def test_load_scenario_names_the_first_problem_and_counts_the_rest(project):
    """One problem: exactly that problem. More: the first, then "(+N more; run rangectl validate)"."""
    one = _write(project / "one.yaml", sub(BASE, "      dmz: 10.10.1.10\n", "      dmz: 10.10.2.10\n"))
    only = validate_file(one).problems
    assert len(only) == 1
    with pytest.raises(ScenarioError) as e:
        load_scenario(one)
    assert str(e.value) == str(only[0])

    three = sub(sub(BASE, "      dmz: 10.10.1.10\n", "      dmz: 10.10.2.10\n"),
                "      dmz: 10.10.1.50\n", "      dmz: 10.10.3.50\n")
    three = sub(three, "      wan: 198.51.100.66\n", "      wan: 198.51.101.66\n")
    many = _write(project / "many.yaml", three)
    probs = validate_file(many).problems
    assert len(probs) >= 3
    with pytest.raises(ScenarioError) as e:
        load_scenario(many)
    assert str(e.value) == f"{probs[0]} (+{len(probs) - 1} more; run rangectl validate)"


# --- which files a directory holds ------------------------------------------------------------------


def test_an_empty_directory_is_one_problem_at_its_first_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    files, extra = expand_paths([tmp_path])
    assert files == []
    assert extra == [Problem(str(tmp_path), 1, 1, "", "directory holds no scenario files (*.yaml, *.yml)")]
    assert str(extra[0]) == f"{tmp_path}:1:1: directory holds no scenario files (*.yaml, *.yml)"


def test_solutions_and_policies_in_a_directory_are_not_scenarios(tmp_path):
    """Reference solutions (*.solution.yaml / *.solution.yml) and policies (files directly in a
    scoring/ folder) are side files; a scenario in a folder below scoring/ is still a scenario."""
    keep = [tmp_path / "a.yaml", tmp_path / "b.yml", tmp_path / "scoring" / "deep" / "c.yaml",
            tmp_path / "x" / "scoring" / "more" / "d.yaml"]
    side = [tmp_path / "a.solution.yaml", tmp_path / "b.solution.yml", tmp_path / "scoring" / "standard.yaml",
            tmp_path / "x" / "scoring" / "hard.yml"]
    for f in keep + side:
        _write(f, "x: 1\n")
    files, extra = expand_paths([tmp_path])
    assert extra == []
    assert sorted(files) == sorted(keep)


def test_traffic_parameters_are_checked_with_a_value_each_variable_can_take(project):
    """A declared variable in a traffic parameter is replaced by one of its values before the
    parameter is checked: a variable that can only give a valid port passes, one that can only give
    a word is refused at that parameter."""
    port = sub(BASE, '      ports: "80"\n', '      ports: "{var:port}"\n')
    good = port + "variables:\n  port: {choices: [8080]}\n"
    assert validate_file(_write(project / "good.yaml", good), check_playbooks=False).problems == []
    bad = port + "variables:\n  port: {choices: [http]}\n"
    probs = validate_file(_write(project / "bad.yaml", bad), check_playbooks=False).problems
    assert [p.path for p in probs] == ["injects[1].traffic.ports"], probs


def test_playbook_problems_skips_a_playbook_it_cannot_find(project):
    """playbook_problems scans the playbooks that exist; a missing one is the meaning check's finding
    ("not found"), not a crash of the scan."""
    f = _write(project / "scen" / "s.yaml", _provision(BASE, "soc", "missing.yml"))
    res = validate_file(f)
    assert [p.message for p in res.problems] == [
        "playbook 'missing.yml' not found (looked beside the scenario and in playbooks/)"
    ]
    from ruamel.yaml import YAML

    from rangectl.scenario.model import Scenario

    sc = Scenario.model_validate(YAML(typ="safe").load(f.read_text()))
    assert playbook_problems(sc, f) == []


def test_a_bad_traffic_parameter_is_named_down_to_the_list_item(project):
    """A traffic parameter's problem points at the parameter itself, down to the item of a list
    (``to[1]``), with the line and column of that item and the parameter check's message."""
    text = sub(BASE, "objectives:\n",
               "  - id: mail\n    at: 5m\n    traffic:\n      kind: phishing\n      from: scanner\n"
               "      target: portal\n      to: [staff@range.test, bad]\nobjectives:\n")
    probs = validate_file(_write(project / "s.yaml", text), check_playbooks=False).problems
    line = text.splitlines().index("      to: [staff@range.test, bad]") + 1
    assert [(p.path, p.line, p.col, p.message) for p in probs] == [
        ("injects[2].traffic.to[1]", line, 30, "'bad' is not an e-mail address like staff@range.test")
    ]


# --- each rule's whole message, at its exact place -------------------------------------------------

_BLOCK = "      blocked:\n        from: scanner\n        to: portal\n        port: 80\n"
_SOC = "      dmz: 10.10.1.50\n"
_AFTER_PORT = "        port: 80\navailability"
RULES = {
    "subnet-too-small": (
        lambda t: sub(sub(t, "      dmz: 10.10.1.1\n", "      dmz: 10.10.1.1\n      lnk: 10.99.0.1\n"),
                      "      wan: 198.51.100.66\n", "      wan: 198.51.100.66\n      lnk: 10.99.0.2\n")
        .replace("networks:\n", "networks:\n  lnk:\n    subnet: 10.99.0.0/30\n", 1),
        [("networks.lnk.subnet", "10.99.0.0/30 has 2 host address(es) and 2 node(s): the engine's bridge needs "
                                 "one more; use a larger subnet")]),
    "gateway-is-own-address": (
        lambda t: sub(t, "    gateway: 10.10.1.1\n    interfaces:\n" + _SOC, "    gateway: 10.10.1.50\n    interfaces:\n" + _SOC),
        [("nodes.soc.gateway", "gateway is this node's own address")]),
    "reserved-var": (
        lambda t: sub(t, _SOC, _SOC + "    vars: {ansible_host: x}\n"),
        [("nodes.soc.vars.ansible_host", "'ansible_host' is reserved: ansible_* and rangectl_* variables are set by "
                                         "rangectl (they choose where and as which team a node is provisioned)")]),
    "reachable-to-itself": (
        lambda t: sub(t, _BLOCK, "      reachable: {from: scanner, to: scanner, port: 80}\n"),
        [("objectives[1].check.reachable.to", "a check from a node to itself tests nothing")]),
    "http-to-itself": (
        lambda t: sub(t, _BLOCK, "      http: {from: gw, to: gw}\n"),
        [("objectives[1].check.http.to", "a check from a node to itself tests nothing")]),
    "control-outside-blocked": (
        lambda t: sub(t, _BLOCK, "      reachable: {from: scanner, to: portal, port: 80, control: gw}\n"),
        [("objectives[1].check.reachable", "`control` and `outage_ok` belong to `blocked` checks")]),
    "control-is-an-end": (
        lambda t: sub(t, _AFTER_PORT, "        port: 80\n        control: scanner\navailability"),
        [("objectives[1].check.blocked.control", "the control node must be neither `from` nor `to`")]),
    "guard-without-hold": (
        lambda t: sub(t, _AFTER_PORT, "        port: 80\n      guard: portal\navailability"),
        [("objectives[1].check.guard", "`guard` belongs with `hold` (the node whose availability must hold)")]),
    "guard-unknown-node": (
        lambda t: sub(t, _AFTER_PORT, "        port: 80\n      hold: 2\n      guard: nope\navailability"),
        [("objectives[1].check.guard", "unknown node 'nope'")]),
    "no-blue-node": (
        lambda t: sub(t, "    role: blue\n", "    role: target\n"),
        [("objectives", "objectives need at least one node with role 'blue' for the responders")]),
    "unknown-network-then-the-next-interface": (
        lambda t: sub(t, "    interfaces:\n      dmz: 10.10.1.10\n", "    interfaces:\n      nowhere: 10.10.9.9\n      dmz: 10.10.2.10\n"),
        [("nodes.portal.interfaces.nowhere", "unknown network 'nowhere' (networks: dmz, wan)"),
         ("nodes.portal.interfaces.dmz", "10.10.2.10 is not inside dmz's subnet 10.10.1.0/24")]),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_each_rule_gives_its_whole_message_at_its_place(project, rule):
    """The whole message, not a fragment: what a trainer reads is the contract. A node's other
    interfaces are still checked after one names an unknown network."""
    edit, want = RULES[rule]
    probs = validate_file(_write(project / "s.yaml", edit(BASE)), check_playbooks=False).problems
    assert [(p.path, p.message) for p in probs] == want


def test_a_playbook_outside_the_allowed_folders_is_refused_naming_the_playbook(project):
    outside = _write(project.parent / "setup.yml", "- hosts: all\n")
    f = _write(project / "s.yaml", sub(BASE, _SOC, _SOC + "    provision: [../setup.yml]\n"))
    assert [(p.path, p.message) for p in validate_file(f, check_playbooks=False).problems] == [
        ("nodes.soc.provision[0]", f"playbook '../setup.yml' resolves to {outside.resolve()}, outside the "
                                   "scenario's folder and the project's playbooks/ and scenarios/")
    ]


# --- availability probes and variable references ---------------------------------------------------

_AV = "    service: http\n    points: 5\n    every: 30s\n"
_HTTP = "      - name: http\n        port: 80\n"
_AVAIL = {
    "every-availability-entry-is-checked-after-an-unknown-node": (
        lambda t: sub(t, "    every: 30s\n", "    every: 30s\n  - node: ghost\n    service: http\n    points: 5\n"
                                               "    every: 30s\n  - node: portal\n    service: ftp\n    points: 5\n"
                                               "    every: 30s\n"),
        [("availability[1].node", "unknown node 'ghost'"),
         ("availability[2].service", "node 'portal' has no service 'ftp' (declare it under its services)")]),
    "every-of-one-second-is-fine": (lambda t: sub(t, "    every: 30s\n", "    every: 1s\n"), []),
    "every-of-zero-is-refused": (
        lambda t: sub(t, "    every: 30s\n", "    every: 0s\n"),
        [("availability[0].every", "must be longer than 0s")]),
    "status-on-an-https-service-without-a-probe-is-http": (
        lambda t: sub(sub(t, _HTTP, _HTTP + "      - name: https\n        port: 443\n"),
                      _AV, "    service: https\n    points: 5\n    every: 30s\n    status: [200]\n"), []),
    "status-on-an-http-service-without-a-probe-is-http": (lambda t: sub(t, _AV, _AV + "    status: [200]\n"), []),
    "status-with-a-tcp-probe-is-refused": (
        lambda t: sub(t, _AV, _AV + "    probe: tcp\n    status: [200]\n"),
        [("availability[0].status", "'status' needs an http probe (set probe: http)")]),
    "an-unknown-variable-in-a-text": (
        lambda t: sub(t, "      en: Start.\n", "      en: Start {var:nope}.\n"),
        [("injects[0].message.en", "unknown variable 'nope' in {var:nope} (variables: none declared)")]),
}


@pytest.mark.parametrize("case", list(_AVAIL))
def test_availability_and_variable_rules(project, case):
    """`status`/`contains`/`absent` need an http probe: given (`probe: http`) or implied by an
    http/https service without a probe; `every` must be above 0 s; every availability entry is
    checked, even after one names an unknown node; a {var:NAME} nobody declared is named where it is."""
    edit, want = _AVAIL[case]
    probs = validate_file(_write(project / "s.yaml", edit(BASE)), check_playbooks=False).problems
    assert [(p.path, p.message) for p in probs] == want
