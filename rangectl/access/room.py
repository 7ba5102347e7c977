"""The room's scoreboard: one read-only HTML page for a projector.

``rangectl serve`` serves it at ``/api/v1/room`` on the trainer's API address
(``--bind``, default 127.0.0.1:8780) unless ``--hide-board``. It refreshes
itself (a ``<meta http-equiv="refresh">``, no scripts), and shows only what
the room may see: the drill clock and status, then per team its rank,
total, points per category and solved count. No answers, no addresses, no
team input (hence nothing a team typed can reach the projector), no
identifiers beyond team numbers and category names.
"""

from __future__ import annotations

import html
from typing import Any

from rangectl.scoring.engine import Board

REFRESH_SECONDS = 5

_TEXT = {
    "en": {
        "title": "Scoreboard",
        "rank": "rank",
        "team": "team",
        "total": "total",
        "solved": "solved",
        "drill": "Drill",
        "status": {
            "not-started": "not started",
            "running": "running",
            "paused": "paused",
            "stopped": "stopped",
            "finished": "finished",
        },
        "of": "of",
        "refresh": "refreshes every {n} s",
        "team_n": "Team {n}",
    },
    "vi": {
        "title": "Bảng điểm",
        "rank": "hạng",
        "team": "đội",
        "total": "tổng điểm",
        "solved": "đã giải",
        "drill": "Diễn tập",
        "status": {
            "not-started": "chưa bắt đầu",
            "running": "đang diễn ra",
            "paused": "tạm dừng",
            "stopped": "đã dừng",
            "finished": "đã kết thúc",
        },
        "of": "trên",
        "refresh": "tự làm mới mỗi {n} giây",
        "team_n": "Đội {n}",
    },
}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:2vh 3vw;background:#10151c;color:#eef2f6}
h1{font-size:4vh;margin:0 0 .4em}
.clock{font-size:3vh;color:#aeb8c4;margin-bottom:2vh}.clock b{color:#eef2f6;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%;font-size:2.6vh}
th,td{padding:.35em .6em;border-bottom:1px solid #2a3340;text-align:left;white-space:nowrap}
th{color:#aeb8c4;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.top td{color:#ffd36b;font-weight:700}
.foot{margin-top:2vh;color:#6f7b88;font-size:1.8vh}
"""


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def render_room(
    board: Board,
    *,
    title: str,
    objectives: int,
    drill: dict[str, Any],
    duration: float | None = None,
    lang: str = "en",
    refresh: int = REFRESH_SECONDS,
) -> str:
    """The page for ``board``: ranked teams with totals, categories and solved counts."""
    tx = _TEXT.get(lang, _TEXT["en"])
    cats = list(dict.fromkeys(c for t in board.teams for c in t.categories))
    status = str(drill.get("status", board.status))
    clock = _clock(float(drill.get("drill_t", board.drill_t)))
    if duration:
        clock += f" / {_clock(duration)}"
    head = [tx["rank"], tx["team"], tx["total"], *cats, tx["solved"]]
    rows = []
    for t in board.ranked():
        cells = [
            f'<td class="n">{t.rank}</td>',
            f"<td>{_e(tx['team_n'].format(n=t.team))}</td>",
            f'<td class="n">{t.total:.1f}</td>',
            *[f'<td class="n">{t.categories.get(c, 0.0):.1f}</td>' for c in cats],
            f'<td class="n">{t.solved} {_e(tx["of"])} {objectives}</td>',
        ]
        rows.append(f'<tr{" class=top" if t.rank == 1 and t.total > 0 else ""}>{"".join(cells)}</tr>')
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f'<html lang="{_e(lang)}"><head><meta charset="utf-8">',
            f'<meta http-equiv="refresh" content="{int(refresh)}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(tx['title'])}: {_e(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{_e(title)}</h1>",
            f'<div class="clock">{_e(tx["drill"])}: <b id="drill-clock">{_e(clock)}</b> · '
            f'<span id="drill-status">{_e(tx["status"].get(status, status))}</span></div>',
            '<table id="room-board"><thead><tr>'
            + "".join(f"<th>{_e(h)}</th>" for h in head)
            + "</tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>",
            f'<div class="foot">{_e(tx["refresh"].format(n=int(refresh)))}</div>',
            "</body></html>",
        ]
    )
