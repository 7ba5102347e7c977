"""The scoring engine's and policy's rules, one behaviour per test (written against surviving mutants).

Same scenario and policy as test_scoring.py (half-life 10 min, floor 0.25, 10 points per wrong
answer, 3 attempts, late reports earn half, availability weighted x2). Every expected number is
worked by hand in the comment beside it.
"""

from __future__ import annotations

import json

import pytest

from rangectl.answers import check_answer
from rangectl.plan import plan
from rangectl.scenario.model import Answer, Scenario
from rangectl.scoring.engine import (
    Board,
    DrillClock,
    TeamBoard,
    award,
    compute_board,
    report_share,
)
from rangectl.scoring.policy import Policy
from rangectl.store import Event
from tests.unit.test_scoring import POLICY, SCENARIO, Log


@pytest.fixture(scope="module")
def sc() -> Scenario:
    return Scenario.model_validate(SCENARIO)


@pytest.fixture(scope="module")
def pl(sc):
    return plan(sc, 2)


def pol(**over) -> Policy:
    return Policy.model_validate({**POLICY, **over})


def board(sc, pl, log: Log, policy: Policy | None = None) -> Board:
    return compute_board(sc, pl, policy or pol(), log.events)


def ev(seq: int, kind: str, ts: float = 0.0, team: int | None = None, **data) -> Event:
    return Event(seq, ts, kind, team, "test", data, "", "")


# --- the drill clock -----------------------------------------------------------------------------------


def test_clock_before_the_drill_starts_reads_zero():
    c = DrillClock()
    assert (c.status, c.drill_t(5000.0)) == ("not-started", 0.0)
    c.feed("drill.pause", 10.0, {})  # nothing to pause yet
    c.feed("drill.resume", 20.0, {})
    assert (c.status, c.drill_t(5000.0), c.paused_total) == ("not-started", 0.0, 0.0)


def test_clock_runs_at_its_time_scale_from_wall_start():
    c = DrillClock()
    c.feed("drill.start", 1005.0, {"wall_start": 1000.0, "time_scale": 3.0})
    assert (c.status, c.start_ts, c.scale) == ("running", 1000.0, 3.0)
    assert c.drill_t(1010.0) == 30.0  # (1010 - 1000) x 3
    assert c.drill_t(990.0) == 0.0  # never negative


def test_clock_start_defaults_to_the_event_time_and_scale_one():
    c = DrillClock()
    c.feed("drill.start", 500.0, {"time_scale": 0})  # a zero scale would stop time: read as 1
    assert (c.start_ts, c.scale) == (500.0, 1.0)
    assert c.drill_t(560.0) == 60.0


def test_clock_ignores_a_second_start():
    c = DrillClock()
    c.feed("drill.start", 100.0, {"wall_start": 100.0, "time_scale": 2.0})
    c.feed("drill.start", 200.0, {"wall_start": 200.0, "time_scale": 5.0})
    assert (c.start_ts, c.scale) == (100.0, 2.0)


def test_clock_pause_freezes_and_resume_subtracts_the_pause():
    c = DrillClock()
    c.feed("drill.start", 0.0, {"wall_start": 0.0})
    c.feed("drill.pause", 100.0, {})
    assert (c.status, c.drill_t(160.0)) == ("paused", 100.0)
    c.feed("drill.pause", 130.0, {})  # a second pause does not move the frozen time
    assert c.drill_t(170.0) == 100.0
    c.feed("drill.resume", 150.0, {})
    assert (c.status, c.paused_total, c.pause_since) == ("running", 50.0, None)
    assert c.drill_t(200.0) == 150.0
    c.feed("drill.resume", 300.0, {})  # resume while running: nothing changes
    assert (c.paused_total, c.drill_t(400.0)) == (50.0, 350.0)


def test_clock_stop_and_finish_freeze_the_time():
    stopped = DrillClock()
    stopped.feed("drill.start", 0.0, {"wall_start": 0.0})
    stopped.feed("drill.stop", 90.0, {})
    assert (stopped.status, stopped.drill_t(1000.0)) == ("stopped", 90.0)
    finished = DrillClock()
    finished.feed("drill.start", 0.0, {"wall_start": 0.0})
    finished.feed("drill.pause", 40.0, {})
    finished.feed("drill.finish", 90.0, {})  # finished while paused: frozen at the pause
    assert (finished.status, finished.drill_t(1000.0)) == ("finished", 40.0)


def test_clock_from_events_reads_only_drill_events():
    events = [
        ev(1, "drill.start", 10.0, wall_start=10.0, time_scale=2.0),
        ev(2, "inject.start", 20.0, team=1, inject="recon"),
        ev(3, "drill.pause", 30.0),
    ]
    c = DrillClock.from_events(events)
    assert (c.status, c.drill_t(99.0)) == ("paused", 40.0)  # (30 - 10) x 2


# --- award, report share and the policy's factors -----------------------------------------------------


def test_award_multiplies_points_weight_decay_and_share():
    p = pol(half_life_minutes=None)
    assert award(p, 100, 2.0, 0) == 200.0
    assert award(p, 100, 2.0, 0, share=0.5) == 100.0
    assert award(pol(), 100, 1.0, 10) == pytest.approx(50.0)  # one half-life


def test_award_late_report_factor_only_when_late():
    p = pol(half_life_minutes=None, late_report_factor=0.25)
    assert award(p, 100, 1.0, 0, on_time=True) == 100.0
    assert award(p, 100, 1.0, 0, on_time=None) == 100.0  # not a report
    assert award(p, 100, 1.0, 0, on_time=False) == 25.0


def test_award_subtracts_penalties_and_clamps_at_zero():
    p = pol(half_life_minutes=None, wrong_answer_penalty=7, hint_cost_factor=3)
    assert award(p, 100, 1.0, 0, wrong=2) == 86.0  # 100 - 2 x 7
    assert award(p, 100, 1.0, 0, hint_cost=5) == 85.0  # 100 - 5 x 3
    assert award(p, 100, 1.0, 0, wrong=10, hint_cost=20) == 0.0  # 100 - 70 - 60 < 0


def test_report_share_fraction_and_all():
    assert report_share(pol(), None) == 1.0
    assert report_share(pol(), {}) == 1.0
    assert report_share(pol(), {"a": True, "b": False, "c": True, "d": True}) == 0.75
    assert report_share(pol(report_answers="all"), {"a": True, "b": True}) == 1.0
    assert report_share(pol(report_answers="all"), {"a": True, "b": False}) == 0.0


def test_policy_decay_floor_and_weights():
    p = pol()
    assert p.decay(0) == 1.0 and p.decay(-5) == 1.0  # earned before its inject counts as at once
    assert p.decay(20) == pytest.approx(0.25)  # 0.5 ** 2 = the floor
    assert p.decay(30) == 0.25  # 0.125 < floor
    assert pol(floor=0.0).decay(30) == pytest.approx(0.125)
    assert pol(half_life_minutes=None).decay(1e6) == 1.0
    assert p.weight("availability") == 2.0 and p.weight("detection") == 1.0
    assert Policy().name == "standard" and Policy().max_attempts == 5 and Policy().floor == 0.25


# --- submissions --------------------------------------------------------------------------------------


def test_no_attempt_limit_when_max_attempts_is_null(sc, pl):
    log = Log().opened(1)
    for t in range(100, 110):
        log.sub(1, "tool", False, t)
    log.sub(1, "tool", True, 120)
    r = board(sc, pl, log, pol(max_attempts=None, wrong_answer_penalty=1)).team(1).detail["tool"]
    assert (r.solved, r.attempts, r.wrong, r.refused) == (True, 11, 10, 0)
    assert r.points == pytest.approx(50 * 0.5 ** (1 / 10) - 10)  # 60 s after recon


def test_the_last_allowed_attempt_still_counts(sc, pl):
    log = Log().opened(1).sub(1, "tool", False, 100).sub(1, "tool", False, 110).sub(1, "tool", True, 120)
    r = board(sc, pl, log).team(1).detail["tool"]
    assert (r.solved, r.attempts, r.wrong, r.refused) == (True, 3, 2, 0)


def test_refused_submissions_neither_count_nor_solve(sc, pl):
    log = Log().opened(1).sub(1, "tool", True, 100, refused="the drill is paused")
    log.sub(1, "tool", False, 110)
    r = board(sc, pl, log).team(1).detail["tool"]
    assert (r.solved, r.attempts, r.wrong, r.refused) == (False, 1, 1, 1)


def test_submissions_after_solving_are_ignored(sc, pl):
    log = Log().opened(1).sub(1, "tool", True, 60).sub(1, "tool", False, 70).sub(1, "tool", True, 80)
    r = board(sc, pl, log).team(1).detail["tool"]
    assert (r.attempts, r.wrong, r.solved_t, r.points) == (1, 0, 60.0, 50.0)


def test_only_a_true_correct_flag_solves(sc, pl):
    log = Log().opened(1).sub(1, "tool", "yes", 70)  # type: ignore[arg-type]
    r = board(sc, pl, log).team(1).detail["tool"]
    assert (r.solved, r.wrong) == (False, 1)


def test_submissions_to_unknown_or_non_answer_objectives_are_ignored(sc, pl):
    log = Log().opened(1).sub(1, "nope", True, 70).sub(1, "block-scanner", True, 70)
    log.sub(1, "incident-report", True, 70)
    t1 = board(sc, pl, log).team(1)
    assert t1.total == 0.0 and t1.attempts == 0 and t1.solved == 0


def test_events_of_teams_outside_the_plan_are_ignored(sc, pl):
    log = Log().opened(3)
    log.sub(3, "flag", True, 70)
    log.add("score", None, points=50, reason="range-wide")
    log.add("score", 3, points=50, reason="no such team")
    b = board(sc, pl, log)
    assert [t.total for t in b.teams] == [0.0, 0.0]


def test_a_submission_without_drill_t_is_timed_by_the_clock(sc, pl):
    log = Log(wall_start=1000.0)
    log.add("submission", 1, ts=1120.0, objective="flag", answer="x", correct=True)
    r = board(sc, pl, log).team(1).detail["flag"]
    assert (r.solved_t, r.minutes) == (120.0, 2.0)


def test_inject_start_opens_once_at_its_first_start(sc, pl):
    log = Log().opened(1, t=60.0).opened(1, t=300.0)  # a resumed runner records the start again
    log.sub(1, "tool", True, 660.0)
    r = board(sc, pl, log).team(1).detail["tool"]
    assert (r.opened_t, r.minutes) == (60.0, 10.0)
    assert r.points == pytest.approx(25.0)  # 50 x 0.5


# --- checks, hints, reports -----------------------------------------------------------------------------


def test_failed_checks_and_checks_on_other_objectives_earn_nothing(sc, pl):
    log = Log().opened(1)
    log.add("check", 1, objective="block-scanner", passed=False, drill_t=70)
    log.add("check", 1, objective="tool", passed=True, drill_t=70)  # an answer objective
    log.add("check", 1, objective="nope", passed=True, drill_t=70)
    t1 = board(sc, pl, log).team(1)
    assert not t1.detail["block-scanner"].solved and not t1.detail["tool"].solved and t1.total == 0.0


def test_hint_cost_comes_from_the_scenario_when_the_event_has_none(sc, pl):
    log = Log().opened(1)
    log.add("hint", 1, objective="scanner-ip", index=1, drill_t=61)  # the scenario's second hint: 15
    log.add("hint", 1, objective="scanner-ip", index=9, drill_t=62)  # no such hint: 0
    log.add("hint", 1, objective="scanner-ip", index="x", drill_t=63)  # not an index: 0
    log.add("hint", 1, objective="nope", index=0, drill_t=64)  # no such objective: ignored
    log.sub(1, "scanner-ip", True, 60)
    t1 = board(sc, pl, log).team(1)
    r = t1.detail["scanner-ip"]
    assert (r.hints, r.hint_cost, t1.hints) == (3, 15.0, 3)
    assert r.points == pytest.approx(85.0)


def test_hint_without_index_costs_the_first_hint(sc, pl):
    log = Log().opened(1)
    log.add("hint", 1, objective="scanner-ip", drill_t=61)
    log.sub(1, "scanner-ip", True, 60)
    assert board(sc, pl, log).team(1).detail["scanner-ip"].hint_cost == 20.0


def _report(log: Log, team: int, t: float, **data) -> None:
    log.add("report", team, objective="incident-report", drill_t=t, **data)


def test_report_exactly_at_its_deadline_is_on_time(sc, pl):
    log = Log().opened(1)
    _report(log, 1, 60 + 600, accepted=True)  # deadline 10m after recon
    r = board(sc, pl, log).team(1).detail["incident-report"]
    assert (r.on_time, r.share) == (True, 1.0)
    assert r.points == pytest.approx(50.0)  # 100 x 0.5 (one half-life), not late


def test_refused_reports_and_reports_before_the_inject_earn_nothing(sc, pl):
    log = Log()
    _report(log, 1, 30, accepted=True)  # before recon started for team 1
    log.opened(1)
    _report(log, 1, 90, accepted=False)
    log.add("report", 1, objective="tool", accepted=True, drill_t=95)  # not a report objective
    r = board(sc, pl, log).team(1).detail["incident-report"]
    assert not r.solved and r.points == 0.0
    _report(log, 1, 120)  # accepted not recorded: counts
    r = board(sc, pl, log).team(1).detail["incident-report"]
    assert r.solved and r.solved_t == 120.0


def test_the_first_accepted_report_is_the_one_scored(sc, pl):
    log = Log().opened(1)
    _report(log, 1, 60, accepted=True, field_results={"source": False, "severity": True})
    _report(log, 1, 70, accepted=True, field_results={"source": True, "severity": True})
    r = board(sc, pl, log).team(1).detail["incident-report"]
    assert (r.solved_t, r.share, r.points) == (60.0, 0.5, 50.0)


# --- availability and adjustments ---------------------------------------------------------------------------


def test_availability_found_by_node_and_service_without_an_index(sc, pl):
    log = Log()
    log.add("availability", 1, node="portal", service="http", round=0, up=True, drill_t=0)
    log.add("availability", 1, node="portal", service="ssh", round=1, up=True, drill_t=30)  # no such check
    log.add("availability", 1, index=5, round=2, up=True, drill_t=60)  # index out of range
    log.add("availability", 1, index=-1, round=3, up=True, drill_t=90)
    t1 = board(sc, pl, log).team(1)
    assert (t1.availability_up, t1.availability_total) == (1, 1)
    assert t1.categories["availability"] == 10.0  # 5 points x weight 2


def test_availability_rounds_are_counted_per_team(sc, pl):
    log = Log()
    log.add("availability", 1, index=0, round=0, up=True, drill_t=0)
    log.add("availability", 2, index=0, round=0, up=True, drill_t=0)  # same round, other team: counts
    log.add("availability", 2, index=0, round=1, up=False, drill_t=30)
    b = board(sc, pl, log, pol(weights={}))
    assert (b.team(1).availability_up, b.team(1).availability_total) == (1, 1)
    assert (b.team(2).availability_up, b.team(2).availability_total) == (1, 2)
    assert b.team(2).categories["availability"] == 5.0  # weight 1 without a weights entry


def test_score_events_add_to_their_category_and_only_numbers_count(sc, pl):
    log = Log()
    log.add("score", 1, points=-30, reason="broke the rules")
    log.add("score", 1, points=True, reason="a boolean is not a number")
    log.add("score", 1, points="10", reason="text is not a number")
    log.add("score", 1, points=2.5, category="teamwork", reason="")
    log.add("score", 1, points=4, category="", reason="empty category: adjustments")
    t1 = board(sc, pl, log).team(1)
    assert t1.categories["adjustments"] == -26.0 and t1.categories["teamwork"] == 2.5
    assert (t1.adjustments, t1.total) == (-23.5, -23.5)  # not clamped at zero


# --- the board ------------------------------------------------------------------------------------------


def test_competition_ranking_shares_ranks_and_skips(sc):
    pl3 = plan(sc, 3)
    log = Log()
    log.add("score", 1, points=10, reason="")
    log.add("score", 2, points=30, reason="")
    log.add("score", 3, points=10, reason="")
    b = compute_board(sc, pl3, pol(), log.events)
    assert [(t.team, t.rank) for t in b.teams] == [(1, 2), (2, 1), (3, 2)]
    assert [t.team for t in b.ranked()] == [2, 1, 3]
    log.add("score", 2, points=-25, reason="")  # 10, 5, 10
    b = compute_board(sc, pl3, pol(), log.events)
    assert [t.rank for t in b.teams] == [1, 3, 1]


def test_board_reports_events_last_seq_clock_and_status(sc, pl):
    log = Log(wall_start=1000.0, time_scale=2.0)
    log.add("drill.pause", ts=1030.0)
    log.add("score", 1, ts=1100.0, points=1, reason="")
    b = board(sc, pl, log)
    assert (b.events, b.last_seq, b.drill_t, b.status) == (3, 3, 60.0, "paused")
    assert (b.scenario, b.policy) == ("score-test", "test")
    with pytest.raises(KeyError):
        b.team(9)
    empty = compute_board(sc, pl, pol(), [])
    assert (empty.events, empty.last_seq, empty.drill_t, empty.status) == (0, 0, 0.0, "not-started")


def test_objective_detail_before_and_after_opening(sc, pl):
    log = Log().opened(1)
    b = board(sc, pl, log, pol(weights={"analysis": 3.0}))
    d1, d2 = b.team(1).detail, b.team(2).detail
    assert d1["tool"].opened_t == 60.0 and d2["tool"].opened_t is None  # recon never started for team 2
    assert d1["flag"].opened_t == 0.0  # no `after`: open from the drill start
    assert d1["tool"].max_points == 150.0 and d1["tool"].category == "analysis" and d1["tool"].kind == "answer"
    assert d1["block-scanner"].kind == "check" and d1["incident-report"].kind == "report"
    assert (d1["tool"].solved, d1["tool"].points, d1["tool"].minutes, d1["tool"].on_time) == (False, 0.0, None, None)


def test_categories_without_availability_in_the_scenario(pl):
    data = {k: v for k, v in SCENARIO.items() if k != "availability"}
    sc2 = Scenario.model_validate(data)
    t1 = compute_board(sc2, plan(sc2, 1), pol(), Log().events).team(1)
    assert list(t1.categories) == ["detection", "containment", "analysis", "reporting"]


def test_ttd_is_the_fastest_detection_and_follows_the_policy_categories(sc, pl):
    log = Log().opened(1)
    log.sub(1, "scanner-ip", True, 60 + 300)  # detection, 5 min
    log.sub(1, "tool", True, 60 + 120)  # analysis, 2 min
    log.sub(1, "port", True, 60 + 60)  # analysis, 1 min
    b = board(sc, pl, log)
    assert b.team(1).ttd["recon"] == pytest.approx(5.0)
    wide = board(sc, pl, log, pol(detect_categories=["detection", "analysis"], contain_categories=["analysis"]))
    assert wide.team(1).ttd["recon"] == pytest.approx(1.0) and wide.team(1).ttc["recon"] == pytest.approx(1.0)


def test_board_as_dict_rounds_to_two_places(sc, pl):
    log = Log().opened(1).sub(1, "scanner-ip", True, 60 + 100)  # 100 x 0.5 ** (1/6) = 89.0899
    log.add("score", 1, points=0.125, reason="")
    d = json.loads(json.dumps(board(sc, pl, log).as_dict()))
    t = d["teams"][0]
    assert t["objectives"]["scanner-ip"] == 89.09 and t["adjustments"] == 0.12
    assert t["detail"]["scanner-ip"]["minutes"] == 1.67 and t["detail"]["scanner-ip"]["solved"] is True
    assert t["ttd_minutes"] == {"recon": 1.67, "exfil": None} and t["rank"] == 1
    assert (t["attempts"], t["hints"], t["solved"]) == (1, 0, 1)
    assert (d["scenario"], d["policy"], d["status"], d["events"], d["last_seq"]) == ("score-test", "test", "running", 4, 4)
    assert TeamBoard(team=5).as_dict()["total"] == 0.0


# --- answers ----------------------------------------------------------------------------------------------


def test_answers_that_are_not_text_are_wrong(pl):
    t1 = pl.team(1)
    spec = Answer(value="x")
    for given in (None, {"a": 1}, ["x"], "", "   "):
        assert not check_answer(spec, given, t1)


def test_numbers_compare_as_numbers_and_text_as_text(pl):
    t1 = pl.team(1)
    assert check_answer(Answer(value=443), "443.0", t1) and check_answer(Answer(value=443), " 443 ", t1)
    assert not check_answer(Answer(value=443), "444", t1)
    assert check_answer(Answer(value=1.5), "1.50", t1)
    assert not check_answer(Answer(value=443), "four-four-three", t1)
    assert check_answer(Answer(value="007"), "007", t1) and not check_answer(Answer(value="007"), "7", t1)
    assert check_answer(Answer(value="  padded "), "padded", t1)  # the expected value is trimmed too
    assert check_answer(Answer(one_of=["a", 2]), "2.0", t1) and not check_answer(Answer(one_of=["a", 2]), "b", t1)


def test_ip_answers_must_be_addresses(pl):
    t1 = pl.team(1)
    assert not check_answer(Answer(ip_of="scanner"), "198.18.10.066x", t1)
    assert not check_answer(Answer(ip_of="scanner"), "198.18.10.67", t1)


def test_regex_answers_are_case_insensitive_unless_asked(pl):
    t1 = pl.team(1)
    assert check_answer(Answer(regex="[a-z]+-[0-9]+"), "ABC-12", t1)
    assert not check_answer(Answer(regex="[a-z]+-[0-9]+", case_sensitive=True), "ABC-12", t1)
    assert check_answer(Answer(one_of=["High"], case_sensitive=True), "High", t1)
    assert not check_answer(Answer(one_of=["High"], case_sensitive=True), "high", t1)


# --- containment that holds: the guard reads availability like the engine does ----------------------------


def _hold_sc(**second) -> Scenario:
    d = json.loads(json.dumps(SCENARIO))
    block = next(o for o in d["objectives"] if o["id"] == "block-scanner")
    block["check"]["hold"] = 2
    if second:
        d["objectives"].append(
            {
                "id": "block-https",
                "category": "containment",
                "after": "recon",
                "points": 50,
                "check": {"blocked": {"from": "scanner", "to": "portal", "port": 443}, "hold": 2},
            }
        )
    return Scenario.model_validate(d)


def _probe(log: Log, t: float, passed: bool, objective: str = "block-scanner") -> None:
    log.add("check", 1, objective=objective, passed=passed, drill_t=t)


@pytest.mark.parametrize(
    "down",
    [
        {"index": 0},  # by index alone
        {"node": "portal", "service": "http"},  # by node and service alone
    ],
    ids=["by-index", "by-node-and-service"],
)
def test_hold_waits_while_the_guarded_service_is_down_however_the_round_names_it(down):
    sc = _hold_sc()
    log = Log().opened(1)
    log.add("availability", 1, round=1, up=False, drill_t=100, **down)
    _probe(log, 120, True)
    _probe(log, 135, True)
    assert not compute_board(sc, plan(sc, 1), pol(), log.events).team(1).detail["block-scanner"].solved
    log.add("availability", 1, round=2, up=True, drill_t=140, **down)
    _probe(log, 150, True)
    _probe(log, 165, True)
    r = compute_board(sc, plan(sc, 1), pol(), log.events).team(1).detail["block-scanner"]
    assert r.solved and r.solved_t == 165.0


def test_hold_ignores_rounds_of_other_services():
    sc = _hold_sc()
    log = Log().opened(1)
    log.add("availability", 1, node="portal", service="ssh", round=1, up=False, drill_t=100)  # not a probe
    _probe(log, 120, True)
    _probe(log, 135, True)
    assert compute_board(sc, plan(sc, 1), pol(), log.events).team(1).detail["block-scanner"].solved_t == 135.0


def test_hold_streaks_are_counted_per_objective():
    """Passing probes of one hold objective do not count towards another's streak."""
    sc = _hold_sc(second=True)
    log = Log().opened(1)
    _probe(log, 120, True, "block-scanner")
    _probe(log, 125, True, "block-https")
    d = compute_board(sc, plan(sc, 1), pol(), log.events).team(1).detail
    assert not d["block-scanner"].solved and not d["block-https"].solved
    _probe(log, 135, True, "block-scanner")
    d = compute_board(sc, plan(sc, 1), pol(), log.events).team(1).detail
    assert d["block-scanner"].solved_t == 135.0 and not d["block-https"].solved


# --- flags and the board's JSON -------------------------------------------------------------------------------


def test_flags_are_described_in_words():
    from rangectl.scoring.engine import describe_flag

    assert describe_flag({"reason": "another-team", "other_team": 2, "objective": "tool"}) == "gave team 2's answer to tool"
    assert describe_flag({"reason": "fast", "objective": "tool"}) == "solved tool implausibly fast"
    assert describe_flag({"reason": "odd", "objective": "tool"}) == "odd on tool"


def test_flagged_submissions_are_listed_on_the_team_board(sc, pl):
    log = Log()
    log.add("submission.flagged", 2, objective="flag", reason="another-team", other_team=1, drill_t=42.0)
    b = board(sc, pl, log)
    assert b.team(1).flags == []
    assert b.team(2).flags == [
        {"seq": 2, "objective": "flag", "reason": "another-team", "other_team": 1, "drill_t": 42.0}
    ]
    assert b.team(2).as_dict()["flags"] == b.team(2).flags and b.team(2).total == 0.0


def test_board_json_carries_ttc_and_the_drill_clock(sc, pl):
    log = Log().opened(1)
    log.add("check", 1, objective="block-scanner", passed=True, drill_t=60 + 200)  # containment, 3.33 min
    log.add("score", 1, ts=1300.0, points=0, reason="")
    d = board(sc, pl, log).as_dict()
    assert d["teams"][0]["ttc_minutes"] == {"recon": 3.33, "exfil": None}
    assert d["drill_t"] == 300.0  # the clock at the last event: wall 1300 - 1000


def test_a_list_mapping_or_none_is_never_an_answer_even_to_a_pattern_matching_anything(pl):
    t1 = pl.team(1)
    anything = Answer(regex=".*")
    assert check_answer(anything, "whatever", t1)
    for given in (None, ["x"], {"x": 1}):
        assert not check_answer(anything, given, t1)


def test_per_team_values_fill_expected_answers_of_every_kind(pl):
    """{var:NAME} in value, one_of and regex is the team's own value (regex-escaped inside a regex)."""
    import dataclasses

    t1 = dataclasses.replace(pl.team(1), values={"code": "K.42"})
    t2 = dataclasses.replace(pl.team(2), values={"code": "Q-7"})
    assert check_answer(Answer(value="{var:code}"), "K.42", t1) and not check_answer(Answer(value="{var:code}"), "K.42", t2)
    assert check_answer(Answer(one_of=["none", "{var:code}"]), "q-7", t2)
    assert not check_answer(Answer(one_of=["none", "{var:code}"]), "K.42", t2)
    assert check_answer(Answer(regex="ticket {var:code}"), "ticket K.42", t1)
    assert not check_answer(Answer(regex="ticket {var:code}"), "ticket Kx42", t1)  # the dot is escaped


# --- one odd event never stops the pass: everything after it still counts ------------------------------------


def test_events_after_ignored_ones_still_count(sc, pl):
    """Each kind of ignored event (other team, unknown objective, wrong kind, closed or solved objective,
    bad availability index) is skipped, and the events after it are scored as usual."""
    log = Log()
    log.add("score", 7, points=5, reason="no such team")  # ignored
    log.add("check", 1, objective="nope", passed=True, drill_t=10)  # ignored
    log.add("submission", 1, objective="block-scanner", answer="x", correct=True, drill_t=11)  # a check objective
    log.sub(1, "tool", True, 12)  # tool is not open yet (recon has not started)
    log.add("availability", 1, index=1, round=0, up=True, drill_t=13)  # index == len(availability)
    log.add("hint", 1, objective="flag", index=2, drill_t=14)  # flag has no hints: costs 0
    log.opened(1)
    log.sub(1, "tool", True, 70)
    log.sub(1, "tool", False, 80)  # after solving: ignored
    log.add("check", 1, objective="block-scanner", passed=True, drill_t=90)
    log.add("availability", 1, index=0, round=0, up=True, drill_t=95)
    log.sub(1, "flag", True, 100)
    t1 = board(sc, pl, log).team(1)
    assert t1.detail["tool"].solved and t1.detail["tool"].wrong == 0
    assert t1.detail["block-scanner"].solved and t1.detail["flag"].solved
    assert (t1.availability_up, t1.availability_total, t1.hints) == (1, 1, 1)


def test_a_hint_index_one_past_the_last_costs_nothing(sc, pl):
    log = Log().opened(1)
    log.add("hint", 1, objective="scanner-ip", index=2, drill_t=61)  # scanner-ip has 2 hints: 0 and 1
    log.sub(1, "scanner-ip", True, 60)
    r = board(sc, pl, log).team(1).detail["scanner-ip"]
    assert (r.hints, r.hint_cost, r.points) == (1, 0.0, 100.0)


def test_the_recorded_hint_cost_wins_over_the_scenarios(sc, pl):
    """A hint is charged what was recorded when it was taken (20 in the scenario, 5 in the record)."""
    log = Log().opened(1)
    log.add("hint", 1, objective="scanner-ip", index=0, cost=5, drill_t=61)
    log.sub(1, "scanner-ip", True, 60)
    assert board(sc, pl, log).team(1).detail["scanner-ip"].hint_cost == 5.0


def test_every_refusal_over_max_attempts_is_counted(sc, pl):
    log = Log().opened(1)
    for t in (100, 110, 120, 130, 140):
        log.sub(1, "tool", False, t)
    r = board(sc, pl, log).team(1).detail["tool"]
    assert (r.attempts, r.wrong, r.refused) == (3, 3, 2)


def test_every_revocation_of_a_hold_is_counted():
    sc = _hold_sc()
    log = Log().opened(1)
    for t, ok in ((100, True), (110, True), (120, False), (130, True), (140, True), (150, False)):
        _probe(log, t, ok)
    r = compute_board(sc, plan(sc, 1), pol(), log.events).team(1).detail["block-scanner"]
    assert (r.solved, r.revoked) == (False, 2)


def test_reports_on_other_objectives_do_not_earn_them(sc, pl):
    log = Log().opened(1)
    log.add("report", 1, objective="tool", accepted=True, drill_t=95)  # an answer objective
    log.add("report", 1, objective="nope", accepted=True, drill_t=96)
    log.add("report", 1, objective="incident-report", accepted=True, drill_t=97)
    d = board(sc, pl, log).team(1).detail
    assert not d["tool"].solved and d["incident-report"].solved


def test_a_round_without_a_number_is_not_round_one(sc, pl):
    log = Log()
    log.add("availability", 1, index=0, round=1, up=True, drill_t=30)
    log.add("availability", 1, index=0, up=True, drill_t=60)  # no round recorded
    t1 = board(sc, pl, log).team(1)
    assert (t1.availability_up, t1.availability_total) == (2, 2)


def test_board_team_lookup_names_the_missing_team(sc, pl):
    b = board(sc, pl, Log())
    with pytest.raises(KeyError) as e:
        b.team(9)
    assert e.value.args == (9,)


# --- policy files -------------------------------------------------------------------------------------------


def _policy_file(tmp_path, text: str, name: str = "house"):
    from rangectl.scoring.policy import parse_policy

    f = tmp_path / f"{name}.yaml"
    f.write_text(text)
    return parse_policy(f)


def test_an_empty_policy_file_is_the_standard_numbers_under_its_own_name(tmp_path):
    p = _policy_file(tmp_path, "# nothing here\n")
    assert p.name == "house" and p == Policy(name="house")
    assert _policy_file(tmp_path, "name: other\n").name == "other"  # a name in the file wins


def test_policy_yaml_values_become_plain_numbers_lists_and_nulls(tmp_path):
    p = _policy_file(
        tmp_path,
        "half_life_minutes: null\nmax_attempts: null\nfloor: 0\nwrong_answer_penalty: 2.5\n"
        "weights:\n  detection: 2\n  7: 0.5\ndetect_categories: [detection, analysis]\n",
    )
    assert p.half_life_minutes is None and p.max_attempts is None and p.floor == 0.0
    assert p.wrong_answer_penalty == 2.5
    assert p.weights == {"detection": 2.0, "7": 0.5}  # a number as a category name is its text
    assert p.detect_categories == ["detection", "analysis"]
    assert type(p.weights["detection"]) is float and p.weight("7") == 0.5


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("- 1\n- 2\n", ":1:1: ", "a policy is a mapping (half_life_minutes: ..., weights: ...)"),
        ("floor: 0.5\nreport_answers: some\n", ":2:17: report_answers: ", "must be 'fraction' or 'all'"),
        ("floor: 0.5\nhint_cost_factor: -1\n", ":2:19: hint_cost_factor: ", "must be greater than or equal to 0"),
        ("weights:\n  detection: lots\n", ":2:14: weights.detection: ", "must be a valid number, unable to parse string as a number"),
        ("policy: 2\n", ":1:9: policy: ", "must be 1"),
        ("colour: red\n", ":1:9: colour: ", "unknown field"),
    ],
)
def test_policy_errors_name_file_line_column_field(tmp_path, text, where, message):
    from rangectl.errors import ScenarioError

    with pytest.raises(ScenarioError) as e:
        _policy_file(tmp_path, text)
    assert str(e.value) == f"{tmp_path / 'house.yaml'}{where}{message}"


def test_policies_are_found_beside_the_scenario_or_in_the_project(tmp_path, monkeypatch):
    from rangectl.errors import ScenarioError
    from rangectl.scoring.policy import load_policy

    (tmp_path / "scen" / "scoring").mkdir(parents=True)
    (tmp_path / "scen" / "scoring" / "local.yml").write_text("wrong_answer_penalty: 3\n")
    p = load_policy("local", tmp_path / "scen" / "x.yaml")
    assert (p.name, p.wrong_answer_penalty) == ("local", 3.0)
    with pytest.raises(ScenarioError) as e:
        load_policy("local")  # not in the project
    assert str(e.value) == (
        "no scoring policy 'local' (looked for scoring/local.yaml beside the scenario and in the project)"
    )


# --- totals, ranks and time to detect ---------------------------------------------------------------------


def _two_detections() -> Scenario:
    d = json.loads(json.dumps(SCENARIO))
    d["objectives"].append(
        {"id": "scan-port", "category": "detection", "after": "recon", "points": 10, "answer": {"value": 22}}
    )
    return Scenario.model_validate(d)


@pytest.mark.parametrize(("first", "second", "ttd"), [(120, 300, 1.0), (300, 120, 1.0), (120, None, 1.0), (None, 120, 1.0)])
def test_ttd_is_the_earliest_solved_detection_whatever_the_order(first, second, ttd):
    sc2 = _two_detections()
    log = Log().opened(1)
    if first is not None:
        log.sub(1, "scanner-ip", True, 60 + first - 60)
    if second is not None:
        log.sub(1, "scan-port", True, 60 + second - 60)
    t1 = compute_board(sc2, plan(sc2, 1), pol(), log.events).team(1)
    assert t1.ttd["recon"] == pytest.approx(ttd)


def test_adjustments_add_to_an_objectives_category(sc, pl):
    log = Log().sub(1, "flag", True, 0)  # 40 points, no decay
    log.add("score", 1, points=5, category="detection", reason="good write-up")
    t1 = board(sc, pl, log).team(1)
    assert t1.categories["detection"] == 45.0 and t1.total == 45.0 and t1.adjustments == 5.0


def test_solved_counts_every_earned_objective_and_detail_names_it(sc, pl):
    log = Log().opened(1).sub(1, "flag", True, 60).sub(1, "tool", True, 60).sub(1, "port", True, 60)
    t1 = board(sc, pl, log).team(1)
    assert t1.solved == 3
    assert all(t1.detail[oid].objective == oid for oid in t1.detail)
    assert t1.as_dict()["detail"]["tool"]["objective"] == "tool"


@pytest.mark.parametrize(
    ("a", "b", "ranks"),
    [
        (10.2, 10.4, [2, 1]),
        (10.0000003, 10.0, [1, 1]),
        (10.0000004, 10.0000001, [1, 1]),
        (12.5, 12.5, [1, 1]),
        (10.0, 10.000002, [2, 1]),
    ],
)
def test_totals_within_a_millionth_of_a_point_share_a_rank(sc, pl, a, b, ranks):
    log = Log()
    log.add("score", 1, points=a, reason="")
    log.add("score", 2, points=b, reason="")
    assert [t.rank for t in board(sc, pl, log).teams] == ranks


def test_a_report_due_at_once_filed_later_is_late():
    d = json.loads(json.dumps(SCENARIO))
    rep = next(o for o in d["objectives"] if o["id"] == "incident-report")
    rep["report"]["deadline"] = "0s"
    sc0 = Scenario.model_validate(d)
    log = Log().opened(1)
    log.add("report", 1, objective="incident-report", accepted=True, drill_t=60.5)
    r = compute_board(sc0, plan(sc0, 1), pol(), log.events).team(1).detail["incident-report"]
    assert r.on_time is False and r.points == pytest.approx(100 * 0.5 ** (0.5 / 600) * 0.5)


def test_an_oversized_policy_file_is_refused_by_name(tmp_path):
    from rangectl.errors import ScenarioError

    with pytest.raises(ScenarioError) as e:
        _policy_file(tmp_path, "# " + "x" * 100_001 + "\n")
    assert str(e.value) == f"{tmp_path / 'house.yaml'}:1:1: a policy file may be at most 100,000 bytes"


def test_a_resume_after_the_drill_stopped_changes_nothing():
    c = DrillClock()
    c.feed("drill.start", 0.0, {"wall_start": 0.0})
    c.feed("drill.stop", 100.0, {})
    c.feed("drill.resume", 150.0, {})
    assert (c.status, c.drill_t(500.0)) == ("stopped", 100.0)


def test_every_pause_is_taken_off_the_clock():
    c = DrillClock()
    c.feed("drill.start", 0.0, {"wall_start": 0.0})
    for pause, resume in ((100.0, 130.0), (200.0, 250.0)):
        c.feed("drill.pause", pause, {})
        c.feed("drill.resume", resume, {})
    assert (c.paused_total, c.drill_t(300.0)) == (80.0, 220.0)
