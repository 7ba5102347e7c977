"""A small 2-team range (no Docker) for the hardening tests: answer, report and hint objectives."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from ruamel.yaml import YAML

from rangectl.access import credentials as creds
from rangectl.state import RangeState
from rangectl.store import EventStore

API = "/api/v1"

SCENARIO = {
    "rangectl": 1,
    "name": "mini",
    "title": "Hardening test",
    "duration": "2h",
    "networks": {"lan": {"subnet": "10.91.0.0/24"}},
    "nodes": {
        "soc": {"image": "workstation", "role": "blue", "interfaces": {"lan": "10.91.0.5"}},
        "web": {"image": "web", "role": "target", "interfaces": {"lan": "10.91.0.10"}},
        "bad": {"image": "attacker", "role": "red", "interfaces": {"lan": "10.91.0.66"}},
    },
    "injects": [{"id": "recon", "at": "0s", "traffic": {"kind": "portscan", "from": "bad", "target": "web"}}],
    "objectives": [
        {
            "id": "scanner-ip",
            "category": "detection",
            "after": "recon",
            "points": 100,
            "answer": {"ip_of": "bad"},
            "hints": [{"text": "Look at the SYNs.", "cost": 10}],
        },
        {"id": "c2-domain", "category": "analysis", "points": 50, "answer": {"value": "evil.example"}},
        {"id": "victim", "category": "analysis", "points": 30, "answer": {"one_of": ["alice", "bob"]}},
        {
            "id": "incident",
            "category": "reporting",
            "points": 60,
            "report": {
                "deadline": "1h",
                "fields": [
                    {"name": "summary", "prompt": "What happened"},
                    {"name": "notes", "required": False},
                ],
            },
        },
    ],
    "scoring": {"policy": "standard"},
}


def make_range(tmp_path: Path, name: str = "mini", teams: int = 2) -> RangeState:
    d = tmp_path / f"scn-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    f = d / "mini.yaml"
    with f.open("w") as fh:
        YAML().dump(SCENARIO, fh)
    st = RangeState.create(
        name, f, {"scenario": "mini", "scenario_path": str(f), "teams": teams, "status": "up"}
    )
    creds.ensure_credentials(st, teams)
    store = EventStore(st.db_path)
    store.append(
        "drill.start",
        {"wall_start": time.time() - 60, "time_scale": 1.0, "teams": list(range(1, teams + 1)), "end": 7200},
        actor="runner",
    )
    for k in range(1, teams + 1):
        store.append(
            "inject.start",
            {"inject": "recon", "due_t": 0, "drill_t": 0, "resumed": False, "kind": "traffic"},
            team=k,
            actor="runner",
        )
    store.close()
    return st


def token(st: RangeState, team: int) -> str:
    return creds.read_env_file(creds.team_files(st, team).env)["RANGECTL_TOKEN"]


def auth(st: RangeState, team: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(st, team)}"}


def events(st: RangeState, kind=None, team: int | None = None):
    s = EventStore(st.db_path)
    try:
        return s.events(kind=kind, team=team)
    finally:
        s.close()
