"""Recording commands on engines of other machines (the swarm backend): the agent's side of the
node list (RangeNodes) and the controller's side of the record streams (RemoteRecording), with no
engine: a fake agent stream that speaks the agent's lines."""

from __future__ import annotations

import json
import socket
import threading
import time
from types import SimpleNamespace

from rangectl.access import agent_record
from rangectl.access.agent_record import RangeNodes
from rangectl.access.recording import RemoteRecording
from rangectl.backend.base import NodeInfo
from rangectl.errors import RangeError

A, B, C = "a" * 64, "b" * 64, "c" * 64


# -- the agent's node list -----------------------------------------------------------------------


def test_a_known_container_is_answered_at_once_and_nothing_is_asked():
    asked: list[str] = []
    nodes = RangeNodes({A: [1, "soc"]}, asked.append)
    assert nodes.lookup(A) == (1, "soc") and nodes.lookup(None) is None
    nodes.seen(A)
    assert asked == []


def test_an_unknown_container_is_asked_for_and_found_in_the_list_sent_back():
    nodes = RangeNodes({A: [1, "soc"]}, lambda cid: threading.Timer(0.1, nodes.update, [{A: [1, "soc"], B: [2, "gw"]}]).start())
    t0 = time.monotonic()
    assert nodes.lookup(B) == (2, "gw")
    assert time.monotonic() - t0 < 1.0  # it waited for the list, not for its deadline


def test_a_container_missing_from_a_later_list_is_not_the_ranges_and_is_not_asked_again(monkeypatch):
    asked: list[str] = []

    def ask(cid):
        asked.append(cid)
        threading.Timer(0.05, nodes.update, [{A: [1, "soc"]}]).start()

    nodes = RangeNodes({A: [1, "soc"]}, ask)
    assert nodes.lookup(C) is None
    t0 = time.monotonic()
    for _ in range(50):
        assert nodes.lookup(C) is None
        nodes.seen(C)
    assert time.monotonic() - t0 < 0.2 and asked == [C]


def test_asking_is_rate_limited_and_a_lookup_gives_up_after_its_wait(monkeypatch):
    monkeypatch.setattr(agent_record, "UNKNOWN_WAIT_SECONDS", 0.2)
    asked: list[str] = []
    nodes = RangeNodes({}, asked.append)  # a controller that never answers
    t0 = time.monotonic()
    assert nodes.lookup(B) is None
    assert 0.15 < time.monotonic() - t0 < 1.0
    nodes.seen(B)
    assert asked == [B]  # within UNKNOWN_ASK_SECONDS: asked once
    nodes.close()
    assert nodes.lookup(C) is None


# -- the controller's side -----------------------------------------------------------------------


class FakeStream:
    """An agent's record stream: the lines given, then (once shut down) the last ones and the end."""

    def __init__(self, lines: list[dict], last: list[dict]):
        self._lines = list(lines)
        self._last = list(last)
        self.sent: list[dict] = []
        self.shut = threading.Event()
        self.closed = False

    def read_line(self):
        if self._lines:
            return self._lines.pop(0)
        self.shut.wait(10)
        return self._last.pop(0) if self._last else None

    def sendall(self, data: bytes) -> None:
        self.sent.append(json.loads(data))

    def shutdown(self, how):
        assert how == socket.SHUT_WR
        self.shut.set()

    def close(self):
        self.closed = True


class FakeAgent:
    def __init__(self, stream=None, error=None):
        self.stream, self.error, self.nodes = stream, error, None

    def session(self, fn, nodes):
        assert fn is agent_record.record
        if self.error:
            raise RangeError(self.error)
        self.nodes = nodes
        return self.stream


class Listing:
    name = "fake"

    def __init__(self):
        self.calls = 0

    def nodes(self, range_name):
        self.calls += 1
        return [NodeInfo(range=range_name, team=t, node=n, role=None, name=f"rc-{t}-{n}", id=cid, state="running",
                         image="", addresses={}) for cid, (t, n) in {A: (1, "soc"), B: (2, "gw")}.items()]  # fmt: skip


def rec(kind, team, node, cmd=None):
    return {"kind": kind, "ts": time.time(), "team": team, "node": node, **({"cmd": cmd} if cmd else {})}


def test_each_engines_records_are_stored_and_the_list_is_sent_again_when_asked():
    one = FakeStream([{"records": [rec("session", 1, "soc")]}, {"unknown": B},
                      {"records": [rec("command", 1, "soc", "id")]}],
                     last=[{"records": [rec("command", 2, "gw", "held-until-stop")]}])  # fmt: skip
    two = FakeStream([], last=[])
    got: list[dict] = []
    notes: list[str] = []
    backend = Listing()
    r = RemoteRecording(SimpleNamespace(name="lab"), backend, notes.append, sink=got.extend,
                        agents=[("e2", FakeAgent(one)), ("e3", FakeAgent(two)), ("e4", FakeAgent(error="no proc connector"))])  # fmt: skip
    r.start()
    assert set(r.streams) == {"e2", "e3"} and r.errors == {"e4": "no proc connector"}
    assert any("engine e4 are NOT recorded: no proc connector" in n for n in notes)
    deadline = time.monotonic() + 5
    while not one.sent:  # the unknown container made it list the nodes again and send them
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert one.sent[0] == {"nodes": {A: [1, "soc"], B: [2, "gw"]}} and backend.calls >= 2
    r.close()
    assert one.shut.is_set() and two.shut.is_set() and one.closed and two.closed
    assert [x.get("cmd") for x in got] == [None, "id", "held-until-stop"]  # what the agent held at the stop too
    assert r.records == 3


def test_an_engines_recorder_that_stops_says_so():
    s = FakeStream([{"error": {"type": "x", "message": "reader died"}}], last=[])
    notes: list[str] = []
    r = RemoteRecording(SimpleNamespace(name="lab"), Listing(), notes.append, sink=lambda x: None,
                        agents=[("e2", FakeAgent(s))])  # fmt: skip
    r.start()
    deadline = time.monotonic() + 5
    while "e2" not in r.errors:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "the command recorder on engine e2 stopped: reader died" in notes
    r.close()


def test_no_engine_elsewhere_starts_nothing():
    r = RemoteRecording(SimpleNamespace(name="lab"), Listing(), print, sink=lambda x: None, agents=[])
    r.start()
    assert r.streams == {} and r.nodes.refreshes == 0
    r.close()


# -- which engines record through their agents ---------------------------------------------------


def test_engines_on_another_kernel_record_through_their_agents(monkeypatch):
    from rangectl.backend import swarm
    from rangectl.backend.hostops import LOCAL, op_boot_id

    class BootAgent:
        def __init__(self, boot):
            self.boot = boot

        def call(self, fn):
            assert fn is op_boot_id
            return self.boot

    here = LOCAL.boot_id()
    assert len(here) == 36
    boots = {"e1": here, "e2": "0" * 36, "e3": "1" * 36}
    engines = [SimpleNamespace(name=n, agent=lambda rng, n=n: BootAgent(boots[n])) for n in ("e1", "e2", "e3")]
    be = swarm.SwarmBackend.__new__(swarm.SwarmBackend)
    monkeypatch.setattr(be, "engines", lambda: engines, raising=False)
    monkeypatch.setattr(be, "_holds", lambda e, rng: e.name != "e3", raising=False)  # e3 holds none of it
    monkeypatch.delenv("RANGECTL_RECORD_VIA_AGENT", raising=False)
    assert [n for n, _ in be.recording_agents("lab")] == ["e2"]  # e1 shares this kernel
    monkeypatch.setenv("RANGECTL_RECORD_VIA_AGENT", "1")
    assert [n for n, _ in be.recording_agents("lab")] == ["e1", "e2"]


class OneWriterStream(FakeStream):
    """A stream that fails the test if two threads write at once (lines would interleave)."""

    def __init__(self, lines):
        super().__init__(lines, last=[])
        self._writing = threading.Lock()
        self.overlaps = 0

    def sendall(self, data: bytes) -> None:
        if not self._writing.acquire(blocking=False):
            self.overlaps += 1
            return
        try:
            time.sleep(0.05)
            super().sendall(data)
        finally:
            self._writing.release()


def test_many_unknown_containers_at_once_never_interleave_the_node_lists():
    """An engine that meets 30 unknown containers in a burst: the node list goes out one at a
    time (an agent reading interleaved lines would get garbage), and a list read after the last
    ask goes out."""
    s = OneWriterStream([{"unknown": f"{i:064x}"} for i in range(30)])
    backend = Listing()
    r = RemoteRecording(SimpleNamespace(name="lab"), backend, print, sink=lambda x: None, agents=[("e2", FakeAgent(s))])
    r.start()
    deadline = time.monotonic() + 5
    while not s.sent or r._sending:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    r.close()
    assert s.overlaps == 0
    assert 1 <= len(s.sent) < 30  # asks that came while a list was on its way share the next one
    assert s.sent[-1] == {"nodes": {A: [1, "soc"], B: [2, "gw"]}}


class LostStream(FakeStream):
    """An engine that stopped answering: its lines, then the end, without being asked to stop."""

    def read_line(self):
        return self._lines.pop(0) if self._lines else None


class ComingBackAgent(FakeAgent):
    """The first stream is lost with its engine; the engine refuses twice more, then answers again."""

    def __init__(self, streams):
        super().__init__()
        self.streams, self.asked = list(streams), 0

    def session(self, fn, nodes):
        self.asked += 1
        if self.asked in (2, 3):
            raise RangeError("rangectl's agent on engine e2 does not answer")
        return self.streams.pop(0)


def test_an_engine_that_comes_back_is_recorded_again(monkeypatch):
    from rangectl.access import recording

    monkeypatch.setattr(recording, "RESUME_SECONDS", 0.05)
    lost = LostStream([{"records": [rec("command", 1, "soc", "before")]}], last=[])
    back = FakeStream([{"records": [rec("command", 1, "soc", "after")]}], last=[{"records": [rec("command", 1, "soc", "held")]}])
    agent = ComingBackAgent([lost, back])
    got: list[dict] = []
    notes: list[str] = []
    r = RemoteRecording(SimpleNamespace(name="lab"), Listing(), notes.append, sink=got.extend, agents=[("e2", agent)])
    r.start()
    deadline = time.monotonic() + 5
    while len(got) < 2:
        assert time.monotonic() < deadline, (got, notes)
        time.sleep(0.02)
    assert agent.asked == 4 and r.streams["e2"] is back
    r.close()
    assert back.shut.is_set() and lost.closed and back.closed
    assert [x["cmd"] for x in got] == ["before", "after", "held"]
    assert "the command recorder on engine e2 is gone (the engine stopped answering): asking again" in notes
    assert notes[-1] == "the command recorder on engine e2 is back"


def test_a_recorder_that_failed_is_not_asked_again(monkeypatch):
    from rangectl.access import recording

    monkeypatch.setattr(recording, "RESUME_SECONDS", 0.01)
    failed = LostStream([{"error": {"type": "x", "message": "reader died"}}], last=[])
    agent = ComingBackAgent([failed, FakeStream([], last=[])])
    r = RemoteRecording(SimpleNamespace(name="lab"), Listing(), print, sink=lambda x: None, agents=[("e2", agent)])
    r.start()
    time.sleep(0.3)
    r.close()
    assert agent.asked == 1 and r.errors == {"e2": "reader died"}
