"""``docker exec`` with an absolute deadline, enforced here on the controller.

What runs inside a node is not trusted to end: trainees are root in their
workstation and may replace any file or binary there (a FIFO where a pid file
was, an ``sshd`` or ``timeout`` that never returns). So an exec is never left
to finish by itself:

* its output is read from the raw attach socket with the time left before the
  deadline as the only wait (one absolute deadline for the whole exec, not one
  per read); output beyond :data:`MAX_OUTPUT` bytes is read and dropped;
* at the deadline the exec's process and every process it started are killed
  with SIGKILL from the host, found by the exec's host PID (``ExecInspect``'s
  ``Pid``) and only after checking that the PID is really inside the
  container (same mount namespace as the container's init, not ours);
* the caller gets :data:`TIMED_OUT` (124, as ``timeout(1)``) and the output so
  far plus a note, at the deadline, whatever the kill achieved.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import time
from typing import Any

DEFAULT_TIMEOUT = 60.0  # seconds: the deadline of an exec whose caller names none
TIMED_OUT = 124  # exit code of an exec killed at its deadline
MAX_OUTPUT = 1 << 20  # bytes of output kept


def demux(raw: bytes) -> bytes:
    """stdout and stderr of a non-TTY attach stream (8-byte frame headers), in arrival order."""
    out = bytearray()
    off = 0
    while off + 8 <= len(raw):
        kind, size = raw[off], struct.unpack(">I", raw[off + 4 : off + 8])[0]
        if kind not in (0, 1, 2) or raw[off + 1 : off + 4] != b"\0\0\0":
            return raw  # not multiplexed after all (a TTY exec): the bytes as they came
        out += raw[off + 8 : off + 8 + size]
        off += 8 + size
    return bytes(out)


def _proc_ns(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) >= 2:
            kids.setdefault(int(rest[1]), []).append(int(name))
    return kids


def kill_tree(pid: int, container_pid: int | None) -> int:
    """SIGKILL ``pid`` and its descendants when ``pid`` is a process of the container whose init is
    ``container_pid``; returns how many were signalled (0 when the PID is not provably the container's)."""
    if not pid or not container_pid:
        return 0
    mnt = _proc_ns(pid, "mnt")
    if mnt is None or mnt != _proc_ns(container_pid, "mnt") or mnt == _proc_ns(os.getpid(), "mnt"):
        return 0
    kids = _children()
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(kids.get(p, []))
    n = 0
    for p in seen:
        if _proc_ns(p, "mnt") != mnt:
            continue
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
            n += 1
    return n


def run_exec(
    api: Any, container: str, argv: list[str], timeout: float | None = None, kill: Any = None
) -> tuple[int, str]:
    """Run ``argv`` in ``container`` through the Docker API ``api``; (exit code, stdout+stderr).

    ``kill(exec_pid, container_pid)`` kills at the deadline on the engine's host (default
    :func:`kill_tree` here: the engine is on this machine).

    Returns by ``timeout`` seconds (default :data:`DEFAULT_TIMEOUT`) plus the time the
    engine takes to answer the create/start/inspect calls; at the deadline the exec
    is killed and the code is :data:`TIMED_OUT`.
    """
    limit = DEFAULT_TIMEOUT if timeout is None else max(0.1, float(timeout))
    deadline = time.monotonic() + limit
    ex = api.exec_create(container, argv, stdout=True, stderr=True)
    eid = ex["Id"]
    sock = api.exec_start(eid, socket=True)
    raw: socket.socket = getattr(sock, "_sock", sock)
    buf = bytearray()
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            raw.settimeout(left)
            try:
                data = raw.recv(65536)
            except TimeoutError:
                timed_out = True
                break
            if not data:
                break
            if len(buf) < MAX_OUTPUT:
                buf += data[: MAX_OUTPUT - len(buf)]
    finally:
        if timed_out:
            _kill(api, container, eid, kill=kill)
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)
        for s in (sock, raw):
            with contextlib.suppress(Exception):
                s.close()
    out = demux(bytes(buf)).decode(errors="replace")
    if timed_out:
        return TIMED_OUT, out + f"\n[rangectl: exec killed at its {limit:g}s deadline]"
    # the stream ends when the process does; the engine may record the exit a moment later
    end = max(deadline, time.monotonic() + 2.0)
    while True:
        info = api.exec_inspect(eid)
        if not info.get("Running") or time.monotonic() >= end:
            break
        time.sleep(0.02)
    if info.get("Running"):  # output closed but the process lives on (it closed its stdout)
        _kill(api, container, eid, info, kill=kill)
        return TIMED_OUT, out + f"\n[rangectl: exec killed at its {limit:g}s deadline]"
    code = info.get("ExitCode")
    return (int(code) if code is not None else 1), out


def _kill(api: Any, container: str, eid: str, info: dict | None = None, kill: Any = None) -> None:
    with contextlib.suppress(Exception):
        info = info or api.exec_inspect(eid)
        if not info.get("Running"):
            return
        cpid = (api.inspect_container(container).get("State") or {}).get("Pid")
        (kill or kill_tree)(int(info.get("Pid") or 0), int(cpid or 0))
