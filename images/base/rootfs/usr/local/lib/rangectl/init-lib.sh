# Shared by every node image's /usr/local/sbin/rangectl-init (sourced, bash).
#
# rc_service NAME CMD...   run CMD in the foreground of a small supervisor
#                          that restarts it when it exits (1 s pause), unless
#                          /run/rangectl/NAME.down exists (see rangectl-svc).
#                          STOP_SIGNAL=INT rc_service ... picks the signal that
#                          stops CMD (default TERM).
# rc_wait_forever          run the boot scripts playbooks left (rangectl-svc boot)
#                          once, then wait until SIGTERM/SIGINT, stop every service
#                          and exit 0, so `docker stop` takes well under a second.
# rc_log TEXT              a line on the container's log (stderr).

RC_RUN=/run/rangectl
mkdir -p "$RC_RUN"
RC_SUPERVISORS=()

rc_log() {
    printf '%s rangectl-init[%s]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${RANGECTL_IMAGE:-node}" "$*" >&2
}

rc_service() {
    local name=$1
    shift
    local sig=${STOP_SIGNAL:-TERM}
    echo "$sig" >"$RC_RUN/$name.signal"
    (
        child=
        # shellcheck disable=SC2064
        trap 'if [ -n "$child" ]; then kill -s '"$sig"' "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi; exit 0' TERM INT
        while :; do
            if [ -e "$RC_RUN/$name.down" ]; then
                sleep 1 &
                wait $!
                continue
            fi
            "$@" &
            child=$!
            echo "$child" >"$RC_RUN/$name.pid"
            wait "$child"
            rc=$?
            child=
            rm -f "$RC_RUN/$name.pid"
            if [ ! -e "$RC_RUN/$name.down" ]; then
                rc_log "$name exited with status $rc; restarting in 1 s"
            fi
            sleep 1 &
            wait $!
        done
    ) &
    RC_SUPERVISORS+=("$!")
    rc_log "started $name: $*"
}

rc_stop() {
    trap - TERM INT
    rc_log "stopping"
    local p i alive
    for p in "${RC_SUPERVISORS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for i in $(seq 1 80); do
        alive=0
        for p in "${RC_SUPERVISORS[@]}"; do
            if kill -0 "$p" 2>/dev/null; then alive=1; fi
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    exit 0
}

rc_boot() {
    local f
    for f in /etc/rangectl/boot.d/*; do
        [ -f "$f" ] || continue
        rc_log "boot script $(basename "$f")"
        bash "$f" </dev/null >/dev/null 2>&1 || rc_log "boot script $(basename "$f") failed"
        rm -f "$f"
    done
}

rc_wait_forever() {
    rc_boot
    rc_log "ready"
    while :; do
        sleep 86400 &
        wait $!
    done
}

# Trap from the start, so a stop that comes while services start is not lost.
trap rc_stop TERM INT
