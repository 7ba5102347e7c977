#!/bin/bash
# dns start-up, with no playbook: dnsmasq on :53 (udp and tcp), config in
# /etc/rangectl/dns, queries logged to /var/log/dns/queries.log.
#   DNS_RECORDS="name=ip name2=ip2"   extra A records, without a playbook.
# This node also answers for its own hostname under range.test.
set -u
. /usr/local/lib/rangectl/init-lib.sh
mkdir -p /var/log/dns /run/rangectl/dns
rt=/run/rangectl/dns/runtime.hosts
: >"$rt"
for ip in $(ip -4 -o addr show scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1); do
    echo "$ip $(hostname).range.test" >>"$rt"
done
for rec in ${DNS_RECORDS:-}; do
    name=${rec%%=*}
    ip=${rec#*=}
    [ -n "$name" ] && [ -n "$ip" ] && [ "$name" != "$rec" ] && echo "$ip $name" >>"$rt"
done
rc_service dns dnsmasq --keep-in-foreground --conf-file=/etc/rangectl/dns/dnsmasq.conf
rc_wait_forever
