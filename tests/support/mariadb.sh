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
#   mariadb.sh replicate ENVFILE I J [MASTER_PORT]   (instances started with MARIADB_BINLOG=1)
#                                      make instance J a GTID replica of instance I (indexes from 0,
#                                      as in MARIADB_PORT_I); it connects to 127.0.0.1:MASTER_PORT
#                                      (default: I's port; pass a relay's port to delay the link)
#                                      and the call returns once J's IO and SQL threads both run
#
# With MARIADB_SSL_DIR set (ca.pem, server.pem, server.key in it), started instances speak TLS.
# The env file is KEY=VALUE lines: MARIADB_DIR, MARIADB_COUNT, then per instance I
# MARIADB_PORT_I, MARIADB_PID_I, MARIADB_SOCK_I, MARIADB_DATADIR_I, MARIADB_CNF_I.
# Accounts (all on '%', mysql_native_password): sg_a/pw_a and sg_b/pw_b (all on sbtest.* and
# app.*), sg_root/pw_root (everything, for the tests' own checks). Databases: sbtest, app.
# sg_repl/pw_repl (REPLICATION SLAVE: the account replicas log in with), sg_mon/pw_mon
# (REPLICA MONITOR and BINLOG MONITOR: SHOW SLAVE STATUS, SHOW BINLOG STATUS, @@gtid_current_pos).
# Anonymous users are dropped: they would shadow 'sg_a'@'%' for connections from 127.0.0.1.
# Replication: every instance has server_id I+1. Started with MARIADB_BINLOG=1, instances also
# keep a binary log (ROW, log_slave_updates) with gtid_strict_mode=1, so any one can be made a
# replica of another with `replicate`; without it (the default, what the other tests and the
# benchmarks measure) they run with skip-log-bin as before.
# The accounts and databases are created with sql_log_bin=0, i.e. outside the binary log: every
# instance makes them itself, so a replica replaying its primary's copy would trip over rows it
# already has (ROW events fail on a missing/duplicate row), and its own logged copy would give
# it GTIDs the primary never had. Unlogged, every instance starts with an empty
# gtid_current_pos, so a replica (slave_pos empty) starts at the primary's first event and
# receives every write made on the primary since it started, before or after `replicate`.
# A replica stays writable (read_only is not set): tests write only through the primary. A write
# on a replica would fork its GTID history from the primary's, which gtid_strict_mode turns
# into a replication error, so don't.
# Processes are only ever stopped by the PID this script recorded, never by name.
set -euo pipefail

log() { echo "mariadb.sh: $*" >&2; }

# The [mariadbd] lines for the binary log: replication-ready with MARIADB_BINLOG=1, off otherwise.
binlog_cnf() {
    if [ "${MARIADB_BINLOG:-0}" = 1 ]; then
        cat <<'CNF'
# A binary log every instance keeps (so any one can be a primary), GTIDs enforced in order.
log_bin=mariadb-bin
relay_log=mariadb-relay-bin
binlog_format=ROW
log_slave_updates=1
gtid_strict_mode=1
# With a binary log on, non-SUPER accounts may not create functions or triggers unless this is
# set; it keeps sg_a/sg_b able to do what they can without it.
log_bin_trust_function_creators=1
CNF
    else
        echo "skip-log-bin"
    fi
}
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
server_id=$(($2 + 1))
$(binlog_cnf)
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

# sql_log_bin=0: the set-up stays out of the binary log (see the header).
SETUP_SQL="
SET SESSION sql_log_bin=0;
DELETE FROM mysql.global_priv WHERE User='';
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS sbtest;
CREATE DATABASE IF NOT EXISTS app;
CREATE USER IF NOT EXISTS 'sg_a'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw_a');
CREATE USER IF NOT EXISTS 'sg_b'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw_b');
CREATE USER IF NOT EXISTS 'sg_root'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw_root');
CREATE USER IF NOT EXISTS 'sg_repl'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw_repl');
CREATE USER IF NOT EXISTS 'sg_mon'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw_mon');
GRANT ALL ON sbtest.* TO 'sg_a'@'%', 'sg_b'@'%';
GRANT ALL ON app.* TO 'sg_a'@'%', 'sg_b'@'%';
GRANT FILE ON *.* TO 'sg_a'@'%', 'sg_b'@'%';
GRANT ALL ON *.* TO 'sg_root'@'%' WITH GRANT OPTION;
GRANT REPLICATION SLAVE ON *.* TO 'sg_repl'@'%';
GRANT REPLICA MONITOR, BINLOG MONITOR ON *.* TO 'sg_mon'@'%';
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

# Make instance J replicate instance I through MariaDB GTIDs (MASTER_USE_GTID=slave_pos), over
# 127.0.0.1:MASTER_PORT (default I's port). Waits up to 30 s for both replica threads to run.
do_replicate() { # env i j [master_port]
    local env=$1 i=$2 j=$3 mport=${4:-} cnf io sql st
    [ -f "$env" ] || die "no env file $env"
    [ "$i" != "$j" ] || die "replicate: instance $i cannot replicate itself"
    [ -n "$mport" ] || mport=$(env_get "$env" "MARIADB_PORT_$i")
    [ -n "$mport" ] || die "replicate: no instance $i in $env"
    cnf=$(env_get "$env" "MARIADB_CNF_$j")
    [ -n "$cnf" ] || die "replicate: no instance $j in $env"
    # MASTER_CONNECT_RETRY=1: after a stop-one/start-one of the primary the replica is back in
    # about a second, not the default minute.
    mariadb --defaults-file="$cnf" -e "
STOP SLAVE;
CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$mport,
  MASTER_USER='sg_repl', MASTER_PASSWORD='pw_repl',
  MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
START SLAVE;" || die "replicate: CHANGE MASTER/START SLAVE failed on instance $j"
    for _ in $(seq 1 300); do
        st=$(mariadb --defaults-file="$cnf" -e 'SHOW SLAVE STATUS\G' 2>/dev/null) || st=""
        io=$(printf '%s\n' "$st" | sed -n 's/^ *Slave_IO_Running: //p')
        sql=$(printf '%s\n' "$st" | sed -n 's/^ *Slave_SQL_Running: //p')
        if [ "$io" = Yes ] && [ "$sql" = Yes ]; then return 0; fi
        sleep 0.1
    done
    printf '%s\n' "$st" | grep -E 'Slave_(IO|SQL)_Running:|Last_(IO|SQL)_Err' >&2 || true
    die "replicate: instance $j's replica threads not running after 30 s (IO=$io SQL=$sql, primary port $mport)"
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
replicate)
    [ $# -ge 3 ] || die "usage: $0 replicate ENV I J [MASTER_PORT]"
    do_replicate "$@"
    ;;
*) die "usage: $0 install | start [N] [DIR] | stop ENV | stop-one ENV I | start-one ENV I | kill-one ENV I | replicate ENV I J [MASTER_PORT]" ;;
esac
