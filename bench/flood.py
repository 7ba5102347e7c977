#!/usr/bin/env python3
"""Bench a refusal flood: one team hammers the team API while the others' latency and the store are measured.

    .venv/bin/python bench/flood.py [--seconds 20] [--connections 32] [--teams 4] [--window 5] [--json]

A temporary range state (no Docker) with N teams and a running drill; the
team API (``create_app`` + uvicorn, as ``serve`` runs it) in its own process
on a free loopback port. Two phases of ``--seconds`` each:

1. baseline: teams 2..N each make ``--other-rate`` requests/s on one
   keep-alive connection (score, objectives, a wrong answer in turn), paced,
   latency counted from the scheduled time;
2. flood: the same, while team 1 opens ``--connections`` connections and
   submits 1000-character answers as fast as the server answers.

The server is then stopped (its refusal summaries written) and the store is
read: team 1's events written during the flood, by kind, and their size.
Store growth per team-hour is the summaries' bytes per window times the
windows in an hour at the production window (60 s), plus the one-off scored
attempts (bounded per drill by the policy's max_attempts, not by time).
``--window`` shortens the summary window so a short run sees several.

Targets: growth under 1 MB per team-hour; the other teams' p99 during the
flood at most 1.5x the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import serve as base  # noqa: E402 - bench/serve.py: the range and the HTTP helpers

PRODUCTION_WINDOW = 60.0


def run_server(name: str, port: int, window: float) -> None:
    import uvicorn

    from rangectl.access import service as svc_mod
    from rangectl.access.api import create_app
    from rangectl.access.service import Settings, TeamService
    from rangectl.state import RangeState

    sys.setswitchinterval(0.001)  # as serve does
    service = TeamService(RangeState.open(name), Settings())
    service.refusals = svc_mod.RefusalLog(service, window=window)
    config = uvicorn.Config(
        create_app(service),
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=15,
        limit_concurrency=1024,
        server_header=False,
        date_header=False,
        loop="uvloop" if _has_uvloop() else "asyncio",
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # SIGTERM is ours
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    server.run()  # until SIGTERM
    service.close()  # the open windows' summaries
    print("closed", flush=True)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401

        return True
    except ImportError:
        return False


async def other_team(team: int, token: str, port: int, stop_at: float, rate: float, lat: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rnd = random.Random(team)
    interval = 1.0 / rate
    next_at = time.monotonic() + rnd.random() * interval
    n = 0
    while time.monotonic() < stop_at:
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        scheduled = next_at
        next_at += interval
        kind = n % 3
        if kind == 0:
            req = ("GET", "/api/v1/teams/me/score", None)
        elif kind == 1:
            req = ("GET", "/api/v1/teams/me/objectives", None)
        else:
            oid = base.OBJECTIVES[(n // 3) % len(base.OBJECTIVES)]
            req = (
                "POST",
                f"/api/v1/teams/me/objectives/{oid}/submissions",
                json.dumps({"answer": f"t{team}-{n}"}).encode(),
            )
        status, _ = await base.request(reader, writer, req[0], req[1], token, req[2])
        lat.append((time.monotonic() - scheduled, status))
        n += 1
    writer.close()


async def flooder(token: str, port: int, stop_at: float, out: Counter) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rnd = random.Random()
    answer = "x" * 1000
    while time.monotonic() < stop_at:
        oid = rnd.choice(base.OBJECTIVES)
        body = json.dumps({"answer": answer}).encode()
        try:
            status, _ = await base.request(
                reader, writer, "POST", f"/api/v1/teams/me/objectives/{oid}/submissions", token, body
            )
        except (ConnectionError, asyncio.IncompleteReadError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        out[status] += 1
    writer.close()


async def phase(tokens: dict[int, str], port: int, seconds: float, rate: float, connections: int) -> dict:
    stop_at = time.monotonic() + seconds
    lat: list = []
    flood: Counter = Counter()
    jobs = [other_team(k, tok, port, stop_at, rate, lat) for k, tok in tokens.items() if k != 1]
    jobs += [flooder(tokens[1], port, stop_at, flood) for _ in range(connections)]
    await asyncio.gather(*jobs)
    lats = [x for x, _ in lat]
    return {
        "other_requests": len(lat),
        "other_status": dict(Counter(s for _, s in lat)),
        "other_p50_ms": round(base.pct(lats, 50), 2),
        "other_p99_ms": round(base.pct(lats, 99), 2),
        "other_max_ms": round(max(lats) * 1000, 2),
        "flood_requests": sum(flood.values()),
        "flood_per_second": round(sum(flood.values()) / seconds, 1),
        "flood_status": dict(flood),
    }


def _files_size(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


def _event_bytes(e) -> int:
    """What one event holds: its columns as stored (the two indexes add about kind + 20 bytes each)."""
    from rangectl.drill.store import canonical_json

    text = canonical_json(e.data)
    return len(text.encode()) + len(e.kind) * 3 + len(e.actor) + 64 * 2 + 8 * 3 + 40


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--connections", type=int, default=32, help="the flooding team's connections")
    ap.add_argument("--teams", type=int, default=4)
    ap.add_argument("--other-rate", type=float, default=20.0, help="requests/s of each other team")
    ap.add_argument("--window", type=float, default=5.0, help="refusal summary window for this run (s)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--server", nargs=3, metavar=("NAME", "PORT", "WINDOW"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.server:
        run_server(args.server[0], int(args.server[1]), float(args.server[2]))
        return 0

    home = tempfile.mkdtemp(prefix="bench-flood-home-")
    os.environ["RANGECTL_HOME"] = home
    name, tokens, _ = base.make_state(args.teams)
    from rangectl.drill.store import EventStore
    from rangectl.state import RangeState

    db = RangeState.open(name).db_path
    port = base.free_port()
    srv = subprocess.Popen(
        [sys.executable, __file__, "--server", name, str(port), str(args.window)],
        env=dict(os.environ, RANGECTL_HOME=home, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        asyncio.run(base.wait_port(port))
        asyncio.run(
            phase(tokens, port, 2.0, args.other_rate, 0)
        )  # warm-up (connections, caches): not counted
        size0 = _files_size(db)
        baseline = asyncio.run(phase(tokens, port, args.seconds, args.other_rate, 0))
        size1 = _files_size(db)
        t_flood = time.time()
        flood = asyncio.run(phase(tokens, port, args.seconds, args.other_rate, args.connections))
        t_end = time.time()
        size2 = _files_size(db)
    finally:
        srv.send_signal(signal.SIGTERM)
        out, _ = srv.communicate(timeout=60)
    closed = "closed" in (out or "")
    store = EventStore(db)
    mine = [e for e in store.events(team=1) if e.ts >= t_flood]
    if os.environ.get("FLOOD_DEBUG"):
        for e in mine:
            print(e.seq, e.kind, {k: v for k, v in e.data.items() if k != "samples"}, file=sys.stderr)
    verify = store.verify()
    store.close()
    by_kind = Counter(e.kind for e in mine)
    bytes_kind: Counter = Counter()
    for e in mine:
        bytes_kind[e.kind] += _event_bytes(e)
    summaries = [e for e in mine if e.kind in ("submission.refused", "api.throttled")]
    windows = max(1.0, (t_end - t_flood) / args.window)
    summary_bytes_per_window = sum(_event_bytes(e) for e in summaries) / windows
    per_hour_summaries = summary_bytes_per_window * 3600 / PRODUCTION_WINDOW
    one_off = bytes_kind["submission"]
    counted = sum(int(e.data.get("count", 0)) for e in summaries)
    ratio = flood["other_p99_ms"] / baseline["other_p99_ms"] if baseline["other_p99_ms"] else None
    res = {
        "seconds_per_phase": args.seconds,
        "connections": args.connections,
        "teams": args.teams,
        "window_s": args.window,
        "baseline": baseline,
        "flood": flood,
        "other_p99_ratio": round(ratio, 2) if ratio else None,
        "team1_events_during_flood": dict(by_kind),
        "team1_bytes_during_flood": dict(bytes_kind),
        "refused_or_throttled_counted": counted,
        "summary_bytes_per_window": round(summary_bytes_per_window),
        "growth_per_team_hour_bytes": round(per_hour_summaries + one_off),
        "growth_per_team_hour_summaries_bytes": round(per_hour_summaries),
        "one_off_scored_bytes": one_off,
        "file_growth_baseline_bytes": size1 - size0,
        "file_growth_flood_bytes": size2 - size1,
        "server_flushed": closed,
        "chain_ok": verify.ok,
    }
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(
            f"flood: team 1, {args.connections} connections, {flood['flood_requests']} requests in {args.seconds:g} s "
            f"({flood['flood_per_second']}/s) {flood['flood_status']}"
        )
        print(
            f"other teams p99: {baseline['other_p99_ms']} ms without, {flood['other_p99_ms']} ms with the flood "
            f"(x{res['other_p99_ratio']}); p50 {baseline['other_p50_ms']} / {flood['other_p50_ms']} ms; "
            f"status {flood['other_status']}"
        )
        print(
            f"team 1's events during the flood: {dict(by_kind)} ({sum(bytes_kind.values())} bytes) "
            f"for {counted} refused/throttled requests counted"
        )
        print(
            f"store growth per team-hour: {res['growth_per_team_hour_bytes']} bytes "
            f"({res['growth_per_team_hour_summaries_bytes']} of summaries at a {PRODUCTION_WINDOW:g} s window "
            f"+ {one_off} one-off scored attempts); files grew {size1 - size0} bytes without, "
            f"{size2 - size1} with the flood; chain {'ok' if verify.ok else 'BROKEN'}"
        )
        ok_growth = res["growth_per_team_hour_bytes"] < 1_000_000
        ok_lat = ratio is not None and ratio <= 1.5
        print(
            f"targets: growth < 1 MB/team-hour {'met' if ok_growth else 'NOT met'}; "
            f"other teams' p99 <= 1.5x {'met' if ok_lat else 'NOT met'}"
        )
    return 0 if verify.ok and closed else 1


if __name__ == "__main__":
    sys.exit(main())
