"""`rangectl reset`: one node of one team re-created mid-drill from its image and playbooks, with
the same addresses and routes; the drill's probes reach the new node; the reset is recorded;
nothing else moves."""

from __future__ import annotations

import pytest

from rangectl import backend as backends
from rangectl import ranges
from rangectl.backend.base import NodeRef
from rangectl.drill.checks import run_check
from rangectl.drill.wiring import RangeProbes
from rangectl.scenario.model import Check
from rangectl.state import RangeState
from rangectl.store import EventStore
from tests.conftest import FIXTURES, leftovers, run_cli

pytestmark = pytest.mark.docker

MINI = FIXTURES / "mini-range.yaml"
RNG = "resetrng"


@pytest.fixture
def rng(docker_engine, built_images, tmp_path, monkeypatch):
    monkeypatch.setenv("RANGECTL_HOME", str(tmp_path / "home"))
    rep = ranges.up(MINI, teams=2, name=RNG, provision=True)
    yield rep
    ranges.down(RNG)
    cs, ns = leftovers(docker_engine, RNG)
    assert not cs and not ns


def test_reset_recreates_one_node_with_its_addresses_and_the_probes_follow(rng, tmp_path):
    st = RangeState.open(RNG)
    be = backends.for_range(st)
    sc, plan = st.scenario(), st.plan()
    reach = Check.model_validate({"reachable": {"from": "probe", "to": "portal", "port": 80}})
    v = RangeProbes(st, plan, be).vantage(2)
    assert run_check(sc, reach, v).passed
    before = {n.ref: n for n in be.nodes(RNG)}
    # a trainee breaks their portal: the web server is gone
    be.exec(NodeRef(RNG, 2, "portal"), ["sh", "-c", "rangectl-svc stop portal; rm -rf /srv/www/*"])
    assert not run_check(sc, reach, v).passed

    r = run_cli("reset", RNG, "portal", "--team", "2", "--json", env={"RANGECTL_HOME": str(tmp_path / "home"),
                                                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    after = {n.ref: n for n in be.nodes(RNG)}
    new, old = after[NodeRef(RNG, 2, "portal")], before[NodeRef(RNG, 2, "portal")]
    assert new.id != old.id and new.running
    assert new.addresses == old.addresses == {"dmz": str(plan.team(2).ip_of("portal"))}
    # every other node is the same container as before
    assert {k: n.id for k, n in after.items() if k != new.ref} == {k: n.id for k, n in before.items() if k != new.ref}
    # the default route through the scenario gateway is back, and so are the playbooks' files
    code, routes = be.exec(new.ref, ["ip", "route"])
    assert f"default via {plan.team(2).node('portal').gateway}" in routes
    code, text = be.exec(new.ref, ["cat", "/etc/rangectl-stamp"])
    assert code == 0 and f"team=2 addr={plan.team(2).ip_of('portal')}" in text
    # the drill's probe reaches the new node (through the same vantage object)
    assert run_check(sc, reach, v).passed
    with EventStore(st.db_path) as store:
        ev = [e for e in store.events() if e.kind == "node.reset"]
    assert len(ev) == 1 and ev[0].team == 2 and ev[0].data["node"] == "portal" and ev[0].actor == "trainer"


def test_reset_errors_are_one_line(rng, tmp_path):
    env = {"RANGECTL_HOME": str(tmp_path / "home"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    r = run_cli("reset", RNG, "nosuch", "--team", "1", env=env)
    assert r.returncode == 4 and "has no node 'nosuch'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("reset", RNG, "portal", "--team", "9", env=env)
    assert r.returncode == 4 and "has no team 9" in r.stderr
