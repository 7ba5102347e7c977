"""Issue 16, findings 2 and 6, on the real engine.

* A team that REDIRECTs port 80 to a stub in its own workstation no longer fakes the portal's
  availability or an ``http`` check: probes run from rangectl's probe node. The same setup
  does fool the workstation's vantage (what rangectl used before), so the test attacks.
* The probe's ARP entries for its gateway and targets are pinned: a workstation on the same
  segment that answers ARP for the portal does not redirect the probe.
* Range ``lab`` with network ``t2-dmz`` and range ``lab-t1`` with network ``dmz`` (two teams)
  once shared a Docker network; now each workstation sits on its own range's network only,
  and an existing network of a planned name is adopted only when its labels say so.

Every packet goes between containers these tests create. Run under the Docker lock:
``flock /tmp/rangectl-docker.lock pytest tests/integration/test_vantage_docker.py``.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from ipaddress import IPv4Address

import pytest

from rangectl import backend as backends
from rangectl import labels as L
from rangectl import ranges
from rangectl.arp import mac_bytes
from rangectl.backend.docker import container_name, net_name, remove_bridge_rules
from rangectl.drill import checks
from rangectl.drill.wiring import RangeProbes
from rangectl.netns import run_in_netns
from rangectl.rtnetlink import NUD_PERMANENT, addresses, interface, neighbours, routes
from rangectl.scenario.model import Availability
from rangectl.scenario.vantage import PROBE
from rangectl.state import RangeState
from tests.conftest import FIXTURES, leftovers, run_cli

pytestmark = pytest.mark.docker

SCENARIO = FIXTURES / "vantage-range.yaml"
RANGE = "pytest-vantage"

STUB = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<p>Online public services (a stub on the workstation)</p>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("0.0.0.0", int(__import__("sys").argv[1])), H).serve_forever()
"""


@pytest.fixture(scope="module")
def rng(docker_engine, built_images, tmp_path_factory):
    os.environ["RANGECTL_HOME"] = str(tmp_path_factory.mktemp("home-vantage"))
    try:
        rep = ranges.up(SCENARIO, teams=1, name=RANGE, provision=False)
        st = RangeState.open(RANGE)
        yield rep, st, backends.for_range(st)
    finally:
        ranges.down(RANGE)
        cs, ns = leftovers(docker_engine, RANGE)
        assert not cs and not ns, "down left resources behind"
        rules = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
        assert f"rangectl:{RANGE}" not in rules, "down left forwarding rules behind"


def _exec(client, node: str, cmd: str, team: int = 1) -> tuple[int, str]:
    code, out = client.containers.get(container_name(RANGE, team, node)).exec_run(["sh", "-c", cmd])
    return code, out.decode(errors="replace")


def _ns(be, node: str, team: int = 1) -> str:
    return f"/proc/{be.running_pid(RANGE, node, team)}/ns/net"  # the Docker backend's own (test only)


class WorkstationVantage(checks.Vantage):
    """The vantage rangectl used before: probes from whatever node is named, blue included."""

    def vantage(self, node: str) -> str:
        return node


def _wait(pred, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.5)
    return False


def test_the_probe_node_is_hidden_locked_down_and_labelled(docker_engine, rng):
    rep, st, be = rng
    t = rep.plan.team(1)
    info = docker_engine.api.inspect_container(container_name(RANGE, 1, PROBE))
    assert info["State"]["Running"]
    lab = info["Config"]["Labels"]
    assert lab[L.RANGE] == RANGE and lab[L.NODE] == PROBE and lab[L.ROLE] == "probe"
    hc = info["HostConfig"]
    assert hc["CapDrop"] == ["ALL"] and not hc.get("CapAdd") and hc["ReadonlyRootfs"] is True
    assert info["Config"]["User"] == "65534:65534"
    assert info["Config"]["Entrypoint"] == ["sleep", "infinity"]
    # its own address on the SOC's segment, the SOC's gateway
    nets = info["NetworkSettings"]["Networks"]
    assert {k: v["IPAddress"] for k, v in nets.items()} == {
        net_name(RANGE, 1, n): str(ip) for n, ip in t.probe.interfaces.items()
    }
    table = routes(_ns(be, PROBE))
    assert any(r["dst"] == "0.0.0.0/0" and r["gateway"] == str(t.probe.gateway) for r in table), table
    # status shows it (so `down` and the trainer see it); hand-outs and `up`'s table do not
    status = ranges.status(RANGE)
    assert {(n["node"], n["role"]) for n in status["nodes"]} >= {(PROBE, "probe"), ("soc", "blue")}
    assert PROBE not in [n.name for n in t.nodes]


def test_probe_sees_the_real_portal(docker_engine, rng):
    """The positive control: with the portal up, availability and the http check pass from the probe."""
    rep, st, be = rng
    sc = st.scenario()
    v = RangeProbes(st, rep.plan, be).vantage(1)
    obj = sc.objective("restore-page")
    assert _wait(lambda: checks.availability_probe(sc, sc.availability[0], v).passed), "portal never came up"
    res = checks.run_check(sc, obj.check, v)
    assert res.passed, res.detail


def test_a_redirect_in_the_workstation_no_longer_fakes_the_portal(docker_engine, rng):
    rep, st, be = rng
    sc = st.scenario()
    t = rep.plan.team(1)
    portal_ip = str(t.ip_of("portal"))
    # the trainee's side: a REDIRECT and a stub in the blue workstation
    code, out = _exec(
        docker_engine, "soc", "iptables -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 8080"
    )
    assert code == 0, out
    docker_engine.containers.get(container_name(RANGE, 1, "soc")).exec_run(
        ["python3", "-c", STUB, "8080"], detach=True
    )
    # ... and the portal's web service stopped
    code, out = _exec(
        docker_engine, "portal", "touch /run/rangectl/portal.down; kill $(cat /run/rangectl/portal.pid)"
    )
    assert code == 0, out
    gw_ns = _ns(be, "gw")
    assert _wait(lambda: not run_in_netns(gw_ns, checks.tcp_connect, portal_ip, 80, 1.0)[0]), (
        "portal still listens"
    )
    soc_ns = _ns(be, "soc")
    assert _wait(lambda: run_in_netns(soc_ns, checks.tcp_connect, "127.0.0.1", 8080, 1.0)[0]), (
        "stub did not start"
    )

    # the attack works against the workstation's vantage ...
    status, body, detail = run_in_netns(soc_ns, checks.http_get, portal_ip, 80, "/", 2.0)
    assert status == 200 and "Online public services" in body and "stub" in body, detail
    old = WorkstationVantage(t, RangeProbes(st, rep.plan, be).vantage(1).run_in, lambda *a: (1, ""))
    av_soc = Availability.model_validate({**sc.availability[0].model_dump(by_alias=True), "from": "soc"})
    assert checks.availability_probe(sc, av_soc, old).passed
    http_soc = sc.objective("restore-page").check.model_copy(deep=True)
    http_soc.http.from_ = "soc"
    assert checks.run_check(sc, http_soc, old).passed

    # ... and not against rangectl's probe
    v = RangeProbes(st, rep.plan, be).vantage(1)
    av = checks.availability_probe(sc, sc.availability[0], v)
    assert not av.passed, av.detail
    res = checks.run_check(sc, sc.objective("restore-page").check, v)
    assert not res.passed, res.detail
    # the runner's own wiring refuses the workstation outright
    with pytest.raises(checks.VantageRefused):
        checks.availability_probe(sc, av_soc, v)

    # the service back: the probe sees it again (so the failures above were the portal's)
    _exec(docker_engine, "portal", "rm -f /run/rangectl/portal.down")
    assert _wait(lambda: checks.availability_probe(sc, sc.availability[0], v).passed)


def _arp_reply(src_mac: str, claim_ip: str, dst_mac: str, dst_ip: str) -> bytes:
    eth = mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", 0x0806)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
    arp += mac_bytes(src_mac) + IPv4Address(claim_ip).packed + mac_bytes(dst_mac) + IPv4Address(dst_ip).packed
    return eth + arp


def _spoof(ifname: str, frame: bytes, count: int = 16, gap: float = 0.2) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind((ifname, 0))
        for _ in range(count):
            s.send(frame)
            time.sleep(gap)
    finally:
        s.close()


def _entry(ns: str, ip: str):
    return next((n for n in neighbours(ns) if str(n.ip) == ip), None)


def test_the_probe_ignores_arp_spoofing_from_the_workstation(docker_engine, rng):
    rep, st, be = rng
    t = rep.plan.team(1)
    probe_ns, soc_ns = _ns(be, PROBE), _ns(be, "soc")
    portal_ip, probe_ip = str(t.ip_of("portal")), str(t.probe.primary_ip)
    dmz = docker_engine.api.inspect_network(net_name(RANGE, 1, "dmz"))["Containers"]
    mac_of = {c["IPv4Address"].split("/")[0]: c["MacAddress"] for c in dmz.values()}
    # pinned: the gateway and the portal, with their real MACs; the SOC is not
    for ip in (str(t.node("gw").interfaces["dmz"]), portal_ip):
        e = _entry(probe_ns, ip)
        assert e is not None and e.state & NUD_PERMANENT and e.mac == mac_of[ip], e
    soc_if = next(a.ifname for a in addresses(soc_ns) if str(a.interface.ip) == str(t.ip_of("soc")))
    probe_if = next(a.ifname for a in addresses(probe_ns) if str(a.interface.ip) == probe_ip)
    soc_mac = interface(soc_ns, soc_if).mac
    probe_mac = interface(probe_ns, probe_if).mac
    frame = _arp_reply(soc_mac, portal_ip, probe_mac, probe_ip)

    # the control: an entry the probe learnt by ARP is taken over by the workstation's replies
    pid = be.running_pid(RANGE, PROBE, 1)
    subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "--", "ip", "neigh", "del", portal_ip, "dev", probe_if],
        check=True,
    )
    run_in_netns(probe_ns, checks.icmp_ping, portal_ip, 1.0)
    learnt = _entry(probe_ns, portal_ip)
    assert learnt is not None and learnt.mac == mac_of[portal_ip] and not learnt.state & NUD_PERMANENT
    run_in_netns(soc_ns, _spoof, soc_if, frame)
    assert _entry(probe_ns, portal_ip).mac == soc_mac, "the spoof did not take: the control is void"

    # pinned again (what every `up` does), the same replies change nothing
    pinned = be.pin_probe_neighbours(RANGE, t)
    assert pinned[portal_ip] == mac_of[portal_ip]
    run_in_netns(soc_ns, _spoof, soc_if, frame)
    e = _entry(probe_ns, portal_ip)
    assert e.mac == mac_of[portal_ip] and e.state & NUD_PERMANENT


def _probe_rules() -> list[str]:
    out = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if f"rangectl:{RANGE}:probe-t1" in ln]


def test_a_workstation_that_takes_the_portals_mac_does_not_reach_the_probe(docker_engine, rng):
    """The trainee takes the portal's MAC and address on the shared segment and serves the page
    itself: the bridge then delivers the probe's frames for the portal to the workstation.
    Without the probe's port rules that fools it; with them its frames never reach the workstation."""
    rep, st, be = rng
    sc = st.scenario()
    t = rep.plan.team(1)
    portal_ip, gw_ip = str(t.ip_of("portal")), str(t.node("gw").interfaces["dmz"])
    dmz = docker_engine.api.inspect_network(net_name(RANGE, 1, "dmz"))["Containers"]
    portal_mac = next(c["MacAddress"] for c in dmz.values() if c["IPv4Address"].split("/")[0] == portal_ip)
    # the rules `up` made: DROP by default, ACCEPT from and to the gateway's and the portal's ports
    rules = _probe_rules()
    assert sum("-j DROP" in r for r in rules) == 2 and sum("-j ACCEPT" in r for r in rules) == 4, rules
    v = RangeProbes(st, rep.plan, be).vantage(1)
    av = sc.availability[0]
    # the portal's web service down again
    _exec(docker_engine, "portal", "touch /run/rangectl/portal.down; kill $(cat /run/rangectl/portal.pid)")
    gw_ns = _ns(be, "gw")
    assert _wait(lambda: not run_in_netns(gw_ns, checks.tcp_connect, portal_ip, 80, 1.0)[0])
    # the trainee: the portal's MAC and address, a stub on :80, frames that keep the bridge's table pointing here
    soc_if = next(a.ifname for a in addresses(_ns(be, "soc")) if str(a.interface.ip) == str(t.ip_of("soc")))
    code, out = _exec(
        docker_engine,
        "soc",
        f"iptables -t nat -F OUTPUT && ip link set {soc_if} address {portal_mac} && "
        f"ip addr add {portal_ip}/32 dev {soc_if}",
    )
    assert code == 0, out
    soc = docker_engine.containers.get(container_name(RANGE, 1, "soc"))
    soc.exec_run(["python3", "-c", STUB, "80"], detach=True)
    soc.exec_run(["ping", "-q", "-i", "0.2", gw_ip], detach=True)

    # the control: without the probe's port rules, the probe is fooled
    assert remove_bridge_rules(RANGE, "probe-t1") == 6 and _probe_rules() == []
    try:
        assert _wait(lambda: checks.availability_probe(sc, av, v).passed, 20), (
            "the takeover did not fool the probe"
        )
        res = checks.run_check(sc, sc.objective("restore-page").check, v)
        assert res.passed, res.detail  # the stub's page passes the content check too
    finally:
        be.isolate_probe(RANGE, t)
    # with them (what `up` makes), it is not, round after round
    assert len(_probe_rules()) == 6
    for _ in range(3):
        r = checks.availability_probe(sc, av, v)
        assert not r.passed, r.detail
    res = checks.run_check(sc, sc.objective("restore-page").check, v)
    assert not res.passed, res.detail


# --- finding 6: names two ranges could share -----------------------------------------------------

NAMES_SCENARIO = """\
rangectl: 1
name: {name}
title: Names test
networks:
  {net}: {{subnet: {subnet}}}
nodes:
  web: {{image: web, role: target, interfaces: {{{net}: {prefix}.10}}}}
  soc: {{image: workstation, role: blue, interfaces: {{{net}: {prefix}.50}}}}
"""


def _names_scenario(tmp_path, name: str, net: str, prefix: str):
    f = tmp_path / f"{name}.yaml"
    f.write_text(NAMES_SCENARIO.format(name=name, net=net, subnet=f"{prefix}.0/24", prefix=prefix))
    return f


def test_colliding_range_names_get_their_own_networks(docker_engine, built_images, tmp_path):
    """Range `lab` (network `t2-dmz`) and range `lab-t1` (network `dmz`, two teams)."""
    a, b = "pytest-lab", "pytest-lab-t1"
    # the old scheme gave team 1's t2-dmz of `a` and team 2's dmz of `b` one name
    assert f"rc-{a}-t1-t2-dmz" == f"rc-{b}-t2-dmz"
    fa = _names_scenario(tmp_path, "names-a", "t2-dmz", "10.231.63")
    fb = _names_scenario(tmp_path, "names-b", "dmz", "10.231.66")
    try:
        ranges.up(fa, teams=1, name=a, provision=False)
        ranges.up(fb, teams=2, name=b, provision=False)
        for rng, team, net in ((a, 1, "t2-dmz"), (b, 1, "dmz"), (b, 2, "dmz")):
            info = docker_engine.api.inspect_container(container_name(rng, team, "soc"))
            attached = set(info["NetworkSettings"]["Networks"])
            assert attached == {net_name(rng, team, net)}, (rng, team, attached)
            n = docker_engine.api.inspect_network(net_name(rng, team, net))
            assert n["Labels"][L.RANGE] == rng and n["Labels"][L.TEAM] == str(team)
            members = {c["Name"] for c in n["Containers"].values()}
            assert members == {container_name(rng, team, x) for x in ("web", "soc", PROBE)}, members
        assert net_name(a, 1, "t2-dmz") != net_name(b, 2, "dmz")
        # `down` of one range removes exactly it
        ranges.down(a)
        assert leftovers(docker_engine, a) == ([], [])
        cs, ns = leftovers(docker_engine, b)
        assert len(cs) == 6 and len(ns) == 2
    finally:
        ranges.down(a)
        ranges.down(b)
    assert leftovers(docker_engine, a) == ([], []) and leftovers(docker_engine, b) == ([], [])


def test_a_network_of_the_planned_name_is_adopted_only_with_our_labels(docker_engine, built_images, tmp_path):
    import docker

    rng = "pytest-adopt"
    f = _names_scenario(tmp_path, "names-c", "dmz", "10.231.68")
    name = net_name(rng, 1, "dmz")
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.231.68.0/24")])
    squat = docker_engine.api.create_network(name, driver="bridge", internal=True, ipam=ipam)
    try:
        p = run_cli("up", str(f), "--name", rng, "--no-provision")
        assert p.returncode != 0
        lines = [ln for ln in p.stderr.splitlines() if name in ln]
        assert lines and "is not a rangectl network" in lines[0], p.stderr
        assert "Traceback" not in p.stderr
        assert leftovers(docker_engine, rng) == ([], [])
        # nothing was attached to the stranger's network
        assert not docker_engine.api.inspect_network(squat["Id"])["Containers"]
    finally:
        run_cli("down", rng)
        docker_engine.api.remove_network(squat["Id"])
