"""The after-action report of a drill: Markdown, self-contained HTML and a timeline SVG per team.

Everything comes from the range's record (event store) and the scoring engine;
nothing is fetched from the network: the HTML carries its CSS and its SVG
charts inline and refers to no other file. ``write_report(state, out_dir)``
writes ``report.md``, ``report.html`` and ``timeline-team-K.svg``.

The model is :mod:`rangectl.report.data`; what both formats show,
:mod:`rangectl.report.tables`; the formats, :mod:`rangectl.report.markdown`,
:mod:`rangectl.report.html` and :mod:`rangectl.report.svg` (the timeline chart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rangectl.report.data import ReportData, build, collect
from rangectl.report.html import render_html
from rangectl.report.markdown import render_markdown
from rangectl.report.svg import timeline_svg


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


__all__ = [
    "ReportData",
    "build",
    "collect",
    "render_html",
    "render_markdown",
    "timeline_svg",
    "write_files",
    "write_report",
]
