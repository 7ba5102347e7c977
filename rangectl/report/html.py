"""The report as one self-contained HTML page (``report.html``): its CSS and the SVG timelines inline."""

from __future__ import annotations

import html

from rangectl.report.data import ReportData
from rangectl.report.svg import timeline_svg
from rangectl.report.tables import (
    category_rows,
    command_rows,
    commands_more,
    facts,
    flag_line,
    fmt_availability,
    fmt_points,
    fmt_time,
    objective_rows,
    recorded_count,
    score_rows,
    summarize,
    text,
    timeline_rows,
    tt_rows,
)
from rangectl.scenario.model import localize

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
table.commands{table-layout:fixed;width:100%}table.commands td{overflow-wrap:anywhere;word-break:break-word}
table.commands col.t{width:5em}table.commands col.node{width:16%}table.commands col.what{width:6.5em}table.commands col.x{width:4.5em}
table.commands td.cmd{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.8rem;white-space:pre-wrap}
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


def _commands_table(head: list[str], rows: list[list[str]]) -> str:
    """A team's commands: a fixed layout (the command column takes what the others leave, and its
    text wraps anywhere), so no command line, however long, widens the page or the printed A4."""
    out = [
        '<table class="commands"><colgroup><col class="t"><col class="node"><col class="what"><col class="cmd">'
        '<col class="x"></colgroup><thead><tr>'
    ]
    out += [f"<th>{_e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for t, node, what, cmd, status in rows:
        out.append(
            f'<tr><td class="n">{_e(t)}</td><td>{_e(node)}</td><td>{_e(what)}</td><td class="cmd">{_e(cmd)}</td>'
            f'<td class="n">{_e(status)}</td></tr>'
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
    for k, v in facts(d):
        cls = (
            ' class="bad"'
            if k == "Event log" and not d.verify.ok
            else (' class="ok"' if k == "Event log" else "")
        )
        parts.append(f"<dt>{_e(k)}</dt><dd{cls}>{_e(v)}</dd>")
    parts.append("</dl>")
    parts.append('<h2 id="scoreboard">Scoreboard</h2>')
    parts.append(_html_table(*score_rows(d), cls="scoreboard"))
    parts.append('<h3 id="categories">Points by category</h3>')
    parts.append(_html_table(*category_rows(d), cls="categories"))
    parts.append(
        "<p class=\"muted\">TTD/TTC: drill minutes from an inject's start to the team's first earned "
        f"{_e('/'.join(d.policy.detect_categories))} or {_e('/'.join(d.policy.contain_categories))} objective tied to it.</p>"
    )
    parts.append('<h2 id="teams">Teams</h2>')
    for t in d.board.teams:
        parts.append(
            f'<h3 id="team-{t.team}">Team {t.team}: {fmt_points(t.total)} points (rank {t.rank})</h3>'
        )
        parts.append(f"<figure>{timeline_svg(d, t.team)}</figure>")
        parts.append(_html_table(*objective_rows(d, t)))
        if d.scenario.injects:
            parts.append(_html_table(*tt_rows(d, t)))
        if d.scenario.availability:
            parts.append(f"<p>Availability: {_e(fmt_availability(t))} rounds up.</p>")
        if t.adjustments:
            parts.append(f"<p>Trainer adjustments: {t.adjustments:+g} points.</p>")
        if t.flags:
            parts.append(f'<p class="bad">Flagged: {_e("; ".join(flag_line(f) for f in t.flags))}.</p>')
        if d.commands:
            head, rows, more = command_rows(d, t.team)
            parts.append(f'<h4 id="team-{t.team}-commands">{_e(text(d)["commands"])}</h4>')
            if rows:
                parts.append(f'<p class="muted">{_e(text(d)["intro"])}</p>')
                parts.append(_commands_table(head, rows))
            else:
                parts.append(f'<p class="muted">{_e(text(d)["none"])}</p>')
            if more:
                parts.append(
                    f'<p class="more">{commands_more(d, t.team, more, lambda c: f"<code>{_e(c)}</code>", _e)}</p>'
                )
    rows, quiet = timeline_rows(d)
    parts.append('<h2 id="timeline">Event timeline</h2>')
    if quiet:
        parts.append(
            f'<p class="muted">{quiet} availability rounds and failed check probes are shown in the charts, not listed.</p>'
        )
    if recorded_count(d):
        parts.append(
            f'<p class="muted">{recorded_count(d)} events of the command recorder (sessions, programs, their '
            "exits, file copies) are in each team's commands table, not listed.</p>"
        )
    parts.append(
        _html_table(
            ["seq", "drill time", "team", "kind", "actor", "what"],
            [
                [
                    str(e.seq),
                    fmt_time(t),
                    "-" if e.team is None else str(e.team),
                    e.kind,
                    e.actor,
                    summarize(e, d.lang),
                ]
                for e, t in rows
            ],
            cls="timeline",
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts)
