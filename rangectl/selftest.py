"""Self-test of a scenario: bring it up for two teams, run the drill fast, play the reference
solution for team 1 and nothing for team 2, and check that everything a trainer relies on holds.

Assertions (each one a named result, so a CI report says exactly what broke):

- ``range-up``: the range comes up and is provisioned;
- ``injects-ran``: every inject ran for every team without error;
- ``traffic-seen``: every traffic inject's packets were seen on its target, for every team;
- ``solution-steps``: every step of the reference solution was accepted (answers right,
  commands exited as expected, reports accepted);
- ``team1-objectives``: team 1 earned every objective;
- ``team1-score``: team 1's total is at least the scenario's ``expected_score``;
- ``team2-idle``: team 2, which did nothing, earned no objective (only availability);
- ``idle-bound``: team 2's total is at most the policy's ``idle_share_max`` of team 1's
  (when the policy sets one): attacks must cost an idle team its service points;
- ``played-as-trainee``: team 1 was played only through the path its trainees have (the
  hand-out files, SSH to the workstation, ``respond``, ``ssh NODE``; rangectl.access.trainee):
  every answer, hint and report in the record came through the team API as ``team-1`` and
  every command step is in the command log as a session on its node (skipped, and said so,
  with ``as_trainee=False``: the in-memory test engine has no SSH);
- ``verify``: the event record's hash chain verifies;
- ``range-down``: everything the self-test made is gone afterwards.

The range is always torn down, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from rangectl import backend as backends
from rangectl.access.install import workstation_node
from rangectl.access.trainee import TraineePath
from rangectl.backend.base import NodeRef
from rangectl.errors import EnvironmentProblem, RangeError

TEAMS = 2
TARGET_WALL_SECONDS = 150.0  # default time scale: the whole drill in about this long


@dataclass
class Assertion:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class SelftestResult:
    scenario: str
    file: str
    range: str
    time_scale: float = 1.0
    seconds: float = 0.0
    assertions: list[Assertion] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)
    # per team: objective -> {points, max_points, solved, minutes}; and availability rounds up
    objectives: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    availability_up: dict[int, int] = field(default_factory=dict)
    expected_score: int | None = None
    report_dir: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.assertions) and all(a.ok for a in self.assertions)

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.assertions.append(Assertion(name, bool(ok), detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "file": self.file,
            "range": self.range,
            "ok": self.ok,
            "time_scale": self.time_scale,
            "seconds": round(self.seconds, 1),
            "scores": self.scores,
            "objectives": self.objectives,
            "availability_up": self.availability_up,
            "expected_score": self.expected_score,
            "report_dir": self.report_dir,
            "error": self.error,
            "assertions": [{"name": a.name, "ok": a.ok, "detail": a.detail} for a in self.assertions],
        }


def auto_time_scale(drill_seconds: float) -> float:
    """A time scale that runs the drill in about TARGET_WALL_SECONDS (never slower than real time)."""
    return max(1.0, round(drill_seconds / TARGET_WALL_SECONDS, 1))


def traffic_seen(truth: dict[str, Any]) -> int:
    """Packets of an inject's traffic seen on its target, from its ground-truth record."""
    for key in ("seen_on_target", "packets_seen", "target_packets"):
        v = truth.get(key)
        if isinstance(v, dict):
            v = v.get("packets")
        if isinstance(v, int | float):
            return int(v)
    return 0


def _actions(state: Any, backend: Any, lang: str) -> dict[str, Callable[..., Any]]:
    from rangectl.scoring import actions

    def submit(team: int, objective: str, answer: str) -> dict[str, Any]:
        r = actions.submit(state, team, objective, answer, actor="selftest")
        return {"ok": r.correct, "message": r.message}

    def hint(team: int, objective: str) -> dict[str, Any]:
        actions.take_hint(state, team, objective, lang=lang, actor="selftest")
        return {"ok": True}

    def exec_(team: int, node: str, cmd: str) -> tuple[int, str]:
        return backend.exec(NodeRef(state.name, team, node), ["sh", "-c", cmd])

    def report(team: int, objective: str, fields: dict[str, str]) -> dict[str, Any]:
        from ruamel.yaml import YAML

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as fh:
            YAML(typ="safe").dump({"objective": objective, "fields": fields}, fh)
            path = fh.name
        try:
            r = actions.report_incident(state, team, path, actor="selftest")
        finally:
            Path(path).unlink(missing_ok=True)
        return {"ok": r.on_time, "message": r.message}

    return {"submit": submit, "hint": hint, "exec": exec_, "report": report}


SERVE_READY_SECONDS = 900.0  # installing access in every workstation and operated node


def _serve(state: Any, box: list[Any]) -> Any:
    """``serve`` for the range (SSH on loopback, no host API listener), ready, with access installed."""
    from rangectl.access import credentials as creds
    from rangectl.access.server import ServeOptions, free_port_base, serve_in_thread

    creds.ensure_credentials(state, TEAMS)
    opts = ServeOptions(bind="", ssh_bind="127.0.0.1", ssh_base=free_port_base(TEAMS), watch_seconds=2)
    notes: list[str] = []
    thread, served = serve_in_thread(state, opts, note=notes.append)
    box.append((thread, served))
    if not served.ready.wait(SERVE_READY_SECONDS):
        raise RangeError(f"trainee access was not ready within {SERVE_READY_SECONDS:g}s")
    if served.error is not None:
        raise RangeError(f"trainee access did not start: {served.error}")
    if served.install is None or not served.install.ok:
        f = (served.install.failures[:1] if served.install else None) or [{"host": "-", "task": "-", "message": "?"}]
        raise RangeError(f"installing trainee access failed on {f[0]['host']} at '{f[0]['task']}': {f[0]['message']}")
    return served


def _stop_serve(box: list[Any]) -> None:
    while box:
        thread, served = box.pop()
        served.stop.set()
        thread.join(30)


def played_as_trainee(res: SelftestResult, store: Any, player: Any, served: Any) -> None:
    """The ``played-as-trainee`` check: every solution step took the trainee's path, as the record shows."""
    from rangectl import cmdlog

    events = store.events()
    team = player.team.team
    acted = [e for e in events if e.team == team and e.kind in ("submission", "hint", "report")]
    other = [e for e in acted if e.actor != f"team-{team}"]
    wanted = sum(1 for s in player.done if s["step"] in ("submit", "hint", "report"))
    problems = [f"{e.kind} seq {e.seq} by '{e.actor}', not the team API" for e in other[:3]]
    if len(acted) < wanted:
        problems.append(f"{wanted} answer/hint/report step(s) but {len(acted)} in the record")
    rec = getattr(served, "recording", None)
    if rec is None or rec.error is not None:
        problems.append(f"commands were not recorded ({rec.error if rec is not None else 'no recorder'})")
    else:
        sessions = {(r.node, r.cmd) for r in cmdlog.rows(events, team) if r.kind == "session"}  # sh -c CMD
        for s in player.done:
            if s["step"] == "exec" and (s["node"], s["run"]) not in sessions:
                problems.append(f"exec on {s['node']} is not in the command log as an SSH session: {s['run'][:60]}")
    execs = sum(1 for s in player.done if s["step"] == "exec")
    res.add(
        "played-as-trainee",
        not problems,
        "; ".join(problems[:3]) if problems else f"{wanted} API step(s) as team-{team}, {execs} exec(s) over ssh NODE",
    )


def _step_ok(step: dict[str, Any]) -> bool:
    if step["step"] == "exec":
        return bool(step["ok"])
    res = step.get("result")
    return not isinstance(res, dict) or bool(res.get("ok", True))


def _step_label(step: dict[str, Any]) -> str:
    if step["step"] == "exec":
        return f"exec on {step['node']} exited {step['exit']}: {step['output'].strip()[-120:]}"
    res = step.get("result") or {}
    return f"{step['step']} {step.get('objective', '')}: {res.get('message', '')}".strip()


def run_selftest(
    scenario_file: Path,
    *,
    time_scale: float | None = None,
    name: str | None = None,
    report_dir: Path | None = None,
    lang: str = "en",
    note: Callable[[str], None] | None = None,
    on_tick: Callable[[Any], None] | None = None,
    on_drill: Callable[[Any], None] | None = None,
    stop: threading.Event | None = None,
    trust_playbooks: bool = False,
    engine: str | None = None,
    provision: bool = True,
    as_trainee: bool = True,
) -> SelftestResult:
    """Run the self-test of one scenario on ``engine`` (default: the configured one). Never leaves
    a range behind. ``provision=False`` skips the playbooks (the in-memory test engine);
    ``as_trainee=False`` plays team 1 with the trainer's actions instead of over SSH."""
    from rangectl import ranges
    from rangectl.drill.runner import end_time
    from rangectl.drill.wiring import build_runner
    from rangectl.scenario.validate import load_scenario
    from rangectl.solution import SolutionPlayer, load_solution
    from rangectl.store import EventStore

    note = note or (lambda msg: None)
    t0 = time.monotonic()
    scenario = load_scenario(scenario_file)
    solution = load_solution(Path(scenario_file), scenario)
    drill_s = end_time(scenario)
    scale = time_scale or auto_time_scale(drill_s)
    rng = name or f"selftest-{scenario.name}"[:40]
    res = SelftestResult(scenario.name, str(scenario_file), rng, scale, expected_score=scenario.expected_score)
    served_box: list[Any] = []  # (thread, served) of the trainee path's `serve`
    served = None
    try:
        note(f"up: {rng} ({TEAMS} teams)")
        rep = ranges.up(
            Path(scenario_file), teams=TEAMS, name=rng, provision=provision, trust_playbooks=trust_playbooks,
            engine=engine,
        )
        res.add("range-up", True, f"{len(rep.up.created_containers)} containers in {rep.timings.get('total', 0):.1f}s")
        state = ranges.RangeState.open(rng)
        be = backends.for_range(state)
        plan = state.plan()
        runner = build_runner(state, be, on_tick=on_tick)
        if as_trainee:
            note("serve: trainee access (install, SSH, operated nodes, command recording)")
            served = _serve(state, served_box)
            trainee = TraineePath(state, 1, workstation_node(scenario))
            player = SolutionPlayer(solution, plan.team(1), trainee.actions())
        else:
            player = SolutionPlayer(solution, plan.team(1), _actions(state, be, lang))
        note(f"drill: {drill_s:.0f}s of drill time at x{scale:g}")
        runner.start(scale)
        if on_drill:
            on_drill(state)
        halt = stop or threading.Event()
        thread = threading.Thread(target=runner.run, args=(halt,), name="selftest-drill", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                player.play_due(runner.clock.drill_t())
                thread.join(0.1)
        except BaseException:
            halt.set()
            thread.join(30)
            raise
        if halt.is_set():
            raise RangeError("self-test stopped before the drill finished")
        # steps due after the timeline ended (late reports) still count as the solution's
        if not player.finished:
            player.play_due(float("inf"))
        if as_trainee:
            _stop_serve(served_box)  # flushes the command recorder
            played_as_trainee(res, EventStore(state.db_path), player, served)
        _assess(res, state, scenario, plan, player, EventStore(state.db_path))
        if report_dir is not None:
            from rangectl.report import write_report

            write_report(state, report_dir, lang=lang)
            res.report_dir = str(report_dir)
    except EnvironmentProblem:
        # the engine is down, an image or a tool is missing: no verdict on the scenario, so it
        # is raised (one line, exit 3) instead of becoming a failed result; `finally` still
        # takes down whatever was made
        raise
    except RangeError as exc:
        res.error = exc.message if hasattr(exc, "message") else str(exc)
    finally:
        _stop_serve(served_box)
        note(f"down: {rng}")
        try:
            st = ranges.RangeState(rng)
            held_by = backends.for_range(st) if st.exists() else backends.get(engine)
            ranges.down(rng)
            left = held_by.nodes(rng)
            res.add("range-down", not left, f"{len(left)} container(s) left" if left else "nothing left")
        except Exception as exc:  # noqa: BLE001 - reported as a failed assertion
            res.add("range-down", False, f"down failed: {exc}")
        res.seconds = time.monotonic() - t0
    return res


def _assess(res: SelftestResult, state: Any, scenario: Any, plan: Any, player: Any, store: Any) -> None:
    from rangectl.drill.runner import progress_from_events
    from rangectl.scoring.actions import board

    events = list(store.events())
    teams = [t.team for t in plan.teams]
    done = progress_from_events(events).done  # the timeline's runs, as the runner reads them
    missing = [f"{i.id}/team {k}" for i in scenario.injects for k in teams if (i.id, k) not in done]
    failed = [
        f"{i}/team {k}: {d.get('error', d.get('status'))}" for (i, k), d in done.items() if d.get("status") != "ok"
    ]
    res.add(
        "injects-ran",
        not missing and not failed,
        "; ".join(missing[:3] + failed[:3]) or f"{len(done)} inject runs, all ok",
    )
    unseen = []
    counted = 0
    for inj in scenario.injects:
        if inj.traffic is None:
            continue
        for k in teams:
            d = done.get((inj.id, k)) or {}
            n = traffic_seen(d)
            counted += n
            if n <= 0:
                unseen.append(f"{inj.id}/team {k}")
    res.add(
        "traffic-seen",
        not unseen,
        f"not seen on target: {', '.join(unseen[:4])}" if unseen else f"{counted} packets seen on targets",
    )
    bad_steps = [s for s in player.done if not _step_ok(s)]
    res.add(
        "solution-steps",
        player.finished and not bad_steps,
        _step_label(bad_steps[0]) if bad_steps else f"{len(player.done)} steps, all accepted",
    )
    b = board(state)
    by_team = {t.team: t for t in b.teams}
    res.scores = {k: round(by_team[k].total, 1) for k in teams}
    res.objectives = {
        k: {
            oid: {"points": r.points, "max_points": r.max_points, "solved": r.solved, "minutes": r.minutes}
            for oid, r in by_team[k].detail.items()
        }
        for k in teams
    }
    res.availability_up = {k: by_team[k].availability_up for k in teams}
    t1, t2 = by_team[1], by_team[2]
    unsolved = [oid for oid, r in t1.detail.items() if not r.solved]
    res.add(
        "team1-objectives",
        not unsolved,
        f"not earned: {', '.join(unsolved)}" if unsolved else f"all {len(t1.detail)} objectives earned",
    )
    exp = scenario.expected_score
    res.add(
        "team1-score",
        exp is None or t1.total >= exp,
        f"{t1.total:.1f} (expected at least {exp})" if exp is not None else f"{t1.total:.1f} (no expected_score set)",
    )
    free = [oid for oid, r in t2.detail.items() if r.solved]
    res.add(
        "team2-idle",
        not free,
        f"earned without doing anything: {', '.join(free)}" if free else f"{t2.total:.1f} (availability only)",
    )
    idle_bound(res, t1, t2, board_policy(state), scenario.scoring.idle_share_max)
    v = store.verify()
    res.add("verify", v.ok, f"{v.count} events, chain intact" if v.ok else f"broken at seq {v.first_bad_seq}: {v.reason}")


def board_policy(state: Any) -> Any:
    from rangectl.scoring.actions import context

    return context(state).policy


def idle_bound(res: SelftestResult, ref: Any, idle: Any, policy: Any, scenario_bound: float | None = None) -> None:
    """``idle-bound``: the idle team ends at most ``idle_share_max`` of the reference team's total
    (the scenario's ``scoring.idle_share_max``, else the policy's; not checked when neither sets
    one). The detail says where the idle team's points came from, so a scenario whose attacks do
    not hurt is told why it fails."""
    bound = scenario_bound if scenario_bound is not None else policy.idle_share_max
    if bound is None:
        return
    share = idle.total / ref.total if ref.total > 0 else (0.0 if idle.total <= 0 else float("inf"))
    avail = idle.categories.get("availability", 0.0)
    rounds = f"{idle.availability_up}/{idle.availability_total} availability rounds up"
    detail = (
        f"idle team {idle.total:.1f} is {share:.0%} of the reference team's {ref.total:.1f} "
        f"(at most {bound:.0%}); availability {avail:.1f} of it, {rounds}"
    )
    res.add("idle-bound", idle.total <= bound * ref.total, detail)


def junit(results: list[SelftestResult]) -> str:
    """JUnit XML: one testsuite per scenario, one testcase per assertion."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<testsuites>"]
    for r in results:
        cases = list(r.assertions)
        if r.error:
            cases.insert(0, Assertion("selftest", False, r.error))
        fails = sum(not a.ok for a in cases)
        out.append(
            f"  <testsuite name={quoteattr('selftest.' + r.scenario)} tests=\"{len(cases)}\" "
            f"failures=\"{fails}\" time=\"{r.seconds:.1f}\">"
        )
        for a in cases:
            head = f"    <testcase classname={quoteattr('selftest.' + r.scenario)} name={quoteattr(a.name)}"
            if a.ok:
                out.append(f"{head}><system-out>{escape(a.detail)}</system-out></testcase>")
            else:
                out.append(f"{head}><failure message={quoteattr(a.detail[:500])}>{escape(a.detail)}</failure></testcase>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out) + "\n"
