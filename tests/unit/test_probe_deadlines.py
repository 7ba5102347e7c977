"""Probe timeouts are deadlines for the whole probe, and availability rounds have one too (issue 16, finding 7).

The hostile targets run in a throwaway network namespace this test creates
(loopback only inside it): an HTTP server that drips its answer one byte per
5 ms, and a DNS server that floods wrong-id replies. A probe with timeout 1 s
must give up within about 1.5 s against either. Each probe runs on a thread
the test joins with a limit, so a regression fails the test instead of
hanging it. Nothing is sent outside that namespace.

The runner part uses fake probe functions: one team's probe hangs, and the
round, the other team and the runner's stop must not wait for it.
"""

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

from rangectl import netns
from rangectl.drill import checks
from rangectl.drill.runner import DrillRunner, round_deadline
from rangectl.plan import plan
from rangectl.scenario.model import Scenario
from rangectl.store import EventStore

BOUND = 1.5  # seconds a probe with timeout 1 s may take, whatever the target does


def _run_limited(fn, *args, limit: float = 10.0):
    """(result, seconds) of fn(*args) on a thread; fails (does not hang) when it takes more than ``limit``."""
    box: dict = {}

    def target():
        t0 = time.monotonic()
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported below
            box["error"] = exc
        box["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} still running after {limit}s"
    if "error" in box:
        raise box["error"]
    return box["result"], box["seconds"]


# --- a throwaway namespace with hostile servers ----------------------------------------


@pytest.fixture
def ns():
    """A fresh network namespace (only lo, up); removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (ip netns)")
    name = f"rc-pd-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    stop = threading.Event()
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        yield netns.netns_path_of_name(name), stop
    finally:
        stop.set()
        time.sleep(0.05)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _tcp_listener(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(8)
    return s


def _udp_socket(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    return s


def _serve_http(path: str, stop: threading.Event, port: int, drip: float | None, body: bytes = b"hello") -> None:
    """An HTTP server in the namespace: answers at once, or one byte per ``drip`` seconds (for 20 s at most)."""
    lsock = netns.run_in_netns(path, _tcp_listener, port)
    lsock.settimeout(0.2)

    def handle(c: socket.socket) -> None:
        with c:
            c.settimeout(2)
            try:
                req = b""
                while b"\r\n\r\n" not in req:
                    chunk = c.recv(4096)
                    if not chunk:
                        return
                    req += chunk
                if drip is None:
                    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                    return
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                end = time.monotonic() + 20
                while not stop.is_set() and time.monotonic() < end:
                    c.send(b"x")
                    time.sleep(drip)
            except OSError:
                return

    def loop() -> None:
        with lsock:
            while not stop.is_set():
                try:
                    c, _ = lsock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def _serve_dns(path: str, stop: threading.Event, flood_seconds: float, wrong: int | None = None) -> None:
    """A DNS server on 127.0.0.1:53 in the namespace that answers each query with replies carrying
    other ids: for ``flood_seconds`` (a flood), or ``wrong`` of them and then the right reply (NXDOMAIN)."""
    sock = netns.run_in_netns(path, _udp_socket, 53)
    sock.settimeout(0.2)

    def loop() -> None:
        with sock:
            while not stop.is_set():
                try:
                    query, peer = sock.recvfrom(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                qid = int.from_bytes(query[:2], "big")
                rest = query[4:]
                n = 0
                end = time.monotonic() + flood_seconds
                while not stop.is_set():
                    if wrong is None and time.monotonic() >= end:
                        break
                    if wrong is not None and n >= wrong:
                        sock.sendto(query[:2] + b"\x81\x83" + rest, peer)  # the right id: NXDOMAIN
                        break
                    bad = (qid + 1 + n % 65535) & 0xFFFF
                    try:
                        sock.sendto(bad.to_bytes(2, "big") + b"\x81\x80" + rest, peer)
                    except OSError:
                        pass
                    n += 1
                    if n % 64 == 0:
                        time.sleep(0.0005)  # a flood, but leave the CPU to the probe too

    threading.Thread(target=loop, daemon=True).start()


# --- probes ---------------------------------------------------------------------------


def test_http_probe_against_a_dripping_server_ends_by_its_timeout(ns):
    path, stop = ns
    _serve_http(path, stop, 80, drip=0.005)
    (status, _body, detail), took = _run_limited(netns.run_in_netns, path, checks.http_get, "127.0.0.1", 80, "/", 1.0)
    assert took < BOUND, f"http probe with timeout 1s took {took:.2f}s against a dripping server"
    assert status is None and "timed out" in detail  # a probe that does not finish in time fails


def test_http_probe_still_reads_a_prompt_answer(ns):
    path, stop = ns
    _serve_http(path, stop, 8080, drip=None, body=b"portal ok")
    (status, body, _detail), took = _run_limited(
        netns.run_in_netns, path, checks.http_get, "127.0.0.1", 8080, "/", 1.0
    )
    assert status == 200 and body == "portal ok"
    assert took < 1.0


def test_dns_probe_under_a_flood_of_wrong_id_replies_ends_by_its_timeout(ns):
    path, stop = ns
    _serve_dns(path, stop, flood_seconds=6.0)
    (rcode, answers, detail), took = _run_limited(
        netns.run_in_netns, path, checks.dns_query, "127.0.0.1", "portal.example", "A", 1.0
    )
    assert took < BOUND, f"dns probe with timeout 1s took {took:.2f}s under a wrong-id flood"
    assert rcode is None and answers == [] and "no answer" in detail


def test_dns_probe_takes_the_right_reply_after_wrong_ones(ns):
    path, stop = ns
    _serve_dns(path, stop, flood_seconds=0, wrong=500)
    (rcode, _answers, _detail), took = _run_limited(
        netns.run_in_netns, path, checks.dns_query, "127.0.0.1", "gone.example", "A", 1.0
    )
    assert rcode == "NXDOMAIN"
    assert took < BOUND


def test_tcp_and_udp_probes_are_bounded_too(ns):
    path, stop = ns
    _serve_http(path, stop, 8081, drip=None)
    (ok, _), _ = _run_limited(netns.run_in_netns, path, checks.tcp_connect, "127.0.0.1", 8081, 1.0)
    assert ok
    (ok, detail), took = _run_limited(netns.run_in_netns, path, checks.tcp_connect, "127.0.0.1", 8082, 1.0)
    assert not ok and "refused" in detail
    # a UDP service that never answers: the probe waits exactly its timeout, no longer
    sock = netns.run_in_netns(path, _udp_socket, 5353)
    try:
        (ok, detail), took = _run_limited(netns.run_in_netns, path, checks.udp_probe, "127.0.0.1", 5353, 1.0)
    finally:
        sock.close()
    assert not ok and "no answer" in detail
    assert 0.9 < took < BOUND


# --- availability rounds ----------------------------------------------------------------

SCENARIO = {
    "rangectl": 1,
    "name": "round-deadline",
    "title": "t",
    "duration": "10m",
    "networks": {"lan": {"subnet": "10.1.0.0/24"}},
    "nodes": {
        "soc": {"image": "workstation", "role": "blue", "interfaces": {"lan": "10.1.0.5"}},
        "web": {"image": "web", "role": "target", "interfaces": {"lan": "10.1.0.10"},
                "services": [{"name": "http", "port": 80}]},
    },
    "injects": [{"id": "kickoff", "at": "0s", "message": "go"}],
    "availability": [{"node": "web", "service": "http", "points": 1, "every": "2s", "timeout": "1s"}],
}


def _hanging_runner(tmp_path: Path, release: threading.Event, calls: list) -> DrillRunner:
    s = Scenario.model_validate(SCENARIO)

    def avail(team, av):
        calls.append(team)
        if team == 2:
            release.wait(120)  # team 2's probe hangs (a stuck exec, a target that never ends...)
        return {"passed": True, "detail": "up"}

    return DrillRunner(
        s, plan(s, 3), EventStore(tmp_path / "range.db"), lambda *a: {}, lambda *a: {}, avail
    )


def test_a_round_with_one_hung_probe_ends_by_its_deadline(tmp_path):
    release = threading.Event()
    calls: list = []
    r = _hanging_runner(tmp_path, release, calls)
    av = r.scenario.availability[0]
    limit = round_deadline(av)
    try:
        _, took = _run_limited(r._do_round, 0, av, 0, 0.0, limit=limit + 5)
        assert took < limit + 0.5, f"round took {took:.2f}s, its deadline is {limit}s"
        rows = {e.team: e.data for e in r.store.events(kind="availability")}
        assert set(rows) == {1, 2, 3}
        assert rows[1]["up"] and rows[3]["up"]  # the other teams are recorded as they are
        assert not rows[2]["up"] and "late" in rows[2]["detail"] and f"{limit:g}s" in rows[2]["detail"]
        # the next round does not start a second probe for team 2 while the first still hangs
        _, took = _run_limited(r._do_round, 0, av, 1, 2.0, limit=limit + 5)
        assert calls.count(2) == 1 and calls.count(1) == 2
        rows = {e.team: e.data for e in r.store.events(kind="availability") if e.data["round"] == 1}
        assert not rows[2]["up"] and "still running" in rows[2]["detail"]
        assert rows[1]["up"] and rows[3]["up"]
        assert took < 0.5 + 0.5  # nothing to wait for: the teams that answer answer at once
    finally:
        release.set()


def test_the_runner_stops_promptly_while_a_probe_hangs(tmp_path):
    release = threading.Event()
    calls: list = []
    r = _hanging_runner(tmp_path, release, calls)
    limit = round_deadline(r.scenario.availability[0])
    stop = threading.Event()
    try:
        r.start(time_scale=1.0)
        t = threading.Thread(target=r.run, args=(stop,), daemon=True)
        t.start()
        end = time.monotonic() + 10
        while 2 not in calls and time.monotonic() < end:
            time.sleep(0.02)
        assert 2 in calls, "the round did not start"
        stop.set()
        t.join(limit + 3)
        assert not t.is_alive(), "the runner did not stop while a probe hung"
        rows = {e.team: e.data for e in r.store.events(kind="availability") if e.data["round"] == 0}
        assert rows[1]["up"] and not rows[2]["up"]
    finally:
        release.set()
