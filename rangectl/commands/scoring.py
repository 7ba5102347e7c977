"""Scoring commands: submit, hint, report-incident, board, verify and the after-action report.

Plain functions with Typer defaults; rangectl/commands/__init__.py registers
them as top-level commands. The work is in :mod:`rangectl.scoring.actions`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rangectl.errors import RangeError
from rangectl.state import RangeState

console = Console(highlight=False)

RANGE = typer.Argument(..., metavar="RANGE", help="The range's name (see `rangectl ls`).")


def _team_opt() -> int:
    return typer.Option(..., "--team", "-t", min=1, help="Team number (1..N).")


def submit(
    range_name: str = RANGE,
    objective: str = typer.Argument(..., metavar="OBJECTIVE", help="Objective id."),
    answer: str = typer.Argument(
        ..., metavar="ANSWER", help="The team's answer (quote it if it has spaces)."
    ),
    team: int = _team_opt(),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Submit a team's answer to an objective (recorded; says right or wrong, never the answer).

    Exit 0 when correct, 1 when wrong or refused.
    """
    from rangectl.scoring.actions import submit as do_submit

    res = do_submit(RangeState.open(range_name), team, objective, answer)
    if json_out:
        print(json.dumps(res.as_dict(), indent=2))
    else:
        colour = "green" if res.correct else "yellow" if res.accepted else "red"
        console.print(f"team {res.team}: [{colour}]{res.message}[/{colour}]")
    if not res.correct:
        raise typer.Exit(1)


def hint(
    range_name: str = RANGE,
    objective: str = typer.Argument(..., metavar="OBJECTIVE", help="Objective id."),
    team: int = _team_opt(),
    lang: str = typer.Option(None, "--lang", help="Language of the hint text: en, vi [$RANGECTL_LANG or en]."),
) -> None:
    """Give a team the next hint of an objective (its cost comes off that objective's award)."""
    from rangectl.i18n import pick_lang
    from rangectl.scoring.actions import take_hint_info

    h = take_hint_info(RangeState.open(range_name), team, objective, lang=pick_lang(lang))
    cost = f", costs {h.cost} points" if h.cost else ", free"
    console.print(f"[bold]hint {h.index + 1} of {h.total}[/bold] for '{h.objective}' (team {h.team}{cost}):")
    console.print(h.text, markup=False)


def report_incident(
    range_name: str = RANGE,
    team: int = _team_opt(),
    file: Path = typer.Option(..., "--file", "-f", help="Report YAML: objective: ID, fields: {name: value}."),
) -> None:
    """File a team's incident report for a report objective (the first accepted report counts)."""
    from rangectl.scoring.actions import report_incident as do_report

    res = do_report(RangeState.open(range_name), team, file)
    console.print(f"team {res.team}: [{'green' if res.on_time else 'yellow'}]{res.message}[/]")


SHORT = {
    "detection": "detect",
    "containment": "contain",
    "eradication": "eradic",
    "recovery": "recover",
    "reporting": "report",
    "availability": "avail",
    "adjustments": "adjust",
}


def _short(category: str) -> str:
    return SHORT.get(category, category if len(category) <= 8 else category[:7] + "…")


def _tt(scenario, values: dict[str, float | None], cats: set[str]) -> str:
    """Time to detect/contain: minutes for one inject; mean (done/of) over several."""
    relevant = [
        i.id
        for i in scenario.injects
        if any(o.after == i.id and o.category in cats for o in scenario.objectives)
    ]
    if not relevant:
        return "-"
    got = [values[i] for i in relevant if values.get(i) is not None]
    if len(relevant) == 1:
        return f"{got[0]:.1f}m" if got else "-"
    mean = f"{sum(got) / len(got):.1f}m" if got else "-"
    return f"{mean} ({len(got)}/{len(relevant)})"


def _width() -> int:
    return console.width


def board_table(b, scenario, policy) -> Table:
    """The scoreboard as a rich table, best team first."""
    from rich import box

    from rangectl.scoring.engine import describe_flag

    cats = list(dict.fromkeys(c for t in b.teams for c in t.categories))
    table = Table(
        title=f"{scenario.name} · {b.status} at {b.drill_t / 60:.1f} min · policy {b.policy} · {b.events} events",
        title_justify="left",
        box=box.SIMPLE_HEAD if _width() >= 100 else None,
        pad_edge=False,
        padding=(0, 1, 0, 1) if _width() >= 100 else (0, 1, 0, 0),
        header_style="bold underline" if _width() < 100 else "bold",
    )
    table.add_column("#", justify="right")
    table.add_column("team", justify="right")
    table.add_column("total", justify="right", style="bold")
    for c in cats:
        table.add_column(_short(c), justify="right")
    table.add_column("solved", justify="right")
    table.add_column("hints", justify="right")
    table.add_column("TTD", justify="right")
    table.add_column("TTC", justify="right")
    if scenario.availability:
        table.add_column("up", justify="right")
    flagged = any(t.flags for t in b.teams)
    if flagged:
        table.add_column("flags", justify="right", style="red")
    for t in b.ranked():
        row = [str(t.rank), str(t.team), f"{t.total:.1f}", *[f"{t.categories.get(c, 0.0):.0f}" for c in cats]]
        row += [f"{t.solved}/{len(scenario.objectives)}", str(t.hints)]
        row += [
            _tt(scenario, t.ttd, set(policy.detect_categories)),
            _tt(scenario, t.ttc, set(policy.contain_categories)),
        ]
        if scenario.availability:
            up = f"{100 * t.availability_up / t.availability_total:.0f}%" if t.availability_total else "-"
            row.append(up)
        if flagged:
            row.append(str(len(t.flags)) if t.flags else "")
        table.add_row(*row)
    table.caption = "TTD/TTC: drill minutes from inject to first detection/containment"
    if flagged:
        table.caption += "; flags: " + "; ".join(
            f"team {t.team} {describe_flag(f)}" for t in b.ranked() for f in t.flags
        )
    table.caption_justify = "left"
    return table


def anchor_line(anchor) -> str:
    """The board's footer: the record's latest checkpoint, full hash (keep it: `verify --expect-head`)."""
    if anchor is None:
        return "record: no checkpoint yet"
    return f"record checkpoint: event {anchor.seq}, head {anchor.hash}"


def board(
    range_name: str = RANGE,
    watch: bool = typer.Option(
        False, "--watch", "-w", help="Keep the board on screen, updated as events arrive."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the board as JSON (with --watch: one line per change)."
    ),
    interval: float = typer.Option(
        2.0, "--interval", min=0.2, help="Seconds between refreshes with --watch."
    ),
) -> None:
    """The scoreboard: total, categories, time to detect and contain per team."""
    from rangectl.scoring.actions import context
    from rangectl.scoring.engine import compute_board

    ctx = context(RangeState.open(range_name))
    events = ctx.store.events()

    def compute():
        return compute_board(ctx.scenario, ctx.plan, ctx.policy, events)

    def table(b):
        from rich.console import Group
        from rich.text import Text

        foot = Text(anchor_line(ctx.store.last_checkpoint()), overflow="fold")
        return Group(board_table(b, ctx.scenario, ctx.policy), foot)

    def as_json(b) -> dict:
        cp = ctx.store.last_checkpoint()
        return {**b.as_dict(), "checkpoint": cp.as_dict() if cp is not None else None}

    if not watch:
        b = compute()
        if json_out:
            print(json.dumps(as_json(b), indent=2))
        else:
            console.print(board_table(b, ctx.scenario, ctx.policy))
            console.print(anchor_line(ctx.store.last_checkpoint()), soft_wrap=True)
        return

    def pull() -> bool:
        new = ctx.store.events(after_seq=events[-1].seq if events else 0)
        events.extend(new)
        return bool(new)

    try:
        if json_out:
            print(json.dumps(as_json(compute())), flush=True)
            while True:
                time.sleep(interval)
                if pull():
                    print(json.dumps(as_json(compute())), flush=True)
        from rich.live import Live

        with Live(table(compute()), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                if pull():
                    live.update(table(compute()))
    except KeyboardInterrupt:
        return


def verify(
    range_name: str = RANGE,
    expect_head: str = typer.Option(
        None,
        "--expect-head",
        metavar="HASH",
        help="A head hash written down earlier (the full 64 hex digits): it must still be in the record.",
    ),
) -> None:
    """Check the range's event log: every event's hash, its link to the one before, and the anchors.

    The anchors are the checkpoints beside the database (the head at every drill
    milestone: a record cut short or rewritten before one fails) and, with
    --expect-head, a head kept somewhere else. Exit 0 "log intact"; exit 1
    naming what does not check out.
    """
    from rangectl.store import EventStore

    if expect_head is not None:
        expect_head = expect_head.strip().lower()
    st = RangeState.open(range_name)
    store = EventStore(st.db_path)
    try:
        res = store.verify(expect_head=expect_head)
    finally:
        store.close()
    if not res.ok:
        where = f"at event {res.first_bad_seq}: " if res.first_bad_seq is not None else ": "
        raise RangeError(f"log broken {where}{res.reason} ({res.count} events check out)")
    say = lambda text, **kw: console.print(text, soft_wrap=True, **kw)  # noqa: E731 - hashes unbroken
    say(f"log intact: {res.count} events, head {res.head_hash}")
    if res.anchor is not None:
        say(
            f"checkpoints: {res.checkpoints} checked; the latest anchors event {res.anchor.seq} "
            f"({res.count - res.anchor.seq} events after it, covered by the chain only)"
        )
    else:
        say(f"checkpoints: none ({store.checkpoint_path.name} is missing): only the chain was checked", style="yellow")
    if res.expect_seq is not None:
        say(f"expected head: event {res.expect_seq} ({res.count - res.expect_seq} events after it)")
    elif expect_head is not None:  # the empty record's head
        say("expected head: the empty record")


def report(
    range_name: str = RANGE,
    out: Path = typer.Option(
        None, "--out", "-o", help="Folder for report.md, report.html and timeline SVGs [./RANGE-report]."
    ),
    lang: str = typer.Option(None, "--lang", help="Language of scenario texts: en, vi [$RANGECTL_LANG or en]."),
) -> None:
    """Write the after-action report: Markdown, self-contained HTML and a timeline SVG per team."""
    from rangectl.i18n import pick_lang
    from rangectl.report import write_report

    out = out or Path(f"{range_name}-report")
    files = write_report(RangeState.open(range_name), out, lang=pick_lang(lang))
    for f in files:
        console.print(f"wrote {f}")


def evidence(
    range_name: str = RANGE,
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write team-K/ folders (or the .tar.gz) into."),
    team: list[int] = typer.Option(None, "--team", "-t", help="Only this team (repeat for several) [every team]."),
    tar: bool = typer.Option(False, "--tar", help="Write one RANGE-evidence.tar.gz instead of folders."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write each team's evidence bundle: its events with their hash chain, the attack ground truth,
    the record's head and verify result, and a SHA-256 manifest (docs/scoring.md, "Evidence")."""
    from rangectl.evidence import write_evidence

    res = write_evidence(range_name, out, teams=team or None, tar=tar)
    if json_out:
        print(json.dumps(res.as_dict(), indent=2))
        return
    table = Table(title=f"evidence of range {res.range} · head {res.head_seq} · "
                        f"{'record intact' if res.verify_ok else 'RECORD BROKEN'}", title_justify="left")  # fmt: skip
    for col in ("team", "events", "ground truth", "manifest sha256"):
        table.add_column(col)
    for t in res.teams:
        table.add_row(str(t.team), str(t.events), str(t.injects), t.files["manifest.json"][:16])
    console.print(table)
    console.print(f"written to {res.tar or res.out}")
    if not res.verify_ok:
        raise typer.Exit(1)
