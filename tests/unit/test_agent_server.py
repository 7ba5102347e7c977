"""rangectl's engine agent (backend/agent_server.py), its requests served in this process over a
socket pair, with no engine: jobs, stop requests, errors, connections and listeners. Every
address is 127.0.0.1 and every listener one the test made."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest

from rangectl.backend import agent_server
from rangectl.backend.agent import AgentJob


def serve_one() -> socket.socket:
    """The controller's end of one agent connection (the agent's end handled on a thread)."""
    ours, theirs = socket.socketpair()
    threading.Thread(target=agent_server.handle, args=(theirs,), daemon=True).start()
    ours.settimeout(10)
    return ours


def lines(sock: socket.socket, n: int) -> list[dict]:
    buf = b""
    while buf.count(b"\n") < n:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return [json.loads(x) for x in buf.split(b"\n") if x.strip()]


def send(sock: socket.socket, obj: dict) -> None:
    sock.sendall(json.dumps(obj).encode() + b"\n")


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv
    srv.close()


def test_a_job_runs_and_answers_its_result(listener):
    port = listener.getsockname()[1]
    s = serve_one()
    send(s, {"op": "job", "pid": None,
             "job": {"fn": "rangectl.drill.checks:probe_job", "args": {"kind": "tcp", "args": ["127.0.0.1", port, 2]}}})  # fmt: skip
    out = lines(s, 1)
    assert out[-1] == {"value": [True, f"tcp 127.0.0.1:{port} open"]}


def test_a_job_error_comes_back_as_its_class_and_message():
    s = serve_one()
    send(s, {"op": "job", "pid": None, "job": {"fn": "rangectl.nosuch:job", "args": {}}})
    err = lines(s, 1)[-1]["error"]
    assert err["type"] == "rangectl.backend.nodeexec:JobError" and "no node job 'rangectl.nosuch:job'" in err["message"]
    s = serve_one()
    send(s, {"op": "job", "pid": 999999999, "job": {"fn": "rangectl.drill.checks:probe_job", "args": {}}})
    err = lines(s, 1)[-1]["error"]
    assert "process 999999999 is gone" in err["message"]


def test_a_request_it_does_not_know_is_refused():
    s = serve_one()
    send(s, {"op": "exec", "argv": ["id"]})
    assert "unknown op 'exec'" in lines(s, 1)[-1]["error"]["message"]
    s = serve_one()
    s.sendall(b"not json\n")
    assert lines(s, 1)[-1]["error"]["type"].startswith("json")


def test_a_long_job_says_ready_then_stops_when_asked():
    s = serve_one()
    deadline = time.time() + 30
    # count_arrivals: ready once listening, then runs until asked to stop
    send(s, {"op": "job", "pid": None, "job": {"fn": "rangectl.traffic.jobs:count_arrivals", "deadline": deadline,
                                               "args": {"sources": ["127.0.0.9"], "destinations": ["127.0.0.9"],
                                                        "grace": 0.1}}})  # fmt: skip
    assert lines(s, 1) == [{"ready": True}]
    t = time.monotonic()
    s.sendall(b"stop\n")
    out = lines(s, 1)
    assert time.monotonic() - t < 5
    assert out[-1]["value"]["packets"] == 0


def test_the_controller_going_away_stops_the_job():
    s = serve_one()
    send(s, {"op": "job", "pid": None, "job": {"fn": "rangectl.traffic.jobs:count_arrivals", "deadline": time.time() + 60,
                                               "args": {"sources": ["127.0.0.9"], "destinations": ["127.0.0.9"],
                                                        "grace": 0.1}}})  # fmt: skip
    assert lines(s, 1) == [{"ready": True}]
    before = threading.active_count()
    s.close()  # no stop line: the agent must not keep the job running for nobody
    deadline = time.monotonic() + 10
    while threading.active_count() >= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() < before


def test_connect_bridges_a_connection_made_there(listener):
    port = listener.getsockname()[1]
    s = serve_one()
    send(s, {"op": "connect", "pid": None, "host": "127.0.0.1", "port": port, "timeout": 2})
    assert s.recv(64) == b'{"ok": true}\n'
    peer, _ = listener.accept()
    s.sendall(b"ping")
    assert peer.recv(4) == b"ping"
    peer.sendall(b"pong")
    assert s.recv(4) == b"pong"
    peer.close()
    assert s.recv(4) == b""  # the far end closed: so does the bridge
    s = serve_one()
    listener.close()
    send(s, {"op": "connect", "pid": None, "host": "127.0.0.1", "port": port, "timeout": 2})
    assert "Connection refused" in lines(s, 1)[-1]["error"]["message"]


def test_listen_and_accept():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    hold = serve_one()
    send(hold, {"op": "listen", "pid": None, "host": "127.0.0.1", "port": port, "backlog": 4, "key": "k1"})
    assert lines(hold, 1) == [{"ok": True}]
    acc = serve_one()
    send(acc, {"op": "accept", "key": "k1"})
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    head = lines(acc, 1)[0]
    assert head["ok"] is True and head["peer"][0] == "127.0.0.1"
    c.sendall(b"hello")
    assert acc.recv(5) == b"hello"
    acc.sendall(b"world")
    assert c.recv(5) == b"world"
    # closing the holding connection closes the listener
    hold.close()
    deadline = time.monotonic() + 5
    while "k1" in agent_server._listeners and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "k1" not in agent_server._listeners
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    acc2 = serve_one()
    send(acc2, {"op": "accept", "key": "k1"})
    assert "no listener 'k1'" in lines(acc2, 1)[-1]["error"]["message"]


class FakeStream:
    """An AgentStream's reading side, fed with lines."""

    def __init__(self, items):
        self.items, self.err, self.sent, self.closed = list(items), bytearray(), [], False

    def read_line(self):
        return self.items.pop(0) if self.items else None

    def sendall(self, data):
        self.sent.append(data)

    def close(self):
        self.closed = True


def test_agent_job_reads_ready_then_value():
    j = AgentJob(FakeStream([{"ready": True}, {"value": {"packets": 3}}]), "somewhere")
    j.wait_ready(5)
    assert j.result(5) == {"packets": 3} and j.done() and j.stream.closed


def test_agent_job_raises_the_error_and_a_lost_stream():
    rec = {"type": "rangectl.errors:RangeError", "message": "boom", "fix": None}
    with pytest.raises(Exception, match="boom"):
        AgentJob(FakeStream([{"error": rec}]), "w").result(5)
    with pytest.raises(Exception, match="ended without a result"):
        AgentJob(FakeStream([]), "w").result(5)


# -- capture: tcpdump on an interface of the engine's host, streamed -------------------------------


def test_capture_streams_the_interfaces_packets_until_the_controller_ends_its_side(listener):
    """On the loopback, towards the test's own listener: the pcap stream has the packets, and
    ending the controller's side stops tcpdump (the stream ends with what it held)."""
    port = listener.getsockname()[1]
    s = serve_one()
    send(s, {"op": "capture", "iface": "lo", "snaplen": 256})
    buf = b""
    while b"\n" not in buf:
        buf += s.recv(65536)
    first, _, rest = buf.partition(b"\n")
    assert json.loads(first) == {"ok": True}
    marker = b"rangectl-capture-marker-%d" % port
    for _ in range(3):
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(marker)
        peer, _ = listener.accept()
        peer.recv(100)
        peer.close()
        c.close()
    time.sleep(0.5)
    s.shutdown(socket.SHUT_WR)
    t0 = time.monotonic()
    while True:
        data = s.recv(65536)
        if not data:
            break
        rest += data
    assert time.monotonic() - t0 < 10
    assert rest[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")  # a pcap file
    assert rest.count(marker) >= 3


@pytest.mark.parametrize(
    "iface, says",
    [("-w/tmp/x", "not an interface name"), ("lo; rm", "not an interface name"), ("rcnosuch0", "tcpdump -i rcnosuch0")],
)
def test_capture_refuses_what_is_not_an_interface_of_the_host(iface, says):
    s = serve_one()
    send(s, {"op": "capture", "iface": iface})
    err = lines(s, 1)[-1]["error"]
    assert says in err["message"], err


def test_a_session_names_only_a_marked_function():
    """The agent hands its connection only to a function marked @agent_session (not a node job,
    not any function of rangectl's)."""
    for fn, says in [("rangectl.drill.checks:probe_job", "is not an agent session"),
                     ("rangectl.access.agent_record:RangeNodes", "is not an agent session"),
                     ("os:system", "does not name a rangectl agent session"),
                     ("rangectl.nosuch:record", "no agent session")]:  # fmt: skip
        s = serve_one()
        send(s, {"op": "session", "fn": fn, "args": {}})
        err = lines(s, 1)[-1]["error"]
        assert says in err["message"], (fn, err)


def test_a_stream_to_a_tcp_engine_learns_of_a_dead_host_by_keepalive():
    """A quiet stream (an idle network's capture) to an engine whose host vanished without a word
    would wait forever: TCP streams get keepalive probes (about 25 s); Unix sockets are left alone."""
    from rangectl.backend import engine

    srv = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(srv.getsockname())
    u1, u2 = socket.socketpair()
    try:
        engine.tcp_keepalive(c)
        engine.tcp_keepalive(u1)
        assert c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == engine.KEEPALIVE_IDLE == 10
        assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == engine.KEEPALIVE_INTERVAL == 5
        assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == engine.KEEPALIVE_COUNT == 3
        assert u1.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    finally:
        for s in (srv, c, u1, u2):
            s.close()


def test_an_agent_stream_over_tcp_has_keepalive_on():
    from rangectl.backend import agent

    srv = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(srv.getsockname())

    class Api:
        def exec_create(self, cid, cmd, **kw):
            return {"Id": "e1"}

        def exec_start(self, eid, socket=False):
            return c

    try:
        stream = agent.AgentStream(Api(), "cid", {"op": "ping"})
        peer, _ = srv.accept()
        assert peer.recv(100) == b'{"op": "ping"}\n'
        assert stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        peer.close()
    finally:
        srv.close()
        c.close()


def _silent_agent_job(deadline: float):
    """An AgentJob over a connection whose far end takes the request and then says nothing, ever
    (an engine that stopped mid-job without closing its connection)."""
    from rangectl.backend import agent

    mine, far = socket.socketpair()

    class Api:
        def exec_create(self, cid, cmd, **kw):
            return {"Id": "e1"}

        def exec_start(self, eid, socket=False):
            return mine

    return agent.AgentJob(agent.AgentStream(Api(), "cid", {"op": "job"}), "engine e3", deadline), far


def test_a_job_whose_engine_went_silent_is_given_up_after_its_deadline(monkeypatch):
    """Its result would be waited for forever (an inject that never ends keeps the drill from
    ending): past the deadline plus RESULT_GRACE the caller gets an error, and the stream is cut."""
    from rangectl.backend import nodeexec

    monkeypatch.setattr(nodeexec, "RESULT_GRACE", 0.3)
    job, far = _silent_agent_job(time.time() + 0.2)
    try:
        t0 = time.monotonic()
        with pytest.raises(nodeexec.JobError) as e:
            job.result()
        took = time.monotonic() - t0
        assert 0.4 <= took < 3, took
        assert str(e.value) == (
            "engine e3: no result 0.3s past the job's deadline (the engine holding the node stopped answering?)"
        )
        assert job.stream._closed and job._done.wait(2)  # the reader ended: nothing left waiting
    finally:
        far.close()


def test_a_job_that_answers_before_its_deadline_is_kept(monkeypatch):
    from rangectl.backend import nodeexec

    monkeypatch.setattr(nodeexec, "RESULT_GRACE", 5.0)
    job, far = _silent_agent_job(time.time() + 0.2)
    try:
        line = b'{"value": 42}\n'
        threading.Timer(0.5, far.sendall, [b"\x01\x00\x00\x00" + struct.pack(">I", len(line)) + line]).start()
        assert job.result() == 42  # 0.3 s past the deadline: still within the grace
    finally:
        far.close()


def test_a_job_with_no_deadline_is_waited_for_until_it_ends(monkeypatch):
    from rangectl.backend import nodeexec

    monkeypatch.setattr(nodeexec, "RESULT_GRACE", 0.1)
    job, far = _silent_agent_job(None)  # a host operation: no deadline, its end is its stream's
    try:
        threading.Timer(0.6, far.close).start()
        t0 = time.monotonic()
        with pytest.raises(nodeexec.JobError, match="the agent's connection ended without a result"):
            job.result()
        assert time.monotonic() - t0 >= 0.5
    finally:
        far.close()
