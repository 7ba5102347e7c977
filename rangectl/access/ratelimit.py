"""Token buckets: per-(team, objective) submissions, and each team's whole-API budget.

A bucket holds up to ``burst`` tokens and gains ``per_minute / 60`` tokens a
second. Each submission takes one; with none left the submission is refused
and the caller learns how long until the next token (``Retry-After``).
Thread-safe; memory is bounded by teams x objectives.

:class:`TeamBudget` is the same bucket per team over every authenticated
request (key ``(team, "")``): ``per_second`` with bursts of ``burst``. The
team API's guard takes from it before anything else is done for the request,
so one team's flood is turned away at the cost of parsing its headers, and
the other teams' buckets (and latency) do not move. A team turned away has a
burst of only ``penalty_burst`` until ``penalty_seconds`` pass without that
(the service keeps the time; ``take(..., burst=...)`` caps the bucket).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    per_minute: float = 6.0
    burst: int = 3

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        return f"{self.per_minute:g}/min per objective, bursts of {self.burst}"


@dataclass(frozen=True)
class TeamBudget:
    """Requests a second one team may make to the whole API (0: no budget)."""

    per_second: float = 50.0
    burst: int = 100
    tarpit: float = 1.0  # an over-budget request is answered (429) after this many seconds
    # a team turned away keeps a smaller burst for a while: a flood pulsed on and off cannot spend
    # a full refilled burst at every restart
    penalty_burst: int = 10
    penalty_seconds: float = 60.0
    concurrency: int = 2  # a team's requests in the application at once; the others wait their turn

    def as_rate(self) -> RateLimit:
        return RateLimit(per_minute=self.per_second * 60.0, burst=self.burst)

    def describe(self) -> str:
        if self.per_second <= 0:
            return "off"
        return f"{self.per_second:g} requests/s per team, bursts of {self.burst}"


class RateLimiter:
    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.clock = clock
        self._buckets: dict[tuple[int, str], tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, team: int, objective: str, burst: int | None = None) -> float:
        """Take a token: 0.0 when allowed, else the seconds to wait before the next try (> 0).

        ``burst`` caps the bucket below the limit's own burst for this take (a penalty).
        """
        if not self.limit.enabled:
            return 0.0
        rate = self.limit.per_minute / 60.0
        cap = float(max(1, self.limit.burst if burst is None else min(burst, self.limit.burst)))
        now = self.clock()
        key = (team, objective)
        with self._lock:
            tokens, at = self._buckets.get(key, (cap, now))
            tokens = min(cap, tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
