"""Session-level generators' common ground: ordinary sockets opened inside the node's namespace.

The whole generator runs in a worker thread switched into the namespace, so
every socket it opens (http.client's, smtplib's, its own) belongs to the node:
packets carry the node's address and follow its routes. TCP generators count
what actually left the interface with a packet tap (:class:`WireCounter`);
UDP generators count their datagrams exactly.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rangectl.netns import run_in_netns
from rangectl.rtnetlink import route_get_here
from rangectl.traffic.base import TrafficContext, TrafficError, TrafficResult, target_of, utcnow
from rangectl.traffic.wire import WireCounter

ETH_IP_UDP = 14 + 20 + 8  # frame bytes around a UDP payload (no IP options)


@dataclass
class Session:
    """What a session generator's body gets: addresses, the tap, and a place for its tallies."""

    ctx: TrafficContext
    dst: ipaddress.IPv4Address
    src: ipaddress.IPv4Address
    iface: str
    app_bytes: int = 0
    exact_packets: int = 0
    exact_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def source_address(self) -> tuple[str, int] | None:
        return (str(self.ctx.src_ip), 0) if self.ctx.src_ip else None

    def tcp(self, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((str(self.dst), port), timeout=timeout, source_address=self.source_address)

    def udp(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        if self.ctx.src_ip:
            s.bind((str(self.ctx.src_ip), 0))
        s.connect((str(self.dst), port))
        return s


def run_session(
    kind: str, ctx: TrafficContext, body: Callable[[Session], str], *, tap: bool = True
) -> TrafficResult:
    """Run ``body`` in the namespace with a tap on the outgoing interface; build the result record."""
    dst = target_of(ctx, kind)

    def here() -> TrafficResult:
        route = route_get_here(str(dst))
        if route.type == "local":
            raise TrafficError(f"{dst} is the sending node's own address")
        if route.type != "unicast" or not route.ifname:
            raise TrafficError(f"no route to {dst} from the source node (route type {route.type})")
        iface = ctx.src_iface or route.ifname
        src = ctx.src_ip or route.prefsrc
        if src is None:
            raise TrafficError(f"no source address for {dst} on {iface}")
        sess = Session(ctx, dst, src, iface)
        counter = None
        if tap:
            try:
                counter = WireCounter(iface, [dst]).start()
            except OSError:
                counter = None
        started = utcnow()
        try:
            stopped = body(sess)
        finally:
            ended = utcnow()
            if counter is not None:
                counter.stop()
        if not tap:
            packets, nbytes, counted = sess.exact_packets, sess.exact_bytes, "exact"
        elif counter is not None:
            packets, nbytes, counted = counter.packets, counter.bytes, "wire"
        else:
            packets, nbytes, counted = 0, sess.app_bytes, "estimate"
        return TrafficResult(
            kind=kind,
            src_ip=str(src),
            dst_ip=str(dst),
            started=started,
            ended=ended,
            packets_sent=packets,
            bytes_sent=nbytes,
            stopped=stopped,
            counted=counted,
            src_iface=iface,
            details=sess.details,
        )

    return run_in_netns(ctx.netns_path, here)
