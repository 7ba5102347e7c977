"""The execution seam (rangectl.backend.nodeexec): plain data in and out, wall-clock deadlines,
errors that keep their class, jobs that really run inside the node's namespace, pinned ports
that notice a re-created node — and a non-local engine refused with one line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from rangectl.backend.base import NodeRef
from rangectl.backend.engine import local_endpoint_problem
from rangectl.backend.nodeexec import (
    Job,
    JobControl,
    JobError,
    LocalNodeExec,
    job_name,
    node_job,
    resolve,
    run_here,
)
from rangectl.errors import EnvironmentProblem, NotFound, RangeError
from tests.conftest import run_cli

REF = NodeRef("r", 1, "n")


@node_job
def echo_job(ctl: JobControl, value: object) -> object:
    return {"value": value, "tuple": (1, 2)}


@node_job
def netns_job(ctl: JobControl) -> list[int]:
    st = os.stat("/proc/thread-self/ns/net")
    return [st.st_dev, st.st_ino]


@node_job
def failing_job(ctl: JobControl, kind: str) -> None:
    if kind == "notfound":
        raise NotFound("no such thing", fix="look elsewhere")
    if kind == "os":
        raise OSError(2, "No such file or directory", "/x")
    raise ValueError("plain python error")


@node_job
def waiting_job(ctl: JobControl) -> dict[str, object]:
    ctl.ready()
    t0 = time.monotonic()
    stopped = ctl.wait()
    return {"stopped": stopped, "waited": time.monotonic() - t0}


@node_job
def live_object_job(ctl: JobControl) -> object:
    return threading.Event()


def not_a_job(ctl: JobControl) -> int:
    return 1


def test_a_job_names_a_marked_rangectl_function_only():
    assert job_name(echo_job) == "tests.unit.test_nodeexec:echo_job"
    with pytest.raises(ValueError, match="not a node job"):
        job_name(not_a_job)
    # a job crossing the seam names rangectl code only, and only functions marked as jobs
    with pytest.raises(JobError, match="does not name a rangectl node job"):
        resolve("tests.unit.test_nodeexec:echo_job")
    with pytest.raises(JobError, match="does not name"):
        resolve("os:system")
    with pytest.raises(JobError, match="is not a node job"):
        resolve("rangectl.backend.nodeexec:plain")
    with pytest.raises(JobError, match="no node job"):
        resolve("rangectl.backend.nodeexec:nothing_here")
    assert resolve("rangectl.drill.checks:probe_job").__name__ == "probe_job"


def _local(monkeypatch, locate):
    # the tests' own jobs live outside rangectl: let resolve find them (the marker is still checked)
    import rangectl.backend.nodeexec as ne

    real = ne.resolve

    def resolve_tests(name: str):
        if name.startswith("tests."):
            import importlib

            module, _, attr = name.partition(":")
            fn = getattr(importlib.import_module(module), attr)
            assert getattr(fn, "__rangectl_node_job__", False)
            return fn
        return real(name)

    monkeypatch.setattr(ne, "resolve", resolve_tests)
    return LocalNodeExec(locate)


def test_arguments_and_results_cross_as_plain_data(monkeypatch):
    ex = _local(monkeypatch, lambda ref: ("self", os.getpid()))
    assert ex.run(REF, Job.of(echo_job, value={"a": [1, "x"]})) == {"value": {"a": [1, "x"]}, "tuple": [1, 2]}
    with pytest.raises(JobError, match="arguments of .* not plain data"):
        ex.start(REF, Job.of(echo_job, value=threading.Event()))
    with pytest.raises(JobError, match="result of .* not plain data"):
        ex.run(REF, Job.of(live_object_job))
    assert Job.of(echo_job, deadline=12.5, value=1).as_dict() == {
        "fn": "tests.unit.test_nodeexec:echo_job", "args": {"value": 1}, "deadline": 12.5,
    }  # fmt: skip


def test_errors_keep_their_class_and_fix(monkeypatch):
    ex = _local(monkeypatch, lambda ref: ("self", os.getpid()))
    with pytest.raises(NotFound) as ei:
        ex.run(REF, Job.of(failing_job, kind="notfound"))
    assert ei.value.message == "no such thing" and ei.value.fix == "look elsewhere" and ei.value.exit_code == 4
    with pytest.raises(JobError, match="failing_job in node 'n' of team 1 of range 'r': FileNotFoundError: No such file or directory: /x"):
        ex.run(REF, Job.of(failing_job, kind="os"))
    with pytest.raises(JobError, match="ValueError: plain python error"):
        ex.run(REF, Job.of(failing_job, kind="value"))


def test_stop_deadline_and_ready(monkeypatch):
    ex = _local(monkeypatch, lambda ref: ("self", os.getpid()))
    job = ex.start(REF, Job.of(waiting_job))
    job.wait_ready(5)
    assert not job.done()
    job.stop()
    res = job.result(5)
    assert res["stopped"] is True and job.done()
    # the deadline is wall-clock and absolute: it ends a job nobody stops
    t0 = time.monotonic()
    res = ex.run(REF, Job.of(waiting_job, deadline=time.time() + 0.3))
    assert res["stopped"] is True and 0.2 < time.monotonic() - t0 < 3
    ctl = JobControl(deadline=time.time() - 1)
    assert ctl.stopped() and ctl.remaining() == 0.0
    assert JobControl().remaining() is None and not JobControl().stopped()


def test_run_here_is_the_same_contract():
    assert run_here(Job("rangectl.drill.checks:probe_job", {"kind": "tcp", "args": ["127.0.0.1", 9, 0.2]}))[0] is False
    with pytest.raises(JobError, match="not plain data"):
        run_here(Job("rangectl.drill.checks:probe_job", {"kind": "tcp", "args": [object()]}))


def test_a_stopped_node_is_an_error_before_anything_runs(monkeypatch):
    def locate(ref):
        raise RangeError(f"{ref} is not running (exited)")

    ex = _local(monkeypatch, locate)
    with pytest.raises(RangeError, match="not running"):
        ex.run(REF, Job.of(echo_job, value=1))
    with pytest.raises(RangeError, match="not running"):
        ex.attach(REF)


@pytest.fixture
def two_namespaces():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (ip netns)")
    names = [f"rc-ne-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    procs = []
    try:
        for n in names:
            subprocess.run(["ip", "netns", "add", n], check=True, capture_output=True)
            subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True, capture_output=True)
            procs.append(subprocess.Popen(["ip", "netns", "exec", n, "sleep", "120"]))
        for p in procs:
            for _ in range(50):
                if Path(f"/proc/{p.pid}/ns/net").exists() and os.stat(f"/proc/{p.pid}/ns/net") != os.stat(
                    "/proc/self/ns/net"
                ):
                    break
                time.sleep(0.05)
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def test_jobs_run_in_the_nodes_namespace_and_ports_notice_a_new_node(monkeypatch, two_namespaces):
    a, b = two_namespaces
    where = {"pid": a}
    ex = _local(monkeypatch, lambda ref: (f"c{where['pid']}", where["pid"]))
    st = os.stat(f"/proc/{a}/ns/net")
    assert ex.run(REF, Job.of(netns_job)) == [st.st_dev, st.st_ino]
    assert ex.run(REF, Job.of(netns_job)) != [os.stat("/proc/self/ns/net").st_dev, os.stat("/proc/self/ns/net").st_ino]
    # a port pinned to the node: a listener made there is reached only from there
    port = ex.attach(REF)
    try:
        srv = port.listen("127.0.0.1", 8799, 4)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", 8799), timeout=1).close()  # not in this namespace
        c = port.tcp_socket()
        c.setblocking(True)
        c.settimeout(2)
        c.connect(("127.0.0.1", 8799))
        c.close()
        c = port.connect("127.0.0.1", 8799, 2)  # the same, made and connected in the node
        assert c.getpeername() == ("127.0.0.1", 8799) and not c.getblocking()
        c.close()
        srv.close()
        with pytest.raises(ConnectionRefusedError):  # nobody listens there any more
            port.connect("127.0.0.1", 8799, 2)
        # the node is re-created (another namespace): a new attach has another identity
        where["pid"] = b
        again = ex.attach(REF)
        assert again.identity != port.identity
        again.close()
    finally:
        port.close()


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        (None, False),
        ("", False),
        ("unix:///var/run/docker.sock", False),
        ("tcp://10.0.0.5:2375", True),
        ("ssh://root@engine-2", True),
        ("10.0.0.5:2375", True),
    ],
)
def test_only_a_local_engine_is_accepted(host, refused):
    why = local_endpoint_problem(host)
    assert (why is not None) == refused
    if refused:
        assert host in why and "\n" not in why


def test_every_engine_command_refuses_a_remote_docker_host(tmp_path):
    env = {**os.environ, "DOCKER_HOST": "ssh://root@engine-2", "RANGECTL_HOME": str(tmp_path)}
    for args in (["status", "nosuch"], ["ls"], ["down", "nosuch"]):
        r = run_cli(*args, env=env, timeout=60)
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "ssh://root@engine-2 is not an engine on this machine" in lines[0], r.stderr
    r = run_cli("doctor", "--json", env=env, timeout=60)
    assert r.returncode != 0 and "is not an engine on this machine" in r.stdout


def test_environment_problem_names_the_fix(monkeypatch):
    from rangectl.backend import engine

    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2375")
    engine.client.cache_clear()
    try:
        with pytest.raises(EnvironmentProblem, match="unset DOCKER_HOST"):
            engine.client()
    finally:
        engine.client.cache_clear()
