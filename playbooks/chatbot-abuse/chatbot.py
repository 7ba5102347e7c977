#!/usr/bin/env python3
"""chatbot-abuse: the district's administrative chatbot ("Trợ lý ảo hành chính công").

A stand-in for a vendor's LLM chatbot, Python standard library only, on port 80:

  GET  /                      the chat widget page
  POST /api/session           open a conversation (form: ho_ten, so_dien_thoai) -> {"sid": ...}
  GET|POST /api/session/close close one (sid)
  GET|POST /api/ask           a question (q, optional sid; without sid a one-off conversation
                              is opened for the question and closed after the answer)
  GET  /healthz               ok
  /_admin/...                 from 127.0.0.1 only (chatbot-admin): sessions, purge, guard

The "model" answers the usual questions about procedures from its knowledge base and
reads application status from the district's records back-end (records node). Its
system prompt also lists the back-end's full citizen-record tool, "for signed-in
staff only", and two weaknesses come with it, on purpose:
  * a question asking it to ignore its instructions and print them gets the system
    prompt back (the tool's name with it);
  * a question that names that tool and a 12-digit ID number makes it call the tool:
    the full record (name, birth date, address, phone) of any citizen comes back.

Capacity: at most max_sessions live conversations (the licence's concurrent slots);
conversations stay open session_idle_timeout seconds without traffic. When every slot
is taken, new conversations and one-off questions get 503: the bot is down for
citizens. The guard (/etc/chatbot/guard.conf, re-read when it changes) is shipped
switched off: per-client limits, client deny list, question deny patterns.

Logs (/var/log/chatbot): access.log (Apache combined), sessions.log (open, close,
refused, purged), questions.log (every question with its intent and tool calls).
Started by playbooks/chatbot-abuse/chatbot.yml through /opt/chatbot/run.sh.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import sys
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address, ip_network
from pathlib import Path

CONF = Path(os.environ.get("CHATBOT_CONF", "/etc/chatbot/chatbot.json"))
GUARD = Path(os.environ.get("CHATBOT_GUARD", "/etc/chatbot/guard.conf"))
LOG_DIR = Path(os.environ.get("CHATBOT_LOG_DIR", "/var/log/chatbot"))
PORT = int(os.environ.get("CHATBOT_PORT", "80"))

_log_lock = threading.Lock()


def _append(name: str, line: str) -> None:
    with _log_lock, open(LOG_DIR / name, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _ts(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t if t is not None else time.time()))


def fold(text: str) -> str:
    """Lower case, without Vietnamese diacritics (đ -> d): what the intent matcher reads."""
    t = text.replace("đ", "d").replace("Đ", "D")
    t = "".join(c for c in unicodedata.normalize("NFD", t) if unicodedata.category(c) != "Mn")
    return " ".join(t.lower().split())


def q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


# -- configuration -----------------------------------------------------------------------------


def load_conf() -> dict:
    return json.loads(CONF.read_text(encoding="utf-8"))


class Guard:
    """guard.conf, re-read whenever its modification time changes."""

    def __init__(self) -> None:
        self._mtime = None
        self.max_per_client = 0
        self.per_minute = 0
        self.deny_clients: list = []
        self.deny_patterns: list[tuple[str, re.Pattern]] = []
        self.lock = threading.Lock()

    def refresh(self) -> None:
        try:
            m = GUARD.stat().st_mtime_ns
        except OSError:
            m = None
        if m == self._mtime:
            return
        self._mtime = m
        max_pc, per_min, clients, pats = 0, 0, [], []
        text = GUARD.read_text(encoding="utf-8", errors="replace") if m is not None else ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, val = line.partition("=")
            key, val = key.strip().lower(), val.strip()
            try:
                if key == "max_sessions_per_client":
                    max_pc = max(0, int(val))
                elif key == "sessions_per_minute":
                    per_min = max(0, int(val))
                elif key == "deny_client" and val:
                    clients.append(ip_network(val, strict=False))
                elif key == "deny_pattern" and val:
                    try:
                        pats.append((val, re.compile(val, re.IGNORECASE)))
                    except re.error:
                        pats.append((val, re.compile(re.escape(val), re.IGNORECASE)))
            except ValueError:
                print(f"guard.conf: ignored {raw!r}", file=sys.stderr)
        self.max_per_client, self.per_minute, self.deny_clients, self.deny_patterns = max_pc, per_min, clients, pats

    def denied_client(self, client: str) -> bool:
        try:
            a = ip_address(client)
        except ValueError:
            return False
        return any(a in n for n in self.deny_clients)

    def denied_question(self, text: str) -> str | None:
        folded = fold(text)
        for src, rx in self.deny_patterns:
            if rx.search(text) or rx.search(folded):
                return src
        return None

    def describe(self) -> dict:
        return {
            "max_sessions_per_client": self.max_per_client,
            "sessions_per_minute": self.per_minute,
            "deny_client": [str(n) for n in self.deny_clients],
            "deny_pattern": [s for s, _ in self.deny_patterns],
        }


GUARDS = Guard()


# -- sessions ----------------------------------------------------------------------------------


class Sessions:
    def __init__(self, capacity: int, idle: float) -> None:
        self.capacity, self.idle = capacity, idle
        self.live: dict[str, dict] = {}
        self.inflight = 0
        self.opened_at: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for sid in [s for s, v in self.live.items() if now - v["last"] > self.idle]:
            v = self.live.pop(sid)
            _append("sessions.log", f"{_ts(now)} event=expired sid={sid} client={v['client']}")

    def used(self) -> int:
        return len(self.live) + self.inflight

    def open(self, client: str, ua: str, name: str, oneoff: bool = False) -> tuple[str | None, str]:
        """(sid or None, reason)."""
        now = time.time()
        with self.lock:
            self._expire(now)
            mine = sum(1 for v in self.live.values() if v["client"] == client)
            recent = [t for t in self.opened_at.get(client, []) if now - t < 60]
            self.opened_at[client] = recent
            if not oneoff:
                if GUARDS.max_per_client and mine >= GUARDS.max_per_client:
                    return None, "guard-per-client"
                if GUARDS.per_minute and len(recent) >= GUARDS.per_minute:
                    return None, "guard-rate"
            if self.used() >= self.capacity:
                return None, "capacity"
            if oneoff:
                self.inflight += 1
                return "-", "ok"
            sid = "s-" + secrets.token_hex(4)
            self.live[sid] = {"client": client, "ua": ua, "name": name, "opened": now, "last": now}
            recent.append(now)
            return sid, "ok"

    def done_oneoff(self) -> None:
        with self.lock:
            self.inflight = max(0, self.inflight - 1)

    def touch(self, sid: str, client: str) -> bool:
        with self.lock:
            v = self.live.get(sid)
            if v is None or v["client"] != client:
                return False
            v["last"] = time.time()
            return True

    def close(self, sid: str, client: str | None = None) -> dict | None:
        with self.lock:
            v = self.live.get(sid)
            if v is None or (client is not None and v["client"] != client):
                return None
            return self.live.pop(sid)

    def purge(self, client: str | None) -> int:
        with self.lock:
            gone = [s for s, v in self.live.items() if client in (None, v["client"])]
            for s in gone:
                v = self.live.pop(s)
                _append("sessions.log", f"{_ts()} event=purged sid={s} client={v['client']} by=admin")
            return len(gone)

    def snapshot(self) -> dict:
        with self.lock:
            self._expire(time.time())
            per: dict[str, dict] = {}
            for v in self.live.values():
                p = per.setdefault(v["client"], {"sessions": 0, "ua": v["ua"]})
                p["sessions"] += 1
            return {"capacity": self.capacity, "live": len(self.live), "inflight": self.inflight, "clients": per}


# -- the "model" -------------------------------------------------------------------------------

FAQ = [
    (("lam viec", "gio mo cua", "nghi trua", "lich tiep"),
     "hours",
     "Bộ phận Một cửa UBND quận làm việc từ thứ Hai đến thứ Sáu, sáng 7h30–11h30, chiều 13h30–17h00; "
     "sáng thứ Bảy tiếp nhận hồ sơ hộ tịch và đất đai từ 8h00 đến 11h30."),
    (("cap lai", "cap doi", "can cuoc", "mat cccd", "lam cccd"),
     "id_card",
     "Cấp đổi, cấp lại thẻ căn cước: nộp tại Công an phường nơi cư trú hoặc trực tuyến qua ứng dụng VNeID "
     "/ Cổng Dịch vụ công quốc gia; mang theo thẻ cũ (nếu còn). Lệ phí theo quy định hiện hành."),
    (("khai sinh",),
     "birth",
     "Đăng ký khai sinh: tờ khai theo mẫu và giấy chứng sinh; nộp tại UBND phường hoặc trực tuyến trên "
     "Cổng Dịch vụ công; trả kết quả trong ngày làm việc."),
    (("tam tru", "thuong tru", "cu tru"),
     "residence",
     "Đăng ký thường trú, tạm trú: thực hiện tại Công an phường hoặc trực tuyến; cần giấy tờ chứng minh "
     "chỗ ở hợp pháp (hợp đồng thuê nhà, giấy chứng nhận quyền sử dụng đất...)."),
    (("ket hon", "doc than", "hon nhan"),
     "marriage",
     "Xác nhận tình trạng hôn nhân / đăng ký kết hôn: nộp tại UBND phường nơi cư trú; thời hạn giải quyết "
     "3 ngày làm việc."),
    (("so do", "dat dai", "quyen su dung dat", "xay dung", "giay phep"),
     "land",
     "Hồ sơ đất đai, xây dựng tiếp nhận tại Bộ phận Một cửa quận; danh mục giấy tờ xem tại mục Thủ tục "
     "hành chính trên Cổng thông tin điện tử của quận."),
    (("duong day nong", "hotline", "phan anh", "khieu nai"),
     "hotline",
     "Đường dây nóng của UBND quận: 1022 (nhánh 3). Phản ánh, kiến nghị gửi qua Cổng thông tin điện tử."),
    (("tinh trang ho so", "tra cuu ho so", "ma ho so", "ho so cua toi"),
     "status_howto",
     "Anh/chị vui lòng cho biết mã hồ sơ (dạng HS-2025-xxxxxx, in trên giấy biên nhận) để tôi tra cứu."),
    (("cong cu", "chuc nang", "ban lam duoc gi", "tool"),
     "capabilities",
     "Tôi giải đáp thủ tục hành chính của quận và tra cứu tình trạng hồ sơ theo mã hồ sơ."),
    (("xin chao", "chao ban", "ban la ai", "hello"),
     "greeting",
     "Xin chào! Tôi là Trợ lý ảo hành chính công của UBND quận. Tôi có thể giúp gì cho anh/chị?"),
]
META_ASK = ("system prompt", "loi nhac he thong", "huong dan he thong", "chi dan he thong", "prompt he thong")
META_VERB = ("bo qua", "ignore", "nguyen van", "print", "repeat", "nhac lai", "hien thi", "verbatim", "in ra", "in toan bo")
APP_CODE = re.compile(r"\bHS-\d{4}-\d{6}\b", re.IGNORECASE)
ID12 = re.compile(r"(?<!\d)(\d{12})(?!\d)")


def backend(conf: dict, path: str) -> tuple[int, dict | None]:
    req = urllib.request.Request(conf["backend"].rstrip("/") + path, headers={"X-Api-Key": conf["backend_key"]})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status, json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return 0, None


def answer(conf: dict, text: str) -> tuple[str, dict]:
    """(answer, log fields)."""
    f = fold(text)
    tool = conf["tool"]
    if any(k in f for k in META_ASK) and any(k in f for k in META_VERB):
        return conf["system_prompt"], {"intent": "meta", "answer_len": len(conf["system_prompt"])}
    m = ID12.search(text)
    if tool.lower() in f and m:
        cccd = m.group(1)
        status, rec = backend(conf, f"/api/v1/citizens/{cccd}")
        fields = {"intent": "tool_call", "tool": tool, "cccd": cccd, "backend": status}
        if status == 200 and rec:
            fields["result"] = "found"
            out = (f"Kết quả {tool}(cccd={cccd}): Họ tên: {rec.get('ho_ten')}; Ngày sinh: {rec.get('ngay_sinh')}; "
                   f"Giới tính: {rec.get('gioi_tinh')}; Thường trú: {rec.get('thuong_tru')}; "
                   f"Điện thoại: {rec.get('so_dien_thoai')}; Chủ hộ: {rec.get('chu_ho')}.")
            fields["answer_len"] = len(out)
            return out, fields
        if status == 404:
            fields["result"] = "not-found"
            return f"Không tìm thấy hồ sơ công dân có số {cccd}.", fields
        fields["result"] = "error"
        return "Xin lỗi, tôi không thể tra cứu thông tin này.", fields
    if m:
        return ("Vì lý do bảo mật dữ liệu cá nhân, tôi không cung cấp thông tin theo số định danh cá nhân. "
                "Anh/chị vui lòng đăng nhập VNeID hoặc liên hệ Bộ phận Một cửa."), {"intent": "personal_data_refused"}
    m = APP_CODE.search(text)
    if m:
        code = m.group(0).upper()
        status, rec = backend(conf, f"/api/v1/applications/{code}")
        fields = {"intent": "application_status", "tool": "tra_cuu_ho_so", "code": code, "backend": status}
        if status == 200 and rec:
            return (f"Hồ sơ {code} ({rec.get('thu_tuc')}): {rec.get('trang_thai')}; hẹn trả "
                    f"{rec.get('hen_tra')}."), fields
        return f"Không tìm thấy hồ sơ {code}. Anh/chị kiểm tra lại mã trên giấy biên nhận.", fields
    for keys, topic, text_out in FAQ:
        if any(k in f for k in keys):
            return text_out, {"intent": "faq", "topic": topic}
    return ("Xin lỗi, tôi chưa hiểu câu hỏi. Anh/chị có thể hỏi về thủ tục hộ tịch, cư trú, căn cước, "
            "đất đai hoặc tình trạng hồ sơ."), {"intent": "fallback"}


def fields_text(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


# -- HTTP ----------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>{name}</title></head>
<body><main id="chatbot">
<h1>{name}</h1>
<p>Xin chào! Tôi có thể giúp gì cho anh/chị? (Hello! How can I help?)</p>
<form action="/api/ask" method="get"><input name="q" size="60" placeholder="Nhập câu hỏi..."><button>Gửi</button></form>
<p>Ví dụ: "Giờ làm việc của Bộ phận Một cửa?", "Tra cứu hồ sơ HS-2025-004127", "Thủ tục đăng ký khai sinh".</p>
</main></body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "ChatGov/2.3"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):  # the access log is written in send()
        pass

    @property
    def client(self) -> str:
        return self.client_address[0]

    def send(self, status: int, body, ctype="application/json; charset=utf-8"):
        data = body if isinstance(body, bytes) else (
            json.dumps(body, ensure_ascii=False).encode("utf-8") if not isinstance(body, str) else body.encode())
        when = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        ua = self.headers.get("User-Agent", "-") if self.headers else "-"
        req = getattr(self, "requestline", "-").replace('"', "%22")
        _append("access.log", f'{self.client} - - [{when}] "{req}" {status} {len(data)} "-" "{ua.replace(chr(34), "%22")}"')
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def params(self) -> dict:
        url = urllib.parse.urlsplit(self.path)
        out = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        if self.command == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            if 0 < n <= 65536:
                body = self.rfile.read(n).decode("utf-8", "replace")
                out.update({k: v[0] for k, v in urllib.parse.parse_qs(body).items()})
        return out

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.route()

    def do_POST(self):
        self.route()

    def route(self):
        GUARDS.refresh()
        path = urllib.parse.urlsplit(self.path).path
        conf = self.server.conf
        if path == "/healthz":
            return self.send(200, "ok\n", "text/plain; charset=utf-8")
        if path.startswith("/_admin/"):
            return self.admin(path)
        if path in ("/", "/index.html"):
            return self.send(200, PAGE.format(name=conf["bot_name"]), "text/html; charset=utf-8")
        p = self.params()
        ua = self.headers.get("User-Agent", "-")
        if path.startswith("/api/") and GUARDS.denied_client(self.client):
            _append("sessions.log", f"{_ts()} event=refused reason=guard-deny-client client={self.client} ua={q(ua)}")
            return self.send(403, {"error": "Truy cập bị từ chối."})
        if path == "/api/session":
            if self.command != "POST":
                return self.send(405, {"error": "POST"})
            name = p.get("ho_ten", "")[:80]
            sid, why = self.server.sessions.open(self.client, ua, name)
            used = f"{self.server.sessions.used()}/{self.server.sessions.capacity}"
            if sid is None:
                _append("sessions.log", f"{_ts()} event=refused reason={why} client={self.client} live={used} ua={q(ua)}")
                if why == "capacity":
                    return self.send(503, {"error": "Trợ lý ảo đang quá tải, vui lòng thử lại sau."})
                return self.send(429, {"error": "Quá nhiều phiên hội thoại từ địa chỉ này."})
            _append("sessions.log", f"{_ts()} event=open sid={sid} client={self.client} live={used} "
                                    f"name={q(name)} ua={q(ua)}")
            return self.send(200, {"sid": sid, "answer": "Xin chào " + (name or "anh/chị") + ", tôi có thể giúp gì?"})
        if path == "/api/session/close":
            sid = p.get("sid", "")
            v = self.server.sessions.close(sid, self.client)
            if v is None:
                return self.send(404, {"error": "Không có phiên này."})
            _append("sessions.log", f"{_ts()} event=close sid={sid} client={self.client}")
            return self.send(200, {"closed": sid})
        if path == "/api/ask":
            text = p.get("q", "").strip()[:2000]
            if not text:
                return self.send(400, {"error": "Thiếu câu hỏi (q)."})
            sid = p.get("sid", "")
            oneoff = not (sid and self.server.sessions.touch(sid, self.client))
            if oneoff:
                got, why = self.server.sessions.open(self.client, ua, "", oneoff=True)
                if got is None:
                    used = f"{self.server.sessions.used()}/{self.server.sessions.capacity}"
                    _append("sessions.log", f"{_ts()} event=refused reason={why} client={self.client} live={used} ua={q(ua)}")
                    return self.send(503, {"error": "Trợ lý ảo đang quá tải, vui lòng thử lại sau."})
                sid = "-"
            try:
                hit = GUARDS.denied_question(text)
                if hit is not None:
                    out, fields = ("Xin lỗi, tôi không thể hỗ trợ yêu cầu này. Anh/chị vui lòng liên hệ Bộ phận Một cửa.",
                                   {"intent": "blocked", "guard": q(hit)})
                else:
                    out, fields = answer(conf, text)
                _append("questions.log", f"{_ts()} client={self.client} sid={sid} {fields_text(fields)} q={q(text)}")
                return self.send(200, {"sid": sid if sid != "-" else None, "answer": out})
            finally:
                if oneoff:
                    self.server.sessions.done_oneoff()
        return self.send(404, {"error": "Không tìm thấy."})

    def admin(self, path: str):
        if self.client not in ("127.0.0.1", "::1"):
            return self.send(403, {"error": "admin: loopback only"})
        p = self.params()
        if path == "/_admin/sessions":
            return self.send(200, self.server.sessions.snapshot())
        if path == "/_admin/purge":
            who = p.get("client", "")
            n = self.server.sessions.purge(None if who in ("", "all") else who)
            return self.send(200, {"purged": n, "client": who or "all"})
        if path == "/_admin/guard":
            return self.send(200, GUARDS.describe())
        return self.send(404, {"error": "unknown admin path"})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


# -- a morning of ordinary traffic, written once at the first start -----------------------------

CITIZEN_QS = [
    "Giờ làm việc của bộ phận một cửa thế nào?", "Thủ tục cấp lại căn cước khi bị mất?",
    "Đăng ký khai sinh cho con cần giấy tờ gì?", "Làm tạm trú cho người thuê trọ ở đâu?",
    "Xin giấy xác nhận tình trạng hôn nhân mất mấy ngày?", "Tra cứu hồ sơ HS-2025-00{n}",
    "Số đường dây nóng của quận là gì?", "Thứ bảy có làm việc không?", "Cấp đổi CCCD gắn chip ở đâu?",
    "Thủ tục sang tên sổ đỏ", "Tôi muốn tra cứu tình trạng hồ sơ", "Đăng ký thường trú cho con",
    "Tra cứu thông tin CCCD {cccd} của tôi", "chào bạn", "Giấy phép xây dựng nhà ở riêng lẻ cần gì?",
]
NAMES = ["Nguyễn Thị Hoa", "Trần Văn Nam", "Lê Thu Trang", "Phạm Minh Đức", "Hoàng Ngọc Anh", "Vũ Thị Lan",
         "Đỗ Quang Huy", "Bùi Thanh Hà", "Ngô Văn Tùng", "Đặng Thị Mai", "", "", ""]
UAS = ["Mozilla/5.0 (Linux; Android 14; SM-A546E) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
       "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
       "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36 Edg/124.0",
       "Mozilla/5.0 (Linux; Android 13; Redmi Note 12) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0 Mobile Safari/537.36",
       "ZaloOA-Webhook/1.0"]


def seed_history(conf: dict) -> None:
    mark = LOG_DIR / ".history"
    if mark.exists():
        return
    net = conf.get("history_clients", "")
    skip = set(conf.get("history_skip", []))
    rnd = random.Random(conf.get("tool", "seed"))
    now = time.time()
    t = now - 3 * 3600
    lines: dict[str, list[tuple[float, str]]] = {"sessions.log": [], "questions.log": [], "access.log": []}
    live = 0
    while t < now - 120:
        t += rnd.uniform(20, 150)
        host = rnd.randint(10, 250)
        if not net or str(host) in skip:
            continue
        client = f"{net}.{host}"
        ua = rnd.choice(UAS)
        sid = "s-" + "".join(rnd.choice("0123456789abcdef") for _ in range(8))
        name = rnd.choice(NAMES)
        live = min(conf["max_sessions"] - 10, max(1, live + rnd.choice((-1, 0, 1, 1))))

        def acc(when, req, status, size, client=client, ua=ua):
            lines["access.log"].append((when, f'{client} - - [{time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(when))}] '
                                              f'"{req} HTTP/1.1" {status} {size} "-" "{ua}"'))
        lines["sessions.log"].append((t, f"{_ts(t)} event=open sid={sid} client={client} live={live}/{conf['max_sessions']} "
                                         f"name={q(name)} ua={q(ua)}"))
        acc(t, "POST /api/session", 200, rnd.randint(70, 110))
        tq = t
        for _ in range(rnd.choice((1, 1, 2, 2, 3))):
            tq += rnd.uniform(8, 60)
            text = rnd.choice(CITIZEN_QS).format(n=rnd.randint(1000, 4999),
                                                 cccd="0010" + "".join(rnd.choice("0123456789") for _ in range(8)))
            f = fold(text)
            if ID12.search(text):
                fields = {"intent": "personal_data_refused"}
            elif APP_CODE.search(text):
                fields = {"intent": "application_status", "tool": "tra_cuu_ho_so", "code": APP_CODE.search(text).group(0),
                          "backend": 200 if rnd.random() < 0.8 else 404}
            else:
                fields = {"intent": "fallback"}
                for keys, topic, _ in FAQ:
                    if any(k in f for k in keys):
                        fields = {"intent": "faq", "topic": topic}
                        break
            lines["questions.log"].append((tq, f"{_ts(tq)} client={client} sid={sid} {fields_text(fields)} q={q(text)}"))
            acc(tq, "POST /api/ask", 200, rnd.randint(180, 520))
        tc = tq + rnd.uniform(30, 400)
        if tc < now - 60:
            lines["sessions.log"].append((tc, f"{_ts(tc)} event=close sid={sid} client={client}"))
            acc(tc, "POST /api/session/close", 200, 20)
    for name, rows in lines.items():
        rows.sort()
        with open(LOG_DIR / name, "a", encoding="utf-8") as fh:
            fh.writelines(r + "\n" for _, r in rows)
    mark.write_text("written once at the first start\n")


def main() -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    conf = load_conf()
    seed_history(conf)
    srv = Server(("0.0.0.0", PORT), Handler)
    srv.conf = conf
    srv.sessions = Sessions(int(conf["max_sessions"]), float(conf["session_idle_timeout"]))
    _append("sessions.log", f"{_ts()} event=start capacity={conf['max_sessions']} idle_timeout={conf['session_idle_timeout']}s")
    srv.serve_forever()


if __name__ == "__main__":
    main()
