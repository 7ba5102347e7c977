"""The self-test without Docker: JUnit output, time scale, ground truth, the verdict on a recorded drill,
the command's exit code, and exit 3 when the engine is down; and language choice."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rangectl.errors import UsageError
from rangectl.i18n import pick_lang
from rangectl.selftest import Assertion, SelftestResult, _assess, auto_time_scale, junit, traffic_seen
from tests.conftest import ROOT, run_cli


def test_junit_one_suite_per_scenario_one_case_per_assertion():
    ok = SelftestResult("tet-portal", "s/tet-portal.yaml", "selftest-tet-portal", seconds=12.5)
    ok.add("range-up", True, "12 containers")
    ok.add("verify", True, "30 events")
    bad = SelftestResult("bank-phish", "s/bank-phish.yaml", "selftest-bank-phish")
    bad.add("team1-score", False, "120.0 (expected at least 300) <&>")
    err = SelftestResult("x", "x.yaml", "selftest-x", error="no such image")
    root = ET.fromstring(junit([ok, bad, err]))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["selftest.tet-portal", "selftest.bank-phish", "selftest.x"]
    assert [(s.get("tests"), s.get("failures")) for s in suites] == [("2", "0"), ("1", "1"), ("1", "1")]
    fail = suites[1].find("testcase").find("failure")
    assert fail.get("message") == "120.0 (expected at least 300) <&>"
    assert suites[2].find("testcase").get("name") == "selftest"
    assert ok.ok and not bad.ok and not err.ok
    assert not SelftestResult("e", "e", "e").ok  # no assertions is not a pass


def test_auto_time_scale_runs_the_drill_in_about_150_s():
    assert auto_time_scale(3600) == 24.0
    assert auto_time_scale(60) == 1.0  # never slower than real time


@pytest.mark.parametrize(
    "truth,seen",
    [({"seen_on_target": 12}, 12), ({"packets_seen": 3}, 3), ({"seen_on_target": {"packets": 7}}, 7), ({}, 0)],
)
def test_traffic_seen_reads_the_ground_truth(truth, seen):
    assert traffic_seen(truth) == seen


def test_pick_lang(monkeypatch):
    monkeypatch.delenv("RANGECTL_LANG", raising=False)
    assert pick_lang() == "en"
    monkeypatch.setenv("RANGECTL_LANG", "VI")
    assert pick_lang() == "vi"
    assert pick_lang("en") == "en"  # the option wins
    with pytest.raises(UsageError, match="RANGECTL_LANG: unknown language 'fr'"):
        monkeypatch.setenv("RANGECTL_LANG", "fr")
        pick_lang()
    with pytest.raises(UsageError, match="--lang: unknown language 'de'"):
        pick_lang("de")


# --- the verdict: SelftestResult.ok, _assess on a recorded drill, and the command's exit code -------------

SELF_SCENARIO = {
    "rangectl": 1,
    "name": "self-test",
    "title": "Self-test verdict",
    "networks": {"wan": {"subnet": "198.18.30.0/24"}, "dmz": {"subnet": "10.231.30.0/24"}},
    "nodes": {
        "gw": {"image": "router", "role": "infra", "forward": True,
               "interfaces": {"wan": "198.18.30.1", "dmz": "10.231.30.1"}},
        "portal": {"image": "web", "role": "target", "gateway": "10.231.30.1",
                   "interfaces": {"dmz": "10.231.30.10"}, "services": [{"name": "http", "port": 80}]},
        "soc": {"image": "workstation", "role": "blue", "gateway": "10.231.30.1",
                "interfaces": {"dmz": "10.231.30.50"}},
        "scanner": {"image": "attacker", "role": "red", "gateway": "198.18.30.1",
                    "interfaces": {"wan": "198.18.30.66"}},
    },
    "injects": [
        {"id": "recon", "at": "1m", "traffic": {"kind": "portscan", "from": "scanner", "target": "portal"}},
        {"id": "note", "after": "recon", "delay": "1m", "message": "Look at the IDS."},
    ],
    "objectives": [
        {"id": "scanner-ip", "category": "detection", "after": "recon", "points": 100,
         "answer": {"ip_of": "scanner"}},
        {"id": "flag", "category": "detection", "points": 50, "answer": {"value": "FLAG-1"}},
    ],
    "expected_score": 100,
    "scoring": {"policy": "flat"},
}


class _Player:
    def __init__(self, done: list[dict], finished: bool = True):
        self.done, self.finished = done, finished


GOOD_STEPS = [
    {"step": "submit", "objective": "scanner-ip", "result": {"ok": True, "message": "correct"}},
    {"step": "exec", "node": "gw", "ok": True, "exit": 0, "output": "done\n"},
]


def _record() -> list[tuple]:
    """A clean drill: both injects ran for both teams, the scan was seen on the target (40 packets
    each), team 1 answered both objectives at once, team 2 did nothing. (kind, data, team, ts)."""
    out: list[tuple] = [("drill.start", {"wall_start": 0.0, "time_scale": 1.0}, None, 0.0)]
    for k in (1, 2):
        out += [
            ("inject.start", {"inject": "recon", "drill_t": 60.0}, k, 60.0),
            ("inject.done", {"inject": "recon", "status": "ok", "drill_t": 70.0, "seen_on_target": 40}, k, 70.0),
            ("inject.start", {"inject": "note", "drill_t": 120.0}, k, 120.0),
            ("inject.done", {"inject": "note", "status": "ok", "drill_t": 120.0}, k, 120.0),
        ]
    for oid in ("scanner-ip", "flag"):
        out.append(("submission", {"objective": oid, "answer": "x", "correct": True, "attempt": 1, "drill_t": 60.0},
                    1, 130.0))
    return out


@pytest.fixture
def make_drill(tmp_path, monkeypatch):
    """make_drill(record, **scenario_changes) -> (state, store): a 2-team range holding that record."""
    from rangectl.state import RangeState
    from rangectl.store import EventStore

    monkeypatch.setenv("RANGECTL_HOME", str(tmp_path / "home"))
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "flat.yaml").write_text(json.dumps({"name": "flat", "half_life_minutes": None}))
    monkeypatch.setenv("RANGECTL_ROOT", str(tmp_path))  # the project root: scoring/flat.yaml
    made = []

    def make(record: list[tuple] | None = None, **changes):
        src = tmp_path / f"self-test-{len(made)}.yaml"
        src.write_text(json.dumps({**SELF_SCENARIO, **changes}))
        st = RangeState.create(f"selftest-verdict-{len(made)}", src, {"teams": 2, "scenario_path": str(src)})
        store = EventStore(st.db_path)
        for kind, data, team, ts in _record() if record is None else record:
            store.append(kind, data, team=team, actor="runner", ts=ts)
        made.append(store)
        return st, store

    yield make
    for s in made:
        s.close()


def _verdict(st, store, player=None, **changes):
    from rangectl.scenario.model import Scenario

    sc = Scenario.model_validate({**SELF_SCENARIO, **changes})
    res = SelftestResult("self-test", "self-test.yaml", st.name, expected_score=sc.expected_score)
    _assess(res, st, sc, st.plan(), player or _Player(list(GOOD_STEPS)), store)
    return res, {a.name: a for a in res.assertions}


def test_a_clean_drill_passes_every_assertion(make_drill):
    res, by = _verdict(*make_drill())
    assert list(by) == ["injects-ran", "traffic-seen", "solution-steps", "team1-objectives", "team1-score",
                        "team2-idle", "verify"]
    assert all(a.ok for a in res.assertions), res.assertions
    assert res.ok
    assert res.scores == {1: 150.0, 2: 0.0}
    assert by["traffic-seen"].detail == "80 packets seen on targets"
    assert by["injects-ran"].detail == "4 inject runs, all ok"
    assert by["team1-objectives"].detail == "all 2 objectives earned"
    assert by["team1-score"].detail == "150.0 (expected at least 100)"
    assert by["team2-idle"].detail == "0.0 (availability only)"
    assert by["verify"].detail.endswith("events, chain intact")
    assert res.objectives[1]["flag"]["solved"] and not res.objectives[2]["flag"]["solved"]
    assert res.availability_up == {1: 0, 2: 0}


def test_injects_ran_names_the_missing_and_failed_runs(make_drill):
    """Team 2's message inject never ran and team 1's scan failed: injects-ran and traffic-seen fail."""
    record = []
    for kind, data, team, ts in _record():
        if kind == "inject.done" and (team, data["inject"]) == (2, "note"):
            continue
        if kind == "inject.done" and (team, data["inject"]) == (1, "recon"):
            data = {"inject": "recon", "status": "error", "error": "no route", "drill_t": 61.0}
        record.append((kind, data, team, ts))
    res, by = _verdict(*make_drill(record))
    assert not by["injects-ran"].ok and not res.ok
    assert by["injects-ran"].detail == "note/team 2; recon/team 1: no route"
    assert not by["traffic-seen"].ok and by["traffic-seen"].detail == "not seen on target: recon/team 1"


def test_traffic_not_seen_on_its_target_fails(make_drill):
    record = [
        (k, {**d, "seen_on_target": 0} if k == "inject.done" and (t, d["inject"]) == (2, "recon") else d, t, ts)
        for k, d, t, ts in _record()
    ]
    res, by = _verdict(*make_drill(record))
    assert not by["traffic-seen"].ok and by["traffic-seen"].detail == "not seen on target: recon/team 2"
    assert by["injects-ran"].ok and not res.ok


def test_team_two_earning_anything_fails_team2_idle(make_drill):
    record = _record() + [
        ("submission", {"objective": "flag", "answer": "x", "correct": True, "attempt": 1, "drill_t": 70.0}, 2, 140.0)
    ]
    res, by = _verdict(*make_drill(record))
    assert not by["team2-idle"].ok and by["team2-idle"].detail == "earned without doing anything: flag"
    assert not res.ok


def test_team_one_missing_an_objective_fails_team1_objectives(make_drill):
    record = [r for r in _record() if not (r[0] == "submission" and r[1]["objective"] == "flag")]
    res, by = _verdict(*make_drill(record))
    assert not by["team1-objectives"].ok and by["team1-objectives"].detail == "not earned: flag"
    assert by["team1-score"].ok and by["team1-score"].detail == "100.0 (expected at least 100)"  # exactly enough
    assert not res.ok


@pytest.mark.parametrize(("expected", "ok"), [(None, True), (150, True), (151, False)])
def test_team_one_score_against_expected_score(make_drill, expected, ok):
    res, by = _verdict(*make_drill(expected_score=expected), expected_score=expected)
    assert by["team1-score"].ok is ok and res.ok is ok
    want = "150.0 (no expected_score set)" if expected is None else f"150.0 (expected at least {expected})"
    assert by["team1-score"].detail == want


@pytest.mark.parametrize(
    ("steps", "finished", "detail"),
    [
        ([{"step": "submit", "objective": "flag", "result": {"ok": False, "message": "wrong"}}], True,
         "submit flag: wrong"),
        ([{"step": "exec", "node": "gw", "ok": False, "exit": 2, "output": "iptables: not found\n"}], True,
         "exec on gw exited 2: iptables: not found"),
        (list(GOOD_STEPS), False, "2 steps, all accepted"),
    ],
    ids=["wrong-answer", "failed-command", "not-finished"],
)
def test_a_solution_step_that_failed_fails_solution_steps(make_drill, steps, finished, detail):
    res, by = _verdict(*make_drill(), player=_Player(steps, finished))
    assert not by["solution-steps"].ok and by["solution-steps"].detail == detail and not res.ok


def test_a_step_without_a_result_dict_counts_as_accepted(make_drill):
    player = _Player([{"step": "hint", "objective": "flag", "result": None}, {"step": "wait", "result": "ok"}])
    res, by = _verdict(*make_drill(), player=player)
    assert by["solution-steps"].ok and by["solution-steps"].detail == "2 steps, all accepted"


def test_a_tampered_record_fails_verify(make_drill):
    import sqlite3

    st, store = make_drill()
    conn = sqlite3.connect(st.db_path)
    conn.executescript("DROP TRIGGER events_no_update;")
    conn.execute("UPDATE events SET ts = 99.0 WHERE seq = 3")
    conn.commit()
    conn.close()
    res, by = _verdict(st, store)
    assert not by["verify"].ok and by["verify"].detail.startswith("broken at seq 3: ") and not res.ok


def test_ok_needs_assertions_all_passing_and_no_error():
    r = SelftestResult("s", "s.yaml", "r")
    assert not r.ok
    r.add("a", True)
    assert r.ok and r.as_dict()["ok"] is True
    r.add("b", 0, "zero is a failure")
    assert not r.ok and r.assertions[-1] == Assertion("b", False, "zero is a failure")
    ok = SelftestResult("s", "s.yaml", "r", error="the Docker engine is not answering")
    ok.add("a", True)
    assert not ok.ok and ok.as_dict()["error"] == "the Docker engine is not answering"
    d = r.as_dict()
    assert d["assertions"] == [{"name": "a", "ok": True, "detail": ""}, {"name": "b", "ok": False, "detail": "zero is a failure"}]


@pytest.mark.parametrize(
    ("oks", "code"),
    [([True], 0), ([True, True], 0), ([True, False], 1), ([False], 1)],
)
def test_selftest_command_exits_0_only_when_every_scenario_passes(monkeypatch, tmp_path, oks, code):
    """`rangectl selftest A B ...` exits 0 only if every scenario's result is ok (run_selftest replaced)."""
    from typer.testing import CliRunner

    import rangectl.selftest as selftest_mod
    from rangectl.cli import app

    results = []

    def fake(path, **kw):
        r = SelftestResult(Path(path).stem, str(path), "selftest-x", seconds=1.0)
        r.add("range-up", True, "up")
        r.add("verify", oks[len(results)], "chain")
        results.append(r)
        return r

    monkeypatch.setattr(selftest_mod, "run_selftest", fake)
    files = [tmp_path / f"s{i}.yaml" for i in range(len(oks))]
    out = tmp_path / "out.json"
    res = CliRunner().invoke(app, ["selftest", *map(str, files), "--format", "json", "-o", str(out), "--no-live"])
    assert res.exit_code == code, res.output
    body = json.loads(out.read_text())
    assert [b["ok"] for b in body] == oks


ENGINE_DOWN = {"DOCKER_HOST": "unix:///nonexistent/rangectl-test-docker.sock"}


@pytest.mark.parametrize("args", [["ls"], ["status", "nosuch"], ["down", "nosuch"]], ids=" ".join)
def test_engine_down_exits_3_with_one_line(tmp_path, args):
    """With no Docker engine answering, commands that need it exit 3 with one line on stderr, no traceback."""
    env = {**os.environ, **ENGINE_DOWN, "RANGECTL_HOME": str(tmp_path / "home")}
    p = run_cli(*args, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 3, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the Docker engine is not answering"), p.stderr
    assert "Traceback" not in p.stderr


def test_up_with_the_engine_down_exits_3_and_leaves_nothing(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, **ENGINE_DOWN, "RANGECTL_HOME": str(home)}
    p = run_cli("up", str(ROOT / "tests" / "fixtures" / "mini-range.yaml"), "--name", "engine-down", "--no-provision",
                env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 3 and "the Docker engine is not answering" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not (home / "engine-down").exists() and not any(home.glob("**/range.db"))


def test_selftest_with_the_engine_down_exits_3(tmp_path):
    """Engine down is an environment problem (exit 3, docs/cli.md), not a failed self-test (1)."""
    env = {**os.environ, **ENGINE_DOWN, "RANGECTL_HOME": str(tmp_path / "home")}
    p = run_cli("selftest", str(ROOT / "scenarios" / "tet-portal.yaml"), "--no-live", env=env, timeout=120,
                stdin=subprocess.DEVNULL)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
