"""A model of the nodes of a range for the in-memory backend (rangectl.backend.memory).

Shared fixture: the backend keeps the range's bookkeeping for real; this world answers what
happens inside nodes, with the rules of the drills' networks reduced to what the checks
and injects observe:

- a router's ``iptables -I RANGECTL-FILTER -s ADDR -j DROP`` drops ADDR's traffic for that team;
- a probe (tcp/udp/http/icmp) from a node succeeds when the target offers the port (its
  ``services``) and the source's address is not dropped; http answers 200 with a page;
- a traffic inject sends one packet per port (portscan) or its ``count``; the arrival
  counters in the receiving nodes see them unless the source is dropped;
- ``cat PATH`` reads files the test put in :attr:`World.files`.

Every command and job is checked against the plan: a job for a node the team does not have,
or an address outside the team's subnets, fails as it would on an engine.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

from rangectl import backend as backends
from rangectl.backend.base import NodeRef
from rangectl.backend.memory import MemoryBackend, register_memory
from rangectl.backend.nodeexec import JobControl, job_name
from rangectl.drill.checks import probe_job
from rangectl.plan import Plan
from rangectl.scenario.model import Scenario
from rangectl.traffic import jobs

DROP = re.compile(r"iptables -I RANGECTL-FILTER -s (\S+) -j DROP")


class World:
    def __init__(self, backend: MemoryBackend, scenario: Scenario, plan: Plan):
        self.scenario, self.plan = scenario, plan
        self.dropped: dict[int, set[str]] = {t.team: set() for t in plan.teams}
        self.files: dict[tuple[int, str, str], str] = {}
        self.sent: dict[int, int] = {t.team: 0 for t in plan.teams}  # packets that reached a target
        self.lock = threading.Lock()
        backend.exec_handler = self.exec
        backend.job_handlers.update(
            {
                job_name(probe_job): self.probe,
                job_name(jobs.generate): self.generate,
                job_name(jobs.count_arrivals): self.count_arrivals,
            }
        )

    # -- helpers -------------------------------------------------------------------------------------
    def _addr(self, ref: NodeRef) -> str:
        tp = self.plan.team(ref.team)
        node = tp.probe if ref.node == "probe" else tp.node(ref.node)
        assert node is not None, ref
        return str(node.primary_ip)

    def _node_at(self, team: int, ip: str) -> str | None:
        tp = self.plan.team(team)
        return next((n.name for n in tp.nodes if ip in {str(a) for a in n.interfaces.values()}), None)

    def _inside(self, team: int, ip: str) -> bool:
        return any(ipaddress.IPv4Address(ip) in n for n in self.plan.team(team).subnets())

    def _open(self, team: int, src: str, ip: str, port: int | None) -> bool:
        target = self._node_at(team, ip)
        if target is None or src in self.dropped[team]:
            return False
        if port is None:
            return True
        return any(s.port == port for s in self.scenario.nodes[target].services)

    # -- commands --------------------------------------------------------------------------------------
    def exec(self, ref: NodeRef, argv: list[str]) -> tuple[int, str]:
        cmd = argv[2] if argv[:2] == ["sh", "-c"] else " ".join(argv)
        m = DROP.fullmatch(cmd.strip())
        if m is not None:
            if not self.scenario.nodes[ref.node].forward:
                return 1, "iptables: No chain/target/match by that name.\n"
            with self.lock:
                self.dropped[ref.team].add(m.group(1))
            return 0, ""
        if argv[0] == "cat" and len(argv) == 2:
            text = self.files.get((ref.team, ref.node, argv[1]))
            return (0, text) if text is not None else (1, f"cat: {argv[1]}: No such file or directory\n")
        return 127, f"sh: {cmd.split()[0] if cmd.split() else cmd}: not found\n"

    # -- jobs ------------------------------------------------------------------------------------------
    def probe(self, ref: NodeRef, args: dict[str, Any], ctl: JobControl) -> Any:
        kind, a = args["kind"], args["args"]
        src, ip = self._addr(ref), a[0]
        assert self._inside(ref.team, ip), f"probe to {ip} outside team {ref.team}"
        if kind == "icmp":
            ok = self._open(ref.team, src, ip, None)
            return ok, f"icmp {ip} {'answered' if ok else 'no answer'}"
        port = a[1]
        ok = self._open(ref.team, src, ip, port)
        if kind == "http":
            return (200, "<h1>Cổng thông tin</h1>", f"http {ip}:{port}{a[2]} -> 200") if ok else (
                None, "", f"http {ip}:{port}{a[2]} timed out")
        return ok, f"{kind} {ip}:{port} {'open' if ok else 'timed out'}"

    def generate(self, ref: NodeRef, args: dict[str, Any], ctl: JobControl) -> dict[str, Any]:
        assert self.plan.team(ref.team).node(ref.node).role == "red", "traffic only from red nodes"
        dst = args["dst_ip"]
        assert dst is None or self._inside(ref.team, dst), f"traffic to {dst} outside team {ref.team}"
        params = args["params"]
        ports = str(params.get("ports", "80")).split(",")
        n = int(params.get("count", len(ports)))
        src = self._addr(ref)
        started = datetime.now(UTC)
        time.sleep(0.01)
        with self.lock:
            if src not in self.dropped[ref.team]:
                self.sent[ref.team] += n
        return {
            "kind": args["kind"], "src_ip": src, "dst_ip": dst, "src_iface": "eth0",
            "started": started.isoformat(), "ended": datetime.now(UTC).isoformat(), "seconds": 0.01,
            "packets_sent": n, "bytes_sent": 60 * n, "stopped": "done", "counted": "exact", "details": {},
        }  # fmt: skip

    def count_arrivals(self, ref: NodeRef, args: dict[str, Any], ctl: JobControl) -> dict[str, Any]:
        with self.lock:
            before = self.sent[ref.team]
        ctl.ready()
        ctl.wait()
        with self.lock:
            seen = self.sent[ref.team] - before
        return {"packets": seen, "bytes": 60 * seen, "tap_drops": 0}


def memory_engine(monkeypatch):
    """The in-memory engine, registered as ``memory``, with a :class:`World` made for each range
    it brings up: yields (backend, worlds)."""
    be = register_memory()
    worlds: list[World] = []
    real_apply = be.apply

    def apply(range_name, scenario, plan, images, progress=None, stamps=None):  # a world per range, made with it
        worlds.append(World(be, scenario, plan))
        return real_apply(range_name, scenario, plan, images, progress, stamps)

    monkeypatch.setattr(be, "apply", apply)
    yield be, worlds
    backends._FACTORIES.pop("memory", None)
    backends._CACHE.pop("memory", None)
