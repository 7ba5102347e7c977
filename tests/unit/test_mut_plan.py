"""The plan's lookups and its JSON, one behaviour per test (written against surviving mutants)."""

from __future__ import annotations

import pytest

from rangectl.plan import plan
from rangectl.scenario.validate import load_scenario
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def p2():
    return plan(load_scenario(ROOT / "scenarios" / "ward-portal-probe.yaml"), 2)


def test_lookups_of_unknown_names_say_which_name(p2):
    t1 = p2.team(1)
    for lookup, name in ((t1.node, "ghost"), (t1.network, "nowhere"), (p2.team, 9)):
        with pytest.raises(KeyError) as e:
            lookup(name)
        assert e.value.args == (name,)
