#!/usr/bin/env bash
# Which balancing method copes with one slow server: three backends (`loadgen serve`), s1 and
# s2 answering at once, s3 after SLOW_MS; shardgate (1 shard, CPU0) in front with each method in
# turn; a constant rate of RATE requests/s over 64 connections (open loop, latency corrected
# for coordinated omission) for DUR seconds. Reported per method: the share of requests s3
# got (from `show servers`), p50 / p99 / p99.9 latency, errors.
#
# Knobs: METHODS (default below), SLOW_MS (default 20), RATE (default 2000), DUR (default 8),
#   REPS (default 2), SKIP_BUILD=1, OUT=DIR.
# Output: bench/results/<date>-<time>-balance-skew/{meta.txt,runs.tsv,summary.md,raw/}.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
RUN=/tmp/sg-bench-skew

METHODS=${METHODS:-"round_robin least_requests by_requests least_time p2c"}
SLOW_MS=${SLOW_MS:-20}
RATE=${RATE:-2000}
DUR=${DUR:-8}
REPS=${REPS:-2}
PROXY_PORT=28150
BACKEND_PORTS=(29301 29302 29303)

STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/$STAMP-balance-skew}

log() { printf '[skew %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

declare -A PID=()
cleanup() {
    local rc=$? name
    trap - EXIT INT TERM
    for name in "${!PID[@]}"; do stop_pid "${PID[$name]}"; done
    exit "$rc"
}
trap cleanup EXIT INT TERM

mkdir -p "$OUT/raw" "$RUN/bin"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building (cargo build --release)"
    (cd "$ROOT" && cargo build --release -p shardgate -p loadgen 2>&1 | tail -n 2) >&2
fi
cp -f "$ROOT/target/release/shardgate" "$ROOT/target/release/loadgen" "$RUN/bin/"
for p in $PROXY_PORT "${BACKEND_PORTS[@]}"; do port_free "$p" || die "port $p is in use"; done

delays=(0 0 "$SLOW_MS")
for i in 0 1 2; do
    taskset -c 1 "$RUN/bin/loadgen" serve --listen "127.0.0.1:${BACKEND_PORTS[$i]}" --name "s$((i + 1))" \
        --delay "${delays[$i]}" > "$OUT/raw/backend-s$((i + 1)).log" 2>&1 &
    PID[s$i]=$!
done
for p in "${BACKEND_PORTS[@]}"; do wait_http "http://127.0.0.1:$p/" || die "backend on $p did not start"; done

{
    echo "date: $(date -Iseconds)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD)"
    echo "command: METHODS='$METHODS' SLOW_MS=$SLOW_MS RATE=$RATE DUR=$DUR REPS=$REPS bench/balance-skew.sh"
    echo "loadavg before: $(cat /proc/loadavg)"
} > "$OUT/meta.txt"
printf 'method\trep\trequests\terrors\tshare_s3\tp50_ms\tp99_ms\tp999_ms\n' > "$OUT/runs.tsv"

for ((rep = 1; rep <= REPS; rep++)); do
    for m in $METHODS; do
        cat > "$RUN/$m.toml" <<EOF
[daemon]
shards = 1
control_socket = "$RUN/ctl.sock"

[[http]]
name = "bench"
listen = ["127.0.0.1:$PROXY_PORT"]
default_pool = "app"

[pool.app]
balance = "$m"
servers = [
  { name = "s1", addr = "127.0.0.1:${BACKEND_PORTS[0]}" },
  { name = "s2", addr = "127.0.0.1:${BACKEND_PORTS[1]}" },
  { name = "s3", addr = "127.0.0.1:${BACKEND_PORTS[2]}" },
]
EOF
        taskset -c 0 "$RUN/bin/shardgate" --config "$RUN/$m.toml" > "$OUT/raw/$m-r$rep.log" 2>&1 &
        PID[proxy]=$!
        wait_http "http://127.0.0.1:$PROXY_PORT/" || die "shardgate ($m) did not start"
        # Warm-up (pools filled, EWMA seeded), then measure from the counters' current values.
        taskset -c 1 "$RUN/bin/loadgen" http -c 64 -R "$RATE" -d 1s "http://127.0.0.1:$PROXY_PORT/" > /dev/null 2>&1 || true
        before=$("$RUN/bin/shardgate" ctl --socket "$RUN/ctl.sock" 'show servers')
        taskset -c 1 "$RUN/bin/loadgen" http -c 64 -R "$RATE" -d "${DUR}s" --json "$OUT/raw/$m-r$rep.json" \
            "http://127.0.0.1:$PROXY_PORT/" > "$OUT/raw/$m-r$rep.txt" 2>&1 || true
        after=$("$RUN/bin/shardgate" ctl --socket "$RUN/ctl.sock" 'show servers')
        stop_pid "${PID[proxy]}"
        unset 'PID[proxy]'
        line=$(python3 - "$OUT/raw/$m-r$rep.json" "$before" "$after" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
def reqs(text):
    lines = text.strip().splitlines()
    head = lines[0].split()
    return {dict(zip(head, l.split()))["server"]: int(dict(zip(head, l.split()))["requests"]) for l in lines[1:]}
b, a = reqs(sys.argv[2]), reqs(sys.argv[3])
d = {k: a[k] - b.get(k, 0) for k in a}
total = sum(d.values()) or 1
lat = j["latency_ms"]
print(j["responses"], j["error_total"] + j["non_success"], f"{d.get('s3', 0) / total:.3f}",
      f"{lat['p50']:.2f}", f"{lat['p99']:.2f}", f"{lat['p99_9']:.2f}", sep="\t")
PY
        )
        printf '%s\t%s\t%s\n' "$m" "$rep" "$line" >> "$OUT/runs.tsv"
        log "$m rep $rep: $line"
    done
done
echo "loadavg after: $(cat /proc/loadavg)" >> "$OUT/meta.txt"

python3 - "$OUT" "$SLOW_MS" <<'PY' | tee "$OUT/summary.md"
import csv, statistics, sys
out, slow = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(out + "/runs.tsv"), delimiter="\t"))
print(f"# One server {slow} ms slower than the other two: who copes\n")
print("```\n" + open(out + "/meta.txt").read().strip() + "\n```\n")
print("Medians over reps. `share s3`: fraction of requests sent to the slow server (1/3 = blind).\n")
print("| method | share s3 | p50 ms | p99 ms | p99.9 ms | errors |")
print("|---|---|---|---|---|---|")
by = {}
for r in rows:
    by.setdefault(r["method"], []).append(r)
for m, rs in by.items():
    med = lambda k: statistics.median(float(r[k]) for r in rs)
    print(f"| {m} | {med('share_s3'):.3f} | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} | {med('p999_ms'):.2f} | {int(max(float(r['errors']) for r in rs))} |")
PY
grep -rl "$ROOT" "$OUT" 2>/dev/null | xargs -r sed -i "s#$ROOT#.#g"
log "results in ${OUT#"$ROOT"/}"
