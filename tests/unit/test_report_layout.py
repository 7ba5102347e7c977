"""The after-action report's layout: tables that fit a page, timeline labels that never overlap.

The ``wide`` fixture is a scored two-team record with seven categories, nine injects a few
seconds apart and an availability lane: the shape that ran past a 1300-pixel page and piled
inject labels on top of each other. It also has a command log whose lines are longer than any
page. The browser test (tests/integration/test_report_layout_browser.py) measures the same
record in headless Chromium."""

from __future__ import annotations

import copy
import json
import re

import pytest

from rangectl.report import write_report
from rangectl.report.svg import LABEL_CHAR_W, W, label_rows
from rangectl.store import EventStore
from tests.unit.test_scoring import POLICY, SCENARIO

T0 = 3_000_000.0
INJECTS = ["kickoff", "recon", "recon-chatbot", "sqli", "webshell", "defaced", "report-request", "surge", "flood"]
CATEGORIES = ["detection", "analysis", "containment", "eradication", "recovery", "reporting", "coordination"]


def wide_scenario() -> dict:
    sc = copy.deepcopy(SCENARIO)
    sc["name"] = "wide-report"
    sc["injects"] = [{"id": i, "at": f"{60 + 8 * n}s", "message": f"{i} happens"} for n, i in enumerate(INJECTS)]
    sc["objectives"] = [
        {"id": f"{cat}-objective-with-a-long-name", "category": cat, "after": INJECTS[n + 1], "points": 100,
         "answer": {"value": f"v{n}"}}
        for n, cat in enumerate(CATEGORIES)
    ]
    sc["availability"] = [{"node": "portal", "service": "http", "every": "30s", "points": 1}]
    return sc


@pytest.fixture
def wide(tmp_path, monkeypatch):
    from rangectl.scoring.actions import submit
    from rangectl.state import RangeState

    monkeypatch.setenv("RANGECTL_HOME", str(tmp_path / "home"))
    src = tmp_path / "project" / "scenario.yaml"
    (src.parent / "scoring").mkdir(parents=True)
    src.write_text(json.dumps(wide_scenario()))
    (src.parent / "scoring" / "test.yaml").write_text(json.dumps(POLICY))
    st = RangeState.create("wide", src, {"teams": 2, "scenario_path": str(src)})
    s = EventStore(st.db_path)
    s.append("drill.start", {"wall_start": T0, "time_scale": 1.0}, actor="runner", ts=T0)
    for k in (1, 2):
        for n, inj in enumerate(INJECTS):
            t = 60.0 + 8 * n
            s.append("inject.start", {"inject": inj, "drill_t": t}, team=k, actor="runner", ts=T0 + t)
            s.append("inject.done", {"inject": inj, "status": "ok", "drill_t": t + 5}, team=k, actor="runner",
                     ts=T0 + t + 5)
    for rnd in range(40):
        for k in (1, 2):
            s.append("availability", {"index": 0, "node": "portal", "service": "http", "round": rnd,
                                      "up": k == 1 or rnd % 3 != 0, "drill_t": rnd * 30.0},
                     team=k, actor="runner", ts=T0 + rnd * 30)
    for n, _cat in enumerate(CATEGORIES):
        submit(st, 1, f"{CATEGORIES[n]}-objective-with-a-long-name", f"v{n}", now=T0 + 200 + 30 * n)
    # a command log with lines no page is wide enough for: one unbroken word, one long argv
    for k in (1, 2):
        for n, cmd in enumerate(["x" * 3000, "tcpdump -nn -i eth0 " + " ".join(f"host 10.0.{i}.1" for i in range(200))]):
            s.append("command", {"node": "workstation-with-a-long-name", "pid": 100 + n, "session": 1, "cmd": cmd,
                                 "drill_t": 300.0 + n}, team=k, actor="recorder", ts=T0 + 300 + n)
    s.append("drill.finish", {"drill_t": 1200.0}, actor="runner", ts=T0 + 1200)
    return st


def _boxes(placed):
    return [(x, x + LABEL_CHAR_W * len(t), row) for t, x, row in placed]


def test_labels_of_close_injects_go_to_separate_rows():
    placed = label_rows([("kickoff", 100.0), ("recon", 108.0), ("recon-chatbot", 116.0)], 900.0)
    assert [row for _t, _x, row in placed] == [0, 1, 2]


def test_labels_far_apart_share_one_row():
    placed = label_rows([("a-long-label", 100.0), ("b", 400.0), ("c", 700.0)], 900.0)
    assert {row for _t, _x, row in placed} == {0}


def test_a_freed_row_is_used_again():
    placed = dict((t, row) for t, _x, row in label_rows([("aaaaaaaa", 100.0), ("bbbb", 110.0), ("c", 160.0)], 900.0))
    assert placed == {"aaaaaaaa": 0, "bbbb": 1, "c": 0}


def test_no_two_labels_overlap_and_none_runs_past_the_right_edge():
    starts = [(f"inject-{i}", 150.0 + 3.0 * i) for i in range(12)] + [("late-inject-at-the-end", 935.0)]
    placed = label_rows(starts, 936.0)
    boxes = _boxes(placed)
    for i, (a0, a1, ra) in enumerate(boxes):
        assert a1 <= 936.0
        for b0, b1, rb in boxes[i + 1:]:
            assert ra != rb or a1 <= b0 or b1 <= a0, (placed[i], (b0, b1, rb))


def test_timeline_svg_lays_out_every_inject_label_once(wide, tmp_path):
    write_report(wide, tmp_path / "o")
    svg = (tmp_path / "o" / "timeline-team-1.svg").read_text()
    labels = re.findall(r'<text class="inj-label" x="([0-9.]+)" y="([0-9.-]+)"[^>]*>([^<]+)</text>', svg)
    assert sorted(t for _x, _y, t in labels) == sorted(INJECTS)
    rows: dict[str, list[tuple[float, float]]] = {}
    for x, y, t in labels:
        rows.setdefault(y, []).append((float(x), float(x) + LABEL_CHAR_W * len(t)))
    assert len(rows) > 1  # eight-second gaps do not fit one row
    for spans in rows.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    # the labels sit below the title (baseline 18, 13 px) and above the inject bars
    bar_y = {float(y) for y in re.findall(r'<rect x="[0-9.]+" y="([0-9.]+)" width="[0-9.]+" height="14" rx="2"', svg)}
    assert len(bar_y) == 1
    assert all(28 <= float(y) <= min(bar_y) - 1 for _x, y, _t in labels), labels
    assert f'viewBox="0 0 {W} ' in svg


def test_scoreboard_is_two_tables_that_keep_every_column(wide, tmp_path):
    write_report(wide, tmp_path / "o")
    page = (tmp_path / "o" / "report.html").read_text()
    board = re.search(r'<table class="scoreboard">(.*?)</table>', page).group(1)
    cats = re.search(r'<table class="categories">(.*?)</table>', page).group(1)
    assert re.findall(r"<th>([^<]+)</th>", board) == [
        "rank", "team", "total", "solved", "hints", "mean TTD (min)", "mean TTC (min)", "rounds up"]
    assert re.findall(r"<th>([^<]+)</th>", cats) == ["rank", "team", *CATEGORIES, "availability"]
    md = (tmp_path / "o" / "report.md").read_text()
    assert "| rank | team | detection | analysis |" in md and "| rank | team | total | solved |" in md
