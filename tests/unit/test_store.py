"""The event store: append, hash chain, append-only triggers, tamper detection, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3

import pytest

from rangectl.drill.store import GENESIS, EventStore, canonical_json, event_hash
from rangectl.errors import UsageError


@pytest.fixture
def store(tmp_path):
    s = EventStore(tmp_path / "range.db")
    yield s
    s.close()


def test_append_chains_events(store):
    a = store.append("drill.start", {"wall_start": 100.0, "time_scale": 1.0}, actor="runner", ts=100.0)
    b = store.append(
        "submission", {"objective": "x", "answer": "1.2.3.4", "correct": False}, team=2, ts=101.5
    )
    assert (a.seq, b.seq) == (1, 2)
    assert a.prev_hash == GENESIS and b.prev_hash == a.hash
    assert a.hash == event_hash(1, 100.0, "drill.start", None, "runner", canonical_json(a.data), GENESIS)
    assert b.team == 2 and b.actor == "trainer" and b.ts == 101.5
    got = store.events()
    assert [e.hash for e in got] == [a.hash, b.hash]
    assert got[1].data == {"answer": "1.2.3.4", "correct": False, "objective": "x"}


def test_filters_and_append_many(store):
    evs = store.append_many(
        [
            ("drill.start", {}),
            {"kind": "inject.start", "data": {"inject": "recon"}, "team": 1, "actor": "runner"},
            ("inject.start", {"inject": "recon"}, 2, "runner"),
            ("drill.pause", {}),
        ]
    )
    assert [e.seq for e in evs] == [1, 2, 3, 4]
    assert [e.kind for e in store.events(kind="drill.*")] == ["drill.start", "drill.pause"]
    assert [e.seq for e in store.events(kind="inject.start", team=2)] == [3]
    assert [e.seq for e in store.events(kind=("drill.pause", "inject.start"))] == [2, 3, 4]
    assert [e.seq for e in store.events(after_seq=2)] == [3, 4]
    assert store.last_seq() == 4 and store.count() == 4
    assert store.verify().ok


def test_append_many_is_all_or_nothing(store):
    store.append("drill.start", {})
    with pytest.raises(UsageError):
        store.append_many([("hint", {"objective": "x"}, 1), ("Bad Kind", {})])
    assert store.count() == 1


def test_bad_input_refused(store):
    with pytest.raises(UsageError):
        store.append("not a kind", {})
    with pytest.raises(UsageError):
        store.append("hint", ["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        store.append("hint", {"x": float("nan")})
    assert store.count() == 0


def test_update_and_delete_refused_by_triggers(tmp_path, store):
    store.append("drill.start", {})
    store.append("hint", {"objective": "x", "cost": 5}, team=1)
    conn = sqlite3.connect(tmp_path / "range.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE events SET data = '{}' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM events WHERE seq = 1")
    # an insert that does not extend the chain is refused too
    with pytest.raises(sqlite3.IntegrityError, match="chain"):
        conn.execute("INSERT INTO events VALUES (7, 1.0, 'hint', 1, 'x', '{}', ?, 'h')", (GENESIS,))
    conn.close()
    assert store.count() == 2 and store.verify().ok


def _tamper(db, sql, *args):
    conn = sqlite3.connect(db)
    conn.executescript(
        "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete; DROP TRIGGER events_chain;"
    )
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def _fill(store, n=10):
    store.append("drill.start", {"wall_start": 0.0})
    for i in range(2, n + 1):
        store.append("submission", {"objective": "x", "answer": str(i), "correct": False}, team=1 + i % 2)


def test_edited_event_is_named(tmp_path, store):
    _fill(store)
    _tamper(
        tmp_path / "range.db",
        "UPDATE events SET data = ? WHERE seq = 5",
        json.dumps({"objective": "x", "answer": "5", "correct": True}),
    )
    res = EventStore(tmp_path / "range.db").verify()
    assert not res.ok and res.first_bad_seq == 5 and res.count == 4
    assert "hash does not match" in res.reason


def test_edited_team_or_time_is_named(tmp_path, store):
    _fill(store)
    _tamper(tmp_path / "range.db", "UPDATE events SET team = 9 WHERE seq = 7")
    assert EventStore(tmp_path / "range.db").verify().first_bad_seq == 7
    _tamper_ts = sqlite3.connect(tmp_path / "range.db")
    _tamper_ts.executescript("DROP TRIGGER events_no_update;")
    _tamper_ts.execute("UPDATE events SET ts = ts + 1 WHERE seq = 3")
    _tamper_ts.commit()
    _tamper_ts.close()
    assert EventStore(tmp_path / "range.db").verify().first_bad_seq == 3


def test_deleted_event_is_named(tmp_path, store):
    _fill(store)
    _tamper(tmp_path / "range.db", "DELETE FROM events WHERE seq = 4")
    res = EventStore(tmp_path / "range.db").verify()
    assert not res.ok and res.first_bad_seq == 5 and "missing" in res.reason


def test_rehashed_edit_breaks_the_next_link(tmp_path, store):
    """Recomputing the edited event's own hash is not enough: the next event's prev_hash gives it away."""
    _fill(store)
    ev = store.events()[5]  # seq 6
    data = canonical_json({**ev.data, "correct": True})
    new_hash = event_hash(ev.seq, ev.ts, ev.kind, ev.team, ev.actor, data, ev.prev_hash)
    _tamper(tmp_path / "range.db", "UPDATE events SET data = ?, hash = ? WHERE seq = 6", data, new_hash)
    res = EventStore(tmp_path / "range.db").verify()
    assert res.first_bad_seq == 7 and "prev_hash" in res.reason


def test_reopening_rearms_triggers(tmp_path, store):
    _fill(store, 3)
    _tamper(tmp_path / "range.db", "SELECT 1")
    EventStore(tmp_path / "range.db").close()
    conn = sqlite3.connect(tmp_path / "range.db")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM events")
    conn.close()


def test_shares_the_range_db_with_meta(tmp_path):
    from rangectl.state import connect

    conn = connect(tmp_path / "range.db")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('teams', '2')")
    conn.close()
    s = EventStore(tmp_path / "range.db")
    s.append("drill.start", {})
    assert s.verify().ok
    assert sqlite3.connect(tmp_path / "range.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(db: str, who: int, n: int) -> None:
    s = EventStore(db)
    for i in range(n):
        s.append("score", {"points": 1, "reason": f"w{who}-{i}"}, team=who, actor=f"writer-{who}")
    s.close()


def test_concurrent_writers_from_two_processes_chain(tmp_path):
    db = str(tmp_path / "range.db")
    EventStore(db).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, k, 150)) for k in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = EventStore(db)
    evs = s.events()
    assert [e.seq for e in evs] == list(range(1, 301))
    assert all(b.prev_hash == a.hash for a, b in zip(evs, evs[1:], strict=False))
    for k in (1, 2):  # each writer's own events stay in its order
        assert [e.data["reason"] for e in evs if e.team == k] == [f"w{k}-{i}" for i in range(150)]
    res = s.verify()
    assert res.ok and res.count == 300 and res.head_hash == evs[-1].hash
