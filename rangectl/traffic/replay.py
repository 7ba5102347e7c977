"""Replay a capture from a node's namespace: the schedule, the sender, and the record of what went out.

The frames come ready from :func:`rangectl.traffic.pcapfile.prepare_replay`
(read, mapped onto this team's addresses, checked, framed); then, still
before the clock starts, compute the schedule: the capture's own gaps divided
by ``speed``, a fixed ``pps``, or top speed; repeated ``loop`` times.

Then every frame goes out of ONE raw AF_PACKET socket (PACKET_QDISC_BYPASS when
the kernel allows it): timed replays sleep until shortly before each
packet's due time on the monotonic clock and busy-wait the rest (a packet
held up by more than 15 us moves the rest of the schedule with it, so the
capture's gaps are kept rather than squeezed to catch up); top-speed replays
copy pre-built slots into a PACKET_MMAP TX ring and flush it with one
sendto(2) per ring (:class:`~rangectl.traffic.wire.TxRing`), or, when no ring
can be set up, push pre-built sendmmsg(2) batches.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rangectl.arp import next_hop_here
from rangectl.netns import run_in_netns
from rangectl.rtnetlink import addresses_here, interface_here, route_get_here
from rangectl.traffic.base import TrafficContext, TrafficError, TrafficRefused, TrafficResult, utcnow
from rangectl.traffic.pacing import set_timer_slack
from rangectl.traffic.packets import mac_bytes
from rangectl.traffic.pcapfile import capture_format, prepare_replay, read_capture
from rangectl.traffic.wire import FrameBatch, PacketSocket, TxRing

IPv4 = ipaddress.IPv4Address


# --- scheduling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When each frame is due, in seconds from the start; frame ``i`` of loop ``k`` is ``offsets[i] + k*period``."""

    offsets: list[float]
    period: float
    loops: int
    timed: bool

    def __len__(self) -> int:
        return len(self.offsets) * self.loops

    def at(self, i: int) -> float:
        n = len(self.offsets)
        return self.offsets[i % n] + (i // n) * self.period

    @property
    def seconds(self) -> float:
        return self.at(len(self) - 1) if len(self) else 0.0


def build_schedule(
    ts_ns: Sequence[int], *, speed: float = 1.0, pps: float | None = None, topspeed: bool = False, loops: int = 1
) -> Schedule:
    """Offsets from the capture's timing scaled by ``speed``, or ``i / pps``, or all zero (top speed).

    Out-of-order capture timestamps never make the schedule go backwards.
    Between loops the capture's mean gap is kept (``1 / pps`` with ``pps``).
    """
    n = len(ts_ns)
    if loops < 1:
        raise ValueError("loops must be at least 1")
    if n == 0:
        return Schedule([], 0.0, loops, not topspeed)
    if topspeed:
        return Schedule([0.0] * n, 0.0, loops, False)
    if pps is not None:
        if pps <= 0:
            raise ValueError("pps must be positive")
        return Schedule([i / pps for i in range(n)], n / pps, loops, True)
    if speed <= 0:
        raise ValueError("speed must be positive")
    t0 = ts_ns[0]
    offs: list[float] = []
    last = 0.0
    for t in ts_ns:
        x = (t - t0) / 1e9 / speed
        if x < last:
            x = last
        offs.append(x)
        last = x
    gap = offs[-1] / (n - 1) if n > 1 else 0.0
    return Schedule(offs, offs[-1] + gap, loops, True)


# --- sending ----------------------------------------------------------------------------------

# Timed replays sleep until a margin before each due time and busy-wait the rest; the margin
# follows the wake-up overshoot measured while replaying, between these bounds. (On a 2-CPU VM,
# floors of 30 us and 150 us let wake-up jitter into the timing; 1.2 ms did not. tcpreplay's
# default timer spins all the time.)
SPIN_START = 0.0012
SPIN_MIN = 0.0012
SPIN_MAX = 0.003
# A packet later than this moves the rest of the schedule by its lateness: a hiccup then costs
# one wrong gap instead of two (the late one and a squeezed catch-up), and the replay ends that
# much later (details: schedule_slip_ms). Smaller lateness is not carried over.
SLIP_AFTER = 0.000015
BATCH = 256


@dataclass
class SendStats:
    sent: int = 0
    bytes: int = 0
    stopped: str = "done"
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the sending thread (top speed), kernel work in its syscalls included
    lateness: list[float] = field(default_factory=list)
    slip: float = 0.0  # seconds the schedule was moved back by hiccups (timed replays)
    slips: int = 0


def send_frames(
    sock: PacketSocket | TxRing,
    frames: Sequence[bytes],
    schedule: Schedule,
    *,
    max_frames: int,
    end: float,
    stop: Callable[[], bool] | None = None,
    batch: FrameBatch | None = None,
) -> SendStats:
    """Send ``frames`` (cycled for loops) on ``sock`` following ``schedule``; stop at ``max_frames`` or ``end``.

    ``sock`` is a :class:`TxRing` (top speed only: whole ring flushes, bounds checked between
    them) or a :class:`PacketSocket` (``sendmmsg`` batches at top speed, one frame at a time when timed).
    """
    total = min(len(schedule), max_frames)
    n = len(frames)
    st = SendStats()
    if n == 0 or total == 0:
        return st
    mono = time.monotonic
    lengths = [len(f) for f in frames]
    if not schedule.timed:
        ring = sock if isinstance(sock, TxRing) else None
        if ring is None and batch is None:
            batch = FrameBatch(frames)
        t0 = mono()
        c0 = time.thread_time()
        i = 0
        while i < total:
            if mono() >= end:
                st.stopped = "duration"
                break
            if stop is not None and stop():
                st.stopped = "stopped"
                break
            j = i % n
            if ring is not None:
                # one memmove of pre-built slots and one flush; the image wraps the pass end itself
                k = min(ring.slots, total - i)
                ring.send_range(j, k)
            else:
                k = min(BATCH, total - i, n - j)
                sock.send_batch(batch, j, k)
            i += k
        st.sent = i
        st.bytes = sum(lengths) * (i // n) + sum(lengths[: i % n])
        st.seconds = mono() - t0
        st.cpu_seconds = time.thread_time() - c0
        if st.stopped == "done" and total < len(schedule):
            st.stopped = "count"
        return st
    set_timer_slack(1)
    return _send_timed(sock, frames, schedule, total, end, stop, st, lengths)


def _send_timed(
    sock: PacketSocket,
    frames: Sequence[bytes],
    schedule: Schedule,
    total: int,
    end: float,
    stop: Callable[[], bool] | None,
    st: SendStats,
    lengths: list[int],
) -> SendStats:
    mono = time.monotonic
    sleep = time.sleep
    n = len(frames)
    offsets = schedule.offsets
    period = schedule.period
    send = sock.send
    late = [0.0] * total  # preallocated: no list growth (and its copies) inside the timed loop
    nbytes = 0
    # Sleep until `margin` before each due time, then busy-wait the rest. The margin grows with
    # the wake-up overshoot this thread actually sees (up at once, down slowly), so a machine
    # whose sleeps come back late does not make every packet late.
    margin = SPIN_START
    worst = 0.0
    t0 = mono() + 0.002
    i = 0
    check_every = 64
    while i < total:
        j = i % n
        due = t0 + offsets[j] + (i // n) * period
        if due >= end:
            st.stopped = "duration"
            break
        now = mono()
        if due - now > margin:
            if stop is not None and stop():
                st.stopped = "stopped"
                break
            wake = due - margin
            sleep(wake - now)
            over = mono() - wake
            worst = over if over > worst else worst * 0.995 + over * 0.005
            margin = min(SPIN_MAX, max(SPIN_MIN, 2.0 * worst + 0.0001))
        while mono() < due:
            pass
        lag = mono() - due
        late[i] = lag
        if lag > SLIP_AFTER:
            # a hiccup (preempted, a late wake-up): move the rest of the schedule instead of
            # bunching the next packets to catch up, so the capture's gaps stay as they were
            t0 += lag
            st.slip += lag
            st.slips += 1
        send(frames[j])
        nbytes += lengths[j]
        i += 1
        if not i % check_every and stop is not None and stop():
            st.stopped = "stopped"
            break
    del late[i:]
    st.lateness = late
    st.sent = i
    st.bytes = nbytes
    st.seconds = mono() - t0
    if st.stopped == "done" and total < len(schedule):
        st.stopped = "count"
    return st


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def replay_pcap(
    path: str | Path,
    ctx: TrafficContext,
    *,
    address_map: Mapping[str, str] | None = None,
    speed: float = 1.0,
    pps: float | None = None,
    topspeed: bool = False,
    loop: int = 1,
    max_packets: int = 500_000,
    duration: float = 300.0,
    drop_outside: bool = False,
    qdisc_bypass: bool = True,
    tx_ring: bool = True,
) -> TrafficResult:
    """Replay ``path`` from ``ctx.netns_path`` with addresses mapped (capture address -> new IPv4 address).

    Raises :class:`TrafficRefused` (nothing sent) when a packet would be
    addressed outside ``ctx.allowed_subnets``. Stops by itself after
    ``max_packets`` frames or ``duration`` seconds (or ``ctx.deadline``/``ctx.stop``).
    """
    fmt = capture_format(path)
    packets = read_capture(path, limit=max_packets)
    if not ctx.allowed_subnets:
        raise TrafficRefused("replay refused: no allowed subnets were given, so nothing may be sent")
    amap = {str(IPv4(str(k))): str(IPv4(str(v))) for k, v in (address_map or {}).items()}
    # Safety first, outside the namespace and before any ARP: the dry run raises on outside addresses.
    dry = prepare_replay(
        packets, address_map=amap, src_mac=b"\0" * 6, hop_mac=lambda _d: b"\0" * 6,
        allowed=ctx.allowed_subnets, own_addresses=(), mtu=1 << 20, drop_outside=drop_outside,
    )  # fmt: skip
    if not dry.frames:
        raise TrafficError(f"{path}: no IPv4 packet to replay ({dict(dry.skipped) or 'empty capture'})")
    first_dst = next(iter(dry.destinations))

    def here() -> TrafficResult:
        iface = ctx.src_iface
        if iface is None:
            route = route_get_here(first_dst)
            if route.type == "local" and len(dry.destinations) > 1:
                route = route_get_here(next(d for d in dry.destinations if d != first_dst))
            if route.ifname is None or route.type not in ("unicast", "local"):
                raise TrafficError(f"no route to {first_dst} from the source node")
            iface = route.ifname
        info = interface_here(iface)
        if not info.mac:
            raise TrafficError(f"interface {iface} has no Ethernet address")
        own = [a.interface.ip for a in addresses_here()]
        hops: dict[IPv4, bytes] = {}

        def hop_mac(dst: IPv4) -> bytes:
            if dst not in hops:
                hop = next_hop_here(str(dst))
                if hop.ifname != iface:
                    raise TrafficError(f"{dst} is routed out of {hop.ifname}, not {iface}: one replay uses one interface")
                hops[dst] = mac_bytes(hop.hop_mac)
            return hops[dst]

        prep = prepare_replay(
            packets, address_map=amap, src_mac=info.mac, hop_mac=hop_mac, allowed=ctx.allowed_subnets,
            own_addresses=own, mtu=info.mtu or 1500, drop_outside=drop_outside,
        )  # fmt: skip
        if not prep.frames:
            raise TrafficError(f"{path}: nothing left to replay ({dict(prep.skipped)})")
        sched = build_schedule(prep.ts_ns, speed=speed, pps=pps, topspeed=topspeed, loops=loop)
        # Top speed: a PACKET_MMAP TX ring of pre-built slots; when the kernel (or the size of the
        # capture) does not allow one, sendmmsg(2) batches. Timed replays send frame by frame.
        sender, fallback = ("send" if sched.timed else "sendmmsg"), None
        out: TxRing | PacketSocket | None = None
        if not sched.timed and tx_ring:
            try:
                out = TxRing(iface, prep.frames, mtu=info.mtu or 1500, qdisc_bypass=qdisc_bypass)
                sender = "tx_ring"
            except (OSError, ValueError) as exc:
                fallback = f"no TX ring ({exc}): sendmmsg batches instead"
        batch = None
        if out is None:
            batch = FrameBatch(prep.frames) if not sched.timed else None
            out = PacketSocket(iface, qdisc_bypass=qdisc_bypass)
        end = time.monotonic() + duration
        if ctx.deadline is not None:
            end = min(end, ctx.deadline)
        with out as sock:
            started = utcnow()
            st = send_frames(
                sock, prep.frames, sched, max_frames=max_packets, end=end, stop=ctx.stopped, batch=batch
            )
            ended = utcnow()
            bypass, retries = sock.qdisc_bypass, sock.retries
        mode = "topspeed" if topspeed else f"pps {pps:g}" if pps else f"speed {speed:g}"
        late_us = [x * 1e6 for x in st.lateness]
        details: dict[str, Any] = {
            "file": str(path),
            "format": fmt,
            "packets_in_capture": prep.read,
            "frames_per_loop": len(prep.frames),
            "loops": loop,
            "loops_completed": st.sent // len(prep.frames),
            "skipped": dict(prep.skipped),
            "fragments": prep.fragments,
            "truncated": prep.truncated,
            "map": amap,
            "destinations": dict(prep.destinations.most_common(20)),
            "sources": dict(prep.sources.most_common(20)),
            "next_hops": {str(k): ":".join(f"{b:02x}" for b in v) for k, v in hops.items()},
            "timing": mode,
            "schedule_seconds": round(sched.seconds, 6),
            "send_seconds": round(st.seconds, 6),
            "send_cpu_seconds": round(st.cpu_seconds, 6) if not sched.timed else None,
            "pps_achieved": round(st.sent / st.seconds, 1) if st.seconds > 0 else None,
            "schedule_slip_ms": round(st.slip * 1000, 3),
            "schedule_slips": st.slips,
            "qdisc_bypass": bypass,
            "send_retries": retries,
            "sender": sender,
        }
        if isinstance(sock, TxRing):
            details["ring"] = {"slots": sock.slots, "slot_bytes": sock.slot, "flushes": sock.flushes}
        if fallback:
            details["sender_fallback"] = fallback
        if late_us:
            details["lateness_us"] = {
                "mean": round(sum(late_us) / len(late_us), 2),
                "p99": round(_pct(late_us, 0.99), 2),
                "max": round(max(late_us), 2),
            }
        dsts = list(prep.destinations)
        return TrafficResult(
            kind="pcap",
            src_ip=next(iter(prep.sources), None),
            dst_ip=dsts[0] if len(dsts) == 1 else ",".join(dsts[:5]),
            started=started,
            ended=ended,
            packets_sent=st.sent,
            bytes_sent=st.bytes,
            stopped=st.stopped,
            counted="exact",
            src_iface=iface,
            details=details,
        )

    return run_in_netns(ctx.netns_path, here)
