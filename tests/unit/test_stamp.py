"""Stamps, the pure half (rangectl.backend.stamp): which values are per-team, how they are put
back, and when two samples are *not* the same node up to those values."""

from __future__ import annotations

import io
import tarfile

from rangectl.backend.stamp import (
    Stamp,
    StampFile,
    explain,
    leaves,
    node_inputs,
    per_team,
    sample_teams,
    substitution,
)
from rangectl.plan import plan
from rangectl.scenario.validate import load_scenario
from tests.conftest import FIXTURES

A = {"rangectl_team": 63, "rangectl_address": "10.0.63.10", "rangectl_nodes": {"portal": "10.0.63.10", "gw": "10.0.63.1"},
     "rangectl_vars": {"lookup": "tra-cuu-ab12"}, "rangectl_node": "portal", "site": "Portal"}  # fmt: skip
B = {"rangectl_team": 64, "rangectl_address": "10.0.64.10", "rangectl_nodes": {"portal": "10.0.64.10", "gw": "10.0.64.1"},
     "rangectl_vars": {"lookup": "tra-cuu-cd34"}, "rangectl_node": "portal", "site": "Portal"}  # fmt: skip


def test_leaves_flatten_every_scalar():
    assert leaves({"a": {"b": [1, None]}, "c": "x"}) == {("a", "b", 0): "1", ("a", "b", 1): "", ("c",): "x"}


def test_per_team_values_are_the_ones_the_samples_disagree_on():
    values, why = per_team([A, B], [])
    assert why is None
    assert values == {
        ("rangectl_team",): ["63", "64"],
        ("rangectl_address",): ["10.0.63.10", "10.0.64.10"],
        ("rangectl_nodes", "portal"): ["10.0.63.10", "10.0.64.10"],
        ("rangectl_nodes", "gw"): ["10.0.63.1", "10.0.64.1"],
        ("rangectl_vars", "lookup"): ["tra-cuu-ab12", "tra-cuu-cd34"],
    }


def test_a_value_the_teams_disagree_on_but_the_samples_share_is_refused():
    team = {**A, "site": "Other portal"}
    _v, why = per_team([A, B], [team])
    assert why == "site differs between teams but not between the samples"


def test_one_sample_value_for_two_quantities_is_refused():
    # the address and the lookup happen to be the same text in sample A, but not for a real team
    a = {**A, "rangectl_vars": {"lookup": "10.0.63.10"}}
    b = {**B, "rangectl_vars": {"lookup": "10.0.64.10"}}
    team = {**A, "rangectl_vars": {"lookup": "x-1"}}
    _v, why = per_team([a, b], [team])
    assert why is not None and "stands for both" in why
    # the same quantity under two names (the node's address and its entry in rangectl_nodes) is fine
    assert per_team([A, B], [A])[1] is None
    _v, why = per_team([{**A, "k": ""}, {**B, "k": "x"}], [])
    assert why == "k is empty in a sample"


def test_substitution_replaces_whole_tokens_only():
    sub = substitution({"10.0.63.1": "172.16.5.1", "10.0.63.10": "172.16.5.10", "63": "7"})
    text = "gw 10.0.63.1 portal 10.0.63.10 net 10.0.63.100 team 63 port 6379 v1.63 x63"
    assert sub(text) == "gw 172.16.5.1 portal 172.16.5.10 net 10.0.63.100 team 7 port 6379 v1.63 x63"
    assert substitution({})("same") == "same"
    # a drawn label stands inside a domain name: replaced wherever it stands (bank-phish's dns)
    words = substitution({"xacthuc-ab12": "xacthuc-zz99", "10.0.63.7": "10.0.7.7"})
    assert words("10.0.63.7 xacthuc-ab12.test www.xacthuc-ab12.test") == "10.0.7.7 xacthuc-zz99.test www.xacthuc-zz99.test"


def test_explain_accepts_files_that_differ_only_by_the_values():
    values, _ = per_team([A, B], [])
    a = {"/srv/www/index.html": b'<a href="/tra-cuu-ab12">lookup</a> at 10.0.63.10'}
    b = {"/srv/www/index.html": b'<a href="/tra-cuu-cd34">lookup</a> at 10.0.64.10'}
    assert explain(a, b, values) is None
    # a timestamp (or anything else) that differs too: not the same node
    b2 = {"/srv/www/index.html": b'<a href="/tra-cuu-cd34">lookup</a> at 10.0.64.10 12:00:01'}
    assert "by more than the team's values" in explain(a, b2, values)
    # binary files that differ cannot be rendered
    assert "is not text" in explain({"/db": b"\xff\x00a"}, {"/db": b"\xff\x00b"}, values)


def test_a_stamp_renders_the_teams_own_values():
    values, _ = per_team([A, B], [])
    stamp = Stamp("portal", "k" * 64, "sha256:1", "rangectl/stamp:kkkk",
                  {".".join(map(str, p)): v for p, v in values.items()}, {".".join(map(str, p)): list(p) for p in values},
                  [StampFile("/srv/www/index.html", "lookup /tra-cuu-ab12 at 10.0.63.10 team 63", 0o644, 0, 0)])  # fmt: skip
    team7 = {**A, "rangectl_team": 7, "rangectl_address": "10.0.7.10", "rangectl_nodes": {"portal": "10.0.7.10", "gw": "10.0.7.1"},
             "rangectl_vars": {"lookup": "tra-cuu-zz99"}}  # fmt: skip
    out = stamp.render(team7)
    assert out == {"/srv/www/index.html": (b"lookup /tra-cuu-zz99 at 10.0.7.10 team 7", 0o644, 0, 0)}
    with tarfile.open(fileobj=io.BytesIO(stamp.tar(team7))) as tf:
        m = tf.next()
        assert m.name == "srv/www/index.html" and m.mode == 0o644 and tf.extractfile(m).read().endswith(b"team 7")
    assert Stamp.from_json(stamp.to_json()) == stamp


def test_samples_come_from_a_large_plan_and_differ_in_every_per_team_input():
    sc = load_scenario(FIXTURES / "mini-range.yaml")
    s = sample_teams(sc)
    assert [t.team for t in s] == [63, 64]
    hv = [node_inputs(f"rangectl-stamp-{x}", sc, t, "portal") for x, t in zip("ab", s, strict=True)]
    teams = [node_inputs("mini", sc, t, "portal") for t in plan(sc, 3, "seed").teams]
    values, why = per_team(hv, teams)
    assert why is None
    assert ("rangectl_address",) in values and ("rangectl_range",) in values and ("rangectl_team",) in values
    assert ("stamp_text",) not in values  # the same for every team: in the stamp as it is


# --- when `up` samples: make_stamps(sample=...) and ranges.up's auto rule ---------------------------


class _Api:
    """inspect_image of a fake engine: every image (and stamp) exists with a fixed id."""

    def __init__(self, ids: dict[str, str] | None = None):
        self.ids = ids or {}

    def inspect_image(self, ref: str) -> dict[str, str]:
        return {"Id": self.ids.get(ref, "sha256:" + ref)}


class _Be:
    def __init__(self, api: _Api):
        self.api = api


def _mini():
    sc = load_scenario(FIXTURES / "mini-range.yaml")
    return sc, FIXTURES / "mini-range.yaml"


def _made(monkeypatch) -> list[list[str]]:
    """Record what make_stamps would sample (``_make`` runs the template containers)."""
    from rangectl.backend import stamp as S

    made: list[list[str]] = []

    def fake_make(be, scenario, images, scenario_file, trust, note, todo, workdir):
        made.append(sorted(t[0] for t in todo))
        return {t[0]: S.Verdict(t[0], t[4], False, "sampled") for t in todo}

    monkeypatch.setattr(S, "_make", fake_make)
    return made


def test_without_sample_an_uncached_node_is_not_sampled_nor_cached(monkeypatch):
    from rangectl.backend import stamp as S

    made = _made(monkeypatch)
    sc, f = _mini()
    images = {n.image: n.image for n in sc.nodes.values()}
    out = S.make_stamps(_Be(_Api()), "mini", sc, plan(sc, 2, "seed"), images, f, sample=False)
    provisioned = sorted(n for n, node in sc.nodes.items() if node.provision)
    assert provisioned and sorted(out) == provisioned
    assert made == []  # no template container
    for v in out.values():
        assert not v.ok and v.reason.startswith("not sampled for 2 team(s)") and f"from {S.STAMP_MIN_TEAMS} teams" in v.reason
    assert not list(S.cache_dir().glob("*.json"))  # nothing cached: a larger range samples later
    # with sample (the default) the same nodes go to the templates
    out = S.make_stamps(_Be(_Api()), "mini", sc, plan(sc, 2, "seed"), images, f)
    assert made == [provisioned] and all(v.reason == "sampled" for v in out.values())


def test_without_sample_a_cached_verdict_is_still_used(monkeypatch):
    from rangectl.backend import stamp as S

    made = _made(monkeypatch)
    sc, f = _mini()
    images = {n.image: n.image for n in sc.nodes.values()}
    p = plan(sc, 2, "seed")
    first = S.make_stamps(_Be(_Api()), "mini", sc, p, images, f, sample=False)
    node = sorted(first)[0]
    S._save(S.Verdict(node, first[node].key, False, "a timestamp in /etc/x"))  # as a 40-team up leaves it
    out = S.make_stamps(_Be(_Api()), "mini", sc, p, images, f, sample=False)
    assert made == [] and out[node].reason == "a timestamp in /etc/x"
    assert all(v.reason.startswith("not sampled") for n, v in out.items() if n != node)


def test_up_samples_from_three_teams_unless_told(monkeypatch, tmp_path):
    """ranges.up's auto rule: 1-2 teams use cached stamps only, 3 teams on sample; RANGECTL_STAMP=1
    (or stamp=True) samples for 2 teams, RANGECTL_STAMP=0 (stamp=False) never asks for stamps."""
    from rangectl import ranges
    from rangectl.backend.memory import register_memory
    from rangectl.backend.stamp import STAMP_MIN_TEAMS

    asked: list[bool] = []

    def fake_stamps(range_name, scenario, plan_, images, scenario_file, trust=False, note=None, workdir=None,
                    sample=True):  # fmt: skip
        asked.append(sample)
        return {}

    monkeypatch.setattr(register_memory(), "make_stamps", fake_stamps)
    monkeypatch.setenv("RANGECTL_ENGINE", "memory")
    scen = FIXTURES / "mini-range.yaml"

    def up(teams: int, **kw) -> list[bool]:
        asked.clear()
        ranges.up(scen, teams=teams, name=f"auto{teams}", provision=True, **kw)
        ranges.down(f"auto{teams}")
        return list(asked)

    monkeypatch.setattr(ranges, "run_provision", lambda *a, **k: _Ok())
    assert STAMP_MIN_TEAMS == 3
    assert up(2) == [False] and up(1) == [False]
    assert up(3) == [True]
    assert up(2, stamp=True) == [True] and up(2, stamp=False) == []
    monkeypatch.setenv("RANGECTL_STAMP", "1")
    assert up(2) == [True]
    monkeypatch.setenv("RANGECTL_STAMP", "0")
    assert up(3) == []


class _Ok:
    ok = True
    hosts = 0
    retried: list[str] = []

    def as_dict(self):
        return {"ok": True}
