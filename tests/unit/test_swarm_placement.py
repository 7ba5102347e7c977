"""The swarm backend without a swarm: placing teams on engines, reading the swarm's nodes."""

from __future__ import annotations

import pytest

from rangectl.backend import swarm
from rangectl.backend.swarm import ENGINE_LABEL, Engine, place, read_engines
from rangectl.errors import EnvironmentProblem, RangeError

GiB = 2**30


def eng(name: str, cpus: float = 2, mem: int = 24 * GiB, role: str = "worker", ready=True, active=True) -> Engine:
    return Engine(name, f"id-{name}", f"tcp://{name}:2375", cpus, mem, role, ready, active)


def test_capacity_is_the_smaller_of_cpus_and_memory(monkeypatch):
    monkeypatch.setattr(swarm, "NODES_PER_CPU", 40.0)
    monkeypatch.setattr(swarm, "NODE_MEMORY_MB", 64.0)
    assert eng("a", cpus=2, mem=24 * GiB).capacity() == 80  # CPUs bound it
    assert eng("b", cpus=16, mem=4 * GiB).capacity() == int(4 * 1024 * 0.8 / 64)  # memory bounds it: 51


def test_packed_fills_the_first_engine_then_the_next(monkeypatch):
    monkeypatch.setattr(swarm, "NODES_PER_CPU", 7.0)  # 14 nodes an engine: two teams of 7
    es = [eng("m", role="manager"), eng("w1"), eng("w2")]
    got = place({t: 7 for t in range(1, 6)}, es)
    assert got == {1: "m", 2: "m", 3: "w1", 4: "w1", 5: "w2"}


def test_spread_balances_and_prefers_workers_between_equals():
    es = [eng("m", role="manager"), eng("w1"), eng("w2")]
    got = place({t: 7 for t in range(1, 5)}, es, spread=True)
    assert got[1] in ("w1", "w2") and got[2] in ("w1", "w2") and got[1] != got[2]
    assert got[3] == "m"  # only then the manager
    assert sorted(got.values()).count("m") == 1 and len(set(got.values())) == 3


def test_spread_weighs_capacity_and_existing_load():
    es = [eng("big", cpus=8), eng("small", cpus=1)]
    got = place({t: 7 for t in range(1, 6)}, es, spread=True)
    assert list(got.values()).count("big") >= 4  # 320 nodes of room against 40
    # nodes other ranges hold count: a busy engine gets fewer teams
    got = place({1: 7, 2: 7}, [eng("a"), eng("b")], spread=True, load={"a": 70})
    assert got == {1: "b", 2: "b"}


def test_kept_teams_stay_where_they_are():
    es = [eng("a"), eng("b")]
    got = place({1: 7, 2: 7, 3: 7}, es, kept={2: "b"})
    assert got[2] == "b" and got[1] == "a" and got[3] == "a"


def test_engines_not_ready_or_drained_get_no_new_team():
    es = [eng("down", ready=False), eng("drained", active=False), eng("ok")]
    assert set(place({1: 7, 2: 7}, es, spread=True).values()) == {"ok"}
    with pytest.raises(RangeError, match="no swarm node is ready and active"):
        place({1: 7}, [eng("down", ready=False)])


def test_no_room_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(swarm, "NODES_PER_CPU", 5.0)
    with pytest.raises(RangeError, match=r"no room for team 3 \(7 nodes\): 2 engine\(s\) take 20 nodes"):
        place({1: 7, 2: 7, 3: 7}, [eng("a"), eng("b")])


class FakeManager:
    """The two calls read_engines makes of a manager."""

    def __init__(self, nodes, self_id="n1"):
        self._nodes, self._self = nodes, self_id
        self.api = self

    base_url = "http://172.30.213.2:2375"

    def info(self):
        return {"Swarm": {"NodeID": self._self}}

    def nodes(self):
        return self._nodes


def node(nid, host, label=None, role="worker", state="ready", availability="active"):
    return {
        "ID": nid,
        "Spec": {"Labels": {ENGINE_LABEL: label} if label else {}, "Role": role, "Availability": availability},
        "Description": {"Hostname": host, "Resources": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 8 * GiB}},
        "Status": {"State": state},
    }


def test_read_engines_from_node_labels():
    es = read_engines(FakeManager([
        node("n2", "w1", "tcp://10.0.0.3:2375"),
        node("n1", "m", None, role="manager"),  # the manager we talk to needs no label
        node("n3", "w2", "ssh://ops@w2", state="down"),
    ]))  # fmt: skip
    assert [(e.name, e.url, e.role, e.ready) for e in es] == [
        ("m", "tcp://172.30.213.2:2375", "manager", True),  # as DOCKER_HOST and `docker -H` take it
        ("w1", "tcp://10.0.0.3:2375", "worker", True),
        ("w2", "ssh://ops@w2", "worker", False),
    ]
    assert es[0].cpus == 2 and es[0].memory == 8 * GiB


def test_a_node_without_the_label_is_named():
    with pytest.raises(EnvironmentProblem, match=f"swarm node w9 has no {ENGINE_LABEL} label"):
        read_engines(FakeManager([node("n1", "m", role="manager"), node("n9", "w9")]))


class FakeEngineAPI:
    """An engine's containers as its listing filters them by label (key, or key=value)."""

    def __init__(self, containers):
        self._containers = containers

    def containers(self, filters=None, **_listing):
        want = (filters or {}).get("label", [])
        want = [want] if isinstance(want, str) else want
        pairs = [w.partition("=") for w in want]  # (key, "=", value) or (key, "", "")

        def match(labels: dict) -> bool:
            return all(k in labels and (not eq or labels[k] == v) for k, eq, v in pairs)

        return [{"Labels": c} for c in self._containers if match(c)]


def test_engine_load_counts_range_nodes_only():
    """Agents and the lab's engine containers inherit the images' io.rangectl.managed label: they
    are no range's nodes and must not fill an engine when teams are placed."""
    from types import SimpleNamespace

    from rangectl import labels as L
    from rangectl.backend.docker import team_nodes
    from rangectl.backend.swarm import SwarmBackend
    from rangectl.plan import plan
    from rangectl.scenario.validate import load_scenario
    from tests.conftest import FIXTURES

    p = plan(load_scenario(FIXTURES / "mini-range.yaml"), 1)
    need = len(team_nodes(p.teams[0]))
    a, b = eng("a"), eng("b")
    full = a.capacity() - need + 1  # this many nodes leave no room for the team
    helpers = [{L.MANAGED: "1", "io.rangectl.agent": "x"}] * full  # not range nodes
    busy = [{L.MANAGED: "1", L.RANGE: "other", L.TEAM: "1"}] * full  # another range's nodes: they count
    a._client = SimpleNamespace(api=FakeEngineAPI(helpers))
    b._client = SimpleNamespace(api=FakeEngineAPI(busy))
    be = SwarmBackend.__new__(SwarmBackend)
    be._engines, be._where, be.spread = [a, b], {}, True
    assert be.plan_placement("mine", p) == {1: "a"}
    b._client = SimpleNamespace(api=FakeEngineAPI(helpers))  # helpers everywhere: room everywhere
    a._client = SimpleNamespace(api=FakeEngineAPI(busy))
    assert be.plan_placement("mine", p) == {1: "b"}


def test_engine_url_is_the_docker_host_form_of_any_transport():
    """What `docker -H` and Ansible's docker_host take, from docker-py's client of each transport."""
    from types import SimpleNamespace as NS

    from rangectl.backend.engine import engine_url

    assert engine_url(NS(base_url="http://10.1.2.3:2375")) == "tcp://10.1.2.3:2375"
    assert engine_url(NS(base_url="http+docker://ssh", _custom_adapter=NS(ssh_host="root@10.1.2.3:2222"))) == "ssh://root@10.1.2.3:2222"
    assert engine_url(NS(base_url="http+docker://localhost", _custom_adapter=NS(socket_path="/run/d.sock"))) == "unix:///run/d.sock"
    assert engine_url(NS(base_url="https://10.1.2.3:2376")) == "https://10.1.2.3:2376"
