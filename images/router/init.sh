#!/bin/bash
# router start-up, with no playbook:
#   FORWARD policy ACCEPT;
#   FORWARD rule 1: new connections -> NFLOG group 42 (logged, then filtered);
#   FORWARD rule 2: jump to RANGECTL-FILTER, the chain blue teams add rules to
#                   (e.g. iptables -A RANGECTL-FILTER -s 198.18.10.66 -j DROP);
#   /var/log/router/new-connections.log: one line per new forwarded connection
#                   (tcpdump on nflog:42, also the ones RANGECTL-FILTER drops);
#   /var/log/router/conntrack.log: connection tracking events (new, destroyed).
# Needs CAP_NET_ADMIN (the planner gives it to forwarding nodes).
set -u
. /usr/local/lib/rangectl/init-lib.sh

LOG_DIR=/var/log/router
NFLOG_GROUP=${ROUTER_NFLOG_GROUP:-42}
mkdir -p "$LOG_DIR"
touch "$LOG_DIR/new-connections.log" "$LOG_DIR/conntrack.log"

fwd=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo "?")
if [ "$fwd" != 1 ]; then
    rc_log "warning: net.ipv4.ip_forward is $fwd: this node will not forward (give it forward: true)"
fi

ipt() { iptables -w 5 "$@"; }

if ipt -S FORWARD >/dev/null 2>&1; then
    ipt -P FORWARD ACCEPT
    ipt -N RANGECTL-FILTER 2>/dev/null || true
    ipt -C FORWARD -j RANGECTL-FILTER 2>/dev/null || ipt -A FORWARD -j RANGECTL-FILTER
    ipt -C FORWARD -m conntrack --ctstate NEW -j NFLOG --nflog-group "$NFLOG_GROUP" --nflog-prefix rangectl-new 2>/dev/null \
        || ipt -I FORWARD 1 -m conntrack --ctstate NEW -j NFLOG --nflog-group "$NFLOG_GROUP" --nflog-prefix rangectl-new
    rc_log "iptables: FORWARD policy ACCEPT, RANGECTL-FILTER hooked, new connections logged to $LOG_DIR"
    rc_service flowlog bash -c "exec tcpdump -i nflog:$NFLOG_GROUP -nn -tttt -l -Z root >>$LOG_DIR/new-connections.log 2>>$LOG_DIR/tcpdump.err"
    rc_service conntrack bash -c "exec conntrack -E -e NEW,DESTROY -o timestamp >>$LOG_DIR/conntrack.log 2>>$LOG_DIR/conntrack.err"
else
    rc_log "warning: iptables does not work here (no CAP_NET_ADMIN?): no RANGECTL-FILTER chain, no connection log"
fi

rc_wait_forever
