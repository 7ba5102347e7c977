"""``answers.other_team_right`` (the scoring's "another team's answer" flag, one look-up instead of
a ``check_answer`` per team) names the same team as the per-team loop, for every answer kind."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rangectl.answers import check_answer, other_team_right
from rangectl.plan import plan
from rangectl.scenario.model import Answer
from rangectl.scenario.validate import load_scenario
from rangectl.solution import fill, load_solution
from tests.conftest import ROOT, pack_names

PACK = pack_names()


def naive(spec, answer, teams, team):
    return next((tp.team for tp in teams if tp.team != team and check_answer(spec, answer, tp)), None)


def _specs(sc):
    for o in sc.objectives:
        if o.answer is not None:
            yield o.answer
        if o.report is not None:
            yield from (f.answer for f in o.report.fields if f.answer is not None)


def _variants(text: str) -> list[str]:
    return [text, text.upper(), f"  {text} ", text[:-1], text + "x", text.casefold(), "", "0", "1.0"]


@pytest.mark.parametrize("name", PACK)
def test_the_pack_answers_name_the_same_team_as_the_loop(name):
    f = ROOT / "scenarios" / f"{name}.yaml"
    sc = load_scenario(Path(f))
    sol = load_solution(Path(f), sc)
    p = plan(sc, 6, "index-test")
    answers = []
    for step in sol.steps:
        if step.submit is not None:
            answers += [fill(step.submit.answer, tp) for tp in p.teams]
        if step.report is not None:
            answers += [fill(str(v), tp) for tp in p.teams for v in step.report.fields.values()]
    answers += [str(tp.ip_of(n)) for tp in p.teams for n in sc.nodes if tp.ip_of(n) is not None][:40]
    compared = flagged = 0
    for spec in _specs(sc):
        for a in answers:
            for v in _variants(a):
                for team in (1, 3, 6):
                    want = naive(spec, v, p.teams, team)
                    assert other_team_right(spec, v, p.teams, team) == want, (name, spec, v, team)
                    compared += 1
                    flagged += want is not None
    assert compared and flagged, (compared, flagged)


class _TP:
    """A team plan with just what answers read."""

    def __init__(self, team, values, ip=None):
        self.team, self.values, self._ip = team, values, ip

    def ip_of(self, node):
        from ipaddress import IPv4Address

        return IPv4Address(self._ip)


SPECS = [
    Answer(value="{var:x}"),
    Answer(value="{var:x}", case_sensitive=True),
    Answer(value=443),
    Answer(value=2.5),
    Answer(one_of=["{var:x}", 7, "same"]),
    Answer(regex="(\\*\\.)?{var:x}\\.?"),
    Answer(regex="a.{var:x}", case_sensitive=True),
    Answer(ip_of="n"),
]
VALUES = st.sampled_from(["ab", "AB", "a.b", "443", "443.0", "7", "same", "x", "0443", "2.50", "nan", "1e3"])


@settings(max_examples=300, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    values=st.lists(VALUES, min_size=2, max_size=6),
    given_=st.one_of(VALUES, st.text(max_size=6), st.sampled_from(["10.0.0.1", " 10.0.0.2", "10.0.0.002"])),
    team=st.integers(1, 6),
)
def test_any_answer_names_the_same_team_as_the_loop(spec, values, given_, team):
    teams = [_TP(i + 1, {"x": v}, f"10.0.0.{i + 1 if i % 2 else 1}") for i, v in enumerate(values)]
    assert other_team_right(spec, given_, teams, team) == naive(spec, given_, teams, team)


def test_a_changed_team_list_is_indexed_again():
    spec = Answer(value="{var:x}")
    a = [_TP(1, {"x": "one"}), _TP(2, {"x": "two"})]
    assert other_team_right(spec, "two", a, 1) == 2
    b = [_TP(1, {"x": "one"}), _TP(2, {"x": "deux"})]
    assert other_team_right(spec, "two", b, 1) is None
    assert other_team_right(spec, "deux", b, 1) == 2
    assert other_team_right(spec, "one", b, 1) is None  # its own answer is not another team's
    assert other_team_right(spec, None, b, 1) is None and other_team_right(spec, "  ", b, 1) is None


def test_a_new_team_list_at_a_freed_address_is_not_taken_for_the_old_one():
    spec = Answer(value="{var:x}")
    for i in range(50):  # CPython hands a freed list's address to the next one: the ids repeat
        teams = [_TP(1, {"x": f"a{i}"}), _TP(2, {"x": f"b{i}"})]
        assert other_team_right(spec, f"b{i}", teams, 1) == 2
        del teams
