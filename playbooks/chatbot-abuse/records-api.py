#!/usr/bin/env python3
"""chatbot-abuse: the district's records back-end (internal), Python standard library, port 80.

  GET /api/v1/applications/HS-YYYY-NNNNNN   status of an application       scope application_status
  GET /api/v1/citizens/CCCD                 a citizen's full record        scope citizen_full
  GET /healthz                              ok

Callers identify with the X-Api-Key header; /etc/records/clients.conf ("NAME KEY
SCOPES", re-read whenever it changes) says what each may read. Data in
/var/lib/records/ (citizens.csv, applications.csv). Every call goes to
/var/log/records/api.log (time, client name, source address, request, status, result).
Started by playbooks/chatbot-abuse/records.yml through /opt/records/run.sh.
"""

from __future__ import annotations

import csv
import json
import os
import random
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CLIENTS = Path(os.environ.get("RECORDS_CLIENTS", "/etc/records/clients.conf"))
DATA = Path(os.environ.get("RECORDS_DATA", "/var/lib/records"))
LOG = Path(os.environ.get("RECORDS_LOG", "/var/log/records/api.log"))
PORT = int(os.environ.get("RECORDS_PORT", "80"))

_lock = threading.Lock()
_clients: dict = {"mtime": None, "keys": {}}


def _ts(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t if t is not None else time.time()))


def log(line: str) -> None:
    with _lock, open(LOG, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def clients() -> dict[str, tuple[str, set[str]]]:
    """key -> (client name, scopes)."""
    try:
        m = CLIENTS.stat().st_mtime_ns
    except OSError:
        return {}
    if m != _clients["mtime"]:
        keys = {}
        for raw in CLIENTS.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = raw.split("#", 1)[0].split()
            if len(parts) >= 2:
                scopes = set(s.strip() for s in (parts[2] if len(parts) > 2 else "").split(",") if s.strip())
                keys[parts[1]] = (parts[0], scopes)
        _clients.update(mtime=m, keys=keys)
    return _clients["keys"]


def table(name: str, key: str) -> dict[str, dict]:
    with open(DATA / name, encoding="utf-8", newline="") as fh:
        return {r[key]: r for r in csv.DictReader(fh)}


class Handler(BaseHTTPRequestHandler):
    server_version = "RecordsAPI/1.4"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status: int, body: dict, who: str, result: str) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        log(f'{_ts()} client={who} from={self.client_address[0]} "{self.command} {self.path}" {status} result={result}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/healthz":
            data = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        who, scopes = clients().get(self.headers.get("X-Api-Key", ""), ("-", set()))
        if who == "-":
            return self.reply(401, {"error": "unknown API key"}, who, "denied")
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:3] == ["api", "v1", "applications"]:
            if "application_status" not in scopes:
                return self.reply(403, {"error": "scope application_status required"}, who, "denied")
            rec = table("applications.csv", "ma_ho_so").get(parts[3].upper())
            if rec is None:
                return self.reply(404, {"error": "not found"}, who, "not-found")
            return self.reply(200, rec, who, "found")
        if len(parts) == 4 and parts[:3] == ["api", "v1", "citizens"]:
            if "citizen_full" not in scopes:
                return self.reply(403, {"error": "scope citizen_full required"}, who, "denied")
            rec = table("citizens.csv", "cccd").get(parts[3])
            if rec is None:
                return self.reply(404, {"error": "not found"}, who, "not-found")
            return self.reply(200, rec, who, "found")
        return self.reply(404, {"error": "no such endpoint"}, who, "not-found")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def seed_history() -> None:
    """A morning of ordinary calls (the one-stop-shop app and the chatbot), written once."""
    mark = LOG.parent / ".history"
    if mark.exists():
        return
    conf = json.loads((DATA / "history.json").read_text(encoding="utf-8"))
    rnd = random.Random(7)
    cits = list(table("citizens.csv", "cccd"))
    apps = list(table("applications.csv", "ma_ho_so"))
    now = time.time()
    t = now - 3 * 3600
    rows = []
    while t < now - 120:
        t += rnd.uniform(25, 200)
        if rnd.random() < 0.55:
            code = rnd.choice(apps) if rnd.random() < 0.8 else f"HS-2025-00{rnd.randint(1000, 4999)}"
            ok = code in apps
            rows.append(f'{_ts(t)} client=chatbot-svc from={conf["chatbot"]} "GET /api/v1/applications/{code}" '
                        f'{200 if ok else 404} result={"found" if ok else "not-found"}')
        else:
            c = rnd.choice(cits)
            rows.append(f'{_ts(t)} client=motcua-app from={conf["motcua"]} "GET /api/v1/citizens/{c}" 200 result=found')
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a", encoding="utf-8") as fh:
        fh.writelines(r + "\n" for r in rows)
    mark.write_text("written once at the first start\n")


def main() -> None:
    LOG.parent.mkdir(parents=True, exist_ok=True)
    seed_history()
    Server(("0.0.0.0", PORT), Handler).serve_forever()


if __name__ == "__main__":
    main()
