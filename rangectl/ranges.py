"""Range lifecycle: up (with reconcile), down, status. The CLI's `up`/`down` call these.

Kept apart from the Typer layer so tests, benches and the drill runner use the
same code. Progress is reported through a callback; the CLI draws it with rich.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rangectl import labels as L
from rangectl.backend.docker import DockerBackend, UpResult
from rangectl.backend.engine import client
from rangectl.errors import RangeError, UsageError
from rangectl.plan import Plan, plan
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


def backend() -> DockerBackend:
    return DockerBackend(client())


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
    be = backend()
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
        be.check_names_free(range_name, p)
        be.check_subnets(range_name, p)
        st = RangeState.create(
            range_name,
            Path(scenario_file),
            {
                "scenario": scenario.name,
                "scenario_path": str(Path(scenario_file).resolve()),
                "scenario_hash": p.scenario_hash,
                "teams": teams,
                "seed": seed,
                "status": "creating",
            },
        )
    try:
        return _bring_up(st, be, scenario, p, provision, note, ansible_note, t0, trust_playbooks)
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
    be: DockerBackend,
    scenario: Scenario,
    p: Plan,
    provision: bool,
    note: Note,
    ansible_note: Callable[[str, str, str], None] | None,
    t0: float,
    trust_playbooks: bool = False,
) -> UpReport:
    from rangectl.access.credentials import ensure_credentials
    from rangectl.backend.images import ensure_images

    range_name = st.name
    ensure_credentials(st, len(p.teams))
    needed = sorted({n.image for n in scenario.nodes.values()})
    t_img = time.monotonic()
    images = ensure_images(be.client, needed, on_progress=lambda *a: note("image", " ".join(str(x) for x in a)))
    t_up = time.monotonic()
    res = be.up(range_name, scenario, p, images, progress=note)
    report = UpReport(range_name, scenario, p, res)
    report.timings["images"] = t_up - t_img
    report.timings["containers"] = time.monotonic() - t_up
    st.update(status="running")
    if provision:
        from rangectl.backend.provision import provision as run_provision

        fresh = bool(res.created_containers or res.started) or not st.get("provisioned", False)
        if fresh:
            t_pr = time.monotonic()
            st.update(status="provisioning")
            pr = run_provision(
                range_name, scenario, p, st.source_path, note=ansible_note,
                workdir=provision_dir(range_name), trust_playbooks=trust_playbooks,
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
    """Remove a range (or every range when None): containers, networks, then state."""
    be = backend()
    counts = be.down(range_name, progress=note)
    if range_name is None:
        from rangectl.state import list_ranges

        for st in list_ranges():
            st.remove()
    else:
        RangeState(range_name).remove()
    return counts


def status(range_name: str) -> dict[str, Any]:
    st = RangeState(range_name)
    be = backend()
    containers = be.containers(range_name)
    if not st.exists() and not containers:
        from rangectl.errors import NotFound

        raise NotFound(f"no range named '{range_name}'", fix="see `rangectl ls`")
    meta = st.meta() if st.exists() else {}
    net_labels = {n["Name"]: (n.get("Labels") or {}).get(L.NETWORK) for n in be.networks(range_name)}
    nodes = []
    for c in sorted(containers, key=lambda c: (int(c["Labels"].get(L.TEAM, 0)), c["Labels"].get(L.NODE, ""))):
        lab = c["Labels"]
        nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
        addrs = {}
        for nname, info in nets.items():
            addrs[net_labels.get(nname) or nname] = info.get("IPAddress", "")
        nodes.append(
            {
                "team": int(lab.get(L.TEAM, 0)),
                "node": lab.get(L.NODE),
                "role": lab.get(L.ROLE),
                "container": c["Names"][0].lstrip("/"),
                "state": c["State"],
                "image": c["Image"],
                "addresses": addrs,
            }
        )
    return {
        "range": range_name,
        "scenario": meta.get("scenario"),
        "teams": meta.get("teams"),
        "status": meta.get("status", "orphaned" if containers else "unknown"),
        "networks": sorted(net_labels),
        "nodes": nodes,
    }
