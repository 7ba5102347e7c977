"""Traffic injects and replays against a real range on the real engine.

One small range (one team, module-scoped, no playbooks): a red scanner on the
WAN, a router, and a web portal, a mail node and a DNS node in the DMZ. Each
generator runs through ``rangectl inject`` and its packets are counted where
they land; a replay's addresses are checked on the wire at the target; an
out-of-range destination and a stopped red node are refused with one line;
every run is in the range's store. Traffic only goes between containers this
module created (subnets 198.18.77.0/24 and 10.231.77.0/24, used by no other
test module).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rangectl import ranges
from rangectl.backend.docker import container_name
from tests.conftest import ROOT, leftovers, run_cli

pytestmark = pytest.mark.docker

RANGE = "pytest-inject"
SCANNER, PORTAL, MAIL, DNS = "198.18.77.66", "10.231.77.10", "10.231.77.25", "10.231.77.53"

SCENARIO = f"""\
rangectl: 1
name: inject-test
title: Traffic inject test range
networks:
  wan: {{subnet: 198.18.77.0/24}}
  dmz: {{subnet: 10.231.77.0/24}}
nodes:
  gw: {{image: router, role: infra, forward: true, interfaces: {{wan: 198.18.77.1, dmz: 10.231.77.1}}}}
  portal:
    image: web
    role: target
    gateway: 10.231.77.1
    interfaces: {{dmz: {PORTAL}}}
    services: [{{name: http, port: 80}}]
  mail: {{image: mail, role: target, gateway: 10.231.77.1, interfaces: {{dmz: {MAIL}}}, services: [{{name: smtp, port: 25}}]}}
  dns: {{image: dns, role: infra, gateway: 10.231.77.1, interfaces: {{dmz: {DNS}}}, services: [{{name: dns, port: 53, proto: udp}}]}}
  scanner: {{image: attacker, role: red, gateway: 198.18.77.1, interfaces: {{wan: {SCANNER}}}}}
injects:
  - {{id: synscan, at: 1m, traffic: {{kind: portscan, from: scanner, target: portal, ports: "22,25,80,443,8080", rate: 1000, timeout: 0.5}}}}
  - {{id: connscan, at: 1m, traffic: {{kind: portscan, method: connect, from: scanner, target: portal, ports: "22,80,443", rate: 500, timeout: 0.5}}}}
  - {{id: flood, at: 2m, traffic: {{kind: synflood, from: scanner, target: portal, port: 8081, count: 400, rate: 4000}}}}
  - {{id: webattack, at: 3m, traffic: {{kind: http, from: scanner, target: portal, rate: 50}}}}
  - {{id: brute, at: 4m, traffic: {{kind: bruteforce, from: scanner, target: portal, attempts: 6, rate: 30}}}}
  - {{id: exfil, at: 5m, traffic: {{kind: dns-exfil, from: scanner, target: dns, data: "citizens.csv 0042 0043", rate: 100, wait: 0.3}}}}
  - {{id: c2, at: 6m, traffic: {{kind: beacon, from: scanner, target: portal, interval: 0.1s, count: 3}}}}
  - {{id: phish, at: 7m, traffic: {{kind: phishing, from: scanner, target: mail, to: [staff@range.test], rate: 10}}}}
  - {{id: replay, at: 8m, traffic: {{kind: pcap, from: scanner, file: pcaps/sqli-http.pcap, speed: 20,
      map: {{198.51.100.10: scanner, 198.51.100.20: portal}}}}}}
  - {{id: note, at: 9m, message: "a narrative inject"}}
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home-inject")


@pytest.fixture(autouse=True)
def _range_home(_isolated_home, home, monkeypatch):
    """Every test here (and every CLI it runs) sees the module's range."""
    monkeypatch.setenv("RANGECTL_HOME", str(home))


@pytest.fixture(scope="module")
def rng(docker_engine, built_images, home, tmp_path_factory):
    scen = tmp_path_factory.mktemp("inject-scenario") / "inject-test.yaml"
    scen.write_text(SCENARIO)
    old = os.environ.get("RANGECTL_HOME")
    os.environ["RANGECTL_HOME"] = str(home)
    try:
        # the capture is found in <root>/scenarios/ (the scenario sits in a temp folder)
        assert (ROOT / "scenarios" / "pcaps" / "sqli-http.pcap").is_file()
        ranges.up(scen, teams=1, name=RANGE, provision=False)
        _wait_for_services(docker_engine)
        yield RANGE
    finally:
        ranges.down(RANGE)
        if old is None:
            os.environ.pop("RANGECTL_HOME", None)
        else:
            os.environ["RANGECTL_HOME"] = old
        cs, ns = leftovers(docker_engine, RANGE)
        assert not cs and not ns, "down left resources behind"


def _wait_for_services(client) -> None:
    checks = {"portal": "ss -ltn | grep -q ':80 '", "mail": "ss -ltn | grep -q ':25 '", "dns": "ss -lun | grep -q ':53 '"}
    deadline = time.monotonic() + 60
    for node, cmd in checks.items():
        c = client.containers.get(container_name(RANGE, 1, node))
        while c.exec_run(["sh", "-c", cmd]).exit_code != 0:
            assert time.monotonic() < deadline, f"{node} did not start listening"
            time.sleep(0.3)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=180, env={**os.environ, "COLUMNS": "200"})


def _inject(inject_id: str) -> dict:
    p = _cli("inject", RANGE, inject_id, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["errors"] == [] and len(out["runs"]) == 1
    return out["runs"][0]


def _pid(client, node: str) -> int:
    return int(client.api.inspect_container(container_name(RANGE, 1, node))["State"]["Pid"])


@contextlib.contextmanager
def capture(client, node: str, bpf: str, out: Path):
    """tcpdump in a node's network namespace (run from the host with nsenter); yields the pcap path."""
    err = out.with_suffix(".err")
    proc = subprocess.Popen(
        ["nsenter", f"--net=/proc/{_pid(client, node)}/ns/net", "tcpdump", "-i", "any", "-n", "-s", "0", "-U",
         "--immediate-mode", "-B", "16384", "-w", str(out), bpf],
        stdout=subprocess.DEVNULL, stderr=open(err, "w"),  # noqa: SIM115
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while "listening on" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.02)
        yield out
    finally:
        time.sleep(0.4)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ipv4_packets(path: Path) -> list[bytes]:
    from rangectl.traffic.packets import ipv4_from_link
    from rangectl.traffic.pcapfile import read_capture

    out = []
    for cp in read_capture(path):
        ip = ipv4_from_link(cp.linktype, cp.data)
        if ip is not None:
            out.append(bytes(ip))
    return out


# --- each generator's packets arrive at the target -------------------------------------------------


def test_traffic_list_cli():
    p = _cli("traffic", "list", "--json")
    assert p.returncode == 0, p.stderr
    kinds = {g["kind"]: g for g in json.loads(p.stdout)}
    assert set(kinds) == {"portscan", "synflood", "http", "bruteforce", "dns-exfil", "beacon", "phishing", "pcap"}
    rate = next(x for x in kinds["synflood"]["params"] if x["name"] == "rate")
    assert rate["default"] == 500.0 and "<= 50000" in rate["limits"]
    p = _cli("traffic", "list", "synflood")
    assert p.returncode == 0 and "spoof" in p.stdout
    assert _cli("traffic", "list", "nope").returncode == 2


def test_synscan_seen_on_target(rng):
    t = _inject("synscan")["ground_truth"]
    assert (t["inject"], t["team"], t["kind"], t["src_node"], t["src_ip"], t["dst_node"], t["dst_ip"]) == (
        "synscan", 1, "portscan", "scanner", SCANNER, "portal", PORTAL
    )
    assert t["details"]["open"] == [80] and t["packets"] == 5 and t["counted"] == "exact"
    # every probe arrives; so does the scanner kernel's RST to the portal's one SYN-ACK
    assert t["seen_on_target"] == t["packets"] + len(t["details"]["open"])
    assert t["started"] < t["ended"]


@pytest.mark.parametrize("inject_id", ["connscan", "webattack", "brute", "c2", "phish"])
def test_session_generators_seen_on_target(rng, inject_id):
    t = _inject(inject_id)["ground_truth"]
    assert t["counted"] == "wire" and t["packets"] > 0
    # what left the scanner towards the target (a tap there) == what arrived at the target from it
    assert t["seen_on_target"] == t["packets"], t["seen"]
    d = t["details"]
    if inject_id == "webattack":
        assert d["by_attack"] == {"sqli": 5, "traversal": 5, "webshell": 3}
        assert all(r.get("status") for r in d["requests"]), d["requests"]
    elif inject_id == "brute":
        # the portal's admin has a weak password: the run stops at the first accepted login
        assert d["attempts"] == 6 or (t["stopped"] == "success" and d["successes"][0]["attempt"] == d["attempts"])
        assert d["statuses"] and "error" not in d["statuses"]
    elif inject_id == "c2":
        assert d["checkins_sent"] == 3 and all(c["status"] for c in d["checkins"])
    elif inject_id == "phish":
        assert t["dst_node"] == "mail" and t["dst_ip"] == MAIL and d["delivered"] == 1
    elif inject_id == "connscan":
        assert d["open"] == [80] and d["closed"] == 2


def test_synflood_and_dns_exfil_counted_exactly(rng, docker_engine):
    t = _inject("flood")["ground_truth"]
    # a closed port: the portal answers with RSTs, which the scanner's kernel ignores
    assert t["packets"] == 400 == t["seen_on_target"] and t["stopped"] == "count"
    assert t["seen"]["portal"]["bytes"] == t["bytes"]
    t = _inject("exfil")["ground_truth"]
    assert t["dst_node"] == "dns" and t["packets"] == t["details"]["queries_sent"] == t["seen_on_target"] > 0
    assert t["details"]["answered"] == t["packets"]
    code, out = docker_engine.containers.get(container_name(RANGE, 1, "dns")).exec_run(
        ["sh", "-c", "cat /var/log/dns/queries.log"]
    )
    assert t["details"]["first_name"] in out.decode(errors="replace")


def test_pcap_inject_rewrites_addresses_as_mapped(rng, docker_engine, tmp_path):
    with capture(docker_engine, "portal", "ip", tmp_path / "portal.pcap") as f:
        t = _inject("replay")["ground_truth"]
    d = t["details"]
    assert d["map"] == {"198.51.100.10": SCANNER, "198.51.100.20": PORTAL}
    assert d["destinations"] == {PORTAL: t["packets"]} and d["sources"] == {SCANNER: t["packets"]}
    assert t["dst_node"] == "portal" and t["packets"] == d["frames_per_loop"] > 0
    pkts = _ipv4_packets(f)
    from_scanner = [p for p in pkts if p[12:16] == ipaddress.IPv4Address(SCANNER).packed]
    assert all(p[16:20] == ipaddress.IPv4Address(PORTAL).packed for p in from_scanner)
    # seen: the replayed frames plus the scanner kernel's RSTs to the portal's SYN-ACKs (tcpdump may drop some)
    rsts = [p for p in from_scanner if p[33] == 0x04]
    assert t["seen_on_target"] >= t["packets"] and len(from_scanner) <= t["seen_on_target"]
    assert len(from_scanner) - len(rsts) >= t["packets"] - 2
    assert b"UNION%20SELECT" in b"".join(from_scanner)
    old = {ipaddress.IPv4Address(a).packed for a in ("198.51.100.10", "198.51.100.20")}
    assert not [p for p in pkts if p[12:16] in old or p[16:20] in old]


# --- replay CLI -------------------------------------------------------------------------------------


def test_replay_cli_maps_addresses_and_records(rng, docker_engine, tmp_path):
    # the capture's DNS queries, replayed at the portal (no resolver there: it answers with ICMP, and the
    # scanner sends nothing back, so what arrives from the scanner is exactly what was replayed)
    cap = ROOT / "scenarios" / "pcaps" / "dns-exfil.pcap"
    with capture(docker_engine, "portal", "udp", tmp_path / "portal.pcap") as f:
        p = _cli("replay", RANGE, "--from", "scanner", str(cap), "--map", "198.51.100.10=scanner",
                 "--map", "198.51.100.20=portal", "--pps", "500", "--loop", "2", "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    run = json.loads(p.stdout)["runs"][0]
    t = run["ground_truth"]
    assert t["inject"] is None and t["kind"] == "pcap" and t["dst_node"] == "portal"
    assert t["packets"] == 2 * t["details"]["frames_per_loop"] == t["seen_on_target"] > 0
    queries = [x for x in _ipv4_packets(f) if x[12:16] == ipaddress.IPv4Address(SCANNER).packed]
    assert len(queries) == t["packets"]
    assert {x[16:20] for x in queries} == {ipaddress.IPv4Address(PORTAL).packed}
    assert all(x[9] == 17 and x[22:24] == b"\x00\x35" for x in queries)  # UDP to port 53
    # human output: a table and the ground-truth line
    p = _cli("replay", RANGE, "--from", "scanner", str(cap), "--map", "198.51.100.10=scanner",
             "--map", "198.51.100.20=portal", "--topspeed")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "replay dns-exfil.pcap from scanner" in p.stdout and "portal 10.231.77.10" in p.stdout and "ground truth recorded" in p.stdout


# --- refusals -----------------------------------------------------------------------------------------


def _events() -> list:
    from rangectl.state import RangeState
    from rangectl.store import EventStore

    with EventStore(RangeState.open(RANGE).db_path) as store:
        return store.events("inject.done")


def test_out_of_range_destination_is_refused(rng, tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    f = tmp_path / "leak.pcap"
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # explicit: no ARP by Scapy
    wrpcap(str(f), [eth / IP(src="192.0.2.10", dst="192.0.2.20") / UDP(dport=9),
                    eth / IP(src="192.0.2.10", dst="192.0.2.99") / UDP(dport=9)])  # fmt: skip
    before = len(_events())
    p = _cli("replay", RANGE, "--from", "scanner", str(f), "--map", "192.0.2.10=scanner", "--map", "192.0.2.20=portal")
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert "refused, nothing sent" in lines[0] and "192.0.2.99" in lines[0] and "outside the range" in lines[0]
    # a map onto an address outside the team's subnets is refused the same way
    p = _cli("replay", RANGE, "--from", "scanner", str(f), "--map", "192.0.2.10=scanner", "--map", "192.0.2.20=10.231.99.5",
             "--map", "192.0.2.99=portal")  # fmt: skip
    assert p.returncode == 1 and "10.231.99.5" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    # ad hoc replays come from red nodes only
    p = _cli("replay", RANGE, "--from", "portal", str(f))
    assert p.returncode == 2 and "red node" in p.stderr
    assert len(_events()) == before


def test_unknown_team_inject_and_message_inject(rng):
    p = _cli("inject", RANGE, "synscan", "--team", "2")
    assert p.returncode == 4 and "no team 2" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = _cli("inject", RANGE, "nope")
    assert p.returncode == 4 and "no inject 'nope'" in p.stderr
    from rangectl.state import RangeState
    from rangectl.store import EventStore

    def messages() -> list:
        with EventStore(RangeState.open(RANGE).db_path) as store:
            return store.events("message")

    before = len(messages())
    p = _cli("inject", RANGE, "note", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["inject"] == "note" and out["teams"] == [1]
    new = messages()[before:]
    assert [(e.kind, e.team, e.actor, e.data["manual"], e.data["text"]) for e in new] == [
        ("message", 1, "trainer", True, {"en": "a narrative inject"})
    ]


def test_ground_truth_is_recorded(rng):
    from rangectl.state import RangeState
    from rangectl.store import EventStore

    evs = _events()
    ids = [e.data["inject"] for e in evs]
    for inj in ("synscan", "connscan", "flood", "webattack", "brute", "exfil", "c2", "phish", "replay"):
        assert inj in ids, ids
    assert ids.count(None) == 2  # the two CLI replays
    for e in evs:
        assert e.team == 1 and e.actor == "trainer" and e.data["status"] == "ok" and e.data["manual"] is True
        for k in ("kind", "src_node", "src_ip", "dst_node", "dst_ip", "started", "ended", "packets", "bytes",
                  "seen_on_target"):  # fmt: skip
            assert k in e.data, (k, e.data)
    with EventStore(RangeState.open(RANGE).db_path) as store:
        assert store.verify().ok


def test_stopped_red_node_gives_one_clear_line(rng, docker_engine):
    # last in the module: the scanner stays stopped (down removes it)
    docker_engine.containers.get(container_name(RANGE, 1, "scanner")).stop(timeout=1)
    p = _cli("inject", RANGE, "synscan")
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert "node 'scanner' of team 1 is not running" in lines[0] and "red node cannot send" in lines[0]
    docker_engine.containers.get(container_name(RANGE, 1, "scanner")).remove(force=True)
    p = _cli("replay", RANGE, "--from", "scanner", str(ROOT / "scenarios" / "pcaps" / "dns-exfil.pcap"))
    assert p.returncode == 4 and "has no node 'scanner'" in p.stderr and len(p.stderr.strip().splitlines()) == 1
