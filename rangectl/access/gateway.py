"""The ways into a team's workstation that do not need the host on the range's networks.

Range networks are Docker *internal* bridges and the host has no address on
them, so nothing on the host can route to a workstation. Instead:

* **API inside the workstation** — for each team, a listening socket is made
  *inside the workstation's network namespace* (``127.0.0.1:8780`` there),
  through the backend's execution seam (a pinned :class:`~rangectl.backend.nodeexec.NodePort`). Each connection is piped to the API's
  private Unix socket. Only processes in that container can connect.
* **SSH to the workstation** — for each team, a TCP port on the host
  (``--ssh-bind ADDR``, port ``base + K``). Each connection gets a socket made
  inside team K's workstation namespace, connected to the team's sshd on
  ``127.0.0.1:8722`` there, and the two are piped together. A forwarder
  only ever connects to its own team's workstation.

No team can take another's SSH slots (docs/access.md): a team's port takes at
most :data:`MAX_SSH_CONNS` connections, at most :data:`MAX_SSH_PREAUTH_PER_SOURCE`
of them from one source address (IPv6: one /64) while they are younger than
:data:`SSH_PREAUTH_SECONDS` (sshd cuts a connection that has not logged in by
then, so an older one is a logged-in session); a client that sends nothing for
:data:`SSH_FIRST_BYTES_SECONDS` is dropped before sshd ever sees it.

A watcher re-resolves each workstation every few seconds: when a container
was re-created (new namespace), the in-namespace listener is opened again;
when the team's sshd does not answer, it is restarted with the backend's exec.
Each team has its own watcher task, every blocking call it makes runs on a
daemon thread with a deadline (the repair exec has one of its own too), and a
team's call still running is never started twice: a team whose workstation
stalls its repair delays nobody else, and closing never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rangectl.access.install import (
    INSTALL_REPAIR_TIMEOUT,
    SSHD_LOGIN_GRACE,
    SSHD_MAX_STARTUPS,
    SSHD_REPAIR_TIMEOUT,
    SSHD_RESTART,
    WS_API_PORT,
    WS_SSH_PORT,
)
from rangectl.backend.nodeexec import NodePort
from rangectl.errors import RangeError

log = logging.getLogger("rangectl.access.gateway")

PIPE_CHUNK = 65536
MAX_API_CONNS = 64  # per team, through the in-workstation listener
MAX_OPERATE_CONNS = 16  # per team and operated node, through its listener in the workstation
MAX_SSH_CONNS = SSHD_MAX_STARTUPS  # per team, all sources together (sshd takes as many unauthenticated)
MAX_SSH_PREAUTH_PER_SOURCE = 4  # per team and source address: connections not yet past the login window
SSH_FIRST_BYTES_SECONDS = 5.0  # a client must send its first bytes (its SSH version line) by then
SSH_PREAUTH_SECONDS = SSHD_LOGIN_GRACE + 2.0  # younger connections may still be unauthenticated
SSH_CONNECT_SECONDS = 10.0  # to reach the team's sshd inside the workstation
RESOLVE_TIMEOUT = 15.0  # seconds for finding a team's workstation (Docker API) or opening its listener
NETNS_TIMEOUT = 5.0  # seconds for making a socket inside a namespace


class Late(TimeoutError):
    """A blocking call that did not finish by its deadline (it goes on, alone, on its daemon thread)."""


async def in_thread(
    fn: Callable[..., Any], *args: Any, timeout: float, busy: set | None = None, key: str = ""
) -> Any:
    """``fn(*args)`` on a daemon thread, awaited for at most ``timeout`` seconds.

    Not the loop's default executor: a call that never returns would hold one of its few threads
    for good and ``asyncio.Runner`` waits for them all when it closes. With ``busy`` (a set owned by
    the caller) a ``key`` still running from an earlier call raises :class:`Late` at once instead of
    starting a second one.
    """
    loop = asyncio.get_running_loop()
    if busy is not None:
        if key in busy:
            raise Late(f"{key}: the previous call is still running")
        busy.add(key)
    fut: asyncio.Future = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        try:
            res, ok = fn(*args), True
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            res, ok = exc, False
        finally:
            if busy is not None:
                busy.discard(key)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, ok, res)

    threading.Thread(
        target=run, name=f"rangectl-gw-{key or getattr(fn, '__name__', 'call')}", daemon=True
    ).start()
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        fut.cancel()
        raise Late(f"{key or getattr(fn, '__name__', 'call')}: no answer within {timeout:g}s") from None


def source_key(peer: Any) -> str:
    """Who a connection comes from, for the per-source cap: the IPv4 address, or the IPv6 /64."""
    host = peer[0] if isinstance(peer, tuple | list) and peer else str(peer)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(PIPE_CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass


async def sshd_stream(port: NodePort) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the sshd on 127.0.0.1 inside ``port``'s node (its socket made in that namespace)."""
    sock = await in_thread(
        port.connect, "127.0.0.1", WS_SSH_PORT, SSH_CONNECT_SECONDS, timeout=NETNS_TIMEOUT + SSH_CONNECT_SECONDS
    )
    try:
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    """Copy both ways until both sides are done, then close both."""
    try:
        await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))
    finally:
        for w in (a[1], b[1]):
            with contextlib.suppress(Exception):
                w.close()


@dataclass
class TeamGate:
    team: int
    port: NodePort | None = None  # the workstation's network, pinned (rangectl.backend.nodeexec)
    container: str | None = None
    api_server: asyncio.base_events.Server | None = None
    ssh_server: asyncio.base_events.Server | None = None
    api_conns: int = 0
    ssh_conns: int = 0
    ssh_preauth: dict[str, int] = field(default_factory=dict)  # source -> young connections from it
    ssh_refused: int = 0
    operate_servers: dict[str, asyncio.base_events.Server] = field(default_factory=dict)  # node -> listener
    operate_conns: dict[str, int] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)  # blocking calls of this team still running
    problems: list[str] = field(default_factory=list)


Attach = Callable[[int], NodePort]  # team -> its workstation's network, pinned (raises when it is down)
Exec = Callable[
    [int, list[str], float], int
]  # (team, argv, deadline in seconds) -> exit code in its workstation
AttachNode = Callable[[int, str], NodePort]  # (team, node) -> that node's network, pinned
ExecNode = Callable[[int, str, list[str], float], int]  # (team, node, argv, deadline) -> exit code there
Reinstall = Callable[[int], bool]  # team -> True when its access was installed again (install_access)


class Gateway:
    """Per-team in-workstation API listeners and SSH forwarders, in one asyncio loop."""

    def __init__(
        self,
        teams: list[int],
        api_unix_path: str,
        attach: Attach,
        exec_in: Exec | None = None,
        ssh_bind: str | None = "127.0.0.1",
        ssh_base: int = 2200,
        api_in_workstation: bool = True,
        watch_seconds: float = 5.0,
        on_event: Callable[[str, int, str], None] | None = None,
        repair_timeout: float = SSHD_REPAIR_TIMEOUT,
        operate: dict[str, int] | None = None,
        attach_node: AttachNode | None = None,
        exec_node: ExecNode | None = None,
        reinstall: Reinstall | None = None,
    ):
        self.teams = teams
        self.api_unix_path = api_unix_path
        self.attach = attach
        self.exec_in = exec_in
        self.ssh_bind = ssh_bind
        self.ssh_base = ssh_base
        self.api_in_workstation = api_in_workstation
        self.watch_seconds = watch_seconds
        self.repair_timeout = repair_timeout
        self.on_event = on_event or (lambda kind, team, text: None)
        self.operate = dict(operate or {}) if attach_node is not None else {}
        self.attach_node = attach_node
        self.exec_node = exec_node
        self.reinstall = reinstall
        self.gates = {t: TeamGate(t) for t in teams}
        self._watch: dict[int, asyncio.Task] = {}
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.gather(*(self._refresh_guarded(t) for t in self.teams))
        if self.ssh_bind:
            for t in self.teams:
                g = self.gates[t]
                sock = socket.socket(
                    socket.AF_INET6 if ":" in self.ssh_bind else socket.AF_INET, socket.SOCK_STREAM
                )
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.ssh_bind, self.ssh_base + t))
                except OSError as exc:
                    sock.close()
                    raise OSError(
                        exc.errno,
                        f"cannot listen on {self.ssh_bind}:{self.ssh_base + t} for team {t}'s SSH: {exc.strerror}",
                    ) from None
                sock.listen(128)
                sock.setblocking(False)
                g.ssh_server = await asyncio.start_server(
                    lambda r, w, team=t: self._ssh_conn(team, r, w), sock=sock
                )
        for t in self.teams:
            self._watch[t] = asyncio.create_task(self._watcher(t), name=f"rangectl-watch-t{t}")

    async def close(self) -> None:
        """Stop watching and listening. Never waits on a team's blocking call (those run on daemon threads)."""
        self._closing = True
        for task in self._watch.values():
            task.cancel()
        if self._watch:
            await asyncio.wait(list(self._watch.values()), timeout=2)
        for g in self.gates.values():
            for srv in (g.api_server, g.ssh_server, *g.operate_servers.values()):
                if srv is not None:
                    srv.close()
            g.api_server = g.ssh_server = None
            g.operate_servers.clear()
            self._unpin(g)

    @staticmethod
    def _unpin(g: TeamGate) -> None:
        if g.port is not None:
            g.port.close()
        g.port = None

    def status(self) -> dict[int, dict]:
        return {
            t: {
                "container": (g.container or "")[:12],
                "api_in_workstation": g.api_server is not None,
                "ssh": f"{self.ssh_bind}:{self.ssh_base + t}" if g.ssh_server is not None else None,
                "ssh_connections": g.ssh_conns,
                "ssh_refused": g.ssh_refused,
                "operate": {n: self.operate[n] for n in g.operate_servers},
                "problems": list(g.problems[-3:]),
            }
            for t, g in self.gates.items()
        }

    # -- resolving workstations ----------------------------------------------------------------
    async def _refresh_guarded(self, team: int) -> None:
        try:
            await self._refresh(team)
        except Late as exc:
            self._problem(self.gates[team], f"workstation not reachable: {exc}")

    async def _refresh(self, team: int) -> None:
        g = self.gates[team]
        try:
            port = await in_thread(self.attach, team, timeout=RESOLVE_TIMEOUT, busy=g.busy, key="resolve")
        except Late:
            raise
        except Exception as exc:  # noqa: BLE001 - the workstation is down; try again later
            self._problem(g, f"workstation not reachable: {exc}")
            return
        if (
            g.port is not None
            and port.identity == g.port.identity
            and (g.api_server is not None or not self.api_in_workstation)
            and len(g.operate_servers) == len(self.operate)
        ):
            port.close()
            return
        for srv in (g.api_server, *g.operate_servers.values()):
            if srv is not None:
                srv.close()
        g.api_server = None
        g.operate_servers.clear()
        self._unpin(g)
        g.port, g.container = port, str(port.identity[0])
        if self.api_in_workstation:
            try:
                sock = await in_thread(port.listen, "127.0.0.1", WS_API_PORT, 32, timeout=NETNS_TIMEOUT)
            except OSError as exc:
                self._problem(g, f"cannot open the API inside the workstation: {exc}")
                self._unpin(g)  # try again on the next pass
                return
            g.api_server = await asyncio.start_server(lambda r, w, t=team: self._api_conn(t, r, w), sock=sock)
            self.on_event("api", team, f"API on 127.0.0.1:{WS_API_PORT} inside container {g.container[:12]}")
        for node, p in self.operate.items():
            try:
                sock = await in_thread(port.listen, "127.0.0.1", p, 16, timeout=NETNS_TIMEOUT)
            except OSError as exc:
                self._problem(g, f"cannot open `ssh {node}` inside the workstation (127.0.0.1:{p}): {exc}")
                continue  # the next pass tries again (the counts differ)
            g.operate_servers[node] = await asyncio.start_server(
                lambda r, w, t=team, n=node: self._operate_conn(t, n, r, w), sock=sock
            )
        if g.operate_servers:
            self.on_event("operate", team, f"ssh {', ssh '.join(g.operate_servers)} from the workstation")

    def _problem(self, g: TeamGate, text: str) -> None:
        if not g.problems or g.problems[-1] != text:
            g.problems.append(text)
            del g.problems[:-10]
            self.on_event("problem", g.team, text)

    async def _watcher(self, team: int) -> None:
        """One team's watch loop: its own task, so nothing it waits on holds up another team."""
        g = self.gates[team]
        while not self._closing:
            await asyncio.sleep(self.watch_seconds)
            try:
                await self._refresh(team)
                if self.ssh_bind:
                    await self._check_sshd(team)
                for node in self.operate:
                    await self._check_operated(team, node)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep watching
                self._problem(g, f"watcher: {exc}")

    async def _check_sshd(self, team: int) -> None:
        g = self.gates[team]
        if g.port is None or self.exec_in is None:
            return
        if await self._sshd_answers(g):
            return
        try:
            # the exec has its own deadline (enforced by the backend); this one is the backstop
            code = await in_thread(
                self.exec_in,
                team,
                ["/bin/sh", "-c", SSHD_RESTART],
                self.repair_timeout,
                timeout=self.repair_timeout + 5,
                busy=g.busy,
                key="sshd-repair",
            )
        except Late as exc:
            self._problem(g, f"sshd repair did not finish in time ({exc})")
            return
        if code == 0:
            self.on_event("sshd", team, "sshd restarted in the workstation")
        elif code == 3:  # no sshd configuration: a re-created workstation; install access again
            await self._reinstall(team, "the workstation was re-created")
        elif code == 124:
            self._problem(
                g, f"sshd repair in the workstation was killed at its {self.repair_timeout:g}s deadline"
            )
        else:
            self._problem(g, f"sshd is not running in the workstation and could not be started (exit {code})")

    async def _reinstall(self, team: int, why: str) -> None:
        g = self.gates[team]
        if self.reinstall is None:
            self._problem(g, f"{why}: access needs installing again (restart `rangectl serve`)")
            return
        try:
            ok = await in_thread(
                self.reinstall, team, timeout=INSTALL_REPAIR_TIMEOUT, busy=g.busy, key="reinstall"
            )
        except Late as exc:
            self._problem(g, f"{why}; installing access again did not finish ({exc})")
            return
        except Exception as exc:  # noqa: BLE001 - keep watching; the next pass tries again
            self._problem(g, f"{why}; installing access again failed: {exc}")
            return
        if ok:
            self.on_event("install", team, f"{why}: access installed again")
        else:
            self._problem(g, f"{why}; installing access again failed")

    async def _check_operated(self, team: int, node: str) -> None:
        """An operated node whose sshd does not answer: restart it, or install it again (a reset node)."""
        g = self.gates[team]
        if self.attach_node is None or "reinstall" in g.busy:
            return
        try:
            port = await in_thread(
                self.attach_node, team, node, timeout=RESOLVE_TIMEOUT, busy=g.busy, key=f"op-{node}"
            )
        except Exception:  # noqa: BLE001 - the node is down (a reset under way): try on the next pass
            return
        try:
            if await self._sshd_answers(g, port):
                return
        finally:
            port.close()
        code = None
        if self.exec_node is not None:
            try:
                code = await in_thread(
                    self.exec_node,
                    team,
                    node,
                    ["/bin/sh", "-c", SSHD_RESTART],
                    self.repair_timeout,
                    timeout=self.repair_timeout + 5,
                    busy=g.busy,
                    key=f"sshd-repair-{node}",
                )
            except Late as exc:
                self._problem(g, f"sshd repair on '{node}' did not finish in time ({exc})")
                return
        if code == 0:
            self.on_event("sshd", team, f"sshd restarted on '{node}'")
        else:
            await self._reinstall(team, f"'{node}' has no operator sshd (re-created?)")

    async def _operate_conn(
        self, team: int, node: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """``ssh NODE`` from the workstation: to the sshd on 127.0.0.1 inside the team's own NODE."""
        g = self.gates[team]
        if g.operate_conns.get(node, 0) >= MAX_OPERATE_CONNS or self.attach_node is None:
            writer.close()
            return
        g.operate_conns[node] = g.operate_conns.get(node, 0) + 1
        try:
            port = await in_thread(self.attach_node, team, node, timeout=RESOLVE_TIMEOUT)
            try:
                up = await sshd_stream(port)
            finally:
                port.close()
            await splice((reader, writer), up)
        except Exception as exc:  # noqa: BLE001 - this connection fails; others go on
            self._problem(g, f"`ssh {node}` failed: {exc}")
            writer.close()
        finally:
            g.operate_conns[node] -= 1

    async def _sshd_answers(self, g: TeamGate, port: NodePort | None = None) -> bool:
        try:
            port = port or g.port
            if port is None:
                return False
            sock = await in_thread(port.connect, "127.0.0.1", WS_SSH_PORT, 3, timeout=NETNS_TIMEOUT + 3)
        except (TimeoutError, OSError, RangeError):
            return False
        sock.close()
        return True

    # -- connections ------------------------------------------------------------------------------------
    async def _api_conn(self, team: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        g = self.gates[team]
        if g.api_conns >= MAX_API_CONNS:
            writer.close()
            return
        g.api_conns += 1
        try:
            up = await asyncio.open_unix_connection(self.api_unix_path)
            await splice((reader, writer), up)
        except OSError:
            writer.close()
        finally:
            g.api_conns -= 1

    def _refuse(self, g: TeamGate, writer: asyncio.StreamWriter, why: str) -> None:
        g.ssh_refused += 1
        self._problem(g, f"SSH connection refused: {why}")
        writer.close()

    async def _ssh_conn(self, team: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        g = self.gates[team]
        src = source_key(writer.get_extra_info("peername"))
        if g.port is None:
            writer.close()
            return
        if g.ssh_conns >= MAX_SSH_CONNS:
            self._refuse(g, writer, f"the team's port has {MAX_SSH_CONNS} connections open")
            return
        if g.ssh_preauth.get(src, 0) >= MAX_SSH_PREAUTH_PER_SOURCE:
            self._refuse(g, writer, f"{src} has {MAX_SSH_PREAUTH_PER_SOURCE} connections not yet logged in")
            return
        loop = asyncio.get_running_loop()
        g.ssh_conns += 1
        g.ssh_preauth[src] = g.ssh_preauth.get(src, 0) + 1
        young = [True]

        def grown_up() -> None:  # past sshd's login window: a logged-in session, no longer pre-auth
            if young[0]:
                young[0] = False
                left = g.ssh_preauth.get(src, 1) - 1
                if left > 0:
                    g.ssh_preauth[src] = left
                else:
                    g.ssh_preauth.pop(src, None)

        timer = loop.call_later(SSH_PREAUTH_SECONDS, grown_up)
        try:
            # nothing reaches sshd before the client speaks: a silent connection costs sshd nothing
            try:
                first = await asyncio.wait_for(reader.read(PIPE_CHUNK), SSH_FIRST_BYTES_SECONDS)
            except TimeoutError:
                writer.close()
                return
            if not first:
                writer.close()
                return
            port = g.port
            if port is None:
                writer.close()
                return
            ur, uw = await sshd_stream(port)
            uw.write(first)
            await splice((reader, writer), (ur, uw))
        except (TimeoutError, OSError) as exc:
            self._problem(g, f"SSH connection to the workstation failed: {exc}")
            writer.close()
        finally:
            timer.cancel()
            grown_up()
            g.ssh_conns -= 1
