"""Provisioning survives the connection losing an exec's answer (community.docker#644): Ansible's
``docker_api`` connection over an ``ssh://`` engine once returned nothing for the temporary-
directory command, the task failed before its module ran, and the whole `up` was rolled back.

Real Ansible here, through ``run_playbooks``: a connection plugin that is Ansible's ``local`` one
but drops the output of that command, once or always, for the hosts it is told to.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from rangectl.backend.provision import TRANSPORT_GLITCH, run_playbooks, transport_glitches

PLUGIN = textwrap.dedent(
    '''
    import os
    from pathlib import Path

    from ansible.plugins.connection import local

    DOCUMENTATION = local.DOCUMENTATION.replace("name: local", "name: glitchy", 1)


    class Connection(local.Connection):
        """local, but the answer of the temporary-directory command of the hosts in GLITCH_ONCE
        is lost the first time, and every time for the hosts in GLITCH_ALWAYS."""

        transport = "glitchy"

        def exec_command(self, cmd, in_data=None, sudoable=True):
            rc, out, err = super().exec_command(cmd, in_data, sudoable)
            host = self._play_context.remote_addr
            if "ansible-tmp-" in cmd and "mkdir" in cmd:
                mark = Path(os.environ["GLITCH_DIR"]) / host
                if host in os.environ.get("GLITCH_ALWAYS", "").split(","):
                    return rc, b"", err
                if host in os.environ.get("GLITCH_ONCE", "").split(",") and not mark.exists():
                    mark.touch()
                    return rc, b"", err
            return rc, out, err
    '''
)

BOOK = textwrap.dedent(
    """
    - hosts: "{{ rangectl_hosts }}"
      gather_facts: false
      tasks:
        - name: refuse where told to
          ansible.builtin.fail: {msg: a real failure}
          when: fail_here | default(false)
        - name: write the file
          ansible.builtin.copy:
            dest: "{{ out_dir }}/{{ inventory_hostname }}"
            content: "provisioned {{ inventory_hostname }}\\n"
    """
)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "glitchy.py").write_text(PLUGIN)
    (tmp_path / "marks").mkdir()
    (tmp_path / "out").mkdir()
    book = tmp_path / "book.yml"
    book.write_text(BOOK)
    monkeypatch.setenv("ANSIBLE_CONNECTION_PLUGINS", str(plugins))
    monkeypatch.setenv("GLITCH_DIR", str(tmp_path / "marks"))
    monkeypatch.delenv("GLITCH_ONCE", raising=False)
    monkeypatch.delenv("GLITCH_ALWAYS", raising=False)

    def run(fail: set[str] = frozenset()):
        hosts = {
            h: {
                "ansible_connection": "glitchy",
                "ansible_host": h,
                "ansible_python_interpreter": sys.executable,
                "out_dir": str(tmp_path / "out"),
                "fail_here": h in fail,
            }
            for h in ("t1-a", "t2-a")
        }
        inventory = {"all": {"hosts": hosts, "children": {"pb": {"hosts": dict.fromkeys(hosts)}}}}
        seen: list[tuple[str, str]] = []
        res = run_playbooks(
            inventory, [(book, "pb")], book, note=lambda k, h, t: seen.append((k, h)),
            workdir=tmp_path / "work", trust_playbooks=True,
        )  # fmt: skip
        return res, seen, sorted(p.name for p in (tmp_path / "out").iterdir())

    return run


def test_a_host_whose_exec_answer_was_lost_is_provisioned_again_and_the_run_succeeds(lab, monkeypatch):
    monkeypatch.setenv("GLITCH_ONCE", "t1-a")
    res, seen, written = lab()
    assert res.ok, res.failures
    assert res.retried == ["t1-a"]
    assert ("failed", "t1-a") in seen and ("retry", "t1-a") in seen
    assert written == ["t1-a", "t2-a"]  # the lost host's task ran on the second pass


def test_a_glitch_that_persists_fails_after_one_retry_with_ansibles_message(lab, monkeypatch):
    monkeypatch.setenv("GLITCH_ALWAYS", "t1-a")
    res, seen, written = lab()
    assert not res.ok and res.retried == ["t1-a"]
    assert [f["host"] for f in res.failures] == ["t1-a"]
    assert TRANSPORT_GLITCH.search(res.failures[0]["message"])  # the signature is Ansible's real text
    assert [k for k, h in seen if k == "retry"] == ["retry"]  # once
    assert written == ["t2-a"]


def test_a_real_failure_beside_a_glitch_is_reported_and_nothing_runs_again(lab, monkeypatch):
    monkeypatch.setenv("GLITCH_ONCE", "t1-a")
    res, seen, written = lab(fail={"t2-a"})
    assert not res.ok and res.retried == []
    assert {f["host"] for f in res.failures} == {"t1-a", "t2-a"}
    assert "retry" not in [k for k, _ in seen]
    assert written == []


def test_transport_glitches_needs_every_failure_to_be_one():
    glitch = {"host": "h1", "task": "x", "message": "failed to resolve remote temporary directory from ansible-tmp-1: `( umask 77 ...` returned empty string"}  # noqa: E501
    other = {"host": "h2", "task": "x", "message": "Failed to connect to the host via docker"}
    assert transport_glitches([glitch, dict(glitch, host="h0")]) == ["h0", "h1"]
    assert transport_glitches([glitch, other]) == []
    assert transport_glitches([]) == []
