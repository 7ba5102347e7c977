"""Put each team's way in into its blue workstation: ``respond``, the team's token, sshd and keys.

Done through the backend contract, as any engine runs it (a swarm's remote engines included):
the files go in with :meth:`Backend.copy_in` (one archive per folder and mode, root-owned),
then one ``exec`` per node (with a deadline) puts the sshd configuration in place and starts
sshd, or reloads it when its configuration changed. Nodes are done in parallel. It used to
be an Ansible playbook: 13 tasks, about 20 module runs per node, 53 s for a 2-team
platform-takedown range on this 2-core machine; now 3.2 s (docs/access.md, "Install time").

On a team's blue workstation:
  /usr/local/bin/respond        the team's CLI client (rangectl/node_files/respond.py)
  /etc/rangectl/respond.env     the team's API token (0600), for respond
  /etc/rangectl/ssh/            authorized_keys (the team's public key) and the team's sshd host key
  /etc/rangectl/sshd_config     sshd on 127.0.0.1:8722 only: keys only, no forwarding
  /etc/rangectl/operate_key and /etc/ssh/ssh_config.d/rangectl-operate.conf: `ssh NODE` for
                                each node the scenario lets the team operate (`operate:`)
On each node the team operates: the same sshd, on 127.0.0.1:8722 of that node only, taking the
team's operate key; `serve` pipes 127.0.0.1:8800+i of the workstation to it.

Secrets are read from files (``$STATE/access/install/team-K/``, 0700) and travel only in the
engine API's archive stream: never on a command line, in the environment or in a log.
Trainees are root in the workstation and may replace any file in it, so the start script reads
no file they could swap for a FIFO (sshd writes no pid file; its listener is found through
/proc) and runs with a deadline.

An install is recorded per team (container id, credential generation, ``respond.py`` and this
module's digests) in the range's metadata, so ``serve`` re-runs it only for a team whose
workstation was re-created, whose credential was rotated, or when ``respond`` changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rangectl import backend as backends
from rangectl.access.credentials import install_dir, load_credentials, private_dir, ssh_keypair, write_secret
from rangectl.backend.base import NodeRef
from rangectl.errors import RangeError, UsageError
from rangectl.scenario.model import Scenario
from rangectl.state import RangeState

WS_API_PORT = 8780  # the API, on 127.0.0.1 inside each workstation
WS_SSH_PORT = 8722  # the team's sshd, on 127.0.0.1 inside each workstation (and each node it operates)
WS_OPERATE_BASE = 8800  # `ssh NODE`: 127.0.0.1:8800+i inside the workstation for the i-th operated node
# sshd limits (sshd_config below; docs/access.md). sshd sees every connection
# from 127.0.0.1 (the gateway), so per-source limits are the gateway's (rangectl.access.gateway).
SSHD_LOGIN_GRACE = 10  # seconds: a connection that has not logged in by then is cut (LoginGraceTime)
SSHD_MAX_STARTUPS = 64  # unauthenticated connections sshd accepts (MaxStartups): the gateway's team cap
SSHD_REPAIR_TIMEOUT = 20.0  # seconds: deadline of the watcher's sshd repair (a docker exec)
INSTALL_REPAIR_TIMEOUT = 300.0  # seconds: installing access again in a re-created node
INSTALL_EXEC_TIMEOUT = 30.0  # seconds: deadline of each node's start script (a docker exec)
INSTALL_WORKERS = 8  # nodes installed at once


def respond_script() -> Path:
    return Path(__file__).resolve().parent.parent / "node_files" / "respond.py"


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


def sshd_config(role: str) -> str:
    """The team's sshd configuration on its workstation (``role`` workstation) or on a node it operates."""
    return (
        f"# rangectl trainee access ({role}): reached only through `rangectl serve`'s per-team forwarder\n"
        f"Port {WS_SSH_PORT}\n"
        "ListenAddress 127.0.0.1\n"
        "HostKey /etc/rangectl/ssh/ssh_host_ed25519_key\n"
        "AuthorizedKeysFile /etc/rangectl/ssh/authorized_keys\n"
        "PidFile none\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "PermitEmptyPasswords no\n"
        "StrictModes yes\n"
        "MaxAuthTries 3\n"
        "MaxSessions 10\n"
        "# every connection comes from the gateway on 127.0.0.1, so a per-source limit here would be a\n"
        "# limit for everyone: the gateway caps connections per real source (docs/access.md)\n"
        f"MaxStartups {SSHD_MAX_STARTUPS}\n"
        "PerSourceMaxStartups none\n"
        f"LoginGraceTime {SSHD_LOGIN_GRACE}\n"
        "AllowTcpForwarding no\n"
        "AllowStreamLocalForwarding no\n"
        "AllowAgentForwarding no\n"
        "GatewayPorts no\n"
        "PermitTunnel no\n"
        "X11Forwarding no\n"
        "PermitUserEnvironment no\n"
        f"PrintMotd {'yes' if role == 'workstation' else 'no'}\n"
        "Subsystem sftp internal-sftp\n"
    )


def motd(range_name: str, team: int, operate: list[str]) -> str:
    """The workstation's login banner."""
    nodes = (
        f"Your nodes: {', '.join(f'ssh {n}' for n in operate)} (and scp); every command is recorded.\n"
        if operate
        else ""
    )
    return (
        f"\nTeam {team} workstation ({range_name}). Talk to the drill with `respond`:\n"
        "  respond briefing | messages | objectives | submit ID ANSWER | hint ID | report FILE | score | board\n"
        "(respond --lang vi ... for Vietnamese; respond --help for more)\n" + nodes
    )


def node_files(state: RangeState, scenario: Scenario, team: int, ws: str, role: str) -> list[tuple[str, int, dict[str, bytes]]]:
    """What goes into one node: [(folder, mode, {name: content})], read from the team's install folder."""
    d = install_dir(state) / f"team-{team}"
    keys = d if role == "workstation" else d / "operate"
    read = Path.read_bytes
    out: list[tuple[str, int, dict[str, bytes]]] = [
        ("/etc/rangectl/ssh", 0o600, {n: read(keys / n) for n in ("authorized_keys", "ssh_host_ed25519_key")}),
        ("/etc/rangectl/ssh", 0o644, {"ssh_host_ed25519_key.pub": read(keys / "ssh_host_ed25519_key.pub")}),
        ("/etc/rangectl", 0o644, {"sshd_config.new": sshd_config(role).encode()}),
    ]
    if role == "workstation":
        operate = operated_nodes(scenario, ws)
        out += [
            ("/usr/local/bin", 0o755, {"respond": read(respond_script())}),
            ("/etc/rangectl", 0o600, {"respond.env": read(d / "respond.env")}),
            ("/etc", 0o644, {"motd": motd(state.name, team, operate).encode()}),
        ]
        if operate:
            out += [
                ("/etc/rangectl", 0o600, {"operate_key": read(d / "operate" / "id_ed25519")}),
                ("/etc/rangectl", 0o644, {"operate_known_hosts": read(d / "operate" / "known_hosts")}),
                ("/etc/ssh/ssh_config.d", 0o644,
                 {"rangectl-operate.conf": operate_ssh_config(team, operate_ports(scenario, ws)).encode()}),
            ]  # fmt: skip
    return out


# Folders first (root-owned; /etc/rangectl/ssh private), so the archives have somewhere to go.
PREPARE = (
    "set -e; mkdir -p /etc/rangectl/ssh /run/sshd /usr/local/bin /etc/ssh/ssh_config.d; "
    "chown root:root /etc/rangectl /etc/rangectl/ssh; chmod 0755 /etc/rangectl /run/sshd; chmod 0700 /etc/rangectl/ssh"
)


def start_script(kill_sessions: bool) -> str:
    """Put the new sshd configuration in place; start the team's sshd, or reload it (HUP) when its
    configuration changed; after a rotation, end the sessions opened with the old key. Prints
    started, reloaded, running or no-sshd."""
    kill = (
        f'for pid in $({SSHD_FIND}); do pkill -TERM -P "$pid" || true; done; '
        if kill_sessions
        else ""
    )
    return (
        "set -e; c=/etc/rangectl/sshd_config; changed=1; "
        '[ -f "$c" ] && [ ! -L "$c" ] && cmp -s "$c.new" "$c" && changed=0; '
        'mv -f "$c.new" "$c"; '
        "[ -x /usr/sbin/sshd ] || { echo no-sshd; exit 0; }; "
        f"pid=$({SSHD_FIND}); pid=${{pid%%[!0-9]*}}; "
        'if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then '
        'if [ "$changed" = 1 ]; then kill -HUP "$pid"; echo reloaded; else echo running; fi; '
        'else /usr/sbin/sshd -t -f "$c"; /usr/sbin/sshd -f "$c" -E /var/log/rangectl-sshd.log; echo started; fi; '
        + kill
    )


def _install_node(be, state: RangeState, scenario: Scenario, team: int, ws: str, node: str, role: str,
                  kill_sessions: bool) -> dict[str, str] | None:  # fmt: skip
    """Install one node; None, or the failure as {host, task, message}."""
    ref = NodeRef(state.name, team, node)
    host = f"team {team} {node}"
    step = "folders"
    try:
        code, out = be.exec(ref, ["/bin/sh", "-c", PREPARE], INSTALL_EXEC_TIMEOUT)
        if code != 0:
            return {"host": host, "task": step, "message": f"exit {code}: {out.strip()[-200:]}"}
        for folder, mode, files in node_files(state, scenario, team, ws, role):
            step = f"copy {', '.join(files)} to {folder}"
            be.copy_in(ref, folder, files, mode)
        step = "start sshd"
        code, out = be.exec(ref, ["/bin/sh", "-c", start_script(kill_sessions and role == "workstation")],
                            INSTALL_EXEC_TIMEOUT)  # fmt: skip
        if code != 0:
            return {"host": host, "task": step, "message": f"exit {code}: {out.strip()[-200:]}"}
    except (RangeError, OSError) as exc:
        return {"host": host, "task": step, "message": getattr(exc, "message", None) or str(exc)}
    return None


def install_access(
    state: RangeState,
    teams: Iterable[int] | None = None,
    node: str | None = None,
    *,
    force: bool = False,
    kill_sessions: bool = False,
    note: Callable[[str, str, str], None] | None = None,
) -> InstallResult:
    """Install (or refresh) trainee access in the workstations of ``teams`` (default: all with
    credentials) and in the nodes they operate. ``note(kind, host, text)`` hears each node's
    outcome (``ok`` or ``failed``).

    Skips teams whose recorded install matches the running container, the
    credential generation and ``respond.py``, unless ``force``.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.monotonic()
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
    digest = _digest(respond_script()) + _digest(Path(__file__))[:8]
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
            ensure_operate_keys(state, t)
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
    jobs = [(t, ws, "workstation") for t in todo] + [(t, n, "operated") for t in todo for n in operate]
    with ThreadPoolExecutor(max_workers=min(INSTALL_WORKERS, len(jobs)), thread_name_prefix="rangectl-install") as pool:
        outcomes = list(pool.map(lambda j: _install_node(be, state, scenario, j[0], ws, j[1], j[2], kill_sessions), jobs))
    failed_teams = set()
    for (t, n, _role), failure in zip(jobs, outcomes, strict=True):
        if failure is not None:
            failed_teams.add(t)
            res.failures.append(failure)
        if note is not None:
            note("failed" if failure else "ok", f"team {t} {n}", failure["message"] if failure else "installed")
    res.ok = not res.failures
    for t in todo:
        if t not in failed_teams:
            state.update(**{f"access_installed_t{t}": wants[t]})
            res.teams.append(t)
    res.seconds = time.monotonic() - t0
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
