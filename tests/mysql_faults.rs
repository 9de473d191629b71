//! Hostile MySQL peers against the real `shardgate` binary: a client that stops reading a large
//! result, a storm of failed logins with invented names, a client pipelining 100,000 COM_PINGs
//! without reading, a server dying in the middle of a result, and clients sending broken
//! packets. Real MariaDB (tests/support/mariadb.sh) where the server's own behaviour matters,
//! a fake server (tests/mysql_support/raw.rs) where the test must control what the server does.
//! Everything is on 127.0.0.1, bounded in time, and stopped by PID.

mod common;
mod mysql_support;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::Proxy;
use mysql_support::raw::{self, FakeMode, FakeServer, Login};
use mysql_support::*;

macro_rules! mariadb {
    ($test:expr, $n:expr) => {
        match MariaDb::start($test, $n) {
            Some(db) => db,
            None => return,
        }
    };
}

/// The proxy's bound on unanswered commands per client (src/proxy/mysql/mod.rs).
const MAX_OUTSTANDING: u64 = 1024;
/// What one 16 KiB relay read can carry past it: 5-byte COM_PING packets.
const ONE_READ_OF_PINGS: u64 = 16 * 1024 / 5 + 1;

/// Start the proxy and wait until the start-up probes' sessions are gone on every frontend.
fn proxy(toml: &str) -> Proxy {
    let p = Proxy::start(toml);
    let quiet = || {
        traffic(&p)
            .frontends
            .values()
            .all(|f| f.get("active") == Some(&0))
    };
    assert!(
        wait_until(Duration::from_secs(10), quiet),
        "start-up probe session still open"
    );
    p
}

/// Sessions of `user` open on MariaDB instance `i`, as the server itself sees them.
fn server_sessions(db: &MariaDb, i: usize, user: &str) -> u64 {
    db.sql(
        i,
        &format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'"),
    )
    .trim()
    .parse()
    .unwrap()
}

/// A query through the proxy with the real CLI works (the proxy still serves others).
fn cli_still_served(port: u16) {
    let out = cli(
        port,
        "sg_b",
        "pw_b",
        Some("app"),
        &["-N", "-B", "-e", "SELECT 40 + 2"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "42\n");
}

/// Read until EOF or a reset; returns what was read, failing the test after `within`.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return got, // reset
        }
        assert!(
            Instant::now() < deadline,
            "connection still open after {within:?} ({} bytes read)",
            got.len()
        );
    }
}

/// Defect 1: a client that sends a query with a large result and never reads it is closed
/// after `client_write_timeout`, both sides, counted; its backend session ends; a graceful
/// stop does not wait `stop_timeout` for such a client either.
#[test]
fn client_that_stops_reading_is_timed_out_and_its_backend_released() {
    let db = mariadb!(
        "client_that_stops_reading_is_timed_out_and_its_backend_released",
        1
    );
    let toml = config(1, &db.ports, "client_write_timeout = \"1s\"", "")
        .replace("[daemon]\n", "[daemon]\nstop_timeout = \"60s\"\n");
    let mut p = proxy(&toml);
    let port = p.port("db");
    let addr = p.addr("db");

    // About 24 MB of result: far more than every socket buffer on the way.
    let big = (0..24)
        .map(|i| format!("SELECT {i}, REPEAT('x', 1000000)"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let stall = |big: &str| {
        let mut c = raw::login_ok(addr, "sg_a", "pw_a", Some("app"));
        let mut q = vec![raw::COM_QUERY];
        q.extend_from_slice(big.as_bytes());
        c.write_all(&raw::packet(0, &q)).unwrap();
        c
    };
    let mut c = stall(&big);
    assert!(
        wait_until(Duration::from_secs(10), || server_sessions(&db, 0, "sg_a")
            == 1),
        "the query never reached the server"
    );
    let t0 = Instant::now();
    // The proxy gives up within 1 s of the stall (+ the 250 ms sweep), not after MariaDB's own
    // 60 s net_write_timeout.
    assert!(
        wait_until(Duration::from_secs(8), || traffic(&p).front("active") == 0),
        "session still open after {:?}: {}",
        t0.elapsed(),
        traffic(&p).text
    );
    let t = traffic(&p);
    assert_eq!(t.front("write_timeout"), 1, "{}", t.text);
    assert_eq!(t.front("backend_lost"), 0, "{}", t.text);
    let a = t.user("sg_a");
    assert_eq!((a.cmd("query"), a.errors), (1, 1), "{}", t.text);
    // The client's side is closed: what it finally reads ends (EOF or reset), well short of
    // the 24 MB result.
    let got = read_until_closed(&mut c, Duration::from_secs(5));
    assert!(got.len() < 20_000_000, "{} bytes", got.len());
    // The backend connection is gone from the server, and the command is no longer in flight.
    assert!(
        wait_until(Duration::from_secs(10), || server_sessions(&db, 0, "sg_a")
            == 0),
        "MariaDB still holds the session"
    );
    assert_eq!(servers(&p)["m0"].1, 0, "commands still in flight");
    cli_still_served(port);

    // Graceful stop with a stalled client: done within the write timeout, not stop_timeout.
    let _c2 = stall(&big);
    assert!(wait_until(Duration::from_secs(10), || {
        server_sessions(&db, 0, "sg_a") == 1
    }));
    let t0 = Instant::now();
    p.signal(libc::SIGTERM);
    let exit = p.wait_exit(Duration::from_secs(15));
    assert!(
        exit.is_some_and(|s| s.success()),
        "daemon did not stop cleanly within 15 s (stop_timeout is 60 s): {exit:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
}

/// Defect 2: names from failed logins never enter the per-user table; the failures are
/// counted per frontend; a real user logging in afterwards is accounted by name.
#[test]
fn failed_logins_do_not_fill_the_user_table() {
    let db = mariadb!("failed_logins_do_not_fill_the_user_table", 1);
    // One shard: every name lands in the same table of at most 1024 users.
    let p = proxy(&config(1, &db.ports, "", ""));
    let addr = p.addr("db");
    const FAILS: usize = 1100;
    const THREADS: usize = 8;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut refused = 0;
                for i in (t..FAILS).step_by(THREADS) {
                    // Every name is invented; half of them come with a password.
                    let pw = if i % 2 == 0 { "wrong" } else { "" };
                    match raw::login(addr, &format!("bogus_{i}"), pw, None) {
                        // 1045 access denied; 1698 the same without a password.
                        Ok(Login::Refused(1045 | 1698, _)) => refused += 1,
                        other => panic!("bogus_{i}: {other:?}"),
                    }
                }
                refused
            })
        })
        .collect();
    let refused: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(refused, FAILS);

    let mut c = raw::login_ok(addr, "sg_a", "pw_a", Some("app"));
    let reply = raw::query(&mut c, "SELECT 1").unwrap();
    assert_eq!(reply.len(), 5, "column count, definition, EOF, row, EOF");
    c.write_all(&raw::packet(0, &[raw::COM_QUIT])).unwrap();
    drop(c);

    assert!(wait_until(Duration::from_secs(10), || traffic(&p)
        .front("active")
        == 0));
    let t = traffic(&p);
    let a = t.user("sg_a");
    assert_eq!(
        (a.connections, a.cmd("query"), a.cmd("quit"), a.errors),
        (1, 1, 1, 0),
        "{}",
        t.text
    );
    assert!(
        !t.users.keys().any(|u| u.starts_with("bogus")),
        "a refused name is in the user table:\n{}",
        t.text
    );
    assert!(!t.users.contains_key("(other)"), "{}", t.text);
    assert_eq!(t.front("login_failed"), FAILS as u64, "{}", t.text);
    let unknown = t.user("(unknown)");
    assert_eq!(unknown.login_failures, FAILS as u64, "{}", t.text);
    assert_eq!(unknown.connections, 0, "{}", t.text);
}

/// Pipeline `n` COM_PINGs on `c` from another thread (writes block under backpressure).
fn pipeline_pings(c: &TcpStream, n: usize) -> std::thread::JoinHandle<()> {
    let mut w = c.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    std::thread::spawn(move || {
        let ping = raw::packet(0, &[raw::COM_PING]);
        let all: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * n).collect();
        for chunk in all.chunks(64 * 1024) {
            w.write_all(chunk).expect("pipelined pings");
        }
    })
}

/// Read `n` replies; each must be an OK packet.
fn read_oks(c: &mut TcpStream, n: usize) {
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = std::io::BufReader::with_capacity(256 * 1024, c.try_clone().unwrap());
    for i in 0..n {
        let (_, p) = raw::read_packet(&mut r).unwrap_or_else(|e| panic!("reply {i} of {n}: {e}"));
        assert_eq!(p.first(), Some(&0x00), "reply {i} is not OK: {p:02x?}");
    }
}

/// Defect 3: a client pipelining 100,000 COM_PINGs to a server that does not answer yet: the
/// proxy stops reading at the bound (in-flight commands stay bounded, memory too), and once
/// the server answers every ping gets its OK, in order, none lost.
#[test]
fn pipelined_commands_are_bounded_by_backpressure() {
    const PINGS: usize = 100_000;
    let fake = FakeServer::start(FakeMode::HoldPings);
    let p = proxy(&config(1, &[fake.addr.port()], "", ""));
    let addr = p.addr("db");
    let rss0 = raw::rss_kib(p.pid());
    let mut c = raw::login_ok(addr, "pipeliner", "x", None);
    let writer = pipeline_pings(&c, PINGS);

    // Wait until the in-flight count stops moving (the proxy stopped reading, or, without a
    // bound, every ping was forwarded).
    let inflight = || servers(&p)["m0"].1;
    let mut last = u64::MAX;
    let stable = wait_until(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = inflight();
        let same = now == last && now > 0;
        last = now;
        same
    });
    assert!(stable, "in-flight count never settled (last {last})");
    let held = inflight();
    let t = traffic(&p);
    assert!(
        (MAX_OUTSTANDING..=MAX_OUTSTANDING + ONE_READ_OF_PINGS).contains(&held),
        "{held} commands in flight (bound {MAX_OUTSTANDING})\n{}",
        t.text
    );
    assert!(t.front("pipeline_paused") >= 1, "{}", t.text);
    let grown = raw::rss_kib(p.pid()).saturating_sub(rss0);
    assert!(grown < 64 * 1024, "proxy RSS grew by {grown} KiB");

    // The server answers: every ping gets exactly one OK.
    fake.release();
    read_oks(&mut c, PINGS);
    writer.join().unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut extra = [0u8; 64];
    assert!(c.read(&mut extra).is_err(), "more replies than pings");
    assert!(wait_until(Duration::from_secs(5), || inflight() == 0));
    let t = traffic(&p);
    let u = t.user("pipeliner");
    assert_eq!(u.cmd("ping"), PINGS as u64, "{}", t.text);
    assert_eq!((u.errors, u.unparsed), (0, 0), "{}", t.text);
    let grown = raw::rss_kib(p.pid()).saturating_sub(rss0);
    assert!(grown < 64 * 1024, "proxy RSS grew by {grown} KiB");
}

/// Defect 3 with the real server: 100,000 pipelined COM_PINGs while the client does not read
/// for a while, then reads: exactly 100,000 OKs, memory bounded.
#[test]
fn pipelined_pings_to_mariadb_all_answered() {
    const PINGS: usize = 100_000;
    let db = mariadb!("pipelined_pings_to_mariadb_all_answered", 1);
    let p = proxy(&config(1, &db.ports, "", ""));
    let addr = p.addr("db");
    let rss0 = raw::rss_kib(p.pid());
    let mut c = raw::login_ok(addr, "sg_a", "pw_a", None);
    let writer = pipeline_pings(&c, PINGS);
    std::thread::sleep(Duration::from_secs(2));
    let held = servers(&p)["m0"].1;
    assert!(
        held <= MAX_OUTSTANDING + ONE_READ_OF_PINGS,
        "{held} commands in flight"
    );
    let grown = raw::rss_kib(p.pid()).saturating_sub(rss0);
    assert!(grown < 64 * 1024, "proxy RSS grew by {grown} KiB");
    read_oks(&mut c, PINGS);
    writer.join().unwrap();
    let reply = raw::query(&mut c, "SELECT 1").unwrap();
    assert_eq!(reply.len(), 5, "the session goes on after the pipeline");
    drop(c);
    assert!(wait_until(Duration::from_secs(5), || traffic(&p)
        .front("active")
        == 0));
    let t = traffic(&p);
    let a = t.user("sg_a");
    assert_eq!(
        (a.cmd("ping"), a.cmd("query"), a.errors, a.unparsed),
        (PINGS as u64, 1, 0, 0),
        "{}",
        t.text
    );
}

/// Defect 4: a server that dies in the middle of a result: its client gets the partial result
/// and then a closed connection, the command counts as failed, `backend_lost` moves; clients
/// of other servers are unaffected, including one whose session was open the whole time.
#[test]
fn server_dying_mid_result_fails_only_its_client() {
    let db = mariadb!("server_dying_mid_result_fails_only_its_client", 1);
    let fake = FakeServer::start(FakeMode::DieMidResult);
    let toml = format!(
        "{}\n[[mysql]]\nname = \"fake\"\nlisten = [\"127.0.0.1:{{port:fake}}\"]\npool = \"fake\"\n\n\
         [pool.fake]\nconnect_timeout = \"1s\"\nservers = [{{ name = \"f0\", addr = \"{}\" }}]\n",
        config(2, &db.ports, "", ""),
        fake.addr
    );
    let p = proxy(&toml);
    let db_addr = p.addr("db");
    let mut bystander = raw::login_ok(db_addr, "sg_b", "pw_b", Some("app"));

    let mut victim = raw::login_ok(p.addr("fake"), "sg_fake", "x", None);
    let mut q = vec![raw::COM_QUERY];
    q.extend_from_slice(b"SELECT everything");
    victim.write_all(&raw::packet(0, &q)).unwrap();
    let got = read_until_closed(&mut victim, Duration::from_secs(10));
    // Header, definition, EOF and 8 rows of 255 bytes arrived; then the end, no terminator.
    assert_eq!(
        got.len(),
        5 + 27 + 9 + 8 * 255,
        "partial result relayed whole"
    );

    let fake_front = |t: &Traffic, k: &str| t.frontends["fake"][k];
    assert!(wait_until(Duration::from_secs(5), || {
        fake_front(&traffic(&p), "active") == 0
    }));
    let t = traffic(&p);
    assert_eq!(fake_front(&t, "backend_lost"), 1, "{}", t.text);
    let u = t.user("sg_fake");
    assert_eq!((u.cmd("query"), u.errors), (1, 1), "{}", t.text);
    assert_eq!(t.front("backend_lost"), 0, "{}", t.text);

    let reply = raw::query(&mut bystander, "SELECT 1").unwrap();
    assert_eq!(reply.len(), 5, "{reply:02x?}");
    cli_still_served(p.port("db"));
}

/// What the client gets back after misbehaving: an ERR packet from the server, or a clean
/// close; never a hang.
fn err_or_close(s: &mut TcpStream) -> Option<u16> {
    let got = read_until_closed(s, Duration::from_secs(10));
    (got.len() >= 7 && got[4] == 0xFF).then(|| u16::from_le_bytes([got[5], got[6]]))
}

/// Defect 4: broken packets from clients. Each case gets the server's ERR or a clean close,
/// the observer gives up on the connection (`unparsed`) where the stream stops making sense,
/// and the proxy keeps serving others.
#[test]
fn malformed_client_packets_are_relayed_or_closed_cleanly() {
    let db = mariadb!("malformed_client_packets_are_relayed_or_closed_cleanly", 1);
    let p = proxy(&config(2, &db.ports, "", ""));
    let addr = p.addr("db");
    let port = p.port("db");
    let unparsed = |user: &str| traffic(&p).users.get(user).map_or(0, |u| u.unparsed);
    let unknown0 = unparsed("(unknown)");

    // 1. A handshake response cut short inside a complete packet (caps and nothing else):
    //    MariaDB answers "Bad handshake"; the observer cannot read it.
    let mut c = raw::connect(addr).unwrap();
    raw::read_packet(&mut c).unwrap();
    c.write_all(&raw::packet(1, &raw::CLIENT_CAPS.to_le_bytes()))
        .unwrap();
    assert_eq!(err_or_close(&mut c), Some(1043), "bad handshake ERR");
    assert!(wait_until(Duration::from_secs(5), || {
        unparsed("(unknown)") == unknown0 + 1
    }));

    // 2. A handshake response whose header promises more than is sent, then the client leaves.
    let mut c = raw::connect(addr).unwrap();
    raw::read_packet(&mut c).unwrap();
    let resp = raw::packet(1, &raw::handshake_response("sg_a", &[7; 20], None));
    c.write_all(&resp[..20]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(err_or_close(&mut c), None);

    // 3. Garbage after a good login: a packet out of sequence. MariaDB refuses it; the
    //    observer stops following the session (unparsed), the bytes are still relayed.
    let mut c = raw::login_ok(addr, "sg_a", "pw_a", None);
    c.write_all(&raw::packet(7, b"\x03\xde\xad\xbe\xef garbage"))
        .unwrap();
    let code = err_or_close(&mut c);
    assert!(matches!(code, None | Some(1156)), "{code:?}");
    assert!(wait_until(Duration::from_secs(5), || unparsed("sg_a") == 1));

    // 4. A header claiming a 16 MiB packet, a few bytes of it, then the client closes.
    let mut c = raw::login_ok(addr, "sg_b", "pw_b", None);
    c.write_all(&[0xFF, 0xFF, 0xFF, 0x00, raw::COM_QUERY, b'S', b'E'])
        .unwrap();
    drop(c);

    // 5. Random bytes instead of a handshake response.
    let mut c = raw::connect(addr).unwrap();
    raw::read_packet(&mut c).unwrap();
    let junk: Vec<u8> = (0..300u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    c.write_all(&[&[44, 0, 0, 1][..], &junk[..44]].concat())
        .unwrap();
    let _ = err_or_close(&mut c);

    // Every session ends, on both sides; nothing is left in flight; others are served.
    assert!(
        wait_until(Duration::from_secs(10), || traffic(&p).front("active") == 0),
        "{}",
        traffic(&p).text
    );
    assert!(wait_until(Duration::from_secs(10), || {
        server_sessions(&db, 0, "sg_a") == 0 && server_sessions(&db, 0, "sg_b") == 0
    }));
    assert_eq!(servers(&p)["m0"].1, 0);
    let t = traffic(&p);
    assert_eq!(t.front("backend_lost"), 0, "{}", t.text);
    cli_still_served(port);
    let mut c = raw::login_ok(addr, "sg_a", "pw_a", Some("app"));
    assert_eq!(raw::query(&mut c, "SELECT 1").unwrap().len(), 5);
}
