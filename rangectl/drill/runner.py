"""The drill runner: follows the scenario's timeline on the drill clock, for every team.

Everything it knows comes from the range's event store, so it is crash-safe:
kill it at any moment, start it again, and it carries on from the record.
Each pass reads only what is new, of the kinds it acts on (RUNNER_KINDS): a
team's flood of submissions is never read. When it stops it checkpoints the
record's head outside the database (the store does so at every milestone).

* The drill clock: ``drill.start`` fixes the wall time of t=0 and the time
  scale; ``drill.pause``/``drill.resume`` stop and restart it. Drill time is
  ``(wall - start - paused) * scale``.
* An inject runs for a team when its due time has come: ``at``, or the due
  time of its ``after`` inject plus ``delay`` (and never before that inject
  has finished for the team). Before running, the runner records
  ``inject.start``; after, ``inject.done`` with the ground truth. On restart,
  an inject with ``inject.done`` is never run again; one with only
  ``inject.start`` (the runner died while it ran) is run again to completion,
  so every inject ends with exactly one ``inject.done`` per team.
* Check objectives are probed every ``check.every`` after their inject fired,
  until they pass once. Availability rounds run every ``every`` for all teams
  concurrently; round ``r`` covers drill time ``[r*every, (r+1)*every)`` and
  is recorded once. A round ends by its deadline (the probe's ``timeout``
  plus ``ROUND_GRACE``): a team's probe with no result by then is recorded as
  failed ("probe late") and never holds up the round, other teams or the runner.
* The drill finishes when every inject is done for every team and the
  scenario's ``duration`` (or the last inject, when none is set) has passed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rangectl.plan import Plan
from rangectl.scenario.model import Inject, Scenario
from rangectl.scoring.engine import HoldTracker
from rangectl.store import EventStore

TICK = 0.1  # wall seconds between scheduler passes
ROUND_GRACE = 2.0  # seconds an availability round waits beyond the probe's own timeout


def round_deadline(av: Any) -> float:
    """Seconds an availability round may take: the probe's timeout plus a grace for finding the
    vantage; a probe with no result by then counts as failed."""
    return float(av.timeout) + ROUND_GRACE


@dataclass
class ClockState:
    status: str = "not-started"  # not-started | running | paused | stopped | finished
    start_ts: float | None = None
    scale: float = 1.0
    paused_total: float = 0.0
    pause_since: float | None = None

    def drill_t(self, now: float | None = None) -> float:
        if self.start_ts is None:
            return 0.0
        now = time.time() if now is None else now
        if self.pause_since is not None:
            now = self.pause_since
        if self.status in ("stopped", "finished") and self.pause_since is not None:
            now = self.pause_since
        return max(0.0, (now - self.start_ts - self.paused_total) * self.scale)

    def wall_at(self, drill_t: float) -> float | None:
        """Wall time at which drill time ``drill_t`` comes (while running)."""
        if self.start_ts is None or self.status != "running":
            return None
        return self.start_ts + self.paused_total + drill_t / self.scale


def clock_from_events(events: list[Any]) -> ClockState:
    c = ClockState()
    for ev in events:
        if ev.kind == "drill.start" and c.start_ts is None:
            c.start_ts = float(ev.data.get("wall_start", ev.ts))
            c.scale = float(ev.data.get("time_scale", 1.0))
            c.status = "running"
        elif ev.kind == "drill.pause" and c.status == "running":
            c.pause_since = ev.ts
            c.status = "paused"
        elif ev.kind == "drill.resume" and c.status == "paused" and c.pause_since is not None:
            c.paused_total += ev.ts - c.pause_since
            c.pause_since = None
            c.status = "running"
        elif ev.kind in ("drill.stop", "drill.finish"):
            if c.status == "running":
                c.pause_since = ev.ts
            c.status = "finished" if ev.kind == "drill.finish" else "stopped"
    return c


def due_times(scenario: Scenario) -> dict[str, float]:
    """Drill time at which each inject is due (``after`` chains resolved)."""
    by_id = {i.id: i for i in scenario.injects}
    out: dict[str, float] = {}

    def due(inj: Inject, depth: int = 0) -> float:
        if inj.id in out:
            return out[inj.id]
        if depth > len(by_id):
            raise ValueError("cycle in after chain")
        t = inj.at if inj.at is not None else due(by_id[inj.after], depth + 1) + inj.delay
        out[inj.id] = t
        return t

    for inj in scenario.injects:
        due(inj)
    return out


def end_time(scenario: Scenario) -> float:
    dues = due_times(scenario)
    last = max(dues.values(), default=0.0)
    return max(scenario.duration or 0.0, last)


@dataclass
class Progress:
    """What the record says has happened, per team."""

    started: dict[tuple[str, int], int] = field(default_factory=dict)  # (inject, team) -> seq
    done: dict[tuple[str, int], dict] = field(default_factory=dict)
    passed: set[tuple[str, int]] = field(default_factory=set)  # (objective, team)
    last_check: dict[tuple[str, int], float] = field(default_factory=dict)  # drill_t of last probe
    rounds: set[tuple[int, int]] = field(default_factory=set)  # (availability idx, round)
    fired_at: dict[tuple[str, int], float] = field(default_factory=dict)  # drill_t of inject start


    def apply(self, ev: Any) -> None:
        """Take one more event into account (events come in seq order)."""
        d = ev.data
        if ev.kind == "inject.start":
            key = (d["inject"], ev.team)
            self.started.setdefault(key, ev.seq)
            self.fired_at.setdefault(key, float(d.get("drill_t", 0.0)))
        elif ev.kind == "inject.done" and not d.get("manual"):
            # a trainer's `rangectl inject` (manual) is extra: the timeline's run still happens
            self.done.setdefault((d["inject"], ev.team), d)
        elif ev.kind == "check":
            key = (d["objective"], ev.team)
            self.last_check[key] = float(d.get("drill_t", 0.0))
            if d.get("passed"):
                self.passed.add(key)
        elif ev.kind == "availability":
            self.rounds.add((int(d["index"]), int(d["round"])))


# what the runner reads of the record: the clock and its own progress, never the teams' traffic
CLOCK_KINDS = ("drill.start", "drill.pause", "drill.resume", "drill.stop", "drill.finish")
RUNNER_KINDS = (*CLOCK_KINDS, "inject.start", "inject.done", "check", "availability", "check.revoked")


def progress_from_events(events: list[Any]) -> Progress:
    p = Progress()
    for ev in events:
        p.apply(ev)
    return p


InjectFn = Callable[[int, Inject, float], dict]  # (team, inject, drill_t) -> ground truth
CheckFn = Callable[[int, Any], dict]  # (team, objective) -> {"passed": bool, "detail": str}
AvailFn = Callable[[int, Any], dict]  # (team, availability) -> {"passed": bool, "detail": str}


class DrillRunner:
    """Runs one range's drill. The callables do the real work (traffic, probes)."""

    def __init__(
        self,
        scenario: Scenario,
        plan: Plan,
        store: EventStore,
        run_inject: InjectFn,
        run_check: CheckFn,
        run_availability: AvailFn,
        workers: int = 16,
        on_tick: Callable[[DrillRunner], None] | None = None,
    ):
        self.scenario = scenario
        self.plan = plan
        self.store = store
        self.run_inject_fn = run_inject
        self.run_check_fn = run_check
        self.run_avail_fn = run_availability
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="drill")
        # (availability index, team) -> that team's latest probe: a probe still running is never
        # started again, so a team whose probes hang holds at most one thread per availability
        self._probing: dict[tuple[int, int], Future] = {}
        self.inflight: dict[tuple[str, Any], Future] = {}
        self.lock = threading.Lock()
        self.on_tick = on_tick
        self.captures: Any = None  # rangectl.drill.capture.Captures: started with the drill, stopped with the runner
        self.dues = due_times(scenario)
        self.end = end_time(scenario)
        self.teams = [t.team for t in plan.teams]
        self.clock_events: list[Any] = []  # drill.* only: the clock is rebuilt from these (a handful)
        self.read_events = 0  # events read from the record so far (RUNNER_KINDS only)
        self._after_seq = 0
        self.clock = ClockState()
        self.progress = Progress()
        # Work finished by this process since the last refresh (closes the race between a
        # future finishing and the next read of the record).
        self.local_done: set[tuple[str, int]] = set()
        self.local_rounds: set[tuple[int, int]] = set()
        self.local_checked: dict[tuple[str, int], float] = {}
        # containment that holds: read from the record in seq order, like the scoring engine
        self.holds = HoldTracker(scenario)
        self.objectives = {o.id: o for o in scenario.objectives}
        self.revocations: set[tuple[int, str, int]] = set()  # (team, objective, seq of the failing check)

    # -- record ------------------------------------------------------------------
    def refresh(self) -> None:
        """Read what is new in the record (only RUNNER_KINDS, after the last seq read) and apply it.

        Each pass costs the events added since the last one, of the kinds the runner
        acts on: a team's flood of submissions (or anything else) is never read.
        """
        new = self.store.events(kind=RUNNER_KINDS, after_seq=self._after_seq)
        if not new:
            return
        self._after_seq = new[-1].seq
        self.read_events += len(new)
        drill = [e for e in new if e.kind in CLOCK_KINDS]
        if drill:
            self.clock_events.extend(drill)
            self.clock = clock_from_events(self.clock_events)
        undone = []
        for ev in new:
            self.progress.apply(ev)
            if ev.kind == "check.revoked":
                self.revocations.add((ev.team, ev.data.get("objective"), ev.data.get("check_seq")))
            elif ev.kind in ("check", "availability") and self._hold_counts(ev):
                if self.holds.feed(ev.kind, ev.team, ev.data) == "revoked":
                    undone.append(ev)
        self._record_revocations(undone)

    def _hold_counts(self, ev: Any) -> bool:
        """Whether the hold tracker reads this event: availability always, a check once its
        objective is open for the team (as the scoring engine does)."""
        if ev.kind != "check":
            return True
        obj = self.objectives.get(ev.data.get("objective"))
        return obj is not None and (obj.after is None or (obj.after, ev.team) in self.progress.started)

    def _record_revocations(self, undone: list[Any]) -> None:
        """A ``check.revoked`` per undone hold objective, once: re-reading the record after a
        restart finds the ones already recorded and adds none."""
        for ev in undone:
            key = (ev.team, ev.data.get("objective"), ev.seq)
            if key in self.revocations:
                continue
            self.store.append(
                "check.revoked",
                {"objective": ev.data.get("objective"), "check_seq": ev.seq,
                 "detail": str(ev.data.get("detail", ""))[:200], "drill_t": ev.data.get("drill_t")},
                team=ev.team,
                actor="runner",
            )
            self.revocations.add(key)

    def start(self, time_scale: float = 1.0) -> None:
        """Record drill.start unless the record already has one (a restart carries on)."""
        self.refresh()
        if self.clock.start_ts is None:
            now = time.time()
            self.store.append(
                "drill.start",
                {"wall_start": now, "time_scale": time_scale, "teams": self.teams, "end": self.end},
                actor="runner",
            )
            self.refresh()
        elif self.clock.status in ("stopped", "finished"):
            return
        else:
            self.store.append("drill.runner", {"event": "resumed-from-record", "drill_t": self.clock.drill_t()}, actor="runner")
            self.refresh()
        if self.captures is not None:
            self.captures.start(self.store)

    # -- scheduling ----------------------------------------------------------------
    def next_inject(self) -> tuple[str, float] | None:
        pending = [(t, i) for i, t in self.dues.items() if any((i, k) not in self.progress.done for k in self.teams)]
        return min(((i, t) for t, i in pending), key=lambda x: x[1], default=None)

    def _submit(self, key: tuple[str, Any], fn: Callable[..., Any], *args: Any) -> None:
        with self.lock:
            fut = self.inflight.get(key)
            if fut is not None and not fut.done():
                return
            self.inflight[key] = self.pool.submit(fn, *args)

    def _busy(self, key: tuple[str, Any]) -> bool:
        with self.lock:
            fut = self.inflight.get(key)
            return fut is not None and not fut.done()

    def tick(self) -> bool:
        """One scheduler pass. Returns False when the drill is over."""
        self.refresh()
        c = self.clock
        if c.status in ("stopped", "finished"):
            return False
        if c.status != "running":
            return True
        now_t = c.drill_t()
        p = self.progress
        by_id = {i.id: i for i in self.scenario.injects}
        for inj in self.scenario.injects:
            if self.dues[inj.id] > now_t:
                continue
            for team in self.teams:
                key = (inj.id, team)
                if key in p.done or key in self.local_done or self._busy(("inject", key)):
                    continue
                if inj.after is not None and (inj.after, team) not in p.done:
                    continue
                self._submit(("inject", key), self._do_inject, team, by_id[inj.id], key in p.started)
        for obj in self.scenario.objectives:
            if obj.check is None:
                continue
            if obj.after is not None and self.dues.get(obj.after, 0) > now_t:
                continue
            for team in self.teams:
                key = (obj.id, team)
                # a passed check is done, unless it must hold: then it is probed to the end
                if (key in p.passed and obj.check.hold is None) or self._busy(("check", key)):
                    continue
                if key in self.local_checked and now_t - self.local_checked[key] < obj.check.every:
                    continue
                if obj.after is not None and (obj.after, team) not in p.started:
                    continue
                last = p.last_check.get(key)
                if last is not None and now_t - last < obj.check.every:
                    continue
                self._submit(("check", key), self._do_check, team, obj, now_t)
        for idx, av in enumerate(self.scenario.availability):
            rnd = int(now_t // av.every)
            if (idx, rnd) in p.rounds or (idx, rnd) in self.local_rounds or self._busy(("avail", idx)):
                continue
            self._submit(("avail", idx), self._do_round, idx, av, rnd, now_t)
        if self.on_tick:
            self.on_tick(self)
        all_done = all(
            (i.id, k) in p.done or (i.id, k) in self.local_done for i in self.scenario.injects for k in self.teams
        )
        if all_done and now_t >= self.end:
            self.store.append("drill.finish", {"drill_t": now_t}, actor="runner")
            return False
        return True

    def run(self, stop_event: threading.Event | None = None) -> None:
        try:
            while not (stop_event and stop_event.is_set()):
                if not self.tick():
                    break
                time.sleep(TICK)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            if self.captures is not None:
                self.captures.stop(self.store)
            self.refresh()
            # anchor the head outside the database when the runner stops, however it stops
            with contextlib.suppress(Exception):
                self.store.checkpoint()

    # -- work (in the pool) -------------------------------------------------------------
    def _do_inject(self, team: int, inj: Inject, resumed: bool) -> None:
        t = self.clock.drill_t()
        self.store.append(
            "inject.start",
            {"inject": inj.id, "due_t": self.dues[inj.id], "drill_t": t, "resumed": resumed,
             "kind": "traffic" if inj.traffic else "message"},
            team=team,
            actor="runner",
        )
        try:
            truth = self.run_inject_fn(team, inj, t)
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded, the drill goes on
            truth = {"error": str(exc)}
            status = "error"
        self.store.append(
            "inject.done",
            {"inject": inj.id, "status": status, "drill_t": self.clock.drill_t(), **truth},
            team=team,
            actor="runner",
        )
        self.local_done.add((inj.id, team))

    def _do_check(self, team: int, obj: Any, drill_t: float) -> None:
        try:
            res = self.run_check_fn(team, obj)
        except Exception as exc:  # noqa: BLE001
            res = {"passed": False, "detail": f"probe error: {exc}"}
        self.store.append(
            "check", {"objective": obj.id, "drill_t": drill_t, **res}, team=team, actor="runner"
        )
        self.local_checked[(obj.id, team)] = drill_t

    def _do_round(self, idx: int, av: Any, rnd: int, drill_t: float) -> None:
        """Probe every team at once; the round ends by its deadline whatever the probes do.

        A probe with no result by then counts as failed (its detail says so) and is
        left to finish on its own thread; the team's next round does not start another
        probe while it still runs. So one team's hung probe never delays the round,
        the other teams or the runner.
        """
        limit = round_deadline(av)
        deadline = time.monotonic() + limit
        futs: dict[int, Future | None] = {}
        for team in self.teams:
            prev = self._probing.get((idx, team))
            if prev is not None and not prev.done():
                futs[team] = None
            else:
                futs[team] = self._probing[(idx, team)] = self._spawn_probe(team, av)
        rows = []
        for team, fut in futs.items():
            if fut is None:
                res = {"passed": False, "detail": "probe late: the previous round's probe is still running"}
            else:
                try:
                    res = fut.result(timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    res = {"passed": False, "detail": f"probe late: no result within the round's deadline of {limit:g}s"}
            rows.append((team, res))
        # one transaction for the whole round: a crash records all teams' results or none
        self.store.append_many(
            [
                (
                    "availability",
                    {"index": idx, "node": av.node, "service": av.service, "round": rnd, "drill_t": drill_t,
                     "up": bool(res.get("passed")), **res},
                    team,
                    "runner",
                )
                for team, res in rows
            ]
        )
        self.local_rounds.add((idx, rnd))

    def _spawn_probe(self, team: int, av: Any) -> Future:
        """Run one probe on its own daemon thread (a pool would let hung probes starve the others,
        and joining it would hold up the runner's stop)."""
        fut: Future = Future()

        def run() -> None:
            if fut.set_running_or_notify_cancel():
                fut.set_result(self._probe_one(team, av))

        threading.Thread(target=run, name=f"probe-t{team}", daemon=True).start()
        return fut

    def _probe_one(self, team: int, av: Any) -> dict:
        try:
            return self.run_avail_fn(team, av)
        except Exception as exc:  # noqa: BLE001
            return {"passed": False, "detail": f"probe error: {exc}"}
