"""The ``dns-exfil`` generator: data base32-encoded into ``<chunk>.<seq>.<domain>`` queries over UDP."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import random
import struct
import time
from collections import Counter

from rangectl.scenario.traffic_params import DnsExfilParams
from rangectl.traffic.base import TrafficContext, TrafficResult
from rangectl.traffic.node_session import ETH_IP_UDP, Session, run_session
from rangectl.traffic.pacing import Budget

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28, "NULL": 10}


def dns_query(qid: int, name: str, qtype: int) -> bytes:
    """A recursion-desired DNS query for ``name``."""
    q = b"".join(bytes([len(lbl)]) + lbl.encode("ascii") for lbl in name.rstrip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def exfil_names(data: bytes, domain: str, label_length: int) -> list[str]:
    """``<chunk>.<seq>.<domain>`` for each base32 chunk of ``data`` (lower case, no padding)."""
    b32 = base64.b32encode(data).decode().rstrip("=").lower()
    chunks = [b32[i : i + label_length] for i in range(0, len(b32), label_length)] or [""]
    return [f"{c}.{i}.{domain}" for i, c in enumerate(chunks)]


def run_dns_exfil(p: DnsExfilParams, ctx: TrafficContext) -> TrafficResult:
    data = p.data.encode() if p.data is not None else os.urandom(p.random_bytes)
    names = exfil_names(data, p.domain, p.label_length)
    qtype = QTYPES[p.qtype]

    def body(s: Session) -> str:
        budget = Budget(ctx, count=min(len(names), p.max_queries), duration=p.duration, rate=p.rate)
        sock = s.udp(p.port)
        sock.setblocking(False)
        ids: dict[int, int] = {}
        rcodes: Counter[str] = Counter()
        answered: set[int] = set()

        def drain() -> None:
            while True:
                try:
                    resp = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    rcodes["icmp-error"] += 1
                    return
                if len(resp) < 12:
                    continue
                rid = struct.unpack_from("!H", resp, 0)[0]
                if rid in ids and rid not in answered:
                    answered.add(rid)
                    rcodes[_RCODES.get(resp[3] & 0x0F, str(resp[3] & 0x0F))] += 1

        sent = 0
        try:
            for seq, name in enumerate(names[: p.max_queries]):
                if not budget.wait_next():
                    break
                qid = random.getrandbits(16)
                while qid in ids:
                    qid = random.getrandbits(16)
                msg = dns_query(qid, name, qtype)
                try:
                    sock.send(msg)
                except OSError as exc:
                    if exc.errno == errno.ECONNREFUSED:  # an earlier ICMP port unreachable
                        rcodes["icmp-error"] += 1
                        sock.send(msg)
                    else:
                        raise
                ids[qid] = seq
                sent += 1
                s.exact_packets += 1
                s.exact_bytes += ETH_IP_UDP + len(msg)
                drain()
            end = time.monotonic() + min(p.wait, budget.remaining() + p.wait)
            while time.monotonic() < end and len(answered) < sent:
                drain()
                time.sleep(0.01)
            drain()
        finally:
            sock.close()
        s.details.update(
            {
                "resolver_port": p.port,
                "domain": p.domain,
                "qtype": p.qtype,
                "queries_sent": sent,
                "chunks_total": len(names),
                "answered": len(answered),
                "rcodes": dict(rcodes),
                "data_bytes": len(data),
                "data_sha256": hashlib.sha256(data).hexdigest(),
                "data_sent_complete": sent == len(names),
                "first_name": names[0] if sent else None,
                "last_name": names[sent - 1] if sent else None,
            }
        )
        if sent == len(names):
            return "done"
        if sent >= p.max_queries:
            return "count"
        return budget.reason

    return run_session("dns-exfil", ctx, body, tap=False)


_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
