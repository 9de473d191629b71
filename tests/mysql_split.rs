//! MySQL read/write split with read-your-writes (docs/mysql-pooling.md, "Read/write split")
//! end to end: two real MariaDB servers (tests/support/mariadb.sh, binary logs on), the second a
//! GTID replica of the first through a [`DelayRelay`] (so replication lags by about the relay's
//! delay), the real `shardgate` binary in front with `multiplex = true` and a replication
//! monitor. The clients are the raw protocol client of tests/mysql_support/raw.rs logging in
//! with `CLIENT_SESSION_TRACK` (a session without it reads from the primary after its first
//! write and keeps its first connection for good; `mysql_async` does not ask for it, so it
//! cannot show a split). Which server answered is read from
//! `@@server_id` (1 = the primary, 2 = the replica); the proxy's own view from
//! `shardgate ctl 'show pool mysql'`.
//!
//! Knobs for the load test: `SPLIT_CLIENTS` (default 8) sessions × `SPLIT_ITERS` (default 300)
//! write-then-read iterations.

mod common;
mod mysql_support;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::run_bounded;
use common::Proxy;
use mysql_support::delay::DelayRelay;
use mysql_support::raw;
use mysql_support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/mariadb.sh");
const PRIMARY_ID: u32 = 1;
const REPLICA_ID: u32 = 2;

/// Two MariaDB instances with binary logs, instance 1 a replica of instance 0 through a relay
/// that holds every chunk `delay` late. Dropped: the servers stop (by PID), then the relay.
struct Replicated {
    db: MariaDb,
    _relay: DelayRelay,
}

fn replicated(test: &str, delay: Duration) -> Option<Replicated> {
    let db = MariaDb::start_env(test, 2, &[("MARIADB_BINLOG", "1")])?;
    let relay = DelayRelay::start(SocketAddr::from(([127, 0, 0, 1], db.ports[0])), delay);
    let child = Command::new("bash")
        .arg(SCRIPT)
        .arg("replicate")
        .arg(db.env_path())
        .arg("0")
        .arg("1")
        .arg(relay.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {SCRIPT}: {e}"));
    let out = run_bounded(child, Duration::from_secs(60), "mariadb.sh replicate");
    assert!(
        out.status.success(),
        "mariadb.sh replicate failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    // Tables every test uses, made on the primary (replicated), seen on the replica.
    db.sql(
        0,
        "CREATE TABLE app.t (id INT PRIMARY KEY, v INT); INSERT INTO app.t VALUES (1, 1); \
         CREATE TABLE app.ryw (id BIGINT PRIMARY KEY)",
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            // (An error, the table not there yet, is a "not yet".)
            let out = cli(
                db.ports[1],
                "sg_root",
                "pw_root",
                None,
                &["-N", "-B", "-e", "SELECT COUNT(*) FROM app.t"],
                None,
            );
            out.status.success() && stdout(&out).trim() == "1"
        }),
        "the replica did not receive app.t within 20 s"
    );
    Some(Replicated { db, _relay: relay })
}

/// The config under test: frontend `db` on `{port:db}`, `read_your_writes = ryw`, pool `db`
/// with `p1` (primary, instance 0) and `r1` (replica, instance 1); `extra` is appended (more
/// frontends).
fn split_config(db: &MariaDb, ryw: &str, max_lag: &str, extra: &str) -> String {
    format!(
        "{daemon}\n\
         [[mysql]]\nname = \"db\"\nlisten = [\"127.0.0.1:{{port:db}}\"]\npool = \"db\"\n\
         multiplex = true\nread_your_writes = \"{ryw}\"\nread_your_writes_timeout = \"2s\"\n\
         monitor_user = \"sg_mon\"\nmonitor_password = \"pw_mon\"\n\
         [[mysql.user]]\nname = \"sg_a\"\npassword = \"pw_a\"\n\
         {extra}\n\
         [pool.db]\nmax_replication_lag = \"{max_lag}\"\nservers = [\n\
         \x20 {{ name = \"p1\", addr = \"127.0.0.1:{p0}\", role = \"primary\" }},\n\
         \x20 {{ name = \"r1\", addr = \"127.0.0.1:{p1}\", role = \"replica\" }},\n]\n",
        daemon = common::daemon(2),
        p0 = db.ports[0],
        p1 = db.ports[1],
    )
}

/// `show pool mysql` parsed: the `frontend` lines and the `server` lines, each as key → value
/// (`frontend db k=v ...` under "db", `server db r1 k=v ...` under "db/r1").
struct PoolView {
    text: String,
    frontends: HashMap<String, HashMap<String, String>>,
    servers: HashMap<String, HashMap<String, String>>,
}

impl PoolView {
    fn counter(&self, front: &str, key: &str) -> u64 {
        self.frontends
            .get(front)
            .and_then(|f| f.get(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {key} for frontend {front} in\n{}", self.text))
    }

    /// The replica's `lag_ms`: `Some(ms)`, or `None` for "-" (not readable).
    fn lag_ms(&self, server: &str) -> Option<u64> {
        let v = self
            .servers
            .get(&format!("db/{server}"))
            .and_then(|s| s.get("lag_ms"))
            .unwrap_or_else(|| panic!("no lag_ms for server {server} in\n{}", self.text));
        v.parse().ok()
    }
}

fn pool_view(p: &Proxy) -> PoolView {
    let (code, text) = p.ctl("show pool mysql");
    assert_eq!(code, 0, "show pool mysql failed: {text}");
    let mut frontends = HashMap::new();
    let mut servers = HashMap::new();
    let kv = |f: &[&str]| -> HashMap<String, String> {
        f.iter()
            .filter_map(|x| x.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for l in text.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        match f.first() {
            Some(&"frontend") if f.len() > 2 => {
                frontends.insert(f[1].to_string(), kv(&f[2..]));
            }
            Some(&"server") if f.len() > 3 => {
                servers.insert(format!("{}/{}", f[1], f[2]), kv(&f[3..]));
            }
            _ => {}
        }
    }
    PoolView {
        text,
        frontends,
        servers,
    }
}

/// Wait (bounded) until the monitor shows the replica readable-looking: a number for lag_ms.
fn wait_monitor(p: &Proxy) {
    let ok = wait_until(Duration::from_secs(15), || {
        pool_view(p).lag_ms("r1").is_some()
    });
    assert!(
        ok,
        "the monitor never showed a lag for r1 within 15 s:\n{}",
        pool_view(p).text
    );
}

/// `@@server_id` as a fresh session through the proxy sees it (nothing written before).
fn fresh_server_id(port: u16) -> Result<u32, String> {
    Client::connect(port, None)?.server_id()
}

/// Poll fresh sessions' `SELECT @@server_id` until it is `want` (errors are retried), up to
/// `timeout`; returns the last answer when it never was.
fn wait_server_id(port: u16, want: u32, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = fresh_server_id(port);
        if got == Ok(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("last answer {got:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CLIENT_SESSION_TRACK: the proxy sends reads to replicas only for sessions that have it.
const CLIENT_SESSION_TRACK: u32 = 1 << 23;
/// CLIENT_DEPRECATE_EOF: result sets end with an OK packet (which carries session state).
const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;

/// A client session through the proxy: raw.rs's login with `CLIENT_SESSION_TRACK` (and, as
/// modern connectors do, `CLIENT_DEPRECATE_EOF`) added, text protocol queries, every read
/// bounded by raw::IO_TIMEOUT.
struct Client {
    s: TcpStream,
    deprecate_eof: bool,
}

impl Client {
    fn connect(port: u16, db: Option<&str>) -> Result<Client, String> {
        Client::connect_with(port, db, true)
    }

    fn connect_with(port: u16, db: Option<&str>, deprecate_eof: bool) -> Result<Client, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = raw::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let (_, g) = raw::read_packet(&mut s).map_err(|e| format!("greeting: {e}"))?;
        let scramble = raw::greeting_scramble(&g).map_err(|e| e.to_string())?;
        let auth = raw::native_password("pw_a", &scramble);
        let mut hello = raw::handshake_response("sg_a", &auth, db);
        let mut caps = u32::from_le_bytes(hello[..4].try_into().unwrap()) | CLIENT_SESSION_TRACK;
        if deprecate_eof {
            caps |= CLIENT_DEPRECATE_EOF;
        }
        hello[..4].copy_from_slice(&caps.to_le_bytes());
        s.write_all(&raw::packet(1, &hello))
            .map_err(|e| format!("login: {e}"))?;
        let (_, p) = raw::read_packet(&mut s).map_err(|e| format!("login answer: {e}"))?;
        match p.first() {
            Some(0x00) => Ok(Client { s, deprecate_eof }),
            _ => Err(format!("login refused: {}", String::from_utf8_lossy(&p))),
        }
    }

    /// Run one statement: its rows (raw row packets; none for an OK), or the server's ERR (or
    /// an I/O error) as `Err`.
    fn run(&mut self, sql: &str) -> Result<Vec<Vec<u8>>, String> {
        let io = |e: std::io::Error| format!("{sql}: {e}");
        let mut p = vec![raw::COM_QUERY];
        p.extend_from_slice(sql.as_bytes());
        self.s.write_all(&raw::packet(0, &p)).map_err(io)?;
        let (_, first) = raw::read_packet(&mut self.s).map_err(io)?;
        let err = |p: &[u8]| {
            format!(
                "{sql}: ERR {}",
                String::from_utf8_lossy(p.get(3..).unwrap_or_default())
            )
        };
        let columns = match first.first() {
            Some(0xFF) => return Err(err(&first)),
            Some(0x00) => return Ok(Vec::new()),
            Some(&n) if n < 0xFB => n as usize,
            other => return Err(format!("{sql}: unexpected reply start {other:?}")),
        };
        for _ in 0..columns {
            raw::read_packet(&mut self.s).map_err(io)?;
        }
        if !self.deprecate_eof {
            raw::read_packet(&mut self.s).map_err(io)?; // EOF after the column definitions
        }
        let mut rows = Vec::new();
        loop {
            let (_, p) = raw::read_packet(&mut self.s).map_err(io)?;
            match p.first() {
                Some(0xFF) => return Err(err(&p)),
                // The end: EOF (classic, < 9 bytes) or OK with an 0xFE header.
                Some(0xFE) if p.len() < 9 || (self.deprecate_eof && p.len() < 0xFF_FFFF) => {
                    return Ok(rows)
                }
                _ => rows.push(p),
            }
        }
    }

    /// The first column of the first row as text (`None`: no row, or NULL).
    fn first(&mut self, sql: &str) -> Result<Option<String>, String> {
        let rows = self.run(sql)?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let (len, at) = match row.first() {
            Some(&0xFB) => return Ok(None),
            Some(&n) if n < 0xFB => (n as usize, 1),
            Some(&0xFC) => (u16::from_le_bytes([row[1], row[2]]) as usize, 3),
            other => return Err(format!("{sql}: unexpected row start {other:?}")),
        };
        let v = row
            .get(at..at + len)
            .ok_or_else(|| format!("{sql}: short row {row:02x?}"))?;
        Ok(Some(String::from_utf8_lossy(v).into_owned()))
    }

    /// The first column of the first row as a number.
    fn num(&mut self, sql: &str) -> Result<u64, String> {
        let v = self.first(sql)?;
        v.as_deref()
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| format!("{sql}: not a number: {v:?}"))
    }

    fn server_id(&mut self) -> Result<u32, String> {
        self.num("SELECT @@server_id").map(|n| n as u32)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.s.write_all(&raw::packet(0, &[raw::COM_QUIT]));
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn reads_go_to_the_replica_writes_transactions_and_locking_reads_to_the_primary() {
    let t0 = Instant::now();
    let Some(r) = replicated("split_routing", Duration::from_millis(30)) else {
        return;
    };
    let db = &r.db;
    let routed = "[[mysql]]\nname = \"routed\"\nlisten = [\"127.0.0.1:{port:routed}\"]\n\
                  pool = \"db\"\nmultiplex = true\nread_your_writes = \"wait\"\n\
                  monitor_user = \"sg_mon\"\nmonitor_password = \"pw_mon\"\n\
                  [[mysql.user]]\nname = \"sg_a\"\npassword = \"pw_a\"\n\
                  [[mysql.route]]\nmatch_digest = \"^SELECT @@server_id \\\\+ \\\\?\"\nto = \"primary\"\n";
    let p = Proxy::start(&split_config(db, "wait", "5s", routed));
    wait_monitor(&p);
    let port = p.port("db");
    let routed_port = p.port("routed");

    let mut c = Client::connect(port, Some("app")).unwrap();
    // A fresh session, nothing written: the replica.
    assert_eq!(
        c.server_id(),
        Ok(REPLICA_ID),
        "a plain read of a fresh session"
    );
    let n = c.num("SELECT COUNT(*) FROM app.t").unwrap();
    assert_eq!(n, 1, "the replica has the set-up row");

    // A write: the primary. Its OK has affected rows and an insert id, so the session keeps
    // that connection for its next command only: a read right after it shows where the write
    // ran; the read after that is routed again (the replica, once it has the write).
    let before = pool_view(&p).counter("db", "to_primary");
    c.run("INSERT INTO app.t VALUES (2, 2)").unwrap();
    assert_eq!(
        pool_view(&p).counter("db", "to_primary"),
        before + 1,
        "the INSERT was sent to the primary"
    );
    assert_eq!(
        c.server_id(),
        Ok(PRIMARY_ID),
        "the command right after a write runs on the write's connection"
    );
    assert_eq!(
        c.server_id(),
        Ok(REPLICA_ID),
        "the command after that is routed again"
    );
    assert_eq!(
        c.num("SELECT COUNT(*) FROM app.t"),
        Ok(2),
        "read-your-writes: the replica read sees the INSERT"
    );

    // Inside a transaction: the primary, for every statement.
    c.run("BEGIN").unwrap();
    assert_eq!(
        c.server_id(),
        Ok(PRIMARY_ID),
        "a read inside BEGIN ... COMMIT"
    );
    assert_eq!(
        c.num("SELECT COUNT(*) FROM app.t"),
        Ok(2),
        "the transaction sees the write"
    );
    assert_eq!(
        c.server_id(),
        Ok(PRIMARY_ID),
        "still inside the transaction"
    );
    c.run("COMMIT").unwrap();

    // Locking reads outside a transaction: the primary.
    assert_eq!(
        c.num("SELECT @@server_id FROM app.t LIMIT 1 FOR UPDATE"),
        Ok(PRIMARY_ID as u64),
        "SELECT ... FOR UPDATE (autocommit)"
    );
    assert_eq!(
        c.num("SELECT @@server_id FROM app.t LIMIT 1 LOCK IN SHARE MODE"),
        Ok(PRIMARY_ID as u64),
        "SELECT ... LOCK IN SHARE MODE (autocommit)"
    );

    // After the transaction, a plain read is back on the replica (read-your-writes waits for
    // the INSERT there first), and sees the write.
    assert_eq!(c.server_id(), Ok(REPLICA_ID), "a plain read after COMMIT");
    assert_eq!(c.num("SELECT COUNT(*) FROM app.t"), Ok(2));
    drop(c);

    // [[mysql.route]] to = "primary" by digest, on the frontend that has it only.
    let mut c = Client::connect(routed_port, None).unwrap();
    assert_eq!(
        c.num("SELECT @@server_id + 0"),
        Ok(PRIMARY_ID as u64),
        "routed to the primary by digest"
    );
    assert_eq!(
        c.server_id(),
        Ok(REPLICA_ID),
        "not matched by the route: the replica"
    );
    drop(c);
    let mut c = Client::connect(port, None).unwrap();
    assert_eq!(
        c.num("SELECT @@server_id + 0"),
        Ok(REPLICA_ID as u64),
        "no route on frontend db: the replica"
    );
    drop(c);
    // The INSERT ran on the primary: there at once (and replicated later).
    assert_eq!(db.sql(0, "SELECT v FROM app.t WHERE id = 2").trim(), "2");
    let v = pool_view(&p);
    assert!(v.counter("db", "to_replica") >= 3, "{}", v.text);
    assert!(v.counter("db", "to_primary") >= 1, "{}", v.text);
    eprintln!("split routing: {:?}\n{}", t0.elapsed(), v.text);
}

/// `clients` sessions × `iters` iterations of: INSERT a unique row (autocommit), `SELECT 1`
/// (runs on the write's connection, which the session keeps for its next command), then
/// `SELECT COUNT(*)` of that row. Returns (iterations, reads that did not see their write,
/// the first few misses).
fn write_then_read(port: u16, clients: usize, iters: usize, base: u64) -> (usize, usize, String) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port, Some("app"))
                    .unwrap_or_else(|e| panic!("client {client}: {e}"));
                let mut misses = Vec::new();
                for i in 0..iters {
                    assert!(Instant::now() < deadline, "client {client}: over 300 s");
                    let id = base + (client as u64) * 1_000_000 + i as u64;
                    c.run(&format!("INSERT INTO app.ryw (id) VALUES ({id})"))
                        .unwrap_or_else(|e| panic!("client {client}: {e}"));
                    c.run("SELECT 1")
                        .unwrap_or_else(|e| panic!("client {client}: {e}"));
                    let n = c
                        .num(&format!("SELECT COUNT(*) FROM app.ryw WHERE id = {id}"))
                        .unwrap_or_else(|e| panic!("client {client}: {e}"));
                    if n != 1 {
                        misses.push(format!("client {client} iteration {i} id {id}: {n}"));
                    }
                }
                misses
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().expect("client thread"));
    }
    let first: Vec<&String> = all.iter().take(10).collect();
    (clients * iters, all.len(), format!("{first:#?}"))
}

#[test]
fn read_your_writes_wait_under_load() {
    let t0 = Instant::now();
    let Some(r) = replicated("split_ryw_wait", Duration::from_millis(30)) else {
        return;
    };
    let p = Proxy::start(&split_config(&r.db, "wait", "5s", ""));
    wait_monitor(&p);
    let clients = env_usize("SPLIT_CLIENTS", 8);
    let iters = env_usize("SPLIT_ITERS", 300);
    let before = pool_view(&p);
    let t1 = Instant::now();
    let (n, missed, first) = write_then_read(p.port("db"), clients, iters, 1_000_000_000);
    let load = t1.elapsed();
    let v = pool_view(&p);
    eprintln!(
        "ryw wait: {n} iterations in {load:?} (test {:?})\n{}",
        t0.elapsed(),
        v.text
    );
    assert_eq!(
        missed, 0,
        "{missed} of {n} reads did not see their own write (read_your_writes = wait):\n{first}\n{}",
        v.text
    );
    let to_replica = v.counter("db", "to_replica") - before.counter("db", "to_replica");
    assert!(
        to_replica >= n as u64,
        "to_replica grew by {to_replica}, fewer than the {n} reads: reads did not go to the replica\n{}",
        v.text
    );
    assert!(
        v.counter("db", "ryw_waits") > 0,
        "no read-your-writes wait although the replica lags ~30 ms\n{}",
        v.text
    );
    assert_eq!(
        r.db.sql(0, "SELECT COUNT(*) FROM app.ryw").trim(),
        n.to_string(),
        "every write landed on the primary"
    );
}

#[test]
fn read_your_writes_primary_under_load() {
    let t0 = Instant::now();
    let Some(r) = replicated("split_ryw_primary", Duration::from_millis(30)) else {
        return;
    };
    let p = Proxy::start(&split_config(&r.db, "primary", "5s", ""));
    wait_monitor(&p);
    let clients = env_usize("SPLIT_CLIENTS", 8);
    let iters = env_usize("SPLIT_ITERS", 300);
    let t1 = Instant::now();
    let (n, missed, first) = write_then_read(p.port("db"), clients, iters, 2_000_000_000);
    let load = t1.elapsed();
    let v = pool_view(&p);
    eprintln!(
        "ryw primary: {n} iterations in {load:?} (test {:?})\n{}",
        t0.elapsed(),
        v.text
    );
    assert_eq!(
        missed, 0,
        "{missed} of {n} reads did not see their own write (read_your_writes = primary):\n{first}\n{}",
        v.text
    );
    assert!(
        v.counter("db", "ryw_primary") > 0,
        "no read sent to the primary for freshness\n{}",
        v.text
    );
}

#[test]
fn read_your_writes_off_misses_writes_on_a_lagging_replica() {
    let t0 = Instant::now();
    let Some(r) = replicated("split_ryw_off", Duration::from_millis(150)) else {
        return;
    };
    let p = Proxy::start(&split_config(&r.db, "off", "5s", ""));
    wait_monitor(&p);
    let before = pool_view(&p);
    let (n, missed, first) = write_then_read(p.port("db"), 1, 100, 3_000_000_000);
    let v = pool_view(&p);
    eprintln!(
        "ryw off: {missed} of {n} reads missed their write (test {:?})\nfirst: {first}\n{}",
        t0.elapsed(),
        v.text
    );
    let to_replica = v.counter("db", "to_replica") - before.counter("db", "to_replica");
    assert!(
        to_replica >= n as u64,
        "to_replica grew by {to_replica}, fewer than the {n} reads\n{}",
        v.text
    );
    assert!(
        missed > 0,
        "negative control failed: with read_your_writes = off and a replica ~150 ms behind, \
         every one of {n} reads saw its write; the load tests could not tell a stale read\n{}",
        v.text
    );
    assert_eq!(v.counter("db", "ryw_waits"), 0, "{}", v.text);
}

/// Bounded: the replica's lag as the monitor shows it, until `cond` holds.
fn wait_lag(p: &Proxy, timeout: Duration, mut cond: impl FnMut(Option<u64>) -> bool) -> bool {
    wait_until(timeout, || cond(pool_view(p).lag_ms("r1")))
}

#[test]
fn a_replica_over_max_replication_lag_takes_no_reads() {
    let t0 = Instant::now();
    let Some(r) = replicated("split_lag", Duration::from_millis(30)) else {
        return;
    };
    let db = &r.db;
    let p = Proxy::start(&split_config(db, "wait", "1s", ""));
    wait_monitor(&p);
    let port = p.port("db");
    assert_eq!(fresh_server_id(port), Ok(REPLICA_ID), "before the delay");

    db.sql(
        1,
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=3; START SLAVE",
    );
    // Seconds_Behind_Master grows only while events wait for their delay: keep writing (through
    // the proxy, to the primary) about once a second, from another thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(port, Some("app")).unwrap();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                c.run(&format!("UPDATE app.t SET v = {i} WHERE id = 1"))
                    .unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let lagging = wait_lag(&p, Duration::from_secs(15), |l| {
        l.is_none_or(|ms| ms > 1000)
    });
    let mut checked = 0;
    let mut wrong = Vec::new();
    if lagging {
        // Reads while the monitor shows the lag before and after them must be the primary's.
        for _ in 0..10 {
            let before = pool_view(&p).lag_ms("r1");
            let got = fresh_server_id(port);
            let after = pool_view(&p).lag_ms("r1");
            let over = |l: Option<u64>| l.is_none_or(|ms| ms > 1000);
            if over(before) && over(after) {
                checked += 1;
                if got != Ok(PRIMARY_ID) {
                    wrong.push(format!("lag {before:?}..{after:?}: {got:?}"));
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let v = pool_view(&p);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer thread");
    assert!(
        lagging,
        "the monitor never showed r1's lag above 1000 ms within 15 s (MASTER_DELAY=3)\n{}\n{}",
        v.text,
        db.sql(1, "SHOW SLAVE STATUS\\G")
    );
    assert!(
        checked > 0,
        "no read happened while the lag showed above 1 s\n{}",
        v.text
    );
    assert!(
        wrong.is_empty(),
        "reads went to the replica over max_replication_lag = 1s: {wrong:?}\n{}",
        v.text
    );

    db.sql(
        1,
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=0; START SLAVE",
    );
    if let Err(e) = wait_server_id(port, REPLICA_ID, Duration::from_secs(20)) {
        panic!(
            "reads did not return to the replica within 20 s of MASTER_DELAY=0: {e}\n{}",
            pool_view(&p).text
        );
    }
    eprintln!(
        "split lag: {checked} reads checked on the primary while lagging; test {:?}",
        t0.elapsed()
    );
}

#[test]
fn stopped_replication_sends_reads_to_the_primary() {
    let t0 = Instant::now();
    let Some(r) = replicated("split_stopped", Duration::from_millis(30)) else {
        return;
    };
    let db = &r.db;
    let p = Proxy::start(&split_config(db, "wait", "5s", ""));
    wait_monitor(&p);
    let port = p.port("db");
    assert_eq!(fresh_server_id(port), Ok(REPLICA_ID), "before STOP SLAVE");

    db.sql(1, "STOP SLAVE");
    let t1 = Instant::now();
    if let Err(e) = wait_server_id(port, PRIMARY_ID, Duration::from_secs(5)) {
        panic!(
            "reads still not on the primary 5 s after STOP SLAVE: {e}\n{}",
            pool_view(&p).text
        );
    }
    let switched = t1.elapsed();
    let v = pool_view(&p);
    assert_eq!(v.lag_ms("r1"), None, "r1 not readable:\n{}", v.text);
    // And it stays so.
    for _ in 0..5 {
        assert_eq!(fresh_server_id(port), Ok(PRIMARY_ID), "replication stopped");
    }

    db.sql(1, "START SLAVE");
    let t2 = Instant::now();
    if let Err(e) = wait_server_id(port, REPLICA_ID, Duration::from_secs(10)) {
        panic!(
            "reads not back on the replica 10 s after START SLAVE: {e}\n{}",
            pool_view(&p).text
        );
    }
    eprintln!(
        "split stopped: primary after {switched:?}, replica again after {:?}; test {:?}",
        t2.elapsed(),
        t0.elapsed()
    );
}

#[test]
fn a_replica_down_leaves_reads_to_the_primary() {
    let t0 = Instant::now();
    let Some(r) = replicated("split_down", Duration::from_millis(30)) else {
        return;
    };
    let db = &r.db;
    let p = Proxy::start(&split_config(db, "wait", "5s", ""));
    wait_monitor(&p);
    let port = p.port("db");
    // Warm the pool: idle replica connections that will be dead after the stop.
    for _ in 0..3 {
        assert_eq!(fresh_server_id(port), Ok(REPLICA_ID), "before stop-one");
    }
    // One session kept open across the stop, too.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (rtx, rrx) = std::sync::mpsc::channel::<Result<u32, String>>();
    let kept = std::thread::spawn(move || {
        let mut c = Client::connect(port, None).unwrap();
        rtx.send(c.server_id()).unwrap();
        while rx.recv().is_ok() {
            rtx.send(c.server_id()).unwrap();
        }
    });
    let kept_read = || {
        tx.send(()).unwrap();
        rrx.recv_timeout(Duration::from_secs(30))
            .expect("kept session answers")
    };
    assert_eq!(
        rrx.recv_timeout(Duration::from_secs(30)).unwrap(),
        Ok(REPLICA_ID)
    );

    db.stop_one(1);
    let t1 = Instant::now();
    // Every read right after the stop succeeds, from the primary (the replica is gone).
    let mut answers = Vec::new();
    while t1.elapsed() < Duration::from_secs(3) {
        answers.push(("fresh", fresh_server_id(port)));
        answers.push(("kept", kept_read()));
    }
    let bad: Vec<_> = answers
        .iter()
        .filter(|(_, a)| *a != Ok(PRIMARY_ID))
        .collect();
    assert!(
        bad.is_empty(),
        "with the replica down, {} of {} reads failed or did not come from the primary: {bad:?}\n{}",
        bad.len(),
        answers.len(),
        pool_view(&p).text
    );
    let v = pool_view(&p);
    assert_eq!(v.lag_ms("r1"), None, "r1 not readable:\n{}", v.text);

    db.start_one(1);
    let t2 = Instant::now();
    if let Err(e) = wait_server_id(port, REPLICA_ID, Duration::from_secs(20)) {
        panic!(
            "reads not back on the replica 20 s after start-one: {e}\n{}",
            pool_view(&p).text
        );
    }
    let back = t2.elapsed();
    assert_eq!(
        kept_read(),
        Ok(REPLICA_ID),
        "the kept session reads the replica again"
    );
    drop(tx);
    kept.join().expect("kept session thread");
    eprintln!(
        "split down: {} reads during the outage all from the primary; replica again after {back:?}; test {:?}",
        answers.len(),
        t0.elapsed()
    );
}

/// Clients without CLIENT_DEPRECATE_EOF (result sets end with a classic EOF, which has no room
/// for session-state items): a transaction that reads, and an error reply, must not keep the
/// session on the primary afterwards.
#[test]
fn classic_eof_clients_are_not_stuck_on_the_primary() {
    let Some(r) = replicated("split_classic_eof", Duration::from_millis(30)) else {
        return;
    };
    let db = &r.db;
    db.sql(0, "CREATE TABLE app.ce (id INT PRIMARY KEY)");
    db.sql(0, "INSERT INTO app.ce VALUES (1)");
    let p = Proxy::start(&split_config(db, "wait", "5s", ""));
    wait_monitor(&p);
    let port = p.port("db");
    let mut c = Client::connect_with(port, None, false).expect("login without DEPRECATE_EOF");
    assert_eq!(c.server_id(), Ok(REPLICA_ID), "a fresh read");
    c.run("BEGIN").expect("begin");
    assert_eq!(c.server_id(), Ok(PRIMARY_ID), "inside the transaction");
    assert_eq!(c.num("SELECT COUNT(*) FROM app.ce"), Ok(1));
    c.run("COMMIT").expect("commit");
    assert_eq!(
        c.server_id(),
        Ok(REPLICA_ID),
        "after COMMIT the session reads from the replica again:\n{}",
        pool_view(&p).text
    );
    let dup = c.run("INSERT INTO app.ce VALUES (1)");
    assert!(dup.is_err(), "duplicate key: {dup:?}");
    // The command right after an error stays on its connection (SHOW WARNINGS/ERRORS)...
    let _ = c.server_id();
    // ...the next is routed again.
    assert_eq!(
        c.server_id(),
        Ok(REPLICA_ID),
        "after an error reply:\n{}",
        pool_view(&p).text
    );
    let v = pool_view(&p);
    assert!(
        !v.text.contains("pinned=1"),
        "no session kept a connection for good:\n{}",
        v.text
    );
}
