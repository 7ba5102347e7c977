"""Node image recipes: the folders under ``images/``, the hash each image is tagged with, and its ref.

Every folder under ``images/`` is a recipe. ``images/base/`` is special: it is
not a Dockerfile but the root file system of the base image
(:mod:`rangectl.backend.images.debootstrap`), with the extra packages of
``images/base/packages.txt`` and the files of ``images/base/rootfs/`` laid
over it. Every other recipe is a Dockerfile that starts with ``ARG BASE`` /
``FROM ${BASE}`` and is built on that base.

An image's tag is the first 12 hex digits of a hash over every file of its
recipe folder (name, executable bit, content) and the base's hash, so an image
is rebuilt exactly when its recipe or the base changes. A base made from
``--base-image`` has a hash that includes that image's id, so its images get
their own tags.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rangectl.errors import EnvironmentProblem, RangeError
from rangectl.paths import images_dir

HASH_VERSION = "rangectl-images-1"
BASE = "base"
SUITE = "bookworm"
VARIANT = "minbase"
REPO_PREFIX = "rangectl/"
HASH_LABEL = "io.rangectl.image-hash"
BASE_IMAGE_ENV = "RANGECTL_BASE_IMAGE"

_SKIP_NAMES = {"__pycache__", ".DS_Store"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", "~")


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


def recipe_files(d: Path) -> Iterator[Path]:
    """The files of a recipe folder that make its hash (no caches, editor leftovers)."""
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d)
        if any(part in _SKIP_NAMES for part in rel.parts) or p.name.endswith(_SKIP_SUFFIXES):
            continue
        if p.is_file() or p.is_symlink():
            yield p


def _dir_digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in recipe_files(d):
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


def base_packages() -> list[str]:
    """The base's extra packages: images/base/packages.txt, one or more a line, # comments."""
    f = recipe_dir(BASE) / "packages.txt"
    if not f.is_file():
        return []
    out = []
    for line in f.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.extend(line.split())
    return out
