"""Evidence bundles: what a team (or an assessor) takes away from a drill, checkable offline.

``rangectl evidence RANGE [--team K] --out DIR [--tar]`` writes, per team, a folder
``team-K/`` holding:

- ``events.jsonl`` — every event of the team and every range-wide event (team null: drill
  start, pause, stop), one JSON object per line exactly as recorded: seq, ts, kind, team,
  actor, data, and the chain links ``prev_hash`` and ``hash``;
- ``injects.jsonl`` — the ground truth of every attack run against the team (``inject.done``,
  ``traffic.replay``: what left the red node, what arrived at the target);
- ``commands.jsonl`` — the team's command log (:mod:`rangectl.cmdlog`): each SSH session,
  program run (command line, node, drill time, exit status) and file copied with scp;
- ``capture/NETWORK.pcapN`` — the packet capture of each of the team's networks taken during the
  drill (rotating files, bounded in size; open them with tshark or Wireshark);
- ``record.json`` — the range, scenario and team, the record's head (seq and hash), and the
  result of ``verify`` over the whole record when the bundle was made;
- ``manifest.json`` — the SHA-256 and size of every other file of the folder.

With ``--tar`` the folders go into one ``RANGE-evidence.tar.gz`` in DIR instead. Checking a
bundle needs nothing from rangectl: ``sha256sum`` against the manifest, and each line's
``hash`` is SHA-256 over the canonical JSON of its fields and the previous hash
(docs/scoring.md, "The event store"), so the team's events can be matched against a head
the trainer published. Reads the record only; never writes to it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rangectl import __version__, cmdlog
from rangectl.drill.capture import capture_files
from rangectl.errors import NotFound, UsageError
from rangectl.state import RangeState
from rangectl.store import Event, EventStore

#: event kinds that are attack ground truth
GROUND_TRUTH = ("inject.done", "traffic.replay")


@dataclass
class TeamBundle:
    team: int
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256
    events: int = 0
    injects: int = 0


@dataclass
class EvidenceResult:
    range: str
    out: Path
    teams: list[TeamBundle]
    verify_ok: bool
    head_seq: int
    head_hash: str
    tar: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "range": self.range,
            "out": str(self.out),
            "tar": str(self.tar) if self.tar else None,
            "verify_ok": self.verify_ok,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "teams": [{"team": t.team, "events": t.events, "injects": t.injects, "files": t.files} for t in self.teams],
        }


def _jsonl(events: list[Event]) -> bytes:
    return b"".join(
        json.dumps(e.as_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        for e in events
    )


def team_files(state: RangeState, team: int, events: list[Event], verify: dict[str, Any]) -> dict[str, bytes]:
    """The files of one team's folder (manifest last, over the others)."""
    mine = [e for e in events if e.team == team or e.team is None]
    truth = [e for e in events if e.team == team and e.kind in GROUND_TRUTH]
    head = events[-1] if events else None
    commands = cmdlog.rows(events, team)
    files: dict[str, bytes] = {
        "events.jsonl": _jsonl(mine),
        "injects.jsonl": _jsonl(truth),
        "commands.jsonl": b"".join(
            json.dumps(r.as_dict(), ensure_ascii=False, sort_keys=True).encode() + b"\n" for r in commands
        ),
    }
    for cap in capture_files(state, team):  # the drill's packet capture (rangectl.drill.capture)
        files[f"capture/{cap.name}"] = cap.read_bytes()
    record = {
        "range": state.name,
        "scenario": state.get("scenario"),
        "team": team,
        "events": len(mine),
        "ground_truth": len(truth),
        "commands": len(commands),
        "head": {"seq": head.seq if head else 0, "hash": head.hash if head else None},
        "verify": verify,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rangectl": __version__,
    }
    files["record.json"] = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode()
    manifest = {
        "algorithm": "sha256",
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in files.items()},
    }
    files["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return files


def write_evidence(range_name: str, out: Path, teams: list[int] | None = None, tar: bool = False) -> EvidenceResult:
    """Write the bundle of ``teams`` (default: every team of the range) under ``out``."""
    st = RangeState(range_name)
    if not st.exists():
        raise NotFound(f"no range named '{range_name}'", fix="see `rangectl ls`")
    known = [t.team for t in st.plan().teams]
    wanted = known if teams is None else sorted(set(teams))
    bad = [t for t in wanted if t not in known]
    if bad:
        raise NotFound(f"range '{range_name}' has no team {bad[0]} (teams {known[0]}..{known[-1]})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    with EventStore(st.db_path) as store:
        events = list(store.events())
        v = store.verify()
    verify = {
        "ok": v.ok,
        "events": v.count,
        "head": v.head_hash,
        "first_bad_seq": v.first_bad_seq,
        "reason": v.reason,
        "checkpoints": v.checkpoints,
    }
    head = events[-1] if events else None
    res = EvidenceResult(range_name, out, [], v.ok, head.seq if head else 0, head.hash if head else "")
    bundles: dict[str, bytes] = {}
    for t in wanted:
        files = team_files(st, t, events, verify)
        tb = TeamBundle(t, {n: hashlib.sha256(d).hexdigest() for n, d in files.items()})
        tb.events = json.loads(files["record.json"])["events"]
        tb.injects = json.loads(files["record.json"])["ground_truth"]
        res.teams.append(tb)
        bundles.update({f"team-{t}/{name}": data for name, data in files.items()})
    out.mkdir(parents=True, exist_ok=True)
    if tar:
        res.tar = out / f"{range_name}-evidence.tar.gz"
        tmp = res.tar.with_suffix(".tmp")
        with tarfile.open(tmp, "w:gz") as tf:
            for name, data in bundles.items():
                info = tarfile.TarInfo(f"{range_name}-evidence/{name}")
                info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
                tf.addfile(info, io.BytesIO(data))
        os.replace(tmp, res.tar)
    else:
        for name, data in bundles.items():
            p = out / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    return res
