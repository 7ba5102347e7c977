"""Every traffic generator and the capture replay, on a lab of network namespaces this test builds.

Lab (all private to the test; nothing else is ever addressed):

    att 198.51.100.10 ─┐
    tgt 198.51.100.20 ─┼─ br0 (in its own netns) ── rtr 198.51.100.1 | 203.0.113.1 ── far 203.0.113.30
                       ┘

tgt and far run real listeners (HTTP :80, DNS :53/udp, UDP :4444, SMTP :25,
SSH-like banner :22) that log every request; tcpdump on the target side
counts what arrived. Traffic starts in att's namespace. Needs root and
iproute2; skipped otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rangectl import arp, netns, rtnetlink
from rangectl.errors import RangeError
from rangectl.traffic import TrafficContext, TrafficRefused, replay_pcap, run_traffic
from rangectl.traffic.pcapfile import read_capture
from rangectl.traffic.sniff import ArrivalCounter

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not shutil.which("ip") or not shutil.which("tcpdump"), reason="needs iproute2 and tcpdump"),
]

ROOT = Path(__file__).resolve().parents[2]
# Explicit MACs: a bare Ether() makes Scapy ARP for the destination on the host network.
SRC_MAC, DST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
ATT, TGT, RTR_A, RTR_B, FAR = "198.51.100.10", "198.51.100.20", "198.51.100.1", "203.0.113.1", "203.0.113.30"
ALLOWED = ["198.51.100.0/24", "203.0.113.0/24"]

SERVICES = r'''
import json, socket, socketserver, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
LOG = open(sys.argv[1], "a", buffering=1)
lock = threading.Lock()
def log(**kw):
    with lock:
        LOG.write(json.dumps(kw) + "\n")
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def _reply(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        st = 404
        if self.path.startswith("/lookup"): st = 200
        elif self.path.startswith("/upload") and self.command == "POST": st = 200 if b"filename=" in body else 400
        elif self.path.startswith("/uploads/"): st = 200
        elif self.path.startswith("/login") and self.command == "POST": st = 200 if b"password=letmein" in body else 401
        elif self.path.startswith("/api/"): st = 200
        log(svc="http", method=self.command, path=self.path, status=st, client=self.client_address[0],
            ua=self.headers.get("User-Agent"), body=body[:300].decode(errors="replace"))
        self.send_response(st); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    do_GET = do_POST = _reply
    def log_message(self, *a): pass
def dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
    while True:
        d, a = s.recvfrom(4096)
        i, labels = 12, []
        while i < len(d) and d[i]:
            labels.append(d[i+1:i+1+d[i]].decode()); i += 1 + d[i]
        log(svc="dns", qname=".".join(labels), client=a[0])
        s.sendto(d[:2] + bytes([0x81, 0x83]) + d[4:6] + b"\0\0\0\0\0\0" + d[12:i+5], a)
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 4444))
    while True:
        d, a = s.recvfrom(4096); log(svc="udp", data=d[:60].decode(errors="replace"), client=a[0]); s.sendto(b"ack", a)
class Smtp(socketserver.StreamRequestHandler):
    def handle(self):
        w = lambda t: self.wfile.write(t.encode() + b"\r\n")
        w("220 mail ESMTP"); rcpts = []; frm = None
        try:
            while True:
                line = self.rfile.readline().decode(errors="replace").strip()
                if not line: return
                cmd = line[:4].upper()
                if cmd in ("EHLO", "HELO"): w("250 mail")
                elif cmd == "MAIL": frm = line; w("250 ok")
                elif cmd == "RCPT": rcpts.append(line); w("250 ok")
                elif cmd == "DATA":
                    w("354 go"); data = []
                    while True:
                        l = self.rfile.readline()
                        if l in (b".\r\n", b""): break
                        data.append(l)
                    log(svc="smtp", mail_from=frm, rcpts=rcpts, body=b"".join(data).decode(errors="replace"), client=self.client_address[0])
                    w("250 queued")
                elif cmd == "QUIT": w("221 bye"); return
                else: w("250 ok")
        except OSError:
            pass
class Ssh(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
        self.request.settimeout(2)
        try: line = self.rfile.readline()
        except OSError: line = b""
        log(svc="ssh", client_id=line.strip().decode(errors="replace"), client=self.client_address[0])
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
ThreadingHTTPServer.daemon_threads = True
for f in (lambda: ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever(), dns, udp,
          lambda: socketserver.ThreadingTCPServer(("0.0.0.0", 25), Smtp).serve_forever(),
          lambda: socketserver.ThreadingTCPServer(("0.0.0.0", 22), Ssh).serve_forever()):
    threading.Thread(target=f, daemon=True).start()
time.sleep(0.3)
log(svc="ready")
while True: time.sleep(3600)
'''


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


class Lab:
    def __init__(self, tmp: Path):
        self.p = "rtt" + secrets.token_hex(3)
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.p}-{host}"

    def path(self, host: str) -> str:
        return netns.netns_path_of_name(self.ns(host))

    def build(self) -> None:
        for h in ("sw", "att", "tgt", "rtr", "far"):
            sh("ip", "netns", "add", self.ns(h))
            self.made.append(self.ns(h))
            sh("ip", "-n", self.ns(h), "link", "set", "lo", "up")
        sw = self.ns("sw")
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        for h in ("att", "tgt", "rtr"):
            sh("ip", "link", "add", "eth0", "netns", self.ns(h), "type", "veth", "peer", "name", h, "netns", sw)
            sh("ip", "-n", sw, "link", "set", h, "master", "br0")
            sh("ip", "-n", sw, "link", "set", h, "up")
            sh("ip", "-n", self.ns(h), "link", "set", "eth0", "up")
        sh("ip", "link", "add", "eth1", "netns", self.ns("rtr"), "type", "veth", "peer", "name", "eth0", "netns", self.ns("far"))
        sh("ip", "-n", self.ns("rtr"), "link", "set", "eth1", "up")
        sh("ip", "-n", self.ns("far"), "link", "set", "eth0", "up")
        for h, addr, gw in (("att", ATT, RTR_A), ("tgt", TGT, RTR_A), ("far", FAR, RTR_B)):
            sh("ip", "-n", self.ns(h), "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", self.ns(h), "route", "add", "default", "via", gw)
        sh("ip", "-n", self.ns("rtr"), "addr", "add", f"{RTR_A}/24", "dev", "eth0")
        sh("ip", "-n", self.ns("rtr"), "addr", "add", f"{RTR_B}/24", "dev", "eth1")
        sh("ip", "netns", "exec", self.ns("rtr"), "sysctl", "-qw", "net.ipv4.ip_forward=1")
        script = self.tmp / "services.py"
        script.write_text(SERVICES)
        for h in ("tgt", "far"):
            log = self.tmp / f"{h}.log"
            log.write_text("")
            self.procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", self.ns(h), sys.executable, str(script), str(log)],
                    stdout=subprocess.DEVNULL,
                    stderr=open(self.tmp / f"{h}.err", "w"),  # noqa: SIM115
                )
            )
        for h in ("tgt", "far"):
            deadline = time.monotonic() + 10
            while '"ready"' not in (self.tmp / f"{h}.log").read_text():
                assert time.monotonic() < deadline, (self.tmp / f"{h}.err").read_text()
                time.sleep(0.05)

    def teardown(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.kill()
                p.wait(timeout=5)
        for n in reversed(self.made):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)

    def log(self, host: str, svc: str, since: int = 0) -> list[dict]:
        lines = (self.tmp / f"{host}.log").read_text().splitlines()[since:]
        return [d for d in map(json.loads, lines) if d["svc"] == svc]

    def log_len(self, host: str) -> int:
        return len((self.tmp / f"{host}.log").read_text().splitlines())

    def ctx(self, dst: str | None = None, **kw) -> TrafficContext:
        names = {"att": ATT, "tgt": TGT, "far": FAR}
        return TrafficContext(self.path("att"), ALLOWED, dst_ip=dst, resolve=names.__getitem__, **kw)

    @contextlib.contextmanager
    def capture(self, host: str, bpf: str = "ip", iface: str = "eth0") -> Iterator[Capture]:
        cap = Capture(self, host, bpf, iface)
        try:
            cap.start()
            yield cap
        finally:
            cap.stop()


class Capture:
    """tcpdump in a host's namespace; after the block, ``frames`` holds what it saw (Ethernet bytes)."""

    def __init__(self, lab: Lab, host: str, bpf: str, iface: str):
        self.file = lab.tmp / f"cap-{host}-{secrets.token_hex(3)}.pcap"
        self.err = lab.tmp / f"{self.file.stem}.err"
        self.cmd = ["ip", "netns", "exec", lab.ns(host), "tcpdump", "-i", iface, "-n", "-s", "0", "-U",
                    "--immediate-mode", "-B", "16384", "-w", str(self.file), bpf]  # fmt: skip
        self.proc: subprocess.Popen | None = None
        self.frames: list[bytes] = []

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=open(self.err, "w"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while "listening on" not in self.err.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.err.read_text()
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        time.sleep(0.4)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if self.file.exists() and self.file.stat().st_size >= 24:
            self.frames = [p.data for p in read_capture(self.file)]

    def ip(self, src: str | None = None, dst: str | None = None, proto: int | None = None) -> list[bytes]:
        out = []
        for f in self.frames:
            if len(f) < 34 or f[12:14] != b"\x08\x00":
                continue
            if src and f[26:30] != ipaddress.IPv4Address(src).packed:
                continue
            if dst and f[30:34] != ipaddress.IPv4Address(dst).packed:
                continue
            if proto is not None and f[23] != proto:
                continue
            out.append(f)
        return out


def tcp_flags(f: bytes) -> int:
    ihl = (f[14] & 0x0F) * 4
    return f[14 + ihl + 13]


def dport(f: bytes) -> int:
    ihl = (f[14] & 0x0F) * 4
    return int.from_bytes(f[14 + ihl + 2 : 14 + ihl + 4], "big")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("netns-lab"))
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()
    left = sh("ip", "netns", "list").stdout
    assert lab.p not in left, f"namespaces left behind: {left}"


# --- the namespace helpers ----------------------------------------------------------------------------


def test_netns_helpers(lab):
    p = lab.path("att")
    r = rtnetlink.route_get(p, FAR)
    assert (r.type, r.ifname, str(r.gateway), str(r.prefsrc)) == ("unicast", "eth0", RTR_A, ATT)
    info = rtnetlink.interface(p, "eth0")
    assert [str(i) for i in info.ipv4] == [f"{ATT}/24"] and info.mac and info.up
    rtr_mac = rtnetlink.interface(lab.path("rtr"), "eth0").mac
    hop = arp.next_hop(p, FAR)
    assert (str(hop.hop_ip), hop.hop_mac, hop.src_mac, str(hop.src_ip)) == (RTR_A, rtr_mac, info.mac, ATT)
    hop2 = arp.next_hop(p, TGT)
    assert hop2.hop_mac == rtnetlink.interface(lab.path("tgt"), "eth0").mac
    assert any(rt["dst"] == "0.0.0.0/0" and rt["gateway"] == RTR_A for rt in rtnetlink.routes(p))
    with pytest.raises(netns.NetnsError, match="sending namespace itself"):
        arp.next_hop(p, ATT)
    # run_in_netns returns results, raises errors, and leaves the caller where it was
    own = os.stat("/proc/thread-self/ns/net").st_ino
    assert netns.run_in_netns(p, lambda: os.stat("/proc/thread-self/ns/net").st_ino) == os.stat(p).st_ino
    with pytest.raises(ZeroDivisionError):
        netns.run_in_netns(p, lambda: 1 / 0)
    assert os.stat("/proc/thread-self/ns/net").st_ino == own
    assert netns.same_netns(p, p) and not netns.same_netns(p, None)


def test_default_route_setter(lab):
    """How `up` points a node's default route at its scenario gateway (one netlink request,
    backend/docker.py _configure): replace, delete, nothing to delete, an off-link gateway."""
    p = lab.path("far")

    def default() -> list[str | None]:
        return [rt["gateway"] for rt in rtnetlink.routes(p) if rt["dst"] == "0.0.0.0/0"]

    before = default()
    assert before == [RTR_B]
    try:
        assert rtnetlink.set_default_route(p, "203.0.113.99") is True
        assert default() == ["203.0.113.99"]  # replaced, not added beside the old one
        assert rtnetlink.set_default_route(p, None) is True and default() == []
        assert rtnetlink.set_default_route(p, None) is False  # no default route: nothing to delete
        with pytest.raises(OSError) as exc:
            rtnetlink.set_default_route(p, "192.0.2.1")  # on none of far's networks
        assert exc.value.errno == 101 and default() == []
    finally:
        rtnetlink.set_default_route(p, RTR_B)
    assert default() == before


def test_default_routes_in_one_batch(lab):
    """`up` sets every node's default route in one host call (on a swarm engine, one agent
    request): each entry by the namespace of its process; an entry that fails says why and the
    others are set all the same."""
    import subprocess

    from rangectl.backend.hostops import LOCAL

    p = lab.path("far")
    holder = subprocess.Popen(["nsenter", f"--net={p}", "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline
            time.sleep(0.05)

        def default() -> list[str | None]:
            return [rt["gateway"] for rt in rtnetlink.routes(p) if rt["dst"] == "0.0.0.0/0"]

        out = LOCAL.set_default_routes([(holder.pid, "203.0.113.99"), (999_999_999, None), (holder.pid, "192.0.2.1")])
        assert out[0] is None and out[1] and "unreachable" in out[2].lower(), out
        assert default() == ["203.0.113.99"]  # the first set it; the failing third changed nothing
    finally:
        holder.kill()
        holder.wait()
        rtnetlink.set_default_route(p, RTR_B)


def test_sockets_keep_their_namespace(lab):
    import socket

    s = netns.run_in_netns(lab.path("att"), socket.create_connection, (TGT, 80), 5)
    try:
        assert s.getsockname()[0] == ATT
    finally:
        s.close()


# --- generators -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [TGT, FAR], ids=["same-lan", "via-router"])
def test_portscan_syn(lab, target):
    host = "tgt" if target == TGT else "far"
    with lab.capture(host, f"tcp and src host {ATT}") as cap:
        r = run_traffic("portscan", {"ports": "20-25,53,80,443", "rate": 2000, "timeout": 0.5}, lab.ctx(target))
    assert r.details["open"] == [22, 25, 80]
    assert r.details["closed"] == 6 and r.packets_sent == 9 and r.counted == "exact"
    syns = [f for f in cap.ip(ATT, target, 6) if tcp_flags(f) == 0x02]
    assert len(syns) == r.packets_sent
    assert sorted(dport(f) for f in syns) == [20, 21, 22, 23, 24, 25, 53, 80, 443]
    assert sum(len(f) for f in syns) == r.bytes_sent
    assert r.src_ip == ATT and r.dst_ip == target and r.started < r.ended


def test_portscan_connect(lab):
    with lab.capture("tgt", f"src host {ATT}") as cap:
        r = run_traffic("portscan", {"ports": "20-25,80", "method": "connect", "rate": 500}, lab.ctx(TGT))
    assert r.details["open"] == [22, 25, 80] and r.details["closed"] == 4 and r.details["filtered"] == 0
    assert r.counted == "wire"
    seen = cap.ip(ATT, TGT)
    assert len(seen) == r.packets_sent > 7
    assert sum(len(f) for f in seen) == r.bytes_sent


def test_synflood_counts_match(lab):
    with lab.capture("tgt", f"tcp and dst port 80 and dst host {TGT}") as cap:
        r = run_traffic("synflood", {"count": 600, "rate": 6000, "port": 80}, lab.ctx(TGT))
    assert r.packets_sent == 600 and r.stopped == "count"
    syns = [f for f in cap.ip(None, TGT, 6) if tcp_flags(f) == 0x02]
    assert len(syns) == 600
    assert sum(len(f) for f in syns) == r.bytes_sent
    assert {f[26:30] for f in syns} == {ipaddress.IPv4Address(ATT).packed}
    assert 0.05 < r.seconds < 2.0


def test_synflood_forged_sources_stay_in_range(lab):
    with lab.capture("far", f"tcp and dst host {FAR}") as cap:
        r = run_traffic("synflood", {"count": 200, "rate": 4000, "spoof": "198.51.100.128/26"}, lab.ctx(FAR))
    syns = [f for f in cap.ip(None, FAR, 6) if tcp_flags(f) == 0x02]
    assert len(syns) == r.packets_sent == 200
    net = ipaddress.IPv4Network("198.51.100.128/26")
    assert all(ipaddress.IPv4Address(f[26:30]) in net for f in syns)
    assert r.details["distinct_sources"] > 20


def test_synflood_stops_by_itself(lab):
    r = run_traffic("synflood", {"count": 1_000_000, "rate": 2000, "duration": 0.4}, lab.ctx(TGT))
    assert r.stopped == "duration" and 500 < r.packets_sent < 1000
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    r = run_traffic("synflood", {"count": 1_000_000, "rate": 1000, "duration": 30}, lab.ctx(TGT, stop=stop))
    assert r.stopped == "stopped" and r.seconds < 1.0
    r = run_traffic("beacon", {"interval": "5s", "count": 10}, lab.ctx(TGT, deadline=time.monotonic() + 0.5))
    assert r.stopped == "deadline" and r.details["checkins_sent"] == 1


def test_http_attacks(lab):
    since = lab.log_len("far")
    with lab.capture("far", f"src host {ATT}") as cap:
        r = run_traffic("http", {"rate": 50}, lab.ctx(FAR))
    logged = lab.log("far", "http", since)
    recs = r.details["requests"]
    assert len(recs) == len(logged) == 13 == r.details["requests_sent"]
    assert [x["path"] for x in logged] == [x["path"] for x in recs]
    assert [x["status"] for x in logged] == [x["status"] for x in recs]
    assert r.details["by_attack"] == {"sqli": 5, "traversal": 5, "webshell": 3}
    assert any("UNION SELECT" in x["path"].replace("+", " ") for x in logged)
    assert any(x["path"] == "/../../../../etc/passwd" for x in logged)
    upload = next(x for x in logged if x["method"] == "POST")
    assert upload["path"] == "/upload" and 'filename="shell.php"' in upload["body"] and upload["status"] == 200
    assert all(x["client"] == ATT for x in logged)
    seen = cap.ip(ATT, FAR)
    assert r.counted == "wire" and len(seen) == r.packets_sent
    assert sum(len(f) for f in seen) == r.bytes_sent


def test_bruteforce_http_and_ssh(lab):
    since = lab.log_len("tgt")
    with lab.capture("tgt", f"src host {ATT}") as cap:
        r = run_traffic("bruteforce", {"rate": 50}, lab.ctx(TGT))
    logins = lab.log("tgt", "http", since)
    assert r.stopped == "success" and r.details["successes"][0]["password"] == "letmein"
    assert len(logins) == r.details["attempts"] == 7
    assert [x["status"] for x in logins] == [401] * 6 + [200]
    assert len(cap.ip(ATT, TGT)) == r.packets_sent
    since = lab.log_len("tgt")
    r = run_traffic("bruteforce", {"service": "ssh", "attempts": 4, "rate": 20}, lab.ctx(TGT))
    time.sleep(0.3)
    ssh = lab.log("tgt", "ssh", since)
    assert r.details["connected"] == len(ssh) == 4
    assert r.details["banners"] == {"SSH-2.0-OpenSSH_9.2p1 Debian-2": 4}
    assert {x["client_id"] for x in ssh} == {"SSH-2.0-libssh_0.9.6"}


def test_dns_exfil(lab):
    secret = "payroll.xlsx: 0042-17-339 18,400,000 VND; 0043-22-101 21,250,000 VND"
    since = lab.log_len("tgt")
    with lab.capture("tgt", f"udp and dst port 53 and src host {ATT}") as cap:
        r = run_traffic("dns-exfil", {"data": secret, "rate": 200, "label_length": 20}, lab.ctx(TGT))
    queries = lab.log("tgt", "dns", since)
    assert len(queries) == r.details["queries_sent"] == r.packets_sent == len(cap.ip(ATT, TGT, 17))
    assert sum(len(f) for f in cap.ip(ATT, TGT, 17)) == r.bytes_sent
    assert r.details["answered"] == len(queries) and r.details["rcodes"] == {"NXDOMAIN": len(queries)}
    chunks = sorted((int(q["qname"].split(".")[1]), q["qname"].split(".")[0]) for q in queries)
    b32 = "".join(c for _, c in chunks).upper()
    assert base64.b32decode(b32 + "=" * (-len(b32) % 8)).decode() == secret
    assert all(q["qname"].endswith(".cdn-sync.range.test") for q in queries)


@pytest.mark.parametrize("protocol", ["http", "udp"])
def test_beacon(lab, protocol):
    since = lab.log_len("far")
    with lab.capture("far", f"src host {ATT}") as cap:
        r = run_traffic("beacon", {"protocol": protocol, "interval": "0.15s", "jitter": 0.2, "count": 5}, lab.ctx(FAR))
    svc = "http" if protocol == "http" else "udp"
    got = lab.log("far", svc, since)
    assert len(got) == r.details["checkins_sent"] == 5 and r.stopped == "count"
    assert all(0.15 * 0.75 < g < 0.15 * 1.25 + 0.05 for g in r.details["gaps"])
    assert len(cap.ip(ATT, FAR)) == r.packets_sent
    if protocol == "udp":
        assert r.packets_sent == 5 and all(c["reply_bytes"] == 3 for c in r.details["checkins"])
        assert all(g["data"].startswith(r.details["beacon_id"] + "|") for g in got)
    else:
        assert all(g["path"].startswith("/api/v2/status?id=" + r.details["beacon_id"]) for g in got)


def test_phishing(lab):
    since = lab.log_len("tgt")
    params = {"to": ["an.nguyen@range.test", "binh.tran@range.test"], "link": "http://portal-login.range.test/x", "count": 2}
    with lab.capture("tgt", f"src host {ATT}") as cap:
        r = run_traffic("phishing", {**params, "rate": 10}, lab.ctx(TGT))
    mails = lab.log("tgt", "smtp", since)
    assert len(mails) == r.details["delivered"] == 2
    # smtplib sends the verbs in lower case ("rcpt TO:<...>"); the server logs the raw line
    assert [r.upper() for r in mails[0]["rcpts"]] == ["RCPT TO:<AN.NGUYEN@RANGE.TEST>", "RCPT TO:<BINH.TRAN@RANGE.TEST>"]
    assert "http://portal-login.range.test/x" in mails[0]["body"] and "Subject: Action required" in mails[0]["body"]
    assert len(cap.ip(ATT, TGT)) == r.packets_sent


# --- replay ---------------------------------------------------------------------------------------------------


def test_replay_rewrites_addresses_as_mapped(lab):
    cap_file = ROOT / "scenarios" / "pcaps" / "sqli-http.pcap"
    with lab.capture("far", "ip") as cap:
        r = run_traffic(
            "pcap",
            {"file": str(cap_file), "map": {"198.51.100.10": "att", "198.51.100.20": "far"}, "speed": 4},
            lab.ctx(),
        )
    assert r.details["map"] == {"198.51.100.10": ATT, "198.51.100.20": FAR}
    assert r.details["skipped"] == {"to_sender": r.details["packets_in_capture"] - r.packets_sent}
    replayed = cap.ip(ATT, FAR, 6)
    # the target's kernel answers the replayed SYNs (RSTs from att's kernel follow): count the replayed frames
    from_capture = [f for f in replayed if tcp_flags(f) & 0x08 or tcp_flags(f) == 0x02 or tcp_flags(f) & 0x01]
    assert len(from_capture) >= 1
    payload = b"".join(replayed)
    assert b"UNION%20SELECT" in payload and b"sqlmap" in payload
    assert not cap.ip(dst="198.51.100.20") and not cap.ip(src="198.51.100.20")
    assert r.packets_sent == 46 or r.packets_sent == r.details["frames_per_loop"]
    assert r.details["next_hops"] == {FAR: rtnetlink.interface(lab.path("rtr"), "eth0").mac}


def test_replay_counts_match_target(lab):
    cap_file = ROOT / "scenarios" / "pcaps" / "dns-exfil.pcap"
    with lab.capture("tgt", f"udp and src host {ATT}") as cap:
        r = replay_pcap(
            cap_file, lab.ctx(), address_map={"198.51.100.10": ATT, "198.51.100.20": TGT}, pps=2000, loop=3
        )
    assert r.packets_sent == 3 * r.details["frames_per_loop"] and r.details["loops_completed"] == 3
    seen = cap.ip(ATT, TGT, 17)
    assert len(seen) == r.packets_sent and sum(len(f) for f in seen) == r.bytes_sent


def test_replay_topspeed(lab):
    cap_file = ROOT / "scenarios" / "pcaps" / "synflood.pcap"
    counter = ArrivalCounter(lab.path("tgt"), [ATT], [TGT]).start()  # counted by the kernel: exact at any rate
    with lab.capture("tgt", f"tcp and src host {ATT} and dst port 80") as cap:
        r = replay_pcap(
            cap_file, lab.ctx(), address_map={"198.51.100.10": ATT, "198.51.100.20": TGT}, topspeed=True, loop=5
        )
    seen = counter.stop()
    assert r.packets_sent == 5 * 400 and r.stopped == "done"
    # every replayed frame arrived (plus att's kernel RSTs to tgt's SYN-ACKs: at most one per SYN)
    assert r.packets_sent <= seen.packets <= r.packets_sent + 5 * 200
    # tcpdump, in user space, may drop some of a top-speed burst on a busy machine; what it kept is right
    replayed = [f for f in cap.ip(ATT, TGT, 6) if tcp_flags(f) == 0x02]
    assert 0 < len(replayed) <= 5 * 200 and all(dport(f) == 80 for f in replayed)
    assert r.details["pps_achieved"] > 2000


def test_replay_timing(lab, tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    pkts = []
    t = 1_700_000_000.0
    for i in range(200):
        p = Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="192.0.2.10", dst="192.0.2.20") / UDP(sport=1000, dport=9) / i.to_bytes(4, "big")
        t += 0.0005 if i % 2 else 0.002
        p.time = t
        pkts.append(p)
    f = tmp_path / "timed.pcap"
    wrpcap(str(f), pkts)
    with lab.capture("tgt", f"udp and src host {ATT}") as cap:
        r = replay_pcap(f, lab.ctx(), address_map={"192.0.2.10": ATT, "192.0.2.20": TGT})
    assert r.packets_sent == 200
    assert 0.2 < r.seconds < 0.5  # 100 * 0.5 ms + 100 * 2 ms = 250 ms
    assert r.details["lateness_us"]["p99"] < 2000
    assert len(cap.ip(ATT, TGT, 17)) == 200


# --- safety ----------------------------------------------------------------------------------------------------


def test_out_of_range_is_refused_before_anything_is_sent(lab, tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    f = tmp_path / "leak.pcap"
    wrpcap(str(f), [Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="198.51.100.10", dst="198.51.100.20") / UDP(dport=9),
                    Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="198.51.100.10", dst="192.0.2.99") / UDP(dport=9)])  # fmt: skip
    # everything leaving att, ARP included, but the kernel's own IPv6 neighbour discovery
    with lab.capture("att", "not ip6", iface="eth0") as cap:
        for kind in ("portscan", "synflood", "http", "bruteforce", "dns-exfil", "beacon", "phishing"):
            with pytest.raises(TrafficRefused, match="192.0.2.1: outside"):
                run_traffic(kind, {}, lab.ctx("192.0.2.1"))
        with pytest.raises(TrafficRefused, match=r"198\.51\.100\.255: the broadcast address"):
            run_traffic("synflood", {}, lab.ctx("198.51.100.255"))
        with pytest.raises(TrafficRefused, match="192.0.2.99"):
            run_traffic("pcap", {"file": str(f), "map": {"198.51.100.10": "att"}}, lab.ctx())
        with pytest.raises(TrafficRefused, match="no allowed subnets"):
            run_traffic("portscan", {}, TrafficContext(lab.path("att"), [], dst_ip=TGT))
    assert cap.frames == []


def test_host_port_of_a_node_interface():
    """The host-side veth of a namespace's interface (how `up` finds the probe's bridge ports to
    isolate it: hostops.op_host_port), found by the veth's peer index, not by name."""
    from rangectl.backend.hostops import LOCAL

    ns, host_if = f"rc-hp-{secrets.token_hex(3)}", f"rchp{secrets.token_hex(2)}"
    sh("ip", "netns", "add", ns)
    proc = None
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "tmpeth", "netns", ns)
        sh("ip", "-n", ns, "link", "set", "tmpeth", "name", "eth0")
        sh("ip", "-n", ns, "addr", "add", "198.51.100.77/30", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "60"])
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{proc.pid}/ns/net").st_ino != os.stat(f"/run/netns/{ns}").st_ino:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert LOCAL.host_port(proc.pid, "198.51.100.77") == host_if
        with pytest.raises(RangeError, match="no interface with 198.51.100.78"):
            LOCAL.host_port(proc.pid, "198.51.100.78")
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
