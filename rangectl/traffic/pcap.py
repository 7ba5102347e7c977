"""Replay a capture (pcap or pcapng) from a node's namespace, rewritten for this team's range.

Pipeline, all before the clock starts:

1. read the capture (own parser: pcap in micro- or nanosecond resolution,
   either byte order; pcapng with per-interface link types, ``if_tsresol`` and
   ``if_tsoffset``; Ethernet, VLAN-tagged, Linux cooked v1/v2, raw IP, loopback);
2. keep IPv4 packets, map their addresses (capture address -> new address) and
   recompute IPv4/TCP/UDP/ICMP checksums (:func:`rewrite_ipv4`);
3. refuse the replay (or, with ``drop_outside``, drop the packets) when a
   rewritten destination or source is outside the allowed subnets; skip
   packets addressed to the sender itself (the other half of a captured
   conversation) and packets bigger than the interface MTU;
4. put a fresh Ethernet header on each: the sending interface's MAC, and the
   next hop's MAC for its destination (resolved once per destination);
5. compute the schedule: the capture's own gaps divided by ``speed``, a fixed
   ``pps``, or top speed; repeated ``loop`` times.

Then every frame goes out of ONE raw AF_PACKET socket (PACKET_QDISC_BYPASS when
the kernel allows it): timed replays sleep until shortly before each
packet's due time on the monotonic clock and busy-wait the rest (a packet
held up by more than 15 us moves the rest of the schedule with it, so the
capture's gaps are kept rather than squeezed to catch up); top-speed replays
copy pre-built slots into a PACKET_MMAP TX ring and flush it with one
sendto(2) per ring (:class:`~rangectl.traffic.base.TxRing`), or, when no ring
can be set up, push pre-built sendmmsg(2) batches.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rangectl.netns import _addresses_here, _interface_here, _route_get_here, next_hop_here, run_in_netns
from rangectl.scenario.traffic_params import PcapParams
from rangectl.traffic.base import (
    FrameBatch,
    PacketSocket,
    TrafficContext,
    TrafficError,
    TrafficRefused,
    TrafficResult,
    TxRing,
    refusal,
    set_timer_slack,
    utcnow,
)
from rangectl.traffic.packets import eth_header, ipv4_from_link, mac_bytes, rewrite_ipv4

IPv4 = ipaddress.IPv4Address


class PcapFormatError(TrafficError):
    """A file that is not a readable pcap/pcapng capture."""


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    ts_ns: int  # capture timestamp, nanoseconds since the epoch
    linktype: int
    data: bytes
    wirelen: int


PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


def capture_format(path: str | Path) -> str:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == PCAPNG_SHB:
        return "pcapng"
    if magic in PCAP_MAGICS:
        return "pcap"
    raise PcapFormatError(f"{path}: not a pcap or pcapng capture (magic {magic.hex() or 'empty'})")


def read_capture(path: str | Path, limit: int | None = None) -> list[CapturedPacket]:
    """Every packet of a pcap or pcapng file (at most ``limit``)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PcapFormatError(f"cannot read capture {p}: {exc.strerror}") from exc
    it = _read_pcapng(data, p) if data[:4] == PCAPNG_SHB else _read_pcap(data, p)
    out: list[CapturedPacket] = []
    for pkt in it:
        out.append(pkt)
        if limit is not None and len(out) >= limit:
            break
    return out


def _read_pcap(data: bytes, path: Path) -> Iterator[CapturedPacket]:
    if len(data) < 24 or data[:4] not in PCAP_MAGICS:
        raise PcapFormatError(f"{path}: not a pcap or pcapng capture")
    e, frac_ns = PCAP_MAGICS[data[:4]]
    network = struct.unpack_from(e + "I", data, 20)[0]
    linktype = network & 0xFFFF
    fcs = ((network >> 29) & 0x7) * 2 if network & 0x10000000 else 0
    off = 24
    rec = struct.Struct(e + "IIII")
    n = len(data)
    while off + 16 <= n:
        sec, frac, incl, orig = rec.unpack_from(data, off)
        off += 16
        if incl > 0x40000 or off + incl > n:
            return  # a cut-off last record
        pkt = data[off : off + incl]
        off += incl
        if fcs and len(pkt) >= fcs:
            pkt = pkt[:-fcs]
        yield CapturedPacket(sec * 1_000_000_000 + frac * frac_ns, linktype, pkt, orig)


def _tsres_to_ns(units: int, tsresol: int) -> int:
    if tsresol & 0x80:
        return (units * 1_000_000_000) >> (tsresol & 0x7F)
    if tsresol <= 9:
        return units * 10 ** (9 - tsresol)
    return units // 10 ** (tsresol - 9)


def _read_pcapng(data: bytes, path: Path) -> Iterator[CapturedPacket]:
    off = 0
    n = len(data)
    e = "<"
    ifaces: list[tuple[int, int, int]] = []  # linktype, tsresol, tsoffset seconds
    last_ts = 0
    while off + 12 <= n:
        if data[off : off + 4] == PCAPNG_SHB:
            bom = data[off + 8 : off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                e = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                e = ">"
            else:
                raise PcapFormatError(f"{path}: bad pcapng byte-order magic at offset {off}")
            ifaces = []
        btype, blen = struct.unpack_from(e + "II", data, off)
        if blen < 12 or blen % 4 or off + blen > n:
            return  # cut off, or garbage after the last block
        end = off + blen - 4
        if btype == 1:  # interface description
            linktype, _res, _snap = struct.unpack_from(e + "HHI", data, off + 8)
            tsresol, tsoffset = 6, 0
            o = off + 16
            while o + 4 <= end:
                code, olen = struct.unpack_from(e + "HH", data, o)
                if code == 0:
                    break
                val = data[o + 4 : o + 4 + olen]
                if code == 9 and olen >= 1:
                    tsresol = val[0]
                elif code == 14 and olen == 8:
                    tsoffset = struct.unpack(e + "q", val)[0]
                o += 4 + ((olen + 3) & ~3)
            ifaces.append((linktype, tsresol, tsoffset))
        elif btype in (6, 2):  # enhanced packet, obsolete packet
            if btype == 6:
                ifid, th, tl, caplen, origlen = struct.unpack_from(e + "IIIII", data, off + 8)
            else:
                ifid, _drops, th, tl, caplen, origlen = struct.unpack_from(e + "HHIIII", data, off + 8)
            if ifid >= len(ifaces):
                raise PcapFormatError(f"{path}: packet for undeclared interface {ifid} at offset {off}")
            linktype, tsresol, tsoffset = ifaces[ifid]
            pkt = data[off + 28 : min(off + 28 + caplen, end)]
            last_ts = _tsres_to_ns((th << 32) | tl, tsresol) + tsoffset * 1_000_000_000
            yield CapturedPacket(last_ts, linktype, pkt, origlen)
        elif btype == 3:  # simple packet: interface 0, no timestamp
            if not ifaces:
                raise PcapFormatError(f"{path}: simple packet block before any interface")
            (origlen,) = struct.unpack_from(e + "I", data, off + 8)
            caplen = min(origlen, blen - 16)
            yield CapturedPacket(last_ts, ifaces[0][0], data[off + 12 : off + 12 + caplen], origlen)
        off += blen


# --- rewriting ------------------------------------------------------------------------------


@dataclass
class PreparedReplay:
    """Frames ready to send (one pass of the capture), their capture timestamps, and what was skipped."""

    frames: list[bytes]
    ts_ns: list[int]
    read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    fragments: int = 0
    truncated: int = 0
    destinations: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)

    @property
    def bytes_per_pass(self) -> int:
        return sum(len(f) for f in self.frames)


def normalize_map(address_map: Mapping[Any, Any] | None) -> dict[bytes, bytes]:
    return {IPv4(str(k)).packed: IPv4(str(v)).packed for k, v in (address_map or {}).items()}


def prepare_replay(
    packets: Iterable[CapturedPacket],
    *,
    address_map: Mapping[Any, Any] | None,
    src_mac: str | bytes,
    hop_mac: Callable[[IPv4], str | bytes],
    allowed: Sequence[ipaddress.IPv4Network],
    own_addresses: Iterable[IPv4] = (),
    mtu: int = 1500,
    drop_outside: bool = False,
) -> PreparedReplay:
    """Rewrite, check and frame every IPv4 packet (pure apart from ``hop_mac``).

    Raises :class:`TrafficRefused` before ``hop_mac`` is ever called when a
    rewritten destination or source is outside ``allowed`` (unless
    ``drop_outside``, which drops those packets instead).
    """
    amap = normalize_map(address_map)
    own = {IPv4(str(a)).packed for a in own_addresses}
    allowed = list(allowed)
    verdict: dict[tuple[bytes, str], str | None] = {}

    def why(addr: bytes, role: str) -> str | None:
        key = (addr, role)
        if key not in verdict:
            verdict[key] = refusal(IPv4(addr), allowed, role)
        return verdict[key]

    prep = PreparedReplay([], [])
    kept: list[tuple[int, bytes, bytes]] = []
    outside: Counter[str] = Counter()
    first_reason: dict[str, str] = {}
    for cp in packets:
        prep.read += 1
        ip = ipv4_from_link(cp.linktype, cp.data)
        if ip is None:
            prep.skipped["not_ipv4"] += 1
            continue
        rw = rewrite_ipv4(ip, amap)
        if rw is None:
            prep.skipped["malformed"] += 1
            continue
        if rw.dst in own:
            prep.skipped["to_sender"] += 1
            continue
        reason = why(rw.dst, "destination") or why(rw.src, "source")
        if reason:
            bad = str(IPv4(rw.dst)) if why(rw.dst, "destination") else str(IPv4(rw.src))
            outside[bad] += 1
            first_reason.setdefault(bad, reason)
            continue
        if len(rw.packet) > mtu:
            prep.skipped["bigger_than_mtu"] += 1
            continue
        prep.fragments += rw.fragment
        prep.truncated += not rw.complete
        kept.append((cp.ts_ns, rw.dst, rw.packet))
    if outside:
        total = sum(outside.values())
        if not drop_outside:
            listed = "; ".join(first_reason[a] + f" ({c} packets)" for a, c in outside.most_common(3))
            more = f"; and {len(outside) - 3} more addresses" if len(outside) > 3 else ""
            raise TrafficRefused(
                f"replay refused, nothing sent: {total} packets would leave the range: {listed}{more}",
                fix="map every capture address to a node with 'map', or set drop_outside: true",
            )
        prep.skipped["outside_range"] += total
    src = mac_bytes(src_mac)
    heads: dict[bytes, bytes] = {}
    for ts, dst, pkt in kept:
        head = heads.get(dst)
        if head is None:
            head = heads[dst] = eth_header(mac_bytes(hop_mac(IPv4(dst))), src)
        prep.frames.append(head + pkt)
        prep.ts_ns.append(ts)
        prep.destinations[str(IPv4(dst))] += 1
        prep.sources[str(IPv4(pkt[12:16]))] += 1
    return prep


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
            route = _route_get_here(first_dst)
            if route.type == "local" and len(dry.destinations) > 1:
                route = _route_get_here(next(d for d in dry.destinations if d != first_dst))
            if route.ifname is None or route.type not in ("unicast", "local"):
                raise TrafficError(f"no route to {first_dst} from the source node")
            iface = route.ifname
        info = _interface_here(iface)
        if not info.mac:
            raise TrafficError(f"interface {iface} has no Ethernet address")
        own = [a.interface.ip for a in _addresses_here()]
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


def resolve_capture(file: str, ctx: TrafficContext) -> Path:
    """A capture named in a scenario: absolute, beside the scenario, in the project, or in scenarios/."""
    p = Path(file)
    if p.is_absolute():
        if p.is_file():
            return p
        raise TrafficError(f"capture {file} not found")
    if ctx.scenario_file is not None:
        from rangectl.paths import resolve_path

        found = resolve_path(file, Path(ctx.scenario_file), "scenarios")
        if found:
            return found
    from rangectl import paths

    for c in (Path.cwd() / p, paths.project_root() / p, paths.project_root() / "scenarios" / p):
        if c.is_file():
            return c
    raise TrafficError(f"capture '{file}' not found (looked beside the scenario and in scenarios/)")


def run_pcap(p: PcapParams, ctx: TrafficContext) -> TrafficResult:
    """The ``pcap`` generator: resolve the file and the node names of ``map``, then :func:`replay_pcap`."""
    path = resolve_capture(p.file, ctx)
    amap = {k: str(ctx.resolve_node(v)) for k, v in p.map.items()}
    return replay_pcap(
        path, ctx, address_map=amap, speed=p.speed, pps=p.pps, topspeed=p.topspeed, loop=p.loop,
        max_packets=p.max_packets, duration=p.duration, drop_outside=p.drop_outside,
    )  # fmt: skip
