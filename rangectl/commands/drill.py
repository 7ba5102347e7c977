"""Drill control: start (live view or detached), pause, resume, stop, status."""

from __future__ import annotations

import json

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from rangectl.drill import process
from rangectl.drill.runner import ClockState, clock_from_events, due_times, end_time, progress_from_events
from rangectl.errors import UsageError
from rangectl.scenario.durations import format_duration
from rangectl.state import RangeState
from rangectl.store import EventStore

app = typer.Typer(help="Run the drill: the scenario's timeline, checks and scoring, for every team.", no_args_is_help=True)
console = Console()


def _store(range_name: str) -> tuple[RangeState, EventStore]:
    st = RangeState.open(range_name)
    return st, EventStore(st.db_path)


def _clock(store: EventStore) -> ClockState:
    return clock_from_events(list(store.events()))


def _view(st: RangeState, runner_or_none=None) -> Group:
    from rangectl.scoring.actions import board as compute

    store = EventStore(st.db_path)
    events = list(store.events())
    clock = clock_from_events(events)
    sc = st.scenario()
    dues = due_times(sc)
    prog = progress_from_events(events)
    teams = int(st.get("teams", 1))
    pending = sorted(
        ((t, i) for i, t in dues.items() if any((i, k) not in prog.done for k in range(1, teams + 1))),
    )
    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]{st.name}[/bold] · {sc.name}",
        f"clock [bold]{format_duration(clock.drill_t())}[/bold] / {format_duration(end_time(sc))}",
        f"x{clock.scale:g}",
        f"[{'green' if clock.status == 'running' else 'yellow'}]{clock.status}[/]",
        f"next: {pending[0][1]} at {format_duration(pending[0][0])}" if pending else "all injects done",
    )
    b = compute(st)
    table = Table(title="scoreboard", title_justify="left")
    table.add_column("team")
    table.add_column("total", justify="right")
    cats = sorted({c for t in b.teams for c in t.categories})
    for c in cats:
        table.add_column(c, justify="right")
    for t in b.teams:
        table.add_row(str(t.team), f"{t.total:.0f}", *[f"{t.categories.get(c, 0):.0f}" for c in cats])
    return Group(head, table)


@app.command("start")
def start(
    range_name: str = typer.Argument(..., metavar="RANGE"),
    time_scale: float = typer.Option(1.0, "--time-scale", "-x", min=0.01, max=1000, help="Drill clock runs X times faster."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background; control with pause/resume/stop."),
    live: bool = typer.Option(True, "--live/--no-live", help="Show the live view (clock, next inject, scores)."),
) -> None:
    """Run the drill's timeline for every team (or carry on after a crash, from the record)."""
    st, store = _store(range_name)
    clock = _clock(store)
    if clock.status in ("stopped", "finished"):
        raise UsageError(f"the drill on '{range_name}' has {clock.status}; `rangectl drill status` shows the record")
    process.ensure_not_running(st, range_name)
    if detach:
        pid, log = process.detach(st, range_name, time_scale)
        console.print(f"drill runner started in the background (pid {pid}, log {log})", highlight=False)
        return
    run = process.ForegroundRun(st, time_scale)
    try:
        if live and console.is_terminal:
            with Live(_view(st), console=console, refresh_per_second=2) as lv:
                while run.alive():
                    run.join(1.0)
                    lv.update(_view(st))
        else:
            last = None
            while run.alive():
                run.join(2.0)
                c = run.runner.clock
                line = f"[{format_duration(c.drill_t())}] {c.status}"
                if line != last and live:
                    print(line, flush=True)
                    last = line
    except KeyboardInterrupt:
        run.interrupt(30)
        console.print("runner interrupted; `rangectl drill start` carries on from the record", highlight=False)
        raise typer.Exit(130) from None
    c = _clock(store)
    console.print(f"drill {c.status} at {format_duration(c.drill_t())}", highlight=False)


def _control(range_name: str, kind: str, allowed: tuple[str, ...]) -> None:
    st, store = _store(range_name)
    c = _clock(store)
    if c.status not in allowed:
        raise UsageError(f"the drill on '{range_name}' is {c.status}; cannot {kind.split('.')[1]}")
    store.append(kind, {"drill_t": c.drill_t()}, actor="trainer")
    console.print(f"{kind.split('.')[1]}: recorded at drill time {format_duration(c.drill_t())}", highlight=False)


@app.command("pause")
def pause(range_name: str = typer.Argument(..., metavar="RANGE")) -> None:
    """Stop the drill clock (injects, checks and availability wait)."""
    _control(range_name, "drill.pause", ("running",))


@app.command("resume")
def resume(range_name: str = typer.Argument(..., metavar="RANGE")) -> None:
    """Start the drill clock again."""
    _control(range_name, "drill.resume", ("paused",))


@app.command("stop")
def stop_cmd(range_name: str = typer.Argument(..., metavar="RANGE")) -> None:
    """End the drill for good (the runner exits; the record stays)."""
    _control(range_name, "drill.stop", ("running", "paused", "not-started"))


@app.command("status")
def status(
    range_name: str = typer.Argument(..., metavar="RANGE"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Where the drill is: clock, runner, injects done and pending per team."""
    st, store = _store(range_name)
    events = list(store.events())
    c = clock_from_events(events)
    prog = progress_from_events(events)
    sc = st.scenario()
    teams = int(st.get("teams", 1))
    dues = due_times(sc)
    rows = []
    for inj in sc.injects:
        for k in range(1, teams + 1):
            done = prog.done.get((inj.id, k))
            rows.append(
                {
                    "inject": inj.id,
                    "team": k,
                    "due": dues[inj.id],
                    "state": "done" if done else "running" if (inj.id, k) in prog.started else "pending",
                    "fired_at": prog.fired_at.get((inj.id, k)),
                    "status": (done or {}).get("status"),
                }
            )
    info = {
        "range": range_name,
        "status": c.status,
        "drill_t": c.drill_t(),
        "time_scale": c.scale,
        "end": end_time(sc),
        "runner_pid": process.runner_pid(st),
        "injects": rows,
    }
    if json_out:
        print(json.dumps(info, indent=2))
        return
    console.print(
        f"{range_name}: {c.status} at {format_duration(c.drill_t())} (x{c.scale:g}), "
        f"runner {'pid ' + str(info['runner_pid']) if info['runner_pid'] else 'not running'}",
        highlight=False,
    )
    table = Table()
    for col in ("inject", "team", "due", "state", "fired at", "result"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["inject"], str(r["team"]), format_duration(r["due"]), r["state"],
            format_duration(r["fired_at"]) if r["fired_at"] is not None else "-", r["status"] or "-",
        )
    console.print(table)
