"""The scenario trust boundary (issue 16, finding 1; finding 9: non-regular scenario files).

Each test attacks first, in the form the finding used (a hostile playbook, a hostile
``vars``, a path out of the scenario's folder, a dangerous capability, a FIFO, /dev/zero),
and checks the one-line ``FILE:LINE:COL: field: message`` refusal. No Docker here: the
run-time guards are proven against a real ``ansible-playbook`` whose only hosts are
refused ones (nothing can reach a container or the network).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml as pyyaml

from rangectl.backend.provision import build_inventory, guard_inventory, provision, write_guard_plugins
from rangectl.errors import ScenarioError
from rangectl.plan import plan
from rangectl.scenario.trust import capability_problem, scan_playbooks
from rangectl.scenario.validate import load_scenario, validate_file
from tests.conftest import FIXTURES, ROOT, rangectl_cmd, run_cli, scenario_files

LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<path>[^:]+): (?P<msg>.+)$")


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    """A copy of the mini range (and its playbook folder) to make hostile."""
    shutil.copytree(FIXTURES / "playbooks", tmp_path / "playbooks")
    scen = tmp_path / "mini-range.yaml"
    scen.write_text((FIXTURES / "mini-range.yaml").read_text())
    return scen


def _problems(path: Path, **kw) -> list[str]:
    return [str(p) for p in validate_file(path, **kw).problems]


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


SOC = "  soc: {image: workstation, role: blue, gateway: 10.231.3.1, interfaces: {dmz: 10.231.3.50}, provision: [playbooks/stamp.yml], operate: [gw]}"


# --- vars ---------------------------------------------------------------------------------


def test_hostile_vars_on_a_workstation_are_refused_with_their_lines(mini: Path):
    _replace(mini, SOC, SOC[:-1] + ", vars: {ansible_connection: local, rangectl_team: 1}}")
    probs = _problems(mini)
    assert len(probs) == 2, probs
    for p in probs:
        m = LINE.match(p)
        assert m and m["file"] == str(mini) and m["line"] == "20", p
    assert any(p.split(": ")[1] == "nodes.soc.vars.ansible_connection" and "reserved" in p for p in probs)
    assert any(p.split(": ")[1] == "nodes.soc.vars.rangectl_team" for p in probs)


def test_the_inventory_keeps_rangectls_values_even_if_validation_is_bypassed(mini: Path):
    sc = load_scenario(mini)
    soc = sc.nodes["soc"]
    hostile = soc.model_copy(
        update={"vars": {"ansible_connection": "local", "rangectl_team": 1, "ANSIBLE_HOST": "x",
                         "ansible_docker_host": "tcp://10.0.0.1:2375", "kept": "yes"}}
    )
    sc = sc.model_copy(update={"nodes": {**sc.nodes, "soc": hostile}})
    inv, _plays = build_inventory("trust-range", sc, plan(sc, 2), mini)
    h = inv["all"]["hosts"]["t2-soc"]
    assert h["ansible_connection"] == "community.docker.docker_api"
    assert h["rangectl_team"] == 2
    assert h["ansible_host"].endswith("soc") and "t2" in h["ansible_host"]
    assert "ansible_docker_host" not in h and "ANSIBLE_HOST" not in h
    assert h["kept"] == "yes"  # ordinary vars still reach the playbooks


# --- paths --------------------------------------------------------------------------------


def test_playbook_path_out_of_the_folder_is_refused(mini: Path):
    _replace(mini, "provision: [playbooks/stamp.yml]\n", "provision: [../../../../../../../../etc/passwd]\n")
    probs = _problems(mini)
    assert len(probs) == 1, probs
    m = LINE.match(probs[0])
    assert m and m["path"] == "nodes.portal.provision[0]" and m["line"] == "18"
    assert "resolves to /etc/passwd, outside the scenario's folder" in m["msg"]


def test_symlink_inside_the_folder_pointing_out_is_refused(mini: Path):
    (mini.parent / "playbooks" / "innocent.yml").symlink_to("/etc/passwd")
    _replace(mini, "provision: [playbooks/stamp.yml]\n", "provision: [playbooks/innocent.yml]\n")
    probs = _problems(mini)
    assert len(probs) == 1 and "resolves to /etc/passwd, outside" in probs[0], probs


def _pcap_inject(mini: Path, file: str) -> None:
    _replace(
        mini,
        "injects:\n",
        f"injects:\n  - {{id: replay, at: 20s, traffic: {{kind: pcap, from: scanner, file: {file}, map: {{}}}}}}\n",
    )


@pytest.mark.parametrize("how", ["absolute", "symlink"])
def test_pcap_at_etc_shadow_is_refused(mini: Path, how: str):
    if how == "absolute":
        ref = "/etc/shadow"
    else:
        (mini.parent / "capture.pcap").symlink_to("/etc/shadow")
        ref = "capture.pcap"
    _pcap_inject(mini, ref)
    probs = [p for p in _problems(mini) if "injects[0].traffic.file" in p]
    assert probs and "resolves to /etc/shadow, outside" in probs[0], _problems(mini)


def test_pcap_inside_the_project_still_validates(mini: Path):
    _pcap_inject(mini, "pcaps/portscan.pcap")
    assert not [p for p in _problems(mini) if "traffic.file" in p]


# --- capabilities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "caps,role,expect",
    [
        ("[ALL]", "blue", "capability ALL is never granted"),
        ("[SYS_ADMIN]", "red", "capability SYS_ADMIN is never granted"),
        ("[CAP_SYS_MODULE]", "target", "capability CAP_SYS_MODULE is never granted"),
        ("[SYS_PTRACE]", "blue", "never granted"),
        ("[DAC_READ_SEARCH]", "infra", "never granted"),
        ("[SYS_NICE]", "blue", "not allowed on a blue node"),
        ("[WIZARD]", "blue", "unknown capability WIZARD"),
    ],
)
def test_dangerous_capabilities_are_refused(mini: Path, caps: str, role: str, expect: str):
    plain = SOC.replace(", operate: [gw]", "")  # only a blue node operates others
    _replace(mini, SOC, plain.replace("role: blue", f"role: {role}")[:-1] + f", capabilities: {caps}}}")
    probs = [p for p in _problems(mini) if ": nodes.soc.capabilities" in p]
    assert len(probs) == 1, _problems(mini)
    m = LINE.match(probs[0])
    assert m and m["path"] == "nodes.soc.capabilities[0]" and m["line"] == "20" and expect in m["msg"], probs


def test_networking_capabilities_stay_valid():
    assert capability_problem("NET_ADMIN", "blue") is None
    assert capability_problem("NET_RAW", "blue") is None
    assert capability_problem("SYS_NICE", "target") is None
    assert capability_problem("NET_BROADCAST", "red") is None


def test_every_shipped_scenario_passes_the_trust_rules():
    for f in [*scenario_files(), FIXTURES / "mini-range.yaml"]:
        assert _problems(f) == [], f


# --- host-side plays: the static scan -------------------------------------------------------

TASK_HEAD = "- hosts: \"{{ rangectl_hosts | default('all') }}\"\n  gather_facts: false\n  tasks:\n"

HOSTILE = {
    "delegate-localhost": (TASK_HEAD + "    - name: own the host\n      ansible.builtin.shell: id > /tmp/x\n"
                           "      delegate_to: localhost\n", 6, "delegate_to", "runs the task on the trainer's host"),
    "delegate-loopback6": (TASK_HEAD + "    - shell: id\n      delegate_to: '::1'\n", 5, "delegate_to", "trainer's host"),
    "delegate-templated": (TASK_HEAD + "    - shell: id\n      delegate_to: \"{{ target }}\"\n", 5, "delegate_to",
                           "cannot be checked"),
    "run-once-delegate": (TASK_HEAD + "    - shell: id\n      run_once: true\n      delegate_to: 127.0.0.1\n", 6,
                          "delegate_to", "trainer's host"),
    "play-connection-local": ("- hosts: \"{{ rangectl_hosts }}\"\n  connection: local\n  tasks:\n    - shell: id\n",
                              2, "connection", "connection: local"),
    "task-connection-fqcn": (TASK_HEAD + "    - shell: id\n      connection: ansible.builtin.local\n", 5, "connection",
                             "ansible.builtin.local"),
    "hosts-localhost": ("- hosts: localhost\n  tasks:\n    - shell: id\n", 1, "hosts", "runs on the trainer's host"),
    "hosts-all-plus-localhost": ("- hosts: all:localhost\n  tasks:\n    - shell: id\n", 1, "hosts", "trainer's host"),
    "hosts-templated-plus-localhost": ("- hosts: \"{{ rangectl_hosts }}:localhost\"\n  tasks:\n    - shell: id\n", 1,
                                       "hosts", "trainer's host"),
    "hosts-templated-concat": ("- hosts: \"{{ rangectl_hosts ~ ',localhost' }}\"\n  tasks:\n    - shell: id\n", 1,
                               "hosts", "cannot be checked"),
    "hosts-all": ("- hosts: all\n  tasks:\n    - shell: id\n", 1, "hosts", "would include the trainer's host"),
    "local-action": (TASK_HEAD + "    - local_action: ansible.builtin.command id\n", 4, "local_action",
                     "runs on the trainer's host"),
    "action-fetch": (TASK_HEAD + "    - action: fetch src=/etc/passwd dest=/root/x flat=yes\n", 4, "action",
                     "writes files on the trainer's host"),
    "lookup-pipe": (TASK_HEAD + "    - debug: {msg: \"{{ lookup('pipe', 'id') }}\"}\n", 4, "msg",
                    "lookup('pipe') runs on the trainer's host"),
    "query-file": (TASK_HEAD + "    - debug: {msg: \"{{ query('ansible.builtin.file', '/etc/shadow') }}\"}\n", 4, "msg",
                   "query('ansible.builtin.file')"),
    "q-env-in-when": (TASK_HEAD + "    - shell: id\n      when: q('env', 'HOME') | length > 0\n", 5, "when", "q('env')"),
    "with-fileglob": (TASK_HEAD + "    - debug: {msg: \"{{ item }}\"}\n      with_fileglob: ['/root/*']\n", 5,
                      "with_fileglob", "'fileglob' lookup"),
    "fetch": (TASK_HEAD + "    - ansible.builtin.fetch: {src: /etc/passwd, dest: /root/.ssh/authorized_keys, flat: true}\n",
              4, "ansible.builtin.fetch", "writes files on the trainer's host"),
    "add-host": (TASK_HEAD + "    - add_host: {name: pwn, ansible_connection: local}\n", 4, "add_host", "inventory"),
    "set-fact-connection": (TASK_HEAD + "    - set_fact: {ansible_connection: local}\n", 4, "ansible_connection",
                            "ansible_* variables"),
    "play-vars-connection": ("- hosts: \"{{ rangectl_hosts }}\"\n  vars:\n    ansible_connection: local\n  tasks: []\n",
                             3, "ansible_connection", "ansible_* variables"),
    "copy-host-file": (TASK_HEAD + "    - copy: {src: /etc/shadow, dest: /tmp/shadow}\n", 4, "copy",
                       "resolves to /etc/shadow"),
    "copy-folder-with-link-out": (TASK_HEAD + "    - copy: {src: files/, dest: /srv/}\n", 4, "copy", "resolves to /etc/shadow"),
    "python-internals": (TASK_HEAD + "    - debug: {msg: \"{{ self.__init__.__globals__ }}\"}\n", 4, "msg",
                         "Python internals"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_host_side_plays_are_refused_with_file_line_and_key(mini: Path, case: str):
    body, line, key, msg = HOSTILE[case]
    (mini.parent / "playbooks" / "files").mkdir()
    (mini.parent / "playbooks" / "files" / "motd").write_text("hello\n")
    (mini.parent / "playbooks" / "files" / "motd2").symlink_to("/etc/shadow")
    (mini.parent / "playbooks" / "stamp.yml").write_text(body)
    probs = _problems(mini)
    assert probs, f"{case}: not refused"
    pb = str((mini.parent / "playbooks" / "stamp.yml").resolve())
    hits = [LINE.match(p) for p in probs]
    assert all(hits), probs
    assert any(
        h["file"] == pb and h["line"] == str(line) and h["path"] == key and msg in h["msg"] for h in hits
    ), (case, probs)
    assert all("--trust-playbooks" in p for p in probs)
    # the trainer's explicit trust lets the same scenario validate
    assert _problems(mini, check_playbooks=False) == []


def test_included_task_files_and_templates_are_scanned(mini: Path):
    pbdir = mini.parent / "playbooks"
    (pbdir / "tasks").mkdir()
    (pbdir / "tasks" / "more.yml").write_text("- shell: id > /tmp/pwned\n  delegate_to: localhost\n")
    (pbdir / "templates").mkdir()
    (pbdir / "templates" / "page.j2").write_text("<p>{{ lookup('pipe', 'cat /etc/shadow') }}</p>\n")
    (pbdir / "stamp.yml").write_text(
        TASK_HEAD + "    - include_tasks: tasks/more.yml\n    - template: {src: page.j2, dest: /srv/page}\n"
    )
    probs = _problems(mini)
    assert any(str((pbdir / "tasks" / "more.yml").resolve()) + ":2:3: delegate_to:" in p for p in probs), probs
    assert any(":5:7: template: template page.j2: lookup('pipe')" in p for p in probs), probs


def test_what_ansible_loads_by_itself_beside_a_playbook_is_scanned(mini: Path):
    """Plugin folders (Python run on the controller), group_vars/host_vars, and roles with
    their tasks_from and meta dependencies."""
    pbdir = mini.parent / "playbooks"
    (pbdir / "filter_plugins").mkdir()
    (pbdir / "filter_plugins" / "x.py").write_text("import os; os.system('id > /tmp/pwned')\n")
    (pbdir / "group_vars").mkdir()
    (pbdir / "group_vars" / "all.yml").write_text("ansible_connection: local\n")
    role = pbdir / "roles" / "web"
    (role / "tasks").mkdir(parents=True)
    (role / "tasks" / "main.yml").write_text("- debug: {msg: hi}\n")
    (role / "tasks" / "evil.yml").write_text("- shell: id\n  delegate_to: localhost\n")
    (role / "meta").mkdir()
    (role / "meta" / "main.yml").write_text("dependencies: [{role: dep}]\n")
    dep = pbdir / "roles" / "dep" / "tasks"
    dep.mkdir(parents=True)
    (dep / "main.yml").write_text("- debug: {msg: \"{{ lookup('env', 'HOME') }}\"}\n")
    (pbdir / "stamp.yml").write_text(TASK_HEAD + "    - include_role: {name: web, tasks_from: evil}\n")
    probs = _problems(mini)
    joined = "\n".join(probs)
    assert f"{pbdir / 'filter_plugins'}:1:1: filter_plugins: Ansible loads plugins" in joined, joined
    assert f"{pbdir / 'group_vars' / 'all.yml'}:1:1: ansible_connection: " in joined, joined
    assert f"{(role / 'tasks' / 'evil.yml').resolve()}:2:3: delegate_to:" in joined, joined
    assert f"{(dep / 'main.yml').resolve()}:1:11: msg: lookup('env')" in joined, joined


def test_an_import_out_of_the_allowed_folders_is_refused(mini: Path, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "evil.yml"
    elsewhere.write_text("- hosts: localhost\n  tasks: [{shell: id}]\n")
    (mini.parent / "playbooks" / "stamp.yml").write_text(f"- import_playbook: {elsewhere}\n")
    probs = _problems(mini)
    assert any(":1:3: import_playbook: file" in p and "outside the scenario's folder" in p for p in probs), probs


def test_benign_playbooks_scan_clean():
    books = sorted((ROOT / "playbooks").rglob("*.yml"))
    assert books
    assert scan_playbooks(books, ROOT / "scenarios" / "tet-portal.yaml") == []


def test_validate_cli_refuses_the_findings_playbook_in_one_line_each(mini: Path):
    (mini.parent / "playbooks" / "stamp.yml").write_text(HOSTILE["delegate-localhost"][0])
    p = run_cli("validate", str(mini))
    assert p.returncode == 1
    assert "Traceback" not in p.stdout + p.stderr
    line = next(ln for ln in (p.stdout + p.stderr).splitlines() if "delegate_to" in ln)
    assert LINE.match(line) and ":6:7: delegate_to: delegate_to: localhost runs the task on the trainer's host" in line


def test_provision_refuses_host_side_plays_before_ansible_runs(mini: Path, monkeypatch):
    """Even called directly (no `up`, no validate), provision() never starts Ansible for them."""
    import ansible_runner

    (mini.parent / "playbooks" / "stamp.yml").write_text(HOSTILE["delegate-localhost"][0])
    sc = load_scenario(mini)  # loading to run does not scan; provision must
    monkeypatch.setattr(ansible_runner, "run", lambda **kw: pytest.fail("ansible ran"))
    with pytest.raises(ScenarioError, match=r"stamp.yml:6:7: delegate_to: "):
        provision("trust-range", sc, plan(sc, 1), mini)


# --- host-side plays: the run-time guards ---------------------------------------------------


def _ansible(tmp_path: Path, playbook: str, layers: set[str]) -> subprocess.CompletedProcess:
    """ansible-playbook with the run-time guards in ``layers`` ("inventory", "plugins"); its only
    inventory host, `node`, is this machine (so an unguarded run shows what would happen)."""
    tmp_path.mkdir()
    inv: dict = {"all": {"hosts": {"node": {"ansible_connection": "local"}}, "children": {}}}
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "False",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False", "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    if layers:
        env.update(write_guard_plugins(tmp_path / "guard"))
    if "inventory" in layers:
        guard_inventory(inv)
    if "plugins" not in layers:  # only the inventory's refusing connection stays
        for f in (tmp_path / "guard").rglob("*.py"):
            if f.name != "rangectl_refuse.py":
                f.unlink()
    (tmp_path / "hosts.yml").write_text(pyyaml.safe_dump(inv))
    (tmp_path / "pb.yml").write_text(playbook)
    exe = Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run([str(exe), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "pb.yml")],
                          capture_output=True, text=True, env=env, timeout=240)


def _marks(tmp_path: Path, *names: str) -> dict[str, Path]:
    return {k: tmp_path / f"pwned-{k}" for k in names}


def test_runtime_guards_stop_what_the_scan_might_miss(tmp_path: Path):
    """Without --trust-playbooks the run itself refuses: the implicit localhost, `connection: local`
    and controller-side lookups. With trust (no guards) the very same playbook writes the files,
    so it is the guards, not the playbook, that stop it."""
    marks = _marks(tmp_path, "delegate", "connection", "lookup")
    playbook = (
        "- hosts: node\n  gather_facts: false\n  tasks:\n"
        f"    - {{shell: 'id > {marks['delegate']}', delegate_to: localhost, ignore_unreachable: true}}\n"
        f"    - {{debug: {{msg: \"{{{{ lookup('pipe', 'id > {marks['lookup']}') }}}}\"}}, ignore_errors: true}}\n"
        f"    - {{shell: 'id > {marks['connection']}', connection: local}}\n"
    )
    r = _ansible(tmp_path / "plugins", playbook, {"plugins"})
    assert r.returncode != 0
    assert "rangectl refuses to run this on the trainer's host" in r.stdout
    assert not any(m.exists() for m in marks.values()), r.stdout[-2000:]
    t = _ansible(tmp_path / "trusted", playbook, set())
    assert t.returncode == 0, t.stdout[-2000:]
    assert all(m.read_text().startswith("uid=") for m in marks.values())


def test_the_inventory_names_the_host_so_delegation_cannot_fall_back_to_local(tmp_path: Path):
    """The inventory layer alone (no shadowed `local`): localhost, 127.0.0.1 and ::1 are inventory
    hosts whose connection refuses, so delegating to them never gets Ansible's implicit local one."""
    marks = _marks(tmp_path, "localhost", "v4", "v6")
    playbook = "- hosts: node\n  gather_facts: false\n  tasks:\n" + "".join(
        f"    - {{shell: 'id > {marks[k]}', delegate_to: '{h}', ignore_unreachable: true}}\n"
        for k, h in (("localhost", "localhost"), ("v4", "127.0.0.1"), ("v6", "::1"))
    )
    r = _ansible(tmp_path / "inventory", playbook, {"inventory"})
    assert r.stdout.count("rangectl refuses to run this on the trainer's host") >= 3, r.stdout[-2000:]
    assert not any(m.exists() for m in marks.values()), r.stdout[-2000:]


# --- finding 9: non-regular scenario files ---------------------------------------------------


def test_a_fifo_named_yaml_returns_at_once(tmp_path: Path):
    fifo = tmp_path / "scenario.yaml"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    p = subprocess.run([*rangectl_cmd(), "validate", str(fifo)], capture_output=True, text=True, timeout=20)
    took = time.monotonic() - t0
    assert took < 2 + 3, took  # 2 s for rangectl; the rest is the interpreter starting on a busy box
    assert p.returncode == 1
    assert f"{fifo}:1:1: is a FIFO, not a scenario file (a regular file)" in p.stdout + p.stderr
    # and in process, well under 2 s
    t0 = time.monotonic()
    res = validate_file(fifo)
    assert time.monotonic() - t0 < 2 and "is a FIFO" in str(res.problems[0])


def test_dev_zero_is_refused_without_reading_it():
    p = subprocess.run([*rangectl_cmd(), "validate", "/dev/zero"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "MemoryError" not in p.stderr and "Traceback" not in p.stderr
    assert "/dev/zero:1:1: is a character device, not a scenario file (a regular file)" in p.stdout + p.stderr


def test_oversized_and_directory_scenarios_are_refused(tmp_path: Path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(50_000_000)  # sparse: costs nothing on disk
    assert "a scenario file may be at most 1,000,000 bytes" in str(validate_file(big).problems[0])
    assert "is a directory" in str(validate_file(tmp_path).problems[0])
    with pytest.raises(ScenarioError, match="is a character device"):
        load_scenario("/dev/zero")


# --- --trust-playbooks reaches everything that provisions -------------------------------------


@pytest.mark.parametrize("cmd", ["up", "selftest"])
def test_trust_playbooks_is_an_option_of_every_command_that_provisions(cmd: str):
    p = run_cli(cmd, "--help", env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0 and "--trust-playbooks" in p.stdout


def test_selftest_passes_the_trainers_trust_to_up(mini: Path, monkeypatch):
    from rangectl import ranges
    from rangectl.errors import RangeError
    from rangectl.selftest import run_selftest

    seen: list[bool] = []

    def fake_up(*a, **kw):
        seen.append(kw.get("trust_playbooks"))
        raise RangeError("stop here")

    monkeypatch.setattr(ranges, "up", fake_up)
    monkeypatch.setattr(ranges, "down", lambda name: (0, 0))
    def no_engine():
        raise RuntimeError("no engine in a unit test")

    monkeypatch.setattr("rangectl.backend.engine.client", no_engine)
    shutil.copy(FIXTURES / "mini-range.solution.yaml", mini.parent)
    for trust in (False, True):
        assert run_selftest(mini, trust_playbooks=trust).error == "stop here"
    assert seen == [False, True]
