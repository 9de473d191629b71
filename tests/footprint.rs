//! What a connection and a request cost the daemon, counted by its own allocator (every heap
//! byte and every allocation the process makes: `memory.held_bytes`, `memory.allocations` in
//! `show stats`), through the real binary. Counts, not timings: they hold on any machine.

mod common;

use common::observe::{poll_until, stats_text as stats};
use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn num(s: &HashMap<String, String>, key: &str) -> u64 {
    s.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("`show stats` has no number `{key}`: {s:?}"))
}

/// An idle keep-alive connection (one small request served, waiting for the next) holds its
/// task, a 1 KiB read buffer, and no exchange state (that lives in a reused block only while a
/// request runs). The release build measures 3.8 KiB (bench/README.md, "Idle connections");
/// this test runs the debug build, whose futures are larger (5 KiB), so it allows 6 KiB. Before
/// the exchange moved out of the connection's future, the release build held 10 KiB.
#[test]
fn an_idle_keep_alive_connection_holds_little() {
    let app = Backend::start("app");
    let p = proxy::single_pool(app.addr_string(), 1, "", "", "");
    let addr = p.addr("web");
    // Warm: the upstream connection and the shard's reused blocks exist before counting.
    for _ in 0..3 {
        let mut c = Conn::connect(addr);
        c.send(&req("GET", "/", "h", &[], b""));
        assert_eq!(c.read_response().status, 200);
    }
    let (_, ok) = poll_until(
        Duration::from_secs(5),
        || stats(&p),
        |s| num(s, "connections.active") == 0,
    );
    assert!(ok, "warm-up connections did not close");
    let before = num(&stats(&p), "memory.held_bytes");
    const N: u64 = 1000;
    let mut conns = Vec::new();
    for _ in 0..N {
        let mut c = Conn::connect(addr);
        c.send(&req("GET", "/", "h", &[("User-Agent", "footprint/1")], b""));
        assert_eq!(c.read_response().status, 200);
        conns.push(c);
    }
    let (s, ok) = poll_until(
        Duration::from_secs(10),
        || stats(&p),
        |s| num(s, "connections.waiting") == N,
    );
    assert!(ok, "not all idle: {s:?}");
    let after = num(&stats(&p), "memory.held_bytes");
    let per_conn = after.saturating_sub(before) / N;
    eprintln!("heap per idle keep-alive connection: {per_conn} bytes");
    assert!(
        per_conn < 6 * 1024,
        "an idle connection holds {per_conn} bytes of heap"
    );
    // And each of them is still served.
    for c in conns.iter_mut().step_by(97) {
        c.send(&req("GET", "/", "h", &[], b""));
        assert_eq!(c.read_response().status, 200);
    }
}

/// In steady state a proxied keep-alive request allocates nothing: 20,000 requests on warm
/// connections grow the process's allocation count by less than one per hundred requests (the
/// `show stats` calls that read it are subtracted).
#[test]
fn steady_state_requests_allocate_nothing() {
    let app = Backend::start("app");
    let p = proxy::single_pool(app.addr_string(), 1, "", "", "");
    let addr = p.addr("web");
    const CONNS: usize = 8;
    const PER_CONN: usize = 2500;
    let mut conns: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.set_nodelay(true).unwrap();
            s
        })
        .collect();
    let request = b"GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: footprint/1\r\n\r\n";
    let one_round = |conns: &mut Vec<TcpStream>| {
        for c in conns.iter_mut() {
            c.write_all(request).unwrap();
        }
        for c in conns.iter_mut() {
            read_one_response(c);
        }
    };
    // Warm every connection, the upstream pool and the shard's buffers.
    for _ in 0..50 {
        one_round(&mut conns);
    }
    let a0 = num(&stats(&p), "memory.allocations");
    let a1 = num(&stats(&p), "memory.allocations");
    let ctl_cost = a1 - a0;
    for _ in 0..PER_CONN {
        one_round(&mut conns);
    }
    let a2 = num(&stats(&p), "memory.allocations");
    let n = (CONNS * PER_CONN) as u64;
    let grown = (a2 - a1).saturating_sub(ctl_cost);
    eprintln!("{grown} allocations for {n} requests (a `show stats` costs {ctl_cost})");
    assert!(
        grown * 100 < n,
        "{grown} allocations for {n} steady-state requests"
    );
}

/// One response of the test backend to `GET /a` (Content-Length framed), read whole.
fn read_one_response(c: &mut TcpStream) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = c.read(&mut b).unwrap();
        assert_eq!(
            n,
            1,
            "closed mid-head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a Content-Length");
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
}
