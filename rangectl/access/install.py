"""Put each team's way in into its blue workstation: ``respond``, the team's token, sshd and keys.

Runs ``playbooks/workstation-respond.yml`` with the range's own Ansible
machinery (:func:`rangectl.backend.provision.provision`, through the Docker
API), on the workstation of the chosen teams only. Secrets travel as files
(``$STATE/access/install/team-K/``), never as Ansible variables, and the
secret-copying tasks are ``no_log``; ansible-runner's artifacts stay in
``$STATE/access/ansible`` (0700).

An install is recorded per team (container id, credential generation,
``respond.py`` digest) in the range's metadata, so ``serve`` re-runs it only
for a team whose workstation was re-created, whose credential was rotated, or
when ``respond`` changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rangectl import backend as backends
from rangectl import paths
from rangectl.access.credentials import install_dir, load_credentials, private_dir, ssh_keypair, write_secret
from rangectl.backend.base import NodeRef
from rangectl.backend.provision import provision
from rangectl.errors import RangeError, UsageError
from rangectl.plan import Plan
from rangectl.scenario.model import Scenario
from rangectl.state import RangeState

WS_API_PORT = 8780  # the API, on 127.0.0.1 inside each workstation
WS_SSH_PORT = 8722  # the team's sshd, on 127.0.0.1 inside each workstation (and each node it operates)
WS_OPERATE_BASE = 8800  # `ssh NODE`: 127.0.0.1:8800+i inside the workstation for the i-th operated node
# sshd limits (playbooks/workstation-respond.yml; docs/access.md). sshd sees every connection
# from 127.0.0.1 (the gateway), so per-source limits are the gateway's (rangectl.access.gateway).
SSHD_LOGIN_GRACE = 10  # seconds: a connection that has not logged in by then is cut (LoginGraceTime)
SSHD_MAX_STARTUPS = 64  # unauthenticated connections sshd accepts (MaxStartups): the gateway's team cap
SSHD_REPAIR_TIMEOUT = 20.0  # seconds: deadline of the watcher's sshd repair (a docker exec)
INSTALL_REPAIR_TIMEOUT = 300.0  # seconds: installing access again in a re-created node (one Ansible run)


def respond_script() -> Path:
    return Path(__file__).resolve().parent.parent / "node_files" / "respond.py"


def playbook_path() -> Path:
    return paths.access_playbook()


def workstation_node(scenario: Scenario, node: str | None = None) -> str:
    """The node trainees work on: ``node`` when given, else the first blue node with the workstation image."""
    if node is not None:
        if node not in scenario.nodes:
            raise UsageError(f"scenario '{scenario.name}' has no node '{node}'")
        return node
    blue = scenario.nodes_with_role("blue")
    if not blue:
        raise UsageError(
            f"scenario '{scenario.name}' has no blue node for trainees to work on", fix="pass --node"
        )
    for n in blue:
        if scenario.nodes[n].image == "workstation":
            return n
    return blue[0]


def operated_nodes(scenario: Scenario, ws: str) -> list[str]:
    """The nodes trainees on workstation ``ws`` may operate (the scenario's ``operate:``), in order."""
    return list(scenario.nodes[ws].operate)


def operate_ports(scenario: Scenario, ws: str) -> dict[str, int]:
    """``ssh NODE`` inside the workstation: NODE -> its port on the workstation's 127.0.0.1."""
    return {n: WS_OPERATE_BASE + i for i, n in enumerate(operated_nodes(scenario, ws))}


def ensure_operate_keys(state: RangeState, team: int) -> Path:
    """The team's operate key pair and its operated nodes' host key (made once, trainer side only)."""
    d = install_dir(state) / f"team-{team}" / "operate"
    if (d / "known_hosts").is_file():
        return d
    for p in (d.parent.parent, d.parent, d):
        private_dir(p)
    private, public = ssh_keypair(f"rangectl-{state.name}-team-{team}-operate")
    host_private, host_public = ssh_keypair(f"rangectl-{state.name}-team-{team}-nodes")
    write_secret(d / "id_ed25519", private)
    write_secret(d / "authorized_keys", public.strip() + "\n")
    write_secret(d / "ssh_host_ed25519_key", host_private)
    write_secret(d / "ssh_host_ed25519_key.pub", host_public.strip() + "\n")
    write_secret(d / "known_hosts", "rangectl-operate " + " ".join(host_public.split()[:2]) + "\n")  # last: the marker
    return d


def operate_ssh_config(team: int, ports: dict[str, int]) -> str:
    """The workstation's ``ssh NODE`` configuration (/etc/ssh/ssh_config.d/rangectl-operate.conf)."""
    hosts = "".join(f"Host {n}\n    HostName 127.0.0.1\n    Port {p}\n" for n, p in ports.items())
    return (
        f"# rangectl: the nodes team {team} operates, through `rangectl serve` (docs/access.md)\n{hosts}"
        f"Host {' '.join(ports)}\n"
        "    User root\n"
        "    IdentityFile /etc/rangectl/operate_key\n"
        "    IdentitiesOnly yes\n"
        "    HostKeyAlias rangectl-operate\n"
        "    UserKnownHostsFile /etc/rangectl/operate_known_hosts\n"
        "    StrictHostKeyChecking yes\n"
        "    PasswordAuthentication no\n"
        "    LogLevel ERROR\n"
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def marker(state: RangeState, team: int) -> dict:
    return state.get(f"access_installed_t{team}") or {}


@dataclass
class InstallResult:
    ok: bool
    teams: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def install_access(
    state: RangeState,
    teams: Iterable[int] | None = None,
    node: str | None = None,
    *,
    force: bool = False,
    kill_sessions: bool = False,
    note: Callable[[str, str, str], None] | None = None,
) -> InstallResult:
    """Install (or refresh) trainee access in the workstations of ``teams`` (default: all with credentials).

    Skips teams whose recorded install matches the running container, the
    credential generation and ``respond.py``, unless ``force``.
    """
    scenario = state.scenario()
    ws = workstation_node(scenario, node)
    creds = load_credentials(state)
    wanted = sorted(creds) if teams is None else sorted(set(teams))
    missing = [t for t in wanted if t not in creds]
    if missing:
        raise UsageError(
            f"team {missing[0]} of range '{state.name}' has no credentials", fix="run `rangectl up` again"
        )
    be = backends.for_range(state)
    digest = _digest(respond_script()) + _digest(playbook_path())[:8]
    operate = operated_nodes(scenario, ws)
    todo: list[int] = []
    wants: dict[int, dict] = {}
    res = InstallResult(ok=True)
    for t in wanted:
        info = be.node(NodeRef(state.name, t, ws))
        if not info.running:
            raise RangeError(
                f"team {t}'s workstation '{ws}' is not running ({info.state})", fix="run `rangectl up` again"
            )
        want = {"container": info.id, "generation": creds[t].generation, "respond": digest, "node": ws}
        if operate:
            keys = ensure_operate_keys(state, t)
            (keys / "ssh_config").write_text(operate_ssh_config(t, operate_ports(scenario, ws)))
            want["operated"] = {}
            for n in operate:
                o = be.node(NodeRef(state.name, t, n))
                if not o.running:
                    raise RangeError(
                        f"team {t}'s node '{n}' (operated from '{ws}') is not running ({o.state})",
                        fix=f"rangectl reset {state.name} {n} --team {t}",
                    )
                want["operated"][n] = o.id
        wants[t] = want
        if not force and marker(state, t) == want:
            res.skipped.append(t)
        else:
            todo.append(t)
    if not todo:
        return res
    full = state.plan()
    plan = Plan(full.scenario, full.scenario_hash, [full.team(t) for t in todo])
    nodes = {}
    common = {
        "respond_install_dir": str(install_dir(state)),
        "respond_script": str(respond_script()),
        "respond_ssh_port": WS_SSH_PORT,
        "respond_login_grace": SSHD_LOGIN_GRACE,
        "respond_max_startups": SSHD_MAX_STARTUPS,
        "respond_kill_sessions": bool(kill_sessions),
    }
    ports = operate_ports(scenario, ws)
    for name, spec in scenario.nodes.items():
        if name == ws:
            role = {
                "respond_role": "workstation",
                "respond_operate": [{"name": n, "port": p} for n, p in ports.items()],
            }
        elif name in ports:
            role = {"respond_role": "operated", "respond_kill_sessions": False}
        else:
            nodes[name] = spec.model_copy(update={"provision": []})
            continue
        nodes[name] = spec.model_copy(
            update={"provision": [str(playbook_path())], "vars": {**spec.vars, **common, **role}}
        )
    sc = scenario.model_copy(update={"nodes": nodes})
    work = state.dir / "access" / "ansible"
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work.parent, 0o700)
    pr = provision(state.name, sc, plan, state.source_path, note=note, workdir=work, backend=be)
    res.seconds = pr.seconds
    res.ok = pr.ok
    res.failures = pr.failures
    if pr.ok:
        for t in todo:
            state.update(**{f"access_installed_t{t}": wants[t]})
        res.teams = todo
    return res


# The team's sshd listener, found through /proc: never through a file trainees can replace (they are
# root in the workstation; a FIFO where a pid file was would block a reader). Prints its pids. The
# listener renames itself "sshd: <its command line> [listener] ..."; its per-connection children
# rename themselves "sshd: user@pts/0" and the like, or carry -R while they start.
SSHD_FIND = (
    "for d in /proc/[0-9]*; do "
    "case \"$(tr '\\000' ' ' < \"$d/cmdline\" 2>/dev/null)\" in "
    "*' -R '*|*' -R') ;; "
    "'/usr/sbin/sshd -f /etc/rangectl/sshd_config '*|'sshd: /usr/sbin/sshd -f /etc/rangectl/sshd_config '*) "
    'echo "${d#/proc/}" ;; '
    "esac; done"
)

# A quick repair the serve process runs through `docker exec` (with a deadline: SSHD_REPAIR_TIMEOUT)
# when a team's sshd is not answering: start it unless its listener is running. No pid file is read
# or written (-o PidFile=none), so nothing in the workstation can make this wait.
SSHD_RESTART = (
    "[ -f /etc/rangectl/sshd_config ] || exit 3; [ -x /usr/sbin/sshd ] || exit 4; "
    f"pids=$({SSHD_FIND}); "
    '[ -n "$pids" ] && exit 0; '
    "mkdir -p /run/sshd && exec /usr/sbin/sshd -f /etc/rangectl/sshd_config -o PidFile=none "
    "-E /var/log/rangectl-sshd.log"
)
