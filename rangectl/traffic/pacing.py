"""How fast a generator goes and when it stops: count, duration, deadline and stop bounds, a rate.

:class:`Budget` paces a generator on an absolute schedule and stops it at the
first bound reached; :func:`set_timer_slack` asks the kernel for precise sleeps
(timed capture replay).
"""

from __future__ import annotations

import contextlib
import ctypes
import time

from rangectl.netns import libc
from rangectl.traffic.base import TrafficContext


class Budget:
    """Count, duration, deadline and stop bounds, plus an absolute-schedule rate limit.

    ``wait_next()`` blocks until the next slot (``start + n / rate``) and returns
    False (with ``reason`` set) once any bound is reached.
    """

    def __init__(self, ctx: TrafficContext, *, count: int, duration: float, rate: float | None):
        self.ctx = ctx
        self.count = count
        self.rate = rate
        self.start = time.monotonic()
        self.end = self.start + duration
        self.end_reason = "duration"
        if ctx.deadline is not None and ctx.deadline < self.end:
            self.end = ctx.deadline
            self.end_reason = "deadline"
        self.n = 0
        self.reason = "done"

    def expired(self) -> bool:
        if self.ctx.stopped():
            self.reason = "stopped"
            return True
        if time.monotonic() >= self.end:
            self.reason = self.end_reason
            return True
        return False

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking for stop/deadline; False when a bound hit meanwhile."""
        until = min(time.monotonic() + max(0.0, seconds), self.end)
        while True:
            left = until - time.monotonic()
            if left <= 0:
                break
            if self.ctx.stop is not None:
                if self.ctx.stop.wait(min(left, 0.2)):
                    break
            else:
                time.sleep(min(left, 0.2))
        return not self.expired()

    def wait_next(self) -> bool:
        if self.n >= self.count:
            self.reason = "count"
            return False
        if self.rate:
            due = self.start + self.n / self.rate
            if due >= self.end:
                self.expired() or self._set_end()
                return False
            if not self.sleep(due - time.monotonic()):
                return False
        elif self.expired():
            return False
        self.n += 1
        return True

    def _set_end(self) -> bool:
        self.reason = self.end_reason
        return True


def set_timer_slack(ns: int = 1) -> None:
    """Ask for precise sleeps in this thread (prctl PR_SET_TIMERSLACK; default slack is 50 us)."""
    with contextlib.suppress(Exception):
        libc().prctl(29, ctypes.c_ulong(ns), 0, 0, 0)
