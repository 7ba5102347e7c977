"""Apply a deployment plan to the local Docker engine, and take it away again.

Every network is an *internal* bridge (no route out of the range); every
resource carries the labels in :mod:`rangectl.labels`, so ``down`` finds and
removes exactly one range's resources, even when its state folder is gone or
``up`` was interrupted half way.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

import docker
from docker.errors import APIError, NotFound

from rangectl import labels as L
from rangectl.errors import EnvironmentProblem, RangeError
from rangectl.errors import NotFound as RangeNotFound
from rangectl.plan import NodePlan, Plan, TeamPlan
from rangectl.scenario.model import Scenario

Progress = Callable[[str, str], None]  # (phase, item) -> None

WORKERS = 8


def net_name(range_name: str, team: int, net: str) -> str:
    return f"rc-{range_name}-t{team}-{net}"


def container_name(range_name: str, team: int, node: str) -> str:
    return f"rc-{range_name}-t{team}-{node}"


def bridge_name(range_name: str, team: int, net: str) -> str:
    """The Linux bridge of a range network (15 characters at most)."""
    digest = hashlib.sha1(f"{range_name}/{team}/{net}".encode()).hexdigest()[:12]
    return f"rc-{digest}"


def _iptables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["iptables", "-w", "10", *args], capture_output=True, text=True, check=False)


def allow_bridged(range_name: str, bridge: str) -> None:
    """Let frames that stay on one range bridge pass the host's FORWARD chain.

    With br_netfilter, Docker's rules for --internal networks drop bridged
    frames whose destination is outside the network's own subnet, which is
    every packet a scenario router forwards. Frames that enter and leave the
    same range bridge never leave the range, so accepting exactly those (in
    DOCKER-USER, which runs first) keeps the range internal and lets its
    routers route.
    """
    rule = ["DOCKER-USER", "-i", bridge, "-o", bridge, "-m", "comment", "--comment", f"rangectl:{range_name}", "-j", "ACCEPT"]
    if _iptables("-C", *rule).returncode != 0:
        r = _iptables("-I", *rule)
        if r.returncode != 0:
            raise EnvironmentProblem(
                f"cannot add the forwarding rule for {bridge}: {r.stderr.strip()}",
                fix="run as root with iptables installed (scripts/setup.sh)",
            )


def remove_bridge_rules(range_name: str | None) -> int:
    """Delete the DOCKER-USER rules of a range (of every range when None)."""
    listing = _iptables("-S", "DOCKER-USER")
    removed = 0
    tag = "rangectl:" if range_name is None else f"rangectl:{range_name}"
    for line in listing.stdout.splitlines():
        if not line.startswith("-A DOCKER-USER"):
            continue
        parts = shlex.split(line)
        comment = parts[parts.index("--comment") + 1] if "--comment" in parts else ""
        if comment == tag or (range_name is None and comment.startswith(tag)):
            if _iptables("-D", *parts[1:]).returncode == 0:
                removed += 1
    return removed


def range_filter(range_name: str | None) -> dict[str, Any]:
    if range_name is None:
        return {"label": [f"{L.MANAGED}=1"]}
    return {"label": [f"{L.MANAGED}=1", f"{L.RANGE}={range_name}"]}


@dataclass
class UpResult:
    created_networks: list[str] = field(default_factory=list)
    created_containers: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    seconds: float = 0.0


class DockerBackend:
    def __init__(self, client: docker.DockerClient):
        self.client = client
        self.api = client.api

    # -- checks before touching anything ------------------------------------------
    def check_subnets(self, range_name: str, plan: Plan) -> None:
        """Refuse planned subnets that clash with a Docker network not of this range."""
        ours = {net_name(range_name, t.team, n.name) for t in plan.teams for n in t.networks}
        existing: list[tuple[str, IPv4Network]] = []
        for net in self.api.networks():
            if net["Name"] in ours:
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
        """A container name taken by something that is not this range's is a clash."""
        for t in plan.teams:
            for n in t.nodes:
                name = container_name(range_name, t.team, n.name)
                try:
                    info = self.api.inspect_container(name)
                except NotFound:
                    continue
                lab = info["Config"].get("Labels") or {}
                if lab.get(L.RANGE) != range_name:
                    raise RangeError(
                        f"a container named '{name}' exists and is not part of range '{range_name}'",
                        fix="pick another --name or remove that container",
                    )

    # -- up ---------------------------------------------------------------------
    def up(
        self,
        range_name: str,
        scenario: Scenario,
        plan: Plan,
        images: dict[str, str],
        progress: Progress | None = None,
    ) -> UpResult:
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
        # containers, concurrently
        jobs = []
        with ThreadPoolExecutor(WORKERS) as pool:
            for t in plan.teams:
                for node in t.nodes:
                    spec = scenario.nodes[node.name]
                    jobs.append(
                        pool.submit(
                            self._ensure_container, range_name, t, node, spec.env, images[node.image], nets, base_labels, res
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
        res.seconds = time.monotonic() - t0
        return res

    def _ensure_network(self, range_name: str, team: TeamPlan, n, base_labels: dict, res: UpResult):
        name = net_name(range_name, team.team, n.name)
        bridge = bridge_name(range_name, team.team, n.name)
        try:
            info = self.api.inspect_network(name)
            allow_bridged(range_name, bridge)
            res.kept.append(name)
            return (team.team, n.name), info["Id"], name
        except NotFound:
            pass
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
        allow_bridged(range_name, bridge)
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
    ) -> str:
        name = container_name(range_name, team.team, node.name)
        try:
            info = self.api.inspect_container(name)
        except NotFound:
            info = None
        if info is not None:
            if info["State"]["Running"]:
                res.kept.append(name)
                return name
            self.api.start(info["Id"])
            self._configure(info["Id"], node)
            res.started.append(name)
            return name

        items = list(node.interfaces.items())
        first_net, first_ip = items[0]
        host_config = self.api.create_host_config(
            cap_add=node.capabilities or None,
            sysctls=self._sysctls(node),
            pids_limit=1024,
            init=False,
        )
        netcfg = self.api.create_networking_config(
            {
                net_name(range_name, team.team, first_net): self.api.create_endpoint_config(
                    ipv4_address=str(first_ip), aliases=[node.name]
                )
            }
        )
        labels = dict(base_labels, **{L.TEAM: str(team.team), L.NODE: node.name, L.ROLE: node.role})
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
            )
        except docker.errors.ImageNotFound:
            raise EnvironmentProblem(f"image {image} is not built", fix="run `rangectl images build`") from None
        except APIError as exc:
            if exc.status_code == 409:  # created concurrently by another `up`
                res.kept.append(name)
                return name
            raise RangeError(f"cannot create container {name}: {exc.explanation or exc}") from None
        cid = created["Id"]
        res.created_containers.append(name)
        for net, ip in items[1:]:
            self.api.connect_container_to_network(
                cid, nets[(team.team, net)], ipv4_address=str(ip), aliases=[node.name]
            )
        self.api.start(cid)
        self._configure(cid, node)
        return name

    @staticmethod
    def _sysctls(node: NodePlan) -> dict[str, str]:
        if node.forward:
            return {
                "net.ipv4.ip_forward": "1",
                "net.ipv4.conf.all.rp_filter": "0",
                "net.ipv4.conf.default.rp_filter": "0",
                "net.ipv4.conf.all.send_redirects": "0",
            }
        return {}

    def _configure(self, cid: str, node: NodePlan) -> None:
        """Default route through the scenario gateway, set from the host in the node's netns."""
        # Docker points the default route at the (address-less) bridge even on internal
        # networks: replace it with the scenario gateway, or delete it. One nsenter per node.
        pid = self.pid(cid)
        if node.gateway is not None:
            cmd = ["ip", "route", "replace", "default", "via", str(node.gateway)]
        else:
            cmd = ["ip", "route", "del", "default"]
        r = subprocess.run(
            ["nsenter", f"--net=/proc/{pid}/ns/net", "--", *cmd], capture_output=True, text=True, check=False
        )
        if r.returncode != 0 and node.gateway is not None:
            raise RangeError(f"cannot set the default route of {node.name}: {r.stderr.strip()}")

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
    def containers(self, range_name: str | None) -> list[dict[str, Any]]:
        return self.api.containers(all=True, filters=range_filter(range_name))

    def networks(self, range_name: str | None) -> list[dict[str, Any]]:
        return self.api.networks(filters=range_filter(range_name))

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
            raise RangeError(
                f"node '{node}' of team {team} is not running ({c['State']})", fix="run `rangectl up` again to restart it"
            )
        return c

    def running_pid(self, range_name: str, node: str, team: int = 1) -> int:
        return self.pid(self.find_running(range_name, node, team)["Id"])

    def exec(
        self, range_name: str, node: str, team: int, argv: list[str], timeout: float | None = None
    ) -> tuple[int, str]:
        """Run ``argv`` in a running node and return (exit code, stdout+stderr)."""
        c = self.find_running(range_name, node, team)
        if timeout is not None:
            argv = ["timeout", str(max(1, int(timeout))), *argv]
        res = self.api.exec_create(c["Id"], argv, stdout=True, stderr=True)
        out = self.api.exec_start(res["Id"])
        code = self.api.exec_inspect(res["Id"]).get("ExitCode")
        return (code if code is not None else 1), out.decode(errors="replace")

    def ranges(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for c in self.containers(None):
            lab = c.get("Labels") or {}
            r = out.setdefault(lab.get(L.RANGE, "?"), {"containers": 0, "running": 0, "networks": 0, "teams": set()})
            r["containers"] += 1
            r["running"] += c["State"] == "running"
            r["teams"].add(lab.get(L.TEAM))
        for n in self.networks(None):
            lab = n.get("Labels") or {}
            r = out.setdefault(lab.get(L.RANGE, "?"), {"containers": 0, "running": 0, "networks": 0, "teams": set()})
            r["networks"] += 1
        return out

    # -- down -----------------------------------------------------------------------
    def down(self, range_name: str | None, progress: Progress | None = None) -> tuple[int, int]:
        """Remove the range's containers, then its networks. Safe on half-built ranges."""
        note = progress or (lambda phase, item: None)
        containers = self.containers(range_name)

        def rm_container(c: dict[str, Any]) -> str:
            try:
                self.api.remove_container(c["Id"], force=True, v=True)
            except NotFound:
                pass
            return c["Names"][0].lstrip("/") if c.get("Names") else c["Id"][:12]

        with ThreadPoolExecutor(WORKERS) as pool:
            for name in pool.map(rm_container, containers):
                note("container", name)
        networks = self.networks(range_name)

        def rm_network(n: dict[str, Any]) -> str:
            for attempt in range(5):
                try:
                    self.api.remove_network(n["Id"])
                    break
                except NotFound:
                    break
                except APIError:
                    if attempt == 4:
                        raise
                    time.sleep(0.3)
            return n["Name"]

        with ThreadPoolExecutor(WORKERS) as pool:
            for name in pool.map(rm_network, networks):
                note("network", name)
        remove_bridge_rules(range_name)
        return len(containers), len(networks)
