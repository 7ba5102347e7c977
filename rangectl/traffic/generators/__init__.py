"""The traffic generators: registry, parameter validation, descriptions, and the one entry point.

One module per kind beside this one (portscan, synflood, http, bruteforce, dns_exfil, beacon,
phishing, pcap), each with its ``run_<kind>(params, ctx)``.

Parameter models and their pure checks are part of the scenario format
(:mod:`rangectl.scenario.traffic_params`); ``run_traffic(kind, params, ctx)`` validates, applies the safety rule and runs
the generator inside ``ctx.netns_path``; it returns a :class:`TrafficResult`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from rangectl.scenario.traffic_params import (
    NO_TARGET,
    PARAMS,
    BeaconParams,
    BruteforceParams,
    DnsExfilParams,
    HttpParams,
    Params,
    PcapParams,
    PhishingParams,
    PortscanParams,
    SynfloodParams,
    check_params,
)
from rangectl.traffic.base import TrafficContext, TrafficError, TrafficParamsError, TrafficResult
from rangectl.traffic.generators.beacon import run_beacon
from rangectl.traffic.generators.bruteforce import run_bruteforce
from rangectl.traffic.generators.dns_exfil import run_dns_exfil
from rangectl.traffic.generators.http import run_http
from rangectl.traffic.generators.pcap import run_pcap
from rangectl.traffic.generators.phishing import run_phishing
from rangectl.traffic.generators.portscan import run_portscan
from rangectl.traffic.generators.synflood import run_synflood


@dataclass(frozen=True)
class GeneratorSpec:
    name: str
    summary: str
    level: str  # packet | session | replay
    params: type[Params]
    run: Callable[[Any, TrafficContext], TrafficResult]

    @property
    def needs_target(self) -> bool:
        return self.name not in NO_TARGET


GENERATORS: dict[str, GeneratorSpec] = {
    s.name: s
    for s in [
        GeneratorSpec(
            "portscan",
            "TCP port scan: half-open SYN probes (raw frames) or full connects, over a port list",
            "packet",
            PortscanParams,
            run_portscan,
        ),
        GeneratorSpec(
            "synflood",
            "TCP SYN flood at a bounded rate and count, optionally from forged in-range sources",
            "packet",
            SynfloodParams,
            run_synflood,
        ),
        GeneratorSpec(
            "http",
            "Web attacks over real TCP connections: SQL injection, path traversal, web-shell upload",
            "session",
            HttpParams,
            run_http,
        ),
        GeneratorSpec(
            "bruteforce",
            "Password guessing against an HTTP login form (or SSH connection attempts)",
            "session",
            BruteforceParams,
            run_bruteforce,
        ),
        GeneratorSpec(
            "dns-exfil",
            "Data base32-encoded into <chunk>.<seq>.<domain> queries to a resolver over UDP",
            "session",
            DnsExfilParams,
            run_dns_exfil,
        ),
        GeneratorSpec(
            "beacon",
            "Periodic C2 check-ins over HTTP or UDP, with jitter",
            "session",
            BeaconParams,
            run_beacon,
        ),
        GeneratorSpec(
            "phishing",
            "A lure e-mail with a link, delivered over SMTP to a mail node",
            "session",
            PhishingParams,
            run_phishing,
        ),
        GeneratorSpec(
            "pcap",
            "Replay a capture with addresses mapped onto this team's nodes",
            "replay",
            PcapParams,
            run_pcap,
        ),
    ]
}


def parse_params(kind: str, params: dict[str, Any] | None) -> Params:
    """The validated parameter model, or :class:`TrafficParamsError` listing every problem."""
    model, problems = check_params(kind, params)
    if model is None:
        raise TrafficParamsError(kind, problems)
    return model


def run_traffic(kind: str, params: dict[str, Any] | Params | None, ctx: TrafficContext) -> TrafficResult:
    """Validate ``params``, refuse destinations outside ``ctx.allowed_subnets``, run, return the record."""
    spec = GENERATORS.get(kind)
    if spec is None:
        raise TrafficError(f"unknown traffic kind '{kind}' (known: {', '.join(GENERATORS)})")
    model = params if isinstance(params, spec.params) else parse_params(kind, params)  # type: ignore[arg-type]
    if spec.needs_target and ctx.dst_ip is None:
        raise TrafficError(f"a {kind} run needs a target address")
    try:
        return spec.run(model, ctx)
    except OSError as exc:  # the node's network went away mid-run (range taken down, node reset)
        raise TrafficError(f"{kind} stopped: {exc.strerror or exc} (was the range or node taken down?)") from None


# --- descriptions ------------------------------------------------------------------------


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) if not isinstance(a, str) else a for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (list, tuple, set):
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"map[{_type_name(args[0])} -> {_type_name(args[1])}]" if args else "map"
    if ann is type(None):
        return "null"
    if isinstance(ann, type):
        if issubclass(ann, BaseModel):
            return "request"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(ann.__name__, ann.__name__)
    return str(ann)


def _constraints(info: Any) -> str:
    parts = []
    for m in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min len"), ("max_length", "max len")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v:g}" if isinstance(v, float) else f"{sym} {v}")
    return ", ".join(parts)


def _default(info: Any) -> Any:
    if info.is_required():
        return None
    if info.default_factory is not None:
        return info.default_factory()
    return info.default


def describe() -> list[dict[str, Any]]:
    """Every generator with its parameters (name, type, default, limits, description), for ``traffic list``."""
    out = []
    for spec in GENERATORS.values():
        params = []
        for name, info in spec.params.model_fields.items():
            params.append(
                {
                    "name": name,
                    "type": _type_name(info.annotation),
                    "required": info.is_required(),
                    "default": _default(info),
                    "limits": _constraints(info),
                    "description": info.description or "",
                }
            )
        out.append(
            {
                "kind": spec.name,
                "summary": spec.summary,
                "level": spec.level,
                "needs_target": spec.needs_target,
                "params": params,
            }
        )
    return out


assert list(GENERATORS) == list(PARAMS) and all(GENERATORS[k].params is PARAMS[k] for k in PARAMS), (
    "every traffic kind of the scenario format has exactly one generator"
)
