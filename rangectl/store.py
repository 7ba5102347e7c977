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
middle since it was written. On its own it cannot prove the newest events
were not cut off, or that the file was not rewritten by someone who
recomputed every later hash. So the head is also anchored outside the
database: whenever a transaction appends a *milestone* (``drill.*`` and
``inject.done``) the new head (seq, full hash, time) is appended as one line
to ``<db>.checkpoints`` beside the database (mode 0600, fsynced), and the
trainer's board, ``verify`` and the team API show the latest one. ``verify()``
then also checks that every checkpointed seq is still in the record with the
same hash (truncation and consistent rewrites fail), and ``verify(expect_head=H)``
that a head written down elsewhere is still in the chain.

Durability: ``synchronous=FULL`` (the WAL is fsynced at every commit), so an
event a caller was told is recorded survives a power cut. ``range.db`` and
its ``-wal``/``-shm`` files are made 0600 on open (SQLite gives new WAL/SHM
files the database file's mode).

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
``submission.refused``  a summary of one team's refused attempts at one objective in one
                      window (the team API): count, first_ts, last_ts, drill_t,
                      last_drill_t, window_s, samples (<= 3, cut), refused, reasons
``api.throttled``     a summary of one team's requests over its API budget in one window
``node.reset``        node, container ids old/new, drill_t (``rangectl reset``)
``session``           node, pid, session, argv, cmd, via, drill_t: a trainee's SSH session starts
                      (the command recorder, rangectl.access.recorder)
``command``           node, pid, session, argv, cmd, cwd, drill_t: a program a trainee ran
``command.exit``      node, pid, session, status, drill_t: how that program ended
``command.dropped``   node, count, since: commands over the team's recording rate, counted
``file.copy``         node, name, direction (upload/download), peer, size, status, drill_t (scp)
``capture.start``     network, interface, file, file_mb, files, snaplen, ok (error): a team's capture
``capture.stop``      network, interface, exit, files [{name, bytes}]
====================  =================================================================
"""

from __future__ import annotations

import hashlib
import json
import os
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
from rangectl.paths import create_private

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
    "submission.flagged": "a suspicious submission: another team's answer, or implausibly fast",
    "hint": "a team took a hint",
    "report": "a team filed an incident report",
    "check": "a probe of a check objective",
    "availability": "one availability round for one team and service",
    "score": "an explicit score adjustment by the trainer",
    "submission.refused": "refused attempts of a team at an objective, summarised per window",
    "api.throttled": "a team's requests over its API budget, summarised per window",
    "node.reset": "the trainer re-created one node of one team",
    "session": "a trainee's SSH session started on a node",
    "command": "a program a trainee ran on a node",
    "command.exit": "how a recorded program ended",
    "command.dropped": "a team's commands over its recording rate, counted",
    "file.copy": "a file a trainee copied with scp",
    "capture.start": "a packet capture of one team network started with the drill",
    "capture.stop": "a packet capture stopped, with its files",
}

# a transaction that appends one of these checkpoints the head outside the database
MILESTONES = frozenset(
    {"drill.start", "drill.pause", "drill.resume", "drill.stop", "drill.finish", "inject.done"}
)
CHECKPOINT_SUFFIX = ".checkpoints"
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")

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


class StoreBusy(RangeError):
    """The store's write lock could not be had in time (another writer holds it). Retry later."""


class StoreError(RangeError):
    """The store could not commit (disk full, I/O error...)."""


@dataclass(frozen=True)
class Checkpoint:
    """One anchored head: the chain's last event (seq, full hash) at wall time ``ts``."""

    seq: int
    hash: str
    ts: float

    def line(self) -> str:
        return f"{self.seq} {self.hash} {self.ts:.6f}\n"

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "head": self.hash, "ts": self.ts}


def checkpoint_path(db_path: Path | str) -> Path:
    """``range.db`` -> ``range.checkpoints`` (same folder)."""
    return Path(db_path).with_suffix(CHECKPOINT_SUFFIX)


def parse_checkpoint(text: str) -> Checkpoint | None:
    parts = text.split()
    if len(parts) != 3 or not parts[0].isdigit() or not _HASH_RE.match(parts[1]):
        return None
    try:
        ts = float(parts[2])
    except ValueError:
        return None
    return Checkpoint(int(parts[0]), parts[1], ts)


def read_checkpoints(path: Path | str) -> list[Checkpoint]:
    """Every checkpoint line of a file, in file order ([] when there is no file).

    A line that is not ``SEQ HASH TS`` is a RangeError naming it (a file that
    was tampered with does not check out either); an unterminated last line
    (a crash mid-write) is ignored.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RangeError(f"cannot read the checkpoints {path.name}: {exc.strerror or exc}") from None
    lines = raw.split(b"\n")
    out: list[Checkpoint] = []
    for n, line in enumerate(lines[:-1], 1):  # lines[-1]: after the last newline (empty or torn)
        cp = parse_checkpoint(line.decode("ascii", "replace"))
        if cp is None:
            raise RangeError(f"{path.name} line {n} is not 'SEQ HASH TIME': the checkpoint file was altered")
        out.append(cp)
    return out


def last_checkpoint(path: Path | str) -> Checkpoint | None:
    """The checkpoint with the highest seq (reads only the file's tail), or None."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 8192))
            tail = fh.read()
    except OSError:
        return None
    lines = tail.split(b"\n")[1 if size > 8192 else 0 : -1]
    best = None
    for line in lines:
        cp = parse_checkpoint(line.decode("ascii", "replace"))
        if cp is not None and (best is None or cp.seq > best.seq):
            best = cp
    return best


def write_checkpoint(path: Path | str, cp: Checkpoint) -> None:
    """Append one line (O_APPEND, one write, fsync); the file is created 0600 and kept so."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, cp.line().encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class VerifyResult:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_hash: str = GENESIS  # hash of the last event that checked out
    checkpoints: int = 0  # checkpoint lines checked against the record
    anchor: Checkpoint | None = None  # the latest checkpoint (highest seq)
    expect_seq: int | None = None  # where ``expect_head`` was found

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
        self.milestone = False  # appended a MILESTONES kind: checkpoint the head after commit

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
        if kind in MILESTONES:
            self.milestone = True
        return ev

    @property
    def head(self) -> tuple[int, str]:
        return self._seq, self._head


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
        self.checkpoint_path = checkpoint_path(self.db_path)
        if not self.db_path.parent.is_dir():
            raise RangeError(f"cannot open the event store: folder {self.db_path.parent} does not exist")
        self._lock = threading.RLock()
        self._stack: list[Transaction] = []  # open transaction, then its savepoints (under _lock)
        # the record is the trainer's alone: 0600 before SQLite makes a WAL/SHM (they copy the mode).
        # Never open() and close() a database file this process may already hold: closing any
        # descriptor of a file drops every POSIX lock the process has on it, and SQLite's
        # connections would then write unlocked (a corrupt database). So: only a file that does
        # not exist yet is created here (O_EXCL), and the mode of an existing one is set by path.
        create_private(self.db_path)
        _restrict(self.db_path)
        try:
            self._conn = sqlite3.connect(
                self.db_path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so an acknowledged event survives a power cut
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        except sqlite3.DatabaseError as exc:
            raise RangeError(f"cannot open the event store {self.db_path}: {exc}") from None
        _restrict(self.db_path)

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
        """``with store.transaction() as tx:`` read and append atomically (other writers wait).

        Nested on the same thread (the same store), a transaction is a SAVEPOINT of
        the open one: an error rolls back only its own appends, and nothing is
        durable before the outermost commits. That is group commit: the team API
        scores a batch of answers inside one transaction, so the batch costs one
        fsync (``synchronous=FULL``) and every answer is acknowledged only after it.
        """
        with self._lock:
            if self._stack:
                yield from self._nested()
                return
            held = _held()
            if str(self.db_path) in held:  # another store object of this thread holds the write lock
                raise StoreBusy("the event store is busy (this thread holds it through another handle)")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreBusy(f"the event store is busy ({exc}); try again") from None
            held.add(str(self.db_path))
            tx = Transaction(self._conn)
            self._stack.append(tx)
            try:
                yield tx
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._stack.pop()
                held.discard(str(self.db_path))
            try:
                self._conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._conn.execute("ROLLBACK")
                if "locked" in str(exc) or "busy" in str(exc):
                    raise StoreBusy(f"the event store is busy ({exc}); try again") from None
                raise StoreError(f"the event store could not commit: {exc}") from None
            if tx.milestone:
                seq, head = tx.head
                try:
                    write_checkpoint(self.checkpoint_path, Checkpoint(seq, head, round(time.time(), 6)))
                except OSError:  # the events are committed; verify says when checkpoints are missing
                    pass

    def _nested(self) -> Iterator[Transaction]:
        outer = self._stack[-1]
        name = f"rangectl_sp{len(self._stack)}"
        self._conn.execute(f"SAVEPOINT {name}")
        tx = Transaction(self._conn)
        self._stack.append(tx)
        try:
            yield tx
        except BaseException:
            self._conn.execute(f"ROLLBACK TO {name}")
            self._conn.execute(f"RELEASE {name}")
            raise
        finally:
            self._stack.pop()
        self._conn.execute(f"RELEASE {name}")
        outer._seq, outer._head = tx._seq, tx._head
        outer.milestone = outer.milestone or tx.milestone

    def checkpoint(self) -> Checkpoint:
        """Anchor the current head outside the database now (e.g. when a drill is stopped)."""
        with self._lock:
            row = self._conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            now = round(time.time(), 6)
            cp = Checkpoint(int(row[0]), row[1], now) if row else Checkpoint(0, GENESIS, now)
            write_checkpoint(self.checkpoint_path, cp)
        return cp

    def last_checkpoint(self) -> Checkpoint | None:
        return last_checkpoint(self.checkpoint_path)

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
    def verify(self, expect_head: str | None = None, checkpoints: bool = True) -> VerifyResult:
        """Recompute the chain, then hold it against the anchors outside the database.

        ``first_bad_seq`` is the first event that is not what was written. With
        ``checkpoints`` (the default) every line of the checkpoint file must name
        an event of the record with that very hash: a record cut short or
        rewritten (and re-hashed) before a checkpoint fails. ``expect_head`` (a
        full 64-hex hash written down elsewhere) must be the hash of an event
        in the record; ``expect_seq`` says which.
        """
        if expect_head is not None and not _HASH_RE.match(expect_head):
            raise UsageError("an expected head is the full 64-character hex hash (verify prints it)")
        try:
            anchors = read_checkpoints(self.checkpoint_path) if checkpoints else []
        except RangeError as exc:
            return VerifyResult(False, 0, None, exc.message)
        want: dict[int, list[Checkpoint]] = {}
        for cp in anchors:
            want.setdefault(cp.seq, []).append(cp)
        anchor = max(anchors, key=lambda c: c.seq, default=None)
        found: int | None = None
        with self._lock:
            cur = self._conn.execute(
                "SELECT seq, ts, kind, team, actor, data, prev_hash, hash FROM events ORDER BY seq"
            )
            prev = GENESIS
            expect = 1
            n = 0
            for seq, ts, kind, team, actor, data, prev_hash, hsh in cur:
                bad = _check_row(expect, prev, seq, ts, kind, team, actor, data, prev_hash, hsh)
                if not bad:
                    for cp in want.get(seq, ()):
                        if cp.hash != hsh:
                            bad = (
                                f"event {seq}'s hash {hsh} is not the {cp.hash} checkpointed at "
                                f"{_when(cp.ts)}: the record was rewritten at or before event {seq}"
                            )
                            break
                if bad:
                    cur.close()
                    return VerifyResult(False, n, seq, bad, prev, len(anchors), anchor, found)
                if expect_head is not None and hsh == expect_head:
                    found = seq
                prev, expect, n = hsh, seq + 1, n + 1
        zero = [cp for cp in anchors if cp.seq == 0 and cp.hash != GENESIS]
        if zero:
            return VerifyResult(
                False,
                n,
                None,
                "a checkpoint of the empty record has a hash",
                prev,
                len(anchors),
                anchor,
                found,
            )
        if anchor is not None and anchor.seq > n:
            return VerifyResult(
                False,
                n,
                n + 1,
                f"the record ends at event {n} but event {anchor.seq} was checkpointed at "
                f"{_when(anchor.ts)}: events {n + 1}..{anchor.seq} were cut off",
                prev,
                len(anchors),
                anchor,
                found,
            )
        if expect_head is not None and found is None and not (n == 0 and expect_head == GENESIS):
            return VerifyResult(
                False,
                n,
                None,
                f"the expected head {expect_head} is not in the record (its {n} events were cut off "
                "or rewritten)",
                prev,
                len(anchors),
                anchor,
                found,
            )
        return VerifyResult(True, n, None, "", prev, len(anchors), anchor, found)


_local = threading.local()


def _held() -> set[str]:
    """Databases this thread holds the write lock of (an open outermost transaction)."""
    held = getattr(_local, "held", None)
    if held is None:
        held = _local.held = set()
    return held


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _restrict(db_path: Path) -> None:
    """range.db and its -wal, -shm: owner only."""
    for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
        try:
            if p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)
        except FileNotFoundError:
            pass
        except PermissionError:  # another user's file: nothing to change here
            pass


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
