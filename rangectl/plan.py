"""The deployment plan: a pure function from (scenario, team count) to addresses.

Addressing rule (docs/planning.md):

* Team 1 keeps every subnet and address written in the scenario file.
* For team k >= 2, networks are placed in file order. Each network keeps its
  prefix length and is moved by whole multiples of its own size:
  candidate m = 1, 2, 3, ... gives ``subnet.network_address + m * size``
  (wrapping is never needed in practice; reserved space is skipped). The first
  candidate that overlaps no subnet already placed (any team, any network)
  and no reserved range is taken. Because every candidate is aligned to the
  subnet's size, each host keeps its offset within its subnet.
* The engine's bridge address (Docker's gateway for the network) is the
  highest usable address of the subnet that no node of the scenario uses;
  it takes the same offset for every team.
* Every team gets a hidden probe node (:data:`PROBE`, role ``probe``) when the
  scenario has a blue node: it stands where the first blue node stands (same
  networks, same gateway) on the highest usable address below the bridge that
  no node uses, at the same offset for every team. Checks and availability
  probes run from it, never from a node trainees control (docs/scoring.md).

Same input, same plan: nothing here depends on the host or on time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from rangectl.errors import ScenarioError
from rangectl.scenario.loader import scenario_hash
from rangectl.scenario.model import Scenario
from rangectl.scenario.vantage import PROBE, PROBE_ROLE, RESERVED, probe_host
from rangectl.scenario.variables import VariableError, draw

MAX_TEAMS = 64

@dataclass
class NetworkPlan:
    name: str
    subnet: IPv4Network
    bridge: IPv4Address  # the engine's own address on this network

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "subnet": str(self.subnet), "bridge": str(self.bridge)}


@dataclass
class NodePlan:
    name: str
    role: str
    image: str
    interfaces: dict[str, IPv4Address]
    gateway: IPv4Address | None = None
    forward: bool = False
    capabilities: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)  # the scenario's, for the node's netns

    @property
    def primary_ip(self) -> IPv4Address:
        return next(iter(self.interfaces.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "image": self.image,
            "interfaces": {k: str(v) for k, v in self.interfaces.items()},
            "gateway": str(self.gateway) if self.gateway else None,
            "forward": self.forward,
            "capabilities": self.capabilities,
            **({"sysctls": dict(self.sysctls)} if self.sysctls else {}),
        }


@dataclass
class TeamPlan:
    team: int
    networks: list[NetworkPlan]
    nodes: list[NodePlan]
    address_map: dict[IPv4Address, IPv4Address]  # file address -> this team's address
    probe: NodePlan | None = None  # rangectl's probe vantage; not a scenario node, not in `nodes`
    values: dict[str, str] = field(default_factory=dict)  # the team's per-team variables (trainer side only)

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def network(self, name: str) -> NetworkPlan:
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(name)

    def ip_of(self, node: str) -> IPv4Address:
        return self.node(node).primary_ip

    def subnets(self) -> list[IPv4Network]:
        return [n.subnet for n in self.networks]

    def as_dict(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "networks": [n.as_dict() for n in self.networks],
            "nodes": [n.as_dict() for n in self.nodes],
            "probe": self.probe.as_dict() if self.probe else None,
            "values": dict(self.values),
        }


@dataclass
class Plan:
    scenario: str
    scenario_hash: str
    teams: list[TeamPlan]
    seed: str = ""  # the range's seed: per-team variables are drawn from it

    def team(self, k: int) -> TeamPlan:
        for t in self.teams:
            if t.team == k:
                return t
        raise KeyError(k)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "scenario_hash": self.scenario_hash,
            "seed": self.seed,
            "teams": [t.as_dict() for t in self.teams],
        }


def _reserved(net: IPv4Network) -> bool:
    return any(net.overlaps(r) for r in RESERVED)


def place_subnets(subnets: list[IPv4Network], teams: int) -> list[list[IPv4Network]]:
    """Per team, the subnet for each input network (same order). Team 1 keeps the input."""
    if teams < 1:
        raise ScenarioError("--teams must be at least 1")
    if teams > MAX_TEAMS:
        raise ScenarioError(f"--teams may be at most {MAX_TEAMS}")
    taken: list[IPv4Network] = list(subnets)
    out = [list(subnets)]
    for _team in range(2, teams + 1):
        row: list[IPv4Network] = []
        for net in subnets:
            size = net.num_addresses
            base = int(net.network_address)
            m = 1
            while True:
                start = base + m * size
                if start + size > 2**32:
                    raise ScenarioError(f"no free address space left for another copy of {net}")
                cand = IPv4Network((start, net.prefixlen))
                blocker = next((r for r in RESERVED if cand.overlaps(r)), None) or next(
                    (t for t in taken if cand.overlaps(t)), None
                )
                if blocker is None:
                    break
                # Every aligned candidate that starts inside the blocker overlaps it too:
                # jump past it (same result as m += 1, without crawling through a /3).
                m = max(m + 1, -(-(int(blocker.broadcast_address) + 1 - base) // size))
            taken.append(cand)
            row.append(cand)
        out.append(row)
    return out


def _highest_free(subnet: IPv4Network, used: set[IPv4Address]) -> int | None:
    first = int(subnet.network_address)
    last = int(subnet.broadcast_address)
    lo, hi = (first, last) if subnet.prefixlen >= 31 else (first + 1, last - 1)
    for a in range(hi, lo - 1, -1):
        if IPv4Address(a) not in used:
            return a - first
    return None


def bridge_offset(subnet: IPv4Network, used: set[IPv4Address]) -> int:
    """Offset of the engine's bridge address: the highest usable host not used by a node."""
    off = _highest_free(subnet, used)
    if off is None:
        raise ScenarioError(f"subnet {subnet} has no free address for the engine's bridge; use a larger subnet")
    return off


def probe_offsets(scenario: Scenario, bridges: dict[str, int]) -> dict[str, int]:
    """Per network of the probe's host node, the probe's offset: the highest usable
    address that is neither a node's nor the bridge's (same offset for every team)."""
    host = probe_host(scenario)
    if host is None:
        return {}
    out = {}
    for net in scenario.nodes[host].interfaces:
        subnet = scenario.networks[net].subnet
        used = {ip for n in scenario.nodes.values() for n_net, ip in n.interfaces.items() if n_net == net}
        used.add(subnet.network_address + bridges[net])
        off = _highest_free(subnet, used)
        if off is None:
            raise ScenarioError(
                f"network '{net}' ({subnet}) has no free address for rangectl's probe beside node '{host}' "
                "(it needs one besides the bridge's); use a larger subnet"
            )
        out[net] = off
    return out


def plan(scenario: Scenario, teams: int = 1, seed: str | None = None) -> Plan:
    """The plan for ``teams`` teams; per-team variables are drawn from ``seed``.

    Without a seed (``plan`` before a range exists) the scenario's name stands
    in, so the same scenario always shows the same values; ``up`` records a
    fresh seed per range (docs/planning.md)."""
    seed = seed if seed else scenario.name
    try:
        values = draw(scenario.variables, seed, range(1, teams + 1))
    except VariableError as exc:
        raise ScenarioError(f"{scenario.name}: {exc}") from None
    names = list(scenario.networks)
    original = [scenario.networks[n].subnet for n in names]
    placed = place_subnets(original, teams)
    used_by_net: dict[str, set[IPv4Address]] = {n: set() for n in names}
    for node in scenario.nodes.values():
        for net, ip in node.interfaces.items():
            if net in used_by_net:
                used_by_net[net].add(ip)
    offsets = {n: bridge_offset(scenario.networks[n].subnet, used_by_net[n]) for n in names}
    host = probe_host(scenario)
    probe_at = probe_offsets(scenario, offsets)

    team_plans = []
    for k, row in enumerate(placed, start=1):
        amap: dict[IPv4Address, IPv4Address] = {}
        nets = []
        for name, orig, new in zip(names, original, row, strict=True):
            nets.append(NetworkPlan(name, new, new.network_address + offsets[name]))
            for ip in used_by_net[name]:
                amap[ip] = new.network_address + (int(ip) - int(orig.network_address))
        nodes = []
        for nname, node in scenario.nodes.items():
            caps = list(node.capabilities)
            if (node.forward or node.role == "blue") and "NET_ADMIN" not in caps:
                caps.append("NET_ADMIN")
            nodes.append(
                NodePlan(
                    name=nname,
                    role=node.role,
                    image=node.image,
                    interfaces={net: amap[ip] for net, ip in node.interfaces.items()},
                    gateway=amap.get(node.gateway) if node.gateway else None,
                    forward=node.forward,
                    capabilities=caps,
                    sysctls=dict(node.sysctls),
                )
            )
        probe = None
        if host is not None:
            subnet_of = {n.name: n.subnet for n in nets}
            hn = scenario.nodes[host]
            probe = NodePlan(
                name=PROBE,
                role=PROBE_ROLE,
                image=hn.image,
                interfaces={net: subnet_of[net].network_address + off for net, off in probe_at.items()},
                gateway=amap.get(hn.gateway) if hn.gateway else None,
            )
        team_plans.append(TeamPlan(k, nets, nodes, amap, probe, values.get(k, {})))
    return Plan(scenario.name, scenario_hash(scenario), team_plans, seed)
