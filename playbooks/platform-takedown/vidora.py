#!/usr/bin/env python3
"""platform-takedown: the Vidora short-video platform's Vietnam node (Python standard library).

A cross-border platform's local app node, as the drill needs it:

  public, port 80 (PUBLIC_PORT)
    /                       home page: pinned notices, trending hashtags, the latest posts
    /p/ID                   one post (404 once taken down: takedown is a hard delete)
    /api/v1/                the API's index
    /api/v1/feed?limit=N    the public feed as JSON (every visible post, media hashes included)
    /api/v1/posts  (POST)   the app's posting API: JSON {account, text, media_sha256, media_name}
    /api/v1/users/export    the partner export of user profiles, page/limit (500 at most):
                            UNAUTHENTICATED while `export_auth = none` in the config
    /healthz                ok
  moderation, port 8081 (MOD_PORT), only from the addresses in `moderation_allow`
    GET  /moderation/posts/ID              a post, with its uploader's account and address
    GET  /moderation/search?tag=|sha256=|account=
    GET  /moderation/accounts/NAME
    POST /moderation/takedown              {"id": ..., "reason": ..., "ref": ...}  hard delete
    POST /moderation/accounts/suspend      {"account": ...}
    POST /moderation/notice                {"text": ...}  pinned on the home page

Config /etc/vidora/platform.conf (read again whenever it changes: no restart needed).
State /var/lib/vidora/state.json. Logs in /var/log/vidora/: access.log (Apache combined),
posts.log (every new post), api.log (the export API), moderation.log (moderators' actions).
The first start seeds a history (users, posts, logs) from the team's values in
/etc/vidora/seed.json; later starts keep the state.
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import json
import os
import random
import re
import sys
import threading
import time
import unicodedata
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONF = Path(os.environ.get("VIDORA_CONF", "/etc/vidora/platform.conf"))
SEED = Path(os.environ.get("VIDORA_SEED", "/etc/vidora/seed.json"))
STATE = Path(os.environ.get("VIDORA_STATE", "/var/lib/vidora/state.json"))
LOGS = Path(os.environ.get("VIDORA_LOGS", "/var/log/vidora"))
PUBLIC_PORT = int(os.environ.get("PUBLIC_PORT", "80"))
MOD_PORT = int(os.environ.get("MOD_PORT", "8081"))

LOCK = threading.RLock()
_conf_cache: tuple[float, dict[str, str]] = (-1.0, {})

SURNAMES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý"]
MIDDLE = ["Văn", "Thị", "Minh", "Ngọc", "Thanh", "Đức", "Quốc", "Thu", "Hoài", "Gia", "Bảo", "Khánh"]
GIVEN = ["An", "Bình", "Chi", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hiếu", "Hoa", "Hùng", "Khoa", "Lan", "Linh", "Long",
         "Mai", "My", "Nam", "Nhung", "Phong", "Phúc", "Quân", "Quyên", "Sơn", "Tâm", "Thảo", "Trang", "Trung", "Tú", "Vy"]
CITIES = ["Hà Nội", "TP. Hồ Chí Minh", "Đà Nẵng", "Hải Phòng", "Cần Thơ", "Sông Hồng", "Huế", "Nha Trang", "Vũng Tàu"]
NORMAL_POSTS = [
    ("bep.nha.lan", "Công thức bún chả Hà Nội chuẩn vị, ai cũng làm được #amthuc #bunchả", "bun-cha.mp4"),
    ("phuot.cung.tu", "Săn mây Tà Xùa lúc 5 giờ sáng, đẹp không thở được #dulich #taxua", "taxua-san-may.mp4"),
    ("hlv.bongda.mini", "Pha đá phạt kỹ thuật cuối tuần của đội phường #bongda", "da-phat.mp4"),
    ("meo.nha.minh", "Con mèo nhà mình phát hiện ra máy hút bụi #thucung", "meo-hut-bui.mp4"),
    ("hoc.tieng.anh.60s", "60 giây học 5 cụm từ tiếng Anh công sở #hoctap", "english-60s.mp4"),
    ("bep.nha.lan", "Cà phê trứng tại nhà trong 3 phút #amthuc #caphe", "ca-phe-trung.mp4"),
    ("review.do.cong.nghe", "Đập hộp điện thoại tầm trung mới nhất #congnghe", "dap-hop.mp4"),
    ("phuot.cung.tu", "Đèo Mã Pì Lèng mùa lúa chín #dulich #hagiang", "ma-pi-leng.mp4"),
    ("me.bim.sua", "Mẹo cho bé ăn dặm không khóc #nuoicon", "an-dam.mp4"),
    ("nhac.acoustic.vn", "Cover Mùa thu cho em, hát mộc #amnhac", "cover-mua-thu.mp4"),
    ("hlv.bongda.mini", "Tổng hợp bàn thắng giải phong trào quận #bongda", "ban-thang.mp4"),
    ("cho.que.ngay.nay", "Phiên chợ quê cuối năm, nhớ Tết xưa #vanhoa", "cho-que.mp4"),
    ("review.do.cong.nghe", "So sánh pin ba mẫu laptop sinh viên #congnghe #hoctap", "laptop-pin.mp4"),
    ("gym.tai.nha", "15 phút tập toàn thân không cần dụng cụ #suckhoe", "tap-15-phut.mp4"),
    ("tin.giao.thong.sh", "Cầu Sông Hồng thông xe lúc 7 giờ, mời bà con đi lại bình thường #giaothong", "cau-thong-xe.mp4"),
    ("meo.nha.minh", "Hai bé mèo tranh nhau cái hộp #thucung", "meo-hop.mp4"),
    ("nhac.acoustic.vn", "Guitar đệm hát cho người mới #amnhac #hoctap", "guitar.mp4"),
    ("bep.nha.lan", "Nem rán giòn lâu không bị ỉu #amthuc", "nem-ran.mp4"),
    ("gym.tai.nha", "Giãn cơ sau giờ làm việc văn phòng #suckhoe", "gian-co.mp4"),
    ("cho.que.ngay.nay", "Làng nghề gốm Bát Tràng vào mùa #vanhoa #dulich", "bat-trang.mp4"),
]
NORMAL_UA = [
    "Vidora-Android/7.4.1 (SM-A546E; Android 14)",
    "Vidora-iOS/7.4.0 (iPhone14,5; iOS 17.5)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
]
NOISE_ADDR = ["203.0.113.", "198.51.100.", "192.0.2."]


# -- config, state, logs ----------------------------------------------------------------------------
def conf() -> dict[str, str]:
    global _conf_cache
    try:
        m = CONF.stat().st_mtime
    except OSError:
        return _conf_cache[1]
    if m != _conf_cache[0]:
        out = {}
        for line in CONF.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
        _conf_cache = (m, out)
    return _conf_cache[1]


def stamp(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t if t is not None else time.time()))


def clf(t: float | None = None) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(t if t is not None else time.time()))


def log(name: str, line: str) -> None:
    with LOCK, open(LOGS / name, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def save(state: dict) -> None:
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, STATE)


def users(n: int) -> list[dict]:
    out = []
    for i in range(n):
        h = hashlib.sha256(f"vidora-user-{i}".encode()).digest()
        name = f"{SURNAMES[h[0] % len(SURNAMES)]} {MIDDLE[h[1] % len(MIDDLE)]} {GIVEN[h[2] % len(GIVEN)]}"
        plain = unicodedata.normalize("NFD", name.split()[-1].lower().replace("đ", "d"))
        handle = re.sub(r"[^a-z0-9]", "", plain) or "user"
        out.append({
            "user_id": 48100000 + i * 7 + h[3] % 7,
            "handle": f"{handle}.{h[4] % 100:02d}{i % 1000:03d}",
            "display_name": name,
            "phone": f"09{int.from_bytes(h[5:9], 'big') % 100000000:08d}",
            "email": f"{handle}{i}@mail.test",
            "birth_year": 1965 + h[9] % 45,
            "city": CITIES[h[10] % len(CITIES)],
            "last_ip": f"{NOISE_ADDR[h[11] % 3]}{1 + h[12] % 250}",
        })
    return out


def first_start(seed: dict) -> dict:
    """The platform's history before the drill: normal posts, their log lines, some access noise."""
    now = time.time()
    base = str(seed["post_base"])
    posts = []
    rng = random.Random(base)  # the same history for a team every time
    for i in range(58):
        acc, text, media = NORMAL_POSTS[i % len(NORMAL_POSTS)]
        t = now - (58 - i) * 1500 - rng.randint(0, 900)
        ip = f"{NOISE_ADDR[i % 3]}{10 + (i * 37) % 240}"
        sha = hashlib.sha256(f"{media}-{i}".encode()).hexdigest()
        p = {"id": f"{base}{i + 1:03d}", "account": acc, "text": text, "tags": re.findall(r"#(\w+)", text),
             "media": {"name": media, "sha256": sha}, "created": stamp(t), "source_ip": ip,
             "client": NORMAL_UA[i % 2], "views": rng.randint(300, 90000)}
        posts.append(p)
        log("posts.log", f"{p['created']} post={p['id']} account={acc} ip={ip} media_sha256={sha} "
                         f"tags={','.join(p['tags']) or '-'} client=\"{p['client']}\"")
    # a morning of normal traffic
    for k in range(400):
        t = now - 3 * 3600 + k * 27 + rng.randint(0, 20)
        ip = f"{NOISE_ADDR[k % 3]}{10 + (k * 53) % 240}"
        path = rng.choice(["/", "/", "/api/v1/feed?limit=20", f"/p/{rng.choice(posts)['id']}", "/healthz"])
        log("access.log", f'{ip} - - [{clf(t)}] "GET {path} HTTP/1.1" 200 {rng.randint(900, 9000)} "-" "{rng.choice(NORMAL_UA)}"')
        if k % 40 == 7:  # the partner analytics job, with its token
            log("api.log", f"{stamp(t)} client=10.0.8.21 ua=\"vidora-partner-sync/2.3\" auth=token "
                           f"GET /api/v1/users/export?page=1&limit=50 records=50 offset=0 total={seed['user_count']}")
    accounts = sorted({p["account"] for p in posts})
    st = {"posts": posts, "next_seq": 59, "suspended": [], "notices": [],
          "accounts": {a: {"created": stamp(now - 400 * 86400), "status": "active"} for a in accounts}}
    save(st)
    return st


def load() -> dict:
    seed = json.loads(SEED.read_text(encoding="utf-8"))
    LOGS.mkdir(parents=True, exist_ok=True)
    STATE.parent.mkdir(parents=True, exist_ok=True)
    if STATE.exists():
        st = json.loads(STATE.read_text(encoding="utf-8"))
    else:
        st = first_start(seed)
    st["_seed"] = seed
    st["_users"] = users(int(seed["user_count"]))
    return st


STATEOBJ: dict = {}


def public_post(p: dict) -> dict:
    return {k: p[k] for k in ("id", "account", "text", "tags", "media", "created", "views")}


# -- HTTP -------------------------------------------------------------------------------------------
class Base(BaseHTTPRequestHandler):
    server_version = "vidora-edge/3.2"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):  # the access log is written in send()
        pass

    def send(self, status: int, body: bytes | str, ctype: str = "text/html; charset=utf-8", extra: dict | None = None):
        if isinstance(body, str):
            body = body.encode()
        ua = self.headers.get("User-Agent", "-").replace('"', "'")
        ref = self.headers.get("Referer", "-").replace('"', "'")
        log(self.logname, f'{self.client_address[0]} - - [{clf()}] "{self.requestline}" {status} {len(body)} "{ref}" "{ua}"')
        self.send_response_only(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Date", self.date_time_string())
        self.send_header("Server", self.server_version)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def json(self, status: int, obj, extra: dict | None = None):
        self.send(status, json.dumps(obj, ensure_ascii=False, indent=1), "application/json; charset=utf-8", extra)

    def body_json(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(n, 1 << 20)) if n > 0 else b""
        try:
            obj = json.loads(raw or b"{}")
            return obj if isinstance(obj, dict) else {}
        except ValueError:
            try:
                return {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
            except Exception:
                return {}


class Public(Base):
    logname = "access.log"

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query).items()}
        path = u.path
        if path == "/":
            return self.send(200, home())
        if path == "/healthz":
            return self.send(200, "ok\n", "text/plain")
        if path == "/robots.txt":
            return self.send(200, "User-agent: *\nDisallow: /api/\n", "text/plain")
        if path.startswith("/p/"):
            with LOCK:
                p = next((p for p in STATEOBJ["posts"] if p["id"] == path[3:]), None)
            if p is None:
                return self.send(404, page("Không tìm thấy nội dung", "<p>Nội dung không tồn tại hoặc đã bị gỡ. / Content not available.</p>"))
            return self.send(200, page(f"Bài đăng {p['id']}", post_html(p)))
        if path in ("/api/v1", "/api/v1/"):
            return self.json(200, {"service": "Vidora API", "version": "1.14.2", "endpoints": [
                "GET /api/v1/feed", "POST /api/v1/posts", "GET /api/v1/users/me", "GET /api/v1/users/export (partners)"]})
        if path == "/api/v1/feed":
            limit = max(1, min(_int(q.get("limit"), 50), 200))
            with LOCK:
                posts = [public_post(p) for p in reversed(STATEOBJ["posts"])][:limit]
            return self.json(200, {"posts": posts, "count": len(posts)})
        if path == "/api/v1/users/me":
            return self.json(401, {"error": "login required"})
        if path == "/api/v1/users/export":
            return self.export(q)
        return self.send(404, page("404", "<p>Không tìm thấy trang. / Not found.</p>"))

    def export(self, q: dict):
        c = conf()
        ua = self.headers.get("User-Agent", "-").replace('"', "'")
        who = f"{stamp()} client={self.client_address[0]} ua=\"{ua}\""
        if c.get("export_auth", "none") != "none":
            token = c.get("export_token", "")
            given = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            if not token or given != token:
                log("api.log", f"{who} auth=denied GET {self.path} status=401")
                return self.json(401, {"error": "unauthorized: partner token required"}, {"WWW-Authenticate": "Bearer"})
            auth = "token"
        else:
            auth = "none"
        page_no = max(1, _int(q.get("page"), 1))
        limit = max(1, min(_int(q.get("limit"), 100), 500))
        all_users = STATEOBJ["_users"]
        chunk = all_users[(page_no - 1) * limit: page_no * limit]
        log("api.log", f"{who} auth={auth} GET {self.path} records={len(chunk)} offset={(page_no - 1) * limit} total={len(all_users)}")
        return self.json(200, {"page": page_no, "limit": limit, "total": len(all_users), "users": chunk})

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path != "/api/v1/posts":
            return self.send(404, page("404", "<p>Not found.</p>"))
        b = self.body_json()
        acc = str(b.get("account") or "").strip()[:40]
        text = str(b.get("text") or "").strip()[:2000]
        sha = str(b.get("media_sha256") or "").strip().lower()[:64]
        if not acc or not text:
            return self.json(400, {"error": "account and text are required"})
        ua = self.headers.get("User-Agent", "-").replace('"', "'")
        with LOCK:
            st = STATEOBJ
            if acc in st["suspended"]:
                log("posts.log", f"{stamp()} REFUSED account={acc} ip={self.client_address[0]} reason=suspended")
                return self.json(403, {"error": "account suspended"})
            if acc not in st["accounts"]:
                st["accounts"][acc] = {"created": stamp(time.time() - 2 * 86400 - len(acc) * 600), "status": "active"}
            pid = f"{st['_seed']['post_base']}{st['next_seq']:03d}"
            st["next_seq"] += 1
            p = {"id": pid, "account": acc, "text": text, "tags": re.findall(r"#(\w+)", text),
                 "media": {"name": str(b.get("media_name") or "video.mp4")[:80], "sha256": sha},
                 "created": stamp(), "source_ip": self.client_address[0], "client": ua, "views": 0}
            st["posts"].append(p)
            save(_persist(st))
            log("posts.log", f"{p['created']} post={pid} account={acc} ip={p['source_ip']} media_sha256={sha or '-'} "
                             f"tags={','.join(p['tags']) or '-'} client=\"{ua}\"")
        return self.json(201, {"id": pid, "url": f"/p/{pid}"})


class Moderation(Base):
    logname = "moderation-access.log"

    def allowed(self) -> bool:
        allow = conf().get("moderation_allow", "127.0.0.1").replace(",", " ").split()
        ip = ipaddress.ip_address(self.client_address[0])
        for a in allow:
            try:
                if ip in ipaddress.ip_network(a, strict=False):
                    return True
            except ValueError:
                continue
        return False

    def do_GET(self):
        if not self.allowed():
            return self.json(403, {"error": "moderation API: not from this address"})
        u = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query).items()}
        with LOCK:
            posts = list(STATEOBJ["posts"])
            accounts = dict(STATEOBJ["accounts"])
            suspended = set(STATEOBJ["suspended"])
        if u.path.startswith("/moderation/posts/"):
            p = next((p for p in posts if p["id"] == u.path.rsplit("/", 1)[1]), None)
            return self.json(200, p) if p else self.json(404, {"error": "no such post (never existed, or taken down)"})
        if u.path == "/moderation/search":
            tag = q.get("tag", "").lstrip("#").lower()
            sha = q.get("sha256", "").lower()
            acc = q.get("account", "")
            if not (tag or sha or acc):
                return self.json(400, {"error": "give tag=, sha256= or account="})
            hits = [p for p in posts if (not tag or tag in [t.lower() for t in p["tags"]])
                    and (not sha or p["media"]["sha256"] == sha) and (not acc or p["account"] == acc)]
            return self.json(200, {"count": len(hits), "posts": hits})
        if u.path.startswith("/moderation/accounts/"):
            a = urllib.parse.unquote(u.path.rsplit("/", 1)[1])
            if a not in accounts:
                return self.json(404, {"error": "no such account"})
            return self.json(200, {"account": a, **accounts[a], "status": "suspended" if a in suspended else "active",
                                   "posts": [p["id"] for p in posts if p["account"] == a]})
        return self.json(404, {"error": "unknown moderation endpoint"})

    def do_POST(self):
        if not self.allowed():
            return self.json(403, {"error": "moderation API: not from this address"})
        u = urllib.parse.urlsplit(self.path)
        b = self.body_json()
        who = self.client_address[0]
        with LOCK:
            st = STATEOBJ
            if u.path == "/moderation/takedown":
                pid = str(b.get("id") or "").strip()
                p = next((p for p in st["posts"] if p["id"] == pid), None)
                if p is None:
                    return self.json(404, {"error": f"no such post {pid}"})
                st["posts"].remove(p)
                save(_persist(st))
                log("moderation.log", f"{stamp()} moderator={who} action=takedown post={pid} account={p['account']} "
                                      f"media_sha256={p['media']['sha256']} reason=\"{str(b.get('reason') or '-')[:200]}\" "
                                      f"ref=\"{str(b.get('ref') or '-')[:60]}\" (hard delete: content and media purged)")
                return self.json(200, {"id": pid, "status": "removed", "note": "content and media purged"})
            if u.path == "/moderation/accounts/suspend":
                acc = str(b.get("account") or "").strip()
                if acc not in st["accounts"]:
                    return self.json(404, {"error": f"no such account {acc}"})
                if acc not in st["suspended"]:
                    st["suspended"].append(acc)
                    save(_persist(st))
                log("moderation.log", f"{stamp()} moderator={who} action=suspend account={acc}")
                return self.json(200, {"account": acc, "status": "suspended"})
            if u.path == "/moderation/notice":
                text = str(b.get("text") or "").strip()[:1000]
                if not text:
                    return self.json(400, {"error": "text is required"})
                st["notices"].append({"text": text, "created": stamp()})
                save(_persist(st))
                log("moderation.log", f"{stamp()} moderator={who} action=notice text=\"{text[:120]}\"")
                return self.json(200, {"status": "pinned"})
        return self.json(404, {"error": "unknown moderation endpoint"})


def _persist(st: dict) -> dict:
    return {k: v for k, v in st.items() if not k.startswith("_")}


def _int(v, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


# -- pages ------------------------------------------------------------------------------------------
def page(title: str, body: str) -> str:
    site = html.escape(conf().get("site_name", "Vidora"))
    return ("<!doctype html><html lang='vi'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)} - {site}</title></head><body>"
            f"<header><a href='/'>{site}</a> · Việt Nam</header><main><h1>{html.escape(title)}</h1>{body}</main>"
            "<footer>Vidora Pte. Ltd. · Văn phòng đại diện tại Việt Nam · abuse@vidora.test</footer></body></html>")


def post_html(p: dict) -> str:
    text = html.escape(p["text"])
    text = re.sub(r"#(\w+)", lambda m: f"<a href='/?tag={m.group(1)}'>#{m.group(1)}</a>", text)
    return (f"<article id='p{p['id']}'><b>@{html.escape(p['account'])}</b> · <a href='/p/{p['id']}'>{p['id']}</a>"
            f"<p>{text}</p><small>🎬 {html.escape(p['media']['name'])} · {p['views']} lượt xem</small></article>")


def home() -> str:
    with LOCK:
        posts = list(STATEOBJ["posts"])
        notices = list(STATEOBJ["notices"])
    recent = posts[-15:]  # what is trending now
    trend = Counter(t for p in recent for t in p["tags"]).most_common(5)
    out = []
    for n in notices[-3:]:
        out.append(f"<aside class='notice'>📌 {html.escape(n['text'])}</aside>")
    out.append("<section><h2>Xu hướng / Trending</h2><ol>")
    out += [f"<li><a href='/?tag={t}'>#{html.escape(t)}</a> ({c} bài)</li>" for t, c in trend]
    out.append("</ol></section><section><h2>Mới nhất / Latest</h2>")
    out += [post_html(p) for p in reversed(posts[-12:])]
    out.append("</section>")
    return page("Vidora — video ngắn cho mọi người", "\n".join(out))


# -- normal users in the background -------------------------------------------------------------------
def noise() -> None:
    rng = random.Random()
    while True:
        time.sleep(rng.uniform(1.5, 4.0))
        with LOCK:
            ids = [p["id"] for p in STATEOBJ["posts"]]
        ip = f"{rng.choice(NOISE_ADDR)}{rng.randint(10, 250)}"
        path = rng.choice(["/", "/", "/api/v1/feed?limit=20", f"/p/{rng.choice(ids)}" if ids else "/", "/healthz"])
        log("access.log", f'{ip} - - [{clf()}] "GET {path} HTTP/1.1" 200 {rng.randint(900, 9000)} "-" "{rng.choice(NORMAL_UA)}"')


def main() -> None:
    STATEOBJ.update(load())
    servers = [ThreadingHTTPServer(("0.0.0.0", PUBLIC_PORT), Public), ThreadingHTTPServer(("0.0.0.0", MOD_PORT), Moderation)]
    for s in servers:
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
    threading.Thread(target=noise, daemon=True).start()
    print(f"vidora: public :{PUBLIC_PORT}, moderation :{MOD_PORT}", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
