"""The TX ring's layout and the top-speed loop that drives it: pure code, no root (the ring itself on veth:
tests/integration/test_replay_ring.py)."""

from __future__ import annotations

import errno
import math
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rangectl.traffic.replay import build_schedule, send_frames
from rangectl.traffic.wire import (
    PAGE,
    TP_STATUS_SEND_REQUEST,
    TPACKET2_HDR,
    VNET_HDR,
    TxRing,
    ring_geometry,
    ring_image,
)


@given(st.integers(14, 9014), st.integers(1, 5000))
@settings(max_examples=200, deadline=None)
def test_ring_geometry_slots_are_contiguous_and_fit(max_frame, slots):
    size, block, blocks = ring_geometry(max_frame, slots)
    assert size % 16 == 0 and size - 16 < TPACKET2_HDR + VNET_HDR + max_frame <= size
    assert block % PAGE == 0 and block % size == 0  # no gap at a block's end: slot k is at k * size
    assert block == size * PAGE // math.gcd(size, PAGE)
    per = block // size
    assert per * blocks >= slots > per * (blocks - 1)


def test_ring_geometry_for_the_bench_frames():
    assert ring_geometry(60, 1024) == (112, 28672, 4)
    assert ring_geometry(1514, 1024) == (1568, 200704, 8)
    with pytest.raises(ValueError):
        ring_geometry(13, 10)


def test_ring_image_layout():
    frames = [bytes([i]) * (60 + 7 * i) for i in range(5)]
    slot = ring_geometry(max(map(len, frames)), 4)[0]
    img = ring_image(frames, slot, 3)
    assert len(img) == 8 * slot
    for s in range(8):
        f = frames[s % 5]
        o = s * slot
        status, tp_len = struct.unpack_from("=II", img, o)
        assert status == TP_STATUS_SEND_REQUEST and tp_len == VNET_HDR + len(f)
        assert img[o + 8 : o + TPACKET2_HDR] == bytes(TPACKET2_HDR - 8)
        flags, gso, hdr_len, gso_size, cs_start, cs_off = struct.unpack_from("=BBHHHH", img, o + TPACKET2_HDR)
        assert (flags, gso, gso_size, cs_start, cs_off) == (0, 0, 0, 0, 0) and hdr_len == len(f)
        d = o + TPACKET2_HDR + VNET_HDR
        assert img[d : d + len(f)] == f
        assert img[d + len(f) : o + slot] == bytes(slot - TPACKET2_HDR - VNET_HDR - len(f))


def test_ring_refuses_frames_the_interface_cannot_take_before_opening_anything():
    # with a virtio header the kernel skips its MTU check: the ring must refuse them itself
    with pytest.raises(ValueError, match="MTU"):
        TxRing("no-such-if", [b"x" * 1515], mtu=1500)
    with pytest.raises(ValueError):
        TxRing("no-such-if", [], mtu=1500)
    with pytest.raises(ValueError, match="MiB"):
        TxRing("no-such-if", [b"x" * 60] * 10_000, mtu=1500, image_max=1 << 20)


class FakeRing(TxRing):
    """A TxRing without a socket: records each flush (start, count)."""

    def __init__(self, frames, slots):
        self.n = len(frames)
        self.frames = frames
        self.slots = slots
        self.flushes = 0
        self.retries = 0
        self.qdisc_bypass = True
        self.calls: list[tuple[int, int]] = []
        self.sent: list[bytes] = []

    def send_range(self, start, count):
        assert 0 <= start < self.n and 0 < count <= self.slots
        self.calls.append((start, count))
        self.sent += [self.frames[(start + k) % self.n] for k in range(count)]
        self.flushes += 1
        return count

    def close(self):
        pass


def test_send_frames_drives_the_ring_in_whole_flushes_and_stops_at_the_count():
    frames = [bytes([i]) * (60 + i) for i in range(10)]
    sched = build_schedule(list(range(10)), topspeed=True, loops=50)
    ring = FakeRing(frames, slots=16)
    st_ = send_frames(ring, frames, sched, max_frames=333, end=time.monotonic() + 5)
    assert st_.sent == 333 and st_.stopped == "count"
    assert ring.sent == (frames * 34)[:333]
    assert [c for _s, c in ring.calls] == [16] * 20 + [13]
    assert [s for s, _c in ring.calls] == [(16 * k) % 10 for k in range(21)]
    assert st_.bytes == sum(len(f) for f in (frames * 34)[:333])


def test_send_frames_ring_all_loops_done():
    frames = [bytes([i]) * 60 for i in range(7)]
    sched = build_schedule(list(range(7)), topspeed=True, loops=3)
    ring = FakeRing(frames, slots=1024)
    st_ = send_frames(ring, frames, sched, max_frames=10**6, end=time.monotonic() + 5)
    assert st_.sent == 21 and st_.stopped == "done" and ring.calls == [(0, 21)]


def test_send_frames_ring_stops_at_end_and_when_told():
    frames = [b"x" * 60] * 10
    sched = build_schedule(list(range(10)), topspeed=True, loops=10**9)

    class Slow(FakeRing):
        def send_range(self, start, count):
            time.sleep(0.01)
            return super().send_range(start, count)

    ring = Slow(frames, slots=8)
    t = time.monotonic()
    st_ = send_frames(ring, frames, sched, max_frames=10**12, end=time.monotonic() + 0.1)
    assert st_.stopped == "duration" and time.monotonic() - t < 1
    assert st_.sent == 8 * len(ring.calls) == len(ring.sent) and 1 <= len(ring.calls) <= 11

    calls = []
    ring = Slow(frames, slots=8)
    st_ = send_frames(ring, frames, sched, max_frames=10**12, end=time.monotonic() + 5,
                      stop=lambda: calls.append(1) or len(calls) > 3)  # fmt: skip
    assert st_.stopped == "stopped" and st_.sent == 24 == len(ring.sent)


class StatusRing(TxRing):
    """Only the status words: ``script[slot]`` is the list of statuses the slot reports, one per look."""

    def __init__(self, script, slots):
        self.script = script
        self.slots = slots
        self.ifname = "veth-test"

    def status(self, slot):
        seq = self.script.get(slot, [0])
        return seq.pop(0) if len(seq) > 1 else seq[0]


def test_wait_done_waits_for_frames_in_flight_then_returns():
    ring = StatusRing({3: [2, 2, 2, 0], 5: [2, 0]}, slots=8)
    t = time.monotonic()
    ring._wait_done(2, 6)  # slots 2..7
    assert ring.script[3] == [0] and ring.script[5] == [0] and time.monotonic() - t < 1


def test_wait_done_wraps_the_ring_and_gives_up():
    ring = StatusRing({1: [2]}, slots=8)  # slot 1 never completes; 6, 7, 0, 1 are checked
    with pytest.raises(OSError, match="1 frames still in flight") as e:
        ring._wait_done(6, 4, timeout=0.05)
    assert e.value.errno == errno.ETIMEDOUT
    StatusRing({1: [2]}, slots=8)._wait_done(2, 4, timeout=0.05)  # slot 1 is not part of 2..5


def test_wait_done_reports_a_refused_frame():
    ring = StatusRing({4: [4]}, slots=8)
    with pytest.raises(OSError, match="refused") as e:
        ring._wait_done(0, 8)
    assert e.value.errno == errno.EINVAL
