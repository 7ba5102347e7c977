"""Run a scenario's traffic inject (or an ad hoc replay) for one team of a running range.

The drill runner calls :func:`run_traffic_inject` on schedule and records the
dict it returns as the ``inject.done`` event; ``rangectl inject`` and
``rangectl replay`` call the same code now and record the result themselves
(:func:`record`). Nothing here writes to the store on its own.

One run:

1. the team's own subnets are the only allowed destinations, the target is
   the team's copy of the target node, node names resolve to the team's
   addresses;
2. check what would be sent before anything is (a capture is read and
   rewritten once as a dry run, so an address outside the range refuses the
   whole replay);
3. start an arrival counter in each receiving node (the node job
   :func:`rangectl.traffic.jobs.count_arrivals`: frames from the sender's
   addresses to the node's, counted by the kernel), run the generator in the
   red node (:func:`rangectl.traffic.jobs.generate`), stop the counters (each
   waits a moment for frames in flight);
4. return the ground truth (see :func:`ground_truth`).

Both run through the backend's execution seam (:mod:`rangectl.backend.nodeexec`), so the
same inject works on whichever engine holds the team's nodes.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rangectl.backend.base import Backend, NodeRef
from rangectl.backend.nodeexec import RESULT_GRACE, Job, RunningJob
from rangectl.drill.runner import clock_from_events
from rangectl.errors import NotFound, RangeError, UsageError
from rangectl.plan import NodePlan, Plan, TeamPlan
from rangectl.scenario.durations import parse_duration
from rangectl.scenario.variables import substitute_all
from rangectl.store import EventStore
from rangectl.traffic import jobs
from rangectl.traffic.base import TrafficContext, TrafficError, TrafficResult, refusal
from rangectl.traffic.generators import GENERATORS, parse_params
from rangectl.traffic.pcapfile import prepare_replay, read_capture, resolve_capture
from rangectl.traffic.sniff import MAX_MATCHES

IPv4 = ipaddress.IPv4Address

#: seconds the arrival counters keep counting after the generator returned (frames in flight, FINs)
GRACE = 0.3

#: event kinds the CLI records (the runner records ``inject.done`` from the same dict)
INJECT_EVENT = "inject.done"
REPLAY_EVENT = "traffic.replay"


@dataclass
class Watch:
    """One receiving node whose arrivals are counted."""

    node: str
    addresses: list[IPv4]
    counter: RunningJob | None = None
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


def team_plan(plan: Plan, team: int, range_name: str) -> TeamPlan:
    try:
        return plan.team(team)
    except KeyError:
        n = len(plan.teams)
        raise NotFound(f"range '{range_name}' has no team {team} (it has team{'s 1..' if n > 1 else ' '}{n})") from None


def node_plan(tp: TeamPlan, name: str, range_name: str) -> NodePlan:
    try:
        return tp.node(name)
    except KeyError:
        known = ", ".join(n.name for n in tp.nodes)
        raise NotFound(f"range '{range_name}' has no node '{name}' (nodes: {known})") from None


def _what_failed(exc: RangeError, what: str) -> RangeError:
    return type(exc)(f"cannot {what}: {exc.message}", fix=exc.fix)


def addresses_by_node(tp: TeamPlan) -> dict[IPv4, str]:
    return {ip: n.name for n in tp.nodes for ip in n.interfaces.values()}


def _resolver(tp: TeamPlan):
    def resolve(name: str) -> str:
        return str(tp.ip_of(name))  # KeyError -> "unknown node" in TrafficContext.resolve_node

    return resolve


def _pcap_dry_run(model: Any, ctx: TrafficContext, own: list[IPv4]) -> tuple[Path, dict[str, str], list[str], list[str]]:
    """Read and rewrite the capture once without sending: raises TrafficRefused for outside addresses.

    Returns the capture path, the resolved map, and the destinations and sources the replay will use.
    """
    path = resolve_capture(model.file, ctx)
    amap = {k: str(ctx.resolve_node(v)) for k, v in model.map.items()}
    prep = prepare_replay(
        read_capture(path, limit=model.max_packets), address_map=amap, src_mac=b"\0" * 6,
        hop_mac=lambda _d: b"\0" * 6, allowed=ctx.allowed_subnets, own_addresses=own, mtu=1 << 20,
        drop_outside=model.drop_outside,
    )  # fmt: skip
    if not prep.frames:
        raise TrafficError(f"{path}: nothing to replay from this node ({dict(prep.skipped) or 'no IPv4 packet'})")
    return path, amap, list(prep.destinations), list(prep.sources)


def team_network(plan: Plan, tp: Any, net: str) -> str:
    """A scenario network range (e.g. a synflood's ``spoof``) moved into ``tp``'s copy of the range.

    Team 1 keeps the scenario's addresses; team K's copy of a scenario subnet sits elsewhere
    (see docs/planning.md), so a range inside scenario network N moves by the same offset into
    team K's N. A range outside every scenario network is returned as is (the safety rule
    refuses it later, naming it).
    """
    want = ipaddress.IPv4Network(str(net), strict=False)
    first = plan.teams[0]
    for orig in first.networks:
        if want.subnet_of(orig.subnet):
            mine = next(n for n in tp.networks if n.name == orig.name)
            offset = int(want.network_address) - int(orig.subnet.network_address)
            return str(ipaddress.IPv4Network((int(mine.subnet.network_address) + offset, want.prefixlen)))
    return str(want)


def run_job(
    state: Any,
    plan: Plan,
    backend: Backend,
    team: int,
    *,
    kind: str,
    params: Mapping[str, Any],
    src_node: str,
    target_node: str | None,
    inject_id: str | None,
    scenario_file: Path | None = None,
    stop: threading.Event | None = None,
    deadline: float | None = None,
    grace: float = GRACE,
) -> dict[str, Any]:
    """Run generator ``kind`` from ``src_node`` of ``team`` (at ``target_node``); return the ground truth."""
    rng = state.name
    what = f"run {kind} for team {team}" + (f" (inject '{inject_id}')" if inject_id else "")
    if kind not in GENERATORS:
        raise UsageError(f"cannot {what}: unknown traffic kind '{kind}' (known: {', '.join(GENERATORS)})")
    spec = GENERATORS[kind]
    tp = team_plan(plan, team, rng)
    params = substitute_all(dict(params), tp.values)  # the team's own {var:NAME} values
    if params.get("spoof"):
        params["spoof"] = team_network(plan, tp, params["spoof"])
    model = parse_params(kind, params)
    src = node_plan(tp, src_node, rng)
    src_addrs = list(src.interfaces.values())
    allowed = tp.subnets()
    dst: IPv4 | None = None
    if target_node is not None:
        dst = node_plan(tp, target_node, rng).primary_ip
    elif spec.needs_target:
        raise UsageError(f"cannot {what}: a {kind} run needs a target node")
    if dst is not None:
        why = refusal(dst, allowed)
        if why:
            raise TrafficError(f"cannot {what}: {why}")

    try:  # the red node must be running before anything else is started
        backend.running(NodeRef(rng, team, src_node))
    except RangeError as exc:
        raise _what_failed(exc, f"{what}: the red node cannot send") from None
    # (the controller's own context: the dry run of a capture, nothing is sent with it)
    ctx = TrafficContext(None, allowed, dst_ip=dst, resolve=_resolver(tp), scenario_file=scenario_file)
    # deadlines cross the seam as wall-clock times
    wall_deadline = None if deadline is None else time.time() + max(0.0, deadline - time.monotonic())

    # what to watch: the target, or (pcap) every node the capture's packets go to
    by_addr = addresses_by_node(tp)
    watches: list[Watch] = []
    sources: list[Any] = list(src_addrs)
    extra: dict[str, Any] = {}
    if kind == "pcap":
        path, amap, dests, srcs = _pcap_dry_run(model, ctx, src_addrs)
        extra = {"file": str(path), "map": amap}
        nodes: dict[str, list[IPv4]] = {}
        for d in dests:
            n = by_addr.get(IPv4(d))
            if n is not None and n != src_node:
                nodes.setdefault(n, []).append(IPv4(d))
        watches = [Watch(n, a) for n, a in nodes.items()]
        sources = [IPv4(s) for s in srcs] if len(srcs) <= MAX_MATCHES else list(allowed)
    else:
        assert dst is not None and target_node is not None
        tnode = tp.node(target_node)
        watches = [Watch(target_node, list(tnode.interfaces.values()))]
        spoof = getattr(model, "spoof", None)
        if spoof:
            sources.append(ipaddress.IPv4Network(spoof))

    gen = Job.of(
        jobs.generate, deadline=wall_deadline, kind=kind, params=dict(params),
        allowed=[str(n) for n in allowed], dst_ip=str(dst) if dst is not None else None,
        addresses={n.name: str(n.primary_ip) for n in tp.nodes},
        scenario_file=str(scenario_file) if scenario_file else None, label=f"{rng}/team{team}/{inject_id or kind}",
    )  # fmt: skip
    result: TrafficResult | None = None
    nodes_exec = backend.nodes_exec
    try:
        for w in watches:
            try:
                w.counter = nodes_exec.start(
                    NodeRef(rng, team, w.node),
                    Job.of(jobs.count_arrivals, sources=[str(s) for s in sources],
                           destinations=[str(a) for a in w.addresses], grace=grace),
                )  # fmt: skip
                w.counter.wait_ready(10.0)
            except (RangeError, OSError, ValueError) as exc:
                # a stopped target (a blue team may have taken it down) does not stop the attack
                w.error = str(exc)
                w.counter = None
        try:
            running = nodes_exec.start(NodeRef(rng, team, src_node), gen)
        except RangeError as exc:
            raise _what_failed(exc, f"{what}: the red node cannot send") from None
        if stop is not None:  # the caller's stop request reaches the job
            threading.Thread(target=_relay_stop, args=(stop, running), daemon=True).start()
        result = _traffic_result(running.result())
    finally:
        for w in watches:
            if w.counter is not None:
                w.counter.stop()
        for w in watches:
            if w.counter is None:
                continue
            try:
                # it ends `grace` after its stop; a counter on an engine that went away is given up
                w.result = w.counter.result(timeout=grace + RESULT_GRACE)
            except RangeError as exc:
                w.error = f"arrival counter failed: {exc.message}"
            if result is None:
                w.result = {}
    assert result is not None
    return ground_truth(
        rng, team, inject_id, kind, src_node, target_node, result, watches, extra
    )


def _relay_stop(stop: threading.Event, job: RunningJob) -> None:
    """Pass a caller's stop request on to a running job (until the job ends)."""
    while not job.done():
        if stop.wait(0.2):
            job.stop()
            return


def _traffic_result(d: dict[str, Any]) -> TrafficResult:
    """A generator's result as the job returned it (plain data) -> :class:`TrafficResult`."""
    return TrafficResult(
        kind=d["kind"], src_ip=d.get("src_ip"), dst_ip=d.get("dst_ip"),
        started=datetime.fromisoformat(d["started"]), ended=datetime.fromisoformat(d["ended"]),
        packets_sent=int(d.get("packets_sent", 0)), bytes_sent=int(d.get("bytes_sent", 0)),
        stopped=d.get("stopped", "done"), counted=d.get("counted", "exact"), src_iface=d.get("src_iface"),
        details=dict(d.get("details") or {}),
    )  # fmt: skip


def ground_truth(
    range_name: str,
    team: int,
    inject_id: str | None,
    kind: str,
    src_node: str,
    target_node: str | None,
    r: TrafficResult,
    watches: list[Watch],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-able record of one run (what the store keeps and scoring/reports read).

    ``packets``/``bytes`` are what left the red node (see ``counted``);
    ``seen_on_target`` is what arrived at the target node(s) from the red
    node's addresses (None when no receiving node could be watched);
    ``seen`` has it per node.
    """
    seen: dict[str, Any] = {}
    total: int | None = None
    for w in watches:
        if w.error is not None or not w.result:
            seen[w.node] = {"packets": None, "error": w.error or "not counted"}
            continue
        seen[w.node] = {**w.result, "addresses": [str(a) for a in w.addresses]}
        total = (total or 0) + int(w.result["packets"])
    dst_nodes = [w.node for w in watches]
    return {
        "inject": inject_id,
        "team": team,
        "range": range_name,
        "kind": kind,
        "src_node": src_node,
        "src_ip": r.src_ip,
        "src_iface": r.src_iface,
        "dst_node": target_node if target_node is not None else (",".join(dst_nodes) or None),
        "dst_nodes": dst_nodes if target_node is None else [target_node],
        "dst_ip": r.dst_ip,
        "started": r.started.isoformat(),
        "ended": r.ended.isoformat(),
        "seconds": round(r.seconds, 6),
        "packets": r.packets_sent,
        "bytes": r.bytes_sent,
        "counted": r.counted,
        "stopped": r.stopped,
        "seen_on_target": total,
        "seen": seen,
        "details": {**dict(extra or {}), **r.details},
    }


def run_traffic_inject(
    state: Any,
    scenario: Any,
    plan: Plan,
    backend: Backend,
    team: int,
    inj: Any,
    *,
    stop: threading.Event | None = None,
    deadline: float | None = None,
    time_scale: float = 1.0,
) -> dict[str, Any]:
    """Run traffic inject ``inj`` for ``team`` now; return its ground truth (the caller records it).

    A ``duration`` parameter is drill time: at ``time_scale`` x the traffic lasts
    duration / time_scale seconds, so a flood covers the same part of the drill at any speed
    (its ``rate`` stays packets per real second: the strength of an attack is physical)."""
    tr = getattr(inj, "traffic", None)
    if tr is None:
        raise UsageError(f"inject '{inj.id}' is a message, not traffic")
    src_file = getattr(state, "source_path", None)
    params = dict(tr.params)
    if time_scale > 0 and time_scale != 1.0 and params.get("duration") is not None:
        params["duration"] = parse_duration(params["duration"]) / time_scale
    return run_job(
        state, plan, backend, team, kind=tr.kind, params=params, src_node=tr.from_, target_node=tr.target,
        inject_id=inj.id, scenario_file=src_file, stop=stop, deadline=deadline,
    )  # fmt: skip


def run_replay(
    state: Any,
    plan: Plan,
    backend: Backend,
    team: int,
    src_node: str,
    file: str | Path,
    address_map: Mapping[str, str] | None = None,
    **timing: Any,
) -> dict[str, Any]:
    """Replay ``file`` from ``src_node`` of ``team`` with ``address_map`` (capture address -> node or address).

    ``timing``: any of the ``pcap`` generator's ``speed``, ``pps``, ``topspeed``,
    ``loop``, ``max_packets``, ``duration``, ``drop_outside``.
    """
    p = Path(file)
    if not p.is_file():
        raise UsageError(f"capture {file} not found")
    params: dict[str, Any] = {"file": str(p.resolve()), "map": dict(address_map or {})}
    params.update({k: v for k, v in timing.items() if v is not None})
    return run_job(
        state, plan, backend, team, kind="pcap", params=params, src_node=src_node, target_node=None,
        inject_id=None,
    )  # fmt: skip


def parse_map(items: list[str] | None) -> dict[str, str]:
    """``["10.0.0.5=portal", ...]`` -> ``{"10.0.0.5": "portal"}``; UsageError naming a bad item."""
    out: dict[str, str] = {}
    for it in items or []:
        addr, sep, node = it.partition("=")
        addr, node = addr.strip(), node.strip()
        if not sep or not addr or not node:
            raise UsageError(f"--map '{it}' is not ADDR=NODE (e.g. 198.51.100.10=scanner)")
        try:
            IPv4(addr)
        except ValueError:
            raise UsageError(f"--map '{it}': '{addr}' is not an IPv4 address of the capture") from None
        if addr in out and out[addr] != node:
            raise UsageError(f"--map gives {addr} twice ({out[addr]}, {node})")
        out[addr] = node
    return out


def record(db_path: Path | str, team: int, truth: Mapping[str, Any], *, kind: str = INJECT_EVENT) -> Any:
    """Append a CLI run's ground truth to the range's store, shaped like the runner's ``inject.done``.

    Data: ``inject``, ``status`` ("ok"), ``drill_t`` (the drill clock now, 0
    before a drill), ``manual: true`` (run by hand, not by the runner), then
    the ground truth. Actor ``trainer``. Returns the appended event.
    """
    with EventStore(db_path) as store:
        clock = clock_from_events(store.events(kind="drill.*"))
        data = {"inject": truth.get("inject"), "status": "ok", "drill_t": clock.drill_t(), "manual": True, **truth}
        return store.append(kind, data, team=team, actor="trainer")
