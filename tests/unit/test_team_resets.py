"""`respond reset NODE`: a team re-creates one of its own nodes, at the policy's cost, only where allowed.

The re-creation itself (rangectl.ranges.reset_node) is tested on a real engine in
tests/integration/test_reset_docker.py; here a recording stand-in takes its place.
"""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from rangectl.access import resets
from rangectl.access.api import create_app
from rangectl.access.ratelimit import RateLimit
from rangectl.access.resets import TeamResets
from rangectl.access.service import Settings, TeamService
from tests.unit import test_access_api as base

API = "/api/v1"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setitem(base.SCENARIO["nodes"]["soc"], "reset", ["portal"])
    st = base.make_range(tmp_path, name="resets")
    calls: list[tuple[str, int]] = []
    gate = threading.Event()

    def fake_reset(node: str, team: int) -> dict:
        calls.append((node, team))
        gate.wait(10)
        return {"container": f"new-{node}-{team}", "provisioned": True}

    svc = TeamService(st, Settings(rate=RateLimit(per_minute=0)))
    svc.resets = TeamResets(st, fake_reset)
    with TestClient(create_app(svc), raise_server_exceptions=False) as c:
        yield st, c, svc, calls, gate
    gate.set()


def _post(c, st, team: int, node: str, as_team: int | None = None):
    tok = base.token(st, as_team or team)
    return c.post(f"{API}/teams/{team}/nodes/{node}/reset", headers=base.auth(tok))


def test_an_allowed_reset_is_recorded_costed_and_run(setup):
    st, c, svc, calls, gate = setup
    r = _post(c, st, 1, "portal")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] and body["node"] == "portal" and body["cost"] == 50.0
    gate.set()
    svc.resets.wait(10)
    assert calls == [("portal", 1)]
    req = base.events(st, "node.reset.request", team=1)
    score = base.events(st, "score", team=1)
    done = base.events(st, "node.reset", team=1)
    assert [e.data["node"] for e in req] == ["portal"] and req[0].actor == "team-1"
    assert [(e.data["points"], e.data["category"]) for e in score] == [(-50.0, "adjustments")]
    assert done and done[0].data["container"] == "new-portal-1" and done[0].actor == "team-1"
    # the cost shows in the team's own score
    total = c.get(f"{API}/teams/me/score", headers=base.auth(base.token(st, 1))).json()["total"]
    assert total == pytest.approx(-50.0, abs=0.01), total


def test_a_node_the_scenario_did_not_allow_is_refused_and_nothing_recorded(setup):
    st, c, _, calls, _ = setup
    before = base.count(st)
    for node in ("gw", "scanner", "soc", "nosuch"):
        r = _post(c, st, 1, node)
        assert r.status_code == 404, (node, r.text)
        assert "does not let teams reset" in r.json()["detail"]
    assert base.count(st) == before and calls == []


def test_another_teams_node_cannot_be_reset(setup):
    st, c, _, calls, _ = setup
    before = base.count(st)
    r = _post(c, st, 2, "portal", as_team=1)
    assert r.status_code == 403
    assert base.count(st) == before and calls == []


def test_one_reset_at_a_time_then_a_cooldown(setup, monkeypatch):
    st, c, svc, calls, gate = setup
    assert _post(c, st, 1, "portal").status_code == 202
    r = _post(c, st, 1, "portal")
    assert r.status_code == 409 and "already under way" in r.json()["detail"]
    gate.set()
    svc.resets.wait(10)
    r = _post(c, st, 1, "portal")
    assert r.status_code == 409 and "less than 60s ago" in r.json()["detail"]
    # team 2 is not held up by team 1
    assert _post(c, st, 2, "portal").status_code == 202
    now = svc.resets.clock()
    monkeypatch.setattr(svc.resets, "clock", lambda: now + resets.COOLDOWN_SECONDS + 1)
    assert _post(c, st, 1, "portal").status_code == 202
    svc.resets.wait(10)
    assert calls.count(("portal", 1)) == 2 and len(base.events(st, "score", team=1)) == 2


def test_a_failed_reset_is_recorded_as_failed(tmp_path, monkeypatch):
    monkeypatch.setitem(base.SCENARIO["nodes"]["soc"], "reset", ["portal"])
    st = base.make_range(tmp_path, name="resets-fail")

    def broken(node: str, team: int) -> dict:
        raise RuntimeError("engine said no")

    tr = TeamResets(st, broken)
    tr.request(1, "portal", 10.0)
    tr.wait(10)
    failed = base.events(st, "node.reset.failed", team=1)
    assert [e.data["error"] for e in failed] == ["engine said no"]
    assert not base.events(st, "node.reset", team=1)


def test_without_a_reset_function_serve_refuses(tmp_path):
    st = base.make_range(tmp_path, name="resets-off")
    svc = TeamService(st, Settings(rate=RateLimit(per_minute=0)))
    with TestClient(create_app(svc), raise_server_exceptions=False) as c:
        r = _post(c, st, 1, "portal")
    assert r.status_code == 404 and "does not let teams reset" in r.json()["detail"]
