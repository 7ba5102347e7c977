"""`rangectl validate` checks the reference solution beside a scenario: shape and references,
each problem with the solution file's line and field."""

from __future__ import annotations

import shutil

import pytest

from rangectl.solution import validate_with_solution
from tests.conftest import FIXTURES, run_cli


@pytest.fixture
def scen(tmp_path):
    shutil.copytree(FIXTURES / "playbooks", tmp_path / "playbooks")
    f = tmp_path / "mini-range.yaml"
    f.write_text((FIXTURES / "mini-range.yaml").read_text())
    return f


def _problems(scen, solution: str):
    scen.with_name("mini-range.solution.yaml").write_text(solution)
    return [(p.line, p.path, p.message) for p in validate_with_solution(scen).problems]


def test_the_fixture_solution_is_valid(scen):
    shutil.copy(FIXTURES / "mini-range.solution.yaml", scen.with_name("mini-range.solution.yaml"))
    assert validate_with_solution(scen).problems == []


def test_every_reference_is_checked(scen):
    got = _problems(
        scen,
        "solution: mini-range\n"
        "steps:\n"
        "  - {at: 20s, submit: {objective: block-scanner, answer: x}}\n"
        "  - {at: 21s, submit: {objective: scanner-ip, answer: '{ip:nosuch}'}}\n"
        "  - {at: 25s, exec: {node: gw2, run: 'iptables -s {ip:scanner:dmz}'}}\n"
        "  - {at: 26s, hint: incident-report}\n"
        "  - {at: 40s, report: {objective: incident-report, fields: {attacker: x}}}\n"
        "  - {at: 41s, report: {objective: scanner-ip, fields: {a: b}}}\n",
    )
    assert got == [
        (3, "steps[0].submit.objective", "objective 'block-scanner' takes no answer (it is check-scored)"),
        (4, "steps[1].submit.answer", "{ip:nosuch}: unknown node 'nosuch'"),
        (5, "steps[2].exec.node", "unknown node 'gw2'"),
        (5, "steps[2].exec.run", "{ip:scanner:dmz}: node 'scanner' has no interface on 'dmz'"),
        (6, "steps[3].hint", "objective 'incident-report' has no hints"),
        (7, "steps[4].report.fields.attacker", "unknown field (fields: attacker_ip, summary)"),
        (8, "steps[5].report.objective", "not a report objective: 'scanner-ip'"),
    ]


def test_shape_and_yaml_errors_have_lines(scen):
    assert _problems(scen, "solution: mini-range\nsteps:\n  - {at: 2x, hint: scanner-ip}\n") == [
        (3, "steps[0].at", "'2x' is not a duration (write 90s, 5m or 1h30m)")
    ]
    (line, path, msg), = _problems(scen, "solution: mini-range\nsteps: [\n")
    assert path == "" and msg.startswith("invalid YAML")
    assert _problems(scen, "solution: other\nsteps:\n  - {at: 1s, hint: scanner-ip}\n") == [
        (1, "solution", "names scenario 'other', but this is 'mini-range'")
    ]


def test_cli_exit_code(scen):
    scen.with_name("mini-range.solution.yaml").write_text("solution: mini-range\nsteps: []\n")
    p = run_cli("validate", str(scen))
    assert p.returncode == 1 and "mini-range.solution.yaml:2:" in p.stdout + p.stderr


def test_running_a_scenario_never_reads_its_solution_and_selftest_checks_it(scen):
    from rangectl.errors import ScenarioError
    from rangectl.scenario.validate import load_scenario
    from rangectl.solution import load_solution

    scen.with_name("mini-range.solution.yaml").write_text(
        "solution: mini-range\nsteps:\n  - {at: 25s, exec: {node: gw2, run: 'true'}}\n"
    )
    sc = load_scenario(scen)  # up, plan, the team service: the solution is not theirs to read
    with pytest.raises(ScenarioError, match=r"mini-range\.solution\.yaml:3:\d+: steps\[0\]\.exec\.node: unknown node 'gw2'"):
        load_solution(scen, sc)


def test_a_solution_runs_commands_only_where_trainees_can(scen):
    """The solution plays as a team: a node the team was not granted (`operate:`) is refused."""
    got = _problems(
        scen,
        "solution: mini-range\n"
        "steps:\n"
        "  - {at: 25s, exec: {node: gw, run: 'true'}}\n"
        "  - {at: 26s, exec: {node: soc, run: 'true'}}\n"
        "  - {at: 27s, exec: {node: portal, run: 'true'}}\n"
        "  - {at: 28s, exec: {node: scanner, run: 'true'}}\n",
    )
    assert [(line, path) for line, path, _ in got] == [(5, "steps[2].exec.node"), (6, "steps[3].exec.node")]
    assert "cannot run commands on 'portal'" in got[0][2] and "operate:" in got[0][2]
