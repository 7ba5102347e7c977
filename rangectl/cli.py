"""The rangectl command line: a thin layer over the modules that do the work.

Exit codes: 0 success; 1 invalid input or a failed operation/check; 2 usage
error; 3 environment problem (engine down, image or tool missing); 4 unknown
range/team; 130 interrupted. See docs/cli.md.
"""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import sys

import typer
from rich.console import Console

from rangectl import __version__
from rangectl.commands import register
from rangectl.commands import scenario as sc_cmds
from rangectl.errors import EnvironmentProblem, RangeError

app = typer.Typer(
    name="rangectl",
    help="Run cyber-range exercises: scenario files in, scored incident-response drills out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"rangectl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """rangectl: scenario files in, scored incident-response drills out."""


def _register() -> None:
    app.command("validate")(sc_cmds.validate)
    app.command("plan")(sc_cmds.plan_cmd)
    app.command("graph")(sc_cmds.graph)
    app.command("schema")(sc_cmds.schema)
    app.command("new")(sc_cmds.new)
    register(app)


_register()


#: the libraries that carry rangectl's calls to Docker engines (docker-py and its transports)
ENGINE_CLIENTS = ("docker", "paramiko", "requests", "urllib3")


def main() -> None:
    # `kill -USR1 PID` prints every thread's stack to stderr: what a drill that seems stuck is waiting on
    with contextlib.suppress(ValueError, OSError):  # a stderr with no file (the CLI called in-process)
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    err = Console(stderr=True)
    try:
        rc = app(standalone_mode=False)
    except RangeError as exc:
        err.print(f"[red]error:[/red] {_esc(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("[yellow]aborted[/yellow]")
        sys.exit(130)
    except Exception as exc:  # click's usage errors (typer vendors click)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__module__.split(".")[0] in ENGINE_CLIENTS:  # the engine's connection failed mid-way
            why = str(getattr(exc, "text", None) or exc).strip().splitlines()  # paramiko's channel errors: .text
            err.print(f"[red]error:[/red] the connection to a Docker engine failed: {type(exc).__name__}"
                      + _esc(f": {why[-1]}" if why else ""), highlight=False, soft_wrap=True)  # fmt: skip
            sys.exit(EnvironmentProblem.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


def _esc(s: str) -> str:
    return s.replace("[", r"\[")


if __name__ == "__main__":
    main()
