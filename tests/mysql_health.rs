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

/// How the fake server of [`fake`] answers a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fake {
    /// ERR 1040 "Too many connections" instead of a greeting.
    Full,
    /// A greeting, then an AuthSwitchRequest to mysql_native_password with a fresh nonce; the
    /// password `pw` is expected for that nonce; then one result set and COM_QUIT.
    Switch,
}

struct FakeCounts {
    mode: std::sync::Mutex<Fake>,
    logins: std::sync::atomic::AtomicUsize,
    quits: std::sync::atomic::AtomicUsize,
    conns: std::sync::atomic::AtomicUsize,
}

/// A scripted MySQL server on loopback (the daemon's protocol code is not used to write it).
fn fake() -> (std::net::SocketAddr, std::sync::Arc<FakeCounts>) {
    use mysql_support::raw::{native_password, packet, read_packet};
    use std::io::Write;
    use std::sync::atomic::Ordering::SeqCst;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let counts = std::sync::Arc::new(FakeCounts {
        mode: std::sync::Mutex::new(Fake::Switch),
        logins: 0.into(),
        quits: 0.into(),
        conns: 0.into(),
    });
    let c = counts.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            c.conns.fetch_add(1, SeqCst);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mode = *c.mode.lock().unwrap();
            let c = c.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                if mode == Fake::Full {
                    let mut p = vec![0xFF];
                    p.extend_from_slice(&1040u16.to_le_bytes());
                    p.extend_from_slice(b"Too many connections");
                    return s.write_all(&packet(0, &p));
                }
                // Another default plugin, so the check must follow the switch.
                let g = mysql_support::raw::greeting(9, "client_ed25519");
                s.write_all(&packet(0, &g))?;
                let (_, _resp) = read_packet(&mut s)?;
                let nonce = b"ZYXWVUTSRQPONMLKJIHG";
                let mut sw = vec![0xFE];
                sw.extend_from_slice(b"mysql_native_password\0");
                sw.extend_from_slice(nonce);
                sw.push(0);
                s.write_all(&packet(2, &sw))?;
                let (seq, auth) = read_packet(&mut s)?;
                if seq != 3 || auth != native_password("pw", nonce) {
                    let mut e = vec![0xFF];
                    e.extend_from_slice(&1045u16.to_le_bytes());
                    e.extend_from_slice(b"#28000Access denied for user 'sg_check'@'127.0.0.1'");
                    return s.write_all(&packet(seq.wrapping_add(1), &e));
                }
                s.write_all(&packet(4, &[0, 0, 0, 2, 0, 0, 0]))?;
                c.logins.fetch_add(1, SeqCst);
                let (_, q) = read_packet(&mut s)?;
                assert_eq!(q[0], 0x03);
                let mut def = Vec::new();
                for f in ["def", "", "", "", "1", ""] {
                    def.push(f.len() as u8);
                    def.extend_from_slice(f.as_bytes());
                }
                def.extend_from_slice(&[0x0c, 33, 0, 1, 0, 0, 0, 8, 0x81, 0, 0, 0, 0]);
                let mut out = packet(1, &[1]);
                out.extend(packet(2, &def));
                out.extend(packet(3, &[0xFE, 0, 0, 2, 0]));
                out.extend(packet(4, &[1, b'1']));
                out.extend(packet(5, &[0xFE, 0, 0, 2, 0]));
                s.write_all(&out)?;
                let (_, quit) = read_packet(&mut s)?;
                if quit == [0x01] {
                    c.quits.fetch_add(1, SeqCst);
                }
                Ok(())
            });
        }
    });
    (addr, counts)
}

/// Against a scripted server: the check follows an AuthSwitchRequest to
/// mysql_native_password with the new nonce, reads the result set and sends COM_QUIT; a
/// server that answers ERR 1040 (full) stays up; a wrong password takes it down.
#[test]
fn mysql_check_follows_auth_switch_and_counts_a_full_server_as_up() {
    use std::sync::atomic::Ordering::SeqCst;
    let (addr, counts) = fake();
    let cfg = config(1, &[addr.port()], "", "") + "[pool.db.health]\nmethod = \"mysql\"\nmysql_user = \"sg_check\"\nmysql_password = \"pw\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n";
    let p = Proxy::start(&cfg);
    assert!(
        wait_until(Duration::from_secs(5), || counts.quits.load(SeqCst) >= 3),
        "logins {} quits {}\n{}",
        counts.logins.load(SeqCst),
        counts.quits.load(SeqCst),
        p.log()
    );
    assert_eq!(log_count(&p, &["server down"]), 0, "{}", p.log());
    *counts.mode.lock().unwrap() = Fake::Full;
    let n = counts.conns.load(SeqCst);
    assert!(wait_until(Duration::from_secs(5), || counts
        .conns
        .load(SeqCst)
        >= n + 4));
    assert_eq!(log_count(&p, &["server down"]), 0, "{}", p.log());
    let p2 = Proxy::start(
        &(config(1, &[addr.port()], "", "")
            + "[pool.db.health]\nmethod = \"mysql\"\nmysql_user = \"sg_check\"\nmysql_password = \"wrong\"\ninterval = \"100ms\"\nfall = 1\n"),
    );
    *counts.mode.lock().unwrap() = Fake::Switch;
    assert!(
        wait_until(Duration::from_secs(5), || log_count(
            &p2,
            &[
                "health check: server down",
                "Access denied for user 'sg_check'"
            ]
        ) == 1),
        "{}",
        p2.log()
    );
    drop(p);
}
