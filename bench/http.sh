#!/usr/bin/env bash
# bench/http.sh: corral and HAProxy 2.6 side by side in HTTP mode, on loopback only.
#
#   bash bench/http.sh                      # everything, about 2 minutes
#   SECS=3 RUNS=1 bash bench/http.sh        # quicker, noisier
#   TESTS="ka big" bash bench/http.sh       # choose among: ka close big
#
# wrk against an nginx backend, direct, through HAProxy (mode http, nbthread 1)
# and through corral (workers = 1). Both proxies keep each client's server
# connection private to it (HAProxy `http-reuse never`: corral has no
# connection pool yet), so they do the same work per request.
#
# Loads: `ka` small object with keep-alive (-c50), `close` small object with
# `Connection: close` (-c50), `big` 1 MiB object (-c10). Printed per target:
# req/s (MiB/s for big), p50/p99 latency, proxy CPU per request (per GB for
# big), and the corral/HAProxy ratios. Environment: CORRAL, SECS (5), RUNS (3),
# SKIP_CORRAL, SKIP_HAPROXY, PIN, KEEP_TMP as in bench/tcp.sh.
set -euo pipefail

SECS=${SECS:-5}
RUNS=${RUNS:-3}
TESTS=${TESTS:-"ka close big"}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_tools haproxy wrk nginx:nginx-light python3
if [[ $SKIP_CORRAL != 1 && ! -x $CORRAL ]]; then
    build_corral "no corral binary at $CORRAL"
fi
raise_fd_limit
make_workdir corral-http-bench

cat >"$TMP/h.py" <<'PYEOF'
import os, re, statistics, sys
from benchlib import COMMANDS, proc_stats, run_delay

def cpu(root):
    tck = os.sysconf("SC_CLK_TCK")
    total, wait = 0, 0
    for p, r in proc_stats(root):
        total += int(r[11]) + int(r[12])
        wait += run_delay(p)
    return total / tck, wait

def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def wrk(fn):
    txt = open(fn).read()
    n = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", txt)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", txt)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", txt)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", txt)
    if not (n and rate and p50 and p99):
        sys.exit("wrk gave no result: " + txt.strip().replace("\n", " ")[:300])
    size = float(n.group(4)) * {"B": 1, "KB": 1024, "MB": 1 << 20, "GB": 1 << 30}[n.group(5)]
    errs = 0
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
    if e:
        errs += sum(int(x) for x in e.groups())
    n2 = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
    if n2:
        errs += int(n2.group(1))
    secs = float(n.group(2)) * {"s": 1, "ms": 0.001, "m": 60}[n.group(3)]
    print(rate.group(1), n.group(1), size / secs / (1 << 20), size, ms(*p50.groups()), ms(*p99.groups()), errs)

cmd, a = sys.argv[1], sys.argv[2:]
if cmd in COMMANDS:
    COMMANDS[cmd](a)
elif cmd == "cpu":
    print("%.3f %.3f" % cpu(int(a[0])))
elif cmd == "wrk":
    wrk(a[0])
elif cmd == "median":
    print(statistics.median(float(x) for x in a))
else:
    sys.exit("unknown command " + cmd)
PYEOF

write_haproxy_cfg() { # FILE PORT BACKEND_PORT
    cat >"$1" <<EOF
global
    nbthread 1
    maxconn 20000
    no strict-limits
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse never
frontend fe
    bind 127.0.0.1:$2
    default_backend be
backend be
    server s1 127.0.0.1:$3
EOF
}

write_corral_cfg() { # FILE PORT BACKEND_PORT
    cat >"$1" <<EOF
[global]
workers = 1
maxconn = 20000
log = "/dev/null"
[defaults]
mode = "http"
timeout = { connect = "5s", client = "30s", server = "30s" }
[frontend.fe]
bind = "127.0.0.1:$2"
maxconn = 20000
default_backend = "be"
[backend.be]
server.s1 = { addr = "127.0.0.1:$3" }
EOF
}

pin_cpus
choose_proxies
declare -A R L

P_NGINX=$(py freeports 1)
mkdir -p "$TMP/nginx/www"
head -c $((1 << 20)) /dev/urandom >"$TMP/nginx/www/big"
printf 'ok\n' >"$TMP/nginx/www/small"
nginx_conf "$P_NGINX" "keepalive_requests 1000000;" "root $TMP/nginx/www;"

log "corral vs HAProxy, HTTP mode, loopback"
log_setup "wrk and nginx"
log "  wrk -t1 -d${SECS}s x $RUNS runs (median), interleaved; HAProxy http-reuse never"
warn_if_busy "makes these numbers noisy: compare ratios from a quiet machine"

# one LOAD LABEL PORT PID RUN: one wrk run of LOAD against PORT.
one() {
    local load=$1 label=$2 port=$3 pid=$4 i=$5 out res c0 c1 w0 w1 args
    case $load in
    ka) args=(-c50 "http://127.0.0.1:$port/small") ;;
    close) args=(-c50 -H "Connection: close" "http://127.0.0.1:$port/small") ;;
    big) args=(-c10 "http://127.0.0.1:$port/big") ;;
    esac
    out=$TMP/wrk-$load-$label-$i.txt
    [[ -z $pid ]] || read -r c0 w0 <<<"$(py cpu "$pid")"
    timeout $((SECS + 30)) "${ON_LOAD[@]}" wrk -t1 -d"${SECS}s" --latency "${args[@]}" >"$out" 2>&1 || true
    [[ -z $pid ]] || read -r c1 w1 <<<"$(py cpu "$pid")"
    if ! res=$(py wrk "$out" 2>&1); then
        log "  $load $label run $i: FAILED: $res"
        return 0
    fi
    local rate n mibs bytes p50 p99 errs
    read -r rate n mibs bytes p50 p99 errs <<<"$res"
    L[rate.$load.$label]+=" $rate"
    L[mibs.$load.$label]+=" $mibs"
    L[p50.$load.$label]+=" $p50"
    L[p99.$load.$label]+=" $p99"
    R[errs.$load.$label]=$((${R[errs.$load.$label]:-0} + errs))
    local extra=""
    if [[ -n $pid ]]; then
        local c
        c=$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')
        L[cpureq.$load.$label]+=" $(awk -v c="$c" -v n="$n" 'BEGIN { printf "%.2f", c / n * 1e6 }')"
        L[cpugb.$load.$label]+=" $(awk -v c="$c" -v b="$bytes" 'BEGIN { printf "%.3f", c / (b / 1e9) }')"
        extra=", proxy CPU ${c} s"
    fi
    log "  $load $label run $i: $(printf '%.0f' "$rate") req/s, $(printf '%.0f' "$mibs") MiB/s, p50 ${p50} ms, p99 ${p99} ms, $errs errors$extra"
}

start_server nginx "$P_NGINX" nginx -p "$TMP/nginx/" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
NGINX_PID=$LAST_PID
for load in $TESTS; do
    log ""
    log "== $load"
    for ((run = 1; run <= RUNS; run++)); do
        one "$load" direct "$P_NGINX" "" "$run"
        for p in "${PROXIES[@]}"; do
            start_proxy "$p" "$P_NGINX"
            one "$load" "$p" "$PROXY_PORT" "$PROXY_PID" "$run"
            stop_proxy
        done
    done
done
stop_tree "$NGINX_PID"

# shellcheck disable=SC2086
med() { local v=${L[$1]:-}; [[ -n $v ]] && printf '%.2f' "$(py median $v)" || echo "-"; }
ratio() {
    local a b
    a=$(med "$1.corral") b=$(med "$1.haproxy")
    [[ $a = - || $b = - ]] && { echo "-"; return; }
    awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}
log ""
log "== summary (medians; ratio = corral / HAProxy)"
printf '%-34s %10s %10s %10s %8s\n' metric direct haproxy corral ratio
for load in $TESTS; do
    for m in rate p50 p99 cpureq; do
        [[ $load = big && $m = rate ]] && m=mibs
        [[ $load = big && $m = cpureq ]] && m=cpugb
        printf '%-34s %10s %10s %10s %8s\n' "$load $m" "$(med "$m.$load.direct")" \
            "$(med "$m.$load.haproxy")" "$(med "$m.$load.corral")" "$(ratio "$m.$load")"
    done
    log "  errors: direct ${R[errs.$load.direct]:-0}, haproxy ${R[errs.$load.haproxy]:-0}, corral ${R[errs.$load.corral]:-0}"
done
