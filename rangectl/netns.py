"""Network namespaces: run code inside one.

A socket keeps the network namespace it was created in, whatever thread uses
it later. So traffic that must come from a node (a container's
``/proc/<pid>/ns/net``, or ``/run/netns/NAME`` for ``ip netns`` hosts) is sent
by code that runs in a worker thread switched into that namespace with
setns(2); the caller's thread never moves.

- :func:`run_in_netns` runs ``fn(*args)`` in a fresh thread inside the
  namespace and returns its result (its exception propagates).
- :func:`entered` is a context manager that switches the *current* thread in
  and back out; use it only in threads you own.

What the namespace's kernel knows (routes, links, addresses, neighbours) is
asked in :mod:`rangectl.rtnetlink`; the next hop of a destination (neighbour
table, then ARP) is resolved in :mod:`rangectl.arp`. Both run their queries
through :func:`run_in_netns`.

Python 3.11 has no ``os.setns``: it is called through ctypes. Entering a
namespace needs CAP_SYS_ADMIN (root). ``netns_path=None`` everywhere means the
current namespace (no switch, no privilege needed).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from rangectl.errors import EnvironmentProblem, RangeError

T = TypeVar("T")

CLONE_NEWNET = 0x40000000

_libc: ctypes.CDLL | None = None
_libc_lock = threading.Lock()


class NetnsError(RangeError):
    """A namespace that cannot be entered or asked, or a destination that cannot be reached from it."""


def libc() -> ctypes.CDLL:
    global _libc
    with _libc_lock:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return _libc


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """setns(2) for the calling thread; raises OSError with errno."""
    if libc().setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_path_of_pid(pid: int) -> str:
    return f"/proc/{int(pid)}/ns/net"


def netns_path_of_name(name: str) -> str:
    """The file ``ip netns add NAME`` creates."""
    return f"/run/netns/{name}"


def same_netns(a: str | None, b: str | None) -> bool:
    """True when both paths name the same namespace (None: the caller's)."""

    def ident(p: str | None) -> tuple[int, int]:
        st = os.stat(p or "/proc/thread-self/ns/net")
        return (st.st_dev, st.st_ino)

    return ident(a) == ident(b)


@contextlib.contextmanager
def entered(netns_path: str | None) -> Iterator[None]:
    """Switch the calling thread into ``netns_path`` and back on exit.

    Only for threads you own: a thread left in a namespace takes every socket it
    opens there. Prefer :func:`run_in_netns`.
    """
    if netns_path is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetnsError(f"cannot open network namespace {netns_path}: {exc.strerror}") from exc
        try:
            try:
                setns(target)
            except OSError as exc:
                hint = " (needs root: CAP_SYS_ADMIN)" if exc.errno == 1 else ""
                raise NetnsError(f"cannot enter network namespace {netns_path}: {exc.strerror}{hint}") from exc
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(own)
    finally:
        os.close(own)


def run_in_netns(netns_path: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in a fresh thread inside ``netns_path``; return its result.

    The exception ``fn`` raises is re-raised here. Sockets ``fn`` creates stay in
    that namespace when returned. ``netns_path=None`` runs in the caller's
    namespace (still in a fresh thread, so behaviour is the same).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with entered(netns_path):
                box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="rangectl-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        err = box.pop("error")
        try:
            raise err
        finally:
            del err
    return box["result"]


def require_root(what: str = "this") -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"{what} needs root (CAP_SYS_ADMIN and CAP_NET_RAW)", fix="run as root")
