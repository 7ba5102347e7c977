"""What the team API does, as plain functions over a range: the bridge to the scoring actions.

Every write goes through :mod:`rangectl.scoring.actions` (the functions the
trainer's CLI calls) with ``actor="team-K"``. The only events the API writes
itself are summaries of what the limits turned away: see
:mod:`rangectl.access.refusals`. Drill-rule
refusals (not started, solved, attempts used up) are recorded by
``actions.submit`` itself as ``submission`` with ``refused``; nothing a team
was told was accepted goes through here.

A busy store (SQLite's write lock not had in time) is a 503 with
``Retry-After`` and a fixed text; no lower layer's message (which may name
the trainer's state folder) reaches a team.

Everything a team reads is built field by field from the scenario and the
team's own events; nothing is passed through wholesale, so answers, check
definitions, report answer keys, addresses (any team's), inject ground truth
and reference solutions never reach a response. Objectives a team may see are
the *open* ones, with the scoring engine's rule: no ``after``, or its inject
has started for that team. A closed or unknown objective is the same 404.

Errors are :class:`ApiError` (HTTP status + one line); messages are written
here, not copied from lower layers, except refusal reasons about the drill.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rangectl.access.credentials import TokenVerifier
from rangectl.access.ratelimit import RateLimit, RateLimiter, TeamBudget
from rangectl.access.refusals import (
    REFUSED_KIND,
    BudgetPenalty,
    FinalRefusals,
    RefusalLog,
    actor,
    close_at_exit,
    closed_result,
    refused_result,
)
from rangectl.errors import NotFound, RangeError, UsageError
from rangectl.plan import Plan
from rangectl.scenario.model import Objective, localize
from rangectl.scenario.variables import substitute_all
from rangectl.scoring import actions
from rangectl.scoring.engine import Board, DrillClock, TeamBoard, compute_board
from rangectl.scoring.incremental import DRILL_KINDS, LiveBoard
from rangectl.state import RangeState
from rangectl.store import Event, StoreBusy, StoreError, last_checkpoint

TEAM_KINDS = ("inject.start", "submission", "hint", "report", "check", "availability", "score")
BUSY = "busy, retry"  # the whole text of a 503 for a busy store
CONTEXT_SECONDS = 1.0  # a changed scenario or policy file is picked up within this


class ApiError(Exception):
    def __init__(
        self, status: int, detail: str, headers: dict[str, str] | None = None, body: dict | None = None
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.body = body


@dataclass
class Settings:
    hide_board: bool = False
    rate: RateLimit = field(default_factory=RateLimit)
    budget: TeamBudget = field(default_factory=TeamBudget)
    max_body: int = 64 * 1024
    board_cache_seconds: float = 1.0
    lang: str = "en"  # texts' language when a request does not ask for one


def busy() -> ApiError:
    """The one answer to a busy or failing store: no lower layer's text (it may hold a path)."""
    return ApiError(503, BUSY, headers={"Retry-After": "1"})


@contextmanager
def api_errors(usage: int | None = 422, refused: Callable[[str], int] = lambda msg: 409) -> Iterator[None]:
    """What a scoring action's errors mean to a team: a busy store is a generic 503, an unknown
    objective 404, bad input ``usage`` (422; None: like any other refusal), any other refusal
    ``refused(message)`` (409), its message cleaned of trainer-side paths."""
    try:
        yield
    except (StoreBusy, StoreError, sqlite3.OperationalError):
        raise busy() from None
    except NotFound:
        raise ApiError(404, "no such objective") from None
    except RangeError as exc:
        msg = _clean(exc.message)
        if usage is not None and isinstance(exc, UsageError):
            raise ApiError(usage, msg) from None
        raise ApiError(refused(msg), msg) from None


def _clean(msg: str, path: Path | None = None) -> str:
    """A lower layer's one-line message, without the temp file's path (reports go through one)."""
    if path is not None:
        msg = msg.replace(str(path), "report")
    return " ".join(msg.split())[:500]


class Reader:
    """Read-only SQLite connections, one per thread, for the team views.

    Reads never take the event store's lock (WAL readers do not wait for the
    writer), so a slow scoring transaction does not hold up every GET.
    """

    def __init__(self, db_path):
        self.uri = f"file:{db_path}?mode=ro"
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.uri, uri=True, timeout=30, isolation_level=None)
            c.execute("PRAGMA busy_timeout=30000")
            self._local.conn = c
        return c

    def events(
        self, kinds: tuple[str, ...] | str | None = None, team: int | None = None, after: int = 0
    ) -> list[Event]:
        where, args = ["seq > ?"], [int(after)]
        if kinds is not None:
            ks = (kinds,) if isinstance(kinds, str) else tuple(kinds)
            where.append(f"kind IN ({', '.join('?' * len(ks))})")  # exact kinds only: uses the index
            args.extend(ks)
        if team is not None:
            where.append("team = ?")
            args.append(int(team))
        rows = (
            self._conn()
            .execute(
                "SELECT seq, ts, kind, team, actor, data, prev_hash, hash FROM events WHERE "
                + " AND ".join(where)
                + " ORDER BY seq",
                args,
            )
            .fetchall()
        )
        return [Event(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows]

    def last_seq(self) -> int:
        row = self._conn().execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)


class TeamService:
    """One range's team-facing operations. Thread-safe; one instance per ``serve`` process."""

    def __init__(self, state: RangeState, settings: Settings | None = None):
        self.state = state
        self.settings = settings or Settings()
        self.verifier = TokenVerifier(state)
        self.limiter = RateLimiter(self.settings.rate)
        self.budget = RateLimiter(self.settings.budget.as_rate())
        self.penalty = BudgetPenalty(self.settings.budget)
        self.reader = Reader(state.db_path)
        self.refusals = RefusalLog(self)
        # serve calls close(); should a process end without it, the open summaries are still written
        atexit.register(close_at_exit, weakref.ref(self.refusals))
        # scored submissions run on one thread, in batches of one transaction each (group commit):
        # they serialise on the store's write lock anyway, and each batch costs one fsync
        self.scoring = ScoringQueue(self)
        self._board: tuple[float, int, Board] | None = None
        self._room_cache: dict[str, tuple[float, str]] = {}  # lang -> (monotonic time, the room's page)
        self._ctx: tuple[float, actions.Context] | None = None
        self._ctx_refreshing = threading.Event()
        self._opened_cache: dict[int, set[str]] = {}
        # an objective the team solved or has no attempts left for refuses every later answer; those
        # are summarised like rate-limited ones instead of each becoming an event with its answer
        self.final = FinalRefusals()
        self._board_lock = threading.Lock()
        # what submissions are decided from: the board folded event by event, advanced under the store's
        # write lock with only the events recorded since (never recomputed from a team's whole record)
        self.live = LiveBoard()
        self.resets: Any = None  # rangectl.access.resets.TeamResets, when serve lets teams reset nodes

    # -- context ------------------------------------------------------------------------------
    def ctx(self, fresh: bool = False) -> actions.Context:
        """The scoring context (scenario, plan, policy, store).

        Re-checked every CONTEXT_SECONDS in a background thread (a re-check can
        mean re-reading the scenario file: tens of ms that must not stall the
        event loop); meanwhile the previous context serves.
        """
        hit = self._ctx
        if hit is None or fresh:
            ctx = actions.context(self.state)
            self._ctx = (time.monotonic(), ctx)
            return ctx
        if time.monotonic() - hit[0] >= CONTEXT_SECONDS and not self._ctx_refreshing.is_set():
            self._ctx_refreshing.set()
            threading.Thread(target=self._refresh_ctx, name="rangectl-ctx", daemon=True).start()
        return hit[1]

    def _refresh_ctx(self) -> None:
        try:
            self._ctx = (time.monotonic(), actions.context(self.state))
        except Exception:  # noqa: BLE001 - keep the last good context; the next call tries again
            self._ctx = (time.monotonic(), self._ctx[1]) if self._ctx else None
        finally:
            self._ctx_refreshing.clear()

    def team_for(self, token: str | None) -> int | None:
        return self.verifier.team_for(token)

    def over_budget(self, team: int) -> float:
        """Take one request from the team's whole-API budget: 0 = go, else seconds to wait.

        A team turned away in the last ``penalty_seconds`` has a burst of ``penalty_burst``.
        """
        return self.penalty.take(self.budget, team)

    def close(self) -> None:
        """Write the refusal summaries still open (serve calls this when it stops)."""
        self.scoring.close()
        self.refusals.close()

    def record_anchor(self) -> dict[str, Any] | None:
        """The latest checkpoint of the record (seq, full head hash, time), as teams see it."""
        cp = last_checkpoint(self.state.db_path.with_suffix(".checkpoints"))
        return None if cp is None else {"seq": cp.seq, "head": cp.hash, "ts": round(cp.ts, 3)}

    # -- what a team may see ----------------------------------------------------------------
    def _team_events(self, ctx: actions.Context, team: int) -> tuple[list[Any], list[Any]]:
        control = self.reader.events(DRILL_KINDS)
        mine = self.reader.events(TEAM_KINDS, team=team)
        return control, mine

    def _team_board(self, ctx: actions.Context, team: int, control: list[Any], mine: list[Any]) -> TeamBoard:
        plan = Plan(ctx.plan.scenario, ctx.plan.scenario_hash, [ctx.team_plan(team)])
        events = sorted([*control, *mine], key=lambda e: e.seq)
        return compute_board(ctx.scenario, plan, ctx.policy, events).team(team)

    @staticmethod
    def _opened(mine: list[Any]) -> set[str]:
        return {e.data.get("inject") for e in mine if e.kind == "inject.start"}

    @staticmethod
    def _is_open(obj: Objective, opened: set[str]) -> bool:
        return obj.after is None or obj.after in opened

    def _open_objective(self, ctx: actions.Context, team: int, objective_id: str) -> Objective:
        try:
            obj = ctx.scenario.objective(objective_id)
        except KeyError:
            raise ApiError(404, "no such objective") from None
        # objectives only ever open, so a cached "open" is final; anything else is read afresh
        opened = self._opened_cache.get(team)
        if opened is None or not self._is_open(obj, opened):
            opened = {e.data.get("inject") for e in self.reader.events("inject.start", team=team)}
            self._opened_cache[team] = opened
        if not self._is_open(obj, opened):
            raise ApiError(404, "no such objective")
        return obj

    def _objective_view(
        self,
        ctx: actions.Context,
        obj: Objective,
        lang: str,
        tb: TeamBoard,
        hints_taken: dict[str, int],
        clock: DrillClock,
    ) -> dict[str, Any]:
        res = tb.detail.get(obj.id)
        taken = hints_taken.get(obj.id, 0)
        max_attempts = ctx.policy.max_attempts
        values = ctx.plan.team(tb.team).values  # the team's own {var:NAME} values in its texts

        def text(t: Any) -> Any:
            return substitute_all(localize(t, lang), values)

        view: dict[str, Any] = {
            "id": obj.id,
            "title": text(obj.title) or obj.id,
            "prompt": text(obj.prompt),
            "category": obj.category,
            "kind": obj.kind,
            "points": obj.points,
            "solved": bool(res and res.solved),
            "earned": round(res.points, 2) if res else 0.0,
            "hints": [
                {
                    "index": i,
                    "cost": h.cost,
                    "taken": i < taken,
                    **({"text": text(h.text)} if i < taken else {}),
                }
                for i, h in enumerate(obj.hints)
            ],
            "hints_available": max(0, len(obj.hints) - taken),
        }
        if obj.kind == "answer":
            used = res.attempts if res else 0
            view["attempts"] = used
            view["max_attempts"] = max_attempts
            view["attempts_left"] = None if max_attempts is None else max(0, max_attempts - used)
        if obj.report is not None:
            opened_t = res.opened_t if res and res.opened_t is not None else 0.0
            view["report"] = {
                "deadline_seconds": obj.report.deadline,
                "due_drill_t": round(opened_t + obj.report.deadline, 2),
                "filed": bool(res and res.solved),
                "fields": [
                    {"name": f.name, "prompt": text(f.prompt), "required": f.required}
                    for f in obj.report.fields
                ],
            }
        return view

    def objectives(self, team: int, lang: str) -> dict[str, Any]:
        ctx = self.ctx()
        control, mine = self._team_events(ctx, team)
        opened = self._opened(mine)
        tb = self._team_board(ctx, team, control, mine)
        clock = DrillClock.from_events(control)
        taken = _hints_taken(mine)
        items = [
            self._objective_view(ctx, o, lang, tb, taken, clock)
            for o in ctx.scenario.objectives
            if self._is_open(o, opened)
        ]
        return {"team": team, "drill": _drill(clock), "objectives": items}

    def objective(self, team: int, objective_id: str, lang: str) -> dict[str, Any]:
        ctx = self.ctx()
        obj = self._open_objective(ctx, team, objective_id)
        control, mine = self._team_events(ctx, team)
        tb = self._team_board(ctx, team, control, mine)
        return self._objective_view(ctx, obj, lang, tb, _hints_taken(mine), DrillClock.from_events(control))

    def briefing(self, team: int, lang: str) -> dict[str, Any]:
        ctx = self.ctx()
        sc = ctx.scenario
        clock = DrillClock.from_events(self.reader.events(DRILL_KINDS))
        return {
            "team": team,
            "range": self.state.name,
            "scenario": sc.name,
            "title": localize(sc.title, lang),
            "briefing": substitute_all(localize(sc.briefing, lang), ctx.plan.team(team).values),
            "level": sc.level,
            "duration_seconds": sc.duration,
            "drill": _drill(clock),
            "lang": lang,
        }

    def messages(self, team: int, lang: str, after: int = 0) -> dict[str, Any]:
        ctx = self.ctx()
        out = []
        for ev in self.reader.events("message", after=after):
            if ev.team not in (None, team):
                continue
            d = ev.data
            title = d.get("title")
            inj_id = d.get("inject")
            if isinstance(inj_id, str):
                try:
                    inj = ctx.scenario.inject(inj_id)
                    title = localize(inj.title, lang) if inj.title else title
                except KeyError:
                    pass
            text = d.get("text")
            out.append(
                {
                    "seq": ev.seq,
                    "drill_t": round(float(d.get("drill_t") or 0.0), 2),
                    "title": str(title or inj_id or ""),
                    "text": localize(text if isinstance(text, str | dict) else str(text or ""), lang),
                }
            )
        return {"team": team, "messages": out, "last_seq": out[-1]["seq"] if out else after}

    # -- actions ----------------------------------------------------------------------------------
    def precheck(self, team: int, objective_id: str) -> tuple[str, float]:
        """Open answer objective? Then take a rate-limit token: (objective id, seconds to wait; 0 = go)."""
        ctx = self.ctx()
        obj = self._open_objective(ctx, team, objective_id)
        if obj.answer is None:
            how = "a check the drill runs" if obj.check else "a report"
            raise ApiError(409, f"objective '{obj.id}' is scored by {how}; there is nothing to submit")
        return obj.id, self.limiter.take(team, obj.id)

    @staticmethod
    def refused_result(
        team: int, objective_id: str, wait: float, seq: int | None = None
    ) -> tuple[int, dict, dict[str, str]]:
        """The 429 for an answer over the objective's rate limit."""
        return refused_result(team, objective_id, wait, seq)

    def scored(
        self, team: int, objective_id: str, answer: str, ctx: actions.Context | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The scoring module's ``submit`` (same checks, refusals, events and result, actor team-K),
        decided from the live board: only the events recorded since the last answer are read.

        ``ctx``: the scoring context whose store's transaction is open (the scoring thread's batch);
        by default the range's current one, as ``actions.submit`` takes it."""
        with api_errors():
            ctx = ctx or actions.context(self.state)
            res = self.live.submit(ctx, team, objective_id, answer, actor=actor(team))
        self.final.remember(team, res, id(self.ctx()))
        body = {
            "team": team,
            "objective": res.objective,
            "accepted": res.accepted,
            "correct": res.correct,
            "attempt": res.attempt,
            "attempts_left": res.attempts_left,
            "refused": res.refused,
            "points": round(res.points, 2),
            "drill_t": round(res.drill_t, 2),
            "seq": res.seq,
            "message": res.message,
        }
        return (200 if res.accepted else 409), body, {}

    def closed_result(
        self, team: int, objective_id: str, answer: str
    ) -> tuple[int, dict, dict[str, str]] | None:
        """A (team, objective) already refused for good (solved, no attempts left): counted, 409, no event."""
        hit = self.final.get(team, objective_id, id(self.ctx()))  # a changed policy may give attempts back
        if hit is None:
            return None
        reason, left = hit
        self.refusals.note(REFUSED_KIND, team, objective_id, answer, reason=reason)
        return closed_result(team, objective_id, reason, left)

    def submit(self, team: int, objective_id: str, answer: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Submit an answer (synchronous form; the API's async route uses precheck/refusals/scored)."""
        oid, wait = self.precheck(team, objective_id)
        if wait > 0:
            self.refusals.note(REFUSED_KIND, team, oid, answer)
            return self.refused_result(team, oid, wait)
        return self.closed_result(team, oid, answer) or self.scored(team, oid, answer)

    def hint(self, team: int, objective_id: str, lang: str) -> dict[str, Any]:
        ctx = self.ctx()
        obj = self._open_objective(ctx, team, objective_id)
        if not obj.hints:
            raise ApiError(409, f"objective '{obj.id}' has no hints")
        with api_errors(usage=None):
            h = actions.take_hint_info(self.state, team, obj.id, lang=lang, actor=actor(team))
        return {
            "team": team,
            "objective": h.objective,
            "index": h.index,
            "total": h.total,
            "cost": h.cost,
            "text": h.text,
            "drill_t": round(h.drill_t, 2),
            "seq": h.seq,
        }

    def report(self, team: int, objective_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """File a report from a JSON body: checked here, then handed to the same function as the CLI's.

        The fields are the JSON values as they came (no file, no YAML round trip):
        text is stored exactly as sent, whatever its characters.
        """
        ctx = self.ctx()
        obj = self._open_objective(ctx, team, objective_id)
        if obj.report is None:
            raise ApiError(409, f"objective '{obj.id}' is not a report objective")
        known = {f.name: f for f in obj.report.fields}
        unknown = [k for k in fields if k not in known]
        if unknown:
            raise ApiError(422, f"unknown report field '{unknown[0]}' (fields: {', '.join(known)})")
        missing = [
            n
            for n, f in known.items()
            if f.required and (fields.get(n) is None or str(fields.get(n)).strip() == "")
        ]
        if missing:
            raise ApiError(
                422, f"required report field(s) missing: {', '.join(missing)}; report not accepted"
            )
        values: dict[str, Any] = {}
        for k, v in fields.items():
            if not (v is None or isinstance(v, str | bool | int | float)):
                raise ApiError(422, f"report field '{k}' must be a single value (text, number, true/false)")
            if isinstance(v, str) and not _utf8(v):
                raise ApiError(422, f"report field '{k}' is not valid Unicode text")
            values[k] = v
        rep = actions.ParsedReport(obj.id, values, API_REPORT_FILE)
        with api_errors(refused=lambda msg: 409 if msg.startswith("report not accepted") else 422):
            res = actions.report_incident(self.state, team, rep, actor=actor(team))
        return {
            "team": team,
            "objective": res.objective,
            "accepted": True,
            "on_time": res.on_time,
            "drill_t": round(res.drill_t, 2),
            "deadline_t": round(res.deadline_t, 2),
            "seq": res.seq,
            "message": res.message,
        }

    # -- scores -------------------------------------------------------------------------------------
    def score(self, team: int) -> dict[str, Any]:
        ctx = self.ctx()
        control, mine = self._team_events(ctx, team)
        opened = self._opened(mine)
        tb = self._team_board(ctx, team, control, mine)
        visible = [o for o in ctx.scenario.objectives if self._is_open(o, opened)]
        cats = {o.category for o in visible}
        if ctx.scenario.availability:
            cats.add("availability")
        cats |= {
            k
            for k, v in tb.categories.items()
            if k not in {o.category for o in ctx.scenario.objectives} and v
        }
        board = self.board_cached(ctx) if not self.settings.hide_board else None
        return {
            "team": team,
            "total": round(tb.total, 2),
            "rank": board.team(team).rank if board is not None else None,
            "teams": len(ctx.plan.teams) if board is not None else None,
            "categories": {k: round(v, 2) for k, v in tb.categories.items() if k in cats},
            "solved": tb.solved,
            "attempts": tb.attempts,
            "hints": tb.hints,
            "availability": {"up": tb.availability_up, "total": tb.availability_total},
            "adjustments": round(tb.adjustments, 2),
            "record": self.record_anchor(),
            "objectives": [
                {
                    "id": o.id,
                    "category": o.category,
                    "solved": tb.detail[o.id].solved,
                    "points": round(tb.detail[o.id].points, 2),
                    "max_points": round(tb.detail[o.id].max_points, 2),
                    "attempts": tb.detail[o.id].attempts,
                    "hints": tb.detail[o.id].hints,
                }
                for o in visible
            ],
        }

    def board_cached(self, ctx: actions.Context | None = None) -> Board:
        ctx = ctx or self.ctx()
        now = time.monotonic()
        with self._board_lock:
            if self._board is not None and now - self._board[0] < self.settings.board_cache_seconds:
                return self._board[2]
            last = self.reader.last_seq()
            if self._board is not None and self._board[1] == last:
                self._board = (now, last, self._board[2])
                return self._board[2]
            # only the kinds scores come from: not the refused-attempt floods, messages or ground truth
            b = compute_board(
                ctx.scenario, ctx.plan, ctx.policy, self.reader.events(DRILL_KINDS + TEAM_KINDS)
            )
            self._board = (now, last, b)
            return b

    def room(self, lang: str | None = None) -> str:
        """The room's scoreboard page (rangectl/access/room.py); 404 when the board is hidden."""
        if self.settings.hide_board:
            raise ApiError(404, "not found")
        from rangectl.access.room import render_room

        lang = lang or self.settings.lang
        now = time.monotonic()
        cached = self._room_cache.get(lang)
        if cached is not None and now - cached[0] < self.settings.board_cache_seconds:
            return cached[1]  # a projector, or a flood of requests, costs one render a second
        ctx = self.ctx()
        sc = ctx.scenario
        clock = DrillClock.from_events(self.reader.events(DRILL_KINDS))
        page = render_room(
            self.board_cached(ctx),
            title=localize(sc.title, lang),
            objectives=len(sc.objectives),
            drill=_drill(clock),
            duration=sc.duration,
            lang=lang,
        )
        self._room_cache[lang] = (now, page)
        return page

    def board(self) -> dict[str, Any]:
        if self.settings.hide_board:
            raise ApiError(403, "the trainer has hidden the scoreboard")
        b = self.board_cached()
        return {
            "scenario": b.scenario,
            "status": b.status,
            "drill_t": round(b.drill_t, 2),
            "teams": [
                {"team": t.team, "rank": t.rank, "total": round(t.total, 2), "solved": t.solved}
                for t in b.ranked()
            ],
        }


def _hints_taken(mine: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in mine:
        if e.kind == "hint":
            oid = e.data.get("objective")
            if isinstance(oid, str):
                out[oid] = out.get(oid, 0) + 1
    return out


def _drill(clock: DrillClock) -> dict[str, Any]:
    return {"status": clock.status, "drill_t": round(clock.drill_t(time.time()), 2)}


def _utf8(text: str) -> bool:
    """Text the record can hold: no lone surrogates (JSON's "\\ud800" decodes to one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


API_REPORT_FILE = "report-via-api.json"  # the report event's ``file`` for reports sent to the API


class ScoringQueue:
    """Scores answers for the event loop on one thread, with group commit.

    Everything queued when the thread comes round (up to MAX_BATCH) is scored
    inside one store transaction, each answer by the scoring module's
    ``submit`` in its own savepoint, and committed at once: one fsync with
    ``synchronous=FULL`` for the whole batch. Only then is each request
    answered, so an answer a team was told was recorded survives a power cut.
    If the commit fails, every request of the batch gets the 503 (none was
    recorded).
    """

    MAX_BATCH = 64

    def __init__(self, service: TeamService):
        self.service = service
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # transactions committed (for benches and tests)

    def _ensure(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="rangectl-scoring", daemon=True)
                    self._thread.start()

    async def submit(self, team: int, objective_id: str, answer: str) -> tuple[int, dict, dict[str, str]]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put(((team, objective_id, answer), loop, fut))
        self._ensure()
        return await fut

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.MAX_BATCH:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._score(batch)
            if stop:
                return

    def _score(self, batch: list) -> None:
        results: list[tuple[Any, BaseException | None]] = []
        try:
            # the range's current context, read once per batch (the service's cached one may hold a store
            # since replaced and closed); every answer of the batch is scored with it, in its store
            ctx = actions.context(self.service.state)
            with ctx.store.transaction():  # the batch's one commit
                for (team, oid, answer), _, _ in batch:
                    try:
                        results.append((self.service.scored(team, oid, answer, ctx), None))
                    except Exception as exc:  # noqa: BLE001 - this request's error, the others go on
                        results.append((None, exc))
            self.batches += 1
        except Exception as exc:  # noqa: BLE001 - the commit failed: nothing of the batch is recorded
            err: BaseException = busy() if isinstance(exc, StoreBusy | StoreError | sqlite3.Error) else exc
            results = [(None, err)] * len(batch)
        for (_, loop, fut), (value, exc) in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_settle, fut, value, exc)


def _settle(fut: asyncio.Future, value: Any, exc: BaseException | None) -> None:
    if fut.done():  # the client went away
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
