#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (curl, MariaDB,
# sysbench from Debian), builds the workspace, runs every test with the io_uring driver and
# again with the epoll driver, then checks formatting and lints. `.ci/run` calls exactly this.
#
#   tests/run.sh            everything
#   QUICK=1 tests/run.sh    one driver (auto), no lint pass
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    else
        echo "missing ${need[*]} and not root: install them first" >&2
        exit 1
    fi
fi
# MariaDB server/client and sysbench for the MySQL tests (no-op when present).
tests/support/mariadb.sh install
# Headless Chromium and its WebDriver for tests/admin_browser.rs (no-op when present).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
    else
        echo "chromium/chromedriver missing and not root: install them first" >&2
        exit 1
    fi
fi
# cargo-deb for tests/package.rs, which builds and inspects the .deb (about 3 minutes to
# install once; the package build itself takes seconds). The test says SKIPPED without it.
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked || echo "cannot install cargo-deb: tests/package.rs will be SKIPPED"
fi

step "build"
cargo build --workspace --all-targets

drivers="uring epoll"
if [ -n "${QUICK:-}" ]; then
    drivers="auto"
fi
for d in $drivers; do
    step "tests (io_driver = $d)"
    if [ "$d" = epoll ]; then
        # loadgen's own tests do not depend on the proxy's driver: run them once.
        SHARDGATE_TEST_IO_DRIVER=epoll MONOIO_FORCE_LEGACY_DRIVER=1 cargo test -p shardgate
    else
        SHARDGATE_TEST_IO_DRIVER=$d cargo test --workspace
    fi
done

if [ -z "${QUICK:-}" ]; then
    step "fuzz targets (brief run each; fuzz/README.md for long campaigns)"
    fuzz/run.sh

    step "format and lints"
    if cargo fmt --version >/dev/null 2>&1; then
        cargo fmt --all -- --check
    else
        echo "rustfmt is not installed with this toolchain: format check SKIPPED"
    fi
    if cargo clippy --version >/dev/null 2>&1; then
        cargo clippy --workspace --all-targets -- -D warnings
    else
        echo "clippy is not installed with this toolchain: lint check SKIPPED"
    fi
fi
step "all tests passed"
