"""Stamps on Docker: a stamped range is the same range as one provisioned node by node (the
same files, processes, firewall and per-team values), a stamp is made once and reused, and a
playbook that cannot be stamped falls back to Ansible with the reason recorded."""

from __future__ import annotations

import shutil
import time

import pytest

from rangectl import backend as backends
from rangectl import ranges
from rangectl.backend.base import NodeRef
from rangectl.backend.stamp import cache_dir
from rangectl.state import RangeState
from tests.conftest import FIXTURES, leftovers

pytestmark = pytest.mark.docker

MINI = FIXTURES / "mini-range.yaml"
SEED = "stamp-test-seed"
SNAPSHOT = (
    "find /etc /srv /opt /usr/local /var/lib /root -xdev -type f "
    "! -path '/etc/hostname' ! -path '/etc/hosts' ! -path '/etc/resolv.conf' ! -path '/etc/ssh/ssh_host_*' "
    "! -path '/root/.ansible/*' ! -path '/root/.bash_history' -print0 | sort -z | xargs -0 -r sha256sum; "
    # the processes, but not this snapshot's own (ps, grep, sort, sh) nor zombies
    "echo --; ps -eo args --no-headers | grep -v -e '^ps ' -e sort -e grep -e '^sh -c' -e xargs -e '^\\[' | sort; "
    # Docker's embedded DNS rules name random ports per container: left out
    "echo --; (command -v iptables-save >/dev/null && iptables-save | grep -v -e '^#' -e DOCKER_ -e 127.0.0.11 "
    "| sed 's/\\[[0-9:]*\\]//') || true"
)


def _snapshot(be, rng: str, plan) -> dict[tuple[int, str], str]:
    out = {}
    for t in plan.teams:
        for n in t.nodes:
            code, text = be.exec(NodeRef(rng, t.team, n.name), ["sh", "-c", SNAPSHOT], timeout=60)
            assert code == 0, text
            out[(t.team, n.name)] = text
    return out


def _up(rng: str, stamp: bool, scenario=MINI):
    rep = ranges.up(scenario, teams=2, name=rng, provision=True, seed=SEED, stamp=stamp)
    st = RangeState.open(rng)
    return rep, st, backends.for_range(st)


@pytest.fixture
def clean(docker_engine, built_images, tmp_path, monkeypatch):
    monkeypatch.setenv("RANGECTL_HOME", str(tmp_path / "home"))
    made: list[str] = []
    yield made
    for rng in made:
        ranges.down(rng)
        cs, ns = leftovers(docker_engine, rng)
        assert not cs and not ns
    left = docker_engine.api.containers(all=True, filters={"label": "io.rangectl.range=rangectl-stamp"})
    assert not left, "stamp templates left behind"


def test_a_stamped_range_is_the_range_provisioned_node_by_node(clean):
    clean.append("stampcmp")
    rep0, st0, be = _up("stampcmp", stamp=False)
    assert not rep0.stamps and not rep0.up.stamped
    before = _snapshot(be, "stampcmp", rep0.plan)
    ranges.down("stampcmp")

    t0 = time.monotonic()
    rep1, st1, be = _up("stampcmp", stamp=True)
    took = time.monotonic() - t0
    verdicts = {n: v.ok for n, v in rep1.stamps.items()}
    assert verdicts == {"portal": True, "soc": True}, {n: v.reason for n, v in rep1.stamps.items()}
    assert sorted(rep1.up.stamped) == [(1, "portal"), (1, "soc"), (2, "portal"), (2, "soc")]
    assert rep1.provision is None or rep1.provision.hosts == 0  # nothing left for Ansible
    after = _snapshot(be, "stampcmp", rep1.plan)
    for key in before:
        assert after[key] == before[key], f"{key} differs between the stamped and the provisioned range"
    # the per-team values are the team's own
    for t in rep1.plan.teams:
        code, text = be.exec(NodeRef("stampcmp", t.team, "portal"), ["cat", "/etc/rangectl-stamp"])
        assert text == f"provisioned-by-rangectl team={t.team} addr={t.ip_of('portal')}\n"
    # the record says which nodes were stamped and from what
    stamps = st1.meta()["stamps"]
    assert stamps["portal"]["stamped"] and stamps["portal"]["stamp"].startswith("rangectl/stamp:")
    info = be.node(NodeRef("stampcmp", 2, "portal"))
    assert info.image == stamps["portal"]["stamp"]
    print(f"[measure] mini-range, 2 teams, stamped up (stamps made): {took:.1f}s")

    # a second range made from the same inputs reuses the stamps: no template runs
    ranges.down("stampcmp")
    n_cached = len(list(cache_dir().glob("*.json")))
    t0 = time.monotonic()
    rep2, _st2, _be = _up("stampcmp", stamp=True)
    assert rep2.timings["stamps"] < 3.0, rep2.timings
    assert len(list(cache_dir().glob("*.json"))) == n_cached
    assert all(v.ok for v in rep2.stamps.values())


def test_a_playbook_that_writes_a_timestamp_is_provisioned_node_by_node(clean, tmp_path):
    folder = tmp_path / "scen"
    (folder / "playbooks").mkdir(parents=True)
    shutil.copy(FIXTURES / "playbooks" / "stamp.yml", folder / "playbooks" / "stamp.yml")
    (folder / "playbooks" / "clock.yml").write_text(
        "- hosts: \"{{ rangectl_hosts | default('all') }}\"\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.shell: date +%s%N > /etc/provisioned-at\n"
    )
    text = MINI.read_text().replace("provision: [playbooks/stamp.yml]\n    vars:", "provision: [playbooks/clock.yml]\n    vars:", 1)
    assert "clock.yml" in text
    scen = folder / "mini-range.yaml"
    scen.write_text(text)
    (folder / "scoring").mkdir()
    for f in (FIXTURES.parent.parent / "scoring").glob("*.yaml"):
        shutil.copy(f, folder / "scoring" / f.name)
    clean.append("stampclock")
    rep = ranges.up(scen, teams=2, name="stampclock", provision=True, stamp=True)
    v = rep.stamps["portal"]
    assert not v.ok and "by more than the team's values" in v.reason
    assert rep.stamps["soc"].ok  # the other node is still stamped
    be = backends.get()
    for t in (1, 2):  # Ansible ran for the portal of every team
        code, out = be.exec(NodeRef("stampclock", t, "portal"), ["cat", "/etc/provisioned-at"])
        assert code == 0 and out.strip().isdigit()
    meta = RangeState("stampclock").meta()
    assert meta["stamps"]["portal"]["stamped"] is False and meta["stamps"]["portal"]["reason"]
