"""The self-test and the whole drill on a real range: up for two teams, the drill at speed with
real traffic, a scripted responder for team 1, scores as predicted, the record verified, down.

Uses tests/fixtures/mini-range.yaml and its reference solution. Traffic only goes between
containers the test created.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import FIXTURES, leftovers, run_cli

pytestmark = pytest.mark.docker

SCENARIO = FIXTURES / "mini-range.yaml"
HALF_LIFE, FLOOR = 30.0, 0.25  # scoring/standard.yaml
AVAIL_POINTS = 5


def _copy(tmp_path, solution_text: str | None = None):
    shutil.copytree(FIXTURES / "playbooks", tmp_path / "playbooks")
    f = tmp_path / "mini-range.yaml"
    f.write_text(SCENARIO.read_text())
    sol = (FIXTURES / "mini-range.solution.yaml").read_text()
    (tmp_path / "mini-range.solution.yaml").write_text(solution_text if solution_text is not None else sol)
    return f


def test_selftest_passes_and_scores_are_as_predicted(docker_engine, built_images, tmp_path):
    out = tmp_path / "result.json"
    p = run_cli(
        "selftest", str(SCENARIO), "--time-scale", "4", "--format", "json", "--output", str(out),
        "--report-dir", str(tmp_path / "reports"), "--no-live", timeout=600,
    )
    res = json.loads(out.read_text())[0]
    failed = [a for a in res["assertions"] if not a["ok"]]
    assert p.returncode == 0 and res["ok"], f"{failed}\n{p.stderr[-2000:]}"
    names = {a["name"] for a in res["assertions"]}
    assert names >= {"range-up", "injects-ran", "traffic-seen", "solution-steps", "team1-objectives",
                     "team1-score", "team2-idle", "verify", "range-down", "played-as-trainee"}

    # Team 1's score, predicted from the policy: each objective decays from its inject
    # (recon, due at 10 s) to when the responder earned it; availability 5 per round up.
    t1 = res["objectives"]["1"]
    assert set(t1) == {"scanner-ip", "block-scanner", "incident-report"}
    # the answer went in at drill 20 s, the block at 25 s (its check passes at the next
    # 10 s check round), the report at 40 s: minutes from the inject are bounded accordingly
    bounds = {"scanner-ip": (9, 40), "block-scanner": (14, 60), "incident-report": (29, 60)}
    predicted = 0.0
    for oid, (lo, hi) in bounds.items():
        r = t1[oid]
        assert r["solved"], oid
        assert lo / 60 <= r["minutes"] <= hi / 60, (oid, r["minutes"])
        award = r["max_points"] * max(FLOOR, 0.5 ** (r["minutes"] / HALF_LIFE))
        assert r["points"] == pytest.approx(award, abs=0.01), oid
        predicted += award
    predicted += AVAIL_POINTS * res["availability_up"]["1"]
    assert res["scores"]["1"] == pytest.approx(predicted, abs=0.1)
    assert res["availability_up"]["1"] >= 3  # 2 minutes of drill, a round every 30 s
    # team 2 did nothing: only availability
    assert not any(r["solved"] for r in res["objectives"]["2"].values())
    assert res["scores"]["2"] == pytest.approx(AVAIL_POINTS * res["availability_up"]["2"], abs=0.1)

    # the after-action report was written before the range went
    report = tmp_path / "reports" / "mini-range"
    assert (report / "report.html").stat().st_size > 1000
    assert "scanner-ip" in (report / "report.md").read_text()
    cs, ns = leftovers(docker_engine, "selftest-mini-range")
    assert not cs and not ns


def test_selftest_fails_on_a_wrong_solution_and_still_cleans_up(docker_engine, built_images, tmp_path):
    wrong = (
        "solution: mini-range\n"
        "steps:\n"
        "  - {at: 20s, submit: {objective: scanner-ip, answer: '10.0.0.1'}}\n"
    )
    scen = _copy(tmp_path, wrong)
    p = run_cli("selftest", str(scen), "--time-scale", "6", "--format", "junit", "--no-live", timeout=600)
    assert p.returncode == 1, p.stderr[-2000:]
    root = ET.fromstring(p.stdout)
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["solution-steps"].find("failure") is not None
    assert "scanner-ip" in cases["solution-steps"].find("failure").get("message")
    assert cases["team1-objectives"].find("failure") is not None
    assert cases["verify"].find("failure") is None
    assert cases["range-down"].find("failure") is None
    cs, ns = leftovers(docker_engine, "selftest-mini-range")
    assert not cs and not ns


def test_selftest_without_a_solution_is_a_clear_error(tmp_path):
    f = _copy(tmp_path)
    (tmp_path / "mini-range.solution.yaml").unlink()
    p = run_cli("selftest", str(f), "--no-live")
    assert p.returncode == 1
    assert "no reference solution" in p.stderr and "Traceback" not in p.stderr
