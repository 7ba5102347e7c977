"""Count what arrives at a node: a packet tap in the receiver's namespace, filtered in the kernel.

:class:`ArrivalCounter` opens one AF_PACKET socket inside a namespace (all
interfaces), attaches a classic BPF program that accepts only IPv4 frames
*received* (not sent) whose source is one of the given addresses/networks and
whose destination is one of the node's addresses, and reads the kernel's
``PACKET_STATISTICS`` at the end. The kernel counts every frame the filter
accepts, including those it had to drop because the socket's queue was full,
so the count stays exact at any rate; nothing has to keep up in Python. A
reader thread drains the queue to add up bytes; when the kernel dropped
frames, ``bytes`` is ``None`` (unknown) rather than too low.

:func:`bpf_program` is pure (unit-tested); the rest needs root.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rangectl.netns import run_in_netns
from rangectl.traffic.wire import ETH_P_ALL, PACKET_OUTGOING, SOL_PACKET

PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26

# classic BPF opcodes
LD_W_ABS, LD_H_ABS, LD_B_ABS = 0x20, 0x28, 0x30
JEQ_K, JA = 0x15, 0x05
AND_K = 0x54
RET_K = 0x06
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4

MAX_MATCHES = 100  # addresses + networks per side; keeps jumps inside the 8-bit offsets
SNAP = 96  # bytes of each accepted frame queued for the reader (headers are enough)


@dataclass(frozen=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int

    def pack(self) -> bytes:
        return struct.pack("=HBBI", self.code, self.jt, self.jf, self.k & 0xFFFFFFFF)


def _as_nets(items: Iterable[object]) -> list[ipaddress.IPv4Network]:
    out: list[ipaddress.IPv4Network] = []
    for it in items:
        net = ipaddress.IPv4Network(str(it), strict=False)
        if net not in out:
            out.append(net)
    return out


def bpf_program(sources: Iterable[object], destinations: Iterable[object], snap: int = SNAP) -> list[Insn]:
    """A filter accepting received IPv4 frames from any of ``sources`` to any of ``destinations``.

    Both are addresses or networks (``10.0.0.5``, ``10.0.0.0/24``). An empty
    ``sources`` accepts any source. Frames the socket's own host sent
    (``PACKET_OUTGOING``) never match, so a node's replies are not counted.
    """
    srcs = _as_nets(sources)
    dsts = _as_nets(destinations)
    if not dsts:
        raise ValueError("no destination address to count arrivals at")
    if len(srcs) > MAX_MATCHES or len(dsts) > MAX_MATCHES:
        raise ValueError(f"at most {MAX_MATCHES} source and {MAX_MATCHES} destination matches")
    prog: list[tuple[str, int, object, object, int]] = []  # (op, code, jt label, jf label, k)

    def emit(code: int, k: int = 0, jt: object = 0, jf: object = 0) -> None:
        prog.append(("i", code, jt, jf, k))

    def label(name: str) -> None:
        prog.append(("l", 0, name, None, 0))

    def match(nets: list[ipaddress.IPv4Network], offset: int, hit: str) -> None:
        """A = the 32-bit word at ``offset``; jump to ``hit`` on a match, fall through otherwise."""
        emit(LD_W_ABS, offset)
        for n in nets:
            if n.prefixlen == 32:
                emit(JEQ_K, int(n.network_address), jt=hit, jf=0)
            else:
                emit(AND_K, int(n.netmask))
                emit(JEQ_K, int(n.network_address), jt=hit, jf=0)
                emit(LD_W_ABS, offset)  # reload for the next comparison

    emit(LD_B_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE)
    emit(JEQ_K, PACKET_OUTGOING, jt="reject", jf=0)
    emit(LD_H_ABS, 12)
    emit(JEQ_K, 0x0800, jt=0, jf="reject")
    if srcs:
        match(srcs, 26, "dst")
        emit(RET_K, 0)
    label("dst")
    match(dsts, 30, "accept")
    label("reject")
    emit(RET_K, 0)
    label("accept")
    emit(RET_K, snap)

    # resolve labels into relative jump offsets
    where: dict[str, int] = {}
    pc = 0
    for op, _c, name, _f, _k in prog:
        if op == "l":
            where[str(name)] = pc
        else:
            pc += 1
    out: list[Insn] = []
    pc = 0
    for op, code, jt, jf, k in prog:
        if op == "l":
            continue

        def off(target: object, pc: int = pc) -> int:
            if isinstance(target, int):
                return target
            d = where[str(target)] - pc - 1
            if not 0 <= d <= 255:
                raise ValueError("filter too long")
            return d

        out.append(Insn(code, off(jt), off(jf), k))
        pc += 1
    return out


def run_bpf(prog: Sequence[Insn], frame: bytes, pkttype: int = 0) -> int:
    """Interpret ``prog`` on ``frame`` (only the opcodes :func:`bpf_program` emits): the snap length, 0 = drop."""
    a = 0
    pc = 0
    while pc < len(prog):
        ins = prog[pc]
        if ins.code in (LD_W_ABS, LD_H_ABS, LD_B_ABS):
            k = ins.k if ins.k < 0x80000000 else ins.k - (1 << 32)
            if k == SKF_AD_OFF + SKF_AD_PKTTYPE:
                a = pkttype
            else:
                size = {LD_W_ABS: 4, LD_H_ABS: 2, LD_B_ABS: 1}[ins.code]
                if k < 0 or k + size > len(frame):
                    return 0
                a = int.from_bytes(frame[k : k + size], "big")
        elif ins.code == AND_K:
            a &= ins.k
        elif ins.code == JEQ_K:
            pc += ins.jt if a == ins.k else ins.jf
        elif ins.code == JA:
            pc += ins.k
        elif ins.code == RET_K:
            return ins.k
        else:
            raise ValueError(f"opcode {ins.code:#x} not interpreted")
        pc += 1
    return 0


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _attach(sock: socket.socket, prog: Sequence[Insn]) -> None:
    code = b"".join(i.pack() for i in prog)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(ctypes.string_at(ctypes.addressof(fprog), ctypes.sizeof(fprog))))


def _open_here(prog: Sequence[Insn]) -> socket.socket:
    # Unbound, on every interface of the namespace. Frames that arrive before the
    # filter is attached are drained and the counters reset: nothing has been sent yet.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.htons(ETH_P_ALL))
    try:
        _attach(s, prog)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                s.recv(1)
        _stats(s)  # reset the counters
    except BaseException:
        s.close()
        raise
    return s


def _stats(s: socket.socket) -> tuple[int, int]:
    """(packets accepted by the filter, of which dropped) since the last call; the kernel resets them."""
    raw = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    packets, drops = struct.unpack("=II", raw)
    return packets, drops


@dataclass
class Arrivals:
    packets: int
    bytes: int | None  # None when the kernel dropped frames from the tap's queue (packets stay exact)
    drops: int
    first: float | None  # wall time of the first/last frame read (None when none was read)
    last: float | None

    def as_dict(self) -> dict[str, object]:
        return {"packets": self.packets, "bytes": self.bytes, "tap_drops": self.drops}


class ArrivalCounter:
    """Counts frames arriving in ``netns_path`` from ``sources`` to ``destinations`` (see module doc).

    ``start()`` before sending, ``stop(grace)`` after: it waits ``grace``
    seconds for frames still in flight, then returns :class:`Arrivals`.
    ``drain=False`` leaves the queue alone (no Python thread competes with a
    sender in the same process): packets stay exact, bytes are then unknown
    once the queue overflowed.
    """

    def __init__(
        self, netns_path: str | None, sources: Iterable[object], destinations: Iterable[object], *, drain: bool = True
    ):
        self.prog = bpf_program(sources, destinations)
        self.netns_path = netns_path
        self.drain = drain
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._bytes = 0
        self._read = 0
        self._first: float | None = None
        self._last: float | None = None
        self._packets = 0
        self._drops = 0

    def start(self) -> ArrivalCounter:
        self._sock = run_in_netns(self.netns_path, _open_here, self.prog)
        self._sock.settimeout(0.05)
        if self.drain:
            self._thread = threading.Thread(target=self._drain, name="rangectl-arrivals", daemon=True)
            self._thread.start()
        return self

    def _drain(self) -> None:
        assert self._sock is not None
        buf = bytearray(SNAP)
        s = self._sock
        while not self._done.is_set():
            try:
                n = s.recv_into(buf, SNAP, socket.MSG_TRUNC)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.time()
            if self._first is None:
                self._first = now
            self._last = now
            self._read += 1
            self._bytes += n
            # keep the kernel's counters from wrapping on very long runs
            if not self._read % 1_000_000:
                p, d = _stats(s)
                self._packets += p
                self._drops += d

    def stop(self, grace: float = 0.3) -> Arrivals:
        if self._sock is None:
            raise RuntimeError("ArrivalCounter was not started")
        time.sleep(max(0.0, grace))
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        try:
            p, d = _stats(self._sock)
            # what the reader did not get to yet is still queued: read it so bytes add up
            self._sock.setblocking(False)
            buf = bytearray(SNAP)
            while True:
                try:
                    n = self._sock.recv_into(buf, SNAP, socket.MSG_TRUNC)
                except (BlockingIOError, InterruptedError, OSError):
                    break
                self._read += 1
                self._bytes += n
        finally:
            self._sock.close()
            self._sock = None
        packets = self._packets + p
        drops = self._drops + d
        return Arrivals(packets, None if drops else self._bytes, drops, self._first, self._last)

    def close(self) -> None:
        self._done.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
