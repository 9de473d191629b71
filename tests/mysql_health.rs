//! The `mysql` active check against real MariaDB (tests/support/mariadb.sh): it logs in with
//! its own account, runs its query and quits cleanly, so the server counts no aborted
//! connection per probe; a wrong password takes the server down with the server's own
//! message as the reason, and the right one brings it back. Loopback only, bounded in time,
//! MariaDB stopped by PID.

mod common;
mod mysql_support;

use std::time::Duration;

use common::Proxy;
use mysql_support::*;

macro_rules! mariadb {
    ($test:expr, $n:expr) => {
        match MariaDb::start($test, $n) {
            Some(db) => db,
            None => return,
        }
    };
}

/// (Aborted_clients, Aborted_connects) of instance `i`.
fn aborted(db: &MariaDb, i: usize) -> (u64, u64) {
    let rows = db.sql(i, "SHOW GLOBAL STATUS LIKE 'Aborted_c%'");
    let get = |name: &str| -> u64 {
        rows.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("no {name} in {rows}"))
    };
    (get("Aborted_clients"), get("Aborted_connects"))
}

/// Logins of the check account on instance `i` so far.
fn check_logins(db: &MariaDb, i: usize) -> u64 {
    db.sql(
        i,
        "SELECT COALESCE(SUM(TOTAL_CONNECTIONS), 0) FROM information_schema.USER_STATISTICS WHERE USER = 'sg_check'",
    )
    .trim()
    .parse()
    .unwrap()
}

fn log_count(p: &Proxy, words: &[&str]) -> usize {
    p.log()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

fn query_through(p: &Proxy) -> bool {
    cli(
        p.port("db"),
        "sg_a",
        "pw_a",
        None,
        &["-N", "-B", "-e", "SELECT 7"],
        None,
    )
    .status
    .success()
}

#[test]
fn mysql_login_check_quits_cleanly_and_follows_the_password() {
    let db = mariadb!(
        "mysql_login_check_quits_cleanly_and_follows_the_password",
        1
    );
    db.sql(
        0,
        "CREATE USER IF NOT EXISTS 'sg_check'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw_check')",
    );
    let cfg = config(
        2,
        &db.ports,
        "",
        "down_time = \"200ms\"\n",
    ) + "[pool.db.health]\nmethod = \"mysql\"\nmysql_user = \"sg_check\"\nmysql_password = \"pw_check\"\nmysql_query = \"SELECT 1, 'two' UNION SELECT 3, 'four'\"\ninterval = \"150ms\"\ntimeout = \"150ms\"\nrise = 2\nfall = 2\n";
    let p = Proxy::start(&cfg);
    assert!(
        wait_until(Duration::from_secs(10), || check_logins(&db, 0) >= 2),
        "the check never logged in\n{}",
        p.log()
    );
    assert!(query_through(&p), "{}", p.log());
    // Counted from here: the start-up probe and our own query are done.
    let before = (aborted(&db, 0), check_logins(&db, 0));
    assert!(wait_until(Duration::from_secs(10), || check_logins(&db, 0)
        >= before.1 + 8));
    let after = aborted(&db, 0);
    assert_eq!(
        after, before.0,
        "(Aborted_clients, Aborted_connects) grew over 8 probes"
    );
    assert_eq!(log_count(&p, &["server down"]), 0, "{}", p.log());

    // A wrong password: down after two failures, with MariaDB's message.
    db.sql(0, "SET PASSWORD FOR 'sg_check'@'%' = PASSWORD('changed')");
    assert!(
        wait_until(Duration::from_secs(5), || log_count(
            &p,
            &["health check: server down", "server=m0"]
        ) == 1),
        "{}",
        p.log()
    );
    let line = p
        .log()
        .lines()
        .find(|l| l.contains("health check: server down"))
        .unwrap()
        .to_owned();
    assert!(line.contains("Access denied for user 'sg_check'"), "{line}");
    assert!(!query_through(&p), "a client got the down server");

    db.sql(0, "SET PASSWORD FOR 'sg_check'@'%' = PASSWORD('pw_check')");
    assert!(
        wait_until(Duration::from_secs(5), || log_count(
            &p,
            &["health check: server up", "server=m0"]
        ) == 1),
        "{}",
        p.log()
    );
    assert!(query_through(&p), "{}", p.log());
    assert_eq!(log_count(&p, &["health check: server down"]), 1);
}

/// The check of a stopped server fails on its connect and takes it out; the other instance
/// takes every client.
#[test]
fn mysql_check_of_a_stopped_server() {
    let db = mariadb!("mysql_check_of_a_stopped_server", 2);
    for i in 0..2 {
        db.sql(
            i,
            "CREATE USER IF NOT EXISTS 'sg_check'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw_check')",
        );
    }
    let cfg = config(
        1,
        &db.ports,
        "",
        "",
    ) + "[pool.db.health]\nmethod = \"mysql\"\nmysql_user = \"sg_check\"\nmysql_password = \"pw_check\"\ninterval = \"150ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n";
    let p = Proxy::start(&cfg);
    db.stop_one(1);
    assert!(
        wait_until(Duration::from_secs(5), || log_count(
            &p,
            &["health check: server down", "server=m1"]
        ) == 1),
        "{}",
        p.log()
    );
    for _ in 0..4 {
        assert!(query_through(&p), "{}", p.log());
    }
    db.start_one(1);
    assert!(
        wait_until(Duration::from_secs(10), || log_count(
            &p,
            &["health check: server up", "server=m1"]
        ) == 1),
        "{}",
        p.log()
    );
}
