#!/bin/bash
# workstation start-up, with no playbook: nothing runs but this init, unless
#   SSHD=1                  start sshd on :22 (host keys made at first start);
#   SSH_PASSWORD=...        with SSHD=1: root may log in with this password;
#   SSH_AUTHORIZED_KEY=...  with SSHD=1: a public key for root.
set -u
. /usr/local/lib/rangectl/init-lib.sh
if [ "${SSHD:-0}" = 1 ]; then
    mkdir -p /run/sshd /root/.ssh
    chmod 700 /root/.ssh
    ssh-keygen -A >/dev/null
    if [ -n "${SSH_PASSWORD:-}" ]; then
        echo "root:${SSH_PASSWORD}" | chpasswd
        printf 'PermitRootLogin yes\nPasswordAuthentication yes\n' >/etc/ssh/sshd_config.d/rangectl.conf
    fi
    if [ -n "${SSH_AUTHORIZED_KEY:-}" ]; then
        printf '%s\n' "$SSH_AUTHORIZED_KEY" >>/root/.ssh/authorized_keys
        chmod 600 /root/.ssh/authorized_keys
    fi
    rc_service sshd /usr/sbin/sshd -D -e
fi
rc_wait_forever
