"""A real range on the real engine: up, reconcile, exec, isolation, provisioning, down.

Traffic in these tests only goes between containers the test created.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from rangectl import labels as L
from rangectl import ranges
from rangectl.backend.docker import container_name
from tests.conftest import FIXTURES, leftovers, rangectl_cmd, run_cli

pytestmark = pytest.mark.docker

SCENARIO = FIXTURES / "mini-range.yaml"


def _exec(client, rng: str, node: str, cmd: str, team: int = 1) -> tuple[int, str]:
    c = client.containers.get(container_name(rng, team, node))
    code, out = c.exec_run(["sh", "-c", cmd])
    return code, out.decode(errors="replace")


@pytest.fixture(scope="module")
def two_teams(docker_engine, built_images, tmp_path_factory):
    """The mini range for two teams, provisioned; removed afterwards whatever happens."""
    import os

    os.environ["RANGECTL_HOME"] = str(tmp_path_factory.mktemp("home-two-teams"))
    rng = "pytest-mini"
    try:
        rep = ranges.up(SCENARIO, teams=2, name=rng, provision=True)
        yield rng, rep
    finally:
        ranges.down(rng)
        cs, ns = leftovers(docker_engine, rng)
        assert not cs and not ns, "down left resources behind"


def test_up_creates_labelled_internal_networks_and_running_nodes(docker_engine, two_teams):
    rng, rep = two_teams
    cs, ns = leftovers(docker_engine, rng)
    assert len(cs) == 10  # 4 nodes and rangectl's probe x 2 teams
    assert all(c["State"] == "running" for c in cs)
    assert len(ns) == 4
    for n in ns:
        info = docker_engine.api.inspect_network(n["Id"])
        assert info["Internal"] is True
        assert info["Labels"][L.RANGE] == rng
        assert info["Labels"][L.SCENARIO_HASH] == rep.plan.scenario_hash
    for c in cs:
        assert {L.RANGE, L.TEAM, L.NODE, L.SCENARIO_HASH} <= set(c["Labels"])


def test_addresses_hostname_and_default_route_follow_the_plan(docker_engine, two_teams):
    rng, rep = two_teams
    for t in rep.plan.teams:
        portal = t.node("portal")
        code, out = _exec(docker_engine, rng, "portal", "hostname; ip -4 -o addr show; ip route show default", t.team)
        assert code == 0, out
        assert out.splitlines()[0] == "portal"
        assert str(portal.primary_ip) in out
        assert f"default via {portal.gateway}" in out
        code, out = _exec(docker_engine, rng, "gw", "cat /proc/sys/net/ipv4/ip_forward", t.team)
        assert out.strip() == "1"


def test_traffic_crosses_the_router_to_the_web_service(docker_engine, two_teams):
    rng, rep = two_teams
    portal_ip = rep.plan.team(1).ip_of("portal")
    code, out = _exec(docker_engine, rng, "scanner", f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 http://{portal_ip}/")
    assert code == 0 and out.strip() == "200", out


def test_teams_are_isolated(docker_engine, two_teams):
    rng, rep = two_teams
    other = rep.plan.team(2)
    for node in ("scanner", "soc", "gw"):
        for target in ("portal", "gw", "soc"):
            ip = other.ip_of(target)
            code, out = _exec(docker_engine, rng, node, f"curl -s -m 2 -o /dev/null http://{ip}/ || ping -c1 -W1 {ip}")
            assert code != 0, f"team 1 {node} reached team 2 {target} ({ip}): {out}"


def test_no_egress_route_and_no_host_address_on_range_bridges(docker_engine, two_teams):
    rng, rep = two_teams
    # Every network is internal, and the host has no address on it: nothing to route out through.
    host_addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for t in rep.plan.teams:
        for n in t.networks:
            assert str(n.bridge) not in host_addrs
    code, out = _exec(docker_engine, rng, "gw", "ip route show default")
    assert out.strip() == "", f"router has a default route: {out}"


def test_provisioning_changed_something_checkable(docker_engine, two_teams):
    rng, rep = two_teams
    assert rep.provision is not None and rep.provision.ok
    for t in (1, 2):
        code, out = _exec(docker_engine, rng, "portal", "cat /etc/rangectl-stamp", t)
        assert code == 0
        assert out.strip() == f"provisioned-by-rangectl team={t} addr={rep.plan.team(t).ip_of('portal')}"
        code, out = _exec(docker_engine, rng, "soc", "cat /etc/rangectl-stamp", t)
        assert out.startswith("stamp team=")
    code, _ = _exec(docker_engine, rng, "scanner", "test -e /etc/rangectl-stamp")
    assert code != 0  # no playbook for the scanner


def test_exec_and_status_cli(docker_engine, two_teams):
    rng, rep = two_teams
    p = run_cli("exec", rng, "soc", "--team", "2", "--", "sh", "-c", "echo hi-$RANGECTL_TEAM; exit 3")
    assert p.returncode == 3
    assert "hi-2" in p.stdout
    p = run_cli("status", rng, "--json", check=True)
    info = json.loads(p.stdout)
    assert {(n["team"], n["node"]) for n in info["nodes"]} == {
        (t, n) for t in (1, 2) for n in ("gw", "portal", "soc", "scanner", "probe")
    }
    p = run_cli("exec", rng, "ghost", "--", "true")
    assert p.returncode == 4 and "Traceback" not in p.stderr


def test_reconcile_recreates_what_is_missing_and_keeps_what_runs(docker_engine, two_teams):
    rng, rep = two_teams
    keep = docker_engine.containers.get(container_name(rng, 1, "portal")).id
    docker_engine.containers.get(container_name(rng, 2, "scanner")).remove(force=True)
    docker_engine.containers.get(container_name(rng, 1, "soc")).stop(timeout=1)
    rep2 = ranges.up(SCENARIO, teams=2, name=rng, provision=True)
    assert rep2.up.created_containers == [container_name(rng, 2, "scanner")]
    assert rep2.up.started == [container_name(rng, 1, "soc")]
    assert docker_engine.containers.get(container_name(rng, 1, "portal")).id == keep
    code, out = _exec(docker_engine, rng, "soc", "ip route show default", 1)
    assert f"default via {rep.plan.team(1).node('soc').gateway}" in out


def _variant(tmp_path, old: str, new: str):
    """A copy of the mini scenario (with its playbooks) whose DMZ subnet is moved."""
    import shutil

    shutil.copytree(FIXTURES / "playbooks", tmp_path / "playbooks")
    f = tmp_path / "mini-variant.yaml"
    f.write_text(SCENARIO.read_text().replace(old, new))
    return f


def test_up_refuses_a_clashing_subnet_without_touching_state(docker_engine, built_images, tmp_path):
    import docker

    scen = _variant(tmp_path, "10.231.3.", "10.231.20.")
    scen.write_text(scen.read_text().replace("198.18.10.", "198.18.20."))
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.231.20.0/24")])
    clash = docker_engine.api.create_network("pytest-clash", driver="bridge", internal=True, ipam=ipam)
    try:
        p = run_cli("up", str(scen), "--name", "pytest-clash-range", "--no-provision")
        assert p.returncode == 1
        assert "clashes with Docker network 'pytest-clash'" in p.stderr
        assert "Traceback" not in p.stderr
        cs, ns = leftovers(docker_engine, "pytest-clash-range")
        assert not cs and not ns
        assert "pytest-clash-range" not in run_cli("ls").stdout
    finally:
        docker_engine.api.remove_network(clash["Id"])


def test_interrupted_up_rolls_back_everything(docker_engine, built_images, tmp_path):
    """Ctrl-C while `up` is building a new range: exit 130, "rolled back", nothing left (containers,
    networks, the range's state). An `up` that ignored Ctrl-C (finished, exit 0) fails this test."""
    rng = "pytest-interrupt"
    scen = _variant(tmp_path, "198.18.10.", "198.18.40.").read_text().replace("10.231.3.", "10.231.40.")
    (tmp_path / "mini-variant.yaml").write_text(scen)
    proc = subprocess.Popen(
        # --no-stamp: the playbooks run after the containers (this range's nodes would all be
        # stamped, and then nothing runs after them), so Ctrl-C lands with work still ahead
        [*rangectl_cmd(), "up", str(tmp_path / "mini-variant.yaml"), "--teams", "3", "--name", rng, "--no-stamp"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal gives it: SIGINT's default action. Run where SIGINT is ignored (a
        # background job of a non-interactive shell, as `nohup bash -c '... .ci/run' &`), rangectl
        # would inherit the ignore, as every program does, and finish instead (3 CI runs here)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # 3 teams x 4 nodes plus Ansible on 6 of them: two containers in, most of the work is still ahead
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            cs, _ = leftovers(docker_engine, rng)
            if len(cs) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"up ended before it could be interrupted ({proc.returncode})"
        assert len(leftovers(docker_engine, rng)[0]) >= 2, "up made no containers within 120 s"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 130, (proc.returncode, out, err)
        assert "Traceback" not in err
        # a new range interrupted half-way is rolled back by up itself
        assert "rolled back" in err, err
        cs, ns = leftovers(docker_engine, rng)
        assert not cs and not ns, (cs, ns)
        assert rng not in run_cli("ls").stdout
        st = run_cli("status", rng)
        assert st.returncode == 4, (st.returncode, st.stdout, st.stderr)  # no such range: its state is gone too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        run_cli("down", rng)  # whatever happened, leave nothing behind
    cs, ns = leftovers(docker_engine, rng)
    assert not cs and not ns


def test_failed_provisioning_rolls_back_a_new_range(docker_engine, built_images, tmp_path):
    rng = "pytest-provfail"
    scen = _variant(tmp_path, "10.231.3.", "10.231.70.")
    (tmp_path / "playbooks" / "broken.yml").write_text(
        "- hosts: \"{{ rangectl_hosts | default('all') }}\"\n  gather_facts: false\n"
        "  tasks:\n    - name: fail on purpose\n      ansible.builtin.command: /bin/false\n"
    )
    scen.write_text(
        scen.read_text().replace("198.18.10.", "198.18.70.").replace("playbooks/stamp.yml]", "playbooks/broken.yml]", 1)
    )
    p = run_cli("up", str(scen), "--name", rng)
    assert p.returncode == 1
    assert "provisioning failed on" in p.stderr and "fail on purpose" in p.stderr
    assert "rolled back" in p.stderr and "Traceback" not in p.stderr
    cs, ns = leftovers(docker_engine, rng)
    assert not cs and not ns
    assert rng not in run_cli("ls").stdout


def test_down_removes_exactly_its_range(docker_engine, built_images, tmp_path):
    unrelated = docker_engine.api.create_network("pytest-unrelated", labels={L.MANAGED: "1", L.RANGE: "someone-else"})
    try:
        scen = _variant(tmp_path, "10.231.3.", "10.231.60.")
        scen.write_text(scen.read_text().replace("198.18.10.", "198.18.60."))
        run_cli("up", str(scen), "--name", "pytest-down-a", "--no-provision", check=True)
        p = run_cli("down", "pytest-down-a", check=True)
        assert "5 container(s), 2 network(s)" in p.stdout  # 4 nodes and rangectl's probe
        cs, ns = leftovers(docker_engine, "pytest-down-a")
        assert not cs and not ns
        assert docker_engine.api.inspect_network(unrelated["Id"])["Name"] == "pytest-unrelated"
        # down of a range that does not exist (or is already gone) still succeeds
        assert run_cli("down", "pytest-down-a").returncode == 0
    finally:
        docker_engine.api.remove_network(unrelated["Id"])
