"""Fixtures shared by the unit tests of scenario files."""

from __future__ import annotations

from pathlib import Path

import pytest

POLICY = "policy: 1\nname: standard\nhalf_life_minutes: 30\n"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A throw-away project root (RANGECTL_ROOT) with its own scoring/standard.yaml."""
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "standard.yaml").write_text(POLICY)
    monkeypatch.setenv("RANGECTL_ROOT", str(tmp_path))
    return tmp_path
