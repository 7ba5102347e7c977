"""Durations as scenario files write them: 90s, 5m, 1h30m, 250ms, or a number of seconds."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rangectl.scenario.durations import DURATION_PATTERN, format_duration, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("1.5m", 90.0),
        ("0.5h", 1800.0),
        (" 5m ", 300.0),
        ("5M", 300.0),
        ("1s500ms", 1.5),
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "is not a duration"),
        ("   ", "is not a duration"),
        ("5", "is not a duration"),
        ("5 minutes", "is not a duration"),
        ("m5", "is not a duration"),
        ("5d", "is not a duration"),
        ("-5s", "is not a duration"),
        ("1h 30m", "is not a duration"),
        ("5m30", "is not a duration"),
        ("1e3s", "is not a duration"),
        (-1, "cannot be negative"),
        (-0.5, "cannot be negative"),
        (True, "not a boolean"),
        (None, "like 90s"),
        ([5], "like 90s"),
        ({"m": 5}, "like 90s"),
    ],
)
def test_reject(text, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_duration(text)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"),
        (0.25, "250ms"),
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (5415, "1h30m15s"),
        (7260, "2h1m"),
    ],
)
def test_format(seconds, text):
    assert format_duration(seconds) == text


@given(st.integers(0, 10 * 24 * 3600))
def test_round_trip_whole_seconds(seconds):
    text = format_duration(seconds)
    assert re.fullmatch(DURATION_PATTERN, text)
    assert parse_duration(text) == seconds


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59))
def test_parts_add_up(h, m, s):
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s or not (h or m) else "")
    assert parse_duration(text) == h * 3600 + m * 60 + s


@given(st.text(max_size=12))
def test_parse_never_raises_anything_but_value_error(text):
    """Whatever a file holds, the answer is a number of seconds or a ValueError (a problem)."""
    try:
        value = parse_duration(text)
    except ValueError:
        return
    assert value >= 0


@given(st.from_regex(r"\A(\d{1,3}(h|m|s|ms)){1,4}\Z"))
def test_pattern_and_parser_agree(text):
    """The JSON Schema pattern (for editors) accepts what the parser accepts."""
    assert re.fullmatch(DURATION_PATTERN, text)
    assert parse_duration(text) >= 0


def test_model_uses_durations():
    from rangectl.scenario.model import Availability, Inject

    inj = Inject.model_validate({"id": "a", "after": "b", "delay": "1m30s", "message": "x"})
    assert inj.delay == 90.0
    av = Availability.model_validate(
        {"node": "p", "service": "http", "points": 1, "every": "2m", "timeout": 5}
    )
    assert (av.every, av.timeout) == (120.0, 5.0)
