#!/usr/bin/env python3
"""rangectl's pcap replay against tcpreplay: same capture, same sender namespace, same receiver, same run.

Builds two network namespaces of its own joined by a veth pair (sender
198.51.100.10, receiver 198.51.100.20; RFC 5737 addresses, nothing else is
addressed), and a capture of UDP frames between exactly those two hosts, with
the sender's and receiver's real MAC addresses (so tcpreplay's unmodified
frames are accepted by the receiver just like rangectl's rewritten ones).

1. Top speed: the same >= 100k-packet capture, replayed from the sender
   namespace by rangectl (``replay_pcap(..., topspeed=True)``: frames built
   before the clock starts as slots of a PACKET_MMAP TX ring, one sendto(2)
   per 1024 frames; ``--fallback`` adds rounds of its sendmmsg fallback) and
   by ``tcpreplay --topspeed`` run in the same namespace (``ip netns exec``),
   alternating, ``--rounds`` times each. Packets per second are each tool's
   own send rate (rangectl: frames / send time; tcpreplay: its "Rated: ... pps"
   line); the receiver counts arrivals in the kernel (a BPF-filtered packet
   socket, see rangectl/traffic/sniff.py) to show what got through.

   On a veth pair the receiver's kernel handles each frame inside the
   sender's sendto(2) (softirq on the same CPU), so whatever the receiver
   does with a frame is added to both tools' cost per frame and compresses
   their ratio. ``--receiver``: ``drop`` (default) drops frames at the
   receiver's tc ingress, right after the packet taps that count and
   timestamp them (what is measured is the sender and the veth pair);
   ``discard`` binds a UDP socket to the discard port that is never read,
   so frames also go through the receiver's IP and UDP layers and are
   dropped at the full socket queue; ``closed`` leaves the port closed, as
   this benchmark did before: each frame also walks the ICMP
   port-unreachable path (a route lookup and the per-host rate limit, about
   a third of a TX-ring frame's cost on this machine).
2. Timing at speed 1.0: a capture with irregular gaps (``--timed-packets``,
   exponential, mean ``--mean-gap-us``), replayed by both; tcpdump in the
   receiver namespace timestamps arrivals (nanoseconds). For consecutive
   packets (matched by a sequence number in the payload) the error is
   |arrival gap - capture gap|; mean, p99 and max are printed.

Run as root: .venv/bin/python bench/replay.py [--packets 100000] [--rounds 5] [--receiver drop|discard|closed]
The namespaces are removed at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rangectl.netns import netns_path_of_name, run_in_netns  # noqa: E402
from rangectl.traffic import TrafficContext, replay_pcap  # noqa: E402
from rangectl.traffic.packets import eth_header, ipv4_header, udp_datagram  # noqa: E402
from rangectl.traffic.pcapfile import read_capture  # noqa: E402
from rangectl.traffic.sniff import ArrivalCounter  # noqa: E402

TX_IP, RX_IP = "198.51.100.10", "198.51.100.20"
TX_MAC, RX_MAC = "02:72:63:00:00:0a", "02:72:63:00:00:14"
NET = "198.51.100.0/24"
SPORT, DPORT = 40000, 9  # the discard port (see --receiver)
RECEIVERS = ("drop", "discard", "closed")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=60)


# --- captures -------------------------------------------------------------------------------------------------


def frame(seq: int, pad: int) -> bytes:
    payload = struct.pack("!I", seq) + b"\0" * pad
    udp = udp_datagram(TX_IP, RX_IP, SPORT, DPORT, payload)
    return eth_header(RX_MAC, TX_MAC) + ipv4_header(TX_IP, RX_IP, 17, len(udp), ident=seq & 0xFFFF) + udp


def write_pcap(path: Path, gaps_ns: list[int], pad: int) -> None:
    """A nanosecond pcap (magic a1b23c4d): frame i carries sequence number i, gap i before it."""
    t = 1_700_000_000 * 1_000_000_000
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
        rec = struct.Struct("<IIII")
        for i, g in enumerate(gaps_ns):
            t += g
            f = frame(i, pad)
            fh.write(rec.pack(t // 1_000_000_000, t % 1_000_000_000, len(f), len(f)))
            fh.write(f)


def capture_gaps(n: int, mean_us: float, seed: int) -> list[int]:
    rnd = random.Random(seed)
    out = [0]
    for _ in range(n - 1):
        g = rnd.expovariate(1.0 / mean_us)
        out.append(int(min(max(g, 20.0), 20 * mean_us) * 1000))
    return out


# --- the lab ---------------------------------------------------------------------------------------------------


class Lab:
    def __init__(self) -> None:
        tag = "rcbench" + secrets.token_hex(3)
        self.tx, self.rx = f"{tag}-tx", f"{tag}-rx"
        self.made: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.sink: socket.socket | None = None

    def build(self, receiver: str = "drop") -> None:
        for ns in (self.tx, self.rx):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "eth0", "netns", self.tx, "address", TX_MAC, "type", "veth",
           "peer", "name", "eth0", "netns", self.rx, "address", RX_MAC)  # fmt: skip
        for ns, ip in ((self.tx, TX_IP), (self.rx, RX_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        # the receiver's neighbour entry is resolved once here, by the kernel, for both tools
        sh("ip", "-n", self.tx, "neigh", "replace", RX_IP, "lladdr", RX_MAC, "dev", "eth0", "nud", "permanent")
        if receiver == "discard":
            self.sink = run_in_netns(netns_path_of_name(self.rx), _discard_socket)
        elif receiver == "drop":
            # classic BPF "return 2" (TC_ACT_SHOT) as a direct-action classifier on ingress
            sh("ip", "netns", "exec", self.rx, "tc", "qdisc", "add", "dev", "eth0", "clsact")
            sh("ip", "netns", "exec", self.rx, "tc", "filter", "add", "dev", "eth0", "ingress",
               "bpf", "bytecode", "1,6 0 0 2,", "da")  # fmt: skip

    def teardown(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made.clear()

    def ctx(self) -> TrafficContext:
        return TrafficContext(netns_path_of_name(self.tx), [ipaddress.IPv4Network(NET)])

    def counter(self) -> ArrivalCounter:
        return ArrivalCounter(netns_path_of_name(self.rx), [TX_IP], [RX_IP], drain=False).start()


def _discard_socket() -> socket.socket:
    """A UDP socket on the receiver's discard port, never read: its tiny queue fills, the rest is dropped."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind((RX_IP, DPORT))
    return s


# --- runs ------------------------------------------------------------------------------------------------------


def run_rangectl(lab: Lab, cap: Path, **timing) -> dict:
    cnt = lab.counter()
    r = replay_pcap(cap, lab.ctx(), address_map={TX_IP: TX_IP, RX_IP: RX_IP}, max_packets=5_000_000, **timing)
    got = cnt.stop(0.5)
    d = r.details
    return {
        "sent": r.packets_sent,
        "seconds": d["send_seconds"],
        "pps": r.packets_sent / d["send_seconds"] if d["send_seconds"] else None,
        "received": got.packets,
        "qdisc_bypass": d["qdisc_bypass"],
        "sender": d["sender"],
        "cpu_us_per_frame": d["send_cpu_seconds"] / r.packets_sent * 1e6 if d.get("send_cpu_seconds") else None,
        "sender_fallback": d.get("sender_fallback"),
        "lateness_us": d.get("lateness_us"),
    }


def run_tcpreplay(lab: Lab, cap: Path, *extra: str) -> dict:
    cnt = lab.counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(
        ["ip", "netns", "exec", lab.tx, "tcpreplay", "-i", "eth0", *extra, str(cap)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    got = cnt.stop(0.5)
    if p.returncode != 0:
        raise RuntimeError(f"tcpreplay failed: {p.stderr.strip() or p.stdout.strip()}")
    out = p.stdout
    m = re.search(r"Actual: (\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds", out)
    rated = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", out)
    sent, secs = (int(m.group(1)), float(m.group(3))) if m else (None, None)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # the whole process, startup included
    return {
        "sent": sent,
        "seconds": secs,
        "pps": float(rated.group(1)) if rated else None,
        "received": got.packets,
        "cpu_us_per_frame": cpu / sent * 1e6 if sent else None,
    }


class Tcpdump:
    """tcpdump in the receiver namespace with nanosecond timestamps."""

    def __init__(self, lab: Lab, out: Path):
        self.out = out
        self.err = out.with_suffix(".err")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.rx, "tcpdump", "-i", "eth0", "-n", "-s", "96", "-B", "65536",
             "--time-stamp-precision", "nano", "-w", str(out), f"udp and src host {TX_IP}"],
            stdout=subprocess.DEVNULL, stderr=open(self.err, "w"),  # noqa: SIM115
        )  # fmt: skip
        lab.procs.append(self.proc)
        deadline = time.monotonic() + 10
        while "listening on" not in self.err.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump did not start: {self.err.read_text()}")
            time.sleep(0.02)

    def stop(self) -> dict[int, int]:
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=20)
        arrivals: dict[int, int] = {}
        for p in read_capture(self.out):
            if len(p.data) >= 46:
                arrivals.setdefault(struct.unpack_from("!I", p.data, 42)[0], p.ts_ns)
        return arrivals


def timing_error(cap_ts: list[int], arrivals: dict[int, int]) -> dict:
    errs = []
    for i in range(1, len(cap_ts)):
        if i in arrivals and i - 1 in arrivals:
            errs.append(abs((arrivals[i] - arrivals[i - 1]) - (cap_ts[i] - cap_ts[i - 1])) / 1000.0)
    if not errs:
        return {"pairs": 0}
    errs.sort()
    return {
        "received": len(arrivals),
        "pairs": len(errs),
        "mean_us": round(statistics.fmean(errs), 2),
        "p99_us": round(errs[min(len(errs) - 1, int(0.99 * (len(errs) - 1) + 0.5))], 2),
        "max_us": round(errs[-1], 2),
    }


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=100_000, help="frames in the top-speed capture (>= 100000)")
    ap.add_argument("--pad", type=int, default=14, help="payload bytes after the sequence number (14: 60-byte frames)")
    ap.add_argument("--rounds", type=int, default=5, help="top-speed runs of each tool (alternating)")
    ap.add_argument("--receiver", choices=RECEIVERS, default="drop",
                    help="what the receiver does with the frames (see the module doc)")  # fmt: skip
    ap.add_argument("--fallback", action="store_true", help="also time rangectl's sendmmsg fallback (no TX ring)")
    ap.add_argument("--timed-packets", type=int, default=5000, help="frames in the speed-1.0 capture")
    ap.add_argument("--timing-rounds", type=int, default=3, help="speed-1.0 runs of each tool (alternating)")
    ap.add_argument("--mean-gap-us", type=float, default=300.0, help="mean gap of the speed-1.0 capture")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/replay.py needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("ip", "tcpreplay", "tcpdump"):
        if not shutil.which(tool):
            print(f"bench/replay.py: {tool} is missing (scripts/setup.sh installs it)", file=sys.stderr)
            return 3
    signal.signal(signal.SIGTERM, _interrupt)

    work = Path(tempfile.mkdtemp(prefix="rc-bench-replay-"))
    lab = Lab()
    results: dict = {"packets": args.packets, "frame_bytes": len(frame(0, args.pad)), "receiver": args.receiver,
                     "rounds": []}  # fmt: skip
    try:
        big = work / "big.pcap"
        write_pcap(big, [1000] * args.packets, args.pad)  # 1 us apart: irrelevant at top speed
        timed = work / "timed.pcap"
        gaps = capture_gaps(args.timed_packets, args.mean_gap_us, seed=4)
        write_pcap(timed, gaps, args.pad)
        cap_ts = [p.ts_ns for p in read_capture(timed)]
        lab.build(args.receiver)
        print(f"lab: {lab.tx} ({TX_IP}) --veth-- {lab.rx} ({RX_IP}); capture {args.packets} x "
              f"{results['frame_bytes']}-byte frames; {os.cpu_count()} CPUs; receiver: {args.receiver}; "
              f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip

        # warm-up (page cache, ARP, first-use costs), not counted
        run_rangectl(lab, timed, topspeed=True)
        run_tcpreplay(lab, timed, "--topspeed")

        print("\ntop speed (packets per second as each tool reports its own send rate; received = kernel count at the receiver)")
        for i in range(args.rounds):
            a = run_rangectl(lab, big, topspeed=True)
            b = run_tcpreplay(lab, big, "--topspeed")
            rnd = {"rangectl": a, "tcpreplay": b}
            c = None
            if args.fallback:
                c = rnd["rangectl_sendmmsg"] = run_rangectl(lab, big, topspeed=True, tx_ring=False)
            results["rounds"].append(rnd)
            print(f"  round {i + 1}: rangectl {a['pps']:>10,.0f} pps ({a['sent']} sent, {a['received']} received, "
                  f"{a['sender']}, qdisc bypass {a['qdisc_bypass']}, {a['cpu_us_per_frame']:.2f} us CPU/frame)   "
                  f"tcpreplay {b['pps']:>10,.0f} pps ({b['sent']} sent, {b['received']} received, "
                  f"{b['cpu_us_per_frame']:.2f} us CPU/frame)   ratio {a['pps'] / b['pps']:.2f}")  # fmt: skip
            if a["sender_fallback"]:
                print(f"           {a['sender_fallback']}")
            if c is not None:
                print(f"           rangectl without the ring ({c['sender']}) {c['pps']:>10,.0f} pps "
                      f"({c['sent']} sent, {c['received']} received, {c['cpu_us_per_frame']:.2f} us CPU/frame)   "
                      f"ratio {c['pps'] / b['pps']:.2f}")  # fmt: skip
        ok_pps = None
        if results["rounds"]:
            med_a = statistics.median(r["rangectl"]["pps"] for r in results["rounds"])
            med_b = statistics.median(r["tcpreplay"]["pps"] for r in results["rounds"])
            ratios = [r["rangectl"]["pps"] / r["tcpreplay"]["pps"] for r in results["rounds"]]
            results["topspeed"] = {"rangectl_pps": round(med_a), "tcpreplay_pps": round(med_b), "ratio": round(med_a / med_b, 3),
                                   "ratio_per_round": [round(x, 3) for x in ratios]}  # fmt: skip
            cpu_a = statistics.median(r["rangectl"]["cpu_us_per_frame"] for r in results["rounds"])
            cpu_b = statistics.median(r["tcpreplay"]["cpu_us_per_frame"] for r in results["rounds"])
            results["topspeed"].update(rangectl_cpu_us_per_frame=round(cpu_a, 3), tcpreplay_cpu_us_per_frame=round(cpu_b, 3))
            print(f"  median:  rangectl {med_a:,.0f} pps   tcpreplay {med_b:,.0f} pps   ratio {med_a / med_b:.2f}"
                  f"   (median of the rounds' ratios {statistics.median(ratios):.2f})")  # fmt: skip
            print(f"           CPU per frame: rangectl {cpu_a:.2f} us (sending thread), tcpreplay {cpu_b:.2f} us "
                  f"(whole process); ratio {cpu_b / cpu_a:.2f}")  # fmt: skip
            if args.fallback:
                med_c = statistics.median(r["rangectl_sendmmsg"]["pps"] for r in results["rounds"])
                results["topspeed"]["rangectl_sendmmsg_pps"] = round(med_c)
                print(f"           rangectl without the ring {med_c:,.0f} pps   ratio {med_c / med_b:.2f}")
            ok_pps = med_a >= 2 * med_b

        span = (cap_ts[-1] - cap_ts[0]) / 1e9
        print(f"\nspeed 1.0 ({args.timed_packets} packets over {span:.2f} s, exponential gaps, mean {args.mean_gap_us:g} us;"
              " error = |arrival gap - capture gap| at the receiver, alternating runs)")  # fmt: skip
        timing: dict[str, list] = {"rangectl": [], "tcpreplay": [], "rangectl_sender_lateness_us": []}
        for i in range(args.timing_rounds):
            td = Tcpdump(lab, work / f"rx-rangectl-{i}.pcap")
            a = run_rangectl(lab, timed, speed=1.0)
            ea = timing_error(cap_ts, td.stop())
            td = Tcpdump(lab, work / f"rx-tcpreplay-{i}.pcap")
            run_tcpreplay(lab, timed, "--multiplier=1.0")
            eb = timing_error(cap_ts, td.stop())
            timing["rangectl"].append(ea)
            timing["tcpreplay"].append(eb)
            timing["rangectl_sender_lateness_us"].append(a["lateness_us"])
            for name, e in (("rangectl", ea), ("tcpreplay", eb)):
                print(f"  round {i + 1}: {name:<10} mean {e['mean_us']:>8.1f} us   p99 {e['p99_us']:>8.1f} us   "
                      f"max {e['max_us']:>9.1f} us   ({e['received']}/{args.timed_packets} received)")  # fmt: skip
        med = {k: {m: round(statistics.median(e[m] for e in timing[k]), 2) for m in ("mean_us", "p99_us", "max_us")}
               for k in ("rangectl", "tcpreplay")}  # fmt: skip
        timing["median"] = med
        results["timing"] = timing
        for name in ("rangectl", "tcpreplay"):
            e = med[name]
            print(f"  median:  {name:<10} mean {e['mean_us']:>8.1f} us   p99 {e['p99_us']:>8.1f} us   max {e['max_us']:>9.1f} us")
        print(f"  rangectl's own lateness against its schedule (last round): {a['lateness_us']}")
        ea, eb = med["rangectl"], med["tcpreplay"]
        ok_p99 = ea["p99_us"] < 1000 and ea["p99_us"] <= eb["p99_us"]
        print(f"\ntargets: pps >= 2 x tcpreplay's: {'-' if ok_pps is None else 'yes' if ok_pps else 'NO'}; "
              f"p99 < 1 ms and <= tcpreplay's: {'yes' if ok_p99 else 'NO'}")  # fmt: skip
        if args.json:
            print(json.dumps(results, indent=2))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        lab.teardown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
