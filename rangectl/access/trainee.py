"""Playing a team the way its trainees do: the hand-out files, SSH, ``respond`` and ``ssh NODE``.

:class:`TraineePath` runs each action of a scripted responder (the self-test's reference
solution, docs/selftest.md) through nothing but what a team is handed: its SSH config, key
and known-hosts files (``rangectl teams RANGE --show-credentials``). Answers, hints and
reports go through ``respond`` inside the team's workstation (the team API, as ``team-K``);
commands on other nodes go through ``ssh NODE`` from the workstation (the operated nodes of
``operate:``, recorded like any trainee's). No Docker call, no trainer API.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable
from typing import Any

from rangectl.access import credentials as creds
from rangectl.state import RangeState

SSH_TIMEOUT = 120.0  # seconds for one action (one SSH connection)


class TraineePath:
    """One team's actions over SSH with its hand-out files (``ssh`` from the host's PATH)."""

    def __init__(
        self, state: RangeState, team: int, workstation: str, ssh: str = "ssh", timeout: float = SSH_TIMEOUT
    ):
        self.state = state
        self.team = team
        self.workstation = workstation  # where the hand-out files lead; other nodes are `ssh NODE` from it
        self.files = creds.team_files(state, team)
        self.alias = creds.host_alias(state, team)
        self.ssh = ssh
        self.timeout = timeout
        self.log: list[dict[str, Any]] = []  # every action, in order: what ran and how it ended

    def run(self, command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """``command`` in the team's workstation, over SSH with the hand-out files."""
        argv = [self.ssh, "-F", self.files.ssh_config.name, "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
                self.alias, command]  # fmt: skip
        try:
            p = subprocess.run(
                argv, cwd=self.files.ssh_config.parent, input=stdin, capture_output=True, text=True,
                timeout=self.timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            p = subprocess.CompletedProcess(argv, 124, "", f"no answer within {self.timeout:g}s")
        self.log.append({"command": command, "exit": p.returncode})
        return p

    def _respond(self, *args: str, stdin: str | None = None, shell: str | None = None) -> dict[str, Any]:
        """``respond --json ARGS`` in the workstation (``shell``: the command line as given, unquoted)."""
        line = shell if shell is not None else "respond --json " + " ".join(shlex.quote(a) for a in args)
        p = self.run(line, stdin=stdin)
        try:
            body = json.loads(p.stdout) if p.stdout.strip() else {}
        except json.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if p.returncode not in (0, 1) or not body:
            why = (p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}").splitlines()[-1:]
            return {"ok": False, "message": f"respond {args[0] if args else 'report'} failed: {' '.join(why)}"}
        return body

    def submit(self, team: int, objective: str, answer: str) -> dict[str, Any]:
        body = self._respond("submit", objective, answer)
        return {"ok": bool(body.get("correct")), "message": str(body.get("message", ""))}

    def hint(self, team: int, objective: str) -> dict[str, Any]:
        body = self._respond("hint", objective)
        return {"ok": "text" in body, "message": str(body.get("message", body.get("text", "")))}

    def report(self, team: int, objective: str, fields: dict[str, str]) -> dict[str, Any]:
        text = json.dumps({"objective": objective, "fields": fields}, ensure_ascii=False)
        # the file is written in the workstation (as a trainee would), filed, then removed
        body = self._respond(stdin=text, shell=(
            'f=$(mktemp /tmp/report.XXXXXX) && trap \'rm -f "$f"\' EXIT && cat > "$f" && respond --json report "$f"'
        ))  # fmt: skip
        return {"ok": bool(body.get("on_time")), "message": str(body.get("message", ""))}

    def exec(self, team: int, node: str, cmd: str) -> tuple[int, str]:
        if node == self.workstation:
            p = self.run(cmd)
        else:
            p = self.run(f"ssh -o BatchMode=yes {shlex.quote(node)} {shlex.quote(cmd)}")
        return p.returncode, p.stdout + p.stderr

    def actions(self) -> dict[str, Callable[..., Any]]:
        """The player's actions (rangectl.solution.SolutionPlayer), all through the trainee path."""
        return {"submit": self.submit, "hint": self.hint, "exec": self.exec, "report": self.report}
