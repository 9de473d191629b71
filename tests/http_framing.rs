//! Request framing and syntax (RFC 9112): every class of malformed input gets its exact status
//! and then a clean close; pipelined requests are answered in order; keep-alive and
//! `Connection: close` are honoured.

mod common;

use common::*;
use std::io::Write;
use std::thread;
use std::time::Duration;

/// A frontend with small, known limits in front of one backend named `app`.
fn strict() -> (Proxy, Backend) {
    let app = Backend::start("app");
    let cfg = daemon(1)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"
max_request_line = 1024
max_header_bytes = 4096
max_headers = 20
max_body = 1024

[pool.app]
servers = [ { name = "app", addr = "{app}" } ]
"#;
    let p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    (p, app)
}

fn head(lines: &str) -> Vec<u8> {
    lines.replace('|', "\r\n").into_bytes()
}

/// Sends each case on its own connection; expects exactly `status`, then a clean close, and
/// that the backend never saw the request. Reports every failing case together.
fn expect_rejections(p: &Proxy, app: &Backend, cases: &[(&str, Vec<u8>, u16)]) {
    let mut failures = Vec::new();
    for (name, raw, status) in cases {
        let before = app.requests();
        let mut c = Conn::connect(p.addr("web"));
        if let Err(e) = c.try_send(raw) {
            failures.push(format!("{name}: send failed: {e}"));
            continue;
        }
        match c.try_read_response() {
            Ok(r) if r.status == *status => {
                if let Err(e) = c.check_closed(Duration::from_secs(3)) {
                    failures.push(format!("{name}: got {status} as expected, but then {e}"));
                }
            }
            Ok(r) => failures.push(format!("{name}: expected {status}, got {}", r.summary())),
            Err(e) => failures.push(format!("{name}: expected {status}, got {e}")),
        }
        if app.requests() != before {
            failures.push(format!("{name}: the malformed request reached the backend"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed-input case(s) failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

#[test]
fn ambiguous_body_framing_is_rejected() {
    let (p, app) = strict();
    expect_rejections(
        &p,
        &app,
        &[
            (
                "CL + TE",
                head("POST / HTTP/1.1|Host: h|Content-Length: 5|Transfer-Encoding: chunked||0||"),
                400,
            ),
            (
                "TE + CL",
                head("POST / HTTP/1.1|Host: h|Transfer-Encoding: chunked|Content-Length: 5||0||"),
                400,
            ),
            (
                "differing CL fields",
                head("POST / HTTP/1.1|Host: h|Content-Length: 5|Content-Length: 6||hello"),
                400,
            ),
            (
                "differing CL list",
                head("POST / HTTP/1.1|Host: h|Content-Length: 5, 6||hello"),
                400,
            ),
            (
                "non-numeric CL",
                head("POST / HTTP/1.1|Host: h|Content-Length: abc||"),
                400,
            ),
            (
                "signed CL",
                head("POST / HTTP/1.1|Host: h|Content-Length: +5||hello"),
                400,
            ),
            (
                "TE final coding not chunked",
                head("POST / HTTP/1.1|Host: h|Transfer-Encoding: chunked, gzip||"),
                400,
            ),
            (
                "TE without chunked",
                head("POST / HTTP/1.1|Host: h|Transfer-Encoding: gzip||"),
                400,
            ),
            (
                "unknown coding before chunked",
                head("POST / HTTP/1.1|Host: h|Transfer-Encoding: x-custom, chunked||0||"),
                501,
            ),
        ],
    );
}

#[test]
fn malformed_head_syntax_is_400() {
    let (p, app) = strict();
    expect_rejections(
        &p,
        &app,
        &[
            (
                "bare LF everywhere",
                b"GET / HTTP/1.1\nHost: h\n\n".to_vec(),
                400,
            ),
            (
                "bare LF after one field",
                b"GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n".to_vec(),
                400,
            ),
            ("obs-fold", head("GET / HTTP/1.1|Host: h|X-A: b| c||"), 400),
            (
                "space before colon",
                head("GET / HTTP/1.1|Host: h|X-A : b||"),
                400,
            ),
            (
                "space before colon of Host",
                head("GET / HTTP/1.1|Host : h||"),
                400,
            ),
            (
                "control char in value",
                head("GET / HTTP/1.1|Host: h|X-A: b\x01c||"),
                400,
            ),
            (
                "NUL in value",
                head("GET / HTTP/1.1|Host: h|X-A: b\0c||"),
                400,
            ),
            (
                "HTTP/1.1 without Host",
                head("GET / HTTP/1.1|X-A: b||"),
                400,
            ),
            (
                "two Host fields",
                head("GET / HTTP/1.1|Host: a|Host: b||"),
                400,
            ),
            (
                "two identical Host fields",
                head("GET / HTTP/1.1|Host: h|Host: h||"),
                400,
            ),
            ("garbage request line", head("HELLO||"), 400),
        ],
    );
}

#[test]
fn limits_and_versions_get_their_status() {
    let (p, app) = strict();
    let long_target = format!("/{}", "a".repeat(2000));
    let big_fields: String = (0..12)
        .map(|i| format!("X-Big-{i}: {}|", "v".repeat(400)))
        .collect();
    let many_fields: String = (0..30).map(|i| format!("X-N{i}: 1|")).collect();
    expect_rejections(
        &p,
        &app,
        &[
            (
                "request line over max_request_line",
                head(&format!("GET {long_target} HTTP/1.1|Host: h||")),
                414,
            ),
            (
                "head over max_header_bytes",
                head(&format!("GET / HTTP/1.1|Host: h|{big_fields}|")),
                431,
            ),
            (
                "more fields than max_headers",
                head(&format!("GET / HTTP/1.1|Host: h|{many_fields}|")),
                431,
            ),
            (
                "Content-Length over max_body",
                head("POST / HTTP/1.1|Host: h|Content-Length: 2048||"),
                413,
            ),
            (
                "HTTP/2.0 request line",
                head("GET / HTTP/2.0|Host: h||"),
                505,
            ),
        ],
    );
    // Just under the limits passes.
    let mut c = Conn::connect(p.addr("web"));
    let ok_target = format!("/{}", "a".repeat(900));
    let resp = c.get(&ok_target, "h");
    assert_eq!(
        (resp.status, resp.backend()),
        (200, "app"),
        "{}",
        resp.summary()
    );
    c.send(&req("POST", "/echo", "h", &[], &pattern(0, 1024)));
    let resp = c.read_response();
    assert_eq!(
        resp.status,
        200,
        "a body of exactly max_body: {}",
        resp.summary()
    );
}

/// A bad chunk size after a valid head. The head may already have been forwarded, but the
/// backend (`/echo`) answers only after the whole body, so nothing has been answered yet: the
/// proxy owes the client a 400 and a clean close, and a 2xx must never come back.
#[test]
fn bad_chunk_size_is_400_then_close() {
    let (p, _app) = strict();
    let chunked_head = head("POST /echo HTTP/1.1|Host: h|Transfer-Encoding: chunked||");
    let variants: [(&str, &[u8]); 3] = [
        ("non-hex size", b"5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n"),
        (
            "overflowing size",
            b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("missing CRLF after data", b"5\r\nhelloXX0\r\n\r\n"),
    ];
    let mut failures = Vec::new();
    for (name, bad) in variants {
        for split in [false, true] {
            let mut c = Conn::connect(p.addr("web"));
            if split {
                // Let the proxy forward the head before the bad chunk arrives.
                c.send(&chunked_head);
                thread::sleep(Duration::from_millis(200));
                c.send(bad);
            } else {
                let mut all = chunked_head.clone();
                all.extend_from_slice(bad);
                c.send(&all);
            }
            let what = format!("{name} (head sent first: {split})");
            match c.try_read_response() {
                Ok(r) if r.status == 400 => {
                    if let Err(e) = c.check_closed(Duration::from_secs(3)) {
                        failures.push(format!("{what}: 400 as expected, but then {e}"));
                    }
                }
                Ok(r) => failures.push(format!("{what}: expected 400, got {}", r.summary())),
                Err(e) => failures.push(format!("{what}: expected 400, got {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "bad chunk sizes:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (p, _app) = strict();
    let mut c = Conn::connect(p.addr("web"));
    let mut batch = req("GET", "/delay/300", "h", &[], b"");
    batch.extend(req("POST", "/echo", "h", &[], b"pipelined body"));
    batch.extend(req("GET", "/third", "h", &[], b""));
    c.send(&batch);
    let r1 = c.read_response();
    let r2 = c.read_response();
    let r3 = c.read_response();
    let targets: Vec<&str> = [&r1, &r2, &r3]
        .iter()
        .map(|r| r.header("x-target").unwrap_or("?"))
        .collect();
    assert_eq!(
        targets,
        ["/delay/300", "/echo", "/third"],
        "responses out of order"
    );
    assert!(r1.status == 200 && r2.status == 200 && r3.status == 200);
    assert_eq!(
        r2.body_str(),
        format!("{} 14", sha256_hex(b"pipelined body"))
    );
    // Still usable afterwards.
    let r4 = c.get("/fourth", "h");
    assert_eq!(r4.header("x-target"), Some("/fourth"));
}

#[test]
fn keep_alive_and_connection_close_are_honoured() {
    let (p, app) = strict();
    let mut c = Conn::connect(p.addr("web"));
    for i in 0..5 {
        let resp = c.get(&format!("/k{i}"), "h");
        assert_eq!(
            resp.status,
            200,
            "keep-alive request {i}: {}",
            resp.summary()
        );
    }
    c.send(&req("GET", "/last", "h", &[("Connection", "close")], b""));
    let resp = c.read_response();
    assert_eq!(resp.status, 200, "{}", resp.summary());
    c.expect_closed(Duration::from_secs(5));

    // HTTP/1.0 closes by default...
    let mut c = Conn::connect(p.addr("web"));
    c.send(b"GET /old HTTP/1.0\r\nHost: h\r\n\r\n");
    let resp = c.read_response();
    assert_eq!(resp.status, 200, "{}", resp.summary());
    c.expect_closed(Duration::from_secs(5));
    // ...unless it asks for keep-alive.
    let mut c = Conn::connect(p.addr("web"));
    c.send(b"GET /old1 HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    c.send(b"GET /old2 HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
    let resp = c.read_response();
    assert_eq!(resp.header("x-target"), Some("/old2"), "{}", resp.summary());
    assert!(app.requests() >= 9);
}

#[test]
fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
    let (p, app) = strict();
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req(
        "GET",
        "/hop",
        "h",
        &[
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("X-Forwarded-For", "192.0.2.7"),
            ("X-Kept", "yes"),
        ],
        b"",
    ));
    let resp = c.read_response();
    assert_eq!(resp.status, 200, "{}", resp.summary());
    let seen = app.last_head().expect("backend saw the request");
    for h in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
    ] {
        assert_eq!(
            seen.header(h),
            None,
            "hop-by-hop {h} forwarded: {:?}",
            seen.headers
        );
    }
    assert!(
        !seen.has_token("connection", "x-secret"),
        "Connection list forwarded: {:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-kept"), Some("yes"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("192.0.2.7, 127.0.0.1"),
        "{:?}",
        seen.headers
    );
    assert_eq!(
        seen.header("x-forwarded-proto"),
        Some("http"),
        "{:?}",
        seen.headers
    );
}

/// Raw sanity check of the harness itself against the proxy: a request written in pieces is
/// one request.
#[test]
fn a_head_split_across_writes_is_one_request() {
    let (p, app) = strict();
    let mut c = Conn::connect(p.addr("web"));
    let raw = req("GET", "/split", "h", &[("X-A", "b")], b"");
    for piece in raw.chunks(7) {
        c.stream().write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let resp = c.read_response();
    assert_eq!(
        (resp.status, resp.header("x-target")),
        (200, Some("/split")),
        "{}",
        resp.summary()
    );
    assert_eq!(app.requests(), 1);
}
