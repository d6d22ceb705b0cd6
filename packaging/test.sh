#!/usr/bin/env bash
# The packages as an operator gets them (CI runs this as root, after the
# tests). Builds both; checks their file lists, modes and owners; lintian;
# the .rpm into a throwaway root; the .deb installed on this machine, then
# the service run as its unit runs it (NOTIFY_SOCKET read here: READY=1,
# RELOADING=1 then READY=1), a reload that waits for its outcome, a broken
# reload that fails while the service keeps serving, stop, purge.
# Then the upgrade of a running service: the previous commit's binary
# (a git worktree) packaged as an older version, started, and the HEAD
# package (a higher version) installed over it while a client holds a
# connection and another connects in a loop: no failed connection, the
# same master pid, the new version in `show info`.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "packaging test FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "packaging test SKIPPED: needs root"; exit 0; }

bash packaging/build.sh >/dev/null 2>&1 || fail "packaging/build.sh"
deb=$(ls target/packages/corral_*_amd64.deb)
rpm=$(ls target/packages/corral-*.x86_64.rpm)

# --- file lists -------------------------------------------------------
want_deb='-rw-r--r-- root/root ./etc/corral/corral.toml
-rw-r--r-- root/root ./etc/default/corral
-rw-r--r-- root/root ./usr/lib/systemd/system/corral.service
-rwxr-xr-x root/root ./usr/sbin/corral
-rw-r--r-- root/root ./usr/share/doc/corral/README.md
-rw-r--r-- root/root ./usr/share/doc/corral/changelog.Debian.gz
-rw-r--r-- root/root ./usr/share/doc/corral/copyright
-rw-r--r-- root/root ./usr/share/doc/corral/examples/demo.toml
-rw-r--r-- root/root ./usr/share/doc/corral/examples/ratelimit.toml
-rw-r--r-- root/root ./usr/share/man/man5/corral.toml.5.gz
-rw-r--r-- root/root ./usr/share/man/man8/corral.8.gz'
got_deb=$(dpkg-deb -c "$deb" | grep -v '^d' | awk '{print $1, $2, $6}' | sed 's|0/0|root/root|' | sort -k3)
want_deb=$(echo "$want_deb" | sort -k3)
[ "$got_deb" = "$want_deb" ] || fail "the .deb's files:
$got_deb"
[ "$(dpkg-deb -f "$deb" Package)" = corral ] || fail "package name"
dpkg-deb -e "$deb" /tmp/corral-debctl.$$
grep -qx /etc/corral/corral.toml /tmp/corral-debctl.$$/conffiles || fail "corral.toml is not a conffile"
rm -rf /tmp/corral-debctl.$$
want_rpm='/etc/corral/corral.toml 100644 root root
/etc/default/corral 100644 root root
/usr/lib/systemd/system/corral.service 100644 root root
/usr/sbin/corral 100755 root root
/usr/share/doc/corral/README.md 100644 root root
/usr/share/doc/corral/examples/demo.toml 100644 root root
/usr/share/doc/corral/examples/ratelimit.toml 100644 root root
/usr/share/man/man5/corral.toml.5.gz 100644 root root
/usr/share/man/man8/corral.8.gz 100644 root root'
got_rpm=$(rpm -qp --qf '[%{FILENAMES} %{FILEMODES:octal} %{FILEUSERNAME} %{FILEGROUPNAME}\n]' "$rpm" 2>/dev/null | sort)
[ "$got_rpm" = "$want_rpm" ] || fail "the .rpm's files:
$got_rpm"
rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm" 2>/dev/null | grep -q '^/etc/corral/corral.toml cn' ||
    fail "corral.toml is not %config(noreplace) in the .rpm"

# --- lintian: no error ------------------------------------------------
if command -v lintian >/dev/null; then
    if lintian "$deb" 2>/dev/null | grep '^E:'; then fail "lintian errors"; fi
fi

# --- the .rpm in a throwaway root ---------------------------------------
root=$(mktemp -d /tmp/corral-rpmroot.XXXXXX)
rpm --root "$root" --initdb 2>/dev/null
rpm --root "$root" -i --nodeps --noscripts "$rpm" 2>/dev/null || fail "rpm -i"
for f in usr/sbin/corral usr/lib/systemd/system/corral.service etc/corral/corral.toml; do
    [ -e "$root/$f" ] || fail "the .rpm did not install $f"
done
"$root/usr/sbin/corral" -c -q -f "$root/etc/corral/corral.toml" || fail "the .rpm's config"
rm -rf "$root"

# --- the .deb installed --------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
# From a clean state (a run stopped half-way may have left one).
apt-get purge -y -q corral >/dev/null 2>&1 || true
apt-get install -y -q "./$deb" >/dev/null 2>&1 || fail "apt install ./$deb"
getent passwd corral >/dev/null || fail "no corral user"
/usr/sbin/corral -c -f /etc/corral/corral.toml | grep -q "Configuration file is valid" || fail "corral -c"
systemd-analyze verify /usr/lib/systemd/system/corral.service 2>&1 | grep -v "Failed to connect to bus\|dbus" && fail "systemd-analyze verify" || true

# The unit's commands, as systemd would run them, with its notify socket.
unit=/usr/lib/systemd/system/corral.service
CONFIG=/etc/corral/corral.toml
PIDFILE=/run/corral/corral.pid
install -d -m 0750 /run/corral /var/log/corral
notify=$(mktemp -u /tmp/corral-notify.XXXXXX)
msgs=$(mktemp /tmp/corral-notify-msgs.XXXXXX)
python3 - "$notify" "$msgs" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        data = s.recv(4096).decode()
        for line in data.split("\n"):
            if line.split("=")[0] in ("READY", "RELOADING", "STOPPING"):
                out.write(line + "\n")
PY
listener=$!
backend_pid=
cleanup() {
    kill "$listener" 2>/dev/null || true
    [ -n "$backend_pid" ] && kill "$backend_pid" 2>/dev/null || true
    [ -n "${master:-}" ] && kill -TERM "$master" 2>/dev/null || true
    rm -f "$notify" "$msgs"
}
trap cleanup EXIT
for _ in $(seq 50); do [ -S "$notify" ] && break; sleep 0.1; done
wait_msgs() { # wait until $msgs has $1 lines
    for _ in $(seq 100); do [ "$(wc -l < "$msgs")" -ge "$1" ] && return 0; sleep 0.1; done
    return 1
}
grep -q '^ExecStartPre=/usr/sbin/corral -c -q -f $CONFIG$' "$unit" || fail "ExecStartPre"
grep -q '^Type=notify$' "$unit" || fail "Type=notify"
/usr/sbin/corral -c -q -f "$CONFIG" || fail "ExecStartPre failed"
python3 -m http.server 8081 --bind 127.0.0.1 >/dev/null 2>&1 &
backend_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:8081/ && break; sleep 0.1; done
# The unit's capability bounding set, applied as systemd would.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit" | tr 'A-Z' 'a-z' | sed 's/cap_//g; s/ /,+/g')
[ -n "$caps" ] || fail "no CapabilityBoundingSet in the unit"
run_master() {
    NOTIFY_SOCKET=$notify setpriv --bounding-set "-all,+$caps" \
        /usr/sbin/corral -f "$CONFIG" -p "$PIDFILE" >/tmp/corral-pkg.log 2>&1 &
    master=$!
}
run_master
wait_msgs 1 || fail "no READY=1: $(cat /tmp/corral-pkg.log)"
[ "$(head -1 "$msgs")" = "READY=1" ] || fail "first notification: $(cat "$msgs")"
for _ in $(seq 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/)" = 200 ] && break
    sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/)" = 200 ] || fail "no answer through the default config"
[ -S /run/corral/admin.sock ] || fail "no stats socket"
[ "$(stat -c %G /run/corral/admin.sock)" = corral ] || fail "the socket's group is not corral"

# Reload as the unit's ExecReload lines do: synchronous, exit 0.
/usr/sbin/corral -c -q -f "$CONFIG" || fail "ExecReload check"
NOTIFY_SOCKET=$notify /usr/sbin/corral --reload -f "$CONFIG" | grep -q '^Success=1' || fail "reload"
wait_msgs 3 || fail "no RELOADING/READY after the reload: $(cat "$msgs")"
sed -n 2p "$msgs" | grep -q '^RELOADING=1' || fail "second notification: $(cat "$msgs")"
[ "$(sed -n 3p "$msgs")" = "READY=1" ] || fail "third notification: $(cat "$msgs")"
kill -0 "$master" || fail "the master's pid changed or it died"
# The old workers were told to go (the master, root, signals workers that
# run as user corral: CAP_KILL is in the unit's bounding set).
for _ in $(seq 100); do
    [ "$(pgrep -c -f 'corral: worker')" -le 2 ] && break
    sleep 0.1
done
[ "$(pgrep -c -f 'corral: worker')" -le 2 ] || fail "old workers still running after the reload: $(pgrep -a -f 'corral: worker')"

# A broken config: the check fails, and so does the reload; still serving.
cp "$CONFIG" /tmp/corral-good.toml
echo "bogus = 1" >> "$CONFIG"
! /usr/sbin/corral -c -q -f "$CONFIG" 2>/dev/null || fail "a broken config passed the check"
! /usr/sbin/corral --reload -f "$CONFIG" >/dev/null 2>&1 || fail "a broken reload exited 0"
cp /tmp/corral-good.toml "$CONFIG"
[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/)" = 200 ] || fail "not serving after the broken reload"

# Stop (KillMode=mixed: SIGTERM to the master), then remove and purge.
kill -TERM "$master"
for _ in $(seq 100); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$master" 2>/dev/null || fail "the master did not stop"
master=
apt-get purge -y -q corral >/dev/null 2>&1 || fail "apt purge"
for f in /usr/sbin/corral /etc/corral /usr/lib/systemd/system/corral.service /run/corral /usr/share/doc/corral; do
    [ ! -e "$f" ] || fail "$f left after purge"
done
getent passwd corral >/dev/null || fail "the system user was removed (policy keeps it)"

# --- an upgrade over the running service ----------------------------------
git worktree prune
prev_src=$(mktemp -d /tmp/corral-prev.XXXXXX)
git worktree add -q --detach "$prev_src" HEAD^ >/dev/null 2>&1 || fail "git worktree HEAD^"
repo=$(pwd)
(cd "$prev_src" && CARGO_TARGET_DIR="$repo/target/pkg-prev" cargo build -q --bin corral) || {
    git worktree remove --force "$prev_src"
    fail "building HEAD^"
}
prev_bin=$repo/target/pkg-prev/debug/corral
git worktree remove --force "$prev_src"
old_version=0.1.0~prev
new_version=0.1.1
BIN=$prev_bin VERSION=$old_version bash packaging/build.sh >/dev/null 2>&1 || fail "packaging HEAD^"
old_deb=/tmp/corral_${old_version}_amd64.deb
mv target/packages/corral_${old_version}-1_amd64.deb "$old_deb"
VERSION=$new_version bash packaging/build.sh >/dev/null 2>&1 || fail "packaging HEAD as $new_version"
new_deb=target/packages/corral_${new_version}-1_amd64.deb
apt-get install -y -q "$old_deb" >/dev/null 2>&1 || fail "apt install the old package"
install -d -m 0750 /run/corral /var/log/corral
: > "$msgs"
run_master
wait_msgs 1 || fail "the old package's service sent no READY=1: $(cat /tmp/corral-pkg.log)"
python3 - "$master" <<'PY' > /tmp/corral-upgrade.out 2>&1 &
import http.client, socket, subprocess, sys, time, threading
# One client holds a keep-alive connection; another connects in a loop.
held = http.client.HTTPConnection("127.0.0.1", 8080, timeout=10)
held.request("GET", "/"); r = held.getresponse(); r.read()
assert r.status == 200
stop = time.time() + 6
ok = failed = 0
held_ok = 0
next_held = time.time() + 0.5
while time.time() < stop:
    if time.time() >= next_held:
        # The held connection speaks every half second (an idle one would
        # meet the keep-alive timeout, which is not what is tested here).
        held.request("GET", "/"); r = held.getresponse(); r.read()
        held_ok += r.status == 200
        next_held += 0.5
    try:
        c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=10)
        c.request("GET", "/"); r = c.getresponse(); r.read(); c.close()
        if r.status == 200: ok += 1
        else: failed += 1
    except Exception as e:
        failed += 1
held.request("GET", "/"); r = held.getresponse(); r.read()
print(f"ok={ok} failed={failed} held={r.status} held_requests={held_ok}")
PY
loop=$!
sleep 1.5
apt-get install -y -q "./$new_deb" >/tmp/corral-apt.log 2>&1 || fail "apt install the new package over the running one: $(cat /tmp/corral-apt.log)"
wait "$loop" || true
result=$(cat /tmp/corral-upgrade.out)
echo "upgrade $old_version -> $new_version under load: $result"
echo "$result" | grep -q " failed=0 held=200 " || fail "connections failed across the upgrade: $result"
kill -0 "$master" 2>/dev/null || fail "the master died in the upgrade"
info=$(echo "show info" | python3 -c "
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect('/run/corral/admin.sock')
s.sendall(sys.stdin.read().encode()); s.shutdown(socket.SHUT_WR)
print(s.makefile().read())")
echo "$info" | grep -qx "Version: $new_version" || fail "show info after the upgrade: $(echo "$info" | grep Version)"
echo "$info" | grep -qx "Pid: $master" || fail "the master's pid changed"
[ "$(readlink /proc/$master/exe)" = /usr/sbin/corral ] || fail "the master does not run the installed binary"
kill -TERM "$master"
for _ in $(seq 100); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
master=
apt-get purge -y -q corral >/dev/null 2>&1 || fail "apt purge after the upgrade"
echo "packaging test: ok"
