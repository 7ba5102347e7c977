"""What both formats of the report show: the facts, the tables' rows, one line per event.

Cells are text; :mod:`rangectl.report.markdown` and :mod:`rangectl.report.html`
only lay them out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from rangectl import cmdlog
from rangectl.cmdlog import CommandRow, fmt_clock
from rangectl.report.data import ReportData, inject_spans, team_commands
from rangectl.scenario.durations import format_duration
from rangectl.scenario.model import localize
from rangectl.scoring.engine import Board, TeamBoard, describe_flag
from rangectl.store import Event

#: Events listed one by one in the timeline; availability rounds and failed
#: check probes are many and appear in the charts and counts instead.
QUIET = {"availability"}

#: Rows of a team's "Commands" table; the rest are counted (``rangectl commands`` lists them all).
COMMAND_ROWS = 200
#: Characters of one command line shown in the report (the record keeps up to 16 KiB of argv).
COMMAND_CHARS = 400

#: The "Commands" section's words in each language the report speaks (scenario.model.LANGS).
TEXT: dict[str, dict] = {
    "en": {
        "commands": "Commands",
        "head": ["drill time", "node", "what", "command", "exit"],
        "what": {"session": "login", "command": "run", "file.copy": "scp", "dropped": "dropped"},
        "intro": "What the team ran on its nodes, as recorded by rangectl serve: login (an SSH session), "
        "run (a program, with its exit status; - while it was still running), scp (a file copied), "
        "dropped (commands over the recording rate, only counted).",
        "none": "No commands recorded for this team.",
        "more": "{n} more not shown: {cmd} lists them all.",
        "cut": " … ({n} more characters)",
    },
    "vi": {
        "commands": "Lệnh đã chạy",
        "head": ["thời điểm", "máy", "loại", "lệnh", "mã thoát"],
        "what": {"session": "đăng nhập", "command": "chạy", "file.copy": "scp", "dropped": "không ghi"},
        "intro": "Những gì đội đã chạy trên các máy của mình, do rangectl serve ghi lại: đăng nhập "
        "(một phiên SSH), chạy (một chương trình, kèm mã thoát; - nếu nó vẫn đang chạy), "
        "scp (một tệp được sao chép), không ghi (các lệnh vượt giới hạn ghi, chỉ được đếm).",
        "none": "Đội này không có lệnh nào được ghi lại.",
        "more": "Còn {n} dòng không hiển thị: {cmd} liệt kê tất cả.",
        "cut": " … (còn {n} ký tự)",
    },
}

# C0/C1 control characters and the two XML non-characters: never raw in a report (nor in SVG's XML)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ufffe\uffff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def fmt_minutes(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def fmt_points(v: float) -> str:
    return f"{v:.1f}"


def fmt_time(t: float | None) -> str:
    return "-" if t is None else format_duration(t)


def text(d: ReportData) -> dict:
    """The "Commands" section's words in the report's language (English when it has none)."""
    return TEXT.get(d.lang, TEXT["en"])


def printable(s: str) -> str:
    """``s`` with control characters written out (``\\n``, ``\\x1b``): a command line is shown, never acted on."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group()) or _escape(ord(m.group())), s)


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def command_line(r: CommandRow, lang: str = "en", limit: int = COMMAND_CHARS) -> str:
    """The row's command line and its detail, printable and cut to ``limit`` characters."""
    line = printable(r.cmd + (f"  ({r.detail})" if r.detail else ""))
    if len(line) > limit:
        line = line[:limit] + TEXT.get(lang, TEXT["en"])["cut"].format(n=len(line) - limit)
    return line


def command_rows(
    d: ReportData, team: int, limit: int = COMMAND_ROWS
) -> tuple[list[str], list[list[str]], int]:
    """A team's "Commands" table: (head, the first ``limit`` rows, how many more there are)."""
    tx = text(d)
    found = team_commands(d, team)
    rows = [
        [
            fmt_clock(r.drill_t),
            printable(r.node),
            tx["what"].get(r.kind, r.kind),
            command_line(r, d.lang),
            "-" if r.status is None else str(r.status),
        ]
        for r in found[:limit]
    ]
    return list(tx["head"]), rows, max(0, len(found) - limit)


def commands_more(
    d: ReportData,
    team: int,
    more: int,
    code: Callable[[str], str] = lambda c: f"`{c}`",
    esc: Callable[[str], str] = lambda s: s,
) -> str:
    """The line under a cut "Commands" table: how many more rows, and the command that lists them all
    (``code`` marks the command up, ``esc`` escapes the sentence around it)."""
    return esc(text(d)["more"]).format(n=more, cmd=code(f"rangectl commands {d.range} --team {team}"))


def recorded_count(d: ReportData) -> int:
    """How many events of the record are the command recorder's (left out of the event timeline)."""
    return sum(1 for e in d.events if e.kind in cmdlog.KINDS)


def facts(d: ReportData) -> list[tuple[str, str]]:
    b = d.board
    v = d.verify
    log = (
        f"intact, {v.count} events, head {v.head_hash}"
        if v.ok
        else (f"BROKEN at event {v.first_bad_seq}: {v.reason}")
    )
    cp = d.checkpoint
    anchor = (
        f"event {cp.seq}, head {cp.hash} (check it later: rangectl verify {d.range} --expect-head {cp.hash})"
        if cp is not None
        else "none yet"
    )
    return [
        ("Range", d.range),
        ("Scenario", f"{d.scenario.name}: {localize(d.scenario.title, d.lang)}"),
        ("Teams", str(len(d.plan.teams))),
        ("Scoring policy", d.policy.name),
        ("Drill", f"{b.status}, drill time {fmt_time(b.drill_t)}"),
        ("Events", str(len(d.events))),
        ("Event log", log),
        ("Record checkpoint", anchor),
        ("Generated", time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(d.generated))),
    ]


def _categories(b: Board) -> list[str]:
    return list(dict.fromkeys(c for t in b.teams for c in t.categories))


def _tt_injects(d: ReportData, cats: list[str]) -> list[str]:
    return [
        i.id
        for i in d.scenario.injects
        if any(o.after == i.id and o.category in cats for o in d.scenario.objectives)
    ]


def _mean(vals: list[float | None]) -> float | None:
    xs = [v for v in vals if v is not None]
    return sum(xs) / len(xs) if xs else None


def score_rows(d: ReportData) -> tuple[list[str], list[list[str]]]:
    """The ranking: totals, solved, hints, time to detect/contain, availability.

    Points per category are a table of their own (:func:`category_rows`), so
    neither table grows wider than a laptop screen or an A4 page."""
    det = _tt_injects(d, d.policy.detect_categories)
    con = _tt_injects(d, d.policy.contain_categories)
    head = ["rank", "team", "total", "solved", "hints", "mean TTD (min)", "mean TTC (min)"]
    if d.scenario.availability:
        head.append("rounds up")
    rows = []
    for t in d.board.ranked():
        r = [str(t.rank), f"team {t.team}", fmt_points(t.total)]
        r += [f"{t.solved}/{len(d.scenario.objectives)}", str(t.hints)]
        r += [
            fmt_minutes(_mean([t.ttd.get(i) for i in det])),
            fmt_minutes(_mean([t.ttc.get(i) for i in con])),
        ]
        if d.scenario.availability:
            r.append(fmt_availability(t))
        rows.append(r)
    return head, rows


def category_rows(d: ReportData) -> tuple[list[str], list[list[str]]]:
    """Points per category, teams in rank order."""
    cats = _categories(d.board)
    head = ["rank", "team", *cats]
    rows = [
        [str(t.rank), f"team {t.team}", *[fmt_points(t.categories.get(c, 0.0)) for c in cats]]
        for t in d.board.ranked()
    ]
    return head, rows


def fmt_availability(t: TeamBoard) -> str:
    if not t.availability_total:
        return "-"
    return (
        f"{t.availability_up}/{t.availability_total} ({100 * t.availability_up / t.availability_total:.0f}%)"
    )


def objective_rows(d: ReportData, t: TeamBoard) -> tuple[list[str], list[list[str]]]:
    head = [
        "objective",
        "category",
        "points",
        "of",
        "earned at",
        "minutes",
        "attempts",
        "wrong",
        "hints",
        "note",
    ]
    rows = []
    for oid, r in t.detail.items():
        note = ""
        if r.kind == "report" and r.solved:
            note = ("on time" if r.on_time else "late") + (
                f", fields {r.share:.0%}" if r.share is not None else ""
            )
        elif not r.solved and r.opened_t is None:
            note = "never opened"
        elif r.refused:
            note = f"{r.refused} refused"
        rows.append(
            [
                oid,
                r.category,
                fmt_points(r.points),
                fmt_points(r.max_points),
                fmt_time(r.solved_t) if r.solved else "-",
                fmt_minutes(r.minutes),
                str(r.attempts),
                str(r.wrong),
                f"{r.hints} (-{r.hint_cost:g})" if r.hints else "0",
                note,
            ]
        )
    return head, rows


def tt_rows(d: ReportData, t: TeamBoard) -> tuple[list[str], list[list[str]]]:
    head = ["inject", "started", "time to detect (min)", "time to contain (min)"]
    starts = inject_spans(d, t.team)
    rows = []
    for inj in d.scenario.injects:
        s = starts.get(inj.id)
        rows.append(
            [
                inj.id,
                fmt_time(s[0]) if s else "not run",
                fmt_minutes(t.ttd.get(inj.id)),
                fmt_minutes(t.ttc.get(inj.id)),
            ]
        )
    return head, rows


def summarize(ev: Event, lang: str = "en") -> str:
    """One line about an event, for the timeline."""
    d = ev.data
    k = ev.kind
    if k == "drill.start":
        return f"drill starts (time scale x{d.get('time_scale', 1)})"
    if k.startswith("drill."):
        return k.split(".", 1)[1].replace("-", " ")
    if k == "inject.start":
        return f"inject {d.get('inject')} starts" + (" (resumed)" if d.get("resumed") else "")
    if k == "inject.done":
        what = f"inject {d['inject']}" if d.get("inject") else "replay"
        parts = [f"{what} done ({d.get('status', 'ok')})" + (" by hand" if d.get("manual") else "")]
        if d.get("packets") is not None:
            parts.append(f"{d.get('packets')} packets")
        if d.get("bytes") is not None:
            parts.append(f"{d.get('bytes')} bytes")
        src = d.get("src_ip") or d.get("src")
        dst = d.get("dst_ip") or d.get("dst")
        if src or dst:
            parts.append(f"{src} -> {dst}")
        if d.get("error"):
            parts.append(f"error: {d.get('error')}")
        return ", ".join(str(p) for p in parts)
    if k == "message":
        return f"message: {localize(d.get('title'), lang) or d.get('inject')}"
    if k == "submission":
        head = f"{d.get('objective')}: answer '{d.get('answer')}'"
        if d.get("refused"):
            return f"{head} refused ({d.get('refused')})"
        return f"{head} {'correct' if d.get('correct') else 'wrong'} (attempt {d.get('attempt')})"
    if k == "submission.flagged":
        return f"FLAG: {describe_flag(d)}"
    if k == "hint":
        return f"{d.get('objective')}: hint {int(d.get('index', 0)) + 1} taken (cost {d.get('cost', 0)})"
    if k == "report":
        return f"{d.get('objective')}: report filed {'on time' if d.get('on_time') else 'late'}"
    if k == "check":
        return (
            f"{d.get('objective')}: check {'passed' if d.get('passed') else 'failed'} ({d.get('detail', '')})"
        )
    if k == "availability":
        return f"{d.get('node')}/{d.get('service')} round {d.get('round')}: {'up' if d.get('up') else 'down'}"
    if k == "score":
        return f"{float(d.get('points', 0)):+g} points ({d.get('category', 'adjustments')}): {d.get('reason', '')}"
    return ", ".join(f"{a}={b}" for a, b in list(d.items())[:6])


def flag_line(flag: dict) -> str:
    return f"{describe_flag(flag)} at {fmt_time(flag.get('drill_t'))}"


def timeline_rows(d: ReportData) -> tuple[list[tuple[Event, float]], int]:
    """Events worth listing, and how many were summarized instead.

    The command recorder's events are in each team's "Commands" table (:func:`command_rows`),
    not here, and not counted (:func:`recorded_count`)."""
    rows = []
    quiet = 0
    for ev, t in zip(d.events, d.times, strict=True):
        if ev.kind in cmdlog.KINDS:
            continue
        if ev.kind in QUIET or (ev.kind == "check" and not ev.data.get("passed")):
            quiet += 1
            continue
        rows.append((ev, t))
    return rows, quiet
