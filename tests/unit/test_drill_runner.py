"""The drill runner on the record alone: clock, schedule, chains, pause, crash and restart.

Traffic and probes are replaced by small functions here; the Docker-backed
drill is tested in tests/integration/test_drill_docker.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rangectl.drill.runner import DrillRunner, clock_from_events, due_times, end_time, progress_from_events
from rangectl.plan import plan
from rangectl.scenario.model import Scenario
from rangectl.store import EventStore

SCENARIO = {
    "rangectl": 1,
    "name": "runner-test",
    "title": "t",
    "duration": "10m",
    "networks": {"lan": {"subnet": "10.1.0.0/24"}},
    "nodes": {
        "soc": {"image": "workstation", "role": "blue", "interfaces": {"lan": "10.1.0.5"}},
        "web": {"image": "web", "role": "target", "interfaces": {"lan": "10.1.0.10"},
                "services": [{"name": "http", "port": 80}]},
        "bad": {"image": "attacker", "role": "red", "interfaces": {"lan": "10.1.0.66"}},
    },
    "injects": [
        {"id": "kickoff", "at": "0s", "message": "go"},
        {"id": "recon", "at": "2m", "traffic": {"kind": "portscan", "from": "bad", "target": "web"}},
        {"id": "exploit", "after": "recon", "delay": "3m", "traffic": {"kind": "http", "from": "bad", "target": "web"}},
        {"id": "note", "after": "exploit", "message": "done"},
    ],
    "objectives": [
        {"id": "blocked", "category": "containment", "after": "recon", "points": 10,
         "check": {"blocked": {"from": "bad", "to": "web", "port": 80}, "every": "1m"}},
    ],
    "availability": [{"node": "web", "service": "http", "points": 1, "every": "1m"}],
}


def sc() -> Scenario:
    return Scenario.model_validate(SCENARIO)


def test_due_times_follow_after_chains():
    d = due_times(sc())
    assert d == {"kickoff": 0.0, "recon": 120.0, "exploit": 300.0, "note": 300.0}
    assert end_time(sc()) == 600.0


def make_runner(tmp_path: Path, calls: list, scale_fail=None) -> DrillRunner:
    s = sc()
    store = EventStore(tmp_path / "range.db")

    def inject(team, inj, t):
        calls.append((inj.id, team, t))
        return {"packets": 3, "bytes": 180}

    def check(team, obj):
        return {"passed": team == 1, "detail": "probe"}

    def avail(team, av):
        return {"passed": True, "detail": "up"}

    return DrillRunner(s, plan(s, 2), store, inject, check, avail)


def test_full_run_at_high_time_scale_runs_each_inject_once_per_team_in_order(tmp_path):
    calls: list = []
    r = make_runner(tmp_path, calls)
    r.start(time_scale=600.0)  # 10 drill minutes in one wall second
    t0 = time.monotonic()
    r.run()
    assert time.monotonic() - t0 < 10
    events = list(r.store.events())
    done = [(e.data["inject"], e.team) for e in events if e.kind == "inject.done"]
    assert sorted(done) == sorted((i, k) for i in ("kickoff", "recon", "exploit", "note") for k in (1, 2))
    # a chained inject fires only after the one it follows finished, for the same team
    for k in (1, 2):
        order = [i for i, team, _ in calls if team == k]
        assert order.index("recon") < order.index("exploit")
    # injects fire no earlier than due
    starts = {(e.data["inject"], e.team): e.data for e in events if e.kind == "inject.start"}
    for (_i, _k), d in starts.items():
        assert d["drill_t"] >= d["due_t"] - 1e-6
    assert any(e.kind == "drill.finish" for e in events)
    checks = [e for e in events if e.kind == "check"]
    assert {e.team for e in checks if e.data["passed"]} == {1}
    # team 1 passes once and is not probed again; team 2 keeps being probed
    assert sum(1 for e in checks if e.team == 1) == 1
    assert sum(1 for e in checks if e.team == 2) >= 2
    rounds = [(e.team, e.data["round"]) for e in events if e.kind == "availability"]
    assert len(rounds) == len(set(rounds))  # each round once per team
    assert {t for t, _ in rounds} == {1, 2}
    msgs = [e for e in events if e.kind == "message"]
    assert msgs == []  # the fake inject function does not write messages; the real wiring does


def test_pause_stops_the_clock_and_resume_restarts_it(tmp_path):
    store = EventStore(tmp_path / "range.db")
    store.append("drill.start", {"wall_start": 1000.0, "time_scale": 2.0})
    store.append("drill.pause", {}, ts=1010.0)
    c = clock_from_events(list(store.events()))
    assert c.status == "paused"
    assert c.drill_t(now=5000.0) == pytest.approx(20.0)
    store.append("drill.resume", {}, ts=1100.0)
    c = clock_from_events(list(store.events()))
    assert c.status == "running"
    assert c.drill_t(now=1105.0) == pytest.approx(30.0)


def test_stop_ends_the_run(tmp_path):
    calls: list = []
    r = make_runner(tmp_path, calls)
    r.start(time_scale=1.0)
    stopper = threading.Timer(0.5, lambda: r.store.append("drill.stop", {}, actor="trainer"))
    stopper.start()
    t0 = time.monotonic()
    r.run()
    assert time.monotonic() - t0 < 5
    assert clock_from_events(list(r.store.events())).status == "stopped"


CHILD = textwrap.dedent(
    """
    import sys, time, json
    sys.path.insert(0, {root!r})
    from tests.unit.test_drill_runner import sc
    from rangectl.drill.runner import DrillRunner
    from rangectl.store import EventStore
    from rangectl.plan import plan
    s = sc()
    store = EventStore({db!r})
    def inject(team, inj, t):
        time.sleep(0.15)  # the work a kill can interrupt
        return {{"packets": 1}}
    def check(team, obj):
        time.sleep(0.05)
        return {{"passed": False, "detail": "x"}}
    def avail(team, av):
        return {{"passed": True, "detail": "up"}}
    r = DrillRunner(s, plan(s, 2), store, inject, check, avail)
    open({ready!r}, "w").close()  # imports done: from here on a kill interrupts the drill itself
    r.start(time_scale=300.0)
    r.run()
    """
)


def _wait_ready(proc: subprocess.Popen, ready: Path, timeout: float = 120.0) -> None:
    """Until the child has started (Python and the imports take seconds on a loaded machine; a kill
    window that counted them could end before the drill did any work, run after run)."""
    end = time.monotonic() + timeout
    while not ready.exists():
        assert proc.poll() is None, f"the child exited ({proc.returncode}) before it started the drill"
        assert time.monotonic() < end, "the child did not start within 120 s"
        time.sleep(0.01)


def test_kill_and_restart_carries_on_from_the_record(tmp_path):
    root = str(Path(__file__).resolve().parents[2])
    db = str(tmp_path / "range.db")
    script = tmp_path / "child.py"
    ready = tmp_path / "ready"
    script.write_text(CHILD.format(root=root, db=db, ready=str(ready)))
    rng = random.Random(7)
    kills = 0
    for _ in range(30):
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, str(script)], cwd=root)
        _wait_ready(proc, ready)
        try:
            proc.wait(timeout=rng.uniform(0.3, 1.2))
            if proc.returncode == 0:
                break
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    else:
        pytest.fail("drill never finished")
    assert kills >= 1, "the test must actually kill the runner at least once"
    store = EventStore(db)
    events = list(store.events())
    p = progress_from_events(events)
    done = [(e.data["inject"], e.team) for e in events if e.kind == "inject.done"]
    expected = {(i, k) for i in ("kickoff", "recon", "exploit", "note") for k in (1, 2)}
    assert set(done) == expected, "an inject was skipped"
    assert len(done) == len(expected), "an inject completed twice"
    assert set(p.done) == expected
    assert sum(1 for e in events if e.kind == "drill.start") == 1
    assert any(e.kind == "drill.finish" for e in events)
    rounds = [(e.team, e.data["index"], e.data["round"]) for e in events if e.kind == "availability"]
    assert len(rounds) == len(set(rounds)), "an availability round was recorded twice"
    assert store.verify().ok


def test_a_manual_inject_does_not_replace_the_timeline_run():
    from types import SimpleNamespace as E

    from rangectl.drill.runner import progress_from_events

    evs = [
        E(kind="inject.done", team=1, seq=1, data={"inject": "recon", "status": "ok", "manual": True}),
        E(kind="inject.start", team=2, seq=2, data={"inject": "recon", "drill_t": 10.0}),
        E(kind="inject.done", team=2, seq=3, data={"inject": "recon", "status": "ok"}),
    ]
    p = progress_from_events(evs)
    assert ("recon", 1) not in p.done and ("recon", 2) in p.done


def test_a_hold_objective_is_probed_to_the_end_and_its_undoing_recorded_once(tmp_path):
    """Team 1 blocks the attacker, holds it, then lifts the block at drill minute 7: the runner
    keeps probing after the pass, records one check.revoked, and a restart adds no second one."""
    from rangectl.scoring.engine import compute_board
    from rangectl.scoring.policy import Policy

    data = {**SCENARIO, "objectives": [dict(SCENARIO["objectives"][0])]}
    data["objectives"][0]["check"] = {**data["objectives"][0]["check"], "hold": 2}
    s = Scenario.model_validate(data)
    store = EventStore(tmp_path / "range.db")
    clock = {}

    def check(team, obj):
        return {"passed": team == 1 and clock["r"].clock.drill_t() < 420, "detail": "probe"}

    def runner():
        return DrillRunner(s, plan(s, 2), store, lambda *a: {}, check, lambda *a: {"passed": True, "detail": "up"})

    r = clock["r"] = runner()
    r.start(time_scale=600.0)
    r.run()
    events = list(store.events())
    team1 = [e for e in events if e.kind == "check" and e.team == 1]
    assert sum(e.data["passed"] for e in team1) >= 2 and not team1[-1].data["passed"]
    revoked = [e for e in events if e.kind == "check.revoked"]
    assert [(e.team, e.data["objective"]) for e in revoked] == [(1, "blocked")]
    first_fail = next(e for e in team1 if not e.data["passed"])
    assert revoked[0].data["check_seq"] == first_fail.seq
    b = compute_board(s, plan(s, 2), Policy(), events)
    assert not b.team(1).detail["blocked"].solved and b.team(1).detail["blocked"].revoked == 1
    again = runner()
    again.refresh()  # a restart reads the whole record again
    assert [e.kind for e in store.events(kind="check.revoked")] == ["check.revoked"]
