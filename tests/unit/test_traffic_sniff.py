"""The arrival counter's BPF program, checked with a small interpreter of the opcodes it uses."""

from __future__ import annotations

import ipaddress

import pytest

from rangectl.traffic.packets import eth_header, ipv4_header, udp_datagram
from rangectl.traffic.sniff import MAX_MATCHES, SNAP, bpf_program, run_bpf
from rangectl.traffic.wire import PACKET_OUTGOING

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def ipv4_frame(src: str, dst: str, ethertype: int = 0x0800) -> bytes:
    udp = udp_datagram(src, dst, 1000, 9, b"x")
    return eth_header(MAC_B, MAC_A, ethertype) + ipv4_header(src, dst, 17, len(udp)) + udp


def test_accepts_only_listed_sources_to_listed_destinations():
    prog = bpf_program(["10.0.0.5", "10.0.1.0/24"], ["10.0.2.10", "10.0.3.10"])
    assert run_bpf(prog, ipv4_frame("10.0.0.5", "10.0.2.10")) == SNAP
    assert run_bpf(prog, ipv4_frame("10.0.1.77", "10.0.3.10")) == SNAP  # inside the network
    assert run_bpf(prog, ipv4_frame("10.0.0.6", "10.0.2.10")) == 0  # other source
    assert run_bpf(prog, ipv4_frame("10.0.2.5", "10.0.2.10")) == 0  # just outside 10.0.1.0/24
    assert run_bpf(prog, ipv4_frame("10.0.0.5", "10.0.2.11")) == 0  # other destination
    assert run_bpf(prog, ipv4_frame("10.0.2.10", "10.0.0.5")) == 0  # the reverse direction


def test_never_counts_frames_the_node_sends_or_non_ipv4():
    prog = bpf_program(["10.0.0.5"], ["10.0.2.10"])
    f = ipv4_frame("10.0.0.5", "10.0.2.10")
    assert run_bpf(prog, f, pkttype=0) == SNAP  # PACKET_HOST
    assert run_bpf(prog, f, pkttype=PACKET_OUTGOING) == 0
    assert run_bpf(prog, ipv4_frame("10.0.0.5", "10.0.2.10", ethertype=0x86DD)) == 0
    assert run_bpf(prog, f[:20]) == 0  # too short to hold the addresses


def test_empty_sources_accept_any_source():
    prog = bpf_program([], ["10.0.2.10"])
    assert run_bpf(prog, ipv4_frame("192.0.2.1", "10.0.2.10")) == SNAP
    assert run_bpf(prog, ipv4_frame("192.0.2.1", "10.0.2.11")) == 0


def test_many_matches_and_limits():
    srcs = [ipaddress.IPv4Address("10.9.0.0") + i for i in range(MAX_MATCHES)]
    prog = bpf_program(srcs, ["10.0.2.10"])
    assert run_bpf(prog, ipv4_frame(str(srcs[-1]), "10.0.2.10")) == SNAP
    assert run_bpf(prog, ipv4_frame(str(srcs[-1] + 1), "10.0.2.10")) == 0
    with pytest.raises(ValueError, match="at most"):
        bpf_program([*srcs, "10.9.9.9"], ["10.0.2.10"])
    with pytest.raises(ValueError, match="no destination"):
        bpf_program(["10.0.0.5"], [])


def test_program_is_packable():
    prog = bpf_program(["10.0.0.5", "10.0.1.0/24"], ["10.0.2.10"])
    raw = b"".join(i.pack() for i in prog)
    assert len(raw) == 8 * len(prog)
    assert all(0 <= i.jt <= 255 and 0 <= i.jf <= 255 for i in prog)
