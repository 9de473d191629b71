//! Everything HTTP does over TCP, over TLS: forwarded headers, HSTS, keep-alive, pipelining,
//! big and chunked bodies both ways, 100-continue, Upgrade tunnels, static files, HEAD, early
//! answers, clients leaving mid-body; and curl as an ordinary client.

use crate::common::scripted::Scripted;
use crate::common::*;
use crate::support::*;
use std::io::{Read, Write};
use std::time::Duration;

const HSTS: &str = "max-age=63072000; includeSubDomains";

fn static_root() -> TempDir {
    let root = TempDir(proxy::temp_dir("tlsstatic"));
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("assets/big.bin"), pattern(0, 3 << 20)).unwrap();
    std::fs::write(root.join("assets/small.txt"), b"hello static\n").unwrap();
    root
}

fn full_setup() -> (Setup, TempDir) {
    let root = static_root();
    let front = format!(
        r#"
  [[http.route]]
  path_prefix = "/assets/"
  static = {{ root = "{}" }}

  [[http.route]]
  path_prefix = "/dead/"
  pool = "dead"
"#,
        root.display()
    );
    let after = format!(
        "[pool.dead]\nservers = [ {{ name = \"dead\", addr = \"127.0.0.1:{}\" }} ]\n",
        free_port()
    );
    let s = start_full(
        2,
        &std_certs(),
        &format!(r#"hsts = "{HSTS}""#),
        &front,
        &after,
    );
    (s, root)
}

#[test]
fn backend_sees_x_forwarded_proto_https_only() {
    let mut s = start(1, "");
    let mut c = TlsConn::connect(s.addr(), "a.test");
    assert_eq!(c.get("/", "a.test").status, 200);
    let h = s.backend.last_head().unwrap();
    assert_eq!(
        h.header_all("x-forwarded-proto"),
        vec!["https"],
        "{:?}",
        h.headers
    );
    // A client claiming another scheme is not believed.
    c.send(&req(
        "GET",
        "/",
        "a.test",
        &[("X-Forwarded-Proto", "http")],
        b"",
    ));
    assert_eq!(c.read_response().status, 200);
    let h = s.backend.last_head().unwrap();
    assert_eq!(
        h.header_all("x-forwarded-proto"),
        vec!["https"],
        "{:?}",
        h.headers
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn hsts_on_proxied_and_static_answers_not_on_errors() {
    let (mut s, _root) = full_setup();
    let mut c = TlsConn::connect(s.addr(), "a.test");
    let r = c.get("/", "a.test");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.head.header_all("strict-transport-security"),
        vec![HSTS],
        "proxied: {}",
        r.summary()
    );
    let r = c.get("/status/404", "a.test");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.head.header_all("strict-transport-security"),
        vec![HSTS],
        "proxied 404: {}",
        r.summary()
    );
    let r = c.get("/assets/small.txt", "a.test");
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(
        r.head.header_all("strict-transport-security"),
        vec![HSTS],
        "static: {}",
        r.summary()
    );
    // Other static answers: a range, a HEAD, a conditional 304.
    let mut wrong = Vec::new();
    c.send(&req(
        "GET",
        "/assets/big.bin",
        "a.test",
        &[("Range", "bytes=0-9")],
        b"",
    ));
    let r = c.read_response();
    if r.head.header_all("strict-transport-security") != vec![HSTS] {
        wrong.push(format!("static 206: {}", r.summary()));
    }
    c.send(&req("HEAD", "/assets/small.txt", "a.test", &[], b""));
    let r = c.try_read(true).unwrap();
    if r.head.header_all("strict-transport-security") != vec![HSTS] {
        wrong.push(format!("static HEAD: {}", r.summary()));
    }
    let r = c.get("/assets/small.txt", "a.test");
    if let Some(etag) = r.header("etag").map(str::to_string) {
        c.send(&req(
            "GET",
            "/assets/small.txt",
            "a.test",
            &[("If-None-Match", &etag)],
            b"",
        ));
        let r = c.read_response();
        if r.status == 304 && r.head.header_all("strict-transport-security") != vec![HSTS] {
            wrong.push(format!("static 304: {}", r.summary()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let r = c.get("/dead/x", "a.test");
    assert!(r.status >= 500, "{}", r.summary());
    assert!(
        r.header("strict-transport-security").is_none(),
        "shardgate's own error answer: {}",
        r.summary()
    );
    let mut c = TlsConn::connect(s.addr(), "a.test");
    c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: zz\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 400);
    assert!(
        r.header("strict-transport-security").is_none(),
        "400: {}",
        r.summary()
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn keep_alive_and_pipelining() {
    let mut s = start(2, "");
    let mut c = TlsConn::connect(s.addr(), "a.test");
    for i in 0..50 {
        let r = c.get(&format!("/n{i}"), "a.test");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-target"), Some(format!("/n{i}").as_str()));
    }
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend(req("GET", &format!("/p{i}"), "a.test", &[], b""));
    }
    batch.extend(req("POST", "/echo", "a.test", &[], b"pipelined body"));
    batch.extend(req("GET", "/chunked/5000", "a.test", &[], b""));
    c.send(&batch);
    for i in 0..10 {
        let r = c.read_response();
        assert_eq!(
            r.header("x-target"),
            Some(format!("/p{i}").as_str()),
            "pipelined {i}"
        );
    }
    let r = c.read_response();
    assert_eq!(
        r.body_str(),
        format!("{} 14", sha256_hex(b"pipelined body"))
    );
    let r = c.read_response();
    assert_eq!(r.body, pattern(0, 5000));
    assert_eq!(
        s.backend.accepted(),
        1,
        "one TLS connection, one upstream connection"
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn big_bodies_both_ways_byte_exact() {
    let mut s = start(2, "");
    let n: usize = 20 << 20;
    let mut c = TlsConn::connect(s.addr(), "a.test");
    for path in ["/download", "/chunked"] {
        c.send(&req("GET", &format!("{path}/{n}"), "a.test", &[], b""));
        let r = c.read_response();
        assert_eq!(r.body.len(), n, "{path}");
        assert_eq!(sha256_hex(&r.body), pattern_sha256(n as u64), "{path}");
    }
    let body = pattern(7, n);
    c.send(&req("POST", "/echo", "a.test", &[], &body));
    let r = c.read_response();
    assert_eq!(r.body_str(), format!("{} {n}", sha256_hex(&body)));
    // Chunked upload, many chunk sizes.
    let chunked = wire::encode_chunked(&body, &[1, 17, 4096, 65536, 1 << 20, 3]);
    c.send(&req(
        "POST",
        "/echo",
        "a.test",
        &[("Transfer-Encoding", "chunked")],
        b"",
    ));
    c.send(&chunked);
    let r = c.read_response();
    assert_eq!(r.body_str(), format!("{} {n}", sha256_hex(&body)));
    assert_healthy(&mut s.proxy);
}

#[test]
fn expect_100_continue() {
    let mut s = start(1, "");
    let mut c = TlsConn::connect(s.addr(), "a.test");
    c.send(&req(
        "POST",
        "/echo",
        "a.test",
        &[("Expect", "100-continue"), ("Content-Length", "5")],
        b"",
    ));
    c.set_read_timeout(Duration::from_secs(5));
    let interim = c.try_read_message_raw();
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "expected 100 Continue first, got {interim:?}"
    );
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!(r.body_str(), format!("{} 5", sha256_hex(b"hello")));
    assert_healthy(&mut s.proxy);
}

#[test]
fn upgrade_tunnel_over_tls() {
    let mut s = start(1, "");
    let mut c = TlsConn::connect(s.addr(), "a.test");
    c.send(&req(
        "GET",
        "/ws",
        "a.test",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    ));
    let r = c.read_response();
    assert_eq!(r.status, 101, "{}", r.summary());
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some(websocket_accept("dGhlIHNhbXBsZSBub25jZQ==").as_str())
    );
    let mut echoed = c.take_buffered();
    let payload = pattern(3, 300_000);
    c.send(&payload);
    let mut buf = [0u8; 65536];
    while echoed.len() < payload.len() {
        let k = c.tls.read(&mut buf).expect("tunnel read");
        assert!(k > 0, "tunnel closed after {} bytes", echoed.len());
        echoed.extend_from_slice(&buf[..k]);
    }
    assert_eq!(echoed, payload);
    c.tls.conn.send_close_notify();
    let _ = c.tls.flush();
    assert_healthy(&mut s.proxy);
}

#[test]
fn static_files_range_and_head_over_tls() {
    let (mut s, _root) = full_setup();
    let mut c = TlsConn::connect(s.addr(), "a.test");
    let r = c.get("/assets/big.bin", "a.test");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 3 << 20);
    assert_eq!(sha256_hex(&r.body), pattern_sha256(3 << 20));
    let r = c.get("/assets/small.txt", "a.test");
    assert_eq!(r.body, b"hello static\n");
    c.send(&req(
        "GET",
        "/assets/big.bin",
        "a.test",
        &[("Range", "bytes=1000000-1000099")],
        b"",
    ));
    let r = c.read_response();
    assert_eq!(r.status, 206, "{}", r.summary());
    assert_eq!(r.body, pattern(1_000_000, 100));
    c.send(&req(
        "GET",
        "/assets/big.bin",
        "a.test",
        &[("Range", "bytes=-10")],
        b"",
    ));
    let r = c.read_response();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, pattern((3 << 20) - 10, 10));
    c.send(&req("HEAD", "/assets/big.bin", "a.test", &[], b""));
    let r = c.try_read(true).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some((3usize << 20).to_string().as_str())
    );
    c.send(&req("HEAD", "/download/12345", "a.test", &[], b""));
    let r = c.try_read(true).unwrap();
    assert_eq!(r.status, 200);
    // The connection is still in sync after the HEADs (no body bytes leaked).
    let r = c.get("/assets/small.txt", "a.test");
    assert_eq!(r.body, b"hello static\n");
    // curl too.
    let (code, out, err) = curl_tls(
        s.port(),
        "a.test",
        "/assets/big.bin",
        &["--http1.1", "-o", "/dev/null", "-w", "%{size_download}"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        String::from_utf8_lossy(&out).ends_with(&(3usize << 20).to_string()),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn early_answer_before_the_request_body() {
    let backend = Scripted::start("early", |_ctx, stream| {
        let mut io = wire::BufStream::new(stream);
        if io.read_head().ok().flatten().is_none() {
            return;
        }
        let _ = io.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
        );
        std::thread::sleep(Duration::from_millis(300));
    });
    let cfg = tls_config(1, &std_certs(), "", "", "");
    let mut proxy = Proxy::start_with(&cfg, &[("app", backend.addr_string())]);
    let mut c = TlsConn::connect(proxy.addr("web"), "a.test");
    c.send(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10000000\r\n\r\n");
    c.send(&pattern(0, 10000));
    let r = c.read_response();
    assert_eq!(r.status, 413, "{}", r.summary());
    assert_eq!(r.body, b"nope");
    assert_healthy(&mut proxy);
}

#[test]
fn client_closing_mid_body() {
    let mut s = start(2, "");
    for i in 0..6 {
        let mut c = TlsConn::connect(s.addr(), "a.test");
        c.send(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5000000\r\n\r\n");
        c.send(&pattern(0, 200_000));
        if i % 2 == 0 {
            c.tls.conn.send_close_notify();
            let _ = c.tls.flush();
        }
        drop(c);
    }
    let mut c = TlsConn::connect(s.addr(), "a.test");
    let r = c.get("/", "a.test");
    assert_eq!(r.status, 200);
    assert_healthy(&mut s.proxy);
}

#[test]
fn curl_tls12_and_tls13_http11() {
    let mut s = start(1, "");
    for extra in [
        &["--tlsv1.2", "--tls-max", "1.2", "--http1.1"][..],
        &["--tlsv1.3", "--http1.1"][..],
    ] {
        let mut args = extra.to_vec();
        args.extend(["-H", "X-Test: 1"]);
        let (code, out, err) = curl_tls(s.port(), "a.test", "/q?x=1", &args);
        assert_eq!(code, 0, "{extra:?}: {err}");
        assert_eq!(curl_status(&out), 200, "{}", String::from_utf8_lossy(&out));
        assert_eq!(curl_header(&out, "x-target").as_deref(), Some("/q?x=1"));
        assert!(String::from_utf8_lossy(&out).ends_with("app"));
    }
    // POST with a body through curl.
    let (code, out, err) = curl_tls(s.port(), "x.w.test", "/echo", &["--data-binary", "abc"]);
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).ends_with(&format!("{} 3", sha256_hex(b"abc"))));
    assert_healthy(&mut s.proxy);
}
