"""The trust boundary and `up`'s reporting on the real engine (issue 16, findings 1 and 9).

- the finding's exact attack, a playbook task with ``delegate_to: localhost`` writing ``id``
  to a file on the host: refused before anything is made without --trust-playbooks (the
  file never appears), run when the trainer passes the flag;
- Ctrl-C (SIGINT) while Ansible provisions: exit 130, "interrupted … rolled back", nothing
  of the range left, no Ansible process left;
- a failing playbook: one clean line naming the host and the task, the raw output kept.

Every range here is on Docker --internal networks the test creates; nothing is sent anywhere else.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rangectl import paths
from tests.conftest import FIXTURES, leftovers, rangectl_cmd, run_cli

pytestmark = pytest.mark.docker


def _scenario(tmp_path: Path, name: str, net: int, portal: str, teams_note: str = "") -> Path:
    """A two-node range (a web target provisioned with ``portal``, a blue workstation) on
    10.231.<net>.0/24, with the fixture playbooks beside it."""
    shutil.copytree(FIXTURES / "playbooks", tmp_path / "playbooks", dirs_exist_ok=True)
    scen = tmp_path / f"{name}.yaml"
    scen.write_text(
        f"""# {teams_note or 'trust test range'}
rangectl: 1
name: {name}
title: trust test
networks:
  dmz: {{subnet: 10.231.{net}.0/24}}
nodes:
  portal:
    image: web
    role: target
    interfaces: {{dmz: 10.231.{net}.10}}
    provision: [playbooks/{portal}]
    vars: {{pwn_file: {tmp_path / 'pwned-by-scenario'}}}
  soc: {{image: workstation, role: blue, interfaces: {{dmz: 10.231.{net}.50}}}}
"""
    )
    return scen


def _gone(docker_engine, rng: str) -> None:
    cs, ns = leftovers(docker_engine, rng)
    assert not cs and not ns, (cs, ns)
    assert rng not in run_cli("ls").stdout


def test_delegate_to_localhost_is_refused_unless_the_trainer_trusts_it(docker_engine, built_images, tmp_path):
    rng = "pytest-trust-host"
    scen = _scenario(tmp_path, "trust-host", 171, "host-side.yml")
    pwned = tmp_path / "pwned-by-scenario"
    try:
        p = run_cli("up", str(scen), "--name", rng)
        assert p.returncode == 1, p.stderr
        assert "Traceback" not in p.stderr
        # FILE:LINE:COL: key: message, naming the playbook and the offending key
        assert f"{(tmp_path / 'playbooks' / 'host-side.yml').resolve()}:8:7: delegate_to: " in p.stderr, p.stderr
        assert "--trust-playbooks" in p.stderr
        assert not pwned.exists(), "the host-side task ran"
        _gone(docker_engine, rng)  # refused before anything was made

        # the trainer reviewed it and accepts it: now it runs, on this host, as this user
        p = run_cli("up", str(scen), "--name", rng, "--trust-playbooks")
        assert p.returncode == 0, p.stderr
        assert pwned.read_text().startswith(f"uid={os.getuid()}")
    finally:
        run_cli("down", rng)
    _gone(docker_engine, rng)


def _ansible_processes_under(folder: Path) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            pids.append(int(d.name))
    return pids


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_ctrl_c_while_provisioning_is_an_interrupt_and_rolls_back(docker_engine, built_images, tmp_path, sig):
    rng = f"pytest-trust-{sig.name.lower()}"
    scen = _scenario(tmp_path, "trust-sigint", 172, "slow.yml")
    home = Path(os.environ["RANGECTL_HOME"])
    work = home / "provision" / rng
    proc = subprocess.Popen(
        [*rangectl_cmd(), "up", str(scen), "--name", rng, "--teams", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # wait until Ansible is running the slow task (its event is in the run's artifacts)
        deadline = time.monotonic() + 300
        started = False
        while time.monotonic() < deadline and proc.poll() is None and not started:
            for ev in work.glob("artifacts/*/job_events/*.json"):
                try:
                    if "slow step" in ev.read_text() and "runner_on_start" in ev.read_text():
                        started = True
                        break
                except OSError:
                    continue
            time.sleep(0.2)
        assert started, f"provisioning never started: {proc.poll()} {proc.stderr.read() if proc.poll() is not None else ''}"
        assert paths.state_home() == home
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    try:
        assert proc.returncode == 130, err
        assert "interrupted" in err and "rolled back" in err, err
        assert "provisioning failed" not in err and "Traceback" not in err, err
        assert "\x1b" not in err
        _gone(docker_engine, rng)
        assert _ansible_processes_under(work) == [], "Ansible kept running after the interrupt"
    finally:
        run_cli("down", rng)


def test_a_failing_playbook_is_one_clean_line_naming_host_and_task(docker_engine, built_images, tmp_path):
    rng = "pytest-trust-fail"
    scen = _scenario(tmp_path, "trust-fail", 173, "fail-clean.yml")
    try:
        p = run_cli("up", str(scen), "--name", rng)
    finally:
        run_cli("down", rng)
    assert p.returncode == 1, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    line = lines[0]
    assert "\x1b" not in line and "Traceback" not in line
    assert line.startswith("error: provisioning failed on t1-portal at task 'configure the widget': "), line
    assert "widget config broken" in line and "first line of noise" not in line, line
    assert "rolled back" in line
    log = Path(line.split("raw Ansible output: ")[1].split()[0].rstrip(")"))
    assert log.is_file(), line
    raw = log.read_text()
    assert "configure the widget" in raw and "first line of noise" in raw
    _gone(docker_engine, rng)
