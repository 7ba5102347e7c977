"""The command recorder of an engine on another machine, run by rangectl's agent there.

On a swarm (docs/cluster.md) the nodes of an engine on another host run on that host's kernel,
whose process events only a process in its initial namespaces gets: the engine's agent is one.
The controller's :class:`~rangectl.access.recording.RemoteRecording` asks the agent for a
``session`` of :func:`record`, which runs the same :class:`~rangectl.access.recorder.Recorder`
there and answers in JSON lines:

``{"ok": true, "reader": PID, "priority": "SCHED_FIFO priority 5"}``
    once the reader listens (else an error line with the reader's reason); ``priority`` is the
    scheduling the reader got (anything but ``SCHED_FIFO`` reads short commands late under load);
``{"records": [...]}``
    each batch of records (:meth:`Record.as_data`, with kind, ts and team);
``{"unknown": CONTAINER_ID}``
    a container not in the node list ran something: the controller answers ``{"nodes": {...}}``
    (the whole list, container id -> [team, node]), as it sends at the start.

The controller's side ending stops the recorder; what it holds is sent before the connection closes.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

from rangectl.access.recorder import READER_START_SECONDS, ReaderProcess, Recorder, container_id_of
from rangectl.backend.agent_server import send_line
from rangectl.backend.nodeexec import agent_session, error_record
from rangectl.errors import RangeError

UNKNOWN_ASK_SECONDS = 1.0  # an unknown container is asked about at most this often
UNKNOWN_WAIT_SECONDS = 2.0  # a lookup waits this long for the controller's answer


class RangeNodes:
    """Container id -> (team, node) of the range, on the agent's side of a ``record`` request: the
    controller sends the list at the start and again whenever it is asked about a container not in
    it (``{"unknown": ID}``, at most every :data:`UNKNOWN_ASK_SECONDS` per container). A lookup of an
    unknown container waits up to :data:`UNKNOWN_WAIT_SECONDS` for a list sent after it asked; a
    container missing from such a list is not the range's (another range's, the engine's own) and
    is answered None at once from then on."""

    def __init__(self, ids: dict[str, Any], ask: Any, clock: Any = time.monotonic):
        self._clock = clock
        self._ask = ask
        self._ids = self._read(ids)
        self._version = 0
        self._asked: dict[str, tuple[float, int]] = {}  # cid -> (when, list version then)
        self._not_ours: set[str] = set()
        self._cond = threading.Condition()
        self.closed = False

    @staticmethod
    def _read(ids: dict[str, Any]) -> dict[str, tuple[int, str]]:
        return {str(cid): (int(v[0]), str(v[1])) for cid, v in (ids or {}).items()}

    def update(self, ids: dict[str, Any]) -> None:
        new = self._read(ids)
        with self._cond:
            self._version += 1
            self._ids = new
            for cid, (_, version) in list(self._asked.items()):
                if cid in new:
                    del self._asked[cid]
                elif version < self._version:  # a list sent after we asked, and not in it
                    self._not_ours.add(cid)
                    del self._asked[cid]
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _note(self, cid: str) -> None:  # under the lock
        now = self._clock()
        when, _ = self._asked.get(cid, (float("-inf"), 0))
        if now - when >= UNKNOWN_ASK_SECONDS:
            self._asked[cid] = (now, self._version)
            try:
                self._ask(cid)
            except OSError:
                pass

    def seen(self, cid: str) -> None:
        if cid in self._ids or cid in self._not_ours:
            return
        with self._cond:
            self._note(cid)

    def lookup(self, cid: str | None) -> tuple[int, str] | None:
        if cid is None:
            return None
        hit = self._ids.get(cid)
        if hit is not None or cid in self._not_ours:
            return hit
        with self._cond:
            self._note(cid)
            deadline = self._clock() + UNKNOWN_WAIT_SECONDS
            while cid not in self._ids and cid not in self._not_ours and not self.closed:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._ids.get(cid)


@agent_session
def record(conn: socket.socket, rest: bytes, nodes: dict[str, Any]) -> None:
    """The command recorder (:mod:`rangectl.access.recorder`) on the engine's host: its kernel's
    process events, read here (the agent is in the host's network and PID namespaces, where the
    proc connector is), sessions followed in the range's nodes, records sent as JSON lines
    ``{"records": [...]}``. Answers ``{"ok": true}`` once the reader listens (or an error line: the
    reader's reason). The controller's side ending stops it; what it holds is sent first."""
    send_lock = threading.Lock()
    opened = threading.Event()
    stop = threading.Event()

    def send(obj: dict[str, Any]) -> None:
        with send_lock:
            send_line(conn, obj)

    known = RangeNodes(nodes or {}, lambda cid: send({"unknown": cid}))

    def sink(records: list[Any]) -> None:
        opened.wait()
        send({"records": [dict(r.as_data(), kind=r.kind, ts=r.ts, team=r.team) for r in records]})

    def watch() -> None:  # new node lists from the controller; its side ending stops the recorder
        buf = rest
        try:
            while True:
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    try:
                        msg = json.loads(line) if line.strip() else {}
                        if isinstance(msg, dict) and isinstance(msg.get("nodes"), dict):
                            known.update(msg["nodes"])
                    except (ValueError, TypeError, IndexError):  # a bad line: skipped, recording goes on
                        continue
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
        except OSError:
            pass
        stop.set()
        known.close()

    recorder = Recorder(
        lambda pid: known.lookup(container_id_of(pid)), sink, where_id=known.lookup, seen=known.seen,
        # the agent is a container: its cpu cgroup may have no real-time time (leave_cpu_cgroup)
        connector=lambda: ReaderProcess(leave_cgroup=True),
    )  # fmt: skip
    ready = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            recorder.run(stop, ready)
        except BaseException as exc:  # noqa: BLE001 - the controller is told
            failed.append(exc)
        finally:
            ready.set()

    t = threading.Thread(target=run, daemon=True, name="rangectl-agent-recorder")
    t.start()
    ready.wait(READER_START_SECONDS + 5.0)
    if failed or not ready.is_set():
        stop.set()
        raise failed[0] if failed else RangeError("the command recorder did not start")
    send({"ok": True, "reader": recorder.reader_pid, "priority": recorder.reader_priority})
    opened.set()
    threading.Thread(target=watch, daemon=True).start()
    t.join()
    if failed:
        send({"error": error_record(failed[0])})


