"""Durations as scenario files write them: ``90s``, ``5m``, ``1h30m``, ``2h``, ``0``."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")  # "ms" before "m"
DURATION_PATTERN = r"^\s*(0|(\d+(\.\d+)?(h|m|s|ms))+)\s*$"


def parse_duration(value: object) -> float:
    """Return seconds. Accepts numbers (seconds) and strings like ``1h30m``."""
    if isinstance(value, bool):
        raise ValueError("a duration is like 90s, 5m or 1h30m, not a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration is like 90s, 5m or 1h30m")
    text = value.strip().lower()
    if text in ("0", "0s"):
        return 0.0
    pos = 0
    total = 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        num, unit = float(m.group(1)), m.group(2)
        total += num * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"'{value}' is not a duration (write 90s, 5m or 1h30m)")
    return total


def format_duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 1 and seconds > 0:
        return f"{seconds * 1000:.0f}ms"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    out = ""
    if h:
        out += f"{h}h"
    if m:
        out += f"{m}m"
    if sec or not out:
        out += f"{sec}s"
    return out
