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

The recipes and their hashes are :mod:`~rangectl.backend.images.recipes`; the
base's root file system, :mod:`~rangectl.backend.images.debootstrap`; building
in the engine and its cache of images, :mod:`~rangectl.backend.images.build`.
"""

from __future__ import annotations

from rangectl.backend.images.build import (
    OnProgress,
    build_base,
    build_images,
    ensure_images,
    image_table,
    missing_images,
    prune_images,
    stale_images,
)
from rangectl.backend.images.buildlog import ImageBuildError
from rangectl.backend.images.recipes import (
    BASE,
    available_recipes,
    default_base_image,
    image_ref,
    recipe_hash,
    resolve_base_hash,
)

__all__ = [
    "BASE",
    "ImageBuildError",
    "OnProgress",
    "available_recipes",
    "build_base",
    "build_images",
    "default_base_image",
    "ensure_images",
    "image_ref",
    "image_table",
    "missing_images",
    "prune_images",
    "recipe_hash",
    "resolve_base_hash",
    "stale_images",
]
