"""The swarm backend on the three-engine lab (scripts/cluster-lab.sh): a tet-portal range for 4
teams spread over the engines, used the way a trainer uses it (the CLI with DOCKER_HOST naming
the lab's manager), plus the backend's own numbers where the CLI does not show them.

Nothing here addresses anything but the lab: the engines' API addresses on the lab's internal
network and the range's own nodes.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time

import docker
import pytest

from rangectl import labels as L
from rangectl.backend.agent import AGENT_LABEL
from rangectl.backend.base import NodeRef
from rangectl.backend.nodeexec import Job
from rangectl.backend.swarm import SwarmBackend
from rangectl.drill.checks import probe_job
from tests.conftest import ROOT, rangectl_cmd, run_cli

pytestmark = pytest.mark.docker

LAB = "rangectl-swarmtest"
RANGE = "swtest"
SCENARIO = str(ROOT / "scenarios" / "tet-portal.yaml")
TEAMS = 4


def _lab(*args: str, state) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "cluster-lab.sh"), "--name", LAB, "--state-dir", str(state), *args],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


SSH_ENGINE = 3  # reached as ssh://root@ADDR (the others as tcp://ADDR:2375)


@pytest.fixture(scope="module")
def lab(docker_engine, built_images, tmp_path_factory):
    if shutil.which("ssh") is None:
        pytest.skip("needs the ssh client (openssh-client)")
    state = tmp_path_factory.mktemp("swarm-lab")
    r = _lab("--ssh", str(SSH_ENGINE), "up", state=state)
    assert r.returncode == 0, r.stderr
    manager = re.fullmatch(r"export DOCKER_HOST=(tcp://[\d.]+:2375)\n", r.stdout).group(1)
    lines = [ln.split() for ln in (state / "engines").read_text().splitlines()]
    urls = {x[0]: x[2] for x in lines}
    assert urls[f"{LAB}-engine{SSH_ENGINE}"].startswith("ssh://root@"), urls
    # the trainer's SSH set-up for the ssh:// engine, as docs/cluster.md asks of a real cluster:
    # the key and the engine's host key where the clients look (a home of the tests' own; the
    # OpenSSH client, which ignores $HOME, gets the lab's config through a wrapper on PATH)
    home = tmp_path_factory.mktemp("trainer-home")
    (home / ".ssh").mkdir(mode=0o700)
    shutil.copy(state / "ssh" / "config", home / ".ssh" / "config")
    shutil.copy(state / "ssh" / "known_hosts", home / ".ssh" / "known_hosts")
    wrapper = home / "bin" / "ssh"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {home / '.ssh' / 'config'} \"$@\"\n")
    wrapper.chmod(0o755)
    try:
        # direct checks of each engine go to its TCP API (the lab leaves it open on every engine)
        yield {"manager": manager, "engines": {x[0]: f"tcp://{x[1]}:2375" for x in lines}, "urls": urls,
               "state": state, "home": home}  # fmt: skip
    finally:
        d = _lab("down", state=state)
        assert d.returncode == 0, d.stderr


@pytest.fixture
def cli(lab, monkeypatch):
    """rangectl as the trainer runs it on the lab: DOCKER_HOST names the manager, engine swarm."""
    monkeypatch.setenv("DOCKER_HOST", lab["manager"])
    monkeypatch.setenv("RANGECTL_ENGINE", "swarm")
    monkeypatch.setenv("HOME", str(lab["home"]))
    monkeypatch.setenv("PATH", f"{lab['home'] / 'bin'}:{os.environ['PATH']}")

    def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        return run_cli(*args, timeout=timeout, stdin=subprocess.DEVNULL)

    return run


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One state folder for the module's range (the autouse fixture gives each test its own)."""
    return tmp_path_factory.mktemp("swarm-home")


@pytest.fixture
def shared_home(home, monkeypatch):
    monkeypatch.setenv("RANGECTL_HOME", str(home))
    return home


def engine_client(url: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=url, timeout=60)


def left_on(url: str, range_name: str) -> dict[str, list[str]]:
    c = engine_client(url).api
    flt = {"label": [f"{L.MANAGED}=1", f"{L.RANGE}={range_name}"]}
    return {
        "containers": [x["Names"][0] for x in c.containers(all=True, filters=flt)],
        "networks": [x["Name"] for x in c.networks(filters=flt)],
        "agents": [x["Names"][0] for x in c.containers(all=True, filters={"label": f"{AGENT_LABEL}={range_name}"})],
    }


def local_docker(*args: str) -> subprocess.CompletedProcess:
    """The docker CLI on this machine's engine (where the lab's engine containers are), whatever
    DOCKER_HOST says."""
    return subprocess.run(["docker", "-H", "unix:///var/run/docker.sock", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def rules_on(engine_name: str) -> list[str]:
    out = local_docker("exec", engine_name, "iptables", "-S", "DOCKER-USER")
    assert out.returncode == 0, out.stderr
    return [ln for ln in out.stdout.splitlines() if "rangectl:" in ln]


def status(cli) -> dict:
    r = cli("status", RANGE, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def swarm_backend(lab) -> SwarmBackend:
    return SwarmBackend(docker.DockerClient(base_url=lab["manager"], timeout=60))


# -- the range up, spread over the engines -----------------------------------------------------------


def test_up_spreads_whole_teams_over_engines(lab, cli, shared_home):
    r = cli("up", SCENARIO, "--teams", str(TEAMS), "--name", RANGE, "--spread", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    st = status(cli)
    assert st["engine"] == "swarm" and len(st["nodes"]) == TEAMS * 7
    where: dict[int, set[str]] = {}
    for n in st["nodes"]:
        assert n["state"] == "running", n
        where.setdefault(n["team"], set()).add(n["engine"])
    assert all(len(e) == 1 for e in where.values()), where  # a team on one engine
    assert len({next(iter(e)) for e in where.values()}) == 3  # 4 teams over all 3 engines
    assert next(iter(where[1])) != f"{LAB}-engine1"  # spread: workers first, team 1 on a worker
    rows = {r_["range"]: r_ for r_ in json.loads(cli("ls", "--json").stdout)}
    assert rows[RANGE]["engine"] == "swarm" and rows[RANGE]["running"] == TEAMS * 7, rows
    # every engine that holds a team has the images by ID; shipping again sends nothing
    be = swarm_backend(lab)
    local = docker.from_env(timeout=60)
    refs = sorted({c["Image"] for e in be.engines() for c in e.api.containers(
        filters={"label": [f"{L.MANAGED}=1", f"{L.RANGE}={RANGE}"]})})  # fmt: skip
    assert refs
    for e in be.engines():
        for ref in refs:
            assert e.api.inspect_image(ref)["Id"] == local.api.inspect_image(ref)["Id"]
    assert be.ship(refs, be.engines()) == {}


def test_teams_are_isolated_across_engines(lab, cli, shared_home):
    be = swarm_backend(lab)
    st = status(cli)
    addrs = {(n["team"], n["node"]): n["addresses"] for n in st["nodes"]}
    soc1 = NodeRef(RANGE, 1, "soc")

    def tcp(ref, ip, port):
        return be.nodes_exec.run(ref, Job.of(probe_job, kind="tcp", args=[ip, port, 1.5], deadline=time.time() + 10))

    # its own portal, through its own edge: reachable
    assert tcp(soc1, addrs[(1, "portal")]["dmz"], 80)[0] is True
    # nothing of team 2 (on another engine): not its portal, its edge or its workstation
    for node in ("portal", "edge", "soc", "chatbot"):
        for ip in addrs[(2, node)].values():
            ok, detail = tcp(soc1, ip, 80 if node != "soc" else 22)
            assert ok is False, f"team 1's soc reached team 2's {node} at {ip}: {detail}"
    # nor any engine's API
    for url in lab["engines"].values():
        ip = url.split("//")[1].split(":")[0]
        assert tcp(soc1, ip, 2375)[0] is False


def test_injects_traffic_and_probes_for_teams_on_every_engine(lab, cli, shared_home):
    r = cli("inject", RANGE, "recon", "--all-teams", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["errors"] == [] and sorted(run["team"] for run in out["runs"]) == list(range(1, TEAMS + 1))
    for run in out["runs"]:
        truth = run["ground_truth"]
        # the scan left the team's attacker and arrived at its portal, counted there by the agent
        assert truth["packets"] > 0 and truth["seen_on_target"] and truth["seen_on_target"] > 0, truth
    # the availability probe (rangectl's probe vantage of each team) answers on every engine
    be = swarm_backend(lab)
    st = status(cli)
    portal = {n["team"]: n["addresses"]["dmz"] for n in st["nodes"] if n["node"] == "portal"}
    for team in range(1, TEAMS + 1):
        res = be.nodes_exec.run(NodeRef(RANGE, team, "probe"),
                                Job.of(probe_job, kind="http", args=[portal[team], 80, "/", 5], deadline=time.time() + 15))  # fmt: skip
        assert res[0] == 200, (team, res[2])


def _in_a_terminal(argv: list[str], typed: bytes, timeout: float = 60) -> str:
    """Run ``argv`` on a pseudo-terminal (as a trainer's shell does), type ``typed``, and return all
    it printed until it ended."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out, end, sent = b"", time.monotonic() + timeout, False
    try:
        while time.monotonic() < end:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                out += data
                if not sent and b"#" in out:  # the shell's prompt
                    os.write(master, typed)
                    sent = True
            elif p.poll() is not None:
                break
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        os.close(master)
    return out.decode(errors="replace")


def test_exec_logs_reset_and_shell_reach_the_node_on_its_engine(lab, cli, shared_home):
    """The trainer's node commands go to the engine that holds the node: a team on the worker
    engine reached over SSH (ssh://root@ADDR; `shell` runs `docker -H ssh://... exec -it`)."""
    eng_of = {n["team"]: n["engine"] for n in status(cli)["nodes"]}
    t = min(k for k in eng_of if eng_of[k] == f"{LAB}-engine{SSH_ENGINE}")
    T = str(t)
    r = cli("exec", RANGE, "portal", "--team", T, "--", "sh", "-c", "echo kept > /root/marker; hostname")
    assert r.returncode == 0 and r.stdout.strip() == "portal", r.stdout + r.stderr
    # the node's log is its engine's (the service supervisor's start lines)
    r = cli("logs", RANGE, "portal", "--team", T)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    engine_logs = engine_client(lab["engines"][eng_of[t]]).api.logs(f"rc-{RANGE}.t{t}.portal").decode(errors="replace")
    assert r.stdout.strip().splitlines()[-1] in engine_logs
    # shell: an interactive login shell on that engine (docker -H ENGINE exec -it)
    shown = _in_a_terminal([*rangectl_cmd(), "shell", RANGE, "portal", "--team", T],
                           b"cat /root/marker; hostname; exit\n")  # fmt: skip
    assert "kept" in shown and "portal" in shown, shown
    # reset: re-created on the same engine from its image and playbooks, same address, marker gone
    before = {n["node"]: n for n in status(cli)["nodes"] if n["team"] == t}
    r = cli("reset", RANGE, "portal", "--team", T)
    assert r.returncode == 0, r.stdout + r.stderr
    after = {n["node"]: n for n in status(cli)["nodes"] if n["team"] == t}
    assert after["portal"]["engine"] == before["portal"]["engine"]
    assert after["portal"]["addresses"] == before["portal"]["addresses"]
    r = cli("exec", RANGE, "portal", "--team", T, "--", "sh", "-c", "test -e /root/marker; echo $?")
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stdout + r.stderr
    be = swarm_backend(lab)
    res = be.nodes_exec.run(NodeRef(RANGE, t, "probe"), Job.of(probe_job, kind="http",
                            args=[after["portal"]["addresses"]["dmz"], 80, "/", 5], deadline=time.time() + 15))  # fmt: skip
    assert res[0] == 200, res


def test_an_engine_stopped_mid_drill_loses_nothing_and_others_go_on(lab, cli, shared_home):
    from rangectl.state import RangeState
    from rangectl.store import EventStore

    st = status(cli)
    eng_of = {n["team"]: n["engine"] for n in st["nodes"]}
    victim = eng_of[2]
    assert victim != f"{LAB}-engine1", "the manager must stay up"
    others = [t for t in eng_of if eng_of[t] != victim]
    drill = subprocess.Popen(
        [*rangectl_cmd(), "drill", "start", RANGE, "--time-scale", "15", "--no-live"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(20)
        assert local_docker("stop", "-t", "5", victim).returncode == 0
        time.sleep(25)
        assert local_docker("start", victim).returncode == 0
        try:
            out, errs = drill.communicate(timeout=600)
        except subprocess.TimeoutExpired:  # where it waits: every thread's stack (rangectl's SIGUSR1)
            drill.send_signal(signal.SIGUSR1)
            time.sleep(3)
            drill.kill()
            out, errs = drill.communicate(timeout=30)
            raise AssertionError("the drill did not end within 600 s; its threads:\n" + errs[-20000:]) from None
    finally:
        if drill.poll() is None:
            drill.kill()
    assert drill.returncode == 0, out + errs
    store = EventStore(RangeState(RANGE).db_path)
    v = store.verify()
    assert v.ok, v.reason
    avail = store.events("availability")
    by_team: dict[int, list] = {}
    for e in avail:
        by_team.setdefault(e.team, []).append(e.data)
    rounds = {t: len(v) for t, v in by_team.items()}
    # every team has every round recorded, the stopped one too (as failures while it was away)
    assert len(set(rounds.values())) == 1, rounds

    def unanswered(d: dict) -> bool:  # the probe itself failed (not the service): the engine was away
        return not d["up"] and str(d.get("detail", "")).startswith(("probe error", "probe late"))

    victims = [t for t in by_team if eng_of[t] == victim]
    gone = [i for t in victims for i, d in enumerate(by_team[t]) if unanswered(d)]
    assert gone, "the teams on the stopped engine never missed a probe"
    # the others were probed all along (up or down by the drill's own attacks, but no probe failed)
    for t in others:
        errors = [d for d in by_team[t] if str(d.get("detail", "")).startswith("probe error")]
        assert not errors, (t, errors[:3])
    # and the teams on the stopped engine were picked up again: answered rounds after the outage
    def rows(t: int) -> str:  # what the failure shows: each round's drill time, result, detail
        return "\n".join(f"{d['drill_t']:7.1f} {d['service']:5} {d['up']!s:5} {str(d.get('detail', ''))[:100]}"
                         for d in by_team[t])  # fmt: skip

    for t in victims:
        after = by_team[t][max(gone) + 1 :]
        assert any(not unanswered(d) for d in after), f"team {t} never answered again:\n{rows(t)}\n{errs[-3000:]}"
    # nothing recorded was lost: the record verifies (above) and every round has every team

    # the drill's packet capture: each team's bridges captured by its engine's agent, streamed here
    # into the team's rotated files; a team on an engine that kept running has its portal's traffic
    from rangectl.drill.capture import capture_files

    starts = [e for e in store.events("capture.start") if not e.data.get("resumed")]
    assert {e.team for e in starts} == set(eng_of) and all(e.data["ok"] and e.data["remote"] for e in starts), [
        (e.team, e.data) for e in starts if not e.data.get("ok")
    ]
    assert {e.team for e in store.events("capture.stop")} == set(eng_of)
    portal = {n["team"]: n["addresses"]["dmz"] for n in st["nodes"] if n["node"] == "portal"}

    def portal_packets(t: int, prefix: str) -> int:
        files = [f for f in capture_files(RangeState(RANGE), t) if f.name.startswith(prefix)]
        assert files, (t, prefix)
        seen = 0
        for f in files:
            r = subprocess.run(["tshark", "-n", "-r", str(f), "-Y", f"ip.dst=={portal[t]}"],
                               capture_output=True, text=True, timeout=120)  # fmt: skip
            assert r.returncode == 0, r.stderr
            seen += len(r.stdout.splitlines())
        return seen

    for t in others:
        assert portal_packets(t, "dmz.pcap") > 0, t
        assert not [e for e in store.events("capture.stop", team=t) if e.data.get("lost")], t
    # a team on the stopped engine: its capture recorded as lost, resumed once the engine was back,
    # in files of its own (the first ones kept), with the portal's packets after the outage
    for t in victims:
        nets = {e.data["network"] for e in starts if e.team == t}
        lost = [e.data for e in store.events("capture.stop", team=t) if e.data.get("lost")]
        assert {d["network"] for d in lost} == nets, lost
        resumed = [e.data for e in store.events("capture.start", team=t) if e.data.get("resumed")]
        assert {d["network"] for d in resumed} == nets and all(d["ok"] and d["remote"] for d in resumed), resumed
        assert portal_packets(t, "dmz.r") > 0, t


def test_down_leaves_nothing_on_any_engine_and_up_again_reuses_addresses(lab, cli, shared_home):
    before = {(n["team"], n["node"]): n["addresses"] for n in status(cli)["nodes"]}
    r = cli("down", RANGE)
    assert r.returncode == 0, r.stderr
    for name, url in lab["engines"].items():
        assert left_on(url, RANGE) == {"containers": [], "networks": [], "agents": []}, name
        assert rules_on(name) == [], name
    # again, provisioned node by node this time (no stamps): the one Ansible run reaches every
    # team's hosts on its own engine, the ssh:// one included
    r = cli("up", SCENARIO, "--teams", str(TEAMS), "--name", RANGE, "--spread", "--no-stamp", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    prov = json.loads(r.stdout)["provision"]
    assert prov["ok"] and prov["hosts"] == TEAMS * 2 and prov["tasks_changed"] > 0, prov  # portal, chatbot
    after = {(n["team"], n["node"]): n["addresses"] for n in status(cli)["nodes"]}
    assert after == before
    eng_of = {n["team"]: n["engine"] for n in status(cli)["nodes"]}
    assert f"{LAB}-engine{SSH_ENGINE}" in eng_of.values()
    for team in range(1, TEAMS + 1):
        r = cli("exec", RANGE, "portal", "--team", str(team), "--", "test", "-s", "/opt/tet/php-handler.py")
        assert r.returncode == 0, (team, eng_of[team], r.stdout + r.stderr)
    r = cli("down", RANGE)
    assert r.returncode == 0, r.stderr
    for name, url in lab["engines"].items():
        assert left_on(url, RANGE) == {"containers": [], "networks": [], "agents": []}, name


def test_selftest_with_the_reference_team_on_a_worker_engine(lab, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("RANGECTL_SPREAD", "1")  # team 1 (the reference team) on a worker (placement tests)
    out = tmp_path / "result.json"
    r = cli("selftest", SCENARIO, "--format", "json", "--output", str(out), "--no-live")
    assert out.exists(), r.stderr[-3000:]
    res = json.loads(out.read_text())[0]
    failed = [f"{a['name']}: {a['detail']}" for a in res["assertions"] if not a["ok"]]
    assert r.returncode == 0 and res["ok"], "\n".join(failed) + (f"\nerror: {res['error']}" if res["error"] else "")
