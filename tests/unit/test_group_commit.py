"""Issue 16, finding 8 (durability): acknowledged answers are fsynced (synchronous=FULL), a batch at a time.

The team API scores queued answers inside one store transaction (each in a
savepoint) and answers only after the commit: one fsync per batch, and no
answer is acknowledged before it is durable.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from rangectl.access.ratelimit import RateLimit, TeamBudget
from rangectl.access.service import ApiError, Settings, TeamService
from rangectl.store import EventStore, StoreBusy, checkpoint_path, read_checkpoints
from tests.unit._mini_range import events, make_range


def test_nested_transactions_are_savepoints_of_one_commit(tmp_path):
    s = EventStore(tmp_path / "range.db")
    other = EventStore(tmp_path / "range.db")  # another handle on the same file
    with s.transaction() as outer:
        with s.transaction() as a:
            a.append("submission", {"answer": "kept-1"}, team=1)
        with pytest.raises(RuntimeError):
            with s.transaction() as b:
                b.append("submission", {"answer": "rolled-back"}, team=1)
                raise RuntimeError("this one fails")
        with s.transaction() as c:
            c.append("inject.done", {"inject": "x"}, team=1)  # a milestone inside
            c.append("submission", {"answer": "kept-2"}, team=1)
        assert outer.last_seq == 3
        t0 = time.monotonic()
        with pytest.raises(StoreBusy):
            with other.transaction():
                pass
        assert time.monotonic() - t0 < 1.0  # same thread: refused at once, not after the 30 s busy timeout
        assert not read_checkpoints(checkpoint_path(tmp_path / "range.db"))  # nothing committed yet
    evs = s.events()
    assert [e.data.get("answer") for e in evs] == ["kept-1", None, "kept-2"]
    assert s.verify().ok
    (cp,) = read_checkpoints(checkpoint_path(tmp_path / "range.db"))
    assert cp.seq == 3 and cp.hash == evs[-1].hash  # the head after the outer commit
    with other.transaction() as tx:  # the lock is free again
        tx.append("submission", {"answer": "after"}, team=2)
    other.close()
    s.close()


def _service(tmp_path) -> tuple:
    rng = make_range(tmp_path)
    svc = TeamService(rng, Settings(rate=RateLimit(per_minute=0), budget=TeamBudget(per_second=0)))
    return rng, svc


async def _many(svc, n: int):
    oids = ["c2-domain", "victim", "scanner-ip"]
    jobs = [svc.scoring.submit(1 + i % 2, oids[i % 3], f"answer-{i}") for i in range(n)]
    return await asyncio.gather(*jobs, return_exceptions=True)


class _Counting:
    """The store's connection, counting COMMITs (each is one fsync with synchronous=FULL)."""

    def __init__(self, conn):
        self.conn = conn
        self.commits = 0

    def execute(self, sql, *a):
        if sql == "COMMIT":
            self.commits += 1
        return self.conn.execute(sql, *a)


def test_queued_answers_share_commits_and_every_ack_is_recorded(tmp_path):
    from rangectl.scoring import actions

    rng, svc = _service(tmp_path)
    store = actions.context(rng).store
    real = store._conn
    store._conn = counting = _Counting(real)
    try:
        results = asyncio.run(_many(svc, 30))
    finally:
        store._conn = real
    assert all(not isinstance(r, BaseException) for r in results), results
    assert 1 <= counting.commits == svc.scoring.batches < 30  # several answers per commit (one fsync)
    by_seq = {e.seq: e for e in events(rng, "submission")}
    for i, (status, body, _) in enumerate(results):
        assert status in (200, 409) and body["seq"] in by_seq
        ev = by_seq[body["seq"]]
        assert ev.data["answer"] == f"answer-{i}" and ev.team == 1 + i % 2
    assert EventStore(rng.db_path).verify().ok
    svc.close()


def test_a_failed_commit_acknowledges_none_of_the_batch(tmp_path, monkeypatch):
    rng, svc = _service(tmp_path)
    from rangectl.scoring import actions

    store = actions.context(rng).store
    real = store._conn

    class FailingCommit:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *a):
            if sql == "COMMIT":
                raise __import__("sqlite3").OperationalError("disk I/O error")
            return self.conn.execute(sql, *a)

    n = len(events(rng))
    store._conn = FailingCommit(real)
    results = asyncio.run(_many(svc, 6))
    store._conn = real
    assert all(isinstance(r, ApiError) and r.status == 503 and r.detail == "busy, retry" for r in results)
    assert len(events(rng)) == n  # rolled back: nothing a team was told about
    svc.close()
