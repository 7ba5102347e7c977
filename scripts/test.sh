#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs everything
# (scripts/setup.sh: Debian packages, Docker engine, Python deps, node images),
# then ruff and pytest (unit tests and the Docker/netns integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
exec .venv/bin/pytest -q -p no:cacheprovider --timeout=900 tests "$@"
