"""Wiring of the command recorder into ``rangectl serve``: which container is which node, and the record.

:mod:`rangectl.access.recorder` follows trainee sessions through the kernel's process
events; this module tells it which host processes belong to this range (container id ->
team and node, from the backend's node list, refreshed when an unknown container shows up
and every few seconds) and appends what it returns to the range's event store, with the
drill time of each record (docs/access.md, "Every command recorded").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rangectl.access.recorder import Record, Recorder, container_id_of
from rangectl.backend.base import Backend
from rangectl.errors import RangeError
from rangectl.scoring.engine import DrillClock
from rangectl.scoring.incremental import DRILL_KINDS
from rangectl.state import RangeState
from rangectl.store import EventStore

log = logging.getLogger("rangectl.access.recording")

REFRESH_SECONDS = 5.0  # the node map is read again at most this often (sooner for an unknown container)
UNKNOWN_REFRESH_SECONDS = 1.0


class NodeMap:
    """Container id -> (team, node) for one range, from the backend."""

    def __init__(self, range_name: str, backend: Backend, clock: Callable[[], float] = time.monotonic):
        self.range = range_name
        self.backend = backend
        self.clock = clock
        self._ids: dict[str, tuple[int, str]] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def refresh(self) -> None:
        try:
            nodes = self.backend.nodes(self.range)
        except Exception as exc:  # noqa: BLE001 - the engine is busy; keep the last map
            log.warning("recorder: cannot list the range's nodes: %s", exc)
            return
        finally:
            self._read_at = self.clock()
        self._ids = {n.id: (n.team, n.node) for n in nodes if n.id}

    def lookup(self, cid: str) -> tuple[int, str] | None:
        hit = self._ids.get(cid)
        if hit is not None:
            return hit
        with self._lock:
            age = self.clock() - self._read_at
            if age >= UNKNOWN_REFRESH_SECONDS:
                self.refresh()
        return self._ids.get(cid)

    def where(self, pid: int) -> tuple[int, str] | None:
        """(team, node) of host process ``pid`` when it runs in one of this range's nodes."""
        cid = container_id_of(pid)
        if cid is None:
            return None
        if self.clock() - self._read_at >= REFRESH_SECONDS:
            with self._lock:
                self.refresh()
        return self.lookup(cid)


def store_sink(state: RangeState) -> Callable[[list[Record]], None]:
    """Append records to the range's store (one transaction a batch), with each one's drill time."""

    def sink(records: list[Record]) -> None:
        with EventStore(state.db_path) as store:
            clock = DrillClock.from_events(store.events(kind=DRILL_KINDS))
            items = []
            for r in records:
                data: dict[str, Any] = r.as_data()
                for k in ("kind", "ts", "team"):
                    data.pop(k, None)
                if clock.start_ts is not None:
                    data["drill_t"] = round(clock.drill_t(r.ts), 2)
                items.append({"kind": r.kind, "data": data, "team": r.team, "actor": "recorder", "ts": r.ts})
            store.append_many(items)

    return sink


class Recording:
    """The recorder of one ``serve``: a daemon thread; :meth:`close` stops it and flushes what it holds."""

    def __init__(self, state: RangeState, backend: Backend, note: Callable[[str], None]):
        self.nodes = NodeMap(state.name, backend)
        self.recorder = Recorder(self.nodes.where, store_sink(state))
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.note = note
        self.thread = threading.Thread(target=self._run, name=f"rangectl-recorder-{state.name}", daemon=True)

    def start(self) -> None:
        self.nodes.refresh()
        self.thread.start()

    def _run(self) -> None:
        try:
            self.recorder.run(self.stop)
        except RangeError as exc:
            self.error = exc
            self.note(f"commands are NOT recorded: {exc}")
        except Exception as exc:  # noqa: BLE001 - say so; serving goes on
            self.error = exc
            log.exception("recorder stopped")
            self.note(f"the command recorder stopped: {exc}")

    def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
