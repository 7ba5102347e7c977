#!/usr/bin/env python3
"""Where the CPU goes while containers come up: the engine's share against the client's, for
docker-compose and rangectl on the same containers, same engine, same run.

    .venv/bin/python bench/engine_cpu.py [--teams 40] [--scenario scenarios/tet-portal.yaml] [--compose-jobs 4]

For one team count it brings the plan's containers up (no provisioning) and down twice, first with
docker-compose (one project per team, --compose-jobs at once: compose 1.x stalls on one project of
100+ services), then with rangectl, and for each `up` reports:
  * wall seconds;
  * CPU seconds of the engine: dockerd and what it waited for (its re-exec that sets up each
    container's embedded DNS rules, the iptables runs), containerd, the runtime shims and the runc
    runs they waited for;
  * CPU seconds of the client (docker-compose's processes; rangectl's own process and its children);
  * CPU seconds of the whole machine (/proc/stat, every core), and of everything else (the
    containers' own processes starting, the kernel's work outside any process).
The engine's CPU divided by the cores is a floor no client reaches below: the wall time that
engine work alone needs with every core busy on it and nothing else. The machine's CPU less the
client's, over the cores, is the floor with the containers' own start-up work counted too: what
any client would still need on this machine for the same containers.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from up import compose_file, compose_run  # noqa: E402

from rangectl import ranges  # noqa: E402
from rangectl.backend.engine import client  # noqa: E402
from rangectl.backend.images import ensure_images  # noqa: E402
from rangectl.plan import plan as make_plan  # noqa: E402
from rangectl.scenario.validate import load_scenario  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
ENGINE = ("dockerd", "containerd", "containerd-shim", "runc", "docker-proxy")


def engine_ticks() -> dict[int, int]:
    """pid -> utime+stime+cutime+cstime of every engine process now."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if not comm.startswith(ENGINE):
            continue
        f = stat[stat.rindex(")") + 2 :].split()
        out[int(d.name)] = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    return out


def machine_ticks() -> int:
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return sum(int(x) for i, x in enumerate(f) if i not in (3, 4))  # all but idle and iowait


def own_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class Meter:
    """Wall, engine, client and machine CPU between start() and stop()."""

    def start(self) -> None:
        self.t0, self.e0, self.m0, self.c0 = time.monotonic(), engine_ticks(), machine_ticks(), own_seconds()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        e1 = engine_ticks()
        engine = sum(v - self.e0.get(pid, 0) for pid, v in e1.items()) / TICK  # new processes count in full
        machine = (machine_ticks() - self.m0) / TICK
        own = own_seconds() - self.c0
        return {"wall": wall, "engine": engine, "client": own, "machine": machine, "other": machine - engine - own}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teams", type=int, default=40)
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "tet-portal.yaml"))
    ap.add_argument("--compose-jobs", type=int, default=4)
    ap.add_argument("--compose-timeout", type=float, default=600)
    args = ap.parse_args()
    os.environ.setdefault("RANGECTL_HOME", tempfile.mkdtemp(prefix="bench-cpu-"))
    compose = shutil.which("docker-compose")
    if not compose:
        sys.exit("docker-compose not found: apt-get install docker-compose")
    sc = load_scenario(args.scenario)
    p = make_plan(sc, args.teams)
    n = sum(len(t.nodes) + (1 if t.probe else 0) for t in p.teams)
    images = ensure_images(client(), sorted({x.image for x in sc.nodes.values()}))
    cores = os.cpu_count() or 1
    name = f"bench-cpu-{args.teams}"
    before = os.getloadavg()
    rows = []
    meter = Meter()
    with tempfile.TemporaryDirectory() as d:
        files = []
        for k in range(1, args.teams + 1):
            f = Path(d) / f"benchcpu{args.teams}t{k}.yml"
            f.write_text(yaml.safe_dump(compose_file(sc, p, images, name, {k}), sort_keys=False))
            files.append(f)
        meter.start()
        ok = compose_run(compose, files, ["up", "-d"], args.compose_jobs, args.compose_timeout)
        rows.append(("docker-compose up -d", meter.stop()))
        compose_run(compose, files, ["down", "-t", "0"], args.compose_jobs, args.compose_timeout)
        if ok is None:
            sys.exit("docker-compose hung")
    meter.start()
    ranges.up(Path(args.scenario), teams=args.teams, name=name, provision=False)
    rows.append(("rangectl up (containers only)", meter.stop()))
    ranges.down(name)
    print(f"scenario: {sc.name}, {args.teams} teams, {n} containers, {cores} cores, load before {before}")
    hdr = f"{'':<30} | {'wall s':>6} | {'engine cpu s':>12} {'per ctr':>8} {'floor s':>7} | {'client cpu s':>12} | {'other s':>7} | {'machine s':>9}"
    print(hdr)
    print("-" * len(hdr))
    for label, r in rows:
        print(f"{label:<30} | {r['wall']:6.1f} | {r['engine']:12.1f} {r['engine'] / n * 1000:6.0f}ms {r['engine'] / cores:7.1f} | "
              f"{r['client']:12.1f} | {r['other']:7.1f} | {r['machine']:9.1f}")  # fmt: skip
    c, r = rows[0][1], rows[1][1]
    print(f"rangectl/compose wall: {r['wall'] / c['wall']:.2f}; engine floor/compose wall: {r['engine'] / cores / c['wall']:.2f}"
          f" (rangectl's engine CPU over {cores} cores); 0.70 needs {0.7 * c['wall']:.1f} s")  # fmt: skip
    floor = (r["machine"] - r["client"]) / cores
    print(f"any client's floor: {floor:.1f} s = {floor / c['wall']:.2f} of compose's wall (the engine's and the containers'"
          f" own CPU, everything but rangectl's, over {cores} cores)")  # fmt: skip


if __name__ == "__main__":
    main()
