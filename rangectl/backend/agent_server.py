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
``{"op": "session", "fn": "module:function", "args": {...}}``
    the connection handed to a function marked ``@agent_session`` (from a layer above the
    backend: the command recorder on the engine's host, :mod:`rangectl.access.agent_record`).
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
from typing import Any

from rangectl import netns
from rangectl.backend.nodeexec import Job, JobControl, error_record, plain, resolve, resolve_session
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


def send_line(conn: socket.socket, obj: dict[str, Any]) -> None:
    """One JSON line to the controller."""
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
                    send_line(conn, {"ready": True})
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
        send_line(conn, out)


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
    send_line(conn, {"ok": True})
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
    send_line(conn, {"ok": True})
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
        send_line(conn, {"ok": True, "peer": list(peer[:2])})
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
        # --immediate-mode: each packet handed over as it comes (not in blocks of up to 1 s, which
        # a stop would drop), so a capture stopped just after an attack still has it
        [tcpdump, "-i", iface, "-n", "-U", "--immediate-mode", "-s", str(snaplen), "-w", "-"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        p.wait(CAPTURE_START_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    if p.returncode is not None:
        err = (p.stderr.read() if p.stderr else b"").decode(errors="replace").strip().splitlines()
        raise RangeError(f"tcpdump -i {iface} on the engine's host: " + (err[-1] if err else f"exit {p.returncode}"))
    send_line(conn, {"ok": True})

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


def _session(conn: socket.socket, req: dict[str, Any], rest: bytes) -> None:
    """A conversation with a function of rangectl's marked ``@agent_session`` (named like a node
    job, ``"module:function"``): it gets the connection, what came after the request line and
    the request's ``args``, and owns the connection until it returns (the command recorder's
    ``rangectl.access.agent_record:record``)."""
    fn = resolve_session(str(req.get("fn") or ""))
    fn(conn, rest, **plain(req.get("args") or {}, f"the arguments of {req.get('fn')}"))


OPS = {"job": _job, "connect": _connect, "listen": _listen, "accept": _accept, "capture": _capture, "session": _session}


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
            send_line(conn, {"error": error_record(exc)})
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
