"""A packet capture of each team's range for the whole drill, bounded in size, for the evidence bundle.

When the drill starts, :class:`Captures` runs one ``tcpdump`` per team and scenario network on
the host interface the backend names for it (``Backend.capture_interfaces``: a range network is
a Linux bridge on this host, so every frame between the team's nodes crosses it, attacks
included). On an engine of another machine (the swarm backend) the bridge is there: that
engine's agent runs tcpdump on it and streams the packets here (``Backend.capture_stream``),
where a local ``tcpdump -r -`` writes them into the same rotated files. Each capture writes
``$STATE/captures/team-K/NETWORK.pcap`` and rotates through
:data:`FILES` files of :data:`FILE_MB` MB (``tcpdump -C -W``: the oldest is overwritten), so a
team's capture never takes more than ``networks x FILES x FILE_MB`` MB. They stop (SIGTERM:
tcpdump flushes) when the runner stops, however it stops. ``capture.start`` and ``capture.stop``
events record the interface, the files and their sizes. A streamed capture whose engine stops
answering is recorded as lost and resumed, in files of its own, once the engine is back
(:class:`Captures`). tcpdump only reads the bridge: nothing
is sent anywhere. ``rangectl evidence`` puts the files in the team's bundle (``capture/``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rangectl.backend.base import Backend
from rangectl.errors import RangeError
from rangectl.state import RangeState
from rangectl.store import EventStore

log = logging.getLogger("rangectl.drill.capture")

FILE_MB = 16  # tcpdump -C: megabytes (10^6 bytes) per file
FILES = 4  # tcpdump -W: files a capture rotates through
SNAPLEN = 512  # bytes kept of each frame: headers and the start of payloads (requests, commands)
RESUME_SECONDS = 5.0  # a remote capture whose engine went away is asked for again this often
MAX_RESUMES = 5  # ... and started again at most this many times per network


def capture_dir(state: RangeState, team: int) -> Path:
    return state.dir / "captures" / f"team-{team}"


def capture_files(state: RangeState, team: int) -> list[Path]:
    """The team's capture files (every network, every rotation), oldest name first."""
    d = capture_dir(state, team)
    return sorted(p for p in d.glob("*.pcap*") if p.is_file()) if d.is_dir() else []


@dataclass
class _One:
    team: int
    network: str
    interface: str
    path: Path
    proc: subprocess.Popen | None = None
    error: str | None = None
    stream: Any = None  # the engine's pcap bytes, when its bridges are on another machine
    pump: threading.Thread | None = None
    remote: bool = False  # streamed from an engine of another machine (or that engine refused it)
    resumed: int = 0  # how many times this network's capture was started again (0: the first)
    ended: bool = False  # stopped and recorded (capture.stop)


def _pump(stream: Any, proc: subprocess.Popen) -> None:
    """Copy the engine's pcap stream into the local tcpdump that writes the rotated files."""
    sink = proc.stdin
    assert sink is not None
    try:
        while True:
            data = stream.recv(65536)
            if not data:
                break
            sink.write(data)
            sink.flush()
    except (OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError, ValueError):
            sink.close()
        with contextlib.suppress(Exception):
            stream.close()


@dataclass
class Captures:
    """The drill's captures: :meth:`start` at drill start, :meth:`stop` when the runner stops.

    A capture streamed from an engine of another machine ends when that engine stops answering
    (its stream closes): it is recorded then (``capture.stop`` with ``lost``), and every
    ``resume_seconds`` it is asked for again (so is one the engine refused at the start); once the engine is back, a new capture of the same
    network goes on in files of their own (``NETWORK.rN.pcap``: nothing written before is
    overwritten) with ``capture.start`` saying ``resumed: N``. At most ``max_resumes`` per network.
    """

    state: RangeState
    backend: Backend
    teams: list[int]
    file_mb: int = FILE_MB
    files: int = FILES
    running: list[_One] = field(default_factory=list)
    resume_seconds: float = RESUME_SECONDS
    max_resumes: int = MAX_RESUMES

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._tcpdump: str | None = None

    def start(self, store: EventStore) -> None:
        tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/usr/bin:/sbin:/bin")
        self._tcpdump = tcpdump
        for team in self.teams:
            try:
                if tcpdump is None:
                    raise RangeError("tcpdump is not installed on this host")
                ifaces = self.backend.capture_interfaces(self.state.name, team)
            except RangeError as exc:
                store.append("capture.start", {"ok": False, "error": exc.message}, team=team, actor="runner")
                continue
            d = capture_dir(self.state, team)
            d.mkdir(parents=True, exist_ok=True)
            for net, iface in sorted(ifaces.items()):
                one = self._open(team, net, iface, 0)
                with self._lock:
                    self.running.append(one)
                self._started(store, one)
        if any(one.remote for one in self.running):
            self._watcher = threading.Thread(target=self._watch, args=(store,), daemon=True, name="rangectl-capture-resume")
            self._watcher.start()

    def _open(self, team: int, net: str, iface: str, resumed: int) -> _One:
        """One capture of network ``net``: tcpdump on the bridge here, or the engine's stream written here."""
        assert self._tcpdump is not None
        name = f"{net}.pcap" if not resumed else f"{net}.r{resumed}.pcap"
        one = _One(team, net, iface, capture_dir(self.state, team) / name, resumed=resumed)
        # the bridge is here: tcpdump reads it; on an engine elsewhere, that engine's agent
        # runs tcpdump and the local one only writes the stream into the rotated files
        try:
            one.stream = self.backend.capture_stream(self.state.name, team, iface, SNAPLEN)
        except RangeError as exc:
            one.error = exc.message
        one.remote = one.stream is not None or one.error is not None  # refused: only an engine elsewhere streams
        source = ["-i", iface, "-s", str(SNAPLEN)] if one.stream is None else ["-r", "-"]
        argv = [self._tcpdump, *source, "-n", "-U", "-w", str(one.path),
                "-C", str(self.file_mb), "-W", str(self.files), "-Z", "root"]  # fmt: skip
        if not one.error:
            try:
                one.proc = subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL if one.stream is None else subprocess.PIPE,
                    start_new_session=True,  # the trainer's Ctrl-C reaches the runner, which stops us
                )  # fmt: skip
            except OSError as exc:
                one.error = str(exc)
                if one.stream is not None:
                    one.stream.close()
        if one.proc is not None and one.stream is not None:
            one.pump = threading.Thread(target=_pump, args=(one.stream, one.proc), daemon=True,
                                        name=f"rangectl-capture t{team} {net}")  # fmt: skip
            one.pump.start()
        return one

    def _started(self, store: EventStore, one: _One) -> None:
        store.append(
            "capture.start",
            {"ok": one.proc is not None, "network": one.network, "interface": one.interface, "file": one.path.name,
             "file_mb": self.file_mb, "files": self.files, "snaplen": SNAPLEN, **({"error": one.error} if one.error else {}),
             **({"remote": True} if one.stream is not None else {}), **({"resumed": one.resumed} if one.resumed else {})},
            team=one.team, actor="runner",
        )  # fmt: skip

    def _watch(self, store: EventStore) -> None:
        """Remote captures whose engine went away: recorded as lost, then asked for again until back."""
        lost: list[_One] = []  # ended, to be resumed
        while not self._stopping.wait(self.resume_seconds):
            with self._lock:  # streams that ended, and captures the engine refused at the start
                ended = [o for o in self.running if o.remote and not o.ended
                         and (o.pump is None or not o.pump.is_alive())]  # fmt: skip
            for one in ended:
                self._end(one, store, lost="the engine's stream ended (the engine stopped answering)")
                if one.resumed < self.max_resumes:
                    lost.append(one)
            for one in list(lost):
                if self._stopping.is_set():
                    return
                try:
                    again = self._open(one.team, one.network, one.interface, one.resumed + 1)
                except Exception:  # noqa: BLE001 - an engine half back: tried again next time
                    log.debug("capture of team %d %s not resumed yet", one.team, one.network, exc_info=True)
                    continue
                if again.proc is None:  # not back yet (its reason is the next try's too)
                    continue
                lost.remove(one)
                with self._lock:
                    late = self._stopping.is_set()  # stop() may have taken the list: this one is ours to end
                    if not late:
                        self.running.append(again)
                self._started(store, again)
                if late:
                    self._end(again, store)
                    return

    def _end(self, one: _One, store: EventStore | None, lost: str | None = None) -> None:
        """Stop one capture (what the engine holds still comes) and record it: ``capture.stop``."""
        with self._lock:
            if one.ended:
                return
            one.ended = True
        p = one.proc
        if p is None:
            return
        if one.stream is not None and one.pump is not None:
            # stop the engine's tcpdump: what it holds comes, then the local one sees the end
            with contextlib.suppress(Exception):
                one.stream.shutdown(socket.SHUT_WR)
            one.pump.join(10)
            if one.pump.is_alive():
                with contextlib.suppress(Exception):
                    one.stream.close()
        if p.poll() is None and one.stream is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        err = (p.stderr.read().decode(errors="replace") if p.stderr else "").strip().splitlines()
        if p.stderr:
            p.stderr.close()
        files = sorted(f for f in one.path.parent.glob(one.path.name + "*") if f.is_file())
        if store is not None:
            with contextlib.suppress(Exception):
                store.append(
                    "capture.stop",
                    {"network": one.network, "interface": one.interface, "exit": p.returncode,
                     "files": [{"name": f.name, "bytes": f.stat().st_size} for f in files],
                     **({"stderr": err[-1][:200]} if err and p.returncode not in (0, -15) and not lost else {}),
                     **({"lost": lost} if lost else {}), **({"resumed": one.resumed} if one.resumed else {})},
                    team=one.team, actor="runner",
                )  # fmt: skip

    def stop(self, store: EventStore | None = None) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(30)  # an engine asked for its capture meanwhile answers, or times out
        with self._lock:
            running, self.running = self.running, []
        for one in running:
            self._end(one, store)
