"""``rangectl serve``: the team API on a host address, inside each workstation, and SSH forwarders.

One asyncio loop runs uvicorn (the API on ``--bind`` and on a private Unix
socket in the range's state folder) and the :class:`~rangectl.access.gateway.Gateway`
(in-workstation listeners piped to that Unix socket, per-team SSH ports).
The process stops on SIGINT/SIGTERM, on ``stop`` (tests), or by itself when
the range is taken down (its state folder disappears).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from rangectl.access import credentials as creds
from rangectl.access.api import create_app
from rangectl.access.ratelimit import RateLimit
from rangectl.access.service import Settings, TeamService
from rangectl.backend import for_range as backend_for
from rangectl.backend.base import NodeRef
from rangectl.backend.nodeexec import NodePort
from rangectl.errors import RangeError, UsageError
from rangectl.state import RangeState

log = logging.getLogger("rangectl.access.server")

SWITCH_INTERVAL = 0.001
INSTALL_TIMEOUT = 900.0  # seconds for installing access in every workstation when `serve` starts


@dataclass
class ServeOptions:
    bind: str = creds.DEFAULT_API  # host:port for the API on the host ("" or None: no host listener)
    ssh_bind: str | None = creds.DEFAULT_SSH_HOST  # None: no SSH forwarders
    ssh_base: int = creds.DEFAULT_SSH_BASE
    workstations: bool = True  # in-workstation API listeners and SSH (needs Docker and root)
    node: str | None = None  # the workstation node (default: first blue workstation)
    install: bool = True  # install respond/credentials/sshd where missing or stale
    hide_board: bool = False
    rate: RateLimit = field(default_factory=RateLimit)
    max_body: int = 64 * 1024
    access_log: bool = False
    watch_seconds: float = 5.0
    lang: str = "en"  # default language of texts for teams
    record: bool = True  # record trainees' commands (rangectl.access.recording; needs root on the host)
    reset_fn: Any = None  # (node, team) -> dict: `respond reset NODE` (rangectl.ranges.reset_node, from the CLI)


def parse_bind(text: str, default_port: int = 8780) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        p = int(port)
    except ValueError:
        raise UsageError(f"'{text}' is not ADDR:PORT") from None
    if not 0 <= p < 65536:
        raise UsageError(f"port {p} is out of range")
    return host, p


def free_port_base(count: int, host: str = "127.0.0.1", start: int = 23100) -> int:
    """A port base with BASE+1..BASE+count free on ``host`` now (for each team's SSH port)."""
    for base in range(start, 60000, 97):
        socks = []
        try:
            for k in range(1, count + 1):
                s = socket.socket()
                s.bind((host, base + k))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise UsageError(f"no {count} free ports on {host}", fix="pass --ssh-port-base")


def api_socket_path(state: RangeState) -> Path:
    return state.dir / "access" / "api.sock"


def _unix_listener(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        s.bind(str(path))
    finally:
        os.umask(old)
    s.listen(128)
    s.setblocking(False)
    return s


def _tcp_listener(host: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as exc:
        s.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror}", fix="pick another --bind"
        ) from None
    s.listen(1024)
    s.setblocking(False)
    return s


class Served:
    """A running serve: what tests and the CLI look at."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.api_address: tuple[str, int] | None = None
        self.gateway = None
        self.install = None
        self.recording = None
        self.remote_recording = None


def serve(
    state: RangeState,
    opts: ServeOptions,
    served: Served | None = None,
    note: Callable[[str], None] | None = None,
) -> None:
    """Run until stopped. ``served.ready`` is set once every listener is open."""
    served = served or Served()
    note = note or (lambda text: None)
    # The event loop is the busiest thread; the scoring and refusal threads make many short SQLite
    # calls, each giving up the GIL and waiting to get it back. With the default 5 ms switch interval
    # those waits add up to 100+ ms tails under load; 1 ms keeps p99 low (bench/serve.py).
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_main(state, opts, served, note))
    except BaseException as exc:
        served.error = exc
        served.ready.set()
        raise


async def _main(state: RangeState, opts: ServeOptions, served: Served, note: Callable[[str], None]) -> None:
    import uvicorn

    loop = asyncio.get_running_loop()
    teams = sorted(creds.load_credentials(state))
    if not teams:
        raise UsageError(
            f"range '{state.name}' has no team credentials", fix="run `rangectl up` again (it makes them)"
        )
    settings = Settings(hide_board=opts.hide_board, rate=opts.rate, max_body=opts.max_body, lang=opts.lang)
    service = TeamService(state, settings)
    if opts.reset_fn is not None:
        from rangectl.access.resets import TeamResets

        service.resets = TeamResets(state, opts.reset_fn)
    app = create_app(service)
    sockets: list[socket.socket] = []
    if opts.bind:
        host, port = parse_bind(opts.bind)
        tcp = _tcp_listener(host, port)
        sockets.append(tcp)
        served.api_address = tcp.getsockname()[:2]
    unix_path = api_socket_path(state)
    sockets.append(_unix_listener(unix_path))
    ep = creds.endpoints(state)
    if served.api_address:
        ep.api = f"{served.api_address[0]}:{served.api_address[1]}"
    if opts.ssh_bind:
        ep.ssh_host, ep.ssh_base = opts.ssh_bind, opts.ssh_base
    creds.set_endpoints(state, ep)

    config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=opts.access_log,
        log_level="warning",
        timeout_keep_alive=15,
        limit_concurrency=1024,
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # signals are ours (below)
    gateway = recording = remote = None
    if opts.workstations and opts.record:
        from rangectl.access.recording import Recording, RemoteRecording

        backend = backend_for(state)
        recording = Recording(state, backend, note)
        recording.start()  # before the gateway: nothing a trainee runs goes unrecorded
        served.recording = recording
        # engines on other machines (a swarm's): their agents record their nodes' commands
        remote = RemoteRecording(state, backend, note)
        try:
            await asyncio.to_thread(remote.start)
        except RangeError as exc:
            note(f"commands on other engines are NOT recorded: {exc.message}")
        served.remote_recording = remote
    if opts.workstations:
        gateway = await _start_gateway(state, opts, teams, unix_path, note, served)
        served.gateway = gateway
    srv_task = asyncio.create_task(server.serve(sockets=sockets))
    for _ in range(200):
        if server.started or srv_task.done():
            break
        await asyncio.sleep(0.02)
    if srv_task.done():
        srv_task.result()
    served.ready.set()
    where = f"http://{ep.api}" if opts.bind else "(no host listener)"
    note(f"team API for range '{state.name}' ({len(teams)} team(s)) on {where}")
    stop_signal = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        for sig in (2, 15):
            loop.add_signal_handler(sig, stop_signal.set)
    try:
        while not (served.stop.is_set() or stop_signal.is_set() or srv_task.done()):
            if not state.db_path.exists():
                note(f"range '{state.name}' is gone (rangectl down): stopping")
                break
            await asyncio.sleep(0.2)
    finally:
        server.should_exit = True
        if gateway is not None:
            await gateway.close()
        if recording is not None:
            recording.close()
        if remote is not None:
            remote.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(srv_task, 10)
        with contextlib.suppress(Exception):  # the refusal summaries still open go to the record
            service.close()
        with contextlib.suppress(FileNotFoundError):
            unix_path.unlink()


async def _start_gateway(state, opts: ServeOptions, teams: list[int], unix_path: Path, note, served: Served):
    from rangectl.access.gateway import Gateway, Late, in_thread
    from rangectl.access.install import install_access, operate_ports, workstation_node

    be = backend_for(state)
    ws = workstation_node(state.scenario(), opts.node)
    if opts.install:
        note("installing respond, credentials and sshd in the workstations (where missing or stale)")
        # on a daemon thread, not the loop's executor: stopping `serve` never waits for a stuck install
        try:
            res = await in_thread(install_access, state, teams, ws, timeout=INSTALL_TIMEOUT, key="install")
            if not res.ok:
                # one more pass for the teams not done: an engine under load sometimes fails an exec
                # or a copy; the teams it installed are recorded and skipped
                f = res.failures[0] if res.failures else {"host": "-", "task": "-", "message": "failed"}
                note(f"install failed on {f['host']} at '{f['task']}'; trying once more")
                res = await in_thread(install_access, state, teams, ws, timeout=INSTALL_TIMEOUT, key="install")
        except Late:
            from rangectl.access.install import InstallResult

            res = InstallResult(
                ok=False,
                failures=[
                    {"host": "-", "task": "install", "message": f"not done within {INSTALL_TIMEOUT:g}s"}
                ],
            )
        served.install = res
        if not res.ok:
            f = res.failures[0] if res.failures else {"host": "-", "task": "-", "message": "failed"}
            note(f"install failed on {f['host']} at '{f['task']}': {f['message']}")
        elif res.teams:
            note(f"installed for team(s) {', '.join(map(str, res.teams))}")

    def attach(team: int) -> NodePort:
        return be.nodes_exec.attach(NodeRef(state.name, team, ws))

    def exec_in(team: int, argv: list[str], timeout: float) -> int:
        # an absolute deadline, enforced by the backend (the exec is killed at it): a repair in a
        # workstation trainees have tampered with cannot hang (rangectl.backend.execs)
        return be.exec(NodeRef(state.name, team, ws), argv, timeout)[0]

    def attach_node(team: int, node: str) -> NodePort:
        return be.nodes_exec.attach(NodeRef(state.name, team, node))

    def exec_node(team: int, node: str, argv: list[str], timeout: float) -> int:
        return be.exec(NodeRef(state.name, team, node), argv, timeout)[0]

    def reinstall(team: int) -> bool:
        return install_access(state, [team], ws).ok

    gw = Gateway(
        teams,
        str(unix_path),
        attach,
        exec_in,
        ssh_bind=opts.ssh_bind,
        ssh_base=opts.ssh_base,
        watch_seconds=opts.watch_seconds,
        on_event=lambda kind, team, text: note(f"team {team}: {text}"),
        operate=operate_ports(state.scenario(), ws),
        attach_node=attach_node,
        exec_node=exec_node,
        reinstall=reinstall if opts.install else None,
    )
    await gw.start()
    return gw


def serve_in_thread(
    state: RangeState, opts: ServeOptions, note: Callable[[str], None] | None = None
) -> tuple[threading.Thread, Served]:
    """Start ``serve`` in a thread (tests); wait on ``served.ready``; set ``served.stop`` to end it."""
    served = Served()

    def run() -> None:
        with contextlib.suppress(BaseException):
            serve(state, opts, served, note)

    t = threading.Thread(target=run, name=f"rangectl-serve-{state.name}", daemon=True)
    t.start()
    return t, served
