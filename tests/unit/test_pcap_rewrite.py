"""Capture reading, address rewriting, checksums and replay schedules: pure code, no root."""

from __future__ import annotations

import ipaddress
import struct
import time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import Dot1Q, Ether
from scapy.utils import PcapWriter, wrpcap, wrpcapng

from rangectl.traffic import TrafficRefused
from rangectl.traffic.packets import (
    SynTemplate,
    checksum_adjust,
    inet_checksum,
    ipv4_from_link,
    rewrite_ipv4,
    tcp_segment,
    udp_datagram,
)
from rangectl.traffic.pcapfile import (
    CapturedPacket,
    PcapFormatError,
    capture_format,
    prepare_replay,
    read_capture,
)
from rangectl.traffic.replay import build_schedule, send_frames

ROOT = Path(__file__).resolve().parents[2]
# Explicit MACs: a bare Ether() makes Scapy ARP for the destination on the host network.
SRC_MAC, DST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
A, B = "198.51.100.10", "198.51.100.20"
NA, NB = "10.60.1.66", "10.60.2.20"
MAP = {ipaddress.IPv4Address(A).packed: ipaddress.IPv4Address(NA).packed,
       ipaddress.IPv4Address(B).packed: ipaddress.IPv4Address(NB).packed}  # fmt: skip
ALLOWED = [ipaddress.IPv4Network("10.60.0.0/16")]


def valid(ip_bytes: bytes) -> bool:
    """Scapy agrees with every checksum in the packet (recomputed with the fields deleted)."""
    p = IP(ip_bytes)
    q = IP(ip_bytes)
    del q[IP].chksum
    for layer in (TCP, UDP, ICMP):
        if layer in q:
            if layer is UDP and p[UDP].chksum == 0:
                continue
            del q[layer].chksum
    q = IP(bytes(q))
    ok = p[IP].chksum == q[IP].chksum
    for layer in (TCP, UDP, ICMP):
        if layer in p and not (layer is UDP and p[UDP].chksum == 0):
            ok = ok and p[layer].chksum == q[layer].chksum
    return ok


# --- checksums ---------------------------------------------------------------------------------------


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_inet_checksum_matches_scapy(data):
    from scapy.utils import checksum

    assert inet_checksum(data) == inet_checksum_ref(data)
    assert inet_checksum(data) == checksum(data)


def inet_checksum_ref(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@given(st.binary(min_size=8, max_size=64), st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4))
@settings(max_examples=200, deadline=None)
def test_incremental_update_equals_recompute(data, old, new):
    buf = bytearray(data)
    buf[0:4] = old
    before = inet_checksum(buf)
    buf[0:4] = new
    after = inet_checksum(buf)
    adj = checksum_adjust(before, old, new)
    # one's complement has two zeros: 0x0000 and 0xFFFF verify the same
    assert adj == after or {adj, after} == {0, 0xFFFF}


def test_builders_make_valid_packets():
    seg = tcp_segment(A, B, 1234, 80, seq=7, payload=b"hello")
    assert valid(bytes(IP(src=A, dst=B, proto=6) / seg))
    dgram = udp_datagram(A, B, 5353, 53, b"x" * 33)
    p = IP(src=A, dst=B) / UDP(dgram)
    assert valid(bytes(p))


def test_syn_template_frames_are_valid():
    t = SynTemplate("02:00:00:00:00:01", "02:00:00:00:00:02", A, B)
    f = t.frame(40000, 443, 0xDEADBEEF, 77)
    e = Ether(f)
    assert e.src == "02:00:00:00:00:02" or e.src == "02:00:00:00:00:01"
    assert e[Ether].dst == "02:00:00:00:00:02" and e[Ether].src == "02:00:00:00:00:01"
    assert e[TCP].flags == "S" and e[TCP].dport == 443 and e[TCP].seq == 0xDEADBEEF and e[IP].id == 77
    assert valid(bytes(e[IP]))
    forged = t.frame(1, 80, 1, 1, src=ipaddress.IPv4Address("10.60.1.200").packed)
    assert Ether(forged)[IP].src == "10.60.1.200" and valid(bytes(Ether(forged)[IP]))


# --- rewriting ----------------------------------------------------------------------------------------


def _rw(pkt) -> IP:
    out = rewrite_ipv4(bytes(pkt), MAP)
    assert out is not None
    return out


@pytest.mark.parametrize(
    "pkt",
    [
        IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="PA") / b"GET /lookup?id=1%27 HTTP/1.1\r\n\r\n",
        IP(src=B, dst=A) / TCP(sport=80, dport=40000, flags="SA", options=[("MSS", 1460)]),
        IP(src=A, dst=B) / UDP(sport=5353, dport=53) / (b"\x12\x34" + b"\0" * 30),
        IP(src=A, dst=B) / ICMP(type=8, id=1, seq=2) / b"ping",
        IP(src=A, dst=B, options=b"\x94\x04\x00\x00") / TCP(dport=22),  # router alert option: IHL 6
        IP(src=A, dst=B, proto=47) / (b"\x00\x00\x08\x00" + b"gre"),  # not TCP/UDP/ICMP: IP checksum only
    ],
    ids=["tcp-data", "tcp-synack", "udp", "icmp", "ip-options", "gre"],
)
def test_rewrite_maps_addresses_and_checksums(pkt):
    out = _rw(pkt)
    p = IP(out.packet)
    assert {p.src, p.dst} == {NA, NB}
    assert valid(out.packet)
    assert out.complete and not out.fragment


def test_rewrite_fixes_bad_original_checksums():
    # as captured on a host with checksum offload: the TCP checksum is garbage
    raw = bytearray(bytes(IP(src=A, dst=B) / TCP(dport=80, flags="S")))
    raw[20 + 16 : 20 + 18] = b"\xbe\xef"
    raw[10:12] = b"\x00\x00"
    out = _rw(bytes(raw))
    assert valid(out.packet)


def test_unmapped_addresses_stay_and_still_get_valid_checksums():
    out = rewrite_ipv4(bytes(IP(src="10.60.1.1", dst="10.60.1.2") / UDP() / b"x"), MAP)
    p = IP(out.packet)
    assert (p.src, p.dst) == ("10.60.1.1", "10.60.1.2") and valid(out.packet)


def test_udp_without_checksum_keeps_none():
    raw = bytearray(bytes(IP(src=A, dst=B) / UDP(sport=1, dport=2) / b"data"))
    raw[26:28] = b"\0\0"
    out = _rw(bytes(raw))
    assert IP(out.packet)[UDP].chksum == 0


def test_trailing_padding_is_dropped():
    pkt = bytes(IP(src=A, dst=B) / TCP(flags="R"))
    out = _rw(pkt + b"\0" * 6)  # Ethernet minimum-size padding
    assert len(out.packet) == len(pkt) and valid(out.packet)


def test_truncated_packet_gets_incremental_fix():
    full = bytes(IP(src=A, dst=B) / TCP(dport=80, flags="PA") / (b"A" * 400))
    whole = _rw(full)
    cut = _rw(full[:96])  # snap length 96
    assert not cut.complete
    # the transport checksum of the cut packet is the one of the whole rewritten packet
    assert cut.packet[36:38] == whole.packet[36:38]
    assert IP(cut.packet).dst == NB


def test_fragments_reassemble_with_valid_checksum():
    from scapy.layers.inet import defragment

    big = IP(src=A, dst=B, id=99) / UDP(sport=7, dport=9) / (bytes(range(256)) * 12)
    frags = fragment(big, fragsize=800)
    assert len(frags) > 2
    outs = [_rw(f) for f in frags]
    assert all(o.fragment for o in outs)
    for o in outs:
        assert IP(o.packet).dst == NB
        ip = IP(o.packet)
        q = IP(o.packet)
        del q.chksum
        assert IP(bytes(q)).chksum == ip.chksum
    whole = defragment([IP(o.packet) for o in outs])[0]
    assert valid(bytes(whole))


@given(
    st.sampled_from([6, 17, 1]),
    st.binary(max_size=200),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=120, deadline=None)
def test_rewrite_any_addresses(proto, payload, s, d, ns, nd):
    src, dst = str(ipaddress.IPv4Address(s)), str(ipaddress.IPv4Address(d))
    layer = {6: TCP(sport=1000, dport=80), 17: UDP(sport=1000, dport=53), 1: ICMP()}[proto]
    pkt = bytes(IP(src=src, dst=dst) / layer / payload)
    m = {ipaddress.IPv4Address(s).packed: ipaddress.IPv4Address(ns).packed}
    if d != s:
        m[ipaddress.IPv4Address(d).packed] = ipaddress.IPv4Address(nd).packed
    out = rewrite_ipv4(pkt, m)
    p = IP(out.packet)
    assert p.src == str(ipaddress.IPv4Address(ns))
    assert valid(out.packet)


def test_not_ipv4():
    assert rewrite_ipv4(b"\x60" + b"\0" * 39, MAP) is None
    assert rewrite_ipv4(b"\x45\x00", MAP) is None


# --- link layers ---------------------------------------------------------------------------------------


def test_ipv4_from_link_types():
    ip = bytes(IP(src=A, dst=B) / UDP())
    assert ipv4_from_link(1, bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=A, dst=B) / UDP())) == ip
    assert ipv4_from_link(1, bytes(Ether(src=SRC_MAC, dst=DST_MAC) / Dot1Q(vlan=5) / Dot1Q(vlan=6) / IP(src=A, dst=B) / UDP())) == ip
    assert ipv4_from_link(1, bytes(Ether(type=0x0806) / (b"\0" * 28))) is None
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"\0" * 8, 0x0800) + ip
    assert ipv4_from_link(113, sll) == ip
    sll2 = struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\0" * 8) + ip
    assert ipv4_from_link(276, sll2) == ip
    assert ipv4_from_link(101, ip) == ip and ipv4_from_link(228, ip) == ip
    assert ipv4_from_link(0, struct.pack("<I", 2) + ip) == ip
    assert ipv4_from_link(105, ip) is None  # 802.11: not handled


# --- reading captures -----------------------------------------------------------------------------------


def _pkts(n=5):
    out = []
    for i in range(n):
        p = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b") / IP(src=A, dst=B, id=i) / UDP(dport=9) / bytes([i])
        p.time = Decimal(1_700_000_000) + i * Decimal("0.001234") + Decimal("0.000001")
        out.append(p)
    return out


def test_read_pcap_microseconds(tmp_path):
    f = tmp_path / "u.pcap"
    wrpcap(str(f), _pkts())
    got = read_capture(f)
    assert capture_format(f) == "pcap"
    assert [g.data for g in got] == [bytes(p) for p in _pkts()]
    assert got[1].ts_ns - got[0].ts_ns == 1_234_000
    assert got[0].linktype == 1


def test_read_pcap_nanoseconds(tmp_path):
    f = tmp_path / "n.pcap"
    with PcapWriter(str(f), nano=True) as w:
        for p in _pkts():
            w.write(p)
    got = read_capture(f)
    assert got[1].ts_ns - got[0].ts_ns == 1_234_000
    assert len(got) == 5


def test_read_pcap_big_endian(tmp_path):
    f = tmp_path / "be.pcap"
    frame = bytes(_pkts(1)[0])
    f.write_bytes(
        struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
        + struct.pack(">IIII", 100, 5, len(frame), len(frame))
        + frame
        + struct.pack(">IIII", 100, 7, len(frame), len(frame))
        + frame
    )
    got = read_capture(f)
    assert [g.ts_ns for g in got] == [100_000_005_000, 100_000_007_000] and got[0].data == frame


def test_read_pcap_cut_off_tail(tmp_path):
    f = tmp_path / "cut.pcap"
    wrpcap(str(f), _pkts())
    f.write_bytes(f.read_bytes()[:-5])
    assert len(read_capture(f)) == 4


def test_read_pcapng_written_by_scapy(tmp_path):
    f = tmp_path / "s.pcapng"
    wrpcapng(str(f), _pkts())
    assert capture_format(f) == "pcapng"
    got = read_capture(f)
    assert [g.data for g in got] == [bytes(p) for p in _pkts()]
    assert abs((got[4].ts_ns - got[0].ts_ns) - 4 * 1_234_000) <= 1000


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def test_read_pcapng_tsresol_two_interfaces_and_simple_packets(tmp_path):
    ip = bytes(IP(src=A, dst=B) / UDP(dport=9) / b"z")
    eth = bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=A, dst=B) / UDP(dport=9) / b"z")
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    opt_ns = struct.pack("<HHB", 9, 1, 9) + b"\0\0\0" + struct.pack("<HH", 0, 0)
    idb0 = _block(1, struct.pack("<HHI", 1, 0, 0) + opt_ns)  # Ethernet, nanoseconds
    idb1 = _block(1, struct.pack("<HHI", 101, 0, 0))  # raw IP, default microseconds
    ts0 = 1_700_000_000_123_456_789
    epb0 = _block(6, struct.pack("<IIIII", 0, ts0 >> 32, ts0 & 0xFFFFFFFF, len(eth), len(eth)) + eth)
    ts1 = 1_700_000_000_123_457
    epb1 = _block(6, struct.pack("<IIIII", 1, ts1 >> 32, ts1 & 0xFFFFFFFF, len(ip), len(ip)) + ip)
    spb = _block(3, struct.pack("<I", len(eth)) + eth)
    dsb = _block(0x0000000A, b"secrets")  # unknown block types are skipped
    f = tmp_path / "m.pcapng"
    f.write_bytes(shb + idb0 + idb1 + dsb + epb0 + epb1 + spb)
    got = read_capture(f)
    assert [(g.linktype, g.ts_ns) for g in got] == [(1, ts0), (101, ts1 * 1000), (1, ts1 * 1000)]
    assert got[1].data == ip and got[0].data == eth


def test_not_a_capture(tmp_path):
    f = tmp_path / "x.pcap"
    f.write_bytes(b"hello world, not a capture")
    with pytest.raises(PcapFormatError, match="not a pcap or pcapng"):
        read_capture(f)
    with pytest.raises(PcapFormatError):
        capture_format(f)


@pytest.mark.parametrize("name", ["portscan", "synflood", "sqli-http", "dns-exfil"])
def test_shipped_captures(name):
    f = ROOT / "scenarios" / "pcaps" / f"{name}.pcap"
    assert f.is_file(), "run scripts/make_pcaps.sh"
    assert 500 < f.stat().st_size < 200_000
    pkts = read_capture(f)
    assert pkts
    prep = prepare_replay(
        pkts,
        address_map={A: NA, B: NB},
        src_mac="02:00:00:00:00:0a",
        hop_mac=lambda d: "02:00:00:00:00:01",
        allowed=ALLOWED,
        own_addresses=[NA],
    )
    assert prep.frames and set(prep.destinations) == {NB}
    for f_ in prep.frames:
        assert valid(f_[14:])


# --- preparing a replay ------------------------------------------------------------------------------------


def _cap(pkts, t0=1_000_000_000):
    return [CapturedPacket(t0 + i * 1_000_000, 1, bytes(p), len(bytes(p))) for i, p in enumerate(pkts)]


def test_prepare_maps_frames_and_skips():
    calls = []

    def hop(d):
        calls.append(str(d))
        return "02:00:00:00:00:ee"

    pkts = _cap(
        [
            Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=A, dst=B) / TCP(flags="S"),
            Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=B, dst=A) / TCP(flags="SA"),  # to the sender: skipped
            Ether(type=0x86DD) / (b"\x60" + b"\0" * 39),  # IPv6: skipped
            Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=A, dst=B) / TCP(flags="A") / (b"x" * 2000),  # bigger than the MTU
            Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=A, dst=B) / TCP(flags="PA") / b"GET /",
        ]
    )
    prep = prepare_replay(
        pkts, address_map={A: NA, B: NB}, src_mac="02:00:00:00:00:aa", hop_mac=hop, allowed=ALLOWED,
        own_addresses=[ipaddress.IPv4Address(NA)], mtu=1500,
    )  # fmt: skip
    assert len(prep.frames) == 2 and prep.read == 5
    assert dict(prep.skipped) == {"to_sender": 1, "not_ipv4": 1, "bigger_than_mtu": 1}
    assert calls == [NB]  # one resolution per destination
    for f in prep.frames:
        e = Ether(f)
        assert e.src == "02:00:00:00:00:aa" and e.dst == "02:00:00:00:00:ee"
        assert (e[IP].src, e[IP].dst) == (NA, NB) and valid(bytes(e[IP]))
    assert prep.ts_ns == [pkts[0].ts_ns, pkts[4].ts_ns]


def test_prepare_refuses_outside_before_resolving_anything():
    def hop(d):
        raise AssertionError("no next hop may be resolved for a refused replay")

    pkts = _cap([Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=A, dst=B) / UDP(), Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=A, dst="192.0.2.55") / UDP()])
    with pytest.raises(TrafficRefused) as ei:
        prepare_replay(pkts, address_map={A: NA, B: NB}, src_mac="02:00:00:00:00:aa", hop_mac=hop, allowed=ALLOWED)
    msg = str(ei.value)
    assert "192.0.2.55" in msg and "nothing sent" in msg and "1 packets" in msg


def test_prepare_refuses_forged_source_outside():
    pkts = _cap([Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="192.0.2.1", dst=B) / UDP()])
    with pytest.raises(TrafficRefused, match="source 192.0.2.1"):
        prepare_replay(pkts, address_map={B: NB}, src_mac=b"\0" * 6, hop_mac=lambda d: b"\0" * 6, allowed=ALLOWED)


def test_prepare_drop_outside():
    pkts = _cap([Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=A, dst=B) / UDP(), Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=A, dst="192.0.2.55") / UDP()])
    prep = prepare_replay(
        pkts, address_map={A: NA, B: NB}, src_mac=b"\0" * 6, hop_mac=lambda d: b"\1" * 6, allowed=ALLOWED,
        drop_outside=True,
    )  # fmt: skip
    assert len(prep.frames) == 1 and prep.skipped["outside_range"] == 1


# --- schedules -------------------------------------------------------------------------------------------------


def test_schedule_speed():
    ts = [10_000_000_000, 10_000_100_000, 10_001_100_000, 10_003_100_000]
    s = build_schedule(ts, speed=1.0)
    assert s.offsets == pytest.approx([0, 100e-6, 1.1e-3, 3.1e-3])
    s2 = build_schedule(ts, speed=2.0)
    assert s2.offsets == pytest.approx([0, 50e-6, 0.55e-3, 1.55e-3]) and s2.timed


def test_schedule_loops_keep_the_mean_gap():
    ts = [0, 1_000_000, 3_000_000]  # gaps 1 ms and 2 ms: mean 1.5 ms
    s = build_schedule(ts, speed=1.0, loops=3)
    assert len(s) == 9
    assert [s.at(i) for i in range(9)] == pytest.approx(
        [0, 0.001, 0.003, 0.0045, 0.0055, 0.0075, 0.009, 0.010, 0.012]
    )
    assert s.seconds == pytest.approx(0.012)


def test_schedule_pps_and_topspeed():
    s = build_schedule([5, 1, 9, 9], pps=1000, loops=2)
    assert [s.at(i) for i in range(8)] == pytest.approx([i / 1000 for i in range(8)])
    t = build_schedule([5, 1, 9], topspeed=True, loops=2)
    assert not t.timed and len(t) == 6 and t.seconds == 0


def test_schedule_never_goes_backwards():
    s = build_schedule([0, 3_000_000, 1_000_000, 4_000_000])
    assert s.offsets == pytest.approx([0, 0.003, 0.003, 0.004])


def test_schedule_edge_cases():
    assert len(build_schedule([])) == 0
    assert build_schedule([7]).offsets == [0.0]
    with pytest.raises(ValueError):
        build_schedule([1, 2], speed=0)
    with pytest.raises(ValueError):
        build_schedule([1, 2], loops=0)


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=50), st.floats(0.01, 100))
@settings(max_examples=80, deadline=None)
def test_schedule_properties(ts, speed):
    s = build_schedule(sorted(ts), speed=speed, loops=2)
    xs = [s.at(i) for i in range(len(s))]
    assert xs == sorted(xs) and xs[0] == 0
    assert xs[len(ts) - 1] == pytest.approx((max(ts) - min(ts)) / 1e9 / speed)


class FakeSocket:
    def __init__(self):
        self.sent: list[tuple[float, bytes]] = []
        self.retries = 0

    def send(self, frame):
        self.sent.append((time.monotonic(), frame))
        return len(frame)

    def send_batch(self, batch, start, count):
        for i in range(start, start + count):
            self.send(batch.frames[i])
        return count


def test_send_frames_timed_follows_the_schedule():
    frames = [bytes([i]) * 60 for i in range(20)]
    sched = build_schedule([i * 2_000_000 for i in range(20)], speed=1.0, loops=2)  # 2 ms apart
    sock = FakeSocket()
    st_ = send_frames(sock, frames, sched, max_frames=10**6, end=time.monotonic() + 5)
    assert st_.sent == 40 and st_.bytes == 40 * 60 and st_.stopped == "done"
    assert [f for _, f in sock.sent] == frames + frames
    gaps = [b - a for (a, _), (b, _) in zip(sock.sent, sock.sent[1:], strict=False)]
    # never bunched to catch up (a late packet moves the rest of the schedule instead) ...
    assert min(gaps) > 0.002 - 0.0003
    # ... and on time: generous, a loaded 2-CPU machine can wake a thread milliseconds late
    assert sorted(abs(g - 0.002) for g in gaps)[len(gaps) // 2] < 0.0003
    assert len(st_.lateness) == 40 and all(x >= 0 for x in st_.lateness)


class StallingSocket(FakeSocket):
    """Stalls 30 ms inside the 5th send, like a preempted sender."""

    def send(self, frame):
        n = super().send(frame)
        if len(self.sent) == 5:
            time.sleep(0.03)
        return n


def test_send_frames_a_stall_moves_the_schedule_instead_of_bunching():
    frames = [bytes([i]) * 60 for i in range(12)]
    sched = build_schedule([i * 3_000_000 for i in range(12)], speed=1.0)  # 3 ms apart
    sock = StallingSocket()
    st_ = send_frames(sock, frames, sched, max_frames=100, end=time.monotonic() + 5)
    assert st_.sent == 12 and st_.slips >= 1 and st_.slip > 0.02
    gaps = [b - a for (a, _), (b, _) in zip(sock.sent, sock.sent[1:], strict=False)]
    assert gaps[4] > 0.03  # the stall itself
    assert all(g > 0.003 - 0.0003 for g in gaps[5:])  # after it: the capture's gaps, not a catch-up burst
    assert sock.sent[-1][0] - sock.sent[0][0] > 11 * 0.003 + 0.02  # the replay ends later by the stall


def test_send_frames_topspeed_bounds():
    frames = [bytes([i]) * 60 for i in range(10)]
    sched = build_schedule(list(range(10)), topspeed=True, loops=5)
    sock = FakeSocket()
    st_ = send_frames(sock, frames, sched, max_frames=33, end=time.monotonic() + 5)
    assert st_.sent == 33 and st_.stopped == "count" and len(sock.sent) == 33
    assert [f for _, f in sock.sent] == (frames * 4)[:33]
    assert st_.bytes == 33 * 60


def test_send_frames_stops_at_end():
    frames = [b"x" * 60] * 10
    sched = build_schedule([i * 100_000_000 for i in range(10)], speed=1.0)  # 100 ms apart
    t = time.monotonic()
    st_ = send_frames(FakeSocket(), frames, sched, max_frames=100, end=time.monotonic() + 0.25)
    assert st_.stopped == "duration" and 2 <= st_.sent <= 4 and time.monotonic() - t < 0.5
