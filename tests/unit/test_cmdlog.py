"""The command log read back from the record (rangectl.cmdlog): one row per session, program and copy."""

from __future__ import annotations

from rangectl import cmdlog
from rangectl.store import EventStore


def _record(tmp_path):
    s = EventStore(tmp_path / "r.db")
    ev = [
        ("session", {"node": "soc", "pid": 10, "session": 10, "cmd": "-bash", "drill_t": 5.0}, 1),
        (
            "command",
            {"node": "soc", "pid": 11, "session": 10, "cmd": "ls -la", "cwd": "/root", "drill_t": 6.0},
            1,
        ),
        ("command", {"node": "gw", "pid": 11, "session": 20, "cmd": "iptables -S", "drill_t": 6.5}, 1),
        ("command.exit", {"node": "soc", "pid": 11, "session": 10, "status": 2, "drill_t": 6.1}, 1),
        ("command", {"node": "soc", "pid": 12, "session": 10, "cmd": "tail -f log", "drill_t": 7.0}, 1),
        ("command", {"node": "soc", "pid": 31, "session": 30, "cmd": "cat /etc/passwd", "drill_t": 7.5}, 2),
        ("command.exit", {"node": "soc", "pid": 31, "session": 30, "status": 0, "drill_t": 7.6}, 2),
        (
            "file.copy",
            {
                "node": "soc",
                "name": "/tmp/a.pcap",
                "direction": "download",
                "peer": "gw",
                "size": 1234,
                "status": 0,
                "drill_t": 8.0,
            },
            1,
        ),  # fmt: skip
        ("command.dropped", {"node": "soc", "count": 480, "since": 1.0}, 1),
        ("submission", {"objective": "x", "answer": "y", "correct": False, "attempt": 1, "drill_t": 9.0}, 1),
    ]
    for kind, data, team in ev:
        s.append(kind, data, team=team, actor="recorder")
    out = s.events(kind=cmdlog.KINDS)
    s.close()
    return out


def test_rows_join_each_command_with_its_exit_per_team_and_node(tmp_path):
    rows = cmdlog.rows(_record(tmp_path), team=1)
    got = [(r.kind, r.node, r.cmd, r.status) for r in rows]
    assert got == [
        ("session", "soc", "-bash", None),
        ("command", "soc", "ls -la", 2),  # its exit, not gw's pid 11 (another node)
        ("command", "gw", "iptables -S", None),
        ("command", "soc", "tail -f log", None),  # still running
        ("file.copy", "soc", "/tmp/a.pcap", 0),
        ("dropped", "soc", rows[-1].cmd, None),
    ]
    assert "480 more command(s)" in rows[-1].cmd
    assert rows[4].detail == "download from gw, 1234 bytes"
    assert rows[1].drill_t == 6.0 and rows[1].cwd == "/root" and rows[1].session == 10


def test_other_teams_rows_stay_out_and_all_teams_come_without_a_filter(tmp_path):
    events = _record(tmp_path)
    assert [r.cmd for r in cmdlog.rows(events, team=2)] == ["cat /etc/passwd"]
    assert cmdlog.rows(events, team=2)[0].status == 0
    assert len(cmdlog.rows(events)) == 7
