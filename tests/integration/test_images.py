"""Every node image on the real engine, with no playbook: its default service works.

One temporary *internal* network (auto subnet) holds one container per image;
an attacker container is the client. Traffic only goes between these
containers. Everything made here carries the label io.rangectl.test=<id> (not
io.rangectl.managed, so `rangectl down` and ranges never see it) and is removed
by the fixture's finalizer, whatever happens.
"""

from __future__ import annotations

import time
import uuid

import pytest

from rangectl.backend.images import available_recipes, default_base_image, image_ref, resolve_base_hash
from rangectl.labels import IMAGE_RECIPE, MANAGED

pytestmark = pytest.mark.docker

TEST_LABEL = "io.rangectl.test"
SERVICES = ["router", "web", "db", "dns", "mail", "mqtt", "workstation", "attacker"]


class Lab:
    def __init__(self, client, refs: dict[str, str]):
        self.client = client
        self.refs = refs
        self.tag = f"imgtest-{uuid.uuid4().hex[:8]}"
        self.net = None
        self.containers: dict[str, object] = {}

    # -- making and removing ------------------------------------------------------------
    def make_network(self):
        self.net = self.client.networks.create(
            f"rc-{self.tag}",
            driver="bridge",
            internal=True,
            labels={TEST_LABEL: self.tag},
            check_duplicate=True,
        )

    def start(self, recipe: str, name: str | None = None, **kw):
        name = name or recipe
        c = self.client.containers.run(
            self.refs[recipe],
            name=f"rc-{self.tag}-{name}",
            hostname=name,
            detach=True,
            network=self.net.name,
            labels={TEST_LABEL: self.tag},
            pids_limit=1024,
            **kw,
        )
        self.containers[name] = c
        return c

    def cleanup(self):
        for c in self.client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={self.tag}"}):
            try:
                c.remove(force=True, v=True)
            except Exception:  # noqa: BLE001 - best effort, then the assert below
                pass
        for n in self.client.networks.list(filters={"label": f"{TEST_LABEL}={self.tag}"}):
            try:
                n.remove()
            except Exception:  # noqa: BLE001
                pass

    # -- using ------------------------------------------------------------------------------
    def ip(self, name: str) -> str:
        c = self.client.containers.get(self.containers[name].id)
        return c.attrs["NetworkSettings"]["Networks"][self.net.name]["IPAddress"]

    def sh(self, name: str, cmd: str, **kw) -> tuple[int, str]:
        code, out = self.containers[name].exec_run(["sh", "-c", cmd], **kw)
        return code, out.decode(errors="replace")

    def py(self, name: str, code: str) -> tuple[int, str]:
        rc, out = self.containers[name].exec_run(["python3", "-c", code])
        return rc, out.decode(errors="replace")

    def until(self, what: str, fn, timeout: float = 30.0):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            last = fn()
            if last:
                return last
            time.sleep(0.3)
        logs = {n: c.logs(tail=15).decode(errors="replace") for n, c in self.containers.items()}
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\ncontainer logs: {logs}")


@pytest.fixture(scope="module")
def lab(request, docker_engine, built_images):
    lab = Lab(docker_engine, built_images)

    def finish():
        lab.cleanup()
        left = docker_engine.containers.list(all=True, filters={"label": f"{TEST_LABEL}={lab.tag}"})
        nets = docker_engine.networks.list(filters={"label": f"{TEST_LABEL}={lab.tag}"})
        assert not left and not nets, "the image test left resources behind"

    request.addfinalizer(finish)
    lab.make_network()
    lab.start("router", cap_add=["NET_ADMIN"], sysctls={"net.ipv4.ip_forward": "1"})
    lab.start("web")
    lab.start("db")
    lab.start("dns", environment={"DNS_RECORDS": "extra.range.test=192.0.2.99"})
    lab.start("mail")
    lab.start("mqtt")
    lab.start("workstation", cap_add=["NET_ADMIN"])
    lab.start("attacker", cap_add=["NET_ADMIN"], sysctls={"net.ipv4.conf.all.accept_redirects": "0"})
    return lab


def test_built_images_carry_the_current_hash_and_labels(docker_engine, built_images):
    assert set(SERVICES) <= set(built_images)
    base_hash = resolve_base_hash(docker_engine, default_base_image())
    for name, ref in built_images.items():
        assert ref == image_ref(name, base_hash)
        labels = docker_engine.api.inspect_image(ref)["Config"]["Labels"]
        assert labels[MANAGED] == "1" and labels[IMAGE_RECIPE] == name
    assert set(built_images) == {r for r in available_recipes() if r != "base"}


def test_a_second_build_is_a_no_op(docker_engine, built_images):
    from rangectl.backend.images import build_images

    events = []
    t0 = time.monotonic()
    refs = build_images(docker_engine, on_progress=lambda r, phase, d="": events.append((r, phase)))
    assert refs == built_images
    assert {p for _, p in events} == {"cached"}
    assert time.monotonic() - t0 < 10


def test_every_image_runs_and_has_python(lab):
    for name, c in lab.containers.items():
        c.reload()
        assert c.status == "running", f"{name}: {c.status}\n{c.logs(tail=20).decode(errors='replace')}"
        code, out = lab.sh(name, "python3 -c 'import json, sqlite3, sys; print(sys.version_info[0])'")
        assert code == 0 and out.strip() == "3", f"{name}: {out}"


def test_web_answers_http_200_from_the_attacker(lab):
    web = lab.ip("web")

    def probe():
        code, out = lab.sh("attacker", f"curl -s -o /dev/null -w '%{{http_code}}' -m 3 http://{web}/")
        return out.strip() == "200"

    lab.until("web on :80", probe)
    code, out = lab.sh("attacker", f"curl -s -m 3 'http://{web}/lookup?id=%27%20OR%20%271%27=%271'")
    assert out.count("<tr>") > 2, out  # the injectable lookup is there
    code, out = lab.sh("web", "tail -n 2 /var/log/web/access.log")
    assert '"GET / HTTP/1.1" 200' in out and "curl/" in out


def test_db_accepts_connections(lab):
    db = lab.ip("db")
    # PostgreSQL's SSLRequest over TCP from another container: the server answers 'S' or 'N'.
    probe = (
        "import socket,struct\n"
        f"s=socket.create_connection(('{db}',5432),3)\n"
        "s.sendall(struct.pack('!ii',8,80877103)); print(s.recv(1).decode())"
    )
    lab.until("postgres on :5432", lambda: lab.py("attacker", probe)[1].strip() in ("S", "N"))
    code, out = lab.sh(
        "db",
        f"PGPASSWORD=portal-db-2024 psql -h {db} -U portal -d portal -tAc 'select count(*) from citizens'",
    )
    assert code == 0 and out.strip() == "8", out
    lab.until(
        "the connection in the log",
        lambda: "connection authorized" in lab.sh("db", "cat /var/log/postgresql/postgresql.log")[1],
    )


def test_dns_answers_configured_names_and_forwards_nothing(lab):
    dns = lab.ip("dns")

    def ask(name: str) -> str:
        return lab.sh("attacker", f"dig +short +time=2 +tries=1 @{dns} {name}")[1].strip()

    lab.until("dnsmasq on :53", lambda: ask("www.range.test") == "192.0.2.10")
    assert ask("dns.range.test") == dns  # its own name
    assert ask("extra.range.test") == "192.0.2.99"  # DNS_RECORDS
    code, out = lab.sh("attacker", f"dig +time=2 +tries=1 @{dns} nosuch.range.test")
    assert "status: NXDOMAIN" in out
    code, out = lab.sh("attacker", f"dig +time=2 +tries=1 @{dns} example.com")
    assert "status: REFUSED" in out  # no upstream: nothing is forwarded
    code, out = lab.sh("dns", "cat /var/log/dns/queries.log")
    assert "www.range.test" in out


def test_mail_accepts_smtp_data_and_stores_it(lab):
    mail = lab.ip("mail")
    send = (
        "import smtplib\n"
        f"s=smtplib.SMTP('{mail}',25,timeout=5)\n"
        "print(s.sendmail('security@bank.example',['clerk@range.test'],"
        "'Subject: Urgent: verify your account\\r\\n\\r\\nClick here\\r\\n'))\n"
        "s.quit()"
    )
    lab.until("smtp on :25", lambda: lab.py("attacker", send)[1].strip() == "{}")
    code, out = lab.sh("mail", "cat /var/mail/inbox/new/*")
    assert "Subject: Urgent: verify your account" in out and "X-Envelope-From: <security@bank.example>" in out
    code, out = lab.sh("mail", "cat /var/log/mail/smtp.log")
    assert "from=<security@bank.example>" in out


def test_mqtt_accepts_anonymous_publish(lab):
    mqtt = lab.ip("mqtt")
    pub = (
        "import socket,struct\n"
        f"c=socket.create_connection(('{mqtt}',1883),3)\n"
        "cid=b'pytest-pub'; vh=b'\\x00\\x04MQTT\\x04\\x02\\x00\\x3c'; pl=struct.pack('!H',len(cid))+cid\n"
        "c.sendall(bytes([0x10,len(vh)+len(pl)])+vh+pl); ack=c.recv(4)\n"
        "t=b'district/pump1/cmd'; body=struct.pack('!H',len(t))+t+struct.pack('!H',7)+b'OPEN-VALVE'\n"
        "c.sendall(bytes([0x32,len(body)])+body); puback=c.recv(4)\n"
        "c.sendall(b'\\xe0\\x00'); print(ack.hex(), puback.hex())"
    )
    out = lab.until("mosquitto on :1883", lambda: lab.py("attacker", pub)[1].strip() or None)
    assert out == "20020000 40020007", out  # CONNACK accepted, PUBACK for message 7
    lab.until(
        "the message in messages.log",
        lambda: "district/pump1/cmd OPEN-VALVE" in lab.sh("mqtt", "cat /var/log/mosquitto/messages.log")[1],
        timeout=10,
    )
    code, out = lab.sh("mqtt", "cat /var/log/mosquitto/mosquitto.log")
    assert "as pytest-pub" in out


def test_router_filter_chain_forwarding_and_connection_log(lab):
    code, out = lab.sh(
        "router", "cat /proc/sys/net/ipv4/ip_forward; iptables -S FORWARD; iptables -S RANGECTL-FILTER"
    )
    assert code == 0, out
    assert out.splitlines()[0] == "1"
    assert (
        "-P FORWARD ACCEPT" in out and "-A FORWARD -j RANGECTL-FILTER" in out and "-N RANGECTL-FILTER" in out
    )
    assert "NFLOG" in out
    # Send the attacker's traffic to the web node through the router (same network: the
    # router forwards it back out), then block it in RANGECTL-FILTER as a blue team would.
    router, web, attacker = lab.ip("router"), lab.ip("web"), lab.ip("attacker")
    code, out = lab.sh("attacker", f"ip route replace {web}/32 via {router}")
    assert code == 0, out
    curl = f"curl -s -o /dev/null -w '%{{http_code}}' -m 3 http://{web}/healthz"
    lab.until("web through the router", lambda: lab.sh("attacker", curl)[1].strip() == "200")
    lab.until(
        "the forwarded connection in the router's log",
        lambda: (
            f"{attacker}." in lab.sh("router", "cat /var/log/router/new-connections.log")[1]
            and f"{web}.80:" in lab.sh("router", "cat /var/log/router/new-connections.log")[1]
        ),
        timeout=10,
    )
    code, out = lab.sh("router", f"iptables -A RANGECTL-FILTER -s {attacker} -j DROP")
    assert code == 0, out
    try:
        assert lab.sh("attacker", curl)[1].strip() == "000"  # blocked
    finally:
        lab.sh("router", "iptables -F RANGECTL-FILTER")
        lab.sh("attacker", f"ip route del {web}/32")
    assert lab.sh("attacker", curl)[1].strip() == "200"


def test_workstation_has_the_blue_tools_and_no_sshd_by_default(lab):
    code, out = lab.sh(
        "workstation",
        "for t in tcpdump tshark curl dig iptables jq less vi python3; do command -v $t >/dev/null || echo missing $t; done; pgrep -x sshd || true",
    )
    assert code == 0 and out.strip() == "", out


def test_attacker_has_the_red_tools(lab):
    code, out = lab.sh(
        "attacker",
        "for t in nmap hping3 curl dig tcpreplay nc; do command -v $t >/dev/null || echo missing $t; done; python3 -c 'import scapy.all'",
    )
    assert code == 0 and out.strip() == "", out


def test_services_restart_and_rangectl_svc_stops_them(lab):
    code, out = lab.sh("mail", "rangectl-svc status smtpd")
    assert code == 0 and "running" in out
    code, out = lab.sh("mail", "rangectl-svc stop smtpd; rangectl-svc status smtpd")
    assert "stopped" in out
    code, out = lab.sh("mail", "rangectl-svc start smtpd")
    assert code == 0
    lab.until("smtpd back", lambda: lab.sh("mail", "rangectl-svc status smtpd")[0] == 0, timeout=10)
    # killed from outside the supervisor: it comes back by itself
    lab.sh("mail", "kill $(cat /run/rangectl/smtpd.pid)")
    lab.until("smtpd restarted", lambda: lab.sh("mail", "rangectl-svc status smtpd")[0] == 0, timeout=10)


def test_containers_stop_fast_on_sigterm(lab):
    for name in ["workstation", "mqtt", "db", "web"]:
        c = lab.containers[name]
        t0 = time.monotonic()
        c.stop(timeout=10)
        took = time.monotonic() - t0
        c.reload()
        assert took < 5, f"{name} took {took:.1f}s to stop"
        assert c.attrs["State"]["ExitCode"] == 0, f"{name} exited {c.attrs['State']['ExitCode']}"


def test_sshd_starts_only_with_sshd_1(lab):
    c = lab.start("workstation", name="ws-ssh", environment={"SSHD": "1"})
    lab.until(
        "sshd",
        lambda: lab.sh("ws-ssh", "pgrep -x sshd >/dev/null && echo yes")[1].strip() == "yes",
        timeout=15,
    )
    ip = lab.ip("ws-ssh")
    banner = f"import socket;s=socket.create_connection(('{ip}',22),3);print(s.recv(64).decode().strip())"
    out = lab.until("ssh banner", lambda: lab.py("attacker", banner)[1].strip() or None, timeout=10)
    assert out.startswith("SSH-2.0-OpenSSH"), out
    c.remove(force=True)
