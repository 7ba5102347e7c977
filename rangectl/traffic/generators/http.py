"""The ``http`` generator: web attacks over real TCP connections (SQL injection, path traversal, web-shell upload)."""

from __future__ import annotations

import secrets
import urllib.parse
from collections import Counter

from rangectl.scenario.traffic_params import HttpParams
from rangectl.traffic.base import TrafficContext, TrafficResult
from rangectl.traffic.http_client import http_request
from rangectl.traffic.node_session import Session, run_session
from rangectl.traffic.pacing import Budget


def _multipart(field_name: str, filename: str, content: bytes, ctype: str) -> tuple[bytes, str]:
    boundary = "----WebKitFormBoundary" + secrets.token_hex(8)
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"{filename}\"\r\n"
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def run_http(p: HttpParams, ctx: TrafficContext) -> TrafficResult:
    def plan() -> list[tuple[str, str, str, bytes | None, str | None, dict[str, str]]]:
        out: list[tuple[str, str, str, bytes | None, str | None, dict[str, str]]] = []
        for group in p.attacks:
            if group == "sqli":
                for payload in p.sqli_payloads:
                    q = urllib.parse.urlencode({p.lookup_param: payload})
                    out.append(("sqli", "GET", f"{p.lookup_path}?{q}", None, None, {}))
            elif group == "traversal":
                for path in p.traversal_paths:
                    out.append(("traversal", "GET", path if path.startswith("/") else "/" + path, None, None, {}))
            elif group == "webshell":
                body, ctype = _multipart(p.upload_field, p.shell_name, p.shell_body.encode(), "application/x-php")
                out.append(("webshell", "POST", p.upload_path, body, ctype, {}))
                if p.shell_url:
                    url = p.shell_url.replace("{name}", urllib.parse.quote(p.shell_name))
                    for cmd in p.shell_commands:
                        sep = "&" if "?" in url else "?"
                        out.append(("webshell", "GET", f"{url}{sep}cmd={urllib.parse.quote(cmd)}", None, None, {}))
        for r in p.requests:
            body = r.body.encode() if r.body is not None else None
            out.append(("custom", r.method, r.path, body, r.content_type, dict(r.headers)))
        return out[: p.max_requests]

    todo = plan()

    def body(s: Session) -> str:
        budget = Budget(ctx, count=len(todo), duration=p.duration, rate=p.rate)
        host = p.host or str(s.dst)
        records = []
        for attack, method, path, data, ctype, hdrs in todo:
            if not budget.wait_next():
                break
            rec = http_request(
                s, p.port, host, method, path, body=data, content_type=ctype, headers=hdrs,
                user_agent=p.user_agent, timeout=min(p.timeout, max(budget.remaining(), 0.1)),
            )  # fmt: skip
            rec.pop("_body", None)
            rec["attack"] = attack
            records.append(rec)
        statuses = Counter(str(r["status"]) if r["status"] is not None else "error" for r in records)
        s.details.update(
            {
                "port": p.port,
                "requests": records,
                "requests_sent": len(records),
                "statuses": dict(statuses),
                "by_attack": dict(Counter(r["attack"] for r in records)),
            }
        )
        return "done" if len(records) == len(todo) else budget.reason

    return run_session("http", ctx, body)
