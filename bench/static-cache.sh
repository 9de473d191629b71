#!/usr/bin/env bash
# static-cache.sh: shardgate's static files and cache hits against nginx 1.22 (static files with
# sendfile + open_file_cache; proxy_cache) and Varnish 7.1 (malloc storage), in ONE interleaved
# run, with the method of compare.sh (PERF.md): the server under test pinned to CPU0 with
# 1 shard / 1 worker / 1 thread pool; the origin (nginx, 1 worker) and the client (wrk; loadgen
# for 10k connections) on CPU1. The figure is the server's CPU time per request (schedstat ns of
# every thread of every process of the target, before and after a run, over completed requests).
#
# Usage:  bench/static-cache.sh              full run (3 reps, ~8 minutes + build)
#         QUICK=1 bench/static-cache.sh      smoke run (2 reps, short runs, ~3 minutes)
# Knobs (environment): REPS, TARGETS="shardgate nginx varnish",
#   WORKLOADS="static1k static16k static1m hit100 hit16k hit1m hit10k",
#   SKIP_BUILD=1 (use target/release as is), OUT=DIR (results directory),
#   MEASURE_UNVERIFIED=1 (also measure a target/workload whose answers failed verification;
#   by default it is reported and skipped).
# Workloads: static* = GET /static/<file> served from disk (1 KiB, 16 KiB, 1 MiB; targets shardgate
#   and nginx); hit* = GET /obj/<file> answered from the cache (100 B, 16 KiB, 1 MiB; all
#   targets); hit10k = /obj/100 over 10,000 keep-alive connections.
# Output: bench/results/<date>-<time>-static-cache/{meta.txt,runs.tsv,verify.txt,summary.md,raw/}.
# Ports 28101-28104 and 28110-28111 (refuses to start if one is taken). Every process started
# here is stopped by its PID on exit, also on Ctrl-C.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
CONF=$ROOT/bench/configs
# Fixed: the configs in bench/configs/sc-* name files and sockets inside this directory.
RUN=/tmp/sg-sc

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    REPS=${REPS:-2}; DUR=${DUR:-2}; CONN_DUR=${CONN_DUR:-3}; RAMP=${RAMP:-1}
else
    REPS=${REPS:-3}; DUR=${DUR:-5}; CONN_DUR=${CONN_DUR:-6}; RAMP=${RAMP:-2}
fi
TARGETS=${TARGETS:-"shardgate nginx varnish"}
WORKLOADS=${WORKLOADS:-"static1k static16k static1m hit100 hit16k hit1m hit10k"}
MEASURE_UNVERIFIED=${MEASURE_UNVERIFIED:-0}
PROXY_CPU=0
SIDE_CPU=1
ORIGIN_PORT=28110
STATUS_URL=http://127.0.0.1:28111/status
VARNISH_ADMIN=28104
ALL_PORTS="28101 28102 28103 28104 28110 28111"
declare -A PORT=([shardgate]=28101 [nginx]=28102 [varnish]=28103)
declare -A PATHQ=([static1k]=/static/1k [static16k]=/static/16k [static1m]=/static/1m
    [hit100]=/obj/100 [hit16k]=/obj/16k [hit1m]=/obj/1m [hit10k]=/obj/100)
declare -A BODY=([static1k]=1024 [static16k]=16384 [static1m]=1048576
    [hit100]=100 [hit16k]=16384 [hit1m]=1048576 [hit10k]=100)
# Client connections: 64, fewer for 1 MiB bodies (64 x 1 MiB in flight only fills socket buffers).
declare -A CONNS=([static1k]=64 [static16k]=64 [static1m]=16 [hit100]=64 [hit16k]=64 [hit1m]=16
    [hit10k]=10000)

STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/$STAMP-static-cache}

log() { printf '[static-cache %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Which targets a workload applies to: Varnish is a cache, not a file server.
applies() {
    local t=$1 wl=$2
    [[ $wl == static* && $t == varnish ]] && return 1
    return 0
}

# ---------------------------------------------------------------------------------------------
# Processes: every PID we start is recorded and stopped (SIGTERM, then SIGKILL) on exit.
declare -A PID=()
declare -A BASE_RSS=()
declare -A VERIFIED=()
CLIENT_PID=""
SAMPLER_PID=""

# A process and all its descendants (nginx: master, worker, cache manager and loader;
# Varnish: manager and child).
desc_pids() {
    local p=$1 c
    echo "$p"
    for c in $(children_of "$p"); do desc_pids "$c"; done
}

cleanup() {
    local rc=$? name p kids
    trap - EXIT INT TERM
    for p in "$SAMPLER_PID" "$CLIENT_PID"; do [[ -n $p ]] && stop_pid "$p"; done
    for name in "${!PID[@]}"; do
        p=${PID[$name]}
        kids=$(desc_pids "$p" | tail -n +2)
        stop_pid "$p"
        for k in $kids; do stop_pid "$k"; done
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

open_fds() {
    local p sum=0 n
    for p in "$@"; do
        n=$(ls -U /proc/"$p"/fd 2>/dev/null | wc -l) || true
        sum=$((sum + ${n:-0}))
    done
    echo "$sum"
}

rss_kib() {
    local p sum=0 v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/{print $2}' /proc/"$p"/status 2>/dev/null || true)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

# Requests the origin has served (stub_status; the status request itself counts one).
origin_requests() { local v; v=$(curl -s --max-time 2 "$STATUS_URL" | awk 'NR==3{print $3}') || true; echo "${v:-0}"; }

wait_port() {
    local i
    for ((i = 0; i < 100; i++)); do
        port_free "$1" || return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# Tools: install what is missing (Debian/Ubuntu).
ensure_tools() {
    local need=() sudo=""
    export PATH=$PATH:/usr/sbin:/sbin
    command -v nginx >/dev/null || need+=(nginx)
    [[ " $TARGETS " == *" varnish "* ]] && { command -v varnishd >/dev/null || need+=(varnish); }
    command -v wrk >/dev/null || need+=(wrk)
    command -v curl >/dev/null || need+=(curl)
    command -v python3 >/dev/null || need+=(python3)
    command -v ss >/dev/null || need+=(iproute2)
    command -v taskset >/dev/null || need+=(util-linux)
    if ((${#need[@]})); then
        [[ $(id -u) -ne 0 ]] && sudo=sudo
        log "installing: ${need[*]}"
        $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" \
            || die "apt-get install ${need[*]} failed"
    fi
}

build() {
    local i
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        for ((i = 1; i <= 5; i++)); do
            (cd "$ROOT" && cargo build --release -p shardgate -p loadgen 2>&1 | tail -n 3) && \
                [[ -x $ROOT/target/release/shardgate && -x $ROOT/target/release/loadgen ]] && break
            ((i == 5)) && die "cargo build --release failed 5 times"
            log "build failed (someone mid-edit?), retrying in 60 s"
            sleep 60
        done
    fi
    # Copies: a rebuild during the run must not change the binaries under test.
    mkdir -p "$RUN/bin"
    cp -f "$ROOT/target/release/shardgate" "$ROOT/target/release/loadgen" "$RUN/bin/"
}

# ---------------------------------------------------------------------------------------------
make_files() {
    rm -rf "$RUN/www" "$RUN/origin"
    mkdir -p "$RUN/www/static" "$RUN/origin/obj"
    head -c 1024 /dev/urandom > "$RUN/www/static/1k"
    head -c 16384 /dev/urandom > "$RUN/www/static/16k"
    head -c 1048576 /dev/urandom > "$RUN/www/static/1m"
    echo '<!doctype html><title>static-cache</title>' > "$RUN/www/static/index.html"
    head -c 100 /dev/urandom > "$RUN/origin/obj/100"
    head -c 16384 /dev/urandom > "$RUN/origin/obj/16k"
    head -c 1048576 /dev/urandom > "$RUN/origin/obj/1m"
    chmod 755 "$RUN" "$RUN/www" "$RUN/www/static" "$RUN/origin" "$RUN/origin/obj"
    chmod 644 "$RUN"/www/static/* "$RUN"/origin/obj/*
}

# The file a workload's answer must equal.
source_file() {
    case $1 in
        static1k) echo "$RUN/www/static/1k" ;;
        static16k) echo "$RUN/www/static/16k" ;;
        static1m) echo "$RUN/www/static/1m" ;;
        hit100 | hit10k) echo "$RUN/origin/obj/100" ;;
        hit16k) echo "$RUN/origin/obj/16k" ;;
        hit1m) echo "$RUN/origin/obj/1m" ;;
    esac
}

varnish_args() { grep -v -E '^\s*(#|$)' "$CONF/sc-varnish.args" | xargs; }

start_all() {
    local p t
    for p in $ALL_PORTS; do
        # SO_REUSEPORT listeners (shardgate) would silently share a busy port.
        port_free "$p" || die "port $p is already in use: $(ss -Hltnp "sport = :$p" | head -n 1)"
    done
    rm -rf "$RUN/origin-nginx" "$RUN/nginx" "$RUN/varnish" "$RUN/ctl.sock"
    mkdir -p "$RUN/origin-nginx/logs" "$RUN/origin-nginx/tmp" "$RUN/nginx/logs" "$RUN/nginx/tmp"
    make_files
    ulimit -n "$(ulimit -Hn)"

    taskset -c $SIDE_CPU nginx -p "$RUN/origin-nginx/" -e logs/error.log -c "$CONF/sc-origin-nginx.conf" \
        > "$OUT/raw/origin.log" 2>&1 &
    PID[origin]=$!
    wait_http "http://127.0.0.1:$ORIGIN_PORT/obj/100" || die "origin nginx did not start (raw/origin.log)"

    for t in $TARGETS; do
        case $t in
            nginx)
                taskset -c $PROXY_CPU nginx -p "$RUN/nginx/" -e logs/error.log -c "$CONF/sc-nginx.conf" \
                    > "$OUT/raw/nginx.log" 2>&1 &
                ;;
            varnish)
                # shellcheck disable=SC2046
                taskset -c $PROXY_CPU varnishd -F -n "$RUN/varnish" -a "127.0.0.1:${PORT[varnish]}" \
                    -T "127.0.0.1:$VARNISH_ADMIN" -b "127.0.0.1:$ORIGIN_PORT" -s malloc,256m \
                    $(varnish_args) > "$OUT/raw/varnish.log" 2>&1 &
                ;;
            shardgate)
                taskset -c $PROXY_CPU "$RUN/bin/shardgate" --config "$CONF/sc-shardgate.toml" \
                    > "$OUT/raw/shardgate.log" 2>&1 &
                ;;
            *) die "unknown target $t" ;;
        esac
        PID[$t]=$!
    done
    for t in $TARGETS; do
        # A target that does not come up is reported by verify_all, not fatal: the others run.
        wait_port "${PORT[$t]}" || log "$t does not listen on ${PORT[$t]} (raw/$t.log)"
    done
    sleep 0.5
}

# Before anything is measured: each target's answer for each workload is 200, the exact bytes
# of the file, and (hit*) a cache hit after a few warming requests.
verify_one() {
    local t=$1 wl=$2 url code i src hdr body
    url="http://127.0.0.1:${PORT[$t]}${PATHQ[$wl]}"
    src=$(source_file "$wl")
    hdr="$OUT/raw/verify-$t-$wl.headers"
    body="$RUN/verify-body"
    kill -0 "${PID[$t]}" 2>/dev/null || { echo "process exited (raw/$t.log)"; return 1; }
    if [[ $wl == hit* ]]; then
        for ((i = 0; i < 3; i++)); do curl -s -o /dev/null --max-time 5 "$url" || true; done
        sleep 0.2
    fi
    code=$(curl -s --max-time 10 -D "$hdr" -o "$body" -w '%{http_code}' "$url") || { echo "curl failed (code $code)"; return 1; }
    [[ $code == 200 ]] || { echo "status $code"; return 1; }
    cmp -s "$body" "$src" || { echo "body differs: $(stat -c %s "$body") bytes, expected $(stat -c %s "$src")"; return 1; }
    if [[ $wl == hit* ]]; then
        case $t in
            shardgate | nginx) grep -qiE '^x-cache: *hit' "$hdr" || { echo "no X-Cache: HIT after 3 requests ($(grep -i '^x-cache' "$hdr" | tr -d '\r' || echo 'no X-Cache header'))"; return 1; } ;;
            varnish) grep -qiE '^x-varnish: *[0-9]+ +[0-9]+' "$hdr" || { echo "not a hit: $(grep -i '^x-varnish' "$hdr" | tr -d '\r')"; return 1; } ;;
        esac
        # And the origin is not asked again.
        local o0 o1
        o0=$(origin_requests)
        curl -s -o /dev/null --max-time 5 "$url" || true
        o1=$(origin_requests)
        ((o1 - o0 - 1 == 0)) || { echo "origin asked again on a hit ($((o1 - o0 - 1)) requests)"; return 1; }
    fi
    echo "ok"
}

verify_all() {
    local t wl r
    : > "$OUT/verify.txt"
    for t in $TARGETS; do
        for wl in $WORKLOADS; do
            applies "$t" "$wl" || continue
            if r=$(verify_one "$t" "$wl"); then
                VERIFIED[$t:$wl]=1
                printf '%s\t%s\tok\n' "$t" "$wl" >> "$OUT/verify.txt"
            else
                VERIFIED[$t:$wl]=0
                printf '%s\t%s\tFAILED: %s\n' "$t" "$wl" "$r" >> "$OUT/verify.txt"
                log "verification FAILED: $t $wl: $r"
            fi
        done
    done
    rm -f "$RUN/verify-body"
}

measured() {
    local t=$1 wl=$2
    applies "$t" "$wl" || return 1
    [[ ${VERIFIED[$t:$wl]:-0} == 1 || $MEASURE_UNVERIFIED == 1 ]] && kill -0 "${PID[$t]}" 2>/dev/null
}

# One measured run: prints one TSV line to runs.tsv.
run_one() {
    local wl=$1 target=$2 rep=$3
    local url="http://127.0.0.1:${PORT[$target]}${PATHQ[$wl]}"
    local raw="$OUT/raw/$wl-$target-r$rep"
    local mpids opids
    read -r -a mpids <<< "$(desc_pids "${PID[$target]}" | xargs)"
    read -r -a opids <<< "$(desc_pids "${PID[origin]}" | xargs)"
    local o0 p0 t0 b0 rss0=${BASE_RSS[$target]:-NA}
    o0=$(origin_requests)
    p0=$(cpu_ns "${mpids[@]}")
    t0=$(tick_ns "${mpids[@]}")
    b0=$(cpu_ns "${opids[@]}")

    if [[ $wl == hit10k ]]; then
        # Several source addresses: 10k connections per run times reps would otherwise run
        # the ephemeral port range of one address into TIME_WAIT.
        taskset -c $SIDE_CPU "$RUN/bin/loadgen" http -t 1 -c "${CONNS[$wl]}" --ramp "${RAMP}s" -d "${CONN_DUR}s" \
            --source 127.0.0.2-127.0.0.9 --json "$raw.json" "$url" > "$raw.txt" 2>&1 &
    else
        taskset -c $SIDE_CPU wrk -t1 -c"${CONNS[$wl]}" -d"${DUR}s" --latency "$url" > "$raw.txt" 2>&1 &
    fi
    CLIENT_PID=$!
    if [[ $wl == hit10k ]]; then
        # Peak RSS and open fds of the target while the client runs, 2 samples/s.
        (
            pr=0 pu=0
            while kill -0 "$CLIENT_PID" 2>/dev/null; do
                r=$(rss_kib "${mpids[@]}"); ((r > pr)) && pr=$r
                u=$(open_fds "${mpids[@]}"); ((u > pu)) && pu=$u
                sleep 0.5
            done
            echo "$pr $pu" > "$raw.peak"
        ) &
        SAMPLER_PID=$!
    fi
    local crc=0
    wait "$CLIENT_PID" || crc=$?
    CLIENT_PID=""
    if [[ -n $SAMPLER_PID ]]; then wait "$SAMPLER_PID" || true; SAMPLER_PID=""; fi

    # The "after" reading uses the process tree of the "before" reading: a process started
    # during the run would otherwise be charged its whole life. Threads are re-read (Varnish
    # adds worker threads under load; their CPU is part of the run).
    local p1 t1 b1 o1
    settle "${mpids[@]}"
    p1=$(cpu_ns "${mpids[@]}")
    t1=$(tick_ns "${mpids[@]}")
    b1=$(cpu_ns "${opids[@]}")
    o1=$(origin_requests)
    local rsspeak=NA fdspeak=NA
    if [[ -f $raw.peak ]]; then read -r rsspeak fdspeak < "$raw.peak"; fi

    # Parse the client's output into: requests elapsed_s errors non2xx unfinished p50 p99 p999 (ms).
    local parsed
    parsed=$(python3 - "$wl" "$raw" <<'PY'
import json, re, sys
wl, raw = sys.argv[1:3]
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
if wl != "hit10k":
    t = open(raw + ".txt").read()
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", t)
    req, el = int(m.group(1)), ms(m.group(2), m.group(3)) / 1000
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    errs = sum(int(x) for x in e.groups()) if e else 0
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    non2xx = int(n.group(1)) if n else 0
    pct = {}
    for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", t, re.M):
        pct[p] = ms(v, u)
    print(req - non2xx, f"{el:.4f}", errs, non2xx, "NA", pct.get("50", "NA"), pct.get("99", "NA"), "NA")
else:
    j = json.load(open(raw + ".json"))
    lat = j["latency_ms"]
    ok = j["responses"] - j["non_success"]
    print(ok, f"{j['elapsed_s']:.4f}", j["error_total"], j["non_success"], j.get("unfinished", 0),
          lat["p50"], lat["p99"], lat["p99_9"])
PY
    ) || parsed="0 0 NA NA NA NA NA NA"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$wl" "$target" "$rep" "$(tr ' ' '\t' <<< "$parsed")" \
        "$((p1 - p0))" "$((t1 - t0))" "$((b1 - b0))" "$((o1 - o0 - 1))" \
        "$fdspeak" "$rss0" "$rsspeak" "$crc" >> "$OUT/runs.tsv"
    log "$(printf '%-9s %-9s rep %s: %s' "$wl" "$target" "$rep" "$(tail -n 1 "$OUT/runs.tsv" | cut -f4-16 | tr '\t' ' ')")"
}

# ---------------------------------------------------------------------------------------------
# Medians over reps, and paired ratios (shardgate's value divided by the other's in the same
# rep, then the median), as markdown.
summarize() {
    python3 - "$1" <<'PY'
import csv, os, statistics, sys
out = sys.argv[1]
BODY = {"static1k": 1024, "static16k": 16384, "static1m": 1048576,
        "hit100": 100, "hit16k": 16384, "hit1m": 1048576, "hit10k": 100}
CONNS = {"static1k": 64, "static16k": 64, "static1m": 16, "hit100": 64, "hit16k": 64, "hit1m": 16, "hit10k": 10000}
DESC = {"static1k": "static file 1 KiB", "static16k": "static file 16 KiB", "static1m": "static file 1 MiB",
        "hit100": "cache hit 100 B", "hit16k": "cache hit 16 KiB", "hit1m": "cache hit 1 MiB",
        "hit10k": "cache hit 100 B"}
rows = list(csv.DictReader(open(os.path.join(out, "runs.tsv")), delimiter="\t"))
verify = []
vp = os.path.join(out, "verify.txt")
if os.path.exists(vp):
    verify = [l.rstrip("\n").split("\t") for l in open(vp) if l.strip()]

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def metric(r, name):
    req, el = num(r["requests"]), num(r["elapsed_s"])
    if name == "rps":
        return req / el if req and el else None
    if name == "mibps":
        return req * BODY[r["workload"]] / el / 2**20 if req and el else None
    if name == "us":
        ns = num(r["proxy_cpu_ns"])
        return ns / req / 1000 if ns is not None and req else None
    if name == "err":
        e, n = num(r["errors"]), num(r["non2xx"])
        return (e or 0) + (n or 0)
    if name == "rss":
        a, b = num(r["rss_idle_kib"]), num(r["rss_peak_kib"])
        return (b - a) / 10000 if a is not None and b is not None else None
    return num(r[name])

order = ("shardgate", "nginx", "varnish")
vstatus = {(v[0], v[1]): v[2] for v in verify if len(v) > 2}
targets = [t for t in order if any(r["target"] == t for r in rows) or any(k[0] == t for k in vstatus)]
others = [t for t in ("nginx", "varnish") if t in targets and "shardgate" in targets]
reps = sorted({r["rep"] for r in rows}, key=int)
wls = [w for w in BODY if any(r["workload"] == w for r in rows) or any(k[1] == w for k in vstatus)]

def values(wl, t, name):
    return {r["rep"]: metric(r, name) for r in rows if r["workload"] == wl and r["target"] == t}

def med(vs):
    vs = [v for v in vs if v is not None]
    return statistics.median(vs) if vs else None

def fmt(v, d):
    if v is None:
        return "–"
    return f"{v:,.{d}f}"

def ratio(wl, name, other):
    a, b = values(wl, "shardgate", name), values(wl, other, name)
    rs = [a[k] / b[k] for k in reps if a.get(k) is not None and b.get(k) not in (None, 0)]
    return f"{statistics.median(rs):.2f}" if rs else "–"

meta = open(os.path.join(out, "meta.txt")).read().splitlines() if os.path.exists(os.path.join(out, "meta.txt")) else []
print(f"# shardgate static files and cache hits vs nginx and Varnish — {os.path.basename(out.rstrip('/'))}\n")
for m in meta:
    if m.split(":")[0] in ("date", "commit", "command", "durations", "loadavg before", "loadavg after",
                           "cargo test running", "shardgate io driver", "nginx", "varnishd"):
        print(f"- {m}")
bad = [v for v in verify if len(v) > 2 and v[2] != "ok"]
print("\nVerification (status 200, exact body, and for hit*: a cache hit and no origin request): "
      + ("all ok." if verify and not bad else "none recorded." if not verify else ""))
for v in bad:
    print(f"- **{v[0]} {v[1]}: {v[2]}**" + (" (measured anyway: MEASURE_UNVERIFIED=1)" if any(r['target'] == v[0] and r['workload'] == v[1] for r in rows) else " (not measured)"))

print(f"\nMedians of {len(reps)} interleaved reps; ratios are shardgate ÷ other per rep, then the median "
      "(µs/req: < 1 is better for shardgate; req/s, MiB/s: > 1 is better). CPU µs/req is the CPU time "
      "of every thread of every process of the target (nginx: master + worker + cache helpers; "
      "Varnish: manager + child).\n")
cols = others
print("| workload | metric | " + " | ".join(targets + ["sg÷" + o for o in cols]) + " |")
print("|" + "---|" * (len(targets) + len(cols) + 2))
for wl in wls:
    label = f"{wl} ({DESC[wl]}, {CONNS[wl]} conns)"
    lines = [("CPU µs/request", "us", 1, True),
             ("req/s", "rps", 0, True),
             ("MiB/s of body", "mibps", 0, True) if BODY[wl] >= 16384 else None,
             ("p99 ms (closed loop)", "p99_ms", 2, False),
             ("errors + non-2xx (max over reps)", "err", 0, False),
             ("origin requests during runs (max)", "origin_requests", 0, False) if wl.startswith("hit") else None]
    if wl == "hit10k":
        lines += [("requests awaiting reply at the end (max)", "unfinished", 0, False),
                  ("RSS KiB per connection (peak − idle) / 10k", "rss", 1, False),
                  ("open fds, peak", "fds_peak", 0, False)]
    first = True
    for ln in lines:
        if ln is None:
            continue
        mlabel, name, d, with_ratio = ln
        cells = []
        for t in targets:
            v = values(wl, t, name)
            vs = [x for x in v.values() if x is not None]
            if not v:
                st = vstatus.get((t, wl))
                cells.append("n/a" if st is None else "verification failed" if st != "ok" else "–")
            elif name in ("err", "origin_requests", "unfinished"):
                cells.append(fmt(max(vs), 0) if vs else "–")
            else:
                cells.append(fmt(med(vs), d))
        rs = [ratio(wl, name, o) if with_ratio else "" for o in cols]
        print(f"| {label if first else ''} | {mlabel} | " + " | ".join(cells + rs) + " |")
        first = False

print("\nCPU µs/request per rep (spread behind the medians):\n")
print("| workload | " + " | ".join(targets) + " |")
print("|" + "---|" * (len(targets) + 1))
for wl in wls:
    cells = []
    for t in targets:
        v = values(wl, t, "us")
        cells.append(" / ".join(fmt(v[k], 1) for k in reps if k in v) or "n/a")
    print(f"| {wl} | " + " | ".join(cells) + " |")

worst = 0.0
for r in rows:
    a, b = num(r["proxy_cpu_ns"]), num(r["proxy_tick_ns"])
    if a and b:
        worst = max(worst, abs(b - a) / a)
print(f"\nschedstat vs utime+stime: largest difference {worst * 100:.1f} % (tick resolution 10 ms).")
badrc = [r for r in rows if r["client_rc"] not in ("0", "")]
if badrc:
    print(f"Client exited non-zero in {len(badrc)} run(s): " + ", ".join(f"{r['workload']}/{r['target']}/r{r['rep']}" for r in badrc))
PY
}

# ---------------------------------------------------------------------------------------------
main() {
    mkdir -p "$OUT/raw" "$RUN"
    chmod 755 "$RUN"
    ensure_tools
    log "building (cargo build --release -p shardgate -p loadgen)"
    build
    local commit dirty
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no -- src loadgen Cargo.toml Cargo.lock 2>/dev/null | wc -l)
    {
        echo "date: $(date -Is)"
        echo "commit: $commit $(git -C "$ROOT" log -1 --format=%s 2>/dev/null | cut -c1-100) (uncommitted changes in $dirty tracked source files at build time)"
        git -C "$ROOT" status --porcelain --untracked-files=no -- src loadgen Cargo.toml Cargo.lock 2>/dev/null | sed 's/^/  /'
        echo "command: QUICK=$QUICK REPS=$REPS TARGETS='$TARGETS' WORKLOADS='$WORKLOADS' MEASURE_UNVERIFIED=$MEASURE_UNVERIFIED bench/static-cache.sh"
        echo "durations: wrk ${DUR}s per run; hit10k: ramp ${RAMP}s + ${CONN_DUR}s"
        echo "kernel: $(uname -r); cpus: $(nproc); model: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
        echo "open files: soft $(ulimit -Sn) hard $(ulimit -Hn)"
        echo "nginx: $(nginx -v 2>&1)"
        command -v varnishd >/dev/null && echo "varnishd: $(varnishd -V 2>&1 | head -n 1)"
        echo "varnishd args: -F -n $RUN/varnish -a 127.0.0.1:${PORT[varnish]} -T 127.0.0.1:$VARNISH_ADMIN -b 127.0.0.1:$ORIGIN_PORT -s malloc,256m $(varnish_args)"
        echo "wrk: $(wrk -v 2>&1 | head -n 1)"
        echo "loadgen: $("$RUN/bin/loadgen" --version 2>&1)"
        echo "shardgate: $("$RUN/bin/shardgate" --version 2>&1)"
        echo "sha256: $(cd "$RUN/bin" && sha256sum shardgate loadgen | awk '{printf "%s %s  ", $2, $1}')"
        echo "loadavg before: $(cat /proc/loadavg)"
        echo "cargo test running: $(pgrep -fc 'cargo test' || true) process(es) at start"
        echo "busiest processes before:"; ps -eo pid,pcpu,psr,comm --sort=-pcpu | sed -n '2,8p' | sed 's/^/  /'
    } > "$OUT/meta.txt"
    printf 'workload\ttarget\trep\trequests\telapsed_s\terrors\tnon2xx\tunfinished\tp50_ms\tp99_ms\tp999_ms\tproxy_cpu_ns\tproxy_tick_ns\torigin_cpu_ns\torigin_requests\tfds_peak\trss_idle_kib\trss_peak_kib\tclient_rc\n' \
        > "$OUT/runs.tsv"

    start_all
    grep -h -m1 -o 'driver=[A-Za-z]*' "$OUT/raw/shardgate.log" 2>/dev/null | sed 's/^driver=/shardgate io driver: /' >> "$OUT/meta.txt" || true

    log "verifying every target's answers"
    verify_all
    sed 's/^/  /' "$OUT/verify.txt" | { echo "verification:"; cat; } >> "$OUT/meta.txt"

    # Warm-up: 1 s of load on every verified target and URL (faults in code and the files).
    local t wl
    for t in $TARGETS; do
        for wl in $WORKLOADS; do
            [[ $wl == hit10k ]] && continue
            measured "$t" "$wl" || continue
            taskset -c $SIDE_CPU wrk -t1 -c"${CONNS[$wl]}" -d1s "http://127.0.0.1:${PORT[$t]}${PATHQ[$wl]}" > /dev/null 2>&1 || true
        done
    done
    # Idle RSS after warm-up: the base for RSS per connection in hit10k.
    for t in $TARGETS; do
        [[ -n ${PID[$t]:-} ]] && BASE_RSS[$t]=$(rss_kib $(desc_pids "${PID[$t]}"))
    done

    local rep i n order targets
    for ((rep = 1; rep <= REPS; rep++)); do
        for wl in $WORKLOADS; do
            targets=()
            for t in $TARGETS; do measured "$t" "$wl" && targets+=("$t"); done
            n=${#targets[@]}
            ((n)) || continue
            # Rotate the order each rep so no target always runs first.
            order=()
            for ((i = 0; i < n; i++)); do order+=("${targets[$(((i + rep - 1) % n))]}"); done
            for t in "${order[@]}"; do
                run_one "$wl" "$t" "$rep"
                [[ $wl == hit10k ]] && sleep 2 || sleep 0.3
            done
        done
    done

    if [[ -n ${PID[shardgate]:-} ]]; then
        "$RUN/bin/shardgate" ctl --socket "$RUN/ctl.sock" 'show stats' > "$OUT/raw/shardgate-stats.txt" 2>&1 || true
        "$RUN/bin/shardgate" ctl --socket "$RUN/ctl.sock" 'show cache' > "$OUT/raw/shardgate-cache.txt" 2>&1 || true
    fi
    if [[ -n ${PID[varnish]:-} ]]; then
        varnishstat -n "$RUN/varnish" -1 > "$OUT/raw/varnishstat.txt" 2>&1 || true
    fi
    echo "loadavg after: $(cat /proc/loadavg)" >> "$OUT/meta.txt"
    echo "cargo test running: $(pgrep -fc 'cargo test' || true) process(es) at the end" >> "$OUT/meta.txt"
    cp -f "$RUN/origin-nginx/logs/error.log" "$OUT/raw/origin-error.log" 2>/dev/null || true
    cp -f "$RUN/nginx/logs/error.log" "$OUT/raw/nginx-error.log" 2>/dev/null || true
    # Recorded results name no path outside the repository: this checkout becomes ".", the
    # repository's other worktrees "<checkout>".
    local wt scrub=(-e "s#$ROOT/#./#g; s#$ROOT\b#.#g")
    while read -r wt; do
        if [[ -n $wt && $wt != "$ROOT" ]]; then scrub+=(-e "s#$wt\b#<checkout>#g"); fi
    done < <(git -C "$ROOT" worktree list --porcelain 2>/dev/null | awk '/^worktree /{print $2}')
    find "$OUT" -type f \( -name '*.txt' -o -name '*.log' -o -name '*.headers' -o -name '*.json' \) \
        -exec sed -i "${scrub[@]}" {} +
    summarize "$OUT" | tee "$OUT/summary.md"
    log "results: $OUT"
}

if [[ ${1:-} == --summarize ]]; then
    # Re-summarize an existing results directory: bench/static-cache.sh --summarize DIR
    trap - EXIT
    summarize "${2:?results directory}"
    exit 0
fi
main "$@"
