"""One team's timeline over drill time, as SVG (``timeline-team-K.svg``, and inline in the HTML).

Each team's timeline chart runs over drill time and has one lane for
injects (a bar from start to end), one for detection and one for containment
(a mark when an objective of that kind was earned, with a dashed line back to
its inject: the time to detect/contain), one for the other objectives, one
for wrong answers and hints, one for the commands trainees ran on their nodes
(when the record has any: a tick per program or file copied, a ring per login,
each with its command line as a tooltip, no text), and one per availability
check (a green or red cell per round).
"""

from __future__ import annotations

import html
from collections.abc import Callable

from rangectl.cmdlog import CommandRow
from rangectl.report.data import ReportData, inject_spans, team_commands
from rangectl.report.tables import TEXT, command_line, fmt_clock, fmt_minutes, fmt_points, fmt_time

COLOURS = {
    "inject": "#6b7c99",
    "inject-error": "#b04a4a",
    "detect": "#1f6fb4",
    "contain": "#2a9d3f",
    "other": "#8a55b8",
    "wrong": "#d03030",
    "hint": "#e08a10",
    "up": "#3dac5a",
    "down": "#d64545",
    "command": "#3d4a5c",
    "session": "#1f6fb4",
    "scp": "#8a55b8",
    "dropped": "#d03030",
    "grid": "#e3e6eb",
    "text": "#2b2f36",
    "muted": "#6c7480",
}


W = 960
LEFT = 150
RIGHT = 24
TOP = 34
LANE = 28
BOTTOM = 34
#: Command marks drawn one each on a team's timeline; past this, marks of one kind falling on the
#: same pixel are drawn as one (its tooltip says how many), so a busy team's chart stays small.
TICKS_MAX = 1000
#: Characters of a command line in a mark's tooltip.
TIP_CHARS = 300
STEPS = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800)


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


LABEL_CHAR_W = 5.8  # generous width of one character at font-size 9 (system-ui), for laying labels out
LABEL_ROW = 12  # height of one row of inject labels (a 9 px font with its descenders)


def label_rows(starts: list[tuple[str, float]], right: float) -> list[tuple[str, float, int]]:
    """Lay inject labels out so that none overlaps another: ``(text, x, row)``.

    Each label starts at its inject's start (moved left when it would run past
    ``right``) and takes the first row where it clears the previous label by a
    few pixels; a new row opens above when none is free."""
    placed: list[tuple[str, float, int]] = []
    row_end: list[float] = []
    for text, x0 in sorted(starts, key=lambda p: p[1]):
        width = LABEL_CHAR_W * len(text)
        x = max(0.0, min(x0 + 2, right - width))
        for row, end in enumerate(row_end):
            if x >= end + 4:
                row_end[row] = x + width
                break
        else:
            row = len(row_end)
            row_end.append(x + width)
        placed.append((text, x, row))
    return placed


def command_marks(
    rows: list[CommandRow], end: float, x: Callable[[float], float], most: int = TICKS_MAX
) -> tuple[list[list[CommandRow]], int]:
    """The command log's marks on a timeline: groups of rows drawn as one mark (one row each unless
    there are more than ``most``), and how many rows are not drawn (no drill time, or outside
    0..``end``: clipped, never piled up at the chart's edge)."""
    inside = [r for r in rows if r.drill_t is not None and 0.0 <= r.drill_t <= end]
    if len(inside) <= most:
        return [[r] for r in inside], len(rows) - len(inside)
    groups: dict[tuple[str, int], list[CommandRow]] = {}
    for r in inside:
        groups.setdefault((r.kind, round(x(float(r.drill_t or 0.0)))), []).append(r)
    return list(groups.values()), len(rows) - len(inside)


def _command_tip(group: list[CommandRow], lang: str) -> str:
    r = group[0]
    what = TEXT.get(lang, TEXT["en"])["what"].get(r.kind, r.kind)
    line = command_line(r, lang, TIP_CHARS)
    if len(group) == 1:
        tip = f"{fmt_clock(r.drill_t)} {r.node} {what}: {line}"
        return tip + (f" (exit {r.status})" if r.status is not None else "")
    return f"{len(group)} x {what}, {fmt_clock(r.drill_t)} to {fmt_clock(group[-1].drill_t)}, first: {r.node}: {line}"


def timeline_svg(d: ReportData, team: int) -> str:
    """One team's timeline over drill time, as a standalone SVG document (no XML prolog)."""
    tb = d.board.team(team)
    sc = d.scenario
    end = d.end_t
    detect, contain = set(d.policy.detect_categories), set(d.policy.contain_categories)
    lanes = ["injects", "detection", "containment", "other objectives", "wrong / hints"]
    cmd_lane = len(lanes) if d.commands else None  # a lane for commands when the record has any
    if cmd_lane is not None:
        lanes.append("commands")
    av_lane = len(lanes)
    lanes += [f"{a.node}/{a.service}" for a in sc.availability]
    span = W - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + span * min(max(t, 0.0), end) / end

    spans = inject_spans(d, team)
    labels = label_rows([(i.id, x(spans[i.id][0])) for i in sc.injects if i.id in spans], W - RIGHT)
    top = TOP + LABEL_ROW * max(0, max((r for _t, _x, r in labels), default=0))
    height = top + LANE * len(lanes) + BOTTOM

    def y(i: int) -> float:
        return top + LANE * i

    c = COLOURS
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}" height="{height}" '
        f'font-family="system-ui,sans-serif" font-size="11" role="img" aria-label="Team {team} timeline">',
        f"<title>Team {team}: timeline over drill time</title>",
        f'<rect x="0" y="0" width="{W}" height="{height}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="18" font-size="13" font-weight="600" fill="{c["text"]}">'
        f"Team {team} · {fmt_points(tb.total)} points · rank {tb.rank}</text>",
    ]
    marks: list[list[CommandRow]] = []
    unplotted = 0
    if cmd_lane is not None:
        marks, unplotted = command_marks(team_commands(d, team), end, x)
    # lanes and grid
    for i, name in enumerate(lanes):
        yy = y(i)
        if i % 2 == 0:
            out.append(f'<rect x="{LEFT}" y="{yy}" width="{span}" height="{LANE}" fill="#f7f8fa"/>')
        tip = ""
        if i == cmd_lane and unplotted:
            tip = f"<title>{unplotted} not drawn: recorded before the drill started or outside this axis</title>"
        out.append(
            f'<text x="{LEFT - 8}" y="{yy + LANE / 2 + 4}" text-anchor="end" fill="{c["text"]}">{_e(name)}{tip}</text>'
        )
    step = next((s for s in STEPS if end / s <= 10), STEPS[-1])
    t = 0.0
    axis_y = y(len(lanes))
    while t <= end + 1e-9:
        xx = x(t)
        out.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{axis_y}" stroke="{c["grid"]}"/>')
        out.append(
            f'<text x="{xx:.1f}" y="{axis_y + 14}" text-anchor="middle" fill="{c["muted"]}">{fmt_time(t)}</text>'
        )
        t += step
    out.append(f'<line x1="{LEFT}" y1="{axis_y}" x2="{W - RIGHT}" y2="{axis_y}" stroke="{c["muted"]}"/>')
    out.append(
        f'<text x="{W - RIGHT}" y="{axis_y + 28}" text-anchor="end" fill="{c["muted"]}">drill time</text>'
    )
    # legend
    ly = axis_y + 28
    lx = 8.0
    legend = [
        (f'<circle cx="{{x}}" cy="{ly - 4}" r="4" fill="{c["detect"]}"/>', "detected"),
        (f'<path d="M{{x}},{ly - 9} l5,5 l-5,5 l-5,-5 z" fill="{c["contain"]}"/>', "contained"),
        (f'<rect x="{{xm}}" y="{ly - 8}" width="8" height="8" fill="{c["other"]}"/>', "other objective"),
        (
            f'<path d="M{{xm}},{ly - 8} l7,7 M{{xp}},{ly - 8} l-7,7" stroke="{c["wrong"]}" stroke-width="2"/>',
            "wrong answer",
        ),
        (f'<path d="M{{x}},{ly - 9} l5,9 l-10,0 z" fill="{c["hint"]}"/>', "hint"),
        (f'<rect x="{{xm}}" y="{ly - 8}" width="8" height="8" fill="{c["up"]}"/>', "up"),
        (f'<rect x="{{xm}}" y="{ly - 8}" width="8" height="8" fill="{c["down"]}"/>', "down"),
    ]
    if cmd_lane is not None:
        legend += [
            (f'<path d="M{{x}},{ly - 9} v10" stroke="{c["command"]}" stroke-width="2"/>', "command"),
            (
                f'<circle cx="{{x}}" cy="{ly - 4}" r="3.5" fill="none" stroke="{c["session"]}" stroke-width="1.5"/>',
                "login",
            ),
            (f'<path d="M{{x}},{ly - 9} v10" stroke="{c["scp"]}" stroke-width="3"/>', "scp"),
        ]
    for shape, label in legend:
        cx = lx + 5
        out.append(shape.format(x=f"{cx:.1f}", xm=f"{cx - 4:.1f}", xp=f"{cx + 3:.1f}"))
        out.append(f'<text x="{lx + 13:.1f}" y="{ly}" fill="{c["muted"]}">{label}</text>')
        lx += 20 + 7.4 * len(label)  # wide enough for DejaVu Sans, the fallback of system-ui

    # injects: bars in the first lane, their labels in rows above it
    for text, lx0, row in labels:
        out.append(
            f'<text class="inj-label" x="{lx0:.1f}" y="{y(0) + 6 - LABEL_ROW * row}" font-size="9" '
            f'fill="{c["muted"]}">{_e(text)}</text>'
        )
    for inj in sc.injects:
        s = spans.get(inj.id)
        if s is None:
            continue
        start, stop, status = s
        x0, x1 = x(start), x(stop if stop is not None else end)
        colour = c["inject-error"] if status == "error" else c["inject"]
        tip = f"{inj.id}: {fmt_time(start)} to {fmt_time(stop) if stop is not None else '(not finished)'} ({status})"
        out.append(
            f'<rect x="{x0:.1f}" y="{y(0) + 7}" width="{max(2.0, x1 - x0):.1f}" height="{LANE - 14}" rx="2" '
            f'fill="{colour}"><title>{_e(tip)}</title></rect>'
        )

    # objectives earned
    for oid, r in tb.detail.items():
        if not r.solved or r.solved_t is None:
            continue
        lane = 1 if r.category in detect else 2 if r.category in contain else 3
        colour = c["detect"] if lane == 1 else c["contain"] if lane == 2 else c["other"]
        xx, cy = x(r.solved_t), y(lane) + LANE / 2
        tip = f"{oid} ({r.category}): {fmt_points(r.points)} points at {fmt_time(r.solved_t)}, {fmt_minutes(r.minutes)} min after its inject"
        if r.opened_t is not None and lane in (1, 2):
            out.append(
                f'<line x1="{x(r.opened_t):.1f}" y1="{cy}" x2="{xx:.1f}" y2="{cy}" stroke="{colour}" '
                f'stroke-dasharray="4 3" stroke-width="1.5"/>'
            )
        if lane == 1:
            shape = f'<circle cx="{xx:.1f}" cy="{cy}" r="6" fill="{colour}">'
            end_tag = "</circle>"
        elif lane == 2:
            shape = f'<path d="M{xx:.1f},{cy - 7} l7,7 l-7,7 l-7,-7 z" fill="{colour}">'
            end_tag = "</path>"
        else:
            shape = f'<rect x="{xx - 5:.1f}" y="{cy - 5}" width="10" height="10" fill="{colour}">'
            end_tag = "</rect>"
        out.append(f"{shape}<title>{_e(tip)}</title>{end_tag}")

    # wrong answers and hints
    yy = y(4) + LANE / 2
    for ev, t in zip(d.events, d.times, strict=True):
        if ev.team != team:
            continue
        if ev.kind == "submission" and not ev.data.get("correct") and not ev.data.get("refused"):
            xx = x(t)
            tip = f"wrong answer to {ev.data.get('objective')} at {fmt_time(t)}"
            out.append(
                f'<path d="M{xx - 4:.1f},{yy - 4} l8,8 M{xx + 4:.1f},{yy - 4} l-8,8" stroke="{c["wrong"]}" '
                f'stroke-width="2"><title>{_e(tip)}</title></path>'
            )
        elif ev.kind == "hint":
            xx = x(t)
            tip = f"hint for {ev.data.get('objective')} at {fmt_time(t)} (cost {ev.data.get('cost', 0)})"
            out.append(
                f'<path d="M{xx:.1f},{yy - 6} l6,11 l-12,0 z" fill="{c["hint"]}"><title>{_e(tip)}</title></path>'
            )

    # commands: a tick per program (scp: a thicker one, dropped: a red one), a ring per login
    if cmd_lane is not None:
        top_y, mid_y = y(cmd_lane), y(cmd_lane) + LANE / 2
        for group in marks:
            r = group[0]
            xx = x(float(r.drill_t or 0.0))
            tip = f"<title>{_e(_command_tip(group, d.lang))}</title>"
            if r.kind == "session":
                out.append(
                    f'<circle class="cmd cmd-session" cx="{xx:.1f}" cy="{mid_y}" r="4" fill="#ffffff" '
                    f'stroke="{c["session"]}" stroke-width="1.5">{tip}</circle>'
                )
                continue
            colour, width = {"file.copy": (c["scp"], 3), "dropped": (c["dropped"], 2)}.get(
                r.kind, (c["command"], 1.5)
            )
            kind = {"file.copy": "scp", "dropped": "dropped"}.get(r.kind, "run")
            out.append(
                f'<line class="cmd cmd-{kind}" x1="{xx:.1f}" y1="{top_y + 6}" x2="{xx:.1f}" y2="{top_y + LANE - 6}" '
                f'stroke="{colour}" stroke-width="{width}">{tip}</line>'
            )

    # availability rounds
    rounds: dict[int, dict[int, bool]] = {}
    for ev in d.events:
        if ev.kind == "availability" and ev.team == team and isinstance(ev.data.get("index"), int):
            rounds.setdefault(ev.data["index"], {}).setdefault(
                int(ev.data.get("round", 0)), bool(ev.data.get("up"))
            )
    for i, av in enumerate(sc.availability):
        lane_y = y(av_lane + i)
        for rnd, up in sorted(rounds.get(i, {}).items()):
            x0, x1 = x(rnd * av.every), x((rnd + 1) * av.every)
            if x0 >= W - RIGHT:
                continue
            tip = f"{av.node}/{av.service} round {rnd} ({fmt_time(rnd * av.every)}): {'up' if up else 'down'}"
            out.append(
                f'<rect x="{x0:.1f}" y="{lane_y + 6}" width="{max(1.0, x1 - x0 - 0.5):.1f}" height="{LANE - 12}" '
                f'fill="{c["up"] if up else c["down"]}"><title>{_e(tip)}</title></rect>'
            )
    out.append("</svg>")
    return "\n".join(out)
