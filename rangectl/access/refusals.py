"""What the team API's limits turn away: deciding it, answering it, and summarising it in the record.

The only events the team API writes itself are these summaries
(:class:`RefusalLog`): ``submission.refused``, one per team, objective and
REFUSAL_WINDOW seconds, with the count, the first and last time and at most
REFUSAL_SAMPLES answers cut to SAMPLE_BYTES bytes of UTF-8; and
``api.throttled``, one per team and window, for requests over the team's
whole-API budget (:class:`BudgetPenalty`, over :class:`TeamBudget`). A team's
flood therefore costs the store a bounded number of events per hour, and the
scoring engine ignores both kinds. An objective the team solved or has no
attempts left for refuses every later answer (:class:`FinalRefusals`); those
are summarised like rate-limited ones instead of each becoming an event.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

from rangectl.access.ratelimit import RateLimiter, TeamBudget
from rangectl.scoring import actions
from rangectl.scoring.engine import DrillClock
from rangectl.scoring.incremental import drill_clock

RATE_LIMITED = "rate limited"
REFUSED_KIND = "submission.refused"  # rate-limited attempts, summarised: recorded, never scored
THROTTLED_KIND = "api.throttled"  # requests over a team's API budget, summarised
REFUSAL_WINDOW = 60.0  # seconds: one summary per team and objective (or budget) per window
REFUSAL_SAMPLES = 3  # answers kept per summary
SAMPLE_BYTES = 64  # ... each cut to this many bytes of UTF-8 (never mid-character)
# exact kinds, not "drill.*": an equality match uses the store's (kind, seq) index, a LIKE scans every event


def actor(team: int) -> str:
    """Who the record names for what a team did through the API."""
    return f"team-{team}"


class ContextSource(Protocol):
    """What the refusal log needs of the team service: its scoring context (fresh: re-read)."""

    def ctx(self, fresh: bool = False) -> actions.Context: ...


def rate_reason(wait: float) -> str:
    return f"{RATE_LIMITED}: try again in {RateLimiter.retry_after_header(wait)} s"


def refused_result(
    team: int, objective_id: str, wait: float, seq: int | None = None
) -> tuple[int, dict, dict[str, str]]:
    """The 429 for an answer over the per-objective rate limit (``wait``: seconds until the next token)."""
    retry = RateLimiter.retry_after_header(wait)
    reason = rate_reason(wait)
    body = {
        "team": team,
        "objective": objective_id,
        "accepted": False,
        "correct": False,
        "refused": reason,
        "retry_after": int(retry),
        "seq": seq,
        "message": f"refused: {reason}",
    }
    return 429, body, {"Retry-After": retry}


class BudgetPenalty:
    """A team's whole-API budget (:class:`TeamBudget`), one token per request, with its penalty:
    a team turned away in the last ``penalty_seconds`` has a burst of ``penalty_burst``."""

    def __init__(self, budget: TeamBudget):
        self.settings = budget
        self._throttled: dict[int, float] = {}  # team -> when it was last over its budget

    def take(self, limiter: RateLimiter, team: int) -> float:
        """Take one request from the team's bucket in ``limiter``: 0 = go, else seconds to wait."""
        b = self.settings
        now = limiter.clock()
        last = self._throttled.get(team)
        penalty = last is not None and now - last < b.penalty_seconds
        wait = limiter.take(team, "", burst=b.penalty_burst if penalty else None)
        if wait > 0:
            self._throttled[team] = now
        return wait


class FinalRefusals:
    """(team, objective) pairs refused for good: solved, or no attempts left.

    Each is kept with the context it holds for (a changed policy may give
    attempts back), the refusal and the attempts left.
    """

    def __init__(self) -> None:
        self._final: dict[tuple[int, str], tuple[int, str, int | None]] = {}

    def remember(self, team: int, res: actions.SubmissionResult, context_id: int) -> None:
        """Keep a scored answer's refusal if it is final."""
        if res.refused is not None and (res.attempts_left == 0 or "already solved" in res.refused):
            self._final[(team, res.objective)] = (context_id, res.refused, res.attempts_left)

    def get(self, team: int, objective_id: str, context_id: int) -> tuple[str, int | None] | None:
        """(refusal, attempts left) if this team's answers to this objective are refused for good."""
        hit = self._final.get((team, objective_id))
        if hit is None or hit[0] != context_id:
            return None
        return hit[1], hit[2]


def closed_result(
    team: int, objective_id: str, reason: str, left: int | None
) -> tuple[int, dict, dict[str, str]]:
    """The 409 for an answer to an objective refused for good (no event: it is counted)."""
    body = {
        "team": team,
        "objective": objective_id,
        "accepted": False,
        "correct": False,
        "attempt": None,
        "attempts_left": left,
        "refused": reason,
        "points": 0.0,
        "seq": None,
        "message": f"refused: {reason}",
    }
    return 409, body, {}


@dataclass
class _Tally:
    """What one team's refused attempts at one objective (or its over-budget requests) came to."""

    window: int  # int(ts // REFUSAL_WINDOW)
    count: int
    first_ts: float
    last_ts: float
    samples: list[str]
    reasons: dict[str, int] = field(default_factory=dict)


class RefusalLog:
    """Refused attempts, summarised: one event per team, objective and window.

    ``note`` only counts, in memory (a flood costs no store transaction). A
    thread writes every tally whose window has ended, all in one transaction,
    within a few seconds of the window's end; ``close`` writes the open ones
    too. Memory is bounded by teams x (answer objectives + 1): a tally key is
    an open answer objective (checked before any count) or the budget.
    A summary that cannot be written (busy store) is kept and tried again.
    """

    def __init__(self, service: ContextSource, window: float = REFUSAL_WINDOW):
        self.service = service
        self.window = float(window)
        self._open: dict[tuple[str, int, str | None], _Tally] = {}
        self._closed: list[tuple[tuple[str, int, str | None], _Tally]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ensure(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if (self._thread is None or not self._thread.is_alive()) and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name="rangectl-refusals", daemon=True)
                    self._thread.start()

    def note(
        self,
        kind: str,
        team: int,
        objective: str | None,
        sample: str,
        now: float | None = None,
        reason: str = RATE_LIMITED,
    ) -> None:
        """Count one refused attempt (``kind``: REFUSED_KIND or THROTTLED_KIND)."""
        now = time.time() if now is None else now
        win = int(now // self.window)
        key = (kind, team, objective)
        with self._lock:
            t = self._open.get(key)
            if t is not None and t.window != win:
                self._closed.append((key, t))
                t = None
            if t is None:
                t = self._open[key] = _Tally(win, 0, now, now, [])
            t.count += 1
            t.reasons[reason] = t.reasons.get(reason, 0) + 1
            t.last_ts = max(t.last_ts, now)
            if len(t.samples) < REFUSAL_SAMPLES:
                t.samples.append(sample.encode("utf-8", "replace")[:SAMPLE_BYTES].decode("utf-8", "ignore"))
        self._ensure()

    def pending(self) -> int:
        """Attempts counted and not yet written."""
        with self._lock:
            return sum(t.count for t in self._open.values()) + sum(t.count for _, t in self._closed)

    def flush(self, everything: bool = False, now: float | None = None) -> int:
        """Write the ended windows' tallies (all of them with ``everything``); returns events written."""
        now = time.time() if now is None else now
        win = int(now // self.window)
        with self._write_lock:
            with self._lock:
                items = self._closed
                self._closed = []
                for key, t in list(self._open.items()):
                    if everything or t.window < win:
                        items.append((key, t))
                        del self._open[key]
            if not items:
                return 0
            try:
                self._write(items)
            except Exception:
                with self._lock:  # keep them for the next try
                    self._closed = items + self._closed
                raise
            return len(items)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush(everything=True)

    def _run(self) -> None:
        pause = min(5.0, self.window / 4)
        while not self._stop.wait(pause):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a busy store: the tallies are kept for the next pass
                continue

    def _write(self, items: list[tuple[tuple[str, int, str | None], _Tally]]) -> None:
        for attempt in (1, 2):
            ctx = self.service.ctx(fresh=attempt == 2)
            try:
                with ctx.store.transaction() as tx:
                    clock = drill_clock(tx)
                    for (kind, team, objective), t in sorted(items, key=lambda it: it[1].first_ts):
                        # ts: when written (the record's times only move forward); the window is in data
                        tx.append(
                            kind,
                            _summary(kind, objective, t, clock, self.window),
                            team=team,
                            actor=actor(team),
                        )
                return
            except sqlite3.ProgrammingError:  # the scoring module replaced (closed) its store: once more
                if attempt == 2:
                    raise


def close_at_exit(ref: weakref.ref) -> None:
    log = ref()
    if log is not None:
        try:
            log.close()
        except Exception:  # noqa: BLE001 - the process is ending; nothing else can be done
            pass


def _summary(kind: str, objective: str | None, t: _Tally, clock: DrillClock, window: float) -> dict[str, Any]:
    data: dict[str, Any] = {
        "count": t.count,
        "first_ts": t.first_ts,
        "last_ts": t.last_ts,
        "window_s": window,
        "drill_t": clock.drill_t(t.first_ts),
        "last_drill_t": clock.drill_t(t.last_ts),
        "samples": list(t.samples),
    }
    if kind == REFUSED_KIND:
        top = max(t.reasons.items(), key=lambda kv: kv[1])[0] if t.reasons else RATE_LIMITED
        data.update(objective=objective, correct=False, attempt=None, refused=top, reasons=dict(t.reasons))
    return data
