#!/usr/bin/env python3
"""Bench a refusal flood: one team hammers the team API while the others' latency and the store are measured.

    .venv/bin/python bench/flood.py [--seconds 20] [--segment 2] [--connections 32] [--teams 4] [--window 5] [--json]

A temporary range state (no Docker) with N teams and a running drill; the
team API (``create_app`` + uvicorn, as ``serve`` runs it) in its own process
on a free loopback port. Teams 2..N each make ``--other-rate`` requests/s on
one keep-alive connection (score, objectives, a wrong answer in turn), paced,
latency counted from the scheduled time. Team 1 floods: ``--connections``
connections submitting 1000-character answers as fast as the server answers,
switched on and off every ``--segment`` seconds for ``--seconds`` on and as
many off. The other teams' latencies are split by whether the flood was on
when the request was due, so the machine's own noise (other jobs on shared
cores) falls on both halves alike.

The server is then stopped (its refusal summaries written) and the store is
read: team 1's events written during the run, by kind, and their size.
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

    from rangectl.access.api import create_app
    from rangectl.access.refusals import RefusalLog
    from rangectl.access.service import Settings, TeamService
    from rangectl.state import RangeState

    sys.setswitchinterval(0.001)  # as serve does
    service = TeamService(RangeState.open(name), Settings())
    service.refusals = RefusalLog(service, window=window)
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


def flood_on(t0: float, segment: float, now: float | None = None) -> bool:
    """The schedule both processes follow (wall clock): off, on, off, on ... every ``segment`` s from t0."""
    now = time.time() if now is None else now
    return now >= t0 and int((now - t0) // segment) % 2 == 1


async def other_team(
    team: int, token: str, port: int, t0: float, stop: float, segment: float, rate: float, lat: list
) -> None:
    """One keep-alive connection, ``rate`` requests/s, paced; each latency tagged flood on/off."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rnd = random.Random(team)
    interval = 1.0 / rate
    await asyncio.sleep(max(0.0, t0 - time.time()) + rnd.random() * interval)
    next_at = time.monotonic()
    n = 0
    while time.time() < stop:
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        scheduled = next_at
        on = flood_on(t0, segment)
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
        # latency from the scheduled time (no coordinated omission)
        lat.append((time.monotonic() - scheduled, status, on, time.time() - t0))
        n += 1
    writer.close()


async def flooder(token: str, port: int, t0: float, stop: float, segment: float, out: Counter) -> None:
    """One of team 1's connections: 1000-character answers as fast as the server answers, while on."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rnd = random.Random()
    body = json.dumps({"answer": "x" * 1000}).encode()
    while time.time() < stop:
        if not flood_on(t0, segment):
            await asyncio.sleep(0.005)
            continue
        oid = rnd.choice(base.OBJECTIVES)
        try:
            status, _ = await base.request(
                reader, writer, "POST", f"/api/v1/teams/me/objectives/{oid}/submissions", token, body
            )
        except (ConnectionError, asyncio.IncompleteReadError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        out[status] += 1
    writer.close()


def run_flooder(port: int, token: str, connections: int, t0: float, stop: float, segment: float) -> None:
    """Team 1's flood, in a process of its own (as an attacker's machine would be): the other
    teams' client loop never waits for it."""

    async def go() -> Counter:
        out: Counter = Counter()
        await asyncio.gather(*(flooder(token, port, t0, stop, segment, out) for _ in range(connections)))
        return out

    print(json.dumps({str(k): v for k, v in asyncio.run(go()).items()}), flush=True)


async def others(
    tokens: dict[int, str], port: int, t0: float, stop: float, segment: float, rate: float
) -> list:
    lat: list = []
    await asyncio.gather(
        *(other_team(k, tok, port, t0, stop, segment, rate, lat) for k, tok in tokens.items() if k != 1)
    )
    return lat


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_sampler(pid: int, t0: float, stop: float, segment: float, out: dict) -> None:
    """The server's CPU time, credited to flood on or off (sampled every 0.1 s)."""
    last = _cpu_seconds(pid)
    while time.time() < stop:
        await asyncio.sleep(0.1)
        now = _cpu_seconds(pid)
        if time.time() >= t0:
            key = "on" if flood_on(t0, segment, time.time() - 0.05) else "off"
            out[key] = out.get(key, 0.0) + now - last
        last = now


def interleaved(
    tokens: dict[int, str],
    port: int,
    seconds: float,
    segment: float,
    rate: float,
    connections: int,
    server_pid: int | None = None,
) -> dict:
    """``seconds`` with the flood off and ``seconds`` with it on, alternating every ``segment``
    seconds, so the machine's own noise falls on both alike."""
    t0 = time.time() + 1.0
    stop = t0 + 2 * seconds
    fl = None
    if connections:
        argv = [str(port), tokens[1], str(connections), repr(t0), repr(stop), repr(segment)]
        fl = subprocess.Popen(
            [sys.executable, __file__, "--flooder", *argv],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            text=True,
        )
    cpu: dict = {}

    async def run() -> list:
        jobs = [others(tokens, port, t0, stop, segment, rate)]
        if server_pid is not None:
            jobs.append(cpu_sampler(server_pid, t0, stop, segment, cpu))
        return (await asyncio.gather(*jobs))[0]

    lat = asyncio.run(run())
    flood: dict = {}
    if fl is not None:
        out, _ = fl.communicate(timeout=60)
        flood = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}

    def stats(on: bool) -> dict:
        xs = [x for x, _, f, _ in lat if f == on]
        return {
            "other_requests": len(xs),
            "other_status": dict(Counter(str(st) for _, st, f, _ in lat if f == on)),
            "other_p50_ms": round(base.pct(xs, 50), 2),
            "other_p99_ms": round(base.pct(xs, 99), 2),
            "other_max_ms": round(max(xs) * 1000, 2),
        }

    if os.environ.get("FLOOD_DEBUG"):
        worst = sorted(lat, reverse=True)[:20]
        print([(round(x * 1000, 1), st, f, round(t, 2)) for x, st, f, t in worst], file=sys.stderr)
    on = stats(True)
    on.update(
        flood_requests=sum(flood.values()),
        flood_per_second=round(sum(flood.values()) / seconds, 1),
        flood_status=flood,
    )
    off = stats(False)
    if cpu:
        off["server_cpu_pct"] = round(100 * cpu.get("off", 0.0) / seconds, 1)
        on["server_cpu_pct"] = round(100 * cpu.get("on", 0.0) / seconds, 1)
    return {"baseline": off, "flood": on}


def _files_size(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


def _event_bytes(e) -> int:
    """What one event holds: its columns as stored (the two indexes add about kind + 20 bytes each)."""
    from rangectl.store import canonical_json

    text = canonical_json(e.data)
    return len(text.encode()) + len(e.kind) * 3 + len(e.actor) + 64 * 2 + 8 * 3 + 40


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds with the flood on (and as many off)")
    ap.add_argument("--segment", type=float, default=2.0, help="the flood goes on and off every SEGMENT s")
    ap.add_argument("--connections", type=int, default=32, help="the flooding team's connections")
    ap.add_argument("--teams", type=int, default=4)
    ap.add_argument("--other-rate", type=float, default=20.0, help="requests/s of each other team")
    ap.add_argument("--window", type=float, default=5.0, help="refusal summary window for this run (s)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--server", nargs=3, metavar=("NAME", "PORT", "WINDOW"), help=argparse.SUPPRESS)
    ap.add_argument("--flooder", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.server:
        run_server(args.server[0], int(args.server[1]), float(args.server[2]))
        return 0
    if args.flooder:
        port, token, conns, t0, stop, segment = args.flooder
        run_flooder(int(port), token, int(conns), float(t0), float(stop), float(segment))
        return 0

    home = tempfile.mkdtemp(prefix="bench-flood-home-")
    os.environ["RANGECTL_HOME"] = home
    name, tokens, _ = base.make_state(args.teams)
    from rangectl.state import RangeState
    from rangectl.store import EventStore

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
        interleaved(tokens, port, 1.0, 1.0, args.other_rate, 0)  # warm-up: not counted
        size0 = _files_size(db)
        t_flood = time.time()
        lat = interleaved(
            tokens, port, args.seconds, args.segment, args.other_rate, args.connections, server_pid=srv.pid
        )
        size1 = _files_size(db)
        baseline, flood = lat["baseline"], lat["flood"]
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
    # the windows the flood was in (a summary names its window by its first refusal)
    windows = max(1, len({int(e.data["first_ts"] // args.window) for e in summaries}))
    summary_bytes_per_window = sum(_event_bytes(e) for e in summaries) / windows
    per_hour_summaries = summary_bytes_per_window * 3600 / PRODUCTION_WINDOW
    one_off = bytes_kind["submission"]
    counted = sum(int(e.data.get("count", 0)) for e in summaries)
    ratio = flood["other_p99_ms"] / baseline["other_p99_ms"] if baseline["other_p99_ms"] else None
    res = {
        "seconds_flood_on": args.seconds,
        "segment_s": args.segment,
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
        "file_growth_bytes": size1 - size0,
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
            f"other teams p99: {baseline['other_p99_ms']} ms with the flood off, {flood['other_p99_ms']} ms on "
            f"(x{res['other_p99_ratio']}); p50 {baseline['other_p50_ms']} / {flood['other_p50_ms']} ms; "
            f"status {flood['other_status']}"
        )
        print(
            f"server CPU: {baseline.get('server_cpu_pct')}% of a core with the flood off, "
            f"{flood.get('server_cpu_pct')}% on"
        )
        print(
            f"team 1's events during the flood: {dict(by_kind)} ({sum(bytes_kind.values())} bytes) "
            f"for {counted} refused/throttled requests counted"
        )
        print(
            f"store growth per team-hour: {res['growth_per_team_hour_bytes']} bytes "
            f"({res['growth_per_team_hour_summaries_bytes']} of summaries at a {PRODUCTION_WINDOW:g} s window "
            f"+ {one_off} one-off scored attempts); range.db + WAL grew {size1 - size0} bytes in the run; "
            f"chain {'ok' if verify.ok else 'BROKEN'}"
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
