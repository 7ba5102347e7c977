"""Issue 15: the team API scores answers from a board folded event by event (rangectl/scoring/incremental.py),
not from compute_board over the team's whole record. Same boards, same decisions, same events."""

from __future__ import annotations

import copy
import dataclasses
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from rangectl.access.ratelimit import RateLimit, TeamBudget
from rangectl.access.service import ApiError, Settings, TeamService
from rangectl.plan import Plan, plan
from rangectl.scenario.model import Scenario
from rangectl.scoring import actions
from rangectl.scoring.engine import compute_board
from rangectl.scoring.incremental import BoardFold, LiveBoard
from rangectl.state import RangeState
from rangectl.store import Event, EventStore
from tests.unit import _mini_range
from tests.unit._mini_range import events, make_range
from tests.unit.test_scoring import SCENARIO, pol

# --- the fold equals the engine's pass on any record ----------------------------------------------


def _scenario(hold: int | None) -> Scenario:
    d = copy.deepcopy(SCENARIO)
    if hold is not None:
        next(o for o in d["objectives"] if o["id"] == "block-scanner")["check"]["hold"] = hold
    return Scenario.model_validate(d)


SCENARIOS = {h: _scenario(h) for h in (None, 2)}
PLANS = {h: plan(sc, 2) for h, sc in SCENARIOS.items()}
# "flag" (open from the start) often, so attempts run past max_attempts
OBJECTIVES = [*(o["id"] for o in SCENARIO["objectives"]), "no-such", "flag", "flag", "flag"]
TEAMS = st.sampled_from([1, 1, 2, 2, 3, None])  # 3 and None: not in the plan
MAYBE_T = st.one_of(st.none(), st.floats(0, 4000, allow_nan=False))


def _data(kind: str) -> st.SearchStrategy[dict]:
    obj = st.sampled_from(OBJECTIVES)
    if kind == "drill.start":
        return st.fixed_dictionaries(
            {"wall_start": st.floats(900, 1100), "time_scale": st.sampled_from([1, 2])}
        )
    if kind.startswith("drill."):
        return st.just({})
    if kind == "inject.start":
        return st.fixed_dictionaries(
            {"inject": st.sampled_from(["recon", "exfil", "nope"]), "drill_t": MAYBE_T}
        )
    if kind == "submission":
        return st.fixed_dictionaries(
            {
                "objective": obj,
                "correct": st.sampled_from([True, False, False, None]),
                "drill_t": MAYBE_T,
            },
            optional={"refused": st.sampled_from(["no attempts left", ""])},
        )
    if kind == "hint":
        return st.fixed_dictionaries(
            {"objective": obj, "index": st.sampled_from([0, 1, 5, "x"]), "drill_t": MAYBE_T},
            optional={"cost": st.sampled_from([20, 7.5, None, "x"])},
        )
    if kind == "check":
        return st.fixed_dictionaries({"objective": obj, "passed": st.booleans(), "drill_t": MAYBE_T})
    if kind == "report":
        return st.fixed_dictionaries(
            {
                "objective": obj,
                "accepted": st.sampled_from([True, True, False, None]),
                "drill_t": MAYBE_T,
            },
            optional={
                "field_results": st.one_of(
                    st.none(), st.dictionaries(st.sampled_from(["source", "severity"]), st.booleans())
                )
            },
        )
    if kind == "availability":
        return st.fixed_dictionaries(
            {"round": st.integers(0, 3), "up": st.booleans(), "drill_t": MAYBE_T},
            optional={
                "index": st.sampled_from([0, 1, None]),
                "node": st.just("portal"),
                "service": st.sampled_from(["http", "ssh"]),
            },
        )
    if kind == "score":
        return st.fixed_dictionaries(
            {"points": st.sampled_from([5, -2.5, True, "x"]), "drill_t": MAYBE_T},
            optional={"category": st.sampled_from(["adjustments", "bonus", None, ""])},
        )
    if kind == "submission.flagged":
        return st.fixed_dictionaries(
            {"objective": obj, "reason": st.sampled_from(["fast", "another-team"]), "drill_t": MAYBE_T}
        )
    return st.just({"text": "not scored"})  # message, inject.done, submission.refused


KINDS = [
    "drill.start",
    "drill.pause",
    "drill.resume",
    "drill.stop",
    "drill.finish",
    "inject.start",
    "submission",
    "submission",
    "hint",
    "check",
    "report",
    "availability",
    "score",
    "submission.flagged",
    "message",
]


@st.composite
def records(draw) -> list[Event]:
    n = draw(st.integers(0, 60))
    out: list[Event] = []
    ts = 1000.0
    if draw(st.booleans()):  # most drills start first; some records start with team events
        out.append(Event(1, ts, "drill.start", None, "runner", {"wall_start": ts, "time_scale": 1}, "", "h1"))
    for _ in range(n):
        kind = draw(st.sampled_from(KINDS))
        ts += draw(st.sampled_from([0.0, 1.5, 30.0, 200.0]))
        team = None if kind.startswith("drill.") else draw(TEAMS)
        data = {k: v for k, v in draw(_data(kind)).items() if v is not None or k == "category"}
        seq = len(out) + 1
        out.append(Event(seq, ts, kind, team, "test", data, "", f"h{seq}"))
    return out


def _cuts(draw, n: int) -> list[int]:
    return sorted(draw(st.lists(st.integers(0, n), max_size=6)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rec=records(),
    hold=st.sampled_from([None, 2]),
    max_attempts=st.sampled_from([1, 3, None]),
    data=st.data(),
)
def test_folding_new_events_gives_compute_boards_board(rec, hold, max_attempts, data):
    """Fed in arbitrary chunks (and with overlaps, which must not count twice), the fold's board is
    compute_board's on the same events: every team, every objective, the board itself."""
    sc, pl, policy = SCENARIOS[hold], PLANS[hold], pol(max_attempts=max_attempts)
    fold = BoardFold(sc, pl, policy)
    start = 0
    for cut in [*_cuts(data.draw, len(rec)), len(rec)]:
        back = data.draw(st.integers(0, 2))  # re-send a few events already folded
        fold.advance(rec[max(0, start - back) : cut])
        start = max(start, cut)
        want = compute_board(sc, pl, policy, rec[:start])
        for k in (1, 2):
            assert fold.team(k) == dataclasses.replace(want.team(k), rank=0)
            for oid in want.team(k).detail:
                assert fold.result(k, oid) == want.team(k).detail[oid]
        assert fold.board() == want
        assert fold.clock.status == want.status
    assert fold.last_seq == (rec[-1].seq if rec else 0)


def test_the_fold_is_the_team_service_view_of_one_team():
    """What the service showed before (compute_board over one team's events, a one-team plan)."""
    sc, policy = SCENARIOS[2], pol()
    rec = [
        Event(1, 1000.0, "drill.start", None, "r", {"wall_start": 1000.0}, "", "h1"),
        Event(2, 1060.0, "inject.start", 1, "r", {"inject": "recon", "drill_t": 60.0}, "", "h2"),
        Event(3, 1070.0, "hint", 1, "t", {"objective": "scanner-ip", "index": 0, "cost": 20}, "", "h3"),
        Event(4, 1080.0, "submission", 1, "t", {"objective": "scanner-ip", "correct": False}, "", "h4"),
        Event(5, 1090.0, "submission", 2, "t", {"objective": "flag", "correct": True}, "", "h5"),
        Event(6, 1200.0, "submission", 1, "t", {"objective": "scanner-ip", "correct": True}, "", "h6"),
        Event(7, 1210.0, "score", 1, "t", {"points": 5, "category": "bonus"}, "", "h7"),
    ]
    fold = BoardFold(sc, plan(sc, 2), policy)
    fold.advance(rec)
    full = plan(sc, 2)
    one = Plan(full.scenario, full.scenario_hash, [full.team(1)])
    mine = [e for e in rec if e.team in (None, 1)]
    want = compute_board(sc, one, policy, mine).team(1)
    assert fold.team(1) == dataclasses.replace(want, rank=0)
    r = fold.result(1, "scanner-ip")
    assert r.solved and r.attempts == 2 and r.wrong == 1 and r.hint_cost == 20
    assert r.points == pytest.approx(100 * 0.5 ** ((200 - 60) / 60 / 10) - 20 - 10)  # drill_t from the clock


# --- the live board decides as actions.submit does -------------------------------------------------


def _range(tmp_path, wall_start: float, started: bool = True) -> RangeState:
    """The mini range (2 teams), with a drill started at ``wall_start``; no credentials (not needed)."""
    d = tmp_path / f"scn-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    f = d / "mini.yaml"
    with f.open("w") as fh:
        YAML().dump(_mini_range.SCENARIO, fh)
    name = f"tv{uuid.uuid4().hex[:8]}"
    state = RangeState.create(name, f, {"scenario": "mini", "scenario_path": str(f), "teams": 2})
    s = EventStore(state.db_path)
    if started:
        s.append("drill.start", {"wall_start": wall_start, "time_scale": 1.0}, actor="runner", ts=wall_start)
    s.close()
    return state


OPS = st.one_of(
    st.tuples(
        st.just("submit"),
        st.sampled_from([1, 2]),
        st.sampled_from(["scanner-ip", "c2-domain", "victim"]),
        st.sampled_from(["right", "wrong", "other-team", 443]),
    ),
    st.tuples(st.just("hint"), st.sampled_from([1, 2]), st.just("scanner-ip"), st.none()),
    st.tuples(st.just("open"), st.sampled_from([1, 2]), st.just("recon"), st.none()),
    st.tuples(
        st.sampled_from(["drill.pause", "drill.resume", "drill.stop"]), st.none(), st.none(), st.none()
    ),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, max_size=30), started=st.booleans())
def test_live_submit_answers_and_records_what_actions_submit_does(tmp_path, ops, started):
    """Two identical ranges, the same requests at the same moments: actions.submit on one, the live
    board on the other. Every result and every recorded event is the same."""
    a, b = _range(tmp_path, 1000.0, started), _range(tmp_path, 1000.0, started)
    ca, cb = actions.context(a), actions.context(b)
    live = LiveBoard()
    right = {"scanner-ip": str(ca.plan.team(1).ip_of("bad")), "c2-domain": "evil.example", "victim": "bob"}
    now = 1100.0
    for op, team, oid, ans in ops:
        now += 7.25
        if op == "submit":
            if ans == "right":
                answer = right[oid] if oid != "scanner-ip" else str(ca.plan.team(team).ip_of("bad"))
            elif ans == "other-team":  # another team's right answer: recorded as flagged
                answer = str(ca.plan.team(3 - team).ip_of("bad")) if oid == "scanner-ip" else "x"
            else:
                answer = ans
            want = actions.submit(a, team, oid, answer, actor=f"team-{team}", now=now)
            got = live.submit(cb, team, oid, answer, actor=f"team-{team}", now=now)
            assert got == want
        elif op == "hint":  # written by another code path: the live board must pick it up
            for s in (a, b):
                try:
                    actions.take_hint_info(s, team, oid, now=now)
                except Exception as exc:  # noqa: BLE001 - both must refuse alike
                    assert "no hint" in str(exc)
        else:
            for c in (ca, cb):
                if op == "open":
                    c.store.append("inject.start", {"inject": oid, "drill_t": now - 1000}, team=team, ts=now)
                else:
                    c.store.append(op, {}, actor="trainer", ts=now)

    def rows(s):
        return [(e.seq, e.ts, e.kind, e.team, e.actor, e.data) for e in events(s)]

    assert rows(b) == rows(a)
    # folded from the start once (at the first submit); after that only new events were read
    assert live.rebuilds == min(1, sum(op == "submit" for op, *_ in ops))


def test_a_rolled_back_batch_is_not_counted(tmp_path):
    """The fold saw events of a transaction that did not commit: it notices (the hash at its last seq
    is not the store's) and folds again, so the attempt numbers stay right."""
    st_ = _range(tmp_path, time.time() - 60)
    ctx = actions.context(st_)
    live = LiveBoard()
    with pytest.raises(RuntimeError):
        with ctx.store.transaction():
            r = live.submit(ctx, 1, "c2-domain", "no-1")
            assert r.attempt == 1
            raise RuntimeError("the batch's commit failed")
    # someone else writes meanwhile: the rolled-back answer's seq now holds another event (its hash differs)
    ctx.store.append("hint", {"objective": "scanner-ip", "index": 0, "cost": 10}, team=1)
    ctx.store.append("message", {"text": "not scored"}, team=1)
    r = live.submit(ctx, 1, "c2-domain", "no-2")
    assert (r.attempt, r.attempts_left) == (1, 4)
    assert live.rebuilds == 2
    assert [e.data["answer"] for e in events(st_, "submission")] == ["no-2"]


def test_only_new_events_are_read(tmp_path, monkeypatch):
    """After the first fold, a submit reads nothing when the last event is its own, else only what is new."""
    st_ = _range(tmp_path, time.time() - 60)
    ctx = actions.context(st_)
    live = LiveBoard()
    live.submit(ctx, 1, "c2-domain", "first")  # the first fold: the whole record
    reads: list[int] = []
    real = EventStore.transaction

    def counting(self):
        cm = real(self)

        class Wrap:
            def __enter__(s):
                tx = cm.__enter__()
                orig = tx.events

                def ev(*a, **kw):
                    out = orig(*a, **kw)
                    reads.append(len(out))
                    return out

                tx.events = ev
                return tx

            def __exit__(s, *exc):
                return cm.__exit__(*exc)

        return Wrap()

    monkeypatch.setattr(EventStore, "transaction", counting)
    live.submit(ctx, 1, "c2-domain", "second")
    assert reads == []  # the head was our own event: nothing to read
    ctx.store.append("inject.start", {"inject": "recon", "drill_t": 5.0}, team=2)
    r = live.submit(ctx, 2, "scanner-ip", "x")
    assert r.accepted and r.attempt == 1  # opened by the event it read
    assert reads == [2]  # its last event again (the chain check) and the new one
    assert live.rebuilds == 1


# --- the API's answers ----------------------------------------------------------------------------


@pytest.fixture
def svc(tmp_path):
    rng = make_range(tmp_path)
    s = TeamService(rng, Settings(rate=RateLimit(per_minute=0), budget=TeamBudget(per_second=0)))
    yield rng, s
    s.close()


def test_api_scores_wrong_then_right(svc):
    rng, s = svc
    status, body, _ = s.submit(1, "c2-domain", "nope")
    assert status == 200 and body["accepted"] and body["correct"] is False
    assert (body["attempt"], body["attempts_left"]) == (1, 4)
    status, body, _ = s.submit(1, "c2-domain", "evil.example")
    assert status == 200 and body["correct"] is True and body["attempt"] == 2
    assert body["points"] == pytest.approx(round(body["points"], 2)) and body["points"] > 0
    evs = events(rng, "submission", team=1)
    assert [e.data["attempt"] for e in evs] == [1, 2] and body["seq"] == evs[-1].seq
    score = s.score(1)
    assert score["solved"] == 1 and score["attempts"] == 2
    assert score["total"] == pytest.approx(body["points"], abs=0.01)


def test_api_refuses_after_max_attempts(svc):
    rng, s = svc
    for i in range(5):
        status, body, _ = s.submit(2, "victim", f"wrong-{i}")
        assert status == 200 and body["attempt"] == i + 1
    assert body["attempts_left"] == 0
    status, body, _ = s.submit(2, "victim", "alice")  # right, but too late: refused and recorded
    assert status == 409 and body["accepted"] is False and body["correct"] is False
    assert body["refused"] == "no attempts left (5 used)" and body["attempts_left"] == 0
    (ev,) = [e for e in events(rng, "submission", team=2) if e.data.get("refused")]
    assert ev.seq == body["seq"] and ev.data["answer"] == "alice"
    status, body, _ = s.submit(2, "victim", "bob")  # from then on: refused for good, counted, no event
    assert status == 409 and body["seq"] is None
    assert len(events(rng, "submission", team=2)) == 6


def test_api_refuses_a_solved_objective(svc):
    rng, s = svc
    assert s.submit(1, "victim", "alice")[1]["correct"] is True
    status, body, _ = s.submit(1, "victim", "bob")
    assert status == 409 and body["refused"] == "objective 'victim' is already solved"
    assert body["attempt"] is None and body["seq"] == events(rng, "submission", team=1)[-1].seq
    assert s.submit(2, "victim", "bob")[1]["correct"] is True  # the other team is not affected


def test_api_refuses_when_the_drill_is_not_running_and_hides_closed_objectives(svc, tmp_path):
    rng, s = svc
    EventStore(rng.db_path).append("drill.stop", {"drill_t": 61.0})
    status, body, _ = s.submit(1, "c2-domain", "evil.example")
    assert status == 409 and body["refused"] == "the drill has ended"
    # an objective whose inject has not started for the team is not there at all (404, nothing recorded)
    other = _range(tmp_path, time.time() - 60)
    s2 = TeamService(other, Settings(rate=RateLimit(per_minute=0), budget=TeamBudget(per_second=0)))
    try:
        with pytest.raises(ApiError) as exc:
            s2.submit(1, "scanner-ip", "10.91.0.66")
        assert exc.value.status == 404
        assert events(other, "submission") == []
    finally:
        s2.close()


def test_api_not_open_is_refused_by_the_live_board(tmp_path):
    """Between the API's check that an objective is open and the write lock, the live board decides:
    an objective not open for the team is refused and recorded, as actions.submit does."""
    st_ = _range(tmp_path, time.time() - 60)
    s = TeamService(st_, Settings(rate=RateLimit(per_minute=0), budget=TeamBudget(per_second=0)))
    try:
        status, body, _ = s.scored(1, "scanner-ip", "10.91.0.66")
        assert status == 409
        assert body["refused"] == "objective 'scanner-ip' is not open yet (inject 'recon' has not started)"
        EventStore(st_.db_path).append("inject.start", {"inject": "recon", "drill_t": 60.0}, team=1)
        status, body, _ = s.scored(1, "scanner-ip", "nope")
        assert status == 200 and body["attempt"] == 1
    finally:
        s.close()


def test_queued_and_direct_answers_at_once_neither_deadlock_nor_share_an_attempt(svc):
    """The scoring thread (holding its batch's transaction) and direct callers take the store's write
    lock before the live board's: all finish, and every attempt number is given once."""
    import asyncio
    import threading

    rng, s = svc
    s.ctx(fresh=True)

    async def queued():
        return await asyncio.gather(*(s.scoring.submit(1, "c2-domain", f"q{i}") for i in range(40)))

    direct: list = []

    def sync(tag: str) -> None:
        for i in range(20):
            direct.append(s.submit(1, "c2-domain", f"{tag}{i}"))

    threads = [threading.Thread(target=sync, args=(t,), daemon=True) for t in "ab"]
    for t in threads:
        t.start()
    got = asyncio.run(asyncio.wait_for(queued(), 60))
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "deadlock"
    attempts = [b["attempt"] for _, b, _ in [*got, *direct] if b["attempt"] is not None]
    assert sorted(attempts) == [1, 2, 3, 4, 5]  # max_attempts 5: each number once, the rest refused
    evs = events(rng, "submission", team=1)
    assert sorted(e.data["attempt"] for e in evs if e.data["attempt"]) == [1, 2, 3, 4, 5]
