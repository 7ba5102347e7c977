"""The ``portscan`` generator: half-open SYN probes (raw frames on one AF_PACKET socket) or full connects.

The SYN method sends frames from the node's own MAC and address to the next
hop's MAC and reads the answers off the wire; the connect method opens
ordinary non-blocking sockets inside the node's namespace.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import random
import selectors
import socket
import struct
import time

from rangectl.netns import run_in_netns
from rangectl.scenario.traffic_params import PortscanParams
from rangectl.traffic.base import TrafficContext, TrafficResult, target_of, utcnow
from rangectl.traffic.nexthop import next_hop
from rangectl.traffic.node_session import Session, run_session
from rangectl.traffic.pacing import Budget
from rangectl.traffic.packets import PROTO_ICMP, PROTO_TCP, TCP_RST, TCP_SYN, SynTemplate
from rangectl.traffic.wire import PACKET_OUTGOING, PacketSocket


def run_portscan(p: PortscanParams, ctx: TrafficContext) -> TrafficResult:
    """Scan ``p.port_list`` on the target with ``p.method`` (``syn`` or ``connect``)."""
    if p.method == "syn":
        return run_portscan_syn(p, ctx)
    return run_portscan_connect(p, ctx)


# --- SYN scan ---------------------------------------------------------------------------


def run_portscan_syn(p: PortscanParams, ctx: TrafficContext) -> TrafficResult:
    dst = target_of(ctx, "portscan")
    return run_in_netns(ctx.netns_path, _synscan_here, p, ctx, dst)


def _synscan_here(p: PortscanParams, ctx: TrafficContext, dst: ipaddress.IPv4Address) -> TrafficResult:
    hop = next_hop(ctx, dst)
    ports = p.port_list
    rnd = random.Random()
    if p.randomize:
        rnd.shuffle(ports)
    sport = rnd.randrange(40000, 61000)
    seq_base = rnd.getrandbits(32)

    def seq_of(port: int) -> int:
        return (seq_base + port * 7919) & 0xFFFFFFFF

    tmpl = SynTemplate(hop.src_mac, hop.hop_mac, hop.src_ip, dst)
    state: dict[int, str] = {}
    dpack = dst.packed
    wanted = set(ports)

    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.htons(0x0800))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind((hop.ifname, 0x0800))
    rx.setblocking(False)

    def drain() -> None:
        while True:
            try:
                data, addr = rx.recvfrom(256)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] == PACKET_OUTGOING or len(data) < 34 or data[26:30] != dpack:
                continue
            ihl = (data[14] & 0x0F) * 4
            l4 = 14 + ihl
            proto = data[23]
            if proto == PROTO_TCP and len(data) >= l4 + 14:
                sp, dp, _seq, ack = struct.unpack_from("!HHII", data, l4)
                flags = data[l4 + 13]
                if dp != sport or sp not in wanted or ack != (seq_of(sp) + 1) & 0xFFFFFFFF:
                    continue
                if flags & TCP_SYN and flags & 0x10:
                    state[sp] = "open"
                elif flags & TCP_RST:
                    state.setdefault(sp, "closed")
            elif proto == PROTO_ICMP and len(data) >= l4 + 8 + 20 + 4 and data[l4] == 3:
                inner = l4 + 8
                iihl = (data[inner] & 0x0F) * 4
                if len(data) >= inner + iihl + 4 and data[inner + 9] == PROTO_TCP:
                    isp, idp = struct.unpack_from("!HH", data, inner + iihl)
                    if isp == sport and idp in wanted:
                        state.setdefault(idp, "filtered")

    budget = Budget(ctx, count=len(ports) * (1 + p.retries), duration=p.duration, rate=None)
    sent = nbytes = 0
    started = utcnow()
    stopped = "done"
    try:
        with PacketSocket(hop.ifname) as sock:
            t0 = time.monotonic()
            for attempt in range(1 + p.retries):
                todo = [pt for pt in ports if pt not in state]
                if not todo or stopped != "done":
                    break
                for port in todo:
                    if budget.expired():
                        stopped = budget.reason
                        break
                    due = t0 + sent / p.rate
                    while True:
                        drain()
                        left = due - time.monotonic()
                        if left <= 0:
                            break
                        time.sleep(min(left, 0.01))
                    frame = tmpl.frame(sport, port, seq_of(port), rnd.getrandbits(16))
                    sock.send(frame)
                    sent += 1
                    nbytes += len(frame)
                # answers to this pass
                end = time.monotonic() + min(p.timeout, budget.remaining())
                while time.monotonic() < end and len(state) < len(ports):
                    drain()
                    time.sleep(0.005)
                if attempt == p.retries:
                    break
            drain()
    finally:
        rx.close()
    ended = utcnow()
    open_ports = sorted(pt for pt, s in state.items() if s == "open")
    closed = sum(1 for s in state.values() if s == "closed")
    return TrafficResult(
        kind="portscan",
        src_ip=str(hop.src_ip),
        dst_ip=str(dst),
        started=started,
        ended=ended,
        packets_sent=sent,
        bytes_sent=nbytes,
        stopped=stopped,
        counted="exact",
        src_iface=hop.ifname,
        details={
            "method": "syn",
            "ports_probed": len(ports),
            "open": open_ports,
            "closed": closed,
            "filtered": len(ports) - len(open_ports) - closed,
            "source_port": sport,
            "next_hop": {"ip": str(hop.hop_ip), "mac": hop.hop_mac},
            "note": "the node's kernel answers each SYN-ACK with a RST; those are not counted in packets_sent",
        },
    )


# --- connect scan ----------------------------------------------------------------------


def run_portscan_connect(p: PortscanParams, ctx: TrafficContext) -> TrafficResult:
    ports = p.port_list
    if p.randomize:
        random.shuffle(ports)

    def body(s: Session) -> str:
        budget = Budget(ctx, count=len(ports), duration=p.duration, rate=None)
        sel = selectors.DefaultSelector()
        inflight: dict[socket.socket, tuple[int, float]] = {}
        state: dict[int, str] = {}
        queue = list(ports)
        launched = 0
        t0 = time.monotonic()
        stopped = "done"

        def finish(sock: socket.socket, port: int, result: str) -> None:
            state[port] = result
            with contextlib.suppress(Exception):
                sel.unregister(sock)
            sock.close()
            inflight.pop(sock, None)

        try:
            while queue or inflight:
                if queue and budget.expired():
                    stopped = budget.reason
                    queue.clear()
                now = time.monotonic()
                allowed = int((now - t0) * p.rate) + 1 - launched
                while queue and allowed > 0 and len(inflight) < p.concurrency:
                    port = queue.pop(0)
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                    sock.setblocking(False)
                    if s.source_address:
                        sock.bind(s.source_address)
                    rc = sock.connect_ex((str(s.dst), port))
                    launched += 1
                    allowed -= 1
                    if rc in (0, errno.EINPROGRESS):
                        inflight[sock] = (port, now)
                        sel.register(sock, selectors.EVENT_WRITE)
                    else:
                        state[port] = "closed" if rc == errno.ECONNREFUSED else "filtered"
                        sock.close()
                wait = 0.01 if queue else 0.05
                for key, _ev in sel.select(timeout=wait) if inflight else []:
                    sock = key.fileobj  # type: ignore[assignment]
                    port, _ = inflight[sock]  # type: ignore[index]
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]
                    finish(sock, port, "open" if err == 0 else "closed" if err == errno.ECONNREFUSED else "filtered")  # type: ignore[arg-type]
                now = time.monotonic()
                for sock, (port, t) in list(inflight.items()):
                    if now - t >= p.timeout or (not queue and budget.expired()):
                        finish(sock, port, "filtered")
                if not inflight and not queue:
                    break
                if not inflight:
                    time.sleep(0.002)
        finally:
            for sock in list(inflight):
                sock.close()
            sel.close()
        open_ports = sorted(pt for pt, st in state.items() if st == "open")
        closed = sum(1 for st in state.values() if st == "closed")
        s.details.update(
            {
                "method": "connect",
                "ports_probed": len(state),
                "open": open_ports,
                "closed": closed,
                "filtered": len(state) - len(open_ports) - closed,
                "connects": launched,
            }
        )
        return stopped

    return run_session("portscan", ctx, body)
