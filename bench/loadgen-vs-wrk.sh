#!/usr/bin/env bash
# Client cost benchmark: loadgen vs wrk vs oha against the same `loadgen serve` backend.
#
# Layout (2-core machine): the backend is pinned to CPU1, each client to CPU0 with one thread,
# same connection count for all. Each run lasts RUN seconds; over a window inside it (from
# SKIP s to RUN-1 s) we read the client's on-CPU time (utime+stime from /proc/PID/stat) and the
# backend's served-request counter (/__stats), so every tool is measured the same way, by a
# count that is not the tool's own word:
#   client CPU µs per request = Δ(client utime+stime) / Δ(requests served)
#   req/s                     = Δ(requests served) / Δt
# Tools run interleaved (loadgen wrk oha, loadgen wrk oha, ...) REPS times per setting.
#
#   bench/loadgen-vs-wrk.sh            writes bench/results/loadgen-vs-wrk.{raw.txt,md}
# Needs: wrk (apt-get install -y wrk), oha (cargo install oha --locked; OHA=path to override).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
RUN=${RUN:-10}
SKIP=${SKIP:-2}
CONNS=${CONNS:-"64 1000"}
PORT=${PORT:-19555}
OHA=${OHA:-$(command -v oha || echo /tmp/oha-root/bin/oha)}
LOADGEN=target/release/loadgen
OUT=${OUT:-bench/results}
RAW=$OUT/loadgen-vs-wrk.raw.txt
MD=$OUT/loadgen-vs-wrk.md

[ -n "${NO_BUILD:-}" ] || cargo build --release -p loadgen
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
[ -x "$OHA" ] || { echo "oha missing: cargo install oha --locked" >&2; exit 2; }
mkdir -p "$OUT"
TCK=$(getconf CLK_TCK)
URL="http://127.0.0.1:$PORT/"

serve_pid=""
client_pid=""
cleanup() {
    [ -n "$client_pid" ] && kill -TERM "$client_pid" 2>/dev/null || true
    [ -n "$serve_pid" ] && kill -TERM "$serve_pid" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

taskset -c 1 "$LOADGEN" serve --listen "127.0.0.1:$PORT" --name bench >/dev/null &
serve_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

cpu_ticks() { # pid -> utime+stime in clock ticks (fields 14, 15; comm may contain spaces)
    cut -d')' -f2- "/proc/$1/stat" | awk '{print $12 + $13}'
}
served() {
    exec 3<>"/dev/tcp/127.0.0.1/$PORT"
    printf 'GET /__stats HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n' >&3
    tr -d '\r' <&3 | tail -n 1 | sed 's/.*"requests":\([0-9]*\).*/\1/'
    exec 3<&-
}
now() { date +%s.%N; }

start_client() { # tool conns
    case $1 in
    loadgen) taskset -c 0 "$LOADGEN" http -c "$2" -t 1 -d "${RUN}s" --timeout 30s "$URL" >/dev/null ;;
    wrk) taskset -c 0 wrk -c "$2" -t 1 -d "${RUN}s" --timeout 30s "$URL" >/dev/null ;;
    oha) taskset -c 0 "$OHA" -c "$2" --worker-threads 1 -z "${RUN}s" --no-tui "$URL" >/dev/null ;;
    esac
}

{
    echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) cores; backend: loadgen serve pinned to CPU1; clients pinned to CPU0, 1 thread"
    echo "# loadgen $("$LOADGEN" --version | cut -d' ' -f2), $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2), $("$OHA" --version)"
    echo "# window: ${SKIP}s..$((RUN - 1))s of each ${RUN}s run; CLK_TCK=$TCK"
    echo "tool conns rep window_s requests client_cpu_s client_us_per_req req_per_s serve_us_per_req"
} >"$RAW"

for c in $CONNS; do
    for rep in $(seq "$REPS"); do
        for tool in loadgen wrk oha; do
            start_client "$tool" "$c" &
            client_pid=$!
            # The subshell's child is the tool itself (taskset execs it).
            sleep "$SKIP"
            pid=$(pgrep -P "$client_pid" | head -n1 || true)
            [ -n "$pid" ] || pid=$client_pid
            c0=$(cpu_ticks "$pid"); s0=$(cpu_ticks "$serve_pid"); r0=$(served); t0=$(now)
            sleep $((RUN - 1 - SKIP))
            c1=$(cpu_ticks "$pid"); s1=$(cpu_ticks "$serve_pid"); r1=$(served); t1=$(now)
            wait "$client_pid" || true
            client_pid=""
            awk -v tool="$tool" -v c="$c" -v rep="$rep" -v c0="$c0" -v c1="$c1" -v s0="$s0" -v s1="$s1" \
                -v r0="$r0" -v r1="$r1" -v t0="$t0" -v t1="$t1" -v tck="$TCK" 'BEGIN {
                n = r1 - r0; dt = t1 - t0; cpu = (c1 - c0) / tck; scpu = (s1 - s0) / tck
                printf "%s %d %d %.3f %d %.2f %.3f %.0f %.3f\n", tool, c, rep, dt, n, cpu, cpu * 1e6 / n, n / dt, scpu * 1e6 / n
            }' >>"$RAW"
            tail -n1 "$RAW"
            sleep 1
        done
    done
done

# Summary: medians per tool and connection count, and the ratio to loadgen.
{
    echo "# loadgen vs wrk vs oha: client CPU per request"
    echo
    echo "Same \`loadgen serve\` backend (pinned to CPU1); each client pinned to CPU0 with one thread;"
    echo "medians of $REPS interleaved runs of ${RUN}s, measured over ${SKIP}s..$((RUN - 1))s of each run."
    echo "Requests are counted by the backend, CPU time from /proc/PID/stat. Raw data: \`loadgen-vs-wrk.raw.txt\`."
    echo "Command: \`bench/loadgen-vs-wrk.sh\`"
    echo
    echo "Read the CPU column: req/s on a shared 2-core machine is set as much by what else runs on the"
    echo "two cores as by the tools (see client_cpu_s in the raw data: a client rarely had its core to"
    echo "itself); CPU time per request is what a client costs, whatever else runs."
    echo
    echo "| connections | tool | client CPU µs/request | req/s | vs loadgen (CPU/request) |"
    echo "|---|---|---|---|---|"
    grep -v '^#' "$RAW" | tail -n +2 | sort -k2,2n -k1,1 |
        awk '
        function median(arr, n,   i, j, t) {
            for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
            return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
        }
        { key = $2 " " $1; n[key]++; us[key, n[key]] = $7; rps[key, n[key]] = $8; keys[key] = 1 }
        END {
            for (k in keys) {
                split(k, kk, " "); m = n[k]
                for (i = 1; i <= m; i++) { a[i] = us[k, i]; b[i] = rps[k, i] }
                mu[k] = median(a, m); mr[k] = median(b, m)
            }
            split("loadgen wrk oha", tools, " ")
            for (k in keys) { split(k, kk, " "); conns[kk[1]] = 1 }
            nc = 0; for (c in conns) cl[++nc] = c + 0
            for (i = 2; i <= nc; i++) { t = cl[i]; for (j = i - 1; j >= 1 && cl[j] > t; j--) cl[j + 1] = cl[j]; cl[j + 1] = t }
            for (ci = 1; ci <= nc; ci++) for (ti = 1; ti <= 3; ti++) {
                k = cl[ci] " " tools[ti]; if (!(k in mu)) continue
                base = mu[cl[ci] " loadgen"]
                printf "| %d | %s | %.2f | %.0f | %.2fx |\n", cl[ci], tools[ti], mu[k], mr[k], mu[k] / base
            }
        }'
} >"$MD"
cat "$MD"
