#!/usr/bin/env bash
# mysql-compare.sh: shardgate's MySQL pass-through against HAProxy 2.6 in TCP mode and against a
# direct connection, in ONE interleaved run (method: PERF.md, conventions: compare.sh). The proxy
# under test is pinned to CPU0 (shardgate: 1 shard; HAProxy: nbthread 1); MariaDB 10.11 and
# sysbench share CPU1; every target gets the same server, tables and sysbench settings; "direct"
# (sysbench straight to MariaDB) is the ceiling. The figure that holds on a shared 2-core box is
# proxy CPU time per query: schedstat ns of every thread of the proxy before and after a run,
# divided by sysbench's query count (utime+stime recorded as a cross-check).
#
# Usage:  bench/mysql-compare.sh            full run (3 reps x 3 workloads x 3 targets, 20 s each,
#                                           about 10 minutes without the build)
#         QUICK=1 bench/mysql-compare.sh    smoke run (1 rep, 5 s runs, about 1.5 minutes)
# Knobs (environment): REPS, DUR (seconds per run), THREADS (sysbench, 8; up to 500 works for
#   every target), TABLES (4), ROWS (10000 per table), TARGETS="direct haproxy shardgate" (also:
#   shardgate-epoll, the same binary with io_driver = "epoll"; shardgate-base, the binary
#   BASE_BIN=/path/to/shardgate with the same config; shardgate-cache, the same binary with a
#   query cache rule on the point select; shardgate-mux, the same binary with multiplex = true
#   and at most MUX_SERVER_CONNS (32) server connections for sg_a, text workloads only),
#   WORKLOADS="ro-text ro-ps point-text" (also: point-ps), SKIP_BUILD=1 (use the built binary as
#   is), CARGO_TARGET_DIR (cargo's own knob: built and copied from there instead of ./target),
#   OUT=DIR, PORT_OFFSET=N (listen on 23306+N..23311+N instead of the configs' 23306..23311,
#   when someone else holds those).
# Every run also samples, once a second on CPU1, how many connections MariaDB holds for sg_a
# (information_schema.PROCESSLIST, asked as sg_root): "server connections" in the summary.
# Output: bench/results/<date>-<time>-mysql-compare/{meta.txt,runs.tsv,summary.md,raw/}; the
# summary is printed at the end. `bench/mysql-compare.sh --summarize DIR` rebuilds it.
# Every process started here is stopped by its PID on exit (MariaDB through mariadb.sh stop).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
CONF=$ROOT/bench/configs
# Fixed: bench/configs/mysql-shardgate.toml names its control socket inside this directory.
RUN=/tmp/sg-mybench

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    REPS=${REPS:-1}; DUR=${DUR:-5}
else
    REPS=${REPS:-3}; DUR=${DUR:-20}
fi
THREADS=${THREADS:-8}
TABLES=${TABLES:-4}
ROWS=${ROWS:-10000}
TARGETS=${TARGETS:-"direct haproxy shardgate"}
WORKLOADS=${WORKLOADS:-"ro-text ro-ps point-text"}
PROXY_CPU=0
HZ=$(getconf CLK_TCK)
SIDE_CPU=1
# The configs listen on 23306..23310; PORT_OFFSET moves all of them (rewritten in the copies).
PORT_OFFSET=${PORT_OFFSET:-0}
SG_PORT=$((23306 + PORT_OFFSET))
HA_PORT=$((23307 + PORT_OFFSET))
SGE_PORT=$((23308 + PORT_OFFSET))
SGB_PORT=$((23309 + PORT_OFFSET))
SGC_PORT=$((23310 + PORT_OFFSET))
SGM_PORT=$((23311 + PORT_OFFSET))
ALL_PORTS="$SG_PORT $HA_PORT $SGE_PORT $SGB_PORT $SGC_PORT $SGM_PORT"
# shardgate-mux: sg_a's server connections at most (max_server_connections in the config copy).
MUX_SERVER_CONNS=${MUX_SERVER_CONNS:-32}
# cargo's target directory (CARGO_TARGET_DIR is cargo's own variable; relative: to the checkout).
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
DB_USER=sg_a
DB_PASS=pw_a
DB_NAME=sbtest
# The sampler's login (tests/support/mariadb.sh creates it): it is not counted (USER='sg_a' only).
DB_ROOT_USER=sg_root
DB_ROOT_PASS=pw_root
declare -A PORT=([shardgate]=$SG_PORT [haproxy]=$HA_PORT [shardgate-epoll]=$SGE_PORT [shardgate-base]=$SGB_PORT
    [shardgate-cache]=$SGC_PORT [shardgate-mux]=$SGM_PORT)
# shardgate targets: config file and control socket (fixed in that config); binary (a copy in
# $RUN/bin: shardgate-base runs BASE_BIN, the others target/release/shardgate).
SG_TARGETS="shardgate shardgate-epoll shardgate-base shardgate-cache shardgate-mux"
declare -A SG_CONF=([shardgate]=mysql-shardgate.toml [shardgate-epoll]=mysql-shardgate-epoll.toml
    [shardgate-base]=mysql-shardgate-base.toml [shardgate-cache]=mysql-shardgate-cache.toml
    [shardgate-mux]=mysql-shardgate-mux.toml)
declare -A SG_SOCK=([shardgate]=$RUN/ctl.sock [shardgate-epoll]=$RUN/ctl-epoll.sock [shardgate-base]=$RUN/ctl-base.sock
    [shardgate-cache]=$RUN/ctl-cache.sock [shardgate-mux]=$RUN/ctl-mux.sock)
declare -A SG_BIN=([shardgate]=shardgate [shardgate-epoll]=shardgate [shardgate-base]=shardgate-base
    [shardgate-cache]=shardgate [shardgate-mux]=shardgate)
# Targets whose server connections outlive their clients (pooled, idle between runs): they are
# the only ones holding sg_a connections on MariaDB before another target's run starts.
MUX_TARGETS="shardgate-mux"
declare -A SB_TEST=([ro-text]=oltp_read_only [ro-ps]=oltp_read_only [point-text]=oltp_point_select [point-ps]=oltp_point_select)
declare -A SB_PS=([ro-text]=disable [ro-ps]=auto [point-text]=disable [point-ps]=auto)

STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/$STAMP-mysql-compare}

log() { printf '[mysql-compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes: every PID we start is recorded and stopped (SIGTERM, then SIGKILL) on exit.
declare -A PID=()
CLIENT_PID=""
SAMPLER_PID=""
DB_ENV=""
DB_MINE=0


cleanup() {
    local rc=$? name
    trap - EXIT INT TERM
    [[ -n $CLIENT_PID ]] && stop_pid "$CLIENT_PID"
    [[ -n $SAMPLER_PID ]] && stop_pid "$SAMPLER_PID"
    for name in "${!PID[@]}"; do stop_pid "${PID[$name]}"; done
    # mariadb.sh stops the server by the PID it recorded in the env file. The folder only when
    # this run made it: one that stopped early (a refused knob) must not delete the database of
    # a run still going (start_all clears a leftover one).
    if [[ -n $DB_ENV && -f $DB_ENV ]]; then
        "$ROOT/tests/support/mariadb.sh" stop "$DB_ENV" 2>/dev/null || true
    fi
    [[ $DB_MINE == 1 ]] && rm -rf "$RUN/mariadb"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM



# "busy total" jiffies of one CPU from /proc/stat (busy = everything but idle and iowait): how
# much of CPU0/CPU1 was in use during a run, ours and other people's.
cpu_jiffies() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}


db() { # port sql...: one query through the given port, tab-separated, no headers
    local port=$1; shift
    mariadb --connect-timeout=5 -h127.0.0.1 -P"$port" -u"$DB_USER" -p"$DB_PASS" -N -B "$DB_NAME" -e "$*"
}

# sed script for a config copy: shardgate-mux's server connection bound, MariaDB's port, and each
# fixed listen port moved by PORT_OFFSET (`t` ends the line after one rewrite, so 23306 -> 23307
# is not rewritten again).
conf_sed() {
    local e="s/^max_server_connections = [0-9]*\$/max_server_connections = $MUX_SERVER_CONNS/;t;s/@BACKEND_PORT@/$DB_PORT/;" p
    for p in 23306 23307 23308 23309 23310 23311; do e+="s/127\.0\.0\.1:$p\b/127.0.0.1:$((p + PORT_OFFSET))/;t;"; done
    echo "$e"
}

# sg_a's connections on MariaDB right now (asked straight on its port as sg_root); NA on failure.
server_conns() {
    mariadb --connect-timeout=2 -h127.0.0.1 -P"$DB_PORT" -u"$DB_ROOT_USER" -p"$DB_ROOT_PASS" -N -B \
        -e "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER='$DB_USER'" 2>/dev/null || echo NA
}

# Run in the background beside sysbench (pinned to CPU1 by the caller): one line "epoch count" a
# second into $1 during sysbench's measured DUR seconds only. They start when sysbench, its
# threads connected, prints "Threads started!" into $2 (500 connections take a second or more,
# longer through a busy proxy); the first sample is half a second in, the last one starts at
# least 0.3 s before the end (after it, sysbench finishes its last transactions and
# disconnects, which would drag the mean down).
conn_sampler() {
    trap - EXIT INT TERM
    local i end
    for ((i = 0; i < 1200; i++)); do
        grep -q '^Threads started!' "$2" 2>/dev/null && break
        sleep 0.1
    done
    end=$((${EPOCHREALTIME/./} + DUR * 1000000 - 300000))
    sleep 0.5
    while ((${EPOCHREALTIME/./} < end)); do
        printf '%s %s\n' "$EPOCHREALTIME" "$(server_conns)" >> "$1"
        sleep 1
    done
}

sg_ctl() { local t=$1; shift; "$RUN/bin/${SG_BIN[$t]}" ctl --socket "${SG_SOCK[$t]}" "$@"; }

# ---------------------------------------------------------------------------------------------
ensure_tools() {
    local need=() sudo=""
    command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
    command -v python3 >/dev/null || need+=(python3)
    command -v ss >/dev/null || need+=(iproute2)
    command -v taskset >/dev/null || need+=(util-linux)
    if ((${#need[@]})); then
        [[ $(id -u) -ne 0 ]] && sudo=sudo
        log "installing: ${need[*]}"
        { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
            || die "apt-get install ${need[*]} failed"
    fi
    export PATH=$PATH:/usr/sbin:/sbin
    # MariaDB server + client and sysbench (Debian packages) when missing.
    "$ROOT/tests/support/mariadb.sh" install || die "could not install MariaDB / sysbench"
}

build() {
    local i
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        for ((i = 1; i <= 5; i++)); do
            (cd "$ROOT" && cargo build --release 2>&1 | tail -n 3) && [[ -x $TARGET_DIR/release/shardgate ]] && break
            ((i == 5)) && die "cargo build --release failed 5 times"
            log "build failed (someone mid-edit?), retrying in 60 s"
            sleep 60
        done
    fi
    # A copy: a rebuild during the run must not change the binary under test.
    mkdir -p "$RUN/bin"
    [[ -x $TARGET_DIR/release/shardgate ]] || die "no $TARGET_DIR/release/shardgate (SKIP_BUILD=1 without a build? CARGO_TARGET_DIR?)"
    cp -f "$TARGET_DIR/release/shardgate" "$RUN/bin/"
    if [[ " $TARGETS " == *" shardgate-base "* ]]; then
        [[ -x ${BASE_BIN:-} ]] || die "TARGETS has shardgate-base: set BASE_BIN=/path/to/shardgate (the binary to compare against)"
        cp -f "$BASE_BIN" "$RUN/bin/shardgate-base"
    fi
}

# ---------------------------------------------------------------------------------------------
start_all() {
    local p t
    for p in $ALL_PORTS; do
        # SO_REUSEPORT listeners (shardgate, HAProxy) would silently share a busy port.
        port_free "$p" || die "port $p is already in use: $(ss -Hltnp "sport = :$p" | head -n 1)"
    done
    DB_MINE=1
    rm -rf "$RUN/mariadb" "${SG_SOCK[@]}"
    ulimit -n "$(ulimit -Hn)"

    # MariaDB on CPU1: the affinity is inherited by the mariadbd that mariadb.sh starts (setsid);
    # it is set again on every thread below in case the script ever changes how it launches.
    log "starting MariaDB (tests/support/mariadb.sh start 1 $RUN/mariadb)"
    DB_ENV=$(taskset -c $SIDE_CPU "$ROOT/tests/support/mariadb.sh" start 1 "$RUN/mariadb" 2> "$OUT/raw/mariadb-start.log") \
        || die "MariaDB did not start (raw/mariadb-start.log)"
    cp -f "$DB_ENV" "$OUT/raw/mariadb.env"
    DB_PORT=$(sed -n 's/^MARIADB_PORT_0=//p' "$DB_ENV" | tail -n 1)
    DB_PID=$(sed -n 's/^MARIADB_PID_0=//p' "$DB_ENV" | tail -n 1)
    [[ -n $DB_PORT && -n $DB_PID ]] || die "no port/PID in $DB_ENV"
    [[ " $ALL_PORTS " != *" $DB_PORT "* ]] || die "MariaDB picked port $DB_PORT, one of ours; rerun"
    PORT[direct]=$DB_PORT
    taskset -a -pc $SIDE_CPU "$DB_PID" > /dev/null

    sed "$(conf_sed)" "$CONF/mysql-haproxy.cfg" > "$RUN/haproxy.cfg"
    cp -f "$RUN/haproxy.cfg" "$OUT/raw/"

    if [[ " $TARGETS " == *" haproxy "* ]]; then
        taskset -c $PROXY_CPU haproxy -db -f "$RUN/haproxy.cfg" > "$OUT/raw/haproxy.log" 2>&1 &
        PID[haproxy]=$!
    fi
    for t in $SG_TARGETS; do
        [[ " $TARGETS " == *" $t "* ]] || continue
        sed "$(conf_sed)" "$CONF/${SG_CONF[$t]}" > "$RUN/$t.toml"
        cp -f "$RUN/$t.toml" "$OUT/raw/"
        taskset -c $PROXY_CPU "$RUN/bin/${SG_BIN[$t]}" --config "$RUN/$t.toml" > "$OUT/raw/$t.log" 2>&1 &
        PID[$t]=$!
    done

    # Tables once, straight to the server (sysbench on CPU1).
    log "sysbench prepare: $TABLES tables x $ROWS rows"
    taskset -c $SIDE_CPU sysbench oltp_read_only "${SB_COMMON[@]}" --mysql-port="$DB_PORT" --threads="$TABLES" \
        prepare > "$OUT/raw/sysbench-prepare.txt" 2>&1 || die "sysbench prepare failed (raw/sysbench-prepare.txt)"

    # Every target must answer the same thing before anything is measured.
    local want got i
    want=$(db "$DB_PORT" "SELECT COUNT(*), SUM(k) FROM sbtest1")
    for t in $TARGETS; do
        [[ $t == direct ]] && continue
        got=""
        for ((i = 0; i < 50; i++)); do
            got=$(db "${PORT[$t]}" "SELECT COUNT(*), SUM(k) FROM sbtest1" 2>/dev/null) && break
            sleep 0.1
        done
        [[ $got == "$want" ]] || die "$t does not relay a query intact (got '$got', want '$want'; raw/$t.log)"
    done
}


# One measured run: appends one TSV line to runs.tsv.
run_one() {
    local wl=$1 target=$2 rep=$3
    local raw="$OUT/raw/$wl-$target-r$rep"
    local port=${PORT[$target]} mpid=""
    [[ $target != direct ]] && mpid=${PID[$target]}
    if [[ $target == shardgate* ]]; then sg_ctl "$target" 'show traffic mysql' > "$raw.traffic-before.txt" 2>&1 || true; fi
    if [[ $target == shardgate-cache ]]; then sg_ctl "$target" 'show cache mysql' > "$raw.cache-before.txt" 2>&1 || true; fi
    if [[ " $MUX_TARGETS " == *" $target "* ]]; then sg_ctl "$target" 'show pool mysql' > "$raw.pool-before.txt" 2>&1 || true; fi

    # sg_a's connections before sysbench starts: the idle pools of multiplexing targets (their
    # own before their own run, someone else's before anyone else's).
    local conns_before
    conns_before=$(server_conns)
    : > "$raw.conns.txt"
    : > "$raw.txt"
    conn_sampler "$raw.conns.txt" "$raw.txt" &
    SAMPLER_PID=$!
    taskset -pc $SIDE_CPU "$SAMPLER_PID" > /dev/null

    local p0=0 t0=0 b0 c0 c1
    if [[ -n $mpid ]]; then p0=$(cpu_ns "$mpid"); t0=$(tick_ns "$mpid"); fi
    # MariaDB by utime+stime of the process: it counts the threads that exit during the run
    # (one per connection beyond thread_cache_size, e.g. ~480 of 500 at the end of every run),
    # which a schedstat sum over the live threads would lose.
    b0=$(tick_ns "$DB_PID")
    c0=$(cpu_jiffies $PROXY_CPU); c1=$(cpu_jiffies $SIDE_CPU)

    taskset -c $SIDE_CPU sysbench "${SB_TEST[$wl]}" "${SB_COMMON[@]}" --mysql-port="$port" --threads="$THREADS" \
        --time="$DUR" --events=0 --report-interval=0 --percentile=95 --db-ps-mode="${SB_PS[$wl]}" \
        run > "$raw.txt" 2>&1 &
    CLIENT_PID=$!
    local crc=0
    wait "$CLIENT_PID" || crc=$?
    CLIENT_PID=""
    stop_pid "$SAMPLER_PID"
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    # max, mean and count of the samples taken during the run.
    local conns
    conns=$(awk '$2 ~ /^[0-9]+$/ { n++; s += $2; if ($2 > m) m = $2 }
        END { if (n) printf "%d %.1f %d", m, s / n, n; else print "NA NA 0" }' "$raw.conns.txt")

    local p1=0 t1=0 b1 c0b c1b
    if [[ -n $mpid ]]; then settle "$mpid"; p1=$(cpu_ns "$mpid"); t1=$(tick_ns "$mpid"); fi
    b1=$(tick_ns "$DB_PID")
    c0b=$(cpu_jiffies $PROXY_CPU); c1b=$(cpu_jiffies $SIDE_CPU)
    local load1
    load1=$(cut -d' ' -f1 /proc/loadavg)
    if [[ $target == shardgate* ]]; then sg_ctl "$target" 'show traffic mysql' > "$raw.traffic.txt" 2>&1 || true; fi
    if [[ $target == shardgate-cache ]]; then sg_ctl "$target" 'show cache mysql' > "$raw.cache.txt" 2>&1 || true; fi
    if [[ " $MUX_TARGETS " == *" $target "* ]]; then sg_ctl "$target" 'show pool mysql' > "$raw.pool.txt" 2>&1 || true; fi

    # sysbench's output -> transactions elapsed_s queries errors reconnects lat_avg_ms lat_p95_ms;
    # for shardgate also its own count of sg_a's queries (COM_QUERY or COM_STMT_EXECUTE) and
    # errors during the run, from `show traffic mysql` before and after; for shardgate-cache the
    # run's cache hits and misses (`show cache mysql` before and after, summed over the rules).
    local parsed
    parsed=$(python3 - "$raw" "$target" "${SB_PS[$wl]}" "$DB_USER" <<'PY'
import os, re, sys
raw, target, ps, user = sys.argv[1:5]
t = open(raw + ".txt").read()
def grab(pat, cast=float):
    m = re.search(pat, t, re.M)
    return cast(m.group(1)) if m else None
tx = grab(r"^\s+transactions:\s+(\d+)", int)
q = grab(r"^\s+total:\s+(\d+)", int)
el = grab(r"^\s+total time:\s+([\d.]+)s")
ign = grab(r"^\s+ignored errors:\s+(\d+)", int)
rec = grab(r"^\s+reconnects:\s+(\d+)", int)
avg = grab(r"^\s+avg:\s+([\d.]+)")
p95 = grab(r"^\s+95th percentile:\s+([\d.]+)")
def traffic(path):
    # The user's line: user connections requests errors ... commands (k=v,k=v)
    if not os.path.exists(path):
        return None
    for line in open(path):
        f = line.split()
        if f and f[0] == user and len(f) > 4:
            cmds = dict(kv.split("=", 1) for kv in f[-1].split(",") if "=" in kv)
            return int(cmds.get("query" if ps == "disable" else "stmt_execute", 0)), int(f[3])
    return (0, 0)
sgq = sge = None
if target.startswith("shardgate"):
    a, b = traffic(raw + ".traffic-before.txt"), traffic(raw + ".traffic.txt")
    if a is not None and b is not None:
        sgq, sge = b[0] - a[0], b[1] - a[1]
def cache(path):
    # frontend rule ttl_ms hits misses hit_ratio ...
    if not os.path.exists(path):
        return None
    h = m = 0
    for line in open(path):
        f = line.split()
        if len(f) > 5 and f[1].isdigit():
            h, m = h + int(f[3]), m + int(f[4])
    return h, m
hits = misses = None
if target == "shardgate-cache":
    a, b = cache(raw + ".cache-before.txt"), cache(raw + ".cache.txt")
    if a is not None and b is not None:
        hits, misses = b[0] - a[0], b[1] - a[1]
na = lambda v: "NA" if v is None else str(v)
print(" ".join(na(v) for v in (tx, el, q, ign, rec, avg, p95, sgq, sge, hits, misses)))
PY
    ) || parsed="NA NA NA NA NA NA NA NA NA NA NA"
    # The cache's hits and misses, then sg_a's server connections (before the run; max, mean and
    # number of the 1-per-second samples during it) go last in the TSV line (columns added after
    # the others).
    local -a pf cf
    read -r -a pf <<< "$parsed"
    read -r -a cf <<< "$conns"
    local c0a c0t c1a c1t c0ba c0bt c1ba c1bt
    read -r c0a c0t <<< "$c0"; read -r c1a c1t <<< "$c1"
    read -r c0ba c0bt <<< "$c0b"; read -r c1ba c1bt <<< "$c1b"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$wl" "$target" "$rep" "$(IFS=$'\t'; echo "${pf[*]:0:9}")" \
        "$([[ -n $mpid ]] && echo $((p1 - p0)) || echo NA)" \
        "$([[ -n $mpid ]] && echo $((t1 - t0)) || echo NA)" \
        "$((b1 - b0))" \
        "$(((c0ba - c0a) * 100 / (c0bt - c0t > 0 ? c0bt - c0t : 1)))" \
        "$(((c1ba - c1a) * 100 / (c1bt - c1t > 0 ? c1bt - c1t : 1)))" \
        "$(( ((c0ba - c0a) * 1000000000 / HZ - (p1 - p0)) * 100 / ((c0bt - c0t > 0 ? c0bt - c0t : 1) * 1000000000 / HZ) ))" \
        "$load1" "$crc" "${pf[9]}" "${pf[10]}" "$conns_before" "${cf[0]}" "${cf[1]}" "${cf[2]}" >> "$OUT/runs.tsv"
    log "$(printf '%-10s %-9s rep %s: %s' "$wl" "$target" "$rep" \
        "$(tail -n 1 "$OUT/runs.tsv" | awk -F'\t' '{printf "tx=%s q=%s t=%ss errors=%s reconnects=%s proxy_ns=%s cpu0=%s%% (others %s%%) cpu1=%s%% rc=%s sg_a conns before/max/mean=%s/%s/%s", $4, $6, $5, $7, $8, $13, $16, $18, $17, $20, $23, $24, $25}')")"
}

# ---------------------------------------------------------------------------------------------
# Medians over reps and paired ratios (value ÷ other's value in the same rep, median), markdown.
summarize() {
    python3 - "$1" <<'PY'
import csv, os, statistics, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "runs.tsv")), delimiter="\t"))

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def metric(r, name):
    tx, q, el = num(r["transactions"]), num(r["queries"]), num(r["elapsed_s"])
    if name == "tps":
        return tx / el if tx and el else None
    if name == "qps":
        return q / el if q and el else None
    if name in ("us", "tick_us", "bus"):
        ns = num(r[{"us": "proxy_cpu_ns", "tick_us": "proxy_tick_ns", "bus": "backend_cpu_ns"}[name]])
        return ns / q / 1000 if ns is not None and q else None
    if name == "sum_us":
        a, b = metric(r, "us"), metric(r, "bus")
        return b if r["target"] == "direct" else (a + b if a is not None and b is not None else None)
    if name == "hit":
        h, m = num(r.get("cache_hits")), num(r.get("cache_misses"))
        return h / (h + m) if h is not None and m is not None and h + m else None
    if name in ("lat_avg_ms", "lat_p95_ms", "errors", "cpu0_busy_pct", "cpu1_busy_pct", "cpu0_others_pct", "load1"):
        return num(r[name])
    if name in ("conns_max", "conns_mean"):
        # sg_a's connections on MariaDB during the run (1-per-second samples). Connections already
        # there before a run belong to a multiplexing target's idle pool: its own before its own
        # run (counted), another's before anyone else's run (not counted).
        v, b = num(r.get("server_conns_" + name[6:])), num(r.get("server_conns_before"))
        if v is None:
            return None
        return v if r["target"] in MUX or b is None else max(v - b, 0)
    raise KeyError(name)

MUX = ("shardgate-mux",)
order = ("direct", "haproxy", "shardgate-base", "shardgate", "shardgate-epoll", "shardgate-cache", "shardgate-mux")
targets = [t for t in order if any(r["target"] == t for r in rows)]
reps = sorted({r["rep"] for r in rows}, key=int)
wls = []
for r in rows:
    if r["workload"] not in wls:
        wls.append(r["workload"])

def values(wl, t, name):
    return {r["rep"]: metric(r, name) for r in rows if r["workload"] == wl and r["target"] == t}

def med(vs):
    vs = [v for v in vs if v is not None]
    return statistics.median(vs) if vs else None

def fmt(v, d):
    if v is None:
        return "–"
    return f"{v:,.{d}f}" if d else f"{v:,.0f}"

def ratio_v(wl, name, a, b):
    va, vb = values(wl, a, name), values(wl, b, name)
    rs = [va[k] / vb[k] for k in reps if va.get(k) is not None and vb.get(k) not in (None, 0)]
    return statistics.median(rs) if rs else None

def ratio(wl, name, a, b):
    if a not in targets or b not in targets:
        return ""
    v = ratio_v(wl, name, a, b)
    return "–" if v is None else f"{v:.3f}"

DESC = {
    "ro-text": "oltp_read_only, text protocol (--db-ps-mode=disable)",
    "ro-ps": "oltp_read_only, prepared statements (--db-ps-mode=auto)",
    "point-text": "oltp_point_select, text protocol (--db-ps-mode=disable)",
    "point-ps": "oltp_point_select, prepared statements (--db-ps-mode=auto)",
}
# shardgate-base, shardgate-cache and shardgate-mux are compared with shardgate (same rep).
ALL = ("shardgate/direct", "haproxy/direct", "shardgate/haproxy", "shardgate/shardgate-base", "shardgate-cache/shardgate",
       "shardgate-mux/shardgate")
LINES = [
    ("transactions/s", "tps", 0, ALL),
    ("queries/s", "qps", 0, ALL),
    ("proxy CPU µs/query (schedstat)", "us", 2, ("shardgate/haproxy", "shardgate/shardgate-base", "shardgate-cache/shardgate",
                                                  "shardgate-mux/shardgate")),
    ("proxy CPU µs/query (utime+stime)", "tick_us", 2, ("shardgate/haproxy", "shardgate/shardgate-base", "shardgate-mux/shardgate")),
    ("MariaDB CPU µs/query", "bus", 2, ALL),
    ("proxy + MariaDB CPU µs/query", "sum_us", 2, ALL),
    ("query cache hit ratio (this run)", "hit", 3, ()),
    ("latency avg ms (sysbench)", "lat_avg_ms", 2, ALL),
    ("latency p95 ms (sysbench)", "lat_p95_ms", 2, ALL),
    ("sysbench ignored errors", "errors", 0, ()),
    ("server connections (max/mean)", "conns", 0, ("shardgate-mux/shardgate",)),
    ("CPU0 busy % (proxy + others)", "cpu0_busy_pct", 0, ()),
    ("CPU0 busy % used by others (tick-sampled, ±5)", "cpu0_others_pct", 0, ()),
    ("CPU1 busy % (MariaDB + sysbench + others)", "cpu1_busy_pct", 0, ()),
]
meta_path = os.path.join(out, "meta.txt")
meta = open(meta_path).read().splitlines() if os.path.exists(meta_path) else []
print(f"# shardgate vs HAProxy (TCP mode) vs direct, MySQL — {os.path.basename(out.rstrip('/'))}\n")
for m in meta:
    if m.split(":")[0] in ("date", "commit", "command", "sysbench", "mariadb", "haproxy", "shardgate io driver", "shardgate-base",
                           "loadavg before", "loadavg after", "wall time"):
        print(f"- {m}")
print(f"\nMedians of {len(reps)} interleaved rep(s). Ratios: A/B per rep, then the median "
      "(transactions/s, queries/s: > 1 means A is faster; µs/query, latency: < 1 means A is cheaper/faster).\n")
pairs = [p for p in ("shardgate/direct", "haproxy/direct", "shardgate/haproxy", "shardgate-epoll/direct",
                     "shardgate-epoll/haproxy", "shardgate/shardgate-base", "shardgate-cache/shardgate",
                     "shardgate-mux/shardgate")
         if all(x in targets for x in p.split("/"))]

def conns_cell(wl, t):
    mx, mn = med(values(wl, t, "conns_max").values()), med(values(wl, t, "conns_mean").values())
    return "–" if mx is None and mn is None else f"{fmt(mx, 0)}/{fmt(mn, 0)}"

def conns_ratio(wl, a, b):
    if a not in targets or b not in targets:
        return ""
    rs = [ratio_v(wl, n, a, b) for n in ("conns_max", "conns_mean")]
    return "–" if None in rs else f"{rs[0]:.3f}/{rs[1]:.3f}"

print("| workload / metric | " + " | ".join(targets) + " | " + " | ".join(p.replace("/", "÷") for p in pairs) + " |")
print("|" + "---|" * (len(targets) + 1 + len(pairs)))
for wl in wls:
    print(f"| **{wl}**: {DESC.get(wl, wl)} |" + " |" * (len(targets) + len(pairs)))
    for label, name, d, rp in LINES:
        if name == "conns":
            cells = [conns_cell(wl, t) for t in targets]
            rcells = [conns_ratio(wl, *p.split("/")) if p in rp else "" for p in pairs]
            print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(rcells) + " |")
            continue
        cells = []
        for t in targets:
            if name in ("us", "tick_us") and t == "direct" or name == "hit" and t != "shardgate-cache":
                cells.append("–")
            else:
                cells.append(fmt(med(values(wl, t, name).values()), d))
        # rp names the shardgate pairs; the epoll target gets the same ones.
        rcells = [ratio(wl, name, *p.split("/")) if p.replace("shardgate-epoll", "shardgate") in rp else "" for p in pairs]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(rcells) + " |")

if "shardgate-cache" in targets:
    # What a hit costs: shardgate-cache's CPU per query (nearly all hits) against the CPU MariaDB
    # spent per query when the same queries went to the server through shardgate.
    print("\nQuery cache (shardgate-cache: `[[mysql.cache]]` rule on the point select; raw/*-shardgate-cache-r*.cache.txt):\n")
    for wl in wls:
        hv = values(wl, "shardgate-cache", "hit")
        runs = [r for r in rows if r["workload"] == wl and r["target"] == "shardgate-cache"]
        per = ", ".join(f"r{r['rep']} {r.get('cache_hits')}/{r.get('cache_misses')}" for r in runs)
        line = f"- {wl}: hit ratio {fmt(med(hv.values()), 3)} (hits/misses per rep: {per})"
        c, b = med(values(wl, "shardgate-cache", "us").values()), med(values(wl, "shardgate-cache", "bus").values())
        line += f"; shardgate-cache CPU {fmt(c, 2)} µs/query + MariaDB {fmt(b, 2)} µs/query"
        if "shardgate" in targets:
            s_, sb = med(values(wl, "shardgate", "us").values()), med(values(wl, "shardgate", "bus").values())
            line += f"; served by the server through shardgate: shardgate {fmt(s_, 2)} + MariaDB {fmt(sb, 2)} µs/query"
        print(line)

if "shardgate-mux" in targets:
    # Multiplexing: what sharing MUX_SERVER_CONNS server connections between THREADS sessions
    # costs the proxy and saves the server, against the pass-through (paired ratios, medians).
    cmd = next((m for m in meta if m.startswith("command:")), "")
    bound = next((w.split("=", 1)[1] for w in cmd.split() if w.startswith("MUX_SERVER_CONNS=")), "?")
    print(f"\nMultiplexing (shardgate-mux: multiplex = true, max_server_connections = {bound} for sg_a; "
          "server connections: sg_a's on MariaDB, sampled once a second, max/mean):\n")
    for wl in wls:
        m = lambda t, n, d: fmt(med(values(wl, t, n).values()), d)
        line = (f"- {wl}: shardgate-mux {m('shardgate-mux', 'tps', 0)} tx/s, {m('shardgate-mux', 'us', 2)} µs/query, "
                f"server connections {conns_cell(wl, 'shardgate-mux')}")
        if "shardgate" in targets:
            def rv(n):
                v = ratio_v(wl, n, "shardgate-mux", "shardgate")
                return "–" if v is None else f"{v:.3f}"
            line += (f"; shardgate {m('shardgate', 'tps', 0)} tx/s, {m('shardgate', 'us', 2)} µs/query, "
                     f"server connections {conns_cell(wl, 'shardgate')}; shardgate-mux ÷ shardgate: tx/s {rv('tps')}, "
                     f"CPU/query {rv('us')}, server connections {conns_ratio(wl, 'shardgate-mux', 'shardgate')} (max/mean)")
        print(line)

print("\nPer rep (the spread behind the medians): transactions/s and proxy CPU µs/query\n")
print("| workload | " + " | ".join(f"{t} tx/s" for t in targets) + " | "
      + " | ".join(f"{t} µs/q" for t in targets if t != "direct") + " | load1 |")
print("|" + "---|" * (2 * len(targets) + (0 if "direct" in targets else 1) + 1))
for wl in wls:
    cells = [" / ".join(fmt(values(wl, t, "tps").get(k), 0) for k in reps) for t in targets]
    cells += [" / ".join(fmt(values(wl, t, "us").get(k), 2) for k in reps) for t in targets if t != "direct"]
    loads = [metric(r, "load1") for r in rows if r["workload"] == wl]
    cells.append(f"{min(loads):.2f}–{max(loads):.2f}" if loads and None not in loads else "–")
    print(f"| {wl} | " + " | ".join(cells) + " |")

# Aims (issue 4): within 10 % of direct throughput; less CPU per query than HAProxy's TCP mode.
sgs = [t for t in targets if t.startswith("shardgate")]
if sgs:
    print("\nAims (issue 4):\n")
    for sgt in sgs:
        for wl in wls:
            parts = []
            if "direct" in targets:
                r = ratio_v(wl, "tps", sgt, "direct")
                if r is not None:
                    parts.append(f"throughput {r:.3f} × direct ({'met' if r >= 0.90 else 'NOT met'}: aim ≥ 0.90)")
            if "haproxy" in targets:
                r = ratio_v(wl, "us", sgt, "haproxy")
                if r is not None:
                    parts.append(f"CPU/query {r:.3f} × HAProxy ({'met' if r < 1 else 'NOT met'}: aim < 1)")
            print(f"- {sgt} {wl}: " + "; ".join(parts))

# Cross-checks.
print()
sg = [r for r in rows if r["target"].startswith("shardgate")]
ok = [r for r in sg if r["sg_queries"] == r["queries"]]
if sg:
    print("shardgate's per-user count (`show traffic mysql`: the user's query or stmt_execute delta over the run) "
          f"equals sysbench's query count in {len(ok)}/{len(sg)} runs; "
          f"errors counted by shardgate: {sum(int(num(r['sg_errors']) or 0) for r in sg)}.")
worst = 0.0
for r in rows:
    a, b = num(r["proxy_cpu_ns"]), num(r["proxy_tick_ns"])
    if a and b:
        worst = max(worst, abs(b - a) / a)
print(f"schedstat vs utime+stime: largest difference {worst * 100:.1f} % (tick resolution 10 ms).")
bad = [r for r in rows if r["client_rc"] not in ("0", "")]
if bad:
    print(f"sysbench exited non-zero in {len(bad)} run(s): " + ", ".join(f"{r['workload']}/{r['target']}/r{r['rep']}" for r in bad))
PY
}

# ---------------------------------------------------------------------------------------------
main() {
    local t_start=$SECONDS wl
    if [[ " $TARGETS " == *" shardgate-mux "* ]]; then
        [[ $MUX_SERVER_CONNS =~ ^[1-9][0-9]*$ ]] || die "MUX_SERVER_CONNS=$MUX_SERVER_CONNS: expected a whole number >= 1"
        # A prepared statement pins its server connection to the session for good: with
        # --db-ps-mode=auto nothing is shared, and sessions beyond the bound wait, then fail.
        for wl in $WORKLOADS; do
            [[ ${SB_PS[$wl]:-} != auto ]] \
                || die "shardgate-mux does not run $wl (prepared statements keep a server connection per session): use the -text workloads"
        done
    fi
    mkdir -p "$OUT/raw" "$RUN"
    ensure_tools
    log "building (cargo build --release)"
    build
    SB_COMMON=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user="$DB_USER" --mysql-password="$DB_PASS"
        --mysql-db="$DB_NAME" --tables="$TABLES" --table-size="$ROWS")
    local commit dirty t_run
    t_run=$SECONDS
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)
    {
        echo "date: $(date -Is)"
        echo "commit: $commit (uncommitted changes in $dirty tracked source files at build time)"
        git -C "$ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null | sed 's/^/  /'
        echo "command: QUICK=$QUICK REPS=$REPS DUR=$DUR THREADS=$THREADS TABLES=$TABLES ROWS=$ROWS TARGETS='$TARGETS' WORKLOADS='$WORKLOADS' PORT_OFFSET=$PORT_OFFSET${BASE_BIN:+ BASE_BIN=$BASE_BIN}$([[ " $TARGETS " == *" shardgate-mux "* ]] && echo " MUX_SERVER_CONNS=$MUX_SERVER_CONNS") $0"
        echo "sysbench: $(sysbench --version 2>&1 | head -n 1), $THREADS threads, ${DUR}s per run, $TABLES tables x $ROWS rows, user $DB_USER"
        echo "mariadb: $( (if command -v mariadbd >/dev/null; then mariadbd --version; else /usr/sbin/mariadbd --version; fi) 2>&1 | head -n 1)"
        echo "haproxy: $(haproxy -v 2>&1 | head -n 1)"
        echo "shardgate: $("$RUN/bin/shardgate" --version 2>&1), sha256 $(sha256sum "$RUN/bin/shardgate" | cut -c1-16)"
        if [[ -x $RUN/bin/shardgate-base && " $TARGETS " == *" shardgate-base "* ]]; then
            echo "shardgate-base: BASE_BIN=$BASE_BIN ($("$RUN/bin/shardgate-base" --version 2>&1), sha256 $(sha256sum "$RUN/bin/shardgate-base" | cut -c1-16))"
        fi
        echo "kernel: $(uname -r); cpus: $(nproc); model: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
        echo "layout: proxy on CPU$PROXY_CPU (shardgate shards=1, HAProxy nbthread 1); MariaDB + sysbench on CPU$SIDE_CPU"
        echo "loadavg before: $(cat /proc/loadavg)"
        echo "busiest processes before:"; ps -eo pid,pcpu,psr,comm --sort=-pcpu | sed -n '2,8p' | sed 's/^/  /'
    } > "$OUT/meta.txt"
    printf 'workload\ttarget\trep\ttransactions\telapsed_s\tqueries\terrors\treconnects\tlat_avg_ms\tlat_p95_ms\tsg_queries\tsg_errors\tproxy_cpu_ns\tproxy_tick_ns\tbackend_cpu_ns\tcpu0_busy_pct\tcpu1_busy_pct\tcpu0_others_pct\tload1\tclient_rc\tcache_hits\tcache_misses\tserver_conns_before\tserver_conns_max\tserver_conns_mean\tserver_conns_samples\n' \
        > "$OUT/runs.tsv"

    start_all
    grep -h -m1 -o 'driver=[A-Za-z]*' "$OUT/raw/shardgate.log" 2>/dev/null | sed 's/^driver=/shardgate io driver: /' >> "$OUT/meta.txt" || true
    echo "mariadb port $DB_PORT pid $DB_PID affinity: $(taskset -pc "$DB_PID" | sed 's/.*: //')" >> "$OUT/meta.txt"

    # Warm-up: the buffer pool, the proxies' code paths and sysbench's statement cache.
    local t rep i n targets order
    read -r -a targets <<< "$TARGETS"
    for t in $TARGETS; do
        taskset -c $SIDE_CPU sysbench oltp_read_only "${SB_COMMON[@]}" --mysql-port="${PORT[$t]}" --threads="$THREADS" \
            --time=2 --events=0 --db-ps-mode=disable run > "$OUT/raw/warmup-$t.txt" 2>&1 \
            || die "warm-up through $t failed (raw/warmup-$t.txt)"
    done

    n=${#targets[@]}
    for ((rep = 1; rep <= REPS; rep++)); do
        for wl in $WORKLOADS; do
            [[ -n ${SB_TEST[$wl]:-} ]] || die "unknown workload $wl (ro-text ro-ps point-text point-ps)"
            # Rotate the order each rep so no target always runs first (or right after direct).
            order=()
            for ((i = 0; i < n; i++)); do order+=("${targets[$(((i + rep - 1) % n))]}"); done
            for t in "${order[@]}"; do
                run_one "$wl" "$t" "$rep"
                sleep 0.3
            done
        done
    done

    for t in $SG_TARGETS; do
        [[ -n ${PID[$t]:-} ]] || continue
        {
            echo "# shardgate ctl --socket ${SG_SOCK[$t]} 'show traffic mysql' (after the last run; cumulative)"
            sg_ctl "$t" 'show traffic mysql'
            echo; echo "# 'show servers'"; sg_ctl "$t" 'show servers'
            if [[ $t == shardgate-cache ]]; then
                echo; echo "# 'show cache mysql'"; sg_ctl "$t" 'show cache mysql'
                echo; echo "# 'show digest mysql'"; sg_ctl "$t" 'show digest mysql'
            fi
        } > "$OUT/raw/$t-traffic.txt" 2>&1 || true
    done
    {
        echo "loadavg after: $(cat /proc/loadavg)"
        echo "busiest processes after:"; ps -eo pid,pcpu,psr,comm --sort=-pcpu | sed -n '2,8p' | sed 's/^/  /'
        echo "wall time: $((SECONDS - t_run)) s for the run (start, prepare, warm-up, measurements), $((t_run - t_start)) s build"
    } >> "$OUT/meta.txt"
    cp -f "$RUN/mariadb/m0/error.log" "$OUT/raw/mariadb-error.log" 2>/dev/null || true
    # Recorded results name no path outside the repository: the checkout becomes ".".
    sed -i "s#$ROOT/#./#g; s#$ROOT\b#.#g" "$OUT"/meta.txt "$OUT"/raw/*.log "$OUT"/raw/*.txt 2>/dev/null || true
    summarize "$OUT" | tee "$OUT/summary.md"
    log "results: $OUT"
}

if [[ ${1:-} == --summarize ]]; then
    # Re-summarize an existing results directory: bench/mysql-compare.sh --summarize DIR
    trap - EXIT
    summarize "${2:?results directory}"
    exit 0
fi
main "$@"
