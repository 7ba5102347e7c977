"""Network namespaces: run code inside one, and ask its kernel about interfaces, routes and neighbours.

A socket keeps the network namespace it was created in, whatever thread uses
it later. So traffic that must come from a node (a container's
``/proc/<pid>/ns/net``, or ``/run/netns/NAME`` for ``ip netns`` hosts) is sent
by code that runs in a worker thread switched into that namespace with
setns(2); the caller's thread never moves.

- :func:`run_in_netns` runs ``fn(*args)`` in a fresh thread inside the
  namespace and returns its result (its exception propagates).
- :func:`entered` is a context manager that switches the *current* thread in
  and back out; use it only in threads you own.
- :func:`route_get`, :func:`links`, :func:`addresses`, :func:`neighbours` ask
  the kernel over rtnetlink (the socket opened inside the namespace, so the
  answers are that namespace's), and :func:`next_hop` resolves the Ethernet
  address frames to a destination must carry (the neighbour table first, then
  an ARP request on the outgoing interface).

Python 3.11 has no ``os.setns``: it is called through ctypes. Entering a
namespace needs CAP_SYS_ADMIN (root). ``netns_path=None`` everywhere means the
current namespace (no switch, no privilege needed).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rangectl.errors import EnvironmentProblem, RangeError

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806

_libc: ctypes.CDLL | None = None
_libc_lock = threading.Lock()


class NetnsError(RangeError):
    """A namespace that cannot be entered or asked, or a destination that cannot be reached from it."""


def libc() -> ctypes.CDLL:
    global _libc
    with _libc_lock:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return _libc


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """setns(2) for the calling thread; raises OSError with errno."""
    if libc().setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_path_of_pid(pid: int) -> str:
    return f"/proc/{int(pid)}/ns/net"


def netns_path_of_name(name: str) -> str:
    """The file ``ip netns add NAME`` creates."""
    return f"/run/netns/{name}"


def same_netns(a: str | None, b: str | None) -> bool:
    """True when both paths name the same namespace (None: the caller's)."""

    def ident(p: str | None) -> tuple[int, int]:
        st = os.stat(p or "/proc/thread-self/ns/net")
        return (st.st_dev, st.st_ino)

    return ident(a) == ident(b)


@contextlib.contextmanager
def entered(netns_path: str | None) -> Iterator[None]:
    """Switch the calling thread into ``netns_path`` and back on exit.

    Only for threads you own: a thread left in a namespace takes every socket it
    opens there. Prefer :func:`run_in_netns`.
    """
    if netns_path is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetnsError(f"cannot open network namespace {netns_path}: {exc.strerror}") from exc
        try:
            try:
                setns(target)
            except OSError as exc:
                hint = " (needs root: CAP_SYS_ADMIN)" if exc.errno == 1 else ""
                raise NetnsError(f"cannot enter network namespace {netns_path}: {exc.strerror}{hint}") from exc
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(own)
    finally:
        os.close(own)


def run_in_netns(netns_path: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in a fresh thread inside ``netns_path``; return its result.

    The exception ``fn`` raises is re-raised here. Sockets ``fn`` creates stay in
    that namespace when returned. ``netns_path=None`` runs in the caller's
    namespace (still in a fresh thread, so behaviour is the same).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with entered(netns_path):
                box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="rangectl-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        err = box.pop("error")
        try:
            raise err
        finally:
            del err
    return box["result"]


# --- rtnetlink -----------------------------------------------------------------------

NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
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


def _mac(b: bytes | None) -> str | None:
    if not b or len(b) != 6:
        return None
    return ":".join(f"{x:02x}" for x in b)


def mac_bytes(mac: str) -> bytes:
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"'{mac}' is not an Ethernet address")
    return bytes(int(p, 16) for p in parts)


def _route_get_here(dst: str) -> Route:
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


def _links_here() -> list[Link]:
    out = []
    for _typ, body in _netlink(RTM_GETLINK, NLM_F_DUMP, struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, 0, 0, 0)):
        _fam, _pad, _htype, index, flags, _change = struct.unpack_from("=BBHiII", body, 0)
        a = _attrs(body, 16, len(body))
        name = a.get(3, b"").rstrip(b"\0").decode(errors="replace")
        mtu = struct.unpack("=I", a[4])[0] if 4 in a else None
        out.append(Link(index, name, _mac(a.get(1)), mtu, bool(flags & 0x1)))
    return out


def _addresses_here() -> list[Address]:
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


def _neighbours_here() -> list[Neighbour]:
    out = []
    for _typ, body in _netlink(RTM_GETNEIGH, NLM_F_DUMP, struct.pack("=BBHiHBB", socket.AF_INET, 0, 0, 0, 0, 0, 0)):
        _fam, _p1, _p2, index, state, _fl, _t = struct.unpack_from("=BBHiHBB", body, 0)
        a = _attrs(body, 12, len(body))
        if 1 not in a or len(a[1]) != 4:
            continue
        out.append(Neighbour(index, ipaddress.IPv4Address(a[1]), _mac(a.get(2)), state))
    return out


def route_get(netns_path: str | None, dst: str | ipaddress.IPv4Address) -> Route:
    """The route the namespace's kernel picks for ``dst`` (outgoing interface, gateway, source)."""
    return run_in_netns(netns_path, _route_get_here, str(dst))


def links(netns_path: str | None) -> list[Link]:
    return run_in_netns(netns_path, _links_here)


def addresses(netns_path: str | None) -> list[Address]:
    """IPv4 addresses of the namespace's interfaces (every address, not only the primary)."""
    return run_in_netns(netns_path, _addresses_here)


def neighbours(netns_path: str | None) -> list[Neighbour]:
    return run_in_netns(netns_path, _neighbours_here)


@dataclass(frozen=True)
class InterfaceInfo:
    name: str
    index: int
    mac: str | None
    mtu: int | None
    up: bool
    ipv4: list[ipaddress.IPv4Interface] = field(default_factory=list)


def _interface_here(name: str) -> InterfaceInfo:
    for ln in _links_here():
        if ln.name == name:
            addrs = [a.interface for a in _addresses_here() if a.ifindex == ln.index]
            return InterfaceInfo(ln.name, ln.index, ln.mac, ln.mtu, ln.up, addrs)
    raise NetnsError(f"no interface '{name}' in this namespace")


def interface(netns_path: str | None, name: str) -> InterfaceInfo:
    """Name, index, MAC, MTU and IPv4 addresses of one interface of the namespace."""
    return run_in_netns(netns_path, _interface_here, name)


def _routes_here() -> list[dict[str, Any]]:
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
    return run_in_netns(netns_path, _routes_here)


# --- next-hop resolution -------------------------------------------------------------


def _arp_request(ifname: str, src_mac: bytes, src_ip: ipaddress.IPv4Address, target: ipaddress.IPv4Address) -> bytes:
    eth = b"\xff" * 6 + src_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + src_mac + src_ip.packed + b"\0" * 6 + target.packed
    return eth + arp


def _arp_resolve_here(
    ifname: str, src_ip: ipaddress.IPv4Address, target: ipaddress.IPv4Address, timeout: float, tries: int
) -> str | None:
    info = _interface_here(ifname)
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
                    return _mac(data[22:28])
            # the kernel may have learnt it meanwhile (our ARP and its own)
            for n in _neighbours_here():
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
    route = _route_get_here(dst)
    if route.type == "local":
        raise NetnsError(f"{dst} is an address of the sending namespace itself")
    if route.type != "unicast" or route.ifname is None:
        raise NetnsError(f"no unicast route to {dst} (route type {route.type})")
    info = _interface_here(route.ifname)
    if not info.mac:
        raise NetnsError(f"interface {route.ifname} has no Ethernet address")
    src = ipaddress.IPv4Address(src_ip) if src_ip else route.prefsrc
    if src is None:
        src = info.ipv4[0].ip if info.ipv4 else None
    if src is None:
        raise NetnsError(f"interface {route.ifname} has no IPv4 address")
    hop = route.next_hop
    for n in _neighbours_here():
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


def require_root(what: str = "this") -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"{what} needs root (CAP_SYS_ADMIN and CAP_NET_RAW)", fix="run as root")
