"""Where rangectl finds its project files and keeps its state."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The folder holding scenarios/, playbooks/, images/ and scoring/.

    ``RANGECTL_ROOT`` overrides; otherwise the checkout this package lives in.
    """
    env = os.environ.get("RANGECTL_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


def images_dir() -> Path:
    return project_root() / "images"


def playbooks_dir() -> Path:
    return project_root() / "playbooks"


def scoring_dir() -> Path:
    return project_root() / "scoring"


def scenarios_dir() -> Path:
    return project_root() / "scenarios"


def state_home() -> Path:
    """Per-range state lives under ``$RANGECTL_HOME`` (default ``~/.local/state/rangectl``)."""
    env = os.environ.get("RANGECTL_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "rangectl"


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (no descriptor of an existing file is
    ever opened or closed: that would drop this process's SQLite locks on it)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:  # SQLite says what is wrong when it opens the file
        pass


# --- side files (playbooks, pcaps, policies): where a scenario's references resolve ------------


def allowed_roots(scenario_file: Path) -> list[Path]:
    """Folders a scenario's side files may resolve into (symlinks followed).

    The scenario's own folder counts unless it is the filesystem root (a scenario at
    ``/x.yaml`` would otherwise reach every file of the host).
    """
    roots = []
    here = Path(os.path.abspath(scenario_file)).parent.resolve()
    if here != Path(here.anchor):
        roots.append(here)
    root = project_root()
    roots += [(root / "playbooks").resolve(), (root / "scenarios").resolve()]
    return roots


def inside(path: Path, roots: list[Path]) -> bool:
    real = path.resolve()
    return any(real == r or real.is_relative_to(r) for r in roots)


def find_side_file(ref: str, scenario_file: Path, under: str) -> tuple[Path | None, Path | None]:
    """``(found, outside)``: the first candidate that is a file and resolves inside the
    allowed folders, or (None, the resolved path of a candidate that exists outside them)."""
    root = project_root()
    candidates = [scenario_file.parent / ref, root / ref, root / under / ref]
    roots = allowed_roots(scenario_file)
    outside: Path | None = None
    for c in candidates:
        try:
            if not c.is_file():
                continue
            if inside(c, roots):
                return c, None
            outside = outside or c.resolve()
        except (OSError, RuntimeError, ValueError):  # symlink loops, names too long, NUL
            continue
    return None, outside


def resolve_path(ref: str, scenario_file: Path, under: str) -> Path | None:
    """Find ``ref`` relative to the scenario's folder, then the project root, then ``<root>/<under>``.

    Only a file that resolves (symlinks followed) inside the scenario's folder or the
    project's ``playbooks/`` and ``scenarios/`` counts (:mod:`rangectl.scenario.trust`).
    """
    found, _outside = find_side_file(ref, scenario_file, under)
    return found


def policy_path(policy: str, scenario_file: Path | None = None) -> Path | None:
    """A scoring policy ``NAME`` is ``scoring/NAME.yaml`` beside the scenario or in the project."""
    places = []
    if scenario_file is not None:
        places += [scenario_file.parent / "scoring", scenario_file.parent.parent / "scoring"]
    places.append(scoring_dir())
    for place in places:
        for suffix in (".yaml", ".yml"):
            p = place / f"{policy}{suffix}"
            if p.is_file():
                return p
    return None


