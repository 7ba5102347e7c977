"""The ``bruteforce`` generator: password guessing against an HTTP login form, or SSH connection attempts."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections import Counter

from rangectl.scenario.traffic_params import BruteforceParams
from rangectl.traffic.base import TrafficContext, TrafficResult
from rangectl.traffic.http_client import http_request
from rangectl.traffic.node_session import Session, run_session
from rangectl.traffic.pacing import Budget


def _credentials(p: BruteforceParams) -> list[tuple[str, str]]:
    pairs = [(u, pw) for u in p.usernames for pw in p.passwords]
    return pairs[: p.attempts]


def run_bruteforce(p: BruteforceParams, ctx: TrafficContext) -> TrafficResult:
    port = p.port or (80 if p.service == "http" else 22)
    creds = _credentials(p) if p.service == "http" else [(p.usernames[0], "")] * p.attempts

    def http_body(s: Session) -> str:
        budget = Budget(ctx, count=len(creds), duration=p.duration, rate=p.rate)
        host = str(s.dst)
        statuses: Counter[str] = Counter()
        successes = []
        attempts = 0
        stopped = "done"
        for user, pw in creds:
            if not budget.wait_next():
                stopped = budget.reason
                break
            form = urllib.parse.urlencode({p.user_field: user, p.pass_field: pw}).encode()
            rec = http_request(
                s, port, host, "POST", p.path, body=form, user_agent=p.user_agent,
                timeout=min(p.timeout, max(budget.remaining(), 0.1)),
            )  # fmt: skip
            attempts += 1
            st = rec["status"]
            statuses[str(st) if st is not None else "error"] += 1
            text = rec.get("_body", b"")
            ok = st in p.success_status and not (p.failure_text and p.failure_text.encode() in text)
            if ok:
                successes.append({"username": user, "password": pw, "status": st, "attempt": attempts})
                if p.stop_on_success:
                    stopped = "success"
                    break
        s.details.update(
            {
                "service": "http",
                "port": port,
                "path": p.path,
                "attempts": attempts,
                "statuses": dict(statuses),
                "successes": successes,
                "usernames": sorted({u for u, _ in creds[:attempts]}),
            }
        )
        return stopped

    def ssh_body(s: Session) -> str:
        budget = Budget(ctx, count=p.attempts, duration=p.duration, rate=p.rate)
        banners: Counter[str] = Counter()
        connected = refused = failed = 0
        attempts = 0
        while budget.wait_next():
            attempts += 1
            try:
                sock = s.tcp(port, min(p.timeout, max(budget.remaining(), 0.1)))
            except ConnectionRefusedError:
                refused += 1
                continue
            except OSError:
                failed += 1
                continue
            connected += 1
            try:
                sock.settimeout(min(p.timeout, 3.0))
                banner = b""
                with contextlib.suppress(OSError):
                    while b"\n" not in banner and len(banner) < 255:
                        chunk = sock.recv(255 - len(banner))
                        if not chunk:
                            break
                        banner += chunk
                line = banner.split(b"\n", 1)[0].strip().decode("ascii", "replace")
                if line:
                    banners[line] += 1
                sock.sendall(p.ssh_client_id.encode() + b"\r\n")
                s.app_bytes += len(p.ssh_client_id) + 2
                with contextlib.suppress(OSError):
                    sock.settimeout(0.5)
                    sock.recv(4096)  # the server's KEXINIT; we stop here, as a failed login does
            except OSError:
                pass
            finally:
                sock.close()
        s.details.update(
            {
                "service": "ssh",
                "port": port,
                "attempts": attempts,
                "connected": connected,
                "refused": refused,
                "failed": failed,
                "banners": dict(banners),
                "note": "no SSH library here: each attempt is a connection with a banner exchange, no password is tried",
            }
        )
        return "done" if attempts >= p.attempts else budget.reason

    return run_session("bruteforce", ctx, http_body if p.service == "http" else ssh_body)
