"""A capture file (pcap or pcapng): finding it, reading it, and rewriting its packets for this team's range.

All of it happens before a replay's clock starts (:mod:`rangectl.traffic.replay` sends the result):

1. read the capture (own parser: pcap in micro- or nanosecond resolution,
   either byte order; pcapng with per-interface link types, ``if_tsresol`` and
   ``if_tsoffset``; Ethernet, VLAN-tagged, Linux cooked v1/v2, raw IP, loopback);
2. keep IPv4 packets, map their addresses (capture address -> new address) and
   recompute IPv4/TCP/UDP/ICMP checksums (:func:`rewrite_ipv4`);
3. refuse the replay (or, with ``drop_outside``, drop the packets) when a
   rewritten destination or source is outside the allowed subnets; skip
   packets addressed to the sender itself (the other half of a captured
   conversation) and packets bigger than the interface MTU;
4. put a fresh Ethernet header on each: the sending interface's MAC, and the
   next hop's MAC for its destination (resolved once per destination).
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rangectl import paths
from rangectl.traffic.base import TrafficContext, TrafficError, TrafficRefused, refusal
from rangectl.traffic.packets import eth_header, ipv4_from_link, mac_bytes, rewrite_ipv4

IPv4 = ipaddress.IPv4Address


class PcapFormatError(TrafficError):
    """A file that is not a readable pcap/pcapng capture."""


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    ts_ns: int  # capture timestamp, nanoseconds since the epoch
    linktype: int
    data: bytes
    wirelen: int


PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


def capture_format(path: str | Path) -> str:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == PCAPNG_SHB:
        return "pcapng"
    if magic in PCAP_MAGICS:
        return "pcap"
    raise PcapFormatError(f"{path}: not a pcap or pcapng capture (magic {magic.hex() or 'empty'})")


def read_capture(path: str | Path, limit: int | None = None) -> list[CapturedPacket]:
    """Every packet of a pcap or pcapng file (at most ``limit``)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PcapFormatError(f"cannot read capture {p}: {exc.strerror}") from exc
    it = _read_pcapng(data, p) if data[:4] == PCAPNG_SHB else _read_pcap(data, p)
    out: list[CapturedPacket] = []
    for pkt in it:
        out.append(pkt)
        if limit is not None and len(out) >= limit:
            break
    return out


def _read_pcap(data: bytes, path: Path) -> Iterator[CapturedPacket]:
    if len(data) < 24 or data[:4] not in PCAP_MAGICS:
        raise PcapFormatError(f"{path}: not a pcap or pcapng capture")
    e, frac_ns = PCAP_MAGICS[data[:4]]
    network = struct.unpack_from(e + "I", data, 20)[0]
    linktype = network & 0xFFFF
    fcs = ((network >> 29) & 0x7) * 2 if network & 0x10000000 else 0
    off = 24
    rec = struct.Struct(e + "IIII")
    n = len(data)
    while off + 16 <= n:
        sec, frac, incl, orig = rec.unpack_from(data, off)
        off += 16
        if incl > 0x40000 or off + incl > n:
            return  # a cut-off last record
        pkt = data[off : off + incl]
        off += incl
        if fcs and len(pkt) >= fcs:
            pkt = pkt[:-fcs]
        yield CapturedPacket(sec * 1_000_000_000 + frac * frac_ns, linktype, pkt, orig)


def _tsres_to_ns(units: int, tsresol: int) -> int:
    if tsresol & 0x80:
        return (units * 1_000_000_000) >> (tsresol & 0x7F)
    if tsresol <= 9:
        return units * 10 ** (9 - tsresol)
    return units // 10 ** (tsresol - 9)


def _read_pcapng(data: bytes, path: Path) -> Iterator[CapturedPacket]:
    off = 0
    n = len(data)
    e = "<"
    ifaces: list[tuple[int, int, int]] = []  # linktype, tsresol, tsoffset seconds
    last_ts = 0
    while off + 12 <= n:
        if data[off : off + 4] == PCAPNG_SHB:
            bom = data[off + 8 : off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                e = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                e = ">"
            else:
                raise PcapFormatError(f"{path}: bad pcapng byte-order magic at offset {off}")
            ifaces = []
        btype, blen = struct.unpack_from(e + "II", data, off)
        if blen < 12 or blen % 4 or off + blen > n:
            return  # cut off, or garbage after the last block
        end = off + blen - 4
        if btype == 1:  # interface description
            linktype, _res, _snap = struct.unpack_from(e + "HHI", data, off + 8)
            tsresol, tsoffset = 6, 0
            o = off + 16
            while o + 4 <= end:
                code, olen = struct.unpack_from(e + "HH", data, o)
                if code == 0:
                    break
                val = data[o + 4 : o + 4 + olen]
                if code == 9 and olen >= 1:
                    tsresol = val[0]
                elif code == 14 and olen == 8:
                    tsoffset = struct.unpack(e + "q", val)[0]
                o += 4 + ((olen + 3) & ~3)
            ifaces.append((linktype, tsresol, tsoffset))
        elif btype in (6, 2):  # enhanced packet, obsolete packet
            if btype == 6:
                ifid, th, tl, caplen, origlen = struct.unpack_from(e + "IIIII", data, off + 8)
            else:
                ifid, _drops, th, tl, caplen, origlen = struct.unpack_from(e + "HHIIII", data, off + 8)
            if ifid >= len(ifaces):
                raise PcapFormatError(f"{path}: packet for undeclared interface {ifid} at offset {off}")
            linktype, tsresol, tsoffset = ifaces[ifid]
            pkt = data[off + 28 : min(off + 28 + caplen, end)]
            last_ts = _tsres_to_ns((th << 32) | tl, tsresol) + tsoffset * 1_000_000_000
            yield CapturedPacket(last_ts, linktype, pkt, origlen)
        elif btype == 3:  # simple packet: interface 0, no timestamp
            if not ifaces:
                raise PcapFormatError(f"{path}: simple packet block before any interface")
            (origlen,) = struct.unpack_from(e + "I", data, off + 8)
            caplen = min(origlen, blen - 16)
            yield CapturedPacket(last_ts, ifaces[0][0], data[off + 12 : off + 12 + caplen], origlen)
        off += blen


# --- rewriting ------------------------------------------------------------------------------


@dataclass
class PreparedReplay:
    """Frames ready to send (one pass of the capture), their capture timestamps, and what was skipped."""

    frames: list[bytes]
    ts_ns: list[int]
    read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    fragments: int = 0
    truncated: int = 0
    destinations: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)

    @property
    def bytes_per_pass(self) -> int:
        return sum(len(f) for f in self.frames)


def normalize_map(address_map: Mapping[Any, Any] | None) -> dict[bytes, bytes]:
    return {IPv4(str(k)).packed: IPv4(str(v)).packed for k, v in (address_map or {}).items()}


def prepare_replay(
    packets: Iterable[CapturedPacket],
    *,
    address_map: Mapping[Any, Any] | None,
    src_mac: str | bytes,
    hop_mac: Callable[[IPv4], str | bytes],
    allowed: Sequence[ipaddress.IPv4Network],
    own_addresses: Iterable[IPv4] = (),
    mtu: int = 1500,
    drop_outside: bool = False,
) -> PreparedReplay:
    """Rewrite, check and frame every IPv4 packet (pure apart from ``hop_mac``).

    Raises :class:`TrafficRefused` before ``hop_mac`` is ever called when a
    rewritten destination or source is outside ``allowed`` (unless
    ``drop_outside``, which drops those packets instead).
    """
    amap = normalize_map(address_map)
    own = {IPv4(str(a)).packed for a in own_addresses}
    allowed = list(allowed)
    verdict: dict[tuple[bytes, str], str | None] = {}

    def why(addr: bytes, role: str) -> str | None:
        key = (addr, role)
        if key not in verdict:
            verdict[key] = refusal(IPv4(addr), allowed, role)
        return verdict[key]

    prep = PreparedReplay([], [])
    kept: list[tuple[int, bytes, bytes]] = []
    outside: Counter[str] = Counter()
    first_reason: dict[str, str] = {}
    for cp in packets:
        prep.read += 1
        ip = ipv4_from_link(cp.linktype, cp.data)
        if ip is None:
            prep.skipped["not_ipv4"] += 1
            continue
        rw = rewrite_ipv4(ip, amap)
        if rw is None:
            prep.skipped["malformed"] += 1
            continue
        if rw.dst in own:
            prep.skipped["to_sender"] += 1
            continue
        reason = why(rw.dst, "destination") or why(rw.src, "source")
        if reason:
            bad = str(IPv4(rw.dst)) if why(rw.dst, "destination") else str(IPv4(rw.src))
            outside[bad] += 1
            first_reason.setdefault(bad, reason)
            continue
        if len(rw.packet) > mtu:
            prep.skipped["bigger_than_mtu"] += 1
            continue
        prep.fragments += rw.fragment
        prep.truncated += not rw.complete
        kept.append((cp.ts_ns, rw.dst, rw.packet))
    if outside:
        total = sum(outside.values())
        if not drop_outside:
            listed = "; ".join(first_reason[a] + f" ({c} packets)" for a, c in outside.most_common(3))
            more = f"; and {len(outside) - 3} more addresses" if len(outside) > 3 else ""
            raise TrafficRefused(
                f"replay refused, nothing sent: {total} packets would leave the range: {listed}{more}",
                fix="map every capture address to a node with 'map', or set drop_outside: true",
            )
        prep.skipped["outside_range"] += total
    src = mac_bytes(src_mac)
    heads: dict[bytes, bytes] = {}
    for ts, dst, pkt in kept:
        head = heads.get(dst)
        if head is None:
            head = heads[dst] = eth_header(mac_bytes(hop_mac(IPv4(dst))), src)
        prep.frames.append(head + pkt)
        prep.ts_ns.append(ts)
        prep.destinations[str(IPv4(dst))] += 1
        prep.sources[str(IPv4(pkt[12:16]))] += 1
    return prep


# --- finding ------------------------------------------------------------------------------------


def resolve_capture(file: str, ctx: TrafficContext) -> Path:
    """A capture named in a scenario: absolute, beside the scenario, in the project, or in scenarios/."""
    p = Path(file)
    if p.is_absolute():
        if p.is_file():
            return p
        raise TrafficError(f"capture {file} not found")
    if ctx.scenario_file is not None:
        found = paths.resolve_path(file, Path(ctx.scenario_file), "scenarios")
        if found:
            return found
    for c in (Path.cwd() / p, paths.project_root() / p, paths.project_root() / "scenarios" / p):
        if c.is_file():
            return c
    raise TrafficError(f"capture '{file}' not found (looked beside the scenario and in scenarios/)")
