"""Range lifecycle: up (with reconcile), down, status. The CLI's `up`/`down` call these.

Kept apart from the Typer layer so tests, benches and the drill runner use the
same code. Progress is reported through a callback; the CLI draws it with rich.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rangectl import backend as backends
from rangectl.access.credentials import ensure_credentials
from rangectl.backend.base import Backend, NodeRef, UpResult
from rangectl.backend.provision import provision as run_provision
from rangectl.backend.stamp import STAMP_MIN_TEAMS, node_inputs
from rangectl.errors import NotFound, RangeError, UsageError
from rangectl.plan import NodePlan, Plan, TeamPlan, plan
from rangectl.scenario.model import Scenario
from rangectl.scenario.validate import load_scenario
from rangectl.scenario.variables import new_seed
from rangectl.state import RangeState, check_range_name

Note = Callable[[str, str], None]


@dataclass
class UpReport:
    range: str
    scenario: Scenario
    plan: Plan
    up: UpResult
    provision: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    stamps: dict[str, Any] = field(default_factory=dict)  # node -> stamp verdict (rangectl.backend.stamp)


def up(
    scenario_file: Path,
    teams: int = 1,
    name: str | None = None,
    provision: bool = True,
    note: Note | None = None,
    ansible_note: Callable[[str, str, str], None] | None = None,
    keep_on_failure: bool = False,
    trust_playbooks: bool = False,
    seed: str | None = None,
    engine: str | None = None,
    stamp: bool | None = None,
) -> UpReport:
    """Bring a range up (or reconcile it). A range this call creates is rolled back on failure.

    Without ``trust_playbooks``, a scenario whose playbooks contain host-side plays is
    refused here, before anything is made (docs/security.md).
    """
    note = note or (lambda phase, item: None)
    t0 = time.monotonic()
    scenario = load_scenario(scenario_file, check_playbooks=provision and not trust_playbooks)
    range_name = check_range_name(name or scenario.name)
    st = RangeState(range_name)
    fresh_range = not st.exists()
    meta = st.meta() if not fresh_range else {}
    # the seed per-team variables are drawn from: fresh per range unless given, then kept (docs/planning.md)
    kept = meta.get("seed")
    if kept and seed and seed != kept:
        raise UsageError(
            f"range '{range_name}' was made with seed {kept}; this up asks for {seed}",
            fix=f"`rangectl down {range_name}` first, or leave --seed out",
        )
    seed = kept or seed or new_seed()
    p = plan(scenario, teams, seed)
    if not fresh_range:
        kept_engine = meta.get("engine") or backends.DEFAULT
        if engine and engine != kept_engine:
            raise UsageError(
                f"range '{range_name}' runs on engine '{kept_engine}'; this up asks for '{engine}'",
                fix=f"`rangectl down {range_name}` first, or leave --engine out",
            )
        engine = kept_engine
    be = backends.get(engine)
    if not fresh_range:
        if meta.get("scenario_hash") not in (None, p.scenario_hash):
            raise UsageError(
                f"range '{range_name}' was made from a different version of the scenario",
                fix=f"`rangectl down {range_name}` first, or pick another --name",
            )
        if int(meta.get("teams", teams)) != teams:
            raise UsageError(
                f"range '{range_name}' has {meta.get('teams')} team(s); this up asks for {teams}",
                fix=f"`rangectl down {range_name}` first, or pass --teams {meta.get('teams')}",
            )
    else:
        be.check_free(range_name, p)
        st = RangeState.create(
            range_name,
            Path(scenario_file),
            {
                "scenario": scenario.name,
                "scenario_path": str(Path(scenario_file).resolve()),
                "scenario_hash": p.scenario_hash,
                "teams": teams,
                "seed": seed,
                "engine": be.name,
                "status": "creating",
            },
        )
    try:
        if stamp is None:
            stamp = {"0": False, "1": True}.get(os.environ.get("RANGECTL_STAMP", "auto"))
        return _bring_up(st, be, scenario, p, provision, note, ansible_note, t0, trust_playbooks, stamp)
    except BaseException:
        # A range this call started is removed again on any failure or Ctrl-C, so
        # nothing leaks; a reconciling up leaves the existing range as it was.
        if fresh_range and not keep_on_failure:
            note("rollback", range_name)
            try:
                down(range_name)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        raise


def _bring_up(
    st: RangeState,
    be: Backend,
    scenario: Scenario,
    p: Plan,
    provision: bool,
    note: Note,
    ansible_note: Callable[[str, str, str], None] | None,
    t0: float,
    trust_playbooks: bool = False,
    stamp: bool | None = None,
) -> UpReport:
    """``stamp``: True samples every node with no cached verdict, False provisions every node by
    Ansible, None (auto) samples only for ranges of STAMP_MIN_TEAMS teams or more and otherwise
    uses the stamps already cached."""
    range_name = st.name
    ensure_credentials(st, len(p.teams))
    needed = sorted({n.image for n in scenario.nodes.values()})
    t_img = time.monotonic()
    images = be.ensure_images(needed, on_progress=lambda *a: note("image", " ".join(str(x) for x in a)))
    t_stamp = time.monotonic()
    verdicts: dict[str, Any] = {}
    if provision and stamp is not False:
        note("stamps", "provisioning once per node")
        verdicts = be.make_stamps(
            range_name, scenario, p, images, st.source_path, trust_playbooks, ansible_note, provision_dir(range_name),
            sample=stamp is True or len(p.teams) >= STAMP_MIN_TEAMS,
        )
        st.update(stamps={n: v.as_dict() for n, v in sorted(verdicts.items())})
    stamped = {n: v.stamp for n, v in verdicts.items() if v.ok}

    def stamp_for(t: TeamPlan, node: NodePlan) -> tuple[str, bytes] | None:
        s = stamped.get(node.name)
        return None if s is None else (s.ref, s.tar(node_inputs(range_name, scenario, t, node.name)))

    t_up = time.monotonic()
    res = be.apply(range_name, scenario, p, images, progress=note, stamps=stamp_for if stamped else None)
    report = UpReport(range_name, scenario, p, res, stamps=verdicts)
    report.timings["images"] = t_stamp - t_img
    if verdicts:
        report.timings["stamps"] = t_up - t_stamp
    report.timings["containers"] = time.monotonic() - t_up
    st.update(status="running")
    if provision:
        fresh = bool(res.created_containers or res.started) or not st.get("provisioned", False)
        if fresh:
            t_pr = time.monotonic()
            st.update(status="provisioning")
            # nodes made from a stamp just now carry their playbooks' work already
            skip = set(res.stamped)
            pr = run_provision(
                range_name, scenario, p, st.source_path, note=ansible_note, backend=be,
                workdir=provision_dir(range_name), trust_playbooks=trust_playbooks, skip=skip,
            )
            report.provision = pr
            report.timings["provision"] = time.monotonic() - t_pr
            if not pr.ok:
                st.update(status="provision-failed", provisioned=False)
                f = pr.failures[0]
                more = f" (+{len(pr.failures) - 1} more)" if len(pr.failures) > 1 else ""
                raise RangeError(
                    f"provisioning failed on {f['host']} at task '{f['task']}': {f['message']}{more}",
                    fix=f"fix the playbook and run `rangectl up` again; raw Ansible output: {pr.log}",
                )
            st.update(provisioned=True)
    st.update(status="up")
    report.timings["total"] = time.monotonic() - t0
    return report


def provision_dir(range_name: str) -> Path:
    """Where a range's Ansible run and its raw output live: outside the range's own folder,
    so the output of a failed first `up` survives the rollback (replaced by the next run)."""
    import os
    import shutil

    from rangectl import paths

    base = paths.state_home() / "provision"
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    d = base / range_name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(mode=0o700)
    return d


def down(range_name: str | None, note: Note | None = None) -> tuple[int, int]:
    """Remove a range (or every range of the default engine when None): containers, networks, then state."""
    if range_name is None:
        from rangectl.state import list_ranges

        counts = backends.get().remove(None, progress=note)
        for st in list_ranges():
            st.remove()
        return counts
    st = RangeState(range_name)
    counts = backends.for_range(st).remove(range_name, progress=note)
    st.remove()
    return counts


def status(range_name: str) -> dict[str, Any]:
    st = RangeState(range_name)
    be = backends.for_range(st)
    nodes = be.nodes(range_name)
    if not st.exists() and not nodes:
        raise NotFound(f"no range named '{range_name}'", fix="see `rangectl ls`")
    meta = st.meta() if st.exists() else {}
    return {
        "range": range_name,
        "scenario": meta.get("scenario"),
        "teams": meta.get("teams"),
        "engine": be.name,
        "status": meta.get("status", "orphaned" if nodes else "unknown"),
        "stamps": meta.get("stamps") or {},
        "networks": sorted(n.name for n in be.networks(range_name)),
        "nodes": [n.as_dict() for n in nodes],
    }


def reset_node(range_name: str, node: str, team: int, note: Note | None = None, provision: bool = True) -> dict[str, Any]:
    """Re-create one node of one team from its image (same addresses and routes), then run its
    playbooks again for that node only; the drill, if running, carries on (docs/ranges.md)."""
    st = RangeState(range_name)
    if not st.exists():
        raise NotFound(f"no range named '{range_name}'", fix="see `rangectl ls`")
    scenario, p = st.scenario(), st.plan()
    if node not in scenario.nodes:
        raise NotFound(f"range '{range_name}' has no node '{node}' (nodes: {', '.join(scenario.nodes)})")
    if not any(t.team == team for t in p.teams):
        raise NotFound(f"range '{range_name}' has no team {team}")
    be = backends.for_range(st)
    note = note or (lambda phase, item: None)
    t0 = time.monotonic()
    images = be.ensure_images([scenario.nodes[node].image])
    info = be.reset(NodeRef(range_name, team, node), scenario, p, images, progress=note)
    out: dict[str, Any] = {"range": range_name, "team": team, "node": node, "container": info.name,
                           "addresses": info.addresses, "provisioned": False}  # fmt: skip
    if provision and scenario.nodes[node].provision:
        pr = run_provision(
            range_name, scenario, Plan(p.scenario, p.scenario_hash, [p.team(team)], p.seed), st.source_path,
            workdir=provision_dir(f"{range_name}.reset"), backend=be, only={node},
        )  # fmt: skip
        if not pr.ok:
            f = pr.failures[0]
            raise RangeError(f"reset {node} of team {team}: provisioning failed at '{f['task']}': {f['message']}")
        out["provisioned"] = True
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out
