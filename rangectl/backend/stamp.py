"""Provision once, stamp per team (docs/ranges.md, "Stamps").

Every team's copy of a node gets the same playbooks; only what the playbooks see of the team
differs (addresses, the team's drawn values, its number). So instead of running Ansible on
every team's node, rangectl provisions a node **twice, as two sample teams**, in throw-away
template containers, and compares the results:

1. Each sample's inventory values are those of a real team of a large plan (the last two
   teams, variables drawn from a fixed seed). A value that differs between the two samples is
   *per-team*; every other value is the same for every team (checked against the range's
   own teams: a value that differs among real teams but not between the samples makes the
   node unstampable).
2. Both templates run from the node's image with its entrypoint replaced by an idle
   process (the services start later, in the real nodes), on no network, with the node's
   capabilities; the node's playbooks run on them in one ansible-runner call.
3. The node is **stampable** when the two templates changed the same paths, every changed
   file is byte-identical except where sample A's per-team values stand where sample B has
   its own (checked by substituting them), those files are UTF-8 text, and the playbooks
   left no process running and no firewall rule (a stamp carries files only).
4. Sample A's container is committed as ``rangectl/stamp:<key>`` with the image's own
   entrypoint and settings. Each team's node is created from it, the files holding per-team
   values are written into the container with the team's values *before* it starts, and
   nothing runs Ansible for it.

The verdict and the files are cached under ``$RANGECTL_HOME/stamps/<key>.json``, keyed by
a hash of the image, the playbooks' folders, the per-node values and this module's
version: "once ever while the inputs are unchanged". A node that is not stampable (a
playbook that starts a daemon, writes a timestamp, or fails on a sample) is provisioned
node by node as before; the reason is recorded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rangectl import labels as L
from rangectl import paths
from rangectl.backend.engine import engine_url
from rangectl.backend.execs import run_exec
from rangectl.backend.provision import EventNote, host_vars, playbooks_of, run_playbooks
from rangectl.errors import RangeError, ScenarioError
from rangectl.plan import NodePlan, Plan, TeamPlan, plan
from rangectl.scenario.model import Scenario
from rangectl.scenario.variables import substitute_all

STAMP_VERSION = "2"
REPO = "rangectl/stamp"
SAMPLE_SEED = "rangectl-stamp"
#: paths whose changes never go into a stamp's comparison (Ansible's own scratch space)
SCRATCH = ("/root/.ansible", "/tmp/.ansible", "/root/.cache")
#: the fewest teams for which ``up`` samples a node it has no verdict for (RANGECTL_STAMP unset):
#: sampling provisions two template copies of the node, as much Ansible work as two teams' own
#: nodes, plus the comparison and the commit (measured in docs/ranges.md, "Stamps")
STAMP_MIN_TEAMS = 3
MAX_FILE = 4 << 20  # a per-team file larger than this is not rendered (the node is not stamped)
Leaf = tuple[Any, ...]


# --- pure: values, substitution, the comparison ----------------------------------------------------


def leaves(value: Any, prefix: Leaf = ()) -> dict[Leaf, str]:
    """Every scalar of a nested dict/list, by its path, as text."""
    if isinstance(value, dict):
        out: dict[Leaf, str] = {}
        for k in sorted(value, key=str):
            out.update(leaves(value[k], (*prefix, k)))
        return out
    if isinstance(value, list | tuple):
        out = {}
        for i, v in enumerate(value):
            out.update(leaves(v, (*prefix, i)))
        return out
    return {prefix: "" if value is None else str(value)}


def per_team(samples: list[dict[str, Any]], teams: list[dict[str, Any]]) -> tuple[dict[Leaf, list[str]], str | None]:
    """The leaves that differ between the two samples ({path: [a, b]}), or a reason the node
    cannot be stamped: a leaf the real teams disagree on but the samples share, an empty
    per-team value, or one sample value standing for two quantities that are not the same
    for every team (it could not be told which to put back)."""
    a, b = leaves(samples[0]), leaves(samples[1])
    if set(a) != set(b):
        return {}, "the samples' variables have different shapes"
    out = {p: [a[p], b[p]] for p in a if a[p] != b[p]}
    real = [leaves(t) for t in teams]
    for lt in real:
        for p, v in lt.items():
            if p not in out and v != a.get(p):
                return {}, f"{_dotted(p)} differs between teams but not between the samples"
    first: dict[str, Leaf] = {}
    for p, (va, vb) in out.items():
        if va == "" or vb == "":
            return {}, f"{_dotted(p)} is empty in a sample"
        q = first.setdefault(va, p)
        if q != p and (b[q] != vb or any(lt.get(q) != lt.get(p) for lt in real)):
            return {}, f"one sample value stands for both {_dotted(q)} and {_dotted(p)}"
    return out, None


def _dotted(p: Leaf) -> str:
    return ".".join(map(str, p))


NUMERIC = re.compile(r"[\d./:]+")


def substitution(mapping: dict[str, str]) -> Callable[[str], str]:
    """Replace each key of ``mapping`` by its value, longest first, in one pass. A number or an
    address (digits, dots, a prefix length) is replaced only as a whole token (not inside a
    longer number or address: a team number 63 is not the 63 of 10.0.63.1); a value with
    letters wherever it stands (a drawn domain label inside ``www.LABEL.test``). The samples'
    check (:func:`explain`) proves no other occurrence is hit."""
    if not mapping:
        return lambda text: text
    keys = sorted(mapping, key=len, reverse=True)
    nums = [re.escape(k) for k in keys if NUMERIC.fullmatch(k)]
    words = [re.escape(k) for k in keys if not NUMERIC.fullmatch(k)]
    alts = []
    if words:
        alts.append(f"(?:{'|'.join(words)})")
    if nums:
        alts.append(rf"(?<![\w.])(?:{'|'.join(nums)})(?![\w])(?!\.\d)")
    rx = re.compile("|".join(alts))
    return lambda text: rx.sub(lambda m: mapping[m.group(0)], text)


def sample_map(values: dict[Leaf, list[str]], src: int, dst: int) -> dict[str, str]:
    return {v[src]: v[dst] for v in values.values()}


def explain(a: dict[str, bytes], b: dict[str, bytes], values: dict[Leaf, list[str]]) -> str | None:
    """Why two files the samples wrote differently are not the same file up to the team's
    values (None: they are). ``a`` and ``b``: {path: content} of the files whose contents
    differ between the two samples."""
    to_b = substitution(sample_map(values, 0, 1))
    for path in sorted(a):
        try:
            ta, tb = a[path].decode("utf-8"), b[path].decode("utf-8")
        except UnicodeDecodeError:
            return f"{path} differs between the samples and is not text"
        if len(a[path]) > MAX_FILE:
            return f"{path} holds per-team values and is larger than {MAX_FILE >> 20} MiB"
        if to_b(ta) != tb:
            return f"{path} differs between the samples by more than the team's values (a timestamp, a random value?)"
    return None


# --- a stamp ------------------------------------------------------------------------------------


@dataclass
class StampFile:
    path: str
    text: str  # with sample A's per-team values in it
    mode: int
    uid: int
    gid: int


@dataclass
class Stamp:
    node: str
    key: str
    image: str  # the committed image's id
    ref: str  # rangectl/stamp:<key>
    values: dict[str, list[str]] = field(default_factory=dict)  # leaf path (dotted) -> [a, b]
    paths_: dict[str, list[Any]] = field(default_factory=dict)  # dotted -> leaf path
    files: list[StampFile] = field(default_factory=list)
    seconds: float = 0.0

    def render(self, team_vars: dict[str, Any]) -> dict[str, tuple[bytes, int, int, int]]:
        """{path: (content, mode, uid, gid)} of the per-team files with ``team_vars``' values."""
        lt = leaves(team_vars)
        mapping = {}
        for dotted, (a, _b) in self.values.items():
            leaf = tuple(self.paths_[dotted])
            if leaf not in lt:
                raise RangeError(f"stamp {self.key[:12]} of '{self.node}': the team has no value for {dotted}")
            mapping[a] = lt[leaf]
        sub = substitution(mapping)
        return {f.path: (sub(f.text).encode(), f.mode, f.uid, f.gid) for f in self.files}

    def tar(self, team_vars: dict[str, Any]) -> bytes:
        """The per-team files as a tar to put into the created (not started) container at /."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for path, (data, mode, uid, gid) in self.render(team_vars).items():
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, int(time.time())
                tf.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "files": [asdict(f) for f in self.files]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stamp:
        d = dict(d)
        files = [StampFile(**f) for f in d.pop("files", [])]
        return cls(**d, files=files)


def cache_dir() -> Path:
    d = paths.state_home() / "stamps"
    d.mkdir(parents=True, exist_ok=True)
    return d


def sample_teams(scenario: Scenario) -> list[TeamPlan]:
    """Two teams of a large plan (the last two), variables drawn from a fixed seed."""
    for n in (64, 16, 4, 2):
        try:
            p = plan(scenario, n, SAMPLE_SEED)
        except ScenarioError:
            continue
        return p.teams[-2:]
    raise ScenarioError(f"{scenario.name}: no plan for two teams")


def _tree_hash(folders: list[Path]) -> str:
    h = hashlib.sha256()
    for folder in sorted(set(folders)):
        for f in sorted(folder.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def stamp_key(image_id: str, books: list[Path], samples: list[dict[str, Any]], node: NodePlan) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([STAMP_VERSION, image_id, [str(b) for b in books], samples,
                         sorted(node.capabilities), sorted(node.sysctls.items())], sort_keys=True, default=str).encode())  # fmt: skip
    h.update(_tree_hash([b.parent for b in books]).encode())
    return h.hexdigest()


# --- on the Docker engine ------------------------------------------------------------------------

SNAPSHOT = """
import os
me = {os.getpid(), os.getppid()}
out = []
for p in os.listdir('/proc'):
    if p.isdigit() and int(p) not in me:
        try:
            c = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').strip()
        except OSError:
            continue
        if c:
            out.append(c.decode(errors='replace'))
print('\\n'.join(sorted(set(out))))
"""

# Reads paths (one a line) on stdin, prints {path: [kind, sha256 or link target, mode, uid, gid]}.
FILESTAT = """
import hashlib, json, os, stat, sys
out = {}
for path in sys.argv[1:]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        out[path] = ['deleted', '', 0, 0, 0]
        continue
    if stat.S_ISDIR(st.st_mode):
        continue
    if stat.S_ISLNK(st.st_mode):
        out[path] = ['link', os.readlink(path), 0, st.st_uid, st.st_gid]
        continue
    if not stat.S_ISREG(st.st_mode):
        out[path] = ['special', '', stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
        continue
    h = hashlib.sha256()
    with open(path, 'rb') as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b''):
            h.update(chunk)
    out[path] = ['file', h.hexdigest(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
print(json.dumps(out))
"""


@dataclass
class Verdict:
    node: str
    key: str
    ok: bool
    reason: str = ""
    stamp: Stamp | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "stamped": self.ok, "stamp": self.stamp.ref if self.stamp else None,
                "key": self.key[:16], "reason": self.reason}  # fmt: skip


def node_inputs(range_name: str, scenario: Scenario, t: TeamPlan, node: str) -> dict[str, Any]:
    """What a node's playbooks can see of its team: the inventory variables and the node's
    environment (``env``, with the team's values in it)."""
    return {
        **host_vars(range_name, scenario, t, t.node(node)),
        "__env__": substitute_all(dict(scenario.nodes[node].env), t.values),
    }


def make_stamps(
    be: Any,
    range_name: str,
    scenario: Scenario,
    the_plan: Plan,
    images: dict[str, str],
    scenario_file: Path,
    trust_playbooks: bool = False,
    note: EventNote | None = None,
    workdir: Path | None = None,
    sample: bool = True,
) -> dict[str, Verdict]:
    """A verdict for every node with playbooks: cached, or made now with template containers
    (their Ansible run and raw output in ``workdir``, like provisioning's); without ``sample``,
    a node with no cached verdict is not sampled (not stamped, nothing cached).
    A cached stamp is used only if this range's teams fit it too (step 1 of the module doc)."""
    api = be.api
    samples = sample_teams(scenario)
    out: dict[str, Verdict] = {}
    todo: list[tuple[str, NodePlan, list[Path], list[dict[str, Any]], str]] = []
    sample_inputs: dict[str, list[dict[str, Any]]] = {}  # node -> the two samples' inputs
    for node in samples[0].nodes:
        if not scenario.nodes[node.name].provision:
            continue
        books = playbooks_of(scenario, node.name, scenario_file)
        hv = [node_inputs(f"rangectl-stamp-{'ab'[i]}", scenario, t, node.name) for i, t in enumerate(samples)]
        sample_inputs[node.name] = hv
        image_id = api.inspect_image(images[node.image])["Id"]
        key = stamp_key(image_id, books, hv, node)
        cached = _cached(api, key)
        if cached is not None:
            out[node.name] = cached
        elif not sample:
            out[node.name] = Verdict(node.name, key, False, unsampled(len(the_plan.teams)))
        else:
            todo.append((node.name, node, books, hv, key))
    if todo:
        out.update(_make(be, scenario, images, scenario_file, trust_playbooks, note, todo, workdir))
    for name, v in list(out.items()):
        if not v.ok:
            continue
        teams = [node_inputs(range_name, scenario, t, name) for t in the_plan.teams]
        _vals, why = per_team(sample_inputs[name], teams)
        if why is not None:
            out[name] = Verdict(name, v.key, False, f"this range's teams: {why}")
    return out


def unsampled(teams: int) -> str:
    """Why a node without a cached verdict was provisioned node by node instead of sampled."""
    return (
        f"not sampled for {teams} team(s): sampling provisions two copies of the node, as much work "
        f"as provisioning the teams' own (stamps are made from {STAMP_MIN_TEAMS} teams on, or with --stamp)"
    )


def _cached(api: Any, key: str) -> Verdict | None:
    f = cache_dir() / f"{key}.json"
    try:
        d = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    stamp = Stamp.from_json(d["stamp"]) if d.get("stamp") else None
    if stamp is not None:
        try:
            if api.inspect_image(stamp.ref)["Id"] != stamp.image:
                return None
        except Exception:  # noqa: BLE001 - the image is gone (pruned): make it again
            return None
    return Verdict(d["node"], key, bool(d["ok"]), d.get("reason", ""), stamp)


def _save(v: Verdict) -> None:
    f = cache_dir() / f"{v.key}.json"
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps({"node": v.node, "ok": v.ok, "reason": v.reason,
                               "stamp": v.stamp.to_json() if v.stamp else None}))  # fmt: skip
    os.replace(tmp, f)


def _exec(api: Any, cid: str, argv: list[str]) -> tuple[int, str]:
    return run_exec(api, cid, argv, 120)


def _runtime(api: Any, cid: str) -> str:
    """What a stamp cannot carry: the processes running and the firewall rules."""
    _c, procs = _exec(api, cid, ["python3", "-c", SNAPSHOT])
    _c, rules = _exec(api, cid, ["sh", "-c", "command -v iptables-save >/dev/null && iptables-save | grep -v '^#' || true"])
    return procs + "\n--\n" + rules


def _changes(api: Any, cid: str) -> dict[str, list[Any]]:
    """{path: [kind, digest or target, mode, uid, gid]} of every non-directory the container changed."""
    paths_ = sorted(
        ch["Path"] for ch in api.diff(cid) or []
        if not any(ch["Path"] == s or ch["Path"].startswith(s + "/") for s in SCRATCH)
    )  # fmt: skip
    out: dict[str, list[Any]] = {}
    for i in range(0, len(paths_), 500):
        code, text = _exec(api, cid, ["python3", "-c", FILESTAT, *paths_[i : i + 500]])
        if code != 0:
            raise RangeError(f"cannot list a template's changes: {text.strip()[-200:]}")
        out.update(json.loads(text))
    return out


def _read(api: Any, cid: str, path: str) -> bytes:
    stream, _stat = api.get_archive(cid, path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tf:
        m = tf.next()
        fh = tf.extractfile(m) if m is not None else None
        return fh.read() if fh is not None else b""


def _verdict(api: Any, name: str, key: str, hv: list[dict[str, Any]], a_id: str, b_id: str) -> tuple[str | None, list[StampFile], dict[Leaf, list[str]]]:
    values, why = per_team(hv, [])
    if why is not None:
        return why, [], {}
    ca, cb = _changes(api, a_id), _changes(api, b_id)
    if set(ca) != set(cb):
        diff = sorted(set(ca) ^ set(cb))
        return f"the samples changed different files ({', '.join(diff[:3])})", [], {}
    differing = [p for p in ca if ca[p] != cb[p]]
    for p in differing:
        if ca[p][0] != "file" or cb[p][0] != "file" or ca[p][2:] != cb[p][2:]:
            return f"{p} differs between the samples ({ca[p][0]}, not only its text)", [], {}
    a_files = {p: _read(api, a_id, p) for p in differing}
    b_files = {p: _read(api, b_id, p) for p in differing}
    why = explain(a_files, b_files, values)
    if why is not None:
        return why, [], {}
    files = [StampFile(p, a_files[p].decode("utf-8"), int(ca[p][2]), int(ca[p][3]), int(ca[p][4])) for p in differing]
    return None, files, values


def _make(
    be: Any,
    scenario: Scenario,
    images: dict[str, str],
    scenario_file: Path,
    trust_playbooks: bool,
    note: EventNote | None,
    todo: list[tuple[str, NodePlan, list[Path], list[dict[str, Any]], str]],
    workdir: Path | None = None,
) -> dict[str, Verdict]:
    from docker.errors import APIError

    api = be.api
    t0 = time.monotonic()
    made: dict[str, list[str]] = {}
    hosts: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    plays: list[tuple[Path, str]] = []
    seen: dict[Path, str] = {}
    before: dict[str, str] = {}
    out: dict[str, Verdict] = {}
    try:
        for name, node, books, hv, key in todo:
            image = images[scenario.nodes[name].image]
            for i, inputs in enumerate(hv):
                cname = f"rc-stamp-{key[:12]}-{'ab'[i]}"
                try:
                    api.remove_container(cname, force=True)
                except APIError:
                    pass
                env = {**inputs["__env__"], "RANGECTL_RANGE": inputs["rangectl_range"],
                       "RANGECTL_TEAM": str(inputs["rangectl_team"]), "RANGECTL_NODE": name, "RANGECTL_ROLE": node.role}  # fmt: skip
                c = api.create_container(
                    image, name=cname, hostname=name, entrypoint=["sleep", "infinity"], command=[],
                    environment=env, labels={L.MANAGED: "1", L.RANGE: "rangectl-stamp", "io.rangectl.stamp": key},
                    host_config=api.create_host_config(network_mode="none", cap_add=node.capabilities or None,
                                                       init=False, pids_limit=1024),
                )  # fmt: skip
                made.setdefault(name, []).append(c["Id"])
                api.start(c["Id"])
                before[c["Id"]] = _runtime(api, c["Id"])
                h = f"stamp{'ab'[i]}-{name}"
                hosts[h] = {**{k: v for k, v in inputs.items() if k != "__env__"},
                            "ansible_connection": "community.docker.docker_api", "ansible_host": cname,
                            "ansible_docker_docker_host": engine_url(api),  # this engine, whatever DOCKER_HOST says
                            "ansible_python_interpreter": "/usr/bin/python3"}  # fmt: skip
                for path in books:
                    if path not in seen:
                        seen[path] = "pb_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]
                        plays.append((path, seen[path]))
                    groups.setdefault(seen[path], {"hosts": {}})["hosts"][h] = None
        inventory = {"all": {"hosts": hosts, "children": groups}}
        res = run_playbooks(inventory, plays, scenario_file, note, workdir, trust_playbooks)
        failed = {f["host"]: f for f in res.failures}
        for name, _node, _books, hv, key in todo:
            a_id, b_id = made[name]
            f = failed.get(f"stampa-{name}") or failed.get(f"stampb-{name}") or failed.get("-")
            if f is not None:
                why = f"a sample failed at '{f['task']}': {f['message']}"
            elif any(_runtime(api, cid) != before[cid] for cid in (a_id, b_id)):
                why = "a playbook left a process running or a firewall rule (a stamp carries files only)"
            else:
                why, files, values = _verdict(api, name, key, hv, a_id, b_id)
            if why is not None:
                out[name] = Verdict(name, key, False, why)
                _save(out[name])
                continue
            orig = api.inspect_image(images[scenario.nodes[name].image])["Config"]
            conf = {k: orig.get(k) for k in ("Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts")}
            conf["Labels"] = {**(orig.get("Labels") or {}), "io.rangectl.stamp": key, "io.rangectl.stamp-node": name}
            committed = api.commit(a_id, repository=REPO, tag=key[:16], conf=conf,
                                   message=f"rangectl stamp of {scenario.name}/{name}")  # fmt: skip
            stamp = Stamp(
                name, key, committed["Id"], f"{REPO}:{key[:16]}",
                {_dotted(p): v for p, v in values.items()}, {_dotted(p): list(p) for p in values}, files,
                round(time.monotonic() - t0, 2),
            )  # fmt: skip
            out[name] = Verdict(name, key, True, "", stamp)
            _save(out[name])
    finally:
        for ids in made.values():
            for cid in ids:
                try:
                    api.remove_container(cid, force=True, v=True)
                except APIError:
                    pass
    return out
