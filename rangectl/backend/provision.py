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
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml as pyyaml  # ansible ships PyYAML

from rangectl.backend.base import Backend, NodeRef
from rangectl.backend.docker import container_name
from rangectl.errors import EnvironmentProblem, RangeError, ScenarioError
from rangectl.paths import resolve_path
from rangectl.plan import NodePlan, Plan, TeamPlan
from rangectl.scenario.model import Scenario
from rangectl.scenario.trust import reserved_var, scan_playbooks
from rangectl.scenario.variables import substitute_all

EventNote = Callable[[str, str, str], None]  # (kind, host, text)

#: Ansible forks per CPU of the controller (measured: bench/up.py, docs/ranges.md "Provisioning")
FORKS_PER_CPU = int(os.environ.get("RANGECTL_FORKS_PER_CPU", "8"))


@dataclass
class ProvisionResult:
    ok: bool
    hosts: int
    tasks_ok: int = 0
    tasks_changed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    artifacts: str = ""
    log: str = ""  # the raw Ansible output (artifacts/<id>/stdout)
    retried: list[str] = field(default_factory=list)  # hosts run again after a transport glitch


def host_name(team: int, node: str) -> str:
    return f"t{team}-{node}"


def docker_api_host(ref: NodeRef) -> dict[str, str]:
    """How Ansible reaches a node of the local Docker engine (:meth:`DockerBackend.ansible_host`)."""
    return {"ansible_connection": "community.docker.docker_api", "ansible_host": container_name(ref.range, ref.team, ref.node)}


def host_vars(range_name: str, scenario: Scenario, t: TeamPlan, node: NodePlan) -> dict[str, Any]:
    """What a node's playbooks see of the range: the scenario's vars, then rangectl's own."""
    spec = scenario.nodes[node.name]
    # The scenario's vars first, rangectl's own after, and no ansible_*/rangectl_* key
    # of the scenario's at all: a node's `vars` can never change how (ansible_*: the
    # connection, the container, the engine) or as which team (rangectl_*) the node
    # is provisioned. Validation refuses those keys too; this holds if it is bypassed.
    scenario_vars = substitute_all({k: v for k, v in spec.vars.items() if not reserved_var(k)}, t.values)
    return {
        **scenario_vars,
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
        "rangectl_vars": dict(t.values),  # the team's own variable values (docs/planning.md)
    }


def playbooks_of(scenario: Scenario, node: str, scenario_file: Path) -> list[Path]:
    """A node's playbooks, resolved (RangeError naming one that is not found)."""
    out = []
    for pb in scenario.nodes[node].provision:
        path = resolve_path(pb, scenario_file, "playbooks")
        if path is None:
            raise RangeError(f"playbook '{pb}' of node '{node}' not found")
        out.append(path.resolve())
    return out


def build_inventory(
    range_name: str,
    scenario: Scenario,
    plan: Plan,
    scenario_file: Path,
    connect: Callable[[NodeRef], dict[str, str]] = docker_api_host,
    only: set[str] | None = None,
    skip: set[tuple[int, str]] | None = None,
) -> tuple[dict, list[tuple[Path, str]]]:
    """The inventory dict and the (playbook path, group) pairs to run, in first-use order.

    ``connect`` gives each host's connection variables (the backend's :meth:`ansible_host`);
    ``only`` limits the hosts to those nodes (a node reset re-provisions just that node);
    ``skip`` leaves (team, node) hosts out (nodes started from a stamp, :mod:`rangectl.backend.stamp`)."""
    hosts: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    plays: list[tuple[Path, str]] = []
    seen: dict[Path, str] = {}
    for t in plan.teams:
        for node in t.nodes:
            if (only is not None and node.name not in only) or (skip is not None and (t.team, node.name) in skip):
                continue
            h = host_name(t.team, node.name)
            hosts[h] = {
                **host_vars(range_name, scenario, t, node),
                **connect(NodeRef(range_name, t.team, node.name)),
                "ansible_python_interpreter": "/usr/bin/python3",
            }
            for g in (node.role, f"team{t.team}", f"node_{node.name.replace('-', '_')}"):
                groups.setdefault(g, {"hosts": {}})["hosts"][h] = None
            for path in playbooks_of(scenario, node.name, scenario_file):
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


# -- run-time defence against host-side plays -------------------------------------------

GUARD_HOSTS = ("localhost", "127.0.0.1", "::1")
GUARD_CONNECTION = "rangectl_refuse"
# Builtin lookups that read or run on the controller; shadowed by refusing ones.
GUARDED_LOOKUPS = (
    "pipe", "file", "fileglob", "lines", "env", "template", "password", "url", "csvfile", "ini",
    "first_found", "unvault", "config", "subelements_file",
)
REFUSED = "rangectl refuses to run this on the trainer's host (review the playbook; --trust-playbooks allows it)"

_CONNECTION_PLUGIN = '''# Written by rangectl: refuses every connection (the implicit local one included).
from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
name: {name}
short_description: refused by rangectl
description: [Refuses to run anything on the trainer's host.]
author: rangectl
"""


class Connection(ConnectionBase):
    transport = "{name}"
    has_pipelining = True

    def _connect(self):
        raise AnsibleConnectionFailure({msg!r})

    def exec_command(self, cmd, in_data=None, sudoable=True):
        self._connect()

    def put_file(self, in_path, out_path):
        self._connect()

    def fetch_file(self, in_path, out_path):
        self._connect()

    def close(self):
        pass
'''

_LOOKUP_PLUGIN = '''# Written by rangectl: a controller-side lookup, refused.
from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = """
name: {name}
short_description: refused by rangectl
description: [Refuses to read or run anything on the trainer's host.]
author: rangectl
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        raise AnsibleError({msg!r})
'''


def write_guard_plugins(folder: Path) -> dict[str, str]:
    """Refusing plugins shadowing ``local`` and the controller-side lookups; the env to load them.

    Short plugin names resolve through ``ansible.legacy``, where configured plugin folders
    win over the builtins, so ``connection: local``, the implicit localhost and
    ``lookup('pipe', ...)`` all land here. Fully qualified names (``ansible.builtin.local``)
    are the static scan's job (:mod:`rangectl.scenario.trust`).
    """
    conn = folder / "connection"
    look = folder / "lookup"
    conn.mkdir(parents=True, exist_ok=True)
    look.mkdir(parents=True, exist_ok=True)
    for name in ("local", GUARD_CONNECTION):
        (conn / f"{name}.py").write_text(_CONNECTION_PLUGIN.format(name=name, msg=REFUSED))
    for name in GUARDED_LOOKUPS:
        (look / f"{name}.py").write_text(_LOOKUP_PLUGIN.format(name=name, msg=REFUSED))
    return {"ANSIBLE_CONNECTION_PLUGINS": str(conn), "ANSIBLE_LOOKUP_PLUGINS": str(look)}


def guard_inventory(inventory: dict) -> None:
    """Name the host explicitly, so no delegation falls back to Ansible's implicit local
    connection: ``localhost``, ``127.0.0.1`` and ``::1`` reach a connection that refuses."""
    hosts = inventory["all"]["hosts"]
    for h in GUARD_HOSTS:
        hosts[h] = {"ansible_connection": GUARD_CONNECTION, "rangectl_guard": True}
    inventory["all"]["children"]["rangectl_host_guard"] = {"hosts": dict.fromkeys(GUARD_HOSTS)}


# -- failures ------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def one_line(text: Any, limit: int = 240) -> str:
    """A message for one terminal line: no ANSI escapes or control characters, whitespace folded."""
    if isinstance(text, list | dict):
        text = str(text)
    text = _ANSI.sub("", str(text))
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _failure_message(res: dict[str, Any]) -> str:
    msg = res.get("msg") or ""
    err = res.get("stderr") or res.get("module_stderr") or ""
    if msg and err and "non-zero return code" in str(msg):
        msg = f"{msg}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    return one_line(msg or err or res.get("reason") or "failed")


def provision(
    range_name: str,
    scenario: Scenario,
    plan: Plan,
    scenario_file: Path,
    note: EventNote | None = None,
    workdir: Path | None = None,
    trust_playbooks: bool = False,
    backend: Backend | None = None,
    only: set[str] | None = None,
    skip: set[tuple[int, str]] | None = None,
) -> ProvisionResult:
    """Run the scenario's playbooks on a range's nodes.

    Without ``trust_playbooks`` every playbook is
    scanned first (a host-side play raises ScenarioError and nothing runs), and the run
    itself carries the run-time guards (:func:`write_guard_plugins`, :func:`guard_inventory`).
    Ctrl-C (SIGINT) or SIGTERM while Ansible runs cancels it and raises KeyboardInterrupt.
    A failure returns ``ok=False`` with one clean line per failed host and task;
    ``result.log`` names the raw Ansible output.
    """
    connect = backend.ansible_host if backend is not None else docker_api_host
    inventory, plays = build_inventory(range_name, scenario, plan, scenario_file, connect, only, skip)
    return run_playbooks(inventory, plays, scenario_file, note, workdir, trust_playbooks)


#: What Ansible says when the connection lost an exec's answer: the temporary-directory command
#: ran (exit 0) but its output never came back (community.docker#644, seen over ``ssh://``
#: engines). It happens before the failed task's module runs.
TRANSPORT_GLITCH = re.compile(r"failed to resolve remote temporary directory from ", re.IGNORECASE)


def transport_glitches(failures: list[dict[str, str]]) -> list[str]:
    """The failed hosts, when every failure is that transport glitch (else none: a real failure
    is reported as it is, nothing runs again)."""
    if not failures or not all(TRANSPORT_GLITCH.search(f.get("message", "")) for f in failures):
        return []
    return sorted({f["host"] for f in failures})


def forks_for(hosts: int) -> int:
    """Parallel Ansible workers: every host at once overloads a small controller (40 hosts on
    2 cores put the load average above 40), so at most :data:`FORKS_PER_CPU` per CPU."""
    return max(1, min(hosts, FORKS_PER_CPU * (os.cpu_count() or 1)))


def run_playbooks(
    inventory: dict,
    plays: list[tuple[Path, str]],
    scenario_file: Path,
    note: EventNote | None = None,
    workdir: Path | None = None,
    trust_playbooks: bool = False,
) -> ProvisionResult:
    """One ansible-runner call over ``inventory`` running ``plays`` (see :func:`provision`)."""
    import signal
    import threading
    import time

    import ansible_runner

    nhosts = sum(len(inventory["all"]["children"][g]["hosts"]) for _, g in plays) if plays else 0
    if not plays:
        return ProvisionResult(ok=True, hosts=0)
    if not trust_playbooks:
        problems = scan_playbooks([p for p, _ in plays], scenario_file)
        if problems:
            more = f" (+{len(problems) - 1} more; run rangectl validate)" if len(problems) > 1 else ""
            raise ScenarioError(
                f"{problems[0]}{more}",
                fix="review the playbook; a trainer who accepts it passes --trust-playbooks",
            )
        guard_inventory(inventory)
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
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_FORCE_COLOR": "False",
    }
    if not trust_playbooks:
        envvars.update(write_guard_plugins(tmp / "guard"))
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
            result.failures.append(
                {"host": one_line(host, 80), "task": one_line(task, 120), "message": _failure_message(res)}
            )
            if note:
                note("failed", host, task)
        return True

    # Our own cancel: ansible-runner's default SIGINT handler turns Ctrl-C into a
    # "canceled" run that looks like a failed playbook. Ours records it and we raise
    # KeyboardInterrupt afterwards, so `up` reports an interrupt and rolls back.
    interrupted: list[int] = []
    restore: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            restore[sig] = signal.signal(sig, lambda signum, frame: interrupted.append(signum))
    def run(limit: list[str] | None = None) -> Any:
        """One ansible-playbook run of the site over every host, or only ``limit``'s."""
        return ansible_runner.run(
            private_data_dir=str(tmp),
            playbook="site.yml",
            inventory=str(tmp / "inventory" / "hosts.yml"),
            forks=forks_for(nhosts if limit is None else len(limit)),
            envvars=envvars,
            quiet=True,
            event_handler=on_event,
            cancel_callback=lambda: bool(interrupted),
            rotate_artifacts=1 if limit is None else 2,  # a second pass keeps the first one's output
            **({} if limit is None else {"limit": ",".join(limit)}),
        )

    try:
        r = run()
        lost = transport_glitches(result.failures)
        if lost and not interrupted and r.status != "canceled":
            # the connection lost an exec's answer before those hosts' failed task ran its module:
            # run the plays again on those hosts only, once (Ansible's own way to converge)
            result.retried = lost
            result.failures = []
            if note:
                for host in lost:
                    note("retry", host, "")
            r = run(lost)
    finally:
        for sig, handler in restore.items():
            signal.signal(sig, handler)
    result.seconds = time.monotonic() - t0
    artifact_dir = Path(getattr(r.config, "artifact_dir", "") or tmp)
    result.log = str(artifact_dir / "stdout")
    if interrupted or r.status == "canceled":
        raise KeyboardInterrupt
    result.ok = r.rc == 0 and not result.failures
    if r.rc != 0 and not result.failures:
        out = ""
        try:
            out = r.stdout.read()[-2000:]
        except Exception:  # noqa: BLE001 - best effort for the message
            pass
        last = [ln for ln in (one_line(x) for x in out.splitlines()) if ln]
        result.failures.append(
            {"host": "-", "task": "ansible-playbook", "message": last[-1] if last else f"exit status {r.rc}"}
        )
    return result
