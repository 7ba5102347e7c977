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


def _same(expected: object, given: str, case_sensitive: bool) -> bool:
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        try:
            return float(given) == float(expected)
        except ValueError:
            pass
    want = str(expected).strip()
    return given == want if case_sensitive else given.casefold() == want.casefold()


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
