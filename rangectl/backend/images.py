"""Node images: built offline from a debootstrap base, tagged by the hash of their recipe.

Every folder under ``images/`` is a recipe. ``images/base/`` is special: it is
not a Dockerfile but the root file system ``debootstrap --variant=minbase
bookworm`` makes from the machine's own Debian mirror (read from its apt
sources), with the extra packages of ``images/base/packages.txt`` and the files
of ``images/base/rootfs/`` laid over it, imported into the engine as
``rangectl/base:<hash>``. Every other recipe is a Dockerfile that starts with
``ARG BASE`` / ``FROM ${BASE}`` and is built on that base.

An image's tag is the first 12 hex digits of a hash over every file of its
recipe folder (name, executable bit, content) and the base's hash, so an image
is rebuilt exactly when its recipe or the base changes, and a build with
nothing changed asks the engine a handful of questions and returns.

``base_image`` (``--base-image NAME``, or ``$RANGECTL_BASE_IMAGE``) builds the
base from an image already in the engine (a Debian 12 image with apt, e.g. one
brought in with ``docker load``) instead of running debootstrap; the base's
hash then includes that image's id, so its images get their own tags.

Docker SDK only: no docker CLI.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rangectl import labels as L
from rangectl.errors import EnvironmentProblem, RangeError
from rangectl.paths import images_dir

# Bump when the way images are made changes in a way their files do not show.
HASH_VERSION = "rangectl-images-1"
BASE = "base"
SUITE = "bookworm"
VARIANT = "minbase"
REPO_PREFIX = "rangectl/"
HASH_LABEL = "io.rangectl.image-hash"
BASE_IMAGE_ENV = "RANGECTL_BASE_IMAGE"
MIRROR_ENV = "RANGECTL_DEBIAN_MIRROR"
JOBS_ENV = "RANGECTL_BUILD_JOBS"
LOG_TAIL = 30
BUILD_TIMEOUT = 1800  # seconds without an answer from the engine during a build

# (recipe, phase, detail): phase is one of cached, building, step, done, failed.
OnProgress = Callable[[str, str, str], None]

_SKIP_NAMES = {"__pycache__", ".DS_Store"}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", "~")


class ImageBuildError(RangeError):
    """A recipe that did not build; ``log_tail`` holds the last lines of its build log."""

    exit_code = 1

    def __init__(
        self, message: str, *, fix: str | None = None, recipe: str = "", log_tail: list[str] | None = None
    ):
        super().__init__(message, fix=fix)
        self.recipe = recipe
        self.log_tail = list(log_tail or [])


# -- recipes and hashes ----------------------------------------------------------------


def available_recipes() -> list[str]:
    """Recipe names: ``base`` first, then every folder of images/ holding a Dockerfile."""
    root = images_dir()
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "Dockerfile").is_file())
    if (root / BASE).is_dir():
        names.insert(0, BASE)
    return names


def recipe_dir(name: str) -> Path:
    d = images_dir() / name
    if name not in available_recipes():
        known = ", ".join(r for r in available_recipes() if r != BASE) or "none"
        raise RangeError(
            f"no image recipe '{name}' under {images_dir()}",
            fix=f"use one of: {known} (or add images/{name}/Dockerfile)",
        )
    return d


def _recipe_files(d: Path) -> Iterator[Path]:
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d)
        if any(part in _SKIP_NAMES for part in rel.parts) or p.name.endswith(_SKIP_SUFFIXES):
            continue
        if p.is_file() or p.is_symlink():
            yield p


def _dir_digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in _recipe_files(d):
        rel = p.relative_to(d).as_posix()
        if p.is_symlink():
            kind, data = "l", os.readlink(p).encode()
        else:
            kind = "x" if p.stat().st_mode & stat.S_IXUSR else "f"
            data = p.read_bytes()
        h.update(f"{rel}\0{kind}\0{len(data)}\0".encode())
        h.update(data)
        h.update(b"\0")
    return h.hexdigest()


def _base_hash(external_id: str | None = None) -> str:
    h = hashlib.sha256(f"{HASH_VERSION}\0base\0{SUITE}\0{VARIANT}\0".encode())
    h.update(_dir_digest(recipe_dir(BASE)).encode())
    if external_id:
        h.update(f"\0external\0{external_id}".encode())
    return h.hexdigest()


def recipe_hash(name: str, base_hash: str | None = None) -> str:
    """Hex sha256 of every file in images/<name>/ plus the base's hash.

    ``base_hash`` defaults to the debootstrap base's; ``resolve_base_hash``
    gives the one for ``--base-image``.
    """
    if name == BASE:
        return base_hash or _base_hash()
    d = recipe_dir(name)
    h = hashlib.sha256(f"{HASH_VERSION}\0{name}\0".encode())
    h.update(_dir_digest(d).encode())
    h.update(f"\0base\0{base_hash or _base_hash()}".encode())
    return h.hexdigest()


def image_ref(name: str, base_hash: str | None = None) -> str:
    """``rangectl/<name>:<12-hex-hash>`` for the recipe as it is now."""
    return f"{REPO_PREFIX}{name}:{recipe_hash(name, base_hash)[:12]}"


def default_base_image() -> str | None:
    return os.environ.get(BASE_IMAGE_ENV) or None


def resolve_base_hash(client: Any, base_image: str | None) -> str:
    """The base's hash: the debootstrap base's, or one that includes ``base_image``'s id."""
    if not base_image:
        return _base_hash()
    return _base_hash(_external_id(client, base_image))


def _external_id(client: Any, base_image: str) -> str:
    from docker.errors import ImageNotFound

    try:
        return client.api.inspect_image(base_image)["Id"]
    except ImageNotFound:
        raise EnvironmentProblem(
            f"base image '{base_image}' is not in the Docker engine",
            fix=f"`docker load` it first, or build without --base-image (unset {BASE_IMAGE_ENV})",
        ) from None


# -- engine queries ----------------------------------------------------------------------


def _exists(client: Any, ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.api.inspect_image(ref)
        return True
    except ImageNotFound:
        return False


def _check_names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    out = []
    for n in names:
        recipe_dir(n)
        if n not in out:
            out.append(n)
    return out


def missing_images(client: Any, names: Iterable[str], base_image: str | None = None) -> list[str]:
    """The recipes among ``names`` whose image for the current hash is not in the engine."""
    names = _check_names(names)
    bh = resolve_base_hash(client, base_image or default_base_image())
    return [n for n in names if not _exists(client, image_ref(n, bh))]


def ensure_images(
    client: Any, names: Iterable[str], on_progress: OnProgress | None = None, base_image: str | None = None
) -> dict[str, str]:
    """``{recipe: ref}`` for ``names``, building only the images that are missing (for ``up``)."""
    names = _check_names(names)
    base_image = base_image or default_base_image()
    bh = resolve_base_hash(client, base_image)
    refs = {n: image_ref(n, bh) for n in names}
    missing = [n for n in names if not _exists(client, refs[n])]
    if missing:
        built = build_images(client, missing, base_image=base_image, on_progress=on_progress)
        refs.update(built)
    return refs


# -- building ---------------------------------------------------------------------------


@contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time on this machine (several test runs may ask together)."""
    path = Path(tempfile.gettempdir()) / "rangectl-images.lock"
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_images(
    client: Any,
    names: Iterable[str] | None = None,
    base_image: str | None = None,
    force: bool = False,
    on_progress: OnProgress | None = None,
) -> dict[str, str]:
    """Build what is missing for the current hashes; ``{recipe: ref}`` for every name asked.

    ``names`` defaults to every recipe but ``base``. The base is built first when
    an image needs it. ``force`` rebuilds the named images without the engine's
    layer cache (the base only when ``base`` is named).
    """
    note = on_progress or (lambda recipe, phase, detail="": None)
    wanted = _check_names(names) if names is not None else [r for r in available_recipes() if r != BASE]
    base_image = base_image or default_base_image()
    bh = resolve_base_hash(client, base_image)
    refs = {n: image_ref(n, bh) for n in wanted}
    derived = [n for n in wanted if n != BASE]

    def todo() -> list[str]:
        return [n for n in derived if force or not _exists(client, refs[n])]

    if not todo() and not (BASE in wanted and (force or not _exists(client, refs[BASE]))):
        for n in wanted:
            note(n, "cached", refs[n])
        return refs

    with _build_lock():
        pending = todo()  # again: another process may have built them meanwhile
        for n in derived:
            if n not in pending:
                note(n, "cached", refs[n])
        base_ref = f"{REPO_PREFIX}{BASE}:{bh[:12]}"
        need_base = bool(pending) or BASE in wanted
        if need_base:
            if (BASE in wanted and force) or not _exists(client, base_ref):
                build_base(client, base_image=base_image, on_progress=note, _hash=bh)
            else:
                note(BASE, "cached", base_ref)
        if pending:
            jobs = max(1, int(os.environ.get(JOBS_ENV, "3")))
            errors: list[ImageBuildError] = []
            lock = threading.Lock()

            def one(n: str) -> None:
                try:
                    _build_recipe(client, n, refs[n], base_ref, nocache=force, note=note)
                except ImageBuildError as exc:
                    with lock:
                        errors.append(exc)

            with ThreadPoolExecutor(min(jobs, len(pending))) as pool:
                list(pool.map(one, pending))
            if errors:
                errors.sort(key=lambda e: pending.index(e.recipe))
                raise errors[0]
    return refs


def _build_recipe(client: Any, name: str, ref: str, base_ref: str, nocache: bool, note: OnProgress) -> None:
    from docker.errors import APIError

    t0 = time.monotonic()
    note(name, "building", ref)
    tail: list[str] = []
    step = ""
    h = ref.rsplit(":", 1)[1]
    try:
        stream = client.api.build(
            path=str(recipe_dir(name)),
            tag=ref,
            buildargs={"BASE": base_ref},
            labels={L.MANAGED: "1", L.IMAGE_RECIPE: name, HASH_LABEL: h},
            rm=True,
            forcerm=True,
            nocache=nocache,
            pull=False,
            decode=True,
            network_mode="host",
            timeout=BUILD_TIMEOUT,
        )
        for chunk in stream:
            if "stream" in chunk:
                for line in _ANSI.sub("", chunk["stream"]).splitlines():
                    line = line.rstrip()
                    if not line:
                        continue
                    tail.append(line)
                    del tail[:-LOG_TAIL]
                    if re.match(r"^Step \d+/\d+ :", line):
                        step = line
                        note(name, "step", line)
            if "error" in chunk or "errorDetail" in chunk:
                msg = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error") or "build failed"
                tail.append(msg.rstrip())
                raise ImageBuildError(
                    f"image {name} did not build at '{_short(step) or 'start'}': {_short(msg)}",
                    fix=f"see the build log; fix images/{name}/ and run `rangectl images build {name}`",
                    recipe=name,
                    log_tail=tail,
                )
    except ImageBuildError:
        note(name, "failed", "")
        raise
    except APIError as exc:
        note(name, "failed", "")
        raise ImageBuildError(
            f"image {name} did not build: {_short(exc.explanation or str(exc))}",
            fix=f"check the base image {base_ref} exists (`rangectl images ls`) and run `rangectl images build {name}`",
            recipe=name,
            log_tail=tail,
        ) from None
    except OSError as exc:  # engine went away mid-build
        note(name, "failed", "")
        raise ImageBuildError(
            f"image {name} did not build: lost the Docker engine ({exc})",
            fix="`rangectl doctor`, then `rangectl images build` again",
            recipe=name,
            log_tail=tail,
        ) from None
    if not _exists(client, ref):
        note(name, "failed", "")
        raise ImageBuildError(
            f"image {name} built but {ref} is not in the engine",
            fix=f"run `rangectl images build {name} --force`",
            recipe=name,
            log_tail=tail,
        )
    note(name, "done", f"{ref} in {time.monotonic() - t0:.0f}s")


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


# -- the base ---------------------------------------------------------------------------


def debian_mirror(etc: Path = Path("/etc")) -> str:
    """The machine's Debian mirror URL, read from its apt sources (or ``$RANGECTL_DEBIAN_MIRROR``).

    deb822 ``.sources`` first (``debian.sources`` before the others), then
    one-line ``sources.list`` files; a stanza for bookworm wins over others,
    security archives are never picked.
    """
    env = os.environ.get(MIRROR_ENV)
    if env:
        return env.strip()
    candidates: list[tuple[int, str]] = []  # (preference, uri)
    src_dir = etc / "apt" / "sources.list.d"
    deb822 = [src_dir / "debian.sources"] + sorted(
        p for p in src_dir.glob("*.sources") if p.name != "debian.sources"
    )
    for f in deb822:
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                _rank(candidates, uri, fields.get("suites", "").split())
    lists = [etc / "apt" / "sources.list"] + sorted(src_dir.glob("*.list"))
    for f in lists:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                _rank(candidates, line[1], [line[2]])
    if not candidates:
        raise EnvironmentProblem(
            "no Debian mirror in this machine's apt sources",
            fix=f"set {MIRROR_ENV}=<mirror URL> or build with --base-image NAME",
        )
    candidates.sort(key=lambda c: c[0])
    return candidates[0][1]


def _rank(out: list[tuple[int, str]], uri: str, suites: list[str]) -> None:
    if not uri.startswith(("http://", "https://", "file:/", "ftp://")):
        return
    if any("security" in s for s in suites) or "security" in uri:
        return
    pref = 0 if SUITE in suites else 1
    out.append((pref * 100 + len(out), uri.rstrip("/")))


def _base_packages() -> list[str]:
    f = recipe_dir(BASE) / "packages.txt"
    if not f.is_file():
        return []
    out = []
    for line in f.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.extend(line.split())
    return out


def build_base(
    client: Any,
    base_image: str | None = None,
    on_progress: OnProgress | None = None,
    _hash: str | None = None,
) -> str:
    """Make ``rangectl/base:<hash>`` (debootstrap, or ``base_image`` plus the base recipe); its ref."""
    note = on_progress or (lambda recipe, phase, detail="": None)
    base_image = base_image or default_base_image()
    bh = _hash or resolve_base_hash(client, base_image)
    ref = f"{REPO_PREFIX}{BASE}:{bh[:12]}"
    t0 = time.monotonic()
    note(BASE, "building", ref)
    try:
        if base_image:
            _base_from_image(client, base_image, ref, bh, note)
        else:
            _base_from_debootstrap(client, ref, bh, note)
    except RangeError:
        note(BASE, "failed", "")
        raise
    note(BASE, "done", f"{ref} in {time.monotonic() - t0:.0f}s")
    return ref


def _base_labels(bh: str) -> dict[str, str]:
    return {L.MANAGED: "1", L.IMAGE_RECIPE: BASE, HASH_LABEL: bh[:12]}


def _base_from_image(client: Any, base_image: str, ref: str, bh: str, note: OnProgress) -> None:
    """The base recipe laid over an image already in the engine, with a generated Dockerfile."""
    pkgs = " ".join(_base_packages())
    dockerfile = f"""FROM {base_image}
COPY rootfs/ /
RUN set -e; export DEBIAN_FRONTEND=noninteractive; \\
    command -v apt-get >/dev/null || {{ echo 'base image has no apt-get: use a Debian 12 image' >&2; exit 1; }}; \\
    apt-get update; apt-get install -y --no-install-recommends {pkgs}; \\
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \\
    echo "rangectl base from {base_image}, hash {bh[:12]}" > /etc/rangectl-base
ENV LANG=C.UTF-8
CMD ["/bin/bash"]
"""
    buf = io.BytesIO()
    d = recipe_dir(BASE)
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in _recipe_files(d):
            tar.add(p, arcname=p.relative_to(d).as_posix(), recursive=False, filter=_root_owned)
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    _stream_build(client, BASE, ref, bh, dict(fileobj=buf, custom_context=True), note)


def _root_owned(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def _stream_build(client: Any, name: str, ref: str, bh: str, ctx: dict, note: OnProgress) -> None:
    from docker.errors import APIError

    tail: list[str] = []
    try:
        for chunk in client.api.build(
            tag=ref,
            labels=_base_labels(bh),
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            network_mode="host",
            timeout=BUILD_TIMEOUT,
            **ctx,
        ):
            for line in _ANSI.sub("", chunk.get("stream", "")).splitlines():
                if line.strip():
                    tail.append(line.rstrip())
                    del tail[:-LOG_TAIL]
                    if line.startswith("Step "):
                        note(name, "step", line.rstrip())
            if "error" in chunk or "errorDetail" in chunk:
                msg = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error")
                tail.append(str(msg))
                raise ImageBuildError(
                    f"base image did not build: {_short(str(msg))}",
                    fix="the --base-image must be a Debian 12 image with apt that reaches a mirror",
                    recipe=name,
                    log_tail=tail,
                )
    except APIError as exc:
        raise ImageBuildError(
            f"base image did not build: {_short(exc.explanation or str(exc))}", recipe=name, log_tail=tail
        ) from None


def _base_from_debootstrap(client: Any, ref: str, bh: str, note: OnProgress) -> None:
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if not debootstrap:
        raise EnvironmentProblem(
            "debootstrap is not installed (it makes the base image)",
            fix="run scripts/setup.sh (or `apt-get install debootstrap`), or build with --base-image NAME",
        )
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "making the base image with debootstrap needs root",
            fix="run `rangectl images build` as root (scripts/setup.sh does), or use --base-image NAME",
        )
    mirror = debian_mirror()
    work = Path(tempfile.mkdtemp(prefix="rangectl-base-", dir="/var/tmp"))
    rootfs = work / "rootfs"
    tail: list[str] = []
    try:
        cmd = [debootstrap, f"--variant={VARIANT}", "--components=main"]
        pkgs = _base_packages()
        if pkgs:
            cmd.append("--include=" + ",".join(pkgs))
        cmd += [SUITE, str(rootfs), mirror]
        note(BASE, "step", f"debootstrap --variant={VARIANT} {SUITE}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        last = 0.0
        for line in proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            tail.append(line)
            del tail[:-LOG_TAIL]
            now = time.monotonic()
            if (
                line.startswith(("I: Retrieving", "I: Extracting", "I: Unpacking", "I: Configuring"))
                and now - last > 0.5
            ):
                last = now
                note(BASE, "step", line)
        rc = proc.wait()
        if rc != 0:
            raise ImageBuildError(
                f"debootstrap {SUITE} from {mirror} failed (exit {rc}): {_short(tail[-1] if tail else '')}",
                fix=f"check the mirror answers (`apt-get update`), or set {MIRROR_ENV} / use --base-image NAME",
                recipe=BASE,
                log_tail=tail,
            )
        _umount_under(rootfs)
        note(BASE, "step", "trimming the root file system")
        _finish_rootfs(rootfs, bh)
        note(BASE, "step", "importing into the engine")
        tar_path = work / "rootfs.tar"
        r = subprocess.run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-C",
                str(rootfs),
                "-cf",
                str(tar_path),
                ".",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            raise ImageBuildError(f"cannot pack the base root file system: {_short(r.stderr)}", recipe=BASE)
        repo, tag = ref.split(":")
        labels = " ".join(f"{k}={v}" for k, v in _base_labels(bh).items())
        out = client.api.import_image_from_file(
            str(tar_path),
            repository=repo,
            tag=tag,
            changes=[
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                f"LABEL {labels}",
                'CMD ["/bin/bash"]',
            ],
        )
        if not _exists(client, ref):
            raise ImageBuildError(
                f"importing the base image failed: {_short(str(out))}", recipe=BASE, log_tail=tail
            )
    finally:
        _umount_under(work)
        shutil.rmtree(work, ignore_errors=True)


def _umount_under(path: Path) -> None:
    """Unmount anything debootstrap left mounted inside ``path`` (deepest first)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(path.resolve()) + "/"
    points = [m.split()[1] for m in mounts if len(m.split()) > 1 and m.split()[1].startswith(prefix)]
    for mp in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True, check=False)


def _finish_rootfs(root: Path, bh: str) -> None:
    """Lay the base recipe's rootfs/ over the tree, then drop caches, docs and host traces."""
    overlay = recipe_dir(BASE) / "rootfs"
    if overlay.is_dir():
        for src in _recipe_files(overlay):
            dst = root / src.relative_to(overlay)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            else:
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o755 if src.stat().st_mode & stat.S_IXUSR else 0o644)
            os.lchown(dst, 0, 0)

    def clear(rel: str, keep: Callable[[Path], bool] = lambda p: False) -> None:
        d = root / rel
        if not d.is_dir():
            return
        for p in d.iterdir():
            if keep(p):
                continue
            if p.is_dir() and not p.is_symlink():
                if rel == "usr/share/doc" and (p / "copyright").is_file():
                    for q in p.iterdir():
                        if q.name != "copyright":
                            shutil.rmtree(q) if q.is_dir() and not q.is_symlink() else q.unlink()
                    continue
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    clear("var/cache/apt/archives", keep=lambda p: p.name in ("partial", "lock"))
    for p in (root / "var/cache/apt").glob("*.bin"):
        p.unlink()
    clear("var/lib/apt/lists", keep=lambda p: p.name in ("partial", "lock"))
    clear("usr/share/doc")
    clear("usr/share/man")
    clear("usr/share/info")
    clear("usr/share/locale", keep=lambda p: p.name == "locale.alias")
    for rel in ("var/log/bootstrap.log", "var/log/dpkg.log", "var/log/alternatives.log", "etc/hostname"):
        (root / rel).unlink(missing_ok=True)
    for p in (root / "var/log/apt").glob("*"):
        p.unlink()
    (root / "etc/resolv.conf").unlink(missing_ok=True)  # the engine provides one per container
    (root / "etc/machine-id").write_text("")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (root / "etc/rangectl-base").write_text(
        f"rangectl base: debootstrap {VARIANT} {SUITE}, hash {bh[:12]}, made {stamp}\n"
    )


# -- inventory and clean-up -------------------------------------------------------------


def image_table(client: Any | None, base_image: str | None = None) -> list[dict[str, Any]]:
    """One row per recipe: recipe, ref, built (True/False/None without an engine), size in bytes."""
    base_image = base_image or default_base_image()
    bh = resolve_base_hash(client, base_image) if client is not None else _base_hash()
    rows = []
    for n in available_recipes():
        ref = image_ref(n, bh)
        row: dict[str, Any] = {"recipe": n, "ref": ref, "built": None, "size": None}
        if client is not None:
            from docker.errors import ImageNotFound

            try:
                info = client.api.inspect_image(ref)
                row["built"] = True
                row["size"] = info.get("Size")
            except ImageNotFound:
                row["built"] = False
        rows.append(row)
    return rows


def stale_images(client: Any, base_image: str | None = None) -> list[str]:
    """Tags of rangectl-built images that no current recipe uses any more."""
    base_image = base_image or default_base_image()
    bh = resolve_base_hash(client, base_image)
    current = {image_ref(n, bh) for n in available_recipes()}
    out = []
    for img in client.api.images(filters={"label": f"{L.MANAGED}=1"}):
        for tag in img.get("RepoTags") or []:
            if tag.startswith(REPO_PREFIX) and tag not in current:
                out.append(tag)
    return sorted(out)


def prune_images(client: Any, base_image: str | None = None) -> tuple[list[str], list[str]]:
    """Remove stale tags; ``(removed, kept because a container uses them)``."""
    from docker.errors import APIError

    removed, kept = [], []
    for tag in stale_images(client, base_image):
        try:
            client.api.remove_image(tag)
            removed.append(tag)
        except APIError:
            kept.append(tag)
    return removed, kept
