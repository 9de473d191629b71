#!/usr/bin/env bash
# $WORKERS is a list of PIDs, split into arguments on purpose.
# shellcheck disable=SC2086
# profile.sh: where a proxy's CPU time goes, per request. One target at a time, the layout of
# compare.sh (proxy pinned to CPU0, backend nginx and load generator on CPU1). While the load
# runs it takes, on the proxy's threads only:
#   - `perf stat`: syscalls by kind, context switches, io_uring submissions/completions and
#     task-clock, divided by the requests completed in the same window;
#   - `perf record -g` (dwarf unwinding): a folded-stack profile and a flame graph (inferno,
#     `cargo install inferno` when missing).
#
# Usage:  bench/profile.sh                         shardgate, fixed rate 5000 req/s
#         TARGET=nginx WL=tiny bench/profile.sh    nginx, closed loop 64 connections
# Knobs: TARGET=shardgate|haproxy|nginx, WL=rate|tiny|idle10k, DUR (s, 8), RATE (5000),
#   SHARDGATE_BIN (default target/release/shardgate), SG_DRIVER=epoll, OUT=DIR.
# Output: bench/results/<date>-<time>-profile-<target>-<wl>/{summary.txt,perf-stat.txt,
#   folded.txt,flame.svg,raw/}. Every process started here is stopped by its PID on exit.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
CONF=$ROOT/bench/configs
RUN=/tmp/sg-bench
TARGET=${TARGET:-shardgate}
WL=${WL:-rate}
DUR=${DUR:-8}
RATE=${RATE:-5000}
SHARDGATE_BIN=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}
declare -A PORT=([haproxy]=28091 [nginx]=28092 [shardgate]=28090)
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/$STAMP-profile-$TARGET-$WL}
mkdir -p "$OUT/raw"

log() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

declare -A PID=()
cleanup() {
    local rc=$? n
    trap - EXIT INT TERM
    for n in "${!PID[@]}"; do stop_tree "${PID[$n]}"; done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin
command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null
command -v inferno-flamegraph >/dev/null || { log "building inferno (minutes)"; cargo install inferno --locked >/dev/null 2>&1; }
[[ -x $SHARDGATE_BIN ]] || die "$SHARDGATE_BIN missing (cargo build --release)"
for p in 28090 28091 28092 29200 29201; do port_free "$p" || die "port $p is in use (another benchmark?)"; done

mkdir -p "$RUN/bin"
cp -f "$SHARDGATE_BIN" "$RUN/bin/shardgate-prof"
LOADGEN=$ROOT/target/release/loadgen
rm -rf "$RUN/backend" "$RUN/nginx"
mkdir -p "$RUN/backend/logs" "$RUN/backend/tmp" "$RUN/backend/html" "$RUN/nginx/logs" "$RUN/nginx/tmp"
head -c 16384 /dev/urandom > "$RUN/backend/html/16k"
ulimit -n "$(ulimit -Hn)"
taskset -c 1 nginx -p "$RUN/backend/" -e logs/error.log -c "$CONF/backend-nginx.conf" > "$OUT/raw/backend.log" 2>&1 &
PID[backend]=$!
wait_http http://127.0.0.1:29200/ || die "backend did not start"

case $TARGET in
    shardgate)
        if [[ ${SG_DRIVER:-auto} == epoll ]]; then export MONOIO_FORCE_LEGACY_DRIVER=1; fi
        taskset -c 0 "$RUN/bin/shardgate-prof" --config "$CONF/shardgate.toml" > "$OUT/raw/target.log" 2>&1 &
        ;;
    haproxy) taskset -c 0 haproxy -db -f "$CONF/haproxy.cfg" > "$OUT/raw/target.log" 2>&1 & ;;
    nginx) taskset -c 0 nginx -p "$RUN/nginx/" -e logs/error.log -c "$CONF/nginx-proxy.conf" > "$OUT/raw/target.log" 2>&1 & ;;
    *) die "TARGET=$TARGET: shardgate, haproxy or nginx" ;;
esac
PID[target]=$!
URL=http://127.0.0.1:${PORT[$TARGET]}/
wait_http "$URL" || die "$TARGET did not start"
# The thread(s) that serve: nginx's worker (the child), the others' main process.
WORKERS=$(tree_pids "${PID[target]}" | xargs)
[[ $TARGET == nginx ]] && WORKERS=$(children_of "${PID[target]}" | xargs)
# Warm the upstream pool.
taskset -c 1 wrk -t1 -c64 -d1s "$URL" > /dev/null 2>&1 || true
settle $WORKERS

client() {
    case $WL in
        rate) taskset -c 1 "$LOADGEN" http -t 1 -c 64 -R "$RATE" -d "$((DUR + 2))s" --json "$OUT/raw/client.json" "$URL" ;;
        tiny) taskset -c 1 wrk -t1 -c64 -d"$((DUR + 2))s" "$URL" ;;
        # 10,000 connections, mostly idle: 200 req/s spread over them.
        idle10k) taskset -c 1 "$LOADGEN" http -t 1 -c 10000 -R 200 --ramp 2s -d "$((DUR + 4))s" \
            --source 127.0.0.2-127.0.0.9 --json "$OUT/raw/client.json" "$URL" ;;
    esac
}
client > "$OUT/raw/client.txt" 2>&1 &
PID[client]=$!
if [[ $WL == idle10k ]]; then sleep 5; else sleep 1; fi

PIDLIST=$(tr ' ' ',' <<< "$WORKERS")
req_now() {
    # Requests served so far, from the backend's stub_status (every proxied request reaches it).
    curl -s --max-time 2 http://127.0.0.1:29201/status | awk 'NR==3{print $3}'
}
r0=$(req_now)
c0=$(cpu_ns $WORKERS)
perf stat -x, -o "$OUT/perf-stat.txt" -p "$PIDLIST" \
    -e task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter \
    -e 'syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_readv,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmsg,syscalls:sys_enter_splice,syscalls:sys_enter_epoll_ctl' \
    -e 'io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_poll_arm' \
    -- sleep "$((DUR / 2))" 2> "$OUT/raw/perf-stat.err" || true
c1=$(cpu_ns $WORKERS)
r1=$(req_now)
perf record -F 1999 -g --call-graph dwarf,32768 -o "$OUT/raw/perf.data" -p "$PIDLIST" -- sleep "$((DUR / 2))" \
    > "$OUT/raw/perf-record.log" 2>&1 || true
wait "${PID[client]}" || true
unset 'PID[client]'

perf script -i "$OUT/raw/perf.data" 2>/dev/null | inferno-collapse-perf > "$OUT/folded.txt" || true
inferno-flamegraph --title "$TARGET $WL" < "$OUT/folded.txt" > "$OUT/flame.svg" 2>/dev/null || true
rm -f "$OUT/raw/perf.data"

python3 - "$OUT" "$((r1 - r0))" "$((c1 - c0))" "$TARGET" "$WL" <<'PY' | tee "$OUT/summary.txt"
import collections, sys
out, reqs, cpu, target, wl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
print(f"{target} {wl}: {reqs} requests in the perf-stat window; proxy CPU {cpu / max(reqs, 1) / 1000:.2f} us/request (schedstat)")
for line in open(f"{out}/perf-stat.txt"):
    f = line.strip().split(",")
    if len(f) < 3 or not f[0] or f[0].startswith("<"):
        continue
    try:
        v = float(f[0])
    except ValueError:
        continue
    name = f[2]
    if name == "task-clock":
        print(f"  {'task-clock us/request':40s} {v * 1000 / max(reqs, 1):10.2f}")
    elif v:
        print(f"  {name + ' per request':40s} {v / max(reqs, 1):10.3f}")
# Self time by function (top 25) and inclusive time of a few frames, from the folded stacks.
self_t = collections.Counter()
total = 0
for line in open(f"{out}/folded.txt"):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n)
    total += n
    self_t[stack.split(";")[-1]] += n
# Where the time is: in the proxy's own code (user space), or in the kernel (syscalls:
# io_uring_enter / epoll_wait and the TCP work done inside them, interrupts).
kern = collections.Counter()
for line in open(f"{out}/folded.txt"):
    stack, _, n = line.rstrip().rpartition(" ")
    fr = stack.split(";")
    k = next((i for i, f in enumerate(fr) if f.startswith(("entry_SYSCALL", "asm_", "ret_from_fork"))), None)
    if k is None:
        kern["user space"] += int(n)
    else:
        s = ";".join(fr[k:])
        if "schedule" in s or "finish_task_switch" in s:
            what = "kernel: sleeping and waking (scheduler)"
        elif "tcp_sendmsg" in s or "sock_sendmsg" in s:
            what = "kernel: TCP send (incl. loopback delivery to the peer)"
        elif "tcp_recvmsg" in s or "sock_recvmsg" in s:
            what = "kernel: TCP receive"
        else:
            what = "kernel: other (io_uring/epoll bookkeeping, interrupts, timers)"
        kern[what] += int(n)
print(f"\n  split of the samples (x proxy CPU per request):")
for what, n in kern.most_common():
    share = n / max(total, 1)
    print(f"  {100 * share:5.1f}%  {share * cpu / max(reqs, 1) / 1000:6.2f} us  {what}")
print(f"\n  top self time ({total} samples):")
for fn, n in self_t.most_common(25):
    print(f"  {100 * n / max(total, 1):5.1f}%  {fn[:110]}")
PY
log "results in $OUT"
