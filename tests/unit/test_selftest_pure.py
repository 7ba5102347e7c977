"""Pure parts of the self-test and of language choice: JUnit output, time scale, ground truth."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from rangectl.errors import UsageError
from rangectl.i18n import pick_lang
from rangectl.selftest import SelftestResult, auto_time_scale, junit, traffic_seen


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
