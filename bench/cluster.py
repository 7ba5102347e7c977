#!/usr/bin/env python3
"""rangectl on the three-engine swarm lab against the same range on one engine, side by side.

    .venv/bin/python bench/cluster.py [--teams 12] [--scenario scenarios/tet-portal.yaml]
                                      [--host-cpus 16 --host-mem-gib 64] [--drill-teams 60]

Brings its own lab up (scripts/cluster-lab.sh --name rangectl-bench; removed at the end unless
--keep-lab), then, one after the other on this machine:

  0. warm-up: one team up and down on the local engine, untimed, so the stamps exist before
     anything is timed (every run below reuses them: none makes them);
  1. single engine: `up` (provisioned, stamps as usual) of TEAMS teams on the local engine,
     memory per node (docker stats), `down`;
  2. cluster, cold: every rangectl image removed from the lab's engines first, then `up
     --engine swarm --spread` of the same teams: images and stamps shipped by save/load;
     how many times each engine received each image; memory per node; `down`;
  3. cluster, warm: the same `up` again with the images already there (nothing shipped), `down`.

It prints seconds, the ratio cluster/single (target <= 1.3 for the same teams on this machine;
the lab's engines share its 2 cores, so this measures the cluster path's overhead, not a real
cluster's speed), the images shipped per engine (target: each at most once), and an
extrapolation of the machines a DRILL_TEAMS drill needs, from the measured memory per node and
the placement rule (docs/cluster.md), for machines of HOST_CPUS cores and HOST_MEM_GIB GiB.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from rangectl import backend as backends  # noqa: E402
from rangectl import labels as L  # noqa: E402
from rangectl import ranges  # noqa: E402
from rangectl.backend import swarm  # noqa: E402
from rangectl.backend.docker import team_nodes  # noqa: E402
from rangectl.backend.swarm import SwarmBackend  # noqa: E402

LAB = "rangectl-bench"
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def lab(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "cluster-lab.sh"), "--name", LAB, *args],
                       capture_output=True, text=True, env=env, timeout=900)  # fmt: skip
    if r.returncode != 0:
        sys.exit(f"cluster-lab.sh {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def mem_per_node(host: str | None, range_name: str) -> tuple[float, int]:
    """(MiB per node, nodes) of the range's containers on one engine (docker stats)."""
    cmd = ["docker", *(["-H", host] if host else []), "ps", "-q", "--filter", f"label={L.RANGE}={range_name}"]
    ids = subprocess.run(cmd, capture_output=True, text=True).stdout.split()
    if not ids:
        return 0.0, 0
    out = subprocess.run(["docker", *(["-H", host] if host else []), "stats", "--no-stream", "--format",
                          "{{.MemUsage}}", *ids], capture_output=True, text=True).stdout  # fmt: skip
    total = 0.0
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)\s*([KMG]i?B|B|kB)", line)
        if m:
            total += float(m.group(1)) * UNITS[m.group(2)]
    return total / len(ids) / 2**20, len(ids)


def timed(fn, *a, **kw):
    t = time.monotonic()
    out = fn(*a, **kw)
    return time.monotonic() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teams", type=int, default=12)
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "tet-portal.yaml"))
    ap.add_argument("--host-cpus", type=float, default=16)
    ap.add_argument("--host-mem-gib", type=float, default=64)
    ap.add_argument("--drill-teams", type=int, default=60)
    ap.add_argument("--keep-lab", action="store_true")
    args = ap.parse_args()
    os.environ.pop("DOCKER_HOST", None)
    scenario = Path(args.scenario)
    print(f"# {args.teams} teams of {scenario.stem}; load average {os.getloadavg()[0]:.1f}", flush=True)

    # 0. the stamps made before anything is timed (one team, untimed), so that every run below
    # starts from the same cache: a run that made them would count ~10 s the others do not
    t_warm, _ = timed(ranges.up, scenario, 1, "bench-warmup", True, engine="docker")
    ranges.down("bench-warmup")
    print(f"warm-up: 1 team up on one engine (stamps ready) in {t_warm:.1f} s, untimed below", flush=True)

    # 1. one engine
    t_single, rep = timed(ranges.up, scenario, args.teams, "bench-single", True, engine="docker")
    mib_single, n_single = mem_per_node(None, "bench-single")
    t_single_down, _ = timed(ranges.down, "bench-single")
    print(f"single engine: up {t_single:.1f} s ({n_single} nodes, {mib_single:.1f} MiB/node), down {t_single_down:.1f} s",
          flush=True)  # fmt: skip

    # the lab, its engines without any rangectl image
    manager = re.search(r"DOCKER_HOST=(\S+)", lab("up")).group(1)
    try:
        be = SwarmBackend(docker.DockerClient(base_url=manager, timeout=300), spread=True)
        backends.register("swarm", lambda: be)
        for e in be.engines():
            for img in e.api.images(filters={"label": L.MANAGED}):
                for tag in img.get("RepoTags") or [img["Id"]]:
                    try:
                        e.api.remove_image(tag, force=True)
                    except docker.errors.APIError:
                        pass
        rows = []
        for label in ("cold", "warm"):
            before = len(be.shipped)
            t_up, rep = timed(ranges.up, scenario, args.teams, "bench-cluster", True, engine="swarm")
            shipped = be.shipped[before:]
            per_engine: dict[str, list[str]] = {}
            for name, refs in shipped:
                per_engine.setdefault(name, []).extend(refs)
            mem = [mem_per_node(e.url, "bench-cluster") for e in be.engines()]
            nodes = sum(n for _, n in mem)
            mib = sum(m * n for m, n in mem) / max(1, nodes)
            teams_on = {}
            for info in be.nodes("bench-cluster"):
                teams_on.setdefault(info.engine, set()).add(info.team)
            t_down, _ = timed(ranges.down, "bench-cluster")
            worst = max((refs.count(r) for refs in per_engine.values() for r in refs), default=0)
            rows.append((label, t_up, t_down, per_engine, worst, mib, nodes, teams_on))
            print(f"cluster {label}: up {t_up:.1f} s, down {t_down:.1f} s; teams per engine "
                  f"{ {k: len(v) for k, v in sorted(teams_on.items())} }; shipped "
                  f"{ {k: len(v) for k, v in sorted(per_engine.items())} } image(s) per engine "
                  f"(at most {worst} time(s) each); {mib:.1f} MiB/node", flush=True)  # fmt: skip
    finally:
        if not args.keep_lab:
            lab("down")

    print()
    print("| run | up (s) | ratio to one engine | down (s) | images shipped per engine | MiB/node |")
    print("|---|---|---|---|---|---|")
    print(f"| one engine | {t_single:.1f} | 1.00 | {t_single_down:.1f} | - | {mib_single:.1f} |")
    for label, t_up, t_down, per_engine, _worst, mib, _nodes, _ in rows:
        ship = ", ".join(f"{k.rsplit('-', 1)[-1]}: {len(v)}" for k, v in sorted(per_engine.items())) or "none"
        print(f"| cluster, {label} | {t_up:.1f} | {t_up / t_single:.2f} | {t_down:.1f} | {ship} | {mib:.1f} |")
    warm = rows[-1][1] / t_single
    print(f"\ntarget: cluster up <= 1.3x one engine: warm {warm:.2f}x ({'met' if warm <= 1.3 else 'NOT met'}), "
          f"cold {rows[0][1] / t_single:.2f}x; every image at most once per engine: "
          f"{'met' if all(r[4] <= 1 for r in rows) else 'NOT met'}")  # fmt: skip

    # extrapolation
    nodes_per_team = len(team_nodes(rep.plan.teams[0]))  # the probe included
    mib = max(mib_single, rows[-1][5])
    by_cpu = args.host_cpus * swarm.NODES_PER_CPU
    by_mem = args.host_mem_gib * 1024 * swarm.MEMORY_SHARE / max(mib, 1)
    per_host = int(min(by_cpu, by_mem))
    need = args.drill_teams * nodes_per_team
    hosts = math.ceil(need / max(1, per_host // nodes_per_team * nodes_per_team))
    print(f"\nextrapolation: {args.drill_teams} teams x {nodes_per_team} nodes = {need} nodes; measured "
          f"{mib:.1f} MiB per idle node (provisioned); a host of {args.host_cpus:g} cores and "
          f"{args.host_mem_gib:g} GiB takes min({by_cpu:.0f} by CPU at {swarm.NODES_PER_CPU:g}/core, "
          f"{by_mem:.0f} by memory at {swarm.MEMORY_SHARE:.0%}) = {per_host} nodes "
          f"({per_host // nodes_per_team} whole teams): {hosts} host(s) (assumes idle nodes; traffic "
          f"injects and trainees' work need CPU headroom the placement rule's 40 nodes/core leaves)")  # fmt: skip


if __name__ == "__main__":
    main()
