"""The after-action report of a drill: Markdown, self-contained HTML and a timeline SVG per team.

Everything comes from the range's record (event store) and the scoring engine;
nothing is fetched from the network: the HTML carries its CSS and its SVG
charts inline and refers to no other file. ``write_report(state, out_dir)``
writes ``report.md``, ``report.html`` and ``timeline-team-K.svg``.

Each team's timeline chart runs over drill time and has one lane for
injects (a bar from start to end), one for detection and one for containment
(a mark when an objective of that kind was earned, with a dashed line back to
its inject: the time to detect/contain), one for the other objectives, one
for wrong answers and hints, and one per availability check (a green or red
cell per round).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rangectl.plan import Plan
from rangectl.scenario.durations import format_duration
from rangectl.scenario.model import Scenario, localize
from rangectl.scoring.engine import Board, DrillClock, TeamBoard, compute_board, describe_flag
from rangectl.scoring.policy import Policy
from rangectl.store import Event, VerifyResult

#: Events listed one by one in the timeline; availability rounds and failed
#: check probes are many and appear in the charts and counts instead.
QUIET = {"availability"}

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
    "grid": "#e3e6eb",
    "text": "#2b2f36",
    "muted": "#6c7480",
}


@dataclass
class ReportData:
    range: str
    scenario: Scenario
    plan: Plan
    policy: Policy
    board: Board
    events: list[Event]
    times: list[float]  # drill time of each event (same order)
    verify: VerifyResult
    generated: float = field(default_factory=time.time)
    lang: str = "en"
    checkpoint: Any = None  # the record's latest checkpoint outside the database (store.Checkpoint)

    @property
    def end_t(self) -> float:
        last = max(self.times, default=0.0)
        return max(60.0, last, float(self.scenario.duration or 0.0))


def event_times(events: list[Event]) -> list[float]:
    """Each event's drill time: its ``drill_t``, or the drill clock at its wall time."""
    clock = DrillClock()
    out = []
    for ev in events:
        if ev.kind.startswith("drill."):
            clock.feed(ev.kind, ev.ts, ev.data)
        t = ev.data.get("drill_t")
        out.append(
            float(t) if isinstance(t, int | float) and not isinstance(t, bool) else clock.drill_t(ev.ts)
        )
    return out


def collect(state: Any, lang: str = "en") -> ReportData:
    """Read a range's record and score it (``state``: a RangeState)."""
    from rangectl.scoring.actions import context

    ctx = context(state)
    events = ctx.store.events()
    data = build(state.name, ctx.scenario, ctx.plan, ctx.policy, events, ctx.store.verify(), lang)
    data.checkpoint = ctx.store.last_checkpoint()
    return data


def build(
    range_name: str,
    scenario: Scenario,
    plan: Plan,
    policy: Policy,
    events: list[Event],
    verify: VerifyResult,
    lang: str = "en",
) -> ReportData:
    b = compute_board(scenario, plan, policy, events)
    return ReportData(range_name, scenario, plan, policy, b, events, event_times(events), verify, lang=lang)


def write_report(state: Any, out_dir: Path | str, lang: str = "en") -> list[Path]:
    """Write report.md, report.html and timeline-team-K.svg into ``out_dir``; return the paths."""
    data = collect(state, lang)
    return write_files(data, out_dir)


def write_files(data: ReportData, out_dir: Path | str) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for t in data.board.teams:
        p = out / f"timeline-team-{t.team}.svg"
        p.write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n' + timeline_svg(data, t.team), encoding="utf-8"
        )
        written.append(p)
    md = out / "report.md"
    md.write_text(render_markdown(data), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(data), encoding="utf-8")
    return [md, page, *written]


# --- facts shared by both formats ----------------------------------------------------------


def _m(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _pts(v: float) -> str:
    return f"{v:.1f}"


def _dt(t: float | None) -> str:
    return "-" if t is None else format_duration(t)


def _facts(d: ReportData) -> list[tuple[str, str]]:
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
        ("Drill", f"{b.status}, drill time {_dt(b.drill_t)}"),
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


def _score_rows(d: ReportData) -> tuple[list[str], list[list[str]]]:
    """The ranking: totals, solved, hints, time to detect/contain, availability.

    Points per category are a table of their own (:func:`_category_rows`), so
    neither table grows wider than a laptop screen or an A4 page."""
    det = _tt_injects(d, d.policy.detect_categories)
    con = _tt_injects(d, d.policy.contain_categories)
    head = ["rank", "team", "total", "solved", "hints", "mean TTD (min)", "mean TTC (min)"]
    if d.scenario.availability:
        head.append("rounds up")
    rows = []
    for t in d.board.ranked():
        r = [str(t.rank), f"team {t.team}", _pts(t.total)]
        r += [f"{t.solved}/{len(d.scenario.objectives)}", str(t.hints)]
        r += [_m(_mean([t.ttd.get(i) for i in det])), _m(_mean([t.ttc.get(i) for i in con]))]
        if d.scenario.availability:
            r.append(_avail(t))
        rows.append(r)
    return head, rows


def _category_rows(d: ReportData) -> tuple[list[str], list[list[str]]]:
    """Points per category, teams in rank order."""
    cats = _categories(d.board)
    head = ["rank", "team", *cats]
    rows = [
        [str(t.rank), f"team {t.team}", *[_pts(t.categories.get(c, 0.0)) for c in cats]]
        for t in d.board.ranked()
    ]
    return head, rows


def _avail(t: TeamBoard) -> str:
    if not t.availability_total:
        return "-"
    return (
        f"{t.availability_up}/{t.availability_total} ({100 * t.availability_up / t.availability_total:.0f}%)"
    )


def _objective_rows(d: ReportData, t: TeamBoard) -> tuple[list[str], list[list[str]]]:
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
                _pts(r.points),
                _pts(r.max_points),
                _dt(r.solved_t) if r.solved else "-",
                _m(r.minutes),
                str(r.attempts),
                str(r.wrong),
                f"{r.hints} (-{r.hint_cost:g})" if r.hints else "0",
                note,
            ]
        )
    return head, rows


def _tt_rows(d: ReportData, t: TeamBoard) -> tuple[list[str], list[list[str]]]:
    head = ["inject", "started", "time to detect (min)", "time to contain (min)"]
    starts = _inject_spans(d, t.team)
    rows = []
    for inj in d.scenario.injects:
        s = starts.get(inj.id)
        rows.append([inj.id, _dt(s[0]) if s else "not run", _m(t.ttd.get(inj.id)), _m(t.ttc.get(inj.id))])
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


def _flag_line(flag: dict) -> str:
    return f"{describe_flag(flag)} at {_dt(flag.get('drill_t'))}"


def _timeline(d: ReportData) -> tuple[list[tuple[Event, float]], int]:
    """Events worth listing, and how many were summarized instead."""
    rows = []
    quiet = 0
    for ev, t in zip(d.events, d.times, strict=True):
        if ev.kind in QUIET or (ev.kind == "check" and not ev.data.get("passed")):
            quiet += 1
            continue
        rows.append((ev, t))
    return rows, quiet


# --- Markdown -----------------------------------------------------------------------------------


def _md_cell(s: object) -> str:
    text = " ".join(str(s).split())
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("`", "\\`")
    )


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def render_markdown(d: ReportData) -> str:
    lines = [f"# After-action report: {_md_cell(localize(d.scenario.title, d.lang))}", ""]
    lines += [f"- **{k}**: {_md_cell(v)}" for k, v in _facts(d)]
    lines += ["", "## Scoreboard", ""]
    lines += _md_table(*_score_rows(d))
    lines += ["Points by category:", ""]
    lines += _md_table(*_category_rows(d))
    lines += [
        "TTD/TTC: drill minutes from an inject's start to the team's first earned "
        f"{'/'.join(d.policy.detect_categories)} or {'/'.join(d.policy.contain_categories)} objective tied to it.",
        "",
        "## Teams",
        "",
    ]
    for t in d.board.teams:
        lines += [f"### Team {t.team}: {_pts(t.total)} points (rank {t.rank})", ""]
        lines += [f"![Team {t.team} timeline](timeline-team-{t.team}.svg)", ""]
        lines += _md_table(*_objective_rows(d, t))
        if d.scenario.injects:
            lines += _md_table(*_tt_rows(d, t))
        if d.scenario.availability:
            lines += [f"Availability: {_avail(t)} rounds up.", ""]
        if t.adjustments:
            lines += [f"Trainer adjustments: {t.adjustments:+g} points.", ""]
        if t.flags:
            lines += [f"Flagged: {_md_cell('; '.join(_flag_line(f) for f in t.flags))}.", ""]
    rows, quiet = _timeline(d)
    lines += ["## Event timeline", ""]
    if quiet:
        lines += [
            f"{quiet} availability rounds and failed check probes are shown in the charts, not listed.",
            "",
        ]
    lines += _md_table(
        ["seq", "drill time", "team", "kind", "actor", "what"],
        [
            [str(e.seq), _dt(t), "-" if e.team is None else str(e.team), e.kind, e.actor, summarize(e, d.lang)]
            for e, t in rows
        ],
    )
    return "\n".join(lines)


# --- HTML ----------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#2b2f36;margin:2rem auto;max-width:1100px;padding:0 1rem;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{margin-top:2.2rem;border-bottom:2px solid #e3e6eb;padding-bottom:.2rem}
h3{margin-top:1.8rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.9rem;max-width:100%}
th,td{border:1px solid #dde1e7;padding:.25rem .5rem;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f3f5f8;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem}dl.facts dt{font-weight:600}dl.facts dd{margin:0;overflow-wrap:anywhere}
.bad{color:#b02a2a;font-weight:600}.ok{color:#23803a}.muted{color:#6c7480}
figure{margin:.5rem 0 1rem}svg{max-width:100%;height:auto}
.timeline td{font-size:.85rem}.scoreboard td,.categories td{white-space:nowrap}
@page{size:A4;margin:12mm}
@media print{body{margin:0;max-width:none;padding:0;font-size:10pt}table{font-size:8.5pt}th,td{padding:.15rem .3rem}
h2{page-break-before:auto}figure,tr{break-inside:avoid}}
"""


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _num(s: str) -> bool:
    t = s.strip().replace("/", "").replace("(", "").replace(")", "").replace("%", "").replace(" ", "")
    return bool(t) and all(c.isdigit() or c in ".-+" for c in t)


def _html_table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    out = [f'<table class="{cls}">' if cls else "<table>", "<thead><tr>"]
    out += [f"<th>{_e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append(
            "<tr>"
            + "".join(f'<td class="n">{_e(c)}</td>' if _num(c) else f"<td>{_e(c)}</td>" for c in r)
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def render_html(d: ReportData) -> str:
    title = f"After-action report: {localize(d.scenario.title, d.lang)}"
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{d.lang}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        '<dl class="facts">',
    ]
    for k, v in _facts(d):
        cls = (
            ' class="bad"'
            if k == "Event log" and not d.verify.ok
            else (' class="ok"' if k == "Event log" else "")
        )
        parts.append(f"<dt>{_e(k)}</dt><dd{cls}>{_e(v)}</dd>")
    parts.append("</dl>")
    parts.append('<h2 id="scoreboard">Scoreboard</h2>')
    parts.append(_html_table(*_score_rows(d), cls="scoreboard"))
    parts.append('<h3 id="categories">Points by category</h3>')
    parts.append(_html_table(*_category_rows(d), cls="categories"))
    parts.append(
        "<p class=\"muted\">TTD/TTC: drill minutes from an inject's start to the team's first earned "
        f"{_e('/'.join(d.policy.detect_categories))} or {_e('/'.join(d.policy.contain_categories))} objective tied to it.</p>"
    )
    parts.append('<h2 id="teams">Teams</h2>')
    for t in d.board.teams:
        parts.append(f'<h3 id="team-{t.team}">Team {t.team}: {_pts(t.total)} points (rank {t.rank})</h3>')
        parts.append(f"<figure>{timeline_svg(d, t.team)}</figure>")
        parts.append(_html_table(*_objective_rows(d, t)))
        if d.scenario.injects:
            parts.append(_html_table(*_tt_rows(d, t)))
        if d.scenario.availability:
            parts.append(f"<p>Availability: {_e(_avail(t))} rounds up.</p>")
        if t.adjustments:
            parts.append(f"<p>Trainer adjustments: {t.adjustments:+g} points.</p>")
        if t.flags:
            parts.append(f'<p class="bad">Flagged: {_e("; ".join(_flag_line(f) for f in t.flags))}.</p>')
    rows, quiet = _timeline(d)
    parts.append('<h2 id="timeline">Event timeline</h2>')
    if quiet:
        parts.append(
            f'<p class="muted">{quiet} availability rounds and failed check probes are shown in the charts, not listed.</p>'
        )
    parts.append(
        _html_table(
            ["seq", "drill time", "team", "kind", "actor", "what"],
            [
                [str(e.seq), _dt(t), "-" if e.team is None else str(e.team), e.kind, e.actor, summarize(e, d.lang)]
                for e, t in rows
            ],
            cls="timeline",
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts)


# --- SVG timeline ------------------------------------------------------------------------------------

W = 960
LEFT = 150
RIGHT = 24
TOP = 34
LANE = 28
BOTTOM = 34
STEPS = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800)


def _inject_spans(d: ReportData, team: int) -> dict[str, tuple[float, float | None, str]]:
    spans: dict[str, tuple[float, float | None, str]] = {}
    for ev, t in zip(d.events, d.times, strict=True):
        if ev.team != team:
            continue
        inj = ev.data.get("inject")
        if ev.kind == "inject.start" and inj not in spans:
            spans[inj] = (t, None, "running")
        elif ev.kind == "inject.done" and inj in spans and spans[inj][1] is None:
            spans[inj] = (spans[inj][0], t, str(ev.data.get("status", "ok")))
    return spans


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


def timeline_svg(d: ReportData, team: int) -> str:
    """One team's timeline over drill time, as a standalone SVG document (no XML prolog)."""
    tb = d.board.team(team)
    sc = d.scenario
    end = d.end_t
    detect, contain = set(d.policy.detect_categories), set(d.policy.contain_categories)
    lanes = ["injects", "detection", "containment", "other objectives", "wrong / hints"]
    lanes += [f"{a.node}/{a.service}" for a in sc.availability]
    span = W - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + span * min(max(t, 0.0), end) / end

    spans = _inject_spans(d, team)
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
        f"Team {team} · {_pts(tb.total)} points · rank {tb.rank}</text>",
    ]
    # lanes and grid
    for i, name in enumerate(lanes):
        yy = y(i)
        if i % 2 == 0:
            out.append(f'<rect x="{LEFT}" y="{yy}" width="{span}" height="{LANE}" fill="#f7f8fa"/>')
        out.append(
            f'<text x="{LEFT - 8}" y="{yy + LANE / 2 + 4}" text-anchor="end" fill="{c["text"]}">{_e(name)}</text>'
        )
    step = next((s for s in STEPS if end / s <= 10), STEPS[-1])
    t = 0.0
    axis_y = y(len(lanes))
    while t <= end + 1e-9:
        xx = x(t)
        out.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{axis_y}" stroke="{c["grid"]}"/>')
        out.append(
            f'<text x="{xx:.1f}" y="{axis_y + 14}" text-anchor="middle" fill="{c["muted"]}">{_dt(t)}</text>'
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
    for shape, label in legend:
        cx = lx + 5
        out.append(shape.format(x=f"{cx:.1f}", xm=f"{cx - 4:.1f}", xp=f"{cx + 3:.1f}"))
        out.append(f'<text x="{lx + 13:.1f}" y="{ly}" fill="{c["muted"]}">{label}</text>')
        lx += 20 + 6.2 * len(label)

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
        tip = f"{inj.id}: {_dt(start)} to {_dt(stop) if stop is not None else '(not finished)'} ({status})"
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
        tip = f"{oid} ({r.category}): {_pts(r.points)} points at {_dt(r.solved_t)}, {_m(r.minutes)} min after its inject"
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
            tip = f"wrong answer to {ev.data.get('objective')} at {_dt(t)}"
            out.append(
                f'<path d="M{xx - 4:.1f},{yy - 4} l8,8 M{xx + 4:.1f},{yy - 4} l-8,8" stroke="{c["wrong"]}" '
                f'stroke-width="2"><title>{_e(tip)}</title></path>'
            )
        elif ev.kind == "hint":
            xx = x(t)
            tip = f"hint for {ev.data.get('objective')} at {_dt(t)} (cost {ev.data.get('cost', 0)})"
            out.append(
                f'<path d="M{xx:.1f},{yy - 6} l6,11 l-12,0 z" fill="{c["hint"]}"><title>{_e(tip)}</title></path>'
            )

    # availability rounds
    rounds: dict[int, dict[int, bool]] = {}
    for ev in d.events:
        if ev.kind == "availability" and ev.team == team and isinstance(ev.data.get("index"), int):
            rounds.setdefault(ev.data["index"], {}).setdefault(
                int(ev.data.get("round", 0)), bool(ev.data.get("up"))
            )
    for i, av in enumerate(sc.availability):
        lane_y = y(5 + i)
        for rnd, up in sorted(rounds.get(i, {}).items()):
            x0, x1 = x(rnd * av.every), x((rnd + 1) * av.every)
            if x0 >= W - RIGHT:
                continue
            tip = f"{av.node}/{av.service} round {rnd} ({_dt(rnd * av.every)}): {'up' if up else 'down'}"
            out.append(
                f'<rect x="{x0:.1f}" y="{lane_y + 6}" width="{max(1.0, x1 - x0 - 0.5):.1f}" height="{LANE - 12}" '
                f'fill="{c["up"] if up else c["down"]}"><title>{_e(tip)}</title></rect>'
            )
    out.append("</svg>")
    return "\n".join(out)
