#!/usr/bin/env bash
# compare.sh: shardgate against HAProxy 2.6, nginx 1.22, Sozu 2.3, Caddy 2.6 and H2O 2.2 in ONE
# interleaved run (method: PERF.md). The proxy under test is pinned to CPU0 with 1 shard / 1 thread
# / 1 worker (Sozu: 1 worker process; Caddy: GOMAXPROCS=1; H2O: num-threads 1); the
# backend (nginx, 1 worker) and the load generator share CPU1; every target gets the same
# backend and the same client settings; "direct" (client straight to the backend) is the ceiling.
# The figure that holds on a shared 2-core box is proxy CPU time per request (schedstat ns of
# every thread of the proxy, before and after a run, divided by the completed requests).
#
# Usage:  bench/compare.sh              full run (3 reps, ~8-9 minutes)
#         QUICK=1 bench/compare.sh      smoke run (2 reps, short runs, ~3 minutes)
# Knobs (environment): REPS, TARGETS="direct haproxy nginx sozu caddy h2o shardgate",
#   WORKLOADS="tiny 16k rate conn10k idle10k", C_CLIENT=loadgen|oha (client of the fixed-rate run),
#   SKIP_BUILD=1 (use target/release as is), OUT=DIR (results directory),
#   SG_DRIVER=epoll (run shardgate on its epoll driver; default: io_uring when available),
#   BASE_REV=<git rev> (adds target "shardgate_base": shardgate built with the release profile
#   from that revision in a worktree /tmp/sg-base-<short rev>, reused if its binary exists; run
#   like "shardgate" with the same config on its own port and control socket; the summary adds
#   the paired ratio shardgate ÷ shardgate_base).
# Output: bench/results/<date>-<time>-compare/{meta.txt,runs.tsv,summary.md,raw/}; the summary
# table is printed at the end. Every process started here is stopped by its PID on exit.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
CONF=$ROOT/bench/configs
# Fixed: bench/configs/shardgate.toml names its control socket inside this directory.
RUN=/tmp/sg-bench

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    REPS=${REPS:-2}; DUR=${DUR:-2}; RATE_DUR=${RATE_DUR:-3}; CONN_DUR=${CONN_DUR:-3}; RAMP=${RAMP:-1}
else
    REPS=${REPS:-3}; DUR=${DUR:-5}; RATE_DUR=${RATE_DUR:-8}; CONN_DUR=${CONN_DUR:-6}; RAMP=${RAMP:-2}
fi
TARGETS=${TARGETS:-"direct haproxy nginx sozu caddy h2o shardgate"}
WORKLOADS=${WORKLOADS:-"tiny 16k rate conn10k idle10k"}
C_CLIENT=${C_CLIENT:-loadgen}
BASE_REV=${BASE_REV:-}
if [[ -n $BASE_REV && " $TARGETS " != *" shardgate_base "* ]]; then TARGETS="$TARGETS shardgate_base"; fi
RATE=5000
CONNS_SMALL=64
CONNS_BIG=10000
PROXY_CPU=0
SIDE_CPU=1
BACKEND_PORT=29200
STATUS_URL=http://127.0.0.1:29201/status
declare -A PORT=([direct]=29200 [haproxy]=28091 [nginx]=28092 [shardgate]=28090 [shardgate_base]=28093
    [sozu]=28094 [caddy]=28095 [h2o]=28096)
declare -A PATHQ=([tiny]=/ [16k]=/16k [rate]=/ [conn10k]=/ [idle10k]=/)
BODY_16K=16384

STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/$STAMP-compare}

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes: every PID we start is recorded and stopped (SIGTERM, then SIGKILL) on exit.
declare -A PID=()
declare -A BASE_RSS=()
CLIENT_PID=""
SAMPLER_PID=""

cleanup() {
    local rc=$? name p kids
    trap - EXIT INT TERM
    for p in "$SAMPLER_PID" "$CLIENT_PID"; do [[ -n $p ]] && stop_pid "$p"; done
    for name in "${!PID[@]}"; do
        p=${PID[$name]}
        # nginx workers are children of the master; collect them before the master goes.
        kids=$(children_of "$p")
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
        # ls -U: unsorted, cheap at 10k entries; the names are fd numbers.
        # shellcheck disable=SC2012
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

backend_accepts() { local v; v=$(curl -s --max-time 2 "$STATUS_URL" | awk 'NR==3{print $1}') || true; echo "${v:-0}"; }

# ---------------------------------------------------------------------------------------------
# Tools: install what is missing (Debian/Ubuntu).
ensure_tools() {
    local need=() sudo=""
    command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
    command -v wrk >/dev/null || need+=(wrk)
    command -v curl >/dev/null || need+=(curl)
    command -v python3 >/dev/null || need+=(python3)
    command -v ss >/dev/null || need+=(iproute2)
    command -v taskset >/dev/null || need+=(util-linux)
    # The other peers, when they are targets (Debian packages: Caddy 2.6, H2O 2.2).
    if [[ " $TARGETS " == *" caddy "* ]]; then command -v caddy >/dev/null || need+=(caddy); fi
    if [[ " $TARGETS " == *" h2o "* ]]; then command -v h2o >/dev/null || need+=(h2o); fi
    # Sozu 2.3 is not packaged by Debian: built below with cargo install, whose build script
    # needs protoc.
    if [[ " $TARGETS " == *" sozu "* ]]; then
        export PATH=$PATH:$HOME/.cargo/bin
        command -v sozu >/dev/null || command -v protoc >/dev/null || need+=(protobuf-compiler)
    fi
    if ((${#need[@]})); then
        [[ $(id -u) -ne 0 ]] && sudo=sudo
        log "installing: ${need[*]}"
        if ! { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; }; then
            die "apt-get install ${need[*]} failed"
        fi
    fi
    export PATH=$PATH:/usr/sbin:/sbin
    if [[ " $TARGETS " == *" sozu "* ]]; then
        command -v sozu >/dev/null || { log "building sozu (minutes)"; cargo install sozu --locked --version '~2.3'; } \
            || die "cargo install sozu failed"
    fi
    if [[ $C_CLIENT == oha ]]; then
        export PATH=$PATH:$HOME/.cargo/bin
        command -v oha >/dev/null || { log "building oha (minutes)"; cargo install oha --locked; }
    fi
}

build() {
    local i
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        for ((i = 1; i <= 5; i++)); do
            (cd "$ROOT" && cargo build --release 2>&1 | tail -n 3) && \
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

# BASE_REV: shardgate of that revision, built once in its own worktree, copied to
# $RUN/bin/shardgate_base; its config is shardgate.toml with its own port and control socket.
build_base() {
    local rev dir
    rev=$(git -C "$ROOT" rev-parse --short=7 "$BASE_REV^{commit}") || die "BASE_REV=$BASE_REV: no such revision"
    dir=/tmp/sg-base-$rev
    [[ -d $dir ]] || git -C "$ROOT" worktree add --detach "$dir" "$rev" >&2 || die "git worktree add $dir failed"
    [[ $(git -C "$dir" rev-parse --short=7 HEAD) == "$rev" ]] || die "$dir is not at $rev"
    if [[ ! -x $dir/target/release/shardgate ]]; then
        log "building shardgate_base ($rev) in $dir"
        (cd "$dir" && cargo build --release -p shardgate 2>&1 | tail -n 3) || true
        [[ -x $dir/target/release/shardgate ]] || die "cargo build --release in $dir failed"
    fi
    cp -f "$dir/target/release/shardgate" "$RUN/bin/shardgate_base"
    sed -e "s/127\.0\.0\.1:${PORT[shardgate]}/127.0.0.1:${PORT[shardgate_base]}/" -e 's/ctl\.sock/ctl-base.sock/' \
        -e 's/127\.0\.0\.1:29200/127.0.1.7:29200/' \
        "$CONF/shardgate.toml" > "$RUN/shardgate_base.toml"
    BASE_COMMIT=$(git -C "$dir" rev-parse HEAD)
}

# ---------------------------------------------------------------------------------------------
start_all() {
    local p
    for p in 28090 28091 28092 28093 28094 28095 28096 29200 29201; do
        # SO_REUSEPORT listeners (shardgate, HAProxy) would silently share a busy port.
        port_free "$p" || die "port $p is already in use: $(ss -Hltnp "sport = :$p" | head -n 1)"
    done
    rm -rf "$RUN/backend" "$RUN/nginx" "$RUN/ctl.sock" "$RUN/ctl-base.sock" "$RUN/sozu" "$RUN/caddy" "$RUN/h2o"
    mkdir -p "$RUN/backend/logs" "$RUN/backend/tmp" "$RUN/backend/html" "$RUN/nginx/logs" "$RUN/nginx/tmp" \
        "$RUN/sozu" "$RUN/caddy" "$RUN/h2o"
    chmod 755 "$RUN" "$RUN/backend" "$RUN/backend/html"
    head -c "$BODY_16K" /dev/urandom > "$RUN/backend/html/16k"
    chmod 644 "$RUN/backend/html/16k"
    ulimit -n "$(ulimit -Hn)"

    taskset -c $SIDE_CPU nginx -p "$RUN/backend/" -e logs/error.log -c "$CONF/backend-nginx.conf" \
        > "$OUT/raw/backend.log" 2>&1 &
    PID[backend]=$!
    wait_http "http://127.0.0.1:$BACKEND_PORT/" || die "backend nginx did not start (raw/backend.log)"

    if [[ " $TARGETS " == *" haproxy "* ]]; then
        taskset -c $PROXY_CPU haproxy -db -f "$CONF/haproxy.cfg" > "$OUT/raw/haproxy.log" 2>&1 &
        PID[haproxy]=$!
    fi
    if [[ " $TARGETS " == *" nginx "* ]]; then
        taskset -c $PROXY_CPU nginx -p "$RUN/nginx/" -e logs/error.log -c "$CONF/nginx-proxy.conf" \
            > "$OUT/raw/nginx.log" 2>&1 &
        PID[nginx]=$!
    fi
    if [[ " $TARGETS " == *" sozu "* ]]; then
        # Main process in the foreground; it forks the worker (a child: tree_pids counts both).
        sed "s#@RUN@#$RUN#g" "$CONF/sozu.toml" > "$RUN/sozu/sozu.toml"
        taskset -c $PROXY_CPU sozu --config "$RUN/sozu/sozu.toml" start > "$OUT/raw/sozu.log" 2>&1 &
        PID[sozu]=$!
    fi
    if [[ " $TARGETS " == *" caddy "* ]]; then
        # One Go process, one P; its data and autosaved config stay in $RUN/caddy, not in $HOME.
        GOMAXPROCS=1 XDG_DATA_HOME=$RUN/caddy/data XDG_CONFIG_HOME=$RUN/caddy/config \
            taskset -c $PROXY_CPU caddy run --config "$CONF/caddy.Caddyfile" --adapter caddyfile \
            > "$OUT/raw/caddy.log" 2>&1 &
        PID[caddy]=$!
    fi
    if [[ " $TARGETS " == *" h2o "* ]]; then
        # Worker mode: one process (plus its backtrace-annotating perl helper, a child).
        sed "s#@RUN@#$RUN#g" "$CONF/h2o.conf" > "$RUN/h2o/h2o.conf"
        taskset -c $PROXY_CPU h2o -m worker -c "$RUN/h2o/h2o.conf" > "$OUT/raw/h2o.log" 2>&1 &
        PID[h2o]=$!
    fi
    local sg conf
    for sg in shardgate shardgate_base; do
        [[ " $TARGETS " == *" $sg "* ]] || continue
        conf=$CONF/shardgate.toml
        [[ $sg == shardgate_base ]] && conf=$RUN/shardgate_base.toml
        # SG_DRIVER=epoll measures shardgate on its epoll driver instead of io_uring.
        if [[ ${SG_DRIVER:-auto} == epoll ]]; then
            MONOIO_FORCE_LEGACY_DRIVER=1 taskset -c $PROXY_CPU "$RUN/bin/$sg" --config "$conf" \
                > "$OUT/raw/$sg.log" 2>&1 &
        else
            taskset -c $PROXY_CPU "$RUN/bin/$sg" --config "$conf" > "$OUT/raw/$sg.log" 2>&1 &
        fi
        PID[$sg]=$!
    done
    local t
    for t in $TARGETS; do
        [[ $t == direct ]] && continue
        wait_http "http://127.0.0.1:${PORT[$t]}/" || die "$t did not start (raw/$t.log)"
        curl -s --max-time 2 "http://127.0.0.1:${PORT[$t]}/16k" | cmp -s - "$RUN/backend/html/16k" \
            || die "$t does not relay the 16 KiB body intact"
    done
}


# One measured run: prints one TSV line to runs.tsv.
run_one() {
    local wl=$1 target=$2 rep=$3
    local url="http://127.0.0.1:${PORT[$target]}${PATHQ[$wl]}"
    local raw="$OUT/raw/$wl-$target-r$rep"
    local mpids bpids
    if [[ $target == direct ]]; then mpids=""; else read -r -a mpids <<< "$(tree_pids "${PID[$target]}" | xargs)"; fi
    read -r -a bpids <<< "$(tree_pids "${PID[backend]}" | xargs)"
    local acc0 p0 t0 b0 rss0=${BASE_RSS[$target]}
    acc0=$(backend_accepts)
    p0=0 t0=0
    if [[ $target != direct ]]; then p0=$(cpu_ns "${mpids[@]}"); t0=$(tick_ns "${mpids[@]}"); fi
    b0=$(cpu_ns "${bpids[@]}")

    case $wl in
        tiny | 16k)
            taskset -c $SIDE_CPU wrk -t1 -c$CONNS_SMALL -d"${DUR}s" --latency "$url" > "$raw.txt" 2>&1 &
            ;;
        rate)
            if [[ $C_CLIENT == oha ]]; then
                taskset -c $SIDE_CPU oha -c $CONNS_SMALL -q $RATE --latency-correction -z "${RATE_DUR}s" \
                    --no-tui --output-format json -o "$raw.json" "$url" > "$raw.txt" 2>&1 &
            else
                taskset -c $SIDE_CPU "$RUN/bin/loadgen" http -t 1 -c $CONNS_SMALL -R $RATE -d "${RATE_DUR}s" \
                    --json "$raw.json" "$url" > "$raw.txt" 2>&1 &
            fi
            ;;
        conn10k)
            # Several source addresses: 10k connections per run times reps would otherwise run
            # the ephemeral port range of one address into TIME_WAIT.
            taskset -c $SIDE_CPU "$RUN/bin/loadgen" http -t 1 -c $CONNS_BIG --ramp "${RAMP}s" -d "${CONN_DUR}s" \
                --source 127.0.0.2-127.0.0.9 --json "$raw.json" "$url" > "$raw.txt" 2>&1 &
            ;;
        idle10k)
            # 10,000 keep-alive connections that are mostly idle: 500 req/s spread over all
            # of them (one request per connection every 20 s), as in production.
            taskset -c $SIDE_CPU "$RUN/bin/loadgen" http -t 1 -c $CONNS_BIG -R 500 --ramp "${RAMP}s" -d "${CONN_DUR}s" \
                --source 127.0.0.10-127.0.0.17 --json "$raw.json" "$url" > "$raw.txt" 2>&1 &
            ;;
    esac
    CLIENT_PID=$!
    if [[ $wl == conn10k || $wl == idle10k ]]; then
        # Peak RSS and open fds of the proxy (clients + upstream connections) while the client
        # runs, 2 samples/s; for "direct", of the backend.
        local watch=("${mpids[@]}")
        [[ $target == direct ]] && watch=("${bpids[@]}")
        (
            pr=0 pu=0
            while kill -0 "$CLIENT_PID" 2>/dev/null; do
                r=$(rss_kib "${watch[@]}"); ((r > pr)) && pr=$r
                u=$(open_fds "${watch[@]}"); ((u > pu)) && pu=$u
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

    local p1=0 t1=0 b1 acc1
    if [[ $target != direct ]]; then settle "${mpids[@]}"; p1=$(cpu_ns "${mpids[@]}"); t1=$(tick_ns "${mpids[@]}"); fi
    b1=$(cpu_ns "${bpids[@]}")
    acc1=$(backend_accepts)
    local rsspeak=NA uppeak=NA
    if [[ -f $raw.peak ]]; then read -r rsspeak uppeak < "$raw.peak"; fi

    # Parse the client's output into: requests elapsed_s errors non2xx p50 p99 p999 (ms).
    local parsed
    parsed=$(python3 - "$wl" "$raw" "$C_CLIENT" <<'PY'
import json, re, sys
wl, raw, cc = sys.argv[1:4]
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
if wl in ("tiny", "16k"):
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
elif wl == "rate" and cc == "oha":
    j = json.load(open(raw + ".json"))
    codes = j.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    non2xx = sum(v for k, v in codes.items() if not k.startswith("2"))
    errs = sum(j.get("errorDistribution", {}).values())
    lp = j["latencyPercentiles"]
    print(ok, f"{j['summary']['total']:.4f}", errs, non2xx, "NA",
          lp["p50"] * 1000, lp["p99"] * 1000, lp["p99.9"] * 1000)
else:
    j = json.load(open(raw + ".json"))
    lat = j["latency_ms"]
    ok = j["responses"] - j["non_success"]
    # unfinished: requests still awaiting a reply when the client gave up at the end.
    print(ok, f"{j['elapsed_s']:.4f}", j["error_total"], j["non_success"], j.get("unfinished", 0),
          lat["p50"], lat["p99"], lat["p99_9"])
PY
    ) || parsed="0 0 NA NA NA NA NA NA"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$wl" "$target" "$rep" "$(tr ' ' '\t' <<< "$parsed")" \
        "$([[ $target == direct ]] && echo NA || echo $((p1 - p0)))" \
        "$([[ $target == direct ]] && echo NA || echo $((t1 - t0)))" \
        "$((b1 - b0))" "$((acc1 - acc0))" "$uppeak" "$rss0" "$rsspeak" "$crc" >> "$OUT/runs.tsv"
    log "$(printf '%-8s %-14s rep %s: %s' "$wl" "$target" "$rep" "$(tail -n 1 "$OUT/runs.tsv" | cut -f4-13 | tr '\t' ' ')")"
}

# ---------------------------------------------------------------------------------------------
# Medians over reps, and paired ratios (shardgate's value divided by the other proxy's value in
# the same rep, then the median of those ratios), as markdown.
summarize() {
    python3 - "$1" "$CONNS_BIG" "$BODY_16K" <<'PY'
import csv, os, statistics, sys
out, conns_big, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = list(csv.DictReader(open(os.path.join(out, "runs.tsv")), delimiter="\t"))

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
        return req * body / el / 2**20 if req and el else None
    if name == "us":
        ns = num(r["proxy_cpu_ns"])
        return ns / req / 1000 if ns is not None and req else None
    if name == "bus":
        ns = num(r["backend_cpu_ns"])
        return ns / req / 1000 if ns is not None and req else None
    if name == "err":
        e, n = num(r["errors"]), num(r["non2xx"])
        return (e or 0) + (n or 0)
    if name == "rss":
        a, b = num(r["rss_idle_kib"]), num(r["rss_peak_kib"])
        return (b - a) / conns_big if a is not None and b is not None else None
    if name in ("p50_ms", "p99_ms", "p999_ms", "upstream_opened", "fds_peak", "unfinished"):
        return num(r[name])
    raise KeyError(name)

PEERS = ("haproxy", "nginx", "sozu", "caddy", "h2o")
NAMES = {"haproxy": "HAProxy", "nginx": "nginx", "sozu": "Sozu", "caddy": "Caddy", "h2o": "H2O"}
targets = [t for t in ("direct",) + PEERS + ("shardgate_base", "shardgate") if any(r["target"] == t for r in rows)]
others = [o for o in PEERS + ("shardgate_base",) if o in targets and "shardgate" in targets]
reps = sorted({r["rep"] for r in rows}, key=int)

def values(wl, t, name):
    return {r["rep"]: metric(r, name) for r in rows if r["workload"] == wl and r["target"] == t}

def med(vs):
    vs = [v for v in vs if v is not None]
    return statistics.median(vs) if vs else None

def fmt(v, d):
    if v is None:
        return "–"
    return f"{v:,.{d}f}" if d else f"{v:,.0f}"

def ratio(wl, name, other):
    a, b = values(wl, "shardgate", name), values(wl, other, name)
    rs = [a[k] / b[k] for k in reps if a.get(k) is not None and b.get(k) not in (None, 0)]
    return f"{statistics.median(rs):.2f}" if rs else "–"

LINES = [
    ("tiny", "(a) tiny body, 64 conns: req/s", "rps", 0, True),
    ("tiny", "(a) proxy CPU µs/request", "us", 1, True),
    ("tiny", "(a) backend CPU µs/request", "bus", 1, False),
    ("tiny", "(a) p99 ms (wrk, closed loop)", "p99_ms", 2, True),
    ("tiny", "(a) upstream connections opened", "upstream_opened", 0, False),
    ("16k", "(b) 16 KiB body: MiB/s", "mibps", 0, True),
    ("16k", "(b) proxy CPU µs/request", "us", 1, True),
    ("16k", "(b) p99 ms (wrk, closed loop)", "p99_ms", 2, True),
    ("rate", "(c) 5000 req/s: achieved req/s", "rps", 0, False),
    ("rate", "(c) p50 ms (CO-corrected)", "p50_ms", 2, True),
    ("rate", "(c) p99 ms (CO-corrected)", "p99_ms", 2, True),
    ("rate", "(c) p99.9 ms (CO-corrected)", "p999_ms", 2, True),
    ("rate", "(c) proxy CPU µs/request", "us", 1, True),
    ("rate", "(c) errors", "err", 0, False),
    ("conn10k", "(d) 10k conns: req/s", "rps", 0, True),
    ("conn10k", "(d) errors + non-2xx (median)", "err", 0, False),
    ("conn10k", "(d) requests awaiting reply when the client stopped", "unfinished", 0, False),
    ("conn10k", "(d) p99 ms (closed loop)", "p99_ms", 0, True),
    ("conn10k", "(d) proxy CPU µs/request", "us", 1, True),
    ("conn10k", "(d) RSS KiB per connection (peak − idle) / 10k", "rss", 1, True),
    ("conn10k", "(d) upstream connections opened", "upstream_opened", 0, False),
    ("conn10k", "(d) open fds of the proxy, peak (clients + upstream)", "fds_peak", 0, False),
    ("idle10k", "(e) 10k mostly idle conns (500 req/s): errors", "err", 0, False),
    ("idle10k", "(e) RSS KiB per connection (peak − idle) / 10k", "rss", 2, True),
    ("idle10k", "(e) proxy CPU µs/request", "us", 1, True),
    ("idle10k", "(e) upstream connections opened", "upstream_opened", 0, False),
]
meta = open(os.path.join(out, "meta.txt")).read().splitlines() if os.path.exists(os.path.join(out, "meta.txt")) else []
print("# " + " vs ".join(["shardgate"] + [NAMES[p] for p in PEERS if p in targets]) + f" — {os.path.basename(out.rstrip('/'))}\n")
for m in meta:
    if m.split(":")[0] in ("date", "commit", "shardgate_base", "command", "durations", "loadavg before", "loadavg after", "shardgate io driver", "shardgate_base io driver") + PEERS:
        print(f"- {m}")
print(f"\nMedians of {len(reps)} interleaved reps. Ratios: shardgate ÷ other, per rep, median "
      "(µs/req, latency, RSS: < 1 is better for shardgate; req/s, MiB/s: > 1 is better).\n")
# Ratio columns: shardgate ÷ each peer that ran (HAProxy, nginx, Sozu, Caddy, H2O), and
# ÷ shardgate_base when BASE_REV is given.
cols = others
print("| workload / metric | " + " | ".join(targets + ["sg÷" + o.replace("shardgate_", "") for o in cols]) + " |")
print("|" + "---|" * (len(targets) + len(cols) + 1))
wls = {r["workload"] for r in rows}
for wl, label, name, d, with_ratio in LINES:
    if wl not in wls:
        continue
    cells = []
    for t in targets:
        v = values(wl, t, name)
        if name == "us" and t == "direct":
            cells.append("–")
        elif name == "upstream_opened" and t == "direct":
            cells.append("(clients) " + fmt(med(v.values()), 0))
        elif name in ("err", "unfinished"):
            vs = [x for x in v.values() if x is not None]
            cells.append(f"{fmt(med(vs), 0)} (max {fmt(max(vs), 0)})" if vs else "–")
        else:
            cells.append(fmt(med(v.values()), d))
    rs = [ratio(wl, name, o) if with_ratio and o in others else "" for o in cols]
    print(f"| {label} | " + " | ".join(cells + rs) + " |")

# Per-rep proxy µs/request, to show the spread behind the medians.
print("\nProxy CPU µs/request per rep (spread behind the medians):\n")
print("| workload | " + " | ".join(t for t in targets if t != "direct") + " |")
print("|" + "---|" * (len([t for t in targets if t != "direct"]) + 1))
for wl in ("tiny", "16k", "rate", "conn10k", "idle10k"):
    if wl not in wls:
        continue
    cells = []
    for t in targets:
        if t == "direct":
            continue
        v = values(wl, t, "us")
        cells.append(" / ".join(fmt(v[k], 1) for k in reps if k in v))
    print(f"| {wl} | " + " | ".join(cells) + " |")

# Cross-check of the two CPU clocks: schedstat misses threads that exited during a run.
worst = 0.0
for r in rows:
    a, b = num(r["proxy_cpu_ns"]), num(r["proxy_tick_ns"])
    if a and b:
        worst = max(worst, abs(b - a) / a)
print(f"\nschedstat vs utime+stime: largest difference {worst * 100:.1f} % (tick resolution 10 ms).")
bad = [r for r in rows if r["client_rc"] not in ("0", "")]
if bad:
    print(f"Client exited non-zero in {len(bad)} run(s): " + ", ".join(f"{r['workload']}/{r['target']}/r{r['rep']}" for r in bad))
PY
}

# ---------------------------------------------------------------------------------------------
main() {
    mkdir -p "$OUT/raw" "$RUN"
    ensure_tools
    log "building (cargo build --release)"
    build
    BASE_COMMIT=""
    if [[ -n $BASE_REV ]]; then
        build_base
    elif [[ " $TARGETS " == *" shardgate_base "* ]]; then
        die "target shardgate_base needs BASE_REV=<git rev>"
    fi
    local commit dirty
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no -- src loadgen Cargo.toml Cargo.lock 2>/dev/null | wc -l)
    {
        echo "date: $(date -Is)"
        echo "commit: $commit (uncommitted changes in $dirty tracked source files at build time)"
        git -C "$ROOT" status --porcelain --untracked-files=no -- src loadgen Cargo.toml Cargo.lock 2>/dev/null | sed 's/^/  /'
        [[ -n $BASE_COMMIT ]] && echo "shardgate_base: $BASE_COMMIT (BASE_REV=$BASE_REV), $("$RUN/bin/shardgate_base" --version 2>&1), config $RUN/shardgate_base.toml"
        echo "command: QUICK=$QUICK REPS=$REPS TARGETS='$TARGETS' WORKLOADS='$WORKLOADS' C_CLIENT=$C_CLIENT${BASE_REV:+ BASE_REV=$BASE_REV} $0"
        echo "durations: closed-loop ${DUR}s, fixed-rate ${RATE_DUR}s, 10k ramp ${RAMP}s + ${CONN_DUR}s"
        echo "kernel: $(uname -r); cpus: $(nproc); model: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
        echo "open files: soft $(ulimit -Sn) hard $(ulimit -Hn)"
        echo "haproxy: $(haproxy -v 2>&1 | head -n 1)"
        echo "nginx: $(nginx -v 2>&1)"
        [[ " $TARGETS " == *" sozu "* ]] && echo "sozu: $(sozu --version 2>&1 | head -n 1)"
        [[ " $TARGETS " == *" caddy "* ]] && echo "caddy: $(caddy version 2>&1 | head -n 1)"
        [[ " $TARGETS " == *" h2o "* ]] && echo "h2o: $(h2o --version 2>&1 | head -n 1)"
        echo "wrk: $(wrk -v 2>&1 | head -n 1)"
        echo "loadgen: $("$RUN/bin/loadgen" --version 2>&1)"
        echo "shardgate: $("$RUN/bin/shardgate" --version 2>&1)"
        echo "sha256: $(cd "$RUN/bin" && sha256sum shardgate* | awk '{printf "%s %s  ", $2, $1}')"
        echo "loadavg before: $(cat /proc/loadavg)"
        echo "busiest processes before:"; ps -eo pid,pcpu,psr,comm --sort=-pcpu | sed -n '2,8p' | sed 's/^/  /'
    } > "$OUT/meta.txt"
    printf 'workload\ttarget\trep\trequests\telapsed_s\terrors\tnon2xx\tunfinished\tp50_ms\tp99_ms\tp999_ms\tproxy_cpu_ns\tproxy_tick_ns\tbackend_cpu_ns\tupstream_opened\tfds_peak\trss_idle_kib\trss_peak_kib\tclient_rc\n' \
        > "$OUT/runs.tsv"

    start_all
    grep -h -m1 -o 'driver=[A-Za-z]*' "$OUT/raw/shardgate.log" 2>/dev/null | sed 's/^driver=/shardgate io driver: /' >> "$OUT/meta.txt" || true
    grep -h -m1 -o 'driver=[A-Za-z]*' "$OUT/raw/shardgate_base.log" 2>/dev/null | sed 's/^driver=/shardgate_base io driver: /' >> "$OUT/meta.txt" || true

    # Warm-up: fill every proxy's upstream pool and fault in its code before measuring.
    local t
    for t in $TARGETS; do
        taskset -c $SIDE_CPU wrk -t1 -c$CONNS_SMALL -d1s "http://127.0.0.1:${PORT[$t]}/" > /dev/null 2>&1
    done

    # Idle RSS after warm-up: the base for RSS per connection. Taken once, because allocators
    # keep what a previous rep grew and a per-run "before" would hide it.
    local -a pids
    for t in $TARGETS; do
        if [[ $t == direct ]]; then
            read -r -a pids <<< "$(tree_pids "${PID[backend]}" | xargs)"
        else
            read -r -a pids <<< "$(tree_pids "${PID[$t]}" | xargs)"
        fi
        BASE_RSS[$t]=$(rss_kib "${pids[@]}")
    done

    local rep wl i n targets order
    read -r -a targets <<< "$TARGETS"
    n=${#targets[@]}
    for ((rep = 1; rep <= REPS; rep++)); do
        for wl in $WORKLOADS; do
            # Rotate the order each rep so no target always runs first (or right after direct).
            order=()
            for ((i = 0; i < n; i++)); do order+=("${targets[$(((i + rep - 1) % n))]}"); done
            for t in "${order[@]}"; do
                run_one "$wl" "$t" "$rep"
                if [[ $wl == *10k ]]; then sleep 2; else sleep 0.3; fi
            done
        done
    done

    if [[ -n ${PID[shardgate]:-} ]]; then
        "$RUN/bin/shardgate" ctl --socket "$RUN/ctl.sock" 'show stats' > "$OUT/raw/shardgate-stats.txt" 2>&1 || true
    fi
    if [[ -n ${PID[shardgate_base]:-} ]]; then
        "$RUN/bin/shardgate_base" ctl --socket "$RUN/ctl-base.sock" 'show stats' > "$OUT/raw/shardgate_base-stats.txt" 2>&1 || true
    fi
    echo "loadavg after: $(cat /proc/loadavg)" >> "$OUT/meta.txt"
    cp -f "$RUN/backend/logs/error.log" "$OUT/raw/backend-error.log" 2>/dev/null || true
    cp -f "$RUN/nginx/logs/error.log" "$OUT/raw/nginx-error.log" 2>/dev/null || true
    cp -f "$RUN/h2o/error.log" "$OUT/raw/h2o-error.log" 2>/dev/null || true
    # Recorded results name no path outside the repository: the checkout becomes ".".
    sed -i "s#$ROOT/#./#g; s#$ROOT\b#.#g" "$OUT"/meta.txt "$OUT"/raw/*.log "$OUT"/raw/*.txt 2>/dev/null || true
    summarize "$OUT" | tee "$OUT/summary.md"
    log "results: $OUT"
}

if [[ ${1:-} == --summarize ]]; then
    # Re-summarize an existing results directory: bench/compare.sh --summarize DIR
    trap - EXIT
    summarize "${2:?results directory}"
    exit 0
fi
main "$@"
