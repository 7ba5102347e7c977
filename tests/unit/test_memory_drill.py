"""A whole drill on the in-memory backend: up, timeline, injects, checks, availability, the
reference solution (submit, exec through the backend, report), board, record, report, down —
the same code paths as on Docker, with no engine (docs/architecture.md, docs/testing.md)."""

from __future__ import annotations

import time

import pytest

from rangectl import ranges
from rangectl.backend.base import NodeRef
from rangectl.backend.nodeexec import job_name
from rangectl.drill.checks import probe_job
from rangectl.errors import NotFound, RangeError
from rangectl.scenario.validate import load_scenario
from rangectl.selftest import run_selftest
from rangectl.traffic import jobs
from tests.conftest import FIXTURES

MINI = FIXTURES / "mini-range.yaml"


def test_whole_drill_on_the_memory_backend(memory, tmp_path):
    be, worlds = memory
    t0 = time.monotonic()
    res = run_selftest(
        MINI, time_scale=60, engine="memory", provision=False, as_trainee=False, report_dir=tmp_path / "report"
    )
    took = time.monotonic() - t0
    verdict = {a.name: (a.ok, a.detail) for a in res.assertions}
    assert res.error is None and res.ok, verdict
    assert took < 10, f"the in-memory drill took {took:.1f}s"
    # every part ran through the backend: both teams' injects, probes from the probe node, the
    # solution's exec on the router, the world saw the block only for team 1
    (world,) = worlds
    assert world.dropped == {1: {str(world.plan.team(1).ip_of("scanner"))}, 2: set()}
    ran = {(ref.team, ref.node, job.fn) for ref, job in be.jobs_run}
    assert {(k, "scanner", job_name(jobs.generate)) for k in (1, 2)} <= ran
    assert {(k, "portal", job_name(jobs.count_arrivals)) for k in (1, 2)} <= ran
    assert {(k, "probe", job_name(probe_job)) for k in (1, 2)} <= ran
    assert not any(ref.node == "soc" for ref, job in be.jobs_run), "no probe from the blue node"
    assert [(ref.team, ref.node) for ref, _ in be.execs] == [(1, "gw")]
    # scores: team 1 earned everything, team 2 only availability
    assert res.scores[1] >= 300 and res.scores[2] < res.scores[1] * 0.5
    assert res.objectives[1]["block-scanner"]["solved"] and not res.objectives[2]["block-scanner"]["solved"]
    assert (tmp_path / "report" / "report.html").is_file()
    # down removed exactly the range
    assert be.nodes(res.range) == [] and res.range not in be.ranges()


def test_memory_backend_contract(memory):
    be, _ = memory
    sc = load_scenario(MINI)
    rep = ranges.up(MINI, teams=2, name="mem-contract", provision=False, engine="memory")
    assert rep.up.created_containers and len(be.nodes("mem-contract")) == 2 * (len(sc.nodes) + 1)
    st = ranges.status("mem-contract")
    assert st["engine"] == "memory"
    portal2 = next(n for n in st["nodes"] if n["team"] == 2 and n["node"] == "portal")
    assert portal2["addresses"]["dmz"] == str(rep.plan.team(2).ip_of("portal"))
    # a second up of the same range keeps everything
    again = ranges.up(MINI, teams=2, name="mem-contract", provision=False)
    assert not again.up.created_containers and again.up.kept
    # reset: a new container, the same addresses
    ref = NodeRef("mem-contract", 2, "portal")
    old = be.node(ref)
    res = ranges.reset_node("mem-contract", "portal", 2, provision=False)
    new = be.node(ref)
    assert new.id != old.id and new.addresses == old.addresses and res["addresses"] == old.addresses
    with pytest.raises(NotFound):
        ranges.reset_node("mem-contract", "nosuch", 2, provision=False)
    # a second range on the same subnets is refused, and its rollback leaves this one alone
    with pytest.raises(RangeError, match="clashes"):
        ranges.up(MINI, teams=1, name="mem-other", provision=False, engine="memory")
    assert len(be.nodes("mem-contract")) == 2 * (len(sc.nodes) + 1)
    assert ranges.down("mem-contract") == (2 * (len(sc.nodes) + 1), 2 * len(sc.networks))
    assert be.nodes("mem-contract") == [] and be.ranges() == {}
    ranges.up(MINI, teams=1, name="mem-other", provision=False, engine="memory")
    assert {n.node for n in be.nodes("mem-other")} == {*sc.nodes, "probe"}
    ranges.down("mem-other")
