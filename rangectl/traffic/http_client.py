"""One HTTP request from a node session, on http.client: the client the session generators share.

The request goes out of the session's own socket (the node's address and routes);
the record says what came back (status, size, time) or what went wrong.
"""

from __future__ import annotations

import http.client
import time
from typing import Any

from rangectl.traffic.node_session import Session


def http_request(
    s: Session,
    port: int,
    host: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
    user_agent: str,
    timeout: float,
) -> dict[str, Any]:
    rec: dict[str, Any] = {"method": method, "path": path, "status": None}
    conn = http.client.HTTPConnection(str(s.dst), port, timeout=timeout, source_address=s.source_address)
    t = time.monotonic()
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if port == 80 else f"{host}:{port}")
        conn.putheader("User-Agent", user_agent)
        conn.putheader("Accept", "*/*")
        conn.putheader("Connection", "close")
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Type", content_type or "application/x-www-form-urlencoded")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        s.app_bytes += len(path) + (len(body) if body else 0) + 200
        resp = conn.getresponse()
        data = resp.read(1 << 20)
        rec["status"] = resp.status
        rec["bytes"] = len(data)
        rec["_body"] = data
    except (OSError, http.client.HTTPException, ValueError) as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
        rec["ms"] = round((time.monotonic() - t) * 1000, 1)
    return rec
