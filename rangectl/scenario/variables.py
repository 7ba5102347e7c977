"""Per-team variables: values drawn for each team from the range's seed — pure.

A scenario declares variables; every team gets its own value of each, so a
team cannot pass a non-address answer (a web shell's file name, an
exfiltration domain) to the next::

    variables:
      shell: {pattern: '[a-z]{6}\\.php'}
      exfil_domain: {choices: [cdn-sync.net, img-cache.org, static-hub.com]}
      beacon_port: {range: [4000, 4999]}

Drawing is deterministic: the same seed gives every team the same values
again, and a team's values do not depend on how many teams there are (team
3 gets the same value in a 3-team and a 40-team range with the same seed).
Two teams never share a value: ``choices`` needs at least as many entries
as there are teams, patterns and ranges are drawn again on a collision.

``{var:NAME}`` in a text is replaced by the team's value (see
:func:`substitute`); :func:`references` lists the names a text uses so that
validation can report an unknown one with its file, line and field.

Patterns are regular expressions restricted to what can be drawn from:
literals, classes, alternation, groups and *bounded* repetition
(``{n}``, ``{n,m}``, ``?``); ``*``, ``+``, ``{n,}``, look-arounds and
back-references are refused. Drawing uses the ``rstr`` library.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import rstr
from pydantic import BaseModel, ConfigDict, Field, model_validator

try:  # Python 3.11+: the regex parser lives in re._parser
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python < 3.11 is not supported
    import sre_parse as _sre_parse  # type: ignore[no-redef]

VAR_NAME = r"^[a-z][a-z0-9_]{0,31}$"
_REF = re.compile(r"\{var:([^}]*)\}")
MAX_PATTERN_LEN = 64  # longest value a pattern may produce
MAX_ATTEMPTS = 200  # redraws per team before a pattern or range is declared too small


class VariableError(ValueError):
    """A variable cannot be drawn (too few choices, pattern too small, bad pattern)."""


class Variable(BaseModel):
    """One per-team variable: exactly one of ``choices``, ``pattern``, ``range``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    choices: list[str | int] | None = Field(None, min_length=1, description="values to deal out, one per team")
    pattern: str | None = Field(None, min_length=1, max_length=200, description="a bounded regular expression")
    range_: tuple[int, int] | None = Field(None, alias="range", description="inclusive integer bounds [low, high]")
    description: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Variable:
        given = [k for k in ("choices", "pattern", "range_") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of: choices, pattern, range")
        if self.choices is not None:
            values = [str(c) for c in self.choices]
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise ValueError(f"choices repeat {', '.join(dup)}: every team must get a different value")
        if self.pattern is not None:
            check_pattern(self.pattern)
        if self.range_ is not None:
            low, high = self.range_
            if low > high:
                raise ValueError(f"range [{low}, {high}]: the low bound is above the high bound")
        return self

    def capacity(self) -> int | None:
        """How many distinct values there are (None when only drawing can tell)."""
        if self.choices is not None:
            return len(self.choices)
        if self.range_ is not None:
            return self.range_[1] - self.range_[0] + 1
        return None


def _walk(parsed: Any) -> Iterable[tuple[Any, Any]]:
    for op, arg in parsed:
        yield op, arg
        if op in (_sre_parse.MAX_REPEAT, _sre_parse.MIN_REPEAT):
            yield from _walk(arg[2])
        elif op is _sre_parse.SUBPATTERN:
            yield from _walk(arg[-1])
        elif op is _sre_parse.BRANCH:
            for branch in arg[1]:
                yield from _walk(branch)


def check_pattern(pattern: str) -> None:
    """Raise ValueError unless ``pattern`` is a regex values can be drawn from."""
    try:
        parsed = _sre_parse.parse(pattern)
    except re.error as exc:
        raise ValueError(f"pattern does not compile: {exc}") from None
    for op, arg in _walk(parsed):
        if op in (_sre_parse.MAX_REPEAT, _sre_parse.MIN_REPEAT) and arg[1] == _sre_parse.MAXREPEAT:
            raise ValueError("pattern repeats without a bound (*, + or {n,}): use {n} or {n,m}")
        if op in (_sre_parse.ASSERT, _sre_parse.ASSERT_NOT, _sre_parse.GROUPREF, _sre_parse.AT):
            raise ValueError("pattern uses anchors, look-arounds or back-references: values cannot be drawn from it")
        if op is _sre_parse.ANY:
            raise ValueError("pattern uses '.', which can draw spaces and control characters: use a class like [a-z0-9]")
    _lo, hi = parsed.getwidth()
    if hi > MAX_PATTERN_LEN:
        raise ValueError(f"pattern can produce values longer than {MAX_PATTERN_LEN} characters")


def new_seed() -> str:
    """A fresh range seed (recorded at ``up``)."""
    return secrets.token_hex(8)


def _rng(seed: str, name: str) -> random.Random:
    digest = hashlib.sha256(f"rangectl-var\0{seed}\0{name}".encode()).digest()
    return random.Random(int.from_bytes(digest, "big"))


def draw(variables: Mapping[str, Variable], seed: str, teams: Iterable[int]) -> dict[int, dict[str, str]]:
    """Every team's value of every variable, as strings.

    Teams are dealt in ascending order from one random stream per variable,
    so a team's values do not depend on the teams after it.
    """
    order = sorted(set(teams))
    out: dict[int, dict[str, str]] = {t: {} for t in order}
    for name in sorted(variables):
        var = variables[name]
        rng = _rng(seed, name)
        cap = var.capacity()
        if cap is not None and order and cap < len(order):
            raise VariableError(
                f"variable '{name}' has {cap} possible value(s) for {len(order)} teams: every team needs its own"
            )
        if var.choices is not None:
            deck = [str(c) for c in var.choices]
            rng.shuffle(deck)
            for i, team in enumerate(order):
                out[team][name] = deck[i]
            continue
        gen = _generator(var, rng)
        used: set[str] = set()
        for team in order:
            for _ in range(MAX_ATTEMPTS):
                value = gen()
                if value not in used:
                    break
            else:
                raise VariableError(
                    f"variable '{name}': could not draw {len(order)} different values "
                    f"({MAX_ATTEMPTS} tries); widen the pattern or range"
                )
            used.add(value)
            out[team][name] = value
    return out


def _generator(var: Variable, rng: random.Random):
    if var.range_ is not None:
        low, high = var.range_
        return lambda: str(rng.randint(low, high))
    assert var.pattern is not None
    maker = rstr.Rstr(rng)
    pattern = var.pattern
    return lambda: maker.xeger(pattern)


def references(text: str) -> list[str]:
    """The variable names a text refers to, in order (``{var:NAME}``)."""
    return [m.group(1) for m in _REF.finditer(text)]


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every ``{var:NAME}`` replaced by the team's value.

    An unknown name raises KeyError naming it (validation reports these
    with file and line before a range ever runs).
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise KeyError(f"unknown variable '{name}' in {{var:{name}}}")
        return values[name]

    return _REF.sub(repl, text)


def reference_problems(data: Any, declared: Iterable[str], skip: tuple[str, ...] = ("variables",)) -> list[tuple[tuple, str]]:
    """``(location, message)`` for every ``{var:NAME}`` in ``data`` naming no declared variable.

    ``data`` is a scenario's (or solution's) raw tree; the location is the
    path of keys and indexes to the string, for file/line/field errors.
    Top-level keys in ``skip`` are not searched (the declarations themselves).
    """
    names = set(declared)
    out: list[tuple[tuple, str]] = []

    def walk(node: Any, loc: tuple) -> None:
        if isinstance(node, str):
            for name in references(node):
                if name not in names:
                    known = ", ".join(sorted(names)) or "none declared"
                    out.append((loc, f"unknown variable '{name}' in {{var:{name}}} (variables: {known})"))
        elif isinstance(node, Mapping):
            for k, v in node.items():
                if loc == () and k in skip:
                    continue
                walk(v, (*loc, k))
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                walk(v, (*loc, i))

    walk(data, ())
    return out


def substitute_all(node: Any, values: Mapping[str, str]) -> Any:
    """A copy of a tree of dicts, lists and strings with ``{var:NAME}`` replaced in every string."""
    if isinstance(node, str):
        return substitute(node, values) if "{var:" in node else node
    if isinstance(node, Mapping):
        return {k: substitute_all(v, values) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [substitute_all(v, values) for v in node]
    return node
