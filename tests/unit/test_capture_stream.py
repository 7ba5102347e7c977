"""The drill's capture of a team on an engine of another machine: that engine streams pcap bytes
(Backend.capture_stream), a local tcpdump writes them into the team's rotated files, and stopping
the drill ends the engine's side first so what it held still arrives. Real tcpdump, no engine."""

from __future__ import annotations

import shutil
import socket
import struct
import threading
import time
from types import SimpleNamespace

import pytest

from rangectl.drill.capture import Captures, capture_files
from rangectl.errors import RangeError
from rangectl.store import EventStore

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")

FRAMES = 3000


def pcap(frames: int, marker: bytes) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 512, 1)]
    for i in range(frames):
        frame = b"\x02" * 12 + b"\x08\x00" + marker + i.to_bytes(4, "big") + bytes(300)
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    return b"".join(out)


class EngineStream:
    """What the agent sends: the pcap in chunks, the last part only once the capture is stopped."""

    def __init__(self, data: bytes):
        self.head, self.tail = data[: len(data) // 2], data[len(data) // 2 :]
        self.stopped = threading.Event()
        self.closed = False
        self._sent_head = False
        self._sent_tail = False

    def recv(self, n: int = 65536) -> bytes:
        if not self._sent_head:
            self._sent_head = True
            return self.head
        self.stopped.wait(30)
        if not self._sent_tail:
            self._sent_tail = True
            return self.tail
        return b""

    def shutdown(self, how: int) -> None:
        assert how == socket.SHUT_WR
        self.stopped.set()

    def close(self) -> None:
        self.closed = True
        self.stopped.set()


class RemoteEngine:
    name = "remote"

    def __init__(self, fail_team: int | None = None):
        self.streams: dict[tuple[int, str], EngineStream] = {}
        self.fail_team = fail_team

    def capture_interfaces(self, range_name, team):
        return {"dmz": f"rc{team}dmz", "wan": f"rc{team}wan"}

    def capture_stream(self, range_name, team, iface, snaplen):
        if team == self.fail_team:
            raise RangeError(f"rangectl's agent on engine e{team} does not answer")
        s = self.streams[(team, iface)] = EngineStream(pcap(FRAMES, f"<{range_name}:{team}:{iface}>".encode()))
        return s


def test_a_remote_teams_capture_is_written_here_rotated_and_complete(tmp_path):
    state = SimpleNamespace(name="lab", dir=tmp_path)
    engine = RemoteEngine(fail_team=2)
    store = EventStore(tmp_path / "events.db")
    caps = Captures(state, engine, [1, 2], file_mb=1, files=3)
    caps.start(store)
    caps.stop(store)
    # the engine's side was ended (not dropped) before the local writer finished
    assert all(s.stopped.is_set() and s.closed for s in engine.streams.values())
    files = capture_files(state, 1)
    dmz = [f for f in files if f.name.startswith("dmz.pcap")]
    assert len(dmz) == 2  # ~1.0 MB of frames: rotated at 1 MB
    data = b"".join(f.read_bytes() for f in dmz)
    marker = b"<lab:1:rc1dmz>"
    seen = {int.from_bytes(data[i + len(marker) : i + len(marker) + 4], "big") for i in _find_all(data, marker)}
    assert seen == set(range(FRAMES))  # every frame, the ones sent after the stop included
    assert b"<lab:1:rc1wan>" not in data
    starts = {(e.team, e.data.get("network")): e.data for e in store.events("capture.start")}
    assert starts[(1, "dmz")]["ok"] and starts[(1, "dmz")]["remote"]
    assert not starts[(2, "dmz")]["ok"] and "does not answer" in starts[(2, "dmz")]["error"]
    stops = {(e.team, e.data["network"]): e.data for e in store.events("capture.stop")}
    assert stops[(1, "dmz")]["exit"] == 0 and len(stops[(1, "dmz")]["files"]) == 2
    assert (2, "dmz") not in stops


def _find_all(data: bytes, needle: bytes):
    i = data.find(needle)
    while i >= 0:
        yield i
        i = data.find(needle, i + 1)


class LostStream(EngineStream):
    """An engine that stops answering: half the pcap, then the connection ends (no stop asked)."""

    def recv(self, n: int = 65536) -> bytes:
        if not self._sent_head:
            self._sent_head = True
            return self.head
        return b""


class ComingBack(RemoteEngine):
    """Team 1's dmz stream is lost mid-drill; the engine refuses twice more, then answers again."""

    def __init__(self):
        super().__init__()
        self.asked: list[int] = []

    def capture_interfaces(self, range_name, team):
        return {"dmz": f"rc{team}dmz"}

    def capture_stream(self, range_name, team, iface, snaplen):
        self.asked.append(team)
        n = len(self.asked)
        if n == 1:
            s = self.streams[(team, "lost")] = LostStream(pcap(FRAMES, b"<before>"))
            return s
        if n <= 3:
            raise RangeError("rangectl's agent on engine e1 does not answer")
        s = self.streams[(team, "back")] = EngineStream(pcap(FRAMES, b"<after!>"))
        return s


def _frames(files, marker: bytes) -> set[int]:
    data = b"".join(f.read_bytes() for f in files)
    return {int.from_bytes(data[i + len(marker) : i + len(marker) + 4], "big") for i in _find_all(data, marker)}


def test_a_capture_whose_engine_went_away_is_recorded_lost_and_resumed_in_files_of_its_own(tmp_path):
    state = SimpleNamespace(name="lab", dir=tmp_path)
    engine = ComingBack()
    store = EventStore(tmp_path / "events.db")
    caps = Captures(state, engine, [1], file_mb=4, files=2, resume_seconds=0.05)
    caps.start(store)
    deadline = time.monotonic() + 20
    while not any(e.data.get("resumed") for e in store.events("capture.start")):
        assert time.monotonic() < deadline, [e.data for e in store.events()]
        time.sleep(0.05)
    caps.stop(store)
    assert len(engine.asked) == 4  # lost, refused twice, back
    files = capture_files(state, 1)
    first = [f for f in files if f.name.startswith("dmz.pcap")]
    again = [f for f in files if f.name.startswith("dmz.r1.pcap")]
    assert first and again
    assert set(range(FRAMES // 2 - 1)) <= _frames(first, b"<before>")  # what came before the loss is kept
    assert _frames(first, b"<after!>") == set() and _frames(again, b"<before>") == set()
    assert _frames(again, b"<after!>") == set(range(FRAMES))  # the resumed capture is complete
    kinds = [(e.kind, e.data.get("resumed", 0), bool(e.data.get("lost"))) for e in store.events()
             if e.kind.startswith("capture.")]  # fmt: skip
    assert kinds == [("capture.start", 0, False), ("capture.stop", 0, True),
                     ("capture.start", 1, False), ("capture.stop", 1, False)]  # fmt: skip
    start = [e.data for e in store.events("capture.start")][1]
    assert start["ok"] and start["remote"] and start["file"] == "dmz.r1.pcap"


def test_a_capture_is_resumed_only_so_often(tmp_path):
    """An engine that keeps dropping the stream: at most max_resumes new captures per network."""
    state = SimpleNamespace(name="lab", dir=tmp_path)

    class Flaky(RemoteEngine):
        def capture_interfaces(self, range_name, team):
            return {"dmz": "rc1dmz"}

        def capture_stream(self, range_name, team, iface, snaplen):
            return LostStream(pcap(10, b"<flaky>"))

    store = EventStore(tmp_path / "events.db")
    caps = Captures(state, Flaky(), [1], resume_seconds=0.02, max_resumes=2)
    caps.start(store)
    deadline = time.monotonic() + 10
    while len(store.events("capture.stop")) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    caps.stop(store)
    assert [e.data.get("resumed", 0) for e in store.events("capture.start")] == [0, 1, 2]
    assert len(store.events("capture.stop")) == 3
