"""What every generator shares: the context it runs in, its result record, the safety rule, pacing.

Safety rule: a generator sends only to addresses inside ``ctx.allowed_subnets``
(the team's own copy of the range). It checks every destination (and every
source it forges) *before* the first packet leaves and raises
:class:`TrafficRefused` naming the address otherwise. Every generator also
stops by itself: at its own packet/request count, at its ``duration``, at
``ctx.deadline``, or when ``ctx.stop`` is set, whichever comes first.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import math
import mmap
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rangectl.errors import RangeError

IPv4 = ipaddress.IPv4Address


class TrafficError(RangeError):
    """A traffic generator that cannot run (bad parameters, unreachable node, capture unreadable)."""


class TrafficRefused(TrafficError):
    """A destination (or forged source) outside the range's allowed subnets: nothing was sent."""


class TrafficParamsError(TrafficError):
    """Parameters that do not validate; ``problems`` holds (field path, message) pairs."""

    def __init__(self, kind: str, problems: list[tuple[str, str]]):
        text = "; ".join(f"{p}: {m}" if p else m for p, m in problems)
        super().__init__(f"invalid {kind} parameters: {text}")
        self.problems = problems


def _ip(v: Any) -> IPv4 | None:
    if v is None or isinstance(v, IPv4):
        return v
    return IPv4(str(v))


@dataclass
class TrafficContext:
    """Where and how a generator runs.

    netns_path:       a network namespace file to run in (``ip netns``'s
                      ``/run/netns/NAME``); None = the caller's own namespace (a node job
                      already runs in its node: rangectl.traffic.jobs).
    allowed_subnets:  the only networks packets may be addressed to (the team's
                      range). Empty = nothing may be sent.
    dst_ip:           the target node's address (None only for ``pcap``).
    src_ip, src_iface: the source address/interface; None = what the namespace's
                      routing table picks for ``dst_ip``.
    resolve:          node name -> IPv4 address of this team's copy (``pcap`` maps).
    deadline:         an absolute ``time.monotonic()`` after which the generator stops.
    stop:             set it to stop a running generator early.
    scenario_file:    relative capture files are looked up beside it (then in scenarios/).
    """

    netns_path: str | None
    allowed_subnets: list[ipaddress.IPv4Network]
    dst_ip: IPv4 | None = None
    src_ip: IPv4 | None = None
    src_iface: str | None = None
    resolve: Callable[[str], str] | None = None
    deadline: float | None = None
    stop: threading.Event | None = None
    scenario_file: Path | None = None
    label: str = ""

    def __post_init__(self) -> None:
        self.allowed_subnets = [ipaddress.IPv4Network(str(n), strict=False) for n in self.allowed_subnets]
        self.dst_ip = _ip(self.dst_ip)
        self.src_ip = _ip(self.src_ip)

    def resolve_node(self, name_or_ip: str) -> IPv4:
        """A node name (through ``resolve``) or a literal IPv4 address."""
        with contextlib.suppress(ValueError):
            return IPv4(name_or_ip)
        if self.resolve is None:
            raise TrafficError(f"cannot resolve node '{name_or_ip}': no resolver in this context")
        try:
            return IPv4(str(self.resolve(name_or_ip)))
        except (KeyError, LookupError) as exc:
            raise TrafficError(f"unknown node '{name_or_ip}'") from exc

    def stopped(self) -> bool:
        return bool(self.stop is not None and self.stop.is_set())


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class TrafficResult:
    """Ground truth of one run: what was sent, from where to where, when.

    packets_sent/bytes_sent count Ethernet frames (bytes without FCS) that left
    the source interface towards the target. ``counted`` says how they were
    counted: ``exact`` (the generator built every frame), ``wire`` (a packet tap
    on the source interface, for socket-level generators: includes the kernel's
    handshakes, ACKs and FINs), or ``estimate`` (the tap was unavailable: payload
    bytes written, packets unknown = 0).
    """

    kind: str
    src_ip: str | None
    dst_ip: str | None
    started: datetime
    ended: datetime
    packets_sent: int = 0
    bytes_sent: int = 0
    stopped: str = "done"  # done | count | duration | deadline | stopped | error
    counted: str = "exact"
    src_iface: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.ended - self.started).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "src_ip": self.src_ip,
            "dst_ip": self.dst_ip,
            "src_iface": self.src_iface,
            "started": self.started.isoformat(),
            "ended": self.ended.isoformat(),
            "seconds": round(self.seconds, 6),
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "stopped": self.stopped,
            "counted": self.counted,
            "details": self.details,
        }


# --- safety ----------------------------------------------------------------------------


def _nets(nets: Sequence[ipaddress.IPv4Network]) -> str:
    return ", ".join(str(n) for n in nets) or "none"


def refusal(addr: IPv4, allowed: Sequence[ipaddress.IPv4Network], role: str = "destination") -> str | None:
    """Why ``addr`` may not be sent to (or forged as a source), or None when it may."""
    if not allowed:
        return f"refusing {role} {addr}: no allowed subnets were given, so nothing may be sent"
    if addr.is_multicast or addr == IPv4("255.255.255.255") or addr.is_unspecified:
        return f"refusing {role} {addr}: broadcast, multicast and unspecified addresses are never sent to"
    if addr.is_loopback:
        return f"refusing {role} {addr}: loopback is not part of the range"
    inside = [n for n in allowed if addr in n]
    if not inside:
        return f"refusing {role} {addr}: outside the range's allowed subnets ({_nets(allowed)})"
    for n in inside:
        if n.prefixlen < 31 and addr == n.broadcast_address:
            return f"refusing {role} {addr}: the broadcast address of {n}"
    return None


def check_address(addr: Any, ctx: TrafficContext, role: str = "destination") -> IPv4:
    ip = _ip(addr)
    assert ip is not None
    why = refusal(ip, ctx.allowed_subnets, role)
    if why:
        raise TrafficRefused(why)
    return ip


def check_network(net: ipaddress.IPv4Network, ctx: TrafficContext, role: str = "forged source range") -> None:
    if not any(net.subnet_of(a) for a in ctx.allowed_subnets):
        raise TrafficRefused(f"refusing {role} {net}: not inside the range's allowed subnets ({_nets(ctx.allowed_subnets)})")


def target_of(ctx: TrafficContext, kind: str) -> IPv4:
    if ctx.dst_ip is None:
        raise TrafficError(f"a {kind} run needs a target address")
    return check_address(ctx.dst_ip, ctx)


# --- bounds and pacing -------------------------------------------------------------------


class Budget:
    """Count, duration, deadline and stop bounds, plus an absolute-schedule rate limit.

    ``wait_next()`` blocks until the next slot (``start + n / rate``) and returns
    False (with ``reason`` set) once any bound is reached.
    """

    def __init__(self, ctx: TrafficContext, *, count: int, duration: float, rate: float | None):
        self.ctx = ctx
        self.count = count
        self.rate = rate
        self.start = time.monotonic()
        self.end = self.start + duration
        self.end_reason = "duration"
        if ctx.deadline is not None and ctx.deadline < self.end:
            self.end = ctx.deadline
            self.end_reason = "deadline"
        self.n = 0
        self.reason = "done"

    def expired(self) -> bool:
        if self.ctx.stopped():
            self.reason = "stopped"
            return True
        if time.monotonic() >= self.end:
            self.reason = self.end_reason
            return True
        return False

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking for stop/deadline; False when a bound hit meanwhile."""
        until = min(time.monotonic() + max(0.0, seconds), self.end)
        while True:
            left = until - time.monotonic()
            if left <= 0:
                break
            if self.ctx.stop is not None:
                if self.ctx.stop.wait(min(left, 0.2)):
                    break
            else:
                time.sleep(min(left, 0.2))
        return not self.expired()

    def wait_next(self) -> bool:
        if self.n >= self.count:
            self.reason = "count"
            return False
        if self.rate:
            due = self.start + self.n / self.rate
            if due >= self.end:
                self.expired() or self._set_end()
                return False
            if not self.sleep(due - time.monotonic()):
                return False
        elif self.expired():
            return False
        self.n += 1
        return True

    def _set_end(self) -> bool:
        self.reason = self.end_reason
        return True


# --- counting what leaves the interface ----------------------------------------------------

PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
ETH_P_ALL = 0x0003


class WireCounter:
    """Counts frames leaving an interface towards given addresses (a packet tap in the namespace).

    Create it inside the namespace (the tap socket is opened in ``__init__``),
    ``start()`` it before the first connection and ``stop()`` after the last:
    it keeps counting for ``grace`` seconds so closing handshakes are included.
    """

    def __init__(self, ifname: str, dsts: Iterable[IPv4], grace: float = 0.3):
        self.ifname = ifname
        self.dsts = {d.packed for d in dsts}
        self.grace = grace
        self.packets = 0
        self.bytes = 0
        self._done = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.htons(ETH_P_ALL))
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            self._sock.bind((ifname, ETH_P_ALL))
            self._sock.settimeout(0.05)
        except BaseException:
            self._sock.close()
            raise
        self._thread = threading.Thread(target=self._run, name="rangectl-wirecount", daemon=True)

    def start(self) -> WireCounter:
        self._thread.start()
        return self

    def _run(self) -> None:
        buf = bytearray(64)
        stop_at: float | None = None
        try:
            while True:
                if stop_at is None and self._done.is_set():
                    stop_at = time.monotonic() + self.grace
                if stop_at is not None and time.monotonic() >= stop_at:
                    break
                try:
                    n, addr = self._sock.recvfrom_into(buf, 64, socket.MSG_TRUNC)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if addr[2] != PACKET_OUTGOING or n < 34:
                    continue
                if buf[12:14] != b"\x08\x00":
                    continue
                if bytes(buf[30:34]) in self.dsts:
                    self.packets += 1
                    self.bytes += n
        finally:
            self._sock.close()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=self.grace + 2.0)


# --- raw frames out of one AF_PACKET socket -----------------------------------------------


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IOVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


class FrameBatch:
    """Frames laid out once in one buffer with sendmmsg(2) headers, for batched sending."""

    def __init__(self, frames: Sequence[bytes]):
        n = len(frames)
        self.n = n
        self.frames = frames
        self.lengths = [len(f) for f in frames]
        self.total_bytes = sum(self.lengths)
        self.buf = ctypes.create_string_buffer(b"".join(frames), max(1, self.total_bytes))
        base = ctypes.addressof(self.buf)
        self.iov = (_IOVec * max(1, n))()
        self.msgs = (_MMsgHdr * max(1, n))()
        off = 0
        iov_base = ctypes.addressof(self.iov)
        isz = ctypes.sizeof(_IOVec)
        for i, ln in enumerate(self.lengths):
            v = self.iov[i]
            v.iov_base = base + off
            v.iov_len = ln
            h = self.msgs[i].msg_hdr
            h.msg_iov = ctypes.cast(iov_base + i * isz, ctypes.POINTER(_IOVec))
            h.msg_iovlen = 1
            off += ln
        self.msz = ctypes.sizeof(_MMsgHdr)


class PacketSocket:
    """One raw AF_PACKET socket bound to an interface (protocol 0: it receives nothing).

    Tries PACKET_QDISC_BYPASS (frames go straight to the driver). ``send`` is one
    frame; ``send_batch`` pushes many with one sendmmsg(2) call.
    """

    def __init__(self, ifname: str, qdisc_bypass: bool = True):
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            self.sock.bind((ifname, 0))
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            self.qdisc_bypass = False
            if qdisc_bypass:
                try:
                    self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
                    self.qdisc_bypass = True
                except OSError:
                    pass
        except BaseException:
            self.sock.close()
            raise
        self.fd = self.sock.fileno()
        from rangectl.netns import libc

        self._sendmmsg = getattr(libc(), "sendmmsg", None)
        self.retries = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> PacketSocket:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, frame: bytes) -> int:
        for attempt in range(200):
            try:
                return self.sock.send(frame)
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN) or attempt == 199:
                    raise
                self.retries += 1
                time.sleep(0.0002)
        return 0

    def send_batch(self, batch: FrameBatch, start: int, count: int) -> int:
        """Send frames ``start .. start+count-1``; returns how many went (all of them, or raises)."""
        if self._sendmmsg is None:
            for i in range(start, start + count):
                self.send(batch.frames[i])
            return count
        done = 0
        base = ctypes.addressof(batch.msgs)
        spins = 0
        while done < count:
            r = self._sendmmsg(self.fd, ctypes.c_void_p(base + (start + done) * batch.msz), count - done, 0)
            if r < 0:
                e = ctypes.get_errno()
                if e in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR) and spins < 10000:
                    spins += 1
                    self.retries += 1
                    time.sleep(0.0001)
                    continue
                raise OSError(e, f"sendmmsg on {self.ifname}: {errno.errorcode.get(e, e)}")
            done += r
        return done


def set_timer_slack(ns: int = 1) -> None:
    """Ask for precise sleeps in this thread (prctl PR_SET_TIMERSLACK; default slack is 50 us)."""
    from rangectl.netns import libc

    with contextlib.suppress(Exception):
        libc().prctl(29, ctypes.c_ulong(ns), 0, 0, 0)



# --- a PACKET_MMAP transmit ring ------------------------------------------------------------

PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_VNET_HDR = 15
TPACKET_V2 = 1
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_SENDING = 2
TP_STATUS_WRONG_FORMAT = 4
TP_STATUS_BUSY = TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING | TP_STATUS_WRONG_FORMAT
TPACKET2_HDR = 32  # TPACKET_ALIGN(sizeof(struct tpacket2_hdr)); TX data starts here (tp_hdrlen - sockaddr_ll)
VNET_HDR = 10  # sizeof(struct virtio_net_hdr)
PAGE = mmap.PAGESIZE
RING_SLOTS = 1024  # frames per sendto(2) flush: the ring holds exactly one batch
RING_IMAGE_MAX = 512 << 20  # bytes of pre-built slots; bigger captures use sendmmsg(2)


def ring_geometry(max_frame: int, slots: int) -> tuple[int, int, int]:
    """(slot size, block size, blocks) of a TPACKET_V2 TX ring whose slots are contiguous.

    A slot is the 32-byte tpacket2 header, a 10-byte virtio_net_hdr and the
    frame, rounded up to TPACKET_ALIGNMENT (16). Frames never straddle a
    block, so the block is the least common multiple of the slot and the page
    size: then block after block the slots follow each other with no gap.
    """
    if max_frame < 14 or slots < 1:
        raise ValueError("a ring needs at least one slot for an Ethernet frame")
    size = (TPACKET2_HDR + VNET_HDR + max_frame + 15) & ~15
    block = size * PAGE // math.gcd(size, PAGE)
    per_block = block // size
    blocks = -(-slots // per_block)
    return size, block, blocks


def ring_image(frames: Sequence[bytes], slot: int, extra: int) -> bytearray:
    """Pre-built ring slots for ``frames`` followed by the first ``extra`` frames again (cyclically).

    Each slot reads exactly as the kernel wants it: tp_status SEND_REQUEST,
    tp_len (virtio header + frame), then at offset 32 a virtio_net_hdr whose
    hdr_len is the whole frame, then the frame. With that header the kernel
    copies the whole frame into the skb's head instead of attaching the ring's
    pages to it (measured on veth: 60-byte frames cost 0.8 us of CPU each
    instead of 1.2 us). With the extra frames, any run of up to ``extra + 1``
    frames starting inside the pass is one contiguous copy.
    """
    n = len(frames)
    total = n + extra
    img = bytearray(total * slot)
    head = struct.Struct("=II")
    vnet = struct.Struct("=BBHHHH")
    for s in range(total):
        f = frames[s % n]
        ln = len(f)
        o = s * slot
        img[o : o + 8] = head.pack(TP_STATUS_SEND_REQUEST, VNET_HDR + ln)
        d = o + TPACKET2_HDR
        img[d : d + VNET_HDR] = vnet.pack(0, 0, ln, 0, 0, 0)
        img[d + VNET_HDR : d + VNET_HDR + ln] = f
    return img


class TxRing:
    """Frames sent from a PACKET_MMAP TX ring (TPACKET_V2) on one AF_PACKET socket.

    The frames are laid out once as ring slots (:func:`ring_image`); a batch is
    one memmove of up to ``slots`` pre-built slots into the ring and one
    blocking ``sendto(fd, NULL, 0)``: the kernel sends every slot marked
    SEND_REQUEST, in order from its head, and returns once all are done (each
    slot is back to AVAILABLE); the next batch starts where this one ended
    (``head``). A frame the device
    refused (ENOBUFS: the peer's backlog was full) stays SEND_REQUEST and is
    sent again by the retry, so nothing is lost and nothing is sent twice.

    Raises OSError (or ValueError) when the ring cannot be set up: the caller
    falls back to :class:`PacketSocket`.
    """

    def __init__(
        self,
        ifname: str,
        frames: Sequence[bytes],
        *,
        mtu: int,
        qdisc_bypass: bool = True,
        slots: int | None = None,
        image_max: int | None = None,
    ):
        if not frames:
            raise ValueError("no frames to put in a ring")
        longest = max(len(f) for f in frames)
        if longest > mtu + 14 or min(len(f) for f in frames) < 14:
            # with a virtio header the kernel no longer checks the MTU: frames must fit it already
            raise ValueError(f"a frame of {longest} bytes does not fit the interface's MTU {mtu}")
        self.ifname = ifname
        self.n = len(frames)
        self.slot, block, blocks = ring_geometry(longest, slots or RING_SLOTS)
        self.per_block = block // self.slot
        self.slots = self.per_block * blocks
        image_max = image_max or RING_IMAGE_MAX
        if (self.n + self.slots) * self.slot > image_max:
            raise ValueError(f"{self.n} frames of up to {longest} bytes make a ring image over {image_max >> 20} MiB")
        self.size = block * blocks
        self.retries = 0
        self.flushes = 0
        self.head = 0  # the slot the kernel looks at next
        self.qdisc_bypass = False
        self._mm: mmap.mmap | None = None
        self._view: Any = None
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            s = self.sock
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            if qdisc_bypass:
                with contextlib.suppress(OSError):
                    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
                    self.qdisc_bypass = True
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            # a flush waits for its frames to complete; never forever (a stuck device): see send_range
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 1, 0))
            s.setsockopt(SOL_PACKET, PACKET_TX_RING, struct.pack("IIII", block, blocks, self.slot, self.slots))
            s.bind((ifname, 0))
            self._mm = mmap.mmap(s.fileno(), self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._view = (ctypes.c_char * self.size).from_buffer(self._mm)
            self.addr = ctypes.addressof(self._view)
            self._image = ring_image(frames, self.slot, self.slots - 1)
            self._image_view = (ctypes.c_char * len(self._image)).from_buffer(self._image)
            self.image_addr = ctypes.addressof(self._image_view)
        except BaseException:
            self.close()
            raise
        self.fd = self.sock.fileno()

    def close(self) -> None:
        self._view = None
        self._image_view = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self.sock.close()

    def __enter__(self) -> TxRing:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def status(self, slot: int) -> int:
        return ctypes.c_uint32.from_address(self.addr + slot * self.slot).value

    def send_range(self, start: int, count: int) -> int:
        """Send frames ``start, start+1, ...`` of the pass (cyclically, ``count <= slots``); returns ``count`` or raises."""
        if not 0 <= start < self.n or not 0 < count <= self.slots:
            raise ValueError(f"bad ring batch {start}+{count} (pass of {self.n}, ring of {self.slots})")
        sz = self.slot
        src = self.image_addr + start * sz
        head = self.head
        first = min(count, self.slots - head)
        ctypes.memmove(self.addr + head * sz, src, first * sz)
        if first < count:
            ctypes.memmove(self.addr, src + first * sz, (count - first) * sz)
        last = (head + count - 1) % self.slots
        send = self.sock.send
        while True:
            clean = True  # a blocking flush that returns has seen every frame of this socket complete
            try:
                send(b"")
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.ETIMEDOUT):
                    raise
                clean = False
                self.retries += 1
                if exc.errno == errno.ENOBUFS:
                    time.sleep(0.00005)
            st = self.status(last)
            if st & TP_STATUS_WRONG_FORMAT:
                raise OSError(errno.EINVAL, f"TX ring on {self.ifname}: the kernel refused a frame")
            if not st & TP_STATUS_SEND_REQUEST:
                break
            # slots from the kernel's head on are still to send (a frame was refused): flush again
        if not clean:
            # The kernel took every frame but the flush gave up before they all completed (its wait
            # timed out). Never flush with nothing marked (the kernel would spin until they
            # complete): wait here instead.
            self._wait_done(head, count)
        self.head = (head + count) % self.slots
        self.flushes += 1
        return count

    def _wait_done(self, head: int, count: int, timeout: float = 10.0) -> None:
        slots = [(head + k) % self.slots for k in range(count)]
        until = time.monotonic() + timeout
        while True:
            busy = [k for k in slots if self.status(k) & TP_STATUS_BUSY]
            if not busy:
                return
            if any(self.status(k) & TP_STATUS_WRONG_FORMAT for k in busy):
                raise OSError(errno.EINVAL, f"TX ring on {self.ifname}: the kernel refused a frame")
            if time.monotonic() > until:
                raise OSError(errno.ETIMEDOUT, f"TX ring on {self.ifname}: {len(busy)} frames still in flight")
            slots = busy
            time.sleep(0.0005)
