"""The ``beacon`` generator: periodic C2 check-ins over HTTP or UDP, with jitter."""

from __future__ import annotations

import base64
import contextlib
import os
import random
import secrets
import time
import urllib.parse

from rangectl.scenario.traffic_params import BeaconParams
from rangectl.traffic.base import TrafficContext, TrafficResult
from rangectl.traffic.http_client import http_request
from rangectl.traffic.node_session import ETH_IP_UDP, Session, run_session
from rangectl.traffic.pacing import Budget


def run_beacon(p: BeaconParams, ctx: TrafficContext) -> TrafficResult:
    port = p.port or (80 if p.protocol == "http" else 4444)
    beacon_id = p.beacon_id or secrets.token_hex(6)
    rnd = random.Random()

    def body(s: Session) -> str:
        budget = Budget(ctx, count=p.count, duration=p.duration, rate=None)
        checkins = []
        t0 = time.monotonic()
        udp = s.udp(port) if p.protocol == "udp" else None
        stopped = "count"
        try:
            for seq in range(p.count):
                if seq:
                    gap = p.interval * (1 + rnd.uniform(-p.jitter, p.jitter))
                    if not budget.sleep(gap):
                        stopped = budget.reason
                        break
                elif budget.expired():
                    stopped = budget.reason
                    break
                blob = base64.urlsafe_b64encode(os.urandom(p.payload_bytes)).decode().rstrip("=")
                at = round(time.monotonic() - t0, 3)
                if p.protocol == "http":
                    path = f"{p.path}?{urllib.parse.urlencode({'id': beacon_id, 'seq': seq, 'd': blob})}"
                    rec = http_request(
                        s, port, str(s.dst), "GET", path, headers={"Cookie": f"SESSIONID={beacon_id}"},
                        user_agent=p.user_agent, timeout=min(p.timeout, max(budget.remaining(), 0.1)),
                    )  # fmt: skip
                    rec.pop("_body", None)
                    checkins.append({"seq": seq, "t": at, "status": rec["status"], **({"error": rec["error"]} if "error" in rec else {})})
                else:
                    assert udp is not None
                    msg = f"{beacon_id}|{seq}|{int(time.time())}|{blob}".encode()
                    try:
                        udp.send(msg)
                        err = None
                    except OSError as exc:
                        err = exc.strerror
                        with contextlib.suppress(OSError):
                            udp.send(msg)
                    s.exact_packets += 1
                    s.exact_bytes += ETH_IP_UDP + len(msg)
                    reply = None
                    udp.settimeout(min(0.2, p.interval / 2))
                    with contextlib.suppress(OSError):
                        reply = len(udp.recv(2048))
                    checkins.append({"seq": seq, "t": at, "reply_bytes": reply, **({"error": err} if err else {})})
        finally:
            if udp is not None:
                udp.close()
        gaps = [round(b["t"] - a["t"], 3) for a, b in zip(checkins, checkins[1:], strict=False)]
        s.details.update(
            {
                "protocol": p.protocol,
                "port": port,
                "beacon_id": beacon_id,
                "checkins": checkins,
                "checkins_sent": len(checkins),
                "interval": p.interval,
                "jitter": p.jitter,
                "gaps": gaps,
            }
        )
        return "count" if len(checkins) >= p.count else stopped

    return run_session("beacon", ctx, body, tap=(p.protocol == "http"))
