#!/usr/bin/env python3
"""Validation speed: ``validate_file`` over 200 varied scenario files, and one ``rangectl validate DIR``.

Generates files into a temporary folder from the shipped examples
(``scenarios/*.yaml``) with random changes: the whole range moved to other
subnets, extra target nodes with services, extra message injects and
objectives (answers, checks, reports with hints), flow (JSON) or block
style. About one file in six is made invalid in one of several ways
(duplicate address, unknown node, bad duration, unknown key, an ``after``
cycle, overlapping subnets, broken YAML, binary junk). Then it measures, per
file, CPU time (``time.process_time``) and wall time (``time.perf_counter``)
of ``validate_file`` in this process (after one warm-up call, which pays for
the imports), and the CPU (user + sys of the child) and wall time of one
``rangectl validate DIR`` subprocess over the whole folder.

Target: well under 1 s of CPU per file (a few ms is expected).

Run: .venv/bin/python bench/validate.py [--files 200] [--seed 7] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ruamel.yaml import YAML  # noqa: E402

from rangectl.scenario.validate import validate_file  # noqa: E402

INVALID_KINDS = [
    "duplicate-address",
    "unknown-target",
    "bad-duration",
    "unknown-key",
    "after-cycle",
    "overlap",
    "yaml-syntax",
    "binary",
]


def _scalar(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int | float):
        return str(v)
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj: object, indent: int = 0) -> str:
    """Block-style YAML for plain data (much quicker than ruamel's pure-Python emitter)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = k if isinstance(k, str) and k.replace("-", "").replace("_", "").isalnum() else _scalar(k)
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(v, indent + 2))
            else:
                lines.append(
                    f"{pad}{key}: {_scalar(v) if not isinstance(v, dict | list) else ('{}' if isinstance(v, dict) else '[]')}"
                )
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict | list) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {body[indent + 2 :]}")
            else:
                lines.append(f"{pad}- {_scalar(item) if not isinstance(item, dict | list) else '{}'}")
    return "\n".join(lines)


def load_examples() -> list[dict]:
    y = YAML(typ="safe")
    out = [y.load(p.read_text(encoding="utf-8")) for p in sorted(p for p in (ROOT / "scenarios").glob("*.yaml") if not p.name.endswith(".solution.yaml"))]
    if not out:
        sys.exit("no examples in scenarios/")
    return out


def move_range(sc: dict, rnd: random.Random, index: int) -> None:
    """Move every network to a fresh subnet of the same size; translate every address."""
    amap: dict[str, str] = {}
    used: list[IPv4Network] = []
    for name, net in sc["networks"].items():
        old = IPv4Network(net["subnet"])
        while True:
            base = int(IPv4Network("10.0.0.0/8").network_address) + rnd.randrange(2**24)
            base -= base % old.num_addresses
            new = IPv4Network((base, old.prefixlen))
            if not any(new.overlaps(u) for u in used):
                break
        used.append(new)
        net["subnet"] = str(new)
        for node in sc["nodes"].values():
            ip = node["interfaces"].get(name)
            if ip is not None:
                moved = str(new.network_address + (int(IPv4Address(ip)) - int(old.network_address)))
                amap[ip] = moved
                node["interfaces"][name] = moved
    for node in sc["nodes"].values():
        if "gateway" in node:
            node["gateway"] = amap[node["gateway"]]
    sc["name"] = f"{sc['name']}-{index:03d}"


def grow(sc: dict, rnd: random.Random) -> None:
    """Extra nodes, injects and objectives, so files vary in size (about 3 to 40 KB)."""
    net_name = next(
        n
        for n in sc["networks"]
        if any(n in nd["interfaces"] and nd.get("forward") for nd in sc["nodes"].values()) and n != "wan"
    )
    subnet = IPv4Network(sc["networks"][net_name]["subnet"])
    router = next(nd for nd in sc["nodes"].values() if nd.get("forward"))
    taken = {IPv4Address(ip) for nd in sc["nodes"].values() for ip in nd["interfaces"].values()}
    free = [a for a in list(subnet.hosts())[:200] if a not in taken]
    rnd.shuffle(free)
    for i in range(rnd.randrange(0, 30)):
        sc["nodes"][f"host-{i}"] = {
            "image": rnd.choice(["web", "db", "dns", "mail", "workstation"]),
            "role": "target",
            "gateway": router["interfaces"][net_name],
            "interfaces": {net_name: str(free.pop())},
            "services": [
                {"name": f"svc{j}", "port": 1000 + j, "proto": rnd.choice(["tcp", "udp"])}
                for j in range(rnd.randrange(1, 4))
            ],
            "description": {"en": f"Extra host {i}", "vi": f"Máy bổ sung {i}"},
        }
    injects = sc.setdefault("injects", [])
    ids = [inj["id"] for inj in injects]
    for i in range(rnd.randrange(0, 25)):
        inj = {
            "id": f"note-{i}",
            "message": {"en": f"Situation update {i}.", "vi": f"Cập nhật tình hình {i}."},
        }
        if ids and rnd.random() < 0.6:
            inj["after"] = rnd.choice(ids)
            inj["delay"] = f"{rnd.randrange(1, 10)}m"
        else:
            inj["at"] = f"{rnd.randrange(0, 60)}m{rnd.randrange(0, 60)}s"
        injects.append(inj)
        ids.append(inj["id"])
    red = next(n for n, nd in sc["nodes"].items() if nd["role"] == "red")
    targets = [n for n, nd in sc["nodes"].items() if nd["role"] == "target"]
    objectives = sc.setdefault("objectives", [])
    for i in range(rnd.randrange(0, 20)):
        kind = rnd.choice(["value", "one_of", "regex", "ip_of", "check", "report"])
        obj: dict = {
            "id": f"extra-{i}",
            "category": rnd.choice(["detection", "analysis", "containment"]),
            "after": rnd.choice(ids),
            "points": rnd.randrange(0, 300),
        }
        if kind == "check":
            obj["check"] = {
                "blocked": {"from": red, "to": rnd.choice(targets), "port": rnd.choice([22, 80, 443])}
            }
        elif kind == "report":
            obj["report"] = {
                "deadline": "20m",
                "fields": [{"name": "summary"}, {"name": "source", "answer": {"ip_of": red}}],
            }
        elif kind == "ip_of":
            obj["answer"] = {"ip_of": red}
        elif kind == "regex":
            obj["answer"] = {"regex": r"^(CVE-\d{4}-\d+|sqli?)$"}
        elif kind == "one_of":
            obj["answer"] = {"one_of": ["a", "b", 443]}
        else:
            obj["answer"] = {"value": rnd.randrange(1, 65535)}
        obj["hints"] = [
            {"text": {"en": "Look at the logs.", "vi": "Xem nhật ký."}, "cost": rnd.randrange(0, 50)}
        ]
        objectives.append(obj)


def break_it(sc: dict, kind: str, rnd: random.Random) -> str | None:
    """Make one scenario invalid; returns raw text instead for YAML-level breakage."""
    nodes = sc["nodes"]
    if kind == "duplicate-address":
        a, b = [n for n, nd in nodes.items() if len(nd["interfaces"]) == 1][:2]
        nodes[b]["interfaces"] = dict(nodes[a]["interfaces"])
    elif kind == "unknown-target":
        inj = next(i for i in sc["injects"] if "traffic" in i)
        inj["traffic"]["target"] = "no-such-node"
    elif kind == "bad-duration":
        sc["injects"][0].pop("at", None)
        sc["injects"][0].pop("after", None)
        sc["injects"][0]["at"] = "ten minutes"
    elif kind == "unknown-key":
        next(iter(nodes.values()))["colour"] = "red"
    elif kind == "after-cycle":
        sc["injects"] += [
            {"id": "loop-a", "after": "loop-b", "message": "a"},
            {"id": "loop-b", "after": "loop-a", "message": "b"},
        ]
    elif kind == "overlap":
        first = next(iter(sc["networks"].values()))["subnet"]
        sc["networks"]["shadow"] = {
            "subnet": str(IPv4Network(first).supernet(new_prefix=IPv4Network(first).prefixlen - 1))
        }
    elif kind == "yaml-syntax":
        return "rangectl: 1\nname: broken\nnetworks: {wan: {subnet: 10.0.0.0/24}\nnodes: [\n"
    elif kind == "binary":
        return None
    return ""


def generate(folder: Path, count: int, seed: int) -> dict[Path, bool]:
    """Write ``count`` scenario files; return file -> expected validity."""
    rnd = random.Random(seed)
    examples = load_examples()
    expected: dict[Path, bool] = {}
    for i in range(count):
        sc = copy.deepcopy(examples[i % len(examples)])
        move_range(sc, rnd, i)
        grow(sc, rnd)
        f = folder / f"s{i:03d}.yaml"
        valid = rnd.random() >= 1 / 6
        if valid:
            text = None
        else:
            kind = INVALID_KINDS[i % len(INVALID_KINDS)]
            raw = break_it(sc, kind, rnd)
            if raw is None:
                f.write_bytes(bytes(rnd.randrange(1, 256) for _ in range(rnd.randrange(100, 5000))))
                expected[f] = False
                continue
            text = raw or None
        if text is None:
            # two in three block style, one in three flow style (JSON is YAML too)
            text = (
                to_yaml(sc) + "\n"
                if rnd.random() < 2 / 3
                else json.dumps(sc, ensure_ascii=False, indent=1) + "\n"
            )
        f.write_text(text, encoding="utf-8")
        expected[f] = valid
    return expected


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the generated folder and print its path")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="rangectl-bench-validate-"))
    try:
        t0 = time.perf_counter()
        expected = generate(folder, args.files, args.seed)
        gen_s = time.perf_counter() - t0
        sizes = [f.stat().st_size for f in expected]

        # warm-up: imports, pydantic schema build, first regex compiles
        c0, w0 = time.process_time(), time.perf_counter()
        validate_file(ROOT / "scenarios" / "district-portal.yaml")
        warm_cpu, warm_wall = time.process_time() - c0, time.perf_counter() - w0

        rows: dict[str, list[tuple[float, float]]] = {"valid": [], "invalid": []}
        mismatched = []
        for f, want in expected.items():
            c0, w0 = time.process_time(), time.perf_counter()
            res = validate_file(f)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            rows["valid" if res.ok else "invalid"].append((cpu, wall))
            if res.ok != want:
                mismatched.append((f.name, want, [str(p) for p in res.problems[:2]]))
        rows["all"] = rows["valid"] + rows["invalid"]
        # where the time goes: ruamel's round-trip (line-aware, pure Python) parse alone
        for f in expected:
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                list(YAML(typ="rt").load_all(text))
            except Exception:  # noqa: BLE001 - broken files are part of the mix
                pass
            rows.setdefault("of which: YAML parse", []).append(
                (time.process_time() - c0, time.perf_counter() - w0)
            )
        for example in sorted(p for p in (ROOT / "scenarios").glob("*.yaml") if not p.name.endswith(".solution.yaml")):
            for _ in range(5):
                c0, w0 = time.process_time(), time.perf_counter()
                assert validate_file(example).ok, example
                rows.setdefault("shipped examples (x5)", []).append(
                    (time.process_time() - c0, time.perf_counter() - w0)
                )

        exe = shutil.which("rangectl", path=str(Path(sys.executable).parent)) or "rangectl"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        proc = subprocess.run(
            [exe, "validate", str(folder)],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        sub_wall = time.perf_counter() - w0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sub_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
        t0 = time.perf_counter()
        base = subprocess.run([exe, "--version"], capture_output=True, text=True)
        start_wall = time.perf_counter() - t0
        after2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start_cpu = (after2.ru_utime - after.ru_utime) + (after2.ru_stime - after.ru_stime)
        assert base.returncode == 0

        print(f"rangectl validate bench: {len(expected)} files in {folder if args.keep else 'a temp folder'}")
        print(
            f"  generated in {gen_s:.2f} s; sizes {min(sizes) / 1024:.1f}-{max(sizes) / 1024:.1f} KB "
            f"(mean {statistics.mean(sizes) / 1024:.1f} KB); warm-up call {warm_cpu * 1000:.0f} ms CPU / {warm_wall * 1000:.0f} ms wall"
        )
        print()
        head = f"{'in-process validate_file':<28}{'files':>6}{'CPU total s':>13}{'CPU ms/file':>13}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'wall total s':>14}{'wall ms/file':>14}"
        print(head)
        print("-" * len(head))
        figures: dict = {"files": len(expected), "in_process": {}, "mismatched": len(mismatched)}
        for label in ("valid", "invalid", "all", "of which: YAML parse", "shipped examples (x5)"):
            data = rows[label]
            if not data:
                continue
            cpu = [c for c, _ in data]
            wall = [w for _, w in data]
            figures["in_process"][label] = {
                "files": len(data),
                "cpu_total_s": sum(cpu),
                "cpu_ms_per_file": 1000 * statistics.mean(cpu),
                "cpu_p50_ms": 1000 * pct(cpu, 0.5),
                "cpu_p95_ms": 1000 * pct(cpu, 0.95),
                "cpu_max_ms": 1000 * max(cpu),
                "wall_total_s": sum(wall),
                "wall_ms_per_file": 1000 * statistics.mean(wall),
            }
            fig = figures["in_process"][label]
            print(
                f"{label if ' ' in label else label + ' files':<28}{len(data):>6}{fig['cpu_total_s']:>13.3f}{fig['cpu_ms_per_file']:>13.2f}"
                f"{fig['cpu_p50_ms']:>9.2f}{fig['cpu_p95_ms']:>9.2f}{fig['cpu_max_ms']:>9.2f}"
                f"{fig['wall_total_s']:>14.3f}{fig['wall_ms_per_file']:>14.2f}"
            )
        print()
        head2 = (
            f"{'subprocess':<40}{'exit':>6}{'CPU s':>9}{'CPU ms/file':>13}{'wall s':>9}{'wall ms/file':>14}"
        )
        print(head2)
        print("-" * len(head2))
        n = len(expected)
        print(
            f"{'rangectl validate DIR':<40}{proc.returncode:>6}{sub_cpu:>9.3f}{1000 * sub_cpu / n:>13.2f}{sub_wall:>9.3f}{1000 * sub_wall / n:>14.2f}"
        )
        print(
            f"{'rangectl --version (start-up only)':<40}{base.returncode:>6}{start_cpu:>9.3f}{'':>13}{start_wall:>9.3f}{'':>14}"
        )
        print(f"  subprocess said: {summary}")
        figures["subprocess"] = {
            "exit": proc.returncode,
            "cpu_s": sub_cpu,
            "wall_s": sub_wall,
            "startup_cpu_s": start_cpu,
            "startup_wall_s": start_wall,
        }

        worst = figures["in_process"]["all"]["cpu_max_ms"]
        verdict = "OK" if worst < 1000 else "SLOW"
        print()
        print(f"target: < 1000 ms CPU per file; worst file {worst:.1f} ms -> {verdict}")
        if mismatched:
            print(f"{len(mismatched)} file(s) validated differently than generated:")
            for name, want, probs in mismatched[:5]:
                print(f"  {name}: expected {'valid' if want else 'invalid'}; {probs}")
        if args.json:
            print(json.dumps(figures, indent=2))
        if mismatched or proc.returncode != (1 if not all(expected.values()) else 0):
            sys.exit(1)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
