"""Evidence bundles: a drill on the in-memory engine, then each team's bundle checked the way
an assessor would — manifest hashes, each event's own hash, only the team's events, the
ground truth of the attacks — and tampering caught."""

from __future__ import annotations

import hashlib
import json
import tarfile
import threading

import pytest

from rangectl import backend as backends
from rangectl import ranges
from rangectl.drill.wiring import build_runner
from rangectl.errors import NotFound
from rangectl.evidence import write_evidence
from rangectl.state import RangeState
from rangectl.store import EventStore, canonical_json, event_hash
from tests.conftest import FIXTURES, run_cli

MINI = FIXTURES / "mini-range.yaml"


@pytest.fixture
def drilled(memory):
    """The mini range for 2 teams on the memory engine, its whole timeline run at x60."""
    ranges.up(MINI, teams=2, name="evid", provision=False, engine="memory")
    st = RangeState.open("evid")
    runner = build_runner(st, backends.for_range(st))
    runner.start(60)
    runner.run(threading.Event())
    yield st
    ranges.down("evid")


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _own_hash(e: dict) -> str:
    return event_hash(e["seq"], e["ts"], e["kind"], e["team"], e["actor"], canonical_json(e["data"]), e["prev_hash"])


def test_each_team_gets_its_own_checkable_bundle(drilled, tmp_path):
    res = write_evidence("evid", tmp_path / "ev")
    assert res.verify_ok and [t.team for t in res.teams] == [1, 2]
    with EventStore(drilled.db_path) as store:
        everything = list(store.events())
    for t in (1, 2):
        d = tmp_path / "ev" / f"team-{t}"
        manifest = json.loads((d / "manifest.json").read_text())
        assert set(manifest["files"]) == {"events.jsonl", "injects.jsonl", "commands.jsonl", "record.json"}
        for name, want in manifest["files"].items():
            data = (d / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == want["sha256"] and len(data) == want["bytes"]
        events = _lines(d / "events.jsonl")
        # exactly the team's events and the range-wide ones, each one as recorded
        want = [e.as_dict() for e in everything if e.team in (t, None)]
        assert events == json.loads(json.dumps(want)) and events
        assert all(e["team"] in (t, None) for e in events)
        assert all(_own_hash(e) == e["hash"] for e in events)
        truth = _lines(d / "injects.jsonl")
        assert [e["data"]["inject"] for e in truth] == ["recon"] and truth[0]["team"] == t
        assert truth[0]["data"]["packets"] == 3  # the portscan's three ports
        record = json.loads((d / "record.json").read_text())
        assert record["team"] == t and record["verify"]["ok"] is True
        assert record["head"] == {"seq": everything[-1].seq, "hash": everything[-1].hash}
    # team 2 never sees team 1's events
    one = {e["seq"] for e in _lines(tmp_path / "ev" / "team-1" / "events.jsonl") if e["team"] == 1}
    two = {e["seq"] for e in _lines(tmp_path / "ev" / "team-2" / "events.jsonl")}
    assert one and not one & two


def test_tampering_shows(drilled, tmp_path):
    write_evidence("evid", tmp_path / "ev", teams=[1])
    d = tmp_path / "ev" / "team-1"
    assert not (tmp_path / "ev" / "team-2").exists()
    lines = (d / "events.jsonl").read_text().splitlines()
    e = json.loads(lines[-1])
    e["data"]["forged"] = True
    lines[-1] = json.dumps(e)
    (d / "events.jsonl").write_text("\n".join(lines) + "\n")
    manifest = json.loads((d / "manifest.json").read_text())
    assert hashlib.sha256((d / "events.jsonl").read_bytes()).hexdigest() != manifest["files"]["events.jsonl"]["sha256"]
    assert _own_hash(e) != e["hash"]


def test_tar_and_cli(drilled, tmp_path):
    res = write_evidence("evid", tmp_path, tar=True)
    assert res.tar == tmp_path / "evid-evidence.tar.gz"
    with tarfile.open(res.tar) as tf:
        names = sorted(tf.getnames())
        assert names == sorted(f"evid-evidence/team-{t}/{n}" for t in (1, 2)
                               for n in ("events.jsonl", "injects.jsonl", "commands.jsonl", "record.json", "manifest.json"))  # fmt: skip
        m = json.load(tf.extractfile("evid-evidence/team-2/manifest.json"))
        data = tf.extractfile("evid-evidence/team-2/events.jsonl").read()
        assert hashlib.sha256(data).hexdigest() == m["files"]["events.jsonl"]["sha256"]
    with pytest.raises(NotFound, match="no team 3"):
        write_evidence("evid", tmp_path, teams=[3])
    with pytest.raises(NotFound, match="no range named"):
        write_evidence("nosuch", tmp_path)


def test_cli_exit_codes(tmp_path):
    r = run_cli("evidence", "nosuch", "--out", str(tmp_path), env={"RANGECTL_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 4 and "no range named 'nosuch'" in r.stderr and "Traceback" not in r.stderr
