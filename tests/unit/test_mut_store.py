"""The event store's anchors, nesting and counters, one behaviour per test (written against surviving mutants).

Checkpoints (``range.checkpoints`` beside ``range.db``) anchor the chain's head outside the
database; verify() holds the record against them.
"""

from __future__ import annotations

import time

import pytest

from rangectl.store import (
    GENESIS,
    Checkpoint,
    EventStore,
    checkpoint_path,
    last_checkpoint,
    read_checkpoints,
    write_checkpoint,
)

H = "ab" * 32


@pytest.fixture
def store(tmp_path):
    s = EventStore(tmp_path / "range.db")
    yield s
    s.close()


def test_checkpoint_file_sits_beside_the_database():
    assert str(checkpoint_path("/x/range.db")) == "/x/range.checkpoints"


def test_checkpoint_as_dict_and_line():
    cp = Checkpoint(7, H, 1700000000.25)
    assert cp.as_dict() == {"seq": 7, "head": H, "ts": 1700000000.25}
    assert cp.line() == f"7 {H} 1700000000.250000\n"


def test_a_checkpoint_of_an_empty_record_is_genesis_now(store):
    t0 = time.time()
    cp = store.checkpoint()
    assert (cp.seq, cp.hash) == (0, GENESIS) and t0 - 1 <= cp.ts <= time.time() + 1
    assert read_checkpoints(store.checkpoint_path) == [cp]
    assert store.verify().ok


def test_a_checkpoint_anchors_the_current_head_with_the_time(store):
    store.append("hint", {"objective": "o"}, team=1)
    ev = store.append("score", {"points": 1}, team=1)
    t0 = time.time()
    cp = store.checkpoint()
    assert (cp.seq, cp.hash) == (2, ev.hash) and abs(cp.ts - t0) < 5
    assert store.last_checkpoint() == cp


def test_an_empty_store_counts_nothing(store):
    assert (store.last_seq(), store.count(), store.events()) == (0, 0, [])


def test_last_checkpoint_is_the_highest_seq_and_skips_bad_lines(tmp_path):
    f = tmp_path / "range.checkpoints"
    assert last_checkpoint(f) is None  # no file
    f.write_bytes(
        f"3 {H} 10.0\n".encode()
        + f"9 {H} 11.0\n".encode()
        + "junk \xe9\xe8 line\n".encode("latin-1")  # not ASCII: ignored, not an error
        + f"5 {H} 12.0\n".encode()
        + b"not a checkpoint\n"
    )
    cp = last_checkpoint(f)
    assert (cp.seq, cp.ts) == (9, 11.0)


def test_last_checkpoint_reads_a_long_file_by_its_tail(tmp_path):
    f = tmp_path / "range.checkpoints"
    for seq in range(1, 400):  # ~35 kB: only the last 8 kB are read
        write_checkpoint(f, Checkpoint(seq, H, 1000.0 + seq))
    assert last_checkpoint(f) == Checkpoint(399, H, 1399.0)


def test_read_checkpoints_names_an_altered_line(tmp_path):
    from rangectl.errors import RangeError

    f = tmp_path / "range.checkpoints"
    f.write_text(f"1 {H} 5.0\n2 nothex 6.0\n")
    with pytest.raises(RangeError, match=r"range.checkpoints line 2 is not 'SEQ HASH TIME'"):
        read_checkpoints(f)
    f.write_text(f"1 {H} 5.0\n2 {H} 6")  # a torn last line (a crash mid-write) is ignored
    assert read_checkpoints(f) == [Checkpoint(1, H, 5.0)]


def test_verify_names_when_the_rewritten_part_was_anchored(tmp_path, store):
    """A record rewritten before a checkpoint: verify names the event and the checkpoint's time (UTC)."""
    store.append("hint", {"objective": "o"}, team=1)
    write_checkpoint(store.checkpoint_path, Checkpoint(1, "c" * 64, 1700000000.0))
    res = store.verify()
    assert not res.ok and res.first_bad_seq == 1
    assert res.reason == (
        f"event 1's hash {store.events()[0].hash} is not the {'c' * 64} checkpointed at "
        "2023-11-14 22:13:20 UTC: the record was rewritten at or before event 1"
    )
    assert res.checkpoints == 1 and res.anchor == Checkpoint(1, "c" * 64, 1700000000.0)


def test_verify_names_events_cut_off_after_a_checkpoint(store):
    store.append("hint", {"objective": "o"}, team=1)
    write_checkpoint(store.checkpoint_path, Checkpoint(4, H, 1700000000.0))
    res = store.verify()
    assert (res.ok, res.count, res.first_bad_seq) == (False, 1, 2)
    assert res.reason == (
        "the record ends at event 1 but event 4 was checkpointed at 2023-11-14 22:13:20 UTC: "
        "events 2..4 were cut off"
    )


def test_transaction_events_reads_everything_by_default(store):
    store.append_many(
        [("drill.start", {}), ("hint", {"objective": "o"}, 1), ("score", {"points": 1}, 1), ("hint", {"objective": "o"}, 2)]
    )
    with store.transaction() as tx:
        assert [e.seq for e in tx.events()] == [1, 2, 3, 4]
        assert [e.seq for e in tx.events(kind="hint")] == [2, 4]
        assert [e.seq for e in tx.events(team=1)] == [2, 3]
        assert [e.seq for e in tx.events(kind="hint", team=1)] == [2]


def test_nested_transactions_three_deep_roll_back_only_their_own_appends(store):
    with store.transaction() as outer:
        outer.append("hint", {"objective": "a"}, team=1)
        with store.transaction() as mid:
            mid.append("hint", {"objective": "b"}, team=1)
            with pytest.raises(RuntimeError):
                with store.transaction() as inner:
                    inner.append("hint", {"objective": "c"}, team=1)
                    raise RuntimeError("undo c only")
            with store.transaction() as inner2:
                inner2.append("hint", {"objective": "d"}, team=1)
        assert outer.last_seq == 3
    assert [e.data["objective"] for e in store.events()] == ["a", "b", "d"]
    assert [e.seq for e in store.events()] == [1, 2, 3] and store.verify().ok



@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (f"12 {H} 5.5", True),
        (f"x {H} 5.5", False),
        (f"-1 {H} 5.5", False),
        (f"12 {H[:-1]} 5.5", False),
        (f"12 {H.upper()} 5.5", False),
        (f"12 {H}", False),
        (f"12 {H} 5.5 extra", False),
        (f"12 {H} noon", False),
    ],
)
def test_a_checkpoint_line_is_exactly_seq_hash_time(line, ok):
    from rangectl.store import parse_checkpoint

    assert (parse_checkpoint(line) == Checkpoint(12, H, 5.5)) if ok else parse_checkpoint(line) is None


def test_transaction_appends_as_the_trainer_by_default(store):
    with store.transaction() as tx:
        ev = tx.append("score", {"points": 1}, team=1)
    assert ev.actor == "trainer" and store.events()[0].actor == "trainer"


def test_an_expected_head_must_be_a_full_hash(store):
    from rangectl.errors import UsageError

    with pytest.raises(UsageError) as e:
        store.verify(expect_head="abc123")
    assert str(e.value) == "an expected head is the full 64-character hex hash (verify prints it)"


def test_an_altered_checkpoint_file_fails_verify_before_any_event_is_read(store):
    store.append("hint", {"objective": "o"}, team=1)
    store.checkpoint_path.write_text("this is not a checkpoint\n")
    res = store.verify()
    assert (res.ok, res.count, res.first_bad_seq) == (False, 0, None)
    assert res.reason == "range.checkpoints line 1 is not 'SEQ HASH TIME': the checkpoint file was altered"
    assert store.verify(checkpoints=False).ok  # the chain itself is intact


def _three(store):
    return [store.append("hint", {"objective": o}, team=1) for o in ("a", "b", "c")]


def test_a_checkpoint_of_the_empty_record_must_be_genesis(store):
    evs = _three(store)
    write_checkpoint(store.checkpoint_path, Checkpoint(0, GENESIS, 5.0))
    assert store.verify().ok
    write_checkpoint(store.checkpoint_path, Checkpoint(0, H, 6.0))
    res = store.verify()
    assert (res.ok, res.count, res.first_bad_seq, res.reason) == (
        False, 3, None, "a checkpoint of the empty record has a hash"
    )
    assert (res.head_hash, res.checkpoints, res.anchor, res.expect_seq) == (evs[-1].hash, 2, Checkpoint(0, GENESIS, 5.0), None)


def test_a_failed_verify_reports_the_anchors_and_where_the_expected_head_was(tmp_path, store):
    import sqlite3

    evs = _three(store)
    store.checkpoint()
    cp = store.last_checkpoint()
    conn = sqlite3.connect(tmp_path / "range.db")
    conn.executescript("DROP TRIGGER events_no_update;")
    conn.execute("UPDATE events SET data = '{\"objective\":\"z\"}' WHERE seq = 3")
    conn.commit()
    conn.close()
    res = store.verify(expect_head=evs[0].hash)
    assert (res.ok, res.count, res.first_bad_seq, res.head_hash) == (False, 2, 3, evs[1].hash)
    assert (res.checkpoints, res.anchor, res.expect_seq) == (1, cp, 1)


def test_a_cut_off_record_reports_its_anchor(store):
    evs = _three(store)
    write_checkpoint(store.checkpoint_path, Checkpoint(5, H, 1700000000.0))
    res = store.verify(expect_head=evs[2].hash)
    assert (res.ok, res.count, res.first_bad_seq, res.head_hash) == (False, 3, 4, evs[2].hash)
    assert (res.checkpoints, res.anchor, res.expect_seq) == (1, Checkpoint(5, H, 1700000000.0), 3)


def test_an_expected_head_must_be_in_the_record(store):
    evs = _three(store)
    store.checkpoint()
    res = store.verify(expect_head=evs[1].hash)
    assert (res.ok, res.count, res.expect_seq, res.checkpoints, res.head_hash) == (True, 3, 2, 1, evs[2].hash)
    assert res.anchor == store.last_checkpoint() and res.reason == ""
    res = store.verify(expect_head="d" * 64)
    assert (res.ok, res.count, res.first_bad_seq, res.expect_seq) == (False, 3, None, None)
    assert res.reason == (
        f"the expected head {'d' * 64} is not in the record (its 3 events were cut off or rewritten)"
    )
    assert (res.head_hash, res.checkpoints, res.anchor) == (evs[2].hash, 1, store.last_checkpoint())


def test_the_genesis_head_is_expected_of_an_empty_record_only(store):
    assert store.verify(expect_head=GENESIS).ok
    _three(store)
    assert not store.verify(expect_head=GENESIS).ok


def test_an_unreadable_or_garbled_checkpoint_file_is_a_one_line_failure(store):
    store.checkpoint_path.mkdir()  # a folder where the file should be: cannot be read
    res = store.verify()
    assert (res.ok, res.count) == (False, 0)
    assert res.reason == "cannot read the checkpoints range.checkpoints: Is a directory"
    store.checkpoint_path.rmdir()
    store.checkpoint_path.write_bytes(f"0 {GENESIS} 1.0\n".encode() + "garbl\xe9d\n".encode("latin-1"))
    res = store.verify()
    assert res.reason == "range.checkpoints line 2 is not 'SEQ HASH TIME': the checkpoint file was altered"


def test_values_json_cannot_hold_are_recorded_as_their_text(store):
    from pathlib import Path

    from rangectl.store import canonical_json

    assert canonical_json({"file": Path("/srv/x.pcap")}) == '{"file":"/srv/x.pcap"}'
    ev = store.append("inject.done", {"inject": "replay", "file": Path("/srv/x.pcap")}, team=1)
    assert ev.data["file"] == "/srv/x.pcap" and store.verify().ok


def test_a_kind_family_is_exactly_the_dotted_prefix(store):
    """"drill.*" is drill.start, drill.pause...: never drilla or drillm, which sort just after "drill."."""
    store.append_many([("drill.start", {}), ("drilla", {}), ("drillm", {}), ("drill.x-y", {}), ("drillz", {})])
    assert [e.kind for e in store.events(kind="drill.*")] == ["drill.start", "drill.x-y"]
