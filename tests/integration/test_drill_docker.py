"""A full drill on a real range, driven through the CLI like a trainer and two teams would.

Two teams on the mini range, the drill at x3 in a detached runner. The runner is killed with
SIGKILL after the port scan has run and started again: it carries on from the record (nothing
runs twice, nothing is skipped). Team 1's scripted responder submits a wrong answer, takes a
hint, submits the right one, blocks the scanner on the router and files its report; team 2
stops its own web service (and so loses availability rounds). The final board is then
predicted from the policy and the record's times alone, and must match exactly.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from rangectl import ranges
from rangectl.state import RangeState
from rangectl.store import EventStore
from tests.conftest import FIXTURES, leftovers, run_cli

pytestmark = pytest.mark.docker

SCENARIO = FIXTURES / "mini-range.yaml"
RNG = "pytest-drill"
SCALE = 3.0
HALF_LIFE, FLOOR, WRONG, AVAIL = 30.0, 0.25, 10.0, 5.0  # scoring/standard.yaml, the fixture's points


@pytest.fixture
def drill_range(docker_engine, built_images):
    try:
        ranges.up(SCENARIO, teams=2, name=RNG, provision=True)
        yield RNG
    finally:
        st = RangeState(RNG)
        pid = st.get("drill_pid") if st.exists() else None
        if pid:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        ranges.down(RNG)
        cs, ns = leftovers(docker_engine, RNG)
        assert not cs and not ns


def _events():
    return list(EventStore(RangeState(RNG).db_path).events())


def _drill_t(events) -> float:
    from rangectl.drill.runner import clock_from_events

    return clock_from_events(events).drill_t()


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = _events()
        if pred(ev):
            return ev
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_full_drill_with_kill_and_restart_scores_as_predicted(drill_range, tmp_path):
    run_cli("drill", "start", RNG, "--detach", "--time-scale", str(SCALE), check=True)
    st = RangeState(RNG)
    first_pid = int(st.get("drill_pid"))

    # the port scan (due at 10 s) runs for both teams; then the runner dies hard
    _wait(lambda ev: sum(e.kind == "inject.done" for e in ev) == 2, 60, "the recon inject for both teams")
    os.kill(first_pid, signal.SIGKILL)
    time.sleep(1.0)
    # team 1: a wrong answer, a hint, the right answer (refused before its inject: not an issue here)
    scanner1 = str(st.plan().team(1).ip_of("scanner"))
    assert run_cli("submit", RNG, "scanner-ip", "10.9.9.9", "--team", "1").returncode == 1
    assert run_cli("hint", RNG, "scanner-ip", "--team", "1").returncode == 0
    assert run_cli("submit", RNG, "scanner-ip", scanner1, "--team", "1").returncode == 0
    # team 2 stops its own portal: availability rounds fail from now on
    run_cli("exec", RNG, "portal", "--team", "2", "--", "rangectl-svc", "stop", "portal", check=True)

    # the runner comes back and carries on from the record
    run_cli("drill", "start", RNG, "--detach", "--time-scale", str(SCALE), check=True)
    assert int(RangeState(RNG).get("drill_pid")) != first_pid
    run_cli("exec", RNG, "gw", "--", "iptables", "-I", "RANGECTL-FILTER", "-s", scanner1, "-j", "DROP", check=True)
    rep = tmp_path / "report.yaml"
    rep.write_text(f"objective: incident-report\nfields:\n  attacker_ip: {scanner1}\n  summary: scan, blocked at gw\n")
    run_cli("report-incident", RNG, "--team", "1", "--file", str(rep), check=True)
    events = _wait(lambda ev: any(e.kind == "drill.finish" for e in ev), 120, "the end of the drill")

    # crash safety: one run of each inject per team, a resume recorded, no round scored twice
    starts = [(e.data["inject"], e.team) for e in events if e.kind == "inject.start"]
    assert sorted(starts) == [("recon", 1), ("recon", 2)]
    assert any(e.kind == "drill.runner" and e.data.get("event") == "resumed-from-record" for e in events)
    rounds = [(e.data["index"], e.data["round"], e.team) for e in events if e.kind == "availability"]
    assert len(rounds) == len(set(rounds))
    # the ground truth of the scan: packets sent from each team's scanner and seen on its portal
    for e in (e for e in events if e.kind == "inject.done"):
        assert e.data["status"] == "ok", e.data

    # the prediction, from the policy and the record's drill times alone
    def t_of(kind, team, **match):
        return next(
            e.data["drill_t"] for e in events
            if e.kind == kind and e.team == team and all(e.data.get(k) == v for k, v in match.items())
        )

    def decay(minutes):
        return max(FLOOR, 0.5 ** (minutes / HALF_LIFE))

    opened = t_of("inject.start", 1, inject="recon")
    right = next(e for e in events if e.kind == "submission" and e.team == 1 and e.data.get("correct"))
    detect = max(0.0, 100 * decay((right.data["drill_t"] - opened) / 60) - 20 - WRONG)
    blocked_t = t_of("check", 1, objective="block-scanner", passed=True)
    contain = 200 * decay((blocked_t - opened) / 60)
    report_t = t_of("report", 1, objective="incident-report")
    assert report_t - opened <= 90  # on time
    reporting = 100 * decay((report_t - opened) / 60)
    up1 = sum(1 for e in events if e.kind == "availability" and e.team == 1 and e.data["up"])
    up2 = sum(1 for e in events if e.kind == "availability" and e.team == 2 and e.data["up"])
    assert up2 < up1  # team 2's stopped portal failed its rounds

    board = json.loads(run_cli("board", RNG, "--json", check=True).stdout)
    teams = {t["team"]: t for t in board["teams"]}
    assert teams[1]["objectives"]["scanner-ip"] == pytest.approx(detect, abs=0.01)
    assert teams[1]["objectives"]["block-scanner"] == pytest.approx(contain, abs=0.01)
    assert teams[1]["objectives"]["incident-report"] == pytest.approx(reporting, abs=0.01)
    assert teams[1]["total"] == pytest.approx(detect + contain + reporting + AVAIL * up1, abs=0.05)
    assert teams[2]["total"] == pytest.approx(AVAIL * up2, abs=0.01)
    assert teams[1]["rank"] == 1

    assert run_cli("verify", RNG).returncode == 0
    out = tmp_path / "aar"
    run_cli("report", RNG, "--out", str(out), check=True)
    assert "scanner-ip" in (out / "report.md").read_text()
    # tamper with one event: verify names it
    import sqlite3

    db = RangeState(RNG).db_path
    con = sqlite3.connect(db)
    seq = next(e.seq for e in events if e.kind == "submission")
    try:
        con.execute("DROP TRIGGER IF EXISTS events_no_update")
        con.execute("UPDATE events SET data = replace(data, '10.9.9.9', '10.9.9.8') WHERE seq = ?", (seq,))
        con.commit()
    finally:
        con.close()
    p = run_cli("verify", RNG)
    assert p.returncode == 1 and f"{seq}" in (p.stdout + p.stderr)
    assert Path(db).exists()
