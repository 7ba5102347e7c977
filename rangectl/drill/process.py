"""The drill runner as a process: which process runs a range's drill, starting one, and stopping it.

A range's state records the runner's pid (``drill_pid``). A runner is taken to
be alive when that pid exists and its ``/proc/PID/cmdline`` says ``drill`` (a
pid reused by another program does not count). ``detach`` starts the runner
as ``rangectl drill start ... --no-live`` in a session of its own, its output
going to ``drill.log`` in the range's folder; :class:`ForegroundRun` runs it on
a thread of this process, and SIGTERM stops it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rangectl.drill.runner import ClockState, DrillRunner, clock_from_events
from rangectl.errors import RangeError, UsageError
from rangectl.state import RangeState
from rangectl.store import EventStore

LOG_NAME = "drill.log"  # the detached runner's output, in the range's folder


def pid_alive(pid: int | None) -> bool:
    """Is ``pid`` a running drill runner (it exists, and its command line says ``drill``)?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"drill" in fh.read()
    except OSError:
        return False


def runner_pid(st: RangeState) -> int | None:
    """The pid of the range's drill runner, if one is running."""
    pid = st.get("drill_pid")
    return pid if pid_alive(pid) else None


def ensure_not_running(st: RangeState, range_name: str) -> None:
    """Refuse a second runner for the range (this process may be the one recorded)."""
    pid = st.get("drill_pid")
    if pid_alive(pid) and pid != os.getpid():
        raise UsageError(f"a drill runner is already running for '{range_name}' (pid {pid})")


def detach(st: RangeState, range_name: str, time_scale: float) -> tuple[int, Path]:
    """Start the runner in the background, in a session of its own; ``(pid, log file)``."""
    log = st.dir / LOG_NAME
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rangectl.cli", "drill", "start", range_name, "--time-scale", str(time_scale), "--no-live"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    st.update(drill_pid=proc.pid)
    return proc.pid, log


class ForegroundRun:
    """The range's drill runner on a thread of this process, recorded as the range's runner.

    SIGTERM (``rangectl drill start`` run by ``--detach``, or a supervisor) stops it;
    :meth:`interrupt` does the same from this process (Ctrl-C).
    """

    def __init__(self, st: RangeState, time_scale: float):
        from rangectl.backend import for_range
        from rangectl.drill.wiring import build_runner

        st.update(drill_pid=os.getpid())
        self.runner: DrillRunner = build_runner(st, for_range(st))
        self.runner.start(time_scale)
        self.stop = threading.Event()

        def _term(signum, frame):  # noqa: ARG001
            self.stop.set()

        signal.signal(signal.SIGTERM, _term)
        self.thread = threading.Thread(target=self.runner.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def interrupt(self, timeout: float = 30) -> None:
        """Stop the runner and wait up to ``timeout`` seconds for it."""
        self.stop.set()
        self.thread.join(timeout)


def wait_finished(range_name: str, timeout: float) -> ClockState:
    """Block until the drill finishes or stops (for tests and the self-test)."""
    store = EventStore(RangeState.open(range_name).db_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = clock_from_events(list(store.events()))
        if c.status in ("finished", "stopped"):
            return c
        time.sleep(0.5)
    raise RangeError(f"drill on '{range_name}' did not finish within {timeout:.0f}s")
