"""Connect the drill runner to a real range: traffic, messages and probes per team."""

from __future__ import annotations

from typing import Any

from rangectl.backend.docker import DockerBackend
from rangectl.drill.checks import Vantage, availability_probe, run_check
from rangectl.drill.runner import DrillRunner
from rangectl.drill.store import EventStore
from rangectl.plan import Plan
from rangectl.scenario.model import Inject, Scenario
from rangectl.state import RangeState


class RangeProbes:
    """Per-team vantages onto a running range (netns paths and exec), from the Docker backend."""

    def __init__(self, state: RangeState, plan: Plan, backend: DockerBackend):
        self.state = state
        self.plan = plan
        self.backend = backend

    def vantage(self, team: int) -> Vantage:
        rng = self.state.name

        def netns_of(node: str) -> str:
            return f"/proc/{self.backend.running_pid(rng, node, team)}/ns/net"

        def exec_in(node: str, argv: list[str], timeout: float) -> tuple[int, str]:
            return self.backend.exec(rng, node, team, argv, timeout=timeout)

        return Vantage(self.plan.team(team), netns_of, exec_in)


def message_text(inj: Inject) -> dict[str, str]:
    msg = inj.message
    if isinstance(msg, str):
        return {"en": msg}
    return dict(msg or {})


def record_message(
    store: EventStore, inj: Inject, team: int, drill_t: float, actor: str = "runner", manual: bool = False
):
    """Deliver a message inject to one team: a `message` event with every language of its text."""
    data = {
        "inject": inj.id,
        "title": inj.title if inj.title else inj.id,  # every language: readers pick theirs
        "text": message_text(inj),
        "drill_t": drill_t,
    }
    if manual:
        data["manual"] = True
    return store.append("message", data, team=team, actor=actor)


def build_runner(state: RangeState, backend: DockerBackend, on_tick=None) -> DrillRunner:
    scenario: Scenario = state.scenario()
    plan = state.plan()
    store = EventStore(state.db_path)
    probes = RangeProbes(state, plan, backend)

    def run_inject(team: int, inj: Inject, drill_t: float) -> dict[str, Any]:
        if inj.message is not None:
            record_message(store, inj, team, drill_t)
            return {"message": True}
        from rangectl.inject import run_traffic_inject

        return run_traffic_inject(state, scenario, plan, backend, team, inj)

    def check(team: int, obj: Any) -> dict[str, Any]:
        return run_check(scenario, obj.check, probes.vantage(team)).as_dict()

    def avail(team: int, av: Any) -> dict[str, Any]:
        return availability_probe(scenario, av, probes.vantage(team)).as_dict()

    return DrillRunner(scenario, plan, store, run_inject, check, avail, on_tick=on_tick)
