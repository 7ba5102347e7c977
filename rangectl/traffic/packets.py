"""Packet bytes without Scapy in the hot path: checksums, frame builders and IPv4 rewriting.

Pure functions (no sockets, no root), so they are unit-tested directly. Scapy
builds templates where that is clearer; per-packet work (a flood, a replay of
100k packets) patches bytes here, which is two orders of magnitude faster.
"""

from __future__ import annotations

import ipaddress
import struct

ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """One's-complement sum of 16-bit big-endian words (odd length padded with a zero byte)."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    x = int.from_bytes(data, "big")
    # 65536 = 1 (mod 65535): the integer mod 0xFFFF is the end-around-carry sum, except
    # that a non-zero sum of 0xFFFF ("negative zero") comes out as 0.
    s = x % 0xFFFF
    if s == 0 and x:
        s = 0xFFFF
    return s


def inet_checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    return ~ones_sum(data) & 0xFFFF


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum_adjust(old_checksum: int, old: bytes, new: bytes) -> int:
    """RFC 1624 incremental update of a checksum when 16-bit words ``old`` become ``new``."""
    s = ~old_checksum & 0xFFFF
    for i in range(0, len(old), 2):
        o = int.from_bytes(old[i : i + 2], "big")
        n = int.from_bytes(new[i : i + 2], "big")
        s = _fold(s + (~o & 0xFFFF) + n)
    return ~s & 0xFFFF


def l4_checksum(src: bytes, dst: bytes, proto: int, segment: bytes | bytearray | memoryview) -> int:
    """TCP/UDP checksum over the IPv4 pseudo-header and the segment (its checksum field zeroed)."""
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(segment))
    c = inet_checksum(pseudo + bytes(segment))
    if proto == PROTO_UDP and c == 0:
        c = 0xFFFF
    return c


def mac_bytes(mac: str | bytes) -> bytes:
    if isinstance(mac, bytes):
        return mac
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"'{mac}' is not an Ethernet address")
    return bytes(int(p, 16) for p in parts)


def eth_header(dst_mac: str | bytes, src_mac: str | bytes, ethertype: int = ETH_P_IP) -> bytes:
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ethertype)


def ipv4_header(
    src: str | ipaddress.IPv4Address,
    dst: str | ipaddress.IPv4Address,
    proto: int,
    payload_len: int,
    *,
    ident: int = 0,
    ttl: int = 64,
    dont_fragment: bool = True,
    tos: int = 0,
) -> bytes:
    s = ipaddress.IPv4Address(src).packed
    d = ipaddress.IPv4Address(dst).packed
    flags = 0x4000 if dont_fragment else 0
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + payload_len, ident & 0xFFFF, flags, ttl, proto, 0, s, d)
    return hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:]


def tcp_segment(
    src: str | ipaddress.IPv4Address,
    dst: str | ipaddress.IPv4Address,
    sport: int,
    dport: int,
    *,
    seq: int = 0,
    ack: int = 0,
    flags: int = TCP_SYN,
    window: int = 64240,
    options: bytes = b"",
    payload: bytes = b"",
) -> bytes:
    if len(options) % 4:
        options += b"\0" * (4 - len(options) % 4)
    off = (20 + len(options)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, flags, window, 0, 0)
    seg += options + payload
    c = l4_checksum(ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed, PROTO_TCP, seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp_datagram(
    src: str | ipaddress.IPv4Address, dst: str | ipaddress.IPv4Address, sport: int, dport: int, payload: bytes
) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = l4_checksum(ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed, PROTO_UDP, seg)
    return seg[:6] + struct.pack("!H", c) + seg[8:]


# A SYN as common stacks send it: MSS, SACK permitted, timestamps, NOP, window scale.
SYN_OPTIONS = bytes.fromhex("020405b4") + bytes.fromhex("0402") + bytes.fromhex("080a") + b"\0" * 8 + b"\x01\x03\x03\x07"


class SynTemplate:
    """Ethernet+IPv4+TCP SYN frames to one destination; per frame only ports, seq, id (and source) change.

    ``frame()`` patches a prebuilt template and recomputes both checksums, so a
    flood or a scan builds each frame in a few microseconds.
    """

    def __init__(
        self,
        src_mac: str | bytes,
        dst_mac: str | bytes,
        src: str | ipaddress.IPv4Address,
        dst: str | ipaddress.IPv4Address,
        *,
        ttl: int = 64,
        window: int = 64240,
        options: bytes = SYN_OPTIONS,
    ):
        self.src = ipaddress.IPv4Address(src).packed
        self.dst = ipaddress.IPv4Address(dst).packed
        seg = tcp_segment(src, dst, 1, 1, flags=TCP_SYN, window=window, options=options)
        ip = ipv4_header(src, dst, PROTO_TCP, len(seg), ttl=ttl)
        self.template = bytearray(eth_header(dst_mac, src_mac) + ip + seg)
        self.tcp_len = len(seg)

    def frame(self, sport: int, dport: int, seq: int, ident: int, src: bytes | None = None) -> bytes:
        f = self.template
        s = src or self.src
        f[26:30] = s
        struct.pack_into("!H", f, 18, ident & 0xFFFF)
        f[24:26] = b"\0\0"
        struct.pack_into("!H", f, 24, inet_checksum(f[14:34]))
        struct.pack_into("!HHI", f, 34, sport, dport, seq & 0xFFFFFFFF)
        f[50:52] = b"\0\0"
        struct.pack_into("!H", f, 50, l4_checksum(s, self.dst, PROTO_TCP, f[34 : 34 + self.tcp_len]))
        return bytes(f)


# --- rewriting captured IPv4 packets -------------------------------------------------


def ipv4_from_link(linktype: int, data: bytes) -> bytes | None:
    """The IPv4 packet inside a captured frame, or None when it is not IPv4.

    Link types: 1 Ethernet (with 802.1Q/802.1ad tags), 113 Linux cooked (SLL),
    276 Linux cooked v2 (SLL2), 101/12/228 raw IP(v4), 0/108 BSD loopback.
    """
    if linktype == 1:
        off = 12
        while off + 2 <= len(data):
            et = struct.unpack_from("!H", data, off)[0]
            if et in (ETH_P_8021Q, ETH_P_8021AD):
                off += 4
                continue
            return data[off + 2 :] if et == ETH_P_IP else None
        return None
    if linktype == 113:
        return data[16:] if len(data) >= 16 and struct.unpack_from("!H", data, 14)[0] == ETH_P_IP else None
    if linktype == 276:
        return data[20:] if len(data) >= 20 and struct.unpack_from("!H", data, 0)[0] == ETH_P_IP else None
    if linktype in (101, 12, 228):
        return data if data and data[0] >> 4 == 4 else None
    if linktype in (0, 108):
        if len(data) < 4:
            return None
        fam_le = struct.unpack_from("<I", data, 0)[0]
        fam_be = struct.unpack_from(">I", data, 0)[0]
        return data[4:] if 2 in (fam_le, fam_be) else None
    return None


class Rewritten:
    """One rewritten IPv4 packet and what was done to it."""

    __slots__ = ("packet", "src", "dst", "proto", "complete", "fragment")

    def __init__(self, packet: bytes, src: bytes, dst: bytes, proto: int, complete: bool, fragment: bool):
        self.packet = packet
        self.src = src
        self.dst = dst
        self.proto = proto
        self.complete = complete
        self.fragment = fragment


def rewrite_ipv4(pkt: bytes, address_map: dict[bytes, bytes]) -> Rewritten | None:
    """Map source and destination (4-byte keys to 4-byte values) and make the checksums valid.

    Complete, unfragmented packets get their IPv4, TCP, UDP and ICMP checksums
    recomputed from scratch (so captures with offloaded, wrong checksums come out
    right). A fragment or a packet cut short by the capture's snap length cannot
    be summed whole: its transport checksum is adjusted incrementally (RFC 1624)
    for the address change instead. Trailing link-layer padding is dropped.
    Returns None for something that is not a well-formed IPv4 header.
    """
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    if ihl < 20 or len(pkt) < ihl:
        return None
    total = struct.unpack_from("!H", pkt, 2)[0]
    if total < ihl:
        return None
    complete = len(pkt) >= total
    buf = bytearray(pkt[:total] if complete else pkt)
    old_src, old_dst = bytes(buf[12:16]), bytes(buf[16:20])
    new_src = address_map.get(old_src, old_src)
    new_dst = address_map.get(old_dst, old_dst)
    buf[12:16] = new_src
    buf[16:20] = new_dst
    buf[10:12] = b"\0\0"
    struct.pack_into("!H", buf, 10, inet_checksum(buf[:ihl]))
    proto = buf[9]
    frag_field = struct.unpack_from("!H", buf, 6)[0]
    frag_offset = frag_field & 0x1FFF
    fragment = bool(frag_field & 0x2000) or frag_offset != 0
    if frag_offset == 0:
        seg_off = ihl
        if proto == PROTO_TCP and len(buf) >= seg_off + 18:
            cks_at = seg_off + 16
        elif proto == PROTO_UDP and len(buf) >= seg_off + 8:
            cks_at = seg_off + 6
        elif proto == PROTO_ICMP and len(buf) >= seg_off + 4:
            cks_at = seg_off + 2
        else:
            cks_at = None
        if cks_at is not None:
            if complete and not fragment:
                old_cks = struct.unpack_from("!H", buf, cks_at)[0]
                if proto == PROTO_UDP and old_cks == 0:
                    pass  # the sender sent no UDP checksum: keep it that way
                else:
                    buf[cks_at : cks_at + 2] = b"\0\0"
                    seg = buf[seg_off:]
                    if proto == PROTO_ICMP:
                        c = inet_checksum(seg)
                    else:
                        c = l4_checksum(new_src, new_dst, proto, seg)
                    struct.pack_into("!H", buf, cks_at, c)
            elif proto in (PROTO_TCP, PROTO_UDP) and (old_src != new_src or old_dst != new_dst):
                old_cks = struct.unpack_from("!H", buf, cks_at)[0]
                if not (proto == PROTO_UDP and old_cks == 0):
                    c = checksum_adjust(old_cks, old_src + old_dst, new_src + new_dst)
                    if proto == PROTO_UDP and c == 0:
                        c = 0xFFFF
                    struct.pack_into("!H", buf, cks_at, c)
    return Rewritten(bytes(buf), new_src, new_dst, proto, complete, fragment)
