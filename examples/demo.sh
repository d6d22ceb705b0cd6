#!/usr/bin/env bash
# Builds corral, starts two demo backends and corral on examples/demo.toml,
# sends six connections through it and shows who answered and corral's log.
# Needs only the Rust toolchain and bash.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin corral --example demo_backends
./target/release/examples/demo_backends & backends=$!
./target/release/corral -f examples/demo.toml > /tmp/corral-demo.log 2>&1 & corral=$!
trap 'kill $corral $backends 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 0.1; done
for i in 1 2 3 4 5 6; do
  exec 3<>/dev/tcp/127.0.0.1/8080
  printf 'connection %d: %s\n' "$i" "$(cat <&3)"
  exec 3<&-
done
sleep 0.2
echo "--- corral's log (process events, then one line per connection) ---"
cat /tmp/corral-demo.log
