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
SKIP_CORRAL=${SKIP_CORRAL:-0}
SKIP_HAPROXY=${SKIP_HAPROXY:-0}
PIN=${PIN:-1}
export PATH="$PATH:/usr/sbin:/sbin"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CORRAL=${CORRAL:-target/release/corral}
[[ $CORRAL = /* ]] || CORRAL="$ROOT/$CORRAL"

log() { printf '%s\n' "$*"; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
need=()
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if ((${#need[@]})); then
    [[ $(id -u) = 0 ]] || die "missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root"
    log "installing ${need[*]} ..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
for t in haproxy iperf3 wrk nginx python3; do
    command -v "$t" >/dev/null 2>&1 || die "$t is still missing after installing"
done

if [[ $SKIP_CORRAL != 1 && ! -x $CORRAL ]]; then
    log "no corral binary at $CORRAL: building it (cargo build --release) ..."
    (cd "$ROOT" && cargo build --release) || die "cargo build --release failed"
    [[ -x $CORRAL ]] || die "no corral binary at $CORRAL after cargo build --release (set CORRAL=path)"
fi

# The idle-connection test needs ~8000 fds in the proxy and 4000 in each python3 side.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) >= IDLE * 2 + 100 )) || die "fd limit $(ulimit -n) is too low for IDLE=$IDLE"

TMP=$(mktemp -d /tmp/corral-bench.XXXXXX)
STARTED=()

# ---------------------------------------------------------------- python helpers
cat >"$TMP/h.py" <<'PYEOF'
import json, os, re, selectors, socket, statistics, sys, time

def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    return rest  # rest[0]=state rest[1]=ppid rest[2]=pgrp rest[11]=utime rest[12]=stime

def procs(root):
    """root, its descendants and its process group (it is started with setsid), no zombies."""
    kids, group, state = {}, set(), {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            r = stat(d)
        except OSError:
            continue
        p = int(d)
        state[p] = r[0]
        kids.setdefault(int(r[1]), []).append(p)
        if int(r[2]) == root:
            group.add(p)
    out, todo = set(), [root]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo += kids.get(p, [])
    out |= group
    return sorted(p for p in out if state.get(p) not in (None, "Z", "X"))

def cpu(root):
    """CPU seconds (utime + stime) of root's processes, and the seconds their
    threads spent runnable but waiting for a CPU (schedstat run_delay)."""
    tck = os.sysconf("SC_CLK_TCK")
    total, wait = 0, 0
    for p in procs(root):
        try:
            r = stat(p)
        except OSError:
            continue
        total += int(r[11]) + int(r[12])
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    wait += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / tck, wait / 1e9

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

def listening(port):
    want = f"{port:04X}"
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(fn).read().splitlines()[1:]
        except OSError:
            continue
        for l in lines:
            f = l.split()
            if f[3] == "0A" and f[1].rsplit(":", 1)[1] == want:
                return True
    return False

def freeports(n):
    """n free ports below the ephemeral range, so that the churn of short
    connections cannot take one between now and the server's bind()."""
    import random
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    ports = []
    while len(ports) < n:
        p = random.randrange(10000, max(low, 10001))
        if p in ports:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            ports.append(p)
        except OSError:
            pass
        finally:
            s.close()
    return ports

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

def holder(port):
    """Backend for the idle test: accepts and holds connections, echoes what it gets."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4096)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                while True:
                    try:
                        c, _ = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        time.sleep(0.01)
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, 1)
                continue
            c = key.fileobj
            try:
                d = c.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                d = b""
            try:
                if d:
                    c.send(d)
                    continue
            except OSError:
                pass
            sel.unregister(c)
            c.close()

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

def wait(what, timeout, pids, port=None, path=None):
    """Poll every 50 ms: 0 when ready, 2 when one of pids has no live process left, 3 on timeout."""
    end = time.time() + timeout
    while True:
        if what == "gone":
            if not procs(pids[0]):
                return 0
        else:
            ready = listening(port) if what == "listen" else os.path.exists(path)
            dead = any(not procs(p) for p in pids)
            if dead:
                return 2
            if ready:
                return 0
        if time.time() >= end:
            return 3
        time.sleep(0.05)

cmd, a = sys.argv[1], sys.argv[2:]
if cmd == "procs":
    print(" ".join(map(str, procs(int(a[0])))))
elif cmd == "cpu":
    print("%.3f %.3f" % cpu(int(a[0])))
elif cmd == "rss":
    t, parts = rss(int(a[0]))
    print(t, " ".join(parts))
elif cmd == "affinity":  # distinct Cpus_allowed_list of the processes
    seen = set()
    for p in procs(int(a[0])):
        try:
            for l in open(f"/proc/{p}/status"):
                if l.startswith("Cpus_allowed_list:"):
                    seen.add(l.split(":", 1)[1].strip())
        except OSError:
            pass
    print(" ".join("cpus " + x for x in sorted(seen)))
elif cmd == "busy":  # % of all CPUs busy over the next a[0] seconds
    def sample():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(f), f[3] + f[4]
    t0, i0 = sample()
    time.sleep(float(a[0]))
    t1, i1 = sample()
    print(round(100 * (1 - (i1 - i0) / max(t1 - t0, 1))))
elif cmd == "listening":
    sys.exit(0 if listening(int(a[0])) else 1)
elif cmd == "freeports":
    print(" ".join(map(str, freeports(int(a[0])))))
elif cmd == "iperf":
    iperf(a[0])
elif cmd == "wrk":
    wrk(a[0])
elif cmd == "median":
    print(statistics.median(float(x) for x in a))
elif cmd == "waitlisten":  # PORT TIMEOUT PID...
    sys.exit(wait("listen", float(a[1]), [int(x) for x in a[2:]], port=int(a[0])))
elif cmd == "waitfile":  # FILE TIMEOUT PID...
    sys.exit(wait("file", float(a[1]), [int(x) for x in a[2:]], path=a[0]))
elif cmd == "waitgone":  # PID TIMEOUT
    sys.exit(wait("gone", float(a[1]), [int(a[0])]))
elif cmd == "holder":
    holder(int(a[0]))
elif cmd == "idle":
    idle(int(a[0]), int(a[1]), a[2])
else:
    sys.exit("unknown helper " + cmd)
PYEOF
py() { python3 "$TMP/h.py" "$@"; }

# ---------------------------------------------------------------- processes
# start_bg NAME CMD...: start CMD in its own session (pgid = pid), log in $TMP/NAME.log.
start_bg() {
    local name=$1; shift
    setsid "$@" </dev/null >"$TMP/$name.log" 2>&1 &
    LAST_PID=$!
    STARTED+=("$LAST_PID")
}

alive() { [[ -n $(py procs "$1" 2>/dev/null) ]]; }

# stop_tree PID: SIGTERM to PID, then wait up to 5 s for it and its processes to go,
# then SIGKILL whatever is left of its group and descendants.
stop_tree() {
    local pid=$1 left
    kill -TERM "$pid" 2>/dev/null || true
    py waitgone "$pid" 5 || true
    left=$(py procs "$pid" 2>/dev/null || true)
    if [[ -n $left ]]; then
        kill -KILL -- "-$pid" 2>/dev/null || true
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    local keep=()
    for p in "${STARTED[@]}"; do [[ $p = "$pid" ]] || keep+=("$p"); done
    STARTED=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    for pid in "${STARTED[@]+"${STARTED[@]}"}"; do stop_tree "$pid"; done
    if [[ ${KEEP_TMP:-0} = 1 || $rc != 0 ]]; then
        log "configs and logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_listen PORT PID NAME: until something listens on 127.0.0.1:PORT (10 s at most).
# Checked in /proc/net/tcp, so no probe connection reaches the backend.
wait_listen() {
    local port=$1 pid=$2 name=$3
    py waitlisten "$port" 10 "$pid" && return 0
    log "---- last lines of $name's output ($TMP/$name.log):" >&2
    tail -n 30 "$TMP/$name.log" >&2 || true
    if alive "$pid"; then
        die "$name did not listen on 127.0.0.1:$port within 10 s"
    fi
    die "$name did not start (it exited; output above)"
}

# ---------------------------------------------------------------- proxies
write_haproxy_cfg() { # FILE PORT BACKEND_PORT
    cat >"$1" <<EOF
global
    nbthread 1
    maxconn 20000
    # maxconn 20000 wants ~50000 fds and this machine allows 20000 per process:
    # without this HAProxy 2.6 refuses to start ("Cannot raise FD limit").
    no strict-limits

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    # forced splice: splice-auto never engages on loopback (reference, section 8)
    option splice-request
    option splice-response

frontend fe
    bind 127.0.0.1:$2
    maxconn 20000
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

[frontend.fe]
bind = "127.0.0.1:$2"
mode = "tcp"
maxconn = 20000
default_backend = "be"
timeout = { client = "1h" }

[backend.be]
mode = "tcp"
splice = true
timeout = { connect = "5s", server = "1h" }
server.s1 = { addr = "127.0.0.1:$3" }
EOF
}

# start_proxy KIND BACKEND_PORT: sets PROXY_PID and PROXY_PORT.
start_proxy() {
    local kind=$1 be=$2 cfg
    PROXY_PORT=$(py freeports 1)
    case $kind in
    haproxy)
        cfg=$TMP/haproxy.cfg
        write_haproxy_cfg "$cfg" "$PROXY_PORT" "$be"
        haproxy -c -q -f "$cfg" >"$TMP/haproxy-check.log" 2>&1 ||
            { cat "$TMP/haproxy-check.log" >&2; die "HAProxy rejected its config $cfg"; }
        # master-worker, like corral (and like Debian's systemd unit, -Ws)
        start_bg haproxy "${ON_PROXY[@]}" haproxy -W -db -f "$cfg"
        ;;
    corral)
        cfg=$TMP/corral.toml
        write_corral_cfg "$cfg" "$PROXY_PORT" "$be"
        "$CORRAL" -c -f "$cfg" >"$TMP/corral-check.log" 2>&1 ||
            { cat "$TMP/corral-check.log" >&2; die "corral -c rejected its config $cfg"; }
        start_bg corral "${ON_PROXY[@]}" "$CORRAL" -f "$cfg"
        ;;
    esac
    PROXY_PID=$LAST_PID
    wait_listen "$PROXY_PORT" "$PROXY_PID" "$kind"
    sleep 0.5 # let the workers come up behind the listener
    alive "$PROXY_PID" || die "$kind exited right after starting (see $TMP/$kind.log)"
    # A proxy that sets its own CPU affinity would undo the pinning: say so once.
    if ((${#ON_PROXY[@]})) && [[ -z ${R[affinity.$kind]:-} ]]; then
        R[affinity.$kind]=$(py affinity "$PROXY_PID")
        [[ ${R[affinity.$kind]} = *"cpus $PROXY_CPUS"* ]] ||
            log "  note: $kind's processes run on other CPUs than $PROXY_CPUS: ${R[affinity.$kind]}"
    fi
}

stop_proxy() {
    stop_tree "$PROXY_PID"
    PROXY_PID=
}

# CPU pinning (PIN=1, the default, with 2 or more CPUs): the proxy gets the last CPU
# to itself, everything else (load generators, backends) the others. Unpinned, 3
# busy processes on 2 CPUs land wherever the scheduler puts them, and runs of the
# same binary varied by 2x; pinned they agree within a few percent.
ON_PROXY=() ON_LOAD=()
NCPU=$(nproc)
if [[ $PIN = 1 ]] && ((NCPU >= 2)); then
    PROXY_CPUS=${PROXY_CPUS:-$((NCPU - 1))}
    LOAD_CPUS=${LOAD_CPUS:-0-$((NCPU - 2))}
    command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is missing; or run with PIN=0"
    ON_PROXY=(taskset -c "$PROXY_CPUS")
    ON_LOAD=(taskset -c "$LOAD_CPUS")
fi

PROXIES=()
[[ $SKIP_HAPROXY = 1 ]] || PROXIES+=(haproxy)
[[ $SKIP_CORRAL = 1 ]] || PROXIES+=(corral)

declare -A R # results: R[metric.target]

f2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }

# ---------------------------------------------------------------- header
log "corral vs HAProxy, TCP mode, loopback"
log "  machine: $(nproc) cpus, $(uname -sr)"
log "  $(haproxy -v 2>/dev/null | head -n 1)"
if [[ $SKIP_CORRAL != 1 ]]; then
    log "  corral: $CORRAL ($("$CORRAL" -v 2>&1 | head -n 1 || true))"
fi
if ((${#ON_PROXY[@]})); then
    log "  pinned: proxy on CPU $PROXY_CPUS, load generators and backends on CPU $LOAD_CPUS (PIN=0 to disable)"
else
    log "  not pinned"
fi
log "  iperf3 -t $SECS x $RUNS runs (median); wrk -t1 -c$CONNS -d${SECS}s x $RUNS runs; $IDLE idle connections"
log "  workdir $TMP"
busy=$(py busy 1)
if ((busy > 10)); then
    log "  WARNING: the machine is already ${busy}% busy before the benchmark starts (load: $(cut -d' ' -f1-3 /proc/loadavg));"
    log "           other work on it (builds, tests) makes these numbers noisy: compare ratios from a quiet machine"
fi

want() { [[ " $TESTS " = *" $1 "* ]]; }

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

# ---------------------------------------------------------------- 1. throughput
# tput_one LABEL PORT PID RUN: one iperf3 run; Gbit/s into L[tput.LABEL]; with a PID,
# bytes and CPU seconds of PID's processes into R[bytes.LABEL] and R[cpu.LABEL].
tput_one() {
    local label=$1 port=$2 pid=$3 i=$4 out res bps bytes c0 c1 w0 w1 g
    out=$TMP/iperf-$label-$i.json
    [[ -z $pid ]] || read -r c0 w0 <<<"$(py cpu "$pid")"
    timeout $((SECS + 30)) "${ON_LOAD[@]}" iperf3 -c 127.0.0.1 -p "$port" -t "$SECS" -J --connect-timeout 5000 >"$out" 2>&1 || true
    [[ -z $pid ]] || read -r c1 w1 <<<"$(py cpu "$pid")"
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
    start_bg iperf3 "${ON_LOAD[@]}" iperf3 -s -B 127.0.0.1 -p "$P_IPERF"
    IPERF_PID=$LAST_PID
    wait_listen "$P_IPERF" "$IPERF_PID" iperf3
    for ((run = 1; run <= RUNS; run++)); do run_targets tput_one "$P_IPERF" "$run"; done
    stop_tree "$IPERF_PID"
    for t in direct "${PROXIES[@]}"; do
        if [[ ${R[fail.tput_one.$t]:-} ]]; then R[tput.$t]=ERR; continue; fi
        # shellcheck disable=SC2086
        R[tput.$t]=$(f2 "$(py median ${L[tput.$t]})")
        [[ $t = direct ]] ||
            R[cpugb.$t]=$(awk -v c="${R[cpu.$t]}" -v b="${R[bytes.$t]}" 'BEGIN { printf "%.3f", c / (b / 1e9) }')
    done
fi

# ---------------------------------------------------------------- 2. connection rate
# A short connection per request: wrk sends "Connection: close" and nginx has
# keep-alive off, so each request is connect, ~40 bytes up, ~150 down, close.
# rate_one LABEL PORT PID RUN: conn/s into L[rate.LABEL], connections and CPU into R.
rate_one() {
    local label=$1 port=$2 pid=$3 i=$4 out res rate n errs c0 c1 w0 w1
    out=$TMP/wrk-$label-$i.txt
    [[ -z $pid ]] || read -r c0 w0 <<<"$(py cpu "$pid")"
    timeout $((SECS + 30)) "${ON_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${SECS}s" -H 'Connection: close' \
        "http://127.0.0.1:$port/" >"$out" 2>&1 || true
    [[ -z $pid ]] || read -r c1 w1 <<<"$(py cpu "$pid")"
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
        log "  $label run $i/$RUNS: $(printf '%.0f' "$rate") conn/s ($n conns, $errs errors, proxy CPU $(awk -v b="$c0" -v c="$c1" 'BEGIN { printf "%.2f", c - b }') s$(waited "$w0" "$w1"))"
    else
        log "  $label run $i/$RUNS: $(printf '%.0f' "$rate") conn/s ($n conns, $errs errors)"
    fi
}

if want rate; then
    log ""
    log "== 2. connection rate (wrk -t1 -c$CONNS, Connection: close, nginx backend, median of $RUNS x ${SECS}s)"
    P_NGINX=$(py freeports 1)
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
user root;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_timeout 0;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    server {
        listen 127.0.0.1:$P_NGINX backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
    start_bg nginx "${ON_LOAD[@]}" nginx -p "$TMP/nginx/" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
    NGINX_PID=$LAST_PID
    wait_listen "$P_NGINX" "$NGINX_PID" nginx
    for ((run = 1; run <= RUNS; run++)); do run_targets rate_one "$P_NGINX" "$run"; done
    stop_tree "$NGINX_PID"
    for t in direct "${PROXIES[@]}"; do
        if [[ ${R[fail.rate_one.$t]:-} ]]; then R[rate.$t]=ERR; continue; fi
        # shellcheck disable=SC2086
        R[rate.$t]=$(printf '%.0f' "$(py median ${L[rate.$t]})")
        if [[ $t != direct ]] && ((${R[conns.$t]:-0} > 0)); then
            R[cpuconn.$t]=$(awk -v c="${R[cpur.$t]}" -v n="${R[conns.$t]}" 'BEGIN { printf "%.1f", c / n * 1e6 }')
        fi
    done
fi

# ---------------------------------------------------------------- 3. memory
if want mem; then
    log ""
    log "== 3. memory: RSS of all the proxy's processes with $IDLE idle proxied connections"
    P_HOLD=$(py freeports 1)
    start_bg holder "${ON_LOAD[@]}" python3 "$TMP/h.py" holder "$P_HOLD"
    HOLD_PID=$LAST_PID
    wait_listen "$P_HOLD" "$HOLD_PID" holder
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
verdict() { # RATIO OP(ge|le)
    local r=$1 op=$2
    [[ $r =~ ^[0-9.]+$ ]] || { printf -- '-'; return; }
    # "close": missed by less than 3%, which is within the run-to-run noise
    awk -v r="$r" -v op="$op" 'BEGIN {
        if (op == "ge") v = (r >= 1.0) ? "ok" : (r >= 0.97) ? "close" : "MISSED"
        else v = (r <= 1.0) ? "ok" : (r <= 1.03) ? "close" : "MISSED"
        printf "%s", v }'
}
row() { # LABEL METRIC HAS_DIRECT OP
    local r
    r=$(ratio "$2")
    if [[ $3 = 1 ]]; then d=$(val "$2.direct"); else d=-; fi
    printf '%-30s %10s %10s %10s %10s   %-4s %s\n' "$1" "$d" "$(val "$2.haproxy")" "$(val "$2.corral")" \
        "$r" "$([[ $4 = ge ]] && echo '>=1' || echo '<=1')" "$(verdict "$r" "$4")"
}

log ""
log "== summary ($(nproc) cpus; HAProxy 2.6 nbthread 1 forced splice, corral workers = 1 splice = true)"
printf '%-30s %10s %10s %10s %10s   %s\n' metric direct haproxy corral corral/hap target
want tput && row "throughput Gbit/s" tput 1 ge
want tput && row "proxy CPU s/GB" cpugb 0 le
want rate && row "short connections/s" rate 1 ge
want rate && row "proxy CPU us/connection" cpuconn 0 le
want mem && row "RSS KB, $IDLE idle conns" rss 0 le
if want rate; then
    errs=""
    for k in direct haproxy corral; do
        [[ -z ${R[rateerr.$k]:-} || ${R[rateerr.$k]} = 0 ]] || errs+=" $k=${R[rateerr.$k]}"
    done
    [[ -z $errs ]] || log "wrk errors (socket errors + non-2xx):$errs"
fi
waits=""
for k in haproxy corral; do
    [[ -z ${R[wait.$k]:-} ]] || waits+=" $k $(f2 "${R[wait.$k]}") s,"
done
if [[ -n $waits ]]; then
    log "time the proxy was runnable but waited for a CPU, over all its runs:${waits%,}"
    log "  (more than a few tenths of a second: other processes shared its CPU and its numbers are low)"
fi
