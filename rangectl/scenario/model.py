"""The scenario file format, version 1, as pydantic models.

These models are the schema (``rangectl schema`` prints their JSON Schema).
They check shape and types only; cross-references and meaning are checked
in :mod:`rangectl.scenario.validate`. Nothing here touches Docker.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from rangectl.scenario.durations import DURATION_PATTERN, parse_duration
from rangectl.scenario.variables import VAR_NAME, Variable

FORMAT_VERSION = 1
LANGS = ("en", "vi")

SLUG = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
NAME = r"^[a-z0-9]([a-z0-9_-]{0,30}[a-z0-9])?$"

Slug = Annotated[str, Field(pattern=SLUG)]
Name = Annotated[str, Field(pattern=NAME)]
VarName = Annotated[str, Field(pattern=VAR_NAME)]
# only the node's own network namespace: Docker sets these per container, they never reach the host
SYSCTL = r"^net\.(ipv4|ipv6|core)\.[a-z0-9_]+(\.[a-z0-9_]+)*$"

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: 90s, 5m, 1h30m (or a number of seconds)",
        }
    ),
]


def _text(value: object) -> object:
    if isinstance(value, dict):
        if not value:
            raise ValueError("a per-language text needs at least one language")
        for k in value:
            if k not in LANGS:
                raise ValueError(f"unknown language '{k}' (use one of: {', '.join(LANGS)})")
    return value


Text = Annotated[
    str | dict[Literal["en", "vi"], str],
    BeforeValidator(_text),
    Field(description="A text, or one text per language: {en: ..., vi: ...}"),
]


def localize(text: str | dict[str, str] | None, lang: str = "en") -> str:
    """Pick the text for ``lang``, falling back to English, then to any language."""
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    return text.get(lang) or text.get("en") or next(iter(text.values()), "")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- networks and nodes ----------------------------------------------------


class Network(Strict):
    subnet: IPv4Network = Field(description="IPv4 CIDR, e.g. 10.20.3.0/24")
    description: Text | None = None

    @field_validator("subnet", mode="before")
    @classmethod
    def _strict_cidr(cls, v: object) -> object:
        if isinstance(v, str):
            try:
                IPv4Network(v, strict=True)
            except ValueError as exc:
                if "host bits set" in str(exc):
                    raise ValueError(f"'{v}' has host bits set; write the network address") from None
                raise ValueError(f"'{v}' is not an IPv4 CIDR like 10.20.3.0/24") from None
        return v


class Service(Strict):
    name: Name
    port: int = Field(ge=1, le=65535)
    proto: Literal["tcp", "udp"] = "tcp"


class Node(Strict):
    image: Name = Field(description="Image recipe under images/ (router, web, db, workstation, attacker, ...)")
    role: Literal["infra", "target", "blue", "red"]
    interfaces: dict[Name, IPv4Address] = Field(min_length=1, description="network -> IPv4 address")
    gateway: IPv4Address | None = Field(None, description="default route address (a router's interface)")
    forward: bool = Field(False, description="IP forwarding (routers)")
    services: list[Service] = Field(default_factory=list)
    provision: list[str] = Field(default_factory=list, description="playbook paths under playbooks/")
    env: dict[str, str] = Field(default_factory=dict)
    capabilities: list[Annotated[str, Field(pattern=r"^[A-Z_]+$")]] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict, description="extra Ansible host variables")
    sysctls: dict[Annotated[str, Field(pattern=SYSCTL)], str | int] = Field(
        default_factory=dict,
        description="network sysctls of the node's own namespace (net.ipv4.*, net.ipv6.*, net.core.*), "
        "e.g. an unprotected service: net.ipv4.tcp_syncookies: 0",
    )
    compromised: bool = Field(
        False,
        description="(red nodes) a team's own host under the attacker's control: attack traffic may start "
        "from it and its team may still operate it (`operate:`)",
    )
    operate: list[Name] = Field(
        default_factory=list,
        description="(blue nodes) the team's own nodes its trainees may operate from here: `ssh NODE`, "
        "`ssh NODE CMD` and `scp` reach the team's copy of each, and nothing else (docs/access.md)",
    )
    reset: list[Name] = Field(
        default_factory=list,
        description="(blue nodes) the team's own nodes it may re-create itself with `respond reset NODE`, "
        "at the policy's reset_cost (docs/access.md)",
    )
    description: Text | None = None

    @field_validator("sysctls", mode="after")
    @classmethod
    def _sysctl_strings(cls, v: dict[str, str | int]) -> dict[str, str]:
        return {k: str(x) for k, x in v.items()}

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, v: object) -> object:
        if isinstance(v, dict):
            return {k: (str(x).lower() if isinstance(x, bool) else str(x)) if x is not None else "" for k, x in v.items()}
        return v


# --- injects ---------------------------------------------------------------


class Traffic(BaseModel):
    """A traffic action. ``kind`` picks the generator; its own parameters sit beside it."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    kind: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]
    from_: Name = Field(alias="from", description="the red node the traffic originates from")
    target: Name | None = Field(None, description="the node the traffic is aimed at")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Inject(Strict):
    id: Slug
    title: Text | None = None
    at: Duration | None = Field(None, description="time from drill start")
    after: Slug | None = Field(None, description="id of the inject this one follows")
    delay: Duration = Field(0.0, description="wait after the `after` inject")
    traffic: Traffic | None = None
    message: Text | None = Field(None, description="a narrative inject shown to teams")

    @model_validator(mode="after")
    def _one_time_one_action(self) -> Inject:
        if self.at is not None and self.after is not None:
            raise ValueError("give either 'at' or 'after', not both")
        if self.at is None and self.after is None:
            raise ValueError("give a time: 'at: 5m' or 'after: <inject id>'")
        if self.at is not None and self.delay:
            raise ValueError("'delay' goes with 'after', not with 'at'")
        if (self.traffic is None) == (self.message is None):
            raise ValueError("give exactly one action: 'traffic' or 'message'")
        return self


# --- objectives --------------------------------------------------------------


class Answer(Strict):
    ip_of: Name | None = Field(None, description="the team's address of this node")
    value: str | int | float | None = None
    one_of: list[str | int | float] | None = None
    regex: str | None = None
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> Answer:
        given = [k for k in ("ip_of", "value", "one_of", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of: ip_of, value, one_of, regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from None
        return self


class FlowCheck(Strict):
    from_: Name = Field(alias="from")
    to: Name
    port: int | None = Field(None, ge=1, le=65535)
    proto: Literal["tcp", "udp", "icmp"] = "tcp"
    control: Name | None = Field(
        None,
        description="blocked: the node that must still reach `to`, so a block is not an outage "
        "(default: rangectl's probe 'probe', beside the first blue node; never a blue node)",
    )
    outage_ok: bool = Field(False, description="blocked: pass even when `to` is unreachable for everyone")

    @model_validator(mode="after")
    def _port_for_l4(self) -> FlowCheck:
        if self.proto in ("tcp", "udp") and self.port is None:
            raise ValueError(f"a {self.proto} check needs a port")
        return self


class HttpCheck(Strict):
    from_: Name = Field(alias="from")
    to: Name
    port: int = Field(80, ge=1, le=65535)
    path: str = "/"
    status: int = Field(200, ge=100, le=599)
    contains: str | None = None
    absent: str | None = Field(None, description="text that must not be in the body")


class DnsCheck(Strict):
    from_: Name = Field(alias="from")
    server: Name
    name: str
    type: Literal["A", "AAAA", "CNAME", "TXT", "MX"] = "A"
    expect: str | Answer | None = Field(None, description="expected answer; omitted: any answer")
    nxdomain: bool = Field(False, description="pass when the name does not resolve")


class FileCheck(Strict):
    node: Name
    path: str
    contains: str | None = None
    absent: str | None = None


class CommandCheck(Strict):
    node: Name
    run: str
    exit: int = 0


class Check(Strict):
    blocked: FlowCheck | None = None
    reachable: FlowCheck | None = None
    http: HttpCheck | None = None
    dns: DnsCheck | None = None
    file: FileCheck | None = None
    command: CommandCheck | None = None
    every: Duration = Field(15.0, description="how often the drill runs this check")
    hold: int | None = Field(
        None,
        ge=1,
        le=100,
        description="earned after this many consecutive passing probes while the guarded node's "
        "availability probes pass; undone later: revoked (docs/scoring.md, 'Containment that holds')",
    )
    guard: Name | None = Field(
        None, description="hold: the node whose availability must pass meanwhile (default: the check's target)"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Check:
        given = [k for k in ("blocked", "reachable", "http", "dns", "file", "command") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one check: blocked, reachable, http, dns, file or command")
        return self

    @property
    def kind(self) -> str:
        for k in ("blocked", "reachable", "http", "dns", "file", "command"):
            if getattr(self, k) is not None:
                return k
        raise AssertionError("unreachable")

    @property
    def spec(self) -> BaseModel:
        return getattr(self, self.kind)

    @property
    def target(self) -> str:
        """The node the check is about: ``to`` of a flow or http check, a dns check's server, else ``node``."""
        spec = self.spec
        for key in ("to", "server", "node"):
            if hasattr(spec, key):
                return getattr(spec, key)
        raise AssertionError("unreachable")

    @property
    def guarded(self) -> str:
        return self.guard or self.target


class ReportField(Strict):
    name: Name
    prompt: Text | None = None
    required: bool = True
    answer: Answer | None = Field(None, description="when set, the field is checked like an answer")


class Report(Strict):
    deadline: Duration = Field(description="time after the objective's inject by which the report is due")
    fields: list[ReportField] = Field(min_length=1)


class Hint(Strict):
    text: Text
    cost: int = Field(0, ge=0)


class Objective(Strict):
    id: Slug
    category: Slug
    points: int = Field(ge=0)
    title: Text | None = None
    prompt: Text | None = None
    after: Slug | None = Field(None, description="the inject this objective belongs to")
    answer: Answer | None = None
    check: Check | None = None
    report: Report | None = None
    hints: list[Hint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _exactly_one(self) -> Objective:
        given = [k for k in ("answer", "check", "report") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of: answer, check, report")
        return self

    @property
    def kind(self) -> str:
        return "answer" if self.answer else "check" if self.check else "report"


class Availability(Strict):
    node: Name
    service: Name
    probe: Literal["tcp", "http", "udp"] | None = Field(
        None, description="default: http for a service named http/https, else tcp connect"
    )
    path: str = "/"
    from_: Name | None = Field(None, alias="from", description="node the probe runs from (default: rangectl's probe 'probe', beside the first blue node; never a blue node)")
    points: int = Field(ge=0)
    every: Duration = 30.0
    timeout: Duration = 3.0
    status: list[Annotated[int, Field(ge=100, le=599)]] | None = Field(
        None, description="http: the statuses that count as up (default: any below 500)"
    )
    contains: str | None = Field(None, min_length=1, description="http: the body must contain this text")
    absent: str | None = Field(None, min_length=1, description="http: the body must not contain this text")


class Scoring(Strict):
    policy: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] = "standard"
    idle_share_max: float | None = Field(
        None, ge=0, le=1, description="self-test bound for this scenario (overrides the policy's idle_share_max)"
    )


class Scenario(Strict):
    """One drill: its networks, nodes, timeline, objectives and scoring."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"title": "rangectl scenario, format 1"},
    )

    rangectl: Literal[1] = Field(description="format version")
    name: Slug
    title: Text
    description: Text = ""
    briefing: Text | None = Field(None, description="what teams read at the start")
    level: int | None = Field(None, ge=1, le=5, description="information-system security level 1-5")
    duration: Duration | None = None
    tags: list[str] = Field(default_factory=list)
    expected_score: int | None = Field(None, ge=0, description="score the reference solution must reach")
    networks: dict[Name, Network] = Field(min_length=1)
    nodes: dict[Name, Node] = Field(min_length=1)
    injects: list[Inject] = Field(default_factory=list)
    objectives: list[Objective] = Field(default_factory=list)
    availability: list[Availability] = Field(default_factory=list)
    scoring: Scoring = Field(default_factory=Scoring)
    variables: dict[VarName, Variable] = Field(
        default_factory=dict,
        description="per-team values drawn from the range's seed, used as {var:NAME} (docs/scenario-format.md)",
    )

    def inject(self, inject_id: str) -> Inject:
        for inj in self.injects:
            if inj.id == inject_id:
                return inj
        raise KeyError(inject_id)

    def objective(self, objective_id: str) -> Objective:
        for obj in self.objectives:
            if obj.id == objective_id:
                return obj
        raise KeyError(objective_id)

    def nodes_with_role(self, role: str) -> list[str]:
        return [n for n, node in self.nodes.items() if node.role == role]
