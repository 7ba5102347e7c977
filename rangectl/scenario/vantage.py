"""Where rangectl's probe stands and which address space no team gets: scenario-level rules
the validator enforces and the plan (:mod:`rangectl.plan`) applies. Pure."""

from __future__ import annotations

from ipaddress import IPv4Network

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

#: The node name and role of rangectl's own probe vantage. A scenario may name it as a
#: check's or availability's ``from``/``control``; no scenario node may be called so.
PROBE = "probe"
PROBE_ROLE = "probe"



def probe_host(scenario: Scenario) -> str | None:
    """The node whose place the team's probe takes: the first blue node (None: no probe)."""
    return next(iter(scenario.nodes_with_role("blue")), None)


def is_probe_ref(scenario: Scenario, ref: str | None) -> bool:
    """``ref`` (a check's or availability's ``from``/``control``) names rangectl's probe."""
    return ref == PROBE and PROBE not in scenario.nodes and probe_host(scenario) is not None


def vantage_problems(scenario: Scenario) -> list[tuple[tuple, str]]:
    """(location, message) for every probe vantage trainees could fake, and for a scenario
    that leaves the probe no name or no address (docs/scoring.md, "Probe vantage")."""
    out: list[tuple[tuple, str]] = []
    if PROBE in scenario.nodes:
        out.append((("nodes", PROBE), f"node name '{PROBE}' is reserved for rangectl's probe; rename the node"))

    def blue(loc: tuple, ref: str | None) -> None:
        node = scenario.nodes.get(ref) if ref else None
        if node is not None and node.role == "blue":
            out.append(
                (loc, f"'{ref}' is a blue node: trainees are root there and could fake this probe; "
                      f"use '{PROBE}' (rangectl's probe beside the first blue node) or a node trainees do not control")
            )

    for i, obj in enumerate(scenario.objectives):
        if obj.check is not None and obj.check.kind in ("blocked", "reachable", "http", "dns"):
            loc = ("objectives", i, "check", obj.check.kind)
            blue(loc + ("from",), obj.check.spec.from_)
            blue(loc + ("control",), getattr(obj.check.spec, "control", None))
    for i, av in enumerate(scenario.availability):
        blue(("availability", i, "from"), av.from_)
    host = probe_host(scenario)
    for net in scenario.nodes[host].interfaces if host else ():
        subnet = scenario.networks[net].subnet if net in scenario.networks else None
        if subnet is None:
            continue
        size = subnet.num_addresses - (0 if subnet.prefixlen >= 31 else 2)
        on_it = sum(1 for node in scenario.nodes.values() if net in node.interfaces)
        if on_it + 1 == size:  # room for the bridge (checked on its own), none for the probe
            out.append(
                (("networks", net, "subnet"),
                 f"{subnet} has {size} host address(es) and {on_it} node(s): the engine's bridge and rangectl's "
                 f"probe beside '{host}' need two more; use a larger subnet")
            )
    return out
