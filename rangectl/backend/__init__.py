"""Backends: the engines ranges run on, picked by name (``RANGECTL_ENGINE``, default ``docker``).

:mod:`rangectl.backend.base` is the contract, :mod:`rangectl.backend.nodeexec` the execution
seam; :func:`get` returns a backend by name and :func:`register` adds one (docs/architecture.md,
"Adding a backend").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from rangectl.backend.base import Backend
from rangectl.errors import UsageError

DEFAULT = "docker"

_FACTORIES: dict[str, Callable[[], Backend]] = {}
_CACHE: dict[str, Backend] = {}


def register(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``factory`` the backend called ``name`` (a later registration replaces an earlier one)."""
    _FACTORIES[name] = factory
    _CACHE.pop(name, None)


def names() -> list[str]:
    return sorted(_FACTORIES)


def get(name: str | None = None) -> Backend:
    """The backend called ``name`` (default: ``$RANGECTL_ENGINE``, else ``docker``), made once."""
    name = name or os.environ.get("RANGECTL_ENGINE") or DEFAULT
    if name not in _FACTORIES:
        raise UsageError(f"unknown engine '{name}' (known: {', '.join(names())})")
    if name not in _CACHE:
        _CACHE[name] = _FACTORIES[name]()
    return _CACHE[name]


def for_range(state: Any) -> Backend:
    """The backend a range was made on (recorded by ``up``; ranges made before that: the default)."""
    return get(state.get("engine") if state.exists() else None)


def _docker() -> Backend:
    from rangectl.backend.docker import DockerBackend
    from rangectl.backend.engine import client

    return DockerBackend(client())


register("docker", _docker)


def _swarm() -> Backend:
    from rangectl.backend.swarm import make

    return make()


register("swarm", _swarm)
