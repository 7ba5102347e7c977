"""A generator whose network goes away mid-run (the range taken down under a running flood) ends
with a one-line TrafficError, not a traceback from the socket."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress

import pytest

from rangectl.traffic import generators
from rangectl.traffic.base import TrafficContext, TrafficError


def test_a_socket_error_mid_run_becomes_a_traffic_error(monkeypatch):
    def run(model, ctx):
        raise OSError(errno.ENETDOWN, "Network is down")

    spec = dataclasses.replace(generators.GENERATORS["synflood"], run=run)
    monkeypatch.setitem(generators.GENERATORS, "synflood", spec)
    ctx = TrafficContext(netns_path=None, allowed_subnets=[ipaddress.IPv4Network("10.9.0.0/24")],
                         dst_ip=ipaddress.IPv4Address("10.9.0.10"))
    with pytest.raises(TrafficError, match=r"^synflood stopped: Network is down \(was the range or node taken down\?\)$"):
        generators.run_traffic("synflood", {"port": 80, "count": 10}, ctx)
