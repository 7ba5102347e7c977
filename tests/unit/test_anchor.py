"""Issue 16, finding 8: the record is anchored outside the database.

The attack first: someone with write access to range.db cuts off the newest
events, or rewrites one answer and re-hashes every later event. The chain
alone still verifies (shown with ``checkpoints=False``); the checkpoints
beside the database, ``--expect-head`` and the heads shown to teams and the
trainer must not.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rangectl.drill.runner import DrillRunner
from rangectl.plan import plan
from rangectl.scenario.model import Scenario
from rangectl.store import (
    GENESIS,
    MILESTONES,
    EventStore,
    canonical_json,
    checkpoint_path,
    event_hash,
    last_checkpoint,
    read_checkpoints,
)
from tests.unit._mini_range import API, SCENARIO, auth, make_range

# --- the attacker's tools: plain SQLite on the file ----------------------------------------------------


def _tamper(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    for t in ("events_no_update", "events_no_delete", "events_chain"):
        conn.execute(f"DROP TRIGGER IF EXISTS {t}")
    return conn


def truncate(db: Path, keep: int) -> None:
    """Delete every event after ``keep``."""
    conn = _tamper(db)
    conn.execute("DELETE FROM events WHERE seq > ?", (keep,))
    conn.close()


def rewrite(db: Path, seq: int, answer: str) -> None:
    """Change one submission's answer and re-hash it and every later event (a consistent chain)."""
    conn = _tamper(db)
    rows = conn.execute(
        "SELECT seq, ts, kind, team, actor, data, prev_hash FROM events WHERE seq >= ? ORDER BY seq", (seq,)
    ).fetchall()
    prev = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq - 1,)).fetchone()
    prev = prev[0] if prev else GENESIS
    for s, ts, kind, team, actor, data, _ in rows:
        d = json.loads(data)
        if s == seq:
            d["answer"] = answer
            d["correct"] = True
        text = canonical_json(d)
        h = event_hash(s, ts, kind, team, actor, text, prev)
        conn.execute("UPDATE events SET data=?, prev_hash=?, hash=? WHERE seq=?", (text, prev, h, s))
        prev = h
    conn.close()


def drill_record(db: Path) -> EventStore:
    """A little drill: start, answers, an inject done (milestone), more answers, stop (milestone)."""
    s = EventStore(db)
    s.append("drill.start", {"wall_start": time.time(), "time_scale": 1.0, "teams": [1, 2], "end": 600})
    for i in range(3):
        s.append(
            "submission", {"objective": "x", "answer": f"a{i}", "correct": False, "attempt": i + 1}, team=1
        )
    s.append("inject.done", {"inject": "recon", "status": "ok", "drill_t": 10}, team=1, actor="runner")
    for i in range(3):
        s.append(
            "submission", {"objective": "x", "answer": f"b{i}", "correct": False, "attempt": i + 4}, team=2
        )
    s.append("drill.stop", {"drill_t": 100})
    return s


# --- checkpoints -----------------------------------------------------------------------------------------


def test_milestones_checkpoint_the_full_head_in_a_private_file(tmp_path):
    db = tmp_path / "range.db"
    s = drill_record(db)
    cps = read_checkpoints(checkpoint_path(db))
    evs = {e.seq: e for e in s.events()}
    # one line per milestone transaction: drill.start (1), inject.done (5), drill.stop (9)
    assert [c.seq for c in cps] == [1, 5, 9]
    assert all(c.hash == evs[c.seq].hash and len(c.hash) == 64 for c in cps)
    assert {evs[c.seq].kind for c in cps} <= MILESTONES
    assert last_checkpoint(checkpoint_path(db)) == cps[-1]
    # a plain event is no milestone
    s.append("submission", {"objective": "x", "answer": "c", "correct": False, "attempt": 7}, team=1)
    assert len(read_checkpoints(checkpoint_path(db))) == 3
    # at stop, however the runner stops: the head as it is
    cp = s.checkpoint()
    assert cp.seq == 10 and cp.hash == s.events()[-1].hash
    assert read_checkpoints(checkpoint_path(db))[-1] == cp
    assert stat.S_IMODE(checkpoint_path(db).stat().st_mode) == 0o600
    s.close()


def test_db_wal_shm_are_private_and_commits_are_full_sync(tmp_path):
    db = tmp_path / "range.db"
    conn = sqlite3.connect(db)  # as rangectl.state makes it: the umask's 0644
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.close()
    db.chmod(0o644)
    s = EventStore(db)
    s.append("drill.start", {"wall_start": 1.0})
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert p.exists() and stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()


def test_truncated_record_fails_against_the_checkpoint(tmp_path):
    db = tmp_path / "range.db"
    s = drill_record(db)
    s.close()
    truncate(db, keep=6)  # events 7..9 gone, the drill.stop checkpoint (9) with them
    s = EventStore(db)
    assert s.verify(checkpoints=False).ok  # the attack: the chain alone cannot tell
    res = s.verify()
    assert not res.ok and res.count == 6 and res.first_bad_seq == 7
    assert "cut off" in res.reason and "events 7..9" in res.reason
    s.close()


def test_consistent_rewrite_fails_against_the_checkpoint(tmp_path):
    db = tmp_path / "range.db"
    s = drill_record(db)
    s.close()
    rewrite(db, 3, "the right answer")  # before the inject.done checkpoint (5)
    s = EventStore(db)
    assert s.verify(checkpoints=False).ok  # the attack: a consistent chain
    assert s.events()[2].data["answer"] == "the right answer"
    res = s.verify()
    assert not res.ok and res.first_bad_seq == 5 and "rewritten" in res.reason
    s.close()


def test_expect_head_catches_both_without_the_checkpoint_file(tmp_path):
    db = tmp_path / "range.db"
    s = drill_record(db)
    head = s.verify().head_hash
    middle = s.events()[4].hash
    assert s.verify(expect_head=head).expect_seq == 9
    assert s.verify(expect_head=middle).expect_seq == 5  # an older head is in the record too
    s.close()
    checkpoint_path(db).unlink()  # the attacker removes the checkpoints too
    rewrite(db, 8, "rewritten")
    s = EventStore(db)
    assert s.verify().ok  # no anchor left on this machine ...
    res = s.verify(expect_head=head)  # ... but the head written down elsewhere
    assert not res.ok and "not in the record" in res.reason
    assert s.verify(expect_head=middle).ok  # before the rewrite: still there
    s.close()
    truncate(db, keep=4)
    s = EventStore(db)
    assert not s.verify(expect_head=middle).ok
    s.close()


def test_a_tampered_checkpoint_file_does_not_check_out(tmp_path):
    db = tmp_path / "range.db"
    drill_record(db).close()
    cp = checkpoint_path(db)
    cp.write_text(cp.read_text() + "not a checkpoint\n")
    res = EventStore(db).verify()
    assert not res.ok and "line 4" in res.reason
    cp.write_text(cp.read_text().splitlines()[0] + "\n" + "3 " + "f" * 64 + " 1.0\n")
    res = EventStore(db).verify()
    assert not res.ok and res.first_bad_seq == 3


# --- the CLI ----------------------------------------------------------------------------------------------


class _Run:
    def __init__(self, code: int, out: str, err: str):
        self.exit_code, self.output = code, out + err


def _cli(*args: str) -> _Run:
    """rangectl's real entry point in-process (its error handling included)."""
    import contextlib
    import io
    import sys
    from unittest import mock

    from rangectl import cli as cli_mod

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with (
        mock.patch.object(sys, "argv", ["rangectl", *args]),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            cli_mod.main()
        except SystemExit as exc:
            code = exc.code
    return _Run(code if isinstance(code, int) else (0 if code is None else 1), out.getvalue(), err.getvalue())


def test_verify_command_expect_head_and_checkpoints(tmp_path):
    st = make_range(tmp_path, "anch")
    s = EventStore(st.db_path)
    s.append(
        "submission", {"objective": "c2-domain", "answer": "nope", "correct": False, "attempt": 1}, team=1
    )
    s.append("inject.done", {"inject": "recon", "status": "ok", "drill_t": 5}, team=1, actor="runner")
    s.append(
        "submission", {"objective": "c2-domain", "answer": "nope2", "correct": False, "attempt": 2}, team=1
    )
    head = s.events()[-1].hash
    n = s.count()
    s.close()
    r = _cli("verify", "anch")
    assert r.exit_code == 0 and f"log intact: {n} events, head {head}" in r.output
    assert "the latest anchors event" in r.output
    r = _cli("verify", "anch", "--expect-head", head.upper())
    assert r.exit_code == 0 and f"expected head: event {n}" in r.output
    r = _cli("verify", "anch", "--expect-head", head[:16])
    assert r.exit_code == 2 and "64" in r.output and "Traceback" not in r.output
    # a consistent rewrite of the first answer: plain verify (checkpoint) and --expect-head both fail
    seq = next(e.seq for e in EventStore(st.db_path).events(kind="submission"))
    rewrite(st.db_path, seq, "evil.example")
    r = _cli("verify", "anch")
    assert r.exit_code == 1 and "rewritten" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = _cli("verify", "anch", "--expect-head", head)
    assert r.exit_code == 1 and "Traceback" not in r.output
    # truncation, with the checkpoint file gone as well: --expect-head still catches it
    checkpoint_path(st.db_path).unlink()
    truncate(st.db_path, keep=n - 1)
    r = _cli("verify", "anch")
    assert r.exit_code == 0 and "only the chain was checked" in r.output
    r = _cli("verify", "anch", "--expect-head", head)
    assert r.exit_code == 1 and "not in the record" in r.output


# --- where the head is shown ---------------------------------------------------------------------------


def test_board_and_team_score_show_the_latest_checkpoint(tmp_path):
    from rangectl.access.api import create_app
    from rangectl.access.service import TeamService

    st = make_range(tmp_path, "shown")
    cp = last_checkpoint(checkpoint_path(st.db_path))
    assert cp is not None  # drill.start was a milestone
    r = _cli("board", "shown", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["checkpoint"]["head"] == cp.hash
    r = _cli("board", "shown")
    assert r.exit_code == 0 and f"record checkpoint: event {cp.seq}, head {cp.hash}" in r.output
    svc = TeamService(st)
    with TestClient(create_app(svc)) as c:
        rec = c.get(f"{API}/teams/me/score", headers=auth(st, 2)).json()["record"]
    assert rec["seq"] == cp.seq and rec["head"] == cp.hash
    svc.close()


# --- the runner checkpoints at every milestone and at stop --------------------------------------------


def test_runner_checkpoints_start_each_inject_and_stop(tmp_path):
    data = {
        **SCENARIO,
        "duration": "2m",
        "injects": [
            {"id": "kickoff", "at": "0s", "message": "go"},
            {"id": "recon", "at": "1m", "traffic": {"kind": "portscan", "from": "bad", "target": "web"}},
        ],
        "objectives": [{"id": "c2", "category": "analysis", "points": 5, "answer": {"value": "x"}}],
    }
    sc = Scenario.model_validate(data)
    store = EventStore(tmp_path / "range.db")
    r = DrillRunner(
        sc,
        plan(sc, 2),
        store,
        lambda team, inj, t: {"packets": 1},
        lambda team, obj: {"passed": True, "detail": ""},
        lambda team, av: {"passed": True, "detail": ""},
    )
    r.start(time_scale=600.0)
    r.run()
    evs = {e.seq: e for e in store.events()}
    cps = read_checkpoints(checkpoint_path(tmp_path / "range.db"))
    kinds = [evs[c.seq].kind for c in cps]
    assert kinds[0] == "drill.start"
    assert kinds.count("inject.done") == 4  # 2 injects x 2 teams
    assert "drill.finish" in kinds
    assert cps[-1].seq == max(evs) and cps[-1].hash == evs[max(evs)].hash  # at stop
    assert all(c.hash == evs[c.seq].hash for c in cps)
    store.close()


def test_tampering_tools_really_change_the_file(tmp_path):
    """The attack helpers above do what they say (else the tests would prove nothing)."""
    db = tmp_path / "range.db"
    drill_record(db).close()
    rewrite(db, 2, "zzz")
    s = EventStore(db)
    assert s.events()[1].data["answer"] == "zzz" and s.count() == 9
    s.close()
    truncate(db, 3)
    s = EventStore(db)
    assert s.count() == 3
    s.close()


@pytest.mark.parametrize("bad", ["", "x" * 64, "0" * 63])
def test_expect_head_must_be_a_full_hash(tmp_path, bad):
    from rangectl.errors import UsageError

    s = drill_record(tmp_path / "range.db")
    with pytest.raises(UsageError):
        s.verify(expect_head=bad)
    s.close()
