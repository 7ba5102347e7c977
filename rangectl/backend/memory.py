"""An in-memory backend for tests: ranges as Python objects, no engine, no packets.

It keeps the contract's bookkeeping for real (networks and nodes from the plan, their
addresses, labels by range, reset with a new id, removal of exactly one range, files copied
in), and delegates what would happen *inside* a node to handlers the test supplies:

- ``exec_handler(ref, argv) -> (code, output)`` for commands (a test's model of the nodes);
- ``job_handlers["module:function"](ref, args, ctl) -> result`` for node jobs (probes, traffic,
  arrival counts), with ``args`` and the result passed through JSON as the seam requires.

Nothing in it touches the network or the host, so it is not registered as an engine users
can pick; a test registers it (``register_memory()``) and sets ``RANGECTL_ENGINE=memory`` or
passes ``engine="memory"`` (tests/memory_world.py is the shared fixture: a whole drill runs on
it in seconds).
"""

from __future__ import annotations

import ipaddress
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from rangectl import backend as backends
from rangectl.backend.base import (
    Backend,
    ExecStream,
    NetworkInfo,
    NodeInfo,
    NodeRef,
    Progress,
    RangeSummary,
    StampFor,
    UpResult,
)
from rangectl.backend.nodeexec import (
    Job,
    JobControl,
    JobError,
    NodeExec,
    NodePort,
    RunningJob,
    ThreadJob,
    plain,
)
from rangectl.errors import NotFound, RangeError
from rangectl.plan import Plan
from rangectl.scenario.model import Scenario

ExecHandler = Callable[[NodeRef, list[str]], tuple[int, str]]
JobHandler = Callable[[NodeRef, dict[str, Any], JobControl], Any]


@dataclass
class _Range:
    networks: dict[tuple[int, str], NetworkInfo] = field(default_factory=dict)
    nodes: dict[tuple[int, str], NodeInfo] = field(default_factory=dict)


class _MemoryExec(NodeExec):
    def __init__(self, backend: MemoryBackend):
        self.backend = backend

    def start(self, ref: NodeRef, job: Job) -> RunningJob:
        self.backend.running(ref)
        handler = self.backend.job_handlers.get(job.fn)
        if handler is None:
            raise JobError(f"the memory backend has no handler for job {job.fn}")
        self.backend.jobs_run.append((ref, job))
        args = plain(job.args, f"the arguments of {job.fn}")
        return ThreadJob(job, f"{job.fn.rsplit(':', 1)[-1]} in {ref}", lambda ctl: handler(ref, args, ctl))

    def attach(self, ref: NodeRef) -> NodePort:
        raise JobError("the memory backend has no node networks to attach to")


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self._ranges: dict[str, _Range] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.exec_handler: ExecHandler = lambda ref, argv: (127, f"{argv[0]}: not simulated\n")
        self.job_handlers: dict[str, JobHandler] = {}
        self.files: dict[NodeRef, dict[str, bytes]] = {}
        self.execs: list[tuple[NodeRef, list[str]]] = []
        self.jobs_run: list[tuple[NodeRef, Job]] = []
        self._nodes_exec = _MemoryExec(self)

    @property
    def nodes_exec(self) -> NodeExec:
        return self._nodes_exec

    # -- lifecycle -----------------------------------------------------------------------------
    def check_free(self, range_name: str, plan: Plan) -> None:
        mine = {(t.team, n.name): n.subnet for t in plan.teams for n in t.networks}
        for other, r in self._ranges.items():
            if other == range_name:
                continue
            for net in r.networks.values():
                for key, subnet in mine.items():
                    if subnet.overlaps(_net(net.subnet)):
                        raise RangeError(
                            f"team {key[0]} network '{key[1]}' ({subnet}) clashes with network '{net.name}' ({net.subnet})"
                        )

    def ensure_images(self, images: list[str], on_progress: Callable[..., None] | None = None) -> dict[str, str]:
        return {i: f"memory/{i}" for i in images}

    def apply(
        self,
        range_name: str,
        scenario: Scenario,
        plan: Plan,
        images: dict[str, str],
        progress: Progress | None = None,
        stamps: StampFor | None = None,
    ) -> UpResult:
        note = progress or (lambda phase, item: None)
        res = UpResult()
        with self._lock:
            r = self._ranges.setdefault(range_name, _Range())
            for t in plan.teams:
                for n in t.networks:
                    key = (t.team, n.name)
                    if key in r.networks:
                        res.kept.append(r.networks[key].name)
                        continue
                    name = f"rc-{range_name}.t{t.team}.{n.name}"
                    r.networks[key] = NetworkInfo(range_name, t.team, n.name, name, f"net{next(self._ids)}", str(n.subnet))
                    res.created_networks.append(name)
                    note("network", name)
                for node in [*t.nodes, *([t.probe] if t.probe else [])]:
                    key = (t.team, node.name)
                    if key in r.nodes:
                        res.kept.append(r.nodes[key].name)
                        continue
                    r.nodes[key] = self._new_node(range_name, t.team, node, images)
                    res.created_containers.append(r.nodes[key].name)
                    note("container", r.nodes[key].name)
        return res

    def _new_node(self, range_name: str, team: int, node: Any, images: dict[str, str]) -> NodeInfo:
        return NodeInfo(
            range=range_name, team=team, node=node.name, role=node.role, name=f"rc-{range_name}.t{team}.{node.name}",
            id=f"mem{next(self._ids):06d}", state="running", image=images.get(node.image, node.image),
            addresses={k: str(v) for k, v in node.interfaces.items()}, engine="memory",
        )  # fmt: skip

    def remove(self, range_name: str | None, progress: Progress | None = None) -> tuple[int, int]:
        with self._lock:
            names = list(self._ranges) if range_name is None else [range_name]
            c = n = 0
            for name in names:
                r = self._ranges.pop(name, None)
                if r is not None:
                    c, n = c + len(r.nodes), n + len(r.networks)
                    for ref in [ref for ref in self.files if ref.range == name]:
                        del self.files[ref]
        return c, n

    def reset(
        self, ref: NodeRef, scenario: Scenario, plan: Plan, images: dict[str, str], progress: Progress | None = None
    ) -> NodeInfo:
        with self._lock:
            r = self._range(ref.range)
            old = r.nodes.get((ref.team, ref.node))
            if old is None:
                raise NotFound(f"range '{ref.range}' has no node '{ref.node}' for team {ref.team}")
            r.nodes[(ref.team, ref.node)] = replace(old, id=f"mem{next(self._ids):06d}", state="running")
            self.files.pop(ref, None)
            return r.nodes[(ref.team, ref.node)]

    def stop_node(self, ref: NodeRef) -> None:
        """Test helper: the node stops (as a trainee's ``poweroff`` or a crash would)."""
        with self._lock:
            r = self._range(ref.range)
            r.nodes[(ref.team, ref.node)] = replace(r.nodes[(ref.team, ref.node)], state="exited")

    # -- inspection ------------------------------------------------------------------------------
    def _range(self, name: str) -> _Range:
        r = self._ranges.get(name)
        if r is None:
            raise NotFound(f"no range named '{name}'", fix="see `rangectl ls`")
        return r

    def ranges(self) -> dict[str, RangeSummary]:
        out = {}
        for name, r in self._ranges.items():
            out[name] = RangeSummary(
                name, containers=len(r.nodes), running=sum(n.running for n in r.nodes.values()),
                networks=len(r.networks), teams={t for t, _ in r.nodes},
            )  # fmt: skip
        return out

    def nodes(self, range_name: str) -> list[NodeInfo]:
        r = self._ranges.get(range_name)
        return [] if r is None else [r.nodes[k] for k in sorted(r.nodes)]

    def networks(self, range_name: str) -> list[NetworkInfo]:
        r = self._ranges.get(range_name)
        return [] if r is None else [r.networks[k] for k in sorted(r.networks)]

    def node(self, ref: NodeRef) -> NodeInfo:
        r = self._ranges.get(ref.range)
        info = None if r is None else r.nodes.get((ref.team, ref.node))
        if info is None:
            raise NotFound(f"range '{ref.range}' has no node '{ref.node}' for team {ref.team}", fix="see `rangectl status`")
        return info

    # -- work inside nodes -----------------------------------------------------------------------
    def exec(self, ref: NodeRef, argv: list[str], timeout: float | None = None) -> tuple[int, str]:
        self.running(ref)
        self.execs.append((ref, list(argv)))
        return self.exec_handler(ref, list(argv))

    def exec_stream(self, ref: NodeRef, argv: list[str]) -> ExecStream:
        code, out = self.exec(ref, argv)
        return ExecStream(iter([(1, out.encode())]), lambda: code)

    def logs(self, ref: NodeRef, follow: bool = False, tail: int = 200) -> Iterator[bytes]:
        self.node(ref)
        yield b""

    def copy_in(self, ref: NodeRef, directory: str, files: dict[str, bytes], mode: int = 0o644) -> None:
        self.running(ref)
        store = self.files.setdefault(ref, {})
        for name, data in files.items():
            store[f"{directory.rstrip('/')}/{name}"] = bytes(data)

    def shell_argv(self, ref: NodeRef) -> list[str]:
        raise RangeError("the memory backend has no shells", fix="use the docker engine")

    def ansible_host(self, ref: NodeRef) -> dict[str, str]:
        raise RangeError("the memory backend cannot be provisioned", fix="bring it up with provision=False")


def _net(subnet: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(subnet)


def register_memory() -> MemoryBackend:
    """Register a fresh memory backend as engine ``memory`` and return it (tests)."""
    be = MemoryBackend()
    backends.register("memory", lambda: be)
    return be
