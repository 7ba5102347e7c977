"""Opening another EventStore on a record this process already has open must not drop the first
one's SQLite locks (closing any descriptor of a file drops every POSIX lock the process holds on
it). With them gone, another process that opens and closes the record believes it is the last
user: it checkpoints and deletes the WAL under this process, whose next events are lost or leave
"database disk image is malformed" (seen in the full-drill test before the fix)."""

from __future__ import annotations

import subprocess
import sys

from rangectl.store import EventStore

READER = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=5, isolation_level=None)
print(c.execute("SELECT count(*) FROM events").fetchone()[0])
c.close()  # the last connection (as far as it can tell) checkpoints and removes the WAL
"""


def test_opening_a_second_store_keeps_the_records_locks(tmp_path):
    db = tmp_path / "range.db"
    a = EventStore(db)
    a.append("drill.start", {"wall_start": 0.0, "time_scale": 1.0}, actor="runner", ts=1.0)
    b = EventStore(db)  # e.g. a board read or the API's reader in the same process
    p = subprocess.run([sys.executable, "-c", READER, str(db)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "range.db-wal").exists(), "another process removed the WAL this one is using"
    for i in range(20):
        a.append("message", {"text": f"m{i}"}, team=1, actor="runner", ts=2.0 + i)
    a.close()
    b.close()
    c = EventStore(db)
    v = c.verify()
    assert v.ok and v.count == 21, (v.ok, v.count, v.reason)
    c.close()
