"""The shipped scenario pack, statically: valid, complete metadata, every text in English and
Vietnamese, a reference solution that parses and only names objectives and nodes that exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from rangectl.scenario.validate import load_scenario
from rangectl.solution import load_solution
from tests.conftest import NINE, ROOT, pack_names

PACK = pack_names()


def _texts(obj, path=""):
    """Every per-language text in a scenario model, with where it is."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from _texts(getattr(obj, name), f"{path}.{name}".lstrip("."))
    elif isinstance(obj, dict):
        if obj and set(obj) <= {"en", "vi"} and all(isinstance(v, str) for v in obj.values()):
            yield path, obj
        else:
            for k, v in obj.items():
                yield from _texts(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _texts(v, f"{path}[{i}]")
    elif isinstance(obj, str) and path.split(".")[-1] in {"title", "description", "briefing", "message", "prompt", "text"}:
        yield path, obj


def test_the_nine_are_shipped():
    assert set(PACK) >= NINE, sorted(NINE - set(PACK))


@pytest.mark.parametrize("name", PACK)
def test_scenario_is_complete_and_bilingual(name):
    f = ROOT / "scenarios" / f"{name}.yaml"
    sc = load_scenario(f)
    assert sc.level in (1, 2, 3, 4, 5) and sc.duration and sc.expected_score
    assert sc.briefing is not None
    cats = {o.category for o in sc.objectives}
    assert {"detection", "containment", "reporting"} <= cats, cats
    assert sc.availability, "availability is part of every drill"
    assert any(i.traffic for i in sc.injects)
    untranslated = [p for p, t in _texts(sc) if not (isinstance(t, dict) and t.get("en") and t.get("vi"))]
    assert not untranslated, f"texts without both en and vi: {untranslated[:5]}"


@pytest.mark.parametrize("name", PACK)
def test_solution_names_what_exists(name):
    f = ROOT / "scenarios" / f"{name}.yaml"
    sc = load_scenario(f)
    sol = load_solution(Path(f), sc)
    assert sol.solution == sc.name
    objectives = {o.id for o in sc.objectives}
    for step in sol.steps:
        for ref in (step.submit, step.report):
            if ref is not None:
                assert ref.objective in objectives
        if step.hint is not None:
            assert step.hint in objectives
        if step.exec is not None:
            assert step.exec.node in sc.nodes
    earned_by_solution = {s.submit.objective for s in sol.steps if s.submit} | {s.report.objective for s in sol.steps if s.report}
    for o in sc.objectives:
        if o.answer is not None or o.report is not None:
            assert o.id in earned_by_solution, f"the solution never earns {o.id}"
