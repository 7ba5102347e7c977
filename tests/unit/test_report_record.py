"""The after-action report anchors the record: the full head hash and the latest checkpoint, with
the command that checks it later."""

from __future__ import annotations

from rangectl.report import write_report
from rangectl.store import EventStore
from tests.unit.test_report import rng  # noqa: F401 - the fixture: a scored two-team record


def test_report_shows_the_full_head_and_the_checkpoint(rng, tmp_path):  # noqa: F811
    s = EventStore(rng.db_path)
    head = s.verify().head_hash
    cp = s.last_checkpoint()
    s.close()
    assert cp is not None and len(head) == 64  # drill.start/finish are milestones
    write_report(rng, tmp_path / "o")
    for name in ("report.md", "report.html"):
        text = (tmp_path / "o" / name).read_text()
        assert f"head {head}" in text
        assert f"rangectl verify aar --expect-head {cp.hash}" in text
