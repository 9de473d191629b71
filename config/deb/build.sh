#!/usr/bin/env bash
# Build the Debian package: target/debian/shardgate_<version>-1_<arch>.deb.
#
#   config/deb/build.sh              release build (what you install)
#   PROFILE=dev config/deb/build.sh  from the dev-profile binary (quick; tests/package.rs)
#   SKIP_BUILD=1 ...                 the binary is built already
#   ... --output DIR                 arguments after the options go to cargo deb
#
# Needs cargo-deb (`cargo install cargo-deb --locked`, about 3 minutes to build). The package
# layout is [package.metadata.deb] in Cargo.toml; this script only builds the binary and the
# man page the assets name, then calls `cargo deb --no-build`.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-target}
case "$profile" in
    release) dir=$target/release ;;
    dev) dir=$target/debug ;;
    *) dir=$target/$profile ;;
esac

if ! cargo deb --version >/dev/null 2>&1; then
    echo "cargo-deb is not installed: cargo install cargo-deb --locked" >&2
    exit 1
fi

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --profile "$profile" --bin shardgate
fi
# The man page, generated from the CLI by the binary itself (cargo-deb maps target/release/
# in asset paths to the profile's directory, so it sits next to the binary).
"$dir/shardgate" manpage | gzip -9n > "$dir/shardgate.8.gz"
# Test builds of a large dev binary: gzip-level compression (--fast), no -dbgsym package.
extra=()
if [ "$profile" != release ]; then
    extra+=(--fast --no-dbgsym)
fi
cargo deb --no-build --profile "$profile" "${extra[@]}" "$@"
