"""rtnetlink: ask a network namespace's kernel about its interfaces, addresses, routes and neighbours.

:func:`route_get` (``ip route get``), :func:`links`, :func:`addresses`,
:func:`neighbours`, :func:`interface` and :func:`routes` open their netlink
socket inside the namespace (:func:`rangectl.netns.run_in_netns`), so the
answers are that namespace's. The ``*_here`` variants ask the calling thread's
own namespace: for code already running inside one.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from rangectl.netns import NetnsError, run_in_netns

NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_NOWHERE = 254, 3, 0, 255
RTA_GATEWAY = 5
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST, RTN_MULTICAST = 1, 2, 3, 5
RTN_NAMES = {
    0: "unspec",
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
}
NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_FAILED, NUD_NOARP, NUD_PERMANENT = (
    0x01,
    0x02,
    0x04,
    0x08,
    0x10,
    0x20,
    0x40,
    0x80,
)
NUD_VALID = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP

_seq = 0
_seq_lock = threading.Lock()


def _next_seq() -> int:
    global _seq
    with _seq_lock:
        _seq = (_seq + 1) & 0x7FFFFFFF
        return _seq


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        length, typ = struct.unpack_from("=HH", buf, off)
        if length < 4:
            break
        out.setdefault(typ & 0x3FFF, buf[off + 4 : off + length])
        off += (length + 3) & ~3
    return out


def _rtattr(typ: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, typ) + data + b"\0" * (((length + 3) & ~3) - length)


def _netlink(msg_type: int, flags: int, payload: bytes) -> list[tuple[int, bytes]]:
    """One rtnetlink request in the calling thread's namespace; returns (type, body) of each answer."""
    seq = _next_seq()
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        s.settimeout(5.0)
        s.bind((0, 0))
        hdr = struct.pack("=IHHII", 16 + len(payload), msg_type, flags | NLM_F_REQUEST, seq, 0)
        s.send(hdr + payload)
        out: list[tuple[int, bytes]] = []
        while True:
            data = s.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, typ, _fl, mseq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    return out
                body = data[off + 16 : off + length]
                off += (length + 3) & ~3
                if mseq != seq:
                    continue
                if typ == NLMSG_DONE:
                    return out
                if typ == NLMSG_ERROR:
                    (errno_,) = struct.unpack_from("=i", body, 0)
                    if errno_ == 0:  # an ACK
                        return out
                    raise OSError(-errno_, os.strerror(-errno_))
                out.append((typ, body))
                if not flags & NLM_F_DUMP:
                    return out
    finally:
        s.close()


@dataclass(frozen=True)
class Route:
    """The kernel's answer to ``ip route get DST``."""

    dst: ipaddress.IPv4Address
    type: str  # unicast, local, broadcast, unreachable, ...
    ifindex: int | None
    ifname: str | None
    gateway: ipaddress.IPv4Address | None
    prefsrc: ipaddress.IPv4Address | None

    @property
    def next_hop(self) -> ipaddress.IPv4Address:
        return self.gateway or self.dst


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: str | None
    mtu: int | None
    up: bool
    peer: int | None = None  # IFLA_LINK: a veth's peer's index, in the peer's namespace ("eth0@if12")


@dataclass(frozen=True)
class Address:
    ifindex: int
    ifname: str | None
    interface: ipaddress.IPv4Interface  # address with prefix


@dataclass(frozen=True)
class Neighbour:
    ifindex: int
    ip: ipaddress.IPv4Address
    mac: str | None
    state: int

    @property
    def valid(self) -> bool:
        return bool(self.mac) and bool(self.state & NUD_VALID)


def format_mac(b: bytes | None) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` for a 6-byte hardware address, None for anything else."""
    if not b or len(b) != 6:
        return None
    return ":".join(f"{x:02x}" for x in b)


def route_get_here(dst: str) -> Route:
    d = ipaddress.IPv4Address(dst)
    payload = struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, 0, 0, 0, 0, 0) + _rtattr(1, d.packed)
    try:
        answers = _netlink(RTM_GETROUTE, 0, payload)
    except OSError as exc:
        raise NetnsError(f"no route to {d}: {exc.strerror}") from exc
    for typ, body in answers:
        if typ != RTM_NEWROUTE:
            continue
        rtype = body[7]
        a = _attrs(body, 12, len(body))
        oif = struct.unpack("=i", a[4])[0] if 4 in a else None
        gw = ipaddress.IPv4Address(a[5]) if 5 in a and len(a[5]) == 4 else None
        src = ipaddress.IPv4Address(a[7]) if 7 in a and len(a[7]) == 4 else None
        name = _ifname(oif) if oif else None
        return Route(d, RTN_NAMES.get(rtype, str(rtype)), oif, name, gw, src)
    raise NetnsError(f"no route to {d}")


def _ifname(index: int) -> str | None:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def links_here() -> list[Link]:
    out = []
    for _typ, body in _netlink(RTM_GETLINK, NLM_F_DUMP, struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, 0, 0, 0)):
        _fam, _pad, _htype, index, flags, _change = struct.unpack_from("=BBHiII", body, 0)
        a = _attrs(body, 16, len(body))
        name = a.get(3, b"").rstrip(b"\0").decode(errors="replace")
        mtu = struct.unpack("=I", a[4])[0] if 4 in a else None
        peer = struct.unpack("=i", a[5])[0] if 5 in a else None
        out.append(Link(index, name, format_mac(a.get(1)), mtu, bool(flags & 0x1), peer if peer != index else None))
    return out


def addresses_here() -> list[Address]:
    names = {i: n for i, n in socket.if_nameindex()}
    out = []
    for _typ, body in _netlink(RTM_GETADDR, NLM_F_DUMP, struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)):
        _fam, plen, _flags, _scope, index = struct.unpack_from("=BBBBI", body, 0)
        a = _attrs(body, 8, len(body))
        raw = a.get(2) or a.get(1)  # IFA_LOCAL, else IFA_ADDRESS
        if not raw or len(raw) != 4:
            continue
        iface = ipaddress.IPv4Interface((ipaddress.IPv4Address(raw), plen))
        out.append(Address(index, names.get(index), iface))
    return out


def neighbours_here() -> list[Neighbour]:
    out = []
    for _typ, body in _netlink(RTM_GETNEIGH, NLM_F_DUMP, struct.pack("=BBHiHBB", socket.AF_INET, 0, 0, 0, 0, 0, 0)):
        _fam, _p1, _p2, index, state, _fl, _t = struct.unpack_from("=BBHiHBB", body, 0)
        a = _attrs(body, 12, len(body))
        if 1 not in a or len(a[1]) != 4:
            continue
        out.append(Neighbour(index, ipaddress.IPv4Address(a[1]), format_mac(a.get(2)), state))
    return out


def set_default_route_here(gateway: str | ipaddress.IPv4Address | None) -> bool:
    """``ip route replace default via GATEWAY`` (``gateway``), or ``ip route del default``
    (None), in the calling thread's namespace. True when a route was set or deleted; False
    when there was no default route to delete. OSError when the kernel refuses (for example
    ENETUNREACH: the gateway is on none of the namespace's networks)."""
    if gateway is None:
        rtm = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, 0, RT_SCOPE_NOWHERE, 0, 0)
        try:
            _netlink(RTM_DELROUTE, NLM_F_ACK, rtm)
        except OSError as exc:
            if exc.errno == 3:  # ESRCH: no default route
                return False
            raise
        return True
    rtm = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    rtm += _rtattr(RTA_GATEWAY, ipaddress.IPv4Address(str(gateway)).packed)
    _netlink(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, rtm)
    return True


def set_default_route(netns_path: str | None, gateway: str | ipaddress.IPv4Address | None) -> bool:
    """:func:`set_default_route_here` inside ``netns_path``."""
    return run_in_netns(netns_path, set_default_route_here, gateway)


def route_get(netns_path: str | None, dst: str | ipaddress.IPv4Address) -> Route:
    """The route the namespace's kernel picks for ``dst`` (outgoing interface, gateway, source)."""
    return run_in_netns(netns_path, route_get_here, str(dst))


def links(netns_path: str | None) -> list[Link]:
    return run_in_netns(netns_path, links_here)


def addresses(netns_path: str | None) -> list[Address]:
    """IPv4 addresses of the namespace's interfaces (every address, not only the primary)."""
    return run_in_netns(netns_path, addresses_here)


def neighbours(netns_path: str | None) -> list[Neighbour]:
    return run_in_netns(netns_path, neighbours_here)


@dataclass(frozen=True)
class InterfaceInfo:
    name: str
    index: int
    mac: str | None
    mtu: int | None
    up: bool
    ipv4: list[ipaddress.IPv4Interface] = field(default_factory=list)


def interface_here(name: str) -> InterfaceInfo:
    for ln in links_here():
        if ln.name == name:
            addrs = [a.interface for a in addresses_here() if a.ifindex == ln.index]
            return InterfaceInfo(ln.name, ln.index, ln.mac, ln.mtu, ln.up, addrs)
    raise NetnsError(f"no interface '{name}' in this namespace")


def interface(netns_path: str | None, name: str) -> InterfaceInfo:
    """Name, index, MAC, MTU and IPv4 addresses of one interface of the namespace."""
    return run_in_netns(netns_path, interface_here, name)


def routes_here() -> list[dict[str, Any]]:
    out = []
    payload = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
    for _typ, body in _netlink(RTM_GETROUTE, NLM_F_DUMP, payload):
        _fam, dlen, _slen, _tos, table, _proto, scope, rtype, _flags = struct.unpack_from("=BBBBBBBBI", body, 0)
        a = _attrs(body, 12, len(body))
        table = struct.unpack("=I", a[15])[0] if 15 in a else table
        if table != 254:  # main table only, as `ip route` shows
            continue
        dst = ipaddress.IPv4Address(a[1]) if 1 in a else ipaddress.IPv4Address(0)
        oif = struct.unpack("=i", a[4])[0] if 4 in a else None
        out.append(
            {
                "dst": str(ipaddress.IPv4Network((dst, dlen), strict=False)),
                "type": RTN_NAMES.get(rtype, str(rtype)),
                "dev": _ifname(oif) if oif else None,
                "gateway": str(ipaddress.IPv4Address(a[5])) if 5 in a else None,
                "prefsrc": str(ipaddress.IPv4Address(a[7])) if 7 in a else None,
                "scope": scope,
            }
        )
    return out


def routes(netns_path: str | None) -> list[dict[str, Any]]:
    """The main IPv4 routing table of the namespace, like ``ip -4 route``."""
    return run_in_netns(netns_path, routes_here)
