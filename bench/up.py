#!/usr/bin/env python3
"""rangectl up/down against docker-compose up -d/down, same containers, same engine, same run.

For 1, 2 and 4 teams of the portal example it measures:
  * rangectl: containers running (--no-provision), fully provisioned, down
  * docker-compose: `up -d` and `down` of a compose file generated from the same plan
    (same images, internal networks, subnets, addresses, capabilities, sysctls)
and prints seconds and ratios. Run: .venv/bin/python bench/up.py [--teams 1,2,4] [--scenario FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rangectl import ranges  # noqa: E402
from rangectl.backend.engine import client  # noqa: E402
from rangectl.backend.images import ensure_images  # noqa: E402
from rangectl.plan import plan as make_plan  # noqa: E402
from rangectl.scenario.validate import load_scenario  # noqa: E402


def compose_file(scenario, plan, images: dict[str, str], project: str) -> dict:
    services = {}
    networks = {}
    for t in plan.teams:
        for n in t.networks:
            networks[f"t{t.team}-{n.name}"] = {
                "driver": "bridge",
                "internal": True,
                "driver_opts": {"com.docker.network.bridge.inhibit_ipv4": "true"},
                "ipam": {"config": [{"subnet": str(n.subnet), "gateway": str(n.bridge)}]},
            }
        for node in t.nodes:
            svc = {
                "image": images[node.image],
                "hostname": node.name,
                "networks": {f"t{t.team}-{net}": {"ipv4_address": str(ip)} for net, ip in node.interfaces.items()},
            }
            if node.capabilities:
                svc["cap_add"] = node.capabilities
            if node.forward:
                svc["sysctls"] = {"net.ipv4.ip_forward": "1"}
            services[f"t{t.team}-{node.name}"] = svc
    return {"version": "2.4", "services": services, "networks": networks}


def timed(cmd: list[str], **kw) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, **kw)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teams", default="1,2,4")
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "district-portal.yaml"))
    args = ap.parse_args()
    compose = shutil.which("docker-compose")
    if not compose:
        sys.exit("docker-compose not found: apt-get install docker-compose")
    os.environ.setdefault("RANGECTL_HOME", tempfile.mkdtemp(prefix="bench-up-"))
    sc = load_scenario(args.scenario)
    images = ensure_images(client(), sorted({n.image for n in sc.nodes.values()}))
    rows = []
    for teams in [int(x) for x in args.teams.split(",")]:
        p = make_plan(sc, teams)
        name = f"bench-up-{teams}"
        # compose first (a warm engine for both: images are already local)
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "docker-compose.yml"
            f.write_text(yaml.safe_dump(compose_file(sc, p, images, name), sort_keys=False))
            base = [compose, "-p", f"benchc{teams}", "-f", str(f)]
            c_up = timed([*base, "up", "-d"])
            c_down = timed([*base, "down", "-t", "0"])
        t0 = time.monotonic()
        ranges.up(Path(args.scenario), teams=teams, name=name, provision=False)
        r_run = time.monotonic() - t0
        ranges.down(name)
        t0 = time.monotonic()
        rep = ranges.up(Path(args.scenario), teams=teams, name=name, provision=True)
        r_prov = time.monotonic() - t0
        t0 = time.monotonic()
        ranges.down(name)
        r_down = time.monotonic() - t0
        rows.append((teams, len(p.teams[0].nodes) * teams, r_run, c_up, r_prov, rep.timings.get("provision", 0.0), r_down, c_down))
    print(f"scenario: {sc.name}")
    hdr = f"{'teams':>5} {'ctrs':>5} | {'rc run':>7} {'compose':>7} {'ratio':>6} | {'rc prov':>7} {'ansible':>7} | {'rc down':>7} {'c down':>7} {'ratio':>6}"
    print(hdr)
    print("-" * len(hdr))
    for teams, n, r_run, c_up, r_prov, ans, r_down, c_down in rows:
        print(
            f"{teams:>5} {n:>5} | {r_run:7.2f} {c_up:7.2f} {r_run / c_up:6.2f} | {r_prov:7.2f} {ans:7.2f} | "
            f"{r_down:7.2f} {c_down:7.2f} {r_down / c_down:6.2f}"
        )
    one = rows[0][2]
    for teams, _, r_run, *_ in rows[1:]:
        print(f"{teams} teams cost {r_run / one:.2f}x one team (target <= {teams}x)")
    print("ratio = rangectl seconds / docker-compose seconds (<= 1.0 means rangectl is no slower)")


if __name__ == "__main__":
    main()
