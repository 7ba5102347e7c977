"""Sockets that live in another network namespace.

A socket keeps the network namespace it was created in, whatever thread later
uses it. So to listen on (or connect from) a container's namespace, a
short-lived thread enters the namespace with setns(2), creates the socket,
and ends; the socket is then used from the event loop like any other.

Uses :func:`rangectl.netns.run_in_netns` when that module is present;
otherwise a private ctypes ``setns`` helper (same contract: run ``fn`` in a
fresh thread that has joined the namespace, return its result or raise its
exception). Needs CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _private_run_in_netns(netns_path: str, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a new thread that joined ``netns_path``; the caller's thread never moves."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                target_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(target_fd)
                finally:
                    os.close(target_fd)
                try:
                    box["result"] = fn(*args)
                finally:
                    _setns(own)  # the thread ends anyway; go back for good measure
            finally:
                os.close(own)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="rangectl-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def run_in_netns(netns_path: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        from rangectl.netns import run_in_netns as shared  # another module's helper, when present
    except ImportError:
        shared = None
    if shared is not None:
        return shared(netns_path, fn, *args)
    return _private_run_in_netns(netns_path, fn, *args)


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(backlog)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def listen_in_netns(
    netns_path: str, host: str = "127.0.0.1", port: int = 8780, backlog: int = 64
) -> socket.socket:
    """A listening TCP socket bound to ``host:port`` inside the namespace at ``netns_path``."""
    return run_in_netns(netns_path, _listen, host, port, backlog)


def _new_tcp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    return s


def tcp_socket_in_netns(netns_path: str) -> socket.socket:
    """An unconnected TCP socket created inside the namespace (connect it from the event loop)."""
    return run_in_netns(netns_path, _new_tcp)


def netns_id(netns_path: str) -> tuple[int, int] | None:
    """(device, inode) of a namespace file: two paths with the same id are the same namespace."""
    try:
        st = os.stat(netns_path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
