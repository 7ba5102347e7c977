"""Traffic as node jobs (:mod:`rangectl.backend.nodeexec`): what runs inside the red node and the
receiving nodes of an inject, with plain data in and out, wherever the nodes are.

- :func:`generate` runs one generator in the node the job runs in (the red node);
- :func:`count_arrivals` counts frames arriving in the node it runs in (a receiving node) from
  the sender's addresses until it is asked to stop, then waits ``grace`` for frames in flight.

The controller side (:mod:`rangectl.drill.inject`) checks the safety rule and builds the
arguments; these functions apply it again (``run_traffic`` refuses any destination outside
``allowed``) and never read the controller's state.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from rangectl.backend.nodeexec import JobControl, node_job
from rangectl.traffic.base import TrafficContext
from rangectl.traffic.generators import parse_params, run_traffic
from rangectl.traffic.sniff import ArrivalCounter


@node_job
def generate(
    ctl: JobControl,
    kind: str,
    params: dict[str, Any],
    allowed: list[str],
    dst_ip: str | None,
    addresses: dict[str, str],
    scenario_file: str | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Run generator ``kind`` here; ``addresses`` maps the team's node names to addresses
    (a capture's ``map``); the job's deadline and stop request bound the run."""
    model = parse_params(kind, params)
    ctx = TrafficContext(
        None, [ipaddress.IPv4Network(n) for n in allowed], dst_ip=dst_ip,
        resolve=lambda name: addresses[name], scenario_file=Path(scenario_file) if scenario_file else None,
        stop=ctl.stop_event, deadline=ctl.monotonic_deadline(), label=label,
    )  # fmt: skip
    return run_traffic(kind, model, ctx).as_dict()


@node_job
def count_arrivals(ctl: JobControl, sources: list[str], destinations: list[str], grace: float) -> dict[str, Any]:
    """Count frames from ``sources`` (addresses or networks) to ``destinations`` arriving here,
    from when the job is ready until it is asked to stop (plus ``grace`` seconds)."""
    srcs: list[Any] = [ipaddress.ip_network(s) if "/" in s else ipaddress.IPv4Address(s) for s in sources]
    counter = ArrivalCounter(None, srcs, [ipaddress.IPv4Address(d) for d in destinations]).start()
    try:
        ctl.ready()
        ctl.wait()
        return counter.stop(grace).as_dict()
    except BaseException:
        counter.close()
        raise
