"""Issue 16, finding 9 (the team API's part): websockets skip no guard, a busy store leaks no path,
report fields are the JSON values as sent (no YAML round trip)."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from rangectl.access.api import Guard, create_app
from rangectl.access.service import ApiError, TeamService
from tests.unit._mini_range import API, auth, events, make_range


@pytest.fixture
def rng(tmp_path):
    return make_range(tmp_path)


@pytest.fixture
def svc(rng):
    s = TeamService(rng)
    yield s
    s.close()


# --- websockets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"{API}/whoami", f"{API}/health", f"{API}/teams/me/score", "/nowhere"])
def test_websocket_without_token_is_closed_before_the_app(svc, path):
    with TestClient(create_app(svc)) as c:
        with pytest.raises(WebSocketDisconnect) as exc:
            with c.websocket_connect(path) as ws:
                ws.receive_text()
        assert exc.value.code == 1008


def test_websocket_with_a_token_is_closed_too(svc, rng):
    with TestClient(create_app(svc)) as c:
        with pytest.raises(WebSocketDisconnect) as exc:
            with c.websocket_connect(f"{API}/teams/me/score", headers=auth(rng, 1)) as ws:
                ws.receive_text()
        assert exc.value.code == 1008


def test_non_http_scopes_never_reach_the_app(svc):
    called: list[str] = []

    async def app(scope, receive, send):
        called.append(scope["type"])

    guard = Guard(app, svc, 1024)
    sent: list[dict] = []

    async def send(msg):
        sent.append(msg)

    async def receive_connect():
        return {"type": "websocket.connect"}

    asyncio.run(guard({"type": "websocket", "path": f"{API}/whoami", "headers": []}, receive_connect, send))
    assert called == [] and sent == [{"type": "websocket.close", "code": 1008, "reason": "HTTP only"}]
    asyncio.run(guard({"type": "something-else", "path": "/"}, receive_connect, send))
    assert called == []
    # lifespan is not a request: it still reaches the app
    asyncio.run(guard({"type": "lifespan"}, receive_connect, send))
    assert called == ["lifespan"]


# --- a busy store ----------------------------------------------------------------------------------------


def _lock_store(rng) -> sqlite3.Connection:
    """Another writer holds the store's write lock."""
    conn = sqlite3.connect(rng.db_path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _assert_generic_busy(r, rng) -> None:
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": "busy, retry"}
    assert r.headers["retry-after"] == "1"
    for leak in (str(rng.dir), str(rng.db_path), "range.db", "locked", "sqlite"):
        assert leak not in r.text


def test_busy_store_is_a_generic_503_without_paths(svc, rng):
    a = auth(rng, 1)
    with TestClient(create_app(svc)) as c:
        assert c.get(f"{API}/whoami", headers=a).status_code == 200
        svc.ctx().store._conn.execute("PRAGMA busy_timeout=50")
        lock = _lock_store(rng)
        try:
            r = c.post(f"{API}/teams/me/objectives/c2-domain/submissions", json={"answer": "x"}, headers=a)
            _assert_generic_busy(r, rng)
            r = c.post(f"{API}/teams/me/objectives/scanner-ip/hints", headers=a)
            _assert_generic_busy(r, rng)
            r = c.post(
                f"{API}/teams/me/reports",
                json={"objective": "incident", "fields": {"summary": "s"}},
                headers=a,
            )
            _assert_generic_busy(r, rng)
            with pytest.raises(ApiError) as exc:  # the service's own entry point (not batched)
                svc.submit(1, "victim", "x")
            assert exc.value.status == 503 and exc.value.detail == "busy, retry"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        # the lock gone, the same requests go through
        r = c.post(f"{API}/teams/me/objectives/c2-domain/submissions", json={"answer": "x"}, headers=a)
        assert r.status_code == 200 and r.json()["attempt"] == 1


def test_busy_store_raised_anywhere_is_the_same_503(svc, rng, monkeypatch):
    from rangectl.store import StoreBusy

    def boom(*a, **k):
        raise StoreBusy(f"the event store {rng.db_path} is busy")

    monkeypatch.setattr(svc, "score", boom)
    with TestClient(create_app(svc)) as c:
        _assert_generic_busy(c.get(f"{API}/teams/me/score", headers=auth(rng, 1)), rng)
        monkeypatch.setattr(
            svc, "score", lambda team: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked"))
        )
        _assert_generic_busy(c.get(f"{API}/teams/me/score", headers=auth(rng, 1)), rng)


def test_refusal_summaries_survive_a_busy_store(svc, rng):
    log = svc.refusals
    for i in range(5):
        log.note("submission.refused", 1, "c2-domain", f"try-{i}", now=1000.0 + i)
    svc.ctx().store._conn.execute("PRAGMA busy_timeout=50")
    lock = _lock_store(rng)
    try:
        with pytest.raises(Exception, match="busy"):
            log.flush(now=2000.0)
        assert log.pending() == 5
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert log.flush(now=2000.0) == 1 and log.pending() == 0
    (ev,) = events(rng, "submission.refused")
    assert ev.data["count"] == 5 and ev.team == 1


# --- report fields as sent -------------------------------------------------------------------------------


def _report(c, rng, team: int, fields: dict):
    body = json.dumps({"objective": "incident", "fields": fields}, ensure_ascii=True)
    return c.post(
        f"{API}/teams/me/reports",
        content=body,
        headers={**auth(rng, team), "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    "text",
    [
        "\u0080",
        "\ufffe",
        "a\u0085b",
        "x\u2028y\u2029z",
        "tab\there\r\nnext",
        " lead and trail ",
        "\U0001f600 \x7f",
    ],
)
def test_report_text_is_accepted_and_stored_exactly(tmp_path, text):
    rng = make_range(tmp_path, "rep")
    svc = TeamService(rng)
    with TestClient(create_app(svc)) as c:
        r = _report(c, rng, 1, {"summary": text, "notes": text})
        assert r.status_code == 200, r.text
    svc.close()
    (ev,) = events(rng, "report", team=1)
    assert ev.data["fields"] == {"summary": text, "notes": text}
    assert ev.data["file"] == "report-via-api.json"


def test_report_values_keep_their_json_types(svc, rng):
    with TestClient(create_app(svc)) as c:
        r = _report(c, rng, 2, {"summary": "1e3", "notes": 12})
        assert r.status_code == 200, r.text
    (ev,) = events(rng, "report", team=2)
    assert ev.data["fields"] == {"summary": "1e3", "notes": 12}  # "1e3" stays text, 12 a number


def test_report_service_refuses_what_the_record_cannot_hold(svc):
    with pytest.raises(ApiError) as exc:
        svc.report(1, "incident", {"summary": "bad \ud800 surrogate"})
    assert exc.value.status == 422 and "Unicode" in exc.value.detail
    with pytest.raises(ApiError) as exc:
        svc.report(1, "incident", {"summary": ["a", "list"]})
    assert exc.value.status == 422
    with pytest.raises(ApiError) as exc:
        svc.report(1, "incident", {"notes": "only notes"})
    assert exc.value.status == 422 and "summary" in exc.value.detail
    assert svc.report(1, "incident", {"summary": "fine"})["accepted"] is True


def test_report_json_body_with_a_lone_surrogate_is_a_422(svc, rng):
    with TestClient(create_app(svc)) as c:
        r = c.post(
            f"{API}/teams/me/reports",
            content=b'{"objective": "incident", "fields": {"summary": "\\ud800"}}',
            headers={**auth(rng, 1), "Content-Type": "application/json"},
        )
        assert r.status_code == 422 and "Traceback" not in r.text
    assert events(rng, "report") == []
