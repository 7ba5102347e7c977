"""The ``pcap`` generator: replay a capture with its addresses mapped onto this team's nodes."""

from __future__ import annotations

from rangectl.scenario.traffic_params import PcapParams
from rangectl.traffic.base import TrafficContext, TrafficResult
from rangectl.traffic.pcapfile import resolve_capture
from rangectl.traffic.replay import replay_pcap


def run_pcap(p: PcapParams, ctx: TrafficContext) -> TrafficResult:
    """The ``pcap`` generator: resolve the file and the node names of ``map``, then :func:`replay_pcap`."""
    path = resolve_capture(p.file, ctx)
    amap = {k: str(ctx.resolve_node(v)) for k, v in p.map.items()}
    return replay_pcap(
        path, ctx, address_map=amap, speed=p.speed, pps=p.pps, topspeed=p.topspeed, loop=p.loop,
        max_packets=p.max_packets, duration=p.duration, drop_outside=p.drop_outside,
    )  # fmt: skip
