//! Connection lifecycles on both sides of the proxy: upstream keep-alive reuse and stale pooled
//! connections, the client-side timeouts (header/slowloris, keep-alive idle, body), the
//! upstream response timeout, and the process-wide connection limit.

mod common;

use common::client::End;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
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

#[test]
fn upstream_connections_are_reused_across_requests_and_clients() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "", "", "");
    let mut c = Conn::connect(p.addr("web"));
    for i in 0..100 {
        let resp = c.get(&format!("/r{i}"), "h");
        assert_eq!(resp.status, 200, "request {i}: {}", resp.summary());
    }
    assert_eq!(app.requests(), 100);
    assert!(
        app.accepted() <= 2,
        "100 sequential requests opened {} upstream connections",
        app.accepted()
    );

    // Sequential clients on one shard share the shard's pool.
    let before = app.accepted();
    for i in 0..10 {
        let mut c = Conn::connect(p.addr("web"));
        let resp = c.get(&format!("/c{i}"), "h");
        assert_eq!(resp.status, 200, "{}", resp.summary());
    }
    assert!(
        app.accepted() - before <= 2,
        "10 sequential client connections opened {} more upstream connections",
        app.accepted() - before
    );
}

#[test]
fn a_pooled_connection_the_backend_closed_is_not_a_client_error() {
    let app = Backend::start_with(
        "app",
        BackendOpts {
            close_idle_after: Some(Duration::from_millis(100)),
            ..Default::default()
        },
    );
    let p = proxy_for(&app, "", "", "");
    let mut c = Conn::connect(p.addr("web"));
    for i in 0..4 {
        let resp = c.get(&format!("/stale{i}"), "h");
        assert_eq!(
            (resp.status, resp.backend()),
            (200, "app"),
            "request {i} after the backend closed the pooled connection: {}",
            resp.summary()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // And on a new client connection too.
    let mut c = Conn::connect(p.addr("web"));
    let resp = c.get("/stale-new-client", "h");
    assert_eq!(resp.status, 200, "{}", resp.summary());
    assert_eq!(
        app.requests(),
        5,
        "each request reached the backend exactly once"
    );
}

/// Dribbles a head one byte every 200 ms; the proxy must close the connection when
/// `client_header_timeout` (1 s) expires, not reset its timer on every byte.
#[test]
fn slowloris_is_closed_by_the_header_timeout() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "", r#"client_header_timeout = "1s""#, "");
    let mut s = TcpStream::connect(p.addr("web")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 200));
    let start = Instant::now();
    let mut got = Vec::new();
    let mut closed_at = None;
    'outer: for b in head {
        if s.write_all(&[b]).is_err() {
            closed_at = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed_at = Some(start.elapsed());
                    break 'outer;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => {
                    closed_at = Some(start.elapsed());
                    break 'outer;
                }
            }
        }
        if start.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    let closed_at =
        closed_at.unwrap_or_else(|| panic!("slowloris still connected after 6 s (got {text:?})"));
    assert!(
        closed_at >= Duration::from_millis(700),
        "closed after {closed_at:?}, before the 1 s header timeout"
    );
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408 "),
        "only a 408 may be sent: {text:?}"
    );
    assert_eq!(app.requests(), 0);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "", r#"keepalive_timeout = "1s""#, "");
    let mut c = Conn::connect(p.addr("web"));
    assert_eq!(c.get("/", "h").status, 200);
    let start = Instant::now();
    let (rest, end) = c.read_until_end(Duration::from_secs(5));
    assert_eq!(
        end,
        End::Eof,
        "idle connection not closed cleanly within 5 s (got {:?})",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        rest.is_empty(),
        "bytes sent on an idle connection: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "closed after {:?}, before keepalive_timeout",
        start.elapsed()
    );
}

#[test]
fn stalled_request_body_is_cut_by_the_body_timeout() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "", r#"client_body_timeout = "1s""#, "");
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req(
        "POST",
        "/echo",
        "h",
        &[("Content-Length", "100")],
        b"only ten b",
    ));
    let (got, end) = c.read_until_end(Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    assert_ne!(
        end,
        End::Timeout,
        "connection with a stalled body still open after 5 s"
    );
    assert!(
        !text.starts_with("HTTP/1.1 2"),
        "a stalled body produced a success: {text:?}"
    );
}

#[test]
fn backend_that_never_answers_gives_504_after_response_timeout() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "", "", r#"response_timeout = "1s""#);
    let mut c = Conn::connect(p.addr("web"));
    let start = Instant::now();
    c.send(&req("GET", "/delay/6000", "h", &[], b""));
    let resp = c.read_response();
    assert_eq!(resp.status, 504, "{}", resp.summary());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "504 came only after {:?}",
        start.elapsed()
    );
    // The client connection stays usable (or is closed cleanly): never a half-written answer.
    c.send(&req("GET", "/after", "h", &[], b""));
    match c.try_read_response() {
        Ok(r) => assert_eq!(r.status, 200, "{}", r.summary()),
        Err(e) => assert!(
            e.contains("closed before any response byte"),
            "after a 504: {e}"
        ),
    }
}

#[test]
fn max_connections_pauses_accepts_until_a_slot_frees() {
    let app = Backend::start("app");
    let p = proxy_for(&app, "max_connections = 2\n", "", "");
    wait_idle(&p);
    let mut a = Conn::connect(p.addr("web"));
    let mut b = Conn::connect(p.addr("web"));
    assert_eq!(a.get("/a", "h").status, 200);
    assert_eq!(b.get("/b", "h").status, 200);
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req("GET", "/c", "h", &[], b""));
    c.set_read_timeout(Duration::from_millis(800));
    assert!(
        c.try_read_response().is_err(),
        "a third connection was served while max_connections = 2 were open"
    );
    drop(a);
    c.set_read_timeout(Duration::from_secs(5));
    let resp = c.read_response();
    assert_eq!(
        resp.header("x-target"),
        Some("/c"),
        "third connection after a slot freed: {}",
        resp.summary()
    );
    assert_eq!(b.get("/b2", "h").status, 200);
}

/// Waits until the start-up probe (the one connection the harness made to see the port
/// listening) has been accepted and closed by the daemon.
fn wait_idle(p: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let (_, out) = p.ctl("show stats");
        let probe_seen = out.lines().any(|l| {
            l.trim()
                .strip_prefix("connections.accepted: ")
                .and_then(|n| n.parse::<u64>().ok())
                >= Some(1)
        });
        if probe_seen && out.lines().any(|l| l.trim() == "connections.active: 0") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
