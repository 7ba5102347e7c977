"""The room's scoreboard page: served without a token, the same totals as the board, nothing secret."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from rangectl.access.api import create_app
from rangectl.access.ratelimit import RateLimit
from rangectl.access.service import Settings, TeamService
from rangectl.plan import plan as make_plan
from rangectl.scenario.model import Scenario
from rangectl.scoring.actions import board as compute
from tests.unit.test_access_api import SCENARIO, assert_clean, auth, forbidden_strings, make_range, token

ROOM = "/api/v1/room"


def _client(st, **settings):
    return TestClient(create_app(TeamService(st, Settings(rate=RateLimit(per_minute=0), **settings))))


def _rows(page: str) -> list[list[str]]:
    body = re.search(r'<table id="room-board">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [re.findall(r"<td[^>]*>([^<]*)</td>", tr) for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_room_page_needs_no_token_and_shows_every_teams_score(tmp_path):
    st = make_range(tmp_path)
    with _client(st) as c:
        ok = c.post("/api/v1/teams/1/objectives/scanner-ip/submissions", headers=auth(token(st, 1)),
                    json={"answer": str(make_plan(Scenario.model_validate(SCENARIO), 2).team(1).ip_of("scanner"))})
        assert ok.status_code == 200 and ok.json()["correct"], ok.text
        r = c.get(ROOM)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert re.search(r'<meta http-equiv="refresh" content="\d+">', page)  # it refreshes by itself
    assert "<script" not in page.lower()
    b = compute(st)
    rows = _rows(page)
    assert [row[1] for row in rows] == [f"Team {t.team}" for t in b.ranked()]
    for row, t in zip(rows, b.ranked(), strict=True):
        assert row[0] == str(t.rank) and row[2] == f"{t.total:.1f}"
        assert row[-1] == f"{t.solved} of {len(SCENARIO['objectives'])}"
    assert b.team(1).total > b.team(2).total and rows[0][1] == "Team 1"
    assert 'id="drill-status">running<' in page and re.search(r'id="drill-clock">0:0[0-9]:\d\d', page)


def test_room_page_shows_no_answers_addresses_or_team_input(tmp_path):
    st = make_range(tmp_path)
    with _client(st) as c:
        c.post("/api/v1/teams/2/objectives/scanner-ip/submissions", headers=auth(token(st, 2)),
               json={"answer": "<b>team-two-typed-this</b>"})
        page = c.get(ROOM).text
    forbidden = sorted(set(forbidden_strings(st, 1)) | set(forbidden_strings(st, 2)))
    assert_clean(page, forbidden)
    p = make_plan(Scenario.model_validate(SCENARIO), 2)
    for tp in p.teams:  # no address of any team, its own included
        for n in tp.nodes:
            for ip in n.interfaces.values():
                assert str(ip) not in page
    assert "team-two-typed-this" not in page and "scanner-ip" not in page


def test_hidden_board_hides_the_room_page(tmp_path):
    st = make_range(tmp_path)
    with _client(st, hide_board=True) as c:
        r = c.get(ROOM)
    assert r.status_code == 404 and "Team 1" not in r.text


def test_room_page_in_vietnamese(tmp_path):
    st = make_range(tmp_path)
    with _client(st) as c:
        page = c.get(ROOM, params={"lang": "vi"}).text
    assert '<html lang="vi">' in page and "Đội 1" in page and "đang diễn ra" in page


def test_room_page_is_rendered_at_most_once_a_cache_period(tmp_path, monkeypatch):
    from rangectl.access import room

    calls = []
    real = room.render_room
    monkeypatch.setattr(room, "render_room", lambda *a, **k: calls.append(1) or real(*a, **k))
    st = make_range(tmp_path)
    with _client(st, board_cache_seconds=60.0) as c:
        pages = {c.get(ROOM).text for _ in range(50)}
    assert len(pages) == 1 and len(calls) == 1
