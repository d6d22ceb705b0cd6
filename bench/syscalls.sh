#!/usr/bin/env bash
# bench/syscalls.sh: system calls per short TCP connection, corral and HAProxy 2.6
# side by side, counted by strace -c on the proxy's worker, on loopback only.
#
#   bash bench/syscalls.sh            # 1000 connections each, about 30 s
#   N=5000 bash bench/syscalls.sh     # more connections
#
# A connection: connect, send 1 byte, read the echoed byte, close (the python3
# client of bench/lib.sh's helpers; the backend is its echo server). Both proxies
# are configured as in bench/tcp.sh (one worker thread, splice on). The counts are
# exact for the run (strace sees every call); strace slows the proxy, so no time
# is reported here: CPU per connection is bench/tcp.sh's rate test.
set -euo pipefail

N=${N:-1000}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_tools haproxy strace python3
if [[ $SKIP_CORRAL != 1 && ! -x $CORRAL ]]; then
    build_corral "no corral binary at $CORRAL"
fi
make_workdir corral-syscalls

cat >"$TMP/h.py" <<'PYEOF'
import socket, sys
from benchlib import COMMANDS

def short(port, n):
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"x")
        if s.recv(1) != b"x":
            sys.exit("no echo through the proxy")
        s.close()

cmd, a = sys.argv[1], sys.argv[2:]
if cmd in COMMANDS:
    COMMANDS[cmd](a)
elif cmd == "short":
    short(int(a[0]), int(a[1]))
else:
    sys.exit("unknown helper " + cmd)
PYEOF

write_haproxy_cfg() { # FILE PORT BACKEND_PORT
    haproxy_cfg "$@" 20000 1h "" \
        "option splice-request
option splice-response" \
        "maxconn 20000"
}

write_corral_cfg() { # FILE PORT BACKEND_PORT
    corral_cfg "$@" 20000 1h "" "" "maxconn = 20000" "splice = true"
}

pin_cpus
choose_proxies

log "system calls per short connection ($N sequential: connect, 1 byte each way, close)"
log_setup "the client and the echo backend"

BE=$(py freeports 1)
start_server echo "$BE" python3 "$TMP/h.py" echo "$BE"

declare -A PER
for p in "${PROXIES[@]}"; do
    start_proxy "$p" "$BE"
    # The worker: the proxy master's only child.
    worker=$(pgrep -P "$PROXY_PID" | head -n 1)
    [[ -n $worker ]] || die "no worker process under $p's master $PROXY_PID"
    py short "$PROXY_PORT" 20 # warm-up (pools, first accepts)
    strace -c -f -q -o "$TMP/strace-$p.txt" -p "$worker" &
    spid=$!
    sleep 0.5
    py short "$PROXY_PORT" "$N"
    sleep 0.2
    kill -INT "$spid"
    wait "$spid" 2>/dev/null || true
    stop_proxy
    # strace -c rows: % time, seconds, usecs/call, calls, [errors], syscall.
    total=$(awk '$NF == "total" { print $4 }' "$TMP/strace-$p.txt")
    [[ $total =~ ^[0-9]+$ ]] || die "no total in $TMP/strace-$p.txt"
    PER[$p]=$(awk -v t="$total" -v n="$N" 'BEGIN { printf "%.1f", t / n }')
    log ""
    log "$p: $total calls, ${PER[$p]} per connection"
    awk -v n="$N" '
        /^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ && $NF != "total" {
            printf "    %-16s %7.2f\n", $NF, $4 / n
        }' "$TMP/strace-$p.txt" | sort -k2 -rn | head -n 14
done

if [[ -n ${PER[haproxy]:-} && -n ${PER[corral]:-} ]]; then
    log ""
    log "corral/HAProxy: $(awk -v a="${PER[corral]}" -v b="${PER[haproxy]}" 'BEGIN { printf "%.2f", a / b }') (${PER[corral]} vs ${PER[haproxy]} calls per connection; target <= 0.90)"
fi
