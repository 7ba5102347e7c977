"""The report's model: a range's record read and scored (:class:`ReportData`), with each event's drill time.

Everything comes from the range's record (event store) and the scoring engine;
nothing is fetched from the network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rangectl import cmdlog
from rangectl.cmdlog import CommandRow
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
    commands: list[CommandRow] = field(default_factory=list)  # every team's command log (cmdlog.rows)

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
    times = event_times(events)
    return ReportData(
        range_name,
        scenario,
        plan,
        policy,
        b,
        events,
        times,
        verify,
        lang=lang,
        commands=command_rows(events, times),
    )


def command_rows(events: list[Event], times: list[float]) -> list[CommandRow]:
    """Every team's command log (:func:`rangectl.cmdlog.rows`), in record order.

    A row whose event carries no ``drill_t`` (a ``command.dropped`` summary) gets the drill
    clock at its wall time, when the drill had started by then; one recorded before the
    drill started keeps ``None`` (shown as "-", drawn on no timeline)."""
    start = next((float(e.data.get("wall_start", e.ts)) for e in events if e.kind == "drill.start"), None)
    when = {e.seq: t for e, t in zip(events, times, strict=True) if e.kind in cmdlog.KINDS}
    rows = cmdlog.rows(events)
    for r in rows:
        if r.drill_t is None and start is not None and r.ts >= start:
            r.drill_t = when.get(r.seq)
    return rows


def team_commands(d: ReportData, team: int) -> list[CommandRow]:
    """One team's rows of the command log."""
    return [r for r in d.commands if r.team == team]


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
