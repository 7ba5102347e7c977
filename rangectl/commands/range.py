"""Range commands: up, down, ls, status, exec, shell, logs, reset."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from rangectl import backend as backends
from rangectl import ranges
from rangectl.backend.base import NodeRef
from rangectl.errors import RangeError
from rangectl.state import RangeState

console = Console()
err = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[item]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal and os.environ.get("RANGECTL_PROGRESS") != "1",
    )


def _term_is_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def up(
    scenario: Path = typer.Argument(..., help="The scenario file."),
    teams: int = typer.Option(1, "--teams", "-t", min=1, max=64, help="Teams, each with its own isolated copy."),
    name: str | None = typer.Option(None, "--name", "-n", help="Range name (default: the scenario's name)."),
    no_provision: bool = typer.Option(False, "--no-provision", help="Skip the Ansible playbooks."),
    keep_on_failure: bool = typer.Option(
        False, "--keep-on-failure", help="Keep a new range's containers when up fails or is interrupted (to debug)."
    ),
    trust_playbooks: bool = typer.Option(
        False,
        "--trust-playbooks",
        help="Run the scenario's playbooks even if they act on this host (delegate_to: localhost, "
        "connection: local, controller-side lookups). Only after reviewing them: see docs/security.md.",
    ),
    seed: str | None = typer.Option(
        None, "--seed", help="Seed for the per-team variables (default: a fresh one, recorded with the range)."
    ),
    engine: str | None = typer.Option(
        None, "--engine", envvar="RANGECTL_ENGINE", help="The engine to run on (default: docker, the local engine)."
    ),
    stamp: bool | None = typer.Option(
        None, "--stamp/--no-stamp",
        help="--stamp: sample every node not cached yet, even for 1-2 teams (RANGECTL_STAMP=1); --no-stamp: run every "
        "team's playbooks node by node (RANGECTL_STAMP=0). Default: stamps from 3 teams on, cached ones always.",
    ),  # fmt: skip
    spread: bool = typer.Option(
        False, "--spread", envvar="RANGECTL_SPREAD",
        help="--engine swarm: spread the teams over the engines (default: pack them; docs/cluster.md).",
    ),  # fmt: skip
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Bring a range up on the local Docker engine, or a swarm (or reconcile an existing one).

    Creates per team every network (Docker --internal) and node, applies the
    nodes' playbooks with Ansible, and prints how to reach each node.
    """
    from rangectl.scenario.validate import load_scenario

    sc = load_scenario(scenario, check_playbooks=not no_provision and not trust_playbooks)
    if spread:
        os.environ["RANGECTL_SPREAD"] = "1"  # the swarm backend reads it when it is made
    range_name = name or sc.name
    existed = ranges.RangeState(ranges.check_range_name(range_name)).exists()
    with _progress() as prog:
        n_nodes = len(sc.nodes) * teams
        n_nets = len(sc.networks) * teams
        t_img = prog.add_task("images", total=None, item="")
        t_net = prog.add_task("networks", total=n_nets, item="")
        t_ctr = prog.add_task("containers", total=n_nodes, item="")
        t_ans = prog.add_task("provision", total=None, item="", visible=not no_provision)

        def note(phase: str, item: str) -> None:
            if phase == "stamps":
                prog.update(t_ans, item="stamps: " + item)
                return
            task = {"image": t_img, "network": t_net, "container": t_ctr}.get(phase)
            if task is None:
                return
            if phase == "image":
                prog.update(task, item=item[-60:])
            else:
                prog.update(task, advance=1, item=item)

        def ansible_note(kind: str, host: str, task: str) -> None:
            if kind == "task":
                prog.update(t_ans, item=task[-60:])
            elif kind in ("ok", "failed"):
                prog.update(t_ans, advance=1, item=f"{host}: {task}"[-60:])
            elif kind == "retry":
                prog.update(t_ans, item=f"{host}: again (the connection lost an answer)"[-60:])

        # SIGTERM (a service manager, `timeout`) is an interrupt too: roll back, exit 130
        old_term = signal.signal(signal.SIGTERM, _term_is_interrupt)
        try:
            rep = ranges.up(
                scenario, teams, name, not no_provision, note, ansible_note, keep_on_failure,
                trust_playbooks=trust_playbooks, seed=seed, engine=engine, stamp=stamp,
            )
        except KeyboardInterrupt:
            prog.stop()
            if existed or keep_on_failure:
                what = f"range '{range_name}' is partly built; `rangectl down {range_name}` removes it"
            else:
                what = f"range '{range_name}' was rolled back: nothing it made is left"
            err.print(f"[yellow]interrupted:[/yellow] {what}", highlight=False)
            raise typer.Exit(130) from None
        except RangeError as exc:
            prog.stop()
            if existed or keep_on_failure:
                exc.message += f" — `rangectl down {range_name}` removes the range"
            else:
                exc.message += " — the new range was rolled back (--keep-on-failure keeps it to debug)"
            raise
        finally:
            signal.signal(signal.SIGTERM, old_term)
        prog.update(t_img, total=1, completed=1, item="ready")
        prog.update(t_ans, total=1, completed=1, item="done" if rep.provision else "skipped")
    if json_out:
        print(
            json.dumps(
                {
                    "range": rep.range,
                    "plan": rep.plan.as_dict(),
                    "created": rep.up.created_containers,
                    "kept": rep.up.kept,
                    "stamps": {n: v.as_dict() for n, v in sorted(rep.stamps.items())},
                    "provision": None if rep.provision is None else {
                        "ok": rep.provision.ok, "hosts": rep.provision.hosts,
                        "tasks_ok": rep.provision.tasks_ok, "tasks_changed": rep.provision.tasks_changed,
                        "retried": rep.provision.retried,
                    },  # fmt: skip
                    "timings": rep.timings,
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"range {rep.range} · {rep.scenario.name}", title_justify="left")
    for col in ("team", "node", "role", "addresses", "shell"):
        table.add_column(col)
    for t in rep.plan.teams:
        for n in t.nodes:
            table.add_row(
                str(t.team),
                n.name,
                n.role,
                ", ".join(f"{k}={v}" for k, v in n.interfaces.items()),
                f"rangectl shell {rep.range} {n.name} --team {t.team}",
            )
    console.print(table)
    for n, v in sorted(rep.stamps.items()):
        if v.ok:
            console.print(f"stamp {n}: {v.stamp.ref} (provisioned once, {len(v.stamp.files)} per-team file(s))", highlight=False)
        else:
            console.print(f"no stamp for {n}: {v.reason} (provisioned node by node)", highlight=False)
    if rep.provision is not None and rep.provision.retried:
        console.print(
            f"provisioned again after the connection lost an answer: {', '.join(rep.provision.retried)}",
            highlight=False,
        )
    made = len(rep.up.created_containers)
    kept = len([k for k in rep.up.kept if k.startswith("rc-")])
    console.print(
        f"{made} container(s) created, {kept} kept; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in rep.timings.items()),
        highlight=False,
    )


def down(
    range_name: str | None = typer.Argument(None, metavar="RANGE", help="The range to remove."),
    all_: bool = typer.Option(False, "--all", help="Remove every range rangectl made."),
) -> None:
    """Remove a range's containers, networks and state — exactly those, nothing else."""
    if not range_name and not all_:
        raise typer.BadParameter("give a RANGE or --all")
    with _progress() as prog:
        task = prog.add_task("removing", total=None, item="")
        c, n = ranges.down(None if all_ else range_name, note=lambda ph, item: prog.update(task, advance=1, item=item))
        prog.update(task, total=c + n, completed=c + n)
    what = "every range" if all_ else f"range {range_name}"
    console.print(f"removed {what}: {c} container(s), {n} network(s)", highlight=False)


def ls(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List ranges: from the state folder and from labelled Docker resources."""
    from rangectl.state import list_ranges

    rows = {}
    engines = {os.environ.get("RANGECTL_ENGINE") or backends.DEFAULT}
    for st in list_ranges():
        meta = st.meta()
        engines.add(meta.get("engine") or backends.DEFAULT)
        rows[st.name] = {
            "range": st.name,
            "scenario": meta.get("scenario"),
            "teams": meta.get("teams"),
            "status": meta.get("status"),
            "engine": meta.get("engine") or backends.DEFAULT,
            "containers": 0,
            "running": 0,
            "networks": 0,
        }
    failed: list[tuple[str, RangeError]] = []
    for engine in sorted(engines):  # every engine a range was made on (and the default one)
        try:
            found = backends.get(engine).ranges()
        except RangeError as exc:
            failed.append((engine, exc))
            continue
        for name, info in found.items():
            row = rows.setdefault(
                name, {"range": name, "scenario": None, "teams": len(info.teams), "status": "orphaned", "engine": engine}
            )
            row.update(containers=info.containers, running=info.running, networks=info.networks)
    if failed and len(failed) == len(engines):  # no engine answered: that is the error
        raise failed[0][1]
    for engine, exc in failed:  # some did: list theirs, say which did not
        err.print(f"[yellow]engine {engine}:[/yellow] {exc.message}", highlight=False)
    if json_out:
        print(json.dumps(list(rows.values()), indent=2))
        return
    table = Table()
    for col in ("range", "scenario", "teams", "status", "engine", "running", "networks"):
        table.add_column(col)
    for r in rows.values():
        table.add_row(
            r["range"], str(r["scenario"] or "-"), str(r["teams"]), str(r["status"]), str(r["engine"]),
            f"{r.get('running', 0)}/{r.get('containers', 0)}", str(r.get("networks", 0)),
        )
    console.print(table)


def status(
    range_name: str = typer.Argument(..., metavar="RANGE"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a range's nodes, their state and addresses."""
    info = ranges.status(range_name)
    if json_out:
        print(json.dumps(info, indent=2))
        return
    table = Table(title=f"range {info['range']} · {info['scenario']} · {info['status']}", title_justify="left")
    engines = len({n.get("engine") for n in info["nodes"]}) > 1 or info.get("engine") == "swarm"
    for col in ("team", "node", "role", "state", "addresses", *(["engine"] if engines else [])):
        table.add_column(col)
    for n in info["nodes"]:
        table.add_row(
            str(n["team"]), n["node"], n["role"] or "-", n["state"],
            ", ".join(f"{k}={v}" for k, v in n["addresses"].items()), *([n.get("engine", "")] if engines else []),
        )
    console.print(table)
    if any(n["state"] != "running" for n in info["nodes"]):
        raise typer.Exit(1)


def _backend(range_name: str):
    return backends.for_range(RangeState(range_name))


def exec_(
    range_name: str = typer.Argument(..., metavar="RANGE"),
    node: str = typer.Argument(..., help="Node name."),
    cmd: list[str] = typer.Argument(..., help="Command to run (put it after --)."),
    team: int = typer.Option(1, "--team", "-t", min=1, help="Team whose copy of the node to use."),
) -> None:
    """Run a command in a node and print its output; exits with the command's status."""
    stream = _backend(range_name).exec_stream(NodeRef(range_name, team, node), cmd)
    for fd, chunk in stream:
        out = sys.stdout if fd == 1 else sys.stderr
        out.buffer.write(chunk)
        out.flush()
    raise typer.Exit(stream.code)


def shell(
    range_name: str = typer.Argument(..., metavar="RANGE"),
    node: str = typer.Argument(..., help="Node name."),
    team: int = typer.Option(1, "--team", "-t", min=1, help="Team whose copy of the node to use."),
) -> None:
    """Open an interactive shell in a node (enters the container's namespaces)."""
    argv = _backend(range_name).shell_argv(NodeRef(range_name, team, node))
    os.execvp(argv[0], argv)


def logs(
    range_name: str = typer.Argument(..., metavar="RANGE"),
    node: str = typer.Argument(..., help="Node name."),
    team: int = typer.Option(1, "--team", "-t", min=1),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int = typer.Option(200, "--tail", help="Lines from the end."),
) -> None:
    """Print a node's container log."""
    for chunk in _backend(range_name).logs(NodeRef(range_name, team, node), follow=follow, tail=tail):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


def reset(
    range_name: str = typer.Argument(..., metavar="RANGE"),
    node: str = typer.Argument(..., help="Node name."),
    team: int = typer.Option(1, "--team", "-t", min=1, help="Team whose copy of the node to re-create."),
    no_provision: bool = typer.Option(False, "--no-provision", help="Skip the node's playbooks."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Re-create one node of one team from its image and playbooks (same addresses and routes).

    A running drill carries on; its checks and availability probes reach the new container.
    The reset is recorded in the range's events (`node.reset`)."""
    from rangectl.store import EventStore

    res = ranges.reset_node(range_name, node, team, provision=not no_provision)
    st = RangeState(range_name)
    with EventStore(st.db_path) as store:
        store.append("node.reset", {"node": node, "container": res["container"], "provisioned": res["provisioned"]},
                     team=team, actor="trainer")  # fmt: skip
    if json_out:
        print(json.dumps(res, indent=2))
        return
    console.print(
        f"reset {node} of team {team}: container {res['container']} "
        f"({', '.join(f'{k}={v}' for k, v in res['addresses'].items())}), {res['seconds']:.1f}s",
        highlight=False,
    )
