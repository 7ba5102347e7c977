#!/usr/bin/env python3
"""The Paris embassy's document-sync client: the real users of the portal.

Signs in over HTTPS with the embassy's client certificate (its smart card, here a key file),
keeps its session, lists the embassy's documents every few seconds and downloads one now and
then. When the portal refuses the session (a lockout, a revoked session) it signs in again.
Each result goes to /var/log/embassy/docsync.log. Settings: /etc/embassy/docsync.json.
Started by playbooks/mofa-document-portal/embassy.yml; pid in /run/docsync.pid.
"""

import http.client
import json
import ssl
import time
import urllib.parse

CONF = json.load(open("/etc/embassy/docsync.json"))
LOG = "/var/log/embassy/docsync.log"


def log(msg: str) -> None:
    with open(LOG, "a") as fh:
        fh.write(time.strftime("%Y-%m-%dT%H:%M:%S%z ") + msg + "\n")


def ctx() -> ssl.SSLContext:
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations("/etc/embassy/pki/ca.crt")
    c.check_hostname = False  # the portal is reached by this team's address; its CA is still verified
    c.load_cert_chain("/etc/embassy/pki/client.crt", "/etc/embassy/pki/client.key")
    return c


def call(method: str, path: str, sid: str | None = None, form: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(CONF["portal"], 443, context=CTX, timeout=5)
    try:
        headers = {"User-Agent": "MOFA-DocSync/3.1 (dsq-paris)"}
        data = None
        if sid:
            headers["Cookie"] = f"MOFASID={sid}"
        if form is not None:
            data = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


CTX = ctx()


def main() -> None:
    sid = None
    n = 0
    while True:
        n += 1
        try:
            if sid is None:
                st, body = call("POST", "/api/v1/login", form={"username": CONF["account"], "password": CONF["password"]})
                if st == 200:
                    sid = json.loads(body)["session"]
                    log(f"signed in as {CONF['account']} (session {sid[:8]}...)")
                else:
                    log(f"sign-in refused: HTTP {st} {body[:80].decode(errors='replace')}")
            else:
                st, body = call("GET", "/api/v1/documents", sid)
                if st != 200:
                    log(f"session refused: HTTP {st}; signing in again")
                    sid = None
                elif n % 6 == 0:
                    docs = json.loads(body).get("documents", [])
                    if docs:
                        d = docs[n // 6 % len(docs)]["id"]
                        st, _ = call("GET", f"/api/v1/documents/{d}", sid)
                        log(f"downloaded {d}: HTTP {st}")
        except (OSError, ssl.SSLError, http.client.HTTPException, ValueError, KeyError) as exc:
            log(f"portal unreachable: {type(exc).__name__}: {exc}")
            sid = None
        time.sleep(4)


if __name__ == "__main__":
    main()
