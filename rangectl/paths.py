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
