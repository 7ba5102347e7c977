"""Trainee access commands: ``serve`` (the team API, in-workstation listeners, SSH) and ``teams``.

Plain functions with Typer defaults; rangectl/commands/__init__.py registers
them as top-level commands. The work is in :mod:`rangectl.access`.
"""

from __future__ import annotations

import ipaddress
import json

import typer
from rich.console import Console
from rich.table import Table

from rangectl.errors import RangeError, UsageError
from rangectl.state import RangeState

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

RANGE = typer.Argument(..., metavar="RANGE", help="The range's name (see `rangectl ls`).")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    range_name: str = RANGE,
    bind: str = typer.Option(
        "127.0.0.1:8780", "--bind", help="ADDR:PORT for the API on the host ('' for none)."
    ),
    ssh_bind: str = typer.Option(
        "127.0.0.1", "--ssh-bind", help="Host address for each team's SSH port ('off' for no SSH)."
    ),
    ssh_port_base: int = typer.Option(
        2200, "--ssh-port-base", min=1, max=65000, help="Team K's SSH port is BASE+K."
    ),
    hide_board: bool = typer.Option(False, "--hide-board", help="Do not show teams the scoreboard."),
    rate: float = typer.Option(
        6.0, "--rate", min=0, help="Submissions per minute per team and objective (0: no limit)."
    ),
    burst: int = typer.Option(
        3, "--burst", min=1, max=100, help="Submissions allowed at once before --rate applies."
    ),
    node: str | None = typer.Option(
        None, "--node", help="The trainees' workstation node (default: first blue workstation)."
    ),
    no_workstations: bool = typer.Option(
        False,
        "--no-workstations",
        help="Only the host listener: no API inside workstations, no SSH (no Docker needed).",
    ),
    no_install: bool = typer.Option(
        False, "--no-install", help="Do not install respond/credentials/sshd in workstations."
    ),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (method, path, status)."),
    lang: str = typer.Option(
        None, "--lang", help="Default language of texts for teams: en, vi [$RANGECTL_LANG or en]."
    ),
    no_record: bool = typer.Option(
        False, "--no-record", help="Do not record what trainees run on their nodes (`rangectl commands`)."
    ),
) -> None:
    """Serve the team API (OpenAPI at /api/v1/openapi.json) until Ctrl-C.

    Also opens the API on 127.0.0.1:8780 inside each team's workstation (for
    `respond`) and forwards SSH port BASE+K on --ssh-bind to team K's
    workstation. Teams authenticate with their token (`rangectl teams RANGE
    --show-credentials`). Stops by itself when the range is taken down.
    """
    from rangectl.access.ratelimit import RateLimit
    from rangectl.access.server import ServeOptions, parse_bind
    from rangectl.access.server import serve as run
    from rangectl.i18n import pick_lang

    st = RangeState.open(range_name)
    ssh = (
        None if ssh_bind.strip().lower() in ("", "off", "none", "no") or no_workstations else ssh_bind.strip()
    )
    if bind:
        host, _ = parse_bind(bind)
        if not _is_loopback(host):
            err.print(
                f"[yellow]warning:[/yellow] the API on {bind} is plain HTTP: tokens cross the network in clear; "
                "prefer loopback plus the in-workstation listener, or put TLS in front",
            )
    if ssh and ssh_port_base + 64 > 65535:
        raise UsageError("--ssh-port-base is too high for 64 teams")
    opts = ServeOptions(
        bind=bind,
        ssh_bind=ssh,
        ssh_base=ssh_port_base,
        workstations=not no_workstations,
        node=node,
        install=not no_install,
        record=not no_record,
        reset_fn=_team_reset(range_name),
        hide_board=hide_board,
        rate=RateLimit(per_minute=rate, burst=burst),
        access_log=access_log,
        lang=pick_lang(lang),
    )
    teams = int(st.get("teams", 1) or 1)
    if ssh:
        console.print(
            f"SSH: team K on {ssh}:{ssh_port_base}+K (team 1: {ssh_port_base + 1} ... team {teams}: {ssh_port_base + teams})"
        )
    console.print(f"submissions: {opts.rate.describe()}; board {'hidden' if hide_board else 'shown'}")
    try:
        run(st, opts, note=lambda text: console.print(text))
    except KeyboardInterrupt:
        pass
    console.print("team API stopped")


def teams(
    range_name: str = RANGE,
    show_credentials: bool = typer.Option(
        False, "--show-credentials", help="Print each team's token and credential files (hand them out once)."
    ),
    rotate: list[int] = typer.Option(
        [],
        "--rotate",
        metavar="K",
        help="New token and SSH key for team K; the old ones stop working. Repeatable.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The range's teams and their access: credential files, SSH port, install state; rotate a team's credential."""
    from rangectl.access import credentials as creds
    from rangectl.access.install import install_access, marker

    st = RangeState.open(range_name)
    rotated: dict[int, str] = {}
    for k in rotate:
        creds.check_team(st, k)
        new = creds.rotate(st, k)
        try:
            res = install_access(st, [k], force=True, kill_sessions=True)
            rotated[k] = "installed in the workstation" if res.ok else "rotated; workstation install FAILED"
            if not res.ok and res.failures:
                f = res.failures[0]
                err.print(
                    f"[red]team {k}:[/red] install failed on {f['host']} at '{f['task']}': {f['message']}"
                )
        except RangeError as exc:
            rotated[k] = f"rotated; not installed ({exc.message}); `rangectl serve` installs it"
        if not json_out:
            console.print(f"team {k}: credential rotated (generation {new.generation}): {rotated[k]}")
    have = creds.load_credentials(st)
    ep = creds.endpoints(st)
    rows = []
    for k, c in sorted(have.items()):
        f = creds.team_files(st, k)
        row = {
            "team": k,
            "generation": c.generation,
            "ssh_fingerprint": c.ssh_fingerprint,
            "ssh": f"{ep.ssh_host}:{ep.ssh_port(k)}",
            "api": f"http://{ep.api}",
            "files": [str(p) for p in f.all() if p.exists()],
            "installed": bool(marker(st, k)) and marker(st, k).get("generation") == c.generation,
        }
        if show_credentials:
            vals = creds.read_env_file(f.env) if f.env.exists() else {}
            row["token"] = vals.get("RANGECTL_TOKEN")
        rows.append(row)
    if json_out:
        print(json.dumps({"range": st.name, "teams": rows, "rotated": sorted(rotated)}, indent=2))
        return
    if not rows:
        console.print(f"range '{st.name}' has no team credentials yet (`rangectl up` makes them)")
        return
    table = Table(title=f"range {st.name} · team access", title_justify="left")
    for col in ("team", "gen", "ssh", "key fingerprint", "in workstation"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["team"]),
            str(r["generation"]),
            r["ssh"],
            r["ssh_fingerprint"],
            "yes" if r["installed"] else "no",
        )
    console.print(table)
    if show_credentials:
        # plain lines, never cut to the terminal's width
        for r in rows:
            tok = r["token"] or "(file gone: --rotate to make a new one)"
            print(f"team {r['team']}  {tok}")
        console.print(
            f"Hand team K the files {creds.credentials_dir(st)}/team-K.* (env: token + SSH key; .key, .known_hosts, "
            ".ssh_config for `ssh -F team-K.ssh_config rangectl-"
            f"{st.name}-team-K`). The database keeps only hashes: a lost token can only be rotated."
        )


def _team_reset(range_name: str):
    """What `respond reset NODE` runs (rangectl.access.resets): the same re-creation as `rangectl reset`."""

    def reset(node: str, team: int) -> dict:
        from rangectl import ranges

        return ranges.reset_node(range_name, node, team)

    return reset


def commands(
    range_name: str = RANGE,
    team: int = typer.Option(None, "--team", "-t", help="Only this team [every team]."),
    node: str = typer.Option(None, "--node", "-n", help="Only this node [every node]."),
    json_out: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """List what trainees ran on their nodes, as recorded by `serve`: sessions, commands with their exit
    status, files copied with scp (docs/access.md, "Every command recorded")."""
    from rangectl import cmdlog
    from rangectl.store import EventStore

    st = RangeState.open(range_name)
    with EventStore(st.db_path) as store:
        events = store.events(kind=cmdlog.KINDS)
    found = [r for r in cmdlog.rows(events, team) if node is None or r.node == node]
    if json_out:
        print(json.dumps([r.as_dict() for r in found], indent=2, ensure_ascii=False))
        return
    table = Table(title=f"commands of range {range_name}" + (f" · team {team}" if team else ""), title_justify="left")
    for col in ("drill", "team", "node", "what", "command", "exit"):
        table.add_column(col, overflow="fold")
    for r in found:
        what = {"session": "login", "command": "run", "file.copy": "scp", "dropped": "dropped"}.get(r.kind, r.kind)
        text = r.cmd + (f"  ({r.detail})" if r.detail else "")
        table.add_row(cmdlog.fmt_clock(r.drill_t), str(r.team), r.node, what, text, "" if r.status is None else str(r.status))
    console.print(table)
    if not found:
        console.print("nothing recorded (commands are recorded while `rangectl serve` runs)")
