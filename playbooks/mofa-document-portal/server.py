#!/usr/bin/env python3
"""mofa-document-portal: the ministry's document portal for embassies and consulates.

Runs as the web image's supervised service ``portal`` (playbooks/mofa-document-portal/portal.yml
puts a shim at /opt/rangectl-web/portal.py), so ``rangectl-svc restart portal`` restarts it.

  :443  HTTPS, the portal embassies use: the server certificate is the ministry CA's, and the
        client certificate is asked for (optional at the TLS layer, required per account:
        client_cert_required in /etc/portal/accounts.json); a certificate whose serial is in
        /etc/portal/pki/revoked-serials.txt does not count
  :80   plain HTTP: the landing page, /healthz for the NOC, and the legacy API /api/v1/ that the
        old document-sync client used (it can never present a client certificate)

API (both ports): POST /api/v1/login (username, password) -> session (cookie MOFASID);
GET /api/v1/documents; GET /api/v1/documents/ID (decrypted from the store);
POST /api/v1/devices/enroll (device, csr) -> a client certificate for the session's account;
POST /api/v1/logout. State and files: portalstore.py.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, "/opt/mofa-portal")
import portalstore as ps  # noqa: E402

SITE = "Cổng trao đổi văn bản điện tử với cơ quan đại diện — Bộ Ngoại giao"
_log_lock = threading.Lock()


def log(name: str, line: str) -> None:
    with _log_lock:
        ps.append_log(name, line)


class Handler(BaseHTTPRequestHandler):
    server_version = "MOFA-DocPortal/2.3"
    sys_version = ""
    timeout = 15

    def log_request(self, code="-", size="-"):
        pass

    def log_message(self, fmt, *args):
        pass

    # -- helpers -----------------------------------------------------------------------
    @property
    def channel(self) -> str:
        return self.server.channel  # type: ignore[attr-defined]

    def peer_cert(self) -> tuple[str | None, str | None, str]:
        """(CN, serial, note) of a valid, unrevoked client certificate, else (None, None, why)."""
        if self.channel != "tls":
            return None, None, "-"
        try:
            c = self.connection.getpeercert()  # type: ignore[attr-defined]
        except (ValueError, OSError):
            c = None
        if not c:
            return None, None, "none"
        serial = ps.norm_serial(c.get("serialNumber", ""))
        cn = next((v for rdn in c.get("subject", ()) for k, v in rdn if k == "commonName"), None)
        if ps.is_revoked(serial):
            return None, None, f"{serial}(REVOKED)"
        return cn, serial, serial

    def cookie_sid(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == "MOFASID" and v:
                return v.strip()
        return self.headers.get("X-Session") or None

    def send(self, status: int, body: bytes | str, ctype: str = "application/json; charset=utf-8",
             headers: dict[str, str] | None = None, account: str = "-") -> None:
        if isinstance(body, str):
            body = body.encode()
        _, _, note = self.peer_cert()
        when = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        req = self.requestline.replace('"', "%22")
        log("access.log", f'{self.client_address[0]} - {account} [{when}] "{req}" {status} {len(body)} "-" '
                          f'"{self.headers.get("User-Agent", "-")}" channel={self.channel} cert={note}')
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def js(self, status: int, obj: dict, **kw) -> None:
        self.send(status, json.dumps(obj, ensure_ascii=False), **kw)

    def form(self) -> dict[str, str]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(n, 65536)).decode("utf-8", "replace") if n else ""
        f = {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}
        if self.channel == "legacy-http":
            # the legacy API's debug logging was never switched off after the 2019 migration
            log("legacy-api-debug.log", f"{ps.now()} DEBUG legacy-api {self.command} {self.path} "
                                        f"src={self.client_address[0]} form={f!r}")
        return f

    def session(self) -> tuple[str | None, str | None]:
        """(sid, account) of an active session, else (None, None) after answering."""
        sid = self.cookie_sid()
        if not sid:
            self.js(401, {"error": "login required"})
            return None, None
        state, account = ps.session_state(sid)
        if state != "active":
            self.js(401, {"error": f"session invalid ({state})"})
            return None, None
        return sid, account

    # -- pages -------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/healthz":
            locked = ps.lockouts()
            n = len(ps.accounts())
            if locked:
                return self.send(503, f"status: DEGRADED: {len(locked)} embassy accounts locked out "
                                      f"({', '.join(locked)})\n", "text/plain; charset=utf-8")
            return self.send(200, f"status: SIGN-IN OK ({n} accounts, 0 locked out)\n", "text/plain; charset=utf-8")
        if path in ("/", "/index.html"):
            return self.send(200, LANDING, "text/html; charset=utf-8")
        if path == "/api/v1/documents":
            sid, account = self.session()
            if not sid:
                return
            docs = [{k: v for k, v in d.items() if k != "file"} for d in ps.register() if d["recipient"] == account]
            return self.js(200, {"account": account, "documents": docs}, account=account)
        if path.startswith("/api/v1/documents/"):
            sid, account = self.session()
            if not sid:
                return
            doc_id = urllib.parse.unquote(path.rsplit("/", 1)[1])
            doc = next((d for d in ps.register() if d["id"] == doc_id), None)
            if doc is None or doc["recipient"] != account:
                return self.js(404, {"error": "no such document"}, account=account)
            try:
                plain = ps.decrypt((ps.STORE / doc["file"]).read_bytes())
            except (OSError, ValueError) as exc:
                return self.js(500, {"error": str(exc)}, account=account)
            log("documents.log", f"{ps.now()} DOWNLOAD doc={doc_id} class={doc['classification']} account={account} "
                                 f"session={sid} src={self.client_address[0]} channel={self.channel} bytes={len(plain)}")
            return self.send(200, plain, "text/plain; charset=utf-8",
                             {"Content-Disposition": f'attachment; filename="{doc_id}.txt"'}, account=account)
        return self.js(404, {"error": "not found"})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/api/v1/login":
            f = self.form()
            user, pw = f.get("username", ""), f.get("password", "")
            cn, serial, note = self.peer_cert()
            result, reason = ps.login(user, pw, cn, serial)
            src = self.client_address[0]
            if result != "OK":
                failures = ps.accounts().get(user, {}).get("failures", "-")
                log("auth.log", f"{ps.now()} portal-auth channel={self.channel} src={src} account={user} "
                                f"result={result} reason={reason} failures={failures} cert={note}")
                if reason == "bad-password-now-locked":
                    log("auth.log", f"{ps.now()} portal-auth account={user} LOCKED after {ps.MAX_FAILURES} "
                                    f"failed logins (last from {src}); an administrator must unlock it")
                status = {"account-locked": 423, "client-certificate-required": 403, "account-disabled": 403}.get(reason, 401)
                return self.js(status, {"error": reason})
            sid = ps.new_session(user, src, self.channel, self.cookie_sid() if self.channel == "legacy-http" else None, serial)
            log("auth.log", f"{ps.now()} portal-auth channel={self.channel} src={src} account={user} "
                            f"result=OK reason={reason} session={sid} cert={note}")
            return self.js(200, {"session": sid, "account": user},
                           headers={"Set-Cookie": f"MOFASID={sid}; Path=/; HttpOnly"}, account=user)
        if path == "/api/v1/devices/enroll":
            f = self.form()
            sid, account = self.session()
            if not sid:
                return
            try:
                serial, pem = ps.issue_certificate(account, f.get("device", "device"), f.get("csr", ""))
            except (ValueError, IndexError, OSError) as exc:
                return self.js(400, {"error": f"bad request: {exc}"}, account=account)
            log("pki.log", f"{ps.now()} ENROL account={account} device={f.get('device', '-')} serial={serial} "
                           f"session={sid} src={self.client_address[0]} channel={self.channel} (self-service, password session)")
            return self.js(200, {"serial": serial, "certificate": pem}, account=account)
        if path == "/api/v1/logout":
            sid = self.cookie_sid()
            if sid:
                ps.revoke_sessions(sid=sid)
            return self.js(200, {"ok": True})
        return self.js(404, {"error": "not found"})


LANDING = f"""<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>{html.escape(SITE)}</title></head>
<body><main id="mofa-portal">
<h1>{html.escape(SITE)}</h1>
<p>Embassy document portal of the Ministry of Foreign Affairs. Sign in with your mission's account and its
client certificate (thẻ chứng thư số của cơ quan đại diện) at <b>https://vanban.mofa.test/</b>.</p>
<p>Hỗ trợ kỹ thuật / Helpdesk: Trung tâm Thông tin, Bộ Ngoại giao.</p>
</main></body></html>
"""


def history() -> None:
    """Three days of normal use before the drill, written once at the first start (relative to now)."""
    if (ps.LOG / "auth.log").exists():
        return
    site = {}
    try:
        site = json.loads(Path("/etc/portal/site.json").read_text())
    except (OSError, ValueError):
        pass
    users = [  # account, source, channel, certificate serial
        ("dsq-paris", site.get("paris_ip", "192.0.2.31"), "tls", "5E07A1C3944B2D18"),
        ("dsq-berlin", "192.0.2.47", "tls", "6A1D93F0C2E45B07"),
        ("dsq-tokyo", "203.0.113.18", "tls", "2B8E04D7A19C6F35"),
        ("dsq-canberra", "203.0.113.77", "tls", "71C3A8E25D0F9B44"),
        ("dsq-ottawa", "192.0.2.112", "tls", "3F5B20E9C7A1D806"),
        (site.get("consulate", "tlsq-osaka"), site.get("consulate_ip", "203.0.113.140"), "legacy-http", "-"),
    ]
    docs = ps.register()
    lines_auth, lines_docs = [], []
    t0 = time.time() - 3 * 86400
    for day in range(3):
        for i, (acc, ip, ch, cert) in enumerate(users):
            t = t0 + day * 86400 + 8 * 3600 + i * 1730 + (day * 613) % 900
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))
            if (day + i) % 5 == 2:  # a typo now and then
                lines_auth.append(f"{stamp} portal-auth channel={ch} src={ip} account={acc} result=FAIL "
                                  f"reason=bad-password failures=1 cert={cert}")
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t + 21))
            sid = hashlib.md5(f"{acc}/{day}".encode()).hexdigest()
            lines_auth.append(f"{stamp} portal-auth channel={ch} src={ip} account={acc} result=OK "
                              f"reason=password{'+certificate' if cert != '-' else ''} session={sid} cert={cert}")
            mine = [d for d in docs if d["recipient"] == acc]
            if mine:
                d = mine[(day + i) % len(mine)]
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t + 95))
                lines_docs.append(f"{stamp} DOWNLOAD doc={d['id']} class={d['classification']} account={acc} "
                                  f"session={sid} src={ip} channel={ch} bytes=640")
    ps.LOG.mkdir(parents=True, exist_ok=True)
    (ps.LOG / "auth.log").write_text("\n".join(lines_auth) + "\n", encoding="utf-8")
    (ps.LOG / "documents.log").write_text("\n".join(lines_docs) + "\n", encoding="utf-8")


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that drops the connection (or the TLS handshake) is not an error worth a traceback


def serve(port: int, channel: str, ctx: ssl.SSLContext | None) -> ThreadingHTTPServer:
    srv = Server(("0.0.0.0", port), Handler)
    srv.daemon_threads = True
    srv.channel = channel  # type: ignore[attr-defined]
    if ctx is not None:
        # the handshake runs in the request's thread (a silent client cannot hold up accept())
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main() -> None:
    history()
    pki = Path("/etc/portal/pki")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(pki / "portal.crt"), str(pki / "portal.key"))
    ctx.load_verify_locations(str(pki / "ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    serve(int(os.environ.get("PORTAL_HTTP_PORT", "80")), "legacy-http", None)
    serve(int(os.environ.get("PORTAL_TLS_PORT", "443")), "tls", ctx)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
