"""The self-test's ``played-as-trainee`` check: it fails when a solution step took another path."""

from __future__ import annotations

from types import SimpleNamespace

from rangectl.selftest import SelftestResult, played_as_trainee
from rangectl.store import EventStore

DONE = [
    {"step": "submit", "objective": "scanner-ip", "result": {"ok": True}},
    {"step": "exec", "node": "gw", "run": "iptables -I RANGECTL-FILTER -s 1.2.3.4 -j DROP", "exit": 0, "ok": True},
    {"step": "report", "objective": "incident-report", "result": {"ok": True}},
]


def _check(tmp_path, events, recording_error=None) -> tuple[bool, str]:
    store = EventStore(tmp_path / "r.db")
    for kind, data, actor in events:
        store.append(kind, data, team=1, actor=actor)
    player = SimpleNamespace(team=SimpleNamespace(team=1), done=DONE)
    served = SimpleNamespace(recording=SimpleNamespace(error=recording_error))
    res = SelftestResult("s", "s.yaml", "r")
    played_as_trainee(res, store, player, served)
    store.close()
    (a,) = [a for a in res.assertions if a.name == "played-as-trainee"]
    return a.ok, a.detail


SUBMIT = ("submission", {"objective": "scanner-ip", "answer": "x", "correct": True, "attempt": 1}, "team-1")
SESSION = ("session", {"node": "gw", "pid": 9, "session": 9, "cmd": DONE[1]["run"]}, "recorder")
REPORT = ("report", {"objective": "incident-report", "fields": {}, "on_time": True}, "team-1")


def test_a_solution_played_through_the_team_path_passes(tmp_path):
    ok, detail = _check(tmp_path, [SUBMIT, SESSION, REPORT])
    assert ok, detail
    assert "2 API step(s) as team-1, 1 exec(s)" in detail


def test_an_answer_given_by_the_trainer_fails(tmp_path):
    trainer = (SUBMIT[0], SUBMIT[1], "selftest")
    ok, detail = _check(tmp_path, [trainer, SESSION, REPORT])
    assert not ok and "by 'selftest', not the team API" in detail


def test_a_command_not_run_over_ssh_node_fails(tmp_path):
    other = ("session", {"node": "portal", "pid": 9, "session": 9, "cmd": DONE[1]["run"]}, "recorder")
    ok, detail = _check(tmp_path, [SUBMIT, other, REPORT])
    assert not ok and "exec on gw is not in the command log" in detail


def test_a_missing_step_in_the_record_fails(tmp_path):
    ok, detail = _check(tmp_path, [SUBMIT, SESSION])
    assert not ok and "2 answer/hint/report step(s) but 1 in the record" in detail


def test_no_recorder_means_no_proof(tmp_path):
    ok, detail = _check(tmp_path, [SUBMIT, SESSION, REPORT], recording_error="no proc connector")
    assert not ok and "commands were not recorded (no proc connector)" in detail
