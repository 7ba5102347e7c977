#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs everything
# (scripts/setup.sh: Debian packages, Docker engine, Python deps, node images),
# then ruff, pytest (unit tests and the Docker/netns integration tests) and the
# mutation check of the scoring engine and the event store (scripts/mutation.sh
# --check; docs/testing.md). Exit non-zero if any step fails; every step runs.
# Arguments go to pytest. MUTATION_CHECK=0 skips the mutation check.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
rc=0
.venv/bin/pytest -q -p no:cacheprovider --timeout=900 --durations=40 tests "$@" </dev/null || rc=$?
if [ "${MUTATION_CHECK:-1}" != 0 ]; then
    echo "== mutation check (scoring engine, event store)"
    ./scripts/mutation.sh --check </dev/null || rc=1
fi
exit "$rc"
