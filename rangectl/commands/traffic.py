"""Traffic commands: ``traffic list``, ``inject`` and ``replay``.

``app`` is the ``rangectl traffic`` group; ``inject`` and ``replay`` are plain
functions that rangectl/commands/__init__.py registers as top-level commands.
The work is in :mod:`rangectl.drill.inject` and :mod:`rangectl.traffic`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from rangectl.errors import NotFound, RangeError, UsageError

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

app = typer.Typer(help="Attack traffic generators (see docs/traffic.md).", no_args_is_help=True)

RANGE = typer.Argument(..., metavar="RANGE", help="The range's name (see `rangectl ls`).")


# --- traffic list --------------------------------------------------------------------------


def _short(v: Any, width: int = 36) -> str:
    if v is None:
        return "-"
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("list")
def list_(
    kind: str | None = typer.Argument(None, metavar="[KIND]", help="Show only this generator."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (every parameter, full defaults)."),
) -> None:
    """List the traffic generators with their parameters, defaults and limits."""
    from rangectl.traffic import describe

    gens = describe()
    if kind is not None:
        gens = [g for g in gens if g["kind"] == kind]
        if not gens:
            raise UsageError(f"no traffic generator '{kind}' (known: {', '.join(g['kind'] for g in describe())})")
    if json_out:
        print(json.dumps(gens, indent=2, default=str))
        return
    for g in gens:
        target = "needs a target" if g["needs_target"] else "no target (map in the capture)"
        table = Table(title=f"{g['kind']} · {g['level']} · {target}", title_justify="left", caption=g["summary"],
                      caption_justify="left")  # fmt: skip
        for col in ("parameter", "type", "default", "limits", "description"):
            table.add_column(col, overflow="fold")
        for p in g["params"]:
            default = "(required)" if p["required"] else _short(p["default"])
            table.add_row(p["name"], p["type"], default, p["limits"] or "-", p["description"])
        console.print(table)


# --- shared -------------------------------------------------------------------------------------


def _node_ip(node: str | None, ip: str | None) -> str:
    if node and ip:
        return f"{node} {ip}"
    return node or ip or "-"


def _summary(t: dict[str, Any]) -> str:
    """The generator's own headline numbers, one short line."""
    d = t.get("details") or {}
    k = t.get("kind")
    if k == "portscan":
        return f"{d.get('method')} scan, {d.get('ports_probed')} ports: open {d.get('open')}"
    if k == "synflood":
        spoof = f", forged from {d['spoofed_from']}" if d.get("spoofed_from") else ""
        return f"port {d.get('port')}, {d.get('rate_achieved')} pps{spoof}"
    if k == "http":
        return f"{d.get('requests_sent')} requests {d.get('by_attack')}, statuses {d.get('statuses')}"
    if k == "bruteforce":
        ok = d.get("successes") or []
        hit = f", accepted {ok[0]['username']}/{ok[0]['password']}" if ok else ""
        return f"{d.get('service')} :{d.get('port')}, {d.get('attempts')} attempts{hit}"
    if k == "dns-exfil":
        return f"{d.get('queries_sent')} queries to *.{d.get('domain')}, {d.get('data_bytes')} bytes, answered {d.get('answered')}"
    if k == "beacon":
        return f"{d.get('checkins_sent')} {d.get('protocol')} check-ins, id {d.get('beacon_id')}"
    if k == "phishing":
        return f"{d.get('messages_sent')} message(s), delivered {d.get('delivered')}, link {d.get('link')}"
    if k == "pcap":
        return (
            f"{Path(str(d.get('file', ''))).name}: {d.get('frames_per_loop')} frames x {d.get('loops')}, "
            f"{d.get('timing')}, {d.get('pps_achieved')} pps, map {d.get('map')}"
        )
    return ""


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("team", "kind", "from", "to", "started (UTC)", "secs", "sent pkts", "bytes", "seen at target", "stopped"):
        table.add_column(col, overflow="fold", justify="right" if col in ("secs", "sent pkts", "bytes", "seen at target") else "left")
    for t in rows:
        seen = t.get("seen_on_target")
        table.add_row(
            str(t["team"]),
            str(t["kind"]),
            _node_ip(t.get("src_node"), t.get("src_ip")),
            _node_ip(t.get("dst_node"), t.get("dst_ip")),
            str(t["started"])[11:23],
            f"{t['seconds']:.2f}",
            str(t["packets"]),
            str(t["bytes"]),
            "-" if seen is None else str(seen),
            str(t["stopped"]),
        )
    return table


def _print(title: str, rows: list[dict[str, Any]], recorded: list[int]) -> None:
    if not rows:
        return
    console.print(_table(title, rows))
    for t in rows:
        line = _summary(t)
        if line:
            console.print(f"team {t['team']}: {line}", markup=False)
        for node, s in (t.get("seen") or {}).items():
            if s.get("error"):
                console.print(f"team {t['team']}: arrivals at {node} not counted: {s['error']}", markup=False)
    console.print(f"ground truth recorded in the range's store (events {', '.join(map(str, recorded))})")


def _open(range_name: str):
    from rangectl import backend as backends
    from rangectl.state import RangeState

    state = RangeState.open(range_name)
    return state, state.scenario(), state.plan(), backends.for_range(state)


def _finish(results: list[dict[str, Any]], failures: list[tuple[int, RangeError]], json_out: bool, title: str) -> None:
    rows = [r["truth"] for r in results]
    if json_out:
        out = {
            "runs": [{"team": r["team"], "event_seq": r["seq"], "ground_truth": r["truth"]} for r in results],
            "errors": [{"team": t, "error": str(e), "exit_code": e.exit_code} for t, e in failures],
        }
        print(json.dumps(out, indent=2, default=str))
    else:
        _print(title, rows, [r["seq"] for r in results])
        for t, e in failures:
            err.print(f"[red]error:[/red] team {t}: {e}", soft_wrap=True)
    if failures:
        raise typer.Exit(failures[0][1].exit_code)


# --- inject -------------------------------------------------------------------------------------


def inject(
    range_name: str = RANGE,
    inject_id: str = typer.Argument(..., metavar="INJECT_ID", help="An inject of the range's scenario (traffic or message)."),
    team: list[int] = typer.Option(None, "--team", "-t", min=1, help="Team to run it for (repeatable)."),
    all_teams: bool = typer.Option(False, "--all-teams", help="Run it for every team, one after another."),
    json_out: bool = typer.Option(False, "--json", help="Print the ground truth as JSON."),
) -> None:
    """Run one inject of the scenario now: traffic from the team's red node (ground truth recorded
    and printed), or a message delivered to the team.

    With one team the team is implied; with several, give --team K (repeatable)
    or --all-teams. A traffic run is recorded in the range's store as an
    `inject.done` event, a message as a `message` event (actor trainer,
    manual: true; the drill's own run of the inject still happens on time).
    Exit 1 when a run fails or is refused, 4 for an unknown range, inject, node or team.
    """
    from rangectl.drill.inject import record, run_traffic_inject, team_plan

    if team and all_teams:
        raise UsageError("give --team or --all-teams, not both")
    state, scenario, plan, backend = _open(range_name)
    inj = next((i for i in scenario.injects if i.id == inject_id), None)
    if inj is None:
        known = ", ".join(i.id for i in scenario.injects) or "none"
        raise NotFound(f"scenario '{scenario.name}' has no inject '{inject_id}' (injects: {known})")
    n = len(plan.teams)
    if all_teams:
        teams = [t.team for t in plan.teams]
    elif team:
        teams = list(dict.fromkeys(team))
        for k in teams:
            team_plan(plan, k, range_name)
    elif n == 1:
        teams = [plan.teams[0].team]
    else:
        raise UsageError(f"range '{range_name}' has {n} teams: give --team K (repeatable) or --all-teams")
    if inj.traffic is None:
        _deliver_message(state, inj, teams, json_out)
        return

    results: list[dict[str, Any]] = []
    failures: list[tuple[int, RangeError]] = []
    for k in teams:
        try:
            truth = run_traffic_inject(state, scenario, plan, backend, k, inj)
        except RangeError as exc:
            if len(teams) == 1:
                raise
            failures.append((k, exc))
            continue
        ev = record(state.db_path, k, truth)
        results.append({"team": k, "seq": ev.seq, "truth": truth})
    tr = inj.traffic
    title = f"inject {inj.id} · {tr.kind} from {tr.from_}" + (f" at {tr.target}" if tr.target else "")
    _finish(results, failures, json_out, title)


def _deliver_message(state: Any, inj: Any, teams: list[int], json_out: bool) -> None:
    from rangectl.drill.runner import clock_from_events
    from rangectl.drill.wiring import record_message
    from rangectl.store import EventStore

    store = EventStore(state.db_path)
    drill_t = clock_from_events(list(store.events(kind="drill.*"))).drill_t()
    plan = state.plan()
    seqs = [
        record_message(store, inj, k, drill_t, actor="trainer", manual=True, values=plan.team(k).values).seq
        for k in teams
    ]
    if json_out:
        print(json.dumps({"inject": inj.id, "teams": teams, "event_seqs": seqs, "drill_t": drill_t}))
        return
    console.print(
        f"message '{inj.id}' delivered to team(s) {', '.join(map(str, teams))} (events {', '.join(map(str, seqs))})",
        highlight=False,
    )


# --- replay -------------------------------------------------------------------------------------


def replay(
    range_name: str = RANGE,
    file: Path = typer.Argument(..., metavar="FILE.pcap", help="A pcap or pcapng capture."),
    from_: str = typer.Option(..., "--from", help="The red node to send from."),
    team: int = typer.Option(1, "--team", "-t", min=1, help="Team whose copy of the range to use."),
    map_: list[str] = typer.Option(
        None, "--map", help="ADDR=NODE: capture address -> node (or address) of the team's range; repeatable."
    ),
    speed: float | None = typer.Option(None, "--speed", min=0.001, max=1000, help="Scale the capture's own timing (default 1.0)."),
    pps: float | None = typer.Option(None, "--pps", min=0.001, max=2_000_000, help="Fixed packets per second."),
    topspeed: bool = typer.Option(False, "--topspeed", help="As fast as the interface takes them."),
    loop: int = typer.Option(1, "--loop", min=1, max=1000, help="Replay the capture this many times."),
    drop_outside: bool = typer.Option(
        False, "--drop-outside", help="Drop packets addressed outside the range instead of refusing the replay."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the ground truth as JSON."),
) -> None:
    """Replay a capture from a red node now, addresses mapped onto the team's nodes; record its ground truth.

    Packets addressed outside the team's subnets refuse the whole replay (nothing
    is sent) unless --drop-outside. Recorded as an `inject.done` event with
    inject null (actor trainer, manual: true).
    """
    from rangectl.drill.inject import node_plan, parse_map, record, run_replay, team_plan

    timings = [n for n, v in (("--speed", speed), ("--pps", pps), ("--topspeed", topspeed or None)) if v is not None]
    if len(timings) > 1:
        raise UsageError(f"give one of --speed, --pps, --topspeed (got {', '.join(timings)})")
    if not file.is_file():
        raise UsageError(f"capture {file} not found")
    amap = parse_map(map_)
    state, _scenario, plan, backend = _open(range_name)
    tp = team_plan(plan, team, range_name)
    src = node_plan(tp, from_, range_name)
    if src.role != "red":
        raise UsageError(f"traffic originates from a red node; '{from_}' is {src.role}")
    truth = run_replay(
        state, plan, backend, team, from_, file, amap, speed=speed, pps=pps, topspeed=topspeed or None, loop=loop,
        drop_outside=drop_outside or None,
    )  # fmt: skip
    ev = record(state.db_path, team, truth)
    _finish([{"team": team, "seq": ev.seq, "truth": truth}], [], json_out, f"replay {file.name} from {from_}")
