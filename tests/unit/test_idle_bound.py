"""The self-test's score bound: an idle team that keeps too much of the reference team's score fails
the self-test with a line saying where its points came from."""

from __future__ import annotations

import pytest

from rangectl.scoring.engine import TeamBoard
from rangectl.scoring.policy import Policy
from rangectl.selftest import SelftestResult, idle_bound


def _res() -> SelftestResult:
    return SelftestResult("tet-portal", "scenarios/tet-portal.yaml", "selftest-tet-portal")


def _team(k: int, total: float, avail: float = 0.0, up: int = 0, rounds: int = 0) -> TeamBoard:
    return TeamBoard(team=k, total=total, categories={"availability": avail},
                     availability_up=up, availability_total=rounds)


def test_the_measured_tet_portal_case_fails_and_says_why():
    """The figures from the issue: the reference 1685.7, the idle team 728.0, all availability."""
    res = _res()
    idle_bound(res, _team(1, 1685.7), _team(2, 728.0, 728.0, 24, 24), Policy(idle_share_max=0.2))
    [a] = res.assertions
    assert (a.name, a.ok) == ("idle-bound", False) and not res.ok
    assert a.detail == (
        "idle team 728.0 is 43% of the reference team's 1685.7 (at most 20%); "
        "availability 728.0 of it, 24/24 availability rounds up"
    )


@pytest.mark.parametrize("idle, ok", [(337.1, True), (337.14, True), (337.2, False), (0.0, True)])
def test_the_bound_is_inclusive_at_the_share(idle, ok):
    res = _res()
    idle_bound(res, _team(1, 1685.7), _team(2, idle), Policy(idle_share_max=0.2))
    assert res.assertions[0].ok is ok


def test_no_bound_in_the_policy_adds_no_assertion():
    res = _res()
    idle_bound(res, _team(1, 100.0), _team(2, 99.0), Policy())
    assert res.assertions == []


def test_a_reference_team_with_nothing_fails_against_an_idle_team_with_something():
    res = _res()
    idle_bound(res, _team(1, 0.0), _team(2, 5.0), Policy(idle_share_max=0.2))
    assert not res.assertions[0].ok


def test_the_bound_must_be_a_share():
    with pytest.raises(ValueError):
        Policy(idle_share_max=1.5)


def test_the_scenarios_bound_overrides_the_policys():
    res = _res()
    idle_bound(res, _team(1, 1000.0), _team(2, 150.0), Policy(idle_share_max=0.1), 0.2)
    assert res.assertions[0].ok and "(at most 20%)" in res.assertions[0].detail
    res = _res()
    idle_bound(res, _team(1, 1000.0), _team(2, 150.0), Policy(), 0.1)
    assert not res.assertions[0].ok
