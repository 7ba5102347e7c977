"""`rangectl selftest`: prove a scenario end to end (up, drill, reference solution, scores, down)."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

console = Console()
err = Console(stderr=True)


def _table(results: list[Any]) -> Table:
    t = Table(title="self-test", title_justify="left")
    for col in ("scenario", "check", "result", "detail"):
        t.add_column(col)
    for r in results:
        rows = list(r.assertions)
        if r.error:
            t.add_row(r.scenario, "selftest", "[red]ERROR[/red]", Text(r.error))
        for a in rows:
            t.add_row(r.scenario, a.name, "[green]pass[/green]" if a.ok else "[red]FAIL[/red]", Text(a.detail))
    return t


def selftest(
    scenarios: list[Path] = typer.Argument(..., help="Scenario files (each needs <name>.solution.yaml beside it)."),
    time_scale: float = typer.Option(
        None, "--time-scale", "-x", min=0.1, max=1000, help="Drill clock speed-up (default: the drill runs in about 2.5 min)."
    ),
    fmt: str = typer.Option("text", "--format", "-f", help="text, junit or json (junit/json go to stdout or --output)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the junit/json result to this file."),
    report_dir: Path = typer.Option(
        None, "--report-dir", help="Write each scenario's after-action report to DIR/<scenario>/."
    ),
    live: bool = typer.Option(None, "--live/--no-live", help="Live scoreboard while the drill runs (default: on a terminal)."),
    lang: str = typer.Option(None, "--lang", help="Language of texts: en, vi [$RANGECTL_LANG or en]."),
    trust_playbooks: bool = typer.Option(
        False, "--trust-playbooks", help="Run playbooks that act on this host (see docs/security.md)."
    ),
) -> None:
    """Bring each scenario up for two teams, run the drill fast, play the reference solution for
    team 1 and nothing for team 2; check injects, traffic, scores and the record; tear down.

    Exit 0 only when every check of every scenario passes.
    """
    from rangectl.commands.drill import _view
    from rangectl.i18n import pick_lang
    from rangectl.selftest import junit, run_selftest

    if fmt not in ("text", "junit", "json"):
        from rangectl.errors import UsageError

        raise UsageError(f"--format: '{fmt}' is not one of text, junit, json")
    lang = pick_lang(lang)
    show_live = console.is_terminal and live is not False  # a log (no terminal) gets plain lines
    results = []
    for path in scenarios:
        current: dict[str, Any] = {}

        def view(current: dict[str, Any] = current) -> Any:
            st = current.get("state")
            if st is None:
                return Text(current.get("note", "starting…"))
            try:
                return Group(Text(current.get("note", "")), _view(st))
            except Exception:  # noqa: BLE001 - a view mid-write is drawn next time
                return Text(current.get("note", ""))

        def note(msg: str, current: dict[str, Any] = current, path: Path = path) -> None:
            current["note"] = f"{path.name}: {msg}"
            if not show_live:
                err.print(f"selftest {path.name}: {msg}", highlight=False)

        out = report_dir / path.name.removesuffix(".yaml") if report_dir else None
        live_view = Live(get_renderable=view, console=console, refresh_per_second=2) if show_live else nullcontext()
        try:
            with live_view:
                r = run_selftest(
                    path, time_scale=time_scale, report_dir=out, lang=lang, note=note, trust_playbooks=trust_playbooks,
                    on_drill=lambda st, current=current: current.update(state=st),
                )
        except KeyboardInterrupt:
            err.print("[yellow]interrupted:[/yellow] the self-test range was taken down", highlight=False)
            raise typer.Exit(130) from None
        results.append(r)
        if fmt == "text":
            console.print(_table([r]))
            verdict = "[green]PASS[/green]" if r.ok else "[red]FAIL[/red]"
            scores = ", ".join(f"team {k}: {v:g}" for k, v in r.scores.items())
            console.print(
                f"{verdict} {r.scenario} in {r.seconds:.0f}s at x{r.time_scale:g} ({scores}; expected ≥ {r.expected_score})"
                + (f"; report in {r.report_dir}" if r.report_dir else ""),
                highlight=False,
            )
    if fmt != "text":
        body = junit(results) if fmt == "junit" else json.dumps([r.as_dict() for r in results], indent=2) + "\n"
        if output:
            output.write_text(body, encoding="utf-8")
        else:
            sys.stdout.write(body)
    raise typer.Exit(0 if results and all(r.ok for r in results) else 1)
