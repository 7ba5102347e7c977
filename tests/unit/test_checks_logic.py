"""The decision logic of `blocked` checks (the probes themselves run in the Docker tests)."""

from __future__ import annotations

import pytest

from rangectl.drill import checks
from rangectl.scenario.model import Check
from rangectl.scenario.validate import load_scenario
from tests.conftest import FIXTURES

SC = load_scenario(FIXTURES / "mini-range.yaml")


def _run(monkeypatch, reach: dict[tuple[str, str], bool], **blocked):
    def flow(v, src, dst, proto, port, timeout):
        return reach[(src, dst)], f"{src}->{dst}"

    monkeypatch.setattr(checks, "_flow", flow)
    spec = {"from": "scanner", "to": "portal", "port": 80, **blocked}
    return checks.run_check(SC, Check.model_validate({"blocked": spec}), v=None)


@pytest.mark.parametrize(
    "reach,extra,passed,why",
    [
        ({("scanner", "portal"): True}, {}, False, "not blocked"),
        ({("scanner", "portal"): False, ("probe", "portal"): True}, {}, True, "blocked"),
        ({("scanner", "portal"): False, ("probe", "portal"): False}, {}, False, "an outage is not a block"),
        ({("scanner", "portal"): False, ("gw", "portal"): True}, {"control": "gw"}, True, "blocked"),
        ({("scanner", "portal"): False, ("gw", "portal"): False}, {"control": "gw"}, False, "down for gw"),
        ({("scanner", "portal"): False}, {"outage_ok": True}, True, "blocked"),
    ],
)
def test_blocked(monkeypatch, reach, extra, passed, why):
    res = _run(monkeypatch, reach, **extra)
    assert res.passed is passed and why in res.detail
