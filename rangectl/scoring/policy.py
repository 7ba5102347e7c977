"""Scoring policy files: ``scoring/NAME.yaml``, chosen by a scenario's ``scoring.policy``.

A policy holds every number the scoring engine uses; see ``scoring/standard.yaml``
and docs/scoring.md. Bad policies fail with one line: ``FILE:LINE:COL: field: message``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rangectl.errors import ScenarioError
from rangectl.scenario.loader import dotted, locate, read_small_yaml

MAX_BYTES = 100_000

Category = str


class Policy(BaseModel):
    """A scoring policy. Defaults are the standard policy's numbers."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal[1] = Field(1, description="policy format version")
    name: str = Field("standard", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    half_life_minutes: float | None = Field(
        30.0, gt=0, description="drill minutes after which an award halves; null: no decay"
    )
    floor: float = Field(0.25, ge=0, le=1, description="the decay factor never drops below this")
    wrong_answer_penalty: float = Field(
        10.0, ge=0, description="points off per wrong answer before the correct one"
    )
    max_attempts: int | None = Field(
        5, ge=1, description="submissions per objective and team; null: no limit"
    )
    hint_cost_factor: float = Field(1.0, ge=0, description="multiplies each hint's own cost")
    reset_cost: float = Field(
        50.0, ge=0, description="points off each time a team re-creates one of its nodes itself (respond reset NODE)"
    )
    late_report_factor: float = Field(0.5, ge=0, le=1, description="share of the award a late report earns")
    report_answers: Literal["fraction", "all"] = Field(
        "fraction", description="report fields with an answer: share right (fraction) or all-or-nothing (all)"
    )
    weights: dict[Category, float] = Field(
        default_factory=dict, description="category -> multiplier (default 1.0)"
    )
    flag_fast_seconds: float | None = Field(
        None,
        ge=0,
        description="flag a correct answer given less than this many drill seconds after its objective "
        "opened (submission.flagged, reason 'fast'; points are kept); null: never",
    )
    idle_share_max: float | None = Field(
        None,
        ge=0,
        le=1,
        description="self-test bound: the idle team's total at most this share of the reference team's; "
        "null: not checked",
    )
    detect_categories: list[Category] = Field(default_factory=lambda: ["detection"])
    contain_categories: list[Category] = Field(default_factory=lambda: ["containment"])

    def weight(self, category: str) -> float:
        return float(self.weights.get(category, 1.0))

    def decay(self, minutes: float) -> float:
        """The time factor for an award earned ``minutes`` after its inject."""
        if self.half_life_minutes is None:
            return 1.0
        return max(self.floor, 0.5 ** (max(0.0, minutes) / self.half_life_minutes))


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for t in (str, int, float):
        if isinstance(node, t):
            return t(node)
    return node


def _message(err: dict[str, Any]) -> str:
    typ = err.get("type", "")
    if typ == "extra_forbidden":
        return "unknown field"
    if typ == "missing":
        return "required field is missing"
    msg = str(err.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg.replace("Input should be", "must be")


def parse_policy(path: Path) -> Policy:
    """Read and check one policy file; ScenarioError ``FILE:LINE:COL: field: message`` when bad."""
    name = str(path)

    def fail(msg: str, line: int = 1, col: int = 1, field: str = "") -> ScenarioError:
        where = f"{name}:{line}:{col}"
        return ScenarioError(f"{where}: {field}: {msg}" if field else f"{where}: {msg}")

    data = read_small_yaml(path, MAX_BYTES, "a policy file", ScenarioError)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise fail("a policy is a mapping (half_life_minutes: ..., weights: ...)")
    try:
        return Policy.model_validate({"name": path.stem, **_plain(data)})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(err.get("loc", ()))
        line, col = locate(data, loc)
        raise fail(_message(err), line, col, dotted(loc)) from None


def load_policy(name: str, scenario_file: Path | str | None = None) -> Policy:
    """The policy ``name`` (``scoring/NAME.yaml`` beside the scenario or in the project)."""
    from rangectl.paths import policy_path

    path = policy_path(name, Path(scenario_file) if scenario_file is not None else None)
    if path is None:
        raise ScenarioError(
            f"no scoring policy '{name}' (looked for scoring/{name}.yaml beside the scenario and in the project)"
        )
    return parse_policy(path)
