"""Automated checks, run from inside the range: a probe's sockets are opened in
the network namespace of the node it runs from, never in the host's network.

Kinds: ``blocked``/``reachable`` (tcp, udp, icmp), ``http`` (status, body
contains/absent), ``dns`` (answer or NXDOMAIN from a node's resolver),
``file`` (a path in a node contains text), ``command`` (exit status of a
command in a node). Availability probes use the same primitives.

Probes run through the backend's execution seam (:mod:`rangectl.backend.nodeexec`): the
socket primitives below run as the node job :func:`probe_job` in the vantage node, so the
same check works whichever engine holds the node. Check kinds are registered in
:data:`CHECKS` (one function per kind, like the traffic generators' registry).

Every probe has a timeout, and it is an absolute deadline for the whole probe
(connect, send and every read together), not a limit per read: a target that
answers a byte at a time or floods replies with the wrong id gets no more
time than a silent one. A slow or hung probe counts as a failure.
"""

from __future__ import annotations

import inspect
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rangectl.answers import check_answer
from rangectl.backend.nodeexec import Job, JobControl, node_job
from rangectl.plan import TeamPlan
from rangectl.scenario.model import Answer, Availability, Check, Scenario
from rangectl.scenario.vantage import PROBE, probe_host

DEFAULT_TIMEOUT = 3.0


@dataclass
class CheckResult:
    passed: bool
    detail: str
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "detail": self.detail, "seconds": round(self.seconds, 4)}


class VantageRefused(Exception):
    """A probe asked to run from a node trainees control (docs/scoring.md, "Probe vantage")."""


RunIn = Callable[[str, Job], Any]  # (node of the team, job) -> the job's result (the execution seam)
ExecIn = Callable[[str, list[str], float], tuple[int, str]]  # (node, argv, deadline s) -> (code, output)


class Vantage:
    """How probes reach the nodes of one team: jobs run in a node, commands exec'd in one.

    Probes run from :data:`rangectl.plan.PROBE` (rangectl's hidden probe node) or from a
    scenario node trainees do not control; :meth:`probe` refuses a blue node even if a
    scenario that validation would refuse got this far."""

    def __init__(self, team: TeamPlan, run_in: RunIn, exec_in: ExecIn):
        self.team = team
        self.run_in = run_in
        self.exec_in = exec_in

    def vantage(self, node: str) -> str:
        """``node``, if probes may run from it (VantageRefused for a node trainees control)."""
        if node != PROBE and any(n.name == node and n.role == "blue" for n in self.team.nodes):
            raise VantageRefused(f"refused to probe from '{node}': trainees control it; probes run from '{PROBE}'")
        return node

    def probe(self, node: str, kind: str, *args: Any) -> Any:
        """Run socket primitive ``kind`` (see :data:`PRIMITIVES`) with ``args`` in ``node``. The
        job's deadline is the primitive's own ``timeout``: a probe whose engine stopped answering
        is given up soon after it (:data:`~rangectl.backend.nodeexec.RESULT_GRACE`), not waited for."""
        timeout = inspect.signature(PRIMITIVES[kind]).bind(*args).arguments["timeout"]
        job = Job.of(probe_job, deadline=time.time() + float(timeout), kind=kind, args=list(args))
        return self.run_in(self.vantage(node), job)


# --- socket primitives (run inside the vantage node, as the job probe_job) ---------------


def _deadline(timeout: float) -> float:
    """The monotonic time at which a probe of ``timeout`` seconds is over, whatever it is doing."""
    return time.monotonic() + max(0.0, float(timeout))


def _left(deadline: float) -> float:
    """Seconds left before ``deadline``; TimeoutError once it has passed (every wait is bounded by it)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("probe deadline passed")
    return left


def tcp_connect(ip: str, port: int, timeout: float) -> tuple[bool, str]:
    deadline = _deadline(timeout)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(_left(deadline))
        s.connect((ip, port))
        return True, f"tcp {ip}:{port} open"
    except ConnectionRefusedError:
        return False, f"tcp {ip}:{port} refused"
    except TimeoutError:
        return False, f"tcp {ip}:{port} timed out"
    except OSError as exc:
        return False, f"tcp {ip}:{port} {exc.strerror or exc}"
    finally:
        s.close()


def udp_probe(ip: str, port: int, timeout: float, payload: bytes = b"rangectl-probe\n") -> tuple[bool, str]:
    """Reachable when anything answers; an ICMP port-unreachable or silence is not."""
    deadline = _deadline(timeout)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(_left(deadline))
        s.connect((ip, port))
        s.send(payload)
        s.settimeout(_left(deadline))
        s.recv(2048)
        return True, f"udp {ip}:{port} answered"
    except ConnectionRefusedError:
        return False, f"udp {ip}:{port} port unreachable"
    except TimeoutError:
        return False, f"udp {ip}:{port} no answer"
    except OSError as exc:
        return False, f"udp {ip}:{port} {exc.strerror or exc}"
    finally:
        s.close()


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_ping(ip: str, timeout: float) -> tuple[bool, str]:
    deadline = _deadline(timeout)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    seq = int(time.monotonic() * 1000) & 0xFFFF
    body = b"rangectl"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, _icmp_checksum(header + body), ident, seq) + body
    try:
        s.settimeout(_left(deadline))
        s.sendto(packet, (ip, 0))
        while True:  # other ICMP arriving meanwhile is skipped, within the same deadline
            s.settimeout(_left(deadline))
            data, addr = s.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 8:
                continue
            typ, _code, _ck, rid, rseq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if addr[0] == ip and typ == 0 and rid == ident and rseq == seq:
                return True, f"icmp {ip} echo reply"
    except TimeoutError:
        return False, f"icmp {ip} no reply"
    except OSError as exc:
        return False, f"icmp {ip} {exc.strerror or exc}"
    finally:
        s.close()


HTTP_MAX = 65536 + 8192  # bytes read of an answer (head and the first 64 KiB of body)


def http_get(ip: str, port: int, path: str, timeout: float) -> tuple[int | None, str, str]:
    """(status or None, body (first 64 KiB), detail). ``timeout`` bounds the whole exchange:
    a server that answers slowly (a byte at a time) gets no more than that."""
    deadline = _deadline(timeout)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(_left(deadline))
        s.connect((ip, port))
        req = f"GET {path} HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: rangectl-check\r\nConnection: close\r\n\r\n"
        s.settimeout(_left(deadline))
        s.sendall(req.encode())
        chunks = []
        size = 0
        while size < HTTP_MAX:
            s.settimeout(_left(deadline))
            data = s.recv(min(8192, HTTP_MAX - size))
            if not data:
                break
            chunks.append(data)
            size += len(data)
        raw = b"".join(chunks)
        head, _, body = raw.partition(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        parts = line.split()
        status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
        return status, body[:65536].decode(errors="replace"), f"http {ip}:{port}{path} -> {status}"
    except TimeoutError:
        return None, "", f"http {ip}:{port}{path} timed out"
    except OSError as exc:
        return None, "", f"http {ip}:{port}{path} {exc.strerror or exc}"
    finally:
        s.close()


def dns_query(server: str, name: str, qtype: str, timeout: float) -> tuple[str | None, list[str], str]:
    """(rcode name or None on no answer, answers as text, detail). ``timeout`` bounds the whole
    query: replies with another id (a flood of them) are skipped without extending it."""
    from scapy.layers.dns import DNS, DNSQR

    deadline = _deadline(timeout)
    qid = int.from_bytes(os.urandom(2), "big")
    pkt = bytes(DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype)))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(_left(deadline))
        s.connect((server, 53))
        s.send(pkt)
        while True:
            s.settimeout(_left(deadline))
            data = s.recv(4096)
            if len(data) < 12 or int.from_bytes(data[:2], "big") != qid:
                continue  # not ours: cheap to skip, no parsing
            resp = DNS(data)
            if resp.id == qid:
                break
        rcode = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(resp.rcode, str(resp.rcode))
        answers = []
        for i in range(resp.ancount or 0):
            rr = resp.an[i]
            val = rr.rdata
            if isinstance(val, bytes):
                val = val.decode(errors="replace")
            elif isinstance(val, list):
                val = " ".join(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in val)
            answers.append(str(val).rstrip("."))
        return rcode, answers, f"dns {name} {qtype} @{server}: {rcode} {answers}"
    except TimeoutError:
        return None, [], f"dns {name} @{server}: no answer"
    except OSError as exc:
        return None, [], f"dns {name} @{server}: {exc.strerror or exc}"
    except Exception as exc:  # noqa: BLE001 - malformed answers count as failures
        return None, [], f"dns {name} @{server}: bad answer ({type(exc).__name__})"
    finally:
        s.close()


#: the primitives a probe job may run, by name
PRIMITIVES: dict[str, Callable[..., Any]] = {
    "tcp": tcp_connect,
    "udp": udp_probe,
    "icmp": icmp_ping,
    "http": http_get,
    "dns": dns_query,
}


@node_job
def probe_job(ctl: JobControl, kind: str, args: list[Any]) -> Any:
    """One socket primitive, in the node the job runs in (its own timeout bounds it)."""
    return PRIMITIVES[kind](*args)


# --- checks --------------------------------------------------------------------


def _flow(v: Vantage, src: str, dst: str, proto: str, port: int | None, timeout: float) -> tuple[bool, str]:
    ip = str(v.team.ip_of(dst))
    if proto == "icmp":
        ok, detail = v.probe(src, "icmp", ip, timeout)
    else:
        ok, detail = v.probe(src, proto, ip, port, timeout)
    return bool(ok), detail


def control_vantage(scenario: Scenario, exclude: set[str]) -> str | None:
    """The default vantage (``blocked``'s control, availability's ``from``): rangectl's probe,
    which stands where the first blue node stands; None when the scenario has no blue node
    (so no probe) or the probe is excluded."""
    if probe_host(scenario) is None or PROBE in exclude:
        return None
    return PROBE


def run_check(scenario: Scenario, check: Check, v: Vantage, timeout: float = DEFAULT_TIMEOUT) -> CheckResult:
    t0 = time.monotonic()
    res = _run_check(scenario, check, v, timeout)
    res.seconds = time.monotonic() - t0
    return res


CheckFn = Callable[[Scenario, Any, Vantage, float], CheckResult]

#: check kind -> the function that runs it (``register_check`` adds one; docs/architecture.md)
CHECKS: dict[str, CheckFn] = {}


def register_check(kind: str) -> Callable[[CheckFn], CheckFn]:
    def add(fn: CheckFn) -> CheckFn:
        CHECKS[kind] = fn
        return fn

    return add


def _run_check(scenario: Scenario, check: Check, v: Vantage, timeout: float) -> CheckResult:
    return CHECKS[check.kind](scenario, check.spec, v, timeout)


@register_check("reachable")
def _reachable(scenario: Scenario, spec: Any, v: Vantage, timeout: float) -> CheckResult:
    ok, detail = _flow(v, spec.from_, spec.to, spec.proto, spec.port, timeout)
    return CheckResult(ok, detail)


@register_check("blocked")
def _blocked(scenario: Scenario, spec: Any, v: Vantage, timeout: float) -> CheckResult:
    ok, detail = _flow(v, spec.from_, spec.to, spec.proto, spec.port, timeout)
    if ok:
        return CheckResult(False, f"not blocked: {detail}")
    # A block, not an outage: the service must still answer someone else.
    ctrl = None if spec.outage_ok else (spec.control or control_vantage(scenario, {spec.from_, spec.to}))
    if ctrl is not None:
        cok, cdetail = _flow(v, ctrl, spec.to, spec.proto, spec.port, timeout)
        if not cok:
            return CheckResult(False, f"{spec.to} is down for {ctrl} too ({cdetail}): an outage is not a block")
    return CheckResult(True, f"blocked: {detail}")


@register_check("http")
def _http(scenario: Scenario, spec: Any, v: Vantage, timeout: float) -> CheckResult:
    ip = str(v.team.ip_of(spec.to))
    status, body, detail = v.probe(spec.from_, "http", ip, spec.port, spec.path, timeout)
    if status != spec.status:
        return CheckResult(False, f"{detail} (want {spec.status})")
    if spec.contains is not None and spec.contains not in body:
        return CheckResult(False, f"{detail}: body lacks the expected text")
    if spec.absent is not None and spec.absent in body:
        return CheckResult(False, f"{detail}: body still has the unwanted text")
    return CheckResult(True, detail)


@register_check("dns")
def _dns(scenario: Scenario, spec: Any, v: Vantage, timeout: float) -> CheckResult:
    server = str(v.team.ip_of(spec.server))
    rcode, answers, detail = v.probe(spec.from_, "dns", server, spec.name, spec.type, timeout)
    if spec.nxdomain:
        return CheckResult(rcode == "NXDOMAIN" or (rcode == "NOERROR" and not answers), detail)
    if rcode != "NOERROR" or not answers:
        return CheckResult(False, detail)
    if spec.expect is None:
        return CheckResult(True, detail)
    return CheckResult(any(dns_answer_matches(spec.expect, a, v.team) for a in answers), detail)


@register_check("file")
def _file(scenario: Scenario, spec: Any, v: Vantage, timeout: float) -> CheckResult:
    code, out = v.exec_in(spec.node, ["cat", spec.path], timeout)
    if code != 0:
        return CheckResult(False, f"{spec.node}:{spec.path} unreadable")
    if spec.contains is not None and spec.contains not in out:
        return CheckResult(False, f"{spec.node}:{spec.path} lacks the expected text")
    if spec.absent is not None and spec.absent in out:
        return CheckResult(False, f"{spec.node}:{spec.path} still has the unwanted text")
    return CheckResult(True, f"{spec.node}:{spec.path} as expected")


@register_check("command")
def _command(scenario: Scenario, spec: Any, v: Vantage, timeout: float) -> CheckResult:
    code, out = v.exec_in(spec.node, ["sh", "-c", spec.run], max(timeout, 10.0))
    return CheckResult(code == spec.exit, f"{spec.node}: exit {code} (want {spec.exit})")


def dns_answer_matches(expect: str | Answer, answer: str, team: TeamPlan) -> bool:
    """One DNS answer against the check's ``expect``: a literal (case-folded, trailing dot
    ignored) or an answer spec (``ip_of``, ``value``, ``one_of``, ``regex``) as scoring reads it."""
    answer = answer.rstrip(".")
    if isinstance(expect, str):
        return answer.lower() == expect.rstrip(".").lower()
    return check_answer(expect, answer, team)


def availability_vantage(scenario: Scenario, av: Availability) -> str:
    """The node an availability probe runs from: its ``from``, else rangectl's probe; a scenario
    with no blue node (so no probe, and no trainee workstation) probes from another node."""
    return av.from_ or control_vantage(scenario, {av.node}) or next(iter(n for n in scenario.nodes if n != av.node))


def content_verdict(av: Availability, status: int | None, body: Any, detail: str) -> tuple[bool, str]:
    """Is an HTTP answer 'up' for ``av``: its status (any below 500 unless ``status`` lists
    them), and its body holding ``contains`` and not ``absent`` (a defaced page is down)."""
    if status is None:
        return False, detail
    if av.status is not None and status not in av.status:
        return False, f"{detail}: status {status}, expected {', '.join(map(str, av.status))}"
    if av.status is None and status >= 500:
        return False, detail
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    if av.contains is not None and av.contains not in text:
        return False, f"{detail}: the page lacks {av.contains!r}"
    if av.absent is not None and av.absent in text:
        return False, f"{detail}: the page shows {av.absent!r}"
    return True, detail


def availability_probe(scenario: Scenario, av: Availability, v: Vantage) -> CheckResult:
    """One availability round for one team: is the service up from the probe's vantage?"""
    t0 = time.monotonic()
    svc = next(s for s in scenario.nodes[av.node].services if s.name == av.service)
    probe = av.probe or ("http" if av.service in ("http", "https") else "udp" if svc.proto == "udp" else "tcp")
    ip = str(v.team.ip_of(av.node))
    frm = availability_vantage(scenario, av)
    if probe == "http":
        status, body, detail = v.probe(frm, "http", ip, svc.port, av.path, av.timeout)
        ok, detail = content_verdict(av, status, body, detail)
    elif probe == "udp":
        ok, detail = v.probe(frm, "udp", ip, svc.port, av.timeout)
    else:
        ok, detail = v.probe(frm, "tcp", ip, svc.port, av.timeout)
    return CheckResult(bool(ok), detail, time.monotonic() - t0)




assert set(CHECKS) == {"blocked", "reachable", "http", "dns", "file", "command"}, "every check kind has a runner"
