"""No team can stall the shared machinery or take another team's SSH (issue 16, findings 4 and 5).

Two layers, each attacked in the finding's form:

* the gateway alone, on throwaway network namespaces this test makes (no
  Docker): idle connections from one loopback source (127.0.0.2) to a team's
  SSH port while a client from 127.0.0.1 logs in to a stand-in sshd; a team
  whose sshd repair hangs while another team's workstation is re-created;
* a real 2-team range (Docker): ``docker exec`` deadlines against processes
  that ignore signals; a FIFO where team 1's sshd pid file was, while team 2's
  workstation is re-created and must get its API back, and ``serve`` must stop;
  a repair that hangs in team 1's workstation; 16 idle connections from
  127.0.0.2 while a real ``ssh`` login from 127.0.0.1 must work.

Everything stays on loopback, in this test's namespaces, or in this test's
containers; the range is always taken down, the namespaces always deleted.
Docker-heavy tests run under ``flock /tmp/rangectl-docker.lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from rangectl import netns as rnetns
from rangectl.access import gateway as gw
from rangectl.access.install import WS_API_PORT, WS_SSH_PORT
from rangectl.backend.base import NodeRef
from rangectl.backend.nodeexec import LocalNodeExec

ROOT = Path(__file__).resolve().parents[2]
ATTACKER = "127.0.0.2"  # another source on loopback (all of 127/8 is local)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- throwaway namespaces standing in for workstations ----------------------------------


class FakeWorkstation:
    """A network namespace (lo up) with a process in it, so /proc/PID/ns/net names it like a container's."""

    def __init__(self) -> None:
        self.name = f"rc-mach-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, capture_output=True)
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.name, "sleep", "600"])
        self.path = rnetns.netns_path_of_name(self.name)
        self.stop = threading.Event()
        self.sshd_accepted = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run_sshd(self) -> None:
        """A stand-in sshd on 127.0.0.1:8722 inside: sends its version line, echoes what it gets."""

        def listen() -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", WS_SSH_PORT))
            s.listen(128)
            return s

        lsock = rnetns.run_in_netns(self.path, listen)
        lsock.settimeout(0.2)

        def handle(c: socket.socket) -> None:
            with c:
                c.settimeout(30)
                try:
                    c.sendall(b"SSH-2.0-standin\r\n")
                    while data := c.recv(4096):
                        c.sendall(data)
                except OSError:
                    pass

        def loop() -> None:
            with lsock:
                while not self.stop.is_set():
                    try:
                        c, _ = lsock.accept()
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                    self.sshd_accepted += 1
                    threading.Thread(target=handle, args=(c,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.proc.kill()
        self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def workstations():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (ip netns)")
    made: list[FakeWorkstation] = []

    def make() -> FakeWorkstation:
        w = FakeWorkstation()
        made.append(w)
        return w

    try:
        yield make
    finally:
        for w in made:
            w.close()


class LoopThread:
    """An asyncio loop on a thread, as `serve` runs the gateway."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:  # connection tasks still open: end them, as asyncio.run would
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_rest(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _api_unix_server(path: str, stop: threading.Event) -> None:
    """The API's Unix socket, standing in: answers every connection with one HTTP 200."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(16)
    s.settimeout(0.2)

    def loop() -> None:
        with s:
            while not stop.is_set():
                try:
                    c, _ = s.accept()
                except TimeoutError:
                    continue
                with c:
                    c.settimeout(2)
                    with contextlib.suppress(OSError):
                        c.recv(4096)
                        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")

    threading.Thread(target=loop, daemon=True).start()


def _api_inside(path: str) -> str:
    """GET / from inside a namespace on 127.0.0.1:8780 (the in-workstation API listener)."""

    def get() -> str:
        try:
            with socket.create_connection(("127.0.0.1", WS_API_PORT), timeout=2) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                c.settimeout(2)
                return c.recv(4096).decode(errors="replace")
        except OSError as exc:
            return f"error: {exc}"

    return rnetns.run_in_netns(path, get)


def _ssh_hello(port: int, source: str = "127.0.0.1", timeout: float = 3.0) -> bytes:
    """Connect from ``source``, send an SSH version line, return what comes back first."""
    with socket.socket() as c:
        c.bind((source, 0))
        c.settimeout(timeout)
        c.connect(("127.0.0.1", port))
        c.sendall(b"SSH-2.0-legit\r\n")
        try:
            return c.recv(64)
        except (TimeoutError, ConnectionError):
            return b""


def _attach(resolve):
    """A gateway's attach through the local execution seam, from a team -> (container, pid) map."""
    return lambda team: LocalNodeExec(lambda ref: resolve(ref.team)).attach(NodeRef("machinery", team, "ws"))


# --- finding 5, gateway layer ---------------------------------------------------------------


@pytest.mark.netns
def test_idle_connections_from_one_source_do_not_lock_a_team_out(workstations, tmp_path):
    ws = workstations()
    ws.run_sshd()
    base = _free_port() - 1
    lt = LoopThread()
    g = gw.Gateway(
        [1], str(tmp_path / "api.sock"), _attach(lambda t: (f"standin-{t}", ws.pid)), None,
        ssh_bind="127.0.0.1", ssh_base=base, api_in_workstation=False, watch_seconds=60,
    )
    idle: list[socket.socket] = []
    try:
        lt.run(g.start())
        # the attack: 16 idle connections to team 1's port from another source
        for _ in range(16):
            s = socket.socket()
            s.bind((ATTACKER, 0))
            s.settimeout(3)
            s.connect(("127.0.0.1", base + 1))
            idle.append(s)
        time.sleep(0.3)
        # a legitimate client from another source still gets to sshd
        t0 = time.monotonic()
        assert _ssh_hello(base + 1).startswith(b"SSH-2.0-standin"), "a login from another source was shut out"
        assert time.monotonic() - t0 < 2
        # the attacker got at most MAX_SSH_PREAUTH_PER_SOURCE slots; the rest were closed at once
        closed = 0
        for s in idle:
            s.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                if s.recv(1) == b"":
                    closed += 1
        assert closed == 16 - gw.MAX_SSH_PREAUTH_PER_SOURCE
        # a silent connection never reaches sshd, and is dropped after SSH_FIRST_BYTES_SECONDS
        assert ws.sshd_accepted == 1
        survivors = idle[:]
        end = time.monotonic() + gw.SSH_FIRST_BYTES_SECONDS + 3
        dropped = 0
        for s in survivors:
            s.settimeout(max(0.1, end - time.monotonic()))
            try:
                if s.recv(1) == b"":
                    dropped += 1
            except (TimeoutError, ConnectionError):
                pass
        assert dropped == 16, "idle connections were not dropped after the first-bytes limit"
        # ...after which the attacker's source may connect again (the cap counts live connections)
        assert _ssh_hello(base + 1, source=ATTACKER).startswith(b"SSH-2.0-standin")
    finally:
        for s in idle:
            s.close()
        lt.run(g.close())
        lt.close()


# --- finding 4, gateway layer ---------------------------------------------------------------


@pytest.mark.netns
def test_a_team_with_a_hung_repair_delays_no_other_team_and_close_is_prompt(workstations, tmp_path):
    ws1, ws2 = workstations(), workstations()
    ws2.run_sshd()  # team 1 has no sshd: the watcher will try to repair it, and the repair hangs
    current = {1: ws1, 2: ws2}
    hang = threading.Event()
    repairs: list[str] = []

    def resolve(team: int) -> tuple[str, int]:
        w = current[team]
        return (f"standin-{team}-{w.name}", w.pid)

    def exec_in(team: int, argv: list[str], timeout: float | None = None) -> int:
        repairs.append(f"team {team}")
        hang.wait(600)  # a repair that never returns (the finding's `cat` of a FIFO)
        return 0

    stop = threading.Event()
    sock_path = str(tmp_path / "api.sock")
    _api_unix_server(sock_path, stop)
    lt = LoopThread()
    g = gw.Gateway([1, 2], sock_path, _attach(resolve), exec_in, ssh_bind="127.0.0.1", ssh_base=_free_port() - 1,
                   watch_seconds=0.5)
    try:
        lt.run(g.start())
        assert "200 OK" in _api_inside(ws2.path)
        end = time.monotonic() + 10
        while not repairs and time.monotonic() < end:
            time.sleep(0.05)
        assert repairs, "the watcher never tried to repair team 1's sshd"
        # team 2's workstation is re-created (a new namespace): its API must come back
        ws3 = workstations()
        ws3.run_sshd()
        current[2] = ws3
        t0 = time.monotonic()
        while "200 OK" not in _api_inside(ws3.path) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        took = time.monotonic() - t0
        assert "200 OK" in _api_inside(ws3.path), "team 2's re-created workstation never got its API back"
        assert took < 5
        # a repair still running is not started again
        time.sleep(1.5)
        assert repairs.count(repairs[0]) == 1
        t0 = time.monotonic()
        lt.run(g.close(), timeout=10)
        assert time.monotonic() - t0 < 3, "closing waited for a team's hung repair"
    finally:
        hang.set()
        stop.set()
        lt.close()


# --- a real range --------------------------------------------------------------------------

docker_only = pytest.mark.docker


@pytest.fixture(scope="module")
def rng(docker_engine, built_images, tmp_path_factory):
    """A 2-team mini range, provisioned, with team credentials; always taken down."""
    from rangectl import ranges
    from rangectl.access import credentials as creds
    from rangectl.state import RangeState
    from tests.conftest import FIXTURES, leftovers

    if shutil.which("ssh") is None:
        pytest.skip("needs the ssh client (openssh-client)")
    os.environ["RANGECTL_HOME"] = str(tmp_path_factory.mktemp("home-machinery"))
    name = f"pt-mach-{uuid.uuid4().hex[:6]}"
    scenario = FIXTURES / "mini-range.yaml"
    try:
        ranges.up(scenario, teams=2, name=name, provision=True)
        st = RangeState(name)
        creds.ensure_credentials(st, 2)
        yield {"name": name, "state": st, "scenario": scenario}
    finally:
        ranges.down(name)
        cs, ns = leftovers(docker_engine, name)
        assert not cs and not ns, "down left resources behind"


def _container(docker_engine, r, team: int):
    from rangectl.backend.docker import container_name

    return docker_engine.containers.get(container_name(r["name"], team, "soc"))


def _sh(docker_engine, r, team: int, cmd: str) -> tuple[int, str]:
    code, out = _container(docker_engine, r, team).exec_run(["sh", "-c", cmd])
    return code, out.decode(errors="replace")


@contextlib.contextmanager
def _serving(r, watch_seconds: float = 1.0):
    from rangectl.access.server import ServeOptions, serve_in_thread

    base = _free_port() + 100
    notes: list[str] = []
    opts = ServeOptions(bind="127.0.0.1:0", ssh_bind="127.0.0.1", ssh_base=base, watch_seconds=watch_seconds)
    thread, served = serve_in_thread(r["state"], opts, note=notes.append)
    try:
        assert served.ready.wait(300), "serve did not start"
        assert served.error is None, served.error
        assert served.install is not None and served.install.ok, (served.install, notes)
        yield {"thread": thread, "served": served, "base": base, "notes": notes}
    finally:
        served.stop.set()
        thread.join(30)


def _recreate_team2(docker_engine, r) -> str:
    """Remove team 2's workstation and let `up` make it again (a new container, a new namespace)."""
    from rangectl import ranges

    _container(docker_engine, r, 2).remove(force=True)
    ranges.up(r["scenario"], teams=2, name=r["name"], provision=False)
    return _container(docker_engine, r, 2).id


def _api_back_in(docker_engine, r, team: int, limit: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        code, out = _sh(docker_engine, r, team, f"curl -s -m 2 http://127.0.0.1:{WS_API_PORT}/api/v1/health")
        if code == 0 and '"ok":true' in out.replace(" ", ""):
            return time.monotonic() - t0
        time.sleep(0.5)
    return None


def _ssh(r, base: int, team: int, command: str, timeout: int = 30) -> subprocess.CompletedProcess:
    from rangectl.access import credentials as creds

    f = creds.team_files(r["state"], team)
    return subprocess.run(
        ["ssh", "-F", f.ssh_config.name, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         creds.host_alias(r["state"], team), command],
        cwd=f.ssh_config.parent, capture_output=True, text=True, timeout=timeout,
    )


@docker_only
def test_docker_exec_is_killed_at_its_deadline(docker_engine, rng):
    from rangectl import backend as backends
    from rangectl.backend.base import NodeRef

    be = backends.get()
    soc = NodeRef(rng["name"], 1, "soc")
    t0 = time.monotonic()
    code, out = be.exec(soc, ["sh", "-c", "trap '' TERM INT; sleep 1000"], timeout=2)
    took = time.monotonic() - t0
    print(f"[measure] exec ignoring TERM, deadline 2s: returned in {took:.2f}s")
    assert code == 124 and "deadline" in out
    assert took < 3.5, f"exec with a 2s deadline took {took:.1f}s"
    # a FIFO read: the trainee's trap of the finding
    _sh(docker_engine, rng, 1, "rm -f /tmp/trap; mkfifo /tmp/trap")
    t0 = time.monotonic()
    code, _ = be.exec(soc, ["cat", "/tmp/trap"], timeout=1.5)
    assert code == 124 and time.monotonic() - t0 < 3
    time.sleep(0.3)
    _, ps = _sh(docker_engine, rng, 1, "ps -eo args")
    assert "sleep 1000" not in ps and "cat /tmp/trap" not in ps, ps  # killed, not left behind
    # an ordinary exec still gives its code and output
    assert be.exec(soc, ["sh", "-c", "echo hi; exit 3"], timeout=5) == (3, "hi\n")


@docker_only
def test_fifo_pid_file_stalls_nobody_and_serve_stops(docker_engine, rng):
    with _serving(rng) as s:
        assert _api_back_in(docker_engine, rng, 2, 10) is not None
        # team 1 (root in its workstation) stops its sshd and leaves a FIFO where its pid file was
        code, out = _sh(docker_engine, rng, 1, "pkill -x sshd; sleep 0.5; rm -f /run/rangectl-sshd.pid; "
                        "mkfifo /run/rangectl-sshd.pid && echo planted")
        assert "planted" in out, out
        time.sleep(3)  # a few watcher passes: the repair has run into the FIFO (or not)
        new_id = _recreate_team2(docker_engine, rng)
        took = _api_back_in(docker_engine, rng, 2, 20)
        assert took is not None, f"team 2's re-created workstation ({new_id[:12]}) never got its API back"
        print(f"[measure] FIFO in team 1: team 2's API back {took:.2f}s after its re-creation")
        # team 1's sshd is back too: the repair does not read the pid file
        r = _ssh(rng, s["base"], 1, "echo in")
        assert r.returncode == 0 and r.stdout.strip() == "in", r.stderr
        t0 = time.monotonic()
        s["served"].stop.set()
        s["thread"].join(15)
        assert not s["thread"].is_alive(), "serve did not stop"
        print(f"[measure] FIFO in team 1: serve stopped in {time.monotonic() - t0:.2f}s")
        assert time.monotonic() - t0 < 10


@docker_only
def test_a_hung_sshd_repair_stalls_nobody_and_serve_stops(docker_engine, rng):
    with _serving(rng) as s:
        # team 1 makes its own repair hang: sshd replaced by something that never returns
        code, out = _sh(
            docker_engine, rng, 1,
            "cp /usr/sbin/sshd /root/sshd.real && rm -f /usr/sbin/sshd && "
            "printf '#!/bin/sh\\ntrap \"\" TERM INT HUP\\nsleep 100000\\n' > /usr/sbin/sshd && "
            "chmod +x /usr/sbin/sshd && pkill -x sshd && echo planted",
        )
        assert "planted" in out, out
        try:
            t_hang = time.monotonic()
            end = time.monotonic() + 15
            while time.monotonic() < end:
                _, ps = _sh(docker_engine, rng, 1, "ps -eo args")
                if "sleep 100000" in ps:
                    break
                time.sleep(0.3)
            assert "sleep 100000" in ps, "the watcher did not run the repair"
            _recreate_team2(docker_engine, rng)
            took = _api_back_in(docker_engine, rng, 2, 15)
            assert took is not None, "team 2's API did not come back while team 1's repair hung"
            print(f"[measure] hung repair in team 1: team 2's API back {took:.2f}s after its re-creation")
            # stop while the repair may still hang: serve must not wait for it
            t0 = time.monotonic()
            s["served"].stop.set()
            s["thread"].join(15)
            assert not s["thread"].is_alive(), "serve did not stop while a repair hung"
            print(f"[measure] hung repair in team 1: serve stopped in {time.monotonic() - t0:.2f}s")
            assert time.monotonic() - t0 < 10
            # and the hung repair is killed at its deadline, not left running
            from rangectl.access.install import SSHD_REPAIR_TIMEOUT

            time.sleep(max(0.0, t_hang + SSHD_REPAIR_TIMEOUT + 3 - time.monotonic()))
            _, ps = _sh(docker_engine, rng, 1, "ps -eo args")
            assert "sleep 100000" not in ps, ps
        finally:
            from rangectl.access.install import SSHD_RESTART

            _sh(docker_engine, rng, 1, "rm -f /usr/sbin/sshd; cp /root/sshd.real /usr/sbin/sshd; "
                f"pkill -f '^sleep 100000'; {SSHD_RESTART}")


@docker_only
def test_idle_connections_from_another_source_do_not_lock_out_ssh(docker_engine, rng):
    with _serving(rng) as s:
        port = s["base"] + 1
        end = time.monotonic() + 20  # the watcher (1 s) restarts sshd if an earlier test left it down
        while (r := _ssh(rng, s["base"], 1, "echo before")).returncode != 0 and time.monotonic() < end:
            time.sleep(0.5)
        assert r.returncode == 0, r.stderr
        idle = []
        try:
            for _ in range(16):
                c = socket.socket()
                c.bind((ATTACKER, 0))
                c.settimeout(3)
                c.connect(("127.0.0.1", port))
                idle.append(c)
            # and a few that complete the version exchange, then stall before logging in
            for _ in range(4):
                c = socket.socket()
                c.bind((ATTACKER, 0))
                c.settimeout(3)
                c.connect(("127.0.0.1", port))
                c.sendall(b"SSH-2.0-stall\r\n")
                idle.append(c)
            t0 = time.monotonic()
            r = _ssh(rng, s["base"], 1, "echo in")
            assert r.returncode == 0 and r.stdout.strip() == "in", r.stderr
            print(f"[measure] ssh login from 127.0.0.1 under 20 stalled connections from {ATTACKER}: "
                  f"{time.monotonic() - t0:.2f}s")
            assert time.monotonic() - t0 < 10
        finally:
            for c in idle:
                c.close()
        # the repair and the install find the listener through /proc, never a session's process
        from rangectl.access import credentials as creds
        from rangectl.access.install import SSHD_FIND

        f = creds.team_files(rng["state"], 1)
        session = subprocess.Popen(
            ["ssh", "-F", f.ssh_config.name, "-o", "BatchMode=yes", creds.host_alias(rng["state"], 1), "sleep 6"],
            cwd=f.ssh_config.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(2.5)
            _, out = _sh(docker_engine, rng, 1, f"for p in $({SSHD_FIND}); do tr '\\000' ' ' < /proc/$p/cmdline; echo; done; "
                         "echo; ps -eo args | grep -c '^sshd: root'")
            found, _, sessions = out.strip().partition("\n\n")
            assert len(found.splitlines()) == 1 and "[listener]" in found, out
            assert int(sessions.strip()) >= 1, out  # a session was open meanwhile, and not found
        finally:
            session.wait(20)
        # the API on the host is unaffected too
        host, hport = s["served"].api_address
        with urllib.request.urlopen(f"http://{host}:{hport}/api/v1/health", timeout=5) as resp:
            assert resp.status == 200
