"""The scenario trust boundary: what a scenario may make rangectl do on the trainer's host.

A scenario is data plus Ansible playbooks, and playbooks are code the controller
(the trainer's host, as root) interprets. This module holds the rules rangectl
enforces (docs/security.md lists them and where each is enforced):

- :func:`rangectl.paths.allowed_roots` / :func:`rangectl.paths.find_side_file`: playbook and pcap paths resolve,
  symlinks included, inside the scenario's folder or the project's ``playbooks/``
  and ``scenarios/``;
- :data:`RESERVED_VAR_PREFIXES`: a node's ``vars`` cannot set ``ansible_*`` or
  ``rangectl_*`` (rangectl's inventory variables also win at run time);
- :func:`capability_problem`: capabilities come from a per-role allowlist, and the
  ones that open the host (``ALL``, ``SYS_ADMIN``, ``SYS_MODULE``, ...) never validate;
- :func:`scan_playbook`: a static scan for host-side plays (``delegate_to: localhost``,
  ``connection:``, ``hosts: localhost``, ``local_action``, controller-side lookups,
  controller file reads and writes), refused unless the trainer passes
  ``--trust-playbooks``. Run time adds a second line of defence in
  :mod:`rangectl.backend.provision` (a refusing ``local`` connection and lookups).

Pure: reads files, never runs them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from rangectl.paths import allowed_roots, inside
from rangectl.scenario.loader import read_regular

# --- side files (playbooks, pcaps): resolution lives in rangectl.paths -------------


def outside_message(what: str, ref: str, real: Path) -> str:
    return (
        f"{what} '{ref}' resolves to {real}, outside the scenario's folder and the project's "
        "playbooks/ and scenarios/"
    )


# --- node vars ------------------------------------------------------------------

RESERVED_VAR_PREFIXES = ("ansible_", "rangectl_")


def reserved_var(key: str) -> bool:
    return key.lower().startswith(RESERVED_VAR_PREFIXES)


# --- capabilities -----------------------------------------------------------------

# What Docker grants every container already; listing one changes nothing.
DOCKER_DEFAULT = frozenset(
    "CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP "
    "NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE".split()
)
# Capabilities that reach past the container: never granted, on any node.
FORBIDDEN = {
    "ALL": "every capability",
    "SYS_ADMIN": "mount, namespaces and much more: a known container escape",
    "SYS_MODULE": "loads kernel modules into the host's kernel",
    "SYS_PTRACE": "traces processes; with a shared PID namespace, the host's",
    "SYS_RAWIO": "raw I/O ports and device memory",
    "SYS_BOOT": "reboots the host",
    "SYS_TIME": "sets the host's clock (not namespaced)",
    "DAC_READ_SEARCH": "open_by_handle_at reads host files (the 'shocker' escape)",
    "MAC_ADMIN": "changes the host's MAC (AppArmor/SELinux) policy",
    "MAC_OVERRIDE": "overrides the host's MAC policy",
    "SYSLOG": "reads and clears the host's kernel log",
    "BPF": "loads eBPF programs into the host's kernel",
    "PERFMON": "observes the host's performance counters",
    "SYS_TTY_CONFIG": "configures the host's terminals",
    "AUDIT_CONTROL": "changes the host's audit rules",
    "AUDIT_READ": "reads the host's audit log",
    "WAKE_ALARM": "sets alarms that wake the host",
    "BLOCK_SUSPEND": "keeps the host from suspending",
    "CHECKPOINT_RESTORE": "checkpoint/restore of other processes",
    "LINUX_IMMUTABLE": "sets immutable flags on shared files",
}
# Extra capabilities per role, on top of Docker's default set.
EXTRA_BY_ROLE: dict[str, frozenset[str]] = {
    # trainees are root on blue nodes: networking only
    "blue": frozenset({"NET_ADMIN", "NET_BROADCAST"}),
    # nodes the scenario author runs (services, routers, attackers)
    "target": frozenset({"NET_ADMIN", "NET_BROADCAST", "IPC_LOCK", "SYS_NICE", "SYS_RESOURCE"}),
    "infra": frozenset({"NET_ADMIN", "NET_BROADCAST", "IPC_LOCK", "SYS_NICE", "SYS_RESOURCE"}),
    "red": frozenset({"NET_ADMIN", "NET_BROADCAST", "IPC_LOCK", "SYS_NICE", "SYS_RESOURCE"}),
}


def capability_problem(cap: str, role: str) -> str | None:
    """Why ``cap`` may not be granted to a node of ``role`` (None when it may)."""
    name = cap.upper().removeprefix("CAP_")
    if name in FORBIDDEN:
        return f"capability {cap} is never granted: {FORBIDDEN[name]}"
    allowed = DOCKER_DEFAULT | EXTRA_BY_ROLE.get(role, frozenset())
    if name in allowed:
        return None
    every = DOCKER_DEFAULT | frozenset().union(*EXTRA_BY_ROLE.values())
    if name in every:
        return f"capability {cap} is not allowed on a {role} node (allowed: {', '.join(sorted(EXTRA_BY_ROLE[role]))})"
    return f"unknown capability {cap}"


# --- the static playbook scan -------------------------------------------------------

MAX_PLAYBOOK_BYTES = 1_000_000
MAX_FILES = 200  # playbooks and task files one scenario may pull in

LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "localhost.localdomain", "ip6-localhost"}
# Lookups that only compute from their arguments or from inventory data.
PURE_LOOKUPS = frozenset(
    "items list dict sequence subelements nested together indexed_items random_choice vars varnames "
    "inventory_hostnames cartesian flattened".split()
)
BUILTIN_PREFIXES = ("ansible.builtin.", "ansible.legacy.")
TASK_KEYWORDS = frozenset(
    """action any_errors_fatal args async become become_exe become_flags become_method become_user changed_when
    check_mode collections connection debugger delay delegate_facts delegate_to diff environment failed_when
    ignore_errors ignore_unreachable local_action loop loop_control module_defaults name no_log notify poll
    port register remote_user retries run_once tags throttle timeout until vars when listen block rescue always
    apply""".split()
)
# Modules that act on the controller itself.
CONTROLLER_MODULES = {
    "fetch": "writes files on the trainer's host",
    "synchronize": "runs rsync on the trainer's host",
    "ansible.posix.synchronize": "runs rsync on the trainer's host",
    "add_host": "adds hosts (with any connection) to the inventory",
    "local_action": "runs on the trainer's host",
    "pause": "waits for input on the trainer's terminal",
}
# Modules whose `src` (or free-form first word) is read on the controller.
SRC_MODULES = {"copy", "template", "unarchive", "assemble", "script", "include_vars"}
INCLUDES = {"include_tasks", "import_tasks", "include"}
ROLE_INCLUDES = {"include_role", "import_role"}

# The one templated `hosts:` rangectl accepts: the group of nodes that list the playbook.
_RANGECTL_HOSTS = re.compile(r"\{\{\s*rangectl_hosts\s*(\|\s*default\(\s*(['\"])all\2\s*\)\s*)?\}\}")
_LOOKUP = re.compile(r"\b(lookup|query|q)\s*\(\s*(?:(['\"])([\w.]+)\2)?")
_DUNDER = re.compile(r"\{[{%][^}]*__")


@dataclass(frozen=True, order=True)
class PlayProblem:
    file: str
    line: int
    col: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.key}: {self.message}"


class _Scan:
    def __init__(self, roots: list[Path]):
        self.roots = roots
        self.problems: list[PlayProblem] = []
        self.seen: set[Path] = set()
        self.seen_dirs: set[tuple[str, Path]] = set()

    # -- helpers
    def bad(self, file: Path, node: Any, key: Any, message: str) -> None:
        line, col = _mark(node, key)
        self.problems.append(PlayProblem(str(file), line, col, str(key), message))

    def load(self, path: Path, origin: tuple[Path, Any, Any] | None) -> Any:
        try:
            raw = read_regular(path, MAX_PLAYBOOK_BYTES)
            text = raw.decode("utf-8")
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            msg = f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
            if origin:
                self.bad(origin[0], origin[1], origin[2], msg)
            else:
                self.problems.append(PlayProblem(str(path), 1, 1, "playbook", msg))
            return None
        yaml = YAML(typ="rt")
        try:
            return yaml.load(text)
        except (YAMLError, ValueError, TypeError, RecursionError) as exc:
            mark = getattr(exc, "problem_mark", None)
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            self.problems.append(PlayProblem(str(path), line, col, "playbook", "invalid YAML"))
            return None

    def resolve(
        self, ref: Any, base: Path, file: Path, node: Any, key: Any, subdirs: tuple[str, ...] = ("",), dirs: bool = False
    ) -> Path | None:
        """A file (or, with ``dirs``, a folder: every entry in it) a playbook refers to:
        inside the allowed folders, or a problem."""
        if not isinstance(ref, str) or "{{" in ref or "{%" in ref:
            self.bad(file, node, key, f"templated path {ref!r} cannot be checked; write a literal path")
            return None
        for sub in subdirs:
            c = (base / sub / ref) if sub else (base / ref)
            try:
                if c.is_file() or (dirs and c.is_dir()):
                    if not inside(c, self.roots):
                        self.bad(file, node, key, outside_message("file", ref, c.resolve()))
                        return None
                    if c.is_dir():  # copy follows symlinks inside a source folder
                        for n, entry in enumerate(c.rglob("*")):
                            if n > 10_000 or not inside(entry, self.roots):
                                self.bad(file, node, key, outside_message("file", str(entry), entry.resolve()))
                                return None
                    return c.resolve()
            except (OSError, RuntimeError, ValueError):
                continue
        self.bad(file, node, key, f"file '{ref}' not found beside the playbook")
        return None

    # -- playbooks
    def playbook(self, path: Path, origin: tuple[Path, Any, Any] | None = None) -> None:
        real = path.resolve()
        if real in self.seen:
            return
        if len(self.seen) >= MAX_FILES:
            self.problems.append(PlayProblem(str(path), 1, 1, "playbook", f"more than {MAX_FILES} playbook files"))
            return
        self.seen.add(real)
        self.folder(path.parent)
        data = self.load(path, origin)
        if data is None:
            return
        self.strings(path, data)
        if not isinstance(data, list):
            self.problems.append(PlayProblem(str(path), 1, 1, "playbook", "a playbook is a list of plays"))
            return
        for play in data:
            if not isinstance(play, dict):
                continue
            self.play(path, play)

    def play(self, file: Path, play: CommentedMap) -> None:
        base = file.parent
        for key in ("import_playbook", "ansible.builtin.import_playbook"):
            if key in play:
                target = self.resolve(play[key], base, file, play, key)
                if target is not None:
                    self.playbook(target, (file, play, key))
        if "hosts" in play:
            self.hosts(file, play, play["hosts"])
        if "connection" in play:
            self.bad(file, play, "connection", f"'connection: {play['connection']}' changes how rangectl reaches "
                     "the nodes (connection: local runs on the trainer's host)")
        self.vars(file, play, "vars")
        vf = play.get("vars_files")
        if vf is not None:
            for i, ref in enumerate(vf if isinstance(vf, list) else [vf]):
                node = vf if isinstance(vf, list) else play
                target = self.resolve(ref, base, file, node, i if isinstance(vf, list) else "vars_files", ("", "vars"))
                if target is not None:
                    self.vars_file(target, (file, node, i if isinstance(vf, list) else "vars_files"))
        roles = play.get("roles")
        if isinstance(roles, list):
            for i, r in enumerate(roles):
                name = r.get("role", r.get("name")) if isinstance(r, dict) else r
                self.role(file, roles, i, name, r if isinstance(r, dict) else None)
        for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            self.tasks(file, play.get(section))

    def hosts(self, file: Path, play: CommentedMap, value: Any) -> None:
        text = value if isinstance(value, str) else ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        shown = text
        if "{{" in text or "{%" in text:
            rest = _RANGECTL_HOSTS.sub("", text)
            if "{{" in rest or "{%" in rest:
                self.bad(file, play, "hosts", "templated hosts other than \"{{ rangectl_hosts | default('all') }}\" "
                         "cannot be checked")
                return
            text = rest
        parts = [p.strip().lstrip("!&") for p in re.split(r"[,:]", text) if p.strip()]
        for p in parts:
            if p.lower() in LOCAL_NAMES or p.startswith("127.") or p.lower().startswith("localhost"):
                self.bad(file, play, "hosts", f"hosts: {shown} runs on the trainer's host")
                return
            if p in ("all", "*") or "*" in p or p.startswith("~"):
                self.bad(file, play, "hosts", f"hosts: {shown} would include the trainer's host; "
                         "use hosts: \"{{ rangectl_hosts | default('all') }}\"")
                return

    def folder(self, folder: Path) -> None:
        """What Ansible loads from beside a playbook (or in a role) without being asked:
        plugin folders (Python run on the controller) and group_vars/host_vars."""
        real = folder.resolve()
        if ("dir", real) in self.seen_dirs:
            return
        self.seen_dirs.add(("dir", real))
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for d in entries:
            if not d.is_dir():
                continue
            if d.name.endswith("_plugins") or d.name == "collections":
                self.problems.append(
                    PlayProblem(str(d), 1, 1, d.name, "Ansible loads plugins from this folder and runs them on the "
                                "trainer's host")
                )
            elif d.name in ("group_vars", "host_vars"):
                for f in sorted(d.rglob("*")):
                    if f.is_file() and f.suffix in ("", ".yml", ".yaml", ".json"):
                        self.vars_file(f, None)

    def role(self, file: Path, node: Any, key: Any, name: Any, args: Any = None, where: Path | None = None) -> None:
        """Scan a role named in ``file`` (found in roles/ beside it, or beside ``where``)."""
        if not isinstance(name, str) or "{{" in name:
            self.bad(file, node, key, f"role {name!r} cannot be checked; name a role beside the playbook")
            return
        args = args if isinstance(args, dict) else {}
        here = where or file.parent
        for base in (here / "roles" / name, here / name):
            if not (base / "tasks").is_dir() and not (base / "meta").is_dir():
                continue
            if not inside(base, self.roots):
                self.bad(file, node, key, outside_message("role", name, base.resolve()))
                return
            if base.resolve() in self.seen:
                return
            self.seen.add(base.resolve())
            self.folder(base)
            for sub, arg, scan in (
                ("tasks", "tasks_from", self.task_file),
                ("handlers", "handlers_from", self.task_file),
                ("vars", "vars_from", self.vars_file),
                ("defaults", "defaults_from", self.vars_file),
            ):
                want = args.get(arg, "main")
                if not isinstance(want, str) or "{{" in want:
                    self.bad(file, node, key, f"templated {arg} cannot be checked")
                    continue
                for cand in (base / sub / want, base / sub / f"{want}.yml", base / sub / f"{want}.yaml"):
                    if cand.is_file():
                        if not inside(cand, self.roots):
                            self.bad(file, node, key, outside_message("file", want, cand.resolve()))
                        else:
                            scan(cand, (file, node, key))
                        break
            meta = base / "meta" / "main.yml"
            if meta.is_file():
                data = self.load(meta, (file, node, key))
                deps = data.get("dependencies") if isinstance(data, dict) else None
                if isinstance(deps, list):
                    for i, dep in enumerate(deps):
                        dname = dep.get("role", dep.get("name")) if isinstance(dep, dict) else dep
                        self.role(meta, deps, i, dname, dep if isinstance(dep, dict) else None, base.parent)
            return
        self.bad(file, node, key, f"role '{name}' not found in roles/ beside the playbook")

    def task_file(self, path: Path, origin: tuple[Path, Any, Any]) -> None:
        real = path.resolve()
        if real in self.seen:
            return
        if len(self.seen) >= MAX_FILES:
            return
        self.seen.add(real)
        data = self.load(path, origin)
        if data is None:
            return
        self.strings(path, data)
        self.tasks(path, data)

    def vars_file(self, path: Path, origin: tuple[Path, Any, Any] | None) -> None:
        data = self.load(path, origin)
        if data is None:
            return
        self.strings(path, data)
        if isinstance(data, dict):
            for k in data:
                if isinstance(k, str) and k.lower().startswith("ansible_"):
                    self.bad(path, data, k, "a playbook may not set ansible_* variables (they choose where tasks run)")

    def vars(self, file: Path, node: CommentedMap, key: str) -> None:
        v = node.get(key)
        if isinstance(v, dict):
            for k in v:
                if isinstance(k, str) and k.lower().startswith("ansible_"):
                    self.bad(file, v, k, "a playbook may not set ansible_* variables (they choose where tasks run)")

    def tasks(self, file: Path, tasks: Any) -> None:
        if not isinstance(tasks, list):
            return
        for t in tasks:
            if isinstance(t, dict):
                self.task(file, t)

    def task(self, file: Path, t: CommentedMap) -> None:
        base = file.parent
        for section in ("block", "rescue", "always"):
            if section in t:
                self.tasks(file, t[section])
        if "delegate_to" in t:
            target = str(t["delegate_to"])
            if "{{" in target or "{%" in target:
                self.bad(file, t, "delegate_to", f"templated delegate_to {target!r} cannot be checked "
                         "(it may name the trainer's host)")
            elif target.strip().lower() in LOCAL_NAMES or target.strip().startswith("127."):
                self.bad(file, t, "delegate_to", f"delegate_to: {target} runs the task on the trainer's host")
            else:
                self.bad(file, t, "delegate_to", f"delegate_to: {target} runs the task outside the node "
                         "(each node provisions itself)")
        if "connection" in t:
            self.bad(file, t, "connection", f"'connection: {t['connection']}' changes how rangectl reaches the "
                     "node (connection: local runs on the trainer's host)")
        self.vars(file, t, "vars")
        for key in t:
            if not isinstance(key, str):
                continue
            mod = key.removeprefix("ansible.builtin.").removeprefix("ansible.legacy.")
            if key.startswith("with_"):
                name = key[5:]
                if name not in PURE_LOOKUPS:
                    self.bad(file, t, key, f"{key} runs the '{name}' lookup on the trainer's host")
                continue
            if mod in TASK_KEYWORDS and mod not in ("local_action", "action"):
                continue
            args = t[key]
            if mod == "action":  # action: fetch src=... / action: {module: fetch, ...}
                name = args.get("module") if isinstance(args, dict) else (str(args).split() or [""])[0]
                mod = str(name).removeprefix("ansible.builtin.").removeprefix("ansible.legacy.")
                if isinstance(args, str):
                    args = " ".join(str(args).split()[1:])
            if mod in CONTROLLER_MODULES:
                self.bad(file, t, key, f"{key} {CONTROLLER_MODULES[mod]}")
            elif mod == "set_fact" and isinstance(args, dict):
                for k in args:
                    if isinstance(k, str) and k.lower().startswith("ansible_"):
                        self.bad(file, args, k, "a playbook may not set ansible_* variables (they choose where tasks run)")
            elif mod in INCLUDES:
                ref = args.get("file") if isinstance(args, dict) else args
                target = self.resolve(ref, base, file, t, key, ("", "tasks"))
                if target is not None:
                    self.task_file(target, (file, t, key))
            elif mod in ROLE_INCLUDES:
                name = args.get("name") if isinstance(args, dict) else args
                self.role(file, t, key, name, args)
            elif mod in SRC_MODULES:
                self.src(file, t, key, mod, args)

    def src(self, file: Path, t: CommentedMap, key: str, mod: str, args: Any) -> None:
        if isinstance(args, dict):
            if args.get("remote_src") in (True, "yes", "true", "True"):
                return
            ref = args.get("src", args.get("file", args.get("cmd")))
            if ref is None and mod in ("copy",):
                return  # content: only
        else:
            words = str(args).split() if args else []
            kv = dict(w.split("=", 1) for w in words if "=" in w)
            if kv.get("remote_src") in ("yes", "true", "True"):
                return
            ref = kv.get("src", kv.get("file")) or next((w for w in words if "=" not in w), None)
            if ref is None and mod == "copy":
                return
        if ref is None:
            if mod == "include_vars":
                self.bad(file, t, key, "include_vars without a literal file cannot be checked")
            return
        subdirs = {"template": ("templates", ""), "include_vars": ("vars", "")}.get(mod, ("files", ""))
        target = self.resolve(ref, file.parent, file, t, key, subdirs, dirs=mod in ("copy", "assemble"))
        if target is None:
            return
        if mod == "include_vars":
            self.vars_file(target, (file, t, key))
        elif mod == "template":
            try:
                text = read_regular(target, MAX_PLAYBOOK_BYTES).decode("utf-8", "replace")
            except (OSError, ValueError) as exc:
                self.bad(file, t, key, f"cannot read template {ref}: {exc}")
                return
            for msg in _string_problems(text):
                self.bad(file, t, key, f"template {ref}: {msg}")

    def strings(self, file: Path, data: Any) -> None:
        """Controller-side Jinja anywhere in a file: lookups, query() and Python internals."""
        stack: list[tuple[Any, Any, Any, bool]] = [(data, None, None, False)]
        while stack:
            node, parent, key, bare = stack.pop()
            if isinstance(node, dict):
                for k, v in node.items():
                    stack.append((v, node, k, k in BARE_JINJA_KEYS))
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    stack.append((v, node, i, bare))
            elif isinstance(node, str) and parent is not None:
                for msg in _string_problems(node, bare):
                    self.bad(file, parent, key, msg)


# Keys whose values Ansible evaluates as Jinja without {{ }}.
BARE_JINJA_KEYS = frozenset({"when", "changed_when", "failed_when", "until"})


def _string_problems(text: str, bare: bool = True) -> list[str]:
    """Controller-side Jinja in ``text`` (a template, or a value Ansible templates)."""
    if not bare and "{{" not in text and "{%" not in text:
        return []
    out = []
    for m in _LOOKUP.finditer(text):
        fn, name = m.group(1), m.group(3)
        if name is None:
            out.append(f"{fn}() with a computed plugin name cannot be checked")
            continue
        short = name
        for p in BUILTIN_PREFIXES:
            short = short.removeprefix(p)
        if short not in PURE_LOOKUPS:
            out.append(f"{fn}('{name}') runs on the trainer's host")
    if _DUNDER.search(text):
        out.append("Jinja reaching Python internals ('__') runs code on the trainer's host")
    return out


def _mark(node: Any, key: Any) -> tuple[int, int]:
    try:
        if isinstance(node, CommentedMap) and key in node:
            ln, cl = node.lc.key(key)
            return ln + 1, cl + 1
        if isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            ln, cl = node.lc.item(key)
            return ln + 1, cl + 1
        if hasattr(node, "lc") and node.lc.line is not None:
            return node.lc.line + 1, node.lc.col + 1
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return 1, 1


def scan_playbooks(playbooks: list[Path], scenario_file: Path) -> list[PlayProblem]:
    """Host-side plays in ``playbooks`` and every file they pull in (sorted, deduplicated)."""
    scan = _Scan(allowed_roots(scenario_file))
    for pb in playbooks:
        scan.playbook(pb)
    return sorted(set(scan.problems))


def scan_playbook(playbook: Path, scenario_file: Path) -> list[PlayProblem]:
    return scan_playbooks([playbook], scenario_file)
