#!/usr/bin/env bash
# Builds target/packages/corral_<v>_<arch>.deb (cargo-deb) and
# target/packages/corral-<v>-1.<arch>.rpm (cargo-generate-rpm) from the
# release build. Installs both tools with `cargo install` when missing.
# VERSION=x.y.z gives the packages (and the binary's `corral -v`) another
# version; BIN=path packages that binary instead of building one (the
# upgrade test packages the previous commit's).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/packages
mkdir -p "$out/man"
rm -f "$out"/*.deb "$out"/*.rpm
for tool in cargo-deb cargo-generate-rpm; do
    command -v "$tool" >/dev/null || cargo install --locked "$tool"
done
bin=${BIN:-}
if [ -z "$bin" ]; then
    if [ -n "${VERSION:-}" ]; then
        CORRAL_VERSION=$VERSION cargo build --release --bin corral
    else
        cargo build --release --bin corral
    fi
    bin=target/release/corral
fi
# The packaged binary without debug info (the release profile keeps it for
# profiling): both packages take this copy.
mkdir -p "$out/bin"
strip --strip-debug --strip-unneeded -o "$out/bin/corral" "$bin"
for page in corral.8 corral.toml.5; do
    gzip -9 -n -c "packaging/man/$page" > "$out/man/$page.gz"
done
deb_args=(--no-build -o "$out/")
rpm_args=(-o "$out/")
if [ -n "${VERSION:-}" ]; then
    deb_args+=(--deb-version "$VERSION-1")
    rpm_args+=(-s "version = \"$VERSION\"")
fi
cargo deb "${deb_args[@]}"
cargo generate-rpm "${rpm_args[@]}"
ls -1 "$out"/*.deb "$out"/*.rpm
