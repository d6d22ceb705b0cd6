#!/usr/bin/env bash
# bench/smuggling.sh: the malformed and ambiguous requests of tests/http_strict.rs
# sent to corral and to HAProxy 2.6 side by side (mode http, loopback only). For
# each case it prints the status each proxy answered and whether any byte of the
# request reached the server (a raw recorder that logs every connection's bytes).
#
#   bash bench/smuggling.sh
#
# Not a benchmark: a compatibility table, so an operator can see where corral is
# stricter than HAProxy. Environment: CORRAL (target/release/corral), KEEP_TMP.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_tools haproxy python3
if [[ ! -x $CORRAL ]]; then
    build_corral "no corral binary at $CORRAL"
fi
make_workdir corral-smuggling

cat >"$TMP/h.py" <<'PYEOF'
import os, socket, subprocess, sys, threading, time

CASES = [
    ("CL twice, differing", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
    ("TE chunked, identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    ("TE with space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    ("invalid chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("CL and TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n"),
    ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n"),
    ("chunked with a parameter", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n"),
    ("CL signed", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"),
    ("TE gzip only", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("CR in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
    ("bare LF chunk line", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
    ("no Host", b"GET / HTTP/1.1\r\n\r\n"),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("HTTP/0.9", b"GET /\r\n\r\n"),
    ("bare LF head", b"GET / HTTP/1.1\nHost: a\n\n"),
    ("'<' in the target", b"GET /<x> HTTP/1.1\r\nHost: a\r\n\r\n"),
]

class Recorder:
    """Records every byte each connection sends; answers each head with 200."""
    def __init__(self):
        self.l = socket.socket()
        self.l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.l.bind(("127.0.0.1", 0))
        self.l.listen(64)
        self.port = self.l.getsockname()[1]
        self.bytes = 0
        threading.Thread(target=self.run, daemon=True).start()
    def run(self):
        while True:
            s, _ = self.l.accept()
            threading.Thread(target=self.serve, args=(s,), daemon=True).start()
    def serve(self, s):
        s.settimeout(3)
        buf = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    return
                self.bytes += len(d)
                buf += d
                if b"\r\n\r\n" in buf:
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
        except OSError:
            pass
        finally:
            s.close()

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(p):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {p}")

def send(port, raw):
    s = socket.create_connection(("127.0.0.1", port), 2)
    s.settimeout(3)
    s.sendall(raw)
    out = b""
    try:
        while b"\r\n" not in out:
            d = s.recv(4096)
            if not d:
                break
            out += d
    except OSError:
        pass
    s.close()
    line = out.split(b"\r\n", 1)[0].split(b" ")
    return line[1].decode() if len(line) > 1 else "none"

def main(tmp, corral):
    rec = Recorder()
    hp, cp = free_port(), free_port()
    with open(f"{tmp}/haproxy.cfg", "w") as f:
        f.write(f"""global
  log stderr local0 err
defaults
  mode http
  timeout connect 2s
  timeout client 3s
  timeout server 3s
frontend fe
  bind 127.0.0.1:{hp}
  default_backend be
backend be
  server s 127.0.0.1:{rec.port}
""")
    with open(f"{tmp}/corral.toml", "w") as f:
        f.write(f"""[global]
workers = 1
log = "/dev/null"
[defaults]
mode = "http"
timeout = {{ connect = "2s", client = "3s", server = "3s", http_request = "2s" }}
[frontend.fe]
bind = "127.0.0.1:{cp}"
default_backend = "be"
[backend.be]
server.s = {{ addr = "127.0.0.1:{rec.port}" }}
""")
    procs = [
        subprocess.Popen(["haproxy", "-f", f"{tmp}/haproxy.cfg"], stderr=subprocess.DEVNULL),
        subprocess.Popen([corral, "-f", f"{tmp}/corral.toml"], stderr=subprocess.DEVNULL),
    ]
    try:
        wait_port(hp); wait_port(cp)
        print(f"{'case':30} {'HAProxy':>16} {'corral':>16}")
        fwd = {"HAProxy": 0, "corral": 0}
        for name, raw in CASES:
            row = []
            for who, port in (("HAProxy", hp), ("corral", cp)):
                before = rec.bytes
                status = send(port, raw)
                time.sleep(0.2)
                forwarded = rec.bytes > before
                fwd[who] += forwarded
                row.append(f"{status}{' FORWARDED' if forwarded else ''}")
            print(f"{name:30} {row[0]:>16} {row[1]:>16}")
        print(f"forwarded: HAProxy {fwd['HAProxy']} of {len(CASES)}, corral {fwd['corral']} of {len(CASES)}")
    finally:
        for p in procs:
            p.terminate(); p.wait()

main(sys.argv[1], sys.argv[2])
PYEOF

python3 "$TMP/h.py" "$TMP" "$CORRAL"
