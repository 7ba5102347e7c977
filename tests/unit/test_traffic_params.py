"""Traffic generator parameters, the safety rule and the pure helpers (no root, no namespaces)."""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rangectl.errors import RangeError
from rangectl.scenario.traffic_params import parse_ports
from rangectl.traffic import (
    GENERATORS,
    TrafficContext,
    TrafficError,
    TrafficParamsError,
    TrafficRefused,
    describe,
    parse_params,
    run_traffic,
    validate_params,
)
from rangectl.traffic.base import check_address, refusal
from rangectl.traffic.pacing import Budget

ROOT = Path(__file__).resolve().parents[2]
# Explicit MACs: a bare Ether() makes Scapy ARP for the destination on the host network.
SRC_MAC, DST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
KINDS = ["portscan", "synflood", "http", "bruteforce", "dns-exfil", "beacon", "phishing", "pcap"]


def test_registry_has_every_generator():
    assert list(GENERATORS) == KINDS
    for spec in GENERATORS.values():
        assert spec.summary and spec.level in ("packet", "session", "replay")


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "pcap"])
def test_defaults_are_valid(kind):
    assert validate_params(kind, {}) == []
    assert validate_params(kind, None) == []


def test_pcap_needs_a_file():
    assert validate_params("pcap", {}) == [("file", "missing required parameter 'file' for pcap")]
    assert validate_params("pcap", {"file": "cap.pcap", "map": {"192.0.2.1": "portal"}}) == []


def test_unknown_kind():
    [(path, msg)] = validate_params("teardrop", {})
    assert path == "kind"
    assert "unknown traffic kind 'teardrop'" in msg and "portscan" in msg


def test_unknown_key_names_known_ones():
    [(path, msg)] = validate_params("synflood", {"port": 80, "ratee": 5})
    assert path == "ratee"
    assert "unknown parameter 'ratee' for synflood" in msg and "rate" in msg


def test_scenario_keys_are_ignored():
    assert validate_params("portscan", {"kind": "portscan", "from": "scanner", "target": "portal", "ports": "80"}) == []


@pytest.mark.parametrize(
    "kind, params, path, fragment",
    [
        ("portscan", {"ports": "1024-1"}, "ports", "runs backwards"),
        ("portscan", {"ports": "0,22"}, "ports", "outside 1-65535"),
        ("portscan", {"ports": "22,http"}, "ports", "not a port"),
        ("portscan", {"ports": True}, "ports", "ports are like"),
        ("portscan", {"method": "xmas"}, "method", "'syn' or 'connect'"),
        ("portscan", {"rate": 0}, "rate", "greater than 0"),
        ("portscan", {"rate": 10_000}, "rate", "less than or equal to 5000"),
        ("synflood", {"count": 10_000_000}, "count", "less than or equal to 1000000"),
        ("synflood", {"duration": "20m"}, "duration", "less than or equal to 600"),
        ("synflood", {"duration": "soon"}, "duration", "not a duration"),
        ("synflood", {"spoof": "10.0.0.0/33"}, "spoof", "not an IPv4 network"),
        ("synflood", {"port": 70000}, "port", "less than or equal to 65535"),
        ("http", {"attacks": ["sqli", "xss"]}, "attacks[1]", "'sqli', 'traversal' or 'webshell'"),
        ("http", {"requests": [{"path": "nope"}]}, "requests[0].path", "a path starting with /"),
        ("http", {"max_requests": 5000}, "max_requests", "less than or equal to 1000"),
        ("bruteforce", {"service": "rdp"}, "service", "'http' or 'ssh'"),
        ("bruteforce", {"usernames": []}, "usernames", "at least 1 item"),
        ("bruteforce", {"attempts": 0}, "attempts", "greater than or equal to 1"),
        ("dns-exfil", {"domain": "Bad_Domain"}, "domain", "lower-case domain name"),
        ("dns-exfil", {"label_length": 64}, "label_length", "less than or equal to 63"),
        ("dns-exfil", {"domain": ("a" * 60 + ".") * 3 + "b" * 40}, "", "DNS allows 253"),
        ("beacon", {"jitter": 1.5}, "jitter", "less than or equal to 0.9"),
        ("beacon", {"protocol": "icmp"}, "protocol", "'http' or 'udp'"),
        ("phishing", {"to": ["not-an-address"]}, "to[0]", "e-mail address"),
        ("phishing", {"count": 1000}, "count", "less than or equal to 100"),
        ("pcap", {"file": "x.pcap", "map": {"1.2.3": "a"}}, "map", "map key '1.2.3' is not an IPv4 address"),
        ("pcap", {"file": "x.pcap", "pps": 100, "topspeed": True}, "", "give one timing"),
        ("pcap", {"file": "x.pcap", "speed": 2, "pps": 100}, "", "give one timing"),
        ("pcap", {"file": "x.pcap", "loop": 0}, "loop", "greater than or equal to 1"),
    ],
)
def test_bad_values(kind, params, path, fragment):
    problems = validate_params(kind, params)
    assert any(p == path and fragment in m for p, m in problems), problems


def test_several_problems_at_once():
    problems = validate_params("portscan", {"ports": "9-1", "rate": -1, "bogus": 1})
    assert {p for p, _ in problems} == {"ports", "rate", "bogus"}


def test_durations_accept_scenario_syntax():
    p = parse_params("beacon", {"interval": "1m30s", "duration": "10m", "timeout": 2})
    assert p.interval == 90 and p.duration == 600 and p.timeout == 2


def test_parse_params_raises_with_problems():
    with pytest.raises(TrafficParamsError) as ei:
        parse_params("synflood", {"count": -1})
    assert isinstance(ei.value, RangeError)
    assert ei.value.problems[0][0] == "count"


@pytest.mark.parametrize(
    "spec, expect",
    [
        ("22", [22]),
        ("22,80,443", [22, 80, 443]),
        ("20-23,22", [20, 21, 22, 23]),
        (" 80 , 1-3 ", [1, 2, 3, 80]),
        (8080, [8080]),
        ([22, "80-81"], [22, 80, 81]),
        ("1-65535", list(range(1, 65536))),
    ],
)
def test_parse_ports(spec, expect):
    assert parse_ports(spec) == expect


@given(st.sets(st.integers(1, 65535), min_size=1, max_size=60))
@settings(max_examples=60, deadline=None)
def test_parse_ports_roundtrip(ports):
    xs = sorted(ports)
    parts, start, prev = [], xs[0], xs[0]
    for x in xs[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    assert parse_ports(",".join(parts)) == xs


def test_describe_lists_every_parameter_with_defaults():
    d = describe()
    json.dumps(d, default=str)  # serializable for --json
    kinds = {g["kind"]: g for g in d}
    assert list(kinds) == KINDS
    scan = {p["name"]: p for p in kinds["portscan"]["params"]}
    assert scan["ports"]["default"] == "1-1024"
    assert scan["rate"]["limits"] == "> 0, <= 5000"
    assert scan["method"]["type"] == "syn | connect"
    pcap = {p["name"]: p for p in kinds["pcap"]["params"]}
    assert pcap["file"]["required"] and not kinds["pcap"]["needs_target"]
    for g in d:
        for p in g["params"]:
            assert p["description"], (g["kind"], p["name"])


# --- safety ------------------------------------------------------------------------------------

ALLOWED = [ipaddress.IPv4Network("10.60.1.0/24"), ipaddress.IPv4Network("10.60.2.0/24")]


@pytest.mark.parametrize(
    "addr, fragment",
    [
        ("10.60.1.20", None),
        ("10.60.2.1", None),
        ("10.60.3.1", "outside the range's allowed subnets (10.60.1.0/24, 10.60.2.0/24)"),
        ("8.8.8.8", "outside the range's allowed subnets"),
        ("10.60.1.255", "the broadcast address of 10.60.1.0/24"),
        ("255.255.255.255", "broadcast, multicast"),
        ("224.0.0.251", "broadcast, multicast"),
        ("127.0.0.1", "loopback"),
    ],
)
def test_refusal(addr, fragment):
    why = refusal(ipaddress.IPv4Address(addr), ALLOWED)
    if fragment is None:
        assert why is None
    else:
        assert why and addr in why and fragment in why


def test_no_allowed_subnets_means_nothing_is_sent():
    assert "no allowed subnets" in refusal(ipaddress.IPv4Address("10.60.1.20"), [])


def test_loopback_refused_even_if_allowed():
    assert "loopback" in refusal(ipaddress.IPv4Address("127.0.0.1"), [ipaddress.IPv4Network("127.0.0.0/8")])


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "pcap"])
def test_every_generator_refuses_outside_before_entering_the_namespace(kind):
    # the namespace path does not exist: refusing must happen before any attempt to enter it
    ctx = TrafficContext("/nonexistent/ns/net", ["10.60.1.0/24"], dst_ip="192.0.2.7")
    with pytest.raises(TrafficRefused) as ei:
        run_traffic(kind, {}, ctx)
    assert "192.0.2.7" in str(ei.value) and "outside" in str(ei.value)
    assert isinstance(ei.value, RangeError)


def test_synflood_refuses_forged_sources_outside():
    ctx = TrafficContext("/nonexistent/ns/net", ["10.60.1.0/24"], dst_ip="10.60.1.20")
    with pytest.raises(TrafficRefused, match="10.61.0.0/24"):
        run_traffic("synflood", {"spoof": "10.61.0.0/24"}, ctx)


def test_pcap_refuses_outside_before_entering(tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    cap = tmp_path / "c.pcap"
    wrpcap(str(cap), [Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="10.60.1.5", dst="192.0.2.9") / UDP(dport=53)])
    ctx = TrafficContext("/nonexistent/ns/net", ["10.60.1.0/24"])
    with pytest.raises(TrafficRefused, match="192.0.2.9"):
        run_traffic("pcap", {"file": str(cap)}, ctx)


def test_target_required():
    ctx = TrafficContext(None, ["10.60.1.0/24"])
    with pytest.raises(TrafficError, match="needs a target"):
        run_traffic("http", {}, ctx)


def test_check_address_returns_ip():
    ctx = TrafficContext(None, ["10.60.1.0/24"])
    assert check_address("10.60.1.9", ctx) == ipaddress.IPv4Address("10.60.1.9")


def test_context_converts_and_resolves():
    ctx = TrafficContext(None, ["10.60.1.0/24"], dst_ip="10.60.1.9", resolve={"portal": "10.60.1.20"}.__getitem__)
    assert ctx.dst_ip == ipaddress.IPv4Address("10.60.1.9")
    assert ctx.resolve_node("portal") == ipaddress.IPv4Address("10.60.1.20")
    assert ctx.resolve_node("10.60.1.3") == ipaddress.IPv4Address("10.60.1.3")
    with pytest.raises(TrafficError, match="unknown node 'ghost'"):
        ctx.resolve_node("ghost")


# --- bounds ------------------------------------------------------------------------------------


def test_budget_stops_at_count():
    b = Budget(TrafficContext(None, ALLOWED), count=3, duration=10, rate=None)
    assert [b.wait_next() for _ in range(4)] == [True, True, True, False]
    assert b.reason == "count"


def test_budget_paces_and_stops_at_duration():
    b = Budget(TrafficContext(None, ALLOWED), count=1000, duration=0.25, rate=20)
    t = time.monotonic()
    n = 0
    while b.wait_next():
        n += 1
    assert 4 <= n <= 6 and b.reason == "duration"
    assert time.monotonic() - t < 0.6


def test_budget_deadline_and_stop():
    ctx = TrafficContext(None, ALLOWED, deadline=time.monotonic() + 0.1)
    b = Budget(ctx, count=1000, duration=10, rate=5)
    while b.wait_next():
        pass
    assert b.reason == "deadline"
    ev = threading.Event()
    ctx = TrafficContext(None, ALLOWED, stop=ev)
    b = Budget(ctx, count=1000, duration=10, rate=2)
    threading.Timer(0.1, ev.set).start()
    t = time.monotonic()
    while b.wait_next():
        pass
    assert b.reason == "stopped" and time.monotonic() - t < 1.0


# --- payload helpers ----------------------------------------------------------------------------


@given(st.binary(min_size=1, max_size=400), st.integers(1, 63))
@settings(max_examples=50, deadline=None)
def test_exfil_names_carry_the_data(data, label):
    from rangectl.traffic.generators.dns_exfil import exfil_names

    names = exfil_names(data, "cdn-sync.range.test", label)
    chunks = []
    for seq, name in enumerate(names):
        chunk, n, rest = name.split(".", 2)
        assert int(n) == seq and rest == "cdn-sync.range.test"
        assert 1 <= len(chunk) <= label and len(name) <= 253
        chunks.append(chunk)
    b32 = "".join(chunks).upper()
    assert base64.b32decode(b32 + "=" * (-len(b32) % 8)) == data


def test_dns_query_dissects():
    from scapy.layers.dns import DNS

    from rangectl.traffic.generators.dns_exfil import dns_query

    q = DNS(dns_query(0x1234, "abc.0.cdn-sync.range.test", 16))
    assert q.id == 0x1234 and q.rd == 1 and q.qd[0].qname == b"abc.0.cdn-sync.range.test." and q.qd[0].qtype == 16


def test_phishing_message():
    from rangectl.traffic.generators.phishing import phishing_message

    p = parse_params("phishing", {"to": ["a@range.test", "b@range.test"], "link": "http://evil.range.test/x"})
    msg = phishing_message(p, p.to, 0)
    raw = msg.as_string()
    assert "IT Helpdesk <it-helpdesk@range.test>" in raw and "a@range.test, b@range.test" in raw
    assert "http://evil.range.test/x" in msg.get_body(("plain",)).get_content()
    assert 'href="http://evil.range.test/x"' in msg.get_body(("html",)).get_content()


def test_http_attack_plan_defaults():
    p = parse_params("http", {})
    assert p.attacks == ["sqli", "traversal", "webshell"]
    assert p.lookup_path == "/lookup" and p.upload_path == "/upload"


def test_repo_scenarios_have_valid_traffic():
    from rangectl.plan import plan
    from rangectl.scenario.loader import load_file
    from rangectl.scenario.variables import substitute_all

    for f in sorted((ROOT / "scenarios").glob("*.yaml")):
        loaded = load_file(f)
        if loaded.scenario is None:
            continue
        # a {var:NAME} parameter is checked with the value team 1 gets (as validation does)
        values = plan(loaded.scenario, 1).team(1).values
        for inj in loaded.scenario.injects:
            if inj.traffic is not None:
                params = substitute_all(inj.traffic.params, values)
                assert validate_params(inj.traffic.kind, params) == [], (f.name, inj.id)
