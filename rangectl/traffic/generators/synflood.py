"""The ``synflood`` generator: TCP SYNs at a bounded rate and count, as raw Ethernet frames.

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
import time

from rangectl.netns import run_in_netns
from rangectl.scenario.traffic_params import SynfloodParams
from rangectl.traffic.base import (
    TrafficContext,
    TrafficError,
    TrafficResult,
    check_address,
    check_network,
    target_of,
    utcnow,
)
from rangectl.traffic.nexthop import next_hop
from rangectl.traffic.pacing import Budget
from rangectl.traffic.packets import SynTemplate
from rangectl.traffic.wire import PacketSocket


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
    hop = next_hop(ctx, dst)
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
