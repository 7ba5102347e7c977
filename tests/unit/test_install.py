"""Trainee access installed through the backend contract (rangectl.access.install): what goes
into each node, with which modes, what never travels outside the archive stream, and what a
failing node does to the record."""

from __future__ import annotations

import pytest

from rangectl import ranges
from rangectl.access import install as I
from rangectl.access.credentials import ensure_credentials, install_dir
from rangectl.backend.memory import register_memory
from rangectl.state import RangeState
from tests.conftest import FIXTURES


@pytest.fixture
def mini(monkeypatch):
    """A memory-engine mini-range of 2 teams (workstation soc, which operates gw), with
    credentials; every copy_in recorded with its folder and mode, every exec answered 0."""
    be = register_memory()
    monkeypatch.setenv("RANGECTL_ENGINE", "memory")
    ranges.up(FIXTURES / "mini-range.yaml", teams=2, name="inst", provision=False)
    st = RangeState.open("inst")
    ensure_credentials(st, 2)
    copies: list[tuple[str, str, int, dict[str, bytes]]] = []
    real_copy = be.copy_in

    def copy_in(ref, directory, files, mode=0o644):
        copies.append((f"t{ref.team}.{ref.node}", directory, mode, dict(files)))
        real_copy(ref, directory, files, mode)

    be.copy_in = copy_in
    be.exec_handler = lambda ref, argv: (0, "started\n")
    yield st, be, copies
    ranges.down("inst")


def _tokens(st) -> dict[int, str]:
    """Each team's API token, from its trainer-side respond.env (KEY=VALUE lines)."""
    out = {}
    for t in (1, 2):
        text = (install_dir(st) / f"team-{t}" / "respond.env").read_text()
        out[t] = max((line.split("=", 1)[1].strip() for line in text.splitlines() if "=" in line), key=len)
    return out


def _put(copies, host):
    """{path: mode} of what was copied into ``host``."""
    return {f"{d}/{n}": m for h, d, m, files in copies if h == host for n in files}


def test_each_node_gets_its_files_with_their_modes_and_sshd_is_started(mini):
    st, be, copies = mini
    res = I.install_access(st)
    assert res.ok and res.teams == [1, 2] and not res.failures
    ws = _put(copies, "t1.soc")
    assert ws == {
        "/etc/rangectl/ssh/authorized_keys": 0o600,
        "/etc/rangectl/ssh/ssh_host_ed25519_key": 0o600,
        "/etc/rangectl/ssh/ssh_host_ed25519_key.pub": 0o644,
        "/etc/rangectl/sshd_config.new": 0o644,
        "/usr/local/bin/respond": 0o755,
        "/etc/rangectl/respond.env": 0o600,
        "/etc/motd": 0o644,
        "/etc/rangectl/operate_key": 0o600,
        "/etc/rangectl/operate_known_hosts": 0o644,
        "/etc/ssh/ssh_config.d/rangectl-operate.conf": 0o644,
    }
    # the operated node: only its sshd and the team's operate key as authorized key
    gw = _put(copies, "t1.gw")
    assert set(gw) == {"/etc/rangectl/ssh/authorized_keys", "/etc/rangectl/ssh/ssh_host_ed25519_key",
                       "/etc/rangectl/ssh/ssh_host_ed25519_key.pub", "/etc/rangectl/sshd_config.new"}  # fmt: skip
    files = {(h, f"{d}/{n}"): c for h, d, _m, fs in copies for n, c in fs.items()}
    op_pub = files[("t1.soc", "/etc/rangectl/operate_key")]
    assert files[("t1.gw", "/etc/rangectl/ssh/authorized_keys")] != files[("t1.soc", "/etc/rangectl/ssh/authorized_keys")]
    assert b"PRIVATE KEY" in op_pub
    # each team its own token, and the other team's never
    tokens = _tokens(st)
    assert tokens[1].encode() in files[("t1.soc", "/etc/rangectl/respond.env")]
    assert tokens[2].encode() not in b"".join(c for (h, _p), c in files.items() if h.startswith("t1."))
    conf = files[("t1.soc", "/etc/rangectl/sshd_config.new")].decode()
    assert "ListenAddress 127.0.0.1\n" in conf and "PasswordAuthentication no\n" in conf and "PrintMotd yes\n" in conf
    assert "PrintMotd no\n" in files[("t1.gw", "/etc/rangectl/sshd_config.new")].decode()
    assert "ssh gw" in files[("t1.soc", "/etc/motd")].decode()
    # per node: the folders, then the start script, every exec with the deadline
    started = [(r.team, r.node) for r, argv in be.execs if "sshd -t -f" in argv[-1]]
    assert sorted(started) == [(1, "gw"), (1, "soc"), (2, "gw"), (2, "soc")]


def test_secrets_travel_only_in_the_archives_never_in_a_command(mini):
    st, be, copies = mini
    I.install_access(st)
    secrets = list(_tokens(st).values())
    for _h, _d, _m, fs in copies:
        for name, c in fs.items():
            if name in ("ssh_host_ed25519_key", "operate_key"):
                secrets.append(c.decode().strip().splitlines()[1])  # a line of the private key
    argv_text = "\n".join(" ".join(argv) for _r, argv in be.execs)
    assert secrets and not [s for s in secrets if s in argv_text]


def test_a_node_that_fails_is_named_and_its_team_is_not_recorded(mini):
    st, be, copies = mini

    def answer(ref, argv):
        if ref.team == 2 and ref.node == "gw" and "sshd -t -f" in argv[-1]:
            return 1, "sshd: bad configuration\n"
        return 0, "started\n"

    be.exec_handler = answer
    heard: list[tuple[str, str, str]] = []
    res = I.install_access(st, note=lambda kind, host, text: heard.append((kind, host, text)))
    assert not res.ok and res.teams == [1]
    assert res.failures == [{"host": "team 2 gw", "task": "start sshd", "message": "exit 1: sshd: bad configuration"}]
    assert ("failed", "team 2 gw", "exit 1: sshd: bad configuration") in heard
    assert I.marker(st, 1) and not I.marker(st, 2)
    # the next run does only team 2 (team 1's install is recorded), and records it once it works
    be.exec_handler = lambda ref, argv: (0, "running\n")
    copies.clear()
    res = I.install_access(st)
    assert res.ok and res.skipped == [1] and res.teams == [2]
    assert {h for h, *_ in copies} == {"t2.soc", "t2.gw"} and I.marker(st, 2)


def test_a_copy_the_engine_refuses_fails_that_node_with_the_step(mini):
    from rangectl.errors import RangeError

    st, be, copies = mini
    real = be.copy_in

    def refuse(ref, directory, files, mode=0o644):
        if ref.team == 1 and directory == "/usr/local/bin":
            raise RangeError(f"cannot copy into {ref}:{directory}")
        real(ref, directory, files, mode)

    be.copy_in = refuse
    res = I.install_access(st)
    assert not res.ok and res.teams == [2]
    assert res.failures[0]["host"] == "team 1 soc" and res.failures[0]["task"] == "copy respond to /usr/local/bin"


def test_sessions_are_ended_only_after_a_rotation_and_only_on_the_workstation(mini):
    st, be, _copies = mini
    I.install_access(st)
    assert not [a for _r, a in be.execs if "pkill" in a[-1]]
    be.execs.clear()
    I.install_access(st, [1], force=True, kill_sessions=True)
    killed = [(r.team, r.node) for r, a in be.execs if "pkill -TERM -P" in a[-1]]
    assert killed == [(1, "soc")]


def test_the_start_script_puts_the_configuration_in_place_and_starts_sshd(tmp_path):
    """The script itself, run by sh on a copy of its file layout (paths rewritten into tmp_path;
    sshd replaced by a recorder): the new configuration replaces the old, is checked, sshd starts.
    (Reload and session ends against a real sshd: tests/integration/test_access_docker.py.)"""
    import os
    import subprocess
    import textwrap

    root = tmp_path
    (root / "etc/rangectl").mkdir(parents=True)
    sbin = root / "usr/sbin"
    sbin.mkdir(parents=True)
    log = root / "calls"
    # a fake sshd: `-t` checks, otherwise it "starts" a long-lived process whose cmdline matches SSHD_FIND
    (sbin / "sshd").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> {log}
        [ "$1" = -t ] && exit 0
        exit 0
        """))
    os.chmod(sbin / "sshd", 0o755)
    conf = root / "etc/rangectl/sshd_config"

    def run(text: str) -> str:
        (root / "etc/rangectl/sshd_config.new").write_text(text)
        script = I.start_script(False).replace("/etc/rangectl", str(root / "etc/rangectl"))
        script = script.replace("/usr/sbin/sshd", str(sbin / "sshd")).replace("/var/log", str(root))
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30).stdout.strip()

    assert run("Port 1\n") == "started" and conf.read_text() == "Port 1\n"
    assert not (root / "etc/rangectl/sshd_config.new").exists()
    assert "-t -f" in log.read_text()


def test_a_trainee_planted_symlink_or_fifo_at_the_config_neither_redirects_nor_blocks_the_start(tmp_path):
    """Root in the workstation, a trainee replaces /etc/rangectl/sshd_config with a symlink to a
    file they want overwritten, or with a FIFO to hang the script: the new configuration replaces
    the link itself (the target is untouched) and nothing reads the FIFO."""
    import os
    import subprocess

    etc = tmp_path / "etc/rangectl"
    etc.mkdir(parents=True)
    sbin = tmp_path / "usr/sbin"
    sbin.mkdir(parents=True)
    (sbin / "sshd").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(sbin / "sshd", 0o755)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    conf = etc / "sshd_config"

    def run() -> subprocess.CompletedProcess:
        (etc / "sshd_config.new").write_text("Port 1\n")
        script = I.start_script(False).replace("/etc/rangectl", str(etc))
        script = script.replace("/usr/sbin/sshd", str(sbin / "sshd")).replace("/var/log", str(tmp_path))
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=20)

    conf.symlink_to(victim)
    r = run()
    assert r.returncode == 0 and r.stdout.strip() == "started"
    assert victim.read_text() == "precious\n" and not conf.is_symlink() and conf.read_text() == "Port 1\n"
    conf.unlink()
    os.mkfifo(conf)
    r = run()  # would hang (timeout: the test fails) if anything read the FIFO
    assert r.returncode == 0 and conf.read_text() == "Port 1\n"
