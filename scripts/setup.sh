#!/usr/bin/env bash
# Set up a Debian 12 machine for rangectl, as root, with no questions asked:
#   1. Debian packages (one `apt-get update`, only when something is missing);
#   2. the Docker engine (dockerd started in the background when none answers);
#   3. the Python venv in .venv with rangectl installed editable, plus dev tools;
#   4. the node images (`rangectl images build`: a no-op when they are current).
# Idempotent: a second run with everything in place takes seconds.
# Environment: RANGECTL_SKIP_IMAGES=1 skips step 4; RANGECTL_BASE_IMAGE and
# RANGECTL_DEBIAN_MIRROR are passed on to the image build (see docs/images.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export DEBIAN_FRONTEND=noninteractive
T0=$SECONDS

step() { printf '== %s\n' "$*"; }
die() {
    printf 'setup.sh: error: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root: it installs Debian packages and starts dockerd"
command -v dpkg-query >/dev/null || die "this is not a Debian system (no dpkg-query)"

# -- 1. Debian packages ---------------------------------------------------------------
PACKAGES=(
    docker.io docker-compose debootstrap iproute2 iptables util-linux tar
    tcpdump tshark tcpreplay nmap hping3 dnsutils curl openssh-client ca-certificates
    python3 python3-venv chromium fonts-liberation poppler-utils
)
step "Debian packages"
missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "all ${#PACKAGES[@]} present"
else
    echo "installing: ${missing[*]}"
    # tshark must not ask whether non-root users may capture
    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null >/var/log/rangectl-apt.log 2>&1 \
        || { tail -n 30 /var/log/rangectl-apt.log >&2; die "apt-get install failed (log: /var/log/rangectl-apt.log)"; }
    echo "installed ${#missing[@]} package(s)"
fi

# -- 2. Docker engine -------------------------------------------------------------------
step "Docker engine"
if docker info >/dev/null 2>&1; then
    echo "answering"
else
    # a pid file left by a dockerd that is gone would stop a new one from starting
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    if ! pgrep -x dockerd >/dev/null; then
        echo "starting dockerd (log: /var/log/dockerd.log)"
        setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null
    fi
    ok=0
    for _ in $(seq 1 60); do
        if [ -S /var/run/docker.sock ] && docker info >/dev/null 2>&1; then
            ok=1
            break
        fi
        sleep 1
    done
    if [ "$ok" != 1 ]; then
        tail -n 20 /var/log/dockerd.log >&2 || true
        die "the Docker engine did not answer within 60 s (log: /var/log/dockerd.log)"
    fi
    echo "answering"
fi

# -- 3. Python environment ----------------------------------------------------------------
step "Python environment (.venv)"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
    echo "creating .venv with $($PY --version 2>&1)"
    rm -rf .venv
    "$PY" -m venv .venv || die "cannot create .venv (is python3-venv installed?)"
fi
stamp=.venv/.rangectl-install-stamp
want=$( (cat pyproject.toml; .venv/bin/python -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)
installed_here() {
    (cd / && "$ROOT/.venv/bin/python" -c 'import rangectl, sys; sys.exit(0 if rangectl.__file__.startswith(sys.argv[1]) else 1)' "$ROOT/") \
        >/dev/null 2>&1
}
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ] && installed_here && [ -x .venv/bin/rangectl ]; then
    echo "up to date"
else
    echo "pip install -e '.[dev]'"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' || die "pip install failed"
    echo "$want" >"$stamp"
fi

# -- 4. Node images -------------------------------------------------------------------------
if [ "${RANGECTL_SKIP_IMAGES:-0}" = 1 ]; then
    step "Node images: skipped (RANGECTL_SKIP_IMAGES=1)"
else
    step "Node images"
    .venv/bin/rangectl images build || die "the node images did not build (see above)"
fi

step "setup done in $((SECONDS - T0)) s"
