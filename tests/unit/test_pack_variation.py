"""Every shipped scenario with a reference solution varies its non-address answers per team: the
value that is right for team 1 is wrong for team 2 (and flagged as another team's answer), and the
reference solution's own answers are right for each team that plays them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rangectl.answers import check_answer
from rangectl.plan import plan
from rangectl.scenario.validate import load_scenario
from rangectl.scoring.actions import _flag
from rangectl.scoring.policy import Policy
from rangectl.solution import fill, load_solution
from tests.conftest import ROOT, pack_names

PACK = pack_names()

# answers that name a kind of thing rather than a value, so they cannot differ per team
CONCEPTUAL = {("tet-portal", "flood-type")}


def _answers(sc):
    """(objective or objective/field, answer spec) for every checked answer that is not an address."""
    for o in sc.objectives:
        if o.answer is not None and o.answer.ip_of is None:
            yield o.id, o.answer
        if o.report is not None:
            for f in o.report.fields:
                if f.answer is not None and f.answer.ip_of is None:
                    yield f"{o.id}/{f.name}", f.answer


def _mentions_var(spec) -> bool:
    return any("{var:" in str(v) for v in (spec.value, spec.regex, *(spec.one_of or [])))


@pytest.mark.parametrize("name", PACK)
def test_every_non_address_answer_varies_per_team(name):
    sc = load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    fixed = [oid for oid, spec in _answers(sc) if not _mentions_var(spec)
             and (name, oid.split("/")[0]) not in CONCEPTUAL and not _scenario_fact(sc, spec)]
    assert not fixed, f"{name}: the same answer for every team: {fixed}"
    p = plan(sc, 2, "pack-test")
    assert p.team(1).values != p.team(2).values


def _scenario_fact(sc, spec) -> bool:
    """A report field asking for a fact of the scenario itself (its security level)."""
    return spec.value is not None and str(spec.value) == str(sc.level)


@pytest.mark.parametrize("name", PACK)
def test_the_reference_answers_are_right_for_their_team_and_wrong_for_the_other(name):
    f = ROOT / "scenarios" / f"{name}.yaml"
    sc = load_scenario(f)
    sol = load_solution(f, sc)
    p = plan(sc, 2, "pack-test")
    t1, t2 = p.team(1), p.team(2)
    checked = 0
    for step in sol.steps:
        if step.submit is None or "{var:" not in step.submit.answer:
            continue
        spec = sc.objective(step.submit.objective).answer
        mine, theirs = fill(step.submit.answer, t1), fill(step.submit.answer, t2)
        assert check_answer(spec, mine, t1), (step.submit.objective, mine)
        assert check_answer(spec, theirs, t2), (step.submit.objective, theirs)
        assert not check_answer(spec, mine, t2), f"{name}: team 1's {step.submit.objective} is right for team 2"
        # ... and when team 2 submits it, the scoring flags it as team 1's answer
        obj = sc.objective(step.submit.objective)
        flag = _flag(SimpleNamespace(plan=p, policy=Policy()), 2, obj, mine, False, 600.0, 0.0)
        assert flag == {"objective": obj.id, "reason": "another-team", "other_team": 1}, (name, obj.id, flag)
        checked += 1
    assert checked, f"{name}: the reference solution submits no per-team answer"
