"""The team service's public answers, one documented behaviour per test (written against surviving
mutants of rangectl/access/service.py; docs/testing.md, "Mutation testing")."""

# the fixtures imported from test_mut_access are every test's parameters
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rangectl.access import service
from rangectl.access.ratelimit import RateLimit, TeamBudget
from rangectl.access.service import ApiError, Settings, TeamService, api_errors
from rangectl.errors import RangeError
from rangectl.state import RangeState
from rangectl.store import EventStore
from tests.unit import test_access_api as access_api
from tests.unit.test_access_api import HIDDEN_OBJECTIVE, events
from tests.unit.test_mut_access import _append, _view, rng, svc  # noqa: F401 - fixtures


def test_a_refusal_reaches_the_team_as_one_line_of_at_most_500_characters():
    """A lower layer's message is shown on one line (whitespace collapsed) and cut at 500
    characters, so a team never gets a wall of text or a multi-line dump."""
    with pytest.raises(ApiError) as e:
        with api_errors():
            raise RangeError("too\nmany   words " * 100)
    assert e.value.status == 409
    assert e.value.detail == ("too many words " * 100)[:500] and len(e.value.detail) == 500


def test_scores_are_shown_to_two_decimals(svc, rng):
    """Totals, categories and trainer adjustments in a team's score are rounded to two decimals."""
    _append(
        rng, "score", {"points": 7.123456, "reason": "teamwork", "category": "bonus"}, team=1, actor="trainer"
    )
    s = svc.score(1)
    assert (s["total"], s["adjustments"], s["categories"]["bonus"]) == (7.12, 7.12, 7.12)


# --- the drill clock, stopped: every time a team is told is exact -------------------------------------------

T = 61.23456  # the drill second the wall clock is stopped at (recon started at drill second 0)


def _wall_start(rng) -> float:
    return next(e for e in events(rng, "drill.start")).data["wall_start"]


@pytest.fixture
def frozen(rng, monkeypatch):
    """Stop the wall clock at drill second T: what a team is told of the drill clock is then known."""
    at = _wall_start(rng) + T
    monkeypatch.setattr(time, "time", lambda: at)
    return at


def _right(rng, team: int = 1) -> str:
    return str(rng.plan().team(team).ip_of("scanner"))


def test_an_answer_is_answered_with_what_was_recorded(svc, rng, frozen):
    """The body of a scored answer names the objective and gives the drill time to the hundredth."""
    code, body, headers = svc.submit(1, "scanner-ip", _right(rng))
    assert (code, headers) == (200, {})
    assert body == {
        "team": 1,
        "objective": "scanner-ip",
        "accepted": True,
        "correct": True,
        "attempt": 1,
        "attempts_left": 4,
        "refused": None,
        "points": 97.67,  # 100 x 0.5 ** (T / 1800 s)
        "drill_t": 61.23,
        "seq": events(rng, "submission")[-1].seq,
        "message": "correct: 'scanner-ip' earns 97.7 points (attempt 1)",
    }


def test_a_hint_says_when_it_was_taken_to_the_hundredth(svc, rng, frozen):
    h = svc.hint(1, "scanner-ip", "en")
    assert h == {
        "team": 1,
        "objective": "scanner-ip",
        "index": 0,
        "total": 2,
        "cost": 10,
        "text": "Look at tcpdump.",
        "drill_t": 61.23,
        "seq": events(rng, "hint")[-1].seq,
    }


def test_a_filed_report_says_when_it_was_filed_and_when_it_was_due(svc, rng, frozen):
    ok = svc.report(1, "ncsc-report", {"attacker_ip": _right(rng), "case_id": "x"})
    assert (ok["drill_t"], ok["deadline_t"], ok["on_time"]) == (61.23, 1800.0, True)


def test_the_board_and_the_views_show_the_drill_clock_and_totals_to_the_hundredth(svc, rng, frozen):
    _append(rng, "score", {"points": 7.123456, "reason": "teamwork"}, team=2, actor="trainer")
    assert svc.board() == {
        "scenario": "access-test",
        "status": "running",
        "drill_t": 61.23,
        "teams": [
            {"team": 2, "rank": 1, "total": 7.12, "solved": 0},
            {"team": 1, "rank": 2, "total": 0.0, "solved": 0},
        ],
    }
    assert svc.objectives(1, "en")["drill"] == {"status": "running", "drill_t": 61.23}
    assert svc.briefing(1, "en")["drill"] == {"status": "running", "drill_t": 61.23}


def test_the_score_shows_an_objectives_points_to_the_hundredth(svc, rng, frozen):
    svc.hint(1, "scanner-ip", "en")
    svc.submit(1, "malware-hash", access_api.SECRET_VALUE)
    s = svc.score(1)
    mine = {o["id"]: o for o in s["objectives"]}
    assert mine["malware-hash"] == {
        "id": "malware-hash",
        "category": "analysis",
        "solved": True,
        "points": 48.83,  # 50 x 0.5 ** (T / 1800 s) = 48.835
        "max_points": 50.0,
        "attempts": 1,
        "hints": 0,
    }
    assert (mine["scanner-ip"]["hints"], mine["scanner-ip"]["points"]) == (1, 0.0)


def test_the_record_anchor_a_team_sees_gives_its_time_to_the_millisecond(svc, rng, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.123456)
    s = EventStore(rng.db_path)
    try:
        cp = s.checkpoint()
    finally:
        s.close()
    assert svc.score(1)["record"] == {"seq": cp.seq, "head": cp.hash, "ts": 1_800_000_000.123}


def test_before_anything_is_anchored_the_score_says_so(svc, rng):
    rng.db_path.with_suffix(".checkpoints").unlink()
    assert svc.score(1)["record"] is None


# --- hints ----------------------------------------------------------------------------------------------------


def test_taking_every_hint_leaves_none_available_and_shows_them_all(svc):
    svc.hint(1, "scanner-ip", "en")
    svc.hint(1, "scanner-ip", "en")
    v = svc.objective(1, "scanner-ip", "en")
    assert v["hints_available"] == 0
    assert v["hints"] == [
        {"index": 0, "cost": 10, "taken": True, "text": "Look at tcpdump."},
        {"index": 1, "cost": 20, "taken": True, "text": "SYNs."},
    ]


def test_one_objective_is_shown_in_the_language_asked(svc):
    svc.hint(1, "scanner-ip", "vi")
    v = svc.objective(1, "scanner-ip", "vi")
    assert (v["title"], v["hints"][0]["text"]) == ("Ai quét?", "Xem tcpdump.")


# --- one team's record is its own -----------------------------------------------------------------------------


def test_another_teams_hints_and_injects_never_show_in_a_teams_views(svc, rng):
    svc.hint(2, "scanner-ip", "en")
    _append(rng, "inject.start", {"inject": "exfil", "drill_t": 3000}, team=2)
    assert HIDDEN_OBJECTIVE not in [o["id"] for o in svc.objectives(1, "en")["objectives"]]
    assert HIDDEN_OBJECTIVE not in [o["id"] for o in svc.score(1)["objectives"]]
    assert svc.score(1)["hints"] == 0
    for v in (svc.objective(1, "scanner-ip", "en"), _view(svc, 1, "scanner-ip")):
        assert (v["hints_available"], [h["taken"] for h in v["hints"]]) == (2, [False, False])
    assert svc.objective(2, "scanner-ip", "en")["hints_available"] == 1  # team 2 took it


def test_an_objective_only_another_team_has_opened_is_unknown_to_a_team(svc, rng):
    _append(rng, "inject.start", {"inject": "exfil", "drill_t": 3000}, team=1)
    before = len(events(rng))
    for call in (
        lambda: svc.submit(2, HIDDEN_OBJECTIVE, "HIDDEN-ANSWER"),
        lambda: svc.hint(2, HIDDEN_OBJECTIVE, "en"),
        lambda: svc.report(2, HIDDEN_OBJECTIVE, {}),
    ):
        with pytest.raises(ApiError) as e:
            call()
        assert (e.value.status, e.value.detail) == (404, "no such objective")
    assert len(events(rng)) == before  # nothing recorded


def test_a_message_about_an_inject_does_not_open_its_objectives(svc, rng):
    """An objective opens when its inject starts for the team, not when a message names the inject."""
    _append(rng, "message", {"inject": "exfil", "title": "Soon", "text": "Watch the egress."}, team=2)
    for call in (
        lambda: svc.objective(2, HIDDEN_OBJECTIVE, "en"),
        lambda: svc.hint(2, HIDDEN_OBJECTIVE, "en"),
    ):
        with pytest.raises(ApiError) as e:
            call()
        assert (e.value.status, e.value.detail) == (404, "no such objective")


# --- messages and the room --------------------------------------------------------------------------------------


def test_a_message_about_an_untitled_inject_keeps_its_own_title(svc, rng):
    _append(rng, "message", {"inject": "recon", "title": "Scan seen", "text": "t"}, team=1)
    assert svc.messages(1, "en")["messages"][-1]["title"] == "Scan seen"


def test_the_room_page_shows_the_scenario_title_in_its_language_and_the_clock_against_the_duration(
    svc, frozen
):
    page = svc.room("vi")
    assert "<h1>Kiểm thử truy cập</h1>" in page and "Access test" not in page
    assert '<b id="drill-clock">0:01:01 / 1:00:00</b>' in page


def test_a_hidden_room_is_not_found(rng):
    svc = TeamService(rng, Settings(hide_board=True))
    try:
        with pytest.raises(ApiError) as e:
            svc.room("en")
        assert (e.value.status, e.value.detail) == (404, "not found")
    finally:
        svc.close()


# --- refused answers: answered at once, counted, summarised -----------------------------------------------------


def test_an_answer_over_the_rate_limit_is_refused_with_429_and_summarised(rng, frozen):
    svc = TeamService(rng, Settings(rate=RateLimit(per_minute=120, burst=1)))
    svc.limiter.clock = lambda: 1000.0  # no time passes: the next token is half a second away
    try:
        assert svc.submit(1, "scanner-ip", "10.0.0.1")[0] == 200
        code, body, headers = svc.submit(1, "scanner-ip", "10.0.0.2")
        assert (code, headers) == (429, {"Retry-After": "1"})
        assert body == {
            "team": 1,
            "objective": "scanner-ip",
            "accepted": False,
            "correct": False,
            "refused": "rate limited: try again in 1 s",
            "retry_after": 1,
            "seq": None,
            "message": "refused: rate limited: try again in 1 s",
        }
        assert len(events(rng, "submission")) == 1  # the refused answer is no attempt
    finally:
        svc.close()
    (summary,) = events(rng, "submission.refused")
    assert (summary.team, summary.actor) == (1, "team-1")
    d = summary.data
    assert (d["objective"], d["count"], d["samples"], d["refused"], d["reasons"]) == (
        "scanner-ip",
        1,
        ["10.0.0.2"],
        "rate limited",
        {"rate limited": 1},
    )


def test_answers_to_a_solved_objective_are_refused_for_good_counted_and_summarised(svc, rng):
    assert svc.submit(1, "scanner-ip", _right(rng))[0] == 200
    code, second, _ = svc.submit(1, "scanner-ip", "again")  # decided by the scoring module, recorded
    reason = second["refused"]
    assert code == 409 and reason.startswith("objective 'scanner-ip' is already solved")
    recorded = len(events(rng))
    code, body, headers = svc.submit(1, "scanner-ip", "third")
    assert (code, headers) == (409, {})
    assert body == {
        "team": 1,
        "objective": "scanner-ip",
        "accepted": False,
        "correct": False,
        "attempt": None,
        "attempts_left": 4,
        "refused": reason,
        "points": 0.0,
        "seq": None,
        "message": f"refused: {reason}",
    }
    assert len(events(rng)) == recorded  # no event per answer
    svc.close()
    (summary,) = events(rng, "submission.refused")
    d = summary.data
    assert (summary.team, d["objective"], d["count"], d["samples"], d["refused"], d["reasons"]) == (
        1,
        "scanner-ip",
        1,
        ["third"],
        reason,
        {reason: 1},
    )


def test_trainer_adjustments_that_cancel_out_leave_no_empty_category(svc, rng):
    _append(rng, "score", {"points": 5, "reason": "good", "category": "bonus"}, team=1, actor="trainer")
    _append(
        rng, "score", {"points": -5, "reason": "taken back", "category": "bonus"}, team=1, actor="trainer"
    )
    assert svc.score(1)["categories"] == {
        "detection": 0.0,
        "analysis": 0.0,
        "containment": 0.0,
        "recovery": 0.0,
        "reporting": 0.0,
    }


# --- a scenario with per-team variables, availability and its own policy ---------------------------------------

CUSTOM_POLICY = (
    "policy: 1\nname: custom\nhalf_life_minutes: 30\nmax_attempts: null\nweights:\n  detection: 1.23456\n"
)


@pytest.fixture
def vrng(tmp_path, monkeypatch):
    """The 2-team range of test_access_api.py with: a per-team variable `gate` in the briefing and in
    scanner-ip's texts, the report opened by the `exfil` inject (not started), availability of the
    portal, and a policy with no attempt limit and detection weighted 1.23456."""
    sc = copy.deepcopy(access_api.SCENARIO)
    sc["variables"] = {"gate": {"choices": ["north-gate", "south-gate"]}}
    sc["briefing"] = {"en": "Defend the portal at {var:gate}.", "vi": "Bảo vệ {var:gate}."}
    obj = {o["id"]: o for o in sc["objectives"]}
    obj["scanner-ip"]["prompt"] = "Who scans {var:gate}?"
    obj["scanner-ip"]["hints"][1]["text"] = "SYNs to {var:gate}."
    obj["ncsc-report"]["after"] = "exfil"
    obj["ncsc-report"]["report"]["fields"][0]["prompt"] = "Attacker of {var:gate}"
    sc["availability"] = [{"node": "portal", "service": "http", "points": 2}]
    sc["scoring"] = {"policy": "custom"}
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "custom.yaml").write_text(CUSTOM_POLICY)
    monkeypatch.setattr(access_api, "SCENARIO", sc)
    return access_api.make_range(tmp_path)


@pytest.fixture
def vsvc(vrng):
    s = TeamService(vrng, Settings(rate=RateLimit(per_minute=0), board_cache_seconds=0))
    yield s
    s.close()


def test_a_teams_texts_carry_its_own_variable_values(vsvc, vrng):
    for team in (1, 2):
        gate = vrng.plan().team(team).values["gate"]
        vsvc.hint(team, "scanner-ip", "en")
        vsvc.hint(team, "scanner-ip", "en")
        v = vsvc.objective(team, "scanner-ip", "en")
        assert (v["prompt"], v["hints"][1]["text"]) == (f"Who scans {gate}?", f"SYNs to {gate}.")
        assert vsvc.briefing(team, "en")["briefing"] == f"Defend the portal at {gate}."
    assert {vrng.plan().team(k).values["gate"] for k in (1, 2)} == {"north-gate", "south-gate"}
    _append(vrng, "inject.start", {"inject": "exfil", "drill_t": 10}, team=1)
    gate = vrng.plan().team(1).values["gate"]
    assert _view(vsvc, 1, "ncsc-report")["report"]["fields"][0]["prompt"] == f"Attacker of {gate}"


def test_without_an_attempt_limit_no_attempts_left_are_counted(vsvc):
    vsvc.submit(1, "scanner-ip", "10.9.9.9")
    v = vsvc.objective(1, "scanner-ip", "en")
    assert (v["attempts"], v["max_attempts"], v["attempts_left"]) == (1, None, None)


def test_a_report_is_due_its_deadline_after_its_inject_started_for_the_team(vsvc, vrng):
    _append(vrng, "inject.start", {"inject": "exfil", "drill_t": 12.3456}, team=1)
    assert _view(vsvc, 1, "ncsc-report")["report"]["due_drill_t"] == 1812.35
    ok = vsvc.report(1, "ncsc-report", {"attacker_ip": _right(vrng), "case_id": "x"})
    assert (ok["deadline_t"], ok["on_time"]) == (1812.35, True)


def test_the_score_shows_weighted_maximum_points_to_the_hundredth(vsvc):
    mine = next(o for o in vsvc.score(1)["objectives"] if o["id"] == "scanner-ip")
    assert mine["max_points"] == 123.46  # 100 x 1.23456


def test_a_drill_with_availability_shows_the_availability_category_from_the_start(vsvc):
    cats = vsvc.score(1)["categories"]
    assert cats == {
        "detection": 0.0,
        "analysis": 0.0,
        "containment": 0.0,
        "recovery": 0.0,
        "availability": 0.0,
    }  # the report is not open yet: no reporting


# --- the scoring context: an edited scenario reaches the teams, a broken one does not ---------------------------


def _until(cond, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_an_edited_scenario_reaches_the_teams_and_a_broken_one_leaves_the_last_good_one(
    svc, rng, monkeypatch
):
    monkeypatch.setattr(service, "CONTEXT_SECONDS", 0.0)  # re-check on every request
    path = Path(rng.get("scenario_path"))
    assert svc.briefing(1, "en")["title"] == "Access test"
    path.write_text(path.read_text().replace("en: Access test", "en: Access test, second edition"))
    assert _until(lambda: svc.briefing(1, "en")["title"] == "Access test, second edition")
    path.write_text("rangectl: 1\nname: [not, a, scenario\n")
    for _ in range(25):  # every request re-checks (and fails to read) the file meanwhile
        assert svc.briefing(1, "en")["title"] == "Access test, second edition"
        time.sleep(0.02)


# --- answers scored on the scoring thread ------------------------------------------------------------------------


def _queued(svc, *answers, timeout: float = 10.0):
    async def go():
        jobs = [svc.scoring.submit(*a) for a in answers]
        return await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), timeout)

    return asyncio.run(go())


def test_a_failing_answer_in_a_batch_does_not_hold_up_the_others(svc):
    bad, good = _queued(svc, (1, "no-such", "x"), (1, "malware-hash", "wrong"))
    assert isinstance(bad, ApiError) and (bad.status, bad.detail) == (404, "no such objective")
    assert good[0] == 200 and good[1]["correct"] is False


def test_answers_sent_after_the_scoring_thread_stopped_are_still_scored(svc):
    assert _queued(svc, (1, "malware-hash", "one"))[0][0] == 200
    svc.scoring.close()  # the thread ends
    (res,) = _queued(svc, (1, "malware-hash", "two"))
    assert res[0] == 200 and res[1]["attempt"] == 2


# --- a range whose record starts with the drill ------------------------------------------------------------------


def _bare_range(tmp_path, first: tuple[str, dict, int | None] | None = None):
    """The scenario of test_access_api.py as a range with no credentials and nothing recorded but ``first``."""
    d = tmp_path / "scn"
    d.mkdir()
    f = d / "access-test.yaml"
    access_api._yaml_dump(access_api.SCENARIO, f)
    st = RangeState.create("bare", f, {"scenario": "access-test", "scenario_path": str(f), "teams": 2})
    if first is not None:
        kind, data, team = first
        _append(st, kind, data, team=team)
    return st


def _drill_start() -> dict:
    return {"wall_start": time.time() - 60, "time_scale": 1.0}


def test_the_drill_clock_runs_from_a_start_that_is_the_first_event_of_the_record(tmp_path):
    st = _bare_range(tmp_path, ("drill.start", _drill_start(), None))
    svc = TeamService(st, Settings(board_cache_seconds=0))
    try:
        assert events(st)[0].seq == 1
        assert svc.briefing(1, "en")["drill"]["status"] == "running"
        assert svc.board()["status"] == "running"
    finally:
        svc.close()


def test_a_message_that_is_the_first_event_of_the_record_is_shown(tmp_path):
    st = _bare_range(tmp_path, ("message", {"title": "Welcome", "text": "Log in at 9."}, 1))
    svc = TeamService(st, Settings())
    try:
        msgs = svc.messages(1, "en")
        assert [(m["seq"], m["title"], m["text"]) for m in msgs["messages"]] == [
            (1, "Welcome", "Log in at 9.")
        ]
        assert msgs["last_seq"] == 1
    finally:
        svc.close()


def test_the_first_event_of_an_empty_record_shows_on_the_board(tmp_path):
    st = _bare_range(tmp_path)
    svc = TeamService(st, Settings(board_cache_seconds=0))
    try:
        assert svc.board()["status"] == "not-started"
        _append(st, "drill.start", _drill_start())
        assert svc.board()["status"] == "running"
    finally:
        svc.close()


# --- caches and budgets --------------------------------------------------------------------------------------------


def test_without_a_board_cache_a_new_score_shows_at_once_on_the_board_and_in_the_room(svc, rng, monkeypatch):
    monkeypatch.setattr(time, "monotonic", lambda: 5000.0)  # every request at the same instant
    assert svc.board()["teams"][0]["total"] == 0.0
    before = svc.room("en")
    _append(rng, "score", {"points": 3, "reason": "teamwork"}, team=1, actor="trainer")
    assert svc.board()["teams"][0] == {"team": 1, "rank": 1, "total": 3.0, "solved": 0}
    after = svc.room("en")
    assert '<td class="n">3.0</td>' in after and '<td class="n">3.0</td>' not in before


def test_a_team_over_its_api_budget_is_turned_away_alone_and_kept_to_its_penalty_burst(rng):
    budget = TeamBudget(per_second=1, burst=3, penalty_burst=1, penalty_seconds=60)
    svc = TeamService(rng, Settings(budget=budget))
    now = [100.0]
    svc.budget.clock = lambda: now[0]
    try:
        assert [svc.over_budget(1) for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]  # a burst of 3, then a second
        assert svc.over_budget(2) == 0.0  # team 2's budget is its own
        now[0] = 110.0  # 10 s later a full burst would be back; the penalty keeps it at 1
        assert [svc.over_budget(1), svc.over_budget(1)] == [0.0, 1.0]
    finally:
        svc.close()


CHILD = """
from rangectl.access.ratelimit import RateLimit
from rangectl.access.service import Settings, TeamService
from rangectl.state import RangeState

svc = TeamService(RangeState.open("acc"), Settings(rate=RateLimit(per_minute=1, burst=1)))
assert svc.submit(1, "malware-hash", "first")[0] == 200
assert svc.submit(1, "malware-hash", "second")[0] == 429
# no close(): the process ends with the refusal only counted in memory
"""


def test_refusals_counted_by_a_process_that_ends_without_closing_are_still_recorded(rng):
    root = Path(__file__).resolve().parents[2]  # the package the test runs against
    subprocess.run([sys.executable, "-c", CHILD], cwd=root, check=True, timeout=60)
    (summary,) = events(rng, "submission.refused")
    assert (summary.team, summary.data["objective"], summary.data["samples"]) == (
        1,
        "malware-hash",
        ["second"],
    )


QUEUE_CHILD = """
import asyncio
from rangectl.access.service import Settings, TeamService
from rangectl.state import RangeState

svc = TeamService(RangeState.open("acc"), Settings())
assert asyncio.run(svc.scoring.submit(1, "malware-hash", "queued"))[0] == 200
# no close(): the scoring thread still waits for answers
"""


def test_a_process_that_scored_answers_on_the_scoring_thread_can_end_without_closing(rng):
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", QUEUE_CHILD], cwd=root, check=True, timeout=30)
    assert [e.data["answer"] for e in events(rng, "submission")] == ["queued"]
