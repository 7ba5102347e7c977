"""Work on a Docker engine's host: its iptables, its nodes' routes and bridge ports, kills.

The Docker backend does a few things on the machine that runs the engine, outside any
container: rules in the host's ``DOCKER-USER`` chain (bridged frames, the probe's isolation),
a node's default route and the probe's ARP pins (set in the node's network namespace from
outside, so the node needs no capability), the host-side port of a node's interface, and
killing an exec at its deadline. :class:`Host` is that machine:

- :class:`LocalHost`: the engine runs here (the ``docker`` backend): the functions below are
  called directly;
- an engine elsewhere (the ``swarm`` backend) runs them in its agent container, which is in
  that host's network and PID namespaces, as node jobs without a node
  (:class:`rangectl.backend.agent.AgentHost`).

Every operation is a :func:`~rangectl.backend.nodeexec.node_job` taking plain data, so both
run the same code. PIDs are the engine host's (what the engine reports as a container's
``State.Pid``).
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from typing import Any

from rangectl import netns
from rangectl.backend.nodeexec import JobControl, node_job
from rangectl.errors import RangeError
from rangectl.rtnetlink import addresses, addresses_here, links_here, set_default_route


@dataclass(frozen=True)
class Result:
    """A command's outcome (the fields of subprocess.CompletedProcess that callers read)."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


def _run(argv: list[str], text_in: str | None = None) -> Result:
    try:
        r = subprocess.run(argv, input=text_in, capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError:
        return Result(127, "", f"{argv[0]}: not installed")
    except subprocess.TimeoutExpired:
        return Result(124, "", f"{argv[0]}: no answer within 60s")
    return Result(r.returncode, r.stdout, r.stderr)


# --- the operations, as node jobs (run directly here, or in an engine's agent) -------------------


@node_job
def op_iptables(ctl: JobControl, args: list[str]) -> list[Any]:
    r = _run(["iptables", "-w", "10", *args])
    return [r.returncode, r.stdout, r.stderr]


@node_job
def op_iptables_batch(ctl: JobControl, rules: list[list[str]]) -> list[Any]:
    """One ``iptables-restore --noflush`` of the filter table: all rules or none."""
    import shlex

    text = "*filter\n" + "".join(shlex.join(r) + "\n" for r in rules) + "COMMIT\n"
    r = _run(["iptables-restore", "-w", "10", "--noflush"], text)
    return [r.returncode, r.stdout, r.stderr]


@node_job
def op_default_route(ctl: JobControl, pid: int, gateway: str | None) -> bool:
    """``ip route replace default via GATEWAY`` (or ``del default``) in process ``pid``'s namespace."""
    return set_default_route(netns.netns_path_of_pid(pid), gateway)


@node_job
def op_default_routes(ctl: JobControl, routes: list[list[Any]]) -> list[str | None]:
    """:func:`op_default_route` for many ``[pid, gateway]`` in one call (a range's nodes on one
    engine: one agent request instead of one per node); per entry None, or why it failed."""
    out: list[str | None] = []
    for pid, gateway in routes:
        try:
            set_default_route(netns.netns_path_of_pid(int(pid)), gateway)
            out.append(None)
        except (OSError, RangeError) as exc:
            out.append(exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
    return out


@node_job
def op_host_port(ctl: JobControl, pid: int, ip: str) -> str:
    """The host-side veth (bridge port) of the interface holding ``ip`` in process ``pid``'s namespace."""

    def peer_of() -> tuple[str | None, int | None]:
        name = next((a.ifname for a in addresses_here() if str(a.interface.ip) == str(ip)), None)
        link = next((lk for lk in links_here() if lk.name == name), None)
        return name, None if link is None else link.peer

    ifname, peer = netns.run_in_netns(netns.netns_path_of_pid(pid), peer_of)
    if ifname is None:
        raise RangeError(f"process {pid}'s namespace has no interface with {ip}")
    if peer is None:
        raise RangeError(f"{ifname} (with {ip}) is not one end of a veth pair")
    return socket.if_indextoname(peer)


@node_job
def op_pin_neighbours(ctl: JobControl, pid: int, pins: list[list[str]]) -> int:
    """``neigh replace ADDR lladdr MAC dev IFACE nud permanent`` for each ``[addr, mac, own_ip]``
    in process ``pid``'s namespace, IFACE being the interface that holds ``own_ip``."""
    ns = netns.netns_path_of_pid(pid)
    dev_of = {str(a.interface.ip): a.ifname for a in addresses(ns)}
    lines = [f"neigh replace {addr} lladdr {mac} dev {dev_of[own]} nud permanent" for addr, mac, own in pins]
    r = _run(["nsenter", f"--net={ns}", "--", "ip", "-batch", "-"], "\n".join(lines) + "\n")
    if r.returncode != 0:
        raise RangeError(f"cannot pin ARP entries: {r.stderr.strip()}")
    return len(lines)


@node_job
def op_kill_tree(ctl: JobControl, pid: int, container_pid: int) -> int:
    from rangectl.backend.execs import kill_tree

    return kill_tree(pid, container_pid)


BOOT_ID = "/proc/sys/kernel/random/boot_id"


@node_job
def op_boot_id(ctl: JobControl) -> str:
    """The running kernel's boot id: two engines with the same one share a kernel (and so its
    process events: one command recorder sees both)."""
    with open(BOOT_ID, encoding="ascii") as f:
        return f.read().strip()


# --- where they run ----------------------------------------------------------------------------------


class Host:
    """The machine of one Docker engine (see the module doc)."""

    #: a short name for messages ("this machine", "engine rangectl-lab-engine2")
    where = "this machine"

    def call(self, fn: Any, **args: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def iptables(self, *args: str) -> Result:
        return Result(*self.call(op_iptables, args=list(args)))

    def iptables_batch(self, rules: list[list[str]]) -> Result:
        return Result(*self.call(op_iptables_batch, rules=rules))

    def set_default_route(self, pid: int, gateway: str | None) -> bool:
        return self.call(op_default_route, pid=pid, gateway=gateway)

    def set_default_routes(self, routes: list[tuple[int, str | None]]) -> list[str | None]:
        return self.call(op_default_routes, routes=[[pid, gw] for pid, gw in routes])

    def host_port(self, pid: int, ip: str) -> str:
        return self.call(op_host_port, pid=pid, ip=str(ip))

    def pin_neighbours(self, pid: int, pins: list[list[str]]) -> int:
        return self.call(op_pin_neighbours, pid=pid, pins=pins)

    def kill_tree(self, pid: int, container_pid: int) -> int:
        return self.call(op_kill_tree, pid=pid, container_pid=container_pid)

    def boot_id(self) -> str:
        return self.call(op_boot_id)


class LocalHost(Host):
    """The engine is on this machine: the operations run in this process."""

    def call(self, fn: Any, **args: Any) -> Any:
        return fn(JobControl(None), **args)


LOCAL = LocalHost()
