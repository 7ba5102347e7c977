"""The command recorder: sessions and commands from process events (synthetic, then the real kernel's)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace

import pytest

from rangectl.access import recorder as rec
from rangectl.access.recorder import (
    CommandRate,
    ProcConnector,
    ProcEvent,
    ProcInfo,
    ReaderProcess,
    Record,
    Recorder,
    ScpTransfer,
    SessionTracker,
    Snapshot,
    SnapshotCache,
    container_id_from_cgroup,
    container_id_of,
    parse_datagram,
    read_comm,
    read_ppid,
    read_proc,
    scp_transfers,
    shell_command,
    snapshot,
    stat_in_root,
)
from rangectl.errors import RangeError

WS = (1, "ws")
EDGE = (1, "edge")

# ---------------------------------------------------------------- a fake machine


@dataclass
class P:
    ppid: int
    comm: str
    argv: list[str]
    cwd: str | None
    exe: str | None
    at: tuple[int, str] | None  # watched container (team, node), None: the host or an unwatched one
    zombie: bool = False


@dataclass
class World:
    """Processes as /proc would show them; each event maker changes them as the kernel would, then reports."""

    procs: dict[int, P] = field(default_factory=dict)
    files: dict[tuple[tuple[int, str] | None, str], int] = field(default_factory=dict)
    t: float = 1000.0
    threads: set[int] = field(default_factory=set)  # pids whose leader exited with threads left
    next_pid: int = 5000

    # what the tracker is given
    def where(self, pid):
        p = self.procs.get(pid)
        return p.at if p else None

    def info(self, pid):
        p = self.procs.get(pid)
        if p is None:
            return None
        if p.zombie:
            return ProcInfo(p.comm, [], None, None)
        return ProcInfo(p.comm, list(p.argv), p.cwd, p.exe)

    def parent_of(self, pid):
        p = self.procs.get(pid)
        return p.ppid if p else None

    def stat_in(self, pid, path):
        p = self.procs.get(pid)
        if p is None or p.zombie:
            return None
        return self.files.get((p.at, path))

    def tracker(self, **kw) -> SessionTracker:
        kw.setdefault("live_threads", lambda pid: pid in self.threads)
        return SessionTracker(
            self.where,
            info=self.info,
            parent_of=self.parent_of,
            stat_in=self.stat_in,
            clock=lambda: self.t,
            **kw,
        )

    # the kernel
    def spawn(self, pid, ppid, comm, argv, at, exe=None, cwd="/"):
        self.procs[pid] = P(ppid, comm, argv, cwd, exe or f"/usr/bin/{comm}", at)

    def pid(self) -> int:
        self.next_pid += 1
        return self.next_pid

    # Each returns a Pending event: the change to the machine is made when it is fed (or apply()'d), so
    # events given together are seen one after the other, as the recorder would see them when quick.
    def fork(self, parent, child=None) -> Pending:
        child = child or self.pid()

        def apply():
            self.procs[child] = replace(self.procs[parent], ppid=parent)

        return Pending(ProcEvent("fork", child, child, parent, None, self.t), apply)

    def exec(self, pid, argv, *, exe=None, comm=None, cwd=None) -> Pending:
        def apply():
            p = self.procs[pid]
            p.argv = list(argv)
            p.exe = exe or (argv[0] if argv[0].startswith("/") else f"/usr/bin/{argv[0].lstrip('-')}")
            p.comm = comm or os.path.basename(argv[0].lstrip("-"))[:15]
            if cwd is not None:
                p.cwd = cwd

        return Pending(ProcEvent("exec", pid, pid, None, None, self.t), apply)

    def exit(self, pid, status=0, sig=0) -> Pending:
        def apply():
            del self.procs[pid]
            for q in self.procs.values():  # orphans go to init
                if q.ppid == pid:
                    q.ppid = 1

        return Pending(ProcEvent("exit", pid, pid, None, sig or (status << 8), self.t), apply)


@dataclass
class Pending:
    event: ProcEvent
    _apply: object
    done: bool = False

    def apply(self) -> ProcEvent:
        if not self.done:
            self.done = True
            self._apply()
        return self.event


def feed(tr: SessionTracker, *events: ProcEvent | Pending) -> list[Record]:
    out: list[Record] = []
    for e in events:
        out.extend(tr.feed(e.apply() if isinstance(e, Pending) else e))
    return out


def machine() -> World:
    """The host (pid 1, containerd-shim 100), a workstation container (init 101, sshd listener 110) and an
    operated node "edge" (init 121, sshd listener 130)."""
    w = World()
    w.spawn(1, 0, "systemd", ["/sbin/init"], None)
    w.spawn(100, 1, "containerd-shim", ["/usr/bin/containerd-shim-runc-v2"], None)
    w.spawn(101, 100, "tini", ["/sbin/tini", "--", "sleep", "infinity"], WS)
    w.spawn(
        110,
        101,
        "sshd",
        ["sshd: /usr/sbin/sshd -f /etc/rangectl/sshd_config [listener]"],
        WS,
        "/usr/sbin/sshd",
    )
    w.spawn(121, 100, "tini", ["/sbin/tini"], EDGE)
    w.spawn(130, 121, "sshd", ["sshd: [listener]"], EDGE, "/usr/sbin/sshd")
    return w


def login(w: World, tr: SessionTracker, shell_argv: list[str], *, listener=110, cwd="/root", **exec_kw):
    """OpenSSH <= 9.7 with privilege separation: listener -> `sshd -R` (monitor) -> pre-auth child (exits)
    -> per-user child -> the session's child, which execs the shell. Returns (records, shell, user child)."""
    out = []
    mon = w.pid()
    out += feed(tr, w.fork(listener, mon), w.exec(mon, ["/usr/sbin/sshd", "-D", "-R"]))
    pre = w.pid()
    out += feed(tr, w.fork(mon, pre), w.exit(pre))
    user = w.pid()
    out += feed(tr, w.fork(mon, user))
    w.procs[user].argv = ["sshd: root@pts/0"]  # setproctitle: argv, not comm
    shell = w.pid()
    out += feed(tr, w.fork(user, shell), w.exec(shell, shell_argv, cwd=cwd, **exec_kw))
    return out, shell, user


def logout(w: World, tr: SessionTracker, shell: int, user: int, status=0) -> list[Record]:
    mon = w.procs[user].ppid
    return feed(tr, w.exit(shell, status), w.exit(user), w.exit(mon))


def run(w: World, tr: SessionTracker, parent: int, argv: list[str], *, status=0, sig=0, **kw):
    """A shell runs a program: fork, exec, exit. Returns (records, pid)."""
    pid = w.pid()
    out = feed(tr, w.fork(parent, pid), w.exec(pid, argv, **kw))
    out += feed(tr, w.exit(pid, status, sig))
    return out, pid


def session(shell: int, ts: float, argv, cmd, cwd="/root", at=WS, **kw) -> Record:
    return Record(
        kind="session",
        ts=ts,
        team=at[0],
        node=at[1],
        session=shell,
        pid=shell,
        argv=argv,
        cmd=cmd,
        cwd=cwd,
        via="ssh",
        **kw,
    )


def command(shell: int, pid: int, ts: float, argv, cmd, cwd="/root", at=WS, **kw) -> Record:
    return Record(
        kind="command",
        ts=ts,
        team=at[0],
        node=at[1],
        session=shell,
        pid=pid,
        argv=argv,
        cmd=cmd,
        cwd=cwd,
        **kw,
    )


def exited(shell: int, pid: int, ts: float, status: int, at=WS, ref_ts=None) -> Record:
    return Record(
        kind="command.exit",
        ts=ts,
        team=at[0],
        node=at[1],
        session=shell,
        pid=pid,
        status=status,
        ref=(ts if ref_ts is None else ref_ts, pid),
    )


# ---------------------------------------------------------------- sessions


def test_an_exec_by_sshds_per_user_child_starts_a_session_and_sshds_own_execs_do_not():
    w = machine()
    tr = w.tracker()
    out, shell, _ = login(w, tr, ["-bash"])
    # the monitor's re-exec (`sshd -R`) made nothing; the login shell is the session
    assert out == [session(shell, w.t, ["-bash"], "-bash")]


def test_openssh_9_8_sshd_session_and_10_sshd_auth_are_not_sessions_but_their_shells_are():
    w = machine()
    tr = w.tracker()
    mon, auth, user, shell = 7001, 7002, 7003, 7004
    out = feed(
        tr,
        w.fork(110, mon),
        w.exec(mon, ["/usr/lib/openssh/sshd-session", "-R"]),
        w.fork(mon, auth),
        w.exec(auth, ["/usr/lib/openssh/sshd-auth", "-R"]),
        w.exit(auth),
        w.fork(mon, user),
        w.fork(user, shell),
    )
    assert out == []
    assert feed(tr, w.exec(shell, ["-bash"], cwd="/root")) == [session(shell, w.t, ["-bash"], "-bash")]


def test_ssh_host_cmd_gives_the_sessions_command_from_sh_c():
    w = machine()
    tr = w.tracker()
    out, shell, _ = login(w, tr, ["bash", "-c", "cat /etc/passwd | grep root"])
    assert out == [
        session(shell, w.t, ["bash", "-c", "cat /etc/passwd | grep root"], "cat /etc/passwd | grep root")
    ]


def test_shell_command_unwraps_only_a_shells_dash_c():
    assert shell_command(["/bin/sh", "-c", "ls -l; id"]) == "ls -l; id"
    assert shell_command(["-bash", "-lc", "make all", "argv0"]) == "make all"
    assert shell_command(["python3", "-c", "print(1)"]) == "python3 -c 'print(1)'"
    assert shell_command(["sh", "-x", "script.sh"]) == "sh -x script.sh"
    assert shell_command(["grep", "-c", "root", "/etc/passwd"]) == "grep -c root /etc/passwd"
    assert shell_command(["bash", "-c"]) == "bash -c"


def test_commands_of_the_session_and_of_its_descendants_are_recorded_with_cwd_and_status():
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    w.t += 1
    out, ls = run(w, tr, shell, ["ls", "-l", "/tmp dir"], cwd="/root")
    assert out == [
        command(shell, ls, w.t, ["ls", "-l", "/tmp dir"], "ls -l '/tmp dir'"),
        exited(shell, ls, w.t, 0),
    ]
    # a subshell's pipeline: ( cd /var/log && grep -r x . | sort )
    sub = w.pid()
    assert feed(tr, w.fork(shell, sub)) == []
    w.procs[sub].cwd = "/var/log"  # cd is a builtin: no exec, seen in the next command's cwd
    out, grep = run(w, tr, sub, ["grep", "-r", "x", "."], status=1)
    out2, sort = run(w, tr, sub, ["sort"])
    assert out + out2 == [
        command(shell, grep, w.t, ["grep", "-r", "x", "."], "grep -r x .", cwd="/var/log"),
        exited(shell, grep, w.t, 1),
        command(shell, sort, w.t, ["sort"], "sort", cwd="/var/log"),
        exited(shell, sort, w.t, 0),
    ]
    # the subshell never exec'd: its exit makes no record; the login shell's exit ends its session
    assert feed(tr, w.exit(sub)) == []
    assert feed(tr, w.exit(shell, 130)) == [exited(shell, shell, w.t, 130, ref_ts=1000.0)]


def test_exit_status_is_the_shells_code_or_128_plus_the_signal():
    assert ProcEvent("exit", 1, 1, None, 3 << 8).status == 3
    assert ProcEvent("exit", 1, 1, None, 9).status == 137  # SIGKILL
    assert ProcEvent("exit", 1, 1, None, 11 | 0x80).status == 139  # SIGSEGV, core dumped
    assert ProcEvent("exit", 1, 1, None, 255 << 8).status == 255
    assert ProcEvent("exit", 1, 1, None, 64).status == 192  # SIGRTMAX
    assert ProcEvent("exec", 1, 1).status is None
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    out, a = run(w, tr, shell, ["/bin/sh", "-c", "exit 3"], status=3)
    out2, b = run(w, tr, shell, ["sleep", "100"], sig=signal.SIGKILL)
    assert [r.status for r in out + out2 if r.kind == "command.exit"] == [3, 137]
    assert [(r.kind, r.pid, r.cmd) for r in out + out2] == [
        ("command", a, "exit 3"),
        ("command.exit", a, None),
        ("command", b, "sleep 100"),
        ("command.exit", b, None),
    ]


def test_double_fork_setsid_reparenting_exec_and_new_shells_all_stay_recorded():
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    # ( setsid sh -c 'nc -l 4444 &' & ): the middle process dies, the daemon is reparented to init
    mid = w.pid()
    out = feed(tr, w.fork(shell, mid))
    d = w.pid()
    out += feed(tr, w.fork(mid, d), w.exit(mid))
    assert w.procs[d].ppid == 1
    out += feed(
        tr, w.exec(d, ["setsid", "sh", "-c", "nc -l 4444 &"]), w.exec(d, ["sh", "-c", "nc -l 4444 &"])
    )
    nc = w.pid()
    out += feed(tr, w.fork(d, nc), w.exit(d), w.exec(nc, ["nc", "-l", "4444"]))
    # the login shell replaces itself, then clears its environment, then starts another shell
    out += feed(
        tr, w.exec(shell, ["bash", "--norc"]), w.exec(shell, ["env", "-i", "sh"]), w.exec(shell, ["sh"])
    )
    out2, x = run(w, tr, shell, ["id"])
    assert [(r.kind, r.pid, r.cmd, r.session) for r in out + out2] == [
        ("command", d, "setsid sh -c 'nc -l 4444 &'", shell),
        ("command", d, "nc -l 4444 &", shell),
        ("command.exit", d, None, shell),
        ("command", nc, "nc -l 4444", shell),
        ("command", shell, "bash --norc", shell),
        ("command", shell, "env -i sh", shell),
        ("command", shell, "sh", shell),
        ("command", x, "id", shell),
        ("command.exit", x, None, shell),
    ]


def test_a_daemon_the_trainee_starts_even_a_second_sshd_keeps_its_children_in_the_session():
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    listener = w.pid()
    out = feed(tr, w.fork(shell, listener), w.exec(listener, ["/usr/sbin/sshd", "-p", "2222"]))
    mon, user, kid = w.pid(), w.pid(), w.pid()
    out += feed(tr, w.fork(listener, mon), w.exec(mon, ["/usr/sbin/sshd", "-R"]), w.fork(mon, user))
    out += feed(tr, w.fork(user, kid), w.exec(kid, ["bash"]))
    # followed by descent, not by name: all of it is the first session's
    assert [(r.kind, r.pid, r.cmd, r.session) for r in out] == [
        ("command", listener, "/usr/sbin/sshd -p 2222", shell),
        ("command", mon, "/usr/sbin/sshd -R", shell),
        ("command", kid, "bash", shell),
    ]


def test_a_lost_fork_event_is_made_good_through_proc():
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    kid = w.pid()
    w.fork(shell, kid).apply()  # the kernel reported it, the socket overran: never fed
    assert feed(tr, w.exec(kid, ["wget", "http://x/y"])) == [
        command(shell, kid, w.t, ["wget", "http://x/y"], "wget http://x/y")
    ]


@pytest.mark.parametrize(
    "setup",
    ["docker exec", "service", "listener re-exec", "host sshd", "host", "unwatched container"],
)
def test_processes_outside_a_session_are_never_recorded(setup):
    w = machine()
    tr = w.tracker()
    out: list[Record] = []
    pid = w.pid()
    if setup == "docker exec":  # from the trainers: runc's child in the container, parent containerd-shim
        out += feed(tr, w.fork(100, pid))
        w.procs[pid].at = WS
        out += feed(tr, w.exec(pid, ["runc", "init"]), w.exec(pid, ["sh", "-c", "pkill sshd"]))
    elif setup == "service":  # cron in the container, started by its init
        out += feed(tr, w.fork(101, pid), w.exec(pid, ["cron", "-f"]))
        job = w.pid()
        out += feed(tr, w.fork(pid, job), w.exec(job, ["sh", "-c", "/etc/cron.hourly/x"]))
    elif setup == "listener re-exec":  # connections that never logged in: `sshd -R`, then gone
        out += feed(tr, w.fork(110, pid), w.exec(pid, ["/usr/sbin/sshd", "-D", "-R"]), w.exit(pid, 255))
        out += feed(tr, w.fork(110, pid + 1))
        ev = w.exec(pid + 1, ["/usr/sbin/sshd", "-D", "-R"]).apply()
        w.procs[pid + 1].zombie = True  # too quick to read: its name and its parent (the listener) tell
        out += feed(tr, ev, w.exit(pid + 1))
        out += feed(tr, w.fork(110, pid + 2))
        ev = w.exec(pid + 2, ["/usr/sbin/sshd", "-D", "-R"]).apply()
        del w.procs[pid + 2]  # gone altogether: its parent (the listener) tells
        out += feed(tr, ev)
    elif setup == "host sshd":  # an administrator's login on the host itself
        w.spawn(400, 1, "sshd", ["sshd: [listener]"], None, "/usr/sbin/sshd")
        recs, pid, _ = login(w, tr, ["-bash"], listener=400)
        out += recs
    elif setup == "unwatched container":  # another range's (or nobody's) container: where() says None
        w.spawn(500, 100, "sshd", ["sshd: [listener]"], None, "/usr/sbin/sshd")
        recs, pid, _ = login(w, tr, ["-bash"], listener=500)
        out += recs
    else:  # the host's own work
        out += feed(tr, w.fork(1, pid), w.exec(pid, ["make", "-j8"]))
    # whatever they do next is not recorded either
    if pid in w.procs:
        out += run(w, tr, pid, ["id"])[0] + feed(tr, w.exit(pid))
    assert out == []
    assert tr.tracked == 0


@pytest.mark.parametrize("name", ["sshd", "sshd-session", "sshd-auth"])
@pytest.mark.parametrize("exe", ["/usr/bin/bash", "/root/{name}", "real", "zombie"])
def test_a_program_named_like_sshd_run_by_a_session_is_still_a_session(name, exe):
    """`ln -s /bin/bash ~/sshd; ssh ws '~/sshd -c evil'`, a copy of bash, or one that ended at once."""
    w = machine()
    tr = w.tracker()
    argv = [f"/root/{name}", "-c", "rm -rf /evidence"]
    mon, user, root = w.pid(), w.pid(), w.pid()
    feed(
        tr,
        w.fork(110, mon),
        w.exec(mon, ["/usr/sbin/sshd", "-D", "-R"]),
        w.fork(mon, user),
        w.fork(user, root),
    )
    real = "/usr/sbin/sshd" if name == "sshd" else f"/usr/lib/openssh/{name}"
    ev = w.exec(
        root, argv, exe=real if exe == "real" else exe.format(name=name), comm=name, cwd="/root"
    ).apply()
    if exe == "zombie":
        w.procs[root].zombie = True
        expected = session(root, w.t, [name], name, cwd=None, unread=True)
    else:
        expected = session(root, w.t, argv, f"/root/{name} -c 'rm -rf /evidence'")
    assert feed(tr, ev) == [expected]
    if exe != "zombie":
        assert [r.pid for r in run(w, tr, root, ["rm", "-rf", "/evidence"])[0]] == [w.next_pid] * 2


@pytest.mark.parametrize(
    ("comm", "exe", "is_sshd"),
    [
        ("sshd", "/usr/sbin/sshd", True),
        ("sshd-session", "/usr/lib/openssh/sshd-session", True),
        ("sshd-session", "/usr/libexec/openssh/sshd-session", True),
        ("sshd", "/usr/sbin/sshd (deleted)", True),  # upgraded under a running sshd
        ("sshd", "/tmp/sshd", False),  # only OpenSSH's own binaries, where root installs them
        ("sshd", "/usr/lib/openssh/sshd-session", False),  # named after another binary
        ("sshd", "/usr/sbin/dropbear", False),
        ("keys-helper", "/usr/local/bin/keys-helper", False),
    ],
)
def test_what_the_listener_execs_is_sshds_only_when_it_is_an_openssh_binary(comm, exe, is_sshd):
    w = machine()
    tr = w.tracker()
    pid = w.pid()
    out = feed(tr, w.fork(110, pid), w.exec(pid, ["/usr/sbin/sshd", "-D", "-R"], exe=exe, comm=comm, cwd="/"))
    if is_sshd:
        assert out == []
    else:
        assert out == [session(pid, w.t, ["/usr/sbin/sshd", "-D", "-R"], "/usr/sbin/sshd -D -R", cwd="/")]


def test_a_session_root_gone_before_it_was_read_is_kept_unread_and_its_children_followed():
    w = machine()
    tr = w.tracker()
    mon, user, root, kid = 7001, 7002, 7003, 7004
    feed(
        tr,
        w.fork(110, mon),
        w.exec(mon, ["/usr/sbin/sshd", "-D", "-R"]),
        w.fork(mon, user),
        w.fork(user, root),
    )
    ev = w.exec(root, ["bash", "-c", "setsid evil &"]).apply()
    w.fork(root, kid).apply()
    del w.procs[root]  # exec'd, forked, exited before the recorder read it
    w.procs[kid].ppid = 1
    assert feed(tr, ev) == [
        Record(
            kind="session",
            ts=w.t,
            team=1,
            node="ws",
            session=root,
            pid=root,
            argv=["?"],
            cmd="?",
            via="ssh",
            unread=True,
        )
    ]
    out = feed(tr, ProcEvent("fork", kid, kid, root, None, w.t), w.exec(kid, ["evil"]))
    assert out == [command(root, kid, w.t, ["evil"], "evil", cwd="/")]


def test_an_unread_command_is_recorded_with_its_name_or_a_question_mark():
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    a, b = w.pid(), w.pid()
    feed(tr, w.fork(shell, a), w.fork(shell, b))
    ev_a = w.exec(a, ["/bin/true"]).apply()
    w.procs[a].zombie = True  # exited, not yet reaped: the name is left, argv is not
    ev_b = w.exec(b, ["/bin/false"]).apply()
    del w.procs[b]  # reaped already
    out = feed(
        tr, ev_a, ev_b, ProcEvent("exit", a, a, None, 0, w.t), ProcEvent("exit", b, b, None, 1 << 8, w.t)
    )
    assert out == [
        command(shell, a, w.t, ["true"], "true", cwd=None, unread=True),
        command(shell, b, w.t, ["?"], "?", cwd=None, unread=True),
        exited(shell, a, w.t, 0),
        exited(shell, b, w.t, 1),
    ]


def test_a_long_command_line_is_recorded_cut_and_marked():
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    pid = w.pid()
    feed(tr, w.fork(shell, pid))
    info = ProcInfo("echo", ["echo", "x" * 100], "/root", "/usr/bin/echo", truncated=True)
    tr.info = lambda p: info if p == pid else w.info(p)
    assert feed(tr, w.exec(pid, ["echo", "x" * 100])) == [
        command(shell, pid, w.t, ["echo", "x" * 100], "echo " + "x" * 100, truncated=True)
    ]


def test_a_parent_that_exec_d_is_known_by_its_new_name():
    """The names of untracked parents are cached; an exec (or exit) of the parent clears its entry."""
    w = machine()
    tr = w.tracker()
    w.spawn(600, 101, "sshd", ["/usr/sbin/sshd", "-D"], WS, "/usr/sbin/sshd")
    mon = w.pid()
    assert feed(tr, w.fork(600, mon), w.exec(mon, ["/usr/sbin/sshd", "-D", "-R"]), w.exit(mon)) == []
    # the same process becomes a service that runs bash for its clients: they are no ssh sessions
    assert feed(tr, w.exec(600, ["/usr/bin/python3", "service.py"])) == []
    kid = w.pid()
    assert feed(tr, w.fork(600, kid), w.exec(kid, ["bash"])) == []


def test_a_leader_that_exits_alone_leaves_its_process_tracked():
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    pid = w.pid()
    out = feed(tr, w.fork(shell, pid), w.exec(pid, ["./sneaky"]))
    w.threads.add(pid)  # main thread called pthread_exit: the other threads run on
    out += feed(tr, ProcEvent("exit", pid, pid, None, 0, w.t))
    kid = w.pid()
    w.spawn(kid, pid, "sh", ["sh"], WS)
    out += feed(tr, ProcEvent("fork", kid, kid, pid, None, w.t), w.exec(kid, ["sh", "-c", "cat /etc/shadow"]))
    assert [(r.kind, r.pid, r.session) for r in out] == [
        ("command", pid, shell),
        ("command.exit", pid, shell),
        ("command", kid, shell),
    ]


# ---------------------------------------------------------------- the table stays small


def test_the_table_forgets_exited_pids():
    w = machine()
    tr = w.tracker()

    def cycle(n):
        for _ in range(n):
            _, shell, user = login(w, tr, ["-bash"])
            sub = w.pid()
            feed(tr, w.fork(shell, sub))
            run(w, tr, sub, ["ls"])
            run(w, tr, shell, ["sleep", "1"], sig=9)
            feed(tr, w.exit(sub))
            logout(w, tr, shell, user)
        for _ in range(n):  # the host's own work: fork, exec, exit; and forks that never exec
            pid = w.pid()
            feed(tr, w.fork(1, pid), w.exec(pid, ["cc", "-c", "x.c"]), w.exit(pid))
            pid = w.pid()
            feed(tr, w.fork(100, pid), w.exit(pid))

    cycle(1)  # warms the cache of live parents' names (the listener's)
    baseline = len(tr)
    assert tr.tracked == 0 and baseline <= 3
    cycle(50)
    assert len(tr) == baseline and tr.tracked == 0


def test_a_lost_exit_is_swept_and_a_reused_pid_is_not_taken_for_the_old_process():
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    pid = w.pid()
    feed(tr, w.fork(shell, pid), w.exec(pid, ["sleep", "1"]))
    del w.procs[pid]  # its exit event was lost
    assert tr.tracked == 2
    # the pid is reused by a host process: its fork event says whose child it is
    w.spawn(pid, 1, "cron", ["cron"], None)
    feed(tr, ProcEvent("fork", pid, pid, 1, None, w.t))
    assert tr.tracked == 1
    assert feed(tr, w.exec(pid, ["run-parts", "/etc/cron.daily"])) == []
    # a tracked pid whose exit was lost and that is gone: forgotten after two sweeps
    other = w.pid()
    feed(tr, w.fork(shell, other), w.exec(other, ["sleep", "2"]))
    del w.procs[other]
    assert tr.tracked == 2
    tr.tick(w.t + rec.SWEEP_SECONDS)
    assert tr.tracked == 2
    tr.tick(w.t + 2 * rec.SWEEP_SECONDS)
    assert tr.tracked == 1  # the login shell, still alive, stays


# ---------------------------------------------------------------- the rate cap


def test_rate_cap_per_team_and_one_dropped_record_per_window():
    w = machine()
    tr = w.tracker(rate=CommandRate(per_second=20, burst=200))
    _, shell, _ = login(w, tr, ["-bash"])
    _, other, _ = login(w, tr, ["-bash"], listener=130)  # on edge, same team
    w.spawn(900, 101, "tini", ["tini"], (2, "ws"))
    w.spawn(901, 900, "sshd", ["sshd"], (2, "ws"), "/usr/sbin/sshd")
    _, shell2, _ = login(w, tr, ["-bash"], listener=901)
    t0 = w.t
    recorded: list[Record] = []
    for i in range(1000):  # 1000 execs in one second
        w.t = t0 + i / 1000
        recorded += run(w, tr, shell, ["true", str(i)])[0]
    commands = [r for r in recorded if r.kind == "command"]
    assert 200 <= len(commands) <= 220
    assert len(commands) + tr.dropped == 1000
    # the exit of every recorded command, and of none of the others
    assert sorted(r.pid for r in recorded if r.kind == "command.exit") == sorted(r.pid for r in commands)
    assert [r for r in recorded if r.kind == "command.dropped"] == []
    first_drop = next(t0 + i / 1000 for i in range(1000) if str(i) not in {r.argv[1] for r in commands})
    # sessions and other teams are not capped
    w.t = t0 + 1
    out, a = run(w, tr, shell2, ["id"])
    assert [r.kind for r in out] == ["command", "command.exit"]
    out, _, _ = login(w, tr, ["-bash"])
    assert [r.kind for r in out] == ["session"]
    assert tr.tick(first_drop + 9.9) == []
    assert tr.tick(first_drop + 10) == [
        Record(
            kind="command.dropped",
            ts=first_drop + 10,
            team=1,
            node="ws",
            count=1000 - len(commands),
            since=first_drop,
        )
    ]
    assert tr.tick(first_drop + 30) == []
    # a minute later the bucket is full again, and no fuller than the burst; edge shares the team's bucket
    w.t = t0 + 60
    assert [r.kind for r in run(w, tr, other, ["id"])[0]] == ["command", "command.exit"]
    out = [r for _ in range(300) for r in run(w, tr, shell, ["true"])[0] if r.kind == "command"]
    assert len(out) == 199
    assert [(r.kind, r.node, r.count, r.since) for r in tr.tick(w.t + 10)] == [
        ("command.dropped", "ws", 101, w.t)
    ]


def test_dropped_commands_are_reported_when_the_recorder_stops():
    w = machine()
    tr = w.tracker(rate=CommandRate(per_second=1, burst=2))
    _, shell, _ = login(w, tr, ["-bash"])
    for _ in range(5):
        run(w, tr, shell, ["x"])
    assert [(r.kind, r.count, r.since) for r in tr.flush()] == [("command.dropped", 3, w.t)]
    assert tr.flush() == []


# ---------------------------------------------------------------- scp


def test_scp_upload_gives_one_file_copy_per_file_with_sizes_from_the_container():
    w = machine()
    tr = w.tracker()
    w.files[(WS, "/root/notes.txt")] = 42
    w.files[(WS, "/etc/hosts")] = 17
    _, shell, _ = login(w, tr, ["-bash"])
    argv = [
        "scp",
        "-P",
        "2222",
        "-i",
        "/root/.ssh/id",
        "-oBatchMode=yes",
        "-rq",
        "notes.txt",
        "/etc/hosts",
        "./missing",
        "root@edge:/tmp/",
    ]
    out, pid = run(w, tr, shell, argv, cwd="/root")
    ref = (w.t, pid)
    copy = dict(
        kind="file.copy",
        ts=w.t,
        team=1,
        node="ws",
        session=shell,
        pid=pid,
        direction="upload",
        peer="edge",
        status=0,
        ref=ref,
    )
    assert out == [
        command(shell, pid, w.t, argv, " ".join(argv)),
        exited(shell, pid, w.t, 0),
        Record(name="notes.txt", size=42, **copy),
        Record(name="/etc/hosts", size=17, **copy),
        Record(name="./missing", size=None, **copy),
    ]


def test_scp_download_sizes_the_local_destination_directory_or_file():
    w = machine()
    tr = w.tracker()
    w.files[(WS, "/root/work/auth.log")] = 1000
    w.files[(WS, "/tmp/p")] = 5
    _, shell, _ = login(w, tr, ["-bash"])
    out, pid = run(
        w,
        tr,
        shell,
        ["scp", "-3", "-P2222", "edge:/var/log/auth.log", "web:logs/x.log", "."],
        status=1,
        cwd="/root/work",
    )
    files = [(r.name, r.direction, r.peer, r.size, r.status) for r in out if r.kind == "file.copy"]
    assert files == [
        ("/var/log/auth.log", "download", "edge", 1000, 1),
        ("logs/x.log", "download", "web", None, 1),
    ]
    out, pid = run(w, tr, shell, ["scp", "-T", "edge:/etc/passwd", "/tmp/p"])
    files = [(r.name, r.direction, r.peer, r.size, r.status) for r in out if r.kind == "file.copy"]
    assert files == [("/etc/passwd", "download", "edge", 5, 0)]


def test_scp_sizes_come_from_another_process_of_the_node_when_the_session_root_is_gone():
    w = machine()
    tr = w.tracker()
    w.files[(WS, "/root/a")] = 7
    _, shell, user = login(w, tr, ["-bash"])
    d = w.pid()
    feed(tr, w.fork(shell, d))  # a background job outlives the login shell
    pid = w.pid()
    feed(tr, w.fork(d, pid), w.exec(pid, ["scp", "a", "edge:"], cwd="/root"))
    logout(w, tr, shell, user)
    out = feed(tr, w.exit(pid))
    assert [(r.kind, r.name, r.size) for r in out] == [("command.exit", None, None), ("file.copy", "a", 7)]


def test_scp_transfers_parses_options_and_operands():
    assert scp_transfers(
        ["scp", "-r", "-l", "100", "-c", "aes128-ctr", "-J", "jump", "d", "u@[fe80::1]:/x"]
    ) == [ScpTransfer("upload", "fe80::1", "d", "d")]
    assert scp_transfers(["scp", "scp://[fe80::2]:2222/x", "scp://web/", "."]) == [
        ScpTransfer("download", "fe80::2", "x", "."),
        ScpTransfer("download", "web", ".", "."),
    ]
    assert scp_transfers(["scp", "scp://root@edge:2222/etc/x", "/tmp/"]) == [
        ScpTransfer("download", "edge", "etc/x", "/tmp/")
    ]
    assert scp_transfers(["scp", "-F", "cfg", "-S", "ssh", "--", "-weird", "edge:"]) == [
        ScpTransfer("upload", "edge", "-weird", "-weird")
    ]
    assert scp_transfers(["scp", "./a:b", "/c:d", "dir/"]) == []  # local to local: a cp
    assert scp_transfers(["scp", "a:x", "b:y"]) == []  # remote to remote: nothing here
    assert scp_transfers(["scp", "-t", "/tmp"]) == []  # the far end of someone else's scp (one operand)
    assert scp_transfers(["scp", "-pf", "/etc/passwd"]) == []
    assert scp_transfers(["scp", "onlyone"]) == []


# ---------------------------------------------------------------- helpers on /proc


DOCKER_ID = "3f" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"12:pids:/docker/{DOCKER_ID}\n11:memory:/docker/{DOCKER_ID}\n"
            f"1:name=systemd:/docker/{DOCKER_ID}\n",
            DOCKER_ID,
        ),
        (f"0::/docker/{DOCKER_ID}\n", DOCKER_ID),
        (f"0::/system.slice/docker-{DOCKER_ID}.scope\n", DOCKER_ID),
        (f"1:name=systemd:/system.slice/docker-{DOCKER_ID}.scope\n0::/\n", DOCKER_ID),
        (f"0::/docker/{DOCKER_ID}/init.scope\n", DOCKER_ID),
        # a node of an engine that runs in a container (the cluster lab): the innermost id, even
        # when the unified line names only the engine's
        (f"4:memory:/docker/{'e' * 64}/docker/{DOCKER_ID}\n0::/docker/{'e' * 64}\n", DOCKER_ID),
        (f"0::/docker/{'e' * 64}\n4:memory:/docker/{'e' * 64}/docker/{DOCKER_ID}\n", DOCKER_ID),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
        ("0::/system.slice/docker.service\n", None),
        (f"0::/kubepods/besteffort/pod1/cri-containerd-{DOCKER_ID}.scope\n", None),
        (f"0::/docker/{DOCKER_ID[:-1]}\n", None),
        (f"0::/docker/{DOCKER_ID}0\n", None),
        ("", None),
    ],
)
def test_container_id_of_reads_docker_ids_from_cgroup(tmp_path, text, expected):
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "cgroup").write_text(text)
    assert container_id_of(77, proc=str(tmp_path)) == expected
    assert container_id_from_cgroup(text) == expected
    assert container_id_of(78, proc=str(tmp_path)) is None  # gone


def test_read_proc_and_read_ppid_from_a_proc_tree(tmp_path):
    d = tmp_path / "42"
    d.mkdir()
    (d / "cmdline").write_bytes(b"ls\0-l\0caf\xc3\xa9\0\xff\0")
    (d / "comm").write_bytes(b"ls\n")
    (d / "status").write_text("Name:\tls\nState:\tR\nTgid:\t42\nPid:\t42\nPPid:\t7\n")
    os.symlink("/root", d / "cwd")
    os.symlink("/usr/bin/ls", d / "exe")
    assert read_proc(42, str(tmp_path)) == ProcInfo(
        "ls", ["ls", "-l", "café", "\\xff"], "/root", "/usr/bin/ls"
    )
    assert read_ppid(42, str(tmp_path)) == 7
    (d / "cmdline").write_bytes(b"")  # a zombie
    assert read_proc(42, str(tmp_path)) == ProcInfo("ls", [], "/root", "/usr/bin/ls")
    (d / "cmdline").write_bytes(b"x" * (rec.MAX_ARGV_BYTES + 10))
    got = read_proc(42, str(tmp_path))
    assert got.truncated and got.argv == ["x" * rec.MAX_ARGV_BYTES]
    (d / "cmdline").write_bytes(b"/usr/bin/python3\0x.py\0")
    (d / "comm").unlink()  # gone between the two reads: argv tells its name
    assert read_proc(42, str(tmp_path)) == ProcInfo(
        "python3", ["/usr/bin/python3", "x.py"], "/root", "/usr/bin/ls"
    )
    (d / "cmdline").write_bytes(b"")
    assert read_proc(42, str(tmp_path)) is None
    assert read_proc(43, str(tmp_path)) is None and read_ppid(43, str(tmp_path)) is None


def test_stat_in_root_follows_links_inside_the_containers_root(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "home" / "u").mkdir(parents=True)
    (rootfs / "etc" / "real").write_text("abc")
    os.symlink("/etc/real", rootfs / "home" / "u" / "abs")
    os.symlink("../../etc/real", rootfs / "home" / "u" / "rel")
    os.symlink("/etc/hostname", rootfs / "home" / "u" / "hosts")  # exists on the host, not in the container
    os.symlink("/../../../../etc/real", rootfs / "home" / "u" / "up")
    (tmp_path / "proc" / "9").mkdir(parents=True)
    os.symlink(rootfs, tmp_path / "proc" / "9" / "root")
    proc = str(tmp_path / "proc")
    assert stat_in_root(9, "/etc/real", proc) == 3
    assert stat_in_root(9, "/home/u/abs", proc) == 3
    assert stat_in_root(9, "/home/u/rel", proc) == 3
    assert stat_in_root(9, "/home/u/up", proc) == 3
    assert stat_in_root(9, "/home/u/hosts", proc) is None
    assert stat_in_root(9, "/home/u", proc) is None  # a directory has no file size
    assert stat_in_root(9, "relative", proc) is None
    assert stat_in_root(10, "/etc/real", proc) is None


# ---------------------------------------------------------------- records and datagrams


def test_record_as_data_is_json_without_none_fields():
    r = Record(kind="command.exit", ts=1.5, team=2, node="ws", session=10, pid=11, status=0, ref=(1.25, 11))
    assert r.as_data() == {
        "kind": "command.exit",
        "ts": 1.5,
        "team": 2,
        "node": "ws",
        "session": 10,
        "pid": 11,
        "status": 0,
        "ref": {"ts": 1.25, "pid": 11},
    }
    c = Record(kind="command", ts=1.0, argv=["a", "b"], cmd="a b", unread=None)
    assert json.loads(json.dumps(c.as_data())) == {
        "kind": "command",
        "ts": 1.0,
        "argv": ["a", "b"],
        "cmd": "a b",
    }


def _msg(what: int, data: bytes) -> bytes:
    ev = struct.pack("=IIQ", what, 0, 123) + data
    cn = struct.pack("=IIIIHH", 1, 1, 0, 0, len(ev), 0) + ev
    body = struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn
    return body + b"\0" * (-len(body) % 4)


def test_parse_datagram_keeps_processes_and_leaves_threads_out():
    dg = b"".join(
        [
            _msg(0x1, struct.pack("=iiii", 10, 10, 11, 11)),  # fork of a process
            _msg(0x1, struct.pack("=iiii", 10, 10, 12, 10)),  # a new thread
            _msg(0x2, struct.pack("=ii", 11, 11)),
            _msg(0x80000000, struct.pack("=iiII", 12, 10, 0, 17)),  # a thread ends
            _msg(
                0x80000000, struct.pack("=iiIIii", 11, 11, 3 << 8, 17, 10, 10)
            ),  # newer kernels add the parent
            _msg(0x200, struct.pack("=ii", 11, 11) + b"comm\0".ljust(16, b"\0")),  # comm change: not wanted
            _msg(0x1, struct.pack("=ii", 1, 1)),  # cut short: ignored
        ]
    )
    assert parse_datagram(dg + b"\x01\x02", ts=5.0) == [
        ProcEvent("fork", 11, 11, 10, None, 5.0),
        ProcEvent("exec", 11, 11, None, None, 5.0),
        ProcEvent("exit", 11, 11, None, 3 << 8, 5.0),
    ]


# ---------------------------------------------------------------- the Recorder loop


class FakeConnector:
    def __init__(self, batches):
        self.batches = list(batches)
        self.overruns = 0
        self.closed = False

    def read(self, timeout, limit=None):
        if self.batches:
            batch = self.batches.pop(0)
            if batch is not None:
                return [e.apply() for e in batch]
        time.sleep(min(timeout, 0.01))
        return []

    def close(self):
        self.closed = True


def test_recorder_batches_records_to_the_sink_and_flushes_on_stop():
    w = machine()
    tr = w.tracker(rate=CommandRate(per_second=0))  # no cap
    _, shell, _ = login(w, tr, ["-bash"])
    events: list[Pending] = []
    for i in range(450):
        pid = w.pid()
        events += [w.fork(shell, pid), w.exec(pid, ["echo", str(i)])]
    conn = FakeConnector([events[:300], events[300:]])
    got: list[list[Record]] = []
    stop = threading.Event()
    # no batch by time here (a loaded machine reads the second chunk more than 0.2 s later): full
    # batches at once, the rest at the stop
    r = Recorder(w.where, got.append, connector=lambda: conn, tracker=tr, batch_seconds=60)
    t = threading.Thread(target=r.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 3
    while sum(map(len, got)) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(b) for b in got] == [200, 200]  # full batches go at once
    stop.set()
    t.join(3)
    assert not t.is_alive() and conn.closed
    assert [len(b) for b in got] == [200, 200, 50]  # the rest when stopping
    assert [x.argv[1] for b in got for x in b] == [str(i) for i in range(450)]


def test_recorder_reports_pending_drops_when_it_stops():
    w = machine()
    tr = w.tracker(rate=CommandRate(per_second=0.001, burst=1))
    _, shell, _ = login(w, tr, ["-bash"])
    events = []
    for _ in range(4):
        pid = w.pid()
        events += [w.fork(shell, pid), w.exec(pid, ["id"])]
    conn = FakeConnector([events])
    got: list[list[Record]] = []
    stop = threading.Event()
    r = Recorder(w.where, got.append, connector=lambda: conn, tracker=tr)
    t = threading.Thread(target=r.run, args=(stop,), daemon=True)
    t.start()
    time.sleep(0.1)
    stop.set()
    t.join(3)
    assert [(x.kind, x.count) for b in got for x in b] == [("command", None), ("command.dropped", 3)]


def test_a_slow_sink_does_not_hold_up_the_reading():
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    first, second = w.pid(), w.pid()
    conn = FakeConnector([[w.fork(shell, first), w.exec(first, ["id"])], None, [w.fork(shell, second)]])
    release = threading.Event()
    got: list[list[Record]] = []

    def sink(batch):
        got.append(batch)
        release.wait(3)  # the store is busy

    stop = threading.Event()
    r = Recorder(w.where, sink, connector=lambda: conn, tracker=tr, batch_seconds=0.01)
    t = threading.Thread(target=r.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 3
    while second not in tr._procs and time.monotonic() < deadline:
        time.sleep(0.01)
    read_meanwhile = second in tr._procs and not release.is_set()
    release.set()
    stop.set()
    t.join(3)
    assert read_meanwhile and [[x.kind for x in b] for b in got] == [["command"]]


def test_recorder_passes_on_a_connector_that_cannot_open():
    def broken():
        raise RangeError("no process events", fix="run as root")

    with pytest.raises(RangeError, match="no process events"):
        Recorder(lambda pid: None, lambda b: None, connector=broken).run(threading.Event())


def test_recorder_keeps_going_when_the_sink_fails():
    w = machine()
    tr = w.tracker()
    _, shell, _ = login(w, tr, ["-bash"])
    pid = w.pid()
    conn = FakeConnector([[w.fork(shell, pid), w.exec(pid, ["id"])], *[None] * 10, [w.exit(pid)]])
    calls = []

    def sink(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise OSError("disk full")

    stop = threading.Event()
    r = Recorder(w.where, sink, connector=lambda: conn, tracker=tr, batch_seconds=0.01)
    t = threading.Thread(target=r.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 3
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(3)
    assert [[x.kind for x in b] for b in calls] == [["command"], ["command.exit"]] and r.errors == 1


CID = "ab" * 32
CID2 = "cd" * 32


def test_the_tracker_takes_an_exec_as_the_reader_found_it_even_once_it_is_gone():
    """The reader's snapshot stands for /proc while its exec is fed: argv, cwd, parent and container."""
    w = machine()
    got: list[Record] = []
    seen: list[str] = []
    r = Recorder(
        w.where,
        got.extend,
        connector=lambda: conn,
        where_id={CID: WS, CID2: (2, "ws")}.get,
        seen=seen.append,
        info=w.info,
        parent_of=w.parent_of,
        stat_in=w.stat_in,
        live_threads=lambda pid: False,
        clock=lambda: w.t,
        batch_seconds=0.01,
    )
    _, shell, _ = login(w, r.tracker, ["-bash"])

    def gone(pid, snap):  # the exec as the reader saw it; by the time the tracker looks, the process is gone
        return Pending(ProcEvent("exec", pid, pid, None, None, w.t, snap), lambda: w.procs.pop(pid))

    kid = w.pid()
    cat = ProcInfo("cat", ["cat", "/etc/shadow"], "/tmp", "/usr/bin/cat")
    # a new session whose root was gone at once: its parent (sshd) still is, its container is the snapshot's
    mon, user, root = w.pid(), w.pid(), w.pid()
    bash = ProcInfo("bash", ["bash", "-c", "id"], "/root", "/usr/bin/bash")
    conn = FakeConnector(
        [
            [
                w.fork(shell, kid),
                gone(kid, Snapshot(CID, shell, cat)),
                Pending(ProcEvent("exit", kid, kid, None, 1 << 8, w.t), lambda: None),
            ],
            [w.fork(110, mon), w.exec(mon, ["/usr/sbin/sshd", "-D", "-R"]), w.fork(mon, user)],
            [w.fork(user, root), gone(root, Snapshot(CID2, user, bash))],
        ]
    )
    stop = threading.Event()
    t = threading.Thread(target=r.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 3
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(3)
    assert got == [
        command(shell, kid, w.t, ["cat", "/etc/shadow"], "cat /etc/shadow", cwd="/tmp"),
        exited(shell, kid, w.t, 1),
        session(root, w.t, ["bash", "-c", "id"], "id", at=(2, "ws")),  # where_id(CID2), not the parent's
    ]
    assert seen == [CID, CID2] and r.snapshots.current == {}


def test_snapshot_cache_answers_for_the_exec_being_fed_and_reads_the_rest_live():
    live = {7: ProcInfo("sshd", ["sshd: root"], "/", "/usr/sbin/sshd")}
    cache = SnapshotCache(
        lambda pid: ("live", pid),
        where_id=lambda cid: ("id", cid),
        info=live.get,
        parent_of=lambda pid: 1,
        comm_of=lambda pid: "live-comm",
    )
    cache.current[9] = Snapshot(CID, 7, ProcInfo("ls", ["ls"], "/root", "/usr/bin/ls"))
    cache.current[10] = Snapshot(None, None, None)  # read (every process), gone: no container, no parent
    assert (cache.info(9).argv, cache.parent_of(9), cache.comm_of(9), cache.where(9)) == (
        ["ls"],
        7,
        "ls",
        ("id", CID),
    )
    assert (cache.info(10), cache.parent_of(10), cache.comm_of(10), cache.where(10)) == (
        None,
        1,
        "live-comm",
        ("live", 10),
    )
    assert (cache.info(7).comm, cache.parent_of(7), cache.comm_of(7), cache.where(7)) == (
        "sshd",
        1,
        "live-comm",
        ("live", 7),
    )
    # without where_id the container is found live as before
    assert SnapshotCache(lambda pid: ("live", pid)).where(9) == ("live", 9)


def test_snapshot_reads_cgroup_first_and_the_rest_only_in_a_docker_container(tmp_path):
    for pid, cgroup in (
        (42, f"0::/system.slice/docker-{CID}.scope\n"),
        (43, "0::/user.slice/session-1.scope\n"),
    ):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "cgroup").write_text(cgroup)
        (d / "cmdline").write_bytes(b"cat\0/etc/shadow\0")
        (d / "comm").write_bytes(b"cat\n")
        (d / "status").write_text("Name:\tcat\nPPid:\t41\n")
        os.symlink("/root", d / "cwd")
        os.symlink("/usr/bin/cat", d / "exe")
    parent = tmp_path / "41"  # sshd's session process, child of 40 (not in the fake /proc: gone)
    parent.mkdir()
    (parent / "comm").write_bytes(b"sshd\n")
    (parent / "status").write_text("Name:\tsshd\nPPid:\t40\n")
    proc = str(tmp_path)
    cat = ProcInfo("cat", ["cat", "/etc/shadow"], "/root", "/usr/bin/cat")
    up = ((41, "sshd", 40), (40, None, None))  # the parent and grandparent as they were at the exec
    assert snapshot(42, proc=proc) == Snapshot(CID, 41, cat, up)
    assert snapshot(43, proc=proc) is None  # on the host: forwarded as it is, not read
    assert snapshot(43, everything=True, proc=proc) == Snapshot(None, 41, cat, up)
    assert snapshot(44, proc=proc) is None and snapshot(44, everything=True, proc=proc) is None  # gone
    (tmp_path / "42" / "cmdline").unlink()  # ended between the two reads: in a container, known gone
    (tmp_path / "42" / "comm").unlink()
    assert snapshot(42, proc=proc) == Snapshot(CID, 41, None, up)


def test_a_quick_session_whose_sshd_is_gone_is_still_a_session():
    """`ssh NODE CMD` with a short CMD: by the time the tracker sees the exec, sshd's session process
    (the parent) and CMD have ended; the reader's snapshot of the ancestry still makes it a session."""
    cache = SnapshotCache(
        lambda pid: (1, "gw"), info=lambda pid: None, parent_of=lambda pid: None, comm_of=lambda pid: None
    )
    info = ProcInfo("echo", ["/bin/echo", "remote"], "/root", "/usr/bin/echo")
    cache.current[300] = Snapshot(CID, 299, info, ((299, "sshd", 298), (298, "sshd", 200)))
    assert cache.parent_of(300) == 299 and cache.comm_of(299) == "sshd"
    assert cache.parent_of(299) == 298 and cache.comm_of(298) == "sshd"
    cache.current.clear()
    assert cache.comm_of(299) is None  # only while that exec is fed


class Logs:
    def __init__(self):
        self.lines: list[tuple[int, str]] = []

    def log(self, level, text):
        self.lines.append((level, text))


@pytest.mark.parametrize("allowed", ["fifo", "nice", "nothing"])
def test_the_reader_takes_fifo_else_nice_else_nothing_and_says_which(monkeypatch, allowed):
    calls = []

    def sched(pid, policy, param):
        if allowed != "fifo" and policy & 0xFF == os.SCHED_FIFO:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        calls.append((policy & 0xFF, param.sched_priority))

    def renice(which, who, prio):
        if allowed == "nothing":
            raise PermissionError(errno.EACCES, "Permission denied")
        calls.append(("nice", prio))

    monkeypatch.setattr(rec.os, "sched_setscheduler", sched)
    monkeypatch.setattr(rec.os, "setpriority", renice)
    said = rec._Priority(Logs()).raise_()
    assert (
        said
        == {
            "fifo": "SCHED_FIFO priority 5",
            "nice": "nice -10 (no SCHED_FIFO: Operation not permitted)",
            "nothing": "normal priority (no SCHED_FIFO: Operation not permitted; "
            "no nice -10: Permission denied)",
        }[allowed]
    )
    assert (
        calls
        == {
            "fifo": [("nice", -10), (os.SCHED_FIFO, 5)],
            "nice": [("nice", -10)],
            "nothing": [],
        }[allowed]
    )


def test_the_reader_leaves_fifo_during_a_flood_and_comes_back_when_calm(monkeypatch):
    policies = []
    monkeypatch.setattr(
        rec.os, "sched_setscheduler", lambda pid, policy, param: policies.append(policy & 0xFF)
    )
    monkeypatch.setattr(rec.os, "setpriority", lambda *a: None)
    now, cpu = [0.0], [0.0]
    out = Logs()
    p = rec._Priority(out, clock=lambda: now[0], cpu=lambda: cpu[0])
    p.raise_()

    def second(used):
        now[0] += 1.0
        cpu[0] += used
        p.tick()

    second(0.3)  # busy, not a flood
    assert p.rt and policies == [os.SCHED_FIFO]
    second(0.8)  # a flood: real-time would take a CPU from everyone else
    assert not p.rt and policies[-1] == os.SCHED_OTHER and out.lines[-1][0] == logging.WARNING
    for _ in range(rec.READER_RT_CALM_SECONDS - 1):
        second(0.1)
    second(0.3)  # not calm enough: counting starts again
    for _ in range(rec.READER_RT_CALM_SECONDS - 1):
        second(0.1)
    assert not p.rt
    second(0.1)
    assert p.rt and policies == [os.SCHED_FIFO, os.SCHED_OTHER, os.SCHED_FIFO]
    assert [lvl for lvl, _ in out.lines] == [logging.WARNING, logging.INFO]



@pytest.mark.parametrize("leaving", ["moves", "cannot"])
def test_a_reader_refused_fifo_may_leave_its_cpu_cgroup_and_try_again(monkeypatch, leaving):
    """The agent's reader (a container): SCHED_FIFO refused -> it leaves its cpu cgroup (none of the
    machine's real-time time there under RT group scheduling) and asks again; says what it did."""
    moved, calls = [], []

    def sched(pid, policy, param):
        if policy & 0xFF == os.SCHED_FIFO and not moved:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        calls.append(policy & 0xFF)

    def leave():
        calls.append("leave")
        if leaving == "cannot":
            return "cannot mount the cpu cgroup hierarchy: Operation not permitted"
        moved.append(1)
        return None

    monkeypatch.setattr(rec.os, "sched_setscheduler", sched)
    monkeypatch.setattr(rec.os, "setpriority", lambda *a: None)
    p = rec._Priority(Logs(), leave_cgroup=leave)
    said = p.raise_()
    if leaving == "moves":
        assert said == "SCHED_FIFO priority 5 (in the root cpu cgroup: its own had no real-time time)"
        assert calls == ["leave", os.SCHED_FIFO] and p.rt and p.may_rt
    else:
        assert said == (
            "nice -10 (no SCHED_FIFO: Operation not permitted; "
            "cannot mount the cpu cgroup hierarchy: Operation not permitted)"
        )
        assert calls == ["leave"] and not p.rt and not p.may_rt


def test_a_reader_allowed_fifo_stays_in_its_cgroup(monkeypatch):
    left = []
    monkeypatch.setattr(rec.os, "sched_setscheduler", lambda *a: None)
    monkeypatch.setattr(rec.os, "setpriority", lambda *a: None)
    said = rec._Priority(Logs(), leave_cgroup=lambda: left.append(1)).raise_()
    assert said == "SCHED_FIFO priority 5" and left == []


def test_the_cpu_hierarchy_is_found_in_a_cgroup_file():
    v1 = "12:pids:/docker/ab\n4:cpu,cpuacct:/docker/ab\n3:cpuset:/docker/ab\n0::/\n"
    assert rec.cpu_cgroup_v1(v1) == ("cpu,cpuacct", "/docker/ab")
    assert rec.cpu_cgroup_v1("3:cpuacct:/x\n2:cpu:/y/z\n") == ("cpu", "/y/z")  # cpuacct is not cpu
    assert rec.cpu_cgroup_v1("0::/system.slice/docker-ab.scope\n") is None  # cgroup v2 only
    assert rec.cpu_cgroup_v1("") is None


def _cpu_v1_root() -> str:
    found = rec.cpu_cgroup_v1(open("/proc/self/cgroup").read())
    root = "/sys/fs/cgroup/cpu"
    if found is None or os.geteuid() != 0 or not os.path.exists(f"{root}/cpu.rt_runtime_us"):
        pytest.skip("needs root and a cgroup-v1 cpu hierarchy with RT group scheduling at " + root)
    return root


def test_a_process_in_a_cgroup_without_real_time_time_gets_fifo_once_it_leaves_it():
    """The real kernel: a cpu cgroup with cpu.rt_runtime_us 0 (a container's) refuses SCHED_FIFO
    even to root; leave_cpu_cgroup moves the process to the hierarchy's root, where it is granted."""
    root = _cpu_v1_root()
    group = f"{root}/rangectl-test-{os.getpid()}"
    os.mkdir(group)
    child = subprocess.Popen(["sleep", "60"])
    try:
        with open(f"{group}/cgroup.procs", "w") as f:
            f.write(str(child.pid))
        with pytest.raises(PermissionError):  # the attack: no real-time time in that cgroup
            os.sched_setscheduler(child.pid, os.SCHED_FIFO, os.sched_param(5))
        assert rec.leave_cpu_cgroup(child.pid) is None
        assert rec.cpu_cgroup_v1(open(f"/proc/{child.pid}/cgroup").read())[1] == "/"
        os.sched_setscheduler(child.pid, os.SCHED_FIFO, os.sched_param(5))
        assert os.sched_getscheduler(child.pid) == os.SCHED_FIFO
        assert rec.leave_cpu_cgroup(child.pid) is None  # at the root already: nothing to do
        assert not [m for m in open("/proc/self/mounts") if "rangectl-cpu-" in m]  # its mount is gone
    finally:
        child.kill()
        child.wait()
        os.rmdir(group)


# ---------------------------------------------------------------- the real kernel


class FakeNetlink:
    """Stands for the netlink socket: hands out the datagrams given, then EAGAIN; ENOBUFS where None is."""

    def __init__(self, datagrams):
        self.datagrams = list(datagrams)
        self.sent: list[int] = []
        self.r, self.w = os.pipe()  # readable while datagrams are left, for poll()
        if self.datagrams:
            os.write(self.w, b"x")

    def fileno(self):
        return self.r

    def recv_into(self, buf):
        if not self.datagrams:
            raise BlockingIOError
        d = self.datagrams.pop(0)
        if d is None:
            raise OSError(errno.ENOBUFS, "No buffer space available")
        buf[: len(d)] = d
        return len(d)

    def setblocking(self, flag):
        pass

    def send(self, data):
        self.sent.append(struct.unpack_from("=I", data, 16 + 20)[0])  # the op: 1 LISTEN, 2 IGNORE

    def close(self):
        os.close(self.r)
        os.close(self.w)


def _ack(ack: int, err: int) -> bytes:
    ev = struct.pack("=IIQI", 0, 0, 0, err)
    cn = struct.pack("=IIIIHH", 1, 1, 77, ack, len(ev), 0) + ev
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def _bare(sock) -> ProcConnector:
    c = ProcConnector.__new__(ProcConnector)
    c.overruns, c._pending, c._buf, c._sock, c._nonces = 0, [], bytearray(rec.RECV_BYTES), sock, {1000}
    return c


def test_subscription_waits_for_its_own_answer_and_counts_overruns():
    fork = _msg(0x1, struct.pack("=iiii", 10, 10, 11, 11))
    # another listener's answer, an event, then ours: subscribed, the event kept for the first read
    c = _bare(FakeNetlink([_ack(5, 0), fork, _ack(1001, 0)]))
    c._await_ack(1.0)
    assert [e.kind for e in c.read(0)] == ["fork"]
    c.close()
    # ours says no
    c = _bare(FakeNetlink([_ack(1001, errno.EPERM)]))
    with pytest.raises(RangeError, match="refused process events: Operation not permitted"):
        c._await_ack(1.0)
    c.close()
    # no answer at all
    c = _bare(FakeNetlink([_ack(5, 0)]))
    with pytest.raises(RangeError, match="no answer from the kernel"):
        c._await_ack(0.05)
    c.close()
    # an overrun may have taken our answer: LISTEN again, and the answer to either will do
    sock = FakeNetlink([fork, None, fork])
    c = _bare(sock)
    with pytest.raises(RangeError, match="no answer from the kernel"):
        c._await_ack(0.05)
    assert sock.sent == [1] and len(c._nonces) == 2
    sock.datagrams.append(_ack(max(c._nonces - {1000}) + 1, 0))
    c._await_ack(0.05)
    c.close()
    assert sock.sent == [1, 2, 2]  # as many IGNOREs as LISTENs
    # overruns are counted and reading goes on
    c = _bare(FakeNetlink([None, fork, None, fork]))
    assert [e.pid for e in c.read(0, limit=2)] == [11] and c.overruns == 1
    assert [e.pid for e in c.read(0)] == [11] and c.overruns == 2
    c.close()
    assert c.read(0) == []  # closed: nothing more, no error


def _connector() -> ProcConnector:
    try:
        return ProcConnector()
    except RangeError as e:
        pytest.skip(f"the kernel's process events are not available here: {e}")


def _release(fifo: str) -> bool:
    """Let a program blocked opening ``fifo`` (its LD_PRELOAD) go on: True once done."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False  # no reader yet
    os.close(fd)
    return True


def test_proc_connector_reports_exec_and_exit_status_of_a_real_process_tree(tmp_path):
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    with _connector() as conn:
        # /bin/true waits in its loader (LD_PRELOAD is a FIFO) until its argv has been read
        sh = subprocess.Popen(["/bin/sh", "-c", f"LD_PRELOAD={fifo} /bin/true 2>/dev/null; exit 3"])
        kids: set[int] = set()
        execs: dict[int, list[str] | None] = {}
        exits: dict[int, int] = {}
        deadline = time.monotonic() + 5
        while sh.pid not in exits and time.monotonic() < deadline:
            for ev in conn.read(0.05):
                if ev.kind == "fork" and ev.ppid == sh.pid:
                    kids.add(ev.pid)
                elif ev.kind == "exec" and ev.pid in kids | {sh.pid}:
                    info = read_proc(ev.pid)
                    execs[ev.pid] = info.argv if info else None
                elif ev.kind == "exit" and ev.pid in kids | {sh.pid}:
                    exits[ev.pid] = ev.status
            if any(execs.get(k) for k in kids) or time.monotonic() > deadline - 1:
                _release(fifo)
        sh.wait(5)
    assert execs.get(sh.pid) == ["/bin/sh", "-c", f"LD_PRELOAD={fifo} /bin/true 2>/dev/null; exit 3"]
    (kid,) = kids
    assert execs.get(kid) == ["/bin/true"]
    assert exits == {kid: 0, sh.pid: 3}


SSHD_LIKE = """
import ctypes, subprocess, sys
ctypes.CDLL(None).prctl(15, b"sshd", 0, 0, 0)  # PR_SET_NAME: the parent's comm is now sshd
sys.exit(subprocess.call(["/bin/sh", "-c", sys.argv[1]]))
"""


def test_session_tracker_end_to_end_with_the_kernel_and_real_proc(tmp_path):
    gates = {"echo": str(tmp_path / "g1"), "false": str(tmp_path / "g2")}
    for g in gates.values():
        os.mkfifo(g)
    script = (
        f"LD_PRELOAD={gates['echo']} /bin/echo hi 2>/dev/null; "
        f"LD_PRELOAD={gates['false']} /bin/false 2>/dev/null; exit 5"
    )
    holder: list[int] = []

    def where(pid):  # the test's own subprocess tree stands for a watched container
        seen = 0
        while pid and seen < 64:
            if holder and pid == holder[0]:
                return (1, "ws")
            pid = read_ppid(pid)
            seen += 1
        return None

    tracker = SessionTracker(where)
    records: list[Record] = []
    released: set[str] = set()
    with _connector() as conn:
        p = subprocess.Popen(
            [sys.executable, "-c", SSHD_LIKE, script], stdout=subprocess.DEVNULL, cwd=tmp_path
        )
        holder.append(p.pid)
        deadline = time.monotonic() + 8
        done = False
        while not done and time.monotonic() < deadline:
            for ev in conn.read(0.05):
                records.extend(tracker.feed(ev))
                done = done or (ev.kind == "exit" and ev.pid == p.pid)
            for name, g in gates.items():
                seen = any(r.kind == "command" and r.argv and r.argv[0] == f"/bin/{name}" for r in records)
                if name not in released and (seen or time.monotonic() > deadline - 2) and _release(g):
                    released.add(name)
        p.wait(5)
    mine = [r for r in records if r.session is not None]
    assert mine, records
    start = mine[0]
    assert (start.kind, start.team, start.node, start.argv, start.cmd, start.via, start.cwd) == (
        "session",
        1,
        "ws",
        ["/bin/sh", "-c", script],
        script,
        "ssh",
        str(tmp_path),
    )
    sh = start.pid
    assert start.session == sh
    got = [(r.kind, r.argv, r.cmd, r.status, r.unread) for r in mine[1:]]
    assert got == [
        ("command", ["/bin/echo", "hi"], "/bin/echo hi", None, None),
        ("command.exit", None, None, 0, None),
        ("command", ["/bin/false"], "/bin/false", None, None),
        ("command.exit", None, None, 1, None),
        ("command.exit", None, None, 5, None),  # the session's sh -c
    ]
    assert all(r.session == sh and r.cwd in (None, str(tmp_path)) for r in mine)
    assert mine[-1].pid == sh
    assert tracker.tracked == 0


def _reader(**kw) -> ReaderProcess:
    try:
        return ReaderProcess(**kw)
    except RangeError as e:
        pytest.skip(f"the kernel's process events are not available here: {e}")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("everything", [True, False])
def test_reader_process_sends_each_exec_with_what_proc_said_then(everything):
    with _reader(everything=everything) as r:
        assert r.priority and r.pid != os.getpid()
        p = subprocess.Popen(["/bin/echo", "snap"], stdout=subprocess.DEVNULL, cwd="/")
        p.wait(5)
        events = [ev for ev in r.finish() if ev.pid == p.pid]  # the reader sends what it holds, then ends
        assert r.proc.wait(5) == 0
    assert [(ev.kind, ev.ppid, ev.status) for ev in events] == [
        ("fork", os.getpid(), None),
        ("exec", None, None),
        ("exit", None, 0),
    ]
    snap = events[1].snap
    here = container_id_of(os.getpid())
    if everything or here is not None:
        me = os.getpid()
        assert snap == Snapshot(
            here, me, ProcInfo("echo", ["/bin/echo", "snap"], "/", "/usr/bin/echo"),
            ((me, read_comm(me), read_ppid(me)), (read_ppid(me), read_comm(read_ppid(me)), read_ppid(read_ppid(me)))),
        )  # fmt: skip
    else:  # on the host, not in a container: passed on as it is
        assert snap is None


@pytest.mark.parametrize("how", ["the pipe closed", "the parent killed, its pipe held open elsewhere"])
def test_the_reader_process_ends_with_its_parent(how):
    if how == "the pipe closed":
        r = _reader()
        r.proc.stdin.close()
        assert r.proc.wait(5) == 0
        r.close()
        return
    code = (
        "import os, signal, subprocess\n"
        "from rangectl.access.recorder import ReaderProcess\n"
        "from rangectl.errors import RangeError\n"
        "try:\n    r = ReaderProcess()\n"
        "except RangeError as e:\n    print('SKIP', e, flush=True)\n    raise SystemExit\n"
        "# sleep holds both ends of the reader's pipes: no end of input, no EPIPE, only PR_SET_PDEATHSIG\n"
        "fds = [r.proc.stdin.fileno(), r.proc.stdout.fileno()]\n"
        "h = subprocess.Popen(['sleep', '60'], pass_fds=fds, stdout=subprocess.DEVNULL)\n"
        "print(r.pid, h.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    out = parent.stdout.readline()
    assert parent.wait(30) == (0 if out.startswith("SKIP") else -signal.SIGKILL)
    parent.stdout.close()
    if out.startswith("SKIP"):
        pytest.skip(out)
    reader, holder = map(int, out.split())
    try:
        deadline = time.monotonic() + 5
        while not _gone(reader) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _gone(reader)
        assert not _gone(holder)  # the pipe was still open
    finally:
        os.kill(holder, signal.SIGKILL)


def test_reader_process_outside_the_hosts_user_namespace_gives_the_connectors_one_line_error():
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    code = (
        "from rangectl.access.recorder import ProcConnector, ReaderProcess\n"
        "from rangectl.errors import RangeError\n"
        "for make in (ProcConnector, ReaderProcess):\n"
        "    try:\n        make()\n    except RangeError as e:\n        print('RANGEERROR', e)\n"
        "    else:\n        print('OPENED')\n"
    )
    r = subprocess.run(
        ["unshare", "-U", "-r", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    if r.returncode != 0 or not r.stdout.strip():
        pytest.skip(f"cannot make a user namespace here: {r.stderr.strip()[:200]}")
    connector, reader = r.stdout.strip().split("\n")
    assert connector.startswith("RANGEERROR ") and "(fix: " in connector, connector
    assert reader == connector


def _in_tree(holder: list[int]):
    """where(): the test's own subprocess tree (under holder[0]) stands for a watched container."""

    def where(pid):
        seen = 0
        while pid and seen < 64:
            if holder and pid == holder[0]:
                return (1, "ws")
            pid = read_ppid(pid)
            seen += 1
        return None

    return where


SHORT_COMMANDS = 50
SHORT_READ_AT_LEAST = 45  # measured on 2 busy CPUs: 999 of 1000 at SCHED_FIFO (447 at nice -10, 356 without)


def test_short_commands_are_read_while_every_cpu_is_busy(tmp_path):
    """50 `/bin/echo N` in a session, each over before a shell would notice, with every CPU burning."""
    script = f"i=0; while [ $i -lt {SHORT_COMMANDS} ]; do /bin/echo $i; i=$((i+1)); done; exit 4"
    holder: list[int] = []
    records: list[Record] = []
    box: dict[str, object] = {}

    def connector():
        box["reader"] = reader = ReaderProcess(everything=True)  # the test's processes are on the host
        return reader

    r = Recorder(_in_tree(holder), records.extend, connector=connector, batch_seconds=0.05)
    stop, ready = threading.Event(), threading.Event()

    def run():
        try:
            r.run(stop, ready)
        except RangeError as e:
            box["error"] = e
        finally:
            ready.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(20)
    if "error" in box:
        pytest.skip(f"the kernel's process events are not available here: {box['error']}")
    assert r.reader_pid == box["reader"].pid
    if not box["reader"].priority.startswith("SCHED_FIFO"):
        stop.set()
        t.join(10)
        pytest.skip(f"the reader could not be real-time here ({box['reader'].priority})")
    burners = [
        subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(min(os.cpu_count() or 2, 8))
    ]
    try:
        time.sleep(0.3)
        p = subprocess.Popen(
            [sys.executable, "-c", SSHD_LIKE, script], stdout=subprocess.DEVNULL, cwd=tmp_path
        )
        holder.append(p.pid)
        assert p.wait(60) == 4
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            x.kind == "command.exit" and x.status == 4 for x in records
        ):
            time.sleep(0.05)
    finally:
        for b in burners:
            b.kill()
            b.wait()
        stop.set()
        t.join(10)
    mine = [x for x in records if x.session is not None]
    assert mine and mine[0].kind == "session" and mine[0].cmd == script
    echos = [x for x in mine if x.kind == "command"]
    assert len(echos) == SHORT_COMMANDS and all(x.argv[0] in ("/bin/echo", "echo", "?") for x in echos)
    read = [x.argv for x in echos if not x.unread]
    assert len(read) >= SHORT_READ_AT_LEAST, f"only {len(read)} of {SHORT_COMMANDS} read"
    assert all(argv == ["/bin/echo", str(int(argv[1]))] for argv in read)
