"""The append-only, hash-chained event store of one range (in its ``range.db``).

Everything that happens in a drill is one row of the ``events`` table; scores,
reports and the drill runner's progress are all computed from this record.

Table (created on first use, beside :mod:`rangectl.state`'s ``meta`` table)::

    events(seq INTEGER PRIMARY KEY,  -- 1, 2, 3, ... with no gaps
           ts REAL,                  -- wall time, seconds since the epoch
           kind TEXT,                -- see KINDS
           team INTEGER NULL,        -- NULL for range-wide events
           actor TEXT,               -- trainer | runner | team-K | ...
           data TEXT,                -- canonical JSON object
           prev_hash TEXT,           -- the previous event's hash (GENESIS for seq 1)
           hash TEXT)                -- sha256, see event_hash()

Triggers make the table append-only inside SQLite: any UPDATE or DELETE
aborts, and an INSERT must extend the chain (``seq`` = last + 1 and
``prev_hash`` = last hash). Writers take ``BEGIN IMMEDIATE`` (SQLite's write
lock) before reading the chain's head, so several threads and processes can
append at once and the chain stays linear. ``verify()`` recomputes every hash
and names the first event that does not match.

What the chain proves: no event was changed, removed or inserted in the
middle since it was written. It cannot prove the newest events were not cut
off, or that the whole file was not rewritten by someone who recomputed every
hash; for that, write down ``verify().head_hash`` at the end of a drill (the
after-action report prints it).

Event kinds (``data`` fields; ``drill_t`` is drill-clock seconds, supplied by
whoever records the event):

====================  =================================================================
``drill.start``       wall_start, time_scale, teams, end (the runner)
``drill.pause``       drill_t
``drill.resume``      drill_t
``drill.stop``        drill_t (ended by the trainer)
``drill.finish``      drill_t (the runner: timeline and duration done)
``drill.runner``      event, drill_t (runner bookkeeping, e.g. resumed after a crash)
``inject.start``      inject, due_t, drill_t, resumed, kind  (team set)
``inject.done``       inject, status, drill_t and the ground truth the traffic code
                      returns: src/dst nodes and addresses, start/end, packets, bytes
``message``           inject, title, text, drill_t (a narrative inject shown to a team)
``submission``        objective, answer (as given), correct, attempt, drill_t,
                      refused (reason; only when refused, then attempt is null)
``hint``              objective, index, cost, drill_t
``report``            objective, fields, on_time, accepted, drill_t, deadline_t,
                      field_results {field: bool} for fields with an answer, file
``check``             objective, passed, detail, drill_t (the runner's probes)
``availability``      index, node, service, round, up, latency, detail, drill_t
``score``             points (+/-), reason, category (default "adjustments"), drill_t
====================  =================================================================
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from rangectl.errors import RangeError, UsageError

GENESIS = "0" * 64

KINDS: dict[str, str] = {
    "drill.start": "the drill clock starts (wall_start, time_scale, teams, end)",
    "drill.pause": "the drill clock stops",
    "drill.resume": "the drill clock runs again",
    "drill.stop": "the trainer ends the drill",
    "drill.finish": "the timeline and duration are done",
    "drill.runner": "runner bookkeeping",
    "inject.start": "an inject begins for a team",
    "inject.done": "an inject ended for a team, with its ground truth",
    "message": "a narrative inject shown to a team",
    "submission": "a team's answer to an objective",
    "hint": "a team took a hint",
    "report": "a team filed an incident report",
    "check": "a probe of a check objective",
    "availability": "one availability round for one team and service",
    "score": "an explicit score adjustment by the trainer",
}

_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    team INTEGER NULL,
    actor TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, seq);
CREATE INDEX IF NOT EXISTS events_team ON events(team, kind, seq);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END;
CREATE TRIGGER IF NOT EXISTS events_chain BEFORE INSERT ON events
WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM events)
  OR NEW.prev_hash IS NOT COALESCE((SELECT hash FROM events ORDER BY seq DESC LIMIT 1), '{GENESIS}')
BEGIN SELECT RAISE(ABORT, 'events are append-only: an insert must extend the chain'); END;
"""


def canonical_json(data: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
    )


def event_hash(
    seq: int, ts: float, kind: str, team: int | None, actor: str, data_json: str, prev_hash: str
) -> str:
    """sha256 hex of the JSON array ``[seq, ts, kind, team, actor, data_json, prev_hash]``.

    ``data_json`` is the canonical JSON text of ``data`` (a string inside the
    array); the array itself is written like canonical_json (no spaces).
    """
    payload = json.dumps(
        [seq, float(ts), kind, team, actor, data_json, prev_hash], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class Event(NamedTuple):
    """One recorded event (immutable)."""

    seq: int
    ts: float
    kind: str
    team: int | None
    actor: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def drill_t(self) -> float | None:
        t = self.data.get("drill_t")
        return float(t) if isinstance(t, int | float) else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "team": self.team,
            "actor": self.actor,
            "data": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass
class VerifyResult:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_hash: str = GENESIS  # hash of the last event that checked out

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class _Pending:
    kind: str
    data: dict[str, Any]
    team: int | None = None
    actor: str = "trainer"
    ts: float | None = None


def _row_event(row: tuple, _loads=json.loads, _new=Event) -> Event:
    seq, ts, kind, team, actor, data, prev_hash, hsh = row
    return _new(seq, ts, kind, team, actor, _loads(data), prev_hash, hsh)


def _check_item(kind: str, data: Any, team: Any, actor: Any) -> None:
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise UsageError(
            f"event kind {kind!r} is not valid (lower-case words joined by '.', e.g. inject.done)"
        )
    if not isinstance(data, Mapping):
        raise UsageError(f"event data must be a mapping, not {type(data).__name__}")
    if team is not None and (isinstance(team, bool) or not isinstance(team, int)):
        raise UsageError(f"event team must be an integer or None, not {team!r}")
    if not isinstance(actor, str) or not actor:
        raise UsageError("event actor must be a non-empty string")


class Transaction:
    """Reads and appends inside one ``BEGIN IMMEDIATE`` transaction (holds the write lock)."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        self._seq, self._head = (row[0], row[1]) if row else (0, GENESIS)

    @property
    def last_seq(self) -> int:
        return self._seq

    def events(
        self, kind: str | Sequence[str] | None = None, team: int | None = None, after_seq: int = 0
    ) -> list[Event]:
        return _select(self._conn, kind, team, after_seq, None)

    def append(
        self,
        kind: str,
        data: Mapping[str, Any],
        team: int | None = None,
        actor: str = "trainer",
        ts: float | None = None,
    ) -> Event:
        _check_item(kind, data, team, actor)
        try:
            text = canonical_json(dict(data))
        except ValueError as exc:  # NaN/inf
            raise UsageError(f"event data is not valid JSON: {exc}") from None
        seq = self._seq + 1
        ts = float(time.time() if ts is None else ts)
        hsh = event_hash(seq, ts, kind, team, actor, text, self._head)
        self._conn.execute(
            "INSERT INTO events(seq, ts, kind, team, actor, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
            (seq, ts, kind, team, actor, text, self._head, hsh),
        )
        ev = Event(seq, ts, kind, team, actor, json.loads(text), self._head, hsh)
        self._seq, self._head = seq, hsh
        return ev


def _select(
    conn: sqlite3.Connection,
    kind: str | Sequence[str] | None,
    team: int | None,
    after_seq: int,
    limit: int | None,
) -> list[Event]:
    # `seq > 0` would steer SQLite to a rowid scan instead of the kind/team indexes
    where = ["seq > ?"] if after_seq > 0 else ["1"]
    args: list[Any] = [int(after_seq)] if after_seq > 0 else []
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        parts = []
        for k in kinds:
            if k.endswith(".*"):
                # a prefix as a range on the (kind, seq) index; LIKE would scan the table
                prefix = k[:-1]
                parts.append("(kind >= ? AND kind < ?)")
                args.extend([prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)])
            else:
                parts.append("kind = ?")
                args.append(k)
        where.append("(" + " OR ".join(parts or ["0"]) + ")")
    if team is not None:
        where.append("team = ?")
        args.append(int(team))
    sql = f"SELECT seq, ts, kind, team, actor, data, prev_hash, hash FROM events WHERE {' AND '.join(where)} ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    return [_row_event(r) for r in conn.execute(sql, args).fetchall()]


class EventStore:
    """The event store in ``db_path`` (a range's ``range.db``). Safe across threads and processes."""

    def __init__(self, db_path: Path | str):
        self.db_path = Path(db_path)
        if not self.db_path.parent.is_dir():
            raise RangeError(f"cannot open the event store: folder {self.db_path.parent} does not exist")
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(
                self.db_path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        except sqlite3.DatabaseError as exc:
            raise RangeError(f"cannot open the event store {self.db_path}: {exc}") from None

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``with store.transaction() as tx:`` read and append atomically (other writers wait)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise RangeError(f"event store {self.db_path} is busy: {exc}") from None
            try:
                yield Transaction(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._conn.execute("ROLLBACK")
                raise RangeError(f"event store {self.db_path}: commit failed: {exc}") from None

    def append(
        self,
        kind: str,
        data: Mapping[str, Any],
        team: int | None = None,
        actor: str = "trainer",
        ts: float | None = None,
    ) -> Event:
        """Append one event (atomically; the chain's head is read under the write lock)."""
        with self.transaction() as tx:
            return tx.append(kind, data, team=team, actor=actor, ts=ts)

    def append_many(self, items: Iterable[Mapping[str, Any] | Sequence[Any]]) -> list[Event]:
        """Append several events in one transaction: all or none.

        Each item is a mapping ``{kind, data, team?, actor?, ts?}`` or a tuple
        ``(kind, data[, team[, actor[, ts]]])``.
        """
        rows: list[_Pending] = []
        for it in items:
            if isinstance(it, Mapping):
                unknown = set(it) - {"kind", "data", "team", "actor", "ts"}
                if unknown:
                    raise UsageError(f"append_many: unknown keys {sorted(unknown)}")
                rows.append(
                    _Pending(
                        it["kind"],
                        it.get("data", {}),
                        it.get("team"),
                        it.get("actor", "trainer"),
                        it.get("ts"),
                    )
                )
            else:
                rows.append(_Pending(*it))
        for r in rows:
            _check_item(r.kind, r.data, r.team, r.actor)
        with self.transaction() as tx:
            return [tx.append(r.kind, r.data, team=r.team, actor=r.actor, ts=r.ts) for r in rows]

    # -- reading -----------------------------------------------------------------
    def events(
        self,
        kind: str | Sequence[str] | None = None,
        team: int | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> list[Event]:
        """Events in seq order. ``kind``: one kind, several, or a family like ``"drill.*"``."""
        with self._lock:
            return _select(self._conn, kind, team, after_seq, limit)

    def last_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # -- checking ----------------------------------------------------------------
    def verify(self) -> VerifyResult:
        """Recompute the chain. ``first_bad_seq`` is the first event that is not what was written."""
        with self._lock:
            cur = self._conn.execute(
                "SELECT seq, ts, kind, team, actor, data, prev_hash, hash FROM events ORDER BY seq"
            )
            prev = GENESIS
            expect = 1
            n = 0
            for seq, ts, kind, team, actor, data, prev_hash, hsh in cur:
                bad = _check_row(expect, prev, seq, ts, kind, team, actor, data, prev_hash, hsh)
                if bad:
                    cur.close()
                    return VerifyResult(False, n, seq, bad, prev)
                prev, expect, n = hsh, seq + 1, n + 1
        return VerifyResult(True, n, None, "", prev)


def _check_row(
    expect: int,
    prev: str,
    seq: Any,
    ts: Any,
    kind: Any,
    team: Any,
    actor: Any,
    data: Any,
    prev_hash: Any,
    hsh: Any,
) -> str:
    if seq != expect:
        if isinstance(seq, int) and seq > expect:
            return f"events {expect}..{seq - 1} are missing (seq {seq} follows {expect - 1})"
        return f"seq {seq!r} out of order (expected {expect})"
    if prev_hash != prev:
        return "prev_hash does not link to the previous event"
    if not isinstance(ts, float) or not isinstance(kind, str) or not isinstance(actor, str):
        return "a column has the wrong type"
    if team is not None and not isinstance(team, int):
        return "team is not an integer"
    try:
        parsed = json.loads(data)
        text = canonical_json(parsed)
    except (TypeError, ValueError):
        return "data is not valid JSON"
    if event_hash(seq, ts, kind, team, actor, text, prev_hash) != hsh:
        return "hash does not match the event's contents (edited after it was written)"
    return ""
