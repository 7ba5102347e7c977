"""Every command trainees run over SSH, recorded from the host without their cooperation.

Shell history is the trainee's own file (``unset HISTFILE``, ``exec bash --norc``
and ``sh`` leave none), so the record is made on the host instead, from the
Linux *proc connector* (netlink ``NETLINK_CONNECTOR``, group ``CN_IDX_PROC``):
the kernel reports the fork, exec and exit of every process on the machine,
with host pids, whatever the process does to itself. Four parts:

* :class:`ProcConnector` — the netlink socket: subscribes, reads and parses the
  kernel's messages into :class:`ProcEvent` s (processes only: threads are left
  out). Its receive buffer is large (4 MiB, forced when root); when the kernel
  still overruns it the loss is counted (:attr:`ProcConnector.overruns`), never
  fatal. Needs the host's network, pid and user namespaces (``rangectl serve``
  as root on the host).
* :class:`ReaderProcess` — the connector, opened and read in a process of its
  own (:func:`reader_main`, a child of ``serve``) so that an exec'd program's
  ``/proc`` is read before the program normally gets to run and exit: it sleeps
  on the socket at ``SCHED_FIFO`` priority :data:`READER_FIFO_PRIORITY` (else
  nice :data:`READER_NICE`, else as it is; logged; a reader whose container's
  cgroup has no real-time budget can first move to the root of the cpu
  hierarchy: :func:`leave_cpu_cgroup`), so the kernel's message
  wakes it ahead of every ordinary process, and it waits for no GIL. Its work
  per event is small: for an exec it reads ``/proc/PID/cgroup`` and, only for a
  process in a Docker container, its cmdline, cwd, exe, comm and PPid (a
  :class:`Snapshot`, :func:`snapshot`); forks and exits are passed on as they
  are. Events go to ``serve`` through a pipe, pickled, in batches (at most
  :data:`READER_SEND_SECONDS` apart: only the records wait). Real-time only
  while that stays cheap: above :data:`READER_RT_CPU` of a CPU (an exec flood)
  it drops to its niceness until calm. It ends when ``serve`` closes the pipe
  (it sends what it holds first), when the thread that started it ends
  (``PR_SET_PDEATHSIG``) or on SIGTERM; when it cannot listen, the
  :class:`RangeError` the connector gave comes out in ``serve``.
* :class:`SessionTracker` — pure logic, no I/O of its own: what it needs from
  ``/proc`` is passed in (defaults: :func:`read_proc`, :func:`read_ppid`,
  :func:`stat_in_root`, :func:`live_threads`), so it is tested with synthetic
  events. ``feed(event)`` returns the :class:`Record` s to store.
* :class:`Recorder` — takes the reader's events on a thread of ``serve``, feeds
  the tracker (an exec's snapshot stands for ``/proc`` while its event is fed:
  :class:`SnapshotCache`; anything else is read live) and hands the records to a
  sink in batches (at most every :data:`BATCH_SECONDS`, at once when
  :data:`BATCH_MAX` are waiting), on a thread of their own. Neither the store
  nor the GIL of ``serve`` holds up the reading any more: they only delay the
  records.

**Sessions.** The caller's ``where(pid)`` says which watched container (team,
node) a host pid lives in (from ``/proc/PID/cgroup``: :func:`container_id_of`;
``where_id(container)`` for the container the reader found at the exec).
An exec there by a child of ``sshd`` (``sshd-session`` in OpenSSH 9.8+) starts
a trainee session (``kind="session"``, numbered by that pid): that is how sshd
starts the login shell, ``sh -c CMD`` for ``ssh node CMD`` and ``~/.ssh/rc``.
Not a session: sshd's own execs, told by their place under the listener (the
only sshd whose parent is no sshd: its children re-exec ``sshd -R`` or
``sshd-session``, theirs ``sshd-auth``, a shell comes a level further down)
and by their name and binary (OpenSSH's, installed where only root writes:
``ln -s /bin/bash ~/sshd`` does not pass). A process already gone when it is
read (it was quick) still starts a session, ``unread``, unless it is the
listener's child: doubt is recorded, not dropped.

**Tracking.** From then on the session is followed by descent, not by name:
every process forked by a tracked process is tracked, and every exec it makes is
a ``command`` (argv, cwd; ``cmd`` is the ``CMD`` of ``sh -c CMD``), whatever it
calls itself. Double forks, ``setsid``, reparenting to init, ``exec bash
--norc``, ``env -i``, a new shell, a daemon the trainee starts (even a second
sshd) all stay in the session. An exec whose fork event was lost is placed by
its parent in ``/proc``. Its exit gives ``command.exit`` with the status a shell
prints (``128+N`` for signal N; the session's own process too: how the login
shell or ``sh -c`` ended); an ``scp`` gives one ``file.copy`` per file on exit
(direction, peer, size when the local side can be found). Exits remove
processes from the table; untracked ones are only remembered between their
fork and their exec, in bounded tables.

**What is not recorded (the trust boundary).**

* Shell builtins are no execs: ``cd``, ``echo``, ``printf > file``, ``read``,
  ``kill``, ``export``, redirections and ``/dev/tcp`` in bash. What they do shows
  only through the next command (its ``cwd``) or not at all.
* Work done *for* the trainee by a process outside the session: a service the
  trainee reconfigured (cron, a web server's CGI, a root daemon's hook) runs
  its commands under that service, not the session; so do ``docker exec``
  from the trainers and everything on the host. sftp is served inside sshd
  (``internal-sftp``): an ``sftp``/``scp`` *to* a node shows as the client's
  command on the machine it ran on, not as commands on the node.
* A trainee who is root on a node and replaces the node's ``sshd`` binaries can
  make an ``sshd``-named process that is not taken for a session.
* The rate cap: each team's ``command`` records go through a token bucket
  (:class:`CommandRate`, default 20/s, bursts of 200); beyond it commands are
  counted, not stored, and a ``command.dropped`` record (count, since) is made at
  most every :data:`DROP_REPORT_SECONDS` per team. Sessions, exits of recorded
  commands and file copies are never capped.
* argv is read from ``/proc`` by the reader process when the exec is reported,
  usually before the program has done anything, but it is a race, not a
  guarantee (another CPU may run the program meanwhile; during an exec flood the
  reader is not real-time): a command that was already gone is kept as
  ``unread`` (argv ``[comm]`` or ``["?"]``); one that exec'd again in between is
  reported with its newer argv (twice); argv is what the process's memory says
  when read (a program can overwrite its own, though seldom that quickly). argv
  longer than :data:`MAX_ARGV_BYTES` is cut (``truncated``). Events the kernel
  could not deliver (an overrun), or the reader could not keep while ``serve``
  was far behind (:data:`READER_MAX_PENDING`), are lost; an exec whose fork was
  lost is still placed through ``/proc``, unless its parent had gone too.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import logging
import math
import os
import pickle
import posixpath
import queue
import random
import re
import select
import shlex
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from rangectl.errors import RangeError

log = logging.getLogger("rangectl.access.recorder")

# netlink / connector / cn_proc constants (linux/netlink.h, linux/connector.h, linux/cn_proc.h)
NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_NONE = 0x0  # the kernel's answer to a (un)subscription: event_data.ack.err
PROC_EVENT_FORK = 0x1
PROC_EVENT_EXEC = 0x2
PROC_EVENT_EXIT = 0x80000000
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid: 16 bytes
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags: 20 bytes
_EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns: 16 bytes, then the event_data union
_FORK = struct.Struct("=iiii")  # parent_pid, parent_tgid, child_pid, child_tgid
_EXEC = struct.Struct("=ii")  # process_pid, process_tgid
_EXIT = struct.Struct("=iiII")  # process_pid, process_tgid, exit_code, exit_signal
_ACK = struct.Struct("=I")  # err
_DATA_AT = _NLMSGHDR.size + _CN_MSG.size + _EVENT.size  # 52: where event_data starts in a message

RCVBUF_BYTES = 4 << 20  # the socket's receive buffer: a burst of events waits here
RECV_BYTES = 65536  # one datagram carries one message today; room for several anyway
READ_MAX_DATAGRAMS = 4096  # per read(): the caller gets to flush and tick during a flood
READER_READ_DATAGRAMS = 8  # per read() in the reader process: an exec is looked at before the rest is read
ACK_SECONDS = 2.0  # the kernel answers a subscription in microseconds; none by then: not available

MAX_ARGV_BYTES = 16384  # of /proc/PID/cmdline kept in a record
MAX_UNTRACKED = 65536  # untracked pids remembered between their fork and their exec (oldest forgotten)
MAX_COMMS = 8192  # cached names of parents (oldest forgotten)
SWEEP_SECONDS = 30.0  # tracked pids gone from /proc at two sweeps in a row are forgotten (a lost exit)
DROP_REPORT_SECONDS = 10.0  # at most one command.dropped record per team this often
SCP_MAX_FILES = 100  # file.copy records for one scp
BATCH_SECONDS = 0.2  # Recorder: the sink is called at most this often...
BATCH_MAX = 200  # ...or at once with this many records
TICK_SECONDS = 1.0  # Recorder: how often the tracker's tick() runs
SINK_QUEUE_BATCHES = 256  # Recorder: batches waiting for a slow sink; beyond them batches are lost (counted)
SINK_CLOSE_SECONDS = 10.0  # Recorder: how long stopping waits for the sink to take what is left

READER_START_SECONDS = 10.0  # the reader process says it listens (or why it cannot) within this
READER_CLOSE_SECONDS = 5.0  # stopping: the reader sends what it holds and exits within this, or is killed
READER_FIFO_PRIORITY = 5  # the reader's SCHED_FIFO priority (1-99: any is ahead of every normal process)
READER_NICE = -10  # its niceness when it cannot be (or stops being) real-time
READER_RT_CPU = 0.5  # share of one CPU above which the reader leaves SCHED_FIFO (a flood of events)...
READER_RT_CALM_SECONDS = 10  # ...and seconds in a row below half of it before it goes back
READER_SEND_SECONDS = 0.02  # the reader sends its events on this long after the first (or at...
READER_SEND_EVENTS = 512  # ...this many): it has read each exec's /proc already, only the records wait
READER_MAX_PENDING = 32 << 20  # bytes the reader keeps for a parent that is behind; beyond: events lost
READER_PIPE_BYTES = 1 << 20  # the pipe from the reader (F_SETPIPE_SZ)
PIPE_READ_BYTES = 1 << 20  # per read of that pipe

SSHD_COMMS = frozenset({"sshd", "sshd-session", "sshd-auth"})  # OpenSSH's own programs (<= 9.7; 9.8+; 10.0+)
# where distributions install them: only root can write there
SSHD_DIRS = frozenset(
    {"/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/lib/openssh", "/usr/libexec/openssh", "/usr/libexec",
     "/usr/local/libexec", "/usr/lib/ssh", "/usr/libexec/ssh"}
)  # fmt: skip
SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "yash", "fish", "tcsh", "csh"})
_C_FLAG = re.compile(r"-[A-Za-z]*c[A-Za-z]*")  # -c, -lc, -ec: the first operand is the command string
_DOCKER_ID = re.compile(r"(?:/docker/|/docker-)([0-9a-f]{64})(?:\.scope)?(?=/|$)")


class ProcEvent(NamedTuple):
    """One process event: ``kind`` is ``fork`` (``pid``/``tgid``: the child, ``ppid``: the parent's
    tgid), ``exec`` or ``exit`` (``exit_code``: the wait status as the kernel gives it); ``ts`` is
    time.time() when it was read. ``snap``: what the reader process read of an exec'd process as
    soon as the exec was reported (:class:`Snapshot`), None when it was not read there."""

    kind: str
    pid: int
    tgid: int
    ppid: int | None = None
    exit_code: int | None = None
    ts: float = 0.0
    snap: Snapshot | None = None

    @property
    def status(self) -> int | None:
        """The exit status as a shell prints it: the code (0-255), or 128+N when killed by signal N."""
        if self.exit_code is None:
            return None
        if self.exit_code & 0x7F:
            return 128 + (self.exit_code & 0x7F)
        return (self.exit_code >> 8) & 0xFF


class ProcInfo(NamedTuple):
    """What ``/proc/PID`` says of a process: ``argv`` is empty for a zombie (its memory is gone)."""

    comm: str
    argv: list[str]
    cwd: str | None
    exe: str | None = None
    truncated: bool = False


class Snapshot(NamedTuple):
    """A process as the reader process found it when its exec was reported: its Docker container
    (None only when every process is read, see :class:`ReaderProcess`), its parent (``PPid``) and
    :class:`ProcInfo` (None: gone already)."""

    container: str | None
    ppid: int | None
    info: ProcInfo | None
    # (pid, comm, ppid) of its parent and grandparent as they were at the exec: a quick ``ssh NODE
    # CMD`` ends, sshd's per-session process with it, before the tracker looks at them live
    ancestors: tuple[tuple[int, str | None, int | None], ...] = ()


class CommandRate(NamedTuple):
    """Each team's ``command`` records: ``per_second``, bursts of ``burst`` (``per_second <= 0``: no cap)."""

    per_second: float = 20.0
    burst: int = 200


class ScpTransfer(NamedTuple):
    """One file of an scp: ``local`` is the path whose size tells the file's (upload: the source;
    download: the destination, a directory or the file); ``name`` is the path as given."""

    direction: str  # upload | download
    peer: str
    name: str
    local: str


@dataclass(frozen=True)
class Record:
    """One thing to store: ``session``, ``command``, ``command.exit``, ``file.copy``, ``command.dropped``."""

    kind: str
    ts: float
    team: int | None = None
    node: str | None = None
    session: int | None = None  # the pid that started the session (its login shell, or sh -c CMD)
    pid: int | None = None
    argv: list[str] | None = None
    cmd: str | None = None
    cwd: str | None = None
    via: str | None = None
    status: int | None = None
    ref: tuple[float, int] | None = None  # command.exit, file.copy: (ts, pid) of the command's record
    unread: bool | None = None
    truncated: bool | None = None
    name: str | None = None
    direction: str | None = None
    peer: str | None = None
    size: int | None = None
    count: int | None = None
    since: float | None = None

    def as_data(self) -> dict[str, Any]:
        """A JSON-able dict for the event store, without the fields that are None."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if f.name == "ref":
                v = {"ts": v[0], "pid": v[1]}
            elif f.name == "argv":
                v = list(v)
            out[f.name] = v
        return out


# ---------------------------------------------------------------- /proc helpers (the tracker's defaults)


def container_id_from_cgroup(text: str) -> str | None:
    """The Docker container id (64 hex) in the text of a ``/proc/PID/cgroup``, or None.

    cgroup v1 (``12:pids:/docker/<id>``), v2 (``0::/docker/<id>``) and the systemd driver
    (``0::/system.slice/docker-<id>.scope``). In a container of an engine that itself runs in a
    container (the cluster lab's engines: ``/docker/<engine>/docker/<id>``) it is the innermost:
    the deepest id of any line.
    """
    best: tuple[int, str] | None = None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        found = _DOCKER_ID.findall(path)
        if found and (best is None or len(found) > best[0]):
            best = (len(found), found[-1])
    return best[1] if best else None


def container_id_of(pid: int, proc: str = "/proc") -> str | None:
    """The Docker container a host pid lives in (None: on the host, in another kind of container, or gone)."""
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            return container_id_from_cgroup(f.read())
    except OSError:
        return None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def read_comm(pid: int, proc: str = "/proc") -> str | None:
    try:
        with open(f"{proc}/{pid}/comm", "rb") as f:
            return _text(f.read().rstrip(b"\n"))
    except OSError:
        return None


def read_proc(pid: int, proc: str = "/proc") -> ProcInfo | None:
    """comm, argv, cwd and exe of a process, or None when it is gone. cmdline is read first: it goes first."""
    base = f"{proc}/{pid}"
    try:
        with open(f"{base}/cmdline", "rb") as f:
            raw = f.read(MAX_ARGV_BYTES + 1)
    except OSError:
        return None
    truncated = len(raw) > MAX_ARGV_BYTES
    raw = raw[:MAX_ARGV_BYTES]
    parts = raw.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    argv = [_text(p) for p in parts] if raw else []
    cwd = exe = None
    try:
        cwd = os.readlink(f"{base}/cwd")
    except OSError:
        pass
    try:
        exe = os.readlink(f"{base}/exe")
    except OSError:
        pass
    comm = read_comm(pid, proc)
    if comm is None:
        if not argv:
            return None
        comm = posixpath.basename(argv[0])[:15]
    return ProcInfo(comm, argv, cwd, exe, truncated)


def read_ppid(pid: int, proc: str = "/proc") -> int | None:
    """The parent pid from ``/proc/PID/status`` (None: gone, or no parent)."""
    try:
        with open(f"{proc}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"PPid:"):
                    ppid = int(line.split()[1])
                    return ppid or None
    except (OSError, ValueError, IndexError):
        return None
    return None


def live_threads(pid: int, proc: str = "/proc") -> bool:
    """Whether threads other than the leader still run in process ``pid`` (the leader ended alone)."""
    try:
        return any(t != str(pid) for t in os.listdir(f"{proc}/{pid}/task"))
    except OSError:
        return False


def stat_in_root(pid: int, path: str, proc: str = "/proc") -> int | None:
    """The size of regular file ``path`` as process ``pid`` sees it (its mount namespace), or None.

    Symbolic links are followed inside that root (an absolute link target is taken from the
    container's root, not the host's).
    """
    if not path.startswith("/"):
        return None
    root = f"{proc}/{pid}/root"
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = root + "/" + "/".join([*done, part])
        try:
            st = os.lstat(here)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                return None
            try:
                target = os.readlink(here)
            except OSError:
                return None
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    try:
        st = os.lstat(root + "/" + "/".join(done))
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


# ---------------------------------------------------------------- argv helpers


def _shell_c(argv: list[str]) -> str | None:
    """CMD when argv is ``<shell> -c CMD ...``, else None."""
    if len(argv) >= 3 and posixpath.basename(argv[0]).lstrip("-") in SHELLS and _C_FLAG.fullmatch(argv[1]):
        return argv[2]
    return None


def shell_command(argv: list[str]) -> str:
    """The command line a record shows: CMD of ``sh -c CMD``, otherwise argv quoted as a shell would need."""
    c = _shell_c(argv)
    return c if c is not None else shlex.join(argv)


_SCP_VALUE_OPTS = frozenset("DFJMPSXcilo")  # options of scp (OpenSSH) that take a value; the others are flags


def _scp_remote(op: str) -> tuple[str, str] | None:
    """(peer, path) when an scp operand names a remote file (``[user@]host:path``, ``scp://``), else None."""
    if op.startswith("scp://"):
        rest = op[len("scp://") :]
        hostpart, _, path = rest.partition("/")
        host = hostpart.rsplit("@", 1)[-1]
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        else:
            host = host.split(":", 1)[0]
        return host, path or "."
    if op.startswith(":"):
        return None
    bracket = op.startswith("[")
    for i, ch in enumerate(op):
        if ch == "@" and op[i + 1 : i + 2] == "[":
            bracket = True
        if ch == "]" and op[i + 1 : i + 2] == ":" and bracket:
            host, path = op[:i], op[i + 2 :]
            return host.rsplit("@", 1)[-1].lstrip("["), path
        if ch == ":" and not bracket:
            return op[:i].rsplit("@", 1)[-1], op[i + 1 :]
        if ch == "/":
            return None
    return None


def scp_transfers(argv: list[str]) -> list[ScpTransfer]:
    """The files an scp command line copies between this machine and another (remote to remote: none)."""
    operands: list[str] = []
    i = 1
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            operands.extend(argv[i:])
            break
        if a.startswith("-") and len(a) > 1:
            for j in range(1, len(a)):
                if a[j] in _SCP_VALUE_OPTS:
                    if j == len(a) - 1:
                        i += 1  # the value is the next argument
                    break
            continue
        operands.extend(argv[i - 1 :])  # scp's getopt stops at the first operand
        break
    if len(operands) < 2:
        return []
    *sources, target = operands
    out: list[ScpTransfer] = []
    to = _scp_remote(target)
    for src in sources:
        frm = _scp_remote(src)
        if to is not None and frm is None:
            out.append(ScpTransfer("upload", to[0], src, src))
        elif to is None and frm is not None:
            out.append(ScpTransfer("download", frm[0], frm[1], target))
    return out[:SCP_MAX_FILES]


# ---------------------------------------------------------------- the kernel's process events


def _parse(buf: Any, n: int, ts: float, out: list[ProcEvent], acks: list[tuple[int, int]] | None) -> None:
    off = 0
    while off + _NLMSGHDR.size <= n:
        nl_len, nl_type, _flags, _seq, _port = _NLMSGHDR.unpack_from(buf, off)
        if nl_len < _NLMSGHDR.size or off + nl_len > n:
            return
        end = off + nl_len
        if nl_type not in (NLMSG_NOOP, NLMSG_ERROR, NLMSG_OVERRUN) and nl_len >= _DATA_AT:
            idx, val, _cseq, ack, _clen, _cflags = _CN_MSG.unpack_from(buf, off + _NLMSGHDR.size)
            if idx == CN_IDX_PROC and val == CN_VAL_PROC:
                what = _EVENT.unpack_from(buf, off + _NLMSGHDR.size + _CN_MSG.size)[0]
                d = off + _DATA_AT
                if what == PROC_EVENT_FORK and d + _FORK.size <= end:
                    _ppid, ptgid, cpid, ctgid = _FORK.unpack_from(buf, d)
                    if cpid == ctgid:  # a thread is no new process
                        out.append(ProcEvent("fork", cpid, ctgid, ptgid, None, ts))
                elif what == PROC_EVENT_EXEC and d + _EXEC.size <= end:
                    pid, tgid = _EXEC.unpack_from(buf, d)
                    out.append(ProcEvent("exec", tgid, tgid, None, None, ts))
                elif what == PROC_EVENT_EXIT and d + _EXIT.size <= end:
                    pid, tgid, code, _sig = _EXIT.unpack_from(buf, d)
                    if pid == tgid:  # a thread's exit is not the process's
                        out.append(ProcEvent("exit", pid, tgid, None, code, ts))
                elif what == PROC_EVENT_NONE and acks is not None and d + _ACK.size <= end:
                    acks.append((ack, _ACK.unpack_from(buf, d)[0]))
        off += (nl_len + 3) & ~3


def parse_datagram(data: bytes, ts: float = 0.0) -> list[ProcEvent]:
    """The process events in one datagram from the proc connector (several messages are allowed)."""
    out: list[ProcEvent] = []
    _parse(data, len(data), ts, out, None)
    return out


def _control(op: int, ack: int) -> bytes:
    payload = struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, ack, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, 0) + cn


_FIX = "run `rangectl serve` as root on the host itself, not in a container or a user namespace"


class ProcConnector:
    """The kernel's process events (fork, exec, exit of every process on the machine, host pids).

    Raises :class:`RangeError` when they cannot be had: no netlink connector (``CONFIG_CONNECTOR``),
    no process events (``CONFIG_PROC_EVENTS``), no ``CAP_NET_ADMIN`` on older kernels, or not in the
    host's network, user and pid namespaces.
    """

    def __init__(self, *, rcvbuf: int = RCVBUF_BYTES, ack_timeout: float = ACK_SECONDS):
        self.overruns = 0  # datagrams the kernel could not queue (ENOBUFS): events lost
        self._nonces: set[int] = set()  # one per LISTEN sent
        self._pending: list[ProcEvent] = []
        self._buf = bytearray(RECV_BYTES)
        self._sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError as e:
            raise RangeError(
                f"cannot open the kernel's process events: netlink connector unavailable ({e.strerror})",
                fix="use a kernel built with CONFIG_CONNECTOR and CONFIG_PROC_EVENTS; " + _FIX,
            ) from None
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((0, CN_IDX_PROC))
            sock.setblocking(False)
            self._sock = sock
            self._listen()
            self._await_ack(ack_timeout)
        except OSError as e:
            self._sock = None
            sock.close()
            raise RangeError(
                f"cannot listen to the kernel's process events: {e.strerror}", fix=_FIX
            ) from None
        except RangeError:
            self.close()
            raise

    def _listen(self) -> None:
        assert self._sock is not None
        nonce = random.randrange(1, 1 << 30)
        self._sock.send(_control(PROC_CN_MCAST_LISTEN, nonce))
        self._nonces.add(nonce)

    def _await_ack(self, timeout: float) -> None:
        """The kernel answers LISTEN with an event carrying our ack+1 and an errno (events may come first).

        Every listener gets every answer: ours is told by its ack. When the buffer overran meanwhile
        ours may be lost, so LISTEN is sent again (the kernel counts a socket's listens once; older
        ones count each, and close() says IGNORE as many times).
        """
        deadline = time.monotonic() + timeout
        acks: list[tuple[int, int]] = []
        while True:
            before = self.overruns
            self._drain(self._pending, acks)
            for ack, err in acks:
                if ack - 1 in self._nonces:
                    if err:
                        raise RangeError(
                            f"the kernel refused process events: {os.strerror(err)}",
                            fix="grant CAP_NET_ADMIN; " + _FIX,
                        )
                    return
            acks.clear()
            if self.overruns > before and len(self._nonces) < 8:
                self._listen()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RangeError(
                    "no answer from the kernel's process events (kernel without CONFIG_PROC_EVENTS, "
                    "or not in the host's user and pid namespaces)",
                    fix=_FIX,
                )
            self._wait(left)

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def _wait(self, timeout: float) -> bool:
        if self._sock is None:
            return False
        p = select.poll()
        p.register(self._sock.fileno(), select.POLLIN)
        return bool(p.poll(max(0.0, timeout) * 1000.0))

    def _drain(
        self, out: list[ProcEvent], acks: list[tuple[int, int]] | None = None, limit: int = READ_MAX_DATAGRAMS
    ) -> None:
        sock, buf = self._sock, self._buf
        if sock is None:
            return
        for _ in range(limit):
            try:
                n = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                raise
            _parse(buf, n, time.time(), out, acks)

    def read(self, timeout: float, limit: int = READ_MAX_DATAGRAMS) -> list[ProcEvent]:
        """The events that came (in at most ``limit`` datagrams), waiting ``timeout`` s for the first."""
        out, self._pending = self._pending, []
        if not out and not self._wait(timeout):
            return out
        self._drain(out, None, limit)
        return out

    def take(self, limit: int = READ_MAX_DATAGRAMS) -> list[ProcEvent]:
        """The events already there (in at most ``limit`` datagrams), without waiting or polling."""
        out, self._pending = self._pending, []
        self._drain(out, None, limit)
        return out

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.setblocking(True)
            for _ in self._nonces:  # older kernels count listeners until told, once per LISTEN
                sock.send(_control(PROC_CN_MCAST_IGNORE, 0))
        except OSError:
            pass
        sock.close()

    def __enter__(self) -> ProcConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- sessions


@dataclass(eq=False)
class _Session:
    team: int
    node: str
    root: int  # the pid that started it: the session's number in its node

    @property
    def id(self) -> int:
        return self.root


@dataclass(eq=False)
class _Proc:
    session: _Session
    ref: tuple[float, int] | None = None  # (ts, pid) of the record of what it runs now, when recorded
    scp: tuple[list[ScpTransfer], str | None] | None = None  # an scp's files and cwd, for file.copy on exit
    gone: bool = False  # not in /proc at the last sweep


class _Drops:
    __slots__ = ("count", "since", "nodes")

    def __init__(self, since: float):
        self.count = 0
        self.since = since
        self.nodes: collections.Counter[str] = collections.Counter()


def _quiet(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except OSError:
        return None


class SessionTracker:
    """Trainee sessions and their commands from process events (see the module's docstring).

    ``where(pid)``: (team, node) of a watched container's host pid, else None. ``info(pid)``:
    :class:`ProcInfo` or None when gone. ``parent_of(pid)``: the parent's pid. ``stat_in(pid, path)``:
    a regular file's size as process ``pid`` sees it. ``live_threads(pid)``: threads other than the
    leader are still running. Not thread-safe: one reader feeds it.
    """

    def __init__(
        self,
        where: Callable[[int], tuple[int, str] | None],
        *,
        info: Callable[[int], ProcInfo | None] = read_proc,
        parent_of: Callable[[int], int | None] = read_ppid,
        stat_in: Callable[[int, str], int | None] = stat_in_root,
        live_threads: Callable[[int], bool] = live_threads,
        comm_of: Callable[[int], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        rate: CommandRate = CommandRate(),
    ):
        self.where = where
        self.info = info
        self.parent_of = parent_of
        self.stat_in = stat_in
        self.live_threads = live_threads
        if comm_of is None:
            comm_of = read_comm if info is read_proc else (lambda pid: i.comm if (i := info(pid)) else None)
        self.comm_of = comm_of
        self.clock = clock
        self.rate = rate
        self._procs: dict[int, _Proc] = {}  # tracked: in a session until their exit
        # untracked: a child between its fork and its exec -> its parent; a parent -> its name
        self._forked: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._comms: collections.OrderedDict[int, str] = collections.OrderedDict()
        self._buckets: dict[int, list[float]] = {}  # team -> [tokens, last refill]
        self._drops: dict[int, _Drops] = {}
        self._last_sweep = clock()
        self.dropped = 0  # command records not made (rate cap), all teams, ever

    def __len__(self) -> int:
        """Pids remembered: tracked, untracked between fork and exec, and cached parent names."""
        return len(self._procs) + len(self._forked) + len(self._comms)

    @property
    def tracked(self) -> int:
        return len(self._procs)

    # -- events

    def feed(self, ev: ProcEvent) -> list[Record]:
        if ev.kind == "fork":
            self._fork(ev.tgid, ev.ppid or 0)
            out: list[Record] = []
        elif ev.kind == "exec":
            out = self._exec(ev)
        elif ev.kind == "exit":
            out = self._exit(ev)
        else:
            out = []
        if self._drops:
            out.extend(self._due(self.clock(), force=False))
        return out

    def tick(self, now: float | None = None) -> list[Record]:
        """The command.dropped records that are due; now and then, forget tracked pids whose exit was lost."""
        now = self.clock() if now is None else now
        if now - self._last_sweep >= SWEEP_SECONDS:
            self._last_sweep = now
            self._sweep()
        return self._due(now, force=False)

    def flush(self) -> list[Record]:
        """Every command.dropped record still pending (the recorder stops)."""
        return self._due(self.clock(), force=True)

    def _fork(self, child: int, parent: int) -> None:
        self._comms.pop(child, None)  # a reused pid
        p = self._procs.get(parent)
        if p is not None:
            self._forked.pop(child, None)
            self._procs[child] = _Proc(p.session)
            return
        self._procs.pop(child, None)  # a reused pid whose exit was lost
        self._forked[child] = parent
        self._forked.move_to_end(child)
        if len(self._forked) > MAX_UNTRACKED:
            self._forked.popitem(last=False)

    def _exec(self, ev: ProcEvent) -> list[Record]:
        pid = ev.tgid
        self._comms.pop(pid, None)
        p = self._procs.get(pid)
        if p is not None:
            return self._command(pid, p, ev)
        parent = self._forked.pop(pid, None)
        if parent is None:
            parent = _quiet(self.parent_of, pid)
        if not parent:
            return []
        pp = self._procs.get(parent)
        if pp is not None:  # its fork event was lost: the child of a tracked process is tracked
            p = self._procs[pid] = _Proc(pp.session)
            return self._command(pid, p, ev)
        if self._comm(parent) not in SSHD_COMMS:
            return []
        at = _quiet(self.where, pid) or _quiet(self.where, parent)
        if at is None:
            return []
        info = _quiet(self.info, pid)
        if self._is_sshd(info, parent):
            return []
        team, node = at
        session = _Session(team, node, pid)
        p = self._procs[pid] = _Proc(session, ref=(ev.ts, pid))
        argv, cmd, cwd, unread, truncated = self._describe(info)
        return [
            Record(
                kind="session", ts=ev.ts, team=team, node=node, session=session.id, pid=pid, argv=argv,
                cmd=cmd, cwd=cwd, via="ssh", unread=unread, truncated=truncated,
            )
        ]  # fmt: skip

    def _is_sshd(self, info: ProcInfo | None, parent: int) -> bool:
        """Whether a child of sshd that exec'd is sshd's own program, not a trainee's session.

        By its place under the listener (the only sshd whose parent is no sshd): the listener's
        children are its re-exec (``sshd -R``) or ``sshd-session``; their children the pre-auth
        ``sshd-auth`` (OpenSSH 10); a session's shell comes one level further down, from sshd's
        per-user child. By its name and binary too: OpenSSH's names, installed where only root
        writes (:data:`SSHD_DIRS`), so that ``~/sshd`` or a link named ``sshd-auth`` to bash is
        a session. A listener's child already gone before it was read is taken for sshd's.
        """
        grandparent = _quiet(self.parent_of, parent)
        of_listener = not grandparent or self._comm(grandparent) not in SSHD_COMMS
        if info is None:
            return of_listener
        if info.comm not in SSHD_COMMS:
            return False
        if info.exe is None:  # a zombie already: its name and its place must do
            return of_listener
        exe = info.exe.removesuffix(" (deleted)")
        if posixpath.basename(exe) != info.comm or posixpath.dirname(exe) not in SSHD_DIRS:
            return False
        if of_listener:
            return True
        if info.comm != "sshd-auth":
            return False
        great = _quiet(self.parent_of, grandparent)  # sshd-auth's parent is a child of the listener
        return not great or self._comm(great) not in SSHD_COMMS

    def _comm(self, pid: int) -> str | None:
        comm = self._comms.get(pid)
        if comm is None:
            comm = _quiet(self.comm_of, pid)
            if comm is not None:
                self._comms[pid] = comm
                if len(self._comms) > MAX_COMMS:
                    self._comms.popitem(last=False)
        return comm

    @staticmethod
    def _describe(info: ProcInfo | None) -> tuple[list[str], str, str | None, bool | None, bool | None]:
        if info is None:
            return ["?"], "?", None, True, None
        if not info.argv:  # a zombie: its memory (argv) is gone, its name is not
            return [info.comm or "?"], info.comm or "?", info.cwd, True, None
        return list(info.argv), shell_command(info.argv), info.cwd, None, (True if info.truncated else None)

    def _command(self, pid: int, p: _Proc, ev: ProcEvent) -> list[Record]:
        info = _quiet(self.info, pid)
        p.ref = None
        p.scp = None
        argv, cmd, cwd, unread, truncated = self._describe(info)
        if posixpath.basename(argv[0]) == "scp" and not unread:
            files = scp_transfers(argv)
            if files:
                p.scp = (files, cwd)
        s = p.session
        if not self._take(s.team, ev.ts):
            self._drop(s.team, s.node, ev.ts)
            return []
        p.ref = (ev.ts, pid)
        return [
            Record(
                kind="command", ts=ev.ts, team=s.team, node=s.node, session=s.id, pid=pid, argv=argv,
                cmd=cmd, cwd=cwd, unread=unread, truncated=truncated,
            )
        ]  # fmt: skip

    def _exit(self, ev: ProcEvent) -> list[Record]:
        pid = ev.tgid
        self._forked.pop(pid, None)
        self._comms.pop(pid, None)
        p = self._procs.get(pid)
        if p is None:
            return []
        # a leader that ended alone (pthread_exit) leaves a running process: it stays tracked
        if not _quiet(self.live_threads, pid):
            del self._procs[pid]
        s = p.session
        out: list[Record] = []
        if p.ref is not None:
            out.append(
                Record(
                    kind="command.exit", ts=ev.ts, team=s.team, node=s.node, session=s.id, pid=pid,
                    status=ev.status, ref=p.ref,
                )
            )  # fmt: skip
        if p.scp is not None:
            out.extend(self._copies(pid, p, ev))
        p.ref = None
        p.scp = None
        return out

    def _anchors(self, s: _Session) -> Iterable[int]:
        """Live pids in the session's container, its root first: a stat through their /proc/PID/root."""
        root = self._procs.get(s.root)
        if root is not None and root.session is s:
            yield s.root
        for pid, q in list(self._procs.items()):
            if pid != s.root and q.session.team == s.team and q.session.node == s.node:
                yield pid

    def _size(self, s: _Session, path: str) -> int | None:
        for n, pid in enumerate(self._anchors(s)):
            if n >= 3:
                break
            size = _quiet(self.stat_in, pid, path)
            if size is not None:
                return size
        return None

    def _copies(self, pid: int, p: _Proc, ev: ProcEvent) -> list[Record]:
        assert p.scp is not None
        files, cwd = p.scp
        s = p.session
        out = []
        for t in files:
            local = t.local if t.local.startswith("/") else (posixpath.join(cwd, t.local) if cwd else None)
            size = None
            if local is not None:
                local = posixpath.normpath(local)
                if t.direction == "upload":
                    size = self._size(s, local)
                else:  # into a directory (dir/basename) or as the file itself
                    base = posixpath.basename(t.name.rstrip("/"))
                    if base and base not in (".", ".."):
                        size = self._size(s, posixpath.join(local, base))
                    if size is None and not t.local.endswith("/"):
                        size = self._size(s, local)
            out.append(
                Record(
                    kind="file.copy", ts=ev.ts, team=s.team, node=s.node, session=s.id, pid=pid,
                    name=t.name, direction=t.direction, peer=t.peer, size=size, status=ev.status, ref=p.ref,
                )
            )  # fmt: skip
        return out

    # -- the rate cap

    def _take(self, team: int, now: float) -> bool:
        rate = self.rate
        if rate.per_second <= 0:
            return True
        b = self._buckets.get(team)
        if b is None:
            b = self._buckets[team] = [float(rate.burst), now]
        b[0] = min(float(rate.burst), b[0] + max(0.0, now - b[1]) * rate.per_second)
        b[1] = max(b[1], now)
        if b[0] >= 1.0:
            b[0] -= 1.0
            return True
        return False

    def _drop(self, team: int, node: str, now: float) -> None:
        d = self._drops.get(team)
        if d is None:
            d = self._drops[team] = _Drops(now)
        d.count += 1
        d.nodes[node] += 1
        self.dropped += 1

    def _due(self, now: float, *, force: bool) -> list[Record]:
        out = []
        for team, d in list(self._drops.items()):
            if force or now - d.since >= DROP_REPORT_SECONDS:
                node = d.nodes.most_common(1)[0][0]
                out.append(
                    Record(kind="command.dropped", ts=now, team=team, node=node, count=d.count, since=d.since)
                )
                del self._drops[team]
        return out

    def _sweep(self) -> None:
        for pid, p in list(self._procs.items()):
            if _quiet(self.parent_of, pid) is not None:
                p.gone = False
            elif p.gone:
                del self._procs[pid]
            else:
                p.gone = True


# ---------------------------------------------------------------- the reader process

_FRAME = struct.Struct("=I")  # each message on the reader's pipe: its length, then the pickle
PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """SIGTERM when the thread that started us ends (serve dies); gone at once if it has already."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the pipe's end still tells
    if os.getppid() != parent:
        raise SystemExit(0)


def _on_sigterm(_sig: int, _frame: Any) -> None:
    raise SystemExit(0)


class _Sender:
    """The reader's end of the pipe, non-blocking: what the parent cannot take yet waits here, up to
    :data:`READER_MAX_PENDING` bytes; events beyond that are lost (counted in :attr:`lost`)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = bytearray()
        self.lost = 0
        os.set_blocking(fd, False)

    def send(self, msg: tuple[Any, ...]) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _FRAME.pack(len(data)) + data
        if self.pending:
            self.pending += frame
            self.flush()
            return
        try:
            n = os.write(self.fd, frame)
        except BlockingIOError:
            n = 0
        if n < len(frame):
            self.pending += frame[n:]

    def events(self, batch: list[ProcEvent], overruns: int) -> None:
        if len(self.pending) > READER_MAX_PENDING:
            self.lost += len(batch)
            return
        self.send(("events", overruns, self.lost, batch))

    def flush(self) -> None:
        while self.pending:
            try:
                n = os.write(self.fd, self.pending)
            except BlockingIOError:
                return
            del self.pending[:n]

    def drain(self) -> None:
        os.set_blocking(self.fd, True)
        self.flush()

    def log(self, level: int, text: str) -> None:
        self.send(("log", level, text))


def cpu_cgroup_v1(text: str) -> tuple[str, str] | None:
    """(controllers, path) of the cgroup-v1 hierarchy with the ``cpu`` controller in a
    ``/proc/PID/cgroup`` text (``"4:cpu,cpuacct:/docker/ID"`` -> ``("cpu,cpuacct", "/docker/ID")``),
    None when there is none (cgroup v2 only)."""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] != "0" and "cpu" in parts[1].split(","):
            return parts[1], parts[2]
    return None


def leave_cpu_cgroup(pid: int = 0, proc: str = "/proc") -> str | None:
    """Move process ``pid`` (0: this one) to the root of the cgroup-v1 cpu hierarchy; None when done
    (or it is there already), else why not.

    With the kernel's real-time group scheduling (``CONFIG_RT_GROUP_SCHED``) a cgroup gets no
    real-time time unless given some (``cpu.rt_runtime_us``), and a container's has none: its
    processes cannot be ``SCHED_FIFO`` even with ``CAP_SYS_NICE``. The root of the hierarchy has
    the machine's budget. The container shows only its own part of the hierarchy, read-only, so the
    hierarchy is mounted again, privately (``CAP_SYS_ADMIN``, the host's cgroup namespace), the pid
    written to its root's ``cgroup.procs`` and the mount dropped. Only the cpu controller's
    hierarchy changes: memory, pids and freezer still hold the process where it was (``docker
    stop`` still ends it)."""
    import ctypes
    import tempfile

    me = os.getpid() if pid == 0 else pid
    try:
        with open(f"{proc}/{me}/cgroup") as f:
            found = cpu_cgroup_v1(f.read())
    except OSError as e:
        return f"cannot read its cgroup: {e.strerror}"
    if found is None:
        return "no cgroup-v1 cpu hierarchy"
    controllers, path = found
    if path == "/":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    where = tempfile.mkdtemp(prefix="rangectl-cpu-")
    try:
        if libc.mount(b"cgroup", where.encode(), b"cgroup", 0, controllers.encode()) != 0:
            return f"cannot mount the cpu cgroup hierarchy: {os.strerror(ctypes.get_errno())}"
        try:
            with open(os.path.join(where, "cgroup.procs"), "w") as f:
                f.write(str(me))
        except OSError as e:
            return f"cannot move to the cpu hierarchy's root: {e.strerror}"
        finally:
            libc.umount2(where.encode(), 2)  # MNT_DETACH
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)
    return None


class _Priority:
    """The reader's scheduling: SCHED_FIFO when allowed, else nice :data:`READER_NICE`, else as it is.

    Real-time only while it is cheap: above :data:`READER_RT_CPU` of a CPU (an exec flood, which a
    trainee can make) it drops to its niceness, and goes back after :data:`READER_RT_CALM_SECONDS`
    quiet seconds. ``leave_cgroup``: when ``SCHED_FIFO`` is refused, move to the root of the cpu
    cgroup hierarchy (:func:`leave_cpu_cgroup`) and try again (the agent's reader, in a container).
    """

    def __init__(
        self,
        out: Any,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] | None = None,
        *,
        leave_cgroup: Callable[[], str | None] | None = None,
    ):
        self.out = out
        self.leave_cgroup = leave_cgroup
        self.rt = self.may_rt = False
        self.calm = 0
        self._clock = clock
        self._used = cpu or self._cpu_time
        self._at = clock()
        self._cpu = self._used()

    @staticmethod
    def _cpu_time() -> float:
        t = os.times()
        return t.user + t.system

    def _fifo(self) -> str | None:
        try:
            policy = os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0)
            os.sched_setscheduler(0, policy, os.sched_param(READER_FIFO_PRIORITY))
        except (OSError, AttributeError) as e:
            return getattr(e, "strerror", None) or str(e)
        self.rt = True
        return None

    def _normal(self) -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # keeps the niceness
        except (OSError, AttributeError):
            pass
        self.rt = False

    def raise_(self) -> str:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, READER_NICE)
            niced = None
        except OSError as e:
            niced = e.strerror
        why = self._fifo()
        moved = ""
        if why is not None and self.leave_cgroup is not None:
            left = self.leave_cgroup()
            if left is None:
                why = self._fifo()
                moved = " (in the root cpu cgroup: its own had no real-time time)"
            else:
                why = f"{why}; {left}"
        self.may_rt = why is None
        if self.rt:
            return f"SCHED_FIFO priority {READER_FIFO_PRIORITY}{moved}"
        if niced is None:
            return f"nice {READER_NICE} (no SCHED_FIFO: {why})"
        return f"normal priority (no SCHED_FIFO: {why}; no nice {READER_NICE}: {niced})"

    def tick(self) -> None:
        now = self._clock()
        if now - self._at < 1.0:
            return
        used = self._used()
        share = (used - self._cpu) / (now - self._at)
        self._at, self._cpu = now, used
        if self.rt and share > READER_RT_CPU:
            self._normal()
            self.calm = 0
            self.out.log(
                logging.WARNING,
                f"a flood of process events ({share:.0%} of a CPU): reading at nice {READER_NICE}, "
                "not SCHED_FIFO, until it calms down (short commands may go unread meanwhile)",
            )
        elif self.may_rt and not self.rt:
            self.calm = self.calm + 1 if share < READER_RT_CPU / 2 else 0
            if self.calm >= READER_RT_CALM_SECONDS and self._fifo() is None:
                self.out.log(
                    logging.INFO, f"calm again: reading at SCHED_FIFO priority {READER_FIFO_PRIORITY}"
                )


def snapshot(pid: int, everything: bool = False, proc: str = "/proc") -> Snapshot | None:
    """What the reader takes of a process that exec'd: its cgroup first, and only when it is in a Docker
    container (or ``everything``) its cmdline, cwd, exe, comm and PPid; None otherwise (or gone)."""
    cid = container_id_of(pid, proc)
    if cid is None and not everything:
        return None
    info = read_proc(pid, proc)
    if info is None and cid is None:
        return None
    ppid = read_ppid(pid, proc)
    ancestors = []
    up = ppid
    for _ in range(2):  # the parent (sshd's session process?) and its parent (the listener's child?)
        if not up:
            break
        nxt = read_ppid(up, proc)
        ancestors.append((up, read_comm(up, proc), nxt))
        up = nxt
    return Snapshot(cid, ppid, info, tuple(ancestors))


def _read_events(conn: ProcConnector, out: _Sender, everything: bool, leave_cgroup: bool = False) -> None:
    """Until the parent closes our stdin: events (execs with their snapshot) to ``out``.

    Each exec is looked at as soon as its datagram is read; the events are sent on in batches (at
    :data:`READER_SEND_EVENTS`, or :data:`READER_SEND_SECONDS` after the first): the parent is woken
    less often, and what matters, ``/proc``, is read already.
    """
    prio = _Priority(out, leave_cgroup=leave_cpu_cgroup if leave_cgroup else None)
    out.send(("ready", prio.raise_()))
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    poller.register(0, select.POLLIN)
    writing = ending = False
    held: list[ProcEvent] = []
    due = 0.0  # when the held events go
    wait = 0  # at first: the events that came with the subscription's answer
    while not ending:
        if bool(out.pending) != writing:
            writing = bool(out.pending)
            if writing:
                poller.register(out.fd, select.POLLOUT)
            else:
                poller.unregister(out.fd)
        for fd, _flags in poller.poll(wait):
            if fd == 0 and not os.read(0, 4096):
                ending = True  # the parent closed the pipe (it stops, or is gone): what is queued goes
            elif fd == out.fd:
                out.flush()
        # back to poll() now and then: the parent's word and the pipe are seen during a flood
        for _ in range(READ_MAX_DATAGRAMS if ending else 64):
            events = conn.take(READER_READ_DATAGRAMS)
            if not events:
                break
            for i, ev in enumerate(events):
                if ev.kind == "exec":
                    snap = snapshot(ev.pid, everything)
                    if snap is not None:
                        events[i] = ev._replace(snap=snap)
            if not held:
                due = time.monotonic() + READER_SEND_SECONDS
            held.extend(events)
            if len(held) >= READER_SEND_EVENTS:
                out.events(held, conn.overruns)
                held = []
        if held and (ending or time.monotonic() >= due):
            out.events(held, conn.overruns)
            held = []
        prio.tick()
        wait = 1000 if not held else max(0, math.ceil((due - time.monotonic()) * 1000))


def reader_main(args: list[str]) -> int:
    """The reader process (started by :class:`ReaderProcess`): ``args`` are the parent's pid and
    ``docker`` or ``all`` (which execs are read), then ``leave-cgroup`` if it may leave its cpu
    cgroup for real-time priority. Messages go to stdout, stdin's end stops it."""
    parent, everything, leave = int(args[0]), args[1] == "all", "leave-cgroup" in args[2:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: serve stops us
    signal.signal(signal.SIGTERM, _on_sigterm)
    _die_with(parent)
    fd = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to stderr, not into the pipe
    out = _Sender(fd)
    try:
        conn = ProcConnector()
    except RangeError as e:
        out.send(("error", e.message, e.fix))
        out.drain()
        return 1
    try:
        _read_events(conn, out, everything, leave)
        out.drain()
    except (BrokenPipeError, SystemExit):
        pass  # the parent is gone
    finally:
        conn.close()
    return 0


class ReaderGone(OSError):
    """The reader process ended while it was being read."""


class ReaderProcess:
    """The kernel's process events read in a process of its own, at real-time priority.

    Same use as :class:`ProcConnector` (``read``, ``overruns``, ``close``), but the connector is
    opened and read by a child, ``python -c ... reader_main``: it is woken by each message ahead of
    the programs that run (``SCHED_FIFO``, see :class:`_Priority`; :attr:`priority` says what it got)
    and competes for no GIL, so it reads an exec'd process's ``/proc`` before the program normally
    gets to run and exit. It reads ``/proc/PID/cgroup`` of each exec and, only when in a Docker
    container (or any process, ``everything=True``: tests), its cmdline, cwd, exe, comm and PPid
    (:func:`snapshot`); forks and exits are passed on. Everything comes back in batches, pickled, on
    the child's stdout; the child exits when its stdin is closed, when the thread that started it
    ends (``PR_SET_PDEATHSIG``), or on SIGTERM. It cannot open the connector: the same
    :class:`RangeError` as :class:`ProcConnector` comes out of the constructor. ``leave_cgroup``:
    the reader may move to the root of the cpu cgroup hierarchy when its own gives it no real-time
    priority (:func:`leave_cpu_cgroup`; the agent's recorder, which runs in a container).
    """

    def __init__(
        self, *, everything: bool = False, start_timeout: float = READER_START_SECONDS, leave_cgroup: bool = False
    ):
        self.overruns = 0  # the connector's in the reader, as last told
        self.lost = 0  # events the reader could not keep while the parent was behind
        self.priority = "?"
        self._events: list[ProcEvent] = []
        self._buf = bytearray()
        self._eof = False
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = (
            f"import sys; sys.path.insert(0, {root!r}); "
            "from rangectl.access.recorder import reader_main; sys.exit(reader_main(sys.argv[1:]))"
        )
        argv = [sys.executable, "-c", code, str(os.getpid()), "all" if everything else "docker"]
        if leave_cgroup:
            argv.append("leave-cgroup")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        except OSError as e:
            raise RangeError(f"cannot start the command recorder's reader process: {e.strerror}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, READER_PIPE_BYTES)
        except (OSError, AttributeError):
            pass
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        try:
            self._hello(start_timeout)
        except BaseException:
            self.close()
            raise
        log.log(
            logging.INFO if self.priority.startswith("SCHED_FIFO") else logging.WARNING,
            "recorder: reading process events in process %d at %s",
            self.proc.pid,
            self.priority,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fileno(self) -> int:
        return self._fd

    def _hello(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for msg in self._take(max(0.0, deadline - time.monotonic()), hello=True):
                if msg[0] == "error":
                    raise RangeError(msg[1], fix=msg[2])
                if msg[0] == "ready":
                    self.priority = msg[1]
                    return
            if self._eof:
                raise RangeError(
                    f"the command recorder's reader process ended at start ({self._status()})",
                    fix="see the lines above in serve's output",
                )
            if time.monotonic() >= deadline:
                raise RangeError(f"the command recorder's reader process did not start within {timeout:g}s")

    def _status(self) -> str:
        try:
            rc = self.proc.wait(READER_CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"

    def _take(self, timeout: float, hello: bool = False) -> list[tuple[Any, ...]]:
        """Messages that came within ``timeout``: events go to the pending list, logs to the log."""
        if self._eof or not self._poll.poll(max(0.0, timeout) * 1000.0):
            return []
        try:
            data = os.read(self._fd, PIPE_READ_BYTES)
        except BlockingIOError:
            return []
        if not data:
            self._eof = True
            return []
        self._buf += data
        buf, off, others = self._buf, 0, []
        while off + _FRAME.size <= len(buf):
            (n,) = _FRAME.unpack_from(buf, off)
            if off + _FRAME.size + n > len(buf):
                break
            msg = pickle.loads(buf[off + _FRAME.size : off + _FRAME.size + n])
            off += _FRAME.size + n
            if msg[0] == "events":
                _, self.overruns, self.lost, batch = msg
                self._events.extend(batch)
            elif msg[0] == "log":
                log.log(msg[1], "recorder (reader process %d): %s", self.proc.pid, msg[2])
            elif hello:
                others.append(msg)
        del buf[:off]
        return others

    def read(self, timeout: float, limit: int | None = None) -> list[ProcEvent]:
        """The events that came (with their snapshots), waiting ``timeout`` s for the first.
        ``limit`` is ignored: the reader has done the urgent part already. :class:`ReaderGone` when
        the reader ended."""
        if not self._events:
            self._take(timeout)
            if self._eof and not self._events:
                raise ReaderGone(f"the reader process {self.proc.pid} ended ({self._status()})")
        out, self._events = self._events, []
        return out

    def finish(self, timeout: float = READER_CLOSE_SECONDS) -> list[ProcEvent]:
        """Stop the reader (its stdin closed) and take the events it still sends before it ends."""
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self._take(deadline - time.monotonic())
        out, self._events = self._events, []
        return out

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(READER_CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ReaderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- the loop


class SnapshotCache:
    """The tracker's view of ``/proc``: the reader's :class:`Snapshot` of the exec being fed, else live.

    The :class:`Recorder` puts an exec's snapshot here (by pid) while the tracker handles that exec,
    and takes it out after: what a process ran is read as the reader found it at its exec; whatever
    else (its parents' names and parents, the sizes of an scp's files) is read live. ``where(pid)``
    asks ``where_id(container)`` when the snapshot names the container (``where`` itself otherwise).
    """

    def __init__(
        self,
        where: Callable[[int], tuple[int, str] | None],
        *,
        where_id: Callable[[str], tuple[int, str] | None] | None = None,
        info: Callable[[int], ProcInfo | None] = read_proc,
        parent_of: Callable[[int], int | None] = read_ppid,
        comm_of: Callable[[int], str | None] | None = None,
    ):
        self.current: dict[int, Snapshot] = {}
        self._where, self._where_id, self._info, self._parent_of = where, where_id, info, parent_of
        if comm_of is None:
            comm_of = read_comm if info is read_proc else (lambda pid: i.comm if (i := info(pid)) else None)
        self._comm_of = comm_of

    def where(self, pid: int) -> tuple[int, str] | None:
        s = self.current.get(pid)
        if s is not None and s.container is not None and self._where_id is not None:
            return self._where_id(s.container)
        return self._where(pid)

    def info(self, pid: int) -> ProcInfo | None:
        s = self.current.get(pid)
        return s.info if s is not None else self._info(pid)

    def _ancestor(self, pid: int) -> tuple[int, str | None, int | None] | None:
        for s in self.current.values():
            for a in s.ancestors:
                if a[0] == pid:
                    return a
        return None

    def parent_of(self, pid: int) -> int | None:
        s = self.current.get(pid)
        if s is not None and s.ppid:
            return s.ppid
        live = self._parent_of(pid)
        if live is None and (a := self._ancestor(pid)) is not None:
            return a[2]  # gone since the exec: as the reader saw it then
        return live

    def comm_of(self, pid: int) -> str | None:
        s = self.current.get(pid)
        if s is not None and s.info is not None:
            return s.info.comm
        live = self._comm_of(pid)
        if live is None and (a := self._ancestor(pid)) is not None:
            return a[1]
        return live


class Recorder:
    """Reads the kernel's process events on the calling thread until ``stop`` is set; ``sink`` gets records.

    The events come from ``connector()``: by default a :class:`ReaderProcess`, which has already read
    each exec's ``/proc`` (its :class:`Snapshot` s go through a :class:`SnapshotCache` to the tracker);
    its :class:`RangeError` comes out of :meth:`run` before anything is read, and ``ready`` (when
    given) is set once it listens. ``where_id(container)`` places a snapshot's container (else
    ``where(pid)``); ``seen(container)`` is told of each container in which something exec'd, so
    that the caller can look up new ones early (it must not block).

    ``sink`` is called with a batch at most every :data:`BATCH_SECONDS` (at once with
    :data:`BATCH_MAX` records) and once more when stopping, on a thread of the recorder's own so
    that a slow store does not hold up the events (up to :data:`SINK_QUEUE_BATCHES` batches
    wait for it; more are lost and counted in :attr:`lost`). The other options go to
    :class:`SessionTracker` (its ``info``, ``parent_of`` and ``comm_of`` behind the cache); a
    ``tracker`` given is used as it is. An error in the sink or the tracker is logged and the loop
    goes on: a recorder that stops records nothing.
    """

    def __init__(
        self,
        where: Callable[[int], tuple[int, str] | None],
        sink: Callable[[list[Record]], None],
        *,
        connector: Callable[[], Any] = ReaderProcess,
        where_id: Callable[[str], tuple[int, str] | None] | None = None,
        seen: Callable[[str], None] | None = None,
        tracker: SessionTracker | None = None,
        batch_seconds: float = BATCH_SECONDS,
        batch_max: int = BATCH_MAX,
        **tracker_options: Any,
    ):
        self.snapshots = SnapshotCache(
            where,
            where_id=where_id,
            **{k: tracker_options.pop(k) for k in ("info", "parent_of", "comm_of") if k in tracker_options},
        )
        if tracker is None:
            s = self.snapshots
            tracker = SessionTracker(
                s.where, info=s.info, parent_of=s.parent_of, comm_of=s.comm_of, **tracker_options
            )
        self.tracker = tracker
        self.sink = sink
        self.connector = connector
        self.seen = seen
        self.batch_seconds = batch_seconds
        self.batch_max = batch_max
        self.overruns = 0  # the connector's, as last seen
        self.errors = 0  # exceptions from the tracker or the sink (logged at most every 10 s)
        self.lost = 0  # records not given to a sink that was too far behind
        self.reader_pid: int | None = None  # the reader process's, while it runs
        self.reader_priority: str | None = None  # what the reader process got (ReaderProcess.priority)
        self._lock = threading.Lock()
        self._last_error_log = self._last_lost_log = float("-inf")

    def _error(self, what: str) -> None:
        with self._lock:
            self.errors += 1
            now = time.monotonic()
            if now - self._last_error_log < 10.0:
                return
            self._last_error_log = now
        log.exception("recorder: %s failed (%d errors so far)", what, self.errors)

    def _emit(self, q: queue.Queue[list[Record] | None], batch: list[Record]) -> None:
        if not batch:
            return
        try:
            q.put_nowait(batch)
        except queue.Full:
            self.lost += len(batch)
            now = time.monotonic()
            if now - self._last_lost_log >= 10.0:
                self._last_lost_log = now
                log.warning("recorder: the sink is behind, %d records lost so far", self.lost)

    def _write(self, q: queue.Queue[list[Record] | None]) -> None:
        while (batch := q.get()) is not None:
            try:
                self.sink(batch)
            except Exception:
                self._error("the sink")

    def _feed(self, ev: ProcEvent) -> list[Record]:
        snap = ev.snap
        if snap is None:
            return self.tracker.feed(ev)
        if snap.container is not None and self.seen is not None:
            self.seen(snap.container)
        self.snapshots.current[ev.pid] = snap
        try:
            return self.tracker.feed(ev)
        finally:
            self.snapshots.current.pop(ev.pid, None)

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        conn = self.connector()
        pid = getattr(conn, "pid", None)
        self.reader_pid = pid if isinstance(pid, int) else None
        prio = getattr(conn, "priority", None)
        self.reader_priority = prio if isinstance(prio, str) else None
        if ready is not None:
            ready.set()
        tracker = self.tracker
        # the sink (a database) works on a thread of its own: reading never waits for it
        q: queue.Queue[list[Record] | None] = queue.Queue(maxsize=SINK_QUEUE_BATCHES)
        writer = threading.Thread(target=self._write, args=(q,), name="rangectl-recorder-sink", daemon=True)
        writer.start()
        batch: list[Record] = []
        last_emit = last_tick = last_overrun_log = time.monotonic()
        reported = 0
        stopped = False
        try:
            while not stop.is_set():
                now = time.monotonic()
                wait = min(TICK_SECONDS - (now - last_tick), self.batch_seconds)
                if batch:
                    wait = min(wait, self.batch_seconds - (now - last_emit))
                for ev in conn.read(max(0.0, wait)):
                    try:
                        batch.extend(self._feed(ev))
                    except Exception:
                        self._error("an event")
                    if len(batch) >= self.batch_max:
                        self._emit(q, batch)
                        batch = []
                        last_emit = time.monotonic()
                now = time.monotonic()
                if now - last_tick >= TICK_SECONDS:
                    last_tick = now
                    try:
                        batch.extend(tracker.tick())
                    except Exception:
                        self._error("the tick")
                    self.overruns = conn.overruns + getattr(conn, "lost", 0)
                    if self.overruns > reported and now - last_overrun_log >= 10.0:
                        log.warning(
                            "recorder: process events lost (%d overruns of the kernel's buffer, %d events "
                            "the reader process could not keep)", conn.overruns, getattr(conn, "lost", 0),
                        )  # fmt: skip
                        reported, last_overrun_log = self.overruns, now
                if batch and now - last_emit >= self.batch_seconds:
                    self._emit(q, batch)
                    batch = []
                    last_emit = now
            stopped = True
        finally:
            try:
                finish = getattr(conn, "finish", None)
                if stopped and finish is not None:  # what the reader still holds
                    for ev in finish():
                        try:
                            batch.extend(self._feed(ev))
                        except Exception:
                            self._error("an event")
                self.overruns = conn.overruns + getattr(conn, "lost", 0)
            finally:
                conn.close()
                self.reader_pid = None
                try:
                    batch.extend(tracker.flush())
                finally:
                    self._emit(q, batch)
                    try:
                        q.put(None, timeout=SINK_CLOSE_SECONDS)
                    except queue.Full:
                        pass
                    writer.join(SINK_CLOSE_SECONDS)
