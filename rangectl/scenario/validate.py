"""Meaning checks on a scenario that already has the right shape.

Shape (types, required and unknown fields) is pydantic's job in the loader;
this module checks what only the whole file can tell: addresses inside their
subnets and unique, subnets that do not overlap, references that resolve
(nodes, networks, injects, services, playbooks, pcaps, policies), `after`
chains without cycles, traffic from red nodes, and so on. Pure: no Docker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import networkx as nx

from rangectl.paths import find_side_file, policy_path, resolve_path
from rangectl.scenario.loader import Loaded, Problem, load_file
from rangectl.scenario.model import Answer, Scenario
from rangectl.scenario.traffic_params import NO_TARGET, validate_params
from rangectl.scenario.trust import capability_problem, outside_message, reserved_var, scan_playbooks
from rangectl.scenario.vantage import RESERVED, is_probe_ref, vantage_problems
from rangectl.scenario.variables import VariableError, draw, substitute_all
from rangectl.scenario.variables import reference_problems as variable_reference_problems

SCENARIO_SUFFIXES = (".yaml", ".yml")


@dataclass
class FileResult:
    path: Path
    problems: list[Problem] = field(default_factory=list)
    scenario: Scenario | None = None
    loaded: Loaded | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def operate_problem(sc, name: str, target: str, before: list[str]) -> str | None:
    """Why blue node ``name`` may not list ``target`` under ``operate`` or ``reset`` (None: it may)."""
    if sc.nodes[name].role != "blue":
        return "only a blue node (where trainees log in) may list nodes to operate or reset"
    if target not in sc.nodes:
        return f"unknown node '{target}' (nodes: {', '.join(sorted(sc.nodes))})"
    if target == name:
        return "a node cannot list itself: trainees are already on it (the trainer resets it)"
    if sc.nodes[target].role == "red" and not sc.nodes[target].compromised:
        return (
            f"'{target}' is a red node: teams operate their own nodes, never the attacker's "
            "(a team's own host the attacker controls is marked compromised: true)"
        )
    if target in before:
        return f"'{target}' is listed twice"
    return None


def check_meaning(loaded: Loaded) -> list[Problem]:
    sc = loaded.scenario
    assert sc is not None
    out: list[Problem] = []

    def bad(loc: tuple, message: str) -> None:
        out.append(loaded.problem(loc, message))

    node_names = set(sc.nodes)

    # networks: not in reserved space, no overlap, room for the engine's bridge address
    for name, net in sc.networks.items():
        clash = next((r for r in RESERVED if net.subnet.overlaps(r)), None)
        if clash is not None:
            bad(("networks", name, "subnet"), f"{net.subnet} overlaps reserved address space {clash}")
        size = net.subnet.num_addresses - (0 if net.subnet.prefixlen >= 31 else 2)
        on_it = sum(1 for node in sc.nodes.values() if name in node.interfaces)
        if on_it >= size:
            bad(
                ("networks", name, "subnet"),
                f"{net.subnet} has {size} host address(es) and {on_it} node(s): the engine's bridge needs one more; "
                "use a larger subnet",
            )
    nets = list(sc.networks.items())
    for i, (a, na) in enumerate(nets):
        for b, nb in nets[i + 1 :]:
            if na.subnet.overlaps(nb.subnet):
                bad(("networks", b, "subnet"), f"{nb.subnet} overlaps network '{a}' ({na.subnet})")

    # nodes: interfaces on known networks, inside subnet, unique; gateway reachable
    owner: dict[IPv4Address, tuple[str, str]] = {}
    for name, node in sc.nodes.items():
        for net, ip in node.interfaces.items():
            loc = ("nodes", name, "interfaces", net)
            if net not in sc.networks:
                bad(loc, f"unknown network '{net}' (networks: {', '.join(sorted(sc.networks))})")
                continue
            subnet = sc.networks[net].subnet
            if ip not in subnet:
                bad(loc, f"{ip} is not inside {net}'s subnet {subnet}")
            elif ip in (subnet.network_address, subnet.broadcast_address) and subnet.prefixlen < 31:
                bad(loc, f"{ip} is the {'network' if ip == subnet.network_address else 'broadcast'} address of {subnet}")
            if ip in owner:
                other = owner[ip]
                bad(loc, f"{ip} is already used by node '{other[0]}' on '{other[1]}'")
            else:
                owner[ip] = (name, net)
        if node.gateway is not None:
            connected = [sc.networks[n].subnet for n in node.interfaces if n in sc.networks]
            if not any(node.gateway in s for s in connected):
                bad(("nodes", name, "gateway"), f"gateway {node.gateway} is not on any network this node is attached to")
            elif node.gateway in node.interfaces.values():
                bad(("nodes", name, "gateway"), "gateway is this node's own address")
            elif node.gateway not in owner and not any(
                node.gateway in n2.interfaces.values() for n2 in sc.nodes.values()
            ):
                bad(("nodes", name, "gateway"), f"no node has address {node.gateway} to route through")
            else:
                gw_node = next((n for n, n2 in sc.nodes.items() if node.gateway in n2.interfaces.values()), None)
                if gw_node and not sc.nodes[gw_node].forward:
                    bad(("nodes", name, "gateway"), f"gateway node '{gw_node}' does not forward (set forward: true on it)")
        seen_services: set[str] = set()
        for i, svc in enumerate(node.services):
            if svc.name in seen_services:
                bad(("nodes", name, "services", i, "name"), f"service '{svc.name}' is listed twice")
            seen_services.add(svc.name)
        for i, pb in enumerate(node.provision):
            found, outside = find_side_file(pb, loaded.path, "playbooks")
            if outside is not None:
                bad(("nodes", name, "provision", i), outside_message("playbook", pb, outside))
            elif not found:
                bad(("nodes", name, "provision", i), f"playbook '{pb}' not found (looked beside the scenario and in playbooks/)")
        for key in node.vars:
            if reserved_var(key):
                bad(("nodes", name, "vars", key), f"'{key}' is reserved: ansible_* and rangectl_* variables are "
                    "set by rangectl (they choose where and as which team a node is provisioned)")
        for i, cap in enumerate(node.capabilities):
            why = capability_problem(cap, node.role)
            if why:
                bad(("nodes", name, "capabilities", i), why)
        if node.compromised and node.role != "red":
            bad(("nodes", name, "compromised"), "only a red node can be compromised (it is a source of attack traffic)")
        for field_name in ("operate", "reset"):
            grants = getattr(node, field_name)
            for i, target in enumerate(grants):
                why = operate_problem(sc, name, target, grants[:i])
                if why:
                    bad(("nodes", name, field_name, i), why)

    # injects: ids unique, after chains, traffic endpoints and parameters
    inject_ids: dict[str, int] = {}
    graph = nx.DiGraph()
    for i, inj in enumerate(sc.injects):
        if inj.id in inject_ids:
            bad(("injects", i, "id"), f"inject id '{inj.id}' is used twice")
        inject_ids.setdefault(inj.id, i)
        graph.add_node(inj.id)
    for i, inj in enumerate(sc.injects):
        if inj.after is not None:
            if inj.after not in inject_ids:
                bad(("injects", i, "after"), f"unknown inject '{inj.after}'")
            else:
                graph.add_edge(inj.after, inj.id)
        if inj.traffic is not None:
            out.extend(_check_traffic(loaded, sc, i, node_names))
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        ids = [a for a, _ in cycle] + [cycle[0][0]]
        first = inject_ids[cycle[0][1]]
        bad(("injects", first, "after"), f"'after' chain has a cycle: {' -> '.join(ids)}")

    # objectives
    obj_ids: set[str] = set()
    for i, obj in enumerate(sc.objectives):
        loc = ("objectives", i)
        if obj.id in obj_ids:
            bad(loc + ("id",), f"objective id '{obj.id}' is used twice")
        obj_ids.add(obj.id)
        if obj.after is not None and obj.after not in inject_ids:
            bad(loc + ("after",), f"unknown inject '{obj.after}'")
        if obj.answer is not None:
            out.extend(_check_answer(loaded, sc, obj.answer, loc + ("answer",)))
        if obj.report is not None:
            names = set()
            for j, f in enumerate(obj.report.fields):
                if f.name in names:
                    bad(loc + ("report", "fields", j, "name"), f"report field '{f.name}' is listed twice")
                names.add(f.name)
                if f.answer is not None:
                    out.extend(_check_answer(loaded, sc, f.answer, loc + ("report", "fields", j, "answer")))
        if obj.check is not None:
            kind = obj.check.kind
            spec = obj.check.spec
            cloc = loc + ("check", kind)
            for attr, key in (
                ("from_", "from"), ("to", "to"), ("server", "server"), ("node", "node"), ("control", "control")
            ):
                ref = getattr(spec, attr, None)
                probe_ok = key in ("from", "control") and is_probe_ref(sc, ref)
                if ref is not None and ref not in node_names and not probe_ok:
                    bad(cloc + (key,), f"unknown node '{ref}'")
            if kind == "dns" and isinstance(obj.check.dns.expect, Answer):
                out.extend(_check_answer(loaded, sc, obj.check.dns.expect, cloc + ("expect",)))
            if kind in ("blocked", "reachable", "http"):
                src, dst = getattr(spec, "from_", None), getattr(spec, "to", None)
                if src and dst and src == dst:
                    bad(cloc + ("to",), "a check from a node to itself tests nothing")
            if kind != "blocked" and (getattr(spec, "control", None) or getattr(spec, "outage_ok", False)):
                bad(cloc, "`control` and `outage_ok` belong to `blocked` checks")
            if kind == "blocked" and spec.control in (spec.from_, spec.to):
                bad(cloc + ("control",), "the control node must be neither `from` nor `to`")
            if obj.check.guard is not None:
                if obj.check.hold is None:
                    bad(loc + ("check", "guard"), "`guard` belongs with `hold` (the node whose availability must hold)")
                elif obj.check.guard not in node_names:
                    bad(loc + ("check", "guard"), f"unknown node '{obj.check.guard}'")
    if sc.objectives and not sc.nodes_with_role("blue"):
        bad(("objectives",), "objectives need at least one node with role 'blue' for the responders")

    # availability
    for i, av in enumerate(sc.availability):
        loc = ("availability", i)
        if av.node not in node_names:
            bad(loc + ("node",), f"unknown node '{av.node}'")
            continue
        if av.service not in {s.name for s in sc.nodes[av.node].services}:
            bad(loc + ("service",), f"node '{av.node}' has no service '{av.service}' (declare it under its services)")
        if av.from_ is not None and av.from_ not in node_names and not is_probe_ref(sc, av.from_):
            bad(loc + ("from",), f"unknown node '{av.from_}'")
        if av.every <= 0:
            bad(loc + ("every",), "must be longer than 0s")
        is_http = av.probe == "http" or (av.probe is None and av.service in ("http", "https"))
        for key in ("status", "contains", "absent"):
            if getattr(av, key) is not None and not is_http:
                bad(loc + (key,), f"'{key}' needs an http probe (set probe: http)")

    # probe vantages: rangectl's probe or a node trainees do not control (docs/scoring.md)
    for vloc, message in vantage_problems(sc):
        bad(vloc, message)

    # per-team variables: every {var:NAME} in the file names a declared variable
    for vloc, message in variable_reference_problems(loaded.data, sc.variables):
        bad(vloc, message)

    if policy_path(sc.scoring.policy, loaded.path) is None:
        bad(("scoring", "policy"), f"no scoring policy '{sc.scoring.policy}' (looked for scoring/{sc.scoring.policy}.yaml)")

    # red nodes must exist when traffic injects do
    return out


def _check_answer(loaded: Loaded, sc: Scenario, ans: Answer, loc: tuple) -> list[Problem]:
    if ans.ip_of is not None and ans.ip_of not in sc.nodes:
        return [loaded.problem(loc + ("ip_of",), f"unknown node '{ans.ip_of}'")]
    return []


def _check_traffic(loaded: Loaded, sc: Scenario, i: int, node_names: set[str]) -> list[Problem]:
    inj = sc.injects[i]
    tr = inj.traffic
    assert tr is not None
    loc = ("injects", i, "traffic")
    out: list[Problem] = []
    if tr.from_ not in node_names:
        out.append(loaded.problem(loc + ("from",), f"unknown node '{tr.from_}'"))
    elif sc.nodes[tr.from_].role != "red":
        out.append(
            loaded.problem(loc + ("from",), f"traffic originates from a red node; '{tr.from_}' is {sc.nodes[tr.from_].role}")
        )
    if tr.target is not None and tr.target not in node_names:
        out.append(loaded.problem(loc + ("target",), f"unknown node '{tr.target}'"))
    params = tr.params
    if tr.kind == "pcap":
        f = params.get("file")
        if isinstance(f, str):
            found, outside = find_side_file(f, loaded.path, "scenarios")
            if outside is not None:
                out.append(loaded.problem(loc + ("file",), outside_message("capture", f, outside)))
            elif not found:
                out.append(
                    loaded.problem(loc + ("file",), f"capture '{f}' not found (looked beside the scenario and in scenarios/)")
                )
        mapping = params.get("map")
        if isinstance(mapping, dict):
            for addr, node in mapping.items():
                if isinstance(node, str) and node not in node_names:
                    out.append(loaded.problem(loc + ("map", addr), f"unknown node '{node}'"))
    target_required = tr.kind not in NO_TARGET
    if target_required and tr.target is None:
        out.append(loaded.problem(loc, f"a {tr.kind} inject needs a 'target' node"))
    if sc.variables and "{var:" in str(params):
        # {var:NAME} in a parameter: check the parameter with a value the variable can take
        try:
            sample = draw(sc.variables, sc.name, [1])[1]
        except VariableError:
            sample = {}
        params = substitute_all(params, {**{k: "x" for k in sc.variables}, **sample})
    for fpath, message in validate_params(tr.kind, params):
        parts = tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", fpath) if p) if fpath else ()
        out.append(loaded.problem(loc + parts if parts else loc + ("kind",), message))
    return out


def playbook_problems(scenario: Scenario, scenario_file: Path) -> list[Problem]:
    """Host-side plays in the scenario's playbooks (and the files they pull in), as problems
    ``PLAYBOOK:LINE:COL: key: message``. Refused unless the trainer passes --trust-playbooks."""
    books: list[Path] = []
    for node in scenario.nodes.values():
        for pb in node.provision:
            found = resolve_path(pb, scenario_file, "playbooks")
            if found is not None and found.resolve() not in books:
                books.append(found.resolve())
    return [
        Problem(p.file, p.line, p.col, p.key, f"{p.message} (refused unless the trainer passes --trust-playbooks)")
        for p in scan_playbooks(books, scenario_file)
    ]


def validate_file(path: Path | str, check_playbooks: bool = True) -> FileResult:
    """Shape and meaning of one scenario file (``rangectl validate`` also checks the reference
    solution beside it: :func:`rangectl.solution.validate_with_solution`). Loading a scenario to run
    it never reads the solution.

    ``check_playbooks`` scans the playbooks for host-side plays (``--trust-playbooks`` turns it off).
    """
    path = Path(path)
    loaded = load_file(path)
    result = FileResult(path=path, loaded=loaded, problems=list(loaded.problems))
    if loaded.scenario is not None and not loaded.problems:
        try:
            result.problems.extend(check_meaning(loaded))
        except RecursionError:  # pragma: no cover - defensive
            result.problems.append(Problem(str(path), 1, 1, "", "scenario too deeply nested"))
        if not result.problems and check_playbooks:
            result.problems.extend(playbook_problems(loaded.scenario, path))
        if not result.problems:
            result.scenario = loaded.scenario
    result.problems.sort(key=lambda p: (p.file != str(path), p.file, p.line, p.col, p.path))
    return result


def expand_paths(items: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Files as given; directories expanded to every *.yaml/*.yml under them."""
    files: list[Path] = []
    problems: list[Problem] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.suffix in SCENARIO_SUFFIXES and f.is_file() and not _is_side_file(f)
            )
            if not found:
                problems.append(Problem(str(p), 1, 1, "", "directory holds no scenario files (*.yaml, *.yml)"))
            files.extend(found)
        else:
            files.append(p)
    return files, problems


def _is_side_file(f: Path) -> bool:
    """Files under a scenario folder that are not scenarios: solutions, policies, pcaps' metadata."""
    return f.name.endswith((".solution.yaml", ".solution.yml")) or "scoring" in f.parts[-2:-1]


def load_scenario(path: Path | str, check_playbooks: bool = False) -> Scenario:
    """Load and fully validate one scenario, raising ScenarioError with the first problem.

    The host-side play scan runs only with ``check_playbooks``: where playbooks run
    (``ranges.up`` before it makes anything, and ``provision``), not every time a range's
    scenario is read back (a range made with --trust-playbooks must still load).
    """
    from rangectl.errors import ScenarioError

    res = validate_file(path, check_playbooks=check_playbooks)
    if res.problems:
        first = res.problems[0]
        more = f" (+{len(res.problems) - 1} more; run rangectl validate)" if len(res.problems) > 1 else ""
        raise ScenarioError(f"{first}{more}")
    assert res.scenario is not None
    return res.scenario
