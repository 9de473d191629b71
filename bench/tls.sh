#!/usr/bin/env bash
# tls.sh: TLS termination, shardgate against HAProxy 2.6 and nginx 1.22 in ONE interleaved run
# (method: compare.sh and PERF.md). Every target terminates TLS with the same certificate and key
# (generated here at start) and forwards plain HTTP, with upstream keep-alive, to the backend of
# compare.sh. The proxy under test is pinned to CPU0 with 1 shard / 1 thread / 1 worker; the
# backend (nginx, 1 worker) and the clients share CPU1. The figure is the proxy's CPU time per
# operation (schedstat ns of all its threads before and after a run, divided by the operations the
# client completed), not throughput: the client side is one core.
#
# Workloads (each a run of DUR seconds per target per rep):
#   plain-new  baseline without TLS: new plain-HTTP connections, one GET each, on a second
#              listener of the same process: wrk -t1 -cHS_CLIENTS -H 'Connection: close'
#   full       new TLS 1.3 connections, a full handshake each (no resumption), one GET each:
#              HS_CLIENTS parallel `openssl s_time -new -tls1_3 -www /`
#   resumed    the same, every connection resuming its process's TLS 1.3 session ticket:
#              `openssl s_time -reuse`; s_time prints one mark per connection, `r` for a resumed
#              session and `*` for a full handshake, so resumption is checked on every connection
#   ka-tiny    keep-alive GETs over TLS, KA_CONNS connections, 3-byte body: wrk --latency
#   ka-1m      the same with a 1 MiB body
#
# Usage:  bench/tls.sh                  full run (3 reps, 5 s per point, ~3 minutes)
#         QUICK=1 bench/tls.sh          smoke run (2 reps, 2 s per point)
# Knobs (environment): REPS, DUR (seconds per point), TARGETS="haproxy nginx shardgate",
#   WORKLOADS="plain-new full resumed ka-tiny ka-1m", CERT=ecdsa|rsa (P-256 or RSA-2048; both
#   are generated, this one is served), HS_CLIENTS (parallel s_time processes, default 4), KA_CONNS (default 64),
#   SHARDGATE_BIN (default target/release/shardgate of this checkout; relative paths are taken
#   from the repository root; the shardgate target is skipped, with the reason, when the binary is
#   missing or `--check` rejects bench/configs/tls-shardgate.toml), OUT=DIR (results directory).
# Output: bench/results/<date>-<time>-tls/{meta.txt,verify.txt,runs.tsv,summary.md,raw/}; the
# summary table is printed at the end. Every process started here is stopped by its PID on exit.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
CONF=$ROOT/bench/configs
# Scratch: certificates, rendered configs, the backend's files, nginx prefixes, the control socket.
RUN=/tmp/sg-tls

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    REPS=${REPS:-2}; DUR=${DUR:-2}
else
    REPS=${REPS:-3}; DUR=${DUR:-5}
fi
TARGETS=${TARGETS:-"haproxy nginx shardgate"}
WORKLOADS=${WORKLOADS:-"plain-new full resumed ka-tiny ka-1m"}
CERT=${CERT:-ecdsa}
HS_CLIENTS=${HS_CLIENTS:-4}
KA_CONNS=${KA_CONNS:-64}
SHARDGATE_BIN=${SHARDGATE_BIN:-target/release/shardgate}
[[ $SHARDGATE_BIN == /* ]] || SHARDGATE_BIN=$ROOT/$SHARDGATE_BIN
PROXY_CPU=0
SIDE_CPU=1
BACKEND_PORT=29200
STATUS_PORT=29201
declare -A PORT=([shardgate]=28440 [haproxy]=28441 [nginx]=28442)
# The same targets' plain-HTTP listeners, for the plain-new baseline.
declare -A PLAIN_PORT=([shardgate]=28450 [haproxy]=28451 [nginx]=28452)
declare -A PATHQ=([plain-new]=/ [full]=/ [resumed]=/ [ka-tiny]=/ [ka-1m]=/1m)
BODY_1M=1048576
SKIPPED=""

STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/$STAMP-tls}

log() { printf '[tls %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

case $CERT in ecdsa | rsa) ;; *) die "CERT=$CERT: expected ecdsa or rsa" ;; esac
for wl in $WORKLOADS; do [[ -n ${PATHQ[$wl]:-} ]] || die "unknown workload '$wl' (plain-new full resumed ka-tiny ka-1m)"; done
for t in $TARGETS; do [[ -n ${PORT[$t]:-} ]] || die "unknown target '$t' (haproxy nginx shardgate)"; done

# ---------------------------------------------------------------------------------------------
# Processes: every PID we start is recorded and stopped (SIGTERM, then SIGKILL) on exit.
declare -A PID=()
CLIENT_PIDS=()

cleanup() {
    local rc=$? name p
    trap - EXIT INT TERM
    for p in "${CLIENT_PIDS[@]}"; do stop_pid "$p"; done
    for name in "${!PID[@]}"; do stop_tree "${PID[$name]}"; done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Tools: install what is missing (Debian/Ubuntu).
ensure_tools() {
    local need=() sudo=""
    command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
    command -v wrk >/dev/null || need+=(wrk)
    command -v openssl >/dev/null || need+=(openssl)
    command -v curl >/dev/null || need+=(curl)
    command -v python3 >/dev/null || need+=(python3)
    command -v ss >/dev/null || need+=(iproute2)
    command -v taskset >/dev/null || need+=(util-linux)
    if ((${#need[@]})); then
        [[ $(id -u) -ne 0 ]] && sudo=sudo
        log "installing: ${need[*]}"
        if ! { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; }; then
            die "apt-get install ${need[*]} failed"
        fi
    fi
    export PATH=$PATH:/usr/sbin:/sbin
}

# One ECDSA P-256 and one RSA-2048 self-signed certificate for bench.local, new every run; CERT
# chooses the one every target serves. HAProxy wants certificate and key in one file (BUNDLE).
make_certs() {
    local d=$RUN/certs
    rm -rf "$d" && mkdir -p "$d" && chmod 755 "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=bench.local -addext subjectAltName=DNS:bench.local \
        -keyout "$d/ecdsa.key" -out "$d/ecdsa.crt" 2>/dev/null || die "openssl req (ECDSA) failed"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
        -subj /CN=bench.local -addext subjectAltName=DNS:bench.local \
        -keyout "$d/rsa.key" -out "$d/rsa.crt" 2>/dev/null || die "openssl req (RSA) failed"
    CRT=$d/$CERT.crt
    KEY=$d/$CERT.key
    BUNDLE=$d/$CERT.pem
    cat "$CRT" "$KEY" > "$BUNDLE"
    chmod 644 "$d"/*
    FINGERPRINT=$(openssl x509 -in "$CRT" -noout -fingerprint -sha256 | sed 's/^.*=//')
}

# The configs in the repository carry placeholders; the rendered copies live in $RUN/conf.
render_configs() {
    local f
    mkdir -p "$RUN/conf"
    for f in tls-haproxy.cfg tls-nginx.conf tls-shardgate.toml; do
        sed -e "s#@CERT@#$CRT#g" -e "s#@KEY@#$KEY#g" -e "s#@BUNDLE@#$BUNDLE#g" -e "s#@RUN@#$RUN#g" \
            "$CONF/$f" > "$RUN/conf/$f"
    done
}

# shardgate runs only if the binary exists and accepts the tls table (TLS may not have landed in
# the checkout the binary was built from). Otherwise it leaves TARGETS, with the reason logged.
check_shardgate() {
    [[ " $TARGETS " == *" shardgate "* ]] || return 0
    local why="" out
    if [[ ! -x $SHARDGATE_BIN ]]; then
        why="no executable at SHARDGATE_BIN=$SHARDGATE_BIN"
    elif ! out=$("$SHARDGATE_BIN" --check --config "$RUN/conf/tls-shardgate.toml" 2>&1); then
        out=$(head -n 1 <<< "${out//$RUN\/conf\//}")
        why="$SHARDGATE_BIN --check rejects configs/tls-shardgate.toml (no TLS support?): ${out:0:160}"
    fi
    if [[ -n $why ]]; then
        log "skipping shardgate: $why"
        SKIPPED="shardgate: $why"
        TARGETS=$(xargs -n 1 <<< "$TARGETS" | grep -vx shardgate | xargs || true)
    else
        # A copy: a rebuild during the run must not change the binary under test.
        mkdir -p "$RUN/bin"
        cp -f "$SHARDGATE_BIN" "$RUN/bin/shardgate"
    fi
    [[ -n $TARGETS ]] || die "no target left to measure"
}

# ---------------------------------------------------------------------------------------------
start_all() {
    local p t
    for p in "${PORT[@]}" "${PLAIN_PORT[@]}" $BACKEND_PORT $STATUS_PORT; do
        # SO_REUSEPORT listeners (shardgate, HAProxy) would silently share a busy port.
        port_free "$p" || die "port $p is already in use: $(ss -Hltnp "sport = :$p" | head -n 1)"
    done
    rm -rf "$RUN/backend" "$RUN/nginx" "$RUN/ctl.sock"
    mkdir -p "$RUN/backend/logs" "$RUN/backend/tmp" "$RUN/backend/html" "$RUN/nginx/logs" "$RUN/nginx/tmp"
    chmod 755 "$RUN" "$RUN/backend" "$RUN/backend/html"
    head -c "$BODY_1M" /dev/urandom > "$RUN/backend/html/1m"
    chmod 644 "$RUN/backend/html/1m"
    ulimit -n "$(ulimit -Hn)"

    taskset -c $SIDE_CPU nginx -p "$RUN/backend/" -e logs/error.log -c "$CONF/backend-nginx.conf" \
        > "$OUT/raw/backend.log" 2>&1 &
    PID[backend]=$!
    wait_http "http://127.0.0.1:$BACKEND_PORT/" || die "backend nginx did not start (raw/backend.log)"

    for t in $TARGETS; do
        case $t in
            haproxy)
                taskset -c $PROXY_CPU haproxy -db -f "$RUN/conf/tls-haproxy.cfg" > "$OUT/raw/haproxy.log" 2>&1 &
                ;;
            nginx)
                taskset -c $PROXY_CPU nginx -p "$RUN/nginx/" -e logs/error.log -c "$RUN/conf/tls-nginx.conf" \
                    > "$OUT/raw/nginx.log" 2>&1 &
                ;;
            shardgate)
                taskset -c $PROXY_CPU "$RUN/bin/shardgate" --config "$RUN/conf/tls-shardgate.toml" \
                    > "$OUT/raw/shardgate.log" 2>&1 &
                ;;
        esac
        PID[$t]=$!
    done
    for t in $TARGETS; do
        wait_http "https://127.0.0.1:${PORT[$t]}/" -k || die "$t did not start (raw/$t.log)"
        wait_http "http://127.0.0.1:${PLAIN_PORT[$t]}/" || die "$t: no plain-HTTP listener (raw/$t.log)"
    done
}

# Before anything is measured, per target: the bodies arrive intact, the certificate served is
# ours, TLS 1.3 is negotiated, the request s_time sends (HTTP/1.0, no Host) is answered 200, and
# a TLS 1.3 session ticket from one connection resumes the next (s_client -sess_out/-sess_in).
# A relay or certificate failure stops the run; a failed resumption is reported and flagged.
# verify.txt has the details, verify.tsv one line per target for the summary.
verify() {
    local t port f sess out got brief http10 resumed tk_full tk_res
    f=$OUT/verify.txt
    echo "certificate: $CERT, sha256 fingerprint $FINGERPRINT" > "$f"
    printf 'target\tprotocol\tciphersuite\tgroup\thttp10\tresumed\ttickets_full\ttickets_resumed\n' > "$OUT/verify.tsv"
    for t in $TARGETS; do
        port=${PORT[$t]}
        echo "== $t (127.0.0.1:$port)" >> "$f"
        [[ $(curl -sk --max-time 5 "https://127.0.0.1:$port/") == ok ]] || die "$t: GET / over TLS is not the backend's 'ok'"
        [[ $(curl -s --max-time 5 "http://127.0.0.1:${PLAIN_PORT[$t]}/") == ok ]] || die "$t: GET / on the plain listener is not 'ok'"
        curl -sk --max-time 10 "https://127.0.0.1:$port/1m" | cmp -s - "$RUN/backend/html/1m" \
            || die "$t does not relay the 1 MiB body intact"
        echo "bodies: tiny and 1 MiB intact" >> "$f"

        got=$(openssl s_client -connect "127.0.0.1:$port" -servername bench.local < /dev/null 2>/dev/null \
            | openssl x509 -noout -fingerprint -sha256 | sed 's/^.*=//') || true
        [[ $got == "$FINGERPRINT" ]] || die "$t serves another certificate ($got)"
        echo "certificate: ours" >> "$f"
        brief=$(openssl s_client -connect "127.0.0.1:$port" -servername bench.local -brief < /dev/null 2>&1 \
            | grep -E '^(Protocol version|Ciphersuite|Server Temp Key|Negotiated TLS1.3 group)') || true
        echo "$brief" >> "$f"

        # What every s_time connection sends: "GET / HTTP/1.0" without a Host header.
        got=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 openssl s_client -quiet -connect "127.0.0.1:$port" \
            -servername bench.local -tls1_3 2>/dev/null | head -n 1 | tr -d '\r') || true
        echo "s_time's request (HTTP/1.0, no Host): $got" >> "$f"
        http10=${got:-none}
        [[ $got == "HTTP/1."?" 200"* ]] || log "warning: $t answers s_time's request with '$got' (see verify.txt)"

        # Resumption: the first connection reads until the server closes, so the tickets sent
        # after the handshake are received and saved; the second offers one.
        sess=$RUN/sess-$t.pem
        rm -f "$sess"
        out=$(printf 'GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n' \
            | timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername bench.local -tls1_3 \
                -sess_out "$sess" -ign_eof 2>&1) || true
        echo "first connection:  $(grep -E -m1 '^(New|Reused),' <<< "$out")" >> "$f"
        # Tickets the server issues after a full handshake (each costs it an encryption).
        tk_full=$(grep -c 'New Session Ticket arrived' <<< "$out" || true)
        echo "  session tickets received: $tk_full" >> "$f"
        out=$(printf 'GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n' \
            | timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername bench.local -tls1_3 \
                -sess_in "$sess" -ign_eof 2>&1) || true
        got=$(grep -E -m1 '^(New|Reused),' <<< "$out" || echo "no handshake line")
        echo "second connection: $got" >> "$f"
        tk_res=$(grep -c 'New Session Ticket arrived' <<< "$out" || true)
        echo "  session tickets received: $tk_res" >> "$f"
        if [[ $got == Reused,* ]]; then
            resumed=yes
            echo "resumption: yes" >> "$f"
        else
            resumed=NO
            echo "resumption: NO (the 'resumed' workload measures full handshakes for this target)" >> "$f"
            log "warning: $t did not resume a TLS 1.3 session ticket (verify.txt)"
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" \
            "$(sed -n 's/^Protocol version: //p' <<< "$brief")" "$(sed -n 's/^Ciphersuite: //p' <<< "$brief")" \
            "$(sed -n -E 's/^(Server Temp Key|Negotiated TLS1.3 group): //p' <<< "$brief" | head -n 1)" \
            "$http10" "$resumed" "$tk_full" "$tk_res" >> "$OUT/verify.tsv"
    done
}

# ---------------------------------------------------------------------------------------------
# One measured run: appends one TSV line to runs.tsv.
run_one() {
    local wl=$1 target=$2 rep=$3
    local port=${PORT[$target]} raw="$OUT/raw/$wl-$target-r$rep"
    local mpids bpids i
    read -r -a mpids <<< "$(tree_pids "${PID[$target]}" | xargs)"
    read -r -a bpids <<< "$(tree_pids "${PID[backend]}" | xargs)"
    local p0 t0 b0 s0
    p0=$(cpu_ns "${mpids[@]}")
    t0=$(tick_ns "${mpids[@]}")
    b0=$(cpu_ns "${bpids[@]}")
    s0=$(date +%s.%N)

    CLIENT_PIDS=()
    case $wl in
        full | resumed)
            # s_time connects one connection at a time; several processes keep CPU1 busy while
            # the proxy works. -www makes each connection a GET read to the end, so the TLS 1.3
            # tickets (sent after the handshake) are received: -reuse needs them to resume.
            local mode=-new
            [[ $wl == resumed ]] && mode=-reuse
            for ((i = 1; i <= HS_CLIENTS; i++)); do
                taskset -c $SIDE_CPU openssl s_time -connect "127.0.0.1:$port" $mode -tls1_3 -time "$DUR" \
                    -www "${PATHQ[$wl]}" > "$raw.c$i.txt" 2>&1 &
                CLIENT_PIDS+=($!)
            done
            ;;
        plain-new)
            # As many connections at a time as the s_time processes of full/resumed keep open.
            taskset -c $SIDE_CPU wrk -t1 -c"$HS_CLIENTS" -d"${DUR}s" --latency -H 'Connection: close' \
                "http://127.0.0.1:${PLAIN_PORT[$target]}${PATHQ[$wl]}" > "$raw.txt" 2>&1 &
            CLIENT_PIDS+=($!)
            ;;
        ka-*)
            taskset -c $SIDE_CPU wrk -t1 -c"$KA_CONNS" -d"${DUR}s" --latency \
                "https://127.0.0.1:$port${PATHQ[$wl]}" > "$raw.txt" 2>&1 &
            CLIENT_PIDS+=($!)
            ;;
    esac
    local crc=0 rc
    for i in "${CLIENT_PIDS[@]}"; do
        rc=0
        wait "$i" || rc=$?
        ((rc > crc)) && crc=$rc
    done
    CLIENT_PIDS=()
    local s1 p1 t1 b1
    s1=$(date +%s.%N)
    # The "after" reading waits until the proxy is idle: teardown is charged to this run.
    settle "${mpids[@]}"
    p1=$(cpu_ns "${mpids[@]}")
    t1=$(tick_ns "${mpids[@]}")
    b1=$(cpu_ns "${bpids[@]}")

    # Parse the client's output into: ops elapsed_s full_hs resumed_hs errors non2xx p50 p99 (ms).
    local parsed
    parsed=$(python3 - "$wl" "$raw" "$HS_CLIENTS" "$s0" "$s1" <<'PY'
import glob, re, sys
wl, raw, clients, s0, s1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
if wl in ("full", "resumed"):
    # s_time prints one mark per completed connection on lines of their own: "r" when the
    # session was resumed, "*" for a full TLS 1.3 handshake. In -reuse mode each process first
    # makes one unmarked full handshake to get its session: counted here as full.
    full = res = errs = 0
    for f in sorted(glob.glob(raw + ".c*.txt")):
        t = open(f).read()
        marks = "".join(l for l in t.splitlines() if re.fullmatch(r"[*r]+", l))
        full += marks.count("*")
        res += marks.count("r")
        errs += len(re.findall(r"(?im)^.*(error|unable).*$", t))
    if wl == "resumed":
        full += clients
    # Elapsed: wall time of the client processes (s_time's own clock has 1 s resolution).
    print(full + res, f"{s1 - s0:.4f}", full, res, errs, 0, "NA", "NA")
else:
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
    print(req - non2xx, f"{el:.4f}", "NA", "NA", errs, non2xx, pct.get("50", "NA"), pct.get("99", "NA"))
PY
    ) || parsed="0 0 NA NA NA NA NA NA"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$target" "$rep" "$(tr ' ' '\t' <<< "$parsed")" \
        "$((p1 - p0))" "$((t1 - t0))" "$((b1 - b0))" "$crc" >> "$OUT/runs.tsv"
    log "$(printf '%-8s %-9s rep %s: %s' "$wl" "$target" "$rep" "$(tail -n 1 "$OUT/runs.tsv" | cut -f4-13 | tr '\t' ' ')")"
}

# ---------------------------------------------------------------------------------------------
# Per workload and target: medians over reps of the rate, the proxy CPU µs per operation, the
# operations per CPU-second (1e6 / µs: what one core would sustain), and the ratio of the
# target's median µs to the best (lowest) median of the other targets (< 1: cheaper than every
# peer). With shardgate: paired ratios shardgate ÷ other (same rep, median), as in compare.sh.
summarize() {
    python3 - "$1" "$BODY_1M" <<'PY'
import csv, os, statistics, sys
out, body = sys.argv[1], int(sys.argv[2])
rows = list(csv.DictReader(open(os.path.join(out, "runs.tsv")), delimiter="\t"))

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def us(r):
    ns, ops = num(r["proxy_cpu_ns"]), num(r["ops"])
    return ns / ops / 1000 if ns is not None and ops else None

def rate(r):
    ops, el = num(r["ops"]), num(r["elapsed_s"])
    return ops / el if ops and el else None

def med(vs):
    vs = [v for v in vs if v is not None]
    return statistics.median(vs) if vs else None

def fmt(v, d=0):
    return "–" if v is None else f"{v:,.{d}f}"

targets = [t for t in ("haproxy", "nginx", "shardgate") if any(r["target"] == t for r in rows)]
wls = [w for w in ("plain-new", "full", "resumed", "ka-tiny", "ka-1m") if any(r["workload"] == w for r in rows)]
reps = sorted({r["rep"] for r in rows}, key=int)
sel = lambda wl, t: [r for r in rows if r["workload"] == wl and r["target"] == t]
LABEL = {
    "plain-new": "new plain-HTTP connection + 1 GET (no TLS), per connection",
    "full": "full handshake (TLS 1.3, new session) + 1 GET, per connection",
    "resumed": "resumed handshake (TLS 1.3 ticket) + 1 GET, per connection",
    "ka-tiny": "keep-alive GET, 3-byte body, per request",
    "ka-1m": "keep-alive GET, 1 MiB body, per request",
}

meta_p = os.path.join(out, "meta.txt")
meta = open(meta_p).read().splitlines() if os.path.exists(meta_p) else []
print(f"# TLS termination: shardgate vs HAProxy vs nginx — {os.path.basename(out.rstrip('/'))}\n")
for m in meta:
    if m.split(":")[0] in ("date", "commit", "command", "durations", "certificate", "haproxy", "nginx",
                           "openssl", "wrk", "shardgate", "shardgate skipped", "loadavg before", "loadavg after"):
        print(f"- {m}")
print(f"\nMedians of {len(reps)} interleaved reps. CPU = the proxy's on-CPU time (schedstat) ÷ operations "
      "completed. \"per core\" = 1e6 ÷ CPU µs: operations one core of this machine would sustain. "
      "\"÷ best peer\" = this target's median CPU µs ÷ the lowest median of the other targets "
      "(< 1: cheaper than all of them). Rates are the client's (one core, shared with the backend).\n")
print("Workloads: " + "; ".join(f"`{w}` = {LABEL[w]}" for w in wls) + ".\n")
print("| workload | target | rate /s | CPU µs/op | per core /s | ÷ best peer | p50 / p99 ms | notes |")
print("|---|---|---|---|---|---|---|---|")
for wl in wls:
    meds = {t: med(us(r) for r in sel(wl, t)) for t in targets}
    for t in targets:
        rs = sel(wl, t)
        if not rs:
            continue
        m = meds[t]
        peers = [v for o, v in meds.items() if o != t and v]
        ratio = f"{m / min(peers):.2f}" if m and peers else "–"
        per_core = fmt(1e6 / m) if m else "–"
        r_med = med(rate(r) for r in rs)
        rate_s = fmt(r_med)
        if wl == "ka-1m" and r_med:
            rate_s += f" ({r_med * body / 2**20:,.0f} MiB/s)"
        lat = "–"
        notes = []
        if wl.startswith("ka") or wl == "plain-new":
            lat = f"{fmt(med(num(r['p50_ms']) for r in rs), 2)} / {fmt(med(num(r['p99_ms']) for r in rs), 2)}"
        else:
            full = sum(num(r["full_hs"]) or 0 for r in rs)
            res = sum(num(r["resumed_hs"]) or 0 for r in rs)
            if full + res:
                notes.append(f"resumed {100 * res / (full + res):.1f} %")
        errs = sum((num(r["errors"]) or 0) + (num(r["non2xx"]) or 0) for r in rs)
        if errs:
            notes.append(f"errors {errs:,.0f}")
        bad = [r["rep"] for r in rs if r["client_rc"] not in ("0", "")]
        if bad:
            notes.append("client failed in rep " + ",".join(bad))
        print(f"| {wl} | {t} | {rate_s} | {fmt(m, 1)} | {per_core} | {ratio} | {lat} | {'; '.join(notes)} |")

# What TLS adds to a new connection: the median of full (resumed) minus the median of
# plain-new, which has the same TCP accept/close and proxied GET without TLS.
if "plain-new" in wls and ("full" in wls or "resumed" in wls):
    print("\nTLS share of a new connection: CPU µs of `full` / `resumed` minus `plain-new` (same TCP "
          "connection and GET without TLS; the clients differ: s_time vs wrk):\n")
    print("| target | plain-new µs | full − plain µs | full handshakes per core /s | resumed − plain µs | resumed per core /s |")
    print("|---|---|---|---|---|---|")
    for t in targets:
        base = med(us(r) for r in sel("plain-new", t))
        cells = [fmt(base, 1)]
        for wl in ("full", "resumed"):
            m = med(us(r) for r in sel(wl, t))
            d = m - base if m is not None and base is not None else None
            cells += [fmt(d, 1), fmt(1e6 / d) if d and d > 0 else "–"]
        print(f"| {t} | " + " | ".join(cells) + " |")

if "shardgate" in targets:
    others = [o for o in targets if o != "shardgate"]
    print("\nPaired ratios of CPU µs/op, shardgate ÷ other (same rep, median; < 1 is better for shardgate):\n")
    print("| workload | " + " | ".join("sg ÷ " + o for o in others) + " |")
    print("|" + "---|" * (len(others) + 1))
    for wl in wls:
        cells = []
        for o in others:
            a = {r["rep"]: us(r) for r in sel(wl, "shardgate")}
            b = {r["rep"]: us(r) for r in sel(wl, o)}
            rs = [a[k] / b[k] for k in reps if a.get(k) and b.get(k)]
            cells.append(f"{statistics.median(rs):.2f}" if rs else "–")
        print(f"| {wl} | " + " | ".join(cells) + " |")

print("\nProxy CPU µs/op per rep (the spread behind the medians):\n")
print("| workload | " + " | ".join(targets) + " |")
print("|" + "---|" * (len(targets) + 1))
for wl in wls:
    cells = []
    for t in targets:
        v = {r["rep"]: us(r) for r in sel(wl, t)}
        cells.append(" / ".join(fmt(v[k], 1) for k in reps if k in v))
    print(f"| {wl} | " + " | ".join(cells) + " |")

worst = 0.0
for r in rows:
    a, b = num(r["proxy_cpu_ns"]), num(r["proxy_tick_ns"])
    if a and b:
        worst = max(worst, abs(b - a) / a)
print(f"\nschedstat vs utime+stime: largest difference {worst * 100:.1f} % (tick resolution 10 ms).")
vp = os.path.join(out, "verify.tsv")
if os.path.exists(vp):
    print("\nVerified before measuring (verify.txt; every target served our certificate and relayed both bodies "
          "intact). \"resumes\": a ticket from one `openssl s_client` connection resumed the next; "
          "the `resumed` rows' \"resumed %\" counts s_time's per-connection marks during the runs.\n")
    print("| target | protocol | ciphersuite | key exchange | s_time's HTTP/1.0 request | resumes "
          "| tickets issued after a full / resumed handshake |")
    print("|---|---|---|---|---|---|---|")
    for v in csv.DictReader(open(vp), delimiter="\t"):
        print(f"| {v['target']} | {v['protocol']} | {v['ciphersuite']} | {v['group']} | {v['http10']} "
              f"| {v['resumed']} | {v.get('tickets_full', '?')} / {v.get('tickets_resumed', '?')} |")
PY
}

# ---------------------------------------------------------------------------------------------
write_meta() {
    local commit dirty
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
    {
        echo "date: $(date -Is)"
        echo "commit: $commit (uncommitted changes in $dirty tracked files)"
        echo "command: QUICK=$QUICK REPS=$REPS DUR=$DUR TARGETS='$TARGETS' WORKLOADS='$WORKLOADS' CERT=$CERT HS_CLIENTS=$HS_CLIENTS KA_CONNS=$KA_CONNS $0"
        echo "durations: ${DUR}s per point; handshakes: $HS_CLIENTS x openssl s_time -tls1_3; keep-alive: wrk -t1 -c$KA_CONNS"
        echo "certificate: $CERT ($(openssl x509 -in "$CRT" -noout -text | grep -m1 -E 'Public-Key|ASN1 OID' | xargs)), CN=bench.local, self-signed, sha256 $FINGERPRINT"
        echo "kernel: $(uname -r); cpus: $(nproc); model: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
        echo "haproxy: $(haproxy -v 2>&1 | head -n 1); $(haproxy -vv 2>&1 | grep -E '^(Built with|Running on) OpenSSL version' | xargs)"
        echo "nginx: $(nginx -v 2>&1); $(nginx -V 2>&1 | grep -m1 -i 'openssl')"
        echo "openssl: $(openssl version)"
        echo "wrk: $(wrk -v 2>&1 | head -n 1)"
        if [[ " $TARGETS " == *" shardgate "* ]]; then
            echo "shardgate: $("$RUN/bin/shardgate" --version 2>&1), sha256 $(sha256sum "$RUN/bin/shardgate" | cut -c1-64)"
        fi
        [[ -n $SKIPPED ]] && echo "shardgate skipped: ${SKIPPED#shardgate: }"
        echo "loadavg before: $(cat /proc/loadavg)"
        echo "busiest processes before:"; ps -eo pid,pcpu,psr,comm --sort=-pcpu | sed -n '2,8p' | sed 's/^/  /'
    } > "$OUT/meta.txt"
}

main() {
    mkdir -p "$OUT/raw" "$RUN"
    ensure_tools
    make_certs
    render_configs
    check_shardgate
    write_meta
    printf 'workload\ttarget\trep\tops\telapsed_s\tfull_hs\tresumed_hs\terrors\tnon2xx\tp50_ms\tp99_ms\tproxy_cpu_ns\tproxy_tick_ns\tbackend_cpu_ns\tclient_rc\n' \
        > "$OUT/runs.tsv"

    start_all
    verify
    # Warm-up: fill every proxy's upstream pool and fault in its code (TLS included) first.
    local t
    for t in $TARGETS; do
        taskset -c $SIDE_CPU wrk -t1 -c"$KA_CONNS" -d1s "https://127.0.0.1:${PORT[$t]}/" > /dev/null 2>&1
    done

    local rep wl i n order
    local -a targets
    read -r -a targets <<< "$TARGETS"
    n=${#targets[@]}
    for ((rep = 1; rep <= REPS; rep++)); do
        for wl in $WORKLOADS; do
            # Rotate the order each rep so no target always runs first.
            order=()
            for ((i = 0; i < n; i++)); do order+=("${targets[$(((i + rep - 1) % n))]}"); done
            for t in "${order[@]}"; do
                run_one "$wl" "$t" "$rep"
                sleep 0.3
            done
        done
    done

    if [[ -n ${PID[shardgate]:-} ]]; then
        "$RUN/bin/shardgate" ctl --socket "$RUN/ctl.sock" 'show stats' > "$OUT/raw/shardgate-stats.txt" 2>&1 || true
    fi
    {
        # Other people's work during the run shows here (their builds share the cores).
        echo "loadavg after: $(cat /proc/loadavg)"
        echo "busiest processes after:"; ps -eo pid,pcpu,psr,comm --sort=-pcpu | sed -n '2,8p' | sed 's/^/  /'
    } >> "$OUT/meta.txt"
    cp -f "$RUN/backend/logs/error.log" "$OUT/raw/backend-error.log" 2>/dev/null || true
    cp -f "$RUN/nginx/logs/error.log" "$OUT/raw/nginx-error.log" 2>/dev/null || true
    # Recorded results name no path outside the repository: the checkout becomes ".".
    sed -i "s#$ROOT/#./#g; s#$ROOT\b#.#g" "$OUT"/meta.txt "$OUT"/verify.txt "$OUT"/raw/*.log "$OUT"/raw/*.txt 2>/dev/null || true
    summarize "$OUT" | tee "$OUT/summary.md"
    log "results: $OUT"
}

if [[ ${1:-} == --summarize ]]; then
    # Re-summarize an existing results directory: bench/tls.sh --summarize DIR
    trap - EXIT
    summarize "${2:?results directory}"
    exit 0
fi
main "$@"
