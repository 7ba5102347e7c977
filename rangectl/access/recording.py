"""Wiring of the command recorder into ``rangectl serve``: which container is which node, and the record.

:mod:`rangectl.access.recorder` follows trainee sessions through the kernel's process
events, read by a process of its own (:class:`~rangectl.access.recorder.ReaderProcess`,
started and stopped here); this module tells it which host processes belong to this range
(container id -> team and node, from the backend's node list: :class:`NodeMap`) and appends
what it returns to the range's event store, with the drill time of each record
(docs/access.md, "Every command recorded").
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from rangectl.access.agent_record import record
from rangectl.access.recorder import READER_START_SECONDS, ReaderProcess, Record, Recorder, container_id_of
from rangectl.backend.base import Backend
from rangectl.errors import RangeError
from rangectl.scoring.incremental import drill_clock
from rangectl.state import RangeState
from rangectl.store import EventStore

log = logging.getLogger("rangectl.access.recording")

UNKNOWN_REFRESH_SECONDS = 1.0  # the node list is read again at most this often, when a container is unknown
UNKNOWN_WAIT_SECONDS = 2.0  # where() waits this long for the list that tells an unknown container
RESUME_SECONDS = 5.0  # an engine whose recorder stream ended without a word is asked again this often
MAX_UNKNOWN = 4096  # containers known not to be this range's (other ranges'), remembered (oldest forgotten)


class NodeMap:
    """Container id -> (team, node) for one range, from the backend.

    The list is read at :meth:`refresh` (``Recording.start``) and then on a thread of its own, never
    by the recorder: when a container not in it shows up, at most every
    :data:`UNKNOWN_REFRESH_SECONDS`. The recorder tells :meth:`seen` of every container in which
    something exec'd, so a node made after serve started (a reset) is listed about a second after its
    first process, well before anyone logs in; :meth:`lookup` of a container still unknown waits up
    to :data:`UNKNOWN_WAIT_SECONDS` for a list read after it showed up (the recorder's tracker thread
    waits, the reader process does not). A container still missing from such a list is another's:
    it is answered None at once from then on.
    """

    def __init__(
        self,
        range_name: str,
        backend: Backend,
        clock: Callable[[], float] = time.monotonic,
        *,
        interval: float = UNKNOWN_REFRESH_SECONDS,
        wait: float = UNKNOWN_WAIT_SECONDS,
    ):
        self.range = range_name
        self.backend = backend
        self.clock = clock
        self.interval = interval
        self.wait = wait
        self.refreshes = 0  # node lists read
        self._ids: dict[str, tuple[int, str]] = {}
        self._unknown: collections.OrderedDict[str, float] = collections.OrderedDict()  # -> when first seen
        self._listed_at = float("-inf")  # when the last list that came was asked for
        self._asked_at = float("-inf")  # when the last list was asked for (it may have failed)
        self._wanted = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Read the node list now (blocking: a Docker call). False when it could not be read."""
        asked = self.clock()
        with self._cond:
            self._asked_at = asked
        try:
            nodes = self.backend.nodes(self.range)
        except Exception as exc:  # noqa: BLE001 - the engine is busy; keep the last map
            log.warning("recorder: cannot list the range's nodes: %s", exc)
            with self._cond:
                self._cond.notify_all()
            return False
        ids = {n.id: (n.team, n.node) for n in nodes if n.id}
        with self._cond:
            self.refreshes += 1
            self._ids = ids
            self._listed_at = asked
            for cid in ids:
                self._unknown.pop(cid, None)
            self._cond.notify_all()
        return True

    def _note(self, cid: str) -> float:
        """When ``cid`` was first seen unknown; a list is asked for when it is new (under the lock)."""
        first = self._unknown.get(cid)
        if first is None:
            first = self._unknown[cid] = self.clock()
            if len(self._unknown) > MAX_UNKNOWN:
                self._unknown.popitem(last=False)
        if self._listed_at < first:
            self._want()
        return first

    def _want(self) -> None:
        self._wanted = True
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(
                target=self._refresher, name=f"rangectl-nodes-{self.range}", daemon=True
            )
            self._thread.start()
        self._cond.notify_all()

    def _refresher(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._wanted:
                        left = self.interval - (self.clock() - self._asked_at)
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                self._wanted = False
            self.refresh()

    def seen(self, cid: str) -> None:
        """Something exec'd in container ``cid``: an unknown one gets the list read again soon. No waiting."""
        if cid in self._ids:
            return
        with self._cond:
            self._note(cid)

    def lookup(self, cid: str, wait: float | None = None) -> tuple[int, str] | None:
        """(team, node) of container ``cid``; one unknown so far waits (up to ``wait`` s) for a list."""
        hit = self._ids.get(cid)
        if hit is not None:
            return hit
        deadline = self.clock() + (self.wait if wait is None else wait)
        with self._cond:
            while cid not in self._ids and not self._closed:
                first = self._note(cid)
                left = deadline - self.clock()
                if self._listed_at >= first or left <= 0:
                    break
                self._cond.wait(left)
            return self._ids.get(cid)

    def ids(self) -> dict[str, tuple[int, str]]:
        """The list as last read: container id -> (team, node)."""
        with self._cond:
            return dict(self._ids)

    def where(self, pid: int) -> tuple[int, str] | None:
        """(team, node) of host process ``pid`` when it runs in one of this range's nodes."""
        cid = container_id_of(pid)
        if cid is None:
            return None
        return self.lookup(cid)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)


def store_records(state: RangeState, records: list[dict[str, Any]]) -> None:
    """Append records (:meth:`Record.as_data` dicts: kind, ts, team and the rest) to the range's
    store, one transaction a batch, with each one's drill time."""
    with EventStore(state.db_path) as store:
        clock = drill_clock(store)
        items = []
        for rec in records:
            data = dict(rec)
            kind, ts, team = data.pop("kind"), data.pop("ts"), data.pop("team", None)
            if clock.start_ts is not None:
                data["drill_t"] = round(clock.drill_t(ts), 2)
            items.append({"kind": kind, "data": data, "team": team, "actor": "recorder", "ts": ts})
        store.append_many(items)


def store_sink(state: RangeState) -> Callable[[list[Record]], None]:
    """Append records to the range's store (:func:`store_records`)."""

    def sink(records: list[Record]) -> None:
        store_records(state, [r.as_data() for r in records])

    return sink


class Recording:
    """The recorder of one ``serve``: its reader process and a daemon thread that follows the sessions.

    :meth:`start` returns once the reader listens, or has failed: then :attr:`error` is set and
    ``note`` has said "commands are NOT recorded: ..." (its one-line reason). :meth:`close` stops
    the reader (it sends what it holds and ends), flushes the records and stops the node map.
    ``connector`` makes the event source (default: :class:`ReaderProcess`).
    """

    def __init__(
        self,
        state: RangeState,
        backend: Backend,
        note: Callable[[str], None],
        *,
        connector: Callable[[], Any] = ReaderProcess,
    ):
        self.nodes = NodeMap(state.name, backend)
        self.recorder = Recorder(
            self.nodes.where,
            store_sink(state),
            connector=connector,
            where_id=self.nodes.lookup,
            seen=self.nodes.seen,
        )
        self.stop = threading.Event()
        self.ready = threading.Event()  # the reader listens, or could not
        self.error: BaseException | None = None
        self.note = note
        self.thread = threading.Thread(target=self._run, name=f"rangectl-recorder-{state.name}", daemon=True)

    @property
    def reader_pid(self) -> int | None:
        """The reader process's pid while it runs (its CPU time is the recording's: bench/record.py)."""
        return self.recorder.reader_pid

    def start(self) -> None:
        self.nodes.refresh()
        self.thread.start()
        self.ready.wait(READER_START_SECONDS + 5.0)

    def _run(self) -> None:
        # the reader process is started on this thread and lives as long as it (PR_SET_PDEATHSIG)
        try:
            self.recorder.run(self.stop, self.ready)
        except RangeError as exc:
            self.error = exc
            self.note(f"commands are NOT recorded: {exc}")
        except Exception as exc:  # noqa: BLE001 - say so; serving goes on
            self.error = exc
            log.exception("recorder stopped")
            self.note(f"the command recorder stopped: {exc}")
        finally:
            self.ready.set()

    def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.nodes.close()


class RemoteRecording:
    """The command recorders of the engines whose processes this machine's kernel does not show
    (``Backend.recording_agents``: a swarm's engines on other hosts): each engine's agent runs the
    same recorder on its host (a ``session`` of :func:`~rangectl.access.agent_record.record`) and
    streams the records here, to the same store as :class:`Recording`. The node list comes from
    here (:class:`NodeMap`, every engine's nodes): sent at the start and again when an agent asks
    about a container it does not know.
    :meth:`start` says, through ``note``, which engines do not record (their one-line reason).
    ``sink`` gets the record dicts (default: the range's store)."""

    def __init__(
        self,
        state: RangeState,
        backend: Backend,
        note: Callable[[str], None],
        *,
        sink: Callable[[list[dict[str, Any]]], None] | None = None,
        agents: list[tuple[str, Any]] | None = None,
    ):
        self.state, self.backend, self.note = state, backend, note
        self.sink = sink or (lambda records: store_records(state, records))
        self.nodes = NodeMap(state.name, backend)
        self._agents = agents
        self.streams: dict[str, Any] = {}
        self.errors: dict[str, str] = {}  # engine -> why it does not record
        self.records = 0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._sending: set[str] = set()  # engines a node list is being sent to
        self._again: set[str] = set()  # ... and asked for again meanwhile
        self._closing = threading.Event()

    def start(self) -> None:
        agents = self._agents if self._agents is not None else self.backend.recording_agents(self.state.name)
        if not agents:
            return
        self.nodes.refresh()
        for name, agent in agents:
            try:
                stream = self._open(name, agent)
            except RangeError as exc:
                self.errors[name] = exc.message
                self.note(f"commands on engine {name} are NOT recorded: {exc.message}")
                continue
            t = threading.Thread(target=self._follow, args=(name, agent, stream), daemon=True,
                                 name=f"rangectl-recorder-{name}")  # fmt: skip
            t.start()
            self._threads.append(t)
        if self.streams:
            self.note(f"commands on engine(s) {', '.join(sorted(self.streams))} are recorded by their agents")

    def _send_nodes(self, name: str, stream: Any) -> None:
        """Read the node list again and send it: one at a time per engine (a request asked while
        one is on its way is answered by the next), never two writers on the stream at once."""
        with self._lock:
            if name in self._sending:
                self._again.add(name)
                return
            self._sending.add(name)
        try:
            while True:
                self.nodes.refresh()
                line = json.dumps({"nodes": {c: list(v) for c, v in self.nodes.ids().items()}}).encode() + b"\n"
                try:
                    stream.sendall(line)
                except OSError:
                    return
                with self._lock:
                    if name not in self._again:
                        return
                    self._again.discard(name)
        finally:
            with self._lock:
                self._sending.discard(name)

    def _open(self, name: str, agent: Any) -> Any:
        stream = agent.session(record, nodes={c: list(v) for c, v in self.nodes.ids().items()})
        self.streams[name] = stream
        prio = getattr(stream, "hello", {}).get("priority")
        if isinstance(prio, str) and not prio.startswith("SCHED_FIFO"):
            self.note(f"commands on engine {name} are read at {prio}: under load short ones may lose their arguments")
        return stream

    def _follow(self, name: str, agent: Any, stream: Any) -> None:
        """Read an engine's records; when its stream ends without a word (the engine stopped
        answering: its nodes stopped with it), ask it again every RESUME_SECONDS until it is back."""
        while True:
            if not self._read(name, stream) or self._closing.is_set():
                return
            self.note(f"the command recorder on engine {name} is gone (the engine stopped answering): asking again")
            while True:
                if self._closing.wait(RESUME_SECONDS):
                    return
                try:
                    stream = self._open(name, self._agent_again(name, agent))
                except Exception:  # noqa: BLE001 - not back yet
                    continue
                if self._closing.is_set():  # close() came meanwhile: this one ends with the rest
                    with contextlib.suppress(Exception):
                        stream.shutdown(socket.SHUT_WR)
                self.note(f"the command recorder on engine {name} is back")
                break

    def _agent_again(self, name: str, agent: Any) -> Any:
        """The engine's agent to ask again: found anew through the backend (it may be a new
        container), else the one given."""
        if self._agents is not None:
            return agent
        with contextlib.suppress(Exception):
            return dict(self.backend.recording_agents(self.state.name)).get(name) or agent
        return agent

    def _read(self, name: str, stream: Any) -> bool:
        """Store the stream's records until it ends; True when it ended without an error line."""
        failed = False
        while True:
            try:
                msg = stream.read_line()
            except (OSError, ValueError) as exc:
                log.warning("recorder of engine %s: %s", name, exc)
                msg = None
            if msg is None:
                break
            if "records" in msg:
                try:
                    self.sink(msg["records"])
                    with self._lock:
                        self.records += len(msg["records"])
                except Exception:  # noqa: BLE001 - a store that failed once is tried with the next batch
                    log.exception("recorder of engine %s: storing records failed", name)
            elif "unknown" in msg:
                threading.Thread(target=self._send_nodes, args=(name, stream), daemon=True).start()
            elif "error" in msg:
                why = msg["error"].get("message", "failed")
                self.errors[name] = why
                failed = True
                self.note(f"the command recorder on engine {name} stopped: {why}")
        stream.close()
        return not failed

    def close(self, timeout: float = 10.0) -> None:
        """Stop every engine's recorder: each sends what it holds, then its stream ends."""
        self._closing.set()
        for stream in list(self.streams.values()):
            with contextlib.suppress(Exception):
                stream.shutdown(socket.SHUT_WR)
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        for stream in list(self.streams.values()):
            with contextlib.suppress(Exception):
                stream.close()
        self.nodes.close()
