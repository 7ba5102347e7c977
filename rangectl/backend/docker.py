"""The Docker backend: apply a deployment plan to the local Docker engine, and take it away again.

Implements :class:`rangectl.backend.base.Backend`; work inside nodes goes through
:class:`rangectl.backend.nodeexec.LocalNodeExec` (the engine is on this machine: its
containers' namespaces are this host's; :mod:`rangectl.backend.engine` refuses any other).

Every network is an *internal* bridge (no route out of the range); every
resource carries the labels in :mod:`rangectl.labels`, so ``down`` finds and
removes exactly one range's resources, even when its state folder is gone or
``up`` was interrupted half way.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import shlex
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from ipaddress import IPv4Network
from typing import Any

import docker
from docker.errors import APIError, NotFound

from rangectl import labels as L
from rangectl.backend.base import (
    Backend,
    ExecStream,
    NetworkInfo,
    NodeInfo,
    NodeRef,
    RangeSummary,
    StampFor,
    UpResult,
)
from rangectl.backend.execs import run_exec
from rangectl.backend.hostops import LOCAL, Host
from rangectl.backend.nodeexec import LocalNodeExec, Locate, NodeExec
from rangectl.errors import EnvironmentProblem, NotRunning, RangeError
from rangectl.errors import NotFound as RangeNotFound
from rangectl.plan import NetworkPlan, NodePlan, Plan, TeamPlan
from rangectl.scenario.model import Scenario
from rangectl.scenario.vantage import PROBE_ROLE
from rangectl.scenario.variables import substitute_all

Progress = Callable[[str, str], None]  # (phase, item) -> None

#: Engine calls in flight at once (create/start/remove of containers and networks). Measured on
#: 2 cores with bench/up.py --workers (docs/ranges.md "Measured"); RANGECTL_DOCKER_WORKERS overrides.
WORKERS = int(os.environ.get("RANGECTL_DOCKER_WORKERS", "8"))
#: how long `down` keeps trying to remove a network whose endpoints the engine has not let go yet
NETWORK_REMOVE_SECONDS = 30.0

# One endpoint change at a time per team. Docker 20.10 (Debian 12's docker.io) keeps a per-network
# endpoint counter whose updates race: two containers of one network started, or removed, at the
# same moment can leave it one too high, and the network then refuses removal ("has active
# endpoints" with no endpoint left) until dockerd restarts (moby#43286; the counter is gone since
# Docker 28). A team's networks are only its own containers', so serialising the calls that make
# or drop endpoints (start, remove) per team removes the race, while teams still go in parallel.
_ENDPOINT_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}
_ENDPOINT_LOCKS_GUARD = threading.Lock()


def endpoint_lock(engine: str, range_name: str, team: str) -> threading.Lock:
    """The lock every endpoint-changing call for one team of one range on one engine holds."""
    with _ENDPOINT_LOCKS_GUARD:
        return _ENDPOINT_LOCKS.setdefault((engine, range_name, team), threading.Lock())


def round_robin(groups: list[list[Any]]) -> list[Any]:
    """The groups' items interleaved (first of each, then second of each...): jobs submitted in
    this order keep the pool's workers on different teams."""
    return [x for row in itertools.zip_longest(*groups) for x in row if x is not None]


#: Separates the parts of a resource name. Range names (``[a-z0-9-]``), network and node
#: names (``[a-z0-9_-]``) never contain it, so ``rc-<range>.t<team>.<name>`` reads back one
#: way only: no two (range, team, name) triples share a name (docs/ranges.md).
SEP = "."


def _resource_name(range_name: str, team: int, name: str) -> str:
    for part in (range_name, name):
        if not part or SEP in part or "/" in part:
            raise ValueError(f"'{part}' cannot be part of a range resource name")
    return f"rc-{range_name}{SEP}t{int(team)}{SEP}{name}"


def net_name(range_name: str, team: int, net: str) -> str:
    return _resource_name(range_name, team, net)


def container_name(range_name: str, team: int, node: str) -> str:
    return _resource_name(range_name, team, node)


def bridge_name(range_name: str, team: int, net: str) -> str:
    """The Linux bridge of a range network (15 characters at most)."""
    digest = hashlib.sha1(f"{range_name}/{team}/{net}".encode()).hexdigest()[:12]
    return f"rc-{digest}"


def _insert_rules(host: Host, rules: list[list[str]], what: str, fix: str) -> None:
    """Insert ``rules`` (DOCKER-USER arguments) at the top, in order (the last one ends first),
    in one ``iptables-restore --noflush`` (one process and one commit, where a call per rule
    re-reads the whole ruleset each time: hundreds of rules at 40 teams); EnvironmentProblem
    naming ``what`` when iptables refuses."""
    if not rules:
        return
    r = host.iptables_batch([["-I", *rule] for rule in rules])
    if r.returncode != 0:
        raise EnvironmentProblem(f"cannot add {what} on {host.where}: {r.stderr.strip()}", fix=fix)


def _bridge_rule(range_name: str, bridge: str) -> list[str]:
    return ["DOCKER-USER", "-i", bridge, "-o", bridge, "-m", "comment", "--comment", f"rangectl:{range_name}", "-j", "ACCEPT"]


def allow_bridged(range_name: str, bridges: list[str], host: Host = LOCAL) -> None:
    """Let frames that stay on one range bridge pass the host's FORWARD chain.

    With br_netfilter, Docker's rules for --internal networks drop bridged
    frames whose destination is outside the network's own subnet, which is
    every packet a scenario router forwards. Frames that enter and leave the
    same range bridge never leave the range, so accepting exactly those (in
    DOCKER-USER, which runs first) keeps the range internal and lets its
    routers route. One listing, then the missing rules in one batch.
    """
    have = set(host.iptables("-S", "DOCKER-USER").stdout.splitlines())
    missing = []
    for bridge in dict.fromkeys(bridges):
        rule = _bridge_rule(range_name, bridge)
        if "-A " + shlex.join(rule) not in have:
            missing.append(rule)
    _insert_rules(host, missing, "the forwarding rules of the range's bridges", "run as root with iptables installed (scripts/setup.sh)")


def remove_bridge_rules(range_name: str | None, part: str | None = None, host: Host = LOCAL) -> int:
    """Delete the DOCKER-USER rules of a range (of every range when None); with ``part``, only
    the range's rules commented ``rangectl:<range>:<part>`` (range names have no ':').
    One listing and one batch (rule by rule if the batch fails: a rule deleted meanwhile)."""
    listing = host.iptables("-S", "DOCKER-USER")
    tag = "rangectl:" if range_name is None else f"rangectl:{range_name}"
    doomed: list[list[str]] = []
    for line in listing.stdout.splitlines():
        if not line.startswith("-A DOCKER-USER"):
            continue
        parts = shlex.split(line)
        comment = parts[parts.index("--comment") + 1] if "--comment" in parts else ""
        if part is not None:
            hit = range_name is not None and comment == f"{tag}:{part}"
        else:
            hit = comment == tag or comment.startswith(tag if range_name is None else f"{tag}:")
        if hit:
            doomed.append(parts[1:])
    if not doomed:
        return 0
    if host.iptables_batch([["-D", *rule] for rule in doomed]).returncode == 0:
        return len(doomed)
    return sum(host.iptables("-D", *rule).returncode == 0 for rule in doomed)


def foreign_network(info: dict[str, Any], range_name: str, team: int, net: NetworkPlan) -> str | None:
    """Why a Docker network (``networks()``/``inspect_network`` data) is not team ``team``'s
    network ``net.name`` of range ``range_name``; None when it is (labels, subnet, --internal)."""
    lab = info.get("Labels") or {}
    want = {L.MANAGED: "1", L.RANGE: range_name, L.TEAM: str(team), L.NETWORK: net.name}
    wrong = [k for k, v in want.items() if lab.get(k) != v]
    if wrong:
        owner = lab.get(L.RANGE)
        if lab.get(L.MANAGED) != "1" or owner is None:
            return "is not a rangectl network (no range labels)"
        return (
            f"belongs to range '{owner}' team {lab.get(L.TEAM)} network '{lab.get(L.NETWORK)}' "
            f"(labels {', '.join(sorted(wrong))} differ)"
        )
    subnets = [c.get("Subnet") for c in (info.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
    if subnets != [str(net.subnet)]:
        return f"has subnet {', '.join(subnets) or 'none'}, not the planned {net.subnet}"
    if not info.get("Internal"):
        return "is not --internal"
    return None


def team_nodes(team: TeamPlan) -> list[NodePlan]:
    """The containers of one team: the scenario's nodes, then rangectl's probe (if planned)."""
    return [*team.nodes, *([team.probe] if team.probe is not None else [])]


def range_filter(range_name: str | None) -> dict[str, Any]:
    """The label filter of one range's resources, or of every range's (None). Every range
    resource has a range label: containers made from rangectl's images inherit the images'
    ``io.rangectl.managed`` label (the cluster lab's engines, an engine's agent) but are no
    range's, and `down --all` must leave them alone."""
    if range_name is None:
        return {"label": [f"{L.MANAGED}=1", L.RANGE]}
    return {"label": [f"{L.MANAGED}=1", f"{L.RANGE}={range_name}"]}


class DockerBackend(Backend):
    name = "docker"

    def __init__(
        self, client: docker.DockerClient, host: Host = LOCAL, exec_for: Callable[[Locate], NodeExec] = LocalNodeExec
    ):
        """``host``: where the engine's host-level work runs (this machine; an engine's agent for
        an engine elsewhere); ``exec_for(locate)``: the execution seam over this engine's nodes
        (default: in this process)."""
        self.client = client
        self.api = client.api
        self.host = host
        self._nodes_exec = exec_for(self._locate)

    @property
    def nodes_exec(self) -> NodeExec:
        return self._nodes_exec

    def _endpoints(self, range_name: str, team: int | str) -> threading.Lock:
        """Held around every call that makes or drops a team's endpoints (:func:`endpoint_lock`)."""
        return endpoint_lock(str(getattr(self.api, "base_url", "")), range_name, str(team))

    @staticmethod
    def _range_team(info: dict[str, Any]) -> tuple[str, str]:
        lab = (info.get("Config") or {}).get("Labels") or {}
        return lab.get(L.RANGE, ""), lab.get(L.TEAM, "")

    def check_free(self, range_name: str, plan: Plan) -> None:
        self.check_names_free(range_name, plan)
        self.check_subnets(range_name, plan)

    def ensure_images(self, images: list[str], on_progress: Callable[..., None] | None = None) -> dict[str, str]:
        from rangectl.backend.images import ensure_images

        return ensure_images(self.client, images, on_progress=on_progress)

    def apply(
        self,
        range_name: str,
        scenario: Scenario,
        plan: Plan,
        images: dict[str, str],
        progress: Progress | None = None,
        stamps: StampFor | None = None,
    ) -> UpResult:
        return self.up(range_name, scenario, plan, images, progress, stamps)

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
        from rangectl.backend.stamp import make_stamps

        return make_stamps(self, range_name, scenario, plan, images, scenario_file, trust_playbooks, note, workdir, sample)

    def remove(self, range_name: str | None, progress: Progress | None = None) -> tuple[int, int]:
        return self.down(range_name, progress)

    # -- checks before touching anything ------------------------------------------
    def check_subnets(self, range_name: str, plan: Plan) -> None:
        """Refuse planned subnets that clash with a Docker network not of this range.

        A network counts as this range's own (to be adopted, so not a clash) only when its
        name is the planned one *and* its labels say this range, team and network."""
        ours = {net_name(range_name, t.team, n.name): (t.team, n) for t in plan.teams for n in t.networks}
        existing: list[tuple[str, IPv4Network]] = []
        for net in self.api.networks():
            mine = ours.get(net["Name"])
            if mine is not None and foreign_network(net, range_name, mine[0], mine[1]) is None:
                continue
            for cfg in (net.get("IPAM") or {}).get("Config") or []:
                sub = cfg.get("Subnet")
                if sub and ":" not in sub:
                    existing.append((net["Name"], IPv4Network(sub, strict=False)))
        for t in plan.teams:
            for n in t.networks:
                for other, sub in existing:
                    if n.subnet.overlaps(sub):
                        raise RangeError(
                            f"team {t.team} network '{n.name}' ({n.subnet}) clashes with Docker network '{other}' ({sub})",
                            fix="remove that network, `rangectl down` the range that owns it, or change the scenario's subnet",
                        )

    def check_names_free(self, range_name: str, plan: Plan) -> None:
        """A container or network name taken by something that is not this range's is a clash.

        Two listings of the engine (not an inspect per name: 360 calls in a row at 40 teams)."""
        containers = {
            c["Names"][0].lstrip("/"): c.get("Labels") or {} for c in self.api.containers(all=True) if c.get("Names")
        }
        networks = {n["Name"]: n for n in self.api.networks()}
        for t in plan.teams:
            for n in team_nodes(t):
                name = container_name(range_name, t.team, n.name)
                lab = containers.get(name)
                if lab is None:
                    continue
                want = {L.MANAGED: "1", L.RANGE: range_name, L.TEAM: str(t.team), L.NODE: n.name}
                if any(lab.get(k) != v for k, v in want.items()):
                    raise RangeError(
                        f"a container named '{name}' exists and is not node '{n.name}' of team {t.team} "
                        f"of range '{range_name}'",
                        fix="pick another --name or remove that container",
                    )
            for net in t.networks:
                name = net_name(range_name, t.team, net.name)
                info = networks.get(name)
                if info is None:
                    continue
                why = foreign_network(info, range_name, t.team, net)
                if why is not None:
                    raise RangeError(
                        f"Docker network '{name}' exists but {why}: range '{range_name}' will not use it",
                        fix="remove that network (`docker network rm`) or pick another --name",
                    )

    # -- up ---------------------------------------------------------------------
    def up(
        self,
        range_name: str,
        scenario: Scenario,
        plan: Plan,
        images: dict[str, str],
        progress: Progress | None = None,
        stamps: StampFor | None = None,
        ready: Callable[[], None] | None = None,
    ) -> UpResult:
        """Networks, then containers. ``ready()`` (when given) is called once the networks are
        made and before anything needs an image or the host: the swarm backend makes an
        engine's networks while its images are still being shipped there."""
        t0 = time.monotonic()
        note = progress or (lambda phase, item: None)
        res = UpResult()
        self.check_names_free(range_name, plan)
        self.check_subnets(range_name, plan)
        base_labels = {
            L.MANAGED: "1",
            L.RANGE: range_name,
            L.SCENARIO: scenario.name,
            L.SCENARIO_HASH: plan.scenario_hash,
        }
        # networks, concurrently
        nets: dict[tuple[int, str], str] = {}
        jobs = []
        with ThreadPoolExecutor(WORKERS) as pool:
            for t in plan.teams:
                for n in t.networks:
                    jobs.append(pool.submit(self._ensure_network, range_name, t, n, base_labels, res))
            for fut in as_completed(jobs):
                key, nid, name = fut.result()
                nets[key] = nid
                note("network", name)
        if ready is not None:
            ready()
        allow_bridged(
            range_name, [bridge_name(range_name, t.team, n.name) for t in plan.teams for n in t.networks], self.host
        )
        # containers, concurrently; their default routes in one batch after them (on an engine
        # elsewhere: one agent request, not one per node)
        routes: list[tuple[int, NodePlan]] = []
        jobs = []
        with ThreadPoolExecutor(WORKERS) as pool:
            # node k of every team, then node k+1...: the workers start different teams' nodes,
            # each team's one at a time (endpoint_lock)
            for t, node in round_robin([[(t, n) for n in team_nodes(t)] for t in plan.teams]):
                env = substitute_all(scenario.nodes[node.name].env, t.values) if node.role != PROBE_ROLE else {}
                jobs.append(
                    pool.submit(
                        self._ensure_container, range_name, t, node, env, images[node.image], nets, base_labels, res,
                        stamps, routes,
                    )
                )
            errors = []
            for fut in as_completed(jobs):
                try:
                    name = fut.result()
                    note("container", name)
                except Exception as exc:  # collect, then raise the first
                    errors.append(exc)
            if errors:
                raise errors[0]
        self._set_routes(routes)
        # each probe's neighbours and bridge ports, once every container (MAC, veth) exists
        with ThreadPoolExecutor(WORKERS) as pool:
            for fut in [pool.submit(self.secure_probe, range_name, t) for t in plan.teams if t.probe]:
                fut.result()
        res.seconds = time.monotonic() - t0
        return res

    def _ensure_network(self, range_name: str, team: TeamPlan, n, base_labels: dict, res: UpResult):
        name = net_name(range_name, team.team, n.name)
        bridge = bridge_name(range_name, team.team, n.name)
        try:
            info = self.api.inspect_network(name)
        except NotFound:
            info = None
        if info is not None:
            # adopt only what this range made: labels, subnet and --internal must all say so
            why = foreign_network(info, range_name, team.team, n)
            if why is not None:
                raise RangeError(
                    f"Docker network '{name}' exists but {why}: range '{range_name}' will not use it",
                    fix="remove that network (`docker network rm`) or pick another --name",
                )
            res.kept.append(name)
            return (team.team, n.name), info["Id"], name
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=str(n.subnet), gateway=str(n.bridge))]
        )
        labels = dict(base_labels, **{L.TEAM: str(team.team), L.NETWORK: n.name})
        try:
            created = self.api.create_network(
                name,
                driver="bridge",
                internal=True,
                ipam=ipam,
                labels=labels,
                check_duplicate=True,
                options={
                    "com.docker.network.bridge.enable_ip_masquerade": "false",
                    "com.docker.network.bridge.inhibit_ipv4": "true",
                    "com.docker.network.bridge.name": bridge,
                },
            )
        except APIError as exc:
            raise RangeError(
                f"cannot create network {name} ({n.subnet}): {exc.explanation or exc}",
                fix="check `docker network ls` for a clashing subnet",
            ) from None
        res.created_networks.append(name)
        return (team.team, n.name), created["Id"], name

    def _ensure_container(
        self,
        range_name: str,
        team: TeamPlan,
        node: NodePlan,
        env: dict[str, str],
        image: str,
        nets: dict[tuple[int, str], str],
        base_labels: dict,
        res: UpResult,
        stamps: StampFor | None = None,
        routes: list[tuple[int, NodePlan]] | None = None,
    ) -> str:
        """Create and start the node (or adopt the range's own). Its default route is set at once,
        or, with ``routes``, (pid, node) is added there for one batch after every container."""
        name = container_name(range_name, team.team, node.name)
        # create straight away (a fresh range is the common case: one engine call less per
        # node than inspecting first); a name that exists (409) is this range's node from an
        # earlier or concurrent `up` (check_names_free refused anyone else's): keep or start it
        items = list(node.interfaces.items())
        first_net, first_ip = items[0]
        probe = node.role == PROBE_ROLE
        extra: dict[str, Any] = {}
        if probe:
            # rangectl's probe vantage: an idle process nobody logs in to. Probes enter its
            # network namespace from the controller (setns), so it needs no capability,
            # no writable root, no shell, no service (docs/scoring.md "Probe vantage").
            host_config = self.api.create_host_config(
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                read_only=True,
                pids_limit=8,
                mem_limit="32m",
                init=False,
            )
            extra = {"entrypoint": ["sleep", "infinity"], "command": [], "user": "65534:65534"}
        else:
            host_config = self.api.create_host_config(
                cap_add=node.capabilities or None,
                sysctls=self._sysctls(node),
                pids_limit=1024,
                init=False,
            )
        aliases = [] if probe else [node.name]
        netcfg = self.api.create_networking_config(
            {
                net_name(range_name, team.team, first_net): self.api.create_endpoint_config(
                    ipv4_address=str(first_ip), aliases=aliases or None
                )
            }
        )
        labels = dict(base_labels, **{L.TEAM: str(team.team), L.NODE: node.name, L.ROLE: node.role})
        stamped = stamps(team, node) if stamps is not None and not probe else None
        if stamped is not None:  # provisioned once: start from the stamp, the team's files put in below
            image = stamped[0]
            labels[L.STAMP] = stamped[0]
        environment = dict(env)
        environment.update(
            {
                "RANGECTL_RANGE": range_name,
                "RANGECTL_TEAM": str(team.team),
                "RANGECTL_NODE": node.name,
                "RANGECTL_ROLE": node.role,
            }
        )
        try:
            created = self.api.create_container(
                image,
                name=name,
                hostname=node.name,
                labels=labels,
                environment=environment,
                host_config=host_config,
                networking_config=netcfg,
                detach=True,
                **extra,
            )
        except docker.errors.ImageNotFound:
            raise EnvironmentProblem(f"image {image} is not built", fix="run `rangectl images build`") from None
        except APIError as exc:
            if exc.status_code == 409:
                return self._adopt_container(name, node, res)
            raise RangeError(f"cannot create container {name}: {exc.explanation or exc}") from None
        cid = created["Id"]
        res.created_containers.append(name)
        if stamped is not None:
            if not self.api.put_archive(cid, "/", stamped[1]):
                raise RangeError(f"cannot put team {team.team}'s files into {name}")
            res.stamped.append((team.team, node.name))
        for net, ip in items[1:]:
            self.api.connect_container_to_network(
                cid, nets[(team.team, net)], ipv4_address=str(ip), aliases=aliases or None
            )
        with self._endpoints(range_name, team.team):
            self.api.start(cid)
        if routes is None:
            self._configure(cid, node)
        else:
            routes.append((self.pid(cid), node))
        return name

    def _adopt_container(self, name: str, node: NodePlan, res: UpResult) -> str:
        """The range's node that already exists: kept when running, else started and configured."""
        try:
            info = self.api.inspect_container(name)
        except NotFound:
            raise RangeError(f"container {name} was removed while `up` made it; run `rangectl up` again") from None
        if info["State"]["Running"]:
            res.kept.append(name)
            return name
        with self._endpoints(*self._range_team(info)):
            self.api.start(info["Id"])
        self._configure(info["Id"], node)
        res.started.append(name)
        return name

    @staticmethod
    def _sysctls(node: NodePlan) -> dict[str, str]:
        """A router's forwarding settings, then the scenario's own (net.* of the node's netns only)."""
        out: dict[str, str] = {}
        if node.forward:
            out = {
                "net.ipv4.ip_forward": "1",
                "net.ipv4.conf.all.rp_filter": "0",
                "net.ipv4.conf.default.rp_filter": "0",
                "net.ipv4.conf.all.send_redirects": "0",
            }
        return {**out, **node.sysctls}

    def _set_routes(self, routes: list[tuple[int, NodePlan]]) -> None:
        """Every node's default route (:meth:`_configure`) in one host call."""
        if not routes:
            return
        why = self.host.set_default_routes([(pid, None if n.gateway is None else str(n.gateway)) for pid, n in routes])
        for (_, node), err in zip(routes, why, strict=True):
            if err is not None and node.gateway is not None:
                raise RangeError(f"cannot set the default route of {node.name} via {node.gateway}: {err}")

    def _configure(self, cid: str, node: NodePlan) -> None:
        """Default route through the scenario gateway, set from the host in the node's netns."""
        # Docker points the default route at the (address-less) bridge even on internal
        # networks: replace it with the scenario gateway, or delete it. One netlink request
        # from this process (no nsenter/ip process per node: on 2 cores at 40 teams, 280 of
        # those were CPU taken from the engine).
        try:
            self.host.set_default_route(self.pid(cid), None if node.gateway is None else str(node.gateway))
        except (OSError, RangeError) as exc:
            if node.gateway is not None:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise RangeError(f"cannot set the default route of {node.name} via {node.gateway}: {why}") from None

    def secure_probe(self, range_name: str, team: TeamPlan) -> None:
        """What keeps a team's own workstation from fooling its probe at layer 2."""
        self.pin_probe_neighbours(range_name, team)
        self.isolate_probe(range_name, team)

    def _host_port(self, container: str, ip: Any) -> str:
        """The host-side veth (bridge port) of ``container``'s interface holding ``ip``."""
        try:
            return self.host.host_port(self.pid(container), str(ip))
        except RangeError as exc:
            raise RangeError(f"container {container}: {exc.message}") from None

    def isolate_probe(self, range_name: str, team: TeamPlan) -> list[list[str]]:
        """On each of the probe's networks, frames reach the probe's bridge port only from the
        ports of the team's non-blue nodes and leave it only towards them (DOCKER-USER rules with
        ``physdev``, commented ``rangectl:<range>:probe-t<K>``; `down` removes them). So a
        workstation that takes another node's MAC and address never sees the probe's packets
        and never reaches it; a re-created workstation (new port) is outside the list too.
        Made again at every ``up`` (re-created containers have new ports). Returns the rules."""
        probe = team.probe
        if probe is None:
            return []
        part = f"probe-t{team.team}"
        remove_bridge_rules(range_name, part, self.host)
        comment = ["-m", "comment", "--comment", f"rangectl:{range_name}:{part}"]
        rules: list[list[str]] = []
        for net, pip in probe.interfaces.items():
            br = bridge_name(range_name, team.team, net)
            mine = self._host_port(container_name(range_name, team.team, probe.name), pip)
            allowed = [
                self._host_port(container_name(range_name, team.team, n.name), n.interfaces[net])
                for n in team.nodes
                if n.role != "blue" and net in n.interfaces
            ]
            base = ["DOCKER-USER", "-i", br, "-o", br, "-m", "physdev"]
            # inserted at the top one by one: the ACCEPTs end above the DROPs, all above allow_bridged
            rules.append([*base, "--physdev-out", mine, *comment, "-j", "DROP"])
            rules.append([*base, "--physdev-in", mine, *comment, "-j", "DROP"])
            for port in allowed:
                rules.append([*base, "--physdev-in", port, "--physdev-out", mine, *comment, "-j", "ACCEPT"])
                rules.append([*base, "--physdev-in", mine, "--physdev-out", port, *comment, "-j", "ACCEPT"])
        _insert_rules(
            self.host, rules, f"the probe's bridge rules for team {team.team}",
            "run as root with iptables and its physdev match (xt_physdev) installed",
        )  # fmt: skip
        return rules

    def pin_probe_neighbours(self, range_name: str, team: TeamPlan) -> dict[str, str]:
        """Fix the probe's ARP entries (``nud permanent``) for its gateway and every node it
        shares a network with, blue nodes aside, so a workstation on the same segment cannot
        answer ARP for them. Returns {address: MAC} pinned. Run at every ``up`` (containers
        re-created by it get new MACs)."""
        probe = team.probe
        if probe is None:
            return {}
        want = {}  # address -> network name
        for n in team.nodes:
            if n.role == "blue":
                continue
            for net, ip in n.interfaces.items():
                if net in probe.interfaces:
                    want[str(ip)] = net
        macs: dict[str, str] = {}
        for net in probe.interfaces:
            info = self.api.inspect_network(net_name(range_name, team.team, net))
            for c in (info.get("Containers") or {}).values():
                addr = (c.get("IPv4Address") or "").split("/")[0]
                if want.get(addr) == net and c.get("MacAddress"):
                    macs[addr] = c["MacAddress"]
        if not macs:
            return {}
        pid = self.pid(container_name(range_name, team.team, probe.name))
        pins = [[addr, mac, str(probe.interfaces[want[addr]])] for addr, mac in sorted(macs.items())]
        try:
            self.host.pin_neighbours(pid, pins)
        except RangeError as exc:
            raise RangeError(f"cannot pin the ARP entries of team {team.team}'s probe: {exc.message}") from None
        return macs

    def pid(self, cid: str) -> int:
        for _ in range(50):
            info = self.api.inspect_container(cid)
            pid = info["State"].get("Pid") or 0
            if pid:
                return int(pid)
            if not info["State"]["Running"] and info["State"].get("Status") == "exited":
                raise RangeError(f"container {info['Name'].lstrip('/')} exited at start: see `rangectl logs`")
            time.sleep(0.1)
        raise RangeError(f"container {cid[:12]} has no process")

    # -- inspection ---------------------------------------------------------------
    def _containers(self, range_name: str | None) -> list[dict[str, Any]]:
        return self.api.containers(all=True, filters=range_filter(range_name))

    def _networks(self, range_name: str | None) -> list[dict[str, Any]]:
        return self.api.networks(filters=range_filter(range_name))

    def _info(self, c: dict[str, Any], net_labels: dict[str, str | None]) -> NodeInfo:
        lab = c.get("Labels") or {}
        nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
        return NodeInfo(
            range=lab.get(L.RANGE, "?"),
            team=int(lab.get(L.TEAM, 0) or 0),
            node=lab.get(L.NODE, ""),
            role=lab.get(L.ROLE),
            name=c["Names"][0].lstrip("/") if c.get("Names") else c["Id"][:12],
            id=c["Id"],
            state=c["State"],
            image=c.get("Image", ""),
            addresses={(net_labels.get(n) or n): info.get("IPAddress", "") for n, info in nets.items()},
        )

    def _net_labels(self, range_name: str | None) -> dict[str, str | None]:
        return {n["Name"]: (n.get("Labels") or {}).get(L.NETWORK) for n in self._networks(range_name)}

    def nodes(self, range_name: str) -> list[NodeInfo]:
        labels = self._net_labels(range_name)
        out = [self._info(c, labels) for c in self._containers(range_name)]
        return sorted(out, key=lambda n: (n.team, n.node))

    def capture_interfaces(self, range_name: str, team: int) -> dict[str, str]:
        """Each of the team's scenario networks is a Linux bridge on this host, named by bridge_name()."""
        return {n.network: bridge_name(range_name, team, n.network)
                for n in self.networks(range_name) if n.team == team and n.network}  # fmt: skip

    def networks(self, range_name: str) -> list[NetworkInfo]:
        out = []
        for n in self._networks(range_name):
            lab = n.get("Labels") or {}
            subnets = [c.get("Subnet") for c in (n.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
            out.append(
                NetworkInfo(
                    range=lab.get(L.RANGE, "?"), team=int(lab.get(L.TEAM, 0) or 0), network=lab.get(L.NETWORK, ""),
                    name=n["Name"], id=n["Id"], subnet=subnets[0] if subnets else "",
                )
            )  # fmt: skip
        return sorted(out, key=lambda n: (n.team, n.network))

    def node(self, ref: NodeRef) -> NodeInfo:
        c = self.find(ref.range, ref.node, ref.team)
        nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
        labels = {name: self._network_label(name) for name in nets}
        return self._info(c, labels)

    def _network_label(self, name: str) -> str | None:
        try:
            return (self.api.inspect_network(name).get("Labels") or {}).get(L.NETWORK)
        except NotFound:
            return None

    def _locate(self, ref: NodeRef) -> tuple[str, int]:
        """(container id, pid) of the running node: how its namespace is named on this host."""
        c = self.find_running(ref.range, ref.node, ref.team)
        return c["Id"], self.pid(c["Id"])

    def find(self, range_name: str, node: str, team: int = 1) -> dict[str, Any]:
        found = self.api.containers(
            all=True,
            filters={"label": [f"{L.MANAGED}=1", f"{L.RANGE}={range_name}", f"{L.TEAM}={team}", f"{L.NODE}={node}"]},
        )
        if not found:
            raise RangeNotFound(f"range '{range_name}' has no node '{node}' for team {team}", fix="see `rangectl status`")
        return found[0]

    def find_running(self, range_name: str, node: str, team: int = 1) -> dict[str, Any]:
        """The node's container, which must be running (RangeError naming its state otherwise)."""
        c = self.find(range_name, node, team)
        if c["State"] != "running":
            raise NotRunning(
                f"node '{node}' of team {team} is not running ({c['State']})", fix="run `rangectl up` again to restart it"
            )
        return c

    def running_pid(self, range_name: str, node: str, team: int = 1) -> int:
        return self.pid(self.find_running(range_name, node, team)["Id"])

    def exec(self, ref: NodeRef, argv: list[str], timeout: float | None = None) -> tuple[int, str]:
        """Run ``argv`` in a running node and return (exit code, stdout+stderr).

        ``timeout`` (default :data:`rangectl.backend.execs.DEFAULT_TIMEOUT`) is an absolute
        deadline enforced here, not in the node: at the deadline the exec's processes are
        killed from the host and the code is 124 (:func:`rangectl.backend.execs.run_exec`).
        """
        c = self.find_running(ref.range, ref.node, ref.team)
        return run_exec(self.api, c["Id"], argv, timeout, kill=self.host.kill_tree)

    def exec_stream(self, ref: NodeRef, argv: list[str]) -> ExecStream:
        c = self.find_running(ref.range, ref.node, ref.team)
        res = self.api.exec_create(c["Id"], argv, stdout=True, stderr=True)

        def chunks() -> Iterator[tuple[int, bytes]]:
            for out, err in self.api.exec_start(res["Id"], stream=True, demux=True):
                if out:
                    yield 1, out
                if err:
                    yield 2, err

        return ExecStream(chunks(), lambda: int(self.api.exec_inspect(res["Id"]).get("ExitCode") or 0))

    def logs(self, ref: NodeRef, follow: bool = False, tail: int = 200) -> Iterator[bytes]:
        c = self.find(ref.range, ref.node, ref.team)
        out = self.api.logs(c["Id"], stream=follow, follow=follow, tail=tail)
        if follow:
            yield from out
        else:
            yield out

    def copy_in(self, ref: NodeRef, directory: str, files: dict[str, bytes], mode: int = 0o644) -> None:
        c = self.find_running(ref.range, ref.node, ref.team)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                if "/" in name or name in ("", ".", ".."):
                    raise ValueError(f"'{name}' is not a plain file name")
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, int(time.time())
                tar.addfile(info, io.BytesIO(data))
        try:
            ok = self.api.put_archive(c["Id"], directory, buf.getvalue())
        except APIError as exc:
            raise RangeError(f"cannot copy into {ref}:{directory}: {exc.explanation or exc}") from None
        if not ok:
            raise RangeError(f"cannot copy into {ref}:{directory}")

    def shell_argv(self, ref: NodeRef) -> list[str]:
        """``nsenter`` into the container's namespaces (no Docker CLI needed on the host)."""
        c = self.find_running(ref.range, ref.node, ref.team)
        pid = self.pid(c["Id"])
        return ["nsenter", "--target", str(pid), "--mount", "--uts", "--ipc", "--net", "--pid", "--",
                "/bin/sh", "-c", "cd /root 2>/dev/null; exec /bin/bash -l 2>/dev/null || exec /bin/sh -l"]  # fmt: skip

    def ansible_host(self, ref: NodeRef) -> dict[str, str]:
        return {
            "ansible_connection": "community.docker.docker_api",
            "ansible_host": container_name(ref.range, ref.team, ref.node),
        }

    def reset(
        self, ref: NodeRef, scenario: Scenario, plan: Plan, images: dict[str, str], progress: Progress | None = None
    ) -> NodeInfo:
        """Remove the node's container and create it again from the plan: same name, addresses,
        routes and labels; the team's probe is secured again (its neighbours' MACs changed)."""
        note = progress or (lambda phase, item: None)
        team = plan.team(ref.team)
        node = next((n for n in team_nodes(team) if n.name == ref.node), None)
        if node is None:
            raise RangeNotFound(f"range '{ref.range}' has no node '{ref.node}' for team {ref.team}")
        name = container_name(ref.range, ref.team, ref.node)
        try:
            with self._endpoints(ref.range, ref.team):
                self.api.remove_container(name, force=True, v=True)
        except NotFound:
            pass
        note("removed", name)
        nets = {}
        for n in team.networks:
            info = self.api.inspect_network(net_name(ref.range, ref.team, n.name))
            nets[(ref.team, n.name)] = info["Id"]
        base_labels = {
            L.MANAGED: "1", L.RANGE: ref.range, L.SCENARIO: scenario.name, L.SCENARIO_HASH: plan.scenario_hash,
        }  # fmt: skip
        env = substitute_all(scenario.nodes[node.name].env, team.values) if node.role != PROBE_ROLE else {}
        self._ensure_container(ref.range, team, node, env, images[node.image], nets, base_labels, UpResult())
        note("created", name)
        if team.probe is not None:
            self.secure_probe(ref.range, team)
        return self.node(ref)

    def ranges(self) -> dict[str, RangeSummary]:
        out: dict[str, RangeSummary] = {}
        for c in self._containers(None):
            lab = c.get("Labels") or {}
            name = lab.get(L.RANGE, "?")
            r = out.setdefault(name, RangeSummary(name))
            r.containers += 1
            r.running += c["State"] == "running"
            if (lab.get(L.TEAM) or "").isdigit():
                r.teams.add(int(lab[L.TEAM]))
        for n in self._networks(None):
            name = (n.get("Labels") or {}).get(L.RANGE, "?")
            out.setdefault(name, RangeSummary(name)).networks += 1
        return out

    # -- down -----------------------------------------------------------------------
    def down(self, range_name: str | None, progress: Progress | None = None) -> tuple[int, int]:
        """Remove the range's containers, then its networks. Safe on half-built ranges.

        A team's networks go as soon as the last of its containers is gone, while other teams'
        containers are still being removed (not all networks after all containers)."""
        note = progress or (lambda phase, item: None)
        containers = self._containers(range_name)
        networks = self._networks(range_name)

        def team_of(obj: dict[str, Any]) -> tuple[str, str]:
            lab = obj.get("Labels") or {}
            return lab.get(L.RANGE, ""), lab.get(L.TEAM, "")

        left = Counter(team_of(c) for c in containers)
        nets_of: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for n in networks:
            nets_of.setdefault(team_of(n), []).append(n)

        def rm_container(c: dict[str, Any]) -> tuple[str, tuple[str, str], str]:
            try:
                self.api.remove_container(c["Id"], force=True, v=True)
            except NotFound:
                pass
            return "container", team_of(c), c["Names"][0].lstrip("/") if c.get("Names") else c["Id"][:12]

        names_of: dict[tuple[str, str], list[str]] = {}
        for c in containers:
            names_of.setdefault(team_of(c), []).extend(x.lstrip("/") for x in c.get("Names") or [])

        def rm_network(n: dict[str, Any]) -> str:
            # A container just removed can keep its endpoint on the network for a while on a busy
            # engine ("has active endpoints"), or for good (a stale endpoint the engine's store
            # kept, moby's known race): detach what is left and retry, backing off, for up to
            # NETWORK_REMOVE_SECONDS before giving up (a leftover network would clash later).
            # Endpoints are detached by *name*: for a container that is gone, a forced disconnect
            # by name is how the engine deletes its stale endpoint (ForceEndpointDelete); the
            # listing's key of such an endpoint ("ep-…") names no container and does nothing.
            deadline = time.monotonic() + NETWORK_REMOVE_SECONDS
            delay = 0.2
            attached: dict[str, Any] | None = None
            while True:
                try:
                    self.api.remove_network(n["Id"])
                    break
                except NotFound:
                    break
                except APIError as exc:
                    if time.monotonic() >= deadline:
                        # nothing attached any more, yet "in use": the engine's endpoint counter
                        # leaked (see endpoint_lock); only a restart of dockerd recounts it
                        leaked = attached == {}
                        raise RangeError(
                            f"network {n['Name']} is still in use after {NETWORK_REMOVE_SECONDS:g}s: "
                            f"{exc.explanation or exc}"
                            + (" (no endpoint left: the engine's endpoint count leaked, moby#43286)" if leaked else ""),
                            fix="restart dockerd, then `rangectl down` again" if leaked
                            else "the engine kept a stale endpoint: `rangectl down` again later, or restart dockerd",
                        ) from None
                try:
                    attached = self.api.inspect_network(n["Id"]).get("Containers") or {}
                except NotFound:
                    break
                # the endpoints listed, then the team's own container names (a stale endpoint
                # need not be listed at all)
                targets = [ep.get("Name") or key for key, ep in attached.items()]
                targets += [x for x in names_of.get(team_of(n), []) if x not in targets]
                for target in targets:
                    try:
                        self.api.disconnect_container_from_network(target, n["Id"], force=True)
                    except APIError:
                        pass
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            return "network", team_of(n), n["Name"]

        # containers team by team, at most WORKERS calls in flight and one per team (endpoint_lock:
        # a team's endpoints are dropped one container at a time), the lowest team with nothing
        # in flight first; a team's networks, submitted when its last container is gone, run next
        def order(c: dict[str, Any]) -> tuple[str, int]:
            rng, team = team_of(c)
            return rng, int(team) if team.isdigit() else 0

        queues: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for c in sorted(containers, key=order):
            queues.setdefault(team_of(c), []).append(c)
        busy: set[tuple[str, str]] = set()

        def rm_one(c: dict[str, Any]) -> tuple[str, tuple[str, str], str]:
            with self._endpoints(*team_of(c)):
                return rm_container(c)

        with ThreadPoolExecutor(WORKERS) as pool:
            pending: set[Any] = set()

            def fill() -> None:
                for team, q in queues.items():
                    if len(pending) >= WORKERS:
                        return
                    if q and team not in busy:
                        busy.add(team)
                        pending.add(pool.submit(rm_one, q.pop(0)))

            fill()
            for team in [t for t in nets_of if not left[t]]:  # networks of teams with no container left
                pending |= {pool.submit(rm_network, n) for n in nets_of.pop(team)}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    kind, team, name = fut.result()
                    note(kind, name)
                    if kind == "container":
                        busy.discard(team)
                        left[team] -= 1
                        if not left[team]:
                            pending |= {pool.submit(rm_network, n) for n in nets_of.pop(team, [])}
                fill()
        remove_bridge_rules(range_name, host=self.host)
        return len(containers), len(networks)
