"""What the team service shows and does, view by view (written against surviving mutants).

The service is called directly (no HTTP), on the 2-team range of test_access_api.py: recon has
started for both teams at drill second 0, the drill started a minute ago, the standard policy
(5 attempts, 10 points per wrong answer, half-life 30 min) scores it.
"""

from __future__ import annotations

import pytest

from rangectl.access.ratelimit import RateLimit
from rangectl.access.service import ApiError, Settings, TeamService
from rangectl.scenario.model import Scenario
from rangectl.store import EventStore
from tests.unit.test_access_api import HIDDEN_OBJECTIVE, PRIVATE_MESSAGE, SCENARIO, make_range


@pytest.fixture
def rng(tmp_path):
    return make_range(tmp_path)


@pytest.fixture
def svc(rng):
    s = TeamService(rng, Settings(rate=RateLimit(per_minute=0), board_cache_seconds=0))
    yield s
    s.close()


def _append(rng, kind, data, team=None, actor="runner"):
    s = EventStore(rng.db_path)
    try:
        return s.append(kind, data, team=team, actor=actor)
    finally:
        s.close()


def _view(svc, team, oid, lang="en"):
    return next(o for o in svc.objectives(team, lang)["objectives"] if o["id"] == oid)


# --- objectives -------------------------------------------------------------------------------------------


def test_an_open_answer_objective_before_anything_happened(svc):
    v = _view(svc, 1, "scanner-ip")
    assert v == {
        "id": "scanner-ip",
        "title": "Who scans?",
        "prompt": "Give the scanner's address.",
        "category": "detection",
        "kind": "answer",
        "points": 100,
        "solved": False,
        "earned": 0.0,
        "hints": [{"index": 0, "cost": 10, "taken": False}, {"index": 1, "cost": 20, "taken": False}],
        "hints_available": 2,
        "attempts": 0,
        "max_attempts": 5,
        "attempts_left": 5,
    }
    assert _view(svc, 1, "scanner-ip", "vi")["title"] == "Ai quét?"
    assert _view(svc, 1, "malware-hash")["title"] == "malware-hash"  # no title: the id


def test_hints_attempts_and_solving_show_in_the_view(svc, rng):
    h = svc.hint(1, "scanner-ip", "vi")
    assert (h["team"], h["objective"], h["index"], h["total"], h["cost"], h["text"]) == (
        1, "scanner-ip", 0, 2, 10, "Xem tcpdump."
    )
    assert h["seq"] > 0 and h["drill_t"] >= 0
    assert svc.submit(1, "scanner-ip", "203.0.113.9")[0] == 200
    v = _view(svc, 1, "scanner-ip")
    assert v["hints"][0] == {"index": 0, "cost": 10, "taken": True, "text": "Look at tcpdump."}
    assert "text" not in v["hints"][1] and v["hints_available"] == 1
    assert (v["attempts"], v["attempts_left"], v["solved"], v["earned"]) == (1, 4, False, 0.0)
    right = str(rng.plan().team(1).ip_of("scanner"))
    code, body, headers = svc.submit(1, "scanner-ip", right)
    assert code == 200 and body["correct"] and body["attempt"] == 2 and headers == {}
    v = _view(svc, 1, "scanner-ip")
    assert v["solved"] and v["attempts"] == 2 and v["earned"] == body["points"] > 0
    assert _view(svc, 2, "scanner-ip")["attempts"] == 0  # team 2's view is its own


def test_check_and_report_objectives_show_what_they_need(svc):
    chk = _view(svc, 1, "blocked")
    assert chk["kind"] == "check" and "attempts" not in chk and "report" not in chk
    rep = _view(svc, 1, "ncsc-report")
    assert rep["kind"] == "report" and "attempts" not in rep
    assert rep["report"] == {
        "deadline_seconds": 1800.0,
        "due_drill_t": 1800.0,  # recon started at drill second 0
        "filed": False,
        "fields": [
            {"name": "attacker_ip", "prompt": "Attacker address", "required": True},
            {"name": "case_id", "prompt": "", "required": True},
            {"name": "summary", "prompt": "", "required": False},
        ],
    }


def test_one_objective_and_closed_or_unknown_ones(svc, rng):
    assert svc.objective(1, "ticket", "en")["id"] == "ticket"
    for oid in (HIDDEN_OBJECTIVE, "no-such"):
        with pytest.raises(ApiError) as e:
            svc.objective(1, oid, "en")
        assert (e.value.status, e.value.detail) == (404, "no such objective")
    _append(rng, "inject.start", {"inject": "exfil", "drill_t": 3000}, team=1)
    assert svc.objective(1, HIDDEN_OBJECTIVE, "en")["title"] == "FUTURE-TITLE-exfil"
    assert HIDDEN_OBJECTIVE in [o["id"] for o in svc.objectives(1, "en")["objectives"]]
    with pytest.raises(ApiError):
        svc.objective(2, HIDDEN_OBJECTIVE, "en")  # still closed for team 2


# --- briefing and messages ---------------------------------------------------------------------------------


def test_briefing(svc, rng):
    b = svc.briefing(2, "vi")
    assert {k: b[k] for k in ("team", "range", "scenario", "title", "briefing", "level", "duration_seconds", "lang")} == {
        "team": 2,
        "range": "acc",
        "scenario": "access-test",
        "title": "Kiểm thử truy cập",
        "briefing": "Bảo vệ cổng thông tin.",
        "level": Scenario.model_validate(SCENARIO).level,
        "duration_seconds": 3600.0,
        "lang": "vi",
    }
    assert b["drill"]["status"] == "running" and 50 <= b["drill"]["drill_t"] <= 600


def test_message_titles_texts_and_times(svc, rng):
    _append(rng, "message", {"inject": "no-such-inject", "title": "Own title", "text": 42, "drill_t": 7.456}, team=1)
    _append(rng, "message", {"inject": "recon", "text": None}, team=1)  # an inject without a title
    _append(rng, "message", {"text": {"en": "E", "vi": "V"}}, team=1)
    msgs = svc.messages(1, "en")["messages"]
    assert msgs[0]["title"] == "Heads up" and msgs[0]["text"].endswith(PRIVATE_MESSAGE[1])
    assert [(m["title"], m["text"], m["drill_t"]) for m in msgs[1:]] == [
        ("Own title", "42", 7.46),
        ("recon", "", 0.0),
        ("", "E", 0.0),
    ]
    assert svc.messages(1, "vi")["messages"][-1]["text"] == "V"


# --- refusals ------------------------------------------------------------------------------------------------


def test_what_cannot_be_submitted_says_why(svc):
    for oid, how in (("blocked", "a check the drill runs"), ("ncsc-report", "a report")):
        with pytest.raises(ApiError) as e:
            svc.submit(1, oid, "x")
        assert (e.value.status, e.value.detail) == (409, f"objective '{oid}' is scored by {how}; there is nothing to submit")
    with pytest.raises(ApiError) as e:
        svc.hint(1, "malware-hash", "en")
    assert (e.value.status, e.value.detail) == (409, "objective 'malware-hash' has no hints")


def test_reports_are_checked_field_by_field(svc):
    cases = [
        ("scanner-ip", {}, 409, "objective 'scanner-ip' is not a report objective"),
        ("ncsc-report", {"attacker_ip": "1.1.1.1", "case_id": "c", "colour": "red"}, 422,
         "unknown report field 'colour' (fields: attacker_ip, case_id, summary)"),
        ("ncsc-report", {"attacker_ip": " ", "summary": "s"}, 422,
         "required report field(s) missing: attacker_ip, case_id; report not accepted"),
        ("ncsc-report", {"attacker_ip": "1.1.1.1", "case_id": ["a"]}, 422,
         "report field 'case_id' must be a single value (text, number, true/false)"),
    ]
    for oid, fields, status, detail in cases:
        with pytest.raises(ApiError) as e:
            svc.report(1, oid, fields)
        assert (e.value.status, e.value.detail) == (status, detail)
    ok = svc.report(1, "ncsc-report", {"attacker_ip": "1.1.1.1", "case_id": 7, "summary": None})
    assert ok["accepted"] is True and ok["on_time"] is True and ok["objective"] == "ncsc-report"
    assert ok["deadline_t"] == 1800.0 and ok["seq"] > 0
    assert _view(svc, 1, "ncsc-report")["report"]["filed"] is True


# --- score and board ---------------------------------------------------------------------------------------------


def test_score_shows_only_open_objectives_and_the_rank(svc, rng):
    right = str(rng.plan().team(2).ip_of("scanner"))
    svc.submit(2, "scanner-ip", right)
    _append(rng, "score", {"points": 7, "reason": "teamwork", "category": "bonus"}, team=1, actor="trainer")
    s1, s2 = svc.score(1), svc.score(2)
    assert s1["team"] == 1 and s2["team"] == 2
    assert (s1["rank"], s2["rank"], s1["teams"]) == (2, 1, 2)
    assert s1["categories"] == {"detection": 0.0, "analysis": 0.0, "containment": 0.0, "recovery": 0.0,
                                "reporting": 0.0, "bonus": 7.0}
    assert (s1["total"], s1["adjustments"], s1["solved"]) == (7.0, 7.0, 0)
    assert HIDDEN_OBJECTIVE not in [o["id"] for o in s1["objectives"]]
    mine = next(o for o in s2["objectives"] if o["id"] == "scanner-ip")
    assert mine == {"id": "scanner-ip", "category": "detection", "solved": True, "points": mine["points"],
                    "max_points": 100.0, "attempts": 1, "hints": 0}
    assert 90 < mine["points"] <= 100 and s2["attempts"] == 1 and s2["availability"] == {"up": 0, "total": 0}
    b = svc.board()
    assert [t["team"] for t in b["teams"]] == [2, 1] and b["scenario"] == "access-test" and b["status"] == "running"
    assert b["teams"][1] == {"team": 1, "rank": 2, "total": 7.0, "solved": 0}


def test_a_hidden_board_hides_rank_and_board(rng):
    svc = TeamService(rng, Settings(hide_board=True))
    try:
        s = svc.score(1)
        assert s["rank"] is None and s["teams"] is None and s["total"] == 0.0
        with pytest.raises(ApiError) as e:
            svc.board()
        assert (e.value.status, e.value.detail) == (403, "the trainer has hidden the scoreboard")
        with pytest.raises(ApiError) as e:
            svc.room()
        assert e.value.status == 404
    finally:
        svc.close()


def test_the_board_cache_serves_until_the_record_grows(rng):
    svc = TeamService(rng, Settings(board_cache_seconds=3600))
    try:
        first = svc.board_cached()
        assert svc.board_cached() is first
        _append(rng, "score", {"points": 3, "reason": ""}, team=1, actor="trainer")
        assert svc.board_cached() is first  # within the cache time: the same board
        svc.settings.board_cache_seconds = 0
        fresh = svc.board_cached()
        assert fresh is not first and fresh.team(1).total == 3.0
        assert svc.board_cached() is fresh  # nothing new in the record: reused
    finally:
        svc.close()
