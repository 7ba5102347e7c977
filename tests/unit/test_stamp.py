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
