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
events record the interface, the files and their sizes. tcpdump only reads the bridge: nothing
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
    error: str = ""
    stream: Any = None  # the engine's pcap bytes, when its bridges are on another machine
    pump: threading.Thread | None = None


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
    """The drill's captures: :meth:`start` at drill start, :meth:`stop` when the runner stops."""

    state: RangeState
    backend: Backend
    teams: list[int]
    file_mb: int = FILE_MB
    files: int = FILES
    running: list[_One] = field(default_factory=list)

    def start(self, store: EventStore) -> None:
        tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/usr/bin:/sbin:/bin")
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
                one = _One(team, net, iface, d / f"{net}.pcap")
                # the bridge is here: tcpdump reads it; on an engine elsewhere, that engine's agent
                # runs tcpdump and the local one only writes the stream into the rotated files
                try:
                    one.stream = self.backend.capture_stream(self.state.name, team, iface, SNAPLEN)
                except RangeError as exc:
                    one.error = exc.message
                source = ["-i", iface, "-s", str(SNAPLEN)] if one.stream is None else ["-r", "-"]
                argv = [tcpdump, *source, "-n", "-U", "-w", str(one.path),
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
                self.running.append(one)
                store.append(
                    "capture.start",
                    {"ok": one.proc is not None, "network": net, "interface": iface, "file": one.path.name,
                     "file_mb": self.file_mb, "files": self.files, "snaplen": SNAPLEN, **({"error": one.error} if one.error else {}),
                     **({"remote": True} if one.stream is not None else {})},
                    team=team, actor="runner",
                )  # fmt: skip

    def stop(self, store: EventStore | None = None) -> None:
        for one in self.running:
            p = one.proc
            if p is None:
                continue
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
                         **({"stderr": err[-1][:200]} if err and p.returncode not in (0, -15) else {})},
                        team=one.team, actor="runner",
                    )  # fmt: skip
        self.running = []
