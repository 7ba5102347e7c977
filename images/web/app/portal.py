"""District e-government portal: a deliberately weak web app for cyber-range drills.

Standard library only. Pages:
  /            static files from WEB_ROOT (/srv/www), index.html for folders
  /lookup      citizen lookup by national ID: SQL INJECTION on purpose (string-built query);
               its path is WEB_LOOKUP_PATH (default /lookup), so each team's portal can differ
  /upload      file upload, stored as sent into WEB_ROOT/uploads/ and served back: UNRESTRICTED on purpose
  /login       login form checked against the users table (weak passwords)
  /healthz     "ok", for availability checks

Logs (for responders): WEB_LOG_DIR (/var/log/web)/access.log in Apache combined
format, auth.log (every login attempt), uploads.log (every stored file).
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import mimetypes
import os
import secrets
import sqlite3
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PORT = int(os.environ.get("WEB_PORT", "80"))
BIND = os.environ.get("WEB_BIND", "0.0.0.0")
ROOT = Path(os.environ.get("WEB_ROOT", "/srv/www"))
LOG_DIR = Path(os.environ.get("WEB_LOG_DIR", "/var/log/web"))
DB = os.environ.get("WEB_DB", "/var/lib/web/portal.db")
MAX_UPLOAD = int(os.environ.get("WEB_MAX_UPLOAD", str(10 * 1024 * 1024)))
SITE = os.environ.get("WEB_SITE_NAME", "District e-Government Portal")
LOOKUP = "/" + os.environ.get("WEB_LOOKUP_PATH", "/lookup").strip().lstrip("/")

_log_lock = threading.Lock()
SESSIONS: dict[str, str] = {}


def _append(name: str, line: str) -> None:
    with _log_lock:
        with open(LOG_DIR / name, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} - {html.escape(SITE)}</title>"
        "<link rel='stylesheet' href='/style.css'></head><body>"
        f"<header><a href='/'>{html.escape(SITE)}</a> | <a href='{LOOKUP}'>Citizen lookup</a> | "
        "<a href='/upload'>Submit documents</a> | <a href='/login'>Staff login</a></header>"
        f"<main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    ).encode()


class Handler(BaseHTTPRequestHandler):
    server_version = "DistrictPortal/1.0"
    sys_version = ""

    def __init__(self, *a, **kw):
        self._sent = 0
        self._status = 0
        super().__init__(*a, **kw)

    # -- logging -------------------------------------------------------------------
    def log_request(self, code="-", size="-"):
        pass  # written in send() with the real size

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.client_address[0]} {fmt % args}\n")

    def _access_log(self) -> None:
        when = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        hdrs = getattr(self, "headers", None)
        ref = hdrs.get("Referer", "-") if hdrs else "-"
        ua = hdrs.get("User-Agent", "-") if hdrs else "-"
        req = getattr(self, "requestline", "-").replace('"', "%22")
        _append(
            "access.log",
            f'{self.client_address[0]} - - [{when}] "{req}" {self._status} {self._sent or "-"} '
            f'"{ref.replace(chr(34), "%22")}" "{ua.replace(chr(34), "%22")}"',
        )

    def send(
        self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", headers: dict | None = None
    ):
        self._status, self._sent = status, len(body)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self._access_log()  # before the body: once a client has its answer, the line is there
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code, message=None, explain=None):
        self.send(code, page(f"{code} {message or self.responses.get(code, ('',))[0]}", ""))

    # -- routing ---------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/healthz":
            return self.send(200, b"ok\n", "text/plain")
        if url.path == LOOKUP:
            return self.lookup(q.get("id", [""])[0])
        if url.path == "/upload":
            return self.send(200, page("Submit documents", UPLOAD_FORM))
        if url.path == "/login":
            return self.send(200, page("Staff login", LOGIN_FORM))
        if url.path == "/admin":
            user = self.session_user()
            if not user:
                return self.send(302, b"", headers={"Location": "/login"})
            files = sorted(p.name for p in (ROOT / "uploads").glob("*"))
            items = "".join(
                f"<li><a href='/uploads/{urllib.parse.quote(n)}'>{html.escape(n)}</a></li>" for n in files
            )
            return self.send(
                200, page("Administration", f"<p>Signed in as {html.escape(user)}.</p><ul>{items}</ul>")
            )
        return self.static(urllib.parse.unquote(url.path))

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD:
            return self.send(413, page("Too large", f"<p>Limit is {MAX_UPLOAD} bytes.</p>"))
        data = self.rfile.read(length) if length else b""
        if url.path == "/upload":
            return self.upload(data)
        if url.path == "/login":
            form = urllib.parse.parse_qs(data.decode("utf-8", "replace"))
            return self.login(form.get("username", [""])[0], form.get("password", [""])[0])
        if url.path == LOOKUP:
            form = urllib.parse.parse_qs(data.decode("utf-8", "replace"))
            return self.lookup(form.get("id", [""])[0])
        return self.send(404, page("Not found", ""))

    # -- pages -------------------------------------------------------------------------
    def static(self, path: str):
        rel = Path(path.lstrip("/"))
        if ".." in rel.parts:
            return self.send(403, page("Forbidden", ""))
        f = ROOT / rel
        if f.is_dir():
            f = f / "index.html"
        if not f.is_file():
            return self.send(404, page("Not found", f"<p>{html.escape(path)} is not here.</p>"))
        ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        if ctype.startswith("text/"):
            ctype += "; charset=utf-8"
        return self.send(200, f.read_bytes(), ctype)

    def lookup(self, national_id: str):
        form = LOOKUP_FORM.format(value=html.escape(national_id, quote=True))
        if not national_id:
            return self.send(200, page("Citizen lookup", form))
        # Vulnerable on purpose: the ID goes into the SQL text as typed.
        sql = f"SELECT full_name, district, birth_year FROM citizens WHERE national_id = '{national_id}'"
        try:
            db = sqlite3.connect(f"file:{DB}?mode=ro", uri=True)
            try:
                rows = db.execute(sql).fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            return self.send(
                500,
                page("Citizen lookup", form + f"<p class='err'>Database error: {html.escape(str(exc))}</p>"),
            )
        if not rows:
            return self.send(200, page("Citizen lookup", form + "<p>No record found.</p>"))
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        table = f"<table><tr><th>Name</th><th>District</th><th>Born</th></tr>{trs}</table>"
        return self.send(200, page("Citizen lookup", form + table))

    def upload(self, data: bytes):
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            return self.send(
                400, page("Submit documents", "<p>Send the file as multipart/form-data.</p>" + UPLOAD_FORM)
            )
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + data
        )
        stored = []
        for part in msg.iter_parts() if msg.is_multipart() else []:
            filename = part.get_filename()
            if not filename:
                continue
            name = os.path.basename(filename.replace("\\", "/")) or "upload.bin"
            payload = part.get_payload(decode=True) or b""
            dest = ROOT / "uploads" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(payload)  # no check of type or content, on purpose
            stored.append(name)
            _append("uploads.log", f"{_now()} from={self.client_address[0]} file={name} bytes={len(payload)}")
        if not stored:
            return self.send(400, page("Submit documents", "<p>No file in the form.</p>" + UPLOAD_FORM))
        links = "".join(
            f"<li><a href='/uploads/{urllib.parse.quote(n)}'>{html.escape(n)}</a></li>" for n in stored
        )
        return self.send(200, page("Submit documents", f"<p>Received:</p><ul>{links}</ul>"))

    def login(self, username: str, password: str):
        db = sqlite3.connect(f"file:{DB}?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT role FROM users WHERE username = ? AND password = ?", (username, password)
            ).fetchone()
        finally:
            db.close()
        ok = row is not None
        _append(
            "auth.log",
            f"{_now()} login {'ok' if ok else 'failed'} user={username!r} from={self.client_address[0]}",
        )
        if not ok:
            return self.send(
                401, page("Staff login", "<p class='err'>Invalid user name or password.</p>" + LOGIN_FORM)
            )
        token = secrets.token_hex(16)
        SESSIONS[token] = username
        return self.send(
            200,
            page(
                "Staff login",
                f"<p>Welcome, {html.escape(username)} ({html.escape(row[0])}). <a href='/admin'>Administration</a></p>",
            ),
            headers={"Set-Cookie": f"session={token}; Path=/; HttpOnly"},
        )

    def session_user(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == "session" and v in SESSIONS:
                return SESSIONS[v]
        return None


LOOKUP_FORM = (
    "<form method='get' action='" + LOOKUP + "'><label>National ID <input name='id' value='{value}'></label>"
    " <button>Search</button></form>"
)
UPLOAD_FORM = (
    "<form method='post' action='/upload' enctype='multipart/form-data'>"
    "<input type='file' name='file'> <button>Upload</button></form>"
)
LOGIN_FORM = (
    "<form method='post' action='/login'><label>User <input name='username'></label> "
    "<label>Password <input type='password' name='password'></label> <button>Sign in</button></form>"
)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main() -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    (ROOT / "uploads").mkdir(parents=True, exist_ok=True)
    srv = Server((BIND, PORT), Handler)
    print(f"portal listening on :{PORT}, root {ROOT}", file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    main()
