"""Provision a running range with Ansible: one ansible-runner call per range.

The inventory is generated from the plan: one host per (team, node), reached
through ``community.docker.docker_api`` (the engine's API, with pipelining);
groups by role (``red``, ``blue``, ``target``, ``infra``), by team
(``team1``...), by node (``node_portal``: every team's copy) and per
playbook. The site playbook imports each playbook a scenario uses once, with
``rangectl_hosts`` set to the group of hosts that list it; shipped playbooks
start with ``hosts: "{{ rangectl_hosts | default('all') }}"``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml as pyyaml  # ansible ships PyYAML

from rangectl.backend.docker import container_name
from rangectl.errors import EnvironmentProblem, RangeError
from rangectl.plan import Plan
from rangectl.scenario.model import Scenario
from rangectl.scenario.validate import resolve_path

EventNote = Callable[[str, str, str], None]  # (kind, host, text)


@dataclass
class ProvisionResult:
    ok: bool
    hosts: int
    tasks_ok: int = 0
    tasks_changed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    artifacts: str = ""


def host_name(team: int, node: str) -> str:
    return f"t{team}-{node}"


def build_inventory(range_name: str, scenario: Scenario, plan: Plan, scenario_file: Path) -> tuple[dict, list[tuple[Path, str]]]:
    """The inventory dict and the (playbook path, group) pairs to run, in first-use order."""
    hosts: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    plays: list[tuple[Path, str]] = []
    seen: dict[Path, str] = {}
    for t in plan.teams:
        for node in t.nodes:
            spec = scenario.nodes[node.name]
            h = host_name(t.team, node.name)
            hosts[h] = {
                "ansible_connection": "community.docker.docker_api",
                "ansible_host": container_name(range_name, t.team, node.name),
                "ansible_python_interpreter": "/usr/bin/python3",
                "rangectl_range": range_name,
                "rangectl_team": t.team,
                "rangectl_node": node.name,
                "rangectl_role": node.role,
                "rangectl_interfaces": {k: str(v) for k, v in node.interfaces.items()},
                "rangectl_address": str(node.primary_ip),
                "rangectl_gateway": str(node.gateway) if node.gateway else "",
                "rangectl_nodes": {n.name: str(n.primary_ip) for n in t.nodes},
                "rangectl_node_addresses": {n.name: {k: str(v) for k, v in n.interfaces.items()} for n in t.nodes},
                "rangectl_subnets": {n.name: str(n.subnet) for n in t.networks},
                "rangectl_scenario": scenario.name,
                **spec.vars,
            }
            for g in (node.role, f"team{t.team}", f"node_{node.name.replace('-', '_')}"):
                groups.setdefault(g, {"hosts": {}})["hosts"][h] = None
            for pb in spec.provision:
                path = resolve_path(pb, scenario_file, "playbooks")
                if path is None:
                    raise RangeError(f"playbook '{pb}' of node '{node.name}' not found")
                path = path.resolve()
                if path not in seen:
                    g = "pb_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]
                    seen[path] = g
                    plays.append((path, g))
                groups.setdefault(seen[path], {"hosts": {}})["hosts"][h] = None
    inventory = {"all": {"hosts": hosts, "children": groups}}
    return inventory, plays


def ansible_bin_dir() -> Path:
    """The folder holding ansible-playbook: this interpreter's venv first."""
    here = Path(sys.executable).parent
    if (here / "ansible-playbook").exists():
        return here
    found = shutil.which("ansible-playbook")
    if found:
        return Path(found).parent
    raise EnvironmentProblem("ansible-playbook not found", fix="pip install ansible (scripts/setup.sh does it)")


def provision(
    range_name: str,
    scenario: Scenario,
    plan: Plan,
    scenario_file: Path,
    note: EventNote | None = None,
    workdir: Path | None = None,
) -> ProvisionResult:
    import time

    import ansible_runner

    inventory, plays = build_inventory(range_name, scenario, plan, scenario_file)
    nhosts = sum(len(inventory["all"]["children"][g]["hosts"]) for _, g in plays) if plays else 0
    if not plays:
        return ProvisionResult(ok=True, hosts=0)
    t0 = time.monotonic()
    tmp = Path(workdir or tempfile.mkdtemp(prefix="rangectl-ansible-"))
    (tmp / "project").mkdir(parents=True, exist_ok=True)
    (tmp / "inventory").mkdir(exist_ok=True)
    (tmp / "inventory" / "hosts.yml").write_text(pyyaml.safe_dump(inventory, sort_keys=False))
    site = [{"import_playbook": str(p), "vars": {"rangectl_hosts": g}} for p, g in plays]
    (tmp / "project" / "site.yml").write_text(pyyaml.safe_dump(site, sort_keys=False))
    bindir = ansible_bin_dir()
    envvars = {
        "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_SYSTEM_WARNINGS": "False",
        "ANSIBLE_INTERPRETER_PYTHON": "/usr/bin/python3",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_TIMEOUT": "60",
    }
    result = ProvisionResult(ok=False, hosts=nhosts, artifacts=str(tmp))
    task_names: dict[str, str] = {}

    def on_event(ev: dict[str, Any]) -> bool:
        kind = ev.get("event", "")
        data = ev.get("event_data") or {}
        host = data.get("host", "")
        task = data.get("task", "")
        if kind == "playbook_on_task_start":
            task_names[data.get("task_uuid", "")] = task
            if note:
                note("task", "", task)
        elif kind == "runner_on_ok":
            result.tasks_ok += 1
            if (data.get("res") or {}).get("changed"):
                result.tasks_changed += 1
            if note:
                note("ok", host, task)
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            res = data.get("res") or {}
            msg = res.get("msg") or res.get("stderr") or res.get("reason") or "failed"
            if isinstance(msg, list | dict):
                msg = str(msg)
            result.failures.append({"host": host, "task": task, "message": " ".join(str(msg).split())[:300]})
            if note:
                note("failed", host, task)
        return True

    r = ansible_runner.run(
        private_data_dir=str(tmp),
        playbook="site.yml",
        inventory=str(tmp / "inventory" / "hosts.yml"),
        forks=max(nhosts, 1),
        envvars=envvars,
        quiet=True,
        event_handler=on_event,
        rotate_artifacts=1,
    )
    result.seconds = time.monotonic() - t0
    result.ok = r.rc == 0 and not result.failures
    if r.rc != 0 and not result.failures:
        out = ""
        try:
            out = r.stdout.read()[-600:]
        except Exception:  # noqa: BLE001 - best effort for the message
            pass
        result.failures.append({"host": "-", "task": "ansible-playbook", "message": " ".join(out.split())[-300:]})
    return result
