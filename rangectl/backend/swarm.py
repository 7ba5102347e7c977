"""The ``swarm`` backend: one range over the engines of a Docker Swarm (docs/cluster.md).

rangectl reads the swarm's nodes from its manager (``DOCKER_HOST``, ``tcp://`` or ``ssh://``
or a local socket) and reaches each node's engine at the address its node label
``io.rangectl.engine`` gives (``tcp://ADDR:2375``, ``ssh://user@host``; the node rangectl is
connected to needs none). It places **whole teams** on engines (:func:`place`): packed by the
engines' CPUs and memory by default, spread over them with ``--spread`` (``RANGECTL_SPREAD=1``).
Each engine then gets, through its own API, what the ``docker`` backend makes on one machine:
plain containers on internal bridges, isolated as on one machine, its host-level rules, and the
same labels. A team's networks all sit on its engine, so no scenario network spans engines
and no overlay is needed.

What the controller cannot do from its own machine runs in rangectl's **agent** on each engine
(:mod:`rangectl.backend.agent`): node jobs (traffic, probes, arrival counters), team-access
listeners and connections, iptables and route work, kills at exec deadlines. Images are built
on the controller's own engine and streamed to each engine that lacks the same image ID
(``docker save`` once per set of images, ``docker load`` into the engines in parallel); nothing
is ever pulled.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound

from rangectl import labels as L
from rangectl.backend.agent import AGENT_IMAGE, Agent, AgentHost, AgentNodeExec, ensure_agent, remove_agents
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
from rangectl.backend.docker import DockerBackend, container_name, range_filter, team_nodes
from rangectl.backend.engine import engine_url, reconnecting_ssh
from rangectl.backend.hostops import LOCAL, op_boot_id
from rangectl.backend.nodeexec import NodeExec
from rangectl.errors import EnvironmentProblem, NotRunning, RangeError
from rangectl.errors import NotFound as RangeNotFound
from rangectl.plan import Plan
from rangectl.scenario.model import Scenario

ENGINE_LABEL = "io.rangectl.engine"  # on a swarm node: where its engine's API is
#: what one node is assumed to need when placing teams (RANGECTL_NODE_MEMORY_MB,
#: RANGECTL_NODES_PER_CPU override): measured by bench/cluster.py and bench/up.py
NODE_MEMORY_MB = float(os.environ.get("RANGECTL_NODE_MEMORY_MB", "64"))
NODES_PER_CPU = float(os.environ.get("RANGECTL_NODES_PER_CPU", "40"))
MEMORY_SHARE = 0.8  # of an engine's memory that ranges may take
REVIVE_SECONDS = 20.0  # a team whose nodes stopped is brought back at most this often


@dataclass
class Engine:
    """One engine of the swarm, as rangectl uses it."""

    name: str  # the swarm node's hostname
    node_id: str
    url: str
    cpus: float
    memory: int  # bytes
    role: str  # manager | worker
    ready: bool
    active: bool
    _client: Any = None
    _backends: dict[str, DockerBackend] = field(default_factory=dict)
    _agents: dict[str, Agent] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(
                base_url=self.url, timeout=int(os.environ.get("RANGECTL_DOCKER_TIMEOUT", "120"))
            )
            reconnecting_ssh(self._client.api)  # ssh://: back after the engine's host was away
        return self._client

    @property
    def api(self) -> Any:
        return self.client.api

    def capacity(self) -> int:
        """Nodes this engine takes (by CPUs and memory)."""
        by_mem = self.memory * MEMORY_SHARE / (NODE_MEMORY_MB * 2**20)
        return max(0, int(min(by_mem, self.cpus * NODES_PER_CPU)))

    def agent(self, range_name: str, image: str | None = None) -> Agent:
        with self._lock:
            a = self._agents.get(range_name)
            if a is None:
                ref = image or _agent_ref()
                a = Agent(self.api, ensure_agent(self.api, range_name, ref, f"engine {self.name}"), f"engine {self.name}")
                self._agents[range_name] = a
            return a

    def forget_agent(self, range_name: str) -> None:
        with self._lock:
            self._agents.pop(range_name, None)

    def backend(self, range_name: str) -> DockerBackend:
        """The docker backend for this engine's part of ``range_name`` (host work through its agent)."""
        with self._lock:
            be = self._backends.get(range_name)
            if be is None:
                host = AgentHost(lambda: self.agent(range_name), f"engine {self.name}")
                be = DockerBackend(
                    self.client, host, exec_for=lambda locate: AgentNodeExec(locate, lambda ref: self.agent(ref.range))
                )
                self._backends[range_name] = be
            return be


def _agent_ref() -> str:
    from rangectl.backend.images import image_ref

    return image_ref(AGENT_IMAGE)


def read_engines(manager: docker.DockerClient) -> list[Engine]:
    """The swarm's nodes as engines (sorted: managers first, then by name)."""
    try:
        info = manager.info()
        nodes = manager.api.nodes()
    except APIError as exc:
        raise EnvironmentProblem(
            f"the engine at {manager.api.base_url} is not a swarm manager: {exc.explanation or exc}",
            fix="point DOCKER_HOST at a swarm manager (docs/cluster.md), or `scripts/cluster-lab.sh up`",
        ) from None
    self_id = (info.get("Swarm") or {}).get("NodeID")
    out = []
    for n in nodes:
        spec, desc, status = n.get("Spec") or {}, n.get("Description") or {}, n.get("Status") or {}
        res = desc.get("Resources") or {}
        url = (spec.get("Labels") or {}).get(ENGINE_LABEL)
        name = desc.get("Hostname") or n["ID"][:12]
        if not url:
            if n["ID"] != self_id:
                raise EnvironmentProblem(
                    f"swarm node {name} has no {ENGINE_LABEL} label: rangectl does not know where its engine is",
                    fix=f"docker node update --label-add {ENGINE_LABEL}=tcp://ADDR:2375 {name} (docs/cluster.md)",
                )
            url = engine_url(manager.api)  # DOCKER_HOST's form: `docker -H` (shell) refuses http://
        out.append(
            Engine(
                name=name, node_id=n["ID"], url=url,
                cpus=(res.get("NanoCPUs") or 0) / 1e9, memory=int(res.get("MemoryBytes") or 0),
                role=spec.get("Role", "worker"), ready=status.get("State") == "ready",
                active=spec.get("Availability", "active") == "active",
            )  # fmt: skip
        )
    return sorted(out, key=lambda e: (e.role != "manager", e.name))


def place(
    teams: dict[int, int],
    engines: list[Engine],
    spread: bool = False,
    kept: dict[int, str] | None = None,
    load: dict[str, int] | None = None,
) -> dict[int, str]:
    """Team -> engine name. ``teams``: {team: nodes}; ``kept``: teams already on an engine (they
    stay); ``load``: nodes each engine holds already. Packed: each team on the first engine
    (managers first, then by name) with room for it. Spread: each team on the engine with the
    most room left, as a share of its capacity, workers before managers between equals. RangeError
    when the engines have no room."""
    usable = [e for e in engines if e.ready and e.active]
    used = {e.name: (load or {}).get(e.name, 0) for e in engines}
    out: dict[int, str] = {}
    for t, eng in (kept or {}).items():
        if t in teams:
            out[t] = eng
            used[eng] = used.get(eng, 0) + teams[t]
    if not usable and len(out) < len(teams):
        raise RangeError("no swarm node is ready and active to place teams on", fix="see `docker node ls`")
    for t in sorted(teams):
        if t in out:
            continue
        need = teams[t]
        fits = [e for e in usable if used[e.name] + need <= e.capacity()]
        if not fits:
            total = sum(e.capacity() for e in usable)
            raise RangeError(
                f"the swarm has no room for team {t} ({need} nodes): {len(usable)} engine(s) take "
                f"{total} nodes, {sum(used.values())} are placed",
                fix="add engines, or set RANGECTL_NODE_MEMORY_MB / RANGECTL_NODES_PER_CPU (docs/cluster.md)",
            )
        if spread:  # the least loaded; between equals, workers before managers (they run the swarm)
            best = min(fits, key=lambda e: ((used[e.name] + need) / max(1, e.capacity()), e.role == "manager"))
        else:
            best = fits[0]
        out[t] = best.name
        used[best.name] += need
    return out


class SwarmBackend(Backend):
    name = "swarm"

    def __init__(self, manager: docker.DockerClient, local: docker.DockerClient | None = None, spread: bool = False):
        self.manager = manager
        self._local = local
        self.spread = spread
        self._engines: list[Engine] | None = None
        self._where: dict[tuple[str, int], str] = {}  # (range, team) -> engine name
        self.shipped: list[tuple[str, list[str]]] = []  # (engine, images) streamed by this process
        self._ship_lock = threading.Lock()
        self._nodes_exec = AgentNodeExec(self._locate, self._agent_of)
        self._revive_lock = threading.Lock()
        self._revived_at: dict[tuple[str, int], float] = {}

    # -- engines and placement ----------------------------------------------------------------------
    @property
    def local(self) -> docker.DockerClient:
        """The controller's own engine: where images are built before they are shipped."""
        if self._local is None:
            url = os.environ.get("RANGECTL_LOCAL_DOCKER_HOST", "unix:///var/run/docker.sock")
            self._local = docker.DockerClient(base_url=url, timeout=600)
        return self._local

    def engines(self, refresh: bool = False) -> list[Engine]:
        if self._engines is None or refresh:
            fresh = read_engines(self.manager)
            if self._engines is not None:  # keep clients and agents of engines we know
                known = {e.node_id: e for e in self._engines}
                fresh = [
                    dataclasses.replace(e, _client=known[e.node_id]._client, _backends=known[e.node_id]._backends,
                                        _agents=known[e.node_id]._agents) if e.node_id in known else e
                    for e in fresh
                ]  # fmt: skip
            self._engines = fresh
        return self._engines

    def engine(self, name: str) -> Engine:
        for e in self.engines():
            if e.name == name:
                return e
        raise RangeError(f"the swarm has no node '{name}' any more", fix="see `docker node ls`")

    def _each(self, fn: Callable[[Engine], Any], engines: list[Engine] | None = None) -> dict[str, Any]:
        """``fn(engine)`` on every engine at once; {engine: result}. An engine that does not
        answer is skipped with its error as the result."""
        engines = self.engines() if engines is None else engines
        with ThreadPoolExecutor(max(1, len(engines))) as pool:
            futs = {e.name: pool.submit(fn, e) for e in engines}
        out = {}
        for name, f in futs.items():
            try:
                out[name] = f.result()
            except (DockerException, OSError, RangeError) as exc:
                out[name] = exc
        return out

    def placement(self, range_name: str) -> dict[int, str]:
        """Where the range's teams are now: {team: engine}, from the engines' labels."""

        def teams_on(e: Engine) -> set[int]:
            cs = e.api.containers(all=True, filters=range_filter(range_name))
            return {int((c.get("Labels") or {}).get(L.TEAM) or 0) for c in cs}

        out: dict[int, str] = {}
        for name, teams in self._each(teams_on).items():
            if isinstance(teams, Exception):
                continue
            for t in teams:
                out[t] = name
                self._where[(range_name, t)] = name
        return out

    def plan_placement(self, range_name: str, plan: Plan) -> dict[int, str]:
        """Where ``up`` puts each team: teams already up stay where they are."""
        kept = self.placement(range_name)

        def load_of(e: Engine) -> int:
            return len(e.api.containers(filters=range_filter(None)))  # range nodes only (not agents, labs)

        loads = {n: v for n, v in self._each(load_of).items() if isinstance(v, int)}
        teams = {t.team: len(team_nodes(t)) for t in plan.teams}
        # nodes of this range already up are in ``loads`` and counted again by ``kept``: take them out
        for t, eng in kept.items():
            if t in teams and eng in loads:
                loads[eng] = max(0, loads[eng] - teams[t])
        return place(teams, self.engines(), self.spread, kept, loads)

    def _engine_of(self, range_name: str, team: int) -> Engine:
        name = self._where.get((range_name, team))
        if name is None:
            name = self.placement(range_name).get(team)
        if name is None:
            raise RangeNotFound(f"range '{range_name}' has no team {team} on any engine of the swarm")
        return self.engine(name)

    def _sub(self, ref: NodeRef) -> DockerBackend:
        return self._engine_of(ref.range, ref.team).backend(ref.range)

    def _locate(self, ref: NodeRef) -> tuple[str, int]:
        return self._revived(ref, lambda: self._sub(ref)._locate(ref))

    def _revived(self, ref: NodeRef, fn: Callable[[], Any]) -> Any:
        """``fn()``; when it fails because the node is not running (its engine stopped and came
        back: the containers of a restarted engine stay stopped), bring the team's part of the
        range back on that engine (:meth:`revive`) and try once more."""
        try:
            return fn()
        except NotRunning:
            pass
        self.revive(ref.range, ref.team)
        return fn()

    def revive(self, range_name: str, team: int) -> UpResult | None:
        """Start team ``team``'s stopped nodes again where they are, with their routes and the probe's
        isolation (the engine's part of ``up`` for that team, from the range's recorded plan). At
        most once per REVIVE_SECONDS per team; None when skipped."""
        key = (range_name, team)
        with self._revive_lock:
            last = self._revived_at.get(key, 0.0)
            if time.monotonic() - last < REVIVE_SECONDS:
                return None
            self._revived_at[key] = time.monotonic()
        from rangectl.state import RangeState

        st = RangeState(range_name)
        if not st.exists():
            return None
        scenario, plan = st.scenario(), st.plan()
        sub = dataclasses.replace(plan, teams=[plan.team(team)])
        images = self.ensure_images(sorted({n.image for n in plan.team(team).nodes}))
        e = self._engine_of(range_name, team)
        e.forget_agent(range_name)  # its agent restarted with the engine: find it again
        return e.backend(range_name).apply(range_name, scenario, sub, images)

    def _agent_of(self, ref: NodeRef) -> Agent:
        return self._engine_of(ref.range, ref.team).agent(ref.range)

    # -- images -------------------------------------------------------------------------------------
    def ensure_images(self, images: list[str], on_progress: Callable[..., None] | None = None) -> dict[str, str]:
        from rangectl.backend.images import ensure_images

        return ensure_images(self.local, sorted({*images, AGENT_IMAGE}), on_progress=on_progress)

    def ship(self, refs: list[str], engines: list[Engine], note: Progress | None = None) -> dict[str, list[str]]:
        """Stream the images ``refs`` from the controller's engine to each engine of ``engines``
        that has not the same image ID; {engine: refs shipped}. One ``docker save`` per distinct
        set of missing images, loads in parallel."""
        ids = {r: self.local.api.inspect_image(r)["Id"] for r in refs}

        def missing(e: Engine) -> tuple[str, ...]:
            out = []
            for r in refs:
                try:
                    if e.api.inspect_image(r)["Id"] == ids[r]:
                        continue
                except NotFound:
                    pass
                out.append(r)
            return tuple(out)

        need = self._each(missing, engines)
        for n, m in need.items():
            if isinstance(m, Exception):
                raise RangeError(f"engine {n} does not answer: {m}")
        groups: dict[tuple[str, ...], list[str]] = {}
        for n, m in need.items():
            if m:
                groups.setdefault(m, []).append(n)
        shipped: dict[str, list[str]] = {}
        for want, names in groups.items():
            results = _tee_load(_save(self.local.api, list(want)), [self.engine(n) for n in names])
            for n in names:
                if isinstance(results.get(n), Exception):
                    raise RangeError(f"cannot load images into engine {n}: {results[n]}")
                shipped[n] = list(want)
                if note:
                    note("ship", f"{len(want)} image(s) to {n}")
        with self._ship_lock:
            self.shipped.extend((n, r) for n, r in shipped.items())
        return shipped

    # -- lifecycle ----------------------------------------------------------------------------------
    def _split(self, plan: Plan, where: dict[int, str]) -> dict[str, Plan]:
        out: dict[str, Plan] = {}
        for t in plan.teams:
            out.setdefault(where[t.team], dataclasses.replace(plan, teams=[])).teams.append(t)
        return out

    def check_free(self, range_name: str, plan: Plan) -> None:
        where = self.plan_placement(range_name, plan)
        for name, sub in self._split(plan, where).items():
            self.engine(name).backend(range_name).check_free(range_name, sub)

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
        where = self.plan_placement(range_name, plan)
        parts = self._split(plan, where)
        engines = [self.engine(n) for n in parts]
        refs = {images[n.image] for t in plan.teams for n in t.nodes} | {images[AGENT_IMAGE]}
        refs |= {images[t.probe.image] for t in plan.teams if t.probe}
        if stamps is not None and plan.teams:  # stamps are images of the controller's engine too
            first = plan.teams[0]
            refs |= {s[0] for s in (stamps(first, n) for n in first.nodes) if s is not None}
        for (t, n) in where.items():
            self._where[(range_name, t)] = n
        # the images go to the engines while each engine makes its networks (which need none);
        # the agent, the host's rules and the containers wait for them
        with ThreadPoolExecutor(1) as shipper:
            shipping = shipper.submit(self.ship, sorted(refs), engines, note)

            def one(e: Engine) -> UpResult:
                def ready() -> None:
                    shipping.result()
                    e.agent(range_name, images[AGENT_IMAGE])

                return e.backend(range_name).up(range_name, scenario, parts[e.name], images, progress, stamps, ready)

            results = self._each(one, engines)
            shipping.result()  # its error, when no engine got as far as waiting for it
        total = UpResult()
        for name, r in results.items():
            if isinstance(r, Exception):
                raise RangeError(f"engine {name}: {r}") from None
            for f in ("created_networks", "created_containers", "kept", "started", "stamped"):
                getattr(total, f).extend(getattr(r, f))
            total.seconds = max(total.seconds, r.seconds)
        return total

    def make_stamps(
        self,
        range_name: str,
        scenario: Scenario,
        plan: Plan,
        images: dict[str, str],
        scenario_file: Any,
        trust_playbooks: bool = False,
        note: Callable[[str, str, str], None] | None = None,
        workdir: Any = None,
        sample: bool = True,
    ) -> dict[str, Any]:
        """Stamps are made once on the controller's own engine, as for one machine, then shipped
        with the other images to the engines that hold teams (:meth:`apply`)."""
        from rangectl.backend.stamp import make_stamps

        local = DockerBackend(self.local)
        return make_stamps(local, range_name, scenario, plan, images, scenario_file, trust_playbooks, note, workdir, sample)

    def remove(self, range_name: str | None, progress: Progress | None = None) -> tuple[int, int]:
        if range_name is None:  # every range: one at a time, each with its own agents
            totals = [self.remove(r, progress) for r in sorted(self.ranges())]
            for e in self.engines():
                remove_agents(e.api, None)
            return sum(t[0] for t in totals), sum(t[1] for t in totals)

        def one(e: Engine) -> tuple[int, int]:
            n = e.backend(range_name).down(range_name, progress) if self._holds(e, range_name) else (0, 0)
            remove_agents(e.api, range_name)
            e.forget_agent(range_name)
            return n

        results = self._each(one)
        failed = {n: r for n, r in results.items() if isinstance(r, Exception)}
        if failed:
            raise RangeError(
                "cannot remove the range from " + ", ".join(f"engine {n} ({r})" for n, r in failed.items()),
                fix="bring that engine back and run `rangectl down` again",
            )
        for key in [k for k in self._where if range_name is None or k[0] == range_name]:
            del self._where[key]
        return sum(r[0] for r in results.values()), sum(r[1] for r in results.values())

    def _holds(self, e: Engine, range_name: str) -> bool:
        flt = range_filter(range_name)
        return bool(e.api.containers(all=True, filters=flt) or e.api.networks(filters=flt))

    def reset(
        self, ref: NodeRef, scenario: Scenario, plan: Plan, images: dict[str, str], progress: Progress | None = None
    ) -> NodeInfo:
        e = self._engine_of(ref.range, ref.team)
        self.ship(sorted(set(images.values())), [e], progress)
        return self._tag(e, e.backend(ref.range).reset(ref, scenario, plan, images, progress))

    # -- inspection ---------------------------------------------------------------------------------
    @staticmethod
    def _tag(e: Engine, info: NodeInfo) -> NodeInfo:
        return dataclasses.replace(info, engine=e.name)

    def ranges(self) -> dict[str, RangeSummary]:
        out: dict[str, RangeSummary] = {}
        for part in self._each(lambda e: DockerBackend(e.client).ranges()).values():
            if isinstance(part, Exception):
                continue
            for rname, s in part.items():
                r = out.setdefault(rname, RangeSummary(rname))
                r.containers += s.containers
                r.running += s.running
                r.networks += s.networks
                r.teams |= s.teams
        return out

    def nodes(self, range_name: str) -> list[NodeInfo]:
        out: list[NodeInfo] = []
        for name, part in self._each(lambda e: e.backend(range_name).nodes(range_name)).items():
            if isinstance(part, Exception):
                raise RangeError(f"engine {name} does not answer: {part}")
            e = self.engine(name)
            out.extend(self._tag(e, n) for n in part)
            for n in part:
                self._where[(range_name, n.team)] = name
        return sorted(out, key=lambda n: (n.team, n.node))

    def networks(self, range_name: str) -> list[NetworkInfo]:
        out: list[NetworkInfo] = []
        for name, part in self._each(lambda e: e.backend(range_name).networks(range_name)).items():
            if isinstance(part, Exception):
                raise RangeError(f"engine {name} does not answer: {part}")
            out.extend(part)
        return sorted(out, key=lambda n: (n.team, n.network))

    def node(self, ref: NodeRef) -> NodeInfo:
        e = self._engine_of(ref.range, ref.team)
        return self._tag(e, e.backend(ref.range).node(ref))

    # -- work inside nodes --------------------------------------------------------------------------
    def exec(self, ref: NodeRef, argv: list[str], timeout: float | None = None) -> tuple[int, str]:
        return self._revived(ref, lambda: self._sub(ref).exec(ref, argv, timeout))

    def exec_stream(self, ref: NodeRef, argv: list[str]) -> ExecStream:
        return self._sub(ref).exec_stream(ref, argv)

    def logs(self, ref: NodeRef, follow: bool = False, tail: int = 200) -> Iterator[bytes]:
        return self._sub(ref).logs(ref, follow, tail)

    def copy_in(self, ref: NodeRef, directory: str, files: dict[str, bytes], mode: int = 0o644) -> None:
        self._sub(ref).copy_in(ref, directory, files, mode)

    def shell_argv(self, ref: NodeRef) -> list[str]:
        e = self._engine_of(ref.range, ref.team)
        return ["docker", "-H", e.url, "exec", "-it", container_name(ref.range, ref.team, ref.node), "/bin/bash", "-l"]

    def recording_agents(self, range_name: str) -> list[tuple[str, Any]]:
        """Engines on another kernel than this machine's (their boot ids differ), each with its agent:
        their nodes' commands are recorded there. ``RANGECTL_RECORD_VIA_AGENT=1``: every engine's."""
        every = os.environ.get("RANGECTL_RECORD_VIA_AGENT") == "1"
        here = LOCAL.boot_id()
        out = []
        for e in self.engines():
            if not self._holds(e, range_name):
                continue
            agent = e.agent(range_name)
            if every or agent.call(op_boot_id) != here:
                out.append((e.name, agent))
        return out

    def capture_interfaces(self, range_name: str, team: int) -> dict[str, str]:
        """The team's bridges, on the host of the engine that holds the team."""
        return self._engine_of(range_name, team).backend(range_name).capture_interfaces(range_name, team)

    def capture_stream(self, range_name: str, team: int, iface: str, snaplen: int) -> Any:
        """tcpdump run by that engine's agent (in its host's network namespace), streamed here."""
        return self._engine_of(range_name, team).agent(range_name).capture(iface, snaplen)

    def ansible_host(self, ref: NodeRef) -> dict[str, str]:
        e = self._engine_of(ref.range, ref.team)
        return {
            "ansible_connection": "community.docker.docker_api",
            "ansible_host": container_name(ref.range, ref.team, ref.node),
            "ansible_docker_docker_host": e.url,
        }

    @property
    def nodes_exec(self) -> NodeExec:
        return self._nodes_exec


def _save(api: Any, refs: list[str]) -> Iterator[bytes]:
    """``docker save REF...``: one tar of the images (layers they share in it once)."""
    res = api._get(api._url("/images/get"), params={"names": refs}, stream=True)
    return api._stream_raw_result(res, 2 << 20, False)


TEE_CHUNKS = 16  # chunks (2 MiB each) of the save stream held per engine that reads it slower


def _tee_load(chunks: Iterator[bytes], engines: list[Engine]) -> dict[str, Any]:
    """``docker load`` into every engine of ``engines`` at once from one ``docker save`` stream:
    each chunk goes to every engine as it comes (no temporary file: the loads start with the
    save, and nothing waits for the whole tar). {engine: None, or the error of its load}; an
    engine whose load failed stops getting chunks, the others go on."""
    queues: dict[str, queue.Queue[bytes | None]] = {e.name: queue.Queue(TEE_CHUNKS) for e in engines}
    failed: dict[str, BaseException] = {}

    def body(name: str) -> Iterator[bytes]:
        q = queues[name]
        while (chunk := q.get()) is not None:
            yield chunk

    def load(e: Engine) -> None:
        try:
            for msg in e.api.load_image(body(e.name), quiet=True):
                if isinstance(msg, dict) and msg.get("error"):
                    raise RangeError(str(msg["error"]))
        except BaseException as exc:  # noqa: BLE001 - reported per engine
            failed[e.name] = exc
            raise

    def put(name: str, item: bytes | None) -> None:
        while name not in failed:
            try:
                queues[name].put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    with ThreadPoolExecutor(max(1, len(engines))) as pool:
        futs = {e.name: pool.submit(load, e) for e in engines}
        try:
            for chunk in chunks:
                for name in queues:
                    if not futs[name].done():
                        put(name, chunk)
        finally:
            for name in queues:
                if not futs[name].done():
                    put(name, None)
    return {name: f.exception() for name, f in futs.items()}


def manager_client() -> docker.DockerClient:
    """The swarm manager ``DOCKER_HOST`` names (a local socket, ``tcp://`` or ``ssh://``)."""
    try:
        # ssh:// through paramiko, as every engine (its channels shut down one way, as the agent's streams need)
        c = docker.from_env(timeout=int(os.environ.get("RANGECTL_DOCKER_TIMEOUT", "120")))
        reconnecting_ssh(c.api)
        c.ping()
    except DockerException as exc:
        raise EnvironmentProblem(
            f"the swarm manager does not answer ({os.environ.get('DOCKER_HOST') or 'the local engine'}): {exc}",
            fix="set DOCKER_HOST to a swarm manager (docs/cluster.md), e.g. `eval \"$(scripts/cluster-lab.sh up)\"`",
        ) from None
    return c


def make() -> SwarmBackend:
    return SwarmBackend(manager_client(), spread=os.environ.get("RANGECTL_SPREAD", "") not in ("", "0"))


def capacity_note(engines: list[Engine]) -> str:
    return ", ".join(f"{e.name} {e.capacity()} nodes ({e.cpus:g} CPU, {math.floor(e.memory / 2**30)} GiB)" for e in engines)
