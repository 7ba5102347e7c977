#!/usr/bin/env python3
"""Scoring throughput: event ingest, submissions and board recomputes for a 20-team drill.

Synthesizes a scenario (3 injects, 8 objectives, 2 availability services), a
20-team range in a temporary RANGECTL_HOME and a 10,000-event record shaped
like a real drill (availability rounds every 30 s, check probes every 15 s,
submissions, hints, reports), then measures:

  * ingest: events/s through EventStore.append (one transaction each) and
    EventStore.append_many (batches of 100)
  * submissions/s through rangectl.scoring.actions.submit (answer checked,
    attempt counted and recorded atomically)
  * compute_board over all events: median and p99 of N runs (target < 50 ms)
  * loading the record (EventStore.events) and verify()

Run: .venv/bin/python bench/scoring.py [--teams 20] [--events 10000] [--runs 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENARIO = {
    "rangectl": 1,
    "name": "bench-scoring",
    "title": "Scoring bench",
    "networks": {"wan": {"subnet": "198.18.0.0/24"}, "dmz": {"subnet": "10.200.0.0/24"}},
    "nodes": {
        "gw": {
            "image": "router",
            "role": "infra",
            "forward": True,
            "interfaces": {"wan": "198.18.0.1", "dmz": "10.200.0.1"},
        },
        "portal": {
            "image": "web",
            "role": "target",
            "gateway": "10.200.0.1",
            "interfaces": {"dmz": "10.200.0.10"},
            "services": [{"name": "http", "port": 80}, {"name": "ssh", "port": 22}],
        },
        "soc": {
            "image": "workstation",
            "role": "blue",
            "gateway": "10.200.0.1",
            "interfaces": {"dmz": "10.200.0.50"},
        },
        "scanner": {
            "image": "attacker",
            "role": "red",
            "gateway": "198.18.0.1",
            "interfaces": {"wan": "198.18.0.66"},
        },
    },
    "injects": [
        {"id": "recon", "at": "2m", "message": "IDS alerts."},
        {"id": "brute", "after": "recon", "delay": "10m", "message": "SSH failures."},
        {"id": "exfil", "after": "brute", "delay": "20m", "message": "Large uploads."},
    ],
    "objectives": [
        {
            "id": "scanner-ip",
            "category": "detection",
            "after": "recon",
            "points": 100,
            "answer": {"ip_of": "scanner"},
            "hints": [{"text": "IDS", "cost": 20}, {"text": "WAN", "cost": 10}],
        },
        {
            "id": "scan-tool",
            "category": "analysis",
            "after": "recon",
            "points": 50,
            "answer": {"regex": "nmap( [0-9.]+)?"},
        },
        {
            "id": "block-scanner",
            "category": "containment",
            "after": "recon",
            "points": 200,
            "check": {"blocked": {"from": "scanner", "to": "portal", "port": 80}},
        },
        {
            "id": "brute-user",
            "category": "detection",
            "after": "brute",
            "points": 100,
            "answer": {"one_of": ["root", "admin"]},
        },
        {
            "id": "block-ssh",
            "category": "containment",
            "after": "brute",
            "points": 200,
            "check": {"blocked": {"from": "scanner", "to": "portal", "port": 22}},
        },
        {
            "id": "exfil-port",
            "category": "detection",
            "after": "exfil",
            "points": 100,
            "answer": {"value": 8443},
        },
        {
            "id": "flag",
            "category": "analysis",
            "points": 40,
            "answer": {"value": "Bench-Flag", "case_sensitive": True},
        },
        {
            "id": "incident",
            "category": "reporting",
            "after": "recon",
            "points": 150,
            "report": {
                "deadline": "30m",
                "fields": [{"name": "source", "answer": {"ip_of": "scanner"}}, {"name": "summary"}],
            },
        },
    ],
    "availability": [
        {"node": "portal", "service": "http", "points": 5, "every": "30s"},
        {"node": "portal", "service": "ssh", "points": 2, "every": "30s"},
    ],
    "scoring": {"policy": "standard"},
}


def synth_events(scenario, plan, n: int, seed: int = 7) -> list[tuple]:
    """(kind, data, team, actor, ts) tuples in drill order, about n of them."""
    rnd = random.Random(seed)
    teams = [t.team for t in plan.teams]
    t0 = 1_700_000_000.0
    out: list[tuple] = [
        ("drill.start", {"wall_start": t0, "time_scale": 1.0, "teams": teams}, None, "runner", t0)
    ]
    due = {"recon": 120.0, "brute": 720.0, "exfil": 1920.0}
    checks = [o for o in scenario.objectives if o.check is not None]
    answers = [o for o in scenario.objectives if o.answer is not None]
    t = 0.0
    while len(out) < n:
        for inj, at in due.items():
            if at == t:
                for k in teams:
                    out.append(("inject.start", {"inject": inj, "drill_t": t}, k, "runner", t0 + t))
                    out.append(
                        (
                            "inject.done",
                            {"inject": inj, "status": "ok", "drill_t": t + 5, "packets": 500},
                            k,
                            "runner",
                            t0 + t + 5,
                        )
                    )
        for k in teams:
            for o in checks:
                if due[o.after] <= t:
                    out.append(
                        (
                            "check",
                            {
                                "objective": o.id,
                                "passed": rnd.random() < 0.03,
                                "detail": "probe",
                                "drill_t": t,
                            },
                            k,
                            "runner",
                            t0 + t,
                        )
                    )
            if t % 30 == 0:
                for i, av in enumerate(scenario.availability):
                    out.append(
                        (
                            "availability",
                            {
                                "index": i,
                                "node": av.node,
                                "service": av.service,
                                "round": int(t // 30),
                                "up": rnd.random() < 0.9,
                                "latency": 0.01,
                                "drill_t": t,
                            },
                            k,
                            "runner",
                            t0 + t,
                        )
                    )
            if rnd.random() < 0.08:
                o = rnd.choice(answers)
                out.append(
                    (
                        "submission",
                        {
                            "objective": o.id,
                            "answer": "guess",
                            "correct": rnd.random() < 0.3,
                            "attempt": 1,
                            "drill_t": t,
                        },
                        k,
                        "trainer",
                        t0 + t,
                    )
                )
            if rnd.random() < 0.01:
                out.append(
                    (
                        "hint",
                        {"objective": "scanner-ip", "index": 0, "cost": 20, "drill_t": t},
                        k,
                        "trainer",
                        t0 + t,
                    )
                )
        t += 15.0
    return out[:n]


def timed(fn, *args, **kw) -> tuple[float, object]:
    t = time.perf_counter()
    r = fn(*args, **kw)
    return time.perf_counter() - t, r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teams", type=int, default=20)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rangectl-bench-"))
    os.environ["RANGECTL_HOME"] = str(tmp / "home")

    from rangectl.plan import plan as make_plan
    from rangectl.scenario.model import Scenario
    from rangectl.scoring import actions
    from rangectl.scoring.engine import compute_board
    from rangectl.scoring.policy import load_policy
    from rangectl.state import RangeState
    from rangectl.store import EventStore

    src = tmp / "bench.yaml"
    src.write_text(json.dumps(SCENARIO))
    scenario = Scenario.model_validate(SCENARIO)
    plan = make_plan(scenario, args.teams)
    policy = load_policy("standard")
    items = synth_events(scenario, plan, args.events)

    # 1. ingest, one transaction per event
    st = RangeState.create("bench", src, {"teams": args.teams, "scenario_path": str(src)})
    store = EventStore(st.db_path)
    secs, _ = timed(lambda: [store.append(k, d, team=tm, actor=a, ts=ts) for k, d, tm, a, ts in items])
    ingest_one = len(items) / secs

    # 2. ingest in batches of 100
    st2 = RangeState.create("bench-batch", src, {"teams": args.teams, "scenario_path": str(src)})
    store2 = EventStore(st2.db_path)
    secs2, _ = timed(lambda: [store2.append_many(items[i : i + 100]) for i in range(0, len(items), 100)])
    ingest_many = len(items) / secs2

    # 3. load, verify, recompute
    load_s, events = timed(store.events)
    verify_s, vres = timed(store.verify)
    assert vres.ok and vres.count == len(items)
    compute_board(scenario, plan, policy, events)  # warm-up
    runs = []
    for _ in range(args.runs):
        s, b = timed(compute_board, scenario, plan, policy, events)
        runs.append(s)
    runs.sort()
    median = statistics.median(runs)
    p99 = runs[min(len(runs) - 1, max(0, int(round(0.99 * len(runs))) - 1))]

    # 4. submissions through the action (drill running: wall start = now - 2h, all injects started)
    st3 = RangeState.create("bench-submit", src, {"teams": args.teams, "scenario_path": str(src)})
    store3 = EventStore(st3.db_path)
    now = time.time()
    store3.append("drill.start", {"wall_start": now - 7200, "time_scale": 1.0}, actor="runner", ts=now - 7200)
    store3.append_many(
        [
            ("inject.start", {"inject": i, "drill_t": 100.0}, k, "runner")
            for i in ("recon", "brute", "exfil")
            for k in range(1, args.teams + 1)
        ]
    )
    rnd = random.Random(3)
    answer_objs = [o.id for o in scenario.objectives if o.answer is not None]
    actions.context(st3)  # load scenario/plan/policy once (cached afterwards)
    sub_s, results = timed(
        lambda: [
            actions.submit(
                st3,
                rnd.randint(1, args.teams),
                rnd.choice(answer_objs),
                rnd.choice(["nmap", "root", "x", "8443"]),
            )
            for _ in range(args.submissions)
        ]
    )
    per_sub = args.submissions / sub_s
    refused = sum(1 for r in results if r.refused)
    end_to_end, _ = timed(actions.board, st)
    store.append("score", {"points": 1, "reason": "bench"}, team=1)
    warm, _ = timed(actions.board, st)  # the record is cached; only the new event is read

    figures = {
        "teams": args.teams,
        "events": len(items),
        "ingest_append_per_s": round(ingest_one),
        "ingest_append_many_per_s": round(ingest_many),
        "submissions_per_s": round(per_sub),
        "submissions_refused": refused,
        "load_events_ms": round(load_s * 1000, 1),
        "verify_ms": round(verify_s * 1000, 1),
        "compute_board_median_ms": round(median * 1000, 2),
        "compute_board_p99_ms": round(p99 * 1000, 2),
        "board_first_call_ms": round(end_to_end * 1000, 1),
        "board_next_call_ms": round(warm * 1000, 1),
        "target_ms": 50,
        "ok": p99 * 1000 < 50,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        rows = [
            ("teams / events", f"{args.teams} / {len(items):,}"),
            ("ingest, EventStore.append", f"{ingest_one:,.0f} events/s"),
            ("ingest, append_many (100/batch)", f"{ingest_many:,.0f} events/s"),
            (
                "submissions, actions.submit",
                f"{per_sub:,.0f} /s ({refused} of {args.submissions} refused: solved or out of attempts)",
            ),
            ("load record, EventStore.events", f"{load_s * 1000:.1f} ms"),
            ("verify (hash chain)", f"{verify_s * 1000:.1f} ms"),
            (f"compute_board, median of {args.runs}", f"{median * 1000:.2f} ms"),
            (
                f"compute_board, p99 of {args.runs}",
                f"{p99 * 1000:.2f} ms  (target < 50 ms: {'ok' if p99 < 0.05 else 'MISSED'})",
            ),
            ("actions.board, first call (load + compute)", f"{end_to_end * 1000:.1f} ms"),
            ("actions.board, next call (1 new event)", f"{warm * 1000:.1f} ms"),
        ]
        w = max(len(a) for a, _ in rows)
        print(f"rangectl scoring bench (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
        for a, b in rows:
            print(f"  {a:<{w}}  {b}")
    import shutil

    for s_ in (store, store2, store3):
        s_.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if p99 < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
