"""The next hop of a raw frame sent from the node: the scenario's router, or the target on the same segment."""

from __future__ import annotations

import ipaddress

from rangectl.arp import NextHop, next_hop_here
from rangectl.traffic.base import TrafficContext, TrafficError


def next_hop(ctx: TrafficContext, dst: ipaddress.IPv4Address) -> NextHop:
    """The hop for ``dst`` from here (inside the namespace); refused if it leaves by another interface."""
    hop = next_hop_here(str(dst), src_ip=str(ctx.src_ip) if ctx.src_ip else None)
    if ctx.src_iface and ctx.src_iface != hop.ifname:
        raise TrafficError(f"{dst} is routed out of {hop.ifname}, not {ctx.src_iface}")
    return hop
