"""The event store: append, hash chain, append-only triggers, tamper detection, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3

import pytest

from rangectl.errors import RangeError, UsageError
from rangectl.store import GENESIS, EventStore, canonical_json, event_hash


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


# --- known answers: the hash is a fixed function of every field, not whatever event_hash computes ---------

# The canonical input of the first known answer, written out: the JSON array
# [seq, ts (a float), kind, team, actor, data as canonical JSON text, prev_hash], no spaces, UTF-8.
KNOWN_INPUT_1 = (
    '[1,1700000000.5,"hint",2,"team-2","{\\"cost\\":20,\\"objective\\":\\"scanner-ip\\"}",'
    '"0000000000000000000000000000000000000000000000000000000000000000"]'
)
KNOWN_HASH_1 = "e7b2a5a17d5f7ddddea21931e0b340a66eb5980ceeee03d04e7672cd797f3773"
# the second: no team (null), a whole-number ts (written 12.0) and non-ASCII text kept as UTF-8, not \\u escapes
KNOWN_INPUT_2 = (
    '[7,12.0,"message",null,"runner","{\\"text\\":\\"Straße ✓\\"}",'
    '"abababababababababababababababababababababababababababababababab"]'
)
KNOWN_HASH_2 = "2d0d01079d541b12cbea436266d5f0f225a99d308965b6ce339d273996df6e83"


def test_known_answer_hashes():
    """event_hash is sha256 of the documented canonical array; the digests were computed once and written here."""
    import hashlib

    assert hashlib.sha256(KNOWN_INPUT_1.encode("utf-8")).hexdigest() == KNOWN_HASH_1
    assert hashlib.sha256(KNOWN_INPUT_2.encode("utf-8")).hexdigest() == KNOWN_HASH_2
    data1 = canonical_json({"objective": "scanner-ip", "cost": 20})
    assert data1 == '{"cost":20,"objective":"scanner-ip"}'
    assert event_hash(1, 1700000000.5, "hint", 2, "team-2", data1, GENESIS) == KNOWN_HASH_1
    data2 = canonical_json({"text": "Straße ✓"})
    assert data2 == '{"text":"Straße ✓"}'
    assert event_hash(7, 12, "message", None, "runner", data2, "ab" * 32) == KNOWN_HASH_2


def test_store_writes_the_known_answer_hash(store):
    """The first event the store writes carries exactly the known-answer hash (and GENESIS as prev_hash)."""
    ev = store.append("hint", {"objective": "scanner-ip", "cost": 20}, team=2, actor="team-2", ts=1700000000.5)
    assert (ev.seq, ev.prev_hash, ev.hash) == (1, GENESIS, KNOWN_HASH_1)
    assert store.events()[0].hash == KNOWN_HASH_1
    res = store.verify()
    assert res.ok and res.count == 1 and res.head_hash == KNOWN_HASH_1


_BASE_FIELDS = {
    "seq": 1,
    "ts": 1700000000.5,
    "kind": "hint",
    "team": 2,
    "actor": "team-2",
    "data_json": '{"cost":20,"objective":"scanner-ip"}',
    "prev_hash": GENESIS,
}


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("seq", 2),
        ("ts", 1700000000.25),
        ("kind", "message"),
        ("team", 1),
        ("team", None),
        ("actor", "team-1"),
        ("data_json", '{"cost":0,"objective":"scanner-ip"}'),
        ("prev_hash", "f" * 64),
    ],
)
def test_every_hashed_field_changes_the_hash(field, other):
    """Each of seq, ts, kind, team, actor, data and prev_hash is part of the hash: changing one changes it."""
    assert event_hash(**_BASE_FIELDS) == KNOWN_HASH_1
    assert event_hash(**{**_BASE_FIELDS, field: other}) != KNOWN_HASH_1


def test_canonical_json_is_one_text_per_value():
    """Sorted keys, no spaces, UTF-8 kept, NaN refused: equal data always gives the same text (and hash)."""
    assert canonical_json({"b": [1, 2.5], "a": {"y": None, "x": True}}) == '{"a":{"x":true,"y":null},"b":[1,2.5]}'
    assert canonical_json({"t": "Đà Nẵng"}) == '{"t":"Đà Nẵng"}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("inf")})


# --- tampering with any stored field is named by verify() ---------------------------------------------------

TAMPER = {
    "kind": ("UPDATE events SET kind = 'message' WHERE seq = 5", 5),  # a submission passed off as a message
    "kind-hint": ("UPDATE events SET kind = 'hint' WHERE seq = 6", 6),
    "team": ("UPDATE events SET team = 3 - team WHERE seq = 4", 4),  # credited to the other team
    "team-null": ("UPDATE events SET team = NULL WHERE seq = 8", 8),
    "actor": ("UPDATE events SET actor = 'team-1' WHERE seq = 3", 3),  # the trainer's act passed off as a team's
    "ts": ("UPDATE events SET ts = ts - 30 WHERE seq = 9", 9),
    "data": ("UPDATE events SET data = replace(data, '\"correct\":false', '\"correct\":true') WHERE seq = 7", 7),
    "hash": ("UPDATE events SET hash = ? WHERE seq = 2", 2),
}


@pytest.mark.parametrize("field", sorted(TAMPER))
def test_tampering_with_one_field_is_named(tmp_path, store, field):
    """Rewriting any hashed column of one event (triggers dropped) makes verify() name exactly that event."""
    _fill(store)
    sql, seq = TAMPER[field]
    before = store.events()[seq - 1]
    _tamper(tmp_path / "range.db", sql, *(["0" * 63 + "1"] if "?" in sql else []))
    s = EventStore(tmp_path / "range.db")
    after = s.events()[seq - 1]
    assert after != before, "the tamper changed nothing"
    res = s.verify()
    assert (res.ok, res.first_bad_seq, res.count) == (False, seq, seq - 1)
    assert res.head_hash == (before.prev_hash if seq > 1 else GENESIS)  # the last event that checked out
    assert res.reason == "hash does not match the event's contents (edited after it was written)"
    s.close()


def test_prev_hash_rewritten_is_named(tmp_path, store):
    """A prev_hash that no longer links (even with the event's own hash recomputed) is named at that event."""
    _fill(store)
    ev = store.events()[4]  # seq 5
    fake_prev = "e" * 64
    new_hash = event_hash(ev.seq, ev.ts, ev.kind, ev.team, ev.actor, canonical_json(ev.data), fake_prev)
    _tamper(tmp_path / "range.db", "UPDATE events SET prev_hash = ?, hash = ? WHERE seq = 5", fake_prev, new_hash)
    res = EventStore(tmp_path / "range.db").verify()
    assert (res.first_bad_seq, res.count) == (5, 4) and res.reason == "prev_hash does not link to the previous event"


def test_seq_renumbered_is_named(tmp_path, store):
    _fill(store, 5)
    _tamper(tmp_path / "range.db", "UPDATE events SET seq = 9 WHERE seq = 5")
    res = EventStore(tmp_path / "range.db").verify()
    assert (res.first_bad_seq, res.count) == (9, 4)
    assert res.reason == "events 5..8 are missing (seq 9 follows 4)"


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("UPDATE events SET ts = 'noon' WHERE seq = 3", "a column has the wrong type"),
        ("UPDATE events SET kind = x'68696e74' WHERE seq = 3", "a column has the wrong type"),  # bytes
        ("UPDATE events SET actor = x'7878' WHERE seq = 3", "a column has the wrong type"),
        ("UPDATE events SET team = 'two' WHERE seq = 3", "team is not an integer"),
        ("UPDATE events SET data = '{not json' WHERE seq = 3", "data is not valid JSON"),
    ],
)
def test_malformed_columns_are_named(tmp_path, store, sql, reason):
    _fill(store, 5)
    _tamper(tmp_path / "range.db", sql)
    res = EventStore(tmp_path / "range.db").verify()
    assert (res.ok, res.first_bad_seq, res.reason) == (False, 3, reason)


def test_verify_counts_and_reports_the_head(store):
    """An intact log: ok, every event counted, head_hash = the last event's hash; an empty log: GENESIS."""
    res = store.verify()
    assert (res.ok, res.count, res.first_bad_seq, res.head_hash) == (True, 0, None, GENESIS) and bool(res)
    _fill(store, 4)
    res = store.verify()
    assert (res.ok, res.count, res.first_bad_seq, res.reason) == (True, 4, None, "")
    assert res.head_hash == store.events()[-1].hash


# --- reading and writing: the store's documented interface ------------------------------------------------


def test_events_filters_limit_and_families(store):
    """kind (one, several, or a family "x.*"), team, after_seq and limit select exactly the documented rows."""
    store.append_many(
        [
            ("drill.start", {}),
            ("drill.pause", {}),
            ("drillx", {}),  # not in the drill.* family
            ("inject.start", {"inject": "a"}, 1),
            ("inject.done", {"inject": "a"}, 1),
            ("hint", {"objective": "o"}, 2),
            ("drill.resume", {}),
        ]
    )
    assert [e.seq for e in store.events(kind="drill.*")] == [1, 2, 7]
    assert [e.seq for e in store.events(kind="inject.*", team=1)] == [4, 5]
    assert [e.seq for e in store.events(kind=["hint", "drillx"])] == [3, 6]
    assert store.events(kind=[]) == []
    assert [e.seq for e in store.events(limit=2)] == [1, 2]
    assert [e.seq for e in store.events(after_seq=5, limit=1)] == [6]
    assert [e.seq for e in store.events(team=2)] == [6]
    assert [e.seq for e in store.events(kind="drill.*", after_seq=2)] == [7]


def test_event_fields_round_trip(store):
    ev = store.append("check", {"objective": "o", "passed": True, "drill_t": 12}, team=1, actor="runner", ts=5)
    got = store.events()[0]
    assert got == ev and isinstance(got.ts, float) and got.ts == 5.0
    assert got.as_dict() == {
        "seq": 1,
        "ts": 5.0,
        "kind": "check",
        "team": 1,
        "actor": "runner",
        "data": {"drill_t": 12, "objective": "o", "passed": True},
        "prev_hash": GENESIS,
        "hash": ev.hash,
    }
    assert got.drill_t == 12.0
    assert store.append("drill.pause", {"drill_t": "soon"}).drill_t is None


def test_default_time_is_now_and_default_actor_is_the_trainer(store):
    import time

    t0 = time.time()
    ev = store.append("score", {"points": 1})
    assert t0 - 1 <= ev.ts <= time.time() + 1 and ev.actor == "trainer" and ev.team is None


def test_append_many_mappings_and_tuples(store):
    evs = store.append_many(
        [
            {"kind": "score", "data": {"points": 2}, "team": 1, "actor": "judge", "ts": 10.0},
            {"kind": "drill.pause"},
            ("hint", {"objective": "o"}, 2, "team-2", 11.0),
        ]
    )
    assert [(e.kind, e.team, e.actor, e.data) for e in evs] == [
        ("score", 1, "judge", {"points": 2}),
        ("drill.pause", None, "trainer", {}),
        ("hint", 2, "team-2", {"objective": "o"}),
    ]
    assert (evs[0].ts, evs[2].ts) == (10.0, 11.0)
    with pytest.raises(UsageError, match=r"unknown keys \['colour'\]"):
        store.append_many([{"kind": "hint", "data": {}, "colour": "red"}])
    assert store.count() == 3 and store.verify().ok


@pytest.mark.parametrize(
    ("kind", "data", "team", "actor", "message"),
    [
        ("Hint", {}, None, "x", "event kind 'Hint' is not valid (lower-case words joined by '.', e.g. inject.done)"),
        ("drill..start", {}, None, "x", "event kind 'drill..start' is not valid (lower-case words joined by '.'"),
        (3, {}, None, "x", "event kind 3 is not valid"),
        ("hint", [], None, "x", "event data must be a mapping, not list"),
        ("hint", {}, True, "x", "event team must be an integer or None, not True"),
        ("hint", {}, "1", "x", "event team must be an integer or None"),
        ("hint", {}, None, "", "event actor must be a non-empty string"),
        ("hint", {}, None, None, "event actor must be a non-empty string"),
    ],
)
def test_bad_items_are_refused_with_a_reason(store, kind, data, team, actor, message):
    with pytest.raises(UsageError) as e:
        store.append(kind, data, team=team, actor=actor)
    assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(UsageError):
        store.append_many([("drill.start", {}), (kind, data, team, actor)])
    assert store.count() == 0


def test_valid_kinds_are_accepted(store):
    for kind in ("a", "drill.start", "submission.refused", "x-y_z.q1", "k9"):
        store.append(kind, {})
    assert store.count() == 5


def test_nan_in_data_names_the_problem(store):
    with pytest.raises(UsageError, match="event data is not valid JSON"):
        store.append("score", {"points": float("nan")})


def test_transaction_reads_and_appends_atomically(store):
    """Inside one transaction: last_seq moves with each append, events() sees them; an error undoes all."""
    store.append("drill.start", {})
    with store.transaction() as tx:
        assert tx.last_seq == 1
        a = tx.append("hint", {"objective": "o"}, team=1)
        assert tx.last_seq == 2 and a.prev_hash == store.events()[0].hash
        assert [e.seq for e in tx.events(kind="hint", team=1)] == [2]
        assert [e.seq for e in tx.events(after_seq=1)] == [2]
    assert store.last_seq() == 2
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.append("hint", {"objective": "o"}, team=1)
            raise RuntimeError("boom")
    assert store.count() == 2 and store.last_seq() == 2 and store.verify().ok


def test_missing_folder_and_bad_file_are_one_line_errors(tmp_path):
    with pytest.raises(RangeError, match="folder .* does not exist"):
        EventStore(tmp_path / "nope" / "range.db")
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RangeError, match="cannot open the event store"):
        EventStore(bad)


def test_context_manager_closes(tmp_path):
    with EventStore(tmp_path / "range.db") as s:
        s.append("drill.start", {})
    with pytest.raises(sqlite3.ProgrammingError):
        s.count()
