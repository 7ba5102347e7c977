"""Attack traffic from inside the range: generators, capture replay, and their ground-truth records.

Entry points: :func:`run_traffic` (any generator by kind), :func:`replay_pcap`
(a capture), :func:`validate_params` (pure, for the scenario validator) and
:func:`describe` (for ``rangectl traffic list``). See docs/traffic.md.
"""

from __future__ import annotations

from rangectl.scenario.traffic_params import validate_params
from rangectl.traffic.base import (
    TrafficContext,
    TrafficError,
    TrafficParamsError,
    TrafficRefused,
    TrafficResult,
)
from rangectl.traffic.generators import GENERATORS, describe, parse_params, run_traffic
from rangectl.traffic.replay import replay_pcap

__all__ = [
    "GENERATORS",
    "TrafficContext",
    "TrafficError",
    "TrafficParamsError",
    "TrafficRefused",
    "TrafficResult",
    "describe",
    "parse_params",
    "replay_pcap",
    "run_traffic",
    "validate_params",
]
