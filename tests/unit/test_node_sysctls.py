"""Node sysctls: only the node's own network namespace, carried from the scenario to the engine."""

from __future__ import annotations

import copy
import json

import pytest
from typer.testing import CliRunner

from rangectl.backend.docker import DockerBackend
from rangectl.cli import app
from rangectl.plan import plan
from rangectl.scenario.model import Scenario
from tests.unit.test_scoring import POLICY, SCENARIO

UNPROTECTED = {"net.ipv4.tcp_syncookies": 0, "net.ipv4.tcp_max_syn_backlog": 128}


def _sc(**sysctls) -> dict:
    d = copy.deepcopy(SCENARIO)
    d["nodes"]["portal"]["sysctls"] = sysctls
    return d


def test_sysctls_reach_the_plan_and_the_engines_settings_as_strings():
    sc = Scenario.model_validate(_sc(**UNPROTECTED))
    p = plan(sc, 2)
    for t in p.teams:
        portal = t.node("portal")
        assert portal.sysctls == {"net.ipv4.tcp_syncookies": "0", "net.ipv4.tcp_max_syn_backlog": "128"}
        assert DockerBackend._sysctls(portal) == portal.sysctls
        assert portal.as_dict()["sysctls"] == portal.sysctls
    gw = p.team(1).node("gw")  # a router keeps its forwarding settings and gets none of the portal's
    assert DockerBackend._sysctls(gw)["net.ipv4.ip_forward"] == "1" and "net.ipv4.tcp_syncookies" not in DockerBackend._sysctls(gw)
    assert "sysctls" not in gw.as_dict()


def test_a_router_may_add_its_own_to_the_forwarding_settings():
    d = copy.deepcopy(SCENARIO)
    d["nodes"]["gw"]["sysctls"] = {"net.ipv4.conf.all.log_martians": 1}
    gw = plan(Scenario.model_validate(d), 1).team(1).node("gw")
    s = DockerBackend._sysctls(gw)
    assert s["net.ipv4.ip_forward"] == "1" and s["net.ipv4.conf.all.log_martians"] == "1"


@pytest.mark.parametrize("key", ["kernel.panic", "vm.swappiness", "net", "fs.file-max", "net.ipv4..x", "NET.ipv4.x"])
def test_sysctls_outside_the_nodes_network_namespace_are_refused_with_file_line_and_field(tmp_path, key):
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "test.yaml").write_text(json.dumps(POLICY))
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(_sc(**{key: 1}), indent=1))
    out = CliRunner().invoke(app, ["validate", str(f)])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert f"{f}:" in out.output and "nodes.portal.sysctls" in out.output, out.output
