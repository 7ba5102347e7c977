"""Reference solutions: timed steps of a scripted responder, kept apart from the scenario.

A solution lives beside its scenario as ``<scenario>.solution.yaml`` (never
shown to teams; the team service never reads it)::

    solution: tet-portal
    steps:
      - {at: 3m, submit: {objective: attacker-ip, answer: "{ip:attacker}"}}
      - {at: 4m, hint: sqli-point}
      - {at: 5m, exec: {node: edge, run: "iptables -I RANGECTL-FILTER -s {ip:attacker} -j DROP"}}
      - {at: 9m, report: {objective: ncsc-report, fields: {attacker_ip: "{ip:attacker}"}}}

Times are drill-clock times. ``{var:NAME}`` is the team's value of a per-team
variable. ``{ip:NODE}`` (and ``{ip:NODE:NETWORK}``) are
replaced with the team's own address of that node.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rangectl.plan import TeamPlan
from rangectl.scenario.model import Duration
from rangectl.scenario.validate import FileResult, validate_file
from rangectl.scenario.variables import reference_problems, substitute

_IP = re.compile(r"\{ip:([a-z0-9_-]+)(?::([a-z0-9_-]+))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Submit(_Strict):
    objective: str
    answer: str


class Exec(_Strict):
    node: str
    run: str
    expect_exit: int | None = 0


class ReportStep(_Strict):
    objective: str
    fields: dict[str, str]


class Step(_Strict):
    at: Duration
    submit: Submit | None = None
    hint: str | None = None
    exec: Exec | None = None
    report: ReportStep | None = None

    @model_validator(mode="after")
    def _one(self) -> Step:
        if sum(x is not None for x in (self.submit, self.hint, self.exec, self.report)) != 1:
            raise ValueError("a step does exactly one of: submit, hint, exec, report")
        return self


class Solution(_Strict):
    solution: str
    description: str | None = None
    steps: Annotated[list[Step], Field(min_length=1)]


def solution_path(scenario_file: Path) -> Path:
    return scenario_file.with_name(scenario_file.stem + ".solution.yaml")


def _read(path: Path) -> tuple[Any, Solution]:
    """Data and model of a solution file; ScenarioError (with ``.problem``) naming file, line and field."""
    from pydantic import ValidationError

    from rangectl.errors import ScenarioError
    from rangectl.scenario.loader import Problem, _plain, dotted, locate, read_small_yaml

    data = read_small_yaml(path, 1_000_000, "a solution file", ScenarioError)
    try:
        return data, Solution.model_validate(_plain(data))
    except ValidationError as exc:  # report the first, with its line
        err = exc.errors(include_url=False)[0]
        loc = tuple(err["loc"])
        line, col = locate(data, loc)
        problem = Problem(str(path), line, col, dotted(loc), str(err["msg"]).removeprefix("Value error, "))
        error = ScenarioError(str(problem))
        error.problem = problem  # type: ignore[attr-defined]
        raise error from None


def load_solution(scenario_file: Path, scenario: Any) -> Solution:
    """The reference solution beside a (valid) scenario, checked against it; ScenarioError with the
    first problem (``FILE:LINE:COL: field: message``) otherwise."""
    from rangectl.errors import ScenarioError

    path = solution_path(Path(scenario_file))
    if not path.is_file():
        raise ScenarioError(f"{path}: no reference solution for this scenario")
    data, sol = _read(path)
    problems = _reference_problems(path, data, sol, scenario)
    if problems:
        more = f" (+{len(problems) - 1} more; run rangectl validate)" if len(problems) > 1 else ""
        raise ScenarioError(f"{problems[0]}{more}")
    return sol


def validate_with_solution(path: Path | str, check_playbooks: bool = True) -> FileResult:
    """``rangectl validate``: the scenario file's problems, then (when it has none) its reference
    solution's. Sorted like :func:`rangectl.scenario.validate.validate_file` sorts them."""
    result = validate_file(path, check_playbooks=check_playbooks)
    if result.ok and result.loaded is not None and result.loaded.scenario is not None:
        extra = solution_problems(result.path, result.loaded.scenario)
        if extra:
            result.problems.extend(extra)
            result.scenario = None
            result.problems.sort(key=lambda p: (p.file != str(result.path), p.file, p.line, p.col, p.path))
    return result


def solution_problems(scenario_file: Path, scenario: Any) -> list[Any]:
    """Problems of the solution beside a (valid) scenario, if it has one: its shape, and every
    objective, hint, node and ``{ip:NODE[:NETWORK]}`` it names. ``rangectl validate`` reports them."""
    from rangectl.errors import ScenarioError

    path = solution_path(Path(scenario_file))
    if not path.is_file():
        return []
    try:
        data, sol = _read(path)
    except ScenarioError as exc:
        return [exc.problem]  # type: ignore[attr-defined]
    return _reference_problems(path, data, sol, scenario)


def _reference_problems(path: Path, data: Any, sol: Solution, scenario: Any) -> list[Any]:
    from rangectl.scenario.loader import Problem, dotted, locate

    out: list[Problem] = []

    def bad(loc: tuple, message: str) -> None:
        line, col = locate(data, loc)
        out.append(Problem(str(path), line, col, dotted(loc), message))

    if sol.solution != scenario.name:
        bad(("solution",), f"names scenario '{sol.solution}', but this is '{scenario.name}'")
    objectives = {o.id: o for o in scenario.objectives}
    for i, step in enumerate(sol.steps):
        loc = ("steps", i)
        texts: list[tuple[tuple, str]] = []
        if step.submit is not None:
            o = objectives.get(step.submit.objective)
            if o is None:
                bad(loc + ("submit", "objective"), f"unknown objective '{step.submit.objective}'")
            elif o.answer is None:
                bad(loc + ("submit", "objective"), f"objective '{o.id}' takes no answer (it is {o.kind}-scored)")
            texts.append((loc + ("submit", "answer"), step.submit.answer))
        if step.hint is not None:
            o = objectives.get(step.hint)
            if o is None:
                bad(loc + ("hint",), f"unknown objective '{step.hint}'")
            elif not o.hints:
                bad(loc + ("hint",), f"objective '{o.id}' has no hints")
        if step.exec is not None:
            reach = {n for n, spec in scenario.nodes.items() if spec.role == "blue"}
            reach |= {o for n in list(reach) for o in scenario.nodes[n].operate}
            if step.exec.node not in scenario.nodes:
                bad(loc + ("exec", "node"), f"unknown node '{step.exec.node}'")
            elif step.exec.node not in reach:
                bad(loc + ("exec", "node"), f"trainees cannot run commands on '{step.exec.node}': the solution plays "
                    "as a team, so grant it on the blue node (operate:)")  # fmt: skip
            texts.append((loc + ("exec", "run"), step.exec.run))
        if step.report is not None:
            o = objectives.get(step.report.objective)
            if o is None or o.report is None:
                what = "unknown objective" if o is None else "not a report objective:"
                bad(loc + ("report", "objective"), f"{what} '{step.report.objective}'")
            else:
                known = {f.name for f in o.report.fields}
                for name, value in step.report.fields.items():
                    if name not in known:
                        bad(loc + ("report", "fields", name), f"unknown field (fields: {', '.join(sorted(known))})")
                    texts.append((loc + ("report", "fields", name), value))
        for tloc, text in texts:
            for m in _IP.finditer(text):
                node, net = m.group(1), m.group(2)
                if node not in scenario.nodes:
                    bad(tloc, f"{m.group(0)}: unknown node '{node}'")
                elif net and net not in scenario.nodes[node].interfaces:
                    bad(tloc, f"{m.group(0)}: node '{node}' has no interface on '{net}'")
    for vloc, message in reference_problems(data, scenario.variables, skip=()):
        bad(vloc, message)
    return out


def fill(text: str, team: TeamPlan) -> str:
    def sub(m: re.Match) -> str:
        node = team.node(m.group(1))
        if m.group(2):
            return str(node.interfaces[m.group(2)])
        return str(node.primary_ip)

    return substitute(_IP.sub(sub, text), team.values)


class SolutionPlayer:
    """Plays a solution for one team, step by step, as the drill clock reaches each step."""

    def __init__(self, solution: Solution, team: TeamPlan, actions: dict[str, Any]):
        self.steps = sorted(solution.steps, key=lambda s: s.at)
        self.team = team
        self.actions = actions  # submit(team, obj, answer), hint(team, obj), exec(team, node, cmd), report(team, obj, fields)
        self.done: list[dict[str, Any]] = []
        self.next = 0

    def play_due(self, drill_t: float) -> None:
        while self.next < len(self.steps) and self.steps[self.next].at <= drill_t:
            step = self.steps[self.next]
            self.next += 1
            k = self.team.team
            if step.submit:
                res = self.actions["submit"](k, step.submit.objective, fill(step.submit.answer, self.team))
                self.done.append({"step": "submit", "objective": step.submit.objective, "result": res})
            elif step.hint:
                self.actions["hint"](k, step.hint)
                self.done.append({"step": "hint", "objective": step.hint})
            elif step.exec:
                cmd = fill(step.exec.run, self.team)
                code, out = self.actions["exec"](k, step.exec.node, cmd)
                ok = step.exec.expect_exit is None or code == step.exec.expect_exit
                self.done.append(
                    {"step": "exec", "node": step.exec.node, "run": cmd, "exit": code, "ok": ok, "output": out[-300:]}
                )
            elif step.report:
                fields = {f: fill(v, self.team) for f, v in step.report.fields.items()}
                res = self.actions["report"](k, step.report.objective, fields)
                self.done.append({"step": "report", "objective": step.report.objective, "result": res})

    @property
    def finished(self) -> bool:
        return self.next >= len(self.steps)


def wait_and_play(players: list[SolutionPlayer], clock_fn, stop_fn, poll: float = 0.1) -> None:
    while not stop_fn():
        t = clock_fn()
        for p in players:
            p.play_due(t)
        time.sleep(poll)
