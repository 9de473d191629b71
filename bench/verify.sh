#!/usr/bin/env bash
# The target run, end to end, on one machine:
#   two `loadgen serve` backends -> shardgate (target/release) -> `loadgen verify`
# loadgen verify holds 10,000 keep-alive connections through the proxy, sends a constant
# 4000 req/s across them for 30 s (after a 5 s ramp), and passes only if all 10,000 stayed
# connected, throughput >= 3000 req/s, zero requests failed, and corrected p99 <= 100 ms.
#
#   bench/verify.sh                 build (release), run, tear down; exit status = verdict
#   bench/verify.sh -d 10s -R 5000  extra flags go to `loadgen verify`
#   NO_BUILD=1 bench/verify.sh      use the binaries already in target/release
#
# Ports: proxy 18080, backends 19001/19002 (override with SG_PORT, APP1_PORT, APP2_PORT).
# Every process started here is stopped by its PID on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

SG_PORT=${SG_PORT:-18080}
APP1_PORT=${APP1_PORT:-19001}
APP2_PORT=${APP2_PORT:-19002}

if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p shardgate -p loadgen
fi
LOADGEN=target/release/loadgen
SHARDGATE=target/release/shardgate
[ -x "$LOADGEN" ] && [ -x "$SHARDGATE" ] || { echo "verify.sh: build first (missing binaries)" >&2; exit 2; }

dir=$(mktemp -d /tmp/sg-verify.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$dir/shardgate.toml" <<EOF
[daemon]
shards = 0
control_socket = "$dir/ctl.sock"

[[http]]
name = "www"
listen = ["127.0.0.1:$SG_PORT"]
default_pool = "app"

[pool.app]
balance = "least_requests"
servers = [ { name = "app1", addr = "127.0.0.1:$APP1_PORT" }, { name = "app2", addr = "127.0.0.1:$APP2_PORT" } ]
EOF

"$LOADGEN" serve --listen "127.0.0.1:$APP1_PORT" --name app1 >"$dir/app1.log" 2>&1 &
pids+=($!)
"$LOADGEN" serve --listen "127.0.0.1:$APP2_PORT" --name app2 >"$dir/app2.log" 2>&1 &
pids+=($!)
"$SHARDGATE" --config "$dir/shardgate.toml" >"$dir/shardgate.log" 2>&1 &
sg_pid=$!
pids+=("$sg_pid")

# Wait for the proxy to listen (and fail fast if it died).
for i in $(seq 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$SG_PORT") 2>/dev/null; then break; fi
    if ! kill -0 "$sg_pid" 2>/dev/null || [ "$i" = 150 ]; then
        echo "verify.sh: shardgate did not start; its log:" >&2
        tail -n 30 "$dir/shardgate.log" >&2
        exit 2
    fi
    sleep 0.1
done

status=0
"$LOADGEN" verify "http://127.0.0.1:$SG_PORT/" \
    --backend "127.0.0.1:$APP1_PORT" --backend "127.0.0.1:$APP2_PORT" "$@" || status=$?
exit "$status"
