"""The after-action report shows what each team ran on its nodes (the command log, rangectl.cmdlog):
a table per team in both formats, capped, and a lane of tick marks on the team's timeline."""

from __future__ import annotations

import html
import re
import xml.dom.minidom

import pytest

from rangectl.report import collect, write_report
from rangectl.report.svg import LEFT, RIGHT, W, command_marks
from rangectl.report.tables import COMMAND_ROWS
from rangectl.store import EventStore
from tests.unit.test_report import T0, rng  # noqa: F401 - the fixture: a scored two-team record

SCRIPT = "echo '<script>alert(2)</script>' > /tmp/x"

# (kind, data, team, drill time of its wall clock): team 1 logs in, runs five programs (one still
# running at the end), copies a file, goes over the rate; team 2 logs in and runs one program.
EVENTS = [
    ("session", {"node": "soc", "pid": 10, "session": 10, "cmd": "-bash", "drill_t": 90.0}, 1, 90),
    ("session", {"node": "soc", "pid": 30, "session": 30, "cmd": "-bash", "drill_t": 100.0}, 2, 100),
    (
        "command",
        {"node": "soc", "pid": 11, "session": 10, "cmd": "nmap -sS 198.18.10.66", "drill_t": 95.0},
        1,
        95,
    ),
    ("command.exit", {"node": "soc", "pid": 11, "session": 10, "status": 0, "drill_t": 96.0}, 1, 96),
    (
        "command",
        {"node": "soc", "pid": 31, "session": 30, "cmd": "cat /etc/team2-only", "drill_t": 120.0},
        2,
        120,
    ),
    ("command.exit", {"node": "soc", "pid": 31, "session": 30, "status": 0, "drill_t": 121.0}, 2, 121),
    (
        "command",
        {"node": "soc", "pid": 12, "session": 10, "cmd": "grep scanner access.log", "drill_t": 130.0},
        1,
        130,
    ),
    ("command.exit", {"node": "soc", "pid": 12, "session": 10, "status": 1, "drill_t": 131.0}, 1, 131),
    ("command", {"node": "gw", "pid": 13, "session": 20, "cmd": SCRIPT, "drill_t": 150.0}, 1, 150),
    ("command.exit", {"node": "gw", "pid": 13, "session": 20, "status": 0, "drill_t": 151.0}, 1, 151),
    ("command", {"node": "soc", "pid": 14, "session": 10, "cmd": "tail -f log", "drill_t": 200.0}, 1, 200),
    (
        "file.copy",
        {
            "node": "soc",
            "name": "/tmp/a.pcap",
            "direction": "download",
            "peer": "gw",
            "size": 1234,
            "status": 0,
            "drill_t": 210.0,
        },
        1,
        210,
    ),  # fmt: skip
    # no drill_t: the drill clock's at its wall time, which stopped at the drill's finish (7:00)
    ("command.dropped", {"node": "soc", "count": 480, "since": 1.0}, 1, 430),
]

TEAM1 = [
    ("1:30", "soc", "login", "-bash", "-"),
    ("1:35", "soc", "run", "nmap -sS 198.18.10.66", "0"),
    ("2:10", "soc", "run", "grep scanner access.log", "1"),
    ("2:30", "gw", "run", "echo &#x27;&lt;script&gt;alert(2)&lt;/script&gt;&#x27; &gt; /tmp/x", "0"),
    ("3:20", "soc", "run", "tail -f log", "-"),  # still running
    ("3:30", "soc", "scp", "/tmp/a.pcap  (download from gw, 1234 bytes)", "0"),
    (
        "7:00",
        "soc",
        "dropped",
        "480 more command(s) not recorded one by one (over the team&#x27;s recording rate)",
        "-",
    ),
]


def _append(st, events) -> None:
    s = EventStore(st.db_path)
    for kind, data, team, t in events:
        s.append(kind, data, team=team, actor="recorder", ts=T0 + t)
    s.close()


@pytest.fixture
def cmds(rng):  # noqa: F811
    _append(rng, EVENTS)
    return rng


def _section(page: str, team: int) -> str:
    """Team ``team``'s part of the HTML page: from its heading to the next team's (or the timeline)."""
    m = re.search(rf'<h3 id="team-{team}">(.*?)(?=<h3 id="team-|<h2 id="timeline")', page, re.S)
    assert m, team
    return m.group(1)


def _html_rows(section: str) -> list[tuple[str, ...]]:
    table = re.search(r'<table class="commands">(.*?)</table>', section, re.S)
    assert table, "no commands table"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1).split("<tbody>", 1)[1], re.S)
    return [tuple(re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)) for r in rows]


def _md_section(md: str, team: int) -> str:
    m = re.search(rf"^### Team {team}:(.*?)(?=^### Team |^## Event timeline)", md, re.S | re.M)
    assert m, team
    return m.group(1)


def test_each_team_table_holds_its_own_commands_with_their_exit_status(cmds, tmp_path):
    write_report(cmds, tmp_path / "o")
    page = (tmp_path / "o" / "report.html").read_text()
    one, two = _section(page, 1), _section(page, 2)
    assert '<h4 id="team-1-commands">Commands</h4>' in one
    assert _html_rows(one) == TEAM1
    assert "team2-only" not in one
    assert _html_rows(two) == [
        ("1:40", "soc", "login", "-bash", "-"),
        ("2:00", "soc", "run", "cat /etc/team2-only", "0"),
    ]
    head = re.search(r'<table class="commands">.*?</thead>', one, re.S).group(0)
    assert re.findall(r"<th>([^<]+)</th>", head) == ["drill time", "node", "what", "command", "exit"]


def test_report_data_carries_the_command_rows(cmds):
    d = collect(cmds)
    got = [(r.team, r.kind, r.cmd, r.status) for r in d.commands]
    assert got[:3] == [(1, "session", "-bash", None), (2, "session", "-bash", None), (1, "command",
                       "nmap -sS 198.18.10.66", 0)]  # fmt: skip
    assert len(got) == 9
    assert d.commands[-1].kind == "dropped" and d.commands[-1].drill_t == pytest.approx(420.0)


def test_html_escapes_a_command_line(cmds, tmp_path):
    write_report(cmds, tmp_path / "o")
    page = (tmp_path / "o" / "report.html").read_text()
    assert "<script" not in page.lower()
    assert '<td class="cmd">echo &#x27;&lt;script&gt;alert(2)&lt;/script&gt;&#x27; &gt; /tmp/x</td>' in page


def test_long_command_lines_wrap_in_a_fixed_table(cmds, tmp_path):
    write_report(cmds, tmp_path / "o")
    page = (tmp_path / "o" / "report.html").read_text()
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert "table.commands{table-layout:fixed;width:100%}" in css
    assert re.search(r"table\.commands td\{[^}]*overflow-wrap:anywhere", css)
    assert re.search(r"table\.commands td\.cmd\{[^}]*white-space:pre-wrap", css)
    assert '<td class="cmd">nmap -sS 198.18.10.66</td>' in page


def test_timeline_has_one_tick_per_command_with_its_line_in_the_tooltip(cmds, tmp_path):
    write_report(cmds, tmp_path / "o")
    end = collect(cmds).end_t
    svg = (tmp_path / "o" / "timeline-team-1.svg").read_text()
    xml.dom.minidom.parseString(svg.encode())  # well-formed
    ticks = re.findall(r'<line class="cmd cmd-run" x1="([0-9.]+)"[^>]*><title>([^<]*)</title></line>', svg)
    assert [t for _x, t in ticks] == [
        "1:35 soc run: nmap -sS 198.18.10.66 (exit 0)",
        "2:10 soc run: grep scanner access.log (exit 1)",
        "2:30 gw run: echo &#x27;&lt;script&gt;alert(2)&lt;/script&gt;&#x27; &gt; /tmp/x (exit 0)",
        "3:20 soc run: tail -f log",
    ]
    # placed by drill time on the same axis as the rest of the chart
    for (x, _t), drill_t in zip(ticks, (95, 130, 150, 200), strict=True):
        assert float(x) == pytest.approx(LEFT + (W - LEFT - RIGHT) * drill_t / end, abs=0.06)
    assert svg.count('class="cmd cmd-session"') == 1 and svg.count('class="cmd cmd-scp"') == 1
    assert svg.count('class="cmd cmd-dropped"') == 1
    assert "team2-only" not in svg and "<script" not in svg
    assert ">commands</text>" in svg
    two = (tmp_path / "o" / "timeline-team-2.svg").read_text()
    assert (
        len(re.findall(r'class="cmd cmd-run"', two)) == 1
        and "2:00 soc run: cat /etc/team2-only (exit 0)" in two
    )
    # no text labels on the commands lane: the only texts are the lane names, axis, legend, title, inject labels
    assert "nmap" not in re.sub(r"<title>[^<]*</title>", "", svg)


def test_commands_outside_the_axis_are_not_drawn(rng, tmp_path):  # noqa: F811
    _append(rng, [
        ("command", {"node": "soc", "pid": 40, "session": 4, "cmd": "before-start"}, 1, -30),  # no drill time
        ("command", {"node": "soc", "pid": 41, "session": 4, "cmd": "negative", "drill_t": -5.0}, 1, 1),
        ("command", {"node": "soc", "pid": 42, "session": 4, "cmd": "inside", "drill_t": 100.0}, 1, 100),
    ])  # fmt: skip
    write_report(rng, tmp_path / "o")
    svg = (tmp_path / "o" / "timeline-team-1.svg").read_text()
    assert svg.count('class="cmd ') == 1 and "soc run: inside" in svg
    assert "before-start" not in svg and "negative" not in svg
    assert "<title>2 not drawn: " in svg
    page = (tmp_path / "o" / "report.html").read_text()
    assert [r[0] for r in _html_rows(_section(page, 1))] == ["-", "0:00", "1:40"]  # all three in the table
    assert "No commands recorded for this team." in _section(page, 2)


def test_command_marks_on_one_pixel_merge_past_the_limit():
    from rangectl.cmdlog import CommandRow

    rows = [CommandRow(i, 0.0, 1, "soc", "command", f"c{i}", drill_t=10.0 + i / 100) for i in range(50)]
    rows.append(CommandRow(99, 0.0, 1, "soc", "command", "late", drill_t=500.0))
    one_each, _ = command_marks(rows, 600.0, lambda t: t)
    assert len(one_each) == 51
    merged, hidden = command_marks(rows, 600.0, lambda t: t, most=10)
    assert [len(g) for g in merged] == [50, 1] and hidden == 0


def test_table_is_capped_with_a_line_naming_the_command_that_lists_all(rng, tmp_path):  # noqa: F811
    extra = 7
    _append(rng, [
        ("command", {"node": "soc", "pid": 1000 + i, "session": 5, "cmd": f"echo n{i}", "drill_t": 60.0 + i}, 1, 60 + i)
        for i in range(COMMAND_ROWS + extra)
    ])  # fmt: skip
    write_report(rng, tmp_path / "o")
    page = (tmp_path / "o" / "report.html").read_text()
    rows = _html_rows(_section(page, 1))
    assert len(rows) == COMMAND_ROWS
    assert rows[0][3] == "echo n0" and rows[-1][3] == f"echo n{COMMAND_ROWS - 1}"  # the first ones
    assert f">echo n{COMMAND_ROWS}</td>" not in page
    assert f"{extra} more not shown: <code>rangectl commands aar --team 1</code> lists them all." in page
    md = _md_section((tmp_path / "o" / "report.md").read_text(), 1)
    assert len(re.findall(r"^\| [0-9]+:[0-9]{2} \| soc \| run \| echo n", md, re.M)) == COMMAND_ROWS
    assert f"{extra} more not shown: `rangectl commands aar --team 1` lists them all." in md
    # the timeline draws every one of them (one tick each under the limit)
    svg = (tmp_path / "o" / "timeline-team-1.svg").read_text()
    assert svg.count('class="cmd cmd-run"') == COMMAND_ROWS + extra


def test_markdown_has_the_same_table(cmds, tmp_path):
    write_report(cmds, tmp_path / "o")
    md = (tmp_path / "o" / "report.md").read_text()
    one, two = _md_section(md, 1), _md_section(md, 2)
    assert "#### Commands" in one
    table = [line for line in one.splitlines() if line.startswith("| ")]
    i = table.index("| drill time | node | what | command | exit |")
    want = [[html.unescape(c).replace("<", "&lt;").replace(">", "&gt;") for c in r] for r in TEAM1]
    want[5][3] = "/tmp/a.pcap (download from gw, 1234 bytes)"  # runs of spaces are one in Markdown
    assert table[i + 1 :] == ["| " + " | ".join(r) + " |" for r in want]
    assert "team2-only" not in one and "| 2:00 | soc | run | cat /etc/team2-only | 0 |" in two
    assert "<script" not in md


def test_recorder_events_stay_out_of_the_event_timeline(cmds, tmp_path):
    write_report(cmds, tmp_path / "o")
    for name in ("report.md", "report.html"):
        text = (tmp_path / "o" / name).read_text()
        assert "pid=11" not in text and "session=10" not in text
        assert "13 events of the command recorder" in text


def test_control_characters_are_written_out(rng, tmp_path):  # noqa: F811
    _append(
        rng,
        [("command", {"node": "soc", "pid": 50, "cmd": "printf '\x1b[31m\x00'\nid", "drill_t": 70.0}, 1, 70)],
    )
    write_report(rng, tmp_path / "o")
    svg = (tmp_path / "o" / "timeline-team-1.svg").read_text()
    xml.dom.minidom.parseString(svg.encode())  # a raw ESC or NUL is not XML
    assert "printf &#x27;\\x1b[31m\\x00&#x27;\\nid" in svg
    page = (tmp_path / "o" / "report.html").read_text()
    assert "\x1b" not in page and "printf &#x27;\\x1b[31m\\x00&#x27;\\nid" in page


def test_no_commands_section_or_lane_without_a_command_log(rng, tmp_path):  # noqa: F811
    write_report(rng, tmp_path / "o")
    page = (tmp_path / "o" / "report.html").read_text()
    assert 'class="commands"' not in page and "-commands" not in page
    assert ">commands</text>" not in (tmp_path / "o" / "timeline-team-1.svg").read_text()


def test_commands_heading_in_vietnamese(cmds, tmp_path):
    files = {p.name: p.read_text() for p in write_report(cmds, tmp_path / "vi", lang="vi")}
    assert '<h4 id="team-1-commands">Lệnh đã chạy</h4>' in files["report.html"]
    assert "#### Lệnh đã chạy" in files["report.md"]
    assert "<th>mã thoát</th>" in files["report.html"]
