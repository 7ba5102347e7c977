"""Trainee access on a real range: respond inside the workstation, SSH per team, isolation, rotation.

Ups the 2-team mini range (unique name), runs ``serve`` in a thread (API on a
free loopback port, SSH on free loopback ports), and drives it the way a
trainee would: ``respond`` inside team 1's workstation, ``ssh`` with team 1's
credential files. Traffic only goes to loopback and to this test's containers.
The range is always taken down at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from rangectl import ranges
from rangectl.access import credentials as creds
from rangectl.access.server import free_port_base
from rangectl.backend.docker import container_name
from rangectl.state import RangeState
from rangectl.store import EventStore
from tests.conftest import FIXTURES, leftovers

pytestmark = pytest.mark.docker

SCENARIO = FIXTURES / "mini-range.yaml"


def _free_base(n: int) -> int:
    return free_port_base(n, start=23000)


@pytest.fixture(scope="module")
def access(docker_engine, built_images, tmp_path_factory):
    """A 2-team range with `serve` running; always removed afterwards."""
    from rangectl.access.server import ServeOptions, serve_in_thread

    if shutil.which("ssh") is None:
        pytest.skip("needs the ssh client (openssh-client)")
    os.environ["RANGECTL_HOME"] = str(tmp_path_factory.mktemp("home-access"))
    rng = f"pt-acc-{uuid.uuid4().hex[:6]}"
    thread = served = None
    notes: list[str] = []
    try:
        rep = ranges.up(SCENARIO, teams=2, name=rng, provision=True)
        st = RangeState(rng)
        creds.ensure_credentials(st, 2)  # `up` calls this once wired; it is idempotent
        base = _free_base(2)
        opts = ServeOptions(bind="127.0.0.1:0", ssh_bind="127.0.0.1", ssh_base=base, watch_seconds=2)
        thread, served = serve_in_thread(st, opts, note=notes.append)
        assert served.ready.wait(300), "serve did not start"
        assert served.error is None, served.error
        assert served.install is not None and served.install.ok, (served.install, notes)
        yield {"range": rng, "state": st, "plan": rep.plan, "served": served, "base": base, "notes": notes}
    finally:
        if served is not None:
            served.stop.set()
            thread.join(30)
        ranges.down(rng)
        cs, ns = leftovers(docker_engine, rng)
        assert not cs and not ns, "down left resources behind"


def _exec(docker_engine, rng: str, node: str, cmd: str, team: int) -> tuple[int, str]:
    c = docker_engine.containers.get(container_name(rng, team, node))
    code, out = c.exec_run(["sh", "-c", cmd])
    return code, out.decode(errors="replace")


def _ssh(
    access, team: int, command: str, *extra: str, cwd=None, timeout: int = 30
) -> subprocess.CompletedProcess:
    st = access["state"]
    f = creds.team_files(st, team)
    return subprocess.run(
        [
            "ssh",
            "-F",
            f.ssh_config.name,
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            *extra,
            creds.host_alias(st, team),
            command,
        ],
        cwd=cwd or f.ssh_config.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _start_drill(st: RangeState) -> None:
    s = EventStore(st.db_path)
    try:
        if not s.events(kind="drill.start"):
            s.append(
                "drill.start",
                {"wall_start": time.time(), "time_scale": 1.0, "teams": [1, 2], "end": 600},
                actor="runner",
            )
            for k in (1, 2):
                s.append(
                    "inject.start",
                    {"inject": "recon", "due_t": 10, "drill_t": 10, "resumed": False, "kind": "traffic"},
                    team=k,
                    actor="runner",
                )
    finally:
        s.close()


def test_respond_inside_each_workstation_is_that_team(access, docker_engine):
    rng, st, plan = access["range"], access["state"], access["plan"]
    for team in (1, 2):
        code, out = _exec(docker_engine, rng, "soc", "respond --json whoami", team)
        assert code == 0, out
        assert json.loads(out)["team"] == team
        code, out = _exec(docker_engine, rng, "soc", "stat -c %a /etc/rangectl/respond.env", team)
        assert out.strip() == "600"
    _start_drill(st)
    code, out = _exec(docker_engine, rng, "soc", "respond objectives", 1)
    assert code == 0 and "scanner-ip" in out, out
    code, out = _exec(docker_engine, rng, "soc", "respond submit scanner-ip 203.0.113.66", 1)
    assert code == 1 and "WRONG" in out, out
    right = str(plan.team(1).ip_of("scanner"))
    code, out = _exec(docker_engine, rng, "soc", f"respond submit scanner-ip {right}", 1)
    assert code == 0 and "CORRECT" in out, out
    code, out = _exec(docker_engine, rng, "soc", "respond --json score", 1)
    assert code == 0 and json.loads(out)["solved"] == 1
    s = EventStore(st.db_path)
    subs = s.events(kind="submission", team=1)
    s.close()
    assert [(e.actor, e.data["correct"]) for e in subs] == [("team-1", False), ("team-1", True)]
    # the API is only on loopback inside the workstation: other nodes of the range cannot reach it
    code, out = _exec(
        docker_engine,
        rng,
        "portal",
        "python3 - <<'EOF'\nimport socket\ns=socket.socket()\n"
        "s.settimeout(2)\ntry:\n    s.connect(('10.231.3.50', 8780)); print('open')\n"
        "except OSError as e:\n    print('closed', e)\nEOF",
        1,
    )
    assert "closed" in out, out


def test_ssh_with_team_key_reaches_only_that_teams_workstation(access):
    plan = access["plan"]
    r = _ssh(access, 1, "hostname; ip -4 -o addr show scope global")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "soc"
    assert str(plan.team(1).node("soc").primary_ip) in r.stdout
    assert str(plan.team(2).node("soc").primary_ip) not in r.stdout
    # its own team's portal answers; every address of team 2 stays out of reach
    own = plan.team(1).node("portal").primary_ip
    r = _ssh(access, 1, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{own}/")
    assert r.returncode == 0 and r.stdout.strip().startswith(("2", "3", "4")), (r.stdout, r.stderr)
    others = sorted({str(ip) for n in plan.team(2).nodes for ip in n.interfaces.values()})
    probe = "; ".join(f"ping -c1 -W1 {ip} >/dev/null 2>&1 && echo REACHED {ip}" for ip in others)
    probe += f"; curl -s --max-time 3 http://{plan.team(2).node('portal').primary_ip}/ >/dev/null && echo REACHED-HTTP"
    r = _ssh(access, 1, probe + "; echo done", timeout=90)
    assert r.returncode == 0 and r.stdout.strip().endswith("done"), r.stderr
    assert "REACHED" not in r.stdout, r.stdout


def test_wrong_keys_get_nothing(access, tmp_path):
    st, base = access["state"], access["base"]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "wrong")], check=True)
    f1 = creds.team_files(st, 1)
    r = subprocess.run(
        [
            "ssh",
            "-F",
            "none",
            "-p",
            str(base + 1),
            "-i",
            str(tmp_path / "wrong"),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={f1.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"HostKeyAlias={creds.host_alias(st, 1)}",
            "-o",
            "ConnectTimeout=10",
            "root@127.0.0.1",
            "echo IN",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0 and "IN" not in r.stdout and "Permission denied" in r.stderr, r.stderr
    # team 1's key on team 2's port: refused as well (and team 2's host key is not team 1's)
    f2 = creds.team_files(st, 2)
    r = subprocess.run(
        [
            "ssh",
            "-F",
            "none",
            "-p",
            str(base + 2),
            "-i",
            str(f1.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={f2.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"HostKeyAlias={creds.host_alias(st, 2)}",
            "-o",
            "ConnectTimeout=10",
            "root@127.0.0.1",
            "echo IN",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0 and "IN" not in r.stdout, r.stderr
    # no password logins
    r = subprocess.run(
        [
            "ssh",
            "-F",
            "none",
            "-p",
            str(base + 1),
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={f1.known_hosts}",
            "-o",
            f"HostKeyAlias={creds.host_alias(st, 1)}",
            "-o",
            "ConnectTimeout=10",
            "root@127.0.0.1",
            "echo IN",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0 and "IN" not in r.stdout


def _api(access, path: str, token: str) -> int:
    host, port = access["served"].api_address
    req = urllib.request.Request(
        f"http://{host}:{port}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_rotation_revokes_token_and_key(access, docker_engine, tmp_path):
    from rangectl.access.install import install_access

    st, rng = access["state"], access["range"]
    old_token = creds.read_env_file(creds.team_files(st, 1).env)["RANGECTL_TOKEN"]
    old_key = tmp_path / "old.key"
    shutil.copy(creds.team_files(st, 1).key, old_key)
    os.chmod(old_key, 0o600)
    assert _api(access, "/whoami", old_token) == 200
    creds.rotate(st, 1)
    res = install_access(st, [1], force=True, kill_sessions=True)
    assert res.ok, res.failures
    time.sleep(creds.CACHE_SECONDS + 0.2)
    assert _api(access, "/whoami", old_token) == 401
    new_token = creds.read_env_file(creds.team_files(st, 1).env)["RANGECTL_TOKEN"]
    assert _api(access, "/whoami", new_token) == 200
    code, out = _exec(
        docker_engine, rng, "soc", "respond --json whoami", 1
    )  # the workstation got the new one
    assert code == 0 and json.loads(out)["team"] == 1, out
    f1 = creds.team_files(st, 1)
    r_old = subprocess.run(
        [
            "ssh",
            "-F",
            "none",
            "-p",
            str(access["base"] + 1),
            "-i",
            str(old_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={f1.known_hosts}",
            "-o",
            f"HostKeyAlias={creds.host_alias(st, 1)}",
            "-o",
            "ConnectTimeout=10",
            "root@127.0.0.1",
            "echo IN",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r_old.returncode != 0 and "IN" not in r_old.stdout, r_old.stderr
    r = _ssh(access, 1, "echo IN")
    assert r.returncode == 0 and r.stdout.strip() == "IN", r.stderr


def test_sshd_comes_back_after_it_is_killed(access, docker_engine):
    rng = access["range"]
    _exec(docker_engine, rng, "soc", "pkill -x sshd", 2)
    deadline = time.time() + 30
    while time.time() < deadline:
        r = _ssh(access, 2, "echo IN")
        if r.returncode == 0:
            break
        time.sleep(1)
    assert r.returncode == 0 and r.stdout.strip() == "IN", r.stderr
