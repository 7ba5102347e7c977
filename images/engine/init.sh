#!/bin/bash
# engine start-up: one Docker engine of the cluster lab (scripts/cluster-lab.sh).
# Runs privileged, with /var/lib/docker on a volume. Starts dockerd with
#   - the local socket, and the TCP API (no TLS: a lab on the lab's own
#     internal network) on the address of ENGINE_IFACE only (default eth0),
#     port ENGINE_API_PORT (2375); an INPUT rule drops that port on every other
#     interface, so containers on this engine's own bridges cannot reach it;
#   - its own bridges (docker0, docker_gwbridge) taken from ENGINE_POOL
#     (default 10.211.0.0/16, /24 each), away from the scenarios' subnets.
# Extra dockerd flags: ENGINE_DOCKERD_ARGS. The engine log is this container's log.
set -u
. /usr/local/lib/rangectl/init-lib.sh
export container=docker
iface=${ENGINE_IFACE:-eth0}
port=${ENGINE_API_PORT:-2375}
pool=${ENGINE_POOL:-10.211.0.0/16}

# As moby's hack/dind does: securityfs (AppArmor probing), and on cgroup v2 move
# ourselves out of the root group so the engine can make child groups.
if [ -d /sys/kernel/security ] && ! mountpoint -q /sys/kernel/security; then
    mount -t securityfs none /sys/kernel/security || rc_log "cannot mount securityfs (not privileged?)"
fi
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p /sys/fs/cgroup/init
    xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
    sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers >/sys/fs/cgroup/cgroup.subtree_control || :
fi

# Without --privileged (a host whose bounding set lacks a capability, see
# scripts/cluster-lab.sh) /sys and the cgroup mounts come read-only: make them
# writable, as they are in a privileged container.
if grep -qE '^sysfs /sys sysfs ro[,\ ]' /proc/mounts; then
    mount -o remount,rw /sys || rc_log "cannot remount /sys read-write"
fi
awk '($3 == "cgroup" || $3 == "cgroup2") && $4 ~ /^ro(,|$)/ {print $2}' /proc/mounts | while read -r m; do
    mount -o remount,bind,rw "$m" || rc_log "cannot remount $m read-write"
done

addr=
for _ in $(seq 1 100); do
    addr=$(ip -4 -o addr show dev "$iface" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1)
    [ -n "$addr" ] && break
    sleep 0.1
done
if [ -z "$addr" ]; then
    rc_log "no IPv4 address on $iface: the engine needs the lab network"
    exit 1
fi
if ! iptables -C INPUT -p tcp --dport "$port" ! -i "$iface" -j DROP 2>/dev/null; then
    iptables -I INPUT -p tcp --dport "$port" ! -i "$iface" -j DROP || {
        rc_log "iptables does not work here (not privileged?)"
        exit 1
    }
fi
# ssh:// access to this engine (cluster-lab.sh --ssh): root with the lab's key only, on the
# lab address; fresh host keys per engine (the image has none). docker-py opens an SSH channel
# per API connection and rangectl one per agent stream, all on one SSH connection: sshd's
# default of 10 sessions per connection is far too few (docs/cluster.md)
if [ -n "${ENGINE_SSH_KEY:-}" ]; then
    mkdir -p /root/.ssh /run/sshd
    chmod 700 /root/.ssh
    printf '%s\n' "$ENGINE_SSH_KEY" >/root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
    ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A >/dev/null
    rc_service sshd /usr/sbin/sshd -D -e -o "ListenAddress=$addr" -o PasswordAuthentication=no \
        -o KbdInteractiveAuthentication=no -o PermitRootLogin=prohibit-password \
        -o MaxSessions=1024 -o MaxStartups=100:30:200
fi
# a stale pid file from a previous run of this container would stop dockerd
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
# shellcheck disable=SC2086
rc_service dockerd dockerd \
    --host=unix:///var/run/docker.sock \
    --host="tcp://$addr:$port" \
    --tls=false \
    --storage-driver=overlay2 \
    --default-address-pool "base=$pool,size=24" \
    ${ENGINE_DOCKERD_ARGS:-}
rc_wait_forever
