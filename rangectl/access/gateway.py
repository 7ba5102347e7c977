"""The ways into a team's workstation that do not need the host on the range's networks.

Range networks are Docker *internal* bridges and the host has no address on
them, so nothing on the host can route to a workstation. Instead:

* **API inside the workstation** — for each team, a listening socket is made
  *inside the workstation's network namespace* (``127.0.0.1:8780`` there; see
  :mod:`rangectl.access.netns`). Each connection is piped to the API's
  private Unix socket. Only processes in that container can connect.
* **SSH to the workstation** — for each team, a TCP port on the host
  (``--ssh-bind ADDR``, port ``base + K``). Each connection gets a socket made
  inside team K's workstation namespace, connected to the team's sshd on
  ``127.0.0.1:8722`` there, and the two are piped together. A forwarder
  only ever connects to its own team's workstation.

A watcher re-resolves each workstation every few seconds: when a container
was re-created (new namespace), the in-namespace listener is opened again;
when the team's sshd does not answer, it is restarted with ``docker exec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from rangectl.access import netns
from rangectl.access.install import SSHD_RESTART, WS_API_PORT, WS_SSH_PORT

log = logging.getLogger("rangectl.access.gateway")

PIPE_CHUNK = 65536
MAX_API_CONNS = 64  # per team, through the in-workstation listener
MAX_SSH_CONNS = 16  # per team


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
    netns_path: str | None = None  # /proc/self/fd/N of ns_fd: the namespace, pinned
    netns_id: tuple[int, int] | None = None
    ns_fd: int | None = None
    container: str | None = None
    api_server: asyncio.base_events.Server | None = None
    ssh_server: asyncio.base_events.Server | None = None
    api_conns: int = 0
    ssh_conns: int = 0
    problems: list[str] = field(default_factory=list)


Resolve = Callable[[int], tuple[str, int]]  # team -> (container id, pid of its init process)
Exec = Callable[[str, list[str]], int]  # (container id, argv) -> exit code


class Gateway:
    """Per-team in-workstation API listeners and SSH forwarders, in one asyncio loop."""

    def __init__(
        self,
        teams: list[int],
        api_unix_path: str,
        resolve: Resolve,
        exec_in: Exec | None = None,
        ssh_bind: str | None = "127.0.0.1",
        ssh_base: int = 2200,
        api_in_workstation: bool = True,
        watch_seconds: float = 5.0,
        on_event: Callable[[str, int, str], None] | None = None,
    ):
        self.teams = teams
        self.api_unix_path = api_unix_path
        self.resolve = resolve
        self.exec_in = exec_in
        self.ssh_bind = ssh_bind
        self.ssh_base = ssh_base
        self.api_in_workstation = api_in_workstation
        self.watch_seconds = watch_seconds
        self.on_event = on_event or (lambda kind, team, text: None)
        self.gates = {t: TeamGate(t) for t in teams}
        self._watch: asyncio.Task | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for t in self.teams:
            await self._refresh(t, loop)
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
                sock.listen(32)
                sock.setblocking(False)
                g.ssh_server = await asyncio.start_server(
                    lambda r, w, team=t: self._ssh_conn(team, r, w), sock=sock
                )
        self._watch = asyncio.create_task(self._watcher())

    async def close(self) -> None:
        self._closing = True
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        for g in self.gates.values():
            for srv in (g.api_server, g.ssh_server):
                if srv is not None:
                    srv.close()
            g.api_server = g.ssh_server = None
            self._unpin(g)

    @staticmethod
    def _unpin(g: TeamGate) -> None:
        if g.ns_fd is not None:
            with contextlib.suppress(OSError):
                os.close(g.ns_fd)
        g.ns_fd = None
        g.netns_path = None
        g.netns_id = None

    def status(self) -> dict[int, dict]:
        return {
            t: {
                "container": (g.container or "")[:12],
                "api_in_workstation": g.api_server is not None,
                "ssh": f"{self.ssh_bind}:{self.ssh_base + t}" if g.ssh_server is not None else None,
                "problems": list(g.problems[-3:]),
            }
            for t, g in self.gates.items()
        }

    # -- resolving workstations ----------------------------------------------------------------
    async def _refresh(self, team: int, loop: asyncio.AbstractEventLoop) -> None:
        g = self.gates[team]
        try:
            cid, pid = await loop.run_in_executor(None, self.resolve, team)
        except Exception as exc:  # noqa: BLE001 - the workstation is down; try again later
            self._problem(g, f"workstation not reachable: {exc}")
            return
        nid = netns.netns_id(f"/proc/{pid}/ns/net")
        if (
            nid is not None
            and nid == g.netns_id
            and (g.api_server is not None or not self.api_in_workstation)
        ):
            return
        # pin the namespace with an open fd, then check the pid still is the container's: a recycled
        # pid can never send a team's traffic into some other namespace
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._problem(g, f"cannot open the workstation's namespace: {exc}")
            return
        try:
            cid2, pid2 = await loop.run_in_executor(None, self.resolve, team)
        except Exception:  # noqa: BLE001
            cid2, pid2 = None, None
        if (cid2, pid2) != (cid, pid):
            os.close(fd)
            return  # changed under us: next pass
        st = os.fstat(fd)
        old = g.api_server
        if old is not None:
            old.close()
            g.api_server = None
        self._unpin(g)
        g.ns_fd, g.netns_path, g.netns_id, g.container = (
            fd,
            f"/proc/self/fd/{fd}",
            (st.st_dev, st.st_ino),
            cid,
        )
        path = g.netns_path
        if self.api_in_workstation:
            try:
                sock = await loop.run_in_executor(
                    None, netns.listen_in_netns, path, "127.0.0.1", WS_API_PORT, 32
                )
            except OSError as exc:
                self._problem(g, f"cannot open the API inside the workstation: {exc}")
                g.netns_id = None  # try again on the next pass
                return
            g.api_server = await asyncio.start_server(lambda r, w, t=team: self._api_conn(t, r, w), sock=sock)
            self.on_event("api", team, f"API on 127.0.0.1:{WS_API_PORT} inside container {cid[:12]}")

    def _problem(self, g: TeamGate, text: str) -> None:
        if not g.problems or g.problems[-1] != text:
            g.problems.append(text)
            del g.problems[:-10]
            self.on_event("problem", g.team, text)

    async def _watcher(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(self.watch_seconds)
            for t in self.teams:
                try:
                    await self._refresh(t, loop)
                    if self.ssh_bind:
                        await self._check_sshd(t, loop)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep watching
                    self._problem(self.gates[t], f"watcher: {exc}")

    async def _check_sshd(self, team: int, loop: asyncio.AbstractEventLoop) -> None:
        g = self.gates[team]
        if g.netns_path is None or self.exec_in is None:
            return
        if await self._sshd_answers(g, loop):
            return
        code = await loop.run_in_executor(
            None, self.exec_in, g.container or "", ["/bin/sh", "-c", SSHD_RESTART]
        )
        if code == 0:
            self.on_event("sshd", team, "sshd restarted in the workstation")
        else:
            self._problem(g, f"sshd is not running in the workstation and could not be started (exit {code})")

    async def _sshd_answers(self, g: TeamGate, loop: asyncio.AbstractEventLoop) -> bool:
        try:
            sock = await loop.run_in_executor(None, netns.tcp_socket_in_netns, g.netns_path)
        except OSError:
            return False
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", WS_SSH_PORT)), 3)
            return True
        except (TimeoutError, OSError):
            return False
        finally:
            sock.close()

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

    async def _ssh_conn(self, team: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        g = self.gates[team]
        if g.ssh_conns >= MAX_SSH_CONNS or g.netns_path is None:
            writer.close()
            return
        g.ssh_conns += 1
        loop = asyncio.get_running_loop()
        sock = None
        try:
            sock = await loop.run_in_executor(None, netns.tcp_socket_in_netns, g.netns_path)
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", WS_SSH_PORT)), 10)
            ur, uw = await asyncio.open_connection(sock=sock)
            sock = None  # owned by the stream now
            await splice((reader, writer), (ur, uw))
        except (TimeoutError, OSError) as exc:
            self._problem(g, f"SSH connection to the workstation failed: {exc}")
            writer.close()
        finally:
            if sock is not None:
                sock.close()
            g.ssh_conns -= 1
