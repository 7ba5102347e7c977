"""Resets teams ask for themselves: ``respond reset NODE`` (docs/access.md, "Resetting a node").

A scenario lets a team re-create some of its own nodes (``reset: [NODE...]`` on the blue node)
when it has broken them beyond repair; each reset costs the team the policy's ``reset_cost``
points. The team API (``POST /teams/me/nodes/NODE/reset``) records the request and its cost
(``node.reset.request``, and a ``score`` event with the negative points, category
``adjustments``) and then re-creates the node on a thread, with the same function as
``rangectl reset`` (it is handed in by the CLI: this layer does not reach up to the range
lifecycle), and records ``node.reset`` (or ``node.reset.failed``) as the team. One reset of a
node at a time per team, and not again within :data:`COOLDOWN_SECONDS`. The drill carries on:
checks and availability probes reach the new container; operator access to it is installed
again by ``serve``'s watcher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rangectl.access.refusals import actor
from rangectl.scoring.incremental import drill_clock
from rangectl.state import RangeState
from rangectl.store import EventStore

log = logging.getLogger("rangectl.access.resets")

COOLDOWN_SECONDS = 60.0  # a team's reset of a node is refused this long after its last one started

ResetFn = Callable[[str, int], dict[str, Any]]  # (node, team) -> what rangectl.ranges.reset_node returns


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class TeamResets:
    """The resets a ``serve`` runs for teams; thread-safe."""

    def __init__(self, state: RangeState, reset_fn: ResetFn | None, clock: Callable[[], float] = time.monotonic):
        self.state = state
        self.reset_fn = reset_fn
        self.clock = clock
        self._lock = threading.Lock()
        self._running: set[tuple[int, str]] = set()
        self._last: dict[tuple[int, str], float] = {}
        self.threads: list[threading.Thread] = []

    def allowed(self) -> list[str]:
        sc = self.state.scenario()
        return [n for spec in sc.nodes.values() if spec.role == "blue" for n in spec.reset]

    def request(self, team: int, node: str, cost: float) -> dict[str, Any]:
        """Accept (and start) one team's reset of ``node``, or raise :class:`Refused` (nothing recorded)."""
        if self.reset_fn is None:
            raise Refused(404, "this drill does not let teams reset nodes")
        if node not in self.allowed():
            raise Refused(404, f"the scenario does not let teams reset '{node}'")
        key = (team, node)
        with self._lock:
            if key in self._running:
                raise Refused(409, f"a reset of '{node}' is already under way")
            last = self._last.get(key)
            if last is not None and self.clock() - last < COOLDOWN_SECONDS:
                wait = int(COOLDOWN_SECONDS - (self.clock() - last)) + 1
                raise Refused(409, f"'{node}' was reset less than {COOLDOWN_SECONDS:g}s ago; try again in {wait}s")
            self._running.add(key)
            self._last[key] = self.clock()
        try:
            with EventStore(self.state.db_path) as store:
                t = round(drill_clock(store).drill_t(time.time()), 2)
                req = store.append_many([
                    {"kind": "node.reset.request", "data": {"node": node, "cost": cost, "drill_t": t},
                     "team": team, "actor": actor(team)},
                    {"kind": "score", "data": {"points": -float(cost), "reason": f"reset of {node} (asked by the team)",
                     "category": "adjustments", "drill_t": t}, "team": team, "actor": actor(team)},
                ])[0]  # fmt: skip
        except BaseException:
            with self._lock:
                self._running.discard(key)
            raise
        th = threading.Thread(target=self._run, args=(team, node), name=f"rangectl-reset-t{team}-{node}", daemon=True)
        self.threads.append(th)
        th.start()
        return {"team": team, "node": node, "accepted": True, "cost": cost, "drill_t": t, "seq": req.seq,
                "message": f"'{node}' is being re-created from its image and playbooks (about a minute); "
                           f"{cost:g} point(s) off"}  # fmt: skip

    def _run(self, team: int, node: str) -> None:
        assert self.reset_fn is not None
        try:
            res = self.reset_fn(node, team)
            kind, data = "node.reset", {"node": node, "container": res.get("container"),
                                        "provisioned": res.get("provisioned"), "asked_by_team": True}  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - recorded; the team may ask again after the cooldown
            log.warning("team %s reset of %s failed: %s", team, node, exc)
            kind, data = "node.reset.failed", {"node": node, "error": str(getattr(exc, "message", exc))[:300]}
        finally:
            with self._lock:
                self._running.discard((team, node))
        try:
            with EventStore(self.state.db_path) as store:
                data["drill_t"] = round(drill_clock(store).drill_t(time.time()), 2)
                store.append(kind, data, team=team, actor=actor(team))
        except Exception:  # noqa: BLE001
            log.exception("recording the reset of %s for team %s", node, team)

    def wait(self, timeout: float = 600.0) -> None:
        for th in list(self.threads):
            th.join(timeout)
