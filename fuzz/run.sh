#!/usr/bin/env bash
# Build the cargo-fuzz targets and run each for a bounded time, one at a time, one worker,
# without a sanitizer (stable toolchain). Exits non-zero if a target finds a crash, printing
# the reproducer's path and the command that replays it.
#
#   fuzz/run.sh                          # every target, FUZZ_SECONDS (12) each
#   FUZZ_SECONDS=600 fuzz/run.sh chunked # one target, longer
#   FUZZ_RUNS=10000000 fuzz/run.sh       # a number of executions instead of a time
#
# Environment:
#   FUZZ_SECONDS     seconds per target (default 12: sixteen targets, about three and a half minutes);
#                    ignored when FUZZ_RUNS is set
#   FUZZ_RUNS        executions per target (libFuzzer -runs)
#   FUZZ_TARGET_DIR  cargo target dir (default fuzz/target); pointing it at a directory kept
#                    between runs (e.g. ~/.cache/shardgate-fuzz) makes CI re-runs build only
#                    shardgate itself
#   FUZZ_ARGS        extra libFuzzer arguments (e.g. "-max_len=8192")
set -euo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$FUZZ_DIR")"
cd "$ROOT"

SECONDS_PER_TARGET="${FUZZ_SECONDS:-12}"
RUNS="${FUZZ_RUNS:-}"
TARGET_DIR="${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}"
# -a: debug assertions and overflow checks in every crate; --sanitizer none: stable Rust.
BUILD_FLAGS=(--sanitizer none -a --target-dir "$TARGET_DIR")

ALL_TARGETS=(http_request_head http_response_head chunked chunked_canonical mysql_observer sticky_cookie dns_response upgrade_message access_log_line traffic_log_recover admin_basic_auth static_path http_fields proxy_header mysql_digest mysql_login)
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=("${ALL_TARGETS[@]}")
fi

t0=$(date +%s)
if ! cargo fuzz --version >/dev/null 2>&1; then
    # --debug: cargo-fuzz only spawns cargo and the fuzzer, its own speed does not matter,
    # and an unoptimised build installs in well under half the time.
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --debug
fi
t1=$(date +%s)

echo "== building fuzz targets (cargo fuzz build ${BUILD_FLAGS[*]})"
cargo fuzz build "${BUILD_FLAGS[@]}"
t2=$(date +%s)

if [ -n "$RUNS" ]; then
    LIMIT=(-runs="$RUNS")
else
    LIMIT=(-max_total_time="$SECONDS_PER_TARGET")
fi

failed=()
summary=()
for t in "${TARGETS[@]}"; do
    seeds="$FUZZ_DIR/corpus/$t"
    if [ ! -d "$seeds" ]; then
        echo "unknown target $t (no $seeds)" >&2
        exit 2
    fi
    # libFuzzer adds what it finds to its first corpus directory: a scratch copy, so the
    # committed seeds stay small (grow them deliberately with `cargo fuzz cmin`).
    work="$TARGET_DIR/corpus-work/$t"
    mkdir -p "$work"
    artifacts="$FUZZ_DIR/artifacts/$t"
    mkdir -p "$artifacts"
    before=$(ls -1 "$artifacts" | sort)
    log="$TARGET_DIR/fuzz-$t.log"
    dict=()
    case "$t" in
        http_*) dict=(-dict="$FUZZ_DIR/dict/http.dict") ;;
        chunked*) dict=(-dict="$FUZZ_DIR/dict/chunked.dict") ;;
        proxy_header) dict=(-dict="$FUZZ_DIR/dict/proxy.dict") ;;
    esac
    echo "== fuzzing $t (${LIMIT[*]}), log $log"
    set +e
    # shellcheck disable=SC2086
    cargo fuzz run "${BUILD_FLAGS[@]}" "$t" "$work" "$seeds" -- \
        "${LIMIT[@]}" "${dict[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -n 1)
    rate=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -n 1)
    summary+=("$t: rc=$rc, ${runs:-?} executions, ${rate:-?} exec/s")
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        echo "!! $t failed (exit $rc); last lines of its log:"
        grep -E -A12 "panicked|ERROR: libFuzzer|SUMMARY" "$log" | head -n 40 || tail -n 40 "$log"
        new=$(comm -13 <(echo "$before") <(ls -1 "$artifacts" | sort))
        for a in $new; do
            echo "!! reproducer: $artifacts/$a"
            echo "   replay:  cargo fuzz run ${BUILD_FLAGS[*]} $t $artifacts/$a"
            echo "   shrink:  cargo fuzz tmin ${BUILD_FLAGS[*]} $t $artifacts/$a"
        done
    fi
done
t3=$(date +%s)

echo "== summary"
printf '%s\n' "${summary[@]}"
echo "install $((t1 - t0)) s, build $((t2 - t1)) s, fuzzing $((t3 - t2)) s, total $((t3 - t0)) s"
passed=$((${#TARGETS[@]} - ${#failed[@]}))
echo "fuzz: $passed passed, ${#failed[@]} failed"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
