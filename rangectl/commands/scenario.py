"""Scenario commands: validate, plan, graph, schema, new. Pure: no Docker."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rangectl.errors import UsageError
from rangectl.scenario.loader import Problem
from rangectl.scenario.validate import expand_paths, load_scenario

console = Console()
err_console = Console(stderr=True)


class ValidateFormat(StrEnum):
    text = "text"
    json = "json"
    junit = "junit"
    github = "github"


class GraphFormat(StrEnum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"


def validate(
    paths: list[Path] = typer.Argument(..., help="Scenario files, or folders to search for *.yaml/*.yml."),
    fmt: ValidateFormat = typer.Option(ValidateFormat.text, "--format", "-f", help="text, json, junit or github."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the report to this file instead of stdout."),
) -> None:
    """Check scenario files: schema, addresses, references, timelines.

    Prints every problem as FILE:LINE:COL: field.path: message.
    Exit 0 when all files are valid, 1 when any is not, 2 on usage errors.
    """
    from rangectl.scenario import report_formats

    files, extra = expand_paths(paths)
    from rangectl.solution import validate_with_solution

    results = [validate_with_solution(f) for f in files]
    if fmt is ValidateFormat.text:
        text = _as_text(results, extra, to_file=output is not None)
    elif fmt is ValidateFormat.json:
        text = report_formats.as_json(results, extra)
    elif fmt is ValidateFormat.junit:
        text = report_formats.as_junit(results, extra)
    else:
        text = report_formats.as_github(results, extra)
    if output is not None:
        output.write_text(text + ("\n" if text else ""))
    elif text:
        if fmt is ValidateFormat.text:
            pass  # already printed through rich
        else:
            print(text)
    if extra or any(not r.ok for r in results):
        raise typer.Exit(1)


def _as_text(results, extra: list[Problem], to_file: bool) -> str:
    lines = []
    for r in results:
        if r.ok:
            lines.append(f"ok    {r.path}")
        for p in r.problems:
            lines.append(str(p))
    for p in extra:
        lines.append(str(p))
    bad = sum(1 for r in results if not r.ok)
    nprob = sum(len(r.problems) for r in results) + len(extra)
    summary = (
        f"{len(results)} file(s) valid"
        if not bad and not extra
        else f"{bad + len(extra)} of {len(results) + len(extra)} file(s) invalid, {nprob} problem(s)"
    )
    lines.append(summary)
    if not to_file:
        for line in lines:
            if line.startswith("ok    "):
                console.print(f"[green]ok[/green]    {line[6:]}", highlight=False, soft_wrap=True)
            elif line is summary:
                console.print(f"[bold]{line}[/bold]", highlight=False)
            else:
                console.print(f"[red]{_esc(line)}[/red]", highlight=False, soft_wrap=True)
    return "\n".join(lines)


def _esc(s: str) -> str:
    return s.replace("[", r"\[")


def plan_cmd(
    scenario: Path = typer.Argument(..., help="The scenario file."),
    teams: int = typer.Option(
        1, "--teams", "-t", min=1, max=64, help="Number of teams, each with its own copy of the range."
    ),
    seed: str | None = typer.Option(
        None, "--seed", help="Seed for the per-team variables (default: the scenario's name; `up` records its own)."
    ),
    engine: str | None = typer.Option(
        None, "--engine", help="swarm: also show which engine of the swarm (DOCKER_HOST) each team goes to."
    ),
    spread: bool = typer.Option(False, "--spread", help="With --engine swarm: spread the teams (as `up --spread`)."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Show the concrete deployment: per team, each network's subnet and each node's addresses,
    and the team's values of the scenario's per-team variables (trainer side: never shown to teams)."""
    from rangectl.plan import plan

    sc = load_scenario(scenario)
    p = plan(sc, teams, seed)
    where: dict[int, str] = {}
    if engine == "swarm":
        from rangectl.backend.swarm import SwarmBackend, manager_client

        be = SwarmBackend(manager_client(), spread=spread)
        where = be.plan_placement(sc.name, p)
    elif engine not in (None, "docker"):
        raise UsageError(f"--engine must be docker or swarm, not '{engine}'")
    if json_out:
        doc = p.as_dict()
        if where:
            doc["placement"] = {str(t): e for t, e in sorted(where.items())}
        print(json.dumps(doc, indent=2))
        return
    if where:
        from rangectl.backend.docker import team_nodes

        table = Table(title=f"{sc.name} · placement on the swarm ({'spread' if spread else 'packed'})", title_justify="left")
        for col in ("engine", "teams", "nodes"):
            table.add_column(col)
        for name in sorted(set(where.values())):
            ts = sorted(t for t, e in where.items() if e == name)
            nodes = sum(len(team_nodes(p.team(t))) for t in ts)
            table.add_row(name, ", ".join(map(str, ts)), str(nodes))
        console.print(table)
    for t in p.teams:
        table = Table(title=f"{sc.name} · team {t.team}", title_justify="left")
        table.add_column("node")
        table.add_column("role")
        table.add_column("image")
        table.add_column("interfaces")
        table.add_column("gateway")
        for n in t.nodes:
            table.add_row(
                n.name,
                n.role,
                n.image,
                ", ".join(f"{net}={ip}" for net, ip in n.interfaces.items()),
                str(n.gateway or "-"),
            )
        console.print(table)
        if t.values:
            console.print(
                "  variables: " + ", ".join(f"{k}={v}" for k, v in sorted(t.values.items())), highlight=False
            )
        console.print(
            "  networks: " + ", ".join(f"{n.name}={n.subnet} (bridge {n.bridge})" for n in t.networks),
            highlight=False,
        )


def graph(
    scenario: Path = typer.Argument(..., help="The scenario file."),
    fmt: GraphFormat = typer.Option(GraphFormat.text, "--format", "-f", help="text, mermaid or dot."),
) -> None:
    """Draw the topology: nodes, networks, roles and addresses."""
    from rangectl.graph import render

    sc = load_scenario(scenario)
    print(render(sc, fmt.value))


def schema() -> None:
    """Print the JSON Schema of the scenario format (for editors and CI)."""
    from rangectl.scenario.model import Scenario

    doc = Scenario.model_json_schema(by_alias=True)
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    print(json.dumps(doc, indent=2))


def new(
    name: str = typer.Argument(..., help="Scenario name (a slug: lower-case letters, digits, '-')."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File to write (default: NAME.yaml here)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter scenario that validates."""
    from rangectl.scenario.starter import starter

    if not re.match(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", name):
        raise UsageError(f"'{name}' is not a valid scenario name: use lower-case letters, digits and '-'")
    out = output or Path(f"{name}.yaml")
    if out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to overwrite")
    out.write_text(starter(name, str(out)))
    console.print(f"wrote {out}; check it with: rangectl validate {out}", highlight=False)
