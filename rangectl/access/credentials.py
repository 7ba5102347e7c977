"""Per-team credentials: an API bearer token and an SSH key pair, made at ``up``.

* The token (``rct_`` + 43 url-safe characters, 256 random bits) and the SSH
  private key exist in plain text only in the files the trainer hands out,
  ``$STATE/credentials/team-K.*`` (folder 0700, files 0600). The range's
  SQLite database keeps only the token's SHA-256 and the public keys.
* Checking a token hashes it and compares the hash with every team's hash
  using :func:`hmac.compare_digest` (no early exit, no lookup by value), so
  timing says nothing about which team, if any, a token is close to.
* ``rotate`` replaces a team's token and SSH key: the old ones stop working
  at once for the API (within :data:`CACHE_SECONDS` for a running ``serve``)
  and for SSH as soon as the new ``authorized_keys`` is installed.
* Each team also gets an SSH *host* key for its workstation's sshd, so
  trainees connect with ``StrictHostKeyChecking=yes`` (``team-K.known_hosts``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shlex
import sqlite3
import threading
import time
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rangectl.errors import NotFound, UsageError
from rangectl.state import RangeState, connect

TOKEN_PREFIX = "rct_"
CACHE_SECONDS = 1.0
DEFAULT_API = "127.0.0.1:8780"
DEFAULT_SSH_HOST = "127.0.0.1"
DEFAULT_SSH_BASE = 2200
SSH_USER = "root"

SCHEMA = """
CREATE TABLE IF NOT EXISTS access_credentials (
    team INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL,
    ssh_public TEXT NOT NULL,
    ssh_fingerprint TEXT NOT NULL,
    host_public TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    rotated REAL
)
"""


# --- primitives --------------------------------------------------------------------


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def ssh_keypair(comment: str) -> tuple[str, str]:
    """(OpenSSH private key PEM, ``ssh-ed25519 AAAA... comment``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, f"{public} {comment}"


def ssh_fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# --- files ---------------------------------------------------------------------------


def credentials_dir(state: RangeState) -> Path:
    return state.dir / "credentials"


def install_dir(state: RangeState) -> Path:
    """Per-team files for the workstation (respond.env, authorized_keys, host key): trainer side only."""
    return state.dir / "access" / "install"


@dataclass
class TeamFiles:
    env: Path
    key: Path
    known_hosts: Path
    ssh_config: Path

    def all(self) -> list[Path]:
        return [self.env, self.key, self.known_hosts, self.ssh_config]


def team_files(state: RangeState, team: int) -> TeamFiles:
    d = credentials_dir(state)
    return TeamFiles(
        d / f"team-{team}.env",
        d / f"team-{team}.key",
        d / f"team-{team}.known_hosts",
        d / f"team-{team}.ssh_config",
    )


def host_alias(state: RangeState, team: int) -> str:
    return f"rangectl-{state.name}-team-{team}"


def private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_secret(path: Path, text: str) -> None:
    """Write a 0600 file atomically (never readable by others, even for a moment)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Endpoints:
    """Where trainees reach the range: the API address and the SSH host/port base (set by ``serve``)."""

    api: str = DEFAULT_API
    ssh_host: str = DEFAULT_SSH_HOST
    ssh_base: int = DEFAULT_SSH_BASE

    def ssh_port(self, team: int) -> int:
        return self.ssh_base + team


def endpoints(state: RangeState) -> Endpoints:
    raw = state.get("access_endpoints") or {}
    return Endpoints(
        api=str(raw.get("api", DEFAULT_API)),
        ssh_host=str(raw.get("ssh_host", DEFAULT_SSH_HOST)),
        ssh_base=int(raw.get("ssh_base", DEFAULT_SSH_BASE)),
    )


def _env_text(
    state: RangeState, team: int, token: str, ssh_private: str, host_public: str, ep: Endpoints
) -> str:
    alias = host_alias(state, team)
    values = {
        "RANGECTL_RANGE": state.name,
        "RANGECTL_TEAM": str(team),
        "RANGECTL_TOKEN": token,
        "RANGECTL_API": f"http://{ep.api}",
        "RANGECTL_SSH_HOST": ep.ssh_host,
        "RANGECTL_SSH_PORT": str(ep.ssh_port(team)),
        "RANGECTL_SSH_USER": SSH_USER,
        "RANGECTL_SSH_HOST_KEY_ALIAS": alias,
        "RANGECTL_SSH_KNOWN_HOSTS": f"{alias} {_key_only(host_public)}",
        "RANGECTL_SSH_KEY_B64": base64.b64encode(ssh_private.encode()).decode(),
    }
    head = (
        f"# rangectl credentials for team {team} of range '{state.name}'. Keep secret.\n"
        "# RANGECTL_TOKEN is the API bearer token; RANGECTL_SSH_KEY_B64 the SSH private key (base64).\n"
        f"# SSH: ssh -F team-{team}.ssh_config {alias}\n"
    )
    return head + "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def _key_only(public_line: str) -> str:
    parts = public_line.split()
    return f"{parts[0]} {parts[1]}"


def _ssh_config_text(state: RangeState, team: int, ep: Endpoints) -> str:
    f = team_files(state, team)
    return (
        f"Host {host_alias(state, team)}\n"
        f"    HostName {ep.ssh_host}\n"
        f"    Port {ep.ssh_port(team)}\n"
        f"    User {SSH_USER}\n"
        f"    IdentityFile {f.key.name}\n"
        "    IdentitiesOnly yes\n"
        f"    HostKeyAlias {host_alias(state, team)}\n"
        f"    UserKnownHostsFile {f.known_hosts.name}\n"
        "    StrictHostKeyChecking yes\n"
        "    PasswordAuthentication no\n"
    )


def _write_team_files(
    state: RangeState, team: int, token: str, ssh_private: str, host_public: str, ep: Endpoints
) -> TeamFiles:
    private_dir(credentials_dir(state))
    f = team_files(state, team)
    write_secret(f.env, _env_text(state, team, token, ssh_private, host_public, ep))
    write_secret(f.key, ssh_private)
    write_secret(f.known_hosts, f"{host_alias(state, team)} {_key_only(host_public)}\n")
    write_secret(f.ssh_config, _ssh_config_text(state, team, ep))
    return f


def _write_install_files(
    state: RangeState, team: int, token: str, ssh_public: str, host_private: str, host_public: str
) -> Path:
    base = install_dir(state)
    private_dir(base.parent)
    private_dir(base)
    d = base / f"team-{team}"
    private_dir(d)
    respond_env = (
        "# respond: this workstation's team credential (installed by rangectl)\n"
        f"RESPOND_URL={shlex.quote('http://127.0.0.1:8780')}\n"
        f"RESPOND_TOKEN={shlex.quote(token)}\n"
        f"RESPOND_TEAM={team}\n"
    )
    write_secret(d / "respond.env", respond_env)
    write_secret(d / "authorized_keys", ssh_public.strip() + "\n")
    write_secret(d / "ssh_host_ed25519_key", host_private)
    write_secret(d / "ssh_host_ed25519_key.pub", host_public.strip() + "\n")
    return d


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        parts = shlex.split(v) if v else [""]
        out[k.strip()] = parts[0] if parts else ""
    return out


# --- the database ----------------------------------------------------------------------


def _init(conn: sqlite3.Connection) -> None:
    conn.execute(SCHEMA)


@dataclass
class TeamCredential:
    team: int
    token_hash: str
    ssh_public: str
    ssh_fingerprint: str
    host_public: str
    generation: int
    created: float
    rotated: float | None


def load_credentials(state: RangeState) -> dict[int, TeamCredential]:
    with closing(connect(state.db_path)) as conn:
        _init(conn)
        rows = conn.execute(
            "SELECT team, token_hash, ssh_public, ssh_fingerprint, host_public, generation, created, rotated "
            "FROM access_credentials ORDER BY team"
        ).fetchall()
    return {r[0]: TeamCredential(*r) for r in rows}


def _record(state: RangeState, kind: str, team: int, data: dict[str, Any], actor: str = "trainer") -> None:
    try:
        from rangectl.store import EventStore
    except ImportError:  # the event store is not there: nothing to record into
        return
    EventStore(state.db_path).append(kind, data, team=team, actor=actor)


def _issue(state: RangeState, team: int, ep: Endpoints) -> tuple[str, str, str, str, str, str]:
    token = new_token()
    ssh_private, ssh_public = ssh_keypair(f"{state.name}-team-{team}")
    host_private, host_public = ssh_keypair(f"{host_alias(state, team)}-host")
    return token, token_hash(token), ssh_private, ssh_public, host_private, host_public


def team_range(teams: int | Iterable[int]) -> list[int]:
    if isinstance(teams, int):
        return list(range(1, teams + 1))
    return sorted(set(int(t) for t in teams))


def ensure_credentials(state: RangeState, teams: int | Iterable[int]) -> list[int]:
    """Make credentials for every team that has none yet (``up`` calls this; idempotent).

    ``teams`` is the team count (1..N) or an iterable of team numbers. Returns
    the teams that got new credentials; teams that already have some keep them
    (a reconciling ``up`` never changes a handed-out token).
    """
    wanted = team_range(teams)
    state.dir.mkdir(parents=True, exist_ok=True)
    ep = endpoints(state)
    made: list[int] = []
    with closing(connect(state.db_path)) as conn:
        _init(conn)
        have = {r[0] for r in conn.execute("SELECT team FROM access_credentials")}
        for team in wanted:
            if team in have:
                continue
            token, th, ssh_private, ssh_public, host_private, host_public = _issue(state, team, ep)
            # files first: a crash between the two leaves files with no row, and the next call makes new ones
            _write_team_files(state, team, token, ssh_private, host_public, ep)
            _write_install_files(state, team, token, ssh_public, host_private, host_public)
            cur = conn.execute(
                "INSERT OR IGNORE INTO access_credentials(team, token_hash, ssh_public, ssh_fingerprint, host_public, "
                "generation, created) VALUES (?, ?, ?, ?, ?, 1, ?)",
                (team, th, ssh_public, ssh_fingerprint(ssh_public), host_public, time.time()),
            )
            if cur.rowcount:
                made.append(team)
    for team in made:
        cred = load_credentials(state)[team]
        _record(
            state,
            "access.credentials",
            team,
            {"action": "issued", "generation": 1, "ssh_fingerprint": cred.ssh_fingerprint},
        )
    return made


def rotate(state: RangeState, team: int) -> TeamCredential:
    """New token and SSH key for ``team``; the old ones are revoked. The host key stays."""
    creds = load_credentials(state)
    if team not in creds:
        raise NotFound(f"range '{state.name}' has no team {team}", fix=f"see `rangectl teams {state.name}`")
    old = creds[team]
    ep = endpoints(state)
    host_private_path = install_dir(state) / f"team-{team}" / "ssh_host_ed25519_key"
    token = new_token()
    ssh_private, ssh_public = ssh_keypair(f"{state.name}-team-{team}")
    if host_private_path.exists():
        host_private, host_public = host_private_path.read_text(), old.host_public
    else:
        host_private, host_public = ssh_keypair(f"{host_alias(state, team)}-host")
    with closing(connect(state.db_path)) as conn:
        _init(conn)
        conn.execute(
            "UPDATE access_credentials SET token_hash=?, ssh_public=?, ssh_fingerprint=?, host_public=?, "
            "generation=generation+1, rotated=? WHERE team=?",
            (token_hash(token), ssh_public, ssh_fingerprint(ssh_public), host_public, time.time(), team),
        )
    _write_team_files(state, team, token, ssh_private, host_public, ep)
    _write_install_files(state, team, token, ssh_public, host_private, host_public)
    new = load_credentials(state)[team]
    _record(
        state,
        "access.credentials",
        team,
        {"action": "rotated", "generation": new.generation, "ssh_fingerprint": new.ssh_fingerprint},
    )
    return new


def set_endpoints(state: RangeState, ep: Endpoints) -> None:
    """Record where ``serve`` listens and rewrite the handed-out files' addresses (tokens unchanged)."""
    state.update(access_endpoints={"api": ep.api, "ssh_host": ep.ssh_host, "ssh_base": ep.ssh_base})
    for team, cred in load_credentials(state).items():
        f = team_files(state, team)
        if not f.env.exists():
            continue
        vals = read_env_file(f.env)
        token = vals.get("RANGECTL_TOKEN", "")
        key_b64 = vals.get("RANGECTL_SSH_KEY_B64", "")
        if not token or not key_b64:
            continue
        want_port = str(ep.ssh_port(team))
        if (
            vals.get("RANGECTL_API") == f"http://{ep.api}"
            and vals.get("RANGECTL_SSH_HOST") == ep.ssh_host
            and vals.get("RANGECTL_SSH_PORT") == want_port
        ):
            continue
        ssh_private = base64.b64decode(key_b64).decode()
        write_secret(f.env, _env_text(state, team, token, ssh_private, cred.host_public, ep))
        write_secret(f.ssh_config, _ssh_config_text(state, team, ep))


def check_team(state: RangeState, team: int) -> None:
    teams = int(state.get("teams", 0) or 0)
    if team < 1 or (teams and team > teams):
        raise UsageError(f"range '{state.name}' has teams 1..{teams}; there is no team {team}")


# --- checking tokens -------------------------------------------------------------------


class TokenVerifier:
    """Maps a presented bearer token to its team, or None. Thread-safe; re-reads the db every second."""

    def __init__(self, state: RangeState, cache_seconds: float = CACHE_SECONDS):
        self.state = state
        self.cache_seconds = cache_seconds
        self._rows: list[tuple[int, bytes]] = []
        self._loaded = -1e9
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _read(self) -> list[tuple[int, str]]:
        # a read-only connection kept open: a WAL reader never waits for the event store's writers
        # (opening a read-write connection, or CREATE TABLE IF NOT EXISTS, can wait on their lock)
        if self._conn is None:
            self._conn = sqlite3.connect(
                f"file:{self.state.db_path}?mode=ro", uri=True, timeout=5, check_same_thread=False
            )
        try:
            return self._conn.execute("SELECT team, token_hash FROM access_credentials").fetchall()
        except sqlite3.OperationalError:  # no table yet (no credentials) or the range is gone
            self._conn.close()
            self._conn = None
            return []

    def _refresh(self) -> list[tuple[int, bytes]]:
        now = time.monotonic()
        with self._lock:
            if now - self._loaded >= self.cache_seconds:
                rows = self._read()
                self._rows = [(int(t), bytes.fromhex(h)) for t, h in rows if h]
                self._loaded = now
            return self._rows

    def invalidate(self) -> None:
        with self._lock:
            self._loaded = -1e9

    def team_for(self, token: str | None) -> int | None:
        if not token or len(token) > 256:
            return None
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: int | None = None
        for team, stored in self._refresh():
            # every row is compared, match or not: constant work whatever the token
            if hmac.compare_digest(presented, stored) and found is None:
                found = team
        return found
