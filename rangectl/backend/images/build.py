"""Node images in the Docker engine: build what is missing for the current hashes, and the engine's cache of them.

The base (``rangectl/base:<hash>``) is imported from the root file system
:mod:`rangectl.backend.images.debootstrap` makes, or, with ``base_image``
(``--base-image NAME``, or ``$RANGECTL_BASE_IMAGE``), built from an image
already in the engine (a Debian 12 image with apt, e.g. one brought in with
``docker load``) instead of running debootstrap. Every other recipe is a
``docker build`` on that base. A build with nothing changed asks the engine a
handful of questions and returns.

Docker SDK only: no docker CLI.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
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
from rangectl.backend.images.buildlog import LOG_TAIL, ImageBuildError, short
from rangectl.backend.images.debootstrap import rootfs_tar
from rangectl.backend.images.recipes import (
    BASE,
    HASH_LABEL,
    REPO_PREFIX,
    available_recipes,
    base_packages,
    default_base_image,
    image_ref,
    recipe_dir,
    recipe_files,
    resolve_base_hash,
)
from rangectl.errors import RangeError

JOBS_ENV = "RANGECTL_BUILD_JOBS"
BUILD_TIMEOUT = 1800  # seconds without an answer from the engine during a build

# (recipe, phase, detail): phase is one of cached, building, step, done, failed.
OnProgress = Callable[[str, str, str], None]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
                    f"image {name} did not build at '{short(step) or 'start'}': {short(msg)}",
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
            f"image {name} did not build: {short(exc.explanation or str(exc))}",
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


# -- the base ---------------------------------------------------------------------------


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
    pkgs = " ".join(base_packages())
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
        for p in recipe_files(d):
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
                    f"base image did not build: {short(str(msg))}",
                    fix="the --base-image must be a Debian 12 image with apt that reaches a mirror",
                    recipe=name,
                    log_tail=tail,
                )
    except APIError as exc:
        raise ImageBuildError(
            f"base image did not build: {short(exc.explanation or str(exc))}", recipe=name, log_tail=tail
        ) from None


def _base_from_debootstrap(client: Any, ref: str, bh: str, note: OnProgress) -> None:
    with rootfs_tar(bh, note) as (tar_path, tail):
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
                f"importing the base image failed: {short(str(out))}", recipe=BASE, log_tail=tail
            )


# -- inventory and clean-up -------------------------------------------------------------


def image_table(client: Any | None, base_image: str | None = None) -> list[dict[str, Any]]:
    """One row per recipe: recipe, ref, built (True/False/None without an engine), size in bytes."""
    base_image = base_image or default_base_image()
    bh = resolve_base_hash(client, base_image) if client is not None else resolve_base_hash(None, None)
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
