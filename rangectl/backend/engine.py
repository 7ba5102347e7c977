"""Talking to the Docker engine: one client, clear errors when it is not there."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from functools import lru_cache
from typing import Any

import docker
from docker.errors import DockerException

from rangectl.errors import EnvironmentProblem


def local_endpoint_problem(host: str | None) -> str | None:
    """Why ``DOCKER_HOST`` names an engine this backend cannot drive (None: a local socket).

    The Docker backend enters its containers' network namespaces on this machine (probes,
    traffic, team access): an engine on another machine (``tcp://``, ``ssh://``) has its
    containers' processes there, so their namespaces cannot be entered from here."""
    if not host:
        return None
    scheme = host.split("://", 1)[0].lower() if "://" in host else ""
    if scheme in ("unix", "npipe"):
        return None
    return (
        f"DOCKER_HOST={host} is not an engine on this machine: rangectl's docker engine works "
        "inside its containers' network namespaces on this host"
    )


@lru_cache(maxsize=1)
def client() -> docker.DockerClient:
    """A Docker client for the local engine that answered a ping, or a one-line EnvironmentProblem."""
    why = local_endpoint_problem(os.environ.get("DOCKER_HOST"))
    if why is not None:
        raise EnvironmentProblem(
            why, fix="unset DOCKER_HOST (or point it at unix:///var/run/docker.sock) and run rangectl on the engine's host"
        )
    try:
        c = docker.from_env(timeout=int(os.environ.get("RANGECTL_DOCKER_TIMEOUT", "120")))
        c.ping()
    except DockerException as exc:
        text = str(exc)
        if "Permission denied" in text or "PermissionError" in text:
            raise EnvironmentProblem(
                "no permission to use the Docker engine socket",
                fix="run as root or add your user to the 'docker' group",
            ) from None
        raise EnvironmentProblem(
            "the Docker engine is not answering",
            fix="run scripts/setup.sh (installs docker.io and starts dockerd), then `rangectl doctor`",
        ) from None
    return c


def connect(timeout: int = 10) -> docker.DockerClient:
    """A client for ``DOCKER_HOST`` without the checks of :func:`client` (``doctor`` reports the
    failure itself)."""
    return docker.from_env(timeout=timeout)


def engine_url(api: Any) -> str:
    """The ``DOCKER_HOST`` form of the engine ``api`` talks to (what Ansible's docker_api takes)."""
    url = str(api.base_url)
    adapter = getattr(api, "_custom_adapter", None)
    if url.startswith("http+docker://ssh") and getattr(adapter, "ssh_host", None):  # ssh://[user@]host[:port]
        return "ssh://" + adapter.ssh_host
    if url.startswith("http+docker://"):  # docker-py's name for a local socket: the path is its adapter's
        return "unix://" + (getattr(adapter, "socket_path", None) or "/var/run/docker.sock")
    if url.startswith("http://"):
        return "tcp://" + url[len("http://"):]
    return url


SSH_CONNECT_SECONDS = 10.0  # an ssh:// engine that does not answer fails a call after this
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3  # seconds, seconds, probes


def tcp_keepalive(sock: Any) -> None:
    """TCP keepalive on a connection to an engine (a ``tcp://`` API stream, an ``ssh://`` engine's
    SSH connection): a connection that is quiet by nature (a capture of an idle network, a
    recorder, a job's wait) learns within about 25 s that its engine's host is gone without a
    word (powered off, cable out), instead of never. Unix sockets are left as they are."""
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


SSH_CHANNEL_SECONDS = 30.0  # a channel (one API call, one stream) the engine's sshd never answers fails after this


def _ssh_tune(ssh: Any) -> None:
    """A new SSH connection: TCP keepalive on, and a channel open that is never answered fails
    after SSH_CHANNEL_SECONDS (paramiko waits an hour)."""
    transport = ssh.get_transport()
    tcp_keepalive(getattr(transport, "sock", None))
    if transport is not None:
        transport.channel_timeout = SSH_CHANNEL_SECONDS


def _ssh_ready(transport: Any) -> bool:
    """Connected and logged in: a channel opened on a connection still logging in is refused by
    sshd ("unimplemented") and paramiko then waits for an answer that never comes."""
    return transport is not None and transport.is_active() and transport.is_authenticated()


def reconnecting_ssh(api: Any) -> Any:
    """Make docker-py's SSH transport of ``api`` (an ``ssh://`` engine) connect again after the
    engine's host or sshd went away: as it is, its one SSH connection dies with the engine and
    every later call fails ("SSH session not active") even when the engine is back. Before each
    request, a dead connection is replaced (and the pools made on it dropped); while the host is
    away the request fails after SSH_CONNECT_SECONDS. A connection is used once it is logged in,
    never while another thread is still making it. The SSH connection has TCP keepalive on
    (:func:`tcp_keepalive`) and a channel the engine never answers fails after
    SSH_CHANNEL_SECONDS. A client of another transport is left as it is."""
    adapter = getattr(api, "_custom_adapter", None)
    ssh = getattr(adapter, "ssh_client", None)
    if ssh is None or getattr(adapter, "_rangectl_reconnects", False):
        return api
    adapter.ssh_params.setdefault("timeout", SSH_CONNECT_SECONDS)
    adapter.ssh_params.setdefault("banner_timeout", SSH_CONNECT_SECONDS)
    _ssh_tune(ssh)
    original = adapter.get_connection
    lock = threading.Lock()

    def get_connection(url: Any, proxies: Any = None) -> Any:
        if not _ssh_ready(ssh.get_transport()):
            # one thread connects; the others wait here until it is logged in (a connection
            # another thread is still making is not used half-made)
            with lock:
                if not _ssh_ready(ssh.get_transport()):
                    with adapter.pools.lock:
                        adapter.pools.clear()
                    ssh.close()
                    adapter._connect()
                    _ssh_tune(ssh)
        return original(url, proxies)

    adapter.get_connection = get_connection
    adapter._rangectl_reconnects = True
    return api
