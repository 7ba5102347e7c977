"""The scoring engine: a pure function from (scenario, plan, policy, events) to a board.

One pass over the events, in seq order, with lookups built once per call; no
I/O, no clock reads. The semantics are the policy's (docs/scoring.md):

* An objective opens for a team when its ``after`` inject starts for that team
  (``inject.start``), or at drill start when it has no ``after``. Events about
  an objective that is not open yet are ignored.
* It is earned at the first correct ``submission`` (answer objectives), the
  first passing ``check`` (check objectives) or the first accepted ``report``
  (report objectives). ``minutes`` is drill time from opening to earning.
* award = points x weight[category] x max(floor, 0.5 ** (minutes / half_life))
  x (reports: 1 on time or late_report_factor, x the share of checked fields right)
  - hint costs x hint_cost_factor - wrong answers before the correct one x
  wrong_answer_penalty, clamped at zero. Unearned objectives score 0.
* Submissions marked ``refused`` and those beyond ``max_attempts`` do not count.
* Availability: each (service, round) up earns the service's points x
  weight[availability]; a round recorded twice counts once.
* ``score`` events add their ``points`` (positive or negative) to their
  ``category`` (default ``adjustments``), unclamped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from rangectl.plan import Plan
from rangectl.scenario.model import Objective, Scenario
from rangectl.scoring.policy import Policy

AVAILABILITY = "availability"
ADJUSTMENTS = "adjustments"


# --- the drill clock ------------------------------------------------------------------


class DrillClock:
    """The drill clock folded from ``drill.*`` events (same rules as the drill runner).

    t = (wall - wall_start - paused) x time_scale, frozen while paused and after stop/finish.
    """

    __slots__ = ("status", "start_ts", "scale", "paused_total", "pause_since")

    def __init__(self) -> None:
        self.status = "not-started"
        self.start_ts: float | None = None
        self.scale = 1.0
        self.paused_total = 0.0
        self.pause_since: float | None = None

    def feed(self, kind: str, ts: float, data: dict[str, Any]) -> None:
        if kind == "drill.start":
            if self.start_ts is None:
                self.start_ts = float(data.get("wall_start", ts))
                self.scale = float(data.get("time_scale", 1.0)) or 1.0
                self.status = "running"
        elif kind == "drill.pause":
            if self.status == "running":
                self.pause_since = ts
                self.status = "paused"
        elif kind == "drill.resume":
            if self.status == "paused" and self.pause_since is not None:
                self.paused_total += ts - self.pause_since
                self.pause_since = None
                self.status = "running"
        elif kind in ("drill.stop", "drill.finish"):
            if self.status == "running":
                self.pause_since = ts
            self.status = "finished" if kind == "drill.finish" else "stopped"

    def drill_t(self, wall: float) -> float:
        if self.start_ts is None:
            return 0.0
        if self.pause_since is not None:
            wall = self.pause_since
        return max(0.0, (wall - self.start_ts - self.paused_total) * self.scale)

    @classmethod
    def from_events(cls, events: Iterable[Any]) -> DrillClock:
        c = cls()
        for ev in events:
            if ev.kind.startswith("drill."):
                c.feed(ev.kind, ev.ts, ev.data)
        return c


# --- awards ------------------------------------------------------------------------------


def award(
    policy: Policy,
    points: float,
    weight: float,
    minutes: float,
    *,
    wrong: int = 0,
    hint_cost: float = 0.0,
    on_time: bool | None = None,
    share: float = 1.0,
) -> float:
    """One earned objective's award under ``policy`` (see the module docstring)."""
    gross = points * weight * policy.decay(minutes) * share
    if on_time is False:
        gross *= policy.late_report_factor
    net = gross - hint_cost * policy.hint_cost_factor - wrong * policy.wrong_answer_penalty
    return max(0.0, net)


def report_share(policy: Policy, field_results: dict[str, bool] | None) -> float:
    if not field_results:
        return 1.0
    right = sum(1 for v in field_results.values() if v)
    if policy.report_answers == "all":
        return 1.0 if right == len(field_results) else 0.0
    return right / len(field_results)


# --- the board ------------------------------------------------------------------------------


@dataclass
class ObjectiveResult:
    objective: str
    category: str
    kind: str  # answer | check | report
    max_points: float  # points x weight, before decay and costs
    points: float = 0.0
    solved: bool = False
    solved_t: float | None = None  # drill seconds when earned
    opened_t: float | None = None  # drill seconds when its inject started (0 without one)
    minutes: float | None = None  # drill minutes from opening to earning
    attempts: int = 0
    wrong: int = 0
    refused: int = 0
    hints: int = 0
    hint_cost: float = 0.0
    on_time: bool | None = None  # reports only
    share: float | None = None  # reports only: share of checked fields right (or 0/1)
    revoked: int = 0  # check objectives with `hold`: times the condition was undone after earning


@dataclass
class TeamBoard:
    team: int
    total: float = 0.0
    rank: int = 0
    categories: dict[str, float] = field(default_factory=dict)
    objectives: dict[str, float] = field(default_factory=dict)
    detail: dict[str, ObjectiveResult] = field(default_factory=dict)
    attempts: int = 0
    hints: int = 0
    solved: int = 0
    ttd: dict[str, float | None] = field(default_factory=dict)  # inject -> drill minutes
    ttc: dict[str, float | None] = field(default_factory=dict)
    availability_up: int = 0
    availability_total: int = 0
    adjustments: float = 0.0
    # submission.flagged events: another team's answer, or solved implausibly fast (trainer side)
    flags: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        r = _r
        return {
            "team": self.team,
            "flags": [dict(f) for f in self.flags],
            "rank": self.rank,
            "total": r(self.total),
            "categories": {k: r(v) for k, v in self.categories.items()},
            "objectives": {k: r(v) for k, v in self.objectives.items()},
            "attempts": self.attempts,
            "hints": self.hints,
            "solved": self.solved,
            "ttd_minutes": {k: r(v) for k, v in self.ttd.items()},
            "ttc_minutes": {k: r(v) for k, v in self.ttc.items()},
            "availability": {"up": self.availability_up, "total": self.availability_total},
            "adjustments": r(self.adjustments),
            "detail": {
                k: {kk: (r(vv) if isinstance(vv, float) else vv) for kk, vv in asdict(v).items()}
                for k, v in self.detail.items()
            },
        }


def describe_flag(flag: dict[str, Any]) -> str:
    """One ``submission.flagged`` in words, for the board and the report."""
    if flag.get("reason") == "another-team":
        return f"gave team {flag.get('other_team')}'s answer to {flag.get('objective')}"
    if flag.get("reason") == "fast":
        return f"solved {flag.get('objective')} implausibly fast"
    return f"{flag.get('reason')} on {flag.get('objective')}"


@dataclass
class Board:
    scenario: str
    policy: str
    teams: list[TeamBoard]
    events: int = 0
    last_seq: int = 0
    drill_t: float = 0.0  # drill clock at the last event
    status: str = "not-started"

    def team(self, k: int) -> TeamBoard:
        for t in self.teams:
            if t.team == k:
                return t
        raise KeyError(k)

    def ranked(self) -> list[TeamBoard]:
        return sorted(self.teams, key=lambda t: (t.rank, t.team))

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "status": self.status,
            "drill_t": _r(self.drill_t),
            "events": self.events,
            "last_seq": self.last_seq,
            "teams": [t.as_dict() for t in self.teams],
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 2)


class _Obj:
    """Per-objective constants for the pass."""

    __slots__ = ("obj", "id", "category", "kind", "points", "weight", "after", "deadline")

    def __init__(self, obj: Objective, policy: Policy):
        self.obj = obj
        self.id = obj.id
        self.category = obj.category
        self.kind = obj.kind
        self.points = float(obj.points)
        self.weight = policy.weight(obj.category)
        self.after = obj.after
        self.deadline = obj.report.deadline if obj.report is not None else None


class _St:
    """Per (team, objective) state during the pass."""

    __slots__ = ("solved_t", "attempts", "wrong", "refused", "hints", "hint_cost", "field_results", "revoked")

    def __init__(self) -> None:
        self.solved_t: float | None = None
        self.attempts = 0
        self.wrong = 0
        self.refused = 0
        self.hints = 0
        self.hint_cost = 0.0
        self.field_results: dict[str, bool] | None = None
        self.revoked = 0


class HoldTracker:
    """Containment that holds (docs/scoring.md): pure, fed the ``check`` and ``availability``
    events of a record in order; the engine scores from it and the drill runner records
    ``check.revoked`` from it, so both read the record the same way.

    A check objective with ``hold: N`` is earned at its N-th consecutive passing probe made
    while every availability probe of its guarded node was last up (so unplugging the service
    earns nothing); once earned, a failing probe revokes it, and it can be earned again by
    holding N probes anew."""

    def __init__(self, scenario: Scenario):
        self.checks = {
            o.id: o.check for o in scenario.objectives if o.check is not None and o.check.hold is not None
        }
        self.guarded = {
            oid: [i for i, a in enumerate(scenario.availability) if a.node == chk.guarded]
            for oid, chk in self.checks.items()
        }
        self.avail_idx = {(a.node, a.service): i for i, a in enumerate(scenario.availability)}
        self.last_up: dict[tuple[int, int], bool] = {}
        self.streak: dict[tuple[int, str], int] = {}
        self.earned: set[tuple[int, str]] = set()

    def holds(self, objective: str) -> bool:
        return objective in self.checks

    def feed(self, kind: str, team: int, data: dict[str, Any]) -> str | None:
        """``"earned"`` or ``"revoked"`` when this event changes a hold objective, else None."""
        if kind == "availability":
            idx = data.get("index")
            if idx is None:
                idx = self.avail_idx.get((data.get("node"), data.get("service")))
            if isinstance(idx, int):
                self.last_up[(team, idx)] = bool(data.get("up"))
            return None
        if kind != "check":
            return None
        oid = data.get("objective")
        chk = self.checks.get(oid)  # type: ignore[arg-type]
        if chk is None or chk.hold is None:
            return None
        key = (team, str(oid))
        passed = bool(data.get("passed"))
        if passed and all(self.last_up.get((team, i), True) for i in self.guarded[str(oid)]):
            self.streak[key] = self.streak.get(key, 0) + 1
            if key not in self.earned and self.streak[key] >= chk.hold:
                self.earned.add(key)
                return "earned"
            return None
        self.streak[key] = 0
        if not passed and key in self.earned:
            self.earned.discard(key)
            return "revoked"
        return None


def compute_board(scenario: Scenario, plan: Plan, policy: Policy, events: Iterable[Any]) -> Board:
    """The scoreboard after ``events`` (in seq order). Pure: same input, same board."""
    teams = [t.team for t in plan.teams]
    objs = {o.id: _Obj(o, policy) for o in scenario.objectives}
    state: dict[tuple[int, str], _St] = {(k, oid): _St() for k in teams for oid in objs}
    opened: dict[tuple[int, str], float] = {}  # (team, inject) -> drill_t of its first inject.start
    avail_pts = [float(a.points) for a in scenario.availability]
    avail_idx = {(a.node, a.service): i for i, a in enumerate(scenario.availability)}
    avail_seen: set[tuple[int, int, int]] = set()
    avail_up = dict.fromkeys(teams, 0)
    avail_total = dict.fromkeys(teams, 0)
    avail_points = dict.fromkeys(teams, 0.0)
    adjust: dict[int, dict[str, float]] = {k: {} for k in teams}
    flags: dict[int, list[dict[str, Any]]] = {k: [] for k in teams}
    holds = HoldTracker(scenario)
    team_set = set(teams)
    max_attempts = policy.max_attempts
    clock = DrillClock()
    n = 0
    last_seq = 0
    last_ts: float | None = None

    for ev in events:
        n += 1
        last_seq = ev.seq
        last_ts = ev.ts
        kind = ev.kind
        d = ev.data
        team = ev.team
        if kind.startswith("drill."):
            clock.feed(kind, ev.ts, d)
            continue
        if team not in team_set:
            continue
        t = d.get("drill_t")
        if t is None:
            t = clock.drill_t(ev.ts)
        if kind == "availability":
            holds.feed(kind, team, d)
            idx = d.get("index")
            if idx is None:
                idx = avail_idx.get((d.get("node"), d.get("service")))
            if not isinstance(idx, int) or not 0 <= idx < len(avail_pts):
                continue
            key = (team, idx, d.get("round", -1))
            if key in avail_seen:
                continue
            avail_seen.add(key)
            avail_total[team] += 1
            if d.get("up"):
                avail_up[team] += 1
                avail_points[team] += avail_pts[idx]
        elif kind == "inject.start":
            inj = d.get("inject")
            if (team, inj) not in opened:
                opened[(team, inj)] = float(t)
        elif kind == "check":
            o = objs.get(d.get("objective"))
            if o is None or o.kind != "check":
                continue
            st = state[(team, o.id)]
            if holds.holds(o.id):
                if o.after is not None and (team, o.after) not in opened:
                    continue  # not open yet: probes before its inject count for nothing
                change = holds.feed(kind, team, d)
                if change == "revoked":
                    st.solved_t = None  # the award is taken back until the condition holds again
                    st.revoked += 1
                elif change == "earned":
                    st.solved_t = float(t)
                continue
            if d.get("passed") and st.solved_t is None and (o.after is None or (team, o.after) in opened):
                st.solved_t = float(t)
        elif kind == "submission":
            o = objs.get(d.get("objective"))
            if o is None or o.kind != "answer":
                continue
            st = state[(team, o.id)]
            if d.get("refused"):
                st.refused += 1
                continue
            if st.solved_t is not None or (o.after is not None and (team, o.after) not in opened):
                continue
            if max_attempts is not None and st.attempts >= max_attempts:
                st.refused += 1
                continue
            st.attempts += 1
            if d.get("correct") is True:
                st.solved_t = float(t)
            else:
                st.wrong += 1
        elif kind == "hint":
            o = objs.get(d.get("objective"))
            if o is None:
                continue
            st = state[(team, o.id)]
            st.hints += 1
            cost = d.get("cost")
            if not isinstance(cost, int | float):
                i = d.get("index", 0)
                cost = o.obj.hints[i].cost if isinstance(i, int) and 0 <= i < len(o.obj.hints) else 0
            st.hint_cost += float(cost)
        elif kind == "report":
            o = objs.get(d.get("objective"))
            if o is None or o.kind != "report" or d.get("accepted") is False:
                continue
            st = state[(team, o.id)]
            if st.solved_t is None and (o.after is None or (team, o.after) in opened):
                st.solved_t = float(t)
                fr = d.get("field_results")
                st.field_results = {str(k): bool(v) for k, v in fr.items()} if isinstance(fr, dict) else None
        elif kind == "submission.flagged":
            flags[team].append(
                {
                    "seq": ev.seq,
                    "objective": d.get("objective"),
                    "reason": d.get("reason"),
                    "other_team": d.get("other_team"),
                    "drill_t": float(t),
                }
            )
        elif kind == "score":
            pts = d.get("points")
            if isinstance(pts, int | float) and not isinstance(pts, bool):
                cat = str(d.get("category") or ADJUSTMENTS)
                adjust[team][cat] = adjust[team].get(cat, 0.0) + float(pts)

    # --- totals -------------------------------------------------------------------------
    categories = list(dict.fromkeys(o.category for o in objs.values()))
    if scenario.availability:
        categories.append(AVAILABILITY)
    detect = set(policy.detect_categories)
    contain = set(policy.contain_categories)
    av_weight = policy.weight(AVAILABILITY)
    boards: list[TeamBoard] = []
    for k in teams:
        tb = TeamBoard(team=k, categories=dict.fromkeys(categories, 0.0), flags=flags[k])
        for oid, o in objs.items():
            st = state[(k, oid)]
            opened_t = 0.0 if o.after is None else opened.get((k, o.after))
            res = ObjectiveResult(
                objective=oid,
                category=o.category,
                kind=o.kind,
                max_points=o.points * o.weight,
                opened_t=opened_t,
                attempts=st.attempts,
                wrong=st.wrong,
                refused=st.refused,
                hints=st.hints,
                hint_cost=st.hint_cost,
                revoked=st.revoked,
            )
            if st.solved_t is not None and opened_t is not None:
                minutes = max(0.0, st.solved_t - opened_t) / 60.0
                res.solved, res.solved_t, res.minutes = True, st.solved_t, minutes
                on_time = None
                share = 1.0
                if o.kind == "report":
                    on_time = (st.solved_t - opened_t) <= (o.deadline or 0.0)
                    share = report_share(policy, st.field_results)
                    res.on_time, res.share = on_time, share
                res.points = award(
                    policy,
                    o.points,
                    o.weight,
                    minutes,
                    wrong=st.wrong,
                    hint_cost=st.hint_cost,
                    on_time=on_time,
                    share=share,
                )
                tb.solved += 1
            tb.detail[oid] = res
            tb.objectives[oid] = res.points
            tb.categories[o.category] += res.points
            tb.attempts += st.attempts
            tb.hints += st.hints
        if scenario.availability:
            tb.categories[AVAILABILITY] = avail_points[k] * av_weight
        tb.availability_up, tb.availability_total = avail_up[k], avail_total[k]
        for cat, pts in adjust[k].items():
            tb.categories[cat] = tb.categories.get(cat, 0.0) + pts
            tb.adjustments += pts
        for inj in scenario.injects:
            tb.ttd[inj.id] = _first(tb, objs, inj.id, detect)
            tb.ttc[inj.id] = _first(tb, objs, inj.id, contain)
        tb.total = sum(tb.categories.values())
        boards.append(tb)

    # standard competition ranking: 1, 2, 2, 4
    order = sorted(boards, key=lambda b: -round(b.total, 6))
    for i, b in enumerate(order):
        b.rank = i + 1 if i == 0 or round(b.total, 6) != round(order[i - 1].total, 6) else order[i - 1].rank
    return Board(
        scenario=scenario.name,
        policy=policy.name,
        teams=boards,
        events=n,
        last_seq=last_seq,
        drill_t=clock.drill_t(last_ts) if last_ts is not None else 0.0,
        status=clock.status,
    )


def _first(tb: TeamBoard, objs: dict[str, _Obj], inject: str, cats: set[str]) -> float | None:
    best: float | None = None
    for oid, o in objs.items():
        if o.after != inject or o.category not in cats:
            continue
        r = tb.detail[oid]
        if r.solved and r.minutes is not None and (best is None or r.minutes < best):
            best = r.minutes
    return best
