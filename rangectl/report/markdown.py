"""The report as Markdown (``report.md``): the same facts and tables as the HTML, the timelines linked as SVG files."""

from __future__ import annotations

from rangectl.report.data import ReportData
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
    lines += [f"- **{k}**: {_md_cell(v)}" for k, v in facts(d)]
    lines += ["", "## Scoreboard", ""]
    lines += _md_table(*score_rows(d))
    lines += ["Points by category:", ""]
    lines += _md_table(*category_rows(d))
    lines += [
        "TTD/TTC: drill minutes from an inject's start to the team's first earned "
        f"{'/'.join(d.policy.detect_categories)} or {'/'.join(d.policy.contain_categories)} objective tied to it.",
        "",
        "## Teams",
        "",
    ]
    for t in d.board.teams:
        lines += [f"### Team {t.team}: {fmt_points(t.total)} points (rank {t.rank})", ""]
        lines += [f"![Team {t.team} timeline](timeline-team-{t.team}.svg)", ""]
        lines += _md_table(*objective_rows(d, t))
        if d.scenario.injects:
            lines += _md_table(*tt_rows(d, t))
        if d.scenario.availability:
            lines += [f"Availability: {fmt_availability(t)} rounds up.", ""]
        if t.adjustments:
            lines += [f"Trainer adjustments: {t.adjustments:+g} points.", ""]
        if t.flags:
            lines += [f"Flagged: {_md_cell('; '.join(flag_line(f) for f in t.flags))}.", ""]
        if d.commands:
            head, rows, more = command_rows(d, t.team)
            lines += [f"#### {text(d)['commands']}", ""]
            if rows:
                lines += [text(d)["intro"], ""]
                lines += _md_table(head, rows)
            else:
                lines += [text(d)["none"], ""]
            if more:
                lines += [commands_more(d, t.team, more, esc=_md_cell), ""]
    rows, quiet = timeline_rows(d)
    lines += ["## Event timeline", ""]
    if quiet:
        lines += [
            f"{quiet} availability rounds and failed check probes are shown in the charts, not listed.",
            "",
        ]
    if recorded_count(d):
        lines += [
            f"{recorded_count(d)} events of the command recorder (sessions, programs, their exits, file copies) "
            "are in each team's commands table, not listed.",
            "",
        ]
    lines += _md_table(
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
    )
    return "\n".join(lines)
