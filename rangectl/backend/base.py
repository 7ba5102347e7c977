"""The backend contract: what a range needs from an engine, in rangectl's own terms.

Everything above the backend layer (ranges, the drill, traffic injects, team access,
the self-test, the CLI) talks to an engine only through :class:`Backend` and the
execution seam it hands out (:attr:`Backend.nodes_exec`, :mod:`rangectl.backend.nodeexec`).
Results are the dataclasses below, never an engine's own dicts. A backend is picked by
name through :mod:`rangectl.backend` (``get``/``register``); docs/architecture.md has the
recipe for adding one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rangectl.plan import NodePlan, Plan, TeamPlan
from rangectl.scenario.model import Scenario

if TYPE_CHECKING:  # the seam's types, for annotations only
    from rangectl.backend.nodeexec import NodeExec

Progress = Callable[[str, str], None]  # (phase, item) -> None
#: (team, node) -> (image to create it from, tar of files to put in before it starts), or None: how
#: ``apply`` starts a node from a stamp (rangectl.backend.stamp) instead of its image
StampFor = Callable[[TeamPlan, NodePlan], "tuple[str, bytes] | None"]


@dataclass(frozen=True)
class NodeRef:
    """One team's copy of one scenario node (or of rangectl's probe) in one range."""

    range: str
    team: int
    node: str

    def __str__(self) -> str:
        return f"node '{self.node}' of team {self.team} of range '{self.range}'"


@dataclass(frozen=True)
class NodeInfo:
    """A node as the engine has it now."""

    range: str
    team: int
    node: str
    role: str | None
    name: str  # the engine's name for it (rc-<range>.t<team>.<node>)
    id: str  # the engine's id (stable until the node is re-created)
    state: str  # running | exited | created | restarting | paused | dead
    image: str
    addresses: dict[str, str] = field(default_factory=dict)  # scenario network -> IPv4 address
    engine: str = "local"  # which engine holds it

    @property
    def ref(self) -> NodeRef:
        return NodeRef(self.range, self.team, self.node)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def as_dict(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "node": self.node,
            "role": self.role,
            "container": self.name,
            "state": self.state,
            "image": self.image,
            "addresses": dict(self.addresses),
            "engine": self.engine,
        }


@dataclass(frozen=True)
class NetworkInfo:
    range: str
    team: int
    network: str  # the scenario's network name
    name: str  # the engine's name for it
    id: str
    subnet: str


@dataclass
class RangeSummary:
    """What an engine holds of one range (found by labels, whatever the state folder says)."""

    name: str
    containers: int = 0
    running: int = 0
    networks: int = 0
    teams: set[int] = field(default_factory=set)


@dataclass
class UpResult:
    created_networks: list[str] = field(default_factory=list)
    created_containers: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    stamped: list[tuple[int, str]] = field(default_factory=list)  # (team, node) created from a stamp
    seconds: float = 0.0


@dataclass
class ExecStream:
    """A running command's output as it comes: iterate for ``(stream, bytes)`` with stream 1
    (stdout) or 2 (stderr); :attr:`code` is the exit status once the iteration ended."""

    chunks: Iterator[tuple[int, bytes]]
    _code: Callable[[], int]

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return iter(self.chunks)

    @property
    def code(self) -> int:
        return self._code()


class Backend(ABC):
    """One engine (or cluster) that ranges live on. See the module doc."""

    #: the registry name (``--engine``, ``RANGECTL_ENGINE``)
    name: str = ""

    # -- lifecycle ----------------------------------------------------------------------------
    @abstractmethod
    def check_free(self, range_name: str, plan: Plan) -> None:
        """Refuse (RangeError naming the clash) names or subnets taken by something not this range's."""

    @abstractmethod
    def ensure_images(self, images: list[str], on_progress: Callable[..., None] | None = None) -> dict[str, str]:
        """Make the node images the scenario needs available; return {image name: engine reference}."""

    @abstractmethod
    def apply(
        self,
        range_name: str,
        scenario: Scenario,
        plan: Plan,
        images: dict[str, str],
        progress: Progress | None = None,
        stamps: StampFor | None = None,
    ) -> UpResult:
        """Create (or adopt and start) every network and node of ``plan``; idempotent. ``stamps``
        starts a new node from a stamp with the team's files in it."""

    def make_stamps(
        self,
        range_name: str,
        scenario: Scenario,
        plan: Plan,
        images: dict[str, str],
        scenario_file: Any,
        trust_playbooks: bool = False,
        note: Callable[[str, str, str], None] | None = None,
        workdir: Any = None,
        sample: bool = True,
    ) -> dict[str, Any]:
        """Provision once per node for every team (``{node: verdict}``, rangectl.backend.stamp); an
        engine that cannot stamp returns {} and every node is provisioned by Ansible."""
        return {}

    @abstractmethod
    def remove(self, range_name: str | None, progress: Progress | None = None) -> tuple[int, int]:
        """Remove exactly the range (every range when None): (containers, networks) removed."""

    @abstractmethod
    def reset(
        self, ref: NodeRef, scenario: Scenario, plan: Plan, images: dict[str, str], progress: Progress | None = None
    ) -> NodeInfo:
        """Re-create one node from its image with the same addresses and routes."""

    # -- inspection -----------------------------------------------------------------------------
    @abstractmethod
    def ranges(self) -> dict[str, RangeSummary]:
        """Every range the engine holds resources of."""

    @abstractmethod
    def nodes(self, range_name: str) -> list[NodeInfo]:
        """The range's nodes, sorted by (team, node)."""

    @abstractmethod
    def networks(self, range_name: str) -> list[NetworkInfo]:
        """The range's networks."""

    @abstractmethod
    def node(self, ref: NodeRef) -> NodeInfo:
        """The node, whatever its state (rangectl.errors.NotFound when the range has no such node)."""

    def running(self, ref: NodeRef) -> NodeInfo:
        """The node, which must be running (RangeError naming its state otherwise)."""
        from rangectl.errors import NotRunning

        info = self.node(ref)
        if not info.running:
            raise NotRunning(
                f"node '{ref.node}' of team {ref.team} is not running ({info.state})",
                fix="run `rangectl up` again to restart it",
            )
        return info

    # -- work inside nodes --------------------------------------------------------------------
    @abstractmethod
    def exec(self, ref: NodeRef, argv: list[str], timeout: float | None = None) -> tuple[int, str]:
        """Run ``argv`` in the running node: (exit code, stdout+stderr). ``timeout`` is an absolute
        deadline in seconds enforced outside the node (code 124 when it kills the command)."""

    @abstractmethod
    def exec_stream(self, ref: NodeRef, argv: list[str]) -> ExecStream:
        """Run ``argv`` in the running node, streaming its output (``rangectl exec``)."""

    @abstractmethod
    def logs(self, ref: NodeRef, follow: bool = False, tail: int = 200) -> Iterator[bytes]:
        """The node's log (its main process's output)."""

    @abstractmethod
    def copy_in(self, ref: NodeRef, directory: str, files: dict[str, bytes], mode: int = 0o644) -> None:
        """Write ``files`` ({name: content}) into ``directory`` of the running node (root-owned)."""

    @abstractmethod
    def shell_argv(self, ref: NodeRef) -> list[str]:
        """The argv of an interactive login shell in the running node, for this host's terminal."""

    def capture_interfaces(self, range_name: str, team: int) -> dict[str, str]:
        """Scenario network -> the host interface where one team's traffic on it can be captured
        (``tcpdump -i``; rangectl.drill.capture). An engine whose networks the host cannot see says so."""
        from rangectl.errors import RangeError

        raise RangeError(f"the {self.name} engine has no host interfaces to capture team {team}'s traffic on")

    def recording_agents(self, range_name: str) -> list[tuple[str, Any]]:
        """The engines holding ``range_name`` whose processes this machine's kernel does not show
        (so the command recorder here cannot see their nodes), each as (engine name, its agent:
        ``session(rangectl.access.agent_record.record, nodes=...)`` gives that engine's records). Empty (the default): every node runs on
        this machine's kernel."""
        return []

    def capture_stream(self, range_name: str, team: int, iface: str, snaplen: int) -> Any | None:
        """For an engine whose interfaces are on another machine: a stream (``recv``, ``shutdown``,
        ``close``) of the pcap bytes captured there on ``iface`` (one of :meth:`capture_interfaces`);
        ``shutdown(SHUT_WR)`` stops it, the rest then comes. None (the default): ``iface`` is on
        this host and the capture runs here."""
        return None

    @abstractmethod
    def ansible_host(self, ref: NodeRef) -> dict[str, str]:
        """Inventory variables that make Ansible reach the node (connection plugin and address)."""

    @property
    @abstractmethod
    def nodes_exec(self) -> NodeExec:
        """The execution seam: jobs, listeners and sockets inside a node's network namespace."""
