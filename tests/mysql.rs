//! MySQL proxying against real MariaDB servers (tests/support/mariadb.sh) through the real
//! `shardgate` binary, with real clients: the `mariadb` CLI and `mariadb-admin` (libmariadb:
//! CACHE_METADATA), `mysql_async` (the client that negotiates DEPRECATE_EOF) and `sysbench`.
//! A test that needs MariaDB says so loudly and does nothing only when MariaDB cannot be
//! installed at all.

mod common;
mod mysql_support;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{pattern, sha256_hex, Proxy};
use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn};
use mysql_support::*;

macro_rules! mariadb {
    ($test:expr, $n:expr) => {
        match MariaDb::start($test, $n) {
            Some(db) => db,
            None => return,
        }
    };
}

/// Start the proxy and wait until the start-up probe's session is gone.
fn proxy(toml: &str) -> Proxy {
    let p = Proxy::start(toml);
    assert!(
        wait_until(Duration::from_secs(10), || traffic(&p).front("active") == 0),
        "start-up probe session still open"
    );
    p
}

fn has(out: &str, needle: &str) -> bool {
    out.contains(needle)
}

const PROCS: &str = "
CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, a VARCHAR(20), b VARCHAR(20));
DELIMITER //
CREATE PROCEDURE app.two() BEGIN SELECT 1 AS x; SELECT 'a' AS y, 2 AS z; END//
DELIMITER ;
";

/// Statements whose output is the same directly and through the proxy.
const READ_ONLY: &str = "
select 1 as one, 'x' as s, null as n;
delimiter //
select 1 as a; select 2 as b; select 3 as c//
select 1 as a; select * from nope2; select 3 as c//
delimiter ;
call two();
select * from nope;
use sbtest;
select database();
";

#[test]
fn mariadb_cli_and_admin_work_and_are_counted() {
    let db = mariadb!("mariadb_cli_and_admin_work_and_are_counted", 1);
    let root = cli(db.ports[0], "sg_root", "pw_root", None, &[], Some(PROCS));
    assert!(root.status.success(), "{}", stderr(&root));
    let p = proxy(&config(2, &db.ports, "", ""));
    let port = p.port("db");

    // Multi-statements, CALL with two result sets, errors and USE: byte-identical output.
    let direct = cli(
        db.ports[0],
        "sg_a",
        "pw_a",
        Some("app"),
        &["--force"],
        Some(READ_ONLY),
    );
    let proxied = cli(
        port,
        "sg_a",
        "pw_a",
        Some("app"),
        &["--force"],
        Some(READ_ONLY),
    );
    assert_eq!(stdout(&proxied), stdout(&direct));
    assert_eq!(stderr(&proxied), stderr(&direct));
    let out = stdout(&proxied);
    for want in [
        "one\ts\tn\n1\tx\tNULL\n",
        "a\n1\nb\n2\nc\n3\n",
        "x\n1\ny\tz\na\t2\n",
        "database()\nsbtest\n",
    ] {
        assert!(has(&out, want), "missing {want:?} in\n{out}");
    }
    let err = stderr(&proxied);
    assert!(
        has(
            &err,
            "ERROR 1146 (42S02) at line 5: Table 'app.nope2' doesn't exist"
        ),
        "{err}"
    );
    assert!(
        has(
            &err,
            "ERROR 1146 (42S02) at line 8: Table 'app.nope' doesn't exist"
        ),
        "{err}"
    );

    // LOAD DATA LOCAL INFILE: 300 rows of file data cross the proxy as non-command packets.
    let csv = p.dir.join("data.csv");
    let rows: String = (0..300).map(|i| format!("a{i},b{i}\n")).collect();
    std::fs::write(&csv, rows).unwrap();
    let load = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE t FIELDS TERMINATED BY ',' (a, b);\nselect count(*) as n from t;\n",
        csv.display()
    );
    let out = cli(
        port,
        "sg_a",
        "pw_a",
        Some("app"),
        &["--local-infile=1"],
        Some(&load),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "n\n300\n");

    let admin = {
        let mut cmd = std::process::Command::new("mariadb-admin");
        cmd.args([
            "--no-defaults",
            "-h127.0.0.1",
            &format!("-P{port}"),
            "-usg_b",
            "-ppw_b",
            "ping",
            "status",
        ]);
        run_with_stdin(cmd, None, "mariadb-admin")
    };
    assert!(admin.status.success(), "{}", stderr(&admin));
    let out = stdout(&admin);
    assert!(out.starts_with("mysqld is alive\nUptime: "), "{out}");

    let t = traffic(&p);
    let a = t.user("sg_a");
    // Proxied READ_ONLY: 1 + 2 batches + CALL + nope + SELECT DATABASE() (from `use`) +
    // select database() = 7 queries, one COM_INIT_DB, 2 errors; then LOAD DATA + count.
    assert_eq!(a.cmd("query"), 9, "{}", t.text);
    assert_eq!(a.cmd("init_db"), 1, "{}", t.text);
    assert_eq!(a.cmd("quit"), 2, "{}", t.text);
    assert_eq!(
        (a.connections, a.errors, a.unparsed),
        (2, 2, 0),
        "{}",
        t.text
    );
    assert_eq!(a.requests, 12);
    let b = t.user("sg_b");
    assert_eq!(
        (b.cmd("ping"), b.cmd("statistics"), b.errors),
        (1, 1, 0),
        "{}",
        t.text
    );
    assert!(
        a.time_total_ms > 0.0 && a.p50_ms > 0.0 && a.max_ms >= a.p99_ms,
        "{}",
        t.text
    );
}

#[test]
fn mysql_async_text_prepared_big_blobs_change_user_reset() {
    let db = mariadb!("mysql_async_text_prepared_big_blobs_change_user_reset", 1);
    db.sql(0, "CREATE TABLE app.blobs (id INT PRIMARY KEY, b LONGBLOB)");
    let p = proxy(&config(1, &db.ports, "", ""));
    let port = p.port("db");
    let blob = pattern(0, 17 << 20);
    let want = sha256_hex(&blob);

    block_on(Duration::from_secs(120), async {
        let mut c = Conn::new(opts(port, "sg_a", "pw_a", Some("app")))
            .await
            .expect("connect");
        // Text protocol, with a multi-result batch (DEPRECATE_EOF terminators + MORE_RESULTS).
        let one: Option<(i64, String)> = c.query_first("SELECT 1, 'one'").await.unwrap();
        assert_eq!(one, Some((1, "one".into())));
        let mut batch = c
            .query_iter("SELECT 1; SELECT 2 UNION SELECT 3")
            .await
            .unwrap();
        let first: Vec<i64> = batch.collect().await.unwrap();
        let second: Vec<i64> = batch.collect().await.unwrap();
        drop(batch);
        assert_eq!((first, second), (vec![1], vec![2, 3]));
        // Prepared statements; the 17 MiB blob goes up as a parameter and comes back down
        // both as a binary-protocol row and as a text-protocol row.
        c.exec_drop("INSERT INTO blobs VALUES (?, ?)", (1, blob.clone()))
            .await
            .unwrap();
        let bin: Option<Vec<u8>> = c
            .exec_first("SELECT b FROM blobs WHERE id = ?", (1,))
            .await
            .unwrap();
        assert_eq!(sha256_hex(&bin.expect("row")), want);
        let text: Option<Vec<u8>> = c
            .query_first("SELECT b FROM blobs WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(sha256_hex(&text.expect("row")), want);
        let n: Option<i64> = c
            .exec_first("SELECT COUNT(*) FROM blobs WHERE id > ?", (0,))
            .await
            .unwrap();
        assert_eq!(n, Some(1));
        let err = c
            .query_drop("SELECT * FROM nope")
            .await
            .expect_err("no such table");
        assert!(err.to_string().contains("1146"), "{err}");

        c.change_user(
            ChangeUserOpts::default()
                .with_user(Some("sg_b".into()))
                .with_pass(Some("pw_b".into())),
        )
        .await
        .expect("change user");
        let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
        assert_eq!(who.as_deref(), Some("sg_b@%"));
        c.query_drop("SET @x = 5").await.unwrap();
        assert!(
            c.reset().await.expect("reset"),
            "COM_RESET_CONNECTION supported"
        );
        let x: Option<Option<i64>> = c.query_first("SELECT @x").await.unwrap();
        assert_eq!(x, Some(None), "session state was reset");
        c.disconnect().await.unwrap();
    });

    assert!(wait_until(Duration::from_secs(5), || traffic(&p)
        .front("active")
        == 0));
    let t = traffic(&p);
    let a = t.user("sg_a");
    assert_eq!(
        (a.connections, a.errors, a.unparsed),
        (1, 1, 0),
        "{}",
        t.text
    );
    assert_eq!(a.cmd("change_user"), 1, "{}", t.text);
    assert_eq!(a.cmd("stmt_execute"), 3, "{}", t.text);
    assert!(a.cmd("stmt_prepare") >= 3, "{}", t.text);
    assert!(
        a.bytes_in > 17 << 20 && a.bytes_out > 2 * (17 << 20),
        "{}",
        t.text
    );
    let b = t.user("sg_b");
    assert_eq!(
        (b.connections, b.errors, b.unparsed),
        (1, 0, 0),
        "{}",
        t.text
    );
    assert_eq!(
        (b.cmd("reset_connection"), b.cmd("quit")),
        (1, 1),
        "{}",
        t.text
    );
    assert!(b.cmd("query") >= 3, "{}", t.text);
}

#[test]
fn sysbench_counts_match_per_user_and_bytes_match_mariadb() {
    let db = mariadb!("sysbench_counts_match_per_user_and_bytes_match_mariadb", 2);
    let table = ["--tables=1", "--table-size=1000"];
    for &port in &db.ports {
        let mut cmd = sysbench(port, "sg_a", "pw_a", &table);
        cmd.arg("oltp_read_only").arg("prepare");
        let out = run_with_stdin(cmd, None, "sysbench prepare");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    for i in 0..2 {
        db.sql(i, "FLUSH USER_STATISTICS");
    }
    let p = proxy(&config(2, &db.ports, "", ""));
    let port = p.port("db");

    // Two users at once: sg_a with prepared statements, sg_b with plain queries.
    let run = |user: &str, pass: &str, extra: &[&str]| {
        let mut cmd = sysbench(port, user, pass, &table);
        cmd.args(["--threads=4", "--events=100", "--time=0"])
            .args(extra)
            .arg("oltp_read_only")
            .arg("run");
        cmd
    };
    let a = std::thread::spawn({
        let cmd = run("sg_a", "pw_a", &[]);
        move || run_with_stdin(cmd, None, "sysbench ps")
    });
    let b = std::thread::spawn({
        let cmd = run("sg_b", "pw_b", &["--db-ps-mode=disable"]);
        move || run_with_stdin(cmd, None, "sysbench text")
    });
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        stderr(&a),
        stderr(&b)
    );
    let (qa, qb) = (sysbench_queries(&stdout(&a)), sysbench_queries(&stdout(&b)));
    assert_eq!(
        (qa, qb),
        (1600, 1600),
        "16 queries per oltp_read_only transaction"
    );

    assert!(wait_until(Duration::from_secs(5), || traffic(&p)
        .front("active")
        == 0));
    let t = traffic(&p);
    let ua = t.user("sg_a");
    let ub = t.user("sg_b");
    assert_eq!(ua.cmd("stmt_execute"), qa, "{}", t.text);
    assert_eq!(ua.cmd("query"), 0, "{}", t.text);
    assert_eq!(ub.cmd("query"), qb, "{}", t.text);
    assert_eq!(ub.cmd("stmt_execute"), 0, "{}", t.text);
    for u in [&ua, &ub] {
        assert_eq!(
            (u.errors, u.unparsed, u.connections),
            (0, 0, 4),
            "{}",
            t.text
        );
    }

    // MariaDB's own per-user byte counters agree within the connection-phase bytes (which
    // the server does not count as a user's traffic): at most a few hundred bytes a session.
    for (name, u) in [("sg_a", &ua), ("sg_b", &ub)] {
        let (received, sent, conns) = db.user_statistics(name);
        assert_eq!(conns, u.connections, "{name}");
        let slack = 400 * conns;
        let din = u.bytes_in.abs_diff(received);
        let dout = u.bytes_out.abs_diff(sent);
        assert!(
            din <= slack && dout <= slack,
            "{name}: proxy in/out {}/{} vs MariaDB received/sent {received}/{sent}\n{}",
            u.bytes_in,
            u.bytes_out,
            t.text
        );
    }

    // The metrics say the same, per user and command.
    let (code, text) = p.ctl("show metrics");
    assert_eq!(code, 0, "{text}");
    let e = common::prom::Exposition::parse(&text, false);
    let cmd = |user: &str, c: &str| {
        e.sum(
            "shardgate_mysql_user_commands_total",
            &[("user", user), ("command", c)],
        ) as u64
    };
    assert_eq!(cmd("sg_a", "stmt_execute"), qa);
    assert_eq!(cmd("sg_b", "query"), qb);
    assert_eq!(cmd("sg_b", "stmt_execute"), 0);
    for (name, u) in [("sg_a", &ua), ("sg_b", &ub)] {
        let user = [("user", name)];
        let one = |m: &str| e.one(m, &user) as u64;
        assert_eq!(one("shardgate_mysql_user_connections_total"), u.connections);
        assert_eq!(one("shardgate_mysql_user_bytes_in_total"), u.bytes_in);
        assert_eq!(one("shardgate_mysql_user_bytes_out_total"), u.bytes_out);
        assert_eq!(one("shardgate_mysql_user_errors_total"), 0);
        // One latency sample per reply: every query or execute, plus prepares and the like.
        let timed = one("shardgate_mysql_command_duration_seconds_count");
        assert!(
            timed >= 1600 && timed <= u.requests,
            "{name}: {timed} timed, {} commands",
            u.requests
        );
    }
}

/// Open `n` sessions one after another, each holding `SELECT SLEEP(hold)` in flight before the
/// next connects; returns the backend port each session landed on.
fn spread_sessions(port: u16, n: usize, hold: u32) -> Vec<u16> {
    block_on(Duration::from_secs(60), async move {
        let mut ports = Vec::new();
        let mut sleepers = Vec::new();
        for _ in 0..n {
            let mut c = Conn::new(opts(port, "sg_a", "pw_a", None))
                .await
                .expect("connect");
            let p: Option<u16> = c.query_first("SELECT @@port").await.unwrap();
            ports.push(p.unwrap());
            sleepers.push(tokio::spawn(async move {
                c.query_drop(format!("SELECT SLEEP({hold})"))
                    .await
                    .expect("sleep");
                c.disconnect().await.unwrap();
            }));
            // Let the SLEEP reach its server so it counts as in flight.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for s in sleepers {
            s.await.unwrap();
        }
        ports
    })
}

fn count_by(ports: &[u16]) -> HashMap<u16, usize> {
    let mut m = HashMap::new();
    for p in ports {
        *m.entry(*p).or_default() += 1;
    }
    m
}

#[test]
fn balancing_spreads_sleeping_sessions_by_in_flight_commands() {
    let db = mariadb!(
        "balancing_spreads_sleeping_sessions_by_in_flight_commands",
        2
    );
    let p = proxy(&config(2, &db.ports, "", ""));
    let port = p.port("db");
    let watcher = {
        // While the sessions sleep, the in-flight counts are visible on `show servers`.
        let sock = p.socket.clone();
        std::thread::spawn(move || {
            let mut best = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let (_, text, _) = common::proxy::ctl_at(&sock, "show servers");
                let total: u64 = text
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split(" ").nth(4)?.parse::<u64>().ok())
                    .sum();
                best = best.max(total);
                std::thread::sleep(Duration::from_millis(100));
            }
            best
        })
    };
    let ports = spread_sessions(port, 6, 3);
    let by = count_by(&ports);
    assert_eq!(by.get(&db.ports[0]), Some(&3), "{ports:?}");
    assert_eq!(by.get(&db.ports[1]), Some(&3), "{ports:?}");
    assert!(
        watcher.join().unwrap() >= 5,
        "in-flight SLEEPs were not counted"
    );
    assert!(wait_until(Duration::from_secs(5), || servers(&p)
        .values()
        .all(|(_, inflight)| *inflight == 0)));
}

#[test]
fn stopped_server_is_skipped_and_rejoins() {
    let db = mariadb!("stopped_server_is_skipped_and_rejoins", 2);
    let p = proxy(&config(2, &db.ports, "", "down_time = \"2s\""));
    let port = p.port("db");
    db.stop_one(1);
    // No client traffic: the health check alone notices.
    assert!(
        wait_until(Duration::from_secs(10), || servers(&p)["m1"].0 == "down"),
        "health check did not mark m1 down: {:?}",
        servers(&p)
    );
    let ports = block_on(Duration::from_secs(60), async move {
        let mut ports = Vec::new();
        for _ in 0..6 {
            let mut c = Conn::new(opts(port, "sg_a", "pw_a", None))
                .await
                .expect("connect while m1 is down");
            let p: Option<u16> = c.query_first("SELECT @@port").await.unwrap();
            ports.push(p.unwrap());
            c.disconnect().await.unwrap();
        }
        ports
    });
    assert!(ports.iter().all(|p| *p == db.ports[0]), "{ports:?}");

    db.start_one(1);
    assert!(
        wait_until(Duration::from_secs(10), || servers(&p)["m1"].0 == "up"),
        "m1 did not rejoin: {:?}",
        servers(&p)
    );
    let ports = spread_sessions(port, 4, 2);
    assert_eq!(count_by(&ports).get(&db.ports[1]), Some(&2), "{ports:?}");
}

#[test]
fn killing_a_server_under_load_fails_only_its_commands() {
    let db = mariadb!("killing_a_server_under_load_fails_only_its_commands", 2);
    let p = proxy(&config(2, &db.ports, "", "down_time = \"5s\""));
    let port = p.port("db");
    let (m0, m1) = (db.ports[0], db.ports[1]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    #[derive(Debug, Default)]
    struct Worker {
        /// (backend port, commands ok, commands failed) per session.
        sessions: Vec<(u16, u32, u32)>,
        connect_errors: u32,
    }
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            block_on(Duration::from_secs(60), async move {
                let mut tasks = Vec::new();
                for _ in 0..6 {
                    let stop = stop.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut w = Worker::default();
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let mut c = match Conn::new(opts(port, "sg_a", "pw_a", None)).await {
                                Ok(c) => c,
                                Err(_) => {
                                    w.connect_errors += 1;
                                    continue;
                                }
                            };
                            let Ok(Some(backend)) = c.query_first::<u16, _>("SELECT @@port").await
                            else {
                                w.sessions.push((0, 0, 1));
                                continue;
                            };
                            let mut s = (backend, 1, 0);
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                match c.query_drop("SELECT SLEEP(0.05)").await {
                                    Ok(()) => s.1 += 1,
                                    Err(_) => {
                                        s.2 += 1;
                                        break;
                                    }
                                }
                            }
                            w.sessions.push(s);
                            if s.2 == 0 {
                                let _ = c.disconnect().await;
                            }
                        }
                        w
                    }));
                }
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap());
                }
                out
            })
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let busy = servers(&p);
    assert!(
        busy["m0"].1 > 0 && busy["m1"].1 > 0,
        "load not on both servers: {busy:?}"
    );
    db.kill_one(1);
    std::thread::sleep(Duration::from_millis(2000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let workers = load.join().unwrap();

    let sessions: Vec<(u16, u32, u32)> = workers.iter().flat_map(|w| w.sessions.clone()).collect();
    let connect_errors: u32 = workers.iter().map(|w| w.connect_errors).sum();
    assert_eq!(
        connect_errors, 0,
        "new connections failed after the kill: {workers:?}"
    );
    let on_m1: Vec<_> = sessions.iter().filter(|s| s.0 == m1).collect();
    let on_m0: Vec<_> = sessions.iter().filter(|s| s.0 == m0).collect();
    assert!(!on_m1.is_empty(), "{sessions:?}");
    assert!(
        on_m0.iter().all(|s| s.2 == 0),
        "m0 sessions saw errors: {sessions:?}"
    );
    assert!(
        on_m1.iter().all(|s| s.2 == 1),
        "every m1 session fails once, at the kill: {sessions:?}"
    );
    assert!(
        sessions.iter().all(|s| s.0 == m0 || s.0 == m1),
        "{sessions:?}"
    );
    // Sessions opened after the kill all went to m0 and kept working.
    assert!(
        workers
            .iter()
            .all(|w| w.sessions.last().map(|s| s.0) == Some(m0)),
        "{workers:?}"
    );
    assert_eq!(servers(&p)["m1"].0, "down");

    assert!(wait_until(Duration::from_secs(5), || traffic(&p)
        .front("active")
        == 0));
    let t = traffic(&p);
    let a = t.user("sg_a");
    assert_eq!(
        a.errors,
        on_m1.len() as u64,
        "only the in-flight commands failed\n{}",
        t.text
    );
    assert!(t.front("backend_lost") >= 1, "{}", t.text);
}

/// Read the first packet the proxy sends on a fresh connection.
fn first_packet(port: u16) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr).unwrap();
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]) as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).unwrap();
    payload
}

#[test]
fn no_server_reachable_gives_a_clean_err_first() {
    // Needs no MariaDB: the pool's servers are ports nobody listens on.
    let dead = [common::free_port(), common::free_port()];
    let p = Proxy::start(&config(2, &dead, "", "down_time = \"30s\""));
    let port = p.port("db");
    let err = first_packet(port);
    assert_eq!(&err[..3], &[0xFF, 0xD3, 0x07], "ERR 2003 expected: {err:?}");
    let msg = String::from_utf8_lossy(&err[3..]).into_owned();
    assert!(
        msg.contains("no server of pool 'db' can be reached"),
        "{msg}"
    );
    let e = block_on(Duration::from_secs(20), async move {
        Conn::new(opts(port, "sg_a", "pw_a", None))
            .await
            .map(|_| ())
            .expect_err("must fail")
    });
    assert!(
        e.to_string().contains("2003") && e.to_string().contains("no server"),
        "{e}"
    );
    let s = servers(&p);
    assert!(s.values().all(|(state, _)| state == "down"), "{s:?}");
    assert!(traffic(&p).front("no_server") >= 2);
}

#[test]
fn frontend_limit_refuses_with_err_1040_and_greeting_hides_bits() {
    let db = mariadb!(
        "frontend_limit_refuses_with_err_1040_and_greeting_hides_bits",
        1
    );
    let p = proxy(&config(1, &db.ports, "max_connections = 2", ""));
    let port = p.port("db");

    // The greeting reaches the client with TLS, compression and query attributes hidden.
    let direct = first_packet(db.ports[0]);
    let proxied = first_packet(port);
    let caps = |g: &[u8]| {
        let at = 1 + g[1..].iter().position(|b| *b == 0).unwrap() + 1 + 4 + 9;
        u16::from_le_bytes([g[at], g[at + 1]]) as u32
            | (u16::from_le_bytes([g[at + 5], g[at + 6]]) as u32) << 16
    };
    const COMPRESS: u32 = 1 << 5;
    const SSL: u32 = 1 << 11;
    assert_ne!(caps(&direct) & COMPRESS, 0, "MariaDB offers compression");
    assert_eq!(
        caps(&proxied),
        caps(&direct) & !(COMPRESS | SSL | 1 << 25 | 1 << 26 | 1 << 27)
    );
    assert!(wait_until(Duration::from_secs(5), || traffic(&p)
        .front("active")
        == 0));

    block_on(Duration::from_secs(30), async move {
        let c1 = Conn::new(opts(port, "sg_a", "pw_a", None))
            .await
            .expect("first");
        let c2 = Conn::new(opts(port, "sg_a", "pw_a", None))
            .await
            .expect("second");
        let e = Conn::new(opts(port, "sg_a", "pw_a", None))
            .await
            .map(|_| ())
            .expect_err("third is refused");
        assert!(
            e.to_string().contains("1040") && e.to_string().contains("Too many connections"),
            "{e}"
        );
        c1.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let c3 = Conn::new(opts(port, "sg_a", "pw_a", None))
            .await
            .expect("a slot was freed");
        c2.disconnect().await.unwrap();
        c3.disconnect().await.unwrap();
    });
    assert!(wait_until(Duration::from_secs(5), || traffic(&p)
        .front("active")
        == 0));
    let raw = {
        // The refusal is the first packet, in the form MariaDB itself uses when full.
        let _hold: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        first_packet(port)
    };
    assert_eq!(&raw[..3], &[0xFF, 0x10, 0x04], "{}", traffic(&p).text);
    assert_eq!(&raw[3..], b"Too many connections");
    assert!(traffic(&p).front("refused_limit") >= 2);
}

#[test]
fn idle_clients_are_closed_busy_ones_are_not() {
    let db = mariadb!("idle_clients_are_closed_busy_ones_are_not", 1);
    let p = proxy(&config(1, &db.ports, "client_idle_timeout = \"1s\"", ""));
    let port = p.port("db");
    block_on(Duration::from_secs(30), async move {
        let mut c = Conn::new(opts(port, "sg_a", "pw_a", None))
            .await
            .expect("connect");
        // A 2 s command on a 1 s idle timeout: busy, not idle.
        c.query_drop("SELECT SLEEP(2)")
            .await
            .expect("long command survives");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        c.query_drop("SELECT 1")
            .await
            .expect_err("idle connection was closed");
    });
    let t = traffic(&p);
    assert_eq!(t.front("idle_closed"), 1, "{}", t.text);
    // Raw socket: the proxy closes an idle client (EOF after the greeting).
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(buf.get(4), Some(&10), "greeting then close");
    let _ = s.write_all(b"x");
}

#[test]
fn graceful_stop_lets_open_commands_finish_and_closes_idle_sessions() {
    let db = mariadb!(
        "graceful_stop_lets_open_commands_finish_and_closes_idle_sessions",
        1
    );
    let toml =
        config(2, &db.ports, "", "").replace("[daemon]\n", "[daemon]\nstop_timeout = \"10s\"\n");
    let mut p = proxy(&toml);
    let port = p.port("db");
    let socket = p.socket.clone();
    let started = Instant::now();
    let (slept, idle_after) = block_on(Duration::from_secs(30), async move {
        let mut idle = Conn::new(opts(port, "sg_a", "pw_a", None))
            .await
            .expect("idle session");
        let mut busy = Conn::new(opts(port, "sg_b", "pw_b", None))
            .await
            .expect("busy session");
        let sleeper = tokio::spawn(async move {
            let r: Option<i64> = busy
                .query_first("SELECT SLEEP(2)")
                .await
                .expect("open command finishes");
            r
        });
        // Stop only once the command is in flight (`show servers`, column 5), however slow
        // the machine is to send it.
        let sock = socket.clone();
        let in_flight = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let (_, text, _) = common::proxy::ctl_at(&sock, "show servers");
                let n: u64 = text
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split(' ').nth(4)?.parse::<u64>().ok())
                    .sum();
                if n > 0 {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
        .await
        .unwrap();
        assert!(in_flight, "SELECT SLEEP(2) never showed as in flight");
        let (code, out, err) =
            tokio::task::spawn_blocking(move || common::proxy::ctl_at(&socket, "stop daemon"))
                .await
                .unwrap();
        assert_eq!(code, 0, "{out}{err}");
        tokio::time::sleep(Duration::from_millis(700)).await;
        // The idle session was closed at once, long before the sleeper ended.
        let idle_after = idle.query_drop("SELECT 1").await;
        (sleeper.await.unwrap(), idle_after)
    });
    assert_eq!(
        slept,
        Some(0),
        "SLEEP(2) returned its result through a stopping proxy"
    );
    assert!(idle_after.is_err(), "idle session still open during stop");
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("daemon exits after the last reply");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
