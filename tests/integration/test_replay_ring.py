"""The top-speed replay's PACKET_MMAP TX ring, on a veth pair between two namespaces this test builds.

Lab (private to the test; nothing else is ever addressed): namespace ``tx``
(198.51.100.10) --veth-- namespace ``rx`` (198.51.100.20). A packet socket in
``rx`` queues every frame that arrives (queue big enough for the whole run,
checked with the kernel's drop counter), so each test compares what arrived
with what should have been sent, byte for byte and in order. Needs root and
iproute2; skipped otherwise.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from rangectl import netns
from rangectl.traffic import TrafficContext, replay_pcap, wire

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2"),
]

TX_IP, RX_IP = "198.51.100.10", "198.51.100.20"
TX_MAC, RX_MAC = "02:72:63:00:01:0a", "02:72:63:00:01:14"
ALLOWED = [ipaddress.IPv4Network("198.51.100.0/24")]
SOL_PACKET, PACKET_STATISTICS, PACKET_OUTGOING, ETH_P_ALL = 263, 6, 4, 3


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Lab:
    def __init__(self) -> None:
        tag = "rcring" + secrets.token_hex(3)
        self.tx, self.rx = f"{tag}-tx", f"{tag}-rx"
        self.made: list[str] = []

    def build(self) -> None:
        for ns in (self.tx, self.rx):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "eth0", "netns", self.tx, "address", TX_MAC, "type", "veth",
           "peer", "name", "eth0", "netns", self.rx, "address", RX_MAC)  # fmt: skip
        for ns, ip in ((self.tx, TX_IP), (self.rx, RX_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.tx, "neigh", "replace", RX_IP, "lladdr", RX_MAC, "dev", "eth0", "nud", "permanent")  # fmt: skip

    def teardown(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def path(self, ns: str) -> str:
        return netns.netns_path_of_name(ns)

    def ctx(self, stop: threading.Event | None = None) -> TrafficContext:
        return TrafficContext(self.path(self.tx), ALLOWED, stop=stop)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()


class Receiver:
    """Every IPv4 frame from the sender that arrives on rx's eth0, queued in the kernel until read."""

    def __init__(self, lab: Lab):
        def open_here() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.setsockopt(socket.SOL_SOCKET, 33, 1 << 30)  # SO_RCVBUFFORCE: the whole run fits
            s.bind(("eth0", ETH_P_ALL))
            return s

        self.sock = netns.run_in_netns(lab.path(lab.rx), open_here)
        self.sock.setblocking(False)
        self._drain()
        self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reset the counters

    def _drain(self) -> list[bytes]:
        out = []
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return out
            if (
                addr[2] != PACKET_OUTGOING
                and data[12:14] == b"\x08\x00"
                and data[26:30] == socket.inet_aton(TX_IP)
            ):
                out.append(data)

    def frames(self, settle: float = 0.3) -> list[bytes]:
        time.sleep(settle)
        got = self._drain()
        _packets, drops = struct.unpack("=II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.sock.close()
        assert drops == 0, f"the test's own capture dropped {drops} frames: cannot judge"
        return got


def udp_frames(n: int, big: bool = True) -> list[bytes]:
    """n distinct frames (a sequence number and a pattern in the payload); sizes from 60 to 1514 bytes."""
    out = []
    for i in range(n):
        pad = (i * 97) % 1460 if big else 14
        payload = struct.pack("!I", i) + bytes((i + k) & 0xFF for k in range(pad))
        f = (
            Ether(src=TX_MAC, dst=RX_MAC)
            / IP(src=TX_IP, dst=RX_IP, id=i & 0xFFFF)
            / UDP(sport=40000, dport=9)
            / payload
        )
        out.append(bytes(f))
    return out


def write_capture(tmp_path: Path, frames: list[bytes]) -> Path:
    path = tmp_path / "cap.pcap"
    pkts = [Ether(f) for f in frames]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i * 1e-6
    wrpcap(str(path), pkts)
    return path


def replay(lab: Lab, cap: Path, **kw):
    kw.setdefault("max_packets", 10_000_000)
    return replay_pcap(
        cap, lab.ctx(kw.pop("stop", None)), address_map={TX_IP: TX_IP, RX_IP: RX_IP}, topspeed=True, **kw
    )


def test_ring_sends_every_frame_byte_for_byte_in_order(lab, tmp_path):
    frames = udp_frames(1500)  # more than the ring holds (1024 slots): the ring and the pass both wrap
    cap = write_capture(tmp_path, frames)
    rx = Receiver(lab)
    r = replay(lab, cap, loop=3)
    got = rx.frames()
    assert r.details["sender"] == "tx_ring" and "sender_fallback" not in r.details
    assert r.details["ring"]["slots"] == 1024 and r.details["ring"]["flushes"] == 5  # ceil(4500 / 1024)
    assert r.packets_sent == 4500 and r.stopped == "done"
    assert r.bytes_sent == 3 * sum(len(f) for f in frames)
    assert len(got) == 4500
    assert got == frames * 3


def test_ring_stops_at_max_packets_exactly(lab, tmp_path):
    frames = udp_frames(1500)
    cap = write_capture(tmp_path, frames)
    rx = Receiver(lab)
    r = replay(lab, cap, loop=3, max_packets=2500)
    got = rx.frames()
    assert r.details["sender"] == "tx_ring"
    assert r.stopped == "count" and r.packets_sent == 2500
    assert r.bytes_sent == sum(len(f) for f in (frames * 2)[:2500])
    assert got == (frames * 2)[:2500]


def test_ring_stops_at_duration_with_an_exact_count(lab, tmp_path):
    frames = udp_frames(200, big=False)
    cap = write_capture(tmp_path, frames)
    rx = Receiver(lab)
    t = time.monotonic()
    r = replay(lab, cap, loop=1_000_000, duration=0.1)
    took = time.monotonic() - t
    got = rx.frames()
    assert r.details["sender"] == "tx_ring"
    assert r.stopped == "duration" and 0 < r.packets_sent < 200 * 1_000_000 and took < 5
    assert r.packets_sent % 1024 == 0  # whole ring flushes: it stops between two of them
    assert len(got) == r.packets_sent
    assert got == (frames * (r.packets_sent // 200 + 1))[: r.packets_sent]


def test_ring_stops_when_told_with_an_exact_count(lab, tmp_path):
    frames = udp_frames(200, big=False)
    cap = write_capture(tmp_path, frames)
    stop = threading.Event()
    rx = Receiver(lab)
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    try:
        r = replay(lab, cap, loop=1_000_000, duration=30, stop=stop)
    finally:
        timer.cancel()
    got = rx.frames()
    assert r.details["sender"] == "tx_ring"
    assert r.stopped == "stopped" and 0 < r.packets_sent < 200 * 1_000_000
    assert len(got) == r.packets_sent
    assert got == (frames * (r.packets_sent // 200 + 1))[: r.packets_sent]


def test_ring_batches_of_any_size_wrap_the_ring_in_order(lab):
    """send_range with batches that do not divide the ring: the kernel's head and ours stay together."""
    frames = udp_frames(700)
    rx = Receiver(lab)
    plan = [(0, 700), (700 % 700, 5), (5, 1024), (329, 1), (330, 1023), (653, 999)]

    def run() -> tuple[int, int]:
        with wire.TxRing("eth0", frames, mtu=1500) as ring:
            assert ring.slots == 1024
            for start, count in plan:
                assert ring.send_range(start, count) == count
            return ring.head, ring.flushes

    head, flushes = netns.run_in_netns(lab.path(lab.tx), run)
    got = rx.frames()
    want = [frames[(s + k) % 700] for s, c in plan for k in range(c)]
    assert head == sum(c for _s, c in plan) % 1024 and flushes == len(plan)
    assert got == want


def test_ring_retries_a_refused_flush_without_losing_or_repeating(lab):
    """ENOBUFS (the peer's backlog was full) and a timed-out wait: the retry finishes the batch once."""
    frames = udp_frames(300)
    rx = Receiver(lab)

    class Flaky:
        """Fails the next flushes as listed: before the kernel saw them, or after it sent everything."""

        def __init__(self, sock: socket.socket, fail: list[tuple[str, int]]):
            self.sock, self.fail = sock, fail

        def send(self, data: bytes) -> int:
            if self.fail:
                when, err = self.fail.pop(0)
                if when == "after":
                    self.sock.send(data)
                raise OSError(err, "injected")
            return self.sock.send(data)

    def run() -> int:
        with wire.TxRing("eth0", frames, mtu=1500) as ring:
            real = ring.sock
            ring.sock = Flaky(
                real, [("before", errno.ENOBUFS), ("before", errno.ETIMEDOUT), ("after", errno.ETIMEDOUT)]
            )
            try:
                ring.send_range(0, 300)  # refused twice, then sent
                # sent, but the wait "timed out": checked in user space, not sent again
                ring.send_range(0, 300)
                ring.send_range(0, 300)
            finally:
                ring.sock = real
            return ring.retries

    retries = netns.run_in_netns(lab.path(lab.tx), run)
    assert retries == 3
    assert rx.frames() == frames * 3


def test_ring_refused_by_the_kernel_falls_back_to_sendmmsg(lab, tmp_path, monkeypatch):
    frames = udp_frames(1500)
    cap = write_capture(tmp_path, frames)
    monkeypatch.setattr(wire, "PACKET_TX_RING", 0x7FFF)  # an option the kernel does not know: ENOPROTOOPT
    rx = Receiver(lab)
    r = replay(lab, cap, loop=2)
    got = rx.frames()
    assert r.details["sender"] == "sendmmsg"
    assert r.details["sender_fallback"].startswith("no TX ring (")
    assert "ring" not in r.details
    assert r.packets_sent == 3000 and got == frames * 2


def test_capture_too_big_for_a_ring_image_falls_back(lab, tmp_path, monkeypatch):
    frames = udp_frames(300)
    cap = write_capture(tmp_path, frames)
    monkeypatch.setattr(wire, "RING_IMAGE_MAX", 1 << 20)
    rx = Receiver(lab)
    r = replay(lab, cap, loop=2)
    got = rx.frames()
    assert r.details["sender"] == "sendmmsg" and "MiB" in r.details["sender_fallback"]
    assert got == frames * 2


def test_no_ring_when_asked_and_timed_replays_send_frame_by_frame(lab, tmp_path):
    frames = udp_frames(50, big=False)
    cap = write_capture(tmp_path, frames)
    rx = Receiver(lab)
    r1 = replay(lab, cap, tx_ring=False)
    r2 = replay_pcap(cap, lab.ctx(), address_map={TX_IP: TX_IP, RX_IP: RX_IP}, speed=100.0)
    got = rx.frames()
    assert r1.details["sender"] == "sendmmsg" and "sender_fallback" not in r1.details
    assert r2.details["sender"] == "send"
    assert got == frames * 2
