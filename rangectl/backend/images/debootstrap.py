"""The base image's root file system, made offline: ``debootstrap --variant=minbase bookworm``.

From the machine's own Debian mirror (read from its apt sources, or
``$RANGECTL_DEBIAN_MIRROR``), with the extra packages of
``images/base/packages.txt`` and the files of ``images/base/rootfs/`` laid
over it, trimmed, and packed as a tar file; :mod:`rangectl.backend.images.build`
imports it into the engine as ``rangectl/base:<hash>``. Needs root; no engine.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rangectl.backend.images.buildlog import LOG_TAIL, ImageBuildError, short
from rangectl.backend.images.recipes import BASE, SUITE, VARIANT, base_packages, recipe_dir, recipe_files
from rangectl.errors import EnvironmentProblem

MIRROR_ENV = "RANGECTL_DEBIAN_MIRROR"


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


@contextmanager
def rootfs_tar(bh: str, note: Callable[[str, str, str], None]) -> Iterator[tuple[Path, list[str]]]:
    """The base's root file system as a tar file, made with debootstrap from the machine's mirror.

    Yields ``(tar file, the tail of the log)``; the work folder is unmounted and
    removed when the block ends. Needs root and debootstrap; no engine.
    """
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
        pkgs = base_packages()
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
                f"debootstrap {SUITE} from {mirror} failed (exit {rc}): {short(tail[-1] if tail else '')}",
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
            raise ImageBuildError(f"cannot pack the base root file system: {short(r.stderr)}", recipe=BASE)
        yield tar_path, tail
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
        for src in recipe_files(overlay):
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
    for p in (root / "etc/ssh").glob("ssh_host_*"):  # one key shared by every node would be no key at all
        p.unlink()
    (root / "etc/machine-id").write_text("")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (root / "etc/rangectl-base").write_text(
        f"rangectl base: debootstrap {VARIANT} {SUITE}, hash {bh[:12]}, made {stamp}\n"
    )
