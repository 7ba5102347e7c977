"""The after-action report: files written, HTML self-contained, the board in it."""

from __future__ import annotations

import json
import re
import sqlite3
import xml.dom.minidom

import pytest

from rangectl.report import write_report
from rangectl.store import EventStore
from tests.unit.test_scoring import POLICY, SCENARIO

T0 = 2_000_000.0


@pytest.fixture
def rng(tmp_path, monkeypatch):
    from rangectl.scoring.actions import report_incident, submit, take_hint
    from rangectl.state import RangeState

    monkeypatch.setenv("RANGECTL_HOME", str(tmp_path / "home"))
    src = tmp_path / "project" / "scenario.yaml"
    (src.parent / "scoring").mkdir(parents=True)
    src.write_text(json.dumps(SCENARIO))
    (src.parent / "scoring" / "test.yaml").write_text(json.dumps(POLICY))
    st = RangeState.create("aar", src, {"teams": 2, "scenario_path": str(src)})
    s = EventStore(st.db_path)
    s.append("drill.start", {"wall_start": T0, "time_scale": 1.0}, actor="runner", ts=T0)
    for k in (1, 2):
        s.append("inject.start", {"inject": "recon", "drill_t": 60.0}, team=k, actor="runner", ts=T0 + 60)
        s.append(
            "inject.done",
            {
                "inject": "recon",
                "status": "ok",
                "drill_t": 75.0,
                "packets": 300,
                "bytes": 18000,
                "src_ip": f"198.18.{9 + k}.66",
                "dst_ip": f"10.231.{2 + k}.10",
            },
            team=k,
            actor="runner",
            ts=T0 + 75,
        )
    for rnd in range(12):
        for k in (1, 2):
            s.append(
                "availability",
                {
                    "index": 0,
                    "node": "portal",
                    "service": "http",
                    "round": rnd,
                    "up": not (k == 2 and 4 <= rnd <= 6),
                    "drill_t": rnd * 30.0,
                },
                team=k,
                actor="runner",
                ts=T0 + rnd * 30,
            )
    submit(st, 1, "scanner-ip", "<script>alert(1)</script>", now=T0 + 100)
    take_hint(st, 1, "scanner-ip", now=T0 + 110)
    submit(st, 1, "scanner-ip", "198.18.10.66", now=T0 + 240)
    submit(st, 2, "scanner-ip", "198.18.11.66", now=T0 + 150)
    s.append(
        "check",
        {"objective": "block-scanner", "passed": False, "detail": "not blocked", "drill_t": 200.0},
        team=1,
        actor="runner",
        ts=T0 + 200,
    )
    s.append(
        "check",
        {"objective": "block-scanner", "passed": True, "detail": "blocked", "drill_t": 300.0},
        team=1,
        actor="runner",
        ts=T0 + 300,
    )
    rep = tmp_path / "r.yaml"
    rep.write_text("objective: incident-report\nfields:\n  source: 198.18.10.66\n  summary: scan | blocked\n")
    report_incident(st, 1, rep, now=T0 + 400)
    s.append("score", {"points": 5, "reason": "clear comms", "drill_t": 410.0}, team=2, ts=T0 + 410)
    s.append("drill.finish", {"drill_t": 420.0}, actor="runner", ts=T0 + 420)
    return st


def test_files_written(rng, tmp_path):
    out = tmp_path / "aar-out"
    files = write_report(rng, out)
    names = sorted(p.name for p in files)
    assert names == ["report.html", "report.md", "timeline-team-1.svg", "timeline-team-2.svg"]
    for p in files:
        assert p.is_file() and p.stat().st_size > 500
    for k in (1, 2):
        doc = xml.dom.minidom.parse(str(out / f"timeline-team-{k}.svg"))  # well-formed XML
        assert doc.documentElement.tagName == "svg"


def test_html_is_self_contained(rng, tmp_path):
    write_report(rng, tmp_path / "o")
    page = (tmp_path / "o" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert page.count("<svg") == 2  # one timeline per team, inline
    lowered = page.lower()
    for bad in ("<script", "<link", "src=", "@import", "url(", "<iframe", "<img"):
        assert bad not in lowered, bad
    assert not re.search(r"href=\"(?!#)", page)  # only in-page anchors, if any
    # the only URL is the SVG namespace, which is not fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # team input escaped


def test_report_has_board_and_timeline(rng, tmp_path):
    from rangectl.scoring.actions import board

    b = board(rng)
    write_report(rng, tmp_path / "o")
    page = (tmp_path / "o" / "report.html").read_text()
    md = (tmp_path / "o" / "report.md").read_text()
    t1, t2 = b.team(1), b.team(2)
    # team 1: scanner-ip at 3 min with one wrong answer and a 20-point hint; block at 4 min; report on time
    assert t1.objectives["scanner-ip"] == pytest.approx(100 * 0.5**0.3 - 10 - 20)
    assert t1.ttd["recon"] == pytest.approx(3.0) and t1.ttc["recon"] == pytest.approx(4.0)
    assert (t2.availability_up, t2.availability_total) == (9, 12)
    for text in (page, md):
        assert "Scoreboard" in text and "Event timeline" in text
        assert f"{t1.total:.1f}" in text and f"{t2.total:.1f}" in text
        assert "scanner-ip" in text and "block-scanner" in text and "incident-report" in text
        assert "intact" in text and "9/12 (75%)" in text
        assert "inject recon done (ok), 300 packets, 18000 bytes" in text
    assert "![Team 1 timeline](timeline-team-1.svg)" in md
    assert "answer '&lt;script&gt;alert(1)&lt;/script&gt;' wrong" in md
    rows = [line for line in md.splitlines() if line.startswith("| 1 | team ")]
    assert rows and f"| {t1.total:.1f} |" in rows[0]
    svg = (tmp_path / "o" / "timeline-team-2.svg").read_text()
    assert svg.count("): down</title>") == 3  # three rounds down for team 2


def test_report_shows_a_broken_log(rng, tmp_path):
    conn = sqlite3.connect(rng.db_path)
    conn.executescript("DROP TRIGGER events_no_update;")
    conn.execute("UPDATE events SET data = '{}' WHERE seq = 3")
    conn.commit()
    conn.close()
    write_report(rng, tmp_path / "o")
    assert "BROKEN at event 3" in (tmp_path / "o" / "report.md").read_text()


def test_report_command(rng, tmp_path):
    from typer.testing import CliRunner

    from rangectl.cli import app

    res = CliRunner().invoke(app, ["report", "aar", "--out", str(tmp_path / "cli-out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli-out" / "report.html").is_file() and "report.md" in res.output
