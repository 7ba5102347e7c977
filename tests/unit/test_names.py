"""Range resource names (rangectl/backend/docker.py): no two ranges can share a network or a
container name, and an existing network is adopted only when its labels say it is this range's.

Finding 6 of issue 16: ``rc-<range>-t<team>-<net>`` made range ``lab``'s network ``t2-dmz``
of team 1 and range ``lab-t1``'s network ``dmz`` of team 2 the same name.
"""

from __future__ import annotations

import re
import time
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rangectl import labels as L
from rangectl.backend.docker import (
    DockerBackend,
    bridge_name,
    container_name,
    foreign_network,
    net_name,
    team_nodes,
)
from rangectl.backend.hostops import Host
from rangectl.errors import RangeError
from rangectl.plan import NetworkPlan, plan
from rangectl.scenario.model import NAME
from rangectl.scenario.validate import load_scenario
from rangectl.scenario.vantage import PROBE
from rangectl.state import RANGE_NAME
from tests.conftest import FIXTURES

RANGES = st.from_regex(RANGE_NAME, fullmatch=True)
NAMES = st.one_of(st.from_regex(re.compile(NAME), fullmatch=True), st.just(PROBE))
TEAMS = st.integers(1, 64)
TRIPLES = st.tuples(RANGES, TEAMS, NAMES)
SETTINGS = settings(max_examples=400, deadline=None)


def old_name(range_name: str, team: int, net: str) -> str:
    """The scheme the finding broke (kept here to show the test attacks it)."""
    return f"rc-{range_name}-t{team}-{net}"


def test_the_findings_names_no_longer_collide():
    a = ("lab", 1, "t2-dmz")
    b = ("lab-t1", 2, "dmz")
    assert old_name(*a) == old_name(*b)  # the finding, reproduced
    assert net_name(*a) != net_name(*b)
    assert container_name(*a) != container_name(*b)
    assert bridge_name(*a) != bridge_name(*b)


@pytest.mark.parametrize("fn", [net_name, container_name])
@SETTINGS
@given(t=TRIPLES)
def test_names_read_back_one_way(fn, t):
    """A name splits back into exactly its (range, team, name): so the map is injective."""
    r, team, n = t
    name = fn(r, team, n)
    assert name.startswith("rc-")
    parts = name[3:].split(".")
    assert parts == [r, f"t{team}", n]
    # Docker's rule for container names (networks accept the same)
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", name)


@st.composite
def pairs(draw):
    """Two triples: independent, or the same text with ``-t<k>`` moved between range and name
    (how the old ``rc-<range>-t<team>-<net>`` made two ranges share a name)."""
    a = draw(TRIPLES)
    if draw(st.booleans()):
        return a, draw(TRIPLES)
    r, t, n = a
    k = draw(TEAMS)
    shifted = ((r, t, f"t{k}-{n}"), (f"{r}-t{t}", k, n))
    if RANGE_NAME.match(shifted[1][0]) and re.match(NAME, shifted[0][2]):
        return shifted
    return a, a


@SETTINGS
@given(ab=pairs())
def test_names_are_injective(ab):
    a, b = ab
    assert (net_name(*a) == net_name(*b)) == (a == b)
    assert (container_name(*a) == container_name(*b)) == (a == b)
    assert (bridge_name(*a) == bridge_name(*b)) == (a == b)


@SETTINGS
@given(t=TRIPLES)
def test_bridge_names_fit_linux(t):
    b = bridge_name(*t)
    assert len(b) <= 15 and re.fullmatch(r"rc-[0-9a-f]{12}", b)


@given(r=RANGES, team=TEAMS)
@settings(max_examples=100, deadline=None)
def test_tricky_prefixes_stay_apart(r, team):
    """Range ``r`` team ``team`` against range ``r-t<team>`` and friends, shifted every way."""
    cands = [
        (r, team, f"t{team + 1}-dmz"),
        (f"{r}-t{team}"[:41], team + 1, "dmz"),
        (r, team, "dmz"),
        (f"{r}-t{team}-t{team + 1}"[:41], 1, "dmz"),
        (r[:-1] or "x", team, f"{r[-1]}-dmz"),
    ]
    names = [net_name(*c) for c in cands if RANGE_NAME.match(c[0])]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("bad", ["a.b", "", "a/b"])
def test_a_part_with_the_separator_is_refused(bad):
    with pytest.raises(ValueError):
        net_name(bad, 1, "dmz")
    with pytest.raises(ValueError):
        container_name("lab", 1, bad)


# --- adoption by labels ------------------------------------------------------------------------

NET = NetworkPlan("dmz", IPv4Network("10.231.3.0/24"), IPv4Address("10.231.3.254"))


def info(labels: dict | None, subnet: str = "10.231.3.0/24", internal: bool = True, name: str = "x") -> dict:
    return {
        "Name": name,
        "Id": name,
        "Labels": labels,
        "Internal": internal,
        "IPAM": {"Config": [{"Subnet": subnet}]},
    }


def labels(rng: str = "lab", team: int = 1, net: str = "dmz") -> dict:
    return {L.MANAGED: "1", L.RANGE: rng, L.TEAM: str(team), L.NETWORK: net}


def test_foreign_network_reasons():
    assert foreign_network(info(labels()), "lab", 1, NET) is None
    assert "not a rangectl network" in foreign_network(info(None), "lab", 1, NET)
    assert "not a rangectl network" in foreign_network(info({"com.example": "1"}), "lab", 1, NET)
    why = foreign_network(info(labels("lab-t1", 2, "dmz")), "lab", 1, NET)
    assert "belongs to range 'lab-t1' team 2" in why and L.RANGE in why and L.TEAM in why
    why = foreign_network(info(labels("lab", 1, "t2-dmz")), "lab", 1, NET)
    assert "network 't2-dmz'" in why and L.NETWORK in why
    assert "not the planned 10.231.3.0/24" in foreign_network(info(labels(), "10.9.9.0/24"), "lab", 1, NET)
    assert "not --internal" in foreign_network(info(labels(), internal=False), "lab", 1, NET)


class FakeAPI:
    """The two listings the pre-flight checks make, over a fixed set of resources."""

    def __init__(self, networks: list[dict], containers: dict[str, dict] | None = None):
        self._networks = networks
        self._containers = containers or {}

    def networks(self, filters=None):
        return self._networks

    def containers(self, all=False, filters=None):
        # the listing's shape (names with their '/', labels at the top), from inspect-shaped data
        return [{"Names": [f"/{n}"], "Labels": c["Config"]["Labels"]} for n, c in self._containers.items()]


def backend(api: FakeAPI) -> DockerBackend:
    be = DockerBackend.__new__(DockerBackend)
    be.api = api
    be.host = Host()  # any host-level call would fail: these tests make none
    return be


MINI = load_scenario(FIXTURES / "mini-range.yaml")


def test_preflight_refuses_a_network_of_the_planned_name_that_is_not_ours():
    p = plan(MINI, 1)
    name = net_name("lab", 1, "dmz")
    stranger = info(None, "10.231.3.0/24", name=name)  # same name and subnet, no labels
    be = backend(FakeAPI([stranger]))
    with pytest.raises(RangeError, match=r"network 'rc-lab\.t1\.dmz' exists but is not a rangectl network"):
        be.check_names_free("lab", p)
    # and the subnet check no longer skips it for its name alone
    with pytest.raises(RangeError, match="clashes with Docker network"):
        be.check_subnets("lab", p)


def test_preflight_adopts_only_its_own_network():
    p = plan(MINI, 1)
    ours = [
        info(labels("lab", 1, n.name), str(n.subnet), name=net_name("lab", 1, n.name))
        for n in p.team(1).networks
    ]
    be = backend(FakeAPI(ours))
    be.check_names_free("lab", p)
    be.check_subnets("lab", p)
    # the same networks seen from another range: clashes, whatever the names
    with pytest.raises(RangeError, match="clashes with Docker network 'rc-lab.t1"):
        be.check_subnets("lab-t1", p)


def test_preflight_refuses_a_container_of_another_team_or_node():
    p = plan(MINI, 2)
    name = container_name("lab", 2, "soc")
    wrong = {"Config": {"Labels": {L.MANAGED: "1", L.RANGE: "lab", L.TEAM: "1", L.NODE: "soc"}}}
    with pytest.raises(RangeError, match="is not node 'soc' of team 2"):
        backend(FakeAPI([], {name: wrong})).check_names_free("lab", p)
    right = {"Config": {"Labels": {L.MANAGED: "1", L.RANGE: "lab", L.TEAM: "2", L.NODE: "soc"}}}
    backend(FakeAPI([], {name: right})).check_names_free("lab", p)


def test_the_probe_container_is_checked_too():
    p = plan(MINI, 1)
    assert [n.name for n in team_nodes(p.team(1))][-1] == PROBE
    name = container_name("lab", 1, PROBE)
    squatter = {"Config": {"Labels": {}}}
    with pytest.raises(RangeError, match=f"'{re.escape(name)}' exists and is not node '{PROBE}'"):
        backend(FakeAPI([], {name: squatter})).check_names_free("lab", p)


# --- host forwarding rules: `down` removes exactly the range's -----------------------------------


@pytest.mark.parametrize(
    "range_name, part, removed",
    [
        ("lab", None, {"rangectl:lab", "rangectl:lab:probe-t1", "rangectl:lab:probe-t2"}),
        ("lab", "probe-t1", {"rangectl:lab:probe-t1"}),
        ("lab-t1", None, {"rangectl:lab-t1", "rangectl:lab-t1:probe-t1"}),
        (
            None,
            None,
            {
                "rangectl:lab",
                "rangectl:lab:probe-t1",
                "rangectl:lab:probe-t2",
                "rangectl:lab-t1",
                "rangectl:lab-t1:probe-t1",
            },
        ),
    ],
)
def test_bridge_rules_of_a_range_and_of_its_probes(range_name, part, removed):
    from rangectl.backend import docker as d

    comments = [
        "rangectl:lab",
        "rangectl:lab:probe-t1",
        "rangectl:lab:probe-t2",
        "rangectl:lab-t1",
        "rangectl:lab-t1:probe-t1",
        "someone-else",
    ]
    listing = (
        "-N DOCKER-USER\n"
        + "".join(
            f'-A DOCKER-USER -i br{i} -o br{i} -m comment --comment "{c}" -j ACCEPT\n'
            for i, c in enumerate(comments)
        )
        + "-A DOCKER-USER -j RETURN\n"
    )
    deleted = []

    class Done:
        def __init__(self, out=""):
            self.stdout, self.returncode = out, 0

    class FakeHost(Host):
        def iptables(self, *args):
            assert args == ("-S", "DOCKER-USER")
            return Done(listing)

        def iptables_batch(self, rules):  # one iptables-restore: every deletion in it
            for r in rules:
                assert r[0] == "-D"
                deleted.append(r[r.index("--comment") + 1])
            return Done()

    assert d.remove_bridge_rules(range_name, part, FakeHost()) == len(removed)
    assert sorted(deleted) == sorted(removed)


# --- down: a team's networks go as soon as its containers are gone -------------------------------


class DownAPI:
    """The calls `down` makes, over 3 teams of 3 containers and 2 networks; records their order."""

    def __init__(self):
        self.calls: list[str] = []
        lab = lambda team: {L.MANAGED: "1", L.RANGE: "lab", L.TEAM: str(team)}  # noqa: E731
        self._containers = [
            {"Id": f"c{t}{x}", "Names": [f"/rc-lab.t{t}.{x}"], "Labels": lab(t)} for t in (3, 1, 2) for x in "abc"
        ]
        self._networks = [{"Id": f"n{t}{x}", "Name": f"rc-lab.t{t}.{x}", "Labels": lab(t)} for t in (2, 3, 1) for x in "xy"]

    def containers(self, all=False, filters=None):
        return list(self._containers)

    def networks(self, filters=None):
        return list(self._networks)

    def remove_container(self, cid, force=False, v=False):
        assert force and v
        self.calls.append(cid)

    def remove_network(self, nid):
        self.calls.append(nid)


def test_down_removes_each_teams_networks_once_its_containers_are_gone(monkeypatch):
    from rangectl.backend import docker as d

    monkeypatch.setattr(d, "WORKERS", 1)  # one call at a time: the order is the schedule
    monkeypatch.setattr(d, "remove_bridge_rules", lambda range_name, host=None: 0)
    api = DownAPI()
    seen: list[tuple[str, str]] = []
    assert backend(api).down("lab", lambda phase, item: seen.append((phase, item))) == (9, 6)
    assert api.calls == [
        "c1a", "c1b", "c1c", "n1x", "n1y",
        "c2a", "c2b", "c2c", "n2x", "n2y",
        "c3a", "c3b", "c3c", "n3x", "n3y",
    ]  # fmt: skip
    assert sorted(seen) == sorted([("container", f"rc-lab.t{t}.{x}") for t in (1, 2, 3) for x in "abc"]
                                  + [("network", f"rc-lab.t{t}.{x}") for t in (1, 2, 3) for x in "xy"])  # fmt: skip


def test_every_range_filter_needs_a_range_label():
    """Containers made from rangectl's images inherit their io.rangectl.managed label (the cluster
    lab's engines, an engine's agent): `ls` and `down --all` must not take them for a range's."""
    from rangectl.backend.docker import range_filter

    assert range_filter(None) == {"label": [f"{L.MANAGED}=1", L.RANGE]}
    assert range_filter("lab") == {"label": [f"{L.MANAGED}=1", f"{L.RANGE}=lab"]}


class StaleEndpointAPI(DownAPI):
    """An engine that kept a stale endpoint of a removed container on a team network: removing
    the network fails ("has active endpoints") until the endpoint is deleted, which only a forced
    disconnect naming the endpoint's container name does (the container itself is gone)."""

    def __init__(self, listed: bool):
        super().__init__()
        self.stale = {"n1x": "rc-lab.t1.a"}  # network id -> the endpoint's (container) name
        self.listed = listed  # does the network's inspect list the endpoint?

    def remove_network(self, nid):
        from docker.errors import APIError

        if nid in self.stale:
            raise APIError("conflict", explanation=f"network {nid} has active endpoints")
        self.calls.append(nid)

    def inspect_network(self, nid):
        name = self.stale.get(nid)
        return {"Containers": {"ep-5f3a": {"Name": name, "EndpointID": "5f3a"}} if name and self.listed else {}}

    def disconnect_container_from_network(self, container, net, force=False):
        from docker.errors import APIError

        if force and self.stale.get(net) == container:
            del self.stale[net]
            return
        raise APIError("not found", explanation=f"No such container: {container}")


@pytest.mark.parametrize("listed", [True, False])
def test_down_deletes_a_stale_endpoint_by_its_name(monkeypatch, listed):
    from rangectl.backend import docker as d

    monkeypatch.setattr(d, "NETWORK_REMOVE_SECONDS", 1.0)
    monkeypatch.setattr(d, "remove_bridge_rules", lambda range_name, host=None: 0)
    api = StaleEndpointAPI(listed)
    assert backend(api).down("lab") == (9, 6)
    assert not api.stale and "n1x" in api.calls


# --- one endpoint change at a time per team (Docker 20.10's endpoint counter race) ---------------


class Overlap:
    """Counts the calls in flight, overall and per team; each call lasts a little while."""

    def __init__(self):
        import threading

        self.guard = threading.Lock()
        self.now: dict[str, int] = {}
        self.most_per_team = 0
        self.most = 0

    def during(self, team: str, seconds: float = 0.05) -> None:
        with self.guard:
            self.now[team] = self.now.get(team, 0) + 1
            self.most_per_team = max(self.most_per_team, self.now[team])
            self.most = max(self.most, sum(self.now.values()))
        time.sleep(seconds)
        with self.guard:
            self.now[team] -= 1


class ParallelDownAPI(DownAPI):
    def __init__(self):
        super().__init__()
        self.base_url = "http+docker://fake"
        self.overlap = Overlap()

    def remove_container(self, cid, force=False, v=False):
        self.overlap.during(cid[1])  # "c<team><x>"
        super().remove_container(cid, force, v)


def test_down_removes_one_container_per_team_at_a_time_and_teams_in_parallel(monkeypatch):
    from rangectl.backend import docker as d

    monkeypatch.setattr(d, "WORKERS", 8)
    monkeypatch.setattr(d, "remove_bridge_rules", lambda range_name, host=None: 0)
    api = ParallelDownAPI()
    assert backend(api).down("lab") == (9, 6)
    assert api.overlap.most_per_team == 1  # a team's endpoints dropped one container at a time
    assert api.overlap.most == 3  # the three teams at once
    for t in (1, 2, 3):  # each team's networks after all its containers
        assert max(api.calls.index(f"c{t}{x}") for x in "abc") < min(api.calls.index(f"n{t}{x}") for x in "xy")


def test_round_robin_interleaves_the_teams():
    from rangectl.backend.docker import round_robin

    assert round_robin([[1, 2, 3], ["a"], [], ["x", "y"]]) == [1, "a", "x", 2, "y", 3]


def test_up_starts_one_node_per_team_at_a_time(monkeypatch):
    """`_ensure_container` called for every node at once, as `up`'s pool does: a team's starts
    (which make its endpoints) never overlap, two teams' do."""
    import docker as docker_sdk

    from rangectl.backend.base import UpResult

    overlap = Overlap()

    class StartAPI(docker_sdk.APIClient):
        def __init__(self):
            super().__init__(base_url="unix:///nonexistent.sock", version="1.41")

        def create_container(self, image, name=None, **kw):
            return {"Id": name}

        def connect_container_to_network(self, container, net_id, **kw):
            pass

        def start(self, container):
            overlap.during(container.split(".")[1])  # rc-lab.t<team>.<node>

    be = backend(StartAPI())
    p = plan(MINI, 2)
    nets = {(t.team, n.name): f"net-{t.team}-{n.name}" for t in p.teams for n in t.networks}
    routes: list = []
    monkeypatch.setattr(DockerBackend, "pid", lambda self, cid: 1)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        jobs = [
            pool.submit(be._ensure_container, "lab", t, n, {}, "img", nets, {}, UpResult(), None, routes)
            for t in p.teams
            for n in team_nodes(t)
        ]
        for j in jobs:
            j.result()
    assert len(routes) == sum(len(team_nodes(t)) for t in p.teams)
    assert overlap.most_per_team == 1
    assert overlap.most == 2


class LeakedCountAPI(DownAPI):
    """Docker 20.10's leaked endpoint counter: network n1x refuses removal for good although its
    inspect lists nothing attached (``held`` lists an endpoint nobody can disconnect instead)."""

    def __init__(self, held: bool):
        super().__init__()
        self.held = held

    def remove_network(self, nid):
        from docker.errors import APIError

        if nid == "n1x":
            raise APIError("forbidden", explanation=f"network {nid} has active endpoints")
        self.calls.append(nid)

    def inspect_network(self, nid):
        return {"Containers": {"ep-1": {"Name": "someone-else"}} if self.held else {}}

    def disconnect_container_from_network(self, container, net, force=False):
        from docker.errors import APIError

        raise APIError("not found", explanation=f"No such container: {container}")


@pytest.mark.parametrize("held", [False, True])
def test_down_names_a_leaked_endpoint_count_and_says_to_restart_dockerd(monkeypatch, held):
    from rangectl.backend import docker as d

    monkeypatch.setattr(d, "NETWORK_REMOVE_SECONDS", 0.5)
    monkeypatch.setattr(d, "remove_bridge_rules", lambda range_name, host=None: 0)
    with pytest.raises(RangeError) as exc:
        backend(LeakedCountAPI(held)).down("lab")
    assert "rc-lab.t1.x is still in use after 0.5s" in exc.value.message
    if held:  # an endpoint is listed: not the counter
        assert "leaked" not in exc.value.message and "stale endpoint" in exc.value.fix
    else:
        assert "the engine's endpoint count leaked, moby#43286" in exc.value.message
        assert exc.value.fix == "restart dockerd, then `rangectl down` again"
