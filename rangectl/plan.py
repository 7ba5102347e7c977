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

Same input, same plan: nothing here depends on the host or on time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from rangectl.errors import ScenarioError
from rangectl.scenario.loader import scenario_hash
from rangectl.scenario.model import Scenario

#: Address space never handed to a team (loopback, link-local, multicast, ...).
RESERVED = [
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.17.0.0/16",  # Docker's default bridge
        "224.0.0.0/3",  # multicast and reserved, up to 255.255.255.255
    )
]

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
        }


@dataclass
class TeamPlan:
    team: int
    networks: list[NetworkPlan]
    nodes: list[NodePlan]
    address_map: dict[IPv4Address, IPv4Address]  # file address -> this team's address

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
        }


@dataclass
class Plan:
    scenario: str
    scenario_hash: str
    teams: list[TeamPlan]

    def team(self, k: int) -> TeamPlan:
        for t in self.teams:
            if t.team == k:
                return t
        raise KeyError(k)

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "scenario_hash": self.scenario_hash, "teams": [t.as_dict() for t in self.teams]}


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


def bridge_offset(subnet: IPv4Network, used: set[IPv4Address]) -> int:
    """Offset of the engine's bridge address: the highest usable host not used by a node."""
    first = int(subnet.network_address)
    last = int(subnet.broadcast_address)
    lo, hi = (first, last) if subnet.prefixlen >= 31 else (first + 1, last - 1)
    for a in range(hi, lo - 1, -1):
        if IPv4Address(a) not in used:
            return a - first
    raise ScenarioError(f"subnet {subnet} has no free address for the engine's bridge; use a larger subnet")


def plan(scenario: Scenario, teams: int = 1) -> Plan:
    names = list(scenario.networks)
    original = [scenario.networks[n].subnet for n in names]
    placed = place_subnets(original, teams)
    used_by_net: dict[str, set[IPv4Address]] = {n: set() for n in names}
    for node in scenario.nodes.values():
        for net, ip in node.interfaces.items():
            if net in used_by_net:
                used_by_net[net].add(ip)
    offsets = {n: bridge_offset(scenario.networks[n].subnet, used_by_net[n]) for n in names}

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
                )
            )
        team_plans.append(TeamPlan(k, nets, nodes, amap))
    return Plan(scenario.name, scenario_hash(scenario), team_plans)
