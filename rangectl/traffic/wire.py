"""Frames on the wire of one interface: raw AF_PACKET sockets out, a packet tap counting what left.

- :class:`PacketSocket` sends frames one at a time or in sendmmsg(2) batches
  (:class:`FrameBatch`);
- :class:`TxRing` sends pre-built frames from a PACKET_MMAP TX ring
  (:func:`ring_geometry`, :func:`ring_image`);
- :class:`WireCounter` counts the frames leaving an interface towards given
  addresses (for socket-level generators, whose frames the kernel builds).

All of them are created inside the sending namespace (:func:`rangectl.netns.run_in_netns`).
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
from collections.abc import Iterable, Sequence
from typing import Any

from rangectl.netns import libc

IPv4 = ipaddress.IPv4Address


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
