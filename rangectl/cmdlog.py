"""The command log: what trainees ran on their nodes, read back from the record.

The recorder in ``rangectl serve`` (:mod:`rangectl.access.recorder`) appends ``session``,
``command``, ``command.exit``, ``command.dropped`` and ``file.copy`` events (docs/access.md,
"Every command recorded"). This module joins them into rows, one per program run or file
copied: team, node, drill time, command line, exit status (when the program has ended),
for ``rangectl commands``, the evidence bundle and the after-action report. Reads only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rangectl.store import Event

#: the recorder's event kinds, in the order a row needs them
KINDS = ("session", "command", "command.exit", "command.dropped", "file.copy")


@dataclass
class CommandRow:
    seq: int
    ts: float
    team: int | None
    node: str
    kind: str  # session | command | file.copy | dropped
    cmd: str
    drill_t: float | None = None
    status: int | None = None  # None: still running when the log was read (or not known)
    cwd: str | None = None
    session: int | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fmt_clock(t: float | None) -> str:
    """Drill time as m:ss (minutes past 59 keep counting); "-" when there is none."""
    if t is None:
        return "-"
    m, s = divmod(int(max(0.0, t)), 60)
    return f"{m:d}:{s:02d}"


def rows(events: list[Event], team: int | None = None) -> list[CommandRow]:
    """One row per session start, program run, file copied and summary of dropped commands."""
    out: list[CommandRow] = []
    running: dict[tuple[int | None, str, int], CommandRow] = {}  # (team, node, pid) -> its last command
    for e in events:
        if e.kind not in KINDS or (team is not None and e.team != team):
            continue
        d = e.data
        node = str(d.get("node", "?"))
        if e.kind == "command.exit":
            row = running.pop((e.team, node, int(d.get("pid", -1))), None)
            if row is not None:
                row.status = d.get("status")
            continue
        if e.kind == "command.dropped":
            out.append(CommandRow(e.seq, e.ts, e.team, node, "dropped", f"{d.get('count', 0)} more command(s) not "
                                  "recorded one by one (over the team's recording rate)", e.drill_t))  # fmt: skip
            continue
        if e.kind == "file.copy":
            size = d.get("size")
            out.append(CommandRow(
                e.seq, e.ts, e.team, node, "file.copy", str(d.get("name", "")), e.drill_t, d.get("status"),
                detail=f"{d.get('direction', '?')} {'to' if d.get('direction') == 'upload' else 'from'} "
                       f"{d.get('peer', '?')}, {size if size is not None else '?'} bytes",
            ))  # fmt: skip
            continue
        row = CommandRow(e.seq, e.ts, e.team, node, e.kind, str(d.get("cmd", "")), e.drill_t,
                         cwd=d.get("cwd"), session=d.get("session"),
                         detail="not read before it ended" if d.get("unread") else "")  # fmt: skip
        out.append(row)
        if e.kind == "command":
            running[(e.team, node, int(d.get("pid", -1)))] = row
    return out
