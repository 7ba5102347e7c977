"""Talking to the Docker engine: one client, clear errors when it is not there."""

from __future__ import annotations

import os
from functools import lru_cache

import docker
from docker.errors import DockerException

from rangectl.errors import EnvironmentProblem


@lru_cache(maxsize=1)
def client() -> docker.DockerClient:
    """A Docker client that answered a ping, or a one-line EnvironmentProblem."""
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
