"""Connect the drill runner to a real range: traffic, messages and probes per team."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from rangectl.backend.base import Backend, NodeRef
from rangectl.backend.nodeexec import Job
from rangectl.drill.capture import Captures
from rangectl.drill.checks import Vantage, availability_probe, run_check
from rangectl.drill.inject import run_traffic_inject
from rangectl.drill.runner import DrillRunner
from rangectl.errors import NotFound as RangeNotFound
from rangectl.plan import Plan
from rangectl.scenario.model import Inject, Scenario
from rangectl.scenario.vantage import PROBE
from rangectl.scenario.variables import substitute_all
from rangectl.state import RangeState
from rangectl.store import EventStore

M = TypeVar("M", bound=BaseModel)


class RangeProbes:
    """Per-team vantages onto a running range: probe jobs and execs through the backend's seam.

    Network probes run in the team's probe node (:data:`rangectl.plan.PROBE`) unless the
    scenario names another vantage that trainees do not control (docs/scoring.md)."""

    def __init__(self, state: RangeState, plan: Plan, backend: Backend):
        self.state = state
        self.plan = plan
        self.backend = backend

    def vantage(self, team: int) -> Vantage:
        rng = self.state.name

        def run_in(node: str, job: Job) -> Any:
            try:
                return self.backend.nodes_exec.run(NodeRef(rng, team, node), job)
            except RangeNotFound:
                if node != PROBE:
                    raise
                raise RangeNotFound(
                    f"range '{rng}' has no probe node for team {team} (made before probes had their own node)",
                    fix=f"run `rangectl up` for range '{rng}' again to add it",
                ) from None

        def exec_in(node: str, argv: list[str], timeout: float) -> tuple[int, str]:
            return self.backend.exec(NodeRef(rng, team, node), argv, timeout=timeout)

        return Vantage(self.plan.team(team), run_in, exec_in)


def for_team(spec: M, values: Mapping[str, str]) -> M:
    """A check's or availability probe's spec with the team's ``{var:NAME}`` values in its strings."""
    if not values:
        return spec
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    filled = substitute_all(data, values)
    return spec if filled == data else type(spec).model_validate(filled)


def message_text(inj: Inject) -> dict[str, str]:
    msg = inj.message
    if isinstance(msg, str):
        return {"en": msg}
    return dict(msg or {})


def record_message(
    store: EventStore,
    inj: Inject,
    team: int,
    drill_t: float,
    actor: str = "runner",
    manual: bool = False,
    values: Mapping[str, str] | None = None,
):
    """Deliver a message inject to one team: a `message` event with every language of its text,
    with the team's own ``{var:NAME}`` values in it."""
    data = {
        "inject": inj.id,
        "title": substitute_all(inj.title if inj.title else inj.id, values or {}),  # every language
        "text": substitute_all(message_text(inj), values or {}),
        "drill_t": drill_t,
    }
    if manual:
        data["manual"] = True
    return store.append("message", data, team=team, actor=actor)


def build_runner(state: RangeState, backend: Backend, on_tick=None, capture: bool = True) -> DrillRunner:
    scenario: Scenario = state.scenario()
    plan = state.plan()
    store = EventStore(state.db_path)
    probes = RangeProbes(state, plan, backend)

    def run_inject(team: int, inj: Inject, drill_t: float) -> dict[str, Any]:
        if inj.message is not None:
            record_message(store, inj, team, drill_t, values=plan.team(team).values)
            return {"message": True}
        # `duration` of traffic is drill time: scaled by the drill clock's speed
        return run_traffic_inject(state, scenario, plan, backend, team, inj, time_scale=runner.clock.scale)

    def check(team: int, obj: Any) -> dict[str, Any]:
        spec = for_team(obj.check, plan.team(team).values)
        return run_check(scenario, spec, probes.vantage(team)).as_dict()

    def avail(team: int, av: Any) -> dict[str, Any]:
        return availability_probe(scenario, for_team(av, plan.team(team).values), probes.vantage(team)).as_dict()

    runner = DrillRunner(scenario, plan, store, run_inject, check, avail, on_tick=on_tick)
    if capture:
        runner.captures = Captures(state, backend, [t.team for t in plan.teams])
    return runner
