"""Is a team's answer right? Shared by the scoring engine (submissions, report fields) and the
drill's DNS checks. Pure: a function of the answer spec, the given text and the team's plan."""

from __future__ import annotations

import functools
import re
from ipaddress import IPv4Address

from rangectl.plan import TeamPlan
from rangectl.scenario.model import Answer
from rangectl.scenario.variables import substitute


@functools.lru_cache(maxsize=512)
def _regex(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    return re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)


def _text_key(text: str, case_sensitive: bool) -> str:
    """How answers compare as text (``text`` already trimmed): as given, or case-folded."""
    return text if case_sensitive else text.casefold()


def _same(expected: object, given: str, case_sensitive: bool) -> bool:
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        try:
            return float(given) == float(expected)
        except ValueError:
            pass
    return _text_key(given, case_sensitive) == _text_key(str(expected).strip(), case_sensitive)


def expected_ip(spec: Answer, team_plan: TeamPlan) -> IPv4Address:
    return team_plan.ip_of(spec.ip_of)  # type: ignore[arg-type]


def check_answer(answer_spec: Answer, submitted: object, team_plan: TeamPlan) -> bool:
    """Is ``submitted`` right for this team? Trimmed; case-folded unless ``case_sensitive``.

    ``ip_of: NODE`` is the team's address of NODE (``TeamPlan.ip_of``), compared
    as an address; ``value`` and ``one_of`` compare as text (as numbers when the
    expected value is a number: ``443`` = ``443.0``); ``regex`` must match the
    whole answer (``re.fullmatch``).
    """
    if submitted is None or isinstance(submitted, dict | list):
        return False
    given = str(submitted).strip()
    if not given:
        return False
    cs = answer_spec.case_sensitive
    if answer_spec.ip_of is not None:
        try:
            return IPv4Address(given) == expected_ip(answer_spec, team_plan)
        except ValueError:
            return False
    values = team_plan.values
    if answer_spec.value is not None:
        return _same(_fill(answer_spec.value, values), given, cs)
    if answer_spec.one_of is not None:
        return any(_same(_fill(v, values), given, cs) for v in answer_spec.one_of)
    if answer_spec.regex is not None:
        return _regex(_fill(answer_spec.regex, values, re.escape), cs).fullmatch(given) is not None
    return False


def _fill(expected: object, values: dict[str, str], quote=None) -> object:
    """``expected`` with the team's ``{var:NAME}`` values in it (escaped by ``quote`` for a regex)."""
    if not isinstance(expected, str) or "{var:" not in expected:
        return expected
    return substitute(expected, {k: quote(v) for k, v in values.items()} if quote else values)


class _RightAnswers:
    """Every team's right answers to one answer spec, keyed the way ``check_answer`` compares, so
    "whose right answer is this?" is one look-up instead of a ``check_answer`` per team.

    ``ip_of`` answers are keyed by address; ``value``/``one_of`` by their trimmed text (case-folded
    unless ``case_sensitive``) and, for numbers, by their value too. Regular expressions cannot be
    keyed: each team's is compiled once and matched in turn."""

    def __init__(self, spec: Answer, teams: list[TeamPlan]):
        self.by_ip: dict[IPv4Address, list[int]] = {}
        self.by_text: dict[str, list[int]] = {}
        self.by_number: dict[float, list[int]] = {}
        self.cs = spec.case_sensitive
        self.regex = spec.ip_of is None and spec.value is None and spec.one_of is None
        self.order = {tp.team: i for i, tp in enumerate(teams)}
        self.patterns: list[tuple[int, re.Pattern[str]]] = []
        for tp in teams:
            if self.regex:
                if spec.regex is not None:
                    self.patterns.append((tp.team, _regex(_fill(spec.regex, tp.values, re.escape), self.cs)))
                continue
            if spec.ip_of is not None:
                self.by_ip.setdefault(expected_ip(spec, tp), []).append(tp.team)
                continue
            for v in [spec.value] if spec.value is not None else (spec.one_of or []):
                want = _fill(v, tp.values)
                if isinstance(want, int | float) and not isinstance(want, bool):
                    self.by_number.setdefault(float(want), []).append(tp.team)
                self.by_text.setdefault(_text_key(str(want).strip(), self.cs), []).append(tp.team)

    def teams_matching(self, given: str) -> list[int]:
        """The teams ``given`` (already trimmed, not empty) is right for, in plan order."""
        if self.regex:
            return [t for t, rx in self.patterns if rx.fullmatch(given) is not None]
        found: set[int] = set()
        if self.by_ip:
            try:
                found.update(self.by_ip.get(IPv4Address(given), ()))
            except ValueError:
                pass
        if self.by_number:
            try:
                found.update(self.by_number.get(float(given), ()))
            except ValueError:
                pass
        found.update(self.by_text.get(_text_key(given, self.cs), ()))
        return sorted(found, key=self.order.__getitem__)


# id(teams) -> (teams, {id(spec): (spec, index)}): holding both keeps their ids from being reused
_RIGHT: dict[int, tuple[list[TeamPlan], dict[int, tuple[Answer, _RightAnswers]]]] = {}
_RIGHT_PLANS = 8


def other_team_right(answer_spec: Answer, submitted: object, teams: list[TeamPlan], team: int) -> int | None:
    """The first team other than ``team`` (in ``teams``' order) for which ``submitted`` is the right
    answer, or ``None``: the same as ``check_answer`` against each other team, without a call per team
    (keyed look-up; a regex is still matched per team). ``teams`` is a plan's team list; the index is
    built once per list and spec."""
    if submitted is None or isinstance(submitted, dict | list):
        return None
    given = str(submitted).strip()
    if not given:
        return None
    entry = _RIGHT.get(id(teams))
    if entry is None:  # (the cached list and spec are held, so their ids cannot be reused meanwhile)
        if len(_RIGHT) >= _RIGHT_PLANS:
            _RIGHT.pop(next(iter(_RIGHT)))
        entry = _RIGHT[id(teams)] = (teams, {})
    specs = entry[1]
    hit = specs.get(id(answer_spec))
    if hit is None:
        hit = specs[id(answer_spec)] = (answer_spec, _RightAnswers(answer_spec, teams))
    return next((t for t in hit[1].teams_matching(given) if t != team), None)
