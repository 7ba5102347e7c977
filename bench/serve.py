#!/usr/bin/env python3
"""Bench the team API: 20 concurrent team clients submitting answers on loopback.

    .venv/bin/python bench/serve.py [--seconds 30] [--teams 20] [--offered 600] [--rate 6 --burst 3] [--json]
    .venv/bin/python bench/serve.py --offered 0      # saturation: every client as fast as it can

A temporary range state (no Docker) with N teams and a running drill; the
server is ``rangectl.access.server.serve`` with ``--no-workstations`` in its
own process (as in production), bound to a free loopback port. Each team
client keeps one HTTP/1.1 keep-alive connection and submits, cycling over the
open answer objectives with unique wrong answers and, now and then, the right
one: paced so that all clients together offer ``--offered`` submissions/s
(latency counted from each request's scheduled time, so a slow answer also
charges the requests queued behind it), or with ``--offered 0`` each as fast
as its answers come back (closed loop: the saturation throughput). Clients
start at random moments of the first 2 s.

Reports submissions/s, latency p50/p90/p99/max, the status mix (200 scored,
409 refused by the drill rules, 429 rate limited), and then checks the event
store: every submission acknowledged with a seq is there exactly once (by seq
and by its unique answer text), nothing extra, every one acknowledged without
a seq (rate limited, or refused for an objective already solved or out of
attempts) is counted in a ``submission.refused`` summary, and the hash chain
verifies. The store runs with ``synchronous=FULL`` (every commit fsynced).

``--rate 0`` turns the rate limiter off, so every submission goes through the
scoring module's ``submit`` (attempts past the policy's max are refused there).
``--attempts N`` sets the policy's max_attempts (0: no limit) and ``--right P``
the share of right answers: ``--rate 0 --attempts 0 --right 0`` scores every
submission (none is refused for good), the scoring path at full load.
``--profile FILE`` writes a cProfile of the server's event-loop thread.
Targets: >= 500 submissions/s at p99 < 50 ms with the default limits; with ``--rate 0``
>= 2,000 submissions/s after the opening burst (every client started) at p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OBJECTIVES = ["scanner-ip", "c2-domain", "malware-hash", "victim-user"]
START_SPREAD = 2.0  # seconds


def scenario(teams: int) -> dict:
    return {
        "rangectl": 1,
        "name": "bench-serve",
        "title": "Team API bench",
        "duration": "2h",
        "networks": {"lan": {"subnet": "10.90.0.0/24"}},
        "nodes": {
            "soc": {"image": "workstation", "role": "blue", "interfaces": {"lan": "10.90.0.5"}},
            "web": {"image": "web", "role": "target", "interfaces": {"lan": "10.90.0.10"}},
            "bad": {"image": "attacker", "role": "red", "interfaces": {"lan": "10.90.0.66"}},
        },
        "injects": [
            {"id": "recon", "at": "0s", "traffic": {"kind": "portscan", "from": "bad", "target": "web"}}
        ],
        "objectives": [
            {
                "id": "scanner-ip",
                "category": "detection",
                "after": "recon",
                "points": 100,
                "answer": {"ip_of": "bad"},
            },
            {"id": "c2-domain", "category": "analysis", "points": 50, "answer": {"value": "evil.example"}},
            {
                "id": "malware-hash",
                "category": "analysis",
                "points": 50,
                "answer": {"regex": "[0-9a-f]{8}-ok"},
            },
            {
                "id": "victim-user",
                "category": "analysis",
                "points": 30,
                "answer": {"one_of": ["alice", "bob"]},
            },
        ],
    }


def make_state(
    teams: int, attempts: int | None = None
) -> tuple[str, dict[int, str], dict[int, dict[str, str]]]:
    from ruamel.yaml import YAML

    from rangectl.access import credentials as creds
    from rangectl.state import RangeState
    from rangectl.store import EventStore

    d = Path(tempfile.mkdtemp(prefix="bench-serve-scn-"))
    f = d / "bench-serve.yaml"
    with f.open("w") as fh:
        sc = scenario(teams)
        if attempts is not None:  # the standard policy with another max_attempts (0: no limit)
            (d / "scoring").mkdir()
            text = (ROOT / "scoring" / "standard.yaml").read_text()
            limit = "null" if attempts == 0 else str(attempts)
            text = re.sub(r"(?m)^name: standard$", "name: bench", text)
            text = re.sub(r"(?m)^max_attempts: .*$", f"max_attempts: {limit}", text)
            (d / "scoring" / "bench.yaml").write_text(text)
            sc["scoring"] = {"policy": "bench"}
        YAML().dump(sc, fh)
    st = RangeState.create(
        "bench-serve", f, {"scenario": "bench-serve", "scenario_path": str(f), "teams": teams}
    )
    creds.ensure_credentials(st, teams)
    store = EventStore(st.db_path)
    store.append(
        "drill.start",
        {"wall_start": time.time(), "time_scale": 1.0, "teams": list(range(1, teams + 1)), "end": 7200},
        actor="runner",
    )
    plan = st.plan()
    right = {}
    for k in range(1, teams + 1):
        store.append(
            "inject.start",
            {"inject": "recon", "due_t": 0, "drill_t": 0, "resumed": False, "kind": "traffic"},
            team=k,
            actor="runner",
        )
        right[k] = {
            "scanner-ip": str(plan.team(k).ip_of("bad")),
            "c2-domain": "evil.example",
            "malware-hash": "deadbeef-ok",
            "victim-user": "alice",
        }
    store.close()
    tokens = {
        k: creds.read_env_file(creds.team_files(st, k).env)["RANGECTL_TOKEN"] for k in range(1, teams + 1)
    }
    return st.name, tokens, right


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_server(name: str, port: int, rate: float, burst: int, profile: str = "") -> None:
    from rangectl.access.ratelimit import RateLimit
    from rangectl.access.server import ServeOptions, serve
    from rangectl.state import RangeState

    if profile:  # cProfile of the event loop's thread, written on SIGUSR1 (the bench sends it at the end)
        import cProfile
        import signal

        prof = cProfile.Profile()

        def dump(*_: object) -> None:
            prof.disable()
            prof.dump_stats(profile)

        signal.signal(signal.SIGUSR1, dump)
        prof.enable()
    opts = ServeOptions(bind=f"127.0.0.1:{port}", workstations=False, rate=RateLimit(rate, burst))
    serve(RangeState.open(name), opts, note=lambda text: print(text, flush=True))


async def wait_port(port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit("server did not start")


async def request(reader, writer, method: str, path: str, token: str, body: bytes | None) -> tuple[int, dict]:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + (body or b""))
    await writer.drain()
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for ln in lines[1:]:
        if ln.lower().startswith("content-length:"):
            length = int(ln.split(":", 1)[1])
    payload = await reader.readexactly(length) if length else b"{}"
    return status, json.loads(payload)


async def team_client(
    team: int, token: str, right: dict[str, str], port: int, stop_at: float, out: dict, interval: float
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rnd = random.Random(team * 7919)
    n = 0
    # teams do not act in lockstep: each starts at a random moment of the first START_SPREAD seconds
    # (in lockstep, their rate-limit buckets refill together and N scored answers queue N x ~2 ms)
    next_at = time.monotonic() + rnd.random() * START_SPREAD
    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    while time.monotonic() < stop_at:
        if interval:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
        oid = OBJECTIVES[n % len(OBJECTIVES)]
        answer = right[oid] if rnd.random() < out["right_share"] else f"t{team}-n{n}-wrong"
        answer = f"{answer}" if answer == right[oid] else answer
        body = json.dumps({"answer": answer}).encode()
        t0 = time.perf_counter()
        if interval:  # latency counts from the scheduled send time (no coordinated omission)
            t0 -= max(0.0, time.monotonic() - (next_at - interval))
        status, payload = await request(
            reader, writer, "POST", f"/api/v1/teams/me/objectives/{oid}/submissions", token, body
        )
        lat = time.perf_counter() - t0
        out["lat"].append(lat)
        out["by_status"].setdefault(status, []).append(lat)
        if time.monotonic() >= out["steady_from"]:
            out["steady"].append(lat)
        out["status"][status] += 1
        if status in (200, 409, 429):
            out["acks"].append((team, payload.get("seq"), answer))
        else:
            out["errors"].append((status, payload))
        n += 1
    writer.close()


async def clients(
    tokens: dict[int, str],
    right: dict,
    port: int,
    seconds: float,
    total_rate: float = 0,
    right_share: float = 0.02,
) -> dict:
    await wait_port(port)
    out = {
        "lat": [],
        "by_status": {},
        "steady": [],
        "status": Counter(),
        "acks": [],
        "errors": [],
        "steady_from": 0.0,
        "right_share": right_share,
    }
    # warm-up: one read per team (not counted)
    for tok in tokens.values():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await request(r, w, "GET", "/api/v1/whoami", tok, None)
        w.close()
    t0 = time.monotonic()
    stop_at = t0 + seconds
    out["steady_from"] = t0 + opening(seconds)
    interval = len(tokens) / total_rate if total_rate else 0.0

    async def lag_monitor() -> None:  # the client's own hiccups, so they are not blamed on the server
        lags = out["client_lag"]
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    out["client_lag"] = []
    await asyncio.gather(
        lag_monitor(),
        *(team_client(k, tok, right[k], port, stop_at, out, interval) for k, tok in tokens.items()),
    )
    out["elapsed"] = time.monotonic() - t0
    return out


def opening(seconds: float) -> float:
    """Seconds from the start that count as the opening burst (every client has started after it)."""
    return min(5.0, seconds / 3)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--teams", type=int, default=20)
    ap.add_argument("--rate", type=float, default=6.0, help="per team and objective per minute (0: off)")
    ap.add_argument("--burst", type=int, default=3)
    ap.add_argument(
        "--offered",
        type=float,
        default=600.0,
        help="offered load: total submissions/s, paced over the teams (0: each client as fast as it can)",
    )
    ap.add_argument(
        "--attempts",
        type=int,
        default=None,
        help="the policy's max_attempts per objective and team (0: no limit; default: the standard 5)",
    )
    ap.add_argument(
        "--right", type=float, default=0.02, help="share of answers that are right (default 0.02)"
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--profile", default="", metavar="FILE", help="write a cProfile of the server's event-loop thread"
    )
    ap.add_argument("--server", nargs=4, metavar=("NAME", "PORT", "RATE", "BURST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.server:
        run_server(
            args.server[0], int(args.server[1]), float(args.server[2]), int(args.server[3]), args.profile
        )
        return 0

    home = tempfile.mkdtemp(prefix="bench-serve-home-")
    os.environ["RANGECTL_HOME"] = home
    name, tokens, right = make_state(args.teams, args.attempts)
    port = free_port()
    srv = subprocess.Popen(
        [sys.executable, __file__, "--server", name, str(port), str(args.rate), str(args.burst)]
        + (["--profile", str(Path(args.profile).resolve())] if args.profile else []),
        env=dict(os.environ, RANGECTL_HOME=home, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
    )
    try:
        out = asyncio.run(clients(tokens, right, port, args.seconds, args.offered, args.right))
    finally:
        if args.profile:
            srv.send_signal(signal.SIGUSR1)
            time.sleep(2)
        srv.terminate()
        srv.wait(20)

    from rangectl.state import RangeState
    from rangectl.store import EventStore

    store = EventStore(RangeState.open(name).db_path)
    subs = store.events(kind="submission")
    summaries = store.events(kind="submission.refused")
    verify = store.verify()
    sync = store._conn.execute("PRAGMA synchronous").fetchone()[0]
    store.close()
    summarised = sum(int(e.data.get("count", 0)) for e in summaries)
    unseq = sum(1 for _, s, _ in out["acks"] if s is None)
    acked_seqs = [s for _, s, _ in out["acks"] if s is not None]
    by_seq = {e.seq: e for e in subs}
    lost = [s for s in acked_seqs if s not in by_seq]
    dup_acks = len(acked_seqs) - len(set(acked_seqs))
    extra = len(set(by_seq) - set(acked_seqs))
    mismatch = sum(
        1
        for team, s, ans in out["acks"]
        if s is not None and s in by_seq and (by_seq[s].team != team or by_seq[s].data["answer"] != ans)
    )
    answers = Counter((e.team, e.data["answer"]) for e in subs if "wrong" in str(e.data["answer"]))
    dup_answers = sum(1 for v in answers.values() if v > 1)
    refused = Counter(
        "already solved"
        if "already solved" in str(e.data.get("refused"))
        else (e.data.get("refused") or "scored").split(":")[0].split(" (")[0]
        for e in subs
    )
    n = len(out["lat"])
    res = {
        "teams": args.teams,
        "seconds": round(out["elapsed"], 2),
        "rate_limit": "off" if args.rate == 0 else f"{args.rate:g}/min burst {args.burst}",
        "offered": args.offered or "max (closed loop)",
        "submissions": n,
        "per_second": round(n / out["elapsed"], 1),
        "p50_ms": round(pct(out["lat"], 50), 2),
        "p90_ms": round(pct(out["lat"], 90), 2),
        "p99_ms": round(pct(out["lat"], 99), 2),
        "max_ms": round(max(out["lat"]) * 1000, 2),
        "client_loop_lag_max_ms": round(max(out["client_lag"], default=0) * 1000, 1),
        # answered after the opening burst, per second of that window (every client has started by then)
        "steady_per_second": round(len(out["steady"]) / max(1e-9, out["elapsed"] - opening(args.seconds)), 1),
        "steady_p50_ms": round(pct(out["steady"], 50), 2) if out["steady"] else None,
        "steady_p99_ms": round(pct(out["steady"], 99), 2) if out["steady"] else None,
        "status": dict(sorted(out["status"].items())),
        "p99_ms_by_status": {k: round(pct(v, 99), 2) for k, v in sorted(out["by_status"].items())},
        "p50_ms_by_status": {k: round(pct(v, 50), 2) for k, v in sorted(out["by_status"].items())},
        "store_submissions": len(subs),
        "store_outcomes": dict(refused.most_common()),
        "refusal_summaries": len(summaries),
        "summarised_attempts": summarised,
        "acknowledged_without_seq": unseq,
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, sync),
        "lost": len(lost),
        "duplicated": dup_acks + dup_answers,
        "unacknowledged_in_store": extra,
        "mismatched": mismatch,
        "chain_ok": bool(verify.ok),
        "errors": out["errors"][:3],
    }
    ok = (
        not lost
        and not res["duplicated"]
        and not extra
        and not mismatch
        and verify.ok
        and not out["errors"]
        and len(subs) + unseq == n
        and summarised == unseq
    )
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(
            f"{n} submissions from {args.teams} teams in {res['seconds']} s: {res['per_second']}/s "
            f"(offered: {res['offered']}; rate limit {res['rate_limit']})"
        )
        print(
            f"latency p50 {res['p50_ms']} ms, p90 {res['p90_ms']} ms, p99 {res['p99_ms']} ms, max {res['max_ms']} ms"
        )
        print(
            f"after the opening burst (from t={opening(args.seconds):g} s): {res['steady_per_second']}/s, "
            f"p50 {res['steady_p50_ms']} ms, "
            f"p99 {res['steady_p99_ms']} ms"
        )
        print(f"by status: p50 {res['p50_ms_by_status']} ms, p99 {res['p99_ms_by_status']} ms")
        print(f"client loop lag max {res['client_loop_lag_max_ms']} ms (the bench's own hiccups)")
        print(
            f"status {res['status']}; store ({res['synchronous']} sync): {len(subs)} submission events "
            f"{res['store_outcomes']}; {summarised} refused attempts in {len(summaries)} summaries "
            f"(acknowledged without a seq: {unseq})"
        )
        print(
            f"lost {res['lost']}, duplicated {res['duplicated']}, unacknowledged {extra}, mismatched {mismatch}, "
            f"chain {'ok' if verify.ok else 'BROKEN'}"
        )
        # with the rate limiter: 500/s; without it (every answer through the scoring path): 2,000/s, steady
        floor = 2000 if args.rate == 0 else 500
        rate = res["steady_per_second"] if args.rate == 0 else res["per_second"]
        target = rate >= floor and res["p99_ms"] < 50
        print(
            f"target >= {floor}/s{' after the opening burst' if args.rate == 0 else ''} at p99 < 50 ms: "
            f"{'met' if target else 'NOT met'}; record: {'complete' if ok else 'BAD'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
