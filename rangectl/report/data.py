"""The report's model: a range's record read and scored (:class:`ReportData`), with each event's drill time.

Everything comes from the range's record (event store) and the scoring engine;
nothing is fetched from the network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rangectl.plan import Plan
from rangectl.scenario.model import Scenario
from rangectl.scoring.engine import Board, DrillClock, compute_board
from rangectl.scoring.policy import Policy
from rangectl.store import Event, VerifyResult


@dataclass
class ReportData:
    range: str
    scenario: Scenario
    plan: Plan
    policy: Policy
    board: Board
    events: list[Event]
    times: list[float]  # drill time of each event (same order)
    verify: VerifyResult
    generated: float = field(default_factory=time.time)
    lang: str = "en"
    checkpoint: Any = None  # the record's latest checkpoint outside the database (store.Checkpoint)

    @property
    def end_t(self) -> float:
        last = max(self.times, default=0.0)
        return max(60.0, last, float(self.scenario.duration or 0.0))


def event_times(events: list[Event]) -> list[float]:
    """Each event's drill time: its ``drill_t``, or the drill clock at its wall time."""
    clock = DrillClock()
    out = []
    for ev in events:
        if ev.kind.startswith("drill."):
            clock.feed(ev.kind, ev.ts, ev.data)
        t = ev.data.get("drill_t")
        out.append(
            float(t) if isinstance(t, int | float) and not isinstance(t, bool) else clock.drill_t(ev.ts)
        )
    return out


def collect(state: Any, lang: str = "en") -> ReportData:
    """Read a range's record and score it (``state``: a RangeState)."""
    from rangectl.scoring.actions import context

    ctx = context(state)
    events = ctx.store.events()
    data = build(state.name, ctx.scenario, ctx.plan, ctx.policy, events, ctx.store.verify(), lang)
    data.checkpoint = ctx.store.last_checkpoint()
    return data


def build(
    range_name: str,
    scenario: Scenario,
    plan: Plan,
    policy: Policy,
    events: list[Event],
    verify: VerifyResult,
    lang: str = "en",
) -> ReportData:
    b = compute_board(scenario, plan, policy, events)
    return ReportData(range_name, scenario, plan, policy, b, events, event_times(events), verify, lang=lang)


def inject_spans(d: ReportData, team: int) -> dict[str, tuple[float, float | None, str]]:
    """Each inject the team ran: (drill time started, ended or None, status)."""
    spans: dict[str, tuple[float, float | None, str]] = {}
    for ev, t in zip(d.events, d.times, strict=True):
        if ev.team != team:
            continue
        inj = ev.data.get("inject")
        if ev.kind == "inject.start" and inj not in spans:
            spans[inj] = (t, None, "running")
        elif ev.kind == "inject.done" and inj in spans and spans[inj][1] is None:
            spans[inj] = (spans[inj][0], t, str(ev.data.get("status", "ok")))
    return spans
