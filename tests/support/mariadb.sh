#!/usr/bin/env bash
# Real MariaDB servers on loopback for shardgate's MySQL tests.
#
#   mariadb.sh install                 install mariadb-server, mariadb-client, mariadb-test, sysbench if missing
#   mariadb.sh start [N] [DIR]         install if needed, start N (default 2) instances in DIR
#                                      (default: a new temp folder); prints the env file's path
#   mariadb.sh stop ENVFILE            stop every instance (by PID), remove the folder
#   mariadb.sh stop-one ENVFILE I      stop instance I (by PID), keep its data
#   mariadb.sh start-one ENVFILE I     start instance I again on its port (data kept: < 1 s)
#   mariadb.sh kill-one ENVFILE I      SIGKILL instance I (a crash under load)
#
# With MARIADB_SSL_DIR set (ca.pem, server.pem, server.key in it), started instances speak TLS.
# The env file is KEY=VALUE lines: MARIADB_DIR, MARIADB_COUNT, then per instance I
# MARIADB_PORT_I, MARIADB_PID_I, MARIADB_SOCK_I, MARIADB_DATADIR_I, MARIADB_CNF_I.
# Accounts (all on '%', mysql_native_password): sg_a/pw_a and sg_b/pw_b (all on sbtest.* and
# app.*), sg_root/pw_root (everything, for the tests' own checks). Databases: sbtest, app.
# Anonymous users are dropped: they would shadow 'sg_a'@'%' for connections from 127.0.0.1.
# Processes are only ever stopped by the PID this script recorded, never by name.
set -euo pipefail

log() { echo "mariadb.sh: $*" >&2; }
die() { log "$*"; exit 1; }

have_all() {
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || return 1
    command -v mariadb-install-db >/dev/null 2>&1 || return 1
    command -v mariadb >/dev/null 2>&1 || return 1
    command -v mariadb-admin >/dev/null 2>&1 || return 1
    command -v sysbench >/dev/null 2>&1 || return 1
    # MariaDB's own regression suite and its client (tests/mysql_suite.rs runs it through shardgate).
    command -v mariadb-test >/dev/null 2>&1 || return 1
    [ -d /usr/share/mysql/mysql-test/main ] || return 1
}

mariadbd_bin() {
    if command -v mariadbd >/dev/null 2>&1; then command -v mariadbd; else echo /usr/sbin/mariadbd; fi
}

do_install() {
    have_all && return 0
    [ "$(id -u)" = 0 ] || die "packages missing and not root: install mariadb-server mariadb-client mariadb-test sysbench"
    log "installing mariadb-server mariadb-client mariadb-test sysbench from Debian"
    # Keep the package from starting a system server on 3306 (policy-rc.d exit 101 = "denied").
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
    fi
    local rc=0
    {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null &&
            apt-get install -y -q --no-install-recommends mariadb-server mariadb-client mariadb-test sysbench >/dev/null
    } || rc=$?
    [ "$created" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get failed ($rc)"
    have_all || die "packages installed but binaries missing"
}

port_free() {
    # A connect that fails means nobody listens there (bind may still race; start retries).
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if port_free "$p"; then echo "$p"; return 0; fi
    done
    die "no free port found"
}

write_cnf() { # dir i port
    local d=$1/m$2
    cat >"$d.cnf" <<EOF
[client]
socket=$d/sock
user=root

[mariadbd]
user=root
datadir=$d/data
socket=$d/sock
pid-file=$d/mariadbd.pid
log-error=$d/error.log
# A private tmpdir: instances bootstrapping in parallel must not share /tmp's temp tables.
tmpdir=$d/tmp
port=$3
bind-address=127.0.0.1
skip-networking=0
skip-name-resolve
max_connections=1000
# The fault tests send broken handshakes on purpose; each counts as a connect error of the
# proxy's host, and 100 of them (the default) would block it.
max_connect_errors=1000000
max_allowed_packet=64M
local_infile=ON
userstat=1
performance_schema=OFF
skip-log-bin
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
innodb_flush_log_at_trx_commit=2
innodb_doublewrite=0
EOF
    # TLS for the tests that speak it to the server: MARIADB_SSL_DIR holds ca.pem,
    # server.pem and server.key.
    if [ -n "${MARIADB_SSL_DIR:-}" ]; then
        printf 'ssl-ca=%s/ca.pem\nssl-cert=%s/server.pem\nssl-key=%s/server.key\n' \
            "$MARIADB_SSL_DIR" "$MARIADB_SSL_DIR" "$MARIADB_SSL_DIR" >>"$d.cnf"
    fi
}

env_get() { # envfile key
    sed -n "s/^$2=//p" "$1" | tail -n 1
}

wait_ping() { # cnf pid
    for _ in $(seq 1 300); do
        if mariadb-admin --defaults-file="$1" ping >/dev/null 2>&1; then return 0; fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Start instance I of DIR on PORT; echoes the PID once the server answers ping.
launch() { # dir i port
    local d=$1/m$2 pid
    rm -f "$d/mariadbd.pid"
    setsid "$(mariadbd_bin)" --defaults-file="$d.cnf" </dev/null >>"$d/stdout.log" 2>&1 &
    pid=$!
    if ! wait_ping "$d.cnf" "$pid"; then
        kill -9 "$pid" 2>/dev/null || true
        return 1
    fi
    echo "$pid"
}

SETUP_SQL="
DELETE FROM mysql.global_priv WHERE User='';
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS sbtest;
CREATE DATABASE IF NOT EXISTS app;
CREATE USER IF NOT EXISTS 'sg_a'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw_a');
CREATE USER IF NOT EXISTS 'sg_b'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw_b');
CREATE USER IF NOT EXISTS 'sg_root'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw_root');
GRANT ALL ON sbtest.* TO 'sg_a'@'%', 'sg_b'@'%';
GRANT ALL ON app.* TO 'sg_a'@'%', 'sg_b'@'%';
GRANT FILE ON *.* TO 'sg_a'@'%', 'sg_b'@'%';
GRANT ALL ON *.* TO 'sg_root'@'%' WITH GRANT OPTION;
FLUSH PRIVILEGES;
"

do_start() {
    local n=${1:-2} dir=${2:-}
    do_install
    if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/sg-mariadb.XXXXXX); else mkdir -p "$dir"; fi
    local env=$dir/env
    printf 'MARIADB_DIR=%s\nMARIADB_COUNT=%s\n' "$dir" "$n" >"$env"
    # Initialise one data directory and copy it: install-db costs seconds, a copy milliseconds.
    local tmpl=$dir/template
    mkdir -p "$tmpl" "$dir/install-tmp"
    # install-db's bootstrap server gets a private tmpdir too (parallel starts collided in /tmp).
    mariadb-install-db --no-defaults --user=root --datadir="$tmpl" --skip-test-db \
        --tmpdir="$dir/install-tmp" \
        --auth-root-authentication-method=socket >"$dir/install-db.log" 2>&1 ||
        { cat "$dir/install-db.log" >&2; die "mariadb-install-db failed"; }
    local i port pid
    for i in $(seq 0 $((n - 1))); do
        mkdir -p "$dir/m$i" "$dir/m$i/tmp"
        cp -a "$tmpl" "$dir/m$i/data"
        pid=""
        for _ in 1 2 3 4 5; do
            port=$(pick_port)
            write_cnf "$dir" "$i" "$port"
            if pid=$(launch "$dir" "$i" "$port"); then break; fi
            pid=""
            log "instance $i did not start on port $port, retrying"
        done
        [ -n "$pid" ] || { tail -n 20 "$dir/m$i/error.log" >&2; die "instance $i failed to start"; }
        mariadb --defaults-file="$dir/m$i.cnf" -e "$SETUP_SQL" ||
            die "account setup failed on instance $i"
        {
            echo "MARIADB_PORT_$i=$port"
            echo "MARIADB_PID_$i=$pid"
            echo "MARIADB_SOCK_$i=$dir/m$i/sock"
            echo "MARIADB_DATADIR_$i=$dir/m$i/data"
            echo "MARIADB_CNF_$i=$dir/m$i.cnf"
        } >>"$env"
    done
    rm -rf "$tmpl"
    echo "$env"
}

stop_pid() { # pid
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

do_stop_one() { # env i
    stop_pid "$(env_get "$1" "MARIADB_PID_$2")"
}

do_kill_one() { # env i
    local pid
    pid=$(env_get "$1" "MARIADB_PID_$2")
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    # Reap: wait until it is gone so a restart can bind the port again.
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

do_start_one() { # env i
    local env=$1 i=$2 dir port pid
    dir=$(env_get "$env" MARIADB_DIR)
    port=$(env_get "$env" "MARIADB_PORT_$i")
    pid=""
    for _ in $(seq 1 30); do
        if pid=$(launch "$dir" "$i" "$port"); then break; fi
        pid=""
        sleep 0.2 # the old process's port may still be in TIME_WAIT/closing
    done
    [ -n "$pid" ] || { tail -n 20 "$dir/m$i/error.log" >&2; die "instance $i failed to restart"; }
    echo "MARIADB_PID_$i=$pid" >>"$env"
}

do_stop() { # env
    local env=$1 dir n i
    [ -f "$env" ] || die "no env file $env"
    dir=$(env_get "$env" MARIADB_DIR)
    n=$(env_get "$env" MARIADB_COUNT)
    for i in $(seq 0 $((n - 1))); do do_stop_one "$env" "$i"; done
    case "$dir" in
    /tmp/sg-mariadb.*) rm -rf "$dir" ;;
    *) log "leaving $dir in place (not created by this script)" ;;
    esac
}

cmd=${1:-}
shift || true
case "$cmd" in
install) do_install ;;
start) do_start "$@" ;;
stop) do_stop "$@" ;;
stop-one) do_stop_one "$@" ;;
start-one) do_start_one "$@" ;;
kill-one) do_kill_one "$@" ;;
*) die "usage: $0 install | start [N] [DIR] | stop ENV | stop-one ENV I | start-one ENV I | kill-one ENV I" ;;
esac
