#!/usr/bin/env python3
"""respond: talk to the drill from a team's workstation (Python 3 standard library only).

    respond briefing                 the scenario's briefing
    respond messages [--all]         messages sent to your team (new ones; --all: every one)
    respond objectives               open objectives: points, attempts, hints and their cost
    respond show ID                  one objective, with the hints you took
    respond submit ID ANSWER...      answer an objective (words are joined with spaces)
    respond hint ID                  take the next hint (it costs points)
    respond report FILE              file an incident report (YAML or JSON: objective + fields)
    respond score                    your team's score
    respond board                    the scoreboard (unless the trainer hid it)
    respond reset NODE               re-create one of your nodes the drill lets you reset (costs points)
    respond whoami                   which team this workstation's credential is for

Options: --lang vi|en (default $RESPOND_LANG, else from $LANG), --json (raw JSON).
The credential comes from $RESPOND_TOKEN/$RESPOND_URL or /etc/rangectl/respond.env.

Exit codes: 0 ok (a correct answer), 1 wrong or refused, 2 usage, 3 service unreachable,
4 not found or not allowed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import urllib.error
import urllib.request

CONFIG = "/etc/rangectl/respond.env"
STATE = os.path.expanduser("~/.cache/respond-last-message")
DEFAULT_URL = "http://127.0.0.1:8780"

T = {
    "en": {
        "no_token": "no team credential: set RESPOND_TOKEN or ask the trainer (expected in {path})",
        "unreachable": "cannot reach the drill service at {url}: {err}",
        "correct": "CORRECT: {msg}",
        "wrong": "WRONG: {msg}",
        "refused": "REFUSED: {msg}",
        "retry": "try again in {s} s",
        "none_open": "no open objectives yet: wait for the drill to start",
        "no_messages": "no new messages",
        "hint": "hint {n} of {total} for {obj} (cost {cost} points):",
        "report_ok": "report accepted: {msg}",
        "reset_ok": "reset under way: {msg}",
        "points": "points",
        "attempts": "attempts left",
        "hints": "hints",
        "solved": "solved",
        "team": "team",
        "total": "total",
        "rank": "rank",
        "due": "report due at drill time",
        "fields": "fields",
        "required": "required",
        "hidden": "the scoreboard is hidden",
    },
    "vi": {
        "no_token": "chưa có thông tin xác thực của đội: đặt RESPOND_TOKEN hoặc hỏi người hướng dẫn (tệp {path})",
        "unreachable": "không kết nối được dịch vụ diễn tập tại {url}: {err}",
        "correct": "ĐÚNG: {msg}",
        "wrong": "SAI: {msg}",
        "refused": "BỊ TỪ CHỐI: {msg}",
        "retry": "thử lại sau {s} giây",
        "none_open": "chưa có mục tiêu nào: chờ buổi diễn tập bắt đầu",
        "no_messages": "không có thông báo mới",
        "hint": "gợi ý {n}/{total} cho {obj} (trừ {cost} điểm):",
        "report_ok": "báo cáo đã được nhận: {msg}",
        "reset_ok": "đang khởi tạo lại: {msg}",
        "points": "điểm",
        "attempts": "lượt còn lại",
        "hints": "gợi ý",
        "solved": "đã giải",
        "team": "đội",
        "total": "tổng",
        "rank": "hạng",
        "due": "hạn nộp báo cáo (giờ diễn tập)",
        "fields": "các trường",
        "required": "bắt buộc",
        "hidden": "bảng điểm đang bị ẩn",
    },
}


class Fail(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# --- configuration ------------------------------------------------------------------------


def read_env(path: str) -> dict:
    out = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                k, v = line.split("=", 1)
                parts = shlex.split(v) if v else [""]
                out[k.strip()] = parts[0] if parts else ""
    except OSError:
        pass
    return out


def config() -> dict:
    conf = read_env(os.environ.get("RESPOND_CONFIG", CONFIG))
    for k in ("RESPOND_URL", "RESPOND_TOKEN", "RESPOND_LANG"):
        if os.environ.get(k):
            conf[k] = os.environ[k]
    return conf


def default_lang(conf: dict) -> str:
    lang = conf.get("RESPOND_LANG") or os.environ.get("LC_ALL") or os.environ.get("LANG") or "en"
    return "vi" if lang.lower().startswith("vi") else "en"


# --- tiny YAML subset (for report files; PyYAML is used when installed) ------------------------


def _scalar(text: str):
    t = text.strip()
    if t == "" or t in ("~", "null", "Null", "NULL"):
        return None
    if t[0] in "\"'":
        q = t[0]
        end = t.rfind(q)
        if end <= 0:
            raise ValueError(f"unterminated quote: {t}")
        body = t[1:end]
        return json.loads('"' + body.replace('"', '\\"') + '"') if q == '"' else body.replace("''", "'")
    t = re.sub(r"\s+#.*$", "", t)
    if t in ("true", "True", "yes"):
        return True
    if t in ("false", "False", "no"):
        return False
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    if re.fullmatch(r"-?\d+\.\d*", t):
        return float(t)
    return t


def mini_yaml(text: str) -> dict:
    """Mappings nested by indentation, scalars, and | or > block scalars. Enough for a report."""
    lines = text.splitlines()
    root: dict = {}
    stack = [(-1, root)]
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        if not raw.strip() or raw.lstrip().startswith("#") or raw.strip() == "---":
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ValueError(f"line {i}: tabs are not allowed for indentation")
        indent = len(raw) - len(raw.lstrip())
        m = re.match(r"^\s*(\"[^\"]*\"|'[^']*'|[^:#]+?)\s*:(\s+|$)(.*)$", raw)
        if not m:
            raise ValueError(f"line {i}: expected 'key: value'")
        key = m.group(1).strip().strip("\"'")
        rest = m.group(3)
        while stack and indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        stripped = re.sub(r"\s+#.*$", "", rest).strip()
        if stripped in ("|", ">", "|-", ">-", "|+", ">+"):
            block = []
            bi = None
            while i < len(lines):
                nxt = lines[i]
                if nxt.strip() and (len(nxt) - len(nxt.lstrip())) <= indent:
                    break
                if bi is None and nxt.strip():
                    bi = len(nxt) - len(nxt.lstrip())
                block.append(nxt[bi:] if bi is not None and nxt.strip() else "")
                i += 1
            value = "\n".join(block).rstrip("\n")
            if stripped.startswith(">"):
                value = re.sub(r"(?<!\n)\n(?!\n)", " ", value)
            if not stripped.endswith("-"):
                value += "\n"
            parent[key] = value
        elif stripped == "":
            child: dict = {}
            parent[key] = child
            stack.append((indent, child))
        elif stripped.startswith("{"):
            parent[key] = json.loads(stripped)
        else:
            parent[key] = _scalar(rest)
    return root


def load_report(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(200_000)
    except OSError as exc:
        raise Fail(f"{path}: {exc.strerror}", 2) from None
    data = None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise Fail(f"{path}: invalid JSON: {exc}", 2) from None
    else:
        try:
            import yaml  # type: ignore

            data = yaml.safe_load(text)
        except ImportError:
            try:
                data = mini_yaml(text)
            except ValueError as exc:
                raise Fail(f"{path}: {exc}", 2) from None
        except Exception as exc:  # noqa: BLE001 - yaml's own errors
            raise Fail(f"{path}: invalid YAML: {exc}", 2) from None
    if not isinstance(data, dict) or "objective" not in data:
        raise Fail(f"{path}: a report has 'objective: ID' and 'fields: {{name: value}}'", 2)
    fields = data.get("fields") or {}
    if not isinstance(fields, dict):
        raise Fail(f"{path}: 'fields' must be a mapping of name to value", 2)
    clean = {}
    for k, v in fields.items():
        if isinstance(v, str):
            v = v.rstrip("\n")
        elif v is not None and not isinstance(v, bool | int | float):
            v = str(v)
        clean[str(k)] = v
    return {"objective": str(data["objective"]), "fields": clean}


# --- HTTP ----------------------------------------------------------------------------------------


class Client:
    def __init__(self, url: str, token: str, lang: str):
        self.url = url.rstrip("/")
        self.token = token
        self.lang = lang

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None):
        q = dict(query or {})
        url = f"{self.url}/api/v1{path}"
        if q:
            url += "?" + "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in q.items())
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"{}")
            except ValueError:
                payload = {"detail": f"HTTP {exc.code}"}
            return exc.code, payload, dict(exc.headers or {})
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Fail(tr(self.lang, "unreachable", url=self.url, err=reason), 3) from None


def tr(lang: str, key: str, **kw) -> str:
    return T.get(lang, T["en"])[key].format(**kw)


def detail(status: int, body: dict) -> Fail:
    msg = body.get("detail") or body.get("message") or f"HTTP {status}"
    code = 4 if status in (401, 403, 404) else 2 if status in (413, 422) else 1
    return Fail(str(msg), code)


# --- commands ------------------------------------------------------------------------------------


def out_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def fmt_t(seconds) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def cmd_whoami(c: Client, args, as_json: bool) -> int:
    st, body, _ = c.call("GET", "/whoami")
    if st != 200:
        raise detail(st, body)
    if as_json:
        out_json(body)
    else:
        print(f"{tr(c.lang, 'team')} {body['team']} · {body['range']} ({body['scenario']})")
    return 0


def cmd_briefing(c: Client, args, as_json: bool) -> int:
    st, body, _ = c.call("GET", "/teams/me/briefing", query={"lang": c.lang})
    if st != 200:
        raise detail(st, body)
    if as_json:
        out_json(body)
        return 0
    print(body["title"])
    print("=" * min(72, max(8, len(body["title"]))))
    if body.get("briefing"):
        print(body["briefing"].rstrip())
    d = body.get("drill") or {}
    print(f"\n[{tr(c.lang, 'team')} {body['team']} · drill {d.get('status')} {fmt_t(d.get('drill_t'))}]")
    return 0


def cmd_messages(c: Client, args, as_json: bool) -> int:
    after = 0
    if "--all" not in args:
        try:
            with open(STATE, encoding="utf-8") as fh:
                after = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            after = 0
    st, body, _ = c.call("GET", "/teams/me/messages", query={"lang": c.lang, "after": after})
    if st != 200:
        raise detail(st, body)
    if as_json:
        out_json(body)
    elif not body["messages"]:
        print(tr(c.lang, "no_messages"))
    for m in [] if as_json else body["messages"]:
        print(f"[{fmt_t(m['drill_t'])}] {m['title']}")
        for line in str(m["text"]).rstrip().splitlines():
            print(f"    {line}")
    if body["messages"]:
        try:
            os.makedirs(os.path.dirname(STATE), exist_ok=True)
            with open(STATE, "w", encoding="utf-8") as fh:
                fh.write(str(body["last_seq"]))
        except OSError:
            pass
    return 0


def _obj_line(c: Client, o: dict) -> str:
    mark = "x" if o["solved"] else " "
    extra = []
    if o.get("attempts_left") is not None:
        extra.append(f"{tr(c.lang, 'attempts')} {o['attempts_left']}")
    if o["hints"]:
        costs = ",".join(str(h["cost"]) for h in o["hints"] if not h["taken"])
        extra.append(f"{tr(c.lang, 'hints')} {o['hints_available']}" + (f" (-{costs})" if costs else ""))
    if o.get("report"):
        extra.append(f"{tr(c.lang, 'due')} {fmt_t(o['report']['due_drill_t'])}")
    return (
        f"[{mark}] {o['id']:<24} {o['points']:>5} {tr(c.lang, 'points')}  {o['category']:<12} {o['title']}"
        + (f"  ({'; '.join(extra)})" if extra else "")
    )


def cmd_objectives(c: Client, args, as_json: bool) -> int:
    st, body, _ = c.call("GET", "/teams/me/objectives", query={"lang": c.lang})
    if st != 200:
        raise detail(st, body)
    if as_json:
        out_json(body)
        return 0
    if not body["objectives"]:
        print(tr(c.lang, "none_open"))
    for o in body["objectives"]:
        print(_obj_line(c, o))
        if o.get("prompt"):
            print(f"      {o['prompt'].strip()}")
    return 0


def cmd_show(c: Client, args, as_json: bool) -> int:
    if len(args) != 1:
        raise Fail("usage: respond show OBJECTIVE_ID", 2)
    st, body, _ = c.call(
        "GET", f"/teams/me/objectives/{urllib.request.quote(args[0], safe='')}", query={"lang": c.lang}
    )
    if st != 200:
        raise detail(st, body)
    if as_json:
        out_json(body)
        return 0
    print(_obj_line(c, body))
    if body.get("prompt"):
        print(f"\n{body['prompt'].strip()}\n")
    for h in body["hints"]:
        if h["taken"]:
            print(f"  {tr(c.lang, 'hints')} {h['index'] + 1}: {h['text']}")
    rep = body.get("report")
    if rep:
        print(f"{tr(c.lang, 'fields')}:")
        for f in rep["fields"]:
            req = f" ({tr(c.lang, 'required')})" if f["required"] else ""
            print(f"  {f['name']}{req}: {f.get('prompt') or ''}")
    return 0


def cmd_submit(c: Client, args, as_json: bool) -> int:
    if len(args) < 2:
        raise Fail("usage: respond submit OBJECTIVE_ID ANSWER", 2)
    oid, answer = args[0], " ".join(args[1:])
    st, body, headers = c.call(
        "POST", f"/teams/me/objectives/{urllib.request.quote(oid, safe='')}/submissions", {"answer": answer}
    )
    if st not in (200, 409, 429):
        raise detail(st, body)
    if as_json:
        out_json(body)
    elif st == 429:
        wait = headers.get("Retry-After") or body.get("retry_after") or "?"
        print(tr(c.lang, "refused", msg=tr(c.lang, "retry", s=wait)))
    elif body.get("refused"):
        print(tr(c.lang, "refused", msg=body["refused"]))
    elif body.get("correct"):
        print(tr(c.lang, "correct", msg=body["message"]))
    else:
        print(tr(c.lang, "wrong", msg=body["message"]))
    return 0 if body.get("correct") else 1


def cmd_hint(c: Client, args, as_json: bool) -> int:
    if len(args) != 1:
        raise Fail("usage: respond hint OBJECTIVE_ID", 2)
    st, body, _ = c.call(
        "POST", f"/teams/me/objectives/{urllib.request.quote(args[0], safe='')}/hints", query={"lang": c.lang}
    )
    if st != 200:
        raise detail(st, body)
    if as_json:
        out_json(body)
        return 0
    print(
        tr(c.lang, "hint", n=body["index"] + 1, total=body["total"], obj=body["objective"], cost=body["cost"])
    )
    print(f"  {body['text']}")
    return 0


def cmd_report(c: Client, args, as_json: bool) -> int:
    if len(args) != 1:
        raise Fail("usage: respond report FILE   (YAML or JSON: objective: ID, fields: {name: value})", 2)
    rep = load_report(args[0])
    st, body, _ = c.call("POST", "/teams/me/reports", rep)
    if st != 200:
        raise detail(st, body)
    if as_json:
        out_json(body)
    else:
        print(tr(c.lang, "report_ok", msg=body["message"]))
    return 0


def cmd_reset(c: Client, args, as_json: bool) -> int:
    if len(args) != 1:
        raise Fail("usage: respond reset NODE", 2)
    st, body, _ = c.call("POST", f"/teams/me/nodes/{urllib.request.quote(args[0], safe='')}/reset")
    if st != 202:
        raise detail(st, body)
    if as_json:
        out_json(body)
    else:
        print(tr(c.lang, "reset_ok", msg=body["message"]))
    return 0


def cmd_score(c: Client, args, as_json: bool) -> int:
    st, body, _ = c.call("GET", "/teams/me/score")
    if st != 200:
        raise detail(st, body)
    if as_json:
        out_json(body)
        return 0
    rank = f" · {tr(c.lang, 'rank')} {body['rank']}/{body['teams']}" if body.get("rank") else ""
    print(f"{tr(c.lang, 'team')} {body['team']}: {tr(c.lang, 'total')} {body['total']:.1f}{rank}")
    for k, v in body["categories"].items():
        print(f"  {k:<16} {v:8.1f}")
    for o in body["objectives"]:
        mark = "x" if o["solved"] else " "
        print(f"  [{mark}] {o['id']:<24} {o['points']:6.1f} / {o['max_points']:.0f}")
    return 0


def cmd_board(c: Client, args, as_json: bool) -> int:
    st, body, _ = c.call("GET", "/board")
    if st == 403:
        print(tr(c.lang, "hidden"))
        return 1
    if st != 200:
        raise detail(st, body)
    if as_json:
        out_json(body)
        return 0
    print(f"{body['scenario']} · {body['status']} · {fmt_t(body['drill_t'])}")
    print(
        f"{tr(c.lang, 'rank'):>5}  {tr(c.lang, 'team'):<6} {tr(c.lang, 'total'):>8}  {tr(c.lang, 'solved')}"
    )
    for r in body["teams"]:
        print(f"{r['rank']:>5}  {r['team']:<6} {r['total']:>8.1f}  {r['solved']}")
    return 0


COMMANDS = {
    "whoami": cmd_whoami,
    "briefing": cmd_briefing,
    "messages": cmd_messages,
    "objectives": cmd_objectives,
    "show": cmd_show,
    "submit": cmd_submit,
    "hint": cmd_hint,
    "report": cmd_report,
    "reset": cmd_reset,
    "score": cmd_score,
    "board": cmd_board,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    conf = config()
    lang = default_lang(conf)
    as_json = False
    rest = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help") and not rest:
            print(__doc__.strip())
            return 0
        if a == "--json":
            as_json = True
        elif a == "--lang" and i + 1 < len(argv):
            lang = argv[i + 1]
            i += 1
        elif a.startswith("--lang="):
            lang = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if lang not in ("en", "vi"):
        print("respond: --lang is vi or en", file=sys.stderr)
        return 2
    if not rest or rest[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    token = conf.get("RESPOND_TOKEN")
    if not token:
        print("respond: " + tr(lang, "no_token", path=CONFIG), file=sys.stderr)
        return 4
    client = Client(conf.get("RESPOND_URL") or DEFAULT_URL, token, lang)
    try:
        return COMMANDS[rest[0]](client, rest[1:], as_json)
    except Fail as exc:
        print(f"respond: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
