#!/usr/bin/env python3
"""rangectl up/down against docker-compose up -d/down: same containers, same engine, same run.

    .venv/bin/python bench/up.py [--teams 1,4,16,40] [--scenario scenarios/tet-portal.yaml] [--no-stamp]
    .venv/bin/python bench/up.py --teams 16 --workers 4,8,16,32      # engine calls in flight
    .venv/bin/python bench/up.py --teams 16,40 --compose-per-team --compose-jobs 4   # compose per team

For each team count it measures, in this order on a warm engine (images local):
  * docker-compose `up -d` and `down` of a compose file generated from the same plan (same
    images, internal networks, subnets, addresses, capabilities, sysctls, the probe node too);
  * rangectl containers only (`up --no-provision`) and its `down`;
  * rangectl fully provisioned `up` (stamps made on the first count, then reused: "once ever
    while the inputs are unchanged"), its provisioning share, memory per node, and `down`.
It prints seconds and the ratios the issue sets targets for:
  run/compose (containers only, target <= 0.7), up+prov/compose (target <= 1.3 at 40 teams),
  prov share of up (target <= 20% at 40 teams), down/compose down (target <= 1.0).
With --workers, only containers-only up and down, once per value of RANGECTL_DOCKER_WORKERS.
Load average before each count is printed: other work on the machine moves the figures.
"""

from __future__ import annotations

import argparse
import os
import re
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


def compose_file(scenario, plan, images: dict[str, str], project: str, teams=None) -> dict:
    """The compose file of the plan's containers (only ``teams``' when given)."""
    services = {}
    networks = {}
    for t in plan.teams:
        if teams is not None and t.team not in teams:
            continue
        for n in t.networks:
            networks[f"t{t.team}-{n.name}"] = {
                "driver": "bridge",
                "internal": True,
                "driver_opts": {"com.docker.network.bridge.inhibit_ipv4": "true"},
                "ipam": {"config": [{"subnet": str(n.subnet), "gateway": str(n.bridge)}]},
            }
        for node in [*t.nodes, *([t.probe] if t.probe else [])]:
            svc = {
                "image": images[node.image],
                "hostname": node.name,
                "networks": {f"t{t.team}-{net}": {"ipv4_address": str(ip)} for net, ip in node.interfaces.items()},
            }
            if node.capabilities:
                svc["cap_add"] = node.capabilities
            sysctls = {**({"net.ipv4.ip_forward": "1"} if node.forward else {}), **node.sysctls}
            if sysctls:
                svc["sysctls"] = sysctls
            services[f"t{t.team}-{node.name}"] = svc
    return {"version": "2.4", "services": services, "networks": networks}


def timed(cmd: list[str], timeout: float | None = None, **kw) -> float | None:
    """Seconds ``cmd`` took; None when it did not finish within ``timeout``."""
    t0 = time.monotonic()
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - t0


def memory_mib(range_name: str) -> float:
    """Sum of the range's containers' memory use (docker stats, one sample)."""
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}"], capture_output=True, text=True
    ).stdout
    total = 0.0
    for line in out.splitlines():
        name, _, use = line.partition(" ")
        if not name.startswith(f"rc-{range_name}."):
            continue
        m = re.match(r"([\d.]+)\s*([KMG]i?B)", use)
        if m:
            total += float(m.group(1)) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "kB": 1 / 1000, "MB": 1, "GB": 1000}.get(m.group(2), 1)
    return total


def compose_run(compose: str, files: list[Path], verb: list[str], jobs: int, timeout: float) -> float | None:
    """Wall time of ``docker-compose -p PROJECT -f FILE VERB`` for every file, ``jobs`` at a time;
    None when one did not finish within ``timeout``."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.monotonic()
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        runs = list(pool.map(lambda f: timed([compose, "-p", f.stem, "-f", str(f), *verb], timeout=timeout), files))
    return None if any(r is None for r in runs) else time.monotonic() - t0


def load() -> str:
    return os.getloadavg().__repr__()


def workers_mode(args, sc) -> None:
    teams = int(args.teams.split(",")[0])
    p = make_plan(sc, teams)
    n = sum(len(t.nodes) + (1 if t.probe else 0) for t in p.teams)
    print(f"scenario: {sc.name}, {teams} teams, {n} containers, containers only")
    print(f"{'workers':>7} | {'up s':>6} {'ctr/s':>6} | {'down s':>6} {'ctr/s':>6} | load before")
    for w in [int(x) for x in args.workers.split(",")]:
        os.environ["RANGECTL_DOCKER_WORKERS"] = str(w)
        import rangectl.backend.docker as dock

        dock.WORKERS = w
        name = f"bench-w{w}"
        before = load()
        t0 = time.monotonic()
        ranges.up(Path(args.scenario), teams=teams, name=name, provision=False)
        up = time.monotonic() - t0
        t0 = time.monotonic()
        ranges.down(name)
        down = time.monotonic() - t0
        print(f"{w:>7} | {up:6.1f} {n / up:6.1f} | {down:6.1f} {n / down:6.1f} | {before}")


def ratio(a: float, b: float | None) -> str:
    return "   - " if b is None else f"{a / b:5.2f}"


def secs(x: float | None) -> str:
    return "hung" if x is None else f"{x:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teams", default="1,4,16,40")
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "tet-portal.yaml"))
    ap.add_argument("--no-stamp", action="store_true", help="provision node by node (the old way)")
    ap.add_argument("--workers", default=None, help="comma list: measure containers-only up/down per value")
    ap.add_argument("--compose-timeout", type=float, default=600, help="seconds before docker-compose counts as hung")
    ap.add_argument("--compose-per-team", action="store_true",
                    help="one compose project per team (compose 1.x stalls on one project of ~100+ services)")
    ap.add_argument("--compose-jobs", type=int, default=4, help="with --compose-per-team: projects brought up at once")
    args = ap.parse_args()
    os.environ.setdefault("RANGECTL_HOME", tempfile.mkdtemp(prefix="bench-up-"))
    sc = load_scenario(args.scenario)
    if args.workers:
        workers_mode(args, sc)
        return
    compose = shutil.which("docker-compose")
    if not compose:
        sys.exit("docker-compose not found: apt-get install docker-compose")
    images = ensure_images(client(), sorted({n.image for n in sc.nodes.values()}))
    print(f"scenario: {sc.name}{' (no stamps)' if args.no_stamp else ''}")
    hdr = (f"{'teams':>5} {'ctrs':>5} | {'compose':>7} {'rc run':>7} {'ratio':>5} | {'rc up+prov':>10} {'ratio':>5} "
           f"{'prov':>6} {'share':>5} {'stamped':>7} | {'c down':>6} {'rc down':>7} {'ratio':>5} | {'MiB/node':>8} | load before")  # fmt: skip
    print(hdr)
    print("-" * len(hdr), flush=True)
    for teams in [int(x) for x in args.teams.split(",")]:
        p = make_plan(sc, teams)
        n = sum(len(t.nodes) + (1 if t.probe else 0) for t in p.teams)
        name = f"bench-up-{teams}"
        before = load()
        with tempfile.TemporaryDirectory() as d:
            # one project for the whole range, or (--compose-per-team) one per team, --compose-jobs at once:
            # docker-compose 1.x stalls on one project of more than about 100 services (docker/compose#6705,
            # #7486, #8161; with COMPOSE_PARALLEL_LIMIT it deadlocks: #5864, #8226)
            groups = [[k] for k in range(1, teams + 1)] if args.compose_per_team else [list(range(1, teams + 1))]
            files = []
            for g in groups:
                f = Path(d) / (f"benchc{teams}t{g[0]}.yml" if args.compose_per_team else f"benchc{teams}.yml")
                f.write_text(yaml.safe_dump(compose_file(sc, p, images, name, set(g)), sort_keys=False))
                files.append(f)
            jobs = args.compose_jobs if args.compose_per_team else 1
            c_up = compose_run(compose, files, ["up", "-d"], jobs, args.compose_timeout)
            c_down = compose_run(compose, files, ["down", "-t", "0"], jobs, args.compose_timeout)
            if c_up is None:  # what a hung compose left
                compose_run(compose, files, ["down", "-t", "0"], jobs, args.compose_timeout)
        t0 = time.monotonic()
        ranges.up(Path(args.scenario), teams=teams, name=name, provision=False)
        r_run = time.monotonic() - t0
        ranges.down(name)
        t0 = time.monotonic()
        rep = ranges.up(Path(args.scenario), teams=teams, name=name, provision=True, stamp=not args.no_stamp)
        r_prov = time.monotonic() - t0
        mem = memory_mib(name)
        prov = rep.timings.get("provision", 0.0) + rep.timings.get("stamps", 0.0)
        stamped = sum(1 for v in rep.stamps.values() if v.ok)
        t0 = time.monotonic()
        ranges.down(name)
        r_down = time.monotonic() - t0
        print(
            f"{teams:>5} {n:>5} | {secs(c_up):>7} {r_run:7.1f} {ratio(r_run, c_up)} | {r_prov:10.1f} "
            f"{ratio(r_prov, c_up)} {prov:6.1f} {prov / r_prov:5.0%} {stamped:>3}/{len(rep.stamps):<3} | "
            f"{secs(c_down):>6} {r_down:7.1f} {ratio(r_down, c_down)} | {mem / n:8.1f} | {before}",
            flush=True,
        )
    print("ratios: rangectl seconds / docker-compose seconds for the same containers (compose does no provisioning;")
    print("'hung': docker-compose did not finish within --compose-timeout)")
    print("targets at 40 teams: run <= 0.70, up+prov <= 1.30, prov share <= 20%, down <= 1.00")


if __name__ == "__main__":
    main()
