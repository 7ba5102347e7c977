"""The team service's public answers, one documented behaviour per test (written against surviving
mutants of rangectl/access/service.py; docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import pytest

from rangectl.access.service import ApiError, api_errors
from rangectl.errors import RangeError
from tests.unit.test_mut_access import _append, rng, svc  # noqa: F401 - fixtures


def test_a_refusal_reaches_the_team_as_one_line_of_at_most_500_characters():
    """A lower layer's message is shown on one line (whitespace collapsed) and cut at 500
    characters, so a team never gets a wall of text or a multi-line dump."""
    with pytest.raises(ApiError) as e:
        with api_errors():
            raise RangeError("too\nmany   words " * 100)
    assert e.value.status == 409
    assert e.value.detail == ("too many words " * 100)[:500] and len(e.value.detail) == 500


def test_scores_are_shown_to_two_decimals(svc, rng):  # noqa: F811 - fixtures
    """Totals, categories and trainer adjustments in a team's score are rounded to two decimals."""
    _append(rng, "score", {"points": 7.123456, "reason": "teamwork", "category": "bonus"}, team=1, actor="trainer")
    s = svc.score(1)
    assert (s["total"], s["adjustments"], s["categories"]["bonus"]) == (7.12, 7.12, 7.12)
