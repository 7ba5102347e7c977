"""The engine agent: rangectl's helper next to the nodes of an engine on another machine.

A backend whose containers are not on the controller's machine (the swarm backend) starts one
agent container per engine and range, in the engine host's network and PID
namespaces, with the controller's own rangectl code and libraries put in before it starts
(:mod:`rangectl.backend.agent`). This module is its main program::

    python3 -m rangectl.backend.agent_server serve [SOCKET]

It listens on a Unix socket inside the agent container. Nothing reaches that socket from a
network: the controller gets to it only through the Docker API, by an ``exec`` of :data:`RELAY`
(a few lines of standard-library Python that copy the exec's stdin and stdout to the socket).
Each connection starts with one JSON line saying what it is for:

``{"op": "job", "pid": PID or null, "job": {fn, args, deadline}}``
    run the node job (:mod:`rangectl.backend.nodeexec`) inside the network namespace of host
    process PID (a node's init, as the engine reports it) or in the host's own (null: the
    engine host's iptables, a node's bridge port, a kill at an exec's deadline). Answers one
    JSON line ``{"ready": true}`` when the job says it is ready, then ``{"value": ...}`` or
    ``{"error": {type, message, fix}}``. A line ``stop`` from the controller, or the connection
    closing, asks the job to stop.
``{"op": "connect", "pid": PID, "host": H, "port": P, "timeout": S}``
    a TCP connection made inside PID's namespace; answers ``{"ok": true}`` (or an error line),
    then the connection's bytes both ways.
``{"op": "capture", "iface": IFACE, "snaplen": N}``
    ``tcpdump -i IFACE`` on the engine's host (a team's bridge, for the drill's capture); answers
    ``{"ok": true}`` once tcpdump has its interface open (or an error line with its message),
    then its pcap bytes until the controller ends its side of the connection.
``{"op": "record", "nodes": {CONTAINER_ID: [TEAM, NODE]}}``
    the command recorder on the engine's host, for the range's nodes; answers ``{"ok": true}``
    once it listens, then ``{"records": [...]}`` lines (and ``{"unknown": CONTAINER_ID}`` when a
    container not in the list runs something: the controller sends ``{"nodes": ...}`` again).
    The controller's side ending stops it, after what it holds is sent.
``{"op": "listen", "pid": PID, "host": H, "port": P, "backlog": N, "key": K}``
    a listening socket inside PID's namespace, kept while this connection stays open; answers
    ``{"ok": true}``. ``{"op": "accept", "key": K}`` waits for the next connection on it,
    answers ``{"ok": true, "peer": [addr, port]}``, then its bytes both ways.

Everything here runs as the same functions the controller runs for a local engine (the job
functions, :func:`rangectl.netns.entered`): the ground truth is the same on any engine.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from rangectl import netns
from rangectl.backend.nodeexec import Job, JobControl, error_record, plain, resolve
from rangectl.errors import RangeError

SOCKET = "/run/rangectl-agent.sock"

#: What the controller execs in the agent container: stdin and stdout to the agent's socket and
#: back, standard library only (it starts in a few milliseconds; the agent itself holds the imports).
RELAY = (
    "import os,socket,sys,threading\n"
    f"s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1] if len(sys.argv)>1 else {SOCKET!r})\n"
    "def up():\n"
    " while True:\n"
    "  d=os.read(0,65536)\n"
    "  if not d:break\n"
    "  s.sendall(d)\n"
    " try:s.shutdown(socket.SHUT_WR)\n"
    " except OSError:pass\n"
    "threading.Thread(target=up,daemon=True).start()\n"
    "while True:\n"
    " d=s.recv(65536)\n"
    " if not d:break\n"
    " os.write(1,d)\n"
)

_listeners: dict[str, socket.socket] = {}
_lock = threading.Lock()


def _ns(pid: int | None) -> str | None:
    if pid is None:
        return None
    path = netns.netns_path_of_pid(int(pid))
    if not os.path.exists(path):
        raise netns.NetnsError(f"process {pid} is gone (the node stopped or was re-created)")
    return path


def _line(conn: socket.socket, obj: dict[str, Any]) -> None:
    conn.sendall(json.dumps(obj, allow_nan=False).encode() + b"\n")


def _read_line(conn: socket.socket, limit: int = 1 << 20) -> tuple[bytes, bytes]:
    """The first line from ``conn`` and whatever came after it."""
    buf = b""
    while b"\n" not in buf:
        data = conn.recv(65536)
        if not data:
            raise ConnectionError("closed before its request line")
        buf += data
        if len(buf) > limit:
            raise ValueError("request line too long")
    line, _, rest = buf.partition(b"\n")
    return line, rest


def splice(a: socket.socket, b: socket.socket, first: bytes = b"") -> None:
    """Copy both ways until both directions ended, then close both. ``a`` and ``b`` are sockets, or
    anything with their ``recv``, ``sendall``, ``shutdown`` and ``close`` (the controller's agent stream)."""

    def one(src: socket.socket, dst: socket.socket, head: bytes) -> None:
        try:
            if head:
                dst.sendall(head)
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    t = threading.Thread(target=one, args=(b, a, b""), daemon=True)
    t.start()
    one(a, b, first)
    t.join()
    for s in (a, b):
        try:
            s.close()
        except OSError:
            pass


def _job(conn: socket.socket, req: dict[str, Any], rest: bytes) -> None:
    job = Job(**req["job"])
    fn = resolve(job.fn)
    args = plain(job.args, f"the arguments of {job.fn}")
    path = _ns(req.get("pid"))
    ctl = JobControl(job.deadline)
    send_lock = threading.Lock()
    done = threading.Event()

    def watch() -> None:  # "stop" lines, or the controller going away
        buf = rest
        try:
            while not done.is_set():
                if b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    if line.strip() == b"stop":
                        ctl.request_stop()
                    continue
                data = conn.recv(4096)
                if not data:
                    break
                buf += data
        except OSError:
            pass
        ctl.request_stop()

    def said_ready() -> None:
        ctl._ready.wait()
        if not done.is_set():
            with send_lock:
                try:
                    _line(conn, {"ready": True})
                except OSError:
                    pass

    threading.Thread(target=watch, daemon=True).start()
    threading.Thread(target=said_ready, daemon=True).start()
    try:
        with netns.entered(path):
            value = fn(ctl, **args)
        out: dict[str, Any] = {"value": plain(value, f"the result of {job.fn}")}
    except BaseException as exc:  # noqa: BLE001 - crosses to the controller as data
        out = {"error": error_record(exc)}
    done.set()
    with send_lock:
        _line(conn, out)


def _connect(conn: socket.socket, req: dict[str, Any], rest: bytes) -> None:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(float(req.get("timeout") or 10))
        try:
            s.connect((str(req["host"]), int(req["port"])))
        except BaseException:
            s.close()
            raise
        s.settimeout(None)
        return s

    up = netns.run_in_netns(_ns(req.get("pid")), make)
    _line(conn, {"ok": True})
    splice(conn, up, rest)


def _listen(conn: socket.socket, req: dict[str, Any], rest: bytes) -> None:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((str(req["host"]), int(req["port"])))
            s.listen(int(req.get("backlog") or 64))
        except BaseException:
            s.close()
            raise
        return s

    key = str(req["key"])
    lsock = netns.run_in_netns(_ns(req.get("pid")), make)
    with _lock:
        old = _listeners.pop(key, None)
        _listeners[key] = lsock
    if old is not None:
        old.close()
    _line(conn, {"ok": True})
    try:  # held while the controller keeps this connection
        while conn.recv(4096):
            pass
    except OSError:
        pass
    with _lock:
        if _listeners.get(key) is lsock:
            del _listeners[key]
    try:
        lsock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    lsock.close()


def _accept(conn: socket.socket, req: dict[str, Any], rest: bytes) -> None:
    with _lock:
        lsock = _listeners.get(str(req["key"]))
    if lsock is None:
        raise ConnectionError(f"no listener '{req['key']}'")
    peer_conn, peer = lsock.accept()
    try:
        _line(conn, {"ok": True, "peer": list(peer[:2])})
    except BaseException:
        peer_conn.close()
        raise
    splice(conn, peer_conn, rest)


#: an interface name as Linux allows it (IFNAMSIZ - 1), and nothing tcpdump would read as an option
IFACE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.:-]{0,14}")
CAPTURE_START_SECONDS = 1.0  # tcpdump that has not failed by then has its interface open


def _capture(conn: socket.socket, req: dict[str, Any], rest: bytes) -> None:
    """tcpdump on an interface of the engine's host (a team's bridge), its pcap bytes streamed to
    the controller until the controller ends its side (or goes away): then tcpdump is stopped
    (SIGTERM: it flushes) and what it wrote last is sent before the connection closes."""
    iface = str(req.get("iface") or "")
    if not IFACE.fullmatch(iface):
        raise ValueError(f"not an interface name: {iface!r}")
    snaplen = max(64, min(int(req.get("snaplen") or 512), 262144))
    tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
    p = subprocess.Popen(
        [tcpdump, "-i", iface, "-n", "-U", "-s", str(snaplen), "-w", "-"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        p.wait(CAPTURE_START_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    if p.returncode is not None:
        err = (p.stderr.read() if p.stderr else b"").decode(errors="replace").strip().splitlines()
        raise RangeError(f"tcpdump -i {iface} on the engine's host: " + (err[-1] if err else f"exit {p.returncode}"))
    _line(conn, {"ok": True})

    def watch() -> None:  # the controller's side ended (or it went away): stop tcpdump
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
        if p.poll() is None:
            p.terminate()

    threading.Thread(target=watch, daemon=True).start()
    out = p.stdout
    assert out is not None
    try:
        while True:
            data = out.read1(65536)
            if not data:
                break
            conn.sendall(data)
    except OSError:
        p.terminate()
    finally:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()


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


def _record(conn: socket.socket, req: dict[str, Any], rest: bytes) -> None:
    """The command recorder (:mod:`rangectl.access.recorder`) on the engine's host: its kernel's
    process events, read here (the agent is in the host's network and PID namespaces, where the
    proc connector is), sessions followed in the range's nodes, records sent as JSON lines
    ``{"records": [...]}``. Answers ``{"ok": true}`` once the reader listens (or an error line: the
    reader's reason). The controller's side ending stops it; what it holds is sent first."""
    from rangectl.access.recorder import READER_START_SECONDS, Recorder, container_id_of

    send_lock = threading.Lock()
    opened = threading.Event()
    stop = threading.Event()

    def send(obj: dict[str, Any]) -> None:
        with send_lock:
            _line(conn, obj)

    nodes = RangeNodes(req.get("nodes") or {}, lambda cid: send({"unknown": cid}))

    def sink(records: list[Any]) -> None:
        opened.wait()
        send({"records": [dict(r.as_data(), kind=r.kind, ts=r.ts, team=r.team) for r in records]})

    def watch() -> None:  # new node lists from the controller; its side ending stops the recorder
        buf = rest
        try:
            while True:
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    if line.strip():
                        msg = json.loads(line)
                        if "nodes" in msg:
                            nodes.update(msg["nodes"])
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
        except (OSError, ValueError):
            pass
        stop.set()
        nodes.close()

    recorder = Recorder(lambda pid: nodes.lookup(container_id_of(pid)), sink, where_id=nodes.lookup, seen=nodes.seen)
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
    send({"ok": True, "reader": recorder.reader_pid})
    opened.set()
    threading.Thread(target=watch, daemon=True).start()
    t.join()
    if failed:
        send({"error": error_record(failed[0])})


OPS = {"job": _job, "connect": _connect, "listen": _listen, "accept": _accept, "capture": _capture, "record": _record}


def handle(conn: socket.socket) -> None:
    try:
        line, rest = _read_line(conn)
        req = json.loads(line)
        op = OPS.get(req.get("op"))
        if op is None:
            raise ValueError(f"unknown op {req.get('op')!r}")
        op(conn, req, rest)
    except BaseException as exc:  # noqa: BLE001 - reported to the controller, the agent goes on
        try:
            _line(conn, {"error": error_record(exc)})
        except OSError:
            pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def serve(path: str = SOCKET, ready: queue.Queue | None = None) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o600)
    srv.listen(256)
    if ready is not None:
        ready.put(path)
    print(f"rangectl agent: serving on {path} (python {sys.version.split()[0]})", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True, name="rangectl-agent-conn").start()


if __name__ == "__main__":  # pragma: no cover - the agent container's main program
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve(sys.argv[2] if len(sys.argv) > 2 else SOCKET)
    else:
        print("usage: python3 -m rangectl.backend.agent_server serve [SOCKET]", file=sys.stderr)
        sys.exit(2)
