"""Operating nodes from the workstation: ``ssh NODE`` reaches the team's own granted nodes only.

Ups a 2-team range of tests/fixtures/operate-range.yaml (``soc`` may operate ``gw`` and
``portal``), scans it from the red node before any operator access exists, runs
``serve`` (which installs the access), and then plays team 1 the way a trainee does:
SSH to the workstation with the team's hand-out files, ``ssh gw ...`` from there.
Traffic goes only to loopback and to this test's containers; the range is always
taken down.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import subprocess
import time
import uuid

import pytest

from rangectl import backend as backends
from rangectl import cmdlog, ranges
from rangectl.access import credentials as creds
from rangectl.backend.base import NodeRef
from rangectl.drill.checks import run_check
from rangectl.drill.wiring import RangeProbes
from rangectl.evidence import write_evidence
from rangectl.scenario.model import Check
from rangectl.state import RangeState
from rangectl.store import EventStore
from tests.conftest import FIXTURES, leftovers, run_cli
from tests.integration.test_access_docker import _free_base, _ssh

pytestmark = pytest.mark.docker

SCENARIO = FIXTURES / "operate-range.yaml"
BLOCKED = Check.model_validate({"blocked": {"from": "scanner", "to": "portal", "port": 80}})


def _scan(be, rng: str, team: int, ip: str) -> str:
    """The red node's view of ``ip``: every open TCP port (all 65535), as nmap lists them."""
    code, out = be.exec(
        NodeRef(rng, team, "scanner"),
        [
            "nmap",
            "-n",
            "-Pn",
            "-sS",
            "-p-",
            "-T5",
            "--max-retries",
            "1",
            "--host-timeout",
            "150s",
            "--open",
            "-oG",
            "-",
            ip,
        ],
        timeout=180,
    )
    assert code == 0 and "# Nmap done" in out and "1 IP address (1 host up)" in out, out
    ports = [ln.split("Ports:", 1)[1].strip() for ln in out.splitlines() if "Ports:" in ln]
    return ports[0] if ports else ""  # no open port: nmap prints no Ports line


@pytest.fixture(scope="module")
def op(docker_engine, built_images, tmp_path_factory):
    from rangectl.access.server import ServeOptions, serve_in_thread

    if shutil.which("ssh") is None:
        pytest.skip("needs the ssh client (openssh-client)")
    home = str(tmp_path_factory.mktemp("home-operate"))
    os.environ["RANGECTL_HOME"] = home
    rng = f"pt-op-{uuid.uuid4().hex[:6]}"
    thread = served = None
    try:
        rep = ranges.up(SCENARIO, teams=2, name=rng, provision=True)
        st = RangeState(rng)
        be = backends.for_range(st)
        plan = rep.plan
        # team 2's view (team 1 blocks its attacker in a test below): every port its red node sees
        targets = {n: str(plan.team(2).ip_of(n)) for n in ("gw", "portal")}
        before = {n: _scan(be, rng, 2, ip) for n, ip in targets.items()}
        creds.ensure_credentials(st, 2)
        base = _free_base(2)
        notes: list[str] = []
        from rangectl.commands.access import _team_reset  # what `rangectl serve` hands the team API

        opts = ServeOptions(
            bind="127.0.0.1:0", ssh_bind="127.0.0.1", ssh_base=base, watch_seconds=2, reset_fn=_team_reset(rng)
        )
        thread, served = serve_in_thread(st, opts, note=notes.append)
        assert served.ready.wait(300), "serve did not start"
        assert served.error is None, served.error
        assert served.install is not None and served.install.ok, (served.install, notes)
        yield {
            "range": rng, "state": st, "plan": plan, "be": be, "served": served, "base": base,
            "notes": notes, "before": before, "targets": targets, "home": home,
        }  # fmt: skip
    finally:
        if served is not None:
            served.stop.set()
            thread.join(30)
        ranges.down(rng)
        cs, ns = leftovers(docker_engine, rng)
        assert not cs and not ns, "down left resources behind"


def _rules(op, team: int) -> str:
    code, out = op["be"].exec(NodeRef(op["range"], team, "gw"), ["iptables", "-S", "RANGECTL-FILTER"])
    assert code == 0, out
    return out


def test_ssh_node_from_the_workstation_blocks_the_attacker_and_earns_containment(op):
    st, plan, rng = op["state"], op["plan"], op["range"]
    v1 = RangeProbes(st, plan, op["be"]).vantage(1)
    assert not run_check(st.scenario(), BLOCKED, v1).passed  # open before the team acts
    attacker = plan.team(1).ip_of("scanner")
    r = _ssh(op, 1, f"ssh gw 'iptables -I RANGECTL-FILTER -s {attacker} -j DROP && hostname'", timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr, op["notes"][-5:])
    assert r.stdout.strip().splitlines()[-1] == "gw"
    assert f"-A RANGECTL-FILTER -s {attacker}/32 -j DROP" in _rules(op, 1)
    assert str(attacker) not in _rules(op, 2) and str(plan.team(2).ip_of("scanner")) not in _rules(op, 2)
    assert run_check(st.scenario(), BLOCKED, v1).passed
    assert not run_check(st.scenario(), BLOCKED, RangeProbes(st, plan, op["be"]).vantage(2)).passed
    # the portal is operable too, and it is team 1's own (its address on the dmz)
    r = _ssh(op, 1, "ssh portal 'hostname; ip -4 -o addr show scope global'", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "portal" and str(plan.team(1).ip_of("portal")) in r.stdout
    assert rng  # the range is the module's


def test_scp_copies_to_and_from_an_operated_node(op):
    r = _ssh(op, 1, "echo evidence-$RANDOM > /tmp/up.txt && scp -q /tmp/up.txt portal:/tmp/got.txt && "
                    "scp -q portal:/tmp/got.txt /tmp/back.txt && cmp /tmp/up.txt /tmp/back.txt && echo same",
             timeout=60)  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip().endswith("same"), (r.stdout, r.stderr)


def test_nothing_else_is_reachable_that_way(op):
    plan, rng = op["plan"], op["range"]
    marker = f"pwned-{uuid.uuid4().hex[:6]}"
    attempts = [
        "ssh -o BatchMode=yes -o ConnectTimeout=5 scanner touch /tmp/" + marker,  # the red node, by name
        "ssh -o BatchMode=yes -o ConnectTimeout=5 soc touch /tmp/" + marker,  # not granted
    ]
    # the red node and team 2's nodes by address, on sshd's port and on the operate ports
    for ip in (plan.team(1).ip_of("scanner"), plan.team(2).ip_of("gw"), plan.team(2).ip_of("portal"),
               plan.team(1).ip_of("portal")):  # fmt: skip
        for port in (22, 8722, 8800, 8801):
            attempts.append(
                f"ssh -o BatchMode=yes -o ConnectTimeout=3 -o StrictHostKeyChecking=no -i /etc/rangectl/operate_key "
                f"-p {port} root@{ip} touch /tmp/{marker}"
            )
    script = "; ".join(f"{a} >/dev/null 2>&1 && echo GOT-IN" for a in attempts) + "; echo done"
    r = _ssh(op, 1, script, timeout=240)
    assert r.returncode == 0 and r.stdout.strip().endswith("done"), r.stderr
    assert "GOT-IN" not in r.stdout, r.stdout
    be = op["be"]
    for team in (1, 2):
        for node in ("scanner", "gw", "portal", "soc"):
            code, _ = be.exec(NodeRef(rng, team, node), ["test", "-e", f"/tmp/{marker}"])
            assert code != 0, f"team {team}'s {node} was changed"


def test_the_attackers_view_is_unchanged_by_operator_access(op):
    be, rng = op["be"], op["range"]
    after = {n: _scan(be, rng, 2, ip) for n, ip in op["targets"].items()}
    assert after == op["before"]
    assert "80/open/tcp" in after["portal"]
    # and operator sshd is really running in the node the scan looked at (loopback only)
    code, out = be.exec(NodeRef(rng, 2, "portal"), ["sh", "-c", "ss -ltn | grep 8722"])
    assert code == 0 and "127.0.0.1:8722" in out, out


def _interactive(op, team: int, lines: list[str], timeout: float = 90) -> str:
    """Type ``lines`` into an interactive SSH session (a real pseudo-terminal), each after the shell's
    prompt, as a trainee would, and return what the session printed."""
    st = op["state"]
    f = creds.team_files(st, team)
    master, slave = pty.openpty()
    p = subprocess.Popen(
        ["ssh", "-tt", "-F", f.ssh_config.name, "-o", "BatchMode=yes", creds.host_alias(st, team)],
        stdin=slave, stdout=slave, stderr=slave, cwd=f.ssh_config.parent, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    out = b""
    end = time.monotonic() + timeout

    def read_until(pred) -> bool:
        nonlocal out
        while time.monotonic() < end:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    return False
                if not data:
                    return False
                out += data
                if pred():
                    return True
        return False

    try:
        for line in lines:
            seen = out.count(b"# ")
            assert read_until(lambda seen=seen: out.count(b"# ") > seen), out.decode(errors="replace")
            os.write(master, line.encode() + b"\n")
        read_until(lambda: False)  # to the end of the session (the last line logs out)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        os.close(master)
    return out.decode(errors="replace")


def test_commands_typed_in_a_shell_are_recorded_even_without_history(op, tmp_path, monkeypatch):
    monkeypatch.setenv("RANGECTL_HOME", op["home"])
    tag = uuid.uuid4().hex[:8]
    shown = _interactive(op, 1, [
        "unset HISTFILE; set +o history",
        f"/bin/echo typed-{tag}",
        "bash --norc --noprofile",  # another shell: still recorded
        f"/bin/sh -c 'exit 3' ; echo rc-$? ; /bin/echo nested-{tag}",
        f"ssh -n gw /bin/echo remote-{tag}",
        "exit",
        "exit",
    ])  # fmt: skip
    assert f"remote-{tag}" in shown and "rc-3" in shown, shown
    st = op["state"]
    deadline = time.monotonic() + 15
    while True:
        rows = cmdlog.rows(_command_events(st), team=1)
        cmds = {(r.node, r.cmd): r for r in rows if r.kind == "command"}
        want = [("soc", f"/bin/echo typed-{tag}"), ("soc", f"/bin/echo nested-{tag}"), ("soc", "exit 3"),
                ("soc", f"ssh -n gw /bin/echo remote-{tag}")]  # fmt: skip
        remote = [r for r in rows if r.node == "gw" and f"remote-{tag}" in r.cmd]
        if all(w in cmds for w in want) and remote and cmds[want[2]].status is not None:
            break
        missing = [w for w in want if w not in cmds]
        assert time.monotonic() < deadline, f"missing {missing}, remote {len(remote)}, rows: " + "; ".join(
            f"{r.node}:{r.kind}:{r.cmd}:{r.status}" for r in rows[-25:]
        )
        time.sleep(0.5)
    assert cmds[want[0]].status == 0 and cmds[want[2]].status == 3
    assert any(r.kind == "session" and r.node == "soc" for r in rows)
    assert not [r for r in cmdlog.rows(_command_events(st), team=2) if tag in r.cmd]  # none of it is team 2's
    env = {"RANGECTL_HOME": op["home"]}
    r = run_cli("commands", op["range"], "--team", "1", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert f"/bin/echo typed-{tag}" in [x["cmd"] for x in json.loads(r.stdout)]
    res = write_evidence(op["range"], tmp_path / "ev", teams=[1])
    d = tmp_path / "ev" / "team-1"
    assert f"typed-{tag}" in (d / "commands.jsonl").read_text()
    manifest = json.loads((d / "manifest.json").read_text())
    for name, meta in manifest["files"].items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == meta["sha256"], name
    assert res.verify_ok


def _command_events(st):
    with EventStore(st.db_path) as s:
        return s.events(kind=cmdlog.KINDS)


def test_the_drill_captures_each_teams_networks_into_the_evidence_bundle(op, tmp_path, monkeypatch):
    """Started with the drill, stopped with the runner, bounded; tshark finds the scan in team 1's bundle."""
    import threading

    from rangectl.drill.capture import FILE_MB, FILES
    from rangectl.drill.wiring import build_runner

    monkeypatch.setenv("RANGECTL_HOME", op["home"])
    st, plan = op["state"], op["plan"]
    runner = build_runner(st, op["be"])
    runner.start(8.0)  # the mini drill's recon scan is due at 10 s: here after about 1.3 s
    stop = threading.Event()
    t = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 120
    while ("recon", 1) not in runner.progress.done or ("recon", 2) not in runner.progress.done:
        assert time.monotonic() < deadline, "the recon inject did not run"
        time.sleep(0.5)
    time.sleep(1)
    stop.set()
    t.join(60)
    with EventStore(st.db_path) as s:
        starts = [e for e in s.events(kind="capture.start")]
        stops = [e for e in s.events(kind="capture.stop")]
    assert {(e.team, e.data["network"]) for e in starts} == {(k, n) for k in (1, 2) for n in ("wan", "dmz")}
    assert all(e.data["ok"] and e.data["file_mb"] == FILE_MB and e.data["files"] == FILES for e in starts)
    assert len(stops) == 4 and all(e.data["files"] for e in stops)
    write_evidence(op["range"], tmp_path / "ev", teams=[1])
    d = tmp_path / "ev" / "team-1"
    manifest = json.loads((d / "manifest.json").read_text())
    caps = sorted(n for n in manifest["files"] if n.startswith("capture/"))
    assert caps and all(hashlib.sha256((d / n).read_bytes()).hexdigest() == manifest["files"][n]["sha256"] for n in caps)
    scanner, portal = plan.team(1).ip_of("scanner"), plan.team(1).ip_of("portal")
    seen = 0
    for n in caps:
        r = subprocess.run(
            ["tshark", "-n", "-r", str(d / n), "-Y", f"ip.src=={scanner} && ip.dst=={portal} && tcp.flags.syn==1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        seen += len(r.stdout.splitlines())
    assert seen >= 3  # the scan of 22, 80, 443
    # team 2's scanner is not in team 1's capture
    other = plan.team(2).ip_of("scanner")
    for n in caps:
        r = subprocess.run(["tshark", "-n", "-r", str(d / n), "-Y", f"ip.addr=={other}"], capture_output=True, text=True)
        assert r.stdout.strip() == ""


def test_a_team_resets_its_own_node_with_respond_and_pays_for_it(op, monkeypatch):
    """`respond reset portal` typed in team 2's workstation re-creates team 2's portal (same address),
    records the request, its cost and the reset as the team; `ssh portal` works again afterwards."""
    monkeypatch.setenv("RANGECTL_HOME", op["home"])  # serve (a thread here) finds the range by name
    be, rng, plan = op["be"], op["range"], op["plan"]
    before = be.node(NodeRef(rng, 2, "portal"))
    other = be.node(NodeRef(rng, 1, "portal"))
    r = _ssh(op, 2, "respond reset gw; echo rc-$?; respond --json reset portal", timeout=60)
    assert "rc-4" in r.stdout, (r.stdout, r.stderr)  # gw is not resettable: refused, nothing recorded
    body = json.loads(r.stdout.split("rc-4", 1)[1])
    assert body["accepted"] and body["node"] == "portal" and body["cost"] == 50.0
    deadline = time.monotonic() + 240
    while True:
        with EventStore(op["state"].db_path) as s:
            done = s.events(kind=("node.reset", "node.reset.failed"), team=2)
            req = s.events(kind="node.reset.request", team=2)
            cost = [e for e in s.events(kind="score", team=2) if "reset of portal" in e.data.get("reason", "")]
        if done:
            break
        assert time.monotonic() < deadline, "the reset did not finish"
        time.sleep(1)
    assert [e.kind for e in done] == ["node.reset"] and done[0].actor == "team-2", done[0].data
    assert [e.data["node"] for e in req] == ["portal"] and [e.data["points"] for e in cost] == [-50.0]
    after = be.node(NodeRef(rng, 2, "portal"))
    assert after.id != before.id and after.addresses == before.addresses
    assert be.node(NodeRef(rng, 1, "portal")).id == other.id  # team 1's portal untouched
    # operator access comes back to the new container (serve's watcher installs it again)
    deadline = time.monotonic() + 180
    while True:
        r = _ssh(op, 2, "ssh -o ConnectTimeout=5 portal hostname", timeout=60)
        if r.returncode == 0 and r.stdout.strip() == "portal":
            break
        assert time.monotonic() < deadline, (r.stdout, r.stderr, op["notes"][-5:])
        time.sleep(3)
    assert str(plan.team(2).ip_of("portal")) in after.addresses.values()


def test_an_engines_agent_records_the_commands_run_on_its_host(op, monkeypatch):
    """The recorder of an engine on another machine runs in that engine's agent (the swarm backend,
    docs/cluster.md): here an agent on this machine's engine, in its host's namespaces as on any
    host, records a trainee's SSH session on team 1's nodes and streams the records to the
    controller; a node list that does not know a container yet is sent again when asked."""
    from rangectl.access.recording import RemoteRecording
    from rangectl.backend.agent import AGENT_IMAGE, Agent, ensure_agent, remove_agents
    from rangectl.backend.images import image_ref

    monkeypatch.setenv("RANGECTL_HOME", op["home"])
    be, rng = op["be"], op["range"]
    got: list[dict] = []
    notes: list[str] = []
    try:
        agent = Agent(be.api, ensure_agent(be.api, rng, image_ref(AGENT_IMAGE), "this engine"), "this engine")
        rec = RemoteRecording(op["state"], be, notes.append, sink=got.extend, agents=[("here", agent)])
        # it starts with team 1's nodes only: team 2's are asked for when they run something
        real, calls = rec.nodes.ids, []

        def first_team_1_only() -> dict:
            calls.append(1)
            return {c: v for c, v in real().items() if v[0] == 1} if len(calls) == 1 else real()

        monkeypatch.setattr(rec.nodes, "ids", first_team_1_only)
        rec.start()
        assert set(rec.streams) == {"here"} and not rec.errors, notes
        # the agent is a container: its reader left the container's cpu cgroup (no real-time time
        # under RT group scheduling) to read each exec's command line ahead of the program
        assert rec.streams["here"].hello["priority"].startswith("SCHED_FIFO"), rec.streams["here"].hello
        # commands that live 0.2 s, each told apart by its argument: a command that ends within
        # microseconds may end before any reader gets its arguments (docs/access.md), which is not
        # what this test is about (a /bin/echo here was once recorded by name only under CI load)
        tag = f"{uuid.uuid4().int % 10**6:06d}"
        c1, c2, c3 = (f"/bin/sleep 0.2{k}{tag}" for k in (1, 2, 3))
        r = _ssh(op, 1, f"{c1}; ssh -n gw {c2}; echo done", timeout=60)
        assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr
        r = _ssh(op, 2, c3, timeout=60)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        while True:
            cmds = {(x["team"], x["node"], x.get("cmd")) for x in got if x["kind"] == "command"}
            want = {(1, "soc", c1), (1, "gw", c2), (2, "soc", c3)}
            if want <= cmds:
                break
            assert time.monotonic() < deadline, (
                sorted(c for c in cmds if c[2] and (tag in c[2] or "/" not in c[2])), notes, len(calls), rec.errors
            )
            time.sleep(0.5)
        assert any(x["kind"] == "session" and x["team"] == 1 and x["node"] == "soc" for x in got)
        assert all(isinstance(x["ts"], float) for x in got)
        assert len(calls) >= 2  # the list was sent again when team 2's node showed up
    finally:
        if "rec" in locals():
            rec.close()
        remove_agents(be.api, rng)
    assert rec.records == len(got) > 0
