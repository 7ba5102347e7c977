"""Command modules. Each area owns a module; the CLI wires them in here."""

from __future__ import annotations

import importlib

import typer

# (module, attribute, name, kind): kind "group" mounts a Typer sub-app, "command" a function.
COMMANDS: list[tuple[str, str, str, str]] = [
    ("rangectl.commands.range", "up", "up", "command"),
    ("rangectl.commands.range", "down", "down", "command"),
    ("rangectl.commands.range", "ls", "ls", "command"),
    ("rangectl.commands.range", "status", "status", "command"),
    ("rangectl.commands.range", "exec_", "exec", "command"),
    ("rangectl.commands.range", "shell", "shell", "command"),
    ("rangectl.commands.range", "logs", "logs", "command"),
    ("rangectl.commands.range", "reset", "reset", "command"),
    ("rangectl.commands.drill", "app", "drill", "group"),
    ("rangectl.commands.images", "app", "images", "group"),
    ("rangectl.commands.doctor", "doctor", "doctor", "command"),
    ("rangectl.commands.traffic", "app", "traffic", "group"),
    ("rangectl.commands.traffic", "inject", "inject", "command"),
    ("rangectl.commands.traffic", "replay", "replay", "command"),
    ("rangectl.commands.scoring", "submit", "submit", "command"),
    ("rangectl.commands.scoring", "hint", "hint", "command"),
    ("rangectl.commands.scoring", "report_incident", "report-incident", "command"),
    ("rangectl.commands.scoring", "board", "board", "command"),
    ("rangectl.commands.scoring", "verify", "verify", "command"),
    ("rangectl.commands.scoring", "report", "report", "command"),
    ("rangectl.commands.scoring", "evidence", "evidence", "command"),
    ("rangectl.commands.access", "serve", "serve", "command"),
    ("rangectl.commands.access", "teams", "teams", "command"),
    ("rangectl.commands.access", "commands", "commands", "command"),
    ("rangectl.commands.selftest", "selftest", "selftest", "command"),
]


def register(app: typer.Typer) -> None:
    """Mount every command area on ``app``; a missing module or attribute is an error, never skipped."""
    for module, attr, name, kind in COMMANDS:
        obj = getattr(importlib.import_module(module), attr)
        if kind == "group":
            app.add_typer(obj, name=name)
        else:
            app.command(name)(obj)
