"""The controller's side of an engine agent (the agent itself: :mod:`rangectl.backend.agent_server`).

An engine on another machine has its containers' namespaces there, so the controller cannot
setns(2) into them. Instead rangectl starts one **agent** container per engine and range
(:func:`ensure_agent`): the ``agent`` image (``images/agent/``: Debian's iptables and tcpdump on
the base), in the engine host's network and PID namespaces with the capabilities its work needs, with the controller's
own rangectl package and the libraries its node jobs import put into it before it starts
(:func:`code_tar`), so both sides always run the same code. Nothing is pulled and nothing
listens on a network: every request is an ``exec`` of a tiny relay in the agent container
through the engine's Docker API, whose stdin and stdout carry the request and its answer
(:class:`AgentStream`).

On top of that:

- :class:`Agent` runs node jobs in a node (``job``), host operations (``call``), and makes TCP
  connections and listeners inside a node (``connect``, ``listen``) that this process uses as
  ordinary sockets (bridged through the exec streams);
- :class:`AgentHost` is a :class:`~rangectl.backend.hostops.Host` for the Docker backend's
  host-level work on that engine's machine;
- :class:`AgentNodeExec` is the execution seam for the engine's nodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import socket
import struct
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from docker.errors import APIError, NotFound

from rangectl.backend.agent_server import RELAY, SOCKET, splice
from rangectl.backend.base import NodeRef
from rangectl.backend.engine import tcp_keepalive
from rangectl.backend.hostops import Host
from rangectl.backend.nodeexec import (
    BoxedJob,
    Job,
    JobError,
    NodeExec,
    NodePort,
    RunningJob,
    error_record,
    job_name,
    plain,
    raise_error,
    session_name,
)
from rangectl.errors import EnvironmentProblem, RangeError

AGENT_IMAGE = "agent"
AGENT_LABEL = "io.rangectl.agent"  # value: the range the agent serves
CODE_LABEL = "io.rangectl.agent-code"  # value: hash of the code put into it
CODE_DIR = "/opt/rangectl-agent"
#: what the agent imports: rangectl and the libraries its node jobs use, from this Python
SHIPPED = (
    "rangectl",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
    "rstr",
    "ruamel",
    "scapy",
)
START_SECONDS = 30.0
AGENT_CAPS = ["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "SYS_NICE", "KILL", "DAC_OVERRIDE", "DAC_READ_SEARCH"]
ACCEPTORS = 2  # accept requests kept waiting per listener


def agent_name(range_name: str) -> str:
    return f"rc-{range_name}.agent"


# --- the code the agent runs ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def code_tar() -> tuple[bytes, str]:
    """(tar of the shipped packages under CODE_DIR, its hash). Byte code and caches left out."""
    buf = io.BytesIO()
    digest = hashlib.sha256()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in SHIPPED:
            mod = importlib.import_module(name)
            paths = list(getattr(mod, "__path__", None) or [])  # a package (a namespace one too)
            root = Path(paths[0]) if paths else Path(mod.__file__ or "")
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for f in files:
                if "__pycache__" in f.parts or f.suffix in (".pyc", ".pyo"):
                    continue
                rel = f.name if root.is_file() else f"{root.name}/{f.relative_to(root).as_posix()}"
                data = f.read_bytes()
                digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
                info = tarfile.TarInfo(f"{CODE_DIR.lstrip('/')}/{rel}")
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), digest.hexdigest()[:16]


def ensure_agent(api: Any, range_name: str, image: str, where: str) -> str:
    """The running agent container of ``range_name`` on the engine of ``api`` (made and started
    when missing or when its code is not this controller's); returns its id."""
    name = agent_name(range_name)
    tar, code = code_tar()
    try:
        info = api.inspect_container(name)
    except NotFound:
        info = None
    if info is not None:
        labels = info["Config"].get("Labels") or {}
        if labels.get(AGENT_LABEL) != range_name:
            raise RangeError(f"a container named '{name}' on {where} is not range '{range_name}''s agent")
        if labels.get(CODE_LABEL) == code and info["State"]["Running"]:
            return info["Id"]
        api.remove_container(info["Id"], force=True)
    # not --privileged: exactly what its work needs (setns into nodes, their /proc entries,
    # iptables and routes, raw sockets for traffic and arrival counters, kills at deadlines, the
    # kernel's process events with the host's cgroup paths for the command recorder)
    host_config = api.create_host_config(
        network_mode="host", pid_mode="host", cgroupns="host", init=True, restart_policy={"Name": "unless-stopped"},
        cap_add=AGENT_CAPS, security_opt=["seccomp=unconfined", "apparmor=unconfined"],
    )  # fmt: skip
    try:
        created = api.create_container(
            image, name=name, detach=True, host_config=host_config,
            labels={AGENT_LABEL: range_name, CODE_LABEL: code},
        )  # fmt: skip
    except APIError as exc:
        if exc.status_code == 409:  # another controller thread made it meanwhile
            return _wait_serving(api, api.inspect_container(name)["Id"], where)
        raise EnvironmentProblem(f"cannot create rangectl's agent on {where}: {exc.explanation or exc}") from None
    cid = created["Id"]
    if not api.put_archive(cid, "/", tar):
        raise EnvironmentProblem(f"cannot put rangectl's code into its agent on {where}")
    api.start(cid)
    return _wait_serving(api, cid, where)


def _wait_serving(api: Any, cid: str, where: str) -> str:
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            ex = api.exec_create(cid, ["test", "-S", SOCKET])
            api.exec_start(ex["Id"])
            if api.exec_inspect(ex["Id"]).get("ExitCode") == 0:
                return cid
        except APIError:  # not running (yet, or any more: restarting after a crash)
            pass
        state = api.inspect_container(cid)["State"]
        if state.get("Restarting") or not state.get("Running") or time.monotonic() > deadline:
            logs = api.logs(cid, tail=5).decode(errors="replace").strip().splitlines()
            raise EnvironmentProblem(
                f"rangectl's agent on {where} did not start: {logs[-1] if logs else state.get('Status')}",
                fix="see `docker logs` of the agent on that engine",
            )
        time.sleep(0.1)


def remove_agents(api: Any, range_name: str | None) -> int:
    """Remove the agent containers of ``range_name`` (of every range when None) from one engine."""
    label = AGENT_LABEL if range_name is None else f"{AGENT_LABEL}={range_name}"
    n = 0
    for c in api.containers(all=True, filters={"label": label}):
        try:
            api.remove_container(c["Id"], force=True)
            n += 1
        except NotFound:
            pass
    return n


# --- one request: an exec of the relay ----------------------------------------------------------


class AgentStream:
    """One request to the agent: the relay's stdin and (demultiplexed) stdout."""

    def __init__(self, api: Any, cid: str, request: dict[str, Any]):
        ex = api.exec_create(cid, ["python3", "-c", RELAY], stdin=True, stdout=True, stderr=True, tty=False)
        self._resp = api.exec_start(ex["Id"], socket=True)
        self.sock: socket.socket = getattr(self._resp, "_sock", self._resp)
        self.sock.settimeout(None)
        tcp_keepalive(self.sock)
        self._buf = bytearray()  # undemultiplexed input
        self._out = bytearray()  # stdout not yet handed out
        self.err = bytearray()
        self.hello: dict[str, Any] = {}  # a session's first answer line (Agent.session)
        self._closed = False
        self.sendall(json.dumps(request, allow_nan=False).encode() + b"\n")

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read one chunk from the exec; False at its end."""
        data = self.sock.recv(65536)
        if not data:
            return False
        self._buf += data
        while len(self._buf) >= 8:
            kind, size = self._buf[0], struct.unpack(">I", self._buf[4:8])[0]
            if len(self._buf) < 8 + size:
                break
            chunk = bytes(self._buf[8 : 8 + size])
            del self._buf[: 8 + size]
            (self._out if kind == 1 else self.err).extend(chunk)
        return True

    def recv(self, bufsize: int = 65536) -> bytes:
        """The next stdout bytes (b"" at the end); whatever has come, however much (``bufsize``
        only makes it read like a socket)."""
        while not self._out:
            try:
                if not self._fill():
                    return b""
            except OSError:
                return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    def read_line(self) -> dict[str, Any] | None:
        """The next JSON line from the agent (None when the stream ended first)."""
        while b"\n" not in self._out:
            try:
                if not self._fill():
                    return None
            except OSError:
                return None
        line, _, rest = bytes(self._out).partition(b"\n")
        self._out = bytearray(rest)
        return json.loads(line)

    def shutdown(self, how: int) -> None:
        """Like a socket's (``SHUT_WR``: the relay's stdin ends)."""
        self.sock.shutdown(how)

    def abort(self) -> None:
        """Cut the stream from any thread: a reader blocked on it returns (a plain socket needs its
        shutdown for that; an SSH channel its close)."""
        with contextlib.suppress(Exception):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in (self.sock, self._resp):
            try:
                s.close()
            except Exception:  # noqa: BLE001 - closing, whatever state it is in
                pass


def _answer(stream: AgentStream, what: str) -> dict[str, Any]:
    """The agent's first answer line; raises the error it reports (or that it said nothing)."""
    line = stream.read_line()
    if line is None:
        err = bytes(stream.err).decode(errors="replace").strip()
        stream.close()
        raise JobError(f"{what}: the agent closed the request" + (f" ({err.splitlines()[-1]})" if err else ""))
    if "error" in line:
        stream.close()
        raise_error(line["error"], what)
    return line


def _bridge(stream: AgentStream, sock: socket.socket) -> None:
    """Copy between an agent stream and a local socket both ways until both ends are done, then
    close both: the agent's own :func:`~rangectl.backend.agent_server.splice`, on a daemon thread."""
    threading.Thread(target=splice, args=(stream, sock), daemon=True, name="rangectl-agent-bridge").start()


# --- jobs -------------------------------------------------------------------------------------------


class AgentJob(BoxedJob):
    """A job running in a node of an engine elsewhere, through its agent."""

    def __init__(self, stream: AgentStream, where: str, deadline: float | None = None):
        super().__init__()
        self.stream, self.where, self.deadline = stream, where, deadline
        threading.Thread(target=self._read, daemon=True, name=f"rangectl-agent-job {where}").start()

    def _read(self) -> None:
        try:
            while True:
                line = self.stream.read_line()
                if line is None:
                    err = bytes(self.stream.err).decode(errors="replace").strip()
                    self._box["error"] = error_record(
                        JobError("the agent's connection ended without a result" + (f": {err}" if err else ""))
                    )
                    break
                if line.get("ready"):
                    self._ready.set()
                    continue
                if "error" in line:
                    self._box["error"] = line["error"]
                else:
                    self._box["value"] = line.get("value")
                break
        except Exception as exc:  # noqa: BLE001 - handed to the caller as data
            self._box["error"] = error_record(exc)
        finally:
            self._ready.set()
            self._done.set()
            self.stream.close()

    def stop(self) -> None:
        if not self._done.is_set():
            try:
                self.stream.sendall(b"stop\n")
            except OSError:
                pass

    def _abandon(self) -> None:
        """The caller gave up: the stream is cut, so the reader ends (with no result) whatever the
        connection's state; the agent stops the job when its relay's stdin ends."""
        self.stream.abort()


class Agent:
    """One engine's agent container, driven through that engine's API ``api``."""

    def __init__(self, api: Any, cid: str, where: str):
        self.api, self.cid, self.where = api, cid, where

    def stream(self, request: dict[str, Any]) -> AgentStream:
        try:
            return AgentStream(self.api, self.cid, request)
        except Exception as exc:  # noqa: BLE001 - the engine's API, its transport (sockets, SSH channels)
            raise RangeError(f"rangectl's agent on {self.where} does not answer: {type(exc).__name__}: {exc}") from None

    def job(self, pid: int | None, job: Job, where: str) -> AgentJob:
        req = {"op": "job", "pid": pid, "job": plain(job.as_dict(), f"the job {job.fn}")}
        return AgentJob(self.stream(req), where, job.deadline)

    def call(self, fn: Callable[..., Any], **args: Any) -> Any:
        """Run the host operation ``fn`` (a node job) on the engine's machine; its result."""
        job = Job(job_name(fn), args)
        return self.job(None, job, f"{fn.__name__} on {self.where}").result()

    def connect(self, pid: int, host: str, port: int, timeout: float) -> socket.socket:
        """A TCP connection to ``host:port`` made inside process ``pid``'s namespace, as a local socket."""
        stream = self.stream({"op": "connect", "pid": pid, "host": host, "port": port, "timeout": timeout})
        _answer(stream, f"connect to {host}:{port} on {self.where}")
        mine, theirs = socket.socketpair()
        _bridge(stream, theirs)
        return mine

    def capture(self, iface: str, snaplen: int) -> AgentStream:
        """The pcap bytes tcpdump captures on ``iface`` of the engine's host, as a stream: read it
        to its end; ``shutdown(SHUT_WR)`` stops the capture (what it holds still comes), ``close`` drops it."""
        stream = self.stream({"op": "capture", "iface": iface, "snaplen": snaplen})
        _answer(stream, f"capture on {iface} of {self.where}")
        return stream

    def session(self, fn: Callable[..., Any], **args: Any) -> AgentStream:
        """A conversation with ``fn`` (marked ``@agent_session``) in the agent, as a stream: answered
        once ``fn`` says it is ready (its first line, kept in the stream's ``hello``), or the error it gave."""
        stream = self.stream({"op": "session", "fn": session_name(fn), "args": plain(args, f"the arguments of {fn.__name__}")})
        stream.hello = _answer(stream, f"{fn.__name__} on {self.where}")
        return stream

    def listen(self, pid: int, host: str, port: int, backlog: int) -> socket.socket:
        """A listener on ``host:port`` inside process ``pid``'s namespace: a local listening socket
        (127.0.0.1, a free port) that gets each connection the node's listener accepts."""
        key = uuid.uuid4().hex
        hold = self.stream({"op": "listen", "pid": pid, "host": host, "port": port, "backlog": backlog, "key": key})
        _answer(hold, f"listen on {host}:{port} on {self.where}")
        local = _RelayListener(socket.AF_INET, socket.SOCK_STREAM)
        local.bind(("127.0.0.1", 0))
        local.listen(backlog)
        local.hold = hold
        addr = local.getsockname()

        def acceptor() -> None:
            while not local.closed_by_owner:
                try:
                    st = self.stream({"op": "accept", "key": key})
                    _answer(st, "accept")
                except Exception:  # noqa: BLE001 - the listener is gone (closed, node re-created)
                    if local.closed_by_owner:
                        return
                    time.sleep(0.5)
                    continue
                try:
                    c = socket.create_connection(addr, timeout=5)
                    c.settimeout(None)
                except OSError:
                    st.close()
                    return
                _bridge(st, c)

        for _ in range(ACCEPTORS):
            threading.Thread(target=acceptor, daemon=True, name="rangectl-agent-accept").start()
        local.setblocking(False)
        return local


class _RelayListener(socket.socket):
    """The local side of a listener inside a remote node: closing it closes the node's listener."""

    hold: AgentStream | None = None
    closed_by_owner = False

    def close(self) -> None:
        self.closed_by_owner = True
        if self.hold is not None:
            self.hold.close()
        super().close()


# --- the backend's pieces ------------------------------------------------------------------------------


class AgentHost(Host):
    """An engine's machine, reached through its agent."""

    def __init__(self, agent: Callable[[], Agent], where: str):
        self._agent, self.where = agent, where

    def call(self, fn: Any, **args: Any) -> Any:
        return self._agent().call(fn, **args)


class _AgentPort(NodePort):
    def __init__(self, agent: Agent, pid: int, identity: tuple[Any, ...]):
        self.agent, self.pid, self.identity = agent, pid, identity

    def listen(self, host: str, port: int, backlog: int = 64) -> socket.socket:
        return self.agent.listen(self.pid, host, port, backlog)

    def tcp_socket(self) -> socket.socket:
        raise RangeError(f"a node on {self.agent.where} has no socket here: use connect()")

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        s = self.agent.connect(self.pid, host, port, timeout)
        s.setblocking(False)
        return s

    def close(self) -> None:
        pass  # listeners live on until their own sockets are closed, as local ones do


class AgentNodeExec(NodeExec):
    """The execution seam for the nodes of engines elsewhere: ``locate(ref)`` gives (container id,
    host pid) and ``agent_for(ref)`` the agent of the engine that holds the node."""

    def __init__(self, locate: Callable[[NodeRef], tuple[str, int]], agent_for: Callable[[NodeRef], Agent]):
        self.locate, self.agent_for = locate, agent_for

    def start(self, ref: NodeRef, job: Job) -> RunningJob:
        _cid, pid = self.locate(ref)
        return self.agent_for(ref).job(pid, job, f"{job.fn.rsplit(':', 1)[-1]} in {ref}")

    def attach(self, ref: NodeRef) -> NodePort:
        cid, pid = self.locate(ref)
        return _AgentPort(self.agent_for(ref), pid, (cid, pid))
