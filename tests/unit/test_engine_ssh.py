"""ssh:// engines: docker-py's SSH transport keeps one SSH connection; when the engine's host
goes away and comes back it never makes a new one by itself. rangectl's wrapper replaces a dead
connection before the next request (and drops the pools made on it). No network: a fake
paramiko client and adapter."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import pytest

from rangectl.backend.engine import SSH_CHANNEL_SECONDS, SSH_CONNECT_SECONDS, reconnecting_ssh

_SOCKETS: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets():
    yield
    while _SOCKETS:
        _SOCKETS.pop().close()


class Transport:
    def __init__(self, authenticated: bool = True):
        self.active = True
        self.authenticated = authenticated
        self.channel_timeout = 3600.0  # paramiko's
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.sock = socket.create_connection(self.srv.getsockname())  # a real TCP connection, as paramiko's
        _SOCKETS.extend((self.srv, self.sock))

    def is_active(self):
        return self.active

    def is_authenticated(self):
        return self.authenticated


class SSHClient:
    def __init__(self):
        self.transport = Transport()
        self.connects = 0
        self.closed = 0

    def get_transport(self):
        return self.transport

    def close(self):
        self.closed += 1
        self.transport = None


class Pools(dict):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()


def adapter_api():
    ssh = SSHClient()
    adapter = SimpleNamespace(ssh_client=ssh, ssh_params={"hostname": "h", "port": None, "username": "root"},
                              pools=Pools())  # fmt: skip
    adapter.pools["ssh://h"] = "pool on the old connection"

    def _connect():
        ssh.connects += 1
        ssh.transport = Transport()

    adapter._connect = _connect
    adapter.get_connection = lambda url, proxies=None: ("conn", ssh.transport)
    return SimpleNamespace(_custom_adapter=adapter), adapter, ssh


def test_a_dead_ssh_connection_is_replaced_before_the_next_request():
    api, adapter, ssh = adapter_api()
    reconnecting_ssh(api)
    first = adapter.get_connection("http+docker://ssh/v1.41/info")
    assert ssh.connects == 0 and adapter.pools  # alive: used as it is
    ssh.transport.active = False  # the engine's host went away and came back
    conn = adapter.get_connection("http+docker://ssh/v1.41/info")
    assert ssh.connects == 1 and ssh.closed == 1 and not adapter.pools
    assert conn[1] is ssh.transport and conn[1] is not first[1] and conn[1].is_active()
    assert adapter.ssh_params["timeout"] == SSH_CONNECT_SECONDS  # a host that stays away fails the call


def test_other_transports_and_a_second_wrap_are_left_alone():
    tcp = SimpleNamespace(_custom_adapter=None)
    assert reconnecting_ssh(tcp) is tcp
    api, adapter, ssh = adapter_api()
    reconnecting_ssh(api)
    wrapped = adapter.get_connection
    reconnecting_ssh(api)
    assert adapter.get_connection is wrapped


def test_the_ssh_connection_has_keepalive_first_and_after_each_reconnect():
    """An engine whose host vanished without a word (no FIN) would leave every stream on the SSH
    connection waiting forever: its TCP socket probes the peer (about 25 s), first and again."""
    api, adapter, ssh = adapter_api()

    def keepalive(t: Transport) -> tuple[int, int, int, int]:
        s = t.sock
        return (s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))  # fmt: skip

    assert keepalive(ssh.transport)[0] == 0
    reconnecting_ssh(api)
    assert keepalive(ssh.transport) == (1, 10, 5, 3)
    ssh.transport.active = False
    adapter.get_connection("http+docker://ssh/v1.41/info")
    assert ssh.connects == 1 and keepalive(ssh.transport) == (1, 10, 5, 3)


def test_a_connection_still_logging_in_is_not_used_by_another_thread():
    """paramiko's client holds the new connection as soon as it is made, active but not yet
    logged in; a channel opened on it then is refused by sshd ("unimplemented") and paramiko waits
    an hour for its answer. Every thread but the connecting one waits until it is logged in."""
    api, adapter, ssh = adapter_api()
    reconnecting_ssh(api)
    in_connect = threading.Event()

    def slow_connect():  # as paramiko's SSHClient.connect: the transport first, the login after
        ssh.connects += 1
        ssh.transport = t = Transport(authenticated=False)
        in_connect.set()
        time.sleep(0.5)
        t.authenticated = True

    adapter._connect = slow_connect
    ssh.transport.active = False  # the engine went away and came back
    got = {}
    a = threading.Thread(target=lambda: got.setdefault("a", adapter.get_connection("u")))
    a.start()
    assert in_connect.wait(2)
    b = adapter.get_connection("u")  # meanwhile, another call
    logged_in_then = b[1].is_authenticated()
    a.join(2)
    assert logged_in_then and got["a"][1] is b[1]
    assert ssh.connects == 1  # and it did not connect a second time


def test_a_channel_the_engine_never_answers_fails_after_a_while():
    api, adapter, ssh = adapter_api()
    reconnecting_ssh(api)
    assert ssh.transport.channel_timeout == SSH_CHANNEL_SECONDS == 30.0
    ssh.transport.active = False
    adapter.get_connection("u")
    assert ssh.connects == 1 and ssh.transport.channel_timeout == SSH_CHANNEL_SECONDS
