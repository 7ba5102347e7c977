"""The scoring engine's pass kept open: a board advanced with new events only.

:func:`rangectl.scoring.engine.compute_board` folds a whole record into a
board in one pass. :class:`BoardFold` is the same fold with its state kept
between calls: :meth:`BoardFold.advance` takes only the events recorded since
the last one it saw (seq order), and :meth:`BoardFold.team` /
:meth:`BoardFold.result` / :meth:`BoardFold.board` build the same
``TeamBoard`` / ``ObjectiveResult`` / ``Board`` that ``compute_board`` gives
for the same events (``tests/unit/test_team_view.py`` holds them equal on
random records). The semantics are the engine's (its module doc and
docs/scoring.md); nothing here decides anything the engine does not.

:class:`LiveBoard` keeps one fold in step with a range's event store and
scores a submission from it the way :func:`rangectl.scoring.actions.submit`
does from a recomputed board: under the store's write lock it reads only the
events after the last one it folded, decides (drill running? objective open?
solved? attempts left? right?) and appends. It checks itself against the hash
chain: the fold remembers the seq and hash of the last event it took, and when
the store no longer has that event (a transaction it saw was rolled back) it
is folded again from the start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from rangectl.answers import check_answer
from rangectl.errors import UsageError
from rangectl.plan import Plan
from rangectl.scenario.model import Scenario
from rangectl.scoring import actions
from rangectl.scoring.engine import (
    ADJUSTMENTS,
    AVAILABILITY,
    Board,
    DrillClock,
    HoldTracker,
    ObjectiveResult,
    TeamBoard,
    _Obj,
    _St,
    award,
    report_share,
)
from rangectl.scoring.policy import Policy
from rangectl.store import Event, Transaction

# the kinds a board is folded from (the engine ignores every other kind)
DRILL_KINDS = ("drill.start", "drill.pause", "drill.resume", "drill.stop", "drill.finish")


def drill_clock(store: Any) -> DrillClock:
    """The drill clock, read from an event store or one of its transactions (its drill.* events only)."""
    return DrillClock.from_events(store.events(kind=DRILL_KINDS))


BOARD_KINDS = (
    *DRILL_KINDS,
    "inject.start",
    "submission",
    "submission.flagged",
    "hint",
    "report",
    "check",
    "availability",
    "score",
)


class BoardFold:
    """``compute_board``'s pass over a record, resumable: feed events in seq order, read the board any time.

    Events at or below the last seq taken are skipped, so a batch that overlaps
    what was already folded is not counted twice.
    """

    def __init__(self, scenario: Scenario, plan: Plan, policy: Policy):
        self.scenario = scenario
        self.policy = policy
        self.teams = [t.team for t in plan.teams]
        self._team_set = set(self.teams)
        self.objs = {o.id: _Obj(o, policy) for o in scenario.objectives}
        self.state: dict[tuple[int, str], _St] = {(k, oid): _St() for k in self.teams for oid in self.objs}
        self.opened: dict[tuple[int, str], float] = {}  # (team, inject) -> drill_t of its first inject.start
        self.avail_pts = [float(a.points) for a in scenario.availability]
        self.avail_idx = {(a.node, a.service): i for i, a in enumerate(scenario.availability)}
        self.avail_seen: set[tuple[int, int, Any]] = set()
        self.avail_up = dict.fromkeys(self.teams, 0)
        self.avail_total = dict.fromkeys(self.teams, 0)
        self.avail_points = dict.fromkeys(self.teams, 0.0)
        self.adjust: dict[int, dict[str, float]] = {k: {} for k in self.teams}
        self.flags: dict[int, list[dict[str, Any]]] = {k: [] for k in self.teams}
        self.holds = HoldTracker(scenario)
        self.clock = DrillClock()
        self.events = 0
        self.last_seq = 0
        self.last_hash: str | None = None  # hash of the event at last_seq (None before the first)
        self.last_ts: float | None = None

    # -- folding ------------------------------------------------------------------------------
    def advance(self, events: Iterable[Any]) -> int:
        """Fold the events newer than the last one taken; returns how many were taken."""
        n = 0
        for ev in events:
            if ev.seq <= self.last_seq:
                continue
            self.feed(ev)
            n += 1
        return n

    def feed(self, ev: Any) -> None:
        """One event (the body of compute_board's loop)."""
        self.events += 1
        self.last_seq = ev.seq
        self.last_hash = getattr(ev, "hash", None)
        self.last_ts = ev.ts
        kind = ev.kind
        d = ev.data
        team = ev.team
        if kind.startswith("drill."):
            self.clock.feed(kind, ev.ts, d)
            return
        if team not in self._team_set:
            return
        t = d.get("drill_t")
        if t is None:
            t = self.clock.drill_t(ev.ts)
        objs, opened = self.objs, self.opened
        if kind == "availability":
            self.holds.feed(kind, team, d)
            idx = d.get("index")
            if idx is None:
                idx = self.avail_idx.get((d.get("node"), d.get("service")))
            if not isinstance(idx, int) or not 0 <= idx < len(self.avail_pts):
                return
            key = (team, idx, d.get("round", -1))
            if key in self.avail_seen:
                return
            self.avail_seen.add(key)
            self.avail_total[team] += 1
            if d.get("up"):
                self.avail_up[team] += 1
                self.avail_points[team] += self.avail_pts[idx]
        elif kind == "inject.start":
            inj = d.get("inject")
            if (team, inj) not in opened:
                opened[(team, inj)] = float(t)
        elif kind == "check":
            o = objs.get(d.get("objective"))
            if o is None or o.kind != "check":
                return
            st = self.state[(team, o.id)]
            if self.holds.holds(o.id):
                if o.after is not None and (team, o.after) not in opened:
                    return
                change = self.holds.feed(kind, team, d)
                if change == "revoked":
                    st.solved_t = None
                    st.revoked += 1
                elif change == "earned":
                    st.solved_t = float(t)
                return
            if d.get("passed") and st.solved_t is None and (o.after is None or (team, o.after) in opened):
                st.solved_t = float(t)
        elif kind == "submission":
            o = objs.get(d.get("objective"))
            if o is None or o.kind != "answer":
                return
            st = self.state[(team, o.id)]
            if d.get("refused"):
                st.refused += 1
                return
            if st.solved_t is not None or (o.after is not None and (team, o.after) not in opened):
                return
            max_attempts = self.policy.max_attempts
            if max_attempts is not None and st.attempts >= max_attempts:
                st.refused += 1
                return
            st.attempts += 1
            if d.get("correct") is True:
                st.solved_t = float(t)
            else:
                st.wrong += 1
        elif kind == "hint":
            o = objs.get(d.get("objective"))
            if o is None:
                return
            st = self.state[(team, o.id)]
            st.hints += 1
            cost = d.get("cost")
            if not isinstance(cost, int | float):
                i = d.get("index", 0)
                cost = o.obj.hints[i].cost if isinstance(i, int) and 0 <= i < len(o.obj.hints) else 0
            st.hint_cost += float(cost)
        elif kind == "report":
            o = objs.get(d.get("objective"))
            if o is None or o.kind != "report" or d.get("accepted") is False:
                return
            st = self.state[(team, o.id)]
            if st.solved_t is None and (o.after is None or (team, o.after) in opened):
                st.solved_t = float(t)
                fr = d.get("field_results")
                st.field_results = {str(k): bool(v) for k, v in fr.items()} if isinstance(fr, dict) else None
        elif kind == "submission.flagged":
            self.flags[team].append(
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
                self.adjust[team][cat] = self.adjust[team].get(cat, 0.0) + float(pts)

    # -- reading ----------------------------------------------------------------------------------
    def result(self, team: int, objective_id: str) -> ObjectiveResult:
        """One team's result for one objective (the board's ``detail[objective_id]``), built on its own."""
        o = self.objs[objective_id]
        st = self.state[(team, objective_id)]
        opened_t = 0.0 if o.after is None else self.opened.get((team, o.after))
        res = ObjectiveResult(
            objective=objective_id,
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
                share = report_share(self.policy, st.field_results)
                res.on_time, res.share = on_time, share
            res.points = award(
                self.policy,
                o.points,
                o.weight,
                minutes,
                wrong=st.wrong,
                hint_cost=st.hint_cost,
                on_time=on_time,
                share=share,
            )
        return res

    def team(self, k: int) -> TeamBoard:
        """Team ``k``'s board; ``rank`` is left 0 (it needs every team: see :meth:`board`)."""
        categories = list(dict.fromkeys(o.category for o in self.objs.values()))
        if self.scenario.availability:
            categories.append(AVAILABILITY)
        tb = TeamBoard(team=k, categories=dict.fromkeys(categories, 0.0), flags=list(self.flags[k]))
        for oid, o in self.objs.items():
            res = self.result(k, oid)
            if res.solved:
                tb.solved += 1
            tb.detail[oid] = res
            tb.objectives[oid] = res.points
            tb.categories[o.category] += res.points
            tb.attempts += res.attempts
            tb.hints += res.hints
        if self.scenario.availability:
            tb.categories[AVAILABILITY] = self.avail_points[k] * self.policy.weight(AVAILABILITY)
        tb.availability_up, tb.availability_total = self.avail_up[k], self.avail_total[k]
        for cat, pts in self.adjust[k].items():
            tb.categories[cat] = tb.categories.get(cat, 0.0) + pts
            tb.adjustments += pts
        detect = set(self.policy.detect_categories)
        contain = set(self.policy.contain_categories)
        for inj in self.scenario.injects:
            tb.ttd[inj.id] = self._first(tb, inj.id, detect)
            tb.ttc[inj.id] = self._first(tb, inj.id, contain)
        tb.total = sum(tb.categories.values())
        return tb

    def _first(self, tb: TeamBoard, inject: str, cats: set[str]) -> float | None:
        best: float | None = None
        for oid, o in self.objs.items():
            if o.after != inject or o.category not in cats:
                continue
            r = tb.detail[oid]
            if r.solved and r.minutes is not None and (best is None or r.minutes < best):
                best = r.minutes
        return best

    def board(self) -> Board:
        """The whole board, ranked (standard competition ranking, as the engine)."""
        boards = [self.team(k) for k in self.teams]
        order = sorted(boards, key=lambda b: -round(b.total, 6))
        for i, b in enumerate(order):
            b.rank = (
                i + 1 if i == 0 or round(b.total, 6) != round(order[i - 1].total, 6) else order[i - 1].rank
            )
        return Board(
            scenario=self.scenario.name,
            policy=self.policy.name,
            teams=boards,
            events=self.events,
            last_seq=self.last_seq,
            drill_t=self.clock.drill_t(self.last_ts) if self.last_ts is not None else 0.0,
            status=self.clock.status,
        )


class LiveBoard:
    """One range's :class:`BoardFold`, kept in step with its event store by whoever holds the write lock.

    Thread-safe (one lock around the fold). Rebuilt from the whole record when
    the scoring context changes (scenario, plan or policy file) or the store no
    longer holds the last event folded (a rolled-back transaction).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fold: BoardFold | None = None
        self._ctx: actions.Context | None = None
        self._head: tuple[int, str] | None = None  # the store's head when the fold last caught up
        self.rebuilds = 0  # folds started from the first event (for tests and benches)

    def reset(self) -> None:
        with self._lock:
            self._fold = self._ctx = self._head = None

    def _synced(self, ctx: actions.Context, tx: Transaction) -> BoardFold:
        """The fold, caught up with everything ``tx`` sees (call with the lock and the write lock held)."""
        head = tx.head
        fold = self._fold
        if fold is not None and self._ctx is ctx and self._head == head:
            return fold  # nothing recorded since (the common case: the last event is our own)
        if fold is not None and self._ctx is ctx and fold.last_seq > 0:
            # re-read from the last event folded: it must still be there, with the same hash
            new = tx.events(kind=BOARD_KINDS, after_seq=fold.last_seq - 1)
            if new and new[0].seq == fold.last_seq and new[0].hash == fold.last_hash:
                fold.advance(new)
                self._head = head
                return fold
        fold = BoardFold(ctx.scenario, ctx.plan, ctx.policy)
        fold.advance(tx.events(kind=BOARD_KINDS))
        self.rebuilds += 1
        self._fold, self._ctx, self._head = fold, ctx, head
        return fold

    def _took(self, tx: Transaction, events: list[Event]) -> None:
        """Our own appends, folded as they are (they are the head now)."""
        if self._fold is not None:
            self._fold.advance(events)
            self._head = tx.head

    def submit(
        self,
        ctx: actions.Context,
        team: int,
        objective_id: str,
        answer: Any,
        *,
        actor: str = "trainer",
        now: float | None = None,
    ) -> actions.SubmissionResult:
        """:func:`rangectl.scoring.actions.submit`, decided from the fold instead of a recomputed board.

        Same checks, same refusals, same events, same result. Inside an open
        transaction of ``ctx.store`` (the team API's group commit) it is a
        savepoint of it, like ``actions.submit``.
        """
        tp = ctx.team_plan(team)
        team = tp.team
        obj = ctx.objective(objective_id)
        if obj.answer is None:
            how = (
                "a check the drill runs"
                if obj.check is not None
                else "a report (use `rangectl report-incident`)"
            )
            raise UsageError(f"objective '{obj.id}' is scored by {how}; there is nothing to submit")
        if answer is None or isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise UsageError("an answer is a text or a number")
        if len(str(answer)) > actions.MAX_ANSWER:
            raise UsageError(
                f"answer too long ({len(str(answer)):,} characters; at most {actions.MAX_ANSWER:,})"
            )
        policy = ctx.policy
        appended: list[Event] = []
        # the write lock first, then the fold's: the order every caller takes them in (no deadlock with
        # the scoring thread, which holds its batch's transaction when it comes here)
        with ctx.store.transaction() as tx, self._lock:
            fold = self._synced(ctx, tx)
            now = time.time() if now is None else now
            drill_t = fold.clock.drill_t(now)
            res = fold.result(team, obj.id)
            refused = actions._closed(fold.clock) or actions._not_open(obj, res)
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
                appended.append(ev)
                left = None if policy.max_attempts is None else max(0, policy.max_attempts - res.attempts)
                result = actions.SubmissionResult(
                    team, obj.id, False, None, left, refused, 0.0, drill_t, ev.seq
                )
            else:
                correct = check_answer(obj.answer, answer, tp)
                attempt = res.attempts + 1
                ev = tx.append(
                    "submission",
                    {**data, "correct": correct, "attempt": attempt},
                    team=team,
                    actor=actor,
                    ts=now,
                )
                appended.append(ev)
                flag = actions._flag(ctx, team, obj, answer, correct, drill_t, res.opened_t)
                if flag is not None:
                    appended.append(
                        tx.append(
                            "submission.flagged",
                            {**flag, "submission": ev.seq, "drill_t": drill_t},
                            team=team,
                            actor="scoring",
                            ts=now,
                        )
                    )
                points = 0.0
                if correct:
                    minutes = max(0.0, drill_t - (res.opened_t or 0.0)) / 60.0
                    points = award(
                        policy,
                        obj.points,
                        policy.weight(obj.category),
                        minutes,
                        wrong=res.wrong,
                        hint_cost=res.hint_cost,
                    )
                left = None if policy.max_attempts is None else max(0, policy.max_attempts - attempt)
                result = actions.SubmissionResult(
                    team, obj.id, correct, attempt, left, None, points, drill_t, ev.seq
                )
            # still under the write lock (ours, or the batch's): our events are the head
            self._took(tx, appended)
        return result
