#!/usr/bin/env bash
# A Docker Swarm cluster on one machine, for tests and demos (docs/cluster.md).
#
#   scripts/cluster-lab.sh [OPTIONS] up       build the engine image if its recipe changed,
#                                             start N engines, join them into a swarm, and
#                                             print `export DOCKER_HOST=...` (the manager)
#   scripts/cluster-lab.sh [OPTIONS] down     remove exactly what `up` made (idempotent)
#   scripts/cluster-lab.sh [OPTIONS] status   the engines and the swarm's `docker node ls`
#   scripts/cluster-lab.sh [OPTIONS] env      print `export DOCKER_HOST=...` again
#   scripts/cluster-lab.sh [OPTIONS] load IMAGE...
#                                             stream images from this machine's engine into
#                                             every lab engine (docker save | docker load;
#                                             nothing is ever pulled); skips an engine that
#                                             has the same image ID already
# Options:
#   --engines N      engines in the lab (default 3; 1-9); engine 1 is the swarm manager
#   --name NAME      lab name (default rangectl-lab, or $RANGECTL_LAB_NAME); several labs
#                    with different names can live side by side
#   --subnet CIDR    subnet of the lab network, /28 or larger (default: the first free of
#                    172.30.213.0/24 ... 172.30.220.0/24, 192.168.213.0/24, 192.168.214.0/24);
#                    engine I gets address .(1+I), kept when it is stopped and started
#   --state-dir DIR  where the lab's files go (default $RANGECTL_HOME/cluster-lab/NAME,
#                    RANGECTL_HOME defaulting to ~/.local/state/rangectl)
#   --ssh I[,J...]   engines reached over SSH (ssh://root@ADDR in their label, not tcp://):
#                    they run sshd for root with a key the lab makes; STATE_DIR/ssh/ then
#                    holds the key, an ssh config and known_hosts to put in ~/.ssh (docs/cluster.md)
#
# Usual use:  eval "$(scripts/cluster-lab.sh up)"   (progress goes to stderr, the
# export line to stdout; it is also written to STATE_DIR/env).
#
# How the lab is made: the image rangectl/engine:<recipe hash> (images/engine/, Debian's
# docker.io on the same debootstrap base as every node image, built by `rangectl images
# build engine`, so it is rebuilt exactly when its recipe or the base changes); one
# internal bridge network NAME (no route off the machine: the engines reach nothing but
# each other and this machine); per engine a volume NAME-engineI for /var/lib/docker and a
# container NAME-engineI run privileged, its API on tcp://<its lab address>:2375 without
# TLS, reachable from this machine and the other engines only. Everything carries the label
# io.rangectl.lab=NAME; `down` removes what has that label and nothing else.
#
# Swarm node labels set for the backend: io.rangectl.engine=tcp://ADDR:2375 (where that
# node's engine API is) and io.rangectl.lab=NAME.
#
# Exit status: 0 ok; 1 failure (or `status`/`env` of a lab that is not up); 2 usage;
# 3 environment (no docker CLI, no engine, no Python with rangectl).
set -euo pipefail

PROG=cluster-lab.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LABEL=io.rangectl.lab
API_PORT=2375
SWARM_POOL=10.210.0.0/16   # overlays created without --subnet (scenarios give theirs)
ENGINE_POOL=10.211.0.0/16  # the engines' own bridges (docker0, docker_gwbridge)
WAIT_API=90                # seconds for an engine's API to answer
WAIT_READY=90              # seconds for every node to be Ready

ENGINES=3
LAB=${RANGECTL_LAB_NAME:-rangectl-lab}
SUBNET=
SSH=
STATE_DIR=
CMD=
ARGS=()

usage() {
    echo "usage: $PROG [--engines N] [--name NAME] [--subnet CIDR] [--state-dir DIR] up|down|status|env|load IMAGE..." >&2
}
usage_error() {
    echo "$PROG: $*" >&2
    usage
    exit 2
}
die() {
    echo "$PROG: error: $*" >&2
    exit "${2:-1}"
}
env_die() { die "$*" 3; }
say() { echo "[lab $LAB] $*" >&2; }

# -- arguments ----------------------------------------------------------------------------
while [ $# -gt 0 ]; do
    case "$1" in
    --engines | --name | --subnet | --state-dir | --ssh)
        [ $# -ge 2 ] || usage_error "$1 needs a value"
        case "$1" in
        --engines) ENGINES=$2 ;;
        --name) LAB=$2 ;;
        --subnet) SUBNET=$2 ;;
        --state-dir) STATE_DIR=$2 ;;
        --ssh) SSH=$2 ;;
        esac
        shift 2
        ;;
    --engines=* | --name=* | --subnet=* | --state-dir=* | --ssh=*)
        v=${1#*=}
        case "$1" in
        --engines=*) ENGINES=$v ;;
        --name=*) LAB=$v ;;
        --subnet=*) SUBNET=$v ;;
        --state-dir=*) STATE_DIR=$v ;;
        --ssh=*) SSH=$v ;;
        esac
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    -*) usage_error "unknown option '$1'" ;;
    *)
        if [ -z "$CMD" ]; then CMD=$1; else ARGS+=("$1"); fi
        shift
        ;;
    esac
done

[ -n "$CMD" ] || usage_error "no subcommand given"
case "$CMD" in
up | down | status | env) [ ${#ARGS[@]} -eq 0 ] || usage_error "$CMD takes no arguments (got '${ARGS[*]}')" ;;
load) [ ${#ARGS[@]} -ge 1 ] || usage_error "load needs at least one IMAGE" ;;
*) usage_error "unknown subcommand '$CMD' (use up, down, status, env or load)" ;;
esac
[[ $ENGINES =~ ^[0-9]+$ ]] || usage_error "--engines must be a whole number, not '$ENGINES'"
ENGINES=$((10#$ENGINES))
[ "$ENGINES" -ge 1 ] && [ "$ENGINES" -le 9 ] || usage_error "--engines must be between 1 and 9 (got $ENGINES)"
if [ -n "$SSH" ]; then
    [[ $SSH =~ ^[1-9](,[1-9])*$ ]] || usage_error "--ssh takes engine numbers such as 3 or 2,3, not '$SSH'"
    for i in ${SSH//,/ }; do
        [ "$i" -le "$ENGINES" ] || usage_error "--ssh $i: the lab has $ENGINES engine(s)"
        [ "$i" != 1 ] || usage_error "--ssh 1: the manager is reached by DOCKER_HOST (tcp://); use worker engines"
    done
    SSH=$(tr ',' '\n' <<<"$SSH" | sort -un | paste -sd, -)
fi
[[ $LAB =~ ^[a-z0-9][a-z0-9_.-]{0,39}$ ]] || usage_error "--name must be lower-case letters, digits, '.', '_' or '-' (at most 40), not '$LAB'"
if [ -n "$SUBNET" ] && ! [[ $SUBNET =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]]; then
    usage_error "--subnet must be an IPv4 CIDR such as 172.30.213.0/24, not '$SUBNET'"
fi
if [ -z "$STATE_DIR" ]; then
    home=${RANGECTL_HOME:-${XDG_STATE_HOME:-$HOME/.local/state}/rangectl}
    STATE_DIR=$home/cluster-lab/$LAB
fi

# -- the engine this machine runs (not a lab engine, even with DOCKER_HOST set to one) ----
command -v docker >/dev/null 2>&1 || env_die "the docker CLI is not installed (run scripts/setup.sh)"
if [ -n "${RANGECTL_LAB_DOCKER_HOST:-}" ]; then
    export DOCKER_HOST=$RANGECTL_LAB_DOCKER_HOST
elif [ -n "${DOCKER_HOST:-}" ] && [[ $DOCKER_HOST == tcp://* ]]; then
    # after `eval "$(cluster-lab.sh up)"` DOCKER_HOST names a lab manager: the lab itself
    # is made on the local engine
    if timeout 10 docker info --format '{{json .Labels}}' 2>/dev/null | grep -q "\"$LABEL="; then
        say "DOCKER_HOST=$DOCKER_HOST is a lab engine; using the local engine (set RANGECTL_LAB_DOCKER_HOST to choose)"
        unset DOCKER_HOST
    fi
fi
hostd() { docker "$@"; }
engd() { # engd ADDR docker-args...: a lab engine's API
    local addr=$1
    shift
    timeout 120 docker -H "tcp://$addr:$API_PORT" "$@"
}
need_engine() {
    timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
        env_die "the Docker engine does not answer (${DOCKER_HOST:-unix:///var/run/docker.sock}); start it (scripts/setup.sh)"
}

lock_lab() { # one up/down at a time per lab (a second `up` waits, then finds the lab up)
    mkdir -p "$(dirname "$STATE_DIR")" || env_die "cannot create $(dirname "$STATE_DIR")"
    exec 9>"$(dirname "$STATE_DIR")/.$LAB.lock"
    flock -w 900 9 || die "another $PROG is still working on lab $LAB (waited 15 min)"
}

# -- helpers ------------------------------------------------------------------------------
engine_name() { echo "$LAB-engine$1"; }
lab_containers() { hostd ps -a --filter "label=$LABEL=$LAB" --format '{{.Names}}' | sort; }
engine_addr() { # the engine container's address on the lab network
    hostd inspect -f "{{with index .NetworkSettings.Networks \"$LAB\"}}{{.IPAddress}}{{end}}" "$1" 2>/dev/null || true
}
python_bin() {
    local p
    for p in "${RANGECTL_PYTHON:-}" "$ROOT/.venv/bin/python" python3; do
        [ -n "$p" ] || continue
        if command -v "$p" >/dev/null 2>&1 && (cd "$ROOT" && "$p" -c 'import rangectl.backend.images, docker') 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# The privileged mode Docker gives: every capability it knows. When this machine is itself
# a container whose bounding set lacks some (runc then fails with "unable to apply caps"),
# give the engines the same thing by hand: every capability the machine has, no seccomp or
# AppArmor profile, unmasked /proc, every device; the engine's init remounts /sys and the
# cgroups read-write.
CAPS=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
    NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
    SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
    AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
    PERFMON BPF CHECKPOINT_RESTORE)
privilege_args() {
    local pid bnd i missing=()
    pid=$(pgrep -o -x dockerd 2>/dev/null || true)
    bnd=$(awk '/^CapBnd:/ {print $2}' "/proc/${pid:-self}/status" 2>/dev/null || true)
    [ -n "$bnd" ] || bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
    for i in "${!CAPS[@]}"; do
        if (((0x$bnd >> i & 1) == 0)); then missing+=("${CAPS[$i]}"); fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        PRIV_ARGS=(--privileged)
        PRIV_NOTE="privileged"
    else
        PRIV_ARGS=(--cap-add ALL --security-opt seccomp=unconfined --security-opt apparmor=unconfined
            --security-opt systempaths=unconfined --device-cgroup-rule 'a *:* rwm')
        for i in "${missing[@]}"; do PRIV_ARGS+=(--cap-drop "$i"); done
        PRIV_NOTE="all capabilities but ${missing[*]} (this machine has no more), unconfined"
    fi
}

ensure_image() {
    local py
    py=$(python_bin) || env_die "no Python with rangectl and the docker SDK (run scripts/setup.sh, or set RANGECTL_PYTHON)"
    say "engine image: rangectl images build engine (a no-op when the recipe is unchanged)"
    (cd "$ROOT" && "$py" -c 'import sys; from rangectl.cli import main; sys.argv = ["rangectl", "images", "build", "engine"]; main()') >&2 ||
        die "the engine image did not build (see above; the recipe is images/engine/)"
    IMAGE=$(cd "$ROOT" && "$py" -c '
import docker
from rangectl.backend.images import default_base_image, image_ref, resolve_base_hash
c = docker.from_env(timeout=60)
print(image_ref("engine", resolve_base_hash(c, default_base_image())))') || die "cannot tell the engine image's tag"
    hostd image inspect "$IMAGE" >/dev/null 2>&1 || die "$IMAGE is not in the engine after the build"
}

write_state() {
    local tmp=$STATE_DIR.tmp.$$
    rm -rf "$tmp"
    mkdir -p "$tmp"
    printf 'export DOCKER_HOST=tcp://%s:%s\n' "$MANAGER_ADDR" "$API_PORT" >"$tmp/env"
    printf '%s\n' "${ENGINE_LINES[@]}" >"$tmp/engines"
    printf 'name=%s\nengines=%s\nimage=%s\nnetwork=%s\nsubnet=%s\nssh=%s\n' "$LAB" "$ENGINES" "$IMAGE" "$LAB" \
        "$(hostd network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$LAB")" "$SSH" >"$tmp/lab"
    if [ -n "$SSH" ]; then
        mkdir -p "$tmp/ssh"
        cp "$SSH_TMP/id_ed25519" "$SSH_TMP/id_ed25519.pub" "$SSH_TMP/known_hosts" "$tmp/ssh/"
        chmod 600 "$tmp/ssh/id_ed25519"
        for a in "${SSH_ADDRS[@]}"; do
            printf 'Host %s\n    User root\n    IdentityFile %s/ssh/id_ed25519\n    UserKnownHostsFile %s/ssh/known_hosts\n    StrictHostKeyChecking yes\n' \
                "$a" "$STATE_DIR" "$STATE_DIR"
        done >"$tmp/ssh/config"
        rm -rf "$SSH_TMP"
    fi
    rm -rf "$STATE_DIR"
    mv "$tmp" "$STATE_DIR"
}

# The lab is up as asked: N running engines of the current image, state files, N Ready nodes.
lab_healthy() {
    local names n i img addr ready
    names=$(lab_containers)
    n=$(printf '%s' "$names" | grep -c . || true)
    [ "$n" -eq "$ENGINES" ] || return 1
    for i in $(seq 1 "$ENGINES"); do
        img=$(hostd inspect -f '{{.Config.Image}} {{.State.Running}}' "$(engine_name "$i")" 2>/dev/null) || return 1
        [ "$img" = "$IMAGE true" ] || return 1
    done
    [ -f "$STATE_DIR/env" ] && [ -f "$STATE_DIR/engines" ] || return 1
    grep -qx "ssh=$SSH" "$STATE_DIR/lab" 2>/dev/null || return 1
    addr=$(engine_addr "$(engine_name 1)")
    [ -n "$addr" ] && grep -qx "export DOCKER_HOST=tcp://$addr:$API_PORT" "$STATE_DIR/env" || return 1
    ready=$(engd "$addr" node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$' || true)
    [ "$ready" -eq "$ENGINES" ]
}

teardown() { # remove everything labelled with this lab; quiet when there is nothing
    local ids vols nets left
    ids=$(hostd ps -aq --filter "label=$LABEL=$LAB")
    if [ -n "$ids" ]; then
        say "removing $(echo "$ids" | wc -l) engine container(s)"
        # shellcheck disable=SC2086
        hostd rm -f -v $ids >/dev/null
    fi
    vols=$(hostd volume ls -q --filter "label=$LABEL=$LAB")
    if [ -n "$vols" ]; then
        say "removing $(echo "$vols" | wc -l) volume(s)"
        # shellcheck disable=SC2086
        hostd volume rm -f $vols >/dev/null
    fi
    nets=$(hostd network ls -q --filter "label=$LABEL=$LAB")
    if [ -n "$nets" ]; then
        say "removing network(s) $(hostd network ls --filter "label=$LABEL=$LAB" --format '{{.Name}}' | tr '\n' ' ')"
        # shellcheck disable=SC2086
        hostd network rm $nets >/dev/null
    fi
    rm -rf "$STATE_DIR"
    left=$( (
        hostd ps -aq --filter "label=$LABEL=$LAB"
        hostd volume ls -q --filter "label=$LABEL=$LAB"
        hostd network ls -q --filter "label=$LABEL=$LAB"
    ) | wc -l)
    [ "$left" -eq 0 ] || die "lab $LAB: $left labelled object(s) are still there after removal (docker ps -a / volume ls / network ls --filter label=$LABEL=$LAB)"
}

# -- the lab network ----------------------------------------------------------------------
# The engines get fixed addresses (gateway .1, engine I at .(1+I)), so an engine stopped and
# started again keeps the address the swarm and the node label know. Fixed addresses need
# a subnet the lab chooses: --subnet, or the first of CANDIDATES that no Docker network
# and no route of this machine overlaps.
CANDIDATES=(172.30.213.0/24 172.30.214.0/24 172.30.215.0/24 172.30.216.0/24 172.30.217.0/24
    172.30.218.0/24 172.30.219.0/24 172.30.220.0/24 192.168.213.0/24 192.168.214.0/24)
ip2int() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    echo $(((a << 24) + (b << 16) + (c << 8) + d))
}
int2ip() { echo "$(($1 >> 24 & 255)).$(($1 >> 16 & 255)).$(($1 >> 8 & 255)).$(($1 & 255))"; }
net_base() { # network address of CIDR as an integer
    local ip=${1%/*} len=${1#*/}
    echo $(($(ip2int "$ip") & (0xffffffff << (32 - len)) & 0xffffffff))
}
engine_ip() { int2ip $(($(net_base "$LAB_SUBNET") + 1 + $1)); }
route_overlaps() { # a route of this machine (not the default one) inside or around CIDR
    command -v ip >/dev/null 2>&1 || return 1
    (ip -4 route show root "$1"; ip -4 route show match "$1") 2>/dev/null | grep -v '^default' | grep -q .
}
make_network() {
    local c out
    if [ -n "$SUBNET" ]; then
        [ "${SUBNET#*/}" -le 28 ] || die "--subnet $SUBNET is too small for the engines (use /28 or larger)"
        out=$(hostd network create --driver bridge --internal --label "$LABEL=$LAB" --subnet "$SUBNET" \
            --gateway "$(int2ip $(($(net_base "$SUBNET") + 1)))" "$LAB" 2>&1) ||
            die "cannot make network $LAB on $SUBNET: $out"
        LAB_SUBNET=$SUBNET
    else
        for c in "${CANDIDATES[@]}"; do
            route_overlaps "$c" && continue
            if hostd network create --driver bridge --internal --label "$LABEL=$LAB" --subnet "$c" \
                --gateway "$(int2ip $(($(net_base "$c") + 1)))" "$LAB" >/dev/null 2>&1; then
                LAB_SUBNET=$c
                break
            fi
        done
        [ -n "${LAB_SUBNET:-}" ] || die "no free subnet for the lab network among ${CANDIDATES[*]}: pass --subnet CIDR"
    fi
    say "network $LAB (internal bridge, $LAB_SUBNET)"
}

# -- up -----------------------------------------------------------------------------------
UP_DONE=0
up_failed() {
    local rc=$?
    [ "$UP_DONE" = 1 ] && return
    trap - EXIT INT TERM
    echo "$PROG: error: up failed (exit $rc); removing what it made" >&2
    set +e
    local c
    for c in $(lab_containers); do
        echo "--- last lines of $c's log:" >&2
        hostd logs --tail 8 "$c" 2>&1 | sed 's/^/    /' >&2
    done
    teardown >&2
    exit $((rc == 0 ? 1 : rc))
}

wait_api() { # wait_api NAME ADDR
    local deadline=$((SECONDS + WAIT_API))
    while [ $SECONDS -lt $deadline ]; do
        if timeout 5 docker -H "tcp://$2:$API_PORT" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
            return 0
        fi
        [ "$(hostd inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ] || die "engine $1 stopped while starting"
        sleep 0.5
    done
    die "engine $1's API (tcp://$2:$API_PORT) did not answer within ${WAIT_API}s"
}

cmd_up() {
    local t0=$SECONDS i name addr token nid role url
    need_engine
    ensure_image
    if [ -n "$(lab_containers)" ]; then
        if lab_healthy; then
            say "up already: $ENGINES engine(s) of $IMAGE, all Ready"
            cat "$STATE_DIR/env"
            return 0
        fi
        say "there but not as asked (engines, image, or not Ready): re-creating it"
        teardown
    else
        teardown # a network or volume left by an interrupted run
    fi
    privilege_args
    trap up_failed EXIT
    trap 'exit 130' INT TERM

    make_network

    SSH_ADDRS=()
    if [ -n "$SSH" ]; then
        command -v ssh-keygen >/dev/null && command -v ssh-keyscan >/dev/null ||
            env_die "--ssh needs the OpenSSH client (ssh-keygen, ssh-keyscan): apt-get install openssh-client"
        SSH_TMP=$(mktemp -d)
        ssh-keygen -q -t ed25519 -N '' -C "rangectl-lab-$LAB" -f "$SSH_TMP/id_ed25519"
        : >"$SSH_TMP/known_hosts"
    fi
    say "starting $ENGINES engine(s) from $IMAGE ($PRIV_NOTE)"
    for i in $(seq 1 "$ENGINES"); do
        name=$(engine_name "$i")
        role=worker
        [ "$i" = 1 ] && role=manager
        local ssh_env=()
        if [[ ,$SSH, == *,$i,* ]]; then ssh_env=(-e "ENGINE_SSH_KEY=$(cat "$SSH_TMP/id_ed25519.pub")"); fi
        hostd volume create --label "$LABEL=$LAB" --label "$LABEL.engine=$name" "$name" >/dev/null
        hostd run -d --name "$name" --hostname "$name" --network "$LAB" --ip "$(engine_ip "$i")" \
            --label "$LABEL=$LAB" --label "$LABEL.role=$role" --label "$LABEL.engine=$i" \
            -v "$name:/var/lib/docker" "${PRIV_ARGS[@]}" "${ssh_env[@]}" \
            -e ENGINE_API_PORT="$API_PORT" -e ENGINE_POOL="$ENGINE_POOL" \
            -e ENGINE_DOCKERD_ARGS="--label $LABEL=$LAB --label $LABEL.engine=$name" \
            "$IMAGE" >/dev/null
    done
    # for the tests: a failure after the engines exist, to show up cleans after itself
    [ -z "${RANGECTL_LAB_FAIL_AFTER_START:-}" ] || die "failing on purpose (RANGECTL_LAB_FAIL_AFTER_START is set)"
    ENGINE_LINES=()
    local addrs=()
    for i in $(seq 1 "$ENGINES"); do
        name=$(engine_name "$i")
        addr=$(engine_addr "$name")
        [ -n "$addr" ] || die "engine $name has no address on network $LAB"
        addrs[i]=$addr
        wait_api "$name" "$addr"
        say "engine $name answers on tcp://$addr:$API_PORT"
    done
    MANAGER_ADDR=${addrs[1]}

    say "swarm: init on $(engine_name 1) ($MANAGER_ADDR)"
    engd "$MANAGER_ADDR" swarm init --advertise-addr "$MANAGER_ADDR" --listen-addr "$MANAGER_ADDR:2377" \
        --data-path-addr "$MANAGER_ADDR" --default-addr-pool "$SWARM_POOL" --default-addr-pool-mask-length 24 >/dev/null
    token=$(engd "$MANAGER_ADDR" swarm join-token -q worker)
    for i in $(seq 2 "$ENGINES"); do
        addr=${addrs[i]}
        say "swarm: $(engine_name "$i") ($addr) joins"
        engd "$addr" swarm join --token "$token" --advertise-addr "$addr" --listen-addr "$addr:2377" \
            --data-path-addr "$addr" "$MANAGER_ADDR:2377" >/dev/null
    done
    for i in $(seq 1 "$ENGINES"); do
        addr=${addrs[i]}
        name=$(engine_name "$i")
        nid=$(engd "$addr" info --format '{{.Swarm.NodeID}}')
        [ -n "$nid" ] || die "engine $name reports no swarm node ID"
        url=tcp://$addr:$API_PORT
        if [[ ,$SSH, == *,$i,* ]]; then
            url=ssh://root@$addr
            SSH_ADDRS+=("$addr")
            local deadline=$((SECONDS + WAIT_API)) keys=
            while [ $SECONDS -lt $deadline ]; do
                keys=$(ssh-keyscan -T 5 -t ed25519 "$addr" 2>/dev/null || true)
                [ -n "$keys" ] && break
                sleep 0.5
            done
            [ -n "$keys" ] || die "engine $name's sshd ($addr:22) did not answer within ${WAIT_API}s"
            printf '%s\n' "$keys" >>"$SSH_TMP/known_hosts"
            say "engine $name is reached as $url"
        fi
        engd "$MANAGER_ADDR" node update --label-add "io.rangectl.engine=$url" \
            --label-add "$LABEL=$LAB" "$nid" >/dev/null
        role=worker
        [ "$i" = 1 ] && role=manager
        ENGINE_LINES+=("$name $addr $url $role $nid")
    done

    local deadline=$((SECONDS + WAIT_READY)) ready=0
    while :; do
        ready=$(engd "$MANAGER_ADDR" node ls --format '{{.Status}}' | grep -c '^Ready$' || true)
        [ "$ready" -eq "$ENGINES" ] && break
        [ $SECONDS -lt $deadline ] || die "only $ready of $ENGINES swarm node(s) Ready after ${WAIT_READY}s"
        sleep 0.5
    done
    write_state
    UP_DONE=1
    trap - EXIT INT TERM
    say "up in $((SECONDS - t0))s: $ENGINES engine(s), swarm manager $(engine_name 1); state in $STATE_DIR"
    say "use it:  eval \"\$($0 env${LAB:+ --name $LAB})\"   or   source $STATE_DIR/env"
    cat "$STATE_DIR/env"
}

# -- down, status, env, load --------------------------------------------------------------
cmd_down() {
    local t0=$SECONDS
    need_engine
    if [ -z "$(lab_containers)" ] && [ -z "$(hostd volume ls -q --filter "label=$LABEL=$LAB")" ] &&
        [ -z "$(hostd network ls -q --filter "label=$LABEL=$LAB")" ]; then
        rm -rf "$STATE_DIR"
        say "nothing to remove"
        return 0
    fi
    teardown
    say "down in $((SECONDS - t0))s: nothing labelled $LABEL=$LAB is left"
}

require_up() {
    [ -n "$(lab_containers)" ] && [ -f "$STATE_DIR/env" ] || die "lab $LAB is not up (run: $PROG${LAB:+ --name $LAB} up)"
}

cmd_status() {
    need_engine
    require_up
    local rc=0 name addr api role nid state mem
    echo "lab $LAB: $(grep -c . "$STATE_DIR/engines") engine(s); $(cat "$STATE_DIR/env")"
    printf '%-24s %-15s %-8s %-10s %s\n' ENGINE ADDRESS ROLE STATE MEMORY
    while read -r name addr api role nid; do
        state=$(hostd inspect -f '{{.State.Status}}' "$name" 2>/dev/null || echo missing)
        mem=$(hostd stats --no-stream --format '{{.MemUsage}}' "$name" 2>/dev/null | cut -d/ -f1 || true)
        printf '%-24s %-15s %-8s %-10s %s\n' "$name" "$addr" "$role" "$state" "${mem:--}"
        [ "$state" = running ] || rc=1
    done <"$STATE_DIR/engines"
    echo
    addr=$(awk 'NR == 1 {print $2}' "$STATE_DIR/engines")
    engd "$addr" node ls || rc=1
    return $rc
}

cmd_env() {
    require_up
    cat "$STATE_DIR/env"
}

cmd_load() {
    need_engine
    require_up
    local img id name addr api role nid pids names rc=0 i tmp todo
    tmp=$(mktemp -d /var/tmp/rangectl-lab-load.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    for img in "${ARGS[@]}"; do
        id=$(hostd image inspect -f '{{.Id}}' "$img" 2>/dev/null) || die "image '$img' is not in this machine's engine"
        todo=()
        while read -r name addr api role nid; do
            if [ "$(engd "$addr" image inspect -f '{{.Id}}' "$img" 2>/dev/null)" = "$id" ]; then
                say "$name has $img already"
            else
                todo+=("$name $api")
            fi
        done <"$STATE_DIR/engines"
        [ ${#todo[@]} -gt 0 ] || continue
        # saved once, then loaded into every engine that lacks it, in parallel
        hostd save -o "$tmp/image.tar" "$img" || die "docker save $img failed"
        pids=()
        names=()
        for i in "${todo[@]}"; do
            say "${i%% *}: loading $img"
            timeout 600 docker -H "${i#* }" load -q -i "$tmp/image.tar" >/dev/null &
            pids+=($!)
            names+=("${i%% *}")
        done
        for i in "${!pids[@]}"; do
            if ! wait "${pids[$i]}"; then
                echo "$PROG: error: loading $img into ${names[$i]} failed" >&2
                rc=1
            fi
        done
        rm -f "$tmp/image.tar"
    done
    return $rc
}

case "$CMD" in
up) lock_lab && cmd_up ;;
down) lock_lab && cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
load) cmd_load ;;
esac
