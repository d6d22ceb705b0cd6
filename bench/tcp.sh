#!/usr/bin/env bash
# bench/tcp.sh: corral and HAProxy 2.6 side by side in TCP mode, on loopback only.
#
#   bash bench/tcp.sh                       # everything, about 2-3 minutes
#   SECS=3 RUNS=1 bash bench/tcp.sh         # quicker, noisier
#   SKIP_CORRAL=1 bash bench/tcp.sh         # direct + HAProxy only
#   TESTS="tput mem" bash bench/tcp.sh      # choose among: tput rate mem
#
# Environment: CORRAL (binary, default target/release/corral under the repo root),
# SECS (5), RUNS (3), CONNS (wrk connections for the rate test, 50), IDLE (4000),
# TESTS ("tput rate mem"), SKIP_CORRAL, SKIP_HAPROXY, PIN (1: proxy on the last CPU,
# load on the others; 0: no pinning), KEEP_TMP=1 to keep configs/logs.
#
# The proxies run one at a time, each freshly started for each run, runs
# interleaved. Only 127.0.0.1 is used. See bench/README.md for what is measured
# and the targets.
set -euo pipefail

SECS=${SECS:-5}
RUNS=${RUNS:-3}
CONNS=${CONNS:-50}
IDLE=${IDLE:-4000}
TESTS=${TESTS:-"tput rate mem"}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- tools
need_tools haproxy iperf3 wrk nginx:nginx-light python3

if [[ $SKIP_CORRAL != 1 && ! -x $CORRAL ]]; then
    build_corral "no corral binary at $CORRAL"
    [[ -x $CORRAL ]] || die "no corral binary at $CORRAL after cargo build --release (set CORRAL=path)"
fi

# The idle-connection test needs ~8000 fds in the proxy and 4000 in each python3 side.
raise_fd_limit
(( $(ulimit -n) >= IDLE * 2 + 100 )) || die "fd limit $(ulimit -n) is too low for IDLE=$IDLE"

make_workdir corral-bench

# ---------------------------------------------------------------- python helpers
# (the shared ones are in bench/lib.sh)
cat >"$TMP/h.py" <<'PYEOF'
import json, os, re, socket, statistics, sys, time
from benchlib import COMMANDS, proc_stats, procs, run_delay, sleeps

def cpu(root):
    """CPU seconds (utime + stime) of root's processes, the seconds their
    threads spent runnable but waiting for a CPU (schedstat run_delay), and
    how many times they slept."""
    tck = os.sysconf("SC_CLK_TCK")
    total, wait, slept = 0, 0, 0
    for p, r in proc_stats(root):
        total += int(r[11]) + int(r[12])
        wait += run_delay(p)
        slept += sleeps(p)
    return total / tck, wait, slept

def rss(root):
    total, parts = 0, []
    for p in procs(root):
        try:
            with open(f"/proc/{p}/status") as f:
                st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        except OSError:
            continue
        kb = int(st.get("VmRSS", "0 kB").split()[0])
        total += kb
        parts.append(f"{st['Name'].strip()}[{p}]={kb}")
    return total, parts

def iperf(fn):
    txt = open(fn).read()
    try:
        j = json.loads(txt)
    except ValueError:
        sys.exit("iperf3 gave no JSON: " + txt.strip().replace("\n", " ")[:300])
    if j.get("error"):
        sys.exit("iperf3: " + j["error"])
    r = j["end"]["sum_received"]
    print(r["bits_per_second"], r["bytes"])

def wrk(fn):
    txt = open(fn).read()
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", txt)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", txt)
    if not m or not rate:
        sys.exit("wrk gave no result: " + txt.strip().replace("\n", " ")[:300])
    errs = 0
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
    if e:
        errs += sum(int(x) for x in e.groups())
    n2 = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
    if n2:
        errs += int(n2.group(1))
    print(rate.group(1), m.group(1), errs)

def idle(port, n, ready):
    """Open n connections through the proxy, check each one end to end with a
    1-byte echo, report readiness, then hold them idle until killed."""
    t0 = time.time()
    socks = []
    for i in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        except OSError as e:
            sys.exit(f"connection {i + 1}/{n} failed: {e}")
    for s in socks:
        s.sendall(b"x")
    for i, s in enumerate(socks):
        try:
            b = s.recv(1)
        except OSError as e:
            sys.exit(f"connection {i + 1}/{n}: no echo through the proxy: {e}")
        if b != b"x":
            sys.exit(f"connection {i + 1}/{n}: closed by the proxy (got {b!r})")
    with open(ready + ".tmp", "w") as f:
        f.write(f"{n} {time.time() - t0:.2f}\n")
    os.rename(ready + ".tmp", ready)
    while True:
        time.sleep(3600)

cmd, a = sys.argv[1], sys.argv[2:]
if cmd in COMMANDS:  # procs, affinity, busy, freeports, waitlisten, waitfile, waitgone, echo...
    COMMANDS[cmd](a)
elif cmd == "cpu":
    print("%.3f %.3f %d" % cpu(int(a[0])))
elif cmd == "rss":
    t, parts = rss(int(a[0]))
    print(t, " ".join(parts))
elif cmd == "iperf":
    iperf(a[0])
elif cmd == "wrk":
    wrk(a[0])
elif cmd == "median":
    print(statistics.median(float(x) for x in a))
elif cmd == "idle":
    idle(int(a[0]), int(a[1]), a[2])
else:
    sys.exit("unknown helper " + cmd)
PYEOF

# ---------------------------------------------------------------- proxies
# Both in TCP mode with one worker thread, maxconn 20000 (frontend too), timeouts
# connect 5s, client and server 1h, splice forced on.
write_haproxy_cfg() { # FILE PORT BACKEND_PORT
    haproxy_cfg "$@" 20000 1h "" \
        "# forced splice: splice-auto never engages on loopback (reference, section 8)
option splice-request
option splice-response" \
        "maxconn 20000"
}

write_corral_cfg() { # FILE PORT BACKEND_PORT
    corral_cfg "$@" 20000 1h "" "" "maxconn = 20000" "splice = true"
}

pin_cpus
choose_proxies

declare -A R # results: R[metric.target]

f2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }

# ---------------------------------------------------------------- header
log "corral vs HAProxy, TCP mode, loopback"
log_setup "load generators and backends"
log "  iperf3 -t $SECS x $RUNS runs (median); wrk -t1 -c$CONNS -d${SECS}s x $RUNS runs; $IDLE idle connections"
log "  workdir $TMP"
warn_if_busy "makes these numbers noisy: compare ratios from a quiet machine"

# Runs are interleaved (direct, haproxy, corral, direct, haproxy, ...) so that any
# drift of the machine hits every target alike; each proxy run uses a freshly
# started proxy, stopped right after, so two proxies never run at the same time.
declare -A L # per-run values, space separated: L[metric.target]

# waited W0 W1: ", waited X s for a CPU" when the proxy was runnable but kept off
# its CPU (by other processes) for a noticeable time.
waited() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b - a >= 0.05) printf ", waited %.2f s for a CPU", b - a }'
}
addf() { awk -v a="${1:-0}" -v b="$2" 'BEGIN { printf "%.6f", a + b }'; }

# run_targets FUNC BACKEND_PORT RUN: FUNC LABEL PORT PID RUN for direct, then each proxy.
run_targets() {
    local fn=$1 be=$2 i=$3 p
    [[ ${R[fail.$fn.direct]:-} ]] || "$fn" direct "$be" "" "$i"
    for p in "${PROXIES[@]}"; do
        [[ ${R[fail.$fn.$p]:-} ]] && continue
        start_proxy "$p" "$be"
        "$fn" "$p" "$PROXY_PORT" "$PROXY_PID" "$i"
        stop_proxy
    done
}

# run_rounds FUNC NAME PORT CMD...: start the backend CMD (NAME, on PORT) on the load
# CPUs, run_targets FUNC RUNS times against it, stop it.
run_rounds() {
    local fn=$1 name=$2 port=$3 pid run
    shift 3
    start_server "$name" "$port" "$@"
    pid=$LAST_PID
    for ((run = 1; run <= RUNS; run++)); do run_targets "$fn" "$port" "$run"; done
    stop_tree "$pid"
}

# ---------------------------------------------------------------- 1. throughput
# tput_one LABEL PORT PID RUN: one iperf3 run; Gbit/s into L[tput.LABEL]; with a PID,
# bytes and CPU seconds of PID's processes into R[bytes.LABEL] and R[cpu.LABEL].
tput_one() {
    local label=$1 port=$2 pid=$3 i=$4 out res bps bytes c0 c1 w0 w1 v0 v1 g
    out=$TMP/iperf-$label-$i.json
    [[ -z $pid ]] || read -r c0 w0 v0 <<<"$(py cpu "$pid")"
    timeout $((SECS + 30)) "${ON_LOAD[@]}" iperf3 -c 127.0.0.1 -p "$port" -t "$SECS" -J --connect-timeout 5000 >"$out" 2>&1 || true
    [[ -z $pid ]] || read -r c1 w1 v1 <<<"$(py cpu "$pid")"
    if ! res=$(py iperf "$out" 2>&1); then
        log "  $label run $i/$RUNS: FAILED: $res"
        R[fail.tput_one.$label]=1
        return 0
    fi
    read -r bps bytes <<<"$res"
    g=$(awk -v b="$bps" 'BEGIN { printf "%.2f", b / 1e9 }')
    L[tput.$label]+=" $g"
    if [[ -n $pid ]]; then
        R[wait.$label]=$(addf "${R[wait.$label]:-}" "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')")
        R[bytes.$label]=$(addf "${R[bytes.$label]:-}" "$bytes")
        R[tsleeps.$label]=$((${R[tsleeps.$label]:-0} + v1 - v0))
        R[cpu.$label]=$(addf "${R[cpu.$label]:-}" "$(awk -v b="$c0" -v c="$c1" 'BEGIN { print c - b }')")
        log "  $label run $i/$RUNS: $g Gbit/s ($(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e9 }') GB, proxy CPU $(awk -v b="$c0" -v c="$c1" 'BEGIN { printf "%.2f", c - b }') s$(waited "$w0" "$w1"))"
    else
        log "  $label run $i/$RUNS: $g Gbit/s"
    fi
}

if want tput; then
    log ""
    log "== 1. throughput (iperf3, one stream, median of $RUNS x ${SECS}s)"
    P_IPERF=$(py freeports 1)
    run_rounds tput_one iperf3 "$P_IPERF" iperf3 -s -B 127.0.0.1 -p "$P_IPERF"
    for t in direct "${PROXIES[@]}"; do
        if [[ ${R[fail.tput_one.$t]:-} ]]; then R[tput.$t]=ERR; continue; fi
        # shellcheck disable=SC2086
        R[tput.$t]=$(f2 "$(py median ${L[tput.$t]})")
        [[ $t = direct ]] ||
            R[cpugb.$t]=$(awk -v c="${R[cpu.$t]}" -v b="${R[bytes.$t]}" 'BEGIN { printf "%.3f", c / (b / 1e9) }')
        [[ $t = direct ]] ||
            R[sleepgb.$t]=$(awk -v s="${R[tsleeps.$t]}" -v b="${R[bytes.$t]}" 'BEGIN { printf "%.0f", s / (b / 1e9) }')
    done
fi

# ---------------------------------------------------------------- 2. connection rate
# A short connection per request: wrk sends "Connection: close" and nginx has
# keep-alive off, so each request is connect, ~40 bytes up, ~150 down, close.
# rate_one LABEL PORT PID RUN: conn/s into L[rate.LABEL], connections and CPU into R.
rate_one() {
    local label=$1 port=$2 pid=$3 i=$4 out res rate n errs c0 c1 w0 w1 v0 v1
    out=$TMP/wrk-$label-$i.txt
    [[ -z $pid ]] || read -r c0 w0 v0 <<<"$(py cpu "$pid")"
    timeout $((SECS + 30)) "${ON_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${SECS}s" -H 'Connection: close' \
        "http://127.0.0.1:$port/" >"$out" 2>&1 || true
    [[ -z $pid ]] || read -r c1 w1 v1 <<<"$(py cpu "$pid")"
    if ! res=$(py wrk "$out" 2>&1); then
        log "  $label run $i/$RUNS: FAILED: $res"
        R[fail.rate_one.$label]=1
        return 0
    fi
    read -r rate n errs <<<"$res"
    L[rate.$label]+=" $rate"
    R[conns.$label]=$((${R[conns.$label]:-0} + n))
    R[rateerr.$label]=$((${R[rateerr.$label]:-0} + errs))
    if [[ -n $pid ]]; then
        R[wait.$label]=$(addf "${R[wait.$label]:-}" "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')")
        R[cpur.$label]=$(addf "${R[cpur.$label]:-}" "$(awk -v b="$c0" -v c="$c1" 'BEGIN { print c - b }')")
        R[rsleeps.$label]=$((${R[rsleeps.$label]:-0} + v1 - v0))
        log "  $label run $i/$RUNS: $(printf '%.0f' "$rate") conn/s ($n conns, $errs errors, proxy CPU $(awk -v b="$c0" -v c="$c1" 'BEGIN { printf "%.2f", c - b }') s$(waited "$w0" "$w1"))"
    else
        log "  $label run $i/$RUNS: $(printf '%.0f' "$rate") conn/s ($n conns, $errs errors)"
    fi
}

if want rate; then
    log ""
    log "== 2. connection rate (wrk -t1 -c$CONNS, Connection: close, nginx backend, median of $RUNS x ${SECS}s)"
    P_NGINX=$(py freeports 1)
    nginx_conf "$P_NGINX" "keepalive_timeout 0;" 'location / { return 200 "ok\n"; }'
    run_rounds rate_one nginx "$P_NGINX" nginx -p "$TMP/nginx/" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
    for t in direct "${PROXIES[@]}"; do
        if [[ ${R[fail.rate_one.$t]:-} ]]; then R[rate.$t]=ERR; continue; fi
        # shellcheck disable=SC2086
        R[rate.$t]=$(printf '%.0f' "$(py median ${L[rate.$t]})")
        if [[ $t != direct ]] && ((${R[conns.$t]:-0} > 0)); then
            R[cpuconn.$t]=$(awk -v c="${R[cpur.$t]}" -v n="${R[conns.$t]}" 'BEGIN { printf "%.1f", c / n * 1e6 }')
            R[sleepconn.$t]=$(awk -v s="${R[rsleeps.$t]}" -v n="${R[conns.$t]}" 'BEGIN { printf "%.2f", s / n }')
        fi
    done
fi

# ---------------------------------------------------------------- 3. memory
if want mem; then
    log ""
    log "== 3. memory: RSS of all the proxy's processes with $IDLE idle proxied connections"
    P_HOLD=$(py freeports 1)
    # the backend: python3 echo server (bench/lib.sh) that holds the connections
    start_server holder "$P_HOLD" python3 "$TMP/h.py" echo "$P_HOLD"
    HOLD_PID=$LAST_PID
    for p in "${PROXIES[@]}"; do
        start_proxy "$p" "$P_HOLD"
        sleep 0.5
        read -r rss0 parts0 < <(py rss "$PROXY_PID")
        ready=$TMP/idle-$p.ready
        start_bg "idle-$p" "${ON_LOAD[@]}" python3 "$TMP/h.py" idle "$PROXY_PORT" "$IDLE" "$ready"
        IDLE_PID=$LAST_PID
        if py waitfile "$ready" 60 "$IDLE_PID" "$PROXY_PID"; then
            sleep 2 # let the proxy settle
            read -r rss1 parts1 < <(py rss "$PROXY_PID")
            R[rss.$p]=$rss1
            R[rss0.$p]=$rss0
            log "  $p: idle $rss0 KB ($parts0)"
            log "  $p: with $IDLE connections (opened and echoed in $(cut -d' ' -f2 "$ready") s): $rss1 KB ($parts1)," \
                "$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }') bytes/connection"
        else
            R[rss.$p]=ERR
            alive "$PROXY_PID" || log "  $p: the proxy died during the idle test (see $TMP/$p.log)"
            log "  $p: FAILED to hold $IDLE connections: $(tail -n 3 "$TMP/idle-$p.log" 2>/dev/null | tr '\n' ' ')"
        fi
        stop_tree "$IDLE_PID"
        stop_proxy
    done
    stop_tree "$HOLD_PID"
fi

# ---------------------------------------------------------------- summary
val() { printf '%s' "${R[$1]:--}"; }
ratio() { # METRIC: corral / haproxy
    local c=${R[$1.corral]:-} h=${R[$1.haproxy]:-}
    if [[ $c =~ ^[0-9.]+$ && $h =~ ^[0-9.]+$ ]] && awk -v h="$h" 'BEGIN { exit !(h > 0) }'; then
        awk -v c="$c" -v h="$h" 'BEGIN { printf "%.2f", c / h }'
    else
        printf -- '-'
    fi
}
verdict() { # RATIO OP(ge|le) TARGET
    local r=$1 op=$2 t=$3
    [[ $r =~ ^[0-9.]+$ ]] || { printf -- '-'; return; }
    # "close": missed by less than 3%, which is within the run-to-run noise
    awk -v r="$r" -v op="$op" -v t="$t" 'BEGIN {
        if (op == "ge") v = (r >= t) ? "ok" : (r >= t * 0.97) ? "close" : "MISSED"
        else v = (r <= t) ? "ok" : (r <= t * 1.03) ? "close" : "MISSED"
        printf "%s", v }'
}
row() { # LABEL METRIC HAS_DIRECT OP [TARGET, default 1]
    local r t=${5:-1}
    r=$(ratio "$2")
    if [[ $3 = 1 ]]; then d=$(val "$2.direct"); else d=-; fi
    printf '%-30s %10s %10s %10s %10s   %-5s %s\n' "$1" "$d" "$(val "$2.haproxy")" "$(val "$2.corral")" \
        "$r" "$([[ $4 = ge ]] && echo ">=$t" || echo "<=$t")" "$(verdict "$r" "$4" "$t")"
}

log ""
log "== summary ($(nproc) cpus; HAProxy 2.6 nbthread 1 forced splice, corral workers = 1 splice = true)"
printf '%-30s %10s %10s %10s %10s   %s\n' metric direct haproxy corral corral/hap target
want tput && row "throughput Gbit/s" tput 1 ge
want tput && row "proxy CPU s/GB" cpugb 0 le
want rate && row "short connections/s" rate 1 ge
want rate && row "proxy CPU us/connection" cpuconn 0 le 0.9
want mem && row "RSS KB, $IDLE idle conns" rss 0 le
if want rate; then
    errs=""
    for k in direct haproxy corral; do
        [[ -z ${R[rateerr.$k]:-} || ${R[rateerr.$k]} = 0 ]] || errs+=" $k=${R[rateerr.$k]}"
    done
    [[ -z $errs ]] || log "wrk errors (socket errors + non-2xx):$errs"
fi
# Not targets: each sleep of the proxy is a wakeup its waker pays for (a
# cross-CPU interrupt, a VM exit in a VM), on the load's CPU here.
want tput && log "proxy sleeps per GB: haproxy $(val sleepgb.haproxy), corral $(val sleepgb.corral)"
want rate && log "proxy sleeps per connection: haproxy $(val sleepconn.haproxy), corral $(val sleepconn.corral)"
waits=""
for k in haproxy corral; do
    [[ -z ${R[wait.$k]:-} ]] || waits+=" $k $(f2 "${R[wait.$k]}") s,"
done
if [[ -n $waits ]]; then
    log "time the proxy was runnable but waited for a CPU, over all its runs:${waits%,}"
    log "  (more than a few tenths of a second: other processes shared its CPU and its numbers are low)"
fi
