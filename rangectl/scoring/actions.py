"""What teams (and the trainer on their behalf) do during a drill: submit, take hints, file reports.

Each action reads the scenario and plan through :class:`RangeState`, decides
inside one event-store transaction (so two submissions at the same moment
cannot both be "attempt 5 of 5"), and records the outcome. The CLI calls these
functions; the HTTP team service calls the same ones with ``actor="team-K"``.
Errors are :class:`RangeError` subclasses (one line, exit code / HTTP status
from the class); answers are never revealed.

Refusals that are about the drill (not started, paused, ended, objective not
open yet, already solved, attempts used up) are recorded as ``submission``
events with ``refused`` set and returned as a result; malformed requests
(unknown team or objective, wrong objective kind, bad report file) raise.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from rangectl.answers import check_answer, other_team_right
from rangectl.errors import NotFound, RangeError, UsageError
from rangectl.plan import Plan, TeamPlan
from rangectl.scenario.loader import locate, read_small_yaml
from rangectl.scenario.model import Objective, Scenario, localize
from rangectl.scoring.engine import (
    Board,
    DrillClock,
    ObjectiveResult,
    award,
    compute_board,
)
from rangectl.scoring.policy import Policy, load_policy
from rangectl.state import RangeState
from rangectl.store import Event, EventStore, Transaction

MAX_ANSWER = 1000  # characters
MAX_REPORT_BYTES = 100_000


# --- context: scenario, plan, policy and store, cached per range and file version -----------


@dataclass
class Context:
    state: RangeState
    scenario: Scenario
    plan: Plan
    policy: Policy
    store: EventStore
    policy_file: Path | None = None
    _events: list[Event] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def events(self) -> list[Event]:
        """The whole record, read incrementally (only events newer than the last call are fetched)."""
        with self._lock:
            self._events.extend(self.store.events(after_seq=self._events[-1].seq if self._events else 0))
            return list(self._events)

    def team_plan(self, team: int) -> TeamPlan:
        try:
            return self.plan.team(int(team))
        except (KeyError, TypeError, ValueError):
            n = len(self.plan.teams)
            raise NotFound(f"range '{self.state.name}' has no team {team} (teams: 1-{n})") from None

    def objective(self, objective_id: str) -> Objective:
        try:
            return self.scenario.objective(objective_id)
        except KeyError:
            ids = ", ".join(o.id for o in self.scenario.objectives) or "none"
            raise NotFound(
                f"scenario '{self.scenario.name}' has no objective '{objective_id}' (objectives: {ids})"
            ) from None


_cache: dict[str, tuple[tuple, Context]] = {}
_cache_lock = threading.Lock()


def _stamp(p: Path | None) -> tuple:
    if p is None:
        return (None,)
    try:
        s = p.stat()
    except OSError:
        return (str(p), None)
    return (str(p), s.st_mtime_ns, s.st_size, s.st_ino)


def context(state: RangeState) -> Context:
    """Scenario, plan, policy and event store of a range; reloaded when a file changes."""
    if not state.db_path.exists():
        raise NotFound(f"no range named '{state.name}'", fix="see `rangectl ls`")
    meta = state.meta()
    src = Path(meta["scenario_path"]) if meta.get("scenario_path") else state.scenario_path
    if not src.exists():
        src = state.scenario_path
    db = state.db_path.stat()  # the file's identity (a range made again is a new file), not its mtime
    key = (os.getpid(), db.st_dev, db.st_ino, _stamp(src), int(meta.get("teams", 1)))
    with _cache_lock:
        hit = _cache.get(str(state.db_path))
        if hit and hit[0][:-1] == key and _stamp(hit[1].policy_file) == hit[0][-1]:
            return hit[1]
    scenario = state.scenario()
    plan = state.plan()
    from rangectl.paths import policy_path

    pfile = policy_path(scenario.scoring.policy, src)
    policy = load_policy(scenario.scoring.policy, src)
    ctx = Context(state, scenario, plan, policy, EventStore(state.db_path), pfile)
    with _cache_lock:
        old = _cache.get(str(state.db_path))
        _cache[str(state.db_path)] = ((*key, _stamp(pfile)), ctx)
    if old is not None and old[1].store is not ctx.store:
        try:
            old[1].store.close()
        except Exception:  # noqa: BLE001 - best effort
            pass
    return ctx


def _ctx(state: RangeState | str) -> Context:
    return context(RangeState.open(state) if isinstance(state, str) else state)


# --- shared helpers -------------------------------------------------------------------


def _closed(clock: DrillClock) -> str | None:
    if clock.status == "not-started":
        return "the drill has not started"
    if clock.status == "paused":
        return "the drill is paused"
    if clock.status in ("stopped", "finished"):
        return "the drill has ended"
    return None


def _team_view(
    ctx: Context, tx: Transaction, team: int, now: float, obj: Objective
) -> tuple[DrillClock, float, Board]:
    """The drill clock, drill time now and this team's board for ``obj``, read under the write lock."""
    control = tx.events(kind="drill.*")
    kinds = ("inject.start", "hint", {"answer": "submission", "check": "check", "report": "report"}[obj.kind])
    mine = [
        e
        for e in tx.events(kind=kinds, team=team)
        if e.kind == "inject.start" or e.data.get("objective") == obj.id
    ]
    events = sorted([*control, *mine], key=lambda e: e.seq)
    clock = DrillClock.from_events(control)
    board = compute_board(
        ctx.scenario,
        Plan(ctx.plan.scenario, ctx.plan.scenario_hash, [ctx.team_plan(team)]),
        ctx.policy,
        events,
    )
    return clock, clock.drill_t(now), board


def _acting_view(
    ctx: Context, tx: Transaction, team: int, now: float, obj: Objective
) -> tuple[float, ObjectiveResult, str | None]:
    """Drill time now, the team's result for ``obj``, and why it cannot be acted on (drill not running,
    objective not open yet), read under the write lock: what submit, hint and report all start with."""
    clock, drill_t, board = _team_view(ctx, tx, team, now, obj)
    res = board.team(team).detail[obj.id]
    return drill_t, res, _closed(clock) or _not_open(obj, res)


def _not_open(obj: Objective, res: ObjectiveResult) -> str | None:
    if res.opened_t is None:
        return f"objective '{obj.id}' is not open yet (inject '{obj.after}' has not started)"
    return None


# --- submit -----------------------------------------------------------------------------------


@dataclass
class SubmissionResult:
    team: int
    objective: str
    correct: bool
    attempt: int | None  # this attempt's number (None when refused)
    attempts_left: int | None  # None: no limit
    refused: str | None = None
    points: float = 0.0  # the objective's award when this answer was correct
    drill_t: float = 0.0
    seq: int = 0

    @property
    def accepted(self) -> bool:
        return self.refused is None

    @property
    def message(self) -> str:
        if self.refused:
            return f"refused: {self.refused}"
        if self.correct:
            return f"correct: '{self.objective}' earns {self.points:.1f} points (attempt {self.attempt})"
        left = "" if self.attempts_left is None else f", {self.attempts_left} left"
        return f"wrong: attempt {self.attempt}{left}"

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "points": round(self.points, 2),
            "accepted": self.accepted,
            "message": self.message,
        }


def submit(
    state: RangeState | str,
    team: int,
    objective_id: str,
    answer: Any,
    *,
    actor: str = "trainer",
    now: float | None = None,
) -> SubmissionResult:
    """Record team ``team``'s answer to ``objective_id`` and say whether it is right (never what is)."""
    ctx = _ctx(state)
    tp = ctx.team_plan(team)
    team = tp.team
    obj = ctx.objective(objective_id)
    if obj.answer is None:
        how = (
            "a check the drill runs" if obj.check is not None else "a report (use `rangectl report-incident`)"
        )
        raise UsageError(f"objective '{obj.id}' is scored by {how}; there is nothing to submit")
    if answer is None or isinstance(answer, bool) or not isinstance(answer, str | int | float):
        raise UsageError("an answer is a text or a number")
    if len(str(answer)) > MAX_ANSWER:
        raise UsageError(f"answer too long ({len(str(answer)):,} characters; at most {MAX_ANSWER:,})")
    policy = ctx.policy
    with ctx.store.transaction() as tx:
        now = time.time() if now is None else now
        drill_t, res, refused = _acting_view(ctx, tx, team, now, obj)
        if refused is None and res.solved:
            refused = f"objective '{obj.id}' is already solved"
        if refused is None and policy.max_attempts is not None and res.attempts >= policy.max_attempts:
            refused = f"no attempts left ({policy.max_attempts} used)"
        data: dict[str, Any] = {"objective": obj.id, "answer": answer, "drill_t": drill_t}
        if refused is not None:
            ev = tx.append(
                "submission",
                {**data, "correct": False, "attempt": None, "refused": refused},
                team=team,
                actor=actor,
                ts=now,
            )
            left = None if policy.max_attempts is None else max(0, policy.max_attempts - res.attempts)
            return SubmissionResult(team, obj.id, False, None, left, refused, 0.0, drill_t, ev.seq)
        correct = check_answer(obj.answer, answer, tp)
        attempt = res.attempts + 1
        ev = tx.append(
            "submission", {**data, "correct": correct, "attempt": attempt}, team=team, actor=actor, ts=now
        )
        flag = _flag(ctx, team, obj, answer, correct, drill_t, res.opened_t)
        if flag is not None:
            tx.append("submission.flagged", {**flag, "submission": ev.seq, "drill_t": drill_t},
                      team=team, actor="scoring", ts=now)
    points = 0.0
    if correct:
        minutes = max(0.0, drill_t - (res.opened_t or 0.0)) / 60.0
        points = award(
            policy, obj.points, policy.weight(obj.category), minutes, wrong=res.wrong, hint_cost=res.hint_cost
        )
    left = None if policy.max_attempts is None else max(0, policy.max_attempts - attempt)
    return SubmissionResult(team, obj.id, correct, attempt, left, None, points, drill_t, ev.seq)


def _flag(
    ctx: Context, team: int, obj: Objective, answer: Any, correct: bool, drill_t: float, opened_t: float | None
) -> dict[str, Any] | None:
    """Why this submission is suspicious, if it is (docs/scoring.md, "Flags").

    A wrong answer that is another team's right one (a per-team variable or address: the
    answer was passed on) names that team; it stays wrong. A right answer earlier after its
    objective opened than the policy's ``flag_fast_seconds`` is flagged and keeps its points."""
    if not correct:
        other = other_team_right(obj.answer, answer, ctx.plan.teams, team)
        if other is not None:
            return {"objective": obj.id, "reason": "another-team", "other_team": other}
        return None
    limit = ctx.policy.flag_fast_seconds
    if limit is not None and drill_t - (opened_t or 0.0) < limit:
        return {"objective": obj.id, "reason": "fast", "other_team": None,
                "seconds": round(drill_t - (opened_t or 0.0), 2)}
    return None


# --- hints ------------------------------------------------------------------------------------


@dataclass
class HintTaken:
    team: int
    objective: str
    index: int  # 0-based
    total: int
    cost: int
    text: str
    drill_t: float
    seq: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def take_hint_info(
    state: RangeState | str,
    team: int,
    objective_id: str,
    *,
    lang: str = "en",
    actor: str = "trainer",
    now: float | None = None,
) -> HintTaken:
    """Take the next unused hint of an objective (recorded, with its cost)."""
    ctx = _ctx(state)
    team = ctx.team_plan(team).team
    obj = ctx.objective(objective_id)
    if not obj.hints:
        raise RangeError(f"objective '{obj.id}' has no hints")
    with ctx.store.transaction() as tx:
        now = time.time() if now is None else now
        drill_t, res, refused = _acting_view(ctx, tx, team, now, obj)
        if refused is None and res.solved:
            refused = f"objective '{obj.id}' is already solved"
        if refused is None and res.hints >= len(obj.hints):
            refused = f"no more hints for '{obj.id}' (all {len(obj.hints)} taken)"
        if refused is not None:
            raise RangeError(f"no hint: {refused}")
        i = res.hints
        hint = obj.hints[i]
        ev = tx.append(
            "hint",
            {"objective": obj.id, "index": i, "cost": hint.cost, "drill_t": drill_t},
            team=team,
            actor=actor,
            ts=now,
        )
    return HintTaken(team, obj.id, i, len(obj.hints), hint.cost, localize(hint.text, lang), drill_t, ev.seq)


def take_hint(
    state: RangeState | str,
    team: int,
    objective_id: str,
    *,
    lang: str = "en",
    actor: str = "trainer",
    now: float | None = None,
) -> str:
    """The text of the next unused hint (recorded; its cost comes off the objective's award)."""
    return take_hint_info(state, team, objective_id, lang=lang, actor=actor, now=now).text


# --- incident reports -------------------------------------------------------------------------


@dataclass
class ReportResult:
    team: int
    objective: str
    on_time: bool
    drill_t: float
    deadline_t: float
    seq: int

    @property
    def message(self) -> str:
        when = "on time" if self.on_time else "late"
        return f"report for '{self.objective}' accepted ({when}: filed at {_mmss(self.drill_t)}, due {_mmss(self.deadline_t)})"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message}


def _mmss(t: float) -> str:
    from rangectl.scenario.durations import format_duration

    return format_duration(t)


@dataclass
class ParsedReport:
    objective: str
    fields: dict[str, Any]
    file: str


def parse_report(path: Path | str, scenario: Scenario) -> ParsedReport:
    """Read a report file (``objective:`` and ``fields:``); RangeError ``FILE:LINE:COL: field: message``."""
    path = Path(path)
    name = str(path)

    def fail(msg: str, loc: tuple = (), data: Any = None, cls: type[RangeError] = RangeError) -> RangeError:
        line, col = locate(data, loc) if data is not None else (1, 1)
        path = ".".join(str(p) for p in loc)
        return cls(f"{name}:{line}:{col}: {path}: {msg}" if path else f"{name}:{line}:{col}: {msg}")

    if not path.is_file():
        raise UsageError(f"{name}: report file not found")
    data = read_small_yaml(path, MAX_REPORT_BYTES, "a report file", RangeError)
    if not isinstance(data, CommentedMap):
        raise fail("a report is a mapping with 'objective:' and 'fields:'")
    for k in data:
        if k not in ("objective", "fields"):
            raise fail("unknown field (a report has 'objective:' and 'fields:')", (str(k),), data)
    oid = data.get("objective")
    if not isinstance(oid, str) or not oid.strip():
        raise fail(
            "required field is missing" if oid is None else "must be an objective id", ("objective",), data
        )
    try:
        obj = scenario.objective(oid)
    except KeyError:
        raise fail(
            f"no objective '{oid}' in scenario '{scenario.name}'", ("objective",), data, NotFound
        ) from None
    if obj.report is None:
        raise fail(
            f"objective '{oid}' is not a report objective (it is {obj.kind}-scored)", ("objective",), data
        )
    fields = data.get("fields")
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise fail("must be a mapping of field name to value", ("fields",), data)
    known = {f.name: f for f in obj.report.fields}
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if str(k) not in known:
            raise fail(f"unknown field (fields: {', '.join(known)})", ("fields", str(k)), data)
        if isinstance(v, dict | list):
            raise fail("must be a single value (text or number)", ("fields", str(k)), data)
        out[str(k)] = v if v is None or isinstance(v, bool | int | float) else str(v)
    missing = [
        n for n, f in known.items() if f.required and (out.get(n) is None or str(out.get(n)).strip() == "")
    ]
    if missing:
        what = (
            "required field is missing"
            if len(missing) == 1
            else f"required fields are missing: {', '.join(missing)}"
        )
        raise fail(f"{what}; report not accepted", ("fields", missing[0]), data)
    return ParsedReport(obj.id, out, name)


def report_incident(
    state: RangeState | str,
    team: int,
    report_file: Path | str | ParsedReport,
    *,
    actor: str = "trainer",
    now: float | None = None,
) -> ReportResult:
    """File team ``team``'s incident report from a YAML file. The first accepted report per objective counts.

    A :class:`ParsedReport` (the team API's JSON, checked there) is filed as it is, without a file.
    """
    ctx = _ctx(state)
    tp = ctx.team_plan(team)
    team = tp.team
    rep = report_file if isinstance(report_file, ParsedReport) else parse_report(report_file, ctx.scenario)
    obj = ctx.scenario.objective(rep.objective)
    assert obj.report is not None
    results = {
        f.name: check_answer(f.answer, rep.fields.get(f.name), tp)
        for f in obj.report.fields
        if f.answer is not None
    }
    with ctx.store.transaction() as tx:
        now = time.time() if now is None else now
        drill_t, res, refused = _acting_view(ctx, tx, team, now, obj)
        if refused is None and res.solved:
            refused = f"a report for '{obj.id}' was already filed (at drill time {_mmss(res.solved_t or 0)})"
        if refused is not None:
            raise RangeError(f"report not accepted: {refused}")
        opened = res.opened_t or 0.0
        deadline_t = opened + obj.report.deadline
        on_time = drill_t <= deadline_t
        ev = tx.append(
            "report",
            {
                "objective": obj.id,
                "fields": rep.fields,
                "field_results": results,
                "accepted": True,
                "on_time": on_time,
                "drill_t": drill_t,
                "deadline_t": deadline_t,
                "file": Path(rep.file).name,
            },
            team=team,
            actor=actor,
            ts=now,
        )
    return ReportResult(team, obj.id, on_time, drill_t, deadline_t, ev.seq)


# --- trainer adjustments and the board --------------------------------------------------------------


def adjust_score(
    state: RangeState | str,
    team: int,
    points: float,
    reason: str,
    *,
    category: str = "adjustments",
    actor: str = "trainer",
) -> Event:
    """Record an explicit score adjustment (positive or negative) for a team, with a reason."""
    ctx = _ctx(state)
    team = ctx.team_plan(team).team
    if not reason.strip():
        raise UsageError("an adjustment needs a reason")
    with ctx.store.transaction() as tx:
        clock = DrillClock.from_events(tx.events(kind="drill.*"))
        now = time.time()
        return tx.append(
            "score",
            {"points": float(points), "reason": reason, "category": category, "drill_t": clock.drill_t(now)},
            team=team,
            actor=actor,
            ts=now,
        )


def board(state: RangeState | str) -> Board:
    """The current scoreboard of a range, from its whole record."""
    ctx = _ctx(state)
    return compute_board(ctx.scenario, ctx.plan, ctx.policy, ctx.events())
