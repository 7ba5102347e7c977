"""`rangectl doctor`: is this machine ready to run ranges? One row per check, with the fix."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rangectl.backend.engine import connect, local_endpoint_problem

SETUP = "run scripts/setup.sh as root"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    status: str = ""

    def __post_init__(self):
        if not self.status:
            self.status = "OK" if self.ok else "MISSING"


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def _which(tool: str) -> str | None:
    path = os.pathsep.join([str(_venv_bin()), os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(tool, path=path)


def _socket_path() -> str | None:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://") :]
    if host:
        return None  # tcp:// or ssh://: no local socket to check
    return "/var/run/docker.sock"


def check_socket() -> Check:
    path = _socket_path()
    if path is None:
        why = local_endpoint_problem(os.environ.get("DOCKER_HOST"))
        return Check(
            "docker socket", False, why or "not a local socket",
            "unset DOCKER_HOST (or point it at unix:///var/run/docker.sock) and run rangectl on the engine's host",
            status="FAIL",
        )  # fmt: skip
    if not os.path.exists(path):
        return Check("docker socket", False, f"{path} does not exist", f"start the engine: {SETUP}")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check(
            "docker socket",
            False,
            f"no read/write permission on {path}",
            "run as root or add your user to the 'docker' group",
            status="FAIL",
        )
    return Check("docker socket", True, f"{path} is usable")


def check_engine():
    why = local_endpoint_problem(os.environ.get("DOCKER_HOST"))
    if why is not None:
        return Check("docker engine", False, why, "run rangectl on the engine's host", status="FAIL"), None
    try:
        c = connect(timeout=10)
        v = c.version()
        return Check(
            "docker engine", True, f"answers: version {v.get('Version', '?')}, API {v.get('ApiVersion', '?')}"
        ), c
    except Exception as exc:  # noqa: BLE001 - any failure here is the finding
        text = " ".join(str(exc).split())[:140]
        if "Permission denied" in text:
            return Check(
                "docker engine", False, text, "run as root or join the 'docker' group", status="FAIL"
            ), None
        return Check("docker engine", False, f"not answering ({text})", f"{SETUP} (starts dockerd)"), None


def check_images(client) -> list[Check]:
    from rangectl.backend.images import BASE, available_recipes, missing_images

    if client is None:
        return [Check("node images", False, "cannot check without the engine", "start the engine first")]
    recipes = [r for r in available_recipes() if r != BASE]
    if not recipes:
        return [
            Check(
                "node images", False, "no recipes under images/", "check RANGECTL_ROOT points at the checkout"
            )
        ]
    try:
        missing = missing_images(client, recipes)
    except Exception as exc:  # noqa: BLE001
        return [Check("node images", False, str(exc)[:160], "rangectl images build")]
    checks = []
    if missing:
        checks.append(
            Check(
                "node images",
                False,
                f"{len(recipes) - len(missing)}/{len(recipes)} built for the current recipes; missing: {', '.join(missing)}",
                "rangectl images build",
            )
        )
        deb = _which("debootstrap")
        checks.append(
            Check(
                "debootstrap",
                deb is not None,
                deb or "not found (needed to build the base image)",
                "apt-get install debootstrap, or build with --base-image NAME",
            )
        )
    else:
        checks.append(Check("node images", True, f"all {len(recipes)} built for the current recipes"))
    return checks


def check_tool(name: str, tool: str, fix: str) -> Check:
    p = _which(tool)
    return Check(name, p is not None, p or f"{tool} not found", fix)


def check_collection() -> Check:
    fix = ".venv/bin/pip install 'ansible>=9' (ships community.docker)"
    try:
        spec = importlib.util.find_spec("ansible_collections.community.docker")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return Check("community.docker collection", False, "not installed", fix)
    root = Path(list(spec.submodule_search_locations)[0])
    plugin = root / "plugins" / "connection" / "docker_api.py"
    if not plugin.is_file():
        return Check("community.docker collection", False, f"{root} has no docker_api connection plugin", fix)
    version = ""
    manifest = root / "MANIFEST.json"
    if manifest.is_file():
        try:
            version = json.loads(manifest.read_text())["collection_info"]["version"]
        except (ValueError, KeyError, OSError):
            version = ""
    return Check("community.docker collection", True, f"{version or 'present'} at {root}")


def check_privileges() -> Check:
    cap_net_admin = False
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                cap_net_admin = bool(int(line.split()[1], 16) & (1 << 12))
    except OSError:
        pass
    if os.geteuid() == 0 and cap_net_admin:
        return Check("root / CAP_NET_ADMIN", True, "root with CAP_NET_ADMIN")
    if cap_net_admin:
        return Check("root / CAP_NET_ADMIN", True, "CAP_NET_ADMIN (not root)")
    return Check(
        "root / CAP_NET_ADMIN",
        False,
        f"uid {os.geteuid()} without CAP_NET_ADMIN (routes and traffic need it)",
        "run rangectl as root (sudo)",
        status="FAIL",
    )


def run_checks() -> list[Check]:
    checks: list[Check] = []
    engine, client = check_engine()
    checks.append(engine)
    checks.append(check_socket())
    checks.extend(check_images(client))
    checks.append(check_tool("ansible-playbook", "ansible-playbook", f".venv/bin/pip install -e . ({SETUP})"))
    checks.append(check_collection())
    checks.append(check_tool("iproute2 (ip)", "ip", "apt-get install iproute2"))
    checks.append(check_tool("nsenter", "nsenter", "apt-get install util-linux"))
    checks.append(check_privileges())
    return checks


def doctor(json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON.")) -> None:
    """Check the machine is ready: engine, socket, images, Ansible, tools, privileges."""
    checks = run_checks()
    ok = all(c.ok for c in checks)
    if json_out:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        console = Console()
        t = Table(show_edge=False)
        t.add_column("check")
        t.add_column("status")
        t.add_column("detail")
        t.add_column("fix")
        for c in checks:
            colour = "green" if c.ok else "red"
            t.add_row(
                c.name, f"[{colour}]{c.status}[/{colour}]", escape(c.detail), "" if c.ok else escape(c.fix)
            )
        console.print(t)
        console.print("[green]ready[/green]" if ok else "[red]not ready[/red]: apply the fixes above")
    raise typer.Exit(0 if ok else 1)
