"""Shared fixtures: an isolated RANGECTL_HOME, and the Docker engine for integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import settings

# Random Hypothesis seeds everywhere, CI included: Hypothesis's own "ci" profile (picked when CI is
# set, as scripts/test.sh runs) would derandomize every property test. No deadline: a loaded machine
# is not a failing test. `--hypothesis-seed=N` replays a run (docs/testing.md).
settings.register_profile("rangectl", derandomize=False, deadline=None)
settings.load_profile("rangectl")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own state folder, so tests never see a user's ranges."""
    home = tmp_path_factory.mktemp("rangectl-home")
    monkeypatch.setenv("RANGECTL_HOME", str(home))
    yield home


def _engine_ok() -> bool:
    try:
        import docker

        docker.from_env(timeout=10).ping()
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="session")
def docker_engine():
    """The Docker client; skips locally without an engine, fails in CI (CI must run these)."""
    if not _engine_ok():
        if os.environ.get("CI"):
            pytest.fail("CI=true but no Docker engine answers: scripts/setup.sh should have started it")
        pytest.skip("no Docker engine (run scripts/setup.sh)")
    import docker

    return docker.from_env(timeout=120)


@pytest.fixture(scope="session")
def built_images(docker_engine):
    """Every node image built (cached by recipe hash, so this is quick after setup)."""
    from rangectl.backend.images import available_recipes, build_images

    return build_images(docker_engine, [r for r in available_recipes() if r != "base"])


def leftovers(client, range_name: str) -> tuple[list, list]:
    from rangectl.backend.docker import range_filter

    flt = range_filter(range_name)
    return client.api.containers(all=True, filters=flt), client.api.networks(filters=flt)


def rangectl_cmd() -> list[str]:
    exe = shutil.which("rangectl", path=str(Path(os.sys.executable).parent)) or "rangectl"
    return [exe]


def run_cli(*args: str, check: bool = False, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([*rangectl_cmd(), *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"rangectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def pack_names() -> list[str]:
    """The scenario pack: every shipped scenario with a reference solution (district-portal and
    ward-portal-probe are examples without one)."""
    return sorted(p.name.removesuffix(".solution.yaml") for p in (ROOT / "scenarios").glob("*.solution.yaml"))


# the scenarios the pack must hold (issue 14: every threat the programme trains for)
NINE = {
    "tet-portal",
    "bank-phish",
    "platform-leak",
    "smart-city-telemetry",
    "official-impersonation",
    "chatbot-abuse",
    "agency-apt",
    "mofa-document-portal",
    "platform-takedown",
}


def scenario_files() -> list[Path]:
    """The shipped scenario files (not their reference solutions)."""
    return sorted(p for p in (ROOT / "scenarios").glob("*.yaml") if not p.name.endswith(".solution.yaml"))


@pytest.fixture
def memory(monkeypatch):
    """The in-memory engine (rangectl.backend.memory) with a model of each range's nodes
    (tests/memory_world.py): yields (backend, worlds)."""
    from tests.memory_world import memory_engine

    yield from memory_engine(monkeypatch)
