"""Containment that holds: a check objective with `hold: N` is earned only after N consecutive
passing probes while its guarded node is up, and taken back when the condition is undone."""

from __future__ import annotations

import copy
import json

import pytest

from rangectl.plan import plan
from rangectl.scenario.model import Scenario
from rangectl.scoring.engine import HoldTracker, compute_board
from tests.unit.test_scoring import POLICY, SCENARIO, Log, pol


def _sc(hold: int | None = 3, **extra) -> Scenario:
    d = copy.deepcopy(SCENARIO)
    chk = next(o for o in d["objectives"] if o["id"] == "block-scanner")["check"]
    if hold is not None:
        chk["hold"] = hold
    chk.update(extra)
    return Scenario.model_validate(d)


def _board(sc: Scenario, log: Log):
    return compute_board(sc, plan(sc, 2), pol(), log.events)


def _check(log: Log, t: float, passed: bool, team: int = 1) -> None:
    log.add("check", team, objective="block-scanner", passed=passed, drill_t=t)


def _avail(log: Log, t: float, up: bool, rnd: int, team: int = 1) -> None:
    log.add("availability", team, index=0, node="portal", service="http", round=rnd, up=up, drill_t=t)


def test_earned_at_the_nth_consecutive_pass_and_scored_from_then():
    sc = _sc(3)
    log = Log().opened(1)
    for t in (120.0, 135.0):
        _check(log, t, True)
    r = _board(sc, log).team(1).detail["block-scanner"]
    assert not r.solved  # two passes are not three
    _check(log, 150.0, True)
    r = _board(sc, log).team(1).detail["block-scanner"]
    assert r.solved and r.solved_t == 150.0
    assert r.points == pytest.approx(200 * 0.5 ** (1.5 / 10))  # 90 s after recon at 60 s; half-life 10 min


def test_a_failing_probe_breaks_the_streak_before_it_is_earned():
    sc = _sc(3)
    log = Log().opened(1)
    for t, ok in ((120, True), (135, True), (150, False), (165, True), (180, True)):
        _check(log, t, ok)
    assert not _board(sc, log).team(1).detail["block-scanner"].solved
    _check(log, 195, True)
    r = _board(sc, log).team(1).detail["block-scanner"]
    assert r.solved and r.solved_t == 195 and r.revoked == 0


def test_passes_while_the_guarded_service_is_down_count_for_nothing():
    """Unplugging the portal blocks the attacker too: that must not earn containment."""
    sc = _sc(2)
    log = Log().opened(1)
    _avail(log, 100, False, 3)
    for t in (120, 135, 150):
        _check(log, t, True)
    assert not _board(sc, log).team(1).detail["block-scanner"].solved
    _avail(log, 160, True, 5)
    _check(log, 165, True)
    assert not _board(sc, log).team(1).detail["block-scanner"].solved
    _check(log, 180, True)
    r = _board(sc, log).team(1).detail["block-scanner"]
    assert r.solved and r.solved_t == 180


def test_undone_after_earning_is_revoked_and_can_be_earned_again_for_less():
    sc = _sc(2)
    log = Log().opened(1)
    _check(log, 120, True)
    _check(log, 135, True)
    first = _board(sc, log).team(1)
    assert first.detail["block-scanner"].solved
    _check(log, 400, False)  # the team removed its rule
    b = _board(sc, log).team(1)
    r = b.detail["block-scanner"]
    assert not r.solved and r.points == 0 and r.revoked == 1
    assert b.total == pytest.approx(first.total - first.detail["block-scanner"].points)
    _check(log, 600, True)
    _check(log, 615, True)
    r = _board(sc, log).team(1).detail["block-scanner"]
    assert r.solved and r.solved_t == 615 and r.revoked == 1
    assert r.points == pytest.approx(200 * 0.5 ** ((615 - 60) / 600))
    assert r.points < first.detail["block-scanner"].points


def test_without_hold_the_first_pass_earns_and_a_later_failure_changes_nothing():
    sc = _sc(None)
    log = Log().opened(1)
    _check(log, 120, True)
    _check(log, 135, False)
    r = _board(sc, log).team(1).detail["block-scanner"]
    assert r.solved and r.solved_t == 120 and r.revoked == 0


def test_probes_before_the_objective_opens_do_not_count():
    sc = _sc(2)
    log = Log()
    _check(log, 10, True)
    _check(log, 20, True)
    log.opened(1, t=60.0)
    assert not _board(sc, log).team(1).detail["block-scanner"].solved
    _check(log, 75, True)
    _check(log, 90, True)
    assert _board(sc, log).team(1).detail["block-scanner"].solved_t == 90


def test_the_tracker_reports_transitions_per_team():
    tr = HoldTracker(_sc(2))
    feed = [
        ("check", 1, {"objective": "block-scanner", "passed": True}),
        ("check", 2, {"objective": "block-scanner", "passed": True}),
        ("check", 1, {"objective": "block-scanner", "passed": True}),
        ("check", 1, {"objective": "block-scanner", "passed": True}),
        ("check", 1, {"objective": "block-scanner", "passed": False}),
        ("check", 2, {"objective": "block-scanner", "passed": False}),
        ("check", 1, {"objective": "other", "passed": True}),
    ]
    assert [tr.feed(k, team, d) for k, team, d in feed] == [None, None, "earned", None, "revoked", None, None]


def test_a_guard_names_another_node(tmp_path):
    sc = _sc(2, guard="gw")
    assert sc.objective("block-scanner").check.guarded == "gw"
    tr = HoldTracker(sc)
    assert tr.guarded["block-scanner"] == []  # gw has no availability probe: nothing to wait for


@pytest.mark.parametrize(
    "extra, msg",
    [({"guard": "portal"}, "`guard` belongs with `hold`"), ({"hold": 2, "guard": "nope"}, "unknown node 'nope'")],
)
def test_guard_validation(tmp_path, extra, msg):
    from typer.testing import CliRunner

    from rangectl.cli import app

    d = copy.deepcopy(SCENARIO)
    next(o for o in d["objectives"] if o["id"] == "block-scanner")["check"].update(extra)
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "test.yaml").write_text(json.dumps(POLICY))
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(d, indent=1))
    out = CliRunner().invoke(app, ["validate", str(f)])
    assert out.exit_code == 1 and "objectives[1].check.guard: " + msg in out.output, out.output
