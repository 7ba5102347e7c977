"""Per-team variables: deterministic, distinct per team, bounded patterns."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rangectl.scenario.variables import (
    Variable,
    VariableError,
    check_pattern,
    draw,
    references,
    substitute,
)

SHELL = Variable(pattern=r"[a-z]{6}\.php")
DOMAIN = Variable(choices=["cdn-sync.net", "img-cache.org", "static-hub.com", "edge-fonts.io"])
PORT = Variable.model_validate({"range": [4000, 4999]})
VARS = {"shell": SHELL, "exfil_domain": DOMAIN, "beacon_port": PORT}


def test_same_seed_same_values_other_seed_other_values():
    a = draw(VARS, "seed-1", range(1, 4))
    assert a == draw(VARS, "seed-1", range(1, 4))
    b = draw(VARS, "seed-2", range(1, 4))
    assert a != b


def test_values_match_their_declaration():
    vals = draw(VARS, "s", range(1, 5))
    for team in range(1, 5):
        assert re.fullmatch(r"[a-z]{6}\.php", vals[team]["shell"])
        assert vals[team]["exfil_domain"] in DOMAIN.choices
        assert 4000 <= int(vals[team]["beacon_port"]) <= 4999


def test_every_team_gets_its_own_value_of_every_variable():
    vals = draw(VARS, "s", range(1, 5))
    for name in VARS:
        assert len({vals[t][name] for t in vals}) == 4, name


def test_a_teams_values_do_not_depend_on_how_many_teams_there_are():
    small = draw(VARS, "seed", [1, 2, 3])
    big = draw(VARS, "seed", range(1, 5))
    for team in (1, 2, 3):
        assert small[team] == big[team]


def test_variables_are_drawn_independently_of_each_other():
    """Adding a variable does not change the values of the others."""
    one = draw({"shell": SHELL}, "seed", [1, 2])
    both = draw({"shell": SHELL, "aaa": Variable(pattern="[0-9]{8}")}, "seed", [1, 2])
    assert one[1]["shell"] == both[1]["shell"] and one[2]["shell"] == both[2]["shell"]


def test_too_few_choices_for_the_teams_is_refused():
    with pytest.raises(VariableError, match="4 possible value.*5 teams"):
        draw({"d": DOMAIN}, "s", range(1, 6))


def test_a_range_too_narrow_is_refused():
    with pytest.raises(VariableError, match="2 possible"):
        draw({"p": Variable.model_validate({"range": [1, 2]})}, "s", [1, 2, 3])


def test_a_pattern_too_small_is_refused_after_bounded_tries():
    with pytest.raises(VariableError, match="could not draw 3 different values"):
        draw({"x": Variable(pattern="[ab]")}, "s", [1, 2, 3])


def test_a_pattern_with_exactly_enough_values_is_dealt_out():
    vals = draw({"x": Variable(pattern="[ab]")}, "s", [1, 2])
    assert {vals[1]["x"], vals[2]["x"]} == {"a", "b"}


@pytest.mark.parametrize(
    "pattern, why",
    [
        ("[a-z]+", "without a bound"),
        ("[a-z]*", "without a bound"),
        ("x{2,}", "without a bound"),
        ("^abc", "anchors"),
        ("(?=a)a", "look-arounds"),
        (r"(a)\1", "back-references"),
        ("a.b", "'.'"),
        ("[a-z", "does not compile"),
        ("[a-z]{65}", "longer than 64"),
    ],
)
def test_undrawable_patterns_are_refused(pattern, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        check_pattern(pattern)


def test_a_bounded_pattern_with_groups_and_alternation_is_accepted():
    check_pattern(r"(cdn|img)-[a-z0-9]{4}\.(net|org)")
    vals = draw({"d": Variable(pattern=r"(cdn|img)-[a-z0-9]{4}\.(net|org)")}, "s", [1, 2, 3])
    assert all(re.fullmatch(r"(cdn|img)-[a-z0-9]{4}\.(net|org)", v["d"]) for v in vals.values())


@pytest.mark.parametrize(
    "data, msg",
    [
        ({}, "exactly one of"),
        ({"choices": ["a"], "pattern": "[a-z]{3}"}, "exactly one of"),
        ({"choices": ["a", "b", "a"]}, "choices repeat a"),
        ({"range": [9, 1]}, "low bound is above"),
        ({"choices": []}, "at least 1"),
        ({"pattern": "[a-z]+"}, "without a bound"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_declarations_are_refused(data, msg):
    with pytest.raises(ValidationError, match=msg):
        Variable.model_validate(data)


def test_references_and_substitution():
    text = "Remove {var:shell} and block {var:exfil_domain}; {ip:attacker} stays"
    assert references(text) == ["shell", "exfil_domain"]
    assert substitute(text, {"shell": "abc.php", "exfil_domain": "x.net"}) == (
        "Remove abc.php and block x.net; {ip:attacker} stays"
    )


def test_substituting_an_unknown_variable_names_it():
    with pytest.raises(KeyError, match="unknown variable 'nope'"):
        substitute("see {var:nope}", {"shell": "a"})


@settings(max_examples=50, deadline=None)
@given(seed=st.text(min_size=1, max_size=20), teams=st.integers(min_value=1, max_value=4))
def test_any_seed_gives_distinct_valid_values(seed, teams):
    vals = draw(VARS, seed, range(1, teams + 1))
    assert set(vals) == set(range(1, teams + 1))
    for name in VARS:
        assert len({vals[t][name] for t in vals}) == teams
