//! Hard limits against hostile clients, each through the real binary: minimum transfer rates
//! (a trickled body, a slow reader), fair queueing for server slots, tunnels that hold no
//! slot, bounded site keys, idle connections that give their buffers back, and the memory
//! ceiling (`daemon.memory_limit`) shedding load in its stated order and recovering.

mod common;

use common::client::End;
use common::observe::{poll_until, stats_text as stats};
use common::*;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn proxy_for(app: &Backend, daemon_extra: &str, frontend_extra: &str, pool_extra: &str) -> Proxy {
    proxy::single_pool(
        app.addr_string(),
        1,
        daemon_extra,
        frontend_extra,
        pool_extra,
    )
}

/// One number of a `show stats` snapshot taken as text.
fn num(s: &HashMap<String, String>, key: &str) -> u64 {
    s.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("`show stats` has no number `{key}`: {s:?}"))
}

/// Polls `show stats` (as text) until `pred` holds, at most `limit`.
#[track_caller]
fn stats_until(
    p: &Proxy,
    limit: Duration,
    what: &str,
    pred: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let (s, ok) = poll_until(limit, || stats(p), pred);
    assert!(ok, "not {what} within {limit:?}: {s:?}");
    s
}

/// A client socket bound to `source` (any 127.0.0.0/8 address) before connecting.
fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A body trickled fast enough for every per-read timeout but far below the minimum rate is
/// cut with 408 once its budget (client_body_timeout + bytes / rate) is spent, instead of
/// holding a server connection for the whole body.
#[test]
fn a_body_below_the_minimum_rate_gets_408() {
    let app = Backend::start("app");
    let p = proxy_for(
        &app,
        "",
        "client_body_timeout = \"1s\"\nclient_body_min_rate = \"1k\"",
        "",
    );
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req(
        "POST",
        "/echo",
        "h",
        &[("Content-Length", "100000")],
        b"",
    ));
    // 10 bytes every 200 ms: 50 B/s, never 1 s of silence. 100,000 bytes would take 33 min.
    let started = Instant::now();
    let mut sent = 0;
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(10) {
        if c.try_send(&[b'x'; 10]).is_err() {
            cut = true;
            break;
        }
        sent += 10;
        c.set_read_timeout(Duration::from_millis(200));
        if let Ok(r) = c.try_read_response() {
            assert_eq!(r.status, 408, "{}", r.summary());
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a 50 B/s body was still accepted after {sent} bytes and 10 s"
    );
    // The budget was 1 s + 1 ms per byte: generous bounds, no timing precision claimed.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut after {:?}, before the grace period",
        started.elapsed()
    );
    // Nothing else harmed: a normal request is served.
    let mut d = Conn::connect(p.addr("web"));
    assert_eq!(d.get("/after", "h").status, 200);
}

/// A client that reads a large response a little at a time is dropped once it falls below
/// send_min_rate, and the server slot it held is free again for someone else.
#[test]
fn a_slow_reader_is_cut_and_frees_its_server_slot() {
    let app = Backend::start("app");
    let p = proxy_for(
        &app,
        "",
        "send_timeout = \"1s\"\nsend_min_rate = \"64m\"",
        "max_connections_per_server = 1\nmax_idle_per_server = 1\nresponse_timeout = \"20s\"",
    );
    let len: u64 = 256 << 20;
    let mut slow = TcpStream::connect(p.addr("web")).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(slow, "GET /download/{len} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    // Read 64 KiB every 20 ms (about 3 MiB/s) until the proxy gives up on us.
    let started = Instant::now();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        if started.elapsed() > Duration::from_secs(40) {
            break "still open";
        }
        match slow.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "closed",
            Err(e) => panic!("slow reader: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        end,
        "closed",
        "after {got} bytes in {:?}",
        started.elapsed()
    );
    assert!(got < len, "the whole response arrived: nothing was cut");
    // The one slot is free: another client is served.
    let mut c = Conn::connect(p.addr("web"));
    c.set_read_timeout(Duration::from_secs(10));
    assert_eq!(c.get("/next", "h").status, 200);
}

/// With every server slot busy, queued requests are served by client in turn: a client that
/// queued many requests does not make another wait behind all of them.
#[test]
fn queued_clients_take_turns_for_server_slots() {
    let app = Backend::start_with(
        "app",
        BackendOpts {
            delay: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let p = proxy_for(
        &app,
        "",
        "",
        "max_connections_per_server = 1\nmax_idle_per_server = 1\nresponse_timeout = \"30s\"",
    );
    let addr = p.addr("web");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    let spawn = |who: String, source: [u8; 4], order: Arc<Mutex<Vec<String>>>| {
        std::thread::spawn(move || {
            let mut s = connect_from(source, addr);
            write!(
                s,
                "GET /{who} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            assert!(
                out.starts_with(b"HTTP/1.1 200"),
                "{who}: {:?}",
                String::from_utf8_lossy(&out)
            );
            order.lock().unwrap().push(who);
        })
    };
    // The greedy client queues 8 requests, then the polite one queues its request, all well
    // inside the first request's 500 ms.
    for i in 0..8 {
        threads.push(spawn(format!("greedy{i}"), [127, 0, 0, 2], order.clone()));
        std::thread::sleep(Duration::from_millis(5));
    }
    threads.push(spawn("polite".into(), [127, 0, 0, 3], order.clone()));
    for t in threads {
        t.join().unwrap();
    }
    let order = order.lock().unwrap().clone();
    let at = order.iter().position(|w| w == "polite").unwrap();
    // FIFO would serve it ninth; taking turns serves it right after the greedy request that
    // held the slot and at most the one already granted when it queued.
    assert!(
        at <= 2,
        "the polite client waited behind the greedy one: {order:?}"
    );
}

/// A WebSocket tunnel gives its server slot back: with one slot per server, an open (idle)
/// tunnel does not make the next request wait for `response_timeout` and 503.
#[test]
fn an_open_websocket_holds_no_server_slot() {
    let app = Backend::start("app");
    let p = proxy_for(
        &app,
        "",
        "",
        "max_connections_per_server = 1\nmax_idle_per_server = 1\nresponse_timeout = \"2s\"",
    );
    let mut ws = Conn::connect(p.addr("web"));
    ws.send(&req(
        "GET",
        "/ws",
        "h",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    ));
    let head = ws.read_response();
    assert_eq!(head.status, 101, "{}", head.summary());
    let s = stats(&p);
    assert_eq!(num(&s, "tunnels.open"), 1);
    let mut c = Conn::connect(p.addr("web"));
    let r = c.get("/plain", "h");
    assert_eq!(r.status, 200, "{}", r.summary());
    // The tunnel still works.
    ws.send(b"ping");
    let (echo, _) = ws.read_until_end(Duration::from_millis(1500));
    assert_eq!(echo, b"ping");
    drop(ws);
    stats_until(&p, Duration::from_secs(5), "tunnel closed", |s| {
        num(s, "tunnels.open") == 0
    });
}

/// A Host longer than any DNS name is counted, but never kept as a site key.
#[test]
fn a_huge_host_is_counted_as_other() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "", "", "");
    let host = "h".repeat(4000);
    let mut c = Conn::connect(p.addr("web"));
    assert_eq!(c.get("/", &host).status, 200);
    assert_eq!(c.get("/", "short.example").status, 200);
    let (_, text) = p.ctl("show traffic http");
    assert!(text.contains("web (other) 1 "), "{text}");
    assert!(text.contains("web short.example 1 "), "{text}");
    assert!(!text.contains("hhhh"), "the long host was stored: {text}");
}

/// Keep-alive connections that once carried a large head hold only small buffers while idle:
/// the heap the daemon holds (memory.held_bytes) comes back down.
#[test]
fn idle_connections_give_back_grown_buffers() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "", "", "");
    let addr = p.addr("web");
    let before = num(&stats(&p), "memory.held_bytes");
    let big = "v".repeat(24 * 1024);
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut c = Conn::connect(addr);
        c.send(&req("GET", "/", "h", &[("X-Big", &big)], b""));
        assert_eq!(c.read_response().status, 200);
        conns.push(c);
    }
    stats_until(&p, Duration::from_secs(5), "all idle", |s| {
        num(s, "connections.waiting") == 200
    });
    let after = num(&stats(&p), "memory.held_bytes");
    let per_conn = after.saturating_sub(before) / 200;
    eprintln!("heap per idle connection after a 24 KiB head: {per_conn} bytes");
    // A 24 KiB head grew the read buffer to 32 KiB; idle, it is back to 1 KiB (plus the task).
    assert!(
        per_conn < 12 * 1024,
        "idle connections still hold {per_conn} bytes each"
    );
    drop(conns);
}

/// The memory ceiling, end to end. Phase 1: sleepers open connections with small partial
/// heads. Phase 2: a flood of connections each sending 28 KiB of head: accepting stops near
/// the ceiling, so the heap stays under it while most of the flood waits in the backlog.
/// Phase 3: the sleepers' heads grow too: idle keep-alive connections are closed, and a
/// request that completes now is answered 503 with Retry-After. Phase 4: everything closes;
/// the level returns to normal and the waiting clients are served.
#[test]
fn the_memory_ceiling_sheds_in_order_and_recovers() {
    let app = Backend::start("app");
    let limit: u64 = 16 << 20;
    let p = proxy_for(
        &app,
        &format!("memory_limit = {limit}\nmax_connections = 5000\n"),
        "client_header_timeout = \"60s\"",
        "",
    );
    let addr = p.addr("web");
    let s = stats(&p);
    assert_eq!(num(&s, "memory.limit_bytes"), limit);
    assert_eq!(s["memory.level"], "normal");

    // An idle keep-alive client, served before anything happens.
    let mut idle = Conn::connect(addr);
    assert_eq!(idle.get("/", "h").status, 200);

    let pad = vec![b'a'; 28 * 1024];
    let open = |n: usize, first: &[u8]| -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.write_all(first).unwrap();
                s
            })
            .collect()
    };
    let start = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
    let mut sleepers = open(300, start);
    stats_until(&p, Duration::from_secs(10), "sleepers accepted", |s| {
        num(s, "connections.active") >= 301
    });

    // Phase 2: the flood. Sample the heap while it arrives.
    let mut flood = Vec::new();
    let mut peak = 0;
    for chunk in 0..20 {
        for _ in 0..100 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(start).unwrap();
            s.write_all(&pad).unwrap();
            flood.push(s);
        }
        let s = stats(&p);
        peak = peak.max(num(&s, "memory.held_bytes"));
        if chunk == 19 {
            assert_ne!(s["memory.level"], "normal", "2000 × 28 KiB heads: {s:?}");
        }
    }
    let s = stats_until(&p, Duration::from_secs(5), "accepting paused", |s| {
        s["memory.level"] != "normal"
    });
    let active = num(&s, "connections.active");
    eprintln!("flood: {active} connections accepted of 2301, heap peak {peak} of {limit}");
    assert!(active < 2301, "every flood connection was accepted: {s:?}");
    assert!(
        peak <= limit,
        "the heap passed the ceiling: {peak} > {limit}"
    );

    // Phase 3: the sleepers' heads grow as well: past 90 % and 95 %.
    for s in &mut sleepers {
        s.write_all(&pad).unwrap();
    }
    let s = stats_until(&p, Duration::from_secs(10), "refusing", |s| {
        s["memory.level"] == "refusing"
    });
    let held = num(&s, "memory.held_bytes");
    eprintln!("refusing at {held} bytes held");
    // Heads that would need bigger buffers now are refused instead: the heap stays under.
    assert!(
        held <= limit,
        "the heap passed the ceiling: {held} > {limit}"
    );
    // The idle keep-alive connection was closed first, cleanly.
    idle.expect_closed(Duration::from_secs(5));
    assert!(num(&stats(&p), "shed.idle_closed") >= 1);
    // A request completed now is refused with 503 and Retry-After.
    let mut s0 = sleepers.remove(0);
    s0.write_all(b"\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = s0.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(text.contains("\r\nRetry-After: 1\r\n"), "{text}");
    assert!(num(&stats(&p), "shed.refused") >= 1);
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", p.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        .unwrap();
    eprintln!("daemon peak RSS {rss_kib}");

    // Phase 4: the attackers leave; pressure eases and a waiting client is served.
    let mut waiting = Conn::connect(addr);
    waiting.send(&req("GET", "/late", "h", &[], b""));
    drop(sleepers);
    drop(flood);
    stats_until(&p, Duration::from_secs(30), "back to normal", |s| {
        s["memory.level"] == "normal"
    });
    waiting.set_read_timeout(Duration::from_secs(10));
    assert_eq!(waiting.read_response().status, 200);
    let mut fresh = Conn::connect(addr);
    assert_eq!(fresh.get("/fresh", "h").status, 200);
    let s = stats_until(&p, Duration::from_secs(30), "connections closed", |s| {
        num(s, "connections.active") <= 2
    });
    assert!(num(&s, "memory.shed_episodes") >= 1);
    let (rest, end) = fresh.read_until_end(Duration::from_millis(10));
    assert!(rest.is_empty() && end == End::Timeout);
    assert!(p.log().contains("memory ceiling near: shedding load"));
}
