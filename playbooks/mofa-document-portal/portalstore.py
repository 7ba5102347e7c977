"""mofa-document-portal: the state of the ministry's embassy document portal.

Shared by the portal service (server.py) and the administrators' tool (portal-admin).
Standard library only (the web image has neither openssl nor python3-cryptography).

  /etc/portal/accounts.json               accounts: password hash, client_cert_required, locked, failures, disabled
  /etc/portal/pki/                        ministry CA (ca.crt, ca.key), the portal's server certificate
  /etc/portal/pki/revoked-serials.txt     the portal's revocation list: one certificate serial (hex) a line,
                                          read at every request made with a client certificate
  /etc/portal/keys/data.key               the data key of the document store (encryption at rest)
  /var/lib/portal/sessions.json           sessions: id -> account, source, channel, created, revoked
  /var/lib/portal/ca/index.txt            certificates the portal's CA issued (openssl ca's index format)
  /var/lib/portal/ca/serial               the next serial the CA issues (hex)
  /var/lib/portal/ca/newcerts/SERIAL.pem  each issued certificate
  /var/lib/portal/documents/register.csv  id;recipient;classification;date;title
  /var/lib/portal/documents/store/NNNN.enc  each document (row NNNN of the register), encrypted at rest
  /var/log/portal/                        access.log, auth.log, documents.log, pki.log, legacy-api-debug.log
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ETC = Path("/etc/portal")
VAR = Path("/var/lib/portal")
LOG = Path("/var/log/portal")
ACCOUNTS = ETC / "accounts.json"
REVOKED = ETC / "pki" / "revoked-serials.txt"
DATA_KEY = ETC / "keys" / "data.key"
SESSIONS = VAR / "sessions.json"
CA_DIR = VAR / "ca"
REGISTER = VAR / "documents" / "register.csv"
STORE = VAR / "documents" / "store"
LOCK = VAR / ".lock"
MAX_FAILURES = 3  # the ministry's policy: three wrong passwords lock the account until an administrator unlocks it


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@contextlib.contextmanager
def locked():
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def append_log(name: str, line: str) -> None:
    LOG.mkdir(parents=True, exist_ok=True)
    with open(LOG / name, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


# -- passwords and accounts ------------------------------------------------------------


def hash_password(account: str, password: str) -> str:
    salt = hashlib.sha256(b"mofa-portal:" + account.encode()).hexdigest()[:16]
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 20000)
    return f"pbkdf2_sha256$20000${salt}${dk.hex()}"


def password_ok(stored: str, password: str) -> bool:
    try:
        _, it, salt, want = stored.split("$")
    except ValueError:
        return False
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(it))
    return hmac.compare_digest(dk.hex(), want)


def accounts() -> dict:
    return _load(ACCOUNTS)


def save_accounts(data: dict) -> None:
    _save(ACCOUNTS, data)


def login(account: str, password: str, cert_cn: str | None, cert_serial: str | None) -> tuple[str, str]:
    """(result, reason) of one login attempt; updates the failure counter and the lockout.

    The password is checked first (every wrong one counts towards the lockout), then the
    account's policy: with client_cert_required the request must carry a valid client
    certificate issued to this account (TLS only: the legacy HTTP API never has one)."""
    with locked():
        data = accounts()
        acc = data.get(account)
        if acc is None:
            return "FAIL", "unknown-account"
        if acc.get("disabled"):
            return "REFUSED", "account-disabled"
        if acc.get("locked"):
            return "REFUSED", "account-locked"
        if not password_ok(acc.get("password", ""), password):
            acc["failures"] = int(acc.get("failures", 0)) + 1
            if acc["failures"] >= MAX_FAILURES:
                acc["locked"] = True
                acc["locked_at"] = now()
                save_accounts(data)
                return "FAIL", "bad-password-now-locked"
            save_accounts(data)
            return "FAIL", "bad-password"
        acc["failures"] = 0
        save_accounts(data)
        if acc.get("client_cert_required") and not (cert_cn == account and cert_serial):
            return "REFUSED", "client-certificate-required"
        return "OK", "password" + ("+certificate" if cert_serial else "")


def lockouts() -> list[str]:
    return sorted(a for a, v in accounts().items() if v.get("locked"))


# -- sessions ----------------------------------------------------------------------------

SID = re.compile(r"^[0-9a-f]{32}$")


def new_session(account: str, src: str, channel: str, wanted: str | None, cert_serial: str | None) -> str:
    """A session for account. The legacy API keeps a session id the client already holds
    (its MOFASID cookie) instead of issuing a fresh one: session fixation, never fixed."""
    with locked():
        data = _load(SESSIONS)
        sid = wanted if (wanted and SID.match(wanted) and wanted not in data) else secrets.token_hex(16)
        data[sid] = {"account": account, "source": src, "channel": channel, "created": now(),
                     "cert": cert_serial or "-", "revoked": False}
        _save(SESSIONS, data)
    return sid


def sessions() -> dict:
    return _load(SESSIONS)


def session_state(sid: str) -> tuple[str, str | None]:
    """('active', account) or ('refused: why', account) or ('unknown', None)."""
    s = sessions().get(sid)
    if s is None:
        return "unknown", None
    acc = accounts().get(s["account"], {})
    if s.get("revoked"):
        return "refused: session revoked", s["account"]
    if acc.get("disabled"):
        return "refused: account disabled", s["account"]
    if acc.get("locked"):
        return "refused: account locked", s["account"]
    if s.get("cert", "-") != "-" and is_revoked(s["cert"]):
        return "refused: certificate revoked", s["account"]
    return "active", s["account"]


def revoke_sessions(sid: str | None = None, account: str | None = None) -> list[str]:
    with locked():
        data = _load(SESSIONS)
        done = []
        for k, v in data.items():
            if (sid and k == sid) or (account and v["account"] == account):
                if not v.get("revoked"):
                    v["revoked"] = True
                    v["revoked_at"] = now()
                    done.append(k)
        _save(SESSIONS, data)
    return done


# -- revocation list ---------------------------------------------------------------------


def norm_serial(s: str) -> str:
    s = s.strip().upper().replace(":", "")
    if s.startswith("0X"):
        s = s[2:]
    return s.lstrip("0") or "0"


def revoked_serials() -> set[str]:
    try:
        lines = REVOKED.read_text().splitlines()
    except OSError:
        return set()
    return {norm_serial(ln.split("#")[0]) for ln in lines if ln.split("#")[0].strip()}


def is_revoked(serial: str) -> bool:
    return norm_serial(serial) in revoked_serials()


# -- the CA: a small X.509 signer (DER by hand, RSA PKCS#1 v1.5 with SHA-256) ---------


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _len(len(body)) + body


def _int(v: int) -> bytes:
    b = v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")
    if b[0] & 0x80:
        b = b"\0" + b
    return _tlv(0x02, b)


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytes([parts[0] * 40 + parts[1]])
    for p in parts[2:]:
        enc = [p & 0x7F]
        p >>= 7
        while p:
            enc.append(0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(reversed(enc))
    return _tlv(0x06, out)


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _children(der: bytes) -> list[bytes]:
    """The raw TLVs inside one constructed TLV."""
    i = 1
    n = der[i]
    i += 1
    if n & 0x80:
        k = n & 0x7F
        i += k
    out = []
    while i < len(der):
        start = i
        i += 1
        n = der[i]
        i += 1
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(der[i:i + k], "big")
            i += k
        i += n
        out.append(der[start:i])
    return out


def _int_value(tlv: bytes) -> int:
    body = _children(_seq(tlv))[0]
    hdr = 2 if body[1] < 0x80 else 2 + (body[1] & 0x7F)
    return int.from_bytes(body[hdr:], "big")


def _pem(text: str, label: str) -> bytes:
    m = re.search(rf"-----BEGIN {label}-----(.+?)-----END {label}-----", text, re.S)
    if not m:
        raise ValueError(f"no {label} block")
    return base64.b64decode("".join(m.group(1).split()))


def _name(*rdns: tuple[str, int, str]) -> bytes:
    return _seq(*(_tlv(0x31, _seq(_oid(oid), _tlv(tag, value.encode()))) for oid, tag, value in rdns))


def _utc(t: datetime) -> bytes:
    return _tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())


SHA256_RSA = _seq(_oid("1.2.840.113549.1.1.11"), b"\x05\x00")
DIGESTINFO_SHA256 = bytes.fromhex("3031300d060960864801650304020105000420")


def issue_certificate(account: str, device: str, csr_pem: str) -> tuple[str, str]:
    """Sign the CSR's public key for account (client authentication). Returns (serial, PEM)."""
    csr = _pem(csr_pem, "CERTIFICATE REQUEST")
    spki = _children(_children(csr)[0])[2]
    ca_cert = _pem((ETC / "pki" / "ca.crt").read_text(), "CERTIFICATE")
    tbs_ca = _children(_children(ca_cert)[0])
    issuer = tbs_ca[5] if tbs_ca[0][0] == 0xA0 else tbs_ca[4]
    key = _children(_pem((ETC / "pki" / "ca.key").read_text(), "RSA PRIVATE KEY"))
    n, d = _int_value(key[1]), _int_value(key[3])
    with locked():
        serial_file = CA_DIR / "serial"
        serial = norm_serial(serial_file.read_text())
        serial_file.write_text(secrets.token_hex(8).upper().lstrip("0") + "\n")
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        t1 = t0 + timedelta(days=365)
        subject = _name(("2.5.4.6", 0x13, "VN"), ("2.5.4.10", 0x0C, "Bo Ngoai giao"),
                        ("2.5.4.11", 0x0C, device[:64]), ("2.5.4.3", 0x0C, account))
        exts = _tlv(0xA3, _seq(
            _seq(_oid("2.5.29.19"), _tlv(0x04, _seq())),
            _seq(_oid("2.5.29.37"), _tlv(0x04, _seq(_oid("1.3.6.1.5.5.7.3.2")))),
        ))
        tbs = _seq(_tlv(0xA0, _int(2)), _int(int(serial, 16)), SHA256_RSA, issuer,
                   _seq(_utc(t0), _utc(t1)), subject, spki, exts)
        k = (n.bit_length() + 7) // 8
        t = DIGESTINFO_SHA256 + hashlib.sha256(tbs).digest()
        em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        sig = pow(int.from_bytes(em, "big"), d, n).to_bytes(k, "big")
        cert = _seq(tbs, SHA256_RSA, _tlv(0x03, b"\x00" + sig))
        b64 = base64.b64encode(cert).decode()
        pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)) \
            + "\n-----END CERTIFICATE-----\n"
        (CA_DIR / "newcerts").mkdir(parents=True, exist_ok=True)
        (CA_DIR / "newcerts" / f"{serial}.pem").write_text(pem)
        with open(CA_DIR / "index.txt", "a") as fh:
            fh.write(f"V\t{t1.strftime('%y%m%d%H%M%SZ')}\t\t{serial}\tunknown\t"
                     f"/C=VN/O=Bo Ngoai giao/OU={device[:64]}/CN={account}\n")
    return serial, pem


def issued() -> list[dict]:
    out = []
    try:
        lines = (CA_DIR / "index.txt").read_text().splitlines()
    except OSError:
        return out
    for ln in lines:
        f = ln.split("\t")
        if len(f) >= 6:
            cn = f[5].rsplit("/CN=", 1)[-1]
            out.append({"status": f[0], "expires": f[1], "serial": norm_serial(f[3]), "subject": f[5], "account": cn})
    return out


def cert_status(serial: str) -> str:
    s = norm_serial(serial)
    if is_revoked(s):
        return "revoked"
    if any(c["serial"] == s for c in issued()):
        return "valid"
    return "unknown"


def revoke_certificate(serial: str) -> bool:
    s = norm_serial(serial)
    if is_revoked(s):
        return False
    with locked():
        REVOKED.parent.mkdir(parents=True, exist_ok=True)
        with open(REVOKED, "a") as fh:
            fh.write(f"{s}  # revoked {now()}\n")
        idx = CA_DIR / "index.txt"
        try:
            lines = idx.read_text().splitlines()
        except OSError:
            lines = []
        out = []
        for ln in lines:
            f = ln.split("\t")
            if len(f) >= 6 and norm_serial(f[3]) == s and f[0] == "V":
                f[0], f[2] = "R", time.strftime("%y%m%d%H%M%SZ", time.gmtime())
            out.append("\t".join(f))
        if lines:
            idx.write_text("\n".join(out) + "\n")
    return True


# -- documents (encrypted at rest) -------------------------------------------------------


def _keystream(key: bytes, nonce: bytes, n: int) -> bytes:
    out = b""
    ctr = 0
    while len(out) < n:
        out += hashlib.sha256(key + nonce + ctr.to_bytes(8, "big")).digest()
        ctr += 1
    return out[:n]


def encrypt(doc_id: str, plain: bytes) -> bytes:
    key = DATA_KEY.read_bytes().strip()
    nonce = hashlib.sha256(b"nonce:" + doc_id.encode()).digest()[:12]
    ct = bytes(a ^ b for a, b in zip(plain, _keystream(key, nonce, len(plain)), strict=True))
    tag = hmac.new(key, nonce + ct, hashlib.sha256).digest()
    return b"MOFAENC1" + nonce + tag + ct


def decrypt(blob: bytes) -> bytes:
    key = DATA_KEY.read_bytes().strip()
    if blob[:8] != b"MOFAENC1":
        raise ValueError("not an encrypted document")
    nonce, tag, ct = blob[8:20], blob[20:52], blob[52:]
    if not hmac.compare_digest(tag, hmac.new(key, nonce + ct, hashlib.sha256).digest()):
        raise ValueError("document fails its integrity check")
    return bytes(a ^ b for a, b in zip(ct, _keystream(key, nonce, len(ct)), strict=True))


def register() -> list[dict]:
    out = []
    try:
        lines = REGISTER.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for n, ln in enumerate(lines[1:], 1):
        f = ln.split(";")
        if len(f) >= 5:
            out.append({"id": f[0], "recipient": f[1], "classification": f[2], "date": f[3], "title": f[4],
                        "file": f"{n:04d}.enc"})
    return out
