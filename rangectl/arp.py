"""Next hop: the Ethernet address frames to a destination must carry, seen from a namespace.

:func:`next_hop` takes the kernel's route for the destination (``ip route
get``, :mod:`rangectl.rtnetlink`), then its neighbour table; when the next hop
is not there it sends an ARP request for it on the outgoing interface.
:func:`next_hop_here` and :func:`source_for_here` are for code already running
inside the namespace.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from dataclasses import dataclass

from rangectl.netns import NetnsError, run_in_netns
from rangectl.rtnetlink import format_mac, interface_here, neighbours_here, route_get_here

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806


def mac_bytes(mac: str) -> bytes:
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"'{mac}' is not an Ethernet address")
    return bytes(int(p, 16) for p in parts)


def _arp_request(ifname: str, src_mac: bytes, src_ip: ipaddress.IPv4Address, target: ipaddress.IPv4Address) -> bytes:
    eth = b"\xff" * 6 + src_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + src_mac + src_ip.packed + b"\0" * 6 + target.packed
    return eth + arp


def _arp_resolve_here(
    ifname: str, src_ip: ipaddress.IPv4Address, target: ipaddress.IPv4Address, timeout: float, tries: int
) -> str | None:
    info = interface_here(ifname)
    if not info.mac:
        return None
    src_mac = mac_bytes(info.mac)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.htons(ETH_P_ARP))
    try:
        s.bind((ifname, ETH_P_ARP))
        frame = _arp_request(ifname, src_mac, src_ip, target)
        for _ in range(max(1, tries)):
            s.send(frame)
            end = time.monotonic() + timeout
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                s.settimeout(left)
                try:
                    data = s.recv(128)
                except TimeoutError:
                    break
                if len(data) < 42:
                    continue
                op = struct.unpack_from("!H", data, 20)[0]
                if op == 2 and data[28:32] == target.packed:
                    return format_mac(data[22:28])
            # the kernel may have learnt it meanwhile (our ARP and its own)
            for n in neighbours_here():
                if n.ip == target and n.valid and n.ifindex == info.index:
                    return n.mac
        return None
    finally:
        s.close()


@dataclass(frozen=True)
class NextHop:
    """Where frames to ``dst`` go from a namespace: interface, its MAC and source, the next hop and its MAC."""

    dst: ipaddress.IPv4Address
    ifname: str
    ifindex: int
    src_mac: str
    src_ip: ipaddress.IPv4Address
    hop_ip: ipaddress.IPv4Address
    hop_mac: str
    via: str  # "neighbour-table" or "arp"


def _next_hop_here(dst: str, timeout: float, tries: int, src_ip: str | None) -> NextHop:
    route = route_get_here(dst)
    if route.type == "local":
        raise NetnsError(f"{dst} is an address of the sending namespace itself")
    if route.type != "unicast" or route.ifname is None:
        raise NetnsError(f"no unicast route to {dst} (route type {route.type})")
    info = interface_here(route.ifname)
    if not info.mac:
        raise NetnsError(f"interface {route.ifname} has no Ethernet address")
    src = ipaddress.IPv4Address(src_ip) if src_ip else route.prefsrc
    if src is None:
        src = info.ipv4[0].ip if info.ipv4 else None
    if src is None:
        raise NetnsError(f"interface {route.ifname} has no IPv4 address")
    hop = route.next_hop
    for n in neighbours_here():
        if n.ip == hop and n.ifindex == info.index and n.valid:
            return NextHop(route.dst, info.name, info.index, info.mac, src, hop, n.mac or "", "neighbour-table")
    mac = _arp_resolve_here(info.name, src, hop, timeout, tries)
    if not mac:
        raise NetnsError(
            f"next hop {hop} for {dst} does not answer ARP on {info.name}",
            fix="check the node's gateway and that the next hop is up",
        )
    return NextHop(route.dst, info.name, info.index, info.mac, src, hop, mac, "arp")


def next_hop_here(dst: str, timeout: float = 0.5, tries: int = 3, src_ip: str | None = None) -> NextHop:
    """:func:`next_hop` for code already running inside the namespace."""
    return _next_hop_here(str(dst), timeout, tries, src_ip)


def next_hop(
    netns_path: str | None, dst: str | ipaddress.IPv4Address, timeout: float = 0.5, tries: int = 3
) -> NextHop:
    """Resolve the outgoing interface and next-hop MAC for ``dst`` inside a namespace.

    Uses the kernel's route (``ip route get``), then its neighbour table; if the
    next hop is not there, sends an ARP request for it on the outgoing
    interface (``tries`` times, ``timeout`` seconds each).
    """
    return run_in_netns(netns_path, _next_hop_here, str(dst), timeout, tries, None)


def source_for_here(dst: str) -> ipaddress.IPv4Address:
    """The source address the kernel picks for ``dst`` (UDP connect: sends nothing)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        s.connect((str(dst), 9))
        return ipaddress.IPv4Address(s.getsockname()[0])
    except OSError as exc:
        raise NetnsError(f"no route to {dst}: {exc.strerror}") from exc
    finally:
        s.close()
