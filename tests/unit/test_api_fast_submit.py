"""The guard serves a well-formed answer without routing (the hot path under load) and answers it
exactly as the routed endpoint does; everything else about an answer request is left to the app."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from rangectl.access.api import Guard, create_app
from rangectl.access.service import TeamService
from tests.unit._mini_range import API, auth, events, make_range

SUB = f"{API}/teams/{{team}}/objectives/{{oid}}/submissions"


def _serve(tmp_path, name, fast: bool):
    rng = make_range(tmp_path, name=name)
    svc = TeamService(rng)
    app = create_app(svc)
    assert isinstance(app, Guard)
    if not fast:  # on by default
        app.fast = False
    return rng, svc, app


class _Unrouted(Exception):
    pass


def test_an_answer_is_served_without_the_application(tmp_path):
    rng, svc, guard = _serve(tmp_path, "fast-only", True)

    async def no_app(scope, receive, send):
        if scope["type"] == "http":
            raise _Unrouted(scope["path"])
        await routed(scope, receive, send)

    routed, guard.app = guard.app, no_app
    try:
        with TestClient(guard, raise_server_exceptions=True) as c:
            r = c.post(
                SUB.format(team="me", oid="c2-domain"), json={"answer": "evil.example"}, headers=auth(rng, 1)
            )
            assert r.status_code == 200 and r.json()["correct"] is True and r.json()["points"] > 0
            assert (
                r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
            )
            r = c.post(SUB.format(team="1", oid="victim"), json={"answer": "carol"}, headers=auth(rng, 1))
            assert r.status_code == 200 and r.json()["correct"] is False
            with pytest.raises(_Unrouted):  # another team's path: the application's 403, not the fast path
                c.post(SUB.format(team="2", oid="victim"), json={"answer": "x"}, headers=auth(rng, 1))
            with pytest.raises(_Unrouted):  # an extra field: the application's 422
                c.post(
                    SUB.format(team="me", oid="victim"), json={"answer": "x", "y": 1}, headers=auth(rng, 1)
                )
    finally:
        svc.close()
    subs = [(e.team, e.data["objective"], e.data["answer"], e.actor) for e in events(rng, "submission")]
    assert subs == [(1, "c2-domain", "evil.example", "team-1"), (1, "victim", "carol", "team-1")]


# every kind of answer request: (team token, path team, objective, raw body, content type, query)
REQUESTS = [
    (1, "me", "c2-domain", {"answer": "evil.example"}, "application/json", ""),
    (1, "me", "c2-domain", {"answer": "again"}, "application/json", ""),  # solved: 409
    (1, "1", "victim", {"answer": " BOB "}, "application/json", ""),
    (2, "me", "victim", {"answer": "x"}, "application/json; charset=utf-8", ""),
    (2, "me", "victim", {"answer": "y"}, "application/json", ""),
    (2, "me", "victim", {"answer": "z"}, "application/json", ""),
    (2, "me", "victim", {"answer": "w"}, "application/json", ""),
    (2, "me", "victim", {"answer": "v"}, "application/json", ""),  # attempts
    (2, "me", "victim", {"answer": "u"}, "application/json", ""),
    (2, "me", "scanner-ip", {"answer": "10.91.0.66"}, "application/json", ""),
    (1, "2", "victim", {"answer": "alice"}, "application/json", ""),  # another team: 403
    (1, "me", "nope", {"answer": "x"}, "application/json", ""),  # unknown objective: 404
    (1, "me", "incident", {"answer": "x"}, "application/json", ""),  # a report: 409
    (1, "me", "x" * 64, {"answer": "x"}, "application/json", ""),  # too long an id: 422
    (1, "me", "victim", {"answer": ""}, "application/json", ""),  # 422
    (1, "me", "victim", {"answer": "a" * 1001}, "application/json", ""),  # 422
    (1, "me", "victim", {"answer": 5}, "application/json", ""),  # strict: 422
    (1, "me", "victim", {"answer": "x", "extra": 1}, "application/json", ""),  # 422
    (1, "me", "victim", "not json", "application/json", ""),
    (1, "me", "victim", {"answer": "x"}, "text/plain", ""),
    (1, "me", "victim", {"answer": "x"}, "application/json", "lang=vi"),
    (1, "me", "victim", {"answer": "Ünïcödé ✓"}, "application/json", ""),
]


class _Near(float):
    """Points equal to within one point (the drill clock moved between the two runs)."""

    def __eq__(self, other):
        return isinstance(other, (int, float)) and abs(self - other) <= 1.0

    __hash__ = float.__hash__


def _exchange(tmp_path, name, fast):
    rng, svc, app = _serve(tmp_path, name, fast)
    out = []
    try:
        with TestClient(app) as c:
            for team, who, oid, body, ctype, query in REQUESTS:
                raw = body if isinstance(body, str) else json.dumps(body)
                url = SUB.format(team=who, oid=oid) + (f"?{query}" if query else "")
                r = c.post(url, content=raw.encode(), headers={**auth(rng, team), "content-type": ctype})
                got = r.json()
                if isinstance(got, dict):
                    got.pop("drill_t", None)  # the drill clock moves between the two runs
                    # points decay with the drill clock, which moves between the two runs (a loaded
                    # machine: a tenth of a point): compared within a point, below
                    if "points" in got:
                        got["points"] = _Near(got["points"])
                    if isinstance(got.get("message"), str):
                        got["message"] = re.sub(r"earns \d+(\.\d+)? points", "earns N points", got["message"])
                heads = {k: v for k, v in r.headers.items() if k not in ("content-length", "date", "server")}
                out.append((r.status_code, got, heads))
    finally:
        svc.close()
    kinds = [
        (e.kind, e.team, {k: v for k, v in e.data.items() if k != "drill_t"})
        for e in events(rng)
        if e.kind.startswith(("submission", "score", "objective"))
    ]
    return out, kinds


def test_the_fast_path_answers_and_records_exactly_as_the_routed_endpoint(tmp_path):
    fast, fast_events = _exchange(tmp_path, "fast-on", True)
    routed, routed_events = _exchange(tmp_path, "fast-off", False)
    for req, a, b in zip(REQUESTS, fast, routed, strict=True):
        assert a == b, req
    assert {s for s, _, _ in fast} >= {200, 403, 404, 409, 422}
    assert [(k, t) for k, t, _ in fast_events] == [(k, t) for k, t, _ in routed_events]
    assert sum(k == "submission" for k, _, _ in fast_events) >= 8
    norm = [
        {k: v for k, v in d.items() if k not in ("points", "seconds", "first_ts", "last_ts", "last_drill_t")}
        for _, _, d in fast_events
    ]
    assert norm == [
        {k: v for k, v in d.items() if k not in ("points", "seconds", "first_ts", "last_ts", "last_drill_t")}
        for _, _, d in routed_events
    ]
