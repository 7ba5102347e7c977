"""A range's state on disk: one folder and one SQLite database per range.

Layout (``$RANGECTL_HOME``, default ``~/.local/state/rangectl``)::

    ranges/<range>/range.db       metadata (key/value) and the event store
    ranges/<range>/scenario.yaml  the scenario file the range was made from
    ranges/<range>/<side files>   playbooks/pcaps the scenario refers to stay in the project

The metadata table holds: scenario name, path and hash, team count, creation
time, and status. The event store (``events`` table) is owned by
:mod:`rangectl.store`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from rangectl import paths
from rangectl.errors import NotFound, UsageError

RANGE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


def ranges_dir() -> Path:
    return paths.state_home() / "ranges"


def check_range_name(name: str) -> str:
    if not RANGE_NAME.match(name or ""):
        raise UsageError(f"range name '{name}' is not valid: use lower-case letters, digits and '-' (max 41)")
    return name


def connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class RangeState:
    def __init__(self, name: str):
        self.name = check_range_name(name)
        self.dir = ranges_dir() / name
        self.db_path = self.dir / "range.db"
        self.scenario_path = self.dir / "scenario.yaml"

    # -- lifecycle --------------------------------------------------------
    @classmethod
    def create(cls, name: str, scenario_file: Path, meta: dict[str, Any]) -> RangeState:
        st = cls(name)
        st.dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scenario_file, st.scenario_path)
        st._init_db()
        st.update(created=time.time(), **meta)
        return st

    @classmethod
    def open(cls, name: str) -> RangeState:
        st = cls(name)
        if not st.db_path.exists():
            raise NotFound(f"no range named '{name}'", fix="see `rangectl ls`")
        return st

    def exists(self) -> bool:
        return self.db_path.exists()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _init_db(self) -> None:
        # the record is the trainer's: made 0600 before SQLite opens it (its WAL/SHM follow it).
        # O_EXCL only: opening and closing a database file this process already holds would drop
        # its SQLite locks (rangectl/paths.py create_private)
        paths.create_private(self.db_path)
        os.chmod(self.db_path, 0o600)
        with closing(connect(self.db_path)) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    # -- metadata -----------------------------------------------------------
    def update(self, **values: Any) -> None:
        with closing(connect(self.db_path)) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    def meta(self) -> dict[str, Any]:
        with closing(connect(self.db_path)) as conn:
            try:
                rows = conn.execute("SELECT key, value FROM meta").fetchall()
            except sqlite3.OperationalError:
                return {}
        return {k: json.loads(v) for k, v in rows}

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta().get(key, default)

    # -- the scenario and its plan --------------------------------------------
    @property
    def source_path(self) -> Path:
        """The scenario file in the project (for relative playbook/pcap paths)."""
        src = self.get("scenario_path")
        return Path(src) if src else self.scenario_path

    def scenario(self):
        from rangectl.scenario.validate import load_scenario

        src = self.source_path
        return load_scenario(src if src.exists() else self.scenario_path)

    def plan(self):
        from rangectl.plan import plan

        return plan(self.scenario(), int(self.get("teams", 1)), self.get("seed"))


def list_ranges() -> list[RangeState]:
    base = ranges_dir()
    if not base.is_dir():
        return []
    return [RangeState(p.name) for p in sorted(base.iterdir()) if (p / "range.db").exists() and RANGE_NAME.match(p.name)]
