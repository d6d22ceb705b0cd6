#!/usr/bin/env bash
# bench/http.sh: corral and HAProxy 2.6 side by side in HTTP mode, on loopback only.
#
#   bash bench/http.sh                      # everything, about 2 minutes
#   SECS=3 RUNS=1 bash bench/http.sh        # quicker, noisier
#   TESTS="ka big" bash bench/http.sh       # choose among: ka close big bigsf cache reload
#   REUSE=always bash bench/http.sh         # both proxies' http-reuse mode (safe)
#
# wrk against an nginx backend, direct, through HAProxy (mode http, nbthread 1)
# and through corral (workers = 1), both with the same `http-reuse` mode
# (REUSE, default safe; the close load runs with CLOSE_REUSE, default always,
# since under safe a first request never reuses).
#
# Loads: `ka` small object with keep-alive (-c50), `close` small object with
# `Connection: close` (-c50), `big` 1 MiB object (-c10), `bigsf` the same
# object served with nginx's `sendfile on` (Debian's nginx.conf sets it; the
# other loads use nginx's own default, off), `cache` a 4 KiB
# object with `max-age=600` from both proxies' caches (-c50 keep-alive:
# HAProxy's `cache` section with cache-use/cache-store, corral's
# `[cache.c]`; nginx sees the first request only), `reload` keep-alive
# -c50 for RELOAD_SECS (14) s with RELOADS (20) reloads INTERVAL (0.5) s apart
# (SIGUSR2 to each master; HAProxy runs -W, once with its defaults and once
# with `option idle-close-on-response`; hard-stop-after 60s for all), plus
# IDLE (20) keep-alive connections idle from before the first reload until
# after the last, then asked once more. Printed
# per target: req/s (MiB/s for big), p50/p99 latency, proxy CPU per request
# (per GB for big), server connections nginx accepted per 1000 requests, how
# many times the proxy went to sleep per 1000 requests (`sleeps`: each sleep
# is a wakeup that the waking CPU pays for, here the load generator's), and
# the corral/HAProxy ratios; for reload: wrk's errors and the seconds from the
# last reload until no old worker is left. Environment: CORRAL, SECS (5),
# RUNS (3), SKIP_CORRAL, SKIP_HAPROXY, PIN, KEEP_TMP as in bench/tcp.sh;
# CORRAL_SPLICE (true) is corral's `splice` (false: bodies copied, as
# HAProxy's are by default); NGINX_SENDFILE=on gives nginx `sendfile on`
# for every load.
set -euo pipefail

SECS=${SECS:-5}
RUNS=${RUNS:-3}
TESTS=${TESTS:-"ka close big bigsf cache reload"}
REUSE=${REUSE:-safe}
CLOSE_REUSE=${CLOSE_REUSE:-always}
RELOADS=${RELOADS:-20}
INTERVAL=${INTERVAL:-0.5}
RELOAD_SECS=${RELOAD_SECS:-14}
IDLE=${IDLE:-20}
MODE_REUSE=$REUSE
HAPROXY_EXTRA=""
CACHE_ON=0
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
from benchlib import COMMANDS, proc_stats, run_delay, sleeps

def cpu(root):
    """CPU seconds of root's processes, seconds they waited for a CPU, and
    how many times they slept."""
    tck = os.sysconf("SC_CLK_TCK")
    total, wait, slept = 0, 0, 0
    for p, r in proc_stats(root):
        total += int(r[11]) + int(r[12])
        wait += run_delay(p)
        slept += sleeps(p)
    return total / tck, wait, slept

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

def idle(port, n, flag):
    """n keep-alive connections, one request each, then idle until the
    file flag exists, then one more request each: prints how many of
    those failed."""
    import socket, time
    def ask(s):
        s.sendall(b"GET /small HTTP/1.1\r\nHost: b\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            c = s.recv(4096)
            if not c:
                raise OSError("closed")
            data += c
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)content-length:\s*(\d+)", head)
        want = int(m.group(1)) if m else 0
        while len(body) < want:
            c = s.recv(4096)
            if not c:
                raise OSError("closed")
            body += c
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError("status")
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(5)
        ask(s)
        conns.append(s)
    end = time.time() + 120
    while not os.path.exists(flag) and time.time() < end:
        time.sleep(0.1)
    failed = 0
    for s in conns:
        try:
            ask(s)
        except OSError:
            failed += 1
    print(failed)

cmd, a = sys.argv[1], sys.argv[2:]
if cmd in COMMANDS:
    COMMANDS[cmd](a)
elif cmd == "cpu":
    print("%.3f %.3f %d" % cpu(int(a[0])))
elif cmd == "wrk":
    wrk(a[0])
elif cmd == "idle":
    idle(int(a[0]), int(a[1]), a[2])
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
    hard-stop-after 60s
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    http-reuse $MODE_REUSE
    $HAPROXY_EXTRA
frontend fe
    bind 127.0.0.1:$2
    default_backend be
backend be
$( ((CACHE_ON)) && printf '    http-request cache-use c\n    http-response cache-store c\n' || true)
    server s1 127.0.0.1:$3
$( ((CACHE_ON)) && printf 'cache c\n    total-max-size 64\n    max-object-size 1048576\n    max-age 600\n' || true)
EOF
}

write_corral_cfg() { # FILE PORT BACKEND_PORT
    cat >"$1" <<EOF
[global]
workers = 1
maxconn = 20000
hard_stop_after = "60s"
log = "/dev/null"
[defaults]
mode = "http"
splice = ${CORRAL_SPLICE:-true}
timeout = { connect = "5s", client = "30s", server = "30s", http_keep_alive = "30s" }
[frontend.fe]
bind = "127.0.0.1:$2"
maxconn = 20000
default_backend = "be"
[backend.be]
http_reuse = "$MODE_REUSE"
$( ((CACHE_ON)) && printf 'cache = "c"\n' || true)
server.s1 = { addr = "127.0.0.1:$3" }
$( ((CACHE_ON)) && printf '[cache.c]\ntotal_max_size = "64MiB"\nmax_object_size = "1MiB"\nmax_age = "600s"\n' || true)
EOF
}

pin_cpus
choose_proxies
declare -A R L

P_NGINX=$(py freeports 1)
mkdir -p "$TMP/nginx/www"
head -c $((1 << 20)) /dev/urandom >"$TMP/nginx/www/big"
cp "$TMP/nginx/www/big" "$TMP/nginx/www/bigsf"
printf 'ok\n' >"$TMP/nginx/www/small"
head -c 4096 /dev/urandom >"$TMP/nginx/www/cached"
NGINX_HTTP="keepalive_requests 1000000;"
if [[ ${NGINX_SENDFILE:-off} = on ]]; then NGINX_HTTP+=" sendfile on;"; fi
nginx_conf "$P_NGINX" "$NGINX_HTTP" "root $TMP/nginx/www; location = /nginx_status { stub_status; } location = /cached { add_header Cache-Control \"max-age=600\"; } location = /bigsf { sendfile on; }"

log "corral vs HAProxy, HTTP mode, loopback"
log_setup "wrk and nginx"
log "  wrk -t1 -d${SECS}s x $RUNS runs (median), interleaved; http-reuse $REUSE (close load: $CLOSE_REUSE)"
warn_if_busy "makes these numbers noisy: compare ratios from a quiet machine"

# nginx's accepted connections so far (stub_status).
accepts() {
    curl -s "http://127.0.0.1:$P_NGINX/nginx_status" | awk 'NR == 3 { print $1 }'
}

# old_workers PID: the master's children beyond the one current worker.
old_workers() {
    local n
    n=$(pgrep -c -P "$1" 2>/dev/null || echo 0)
    echo $((n > 1 ? n - 1 : 0))
}

# reloads PID: RELOADS SIGUSR2s INTERVAL s apart, from 1 s in; then the
# seconds until the old workers are gone (15 at most), in RELOAD_GONE.
reloads() {
    local pid=$1 k t0
    sleep 1
    for ((k = 0; k < RELOADS; k++)); do
        kill -USR2 "$pid"
        sleep "$INTERVAL"
    done
    t0=$(date +%s.%N)
    while (($(old_workers "$pid") > 0)); do
        (($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print (b - a > 15) }'))) && break
        sleep 0.1
    done
    awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$(old_workers "$pid")" \
        'BEGIN { printf "%.1f%s\n", b - a, (n > 0 ? " (" n " still alive)" : "") }' >"$TMP/gone"
}

# one LOAD LABEL PORT PID RUN: one wrk run of LOAD against PORT.
one() {
    local load=$1 label=$2 port=$3 pid=$4 i=$5 out res c0 c1 w0 w1 v0 v1 n0 n1 args a0 a1 secs=$SECS rl=""
    case $load in
    ka) args=(-c50 "http://127.0.0.1:$port/small") ;;
    close) args=(-c50 -H "Connection: close" "http://127.0.0.1:$port/small") ;;
    big) args=(-c10 "http://127.0.0.1:$port/big") ;;
    bigsf) args=(-c10 "http://127.0.0.1:$port/bigsf") ;;
    cache) args=(-c50 "http://127.0.0.1:$port/cached") ;;
    reload) args=(-c50 "http://127.0.0.1:$port/small") secs=$RELOAD_SECS ;;
    esac
    out=$TMP/wrk-$load-$label-$i.txt
    a0=$(accepts)
    [[ -z $pid ]] || read -r c0 w0 v0 <<<"$(py cpu "$pid")"
    read -r n0 _ <<<"$(py cpu "$NGINX_PID")"
    local idle=""
    if [[ $load = reload && -n $pid ]]; then
        # IDLE keep-alive connections idle across the reloads, asked once
        # more at the end: an old worker that keeps them lingers.
        rm -f "$TMP/ask"
        py idle "$port" "$IDLE" "$TMP/ask" >"$TMP/idle-failed" &
        idle=$!
        reloads "$pid" &
        rl=$!
    fi
    timeout $((secs + 30)) "${ON_LOAD[@]}" wrk -t1 -d"${secs}s" --latency "${args[@]}" >"$out" 2>&1 || true
    [[ -z $pid ]] || read -r c1 w1 v1 <<<"$(py cpu "$pid")"
    read -r n1 _ <<<"$(py cpu "$NGINX_PID")"
    a1=$(accepts)
    if [[ -n $rl ]]; then
        wait "$rl" || true
        touch "$TMP/ask"
        wait "$idle" || true
        R[gone.$load.$label]+=" $(cat "$TMP/gone")"
        R[idle.$load.$label]=$((${R[idle.$load.$label]:-0} + $(cat "$TMP/idle-failed" 2>/dev/null || echo "$IDLE")))
    fi
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
    L[conns.$load.$label]+=" $(awk -v a="$a0" -v b="$a1" -v n="$n" 'BEGIN { printf "%.1f", (b - a - 1) / n * 1000 }')"
    local extra=""
    if [[ -n $pid ]]; then
        local c
        c=$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')
        L[cpureq.$load.$label]+=" $(awk -v c="$c" -v n="$n" 'BEGIN { printf "%.2f", c / n * 1e6 }')"
        L[cpugb.$load.$label]+=" $(awk -v c="$c" -v b="$bytes" 'BEGIN { printf "%.3f", c / (b / 1e9) }')"
        L[sleeps.$load.$label]+=" $(awk -v a="$v0" -v b="$v1" -v n="$n" 'BEGIN { printf "%.0f", (b - a) / n * 1000 }')"
        extra=", proxy CPU ${c} s, nginx CPU $(awk -v a="$n0" -v b="$n1" 'BEGIN { printf "%.2f", b - a }') s"
    fi
    log "  $load $label run $i: $(printf '%.0f' "$rate") req/s, $(printf '%.0f' "$mibs") MiB/s, p50 ${p50} ms, p99 ${p99} ms, $errs errors, $((a1 - a0 - 1)) server connections$extra${rl:+, old workers gone after $(cat "$TMP/gone") s}"
}

start_server nginx "$P_NGINX" nginx -p "$TMP/nginx/" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
NGINX_PID=$LAST_PID
for load in $TESTS; do
    log ""
    log "== $load"
    for ((run = 1; run <= RUNS; run++)); do
        MODE_REUSE=$REUSE
        [[ $load = close ]] && MODE_REUSE=$CLOSE_REUSE
        CACHE_ON=0
        [[ $load = cache ]] && CACHE_ON=1
        [[ $load = reload ]] || one "$load" direct "$P_NGINX" "" "$run"
        for p in "${PROXIES[@]}"; do
            HAPROXY_EXTRA=""
            start_proxy "$p" "$P_NGINX"
            one "$load" "$p" "$PROXY_PORT" "$PROXY_PID" "$run"
            stop_proxy
            if [[ $load = reload && $p = haproxy ]]; then
                HAPROXY_EXTRA="option idle-close-on-response"
                start_proxy "$p" "$P_NGINX"
                one "$load" haproxy-icr "$PROXY_PORT" "$PROXY_PID" "$run"
                stop_proxy
            fi
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
    if [[ $load = reload ]]; then
        for t in haproxy haproxy-icr corral; do
            log "  reload $t: wrk errors ${R[errs.$load.$t]:-0}, idle connections failed ${R[idle.$load.$t]:-0}/$((IDLE * RUNS)); seconds from the last reload until no old worker was left:${R[gone.$load.$t]:- -}"
        done
        continue
    fi
    for m in rate p50 p99 cpureq conns sleeps; do
        [[ $load = big* && $m = rate ]] && m=mibs
        [[ $load = big* && $m = cpureq ]] && m=cpugb
        printf '%-34s %10s %10s %10s %8s\n' "$load $m" "$(med "$m.$load.direct")" \
            "$(med "$m.$load.haproxy")" "$(med "$m.$load.corral")" "$(ratio "$m.$load")"
    done
    log "  errors: direct ${R[errs.$load.direct]:-0}, haproxy ${R[errs.$load.haproxy]:-0}, corral ${R[errs.$load.corral]:-0}"
done
