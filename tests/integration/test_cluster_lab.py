"""scripts/cluster-lab.sh: the three-engine swarm lab on one machine.

The argument tests need no Docker. The lab test brings a lab up under its own
name (so a user's lab is never touched), checks the swarm, sends traffic over
an internal overlay between containers on two different engines (nothing
leaves the lab's networks), and takes it down, leaving nothing labelled.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "cluster-lab.sh"
LAB = "rangectl-labtest"
LABEL = f"io.rangectl.lab={LAB}"


def lab(*args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    e.update(env or {})
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=e,
    )


# -- arguments, without Docker -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no subcommand"),
        (["bogus"], "unknown subcommand 'bogus'"),
        (["--engines", "0", "up"], "between 1 and 9"),
        (["--engines", "10", "up"], "between 1 and 9"),
        (["--engines", "two", "up"], "whole number"),
        (["--engines"], "needs a value"),
        (["--name", "Bad Name", "up"], "--name must be"),
        (["--subnet", "10.0.0.0", "up"], "--subnet must be"),
        (["--frobnicate", "up"], "unknown option"),
        (["up", "extra"], "takes no arguments"),
        (["load"], "needs at least one IMAGE"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line(args, message):
    r = lab(*args, timeout=30, env={"PATH": "/usr/bin:/bin"})  # no docker needed to refuse them
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert message in r.stderr.splitlines()[0]
    assert r.stderr.splitlines()[1].startswith("usage:")


def test_help_exits_0():
    r = lab("--help", timeout=30)
    assert r.returncode == 0
    assert "up" in r.stdout and "--engines N" in r.stdout and "io.rangectl.lab" in r.stdout


def test_no_docker_cli_is_an_environment_problem(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "dirname", "sed"):
        (bindir / tool).symlink_to(
            f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else f"/bin/{tool}"
        )
    r = lab("status", timeout=30, env={"PATH": str(bindir)})
    assert r.returncode == 3, r.stderr
    assert "docker CLI is not installed" in r.stderr


# -- the lab on the real engine ----------------------------------------------------------------


def _labelled(client) -> list[str]:
    flt = {"label": LABEL}
    out = [f"container {c['Names'][0]}" for c in client.api.containers(all=True, filters=flt)]
    out += [f"volume {v['Name']}" for v in (client.api.volumes(filters=flt).get("Volumes") or [])]
    out += [f"network {n['Name']}" for n in client.api.networks(filters=flt)]
    return out


def _d(host: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "-H", host, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.docker
def test_lab_up_swarm_overlay_across_engines_and_down(docker_engine, tmp_path):
    from rangectl.backend.images import default_base_image, image_ref, resolve_base_hash

    state = tmp_path / "lab-state"
    opts = ["--name", LAB, "--state-dir", str(state)]
    times: dict[str, float] = {}
    assert _labelled(docker_engine) == [], "a lab of the test's name is already there"
    try:
        # a failed up removes what it made
        r = lab(*opts, "up", env={"RANGECTL_LAB_FAIL_AFTER_START": "1"})
        assert r.returncode == 1, r.stderr
        assert "failing on purpose" in r.stderr and "removing what it made" in r.stderr
        assert _labelled(docker_engine) == []

        t = time.monotonic()
        r = lab(*opts, "up")
        times["up"] = time.monotonic() - t
        assert r.returncode == 0, r.stderr
        m = re.fullmatch(r"export DOCKER_HOST=(tcp://[\d.]+:2375)\n", r.stdout)
        assert m, r.stdout
        manager = m.group(1)
        assert (state / "env").read_text() == r.stdout
        engines = [ln.split() for ln in (state / "engines").read_text().splitlines()]
        assert [e[0] for e in engines] == [f"{LAB}-engine{i}" for i in (1, 2, 3)]
        assert [e[3] for e in engines] == ["manager", "worker", "worker"]
        assert engines[0][2] == manager

        # three Ready nodes, one of them the manager (leader); each labelled with its engine API
        nodes = _d(manager, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
        assert nodes.returncode == 0, nodes.stderr
        rows = sorted(ln.split() for ln in nodes.stdout.splitlines())
        assert [r_[1] for r_ in rows] == ["Ready"] * 3, nodes.stdout
        assert sum(1 for r_ in rows if r_[2:] == ["Leader"]) == 1, nodes.stdout
        assert sum(1 for r_ in rows if len(r_) == 2) == 2, nodes.stdout
        for name, _addr, api, _role, nid in engines:
            lbl = _d(manager, "node", "inspect", "-f", '{{index .Spec.Labels "io.rangectl.engine"}}', nid)
            assert lbl.stdout.strip() == api, (name, lbl.stdout, lbl.stderr)

        # up again: a no-op
        t = time.monotonic()
        r = lab(*opts, "up")
        times["up again"] = time.monotonic() - t
        assert r.returncode == 0 and "up already" in r.stderr, r.stderr
        assert r.stdout.strip() == f"export DOCKER_HOST={manager}"
        st = lab(*opts, "status", timeout=120)
        assert st.returncode == 0, st.stderr
        assert st.stdout.count(" Ready ") == 3 and "Leader" in st.stdout

        # a small image onto the engines without any pull: docker save | docker load
        base = image_ref("base", resolve_base_hash(docker_engine, default_base_image()))
        t = time.monotonic()
        r = lab(*opts, "load", base)
        times["load base into 3 engines"] = time.monotonic() - t
        assert r.returncode == 0, r.stderr
        host_id = docker_engine.api.inspect_image(base)["Id"]
        for _name, _addr, api, _role, _nid in engines:
            assert _d(api, "image", "inspect", "-f", "{{.Id}}", base).stdout.strip() == host_id

        # an engine stopped and started keeps its address, its API and its place in the swarm
        t = time.monotonic()
        name3, addr3, api3 = engines[2][:3]
        subprocess.run(["docker", "stop", name3], check=True, capture_output=True, timeout=120)
        subprocess.run(["docker", "start", name3], check=True, capture_output=True, timeout=120)
        ip3 = docker_engine.api.inspect_container(name3)["NetworkSettings"]["Networks"][LAB]["IPAddress"]
        assert ip3 == addr3
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ready = _d(manager, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
            if _d(api3, "version").returncode == 0 and ready.count(" Ready") == 3:
                break
            time.sleep(1)
        else:
            raise AssertionError(f"{name3} did not come back: {ready}")
        times["engine stop and start"] = time.monotonic() - t

        # an attachable internal overlay made through the manager, containers on two other engines
        t = time.monotonic()
        net = "labtest-overlay"
        r = _d(manager, "network", "create", "-d", "overlay", "--attachable", "--internal",
               "--subnet", "10.210.250.0/24", net)  # fmt: skip
        assert r.returncode == 0, r.stderr
        api_a, api_b = engines[1][2], engines[2][2]
        echo = (
            "import socket\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('0.0.0.0', 7007)); s.listen(4)\n"
            "while True:\n"
            "    c, _ = s.accept(); c.sendall(b'echo:' + c.recv(100)); c.close()\n"
        )
        r = _d(api_a, "run", "-d", "--name", "labtest-a", "--network", net, "--ip", "10.210.250.10",
               base, "python3", "-c", echo)  # fmt: skip
        assert r.returncode == 0, r.stderr
        client = (
            "import socket, time\n"
            "for i in range(50):\n"
            "    try:\n"
            "        s = socket.create_connection(('10.210.250.10', 7007), timeout=3); break\n"
            "    except OSError:\n"
            "        time.sleep(0.2)\n"
            "s.sendall(b'over-the-overlay'); print(s.recv(100).decode())\n"
        )
        r = _d(api_b, "run", "--rm", "--network", net, "--ip", "10.210.250.11", base, "sh", "-c",
               "ip -o link show eth0; ping -c 2 -W 2 10.210.250.10 && python3 -c \"$0\"", client)  # fmt: skip
        times["overlay traffic"] = time.monotonic() - t
        assert r.returncode == 0, r.stdout + r.stderr
        assert "2 received" in r.stdout and "echo:over-the-overlay" in r.stdout, r.stdout
        mtu = int(re.search(r"mtu (\d+)", r.stdout).group(1))
        assert mtu <= 1450, r.stdout  # VXLAN takes 50 bytes of the lab's 1500
        # the two containers really are on two different engines
        assert _d(api_a, "inspect", "-f", "{{.State.Running}}", "labtest-a").stdout.strip() == "true"
        assert _d(api_b, "inspect", "labtest-a").returncode != 0
    finally:
        t = time.monotonic()
        r = lab(*opts, "down")
        times["down"] = time.monotonic() - t
        print("cluster lab timings (s):", {k: round(v, 1) for k, v in times.items()})
    assert r.returncode == 0, r.stderr
    assert _labelled(docker_engine) == []
    assert not state.exists()
    r = lab(*opts, "down")  # idempotent
    assert r.returncode == 0 and "nothing to remove" in r.stderr, r.stderr
    st = lab(*opts, "status", timeout=60)
    assert st.returncode == 1 and "is not up" in st.stderr
