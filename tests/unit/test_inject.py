"""The inject glue without a range: argument parsing, refusals before anything is sent, the record."""

from __future__ import annotations

import ipaddress
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rangectl.drill.inject import (
    REPLAY_EVENT,
    Watch,
    ground_truth,
    parse_map,
    record,
    run_job,
    run_traffic_inject,
)
from rangectl.errors import NotFound, RangeError, UsageError
from rangectl.plan import plan as make_plan
from rangectl.scenario.validate import load_scenario
from rangectl.traffic import TrafficRefused, TrafficResult

SCENARIO = """\
rangectl: 1
name: unit-inject
title: Unit inject
networks:
  wan: {subnet: 10.70.1.0/24}
  dmz: {subnet: 10.70.2.0/24}
nodes:
  gw: {image: router, role: infra, forward: true, interfaces: {wan: 10.70.1.1, dmz: 10.70.2.1}}
  portal: {image: web, role: target, gateway: 10.70.2.1, interfaces: {dmz: 10.70.2.10}}
  scanner: {image: attacker, role: red, gateway: 10.70.1.1, interfaces: {wan: 10.70.1.66}}
injects:
  - {id: scan, at: 1m, traffic: {kind: portscan, from: scanner, target: portal, ports: "80"}}
  - {id: note, at: 2m, message: hello}
"""


@pytest.fixture
def world(tmp_path):
    f = tmp_path / "unit-inject.yaml"
    f.write_text(SCENARIO)
    sc = load_scenario(f)
    return sc, make_plan(sc, 2), f


class FakeState:
    name = "unit"

    def __init__(self, source: Path, db: Path):
        self.source_path = source
        self.db_path = db


class FakeBackend:
    """running(): fine for running nodes, the backend's errors for stopped and missing ones; no
    job may start (the tests here fail before anything runs in a node)."""

    def __init__(self, stopped: set[str] = frozenset(), missing: set[str] = frozenset()):
        self.stopped, self.missing, self.asked = stopped, missing, []

    def running(self, ref):
        self.asked.append((ref.node, ref.team))
        if ref.node in self.missing:
            raise NotFound(f"range '{ref.range}' has no node '{ref.node}' for team {ref.team}", fix="see `rangectl status`")
        if ref.node in self.stopped:
            raise RangeError(f"node '{ref.node}' of team {ref.team} is not running (exited)", fix="run `rangectl up` again")

    @property
    def nodes_exec(self):
        raise AssertionError("no job may start")


def test_parse_map():
    assert parse_map(["198.51.100.10=scanner", " 198.51.100.20 = portal "]) == {
        "198.51.100.10": "scanner",
        "198.51.100.20": "portal",
    }
    assert parse_map(None) == {}
    for bad, msg in (("198.51.100.10", "not ADDR=NODE"), ("=x", "not ADDR=NODE"), ("portal=scanner", "not an IPv4")):
        with pytest.raises(UsageError, match=msg):
            parse_map([bad])
    with pytest.raises(UsageError, match="twice"):
        parse_map(["10.0.0.1=a", "10.0.0.1=b"])


def test_stopped_or_missing_red_node_is_one_clear_line(world, tmp_path):
    sc, pl, f = world
    st = FakeState(f, tmp_path / "db")
    inj = sc.injects[0]
    with pytest.raises(RangeError) as ei:
        run_traffic_inject(st, sc, pl, FakeBackend(stopped={"scanner"}), 2, inj)
    msg = str(ei.value)
    assert "\n" not in msg and ei.value.exit_code == 1
    assert "inject 'scan'" in msg and "team 2" in msg and "red node cannot send" in msg
    assert "node 'scanner' of team 2 is not running (exited)" in msg and "rangectl up" in msg
    with pytest.raises(NotFound, match="has no node 'scanner' for team 1") as ei:
        run_traffic_inject(st, sc, pl, FakeBackend(missing={"scanner"}), 1, inj)
    assert ei.value.exit_code == 4


def test_unknown_team_node_and_message_inject(world, tmp_path):
    sc, pl, f = world
    st = FakeState(f, tmp_path / "db")
    with pytest.raises(NotFound, match="no team 3 .it has teams 1..2."):
        run_traffic_inject(st, sc, pl, FakeBackend(), 3, sc.injects[0])
    with pytest.raises(NotFound, match="no node 'ghost'"):
        run_job(st, pl, FakeBackend(), 1, kind="portscan", params={}, src_node="ghost", target_node="portal", inject_id=None)
    with pytest.raises(UsageError, match="is a message"):
        run_traffic_inject(st, sc, pl, FakeBackend(), 1, sc.injects[1])
    with pytest.raises(UsageError, match="needs a target"):
        run_job(st, pl, FakeBackend(), 1, kind="synflood", params={}, src_node="scanner", target_node=None, inject_id=None)
    with pytest.raises(RangeError, match="invalid portscan parameters"):
        run_job(st, pl, FakeBackend(), 1, kind="portscan", params={"rate": 0}, src_node="scanner", target_node="portal",
                inject_id=None)  # fmt: skip


def test_capture_outside_the_team_is_refused_before_anything_starts(world, tmp_path):
    """Team 2's copy has other subnets: team 1's addresses in a map are outside it, so nothing is sent."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    sc, pl, f = world
    cap = tmp_path / "c.pcap"
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # explicit: no ARP by Scapy
    wrpcap(str(cap), [eth / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=9)])
    be = FakeBackend()
    st = FakeState(f, tmp_path / "db")
    team1_portal = str(pl.team(1).ip_of("portal"))
    assert team1_portal not in {str(ip) for n in pl.team(2).nodes for ip in n.interfaces.values()}
    with pytest.raises(TrafficRefused, match=f"refusing destination {team1_portal}: outside") as ei:
        run_job(st, pl, be, 2, kind="pcap", params={"file": str(cap), "map": {"192.0.2.1": "scanner", "192.0.2.2": team1_portal}},
                src_node="scanner", target_node=None, inject_id=None)  # fmt: skip
    assert "nothing sent" in str(ei.value)
    assert be.asked == [("scanner", 2)]  # no arrival counter was started anywhere
    with pytest.raises(TrafficRefused, match="192.0.2.2"):
        run_job(st, pl, be, 2, kind="pcap", params={"file": str(cap), "map": {"192.0.2.1": "scanner"}},
                src_node="scanner", target_node=None, inject_id=None)  # fmt: skip


def _result() -> TrafficResult:
    t0 = datetime(2026, 1, 1, 8, 0, 0, tzinfo=UTC)
    return TrafficResult(
        kind="portscan", src_ip="10.70.1.66", dst_ip="10.70.2.10", started=t0, ended=t0 + timedelta(seconds=1.5),
        packets_sent=3, bytes_sent=222, stopped="done", counted="exact", src_iface="eth0", details={"open": [80]},
    )  # fmt: skip


def test_ground_truth_shape():
    w_ok = Watch("portal", [ipaddress.IPv4Address("10.70.2.10")], result={"packets": 4, "bytes": 296, "tap_drops": 0})
    t = ground_truth("unit", 1, "scan", "portscan", "scanner", "portal", _result(), [w_ok])
    assert (t["inject"], t["team"], t["range"], t["kind"]) == ("scan", 1, "unit", "portscan")
    assert (t["src_node"], t["src_ip"], t["dst_node"], t["dst_ip"]) == ("scanner", "10.70.1.66", "portal", "10.70.2.10")
    assert (t["packets"], t["bytes"], t["seen_on_target"], t["seconds"]) == (3, 222, 4, 1.5)
    assert t["started"] == "2026-01-01T08:00:00+00:00" and t["ended"] == "2026-01-01T08:00:01.500000+00:00"
    assert t["seen"]["portal"] == {"packets": 4, "bytes": 296, "tap_drops": 0, "addresses": ["10.70.2.10"]}
    assert t["details"] == {"open": [80]}
    json.dumps(t)  # JSON-able as it is
    w_down = Watch("portal", [], error="node 'portal' of team 1 is not running")
    t = ground_truth("unit", 1, None, "pcap", "scanner", None, _result(), [w_down], {"file": "x.pcap"})
    assert t["seen_on_target"] is None and t["seen"]["portal"]["error"].startswith("node 'portal'")
    assert t["dst_node"] == "portal" and t["dst_nodes"] == ["portal"] and t["details"]["file"] == "x.pcap"


def test_record_appends_like_the_runner(tmp_path):
    from rangectl.store import EventStore

    db = tmp_path / "range.db"
    truth = ground_truth("unit", 2, "scan", "portscan", "scanner", "portal", _result(), [])
    ev = record(db, 2, truth)
    assert ev.kind == "inject.done" and ev.team == 2 and ev.actor == "trainer"
    assert ev.data["inject"] == "scan" and ev.data["status"] == "ok" and ev.data["manual"] is True
    assert ev.data["drill_t"] == 0.0 and ev.data["packets"] == 3 and ev.data["src_ip"] == "10.70.1.66"
    with EventStore(db) as store:
        store.append("drill.start", {"wall_start": time.time() - 30, "time_scale": 1.0, "teams": 2}, actor="runner")
    ev2 = record(db, 2, truth, kind=REPLAY_EVENT)
    assert ev2.kind == REPLAY_EVENT and 29 < ev2.data["drill_t"] < 60
    with EventStore(db) as store:
        assert [e.seq for e in store.events("inject.done")] == [ev.seq] and store.verify().ok


def test_traffic_list_command():
    from rangectl.cli import app

    r = CliRunner().invoke(app, ["traffic", "list", "--json"])
    assert r.exit_code == 0, r.output
    gens = json.loads(r.output)
    assert [g["kind"] for g in gens] == ["portscan", "synflood", "http", "bruteforce", "dns-exfil", "beacon", "phishing", "pcap"]
    pcap = next(g for g in gens if g["kind"] == "pcap")
    assert pcap["needs_target"] is False and next(p for p in pcap["params"] if p["name"] == "file")["required"]
    r = CliRunner().invoke(app, ["traffic", "list", "beacon"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "jitter" in r.output and "<= 0.9" in r.output


def test_spoof_ranges_move_with_the_team():
    from rangectl.drill.inject import team_network
    from rangectl.plan import plan
    from rangectl.scenario.validate import load_scenario
    from tests.conftest import FIXTURES

    p = plan(load_scenario(FIXTURES / "mini-range.yaml"), 3)
    wan1 = p.team(1).networks[0].subnet
    assert team_network(p, p.team(1), "198.18.10.128/25") == "198.18.10.128/25"
    for k in (2, 3):
        moved = team_network(p, p.team(k), "198.18.10.128/25")
        wan_k = next(n.subnet for n in p.team(k).networks if n.name == "wan")
        assert moved.endswith("/25") and ipaddress.IPv4Network(moved).subnet_of(wan_k) and wan_k != wan1
        assert int(ipaddress.IPv4Network(moved).network_address) - int(wan_k.network_address) == 128
    assert team_network(p, p.team(2), "192.0.2.0/24") == "192.0.2.0/24"  # outside: refused later
