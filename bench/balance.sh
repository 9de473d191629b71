#!/usr/bin/env bash
# CPU per request of each balancing method and each sticky mode, against round_robin, in one
# interleaved run on this machine.
#
# One shardgate process per variant (all started at once, each on its own port, all pinned to
# CPU0 like bench/compare.sh), every pool with the same three servers (all the one nginx
# backend of bench/compare.sh, pinned to CPU1, under three names: the balancing logic runs in
# full, and the backend is the same for every variant). Per rep and variant: wrk -t1 -c64 for
# DUR seconds on a tiny body; proxy CPU = on-CPU time of its threads (schedstat) ÷ requests.
# Reps are interleaved (variant order rotates each rep), so drift in the machine's speed hits
# every variant alike; the summary gives the median of each variant and its paired ratio to
# round_robin per rep.
#
# Knobs: REPS (default 5), DUR (seconds, default 5), VARIANTS (default: all below),
#   SKIP_BUILD=1 (use target/release as is), OUT=DIR.
# Output: bench/results/<date>-<time>-balance/{meta.txt,runs.tsv,summary.md,raw/}.
# Every process started here is stopped by its PID on exit.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
CONF=$ROOT/bench/configs
RUN=/tmp/sg-bench-balance

REPS=${REPS:-5}
DUR=${DUR:-5}
ALL="round_robin least_requests by_requests by_traffic least_time p2c hash_uri sticky_app_cookie sticky_insert_cookie sticky_source_ip"
VARIANTS=${VARIANTS:-$ALL}
CONNS=64
PROXY_CPU=0
SIDE_CPU=1
BACKEND_PORT=29200
FIRST_PORT=28100

STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/$STAMP-balance}

log() { printf '[balance %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

declare -A PID=()
declare -A PORT=()
declare -A HDR=()
CLIENT_PID=""

cleanup() {
    local rc=$? name p kids
    trap - EXIT INT TERM
    [[ -n $CLIENT_PID ]] && stop_pid "$CLIENT_PID"
    for name in "${!PID[@]}"; do
        p=${PID[$name]}
        kids=$(cat /proc/"$p"/task/*/children 2>/dev/null || true)
        stop_pid "$p"
        for k in $kids; do stop_pid "$k"; done
    done
    exit "$rc"
}
trap cleanup EXIT INT TERM

for t in wrk nginx taskset curl python3; do
    command -v "$t" >/dev/null || die "$t is missing (bench/README.md lists what to install)"
done

# The pool section of each variant, and the header wrk sends with it.
pool_of() {
    case $1 in
        round_robin | least_requests | by_requests | by_traffic | least_time | p2c)
            echo "balance = \"$1\"" ;;
        hash_uri) printf 'balance = "hash"\nhash_key = "uri"\n' ;;
        sticky_app_cookie)
            printf '[pool.app.sticky]\nmode = "app_cookie"\ncookie = "JSESSIONID"\n' ;;
        sticky_insert_cookie)
            printf '[pool.app.sticky]\nmode = "insert_cookie"\ncookie = "SGROUTE"\n' ;;
        sticky_source_ip)
            printf '[pool.app.sticky]\nmode = "source_ip"\n' ;;
        *) die "unknown variant $1 (known: $ALL)" ;;
    esac
}

header_of() {
    case $1 in
        # A session of the second server, as its application would have set it.
        sticky_app_cookie) echo "Cookie: JSESSIONID=0123456789ABCDEF.s2" ;;
        # A client that got our cookie earlier: routed by it, and it is stripped upstream.
        sticky_insert_cookie) echo "Cookie: theme=dark; SGROUTE=s2; lang=en" ;;
        *) echo "" ;;
    esac
}

write_config() {
    local v=$1 port=$2 pool keys="" sub=""
    pool=$(pool_of "$v")
    # Keys of [pool.app] itself, or a subtable ([pool.app.sticky]) that follows it.
    if [[ $pool == "[pool.app."* ]]; then sub=$pool; else keys=$pool; fi
    cat > "$RUN/$v.toml" <<EOF
[daemon]
shards = 1
control_socket = "$RUN/$v.sock"

[[http]]
name = "bench"
listen = ["127.0.0.1:$port"]
default_pool = "app"

[pool.app]
max_connections_per_server = 512
$keys
servers = [
  { name = "s1", addr = "127.0.0.1:$BACKEND_PORT" },
  { name = "s2", addr = "127.0.0.1:$BACKEND_PORT" },
  { name = "s3", addr = "127.0.0.1:$BACKEND_PORT" },
]
$sub
EOF
}

mkdir -p "$OUT/raw" "$RUN"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building (cargo build --release)"
    (cd "$ROOT" && cargo build --release -p shardgate 2>&1 | tail -n 2) >&2
fi
mkdir -p "$RUN/bin"
cp -f "$ROOT/target/release/shardgate" "$RUN/bin/"
ulimit -n "$(ulimit -Hn)"

port_free $BACKEND_PORT || die "port $BACKEND_PORT is in use"
rm -rf "$RUN/backend"
mkdir -p "$RUN/backend/logs" "$RUN/backend/tmp" "$RUN/backend/html"
chmod 755 "$RUN" "$RUN/backend" "$RUN/backend/html"
taskset -c $SIDE_CPU nginx -p "$RUN/backend/" -e logs/error.log -c "$CONF/backend-nginx.conf" \
    > "$OUT/raw/backend.log" 2>&1 &
PID[backend]=$!
wait_http "http://127.0.0.1:$BACKEND_PORT/" || die "backend nginx did not start"

port=$FIRST_PORT
for v in $VARIANTS; do
    port_free $port || die "port $port is in use"
    PORT[$v]=$port
    HDR[$v]=$(header_of "$v")
    write_config "$v" "$port"
    "$RUN/bin/shardgate" --check --config "$RUN/$v.toml" > /dev/null 2>&1 \
        || die "config of $v refused: $("$RUN/bin/shardgate" --check --config "$RUN/$v.toml" 2>&1 | tail -n 1)"
    taskset -c $PROXY_CPU "$RUN/bin/shardgate" --config "$RUN/$v.toml" > "$OUT/raw/$v.log" 2>&1 &
    PID[$v]=$!
    port=$((port + 1))
done
for v in $VARIANTS; do
    wait_http "http://127.0.0.1:${PORT[$v]}/" || die "$v did not start (raw/$v.log)"
done

{
    echo "date: $(date -Iseconds)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD)"
    echo "command: REPS=$REPS DUR=$DUR VARIANTS='$VARIANTS' bench/balance.sh"
    echo "loadavg before: $(cat /proc/loadavg)"
} > "$OUT/meta.txt"

printf 'variant\trep\trequests\tcpu_ns\n' > "$OUT/runs.tsv"
read -r -a order <<< "$VARIANTS"
n=${#order[@]}
for ((rep = 1; rep <= REPS; rep++)); do
    for ((i = 0; i < n; i++)); do
        v=${order[$(((i + rep - 1) % n))]}
        p=${PID[$v]}
        settle "$p"
        c0=$(cpu_ns "$p")
        args=(-t1 -c$CONNS -d"${DUR}s")
        [[ -n ${HDR[$v]} ]] && args+=(-H "${HDR[$v]}")
        taskset -c $SIDE_CPU wrk "${args[@]}" "http://127.0.0.1:${PORT[$v]}/" > "$OUT/raw/$v-r$rep.txt" 2>&1 &
        CLIENT_PID=$!
        wait "$CLIENT_PID" || true
        CLIENT_PID=""
        settle "$p"
        c1=$(cpu_ns "$p")
        req=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$OUT/raw/$v-r$rep.txt")
        non=$(sed -n 's/^ *Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' "$OUT/raw/$v-r$rep.txt")
        [[ -z $non ]] || die "$v rep $rep: $non non-2xx responses (raw/$v-r$rep.txt)"
        printf '%s\t%s\t%s\t%s\n' "$v" "$rep" "${req:-0}" "$((c1 - c0))" >> "$OUT/runs.tsv"
        log "$v rep $rep: ${req:-0} requests, $(( (c1 - c0) / ${req:-1} )) ns/request"
    done
done
echo "loadavg after: $(cat /proc/loadavg)" >> "$OUT/meta.txt"
# Every variant must have spread its requests as configured: show where they went.
for v in $VARIANTS; do
    echo "## $v" >> "$OUT/raw/servers.txt"
    "$RUN/bin/shardgate" ctl --socket "$RUN/$v.sock" 'show servers' >> "$OUT/raw/servers.txt" 2>&1 || true
done

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import csv, statistics, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(out + "/runs.tsv"), delimiter="\t"))
us = {}
for r in rows:
    us.setdefault(r["variant"], {})[int(r["rep"])] = int(r["cpu_ns"]) / max(1, int(r["requests"])) / 1000
meta = open(out + "/meta.txt").read()
print("# CPU per request by balancing method and sticky mode\n")
print("```\n" + meta.strip() + "\n```\n")
print("Proxy CPU µs per request (median of reps), and the median over reps of the paired ratio to")
print("round_robin in the same rep (< 1 is cheaper).\n")
print("| variant | µs/request | ÷ round_robin | per rep |")
print("|---|---|---|---|")
base = us.get("round_robin", {})
for v, reps in us.items():
    med = statistics.median(reps.values())
    ratios = [reps[k] / base[k] for k in reps if k in base and base[k] > 0]
    ratio = f"{statistics.median(ratios):.3f}" if ratios and v != "round_robin" else ""
    per = " / ".join(f"{reps[k]:.2f}" for k in sorted(reps))
    print(f"| {v} | {med:.2f} | {ratio} | {per} |")
PY
# Results name the checkout as ".", never an absolute path.
grep -rl "$ROOT" "$OUT" 2>/dev/null | xargs -r sed -i "s#$ROOT#.#g"
log "results in ${OUT#"$ROOT"/}"
