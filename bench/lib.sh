# shellcheck shell=bash
# bench/lib.sh: what bench/tcp.sh and bench/reload.sh share. Each sources it after
# `set -euo pipefail` and its own settings:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sourcing it sets the options both scripts take (SKIP_CORRAL, SKIP_HAPROXY, PIN,
# CORRAL) and ROOT, and defines the functions below; it starts nothing. The
# functions that run processes need make_workdir first (TMP, the python3 helpers'
# shared part, the cleanup trap). The script supplies write_haproxy_cfg and
# write_corral_cfg (FILE PORT BACKEND_PORT) for start_proxy, usually through
# haproxy_cfg / corral_cfg, and its own python3 helpers in $TMP/h.py, which import
# benchlib.py (written by make_workdir) and pass it the commands in its COMMANDS.

SKIP_CORRAL=${SKIP_CORRAL:-0}
SKIP_HAPROXY=${SKIP_HAPROXY:-0}
PIN=${PIN:-1}
export PATH="$PATH:/usr/sbin:/sbin"

# The repo root (this file's parent folder) and the corral binary: CORRAL, relative
# to the repo root or absolute.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORRAL=${CORRAL:-target/release/corral}
[[ $CORRAL = /* ]] || CORRAL="$ROOT/$CORRAL"

# log TEXT...: a line on stdout.
log() { printf '%s\n' "$*"; }
# die TEXT...: an error on stderr, exit 1 (the EXIT trap then stops what was started).
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- setup
# need_tools CMD[:PACKAGE]...: install the Debian packages (PACKAGE, by default CMD)
# of the commands that are missing (needs root and apt-get), then check that every
# CMD is there.
need_tools() {
    local t need=()
    for t in "$@"; do command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}"); done
    if ((${#need[@]})); then
        [[ $(id -u) = 0 ]] || die "missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root"
        log "installing ${need[*]} ..."
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    for t in "$@"; do
        command -v "${t%%:*}" >/dev/null 2>&1 || die "${t%%:*} is still missing after installing"
    done
}

# build_corral WHY: say WHY the binary is built, run `cargo build --release` in the
# repo root, die if it fails.
build_corral() {
    log "$1: building it (cargo build --release) ..."
    (cd "$ROOT" && cargo build --release) || die "cargo build --release failed"
}

# raise_fd_limit: the open-files limit to 20000, or to the hard limit when that is lower.
raise_fd_limit() { ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; }

# make_workdir NAME: TMP=/tmp/NAME.XXXXXX for configs, logs and the python3 helpers
# (benchlib.py in it), and the traps that stop every started process on exit and
# remove TMP (kept with KEEP_TMP=1 or after a failure).
make_workdir() {
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    STARTED=()
    write_benchlib "$TMP/benchlib.py"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# py CMD ARGS...: one of the python3 helpers: the script's $TMP/h.py, which hands
# the shared commands (COMMANDS in benchlib.py) on.
py() { python3 "$TMP/h.py" "$@"; }

# write_benchlib FILE: the python3 helpers both scripts use, as a module for h.py.
write_benchlib() {
    cat >"$1" <<'PYEOF'
"""Helpers shared by bench/tcp.sh and bench/reload.sh (written by bench/lib.sh):
each script's h.py imports this module and runs the commands in COMMANDS."""
import os, random, selectors, socket, sys, time

def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    # [0]=state [1]=ppid [2]=pgrp [11]=utime [12]=stime [13]=cutime [14]=cstime
    return s[s.rindex(")") + 2:].split()

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

def proc_stats(root):
    """(pid, stat fields) of root's processes (see procs) that are still there."""
    for p in procs(root):
        try:
            yield p, stat(p)
        except OSError:
            continue

def sleeps(pid):
    """Times pid's threads went to sleep (voluntary context switches): each
    one is a wakeup later, which the waker pays for (a cross-CPU interrupt)."""
    n = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        n += int(line.split()[1])
    except (OSError, ValueError):
        pass
    return n

def run_delay(pid):
    """Seconds pid's threads spent runnable but waiting for a CPU (schedstat run_delay)."""
    wait = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                wait += int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return wait / 1e9

def affinity(root):
    """The distinct Cpus_allowed_list of root's processes."""
    seen = set()
    for p in procs(root):
        try:
            for l in open(f"/proc/{p}/status"):
                if l.startswith("Cpus_allowed_list:"):
                    seen.add(l.split(":", 1)[1].strip())
        except OSError:
            pass
    return " ".join("cpus " + x for x in sorted(seen))

def busy(secs):
    """% of all CPUs busy over the next secs seconds."""
    def sample():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(f), f[3] + f[4]
    t0, i0 = sample()
    time.sleep(secs)
    t1, i1 = sample()
    return round(100 * (1 - (i1 - i0) / max(t1 - t0, 1)))

def listen_rows(port):
    """The rows (split) of /proc/net/tcp and tcp6 for the sockets listening on port."""
    want = f"{port:04X}"
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(fn).read().splitlines()[1:]
        except OSError:
            continue
        for l in lines:
            f = l.split()
            if f[3] == "0A" and f[1].rsplit(":", 1)[1] == want:
                yield f

def listening(port):
    return any(True for _ in listen_rows(port))

def freeports(n):
    """n free ports below the ephemeral range, so that the churn of short
    connections cannot take one between now and the server's bind()."""
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

def wait(what, timeout, pids, port=None, path=None):
    """Poll every 50 ms: 0 when ready, 2 when one of pids has no live process left, 3 on timeout."""
    end = time.time() + timeout
    while True:
        if what == "gone":
            if not procs(pids[0]):
                return 0
        else:
            ready = listening(port) if what == "listen" else os.path.exists(path)
            if any(not procs(p) for p in pids):
                return 2
            if ready:
                return 0
        if time.time() >= end:
            return 3
        time.sleep(0.05)

def echo(port):
    """Backend: echoes what it gets, closes when the peer closes. One thread, epoll."""
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
                for _ in range(64):
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
                d = c.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                d = b""
            if d:
                try:
                    n = c.send(d)
                    if n < len(d):  # rare with small messages: finish it blocking
                        c.setblocking(True)
                        c.settimeout(5)
                        c.sendall(d[n:])
                        c.setblocking(False)
                    continue
                except OSError:
                    pass
            sel.unregister(c)
            c.close()

COMMANDS = {
    "procs": lambda a: print(" ".join(map(str, procs(int(a[0]))))),  # PID
    "affinity": lambda a: print(affinity(int(a[0]))),  # PID
    "busy": lambda a: print(busy(float(a[0]))),  # SECS
    "listening": lambda a: sys.exit(0 if listening(int(a[0])) else 1),  # PORT
    "freeports": lambda a: print(" ".join(map(str, freeports(int(a[0]))))),  # N
    # PORT TIMEOUT PID...
    "waitlisten": lambda a: sys.exit(wait("listen", float(a[1]), [int(x) for x in a[2:]], port=int(a[0]))),
    # FILE TIMEOUT PID...
    "waitfile": lambda a: sys.exit(wait("file", float(a[1]), [int(x) for x in a[2:]], path=a[0])),
    "waitgone": lambda a: sys.exit(wait("gone", float(a[1]), [int(a[0])])),  # PID TIMEOUT
    "echo": lambda a: echo(int(a[0])),  # PORT
}
PYEOF
}

# ---------------------------------------------------------------- processes
# start_bg NAME CMD...: start CMD in its own session (pgid = pid), log in $TMP/NAME.log.
start_bg() {
    local name=$1; shift
    setsid "$@" </dev/null >"$TMP/$name.log" 2>&1 &
    LAST_PID=$!
    STARTED+=("$LAST_PID")
}

# alive PID: whether PID or one of its processes (group, descendants) is still alive.
alive() { [[ -n $(py procs "$1" 2>/dev/null) ]]; }

# stop_tree PID: SIGTERM to PID, then wait up to 5 s for it and its processes to go,
# then SIGKILL whatever is left of its group and descendants.
stop_tree() {
    local pid=$1 left p
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

# cleanup: the EXIT trap: stops whatever is still running, removes TMP unless
# KEEP_TMP=1 or the exit status says something failed.
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

# start_server NAME PORT CMD...: start CMD (a backend or load server) on the load CPUs
# as NAME and wait until it listens on PORT; LAST_PID is its pid.
start_server() {
    local name=$1 port=$2; shift 2
    start_bg "$name" "${ON_LOAD[@]}" "$@"
    wait_listen "$port" "$LAST_PID" "$name"
}

# nginx_conf PORT HTTP_LINES SERVER_LINES: an nginx.conf in $TMP/nginx/ for the
# backend (one worker, no master, 8192 connections), listening on 127.0.0.1:PORT,
# with HTTP_LINES in its http block and SERVER_LINES in its server block.
nginx_conf() {
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
    $2
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    server {
        listen 127.0.0.1:$1 backlog=4096;
        $3
    }
}
EOF
}

# ---------------------------------------------------------------- CPUs
# pin_cpus: CPU pinning (PIN=1, the default, with 2 or more CPUs): the proxy gets the
# last CPU to itself (PROXY_CPUS), everything else (load generators, backends) the
# others (LOAD_CPUS); ON_PROXY and ON_LOAD are the taskset prefixes, empty when not
# pinned. Unpinned, 3 busy processes on 2 CPUs land wherever the scheduler puts them,
# and runs of the same binary varied by 2x; pinned they agree within a few percent.
# Sets NCPU too.
pin_cpus() {
    ON_PROXY=() ON_LOAD=()
    NCPU=$(nproc)
    if [[ $PIN = 1 ]] && ((NCPU >= 2)); then
        PROXY_CPUS=${PROXY_CPUS:-$((NCPU - 1))}
        LOAD_CPUS=${LOAD_CPUS:-0-$((NCPU - 2))}
        command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is missing; or run with PIN=0"
        ON_PROXY=(taskset -c "$PROXY_CPUS")
        ON_LOAD=(taskset -c "$LOAD_CPUS")
    fi
}

# ---------------------------------------------------------------- proxies
# choose_proxies: PROXIES, the proxies to run: haproxy and corral, less SKIP_HAPROXY=1
# and SKIP_CORRAL=1.
choose_proxies() {
    PROXIES=()
    [[ $SKIP_HAPROXY = 1 ]] || PROXIES+=(haproxy)
    [[ $SKIP_CORRAL = 1 ]] || PROXIES+=(corral)
}

# indent TEXT: TEXT's lines, each indented by 4 spaces (haproxy_cfg's extra lines).
indent() { [[ -z $1 ]] || printf '%s\n' "$1" | sed 's/^/    /'; }

# haproxy_cfg FILE PORT BACKEND_PORT MAXCONN TIMEOUT GLOBAL DEFAULTS FRONTEND: an
# HAProxy config: one thread, TCP mode, 127.0.0.1:PORT to the server
# 127.0.0.1:BACKEND_PORT, timeouts connect 5s, client and server TIMEOUT. GLOBAL,
# DEFAULTS and FRONTEND: the script's extra lines for those sections, or "".
haproxy_cfg() {
    cat >"$1" <<EOF
global
    nbthread 1
    maxconn $4
$(indent "$6")
    # maxconn $4 wants more fds than the 20000 this machine allows per process:
    # without this HAProxy 2.6 refuses to start ("Cannot raise FD limit").
    no strict-limits

defaults
    mode tcp
    timeout connect 5s
    timeout client $5
    timeout server $5
$(indent "$7")

frontend fe
    bind 127.0.0.1:$2
$(indent "$8")
    default_backend be

backend be
    server s1 127.0.0.1:$3
EOF
}

# corral_cfg FILE PORT BACKEND_PORT MAXCONN TIMEOUT GLOBAL SECTIONS FRONTEND BACKEND:
# the same for corral: one worker, TCP mode, no log. GLOBAL, FRONTEND and BACKEND:
# the script's extra lines for those tables, SECTIONS: tables of its own, or "".
corral_cfg() {
    cat >"$1" <<EOF
[global]
workers = 1
maxconn = $4
$6
log = "/dev/null"

$7

[frontend.fe]
bind = "127.0.0.1:$2"
mode = "tcp"
$8
default_backend = "be"
timeout = { client = "$5" }

[backend.be]
mode = "tcp"
$9
timeout = { connect = "5s", server = "$5" }
server.s1 = { addr = "127.0.0.1:$3" }
EOF
}

declare -gA AFFINITY=() # the CPUs KIND's processes were found on, once a KIND

# start_proxy KIND BACKEND_PORT: a fresh proxy, haproxy or corral, on a free port in
# front of 127.0.0.1:BACKEND_PORT, run by ON_PROXY in its master-worker mode (HAProxy:
# -W, like Debian's systemd unit, -Ws; plus HAPROXY_ARGS). Its config is written by the
# script's write_KIND_cfg FILE PORT BACKEND_PORT and checked (-c) first. Its output
# goes to $TMP/NAME.log, NAME being KIND, or KIND-$PHASE_TAG when PHASE_TAG is set.
# Sets PROXY_PID (the master) and PROXY_PORT.
HAPROXY_ARGS=()
start_proxy() {
    local kind=$1 be=$2 cfg name=$1${PHASE_TAG:+-$PHASE_TAG}
    PROXY_PORT=$(py freeports 1)
    case $kind in
    haproxy)
        cfg=$TMP/haproxy.cfg
        write_haproxy_cfg "$cfg" "$PROXY_PORT" "$be"
        haproxy -c -q -f "$cfg" >"$TMP/haproxy-check.log" 2>&1 ||
            { cat "$TMP/haproxy-check.log" >&2; die "HAProxy rejected its config $cfg"; }
        start_bg "$name" "${ON_PROXY[@]}" haproxy -W -db "${HAPROXY_ARGS[@]}" -f "$cfg"
        ;;
    corral)
        cfg=$TMP/corral.toml
        write_corral_cfg "$cfg" "$PROXY_PORT" "$be"
        "$CORRAL" -c -f "$cfg" >"$TMP/corral-check.log" 2>&1 ||
            { cat "$TMP/corral-check.log" >&2; die "corral -c rejected its config $cfg"; }
        start_bg "$name" "${ON_PROXY[@]}" "$CORRAL" -f "$cfg"
        ;;
    esac
    PROXY_PID=$LAST_PID
    wait_listen "$PROXY_PORT" "$PROXY_PID" "$name"
    sleep 0.5 # let the workers come up behind the listener
    alive "$PROXY_PID" || die "$kind exited right after starting (see $TMP/$name.log)"
    # A proxy that sets its own CPU affinity would undo the pinning: say so once.
    if ((${#ON_PROXY[@]})) && [[ -z ${AFFINITY[$kind]:-} ]]; then
        AFFINITY[$kind]=$(py affinity "$PROXY_PID")
        [[ ${AFFINITY[$kind]} = *"cpus $PROXY_CPUS"* ]] ||
            log "  note: $kind's processes run on other CPUs than $PROXY_CPUS: ${AFFINITY[$kind]}"
    fi
}

# stop_proxy: stop the proxy start_proxy started.
stop_proxy() {
    stop_tree "$PROXY_PID"
    PROXY_PID=
}

# ---------------------------------------------------------------- header
# log_setup LOAD_SIDE (after pin_cpus): the header lines on the machine, the two
# proxies and the pinning (LOAD_SIDE: what runs on the load CPUs).
log_setup() {
    log "  machine: $NCPU cpus, $(uname -sr)"
    log "  $(haproxy -v 2>/dev/null | head -n 1)"
    [[ $SKIP_CORRAL = 1 ]] || log "  corral: $CORRAL ($("$CORRAL" -v 2>&1 | head -n 1 || true))"
    if ((${#ON_PROXY[@]})); then
        log "  pinned: proxy on CPU $PROXY_CPUS, $1 on CPU $LOAD_CPUS (PIN=0 to disable)"
    else
        log "  not pinned"
    fi
}

# warn_if_busy EFFECT: a warning when the machine is more than 10% busy over the
# second before the start; EFFECT ends it: what other work does to the numbers.
warn_if_busy() {
    local busy
    busy=$(py busy 1)
    if ((busy > 10)); then
        log "  WARNING: the machine is already ${busy}% busy before the benchmark starts (load: $(cut -d' ' -f1-3 /proc/loadavg));"
        log "           other work on it (builds, tests) $1"
    fi
}

# want TEST: whether TESTS names TEST.
want() { [[ " $TESTS " = *" $1 "* ]]; }
