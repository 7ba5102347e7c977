"""What every generator shares: the context it runs in, its result record, its errors and the safety rule.

Safety rule: a generator sends only to addresses inside ``ctx.allowed_subnets``
(the team's own copy of the range). It checks every destination (and every
source it forges) *before* the first packet leaves and raises
:class:`TrafficRefused` naming the address otherwise. Every generator also
stops by itself: at its own packet/request count, at its ``duration``, at
``ctx.deadline``, or when ``ctx.stop`` is set, whichever comes first
(:class:`rangectl.traffic.pacing.Budget`).

How frames leave an interface (raw sockets, the TX ring, the packet tap that
counts them) is :mod:`rangectl.traffic.wire`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Callable, Sequence
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
