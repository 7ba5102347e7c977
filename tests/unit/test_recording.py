"""The recorder in serve: the node map kept off the reading path, the reader's failures, the record."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from rangectl.access.recorder import ProcEvent, ProcInfo, ReaderGone, Snapshot
from rangectl.access.recording import NodeMap, Recording
from rangectl.backend.base import NodeInfo
from rangectl.errors import RangeError
from rangectl.store import EventStore

A, B, OTHER = "a" * 64, "b" * 64, "c" * 64
FAKE_PID = 1 << 22  # above PID_MAX_LIMIT: no real process has it


def node(team: int, name: str, cid: str) -> NodeInfo:
    return NodeInfo("r", team, name, None, f"rc-r.t{team}.{name}", cid, "running", "img")


class FakeBackend:
    """The engine's node list (or an exception to raise), slow when asked to be; calls are timed."""

    def __init__(self, *nodes: NodeInfo, delay: float = 0.0):
        self.list: list[NodeInfo] | Exception = list(nodes)
        self.delay = delay
        self.calls: list[float] = []

    def nodes(self, range_name: str) -> list[NodeInfo]:
        assert range_name == "r"
        self.calls.append(time.monotonic())
        time.sleep(self.delay)
        if isinstance(self.list, Exception):
            raise self.list
        return list(self.list)


def _until(cond, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---------------------------------------------------------------- the node map


def test_a_node_made_after_start_is_mapped_within_a_second_or_two_and_seen_never_waits():
    be = FakeBackend(node(1, "ws", A), delay=0.3)  # a slow engine
    m = NodeMap("r", be)
    try:
        m.refresh()
        assert m.lookup(A) == (1, "ws") and len(be.calls) == 1
        be.list.append(node(1, "edge", B))  # a node reset: a new container
        t0 = time.monotonic()
        m.seen(B)  # its first process exec'd: the recorder says so, and goes on at once
        m.seen(B)
        assert time.monotonic() - t0 < 0.05
        assert _until(lambda: m.lookup(B, wait=0) == (1, "edge"), 3.0)
        assert time.monotonic() - t0 < 2.0 and len(be.calls) == 2
    finally:
        m.close()


def test_lookup_waits_for_a_list_once_and_a_foreign_container_is_answered_at_once():
    be = FakeBackend(node(1, "ws", A), delay=0.05)
    m = NodeMap("r", be, interval=0.1)
    try:
        m.refresh()
        be.list.append(node(2, "ws", B))
        assert m.lookup(B) == (2, "ws")  # it waited for the list asked for when B showed up
        calls = len(be.calls)
        assert m.lookup(OTHER) is None and len(be.calls) == calls + 1  # another range's: one list says so
        t0 = time.monotonic()
        assert m.lookup(OTHER) is None and m.where(os.getpid()) is None
        m.seen(OTHER)
        assert time.monotonic() - t0 < 0.05
        time.sleep(0.3)
        assert len(be.calls) == calls + 1  # no more lists for it
    finally:
        m.close()


def test_unknown_containers_bring_at_most_one_list_a_second():
    be = FakeBackend(node(1, "ws", A))
    m = NodeMap("r", be)
    try:
        m.refresh()
        for i in range(50):  # a burst of containers not this range's
            m.seen(f"{i:064x}")
            time.sleep(0.01)
        time.sleep(1.0)
        assert len(be.calls) == 2 and be.calls[1] - be.calls[0] >= 0.99
        assert m.lookup(f"{7:064x}", wait=0.5) is None and len(be.calls) == 2
    finally:
        m.close()


def test_a_failed_list_keeps_the_map_and_is_tried_again():
    be = FakeBackend(node(1, "ws", A))
    m = NodeMap("r", be, interval=0.1)
    try:
        m.refresh()
        be.list = RuntimeError("the engine is busy")
        assert m.lookup(B, wait=0.3) is None
        assert m.lookup(A) == (1, "ws")
        be.list = [node(1, "ws", A), node(1, "edge", B)]
        assert m.lookup(B, wait=2.0) == (1, "edge")
    finally:
        m.close()


# ---------------------------------------------------------------- Recording


def _state(tmp_path):
    EventStore(tmp_path / "range.db").close()
    return SimpleNamespace(name="r", db_path=tmp_path / "range.db")


def test_a_reader_that_cannot_start_is_an_error_and_a_note(tmp_path):
    notes: list[str] = []

    def broken():
        raise RangeError(
            "cannot listen to the kernel's process events: Operation not permitted", fix="run as root"
        )

    rec = Recording(_state(tmp_path), FakeBackend(), notes.append, connector=broken)
    rec.start()  # returns once the reader listens or has failed: here, failed
    assert isinstance(rec.error, RangeError)
    assert notes == [
        "commands are NOT recorded: cannot listen to the kernel's process events: Operation not permitted "
        "(fix: run as root)"
    ]
    rec.close()
    assert not rec.thread.is_alive()


class QueueConnector:
    """Events put by the test; ReaderGone once ``gone`` is put."""

    def __init__(self):
        self.q: queue.Queue[list[ProcEvent] | str] = queue.Queue()
        self.overruns = 0
        self.closed = False

    def read(self, timeout, limit=None):
        try:
            got = self.q.get(timeout=timeout)
        except queue.Empty:
            return []
        if got == "gone":
            raise ReaderGone("the reader process 12345 ended (killed by signal 9)")
        return got

    def close(self):
        self.closed = True


def test_a_reader_that_dies_later_is_said_and_serving_goes_on(tmp_path):
    notes: list[str] = []
    conn = QueueConnector()
    rec = Recording(_state(tmp_path), FakeBackend(), notes.append, connector=lambda: conn)
    rec.start()
    assert rec.error is None and notes == []
    conn.q.put("gone")
    assert _until(lambda: notes, 3.0)
    assert notes == ["the command recorder stopped: the reader process 12345 ended (killed by signal 9)"]
    assert conn.closed and isinstance(rec.error, ReaderGone)
    rec.close()


def test_the_real_reader_in_a_user_namespace_is_one_line_saying_commands_are_not_recorded(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    code = (
        "import sys\n"
        "from types import SimpleNamespace\n"
        "from rangectl.access.recording import Recording\n"
        "from rangectl.store import EventStore\n"
        "class Backend:\n    def nodes(self, name):\n        return []\n"
        f"EventStore({str(tmp_path / 'range.db')!r}).close()\n"
        f"state = SimpleNamespace(name='r', db_path={str(tmp_path / 'range.db')!r})\n"
        "notes = []\n"
        "rec = Recording(state, Backend(), notes.append)\n"
        "rec.start()\n"
        "print(type(rec.error).__name__)\n"
        "print('\\n'.join(notes))\n"
        "rec.close()\n"
    )
    r = subprocess.run(
        ["unshare", "-U", "-r", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    if r.returncode != 0 or not r.stdout.strip():
        pytest.skip(f"cannot make a user namespace here: {r.stderr.strip()[-300:]}")
    kind, *notes = r.stdout.strip().split("\n")
    assert kind == "RangeError"
    assert len(notes) == 1 and notes[0].startswith("commands are NOT recorded: "), notes
    assert "(fix: " in notes[0]


def test_a_session_in_a_node_made_after_start_is_stored_from_the_readers_snapshots(tmp_path):
    """The reader's snapshots (every process already gone) and the node list read off the path."""
    sshd = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ctypes, time; ctypes.CDLL(None).prctl(15, b'sshd', 0, 0, 0); print(flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        sshd.stdout.readline()  # its comm is sshd now: the parent of what it starts
        state = _state(tmp_path)
        be = FakeBackend(node(1, "ws", A))
        conn = QueueConnector()
        notes: list[str] = []
        rec = Recording(state, be, notes.append, connector=lambda: conn)
        rec.start()
        be.list.append(node(1, "edge", B))  # reset after serve started
        root, kid, ts = FAKE_PID + 1, FAKE_PID + 2, time.time()
        bash = ProcInfo("bash", ["-bash"], "/root", "/usr/bin/bash")
        cat = ProcInfo("cat", ["cat", "/etc/shadow"], "/root", "/usr/bin/cat")
        conn.q.put(
            [
                ProcEvent("exec", root, root, None, None, ts, Snapshot(B, sshd.pid, bash)),
                ProcEvent("fork", kid, kid, root, None, ts),
                ProcEvent("exec", kid, kid, None, None, ts, Snapshot(B, root, cat)),
                ProcEvent("exit", kid, kid, None, 1 << 8, ts),
            ]
        )
        with EventStore(state.db_path) as store:
            assert _until(lambda: len(store.events(kind=["session", "command", "command.exit"])) == 3, 5.0)
        rec.close()
        assert notes == [] and rec.error is None
        with EventStore(state.db_path) as store:
            got = [(e.kind, e.team, e.actor, e.data.get("node"), e.data.get("cmd"), e.data.get("status"))
                   for e in store.events(kind=["session", "command", "command.exit"])]  # fmt: skip
        assert got == [
            ("session", 1, "recorder", "edge", "-bash", None),
            ("command", 1, "recorder", "edge", "cat /etc/shadow", None),
            ("command.exit", 1, "recorder", "edge", None, 1),
        ]
    finally:
        sshd.kill()
        sshd.wait()
        sshd.stdout.close()
