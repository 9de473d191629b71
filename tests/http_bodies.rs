//! Message bodies through the proxy: by length and chunked in both directions, 50 MiB each way
//! intact (sha256), bodiless responses (HEAD, 204, 304), close-delimited responses,
//! `Expect: 100-continue`, WebSocket tunnels, and a few of the same checks with curl.

mod common;

use common::*;
use std::time::Duration;

const MIB: usize = 1 << 20;

fn one_backend(extra_frontend: &str) -> (Proxy, Backend) {
    let app = Backend::start("app");
    let cfg = daemon(1)
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"
{extra_frontend}

[pool.app]
servers = [ {{ name = "app", addr = "{{app}}" }} ]
"#
        );
    let p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    (p, app)
}

#[test]
fn harness_websocket_accept_matches_rfc6455_example() {
    assert_eq!(
        websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn uploads_by_length_and_chunked_arrive_intact() {
    let (p, _app) = one_backend("");
    let mut c = Conn::connect(p.addr("web"));
    for len in [1usize, 1000, 300_000] {
        let body = pattern(7, len);
        c.send(&req("POST", "/echo", "h", &[], &body));
        let resp = c.read_response();
        assert_eq!(
            resp.body_str(),
            format!("{} {len}", sha256_hex(&body)),
            "CL upload of {len}: {}",
            resp.summary()
        );

        let mut raw = req(
            "POST",
            "/echo",
            "h",
            &[("Transfer-Encoding", "chunked")],
            b"",
        );
        raw.extend(wire::encode_chunked(&body, &[1, 100, 8192, 3]));
        c.send(&raw);
        let resp = c.read_response();
        assert_eq!(
            resp.body_str(),
            format!("{} {len}", sha256_hex(&body)),
            "chunked upload of {len}: {}",
            resp.summary()
        );
    }
    // An empty chunked body.
    c.send(&req(
        "POST",
        "/echo",
        "h",
        &[("Transfer-Encoding", "chunked")],
        b"0\r\n\r\n",
    ));
    let resp = c.read_response();
    assert_eq!(
        resp.body_str(),
        format!("{} 0", sha256_hex(b"")),
        "{}",
        resp.summary()
    );
}

#[test]
fn downloads_by_length_and_chunked_arrive_intact() {
    let (p, _app) = one_backend("");
    let mut c = Conn::connect(p.addr("web"));
    for len in [0usize, 1, 5000, 1_000_000] {
        let resp = c.get(&format!("/download/{len}"), "h");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.len(), len, "length download");
        assert!(
            resp.body == pattern(0, len),
            "length download of {len} corrupted"
        );

        let resp = c.get(&format!("/chunked/{len}"), "h");
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.body.len(),
            len,
            "chunked download: {}",
            resp.head.start_line
        );
        assert!(
            resp.body == pattern(0, len),
            "chunked download of {len} corrupted"
        );
    }
}

#[test]
fn fifty_mib_upload_and_download_are_intact() {
    let (p, _app) = one_backend("");
    let len = 50 * MIB;
    let mut c = Conn::connect(p.addr("web"));
    c.set_read_timeout(Duration::from_secs(60));

    let resp = c.get(&format!("/download/{len}"), "h");
    assert_eq!(resp.status, 200, "{}", resp.head.start_line);
    assert_eq!(resp.body.len(), len);
    assert_eq!(
        sha256_hex(&resp.body),
        pattern_sha256(len as u64),
        "50 MiB download corrupted"
    );
    drop(resp);

    let body = pattern(0, len);
    c.send(&req("POST", "/echo", "h", &[], &body));
    let resp = c.read_response();
    assert_eq!(
        resp.body_str(),
        format!("{} {len}", pattern_sha256(len as u64)),
        "50 MiB upload"
    );

    // Chunked in both directions too, smaller.
    let resp = c.get(&format!("/chunked/{}", 8 * MIB), "h");
    assert_eq!(
        sha256_hex(&resp.body),
        pattern_sha256(8 * MIB as u64),
        "8 MiB chunked download"
    );
    let mut raw = req(
        "POST",
        "/echo",
        "h",
        &[("Transfer-Encoding", "chunked")],
        b"",
    );
    raw.extend(wire::encode_chunked(&body[..8 * MIB], &[65536, 1000, 1]));
    c.send(&raw);
    let resp = c.read_response();
    assert_eq!(
        resp.body_str(),
        format!("{} {}", pattern_sha256(8 * MIB as u64), 8 * MIB),
        "8 MiB chunked upload"
    );
}

#[test]
fn head_204_and_304_carry_no_body() {
    let (p, _app) = one_backend("");
    let mut c = Conn::connect(p.addr("web"));
    // Each bodiless answer is followed on the same connection by a normal one: a stray body
    // byte, or a proxy waiting for one, would show up there.
    c.send(&req("HEAD", "/download/5000", "h", &[], b""));
    let resp = c.read_head_response();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-length"),
        Some("5000"),
        "HEAD keeps the length: {}",
        resp.summary()
    );
    let next = c.get("/after-head", "h");
    assert_eq!(
        next.header("x-target"),
        Some("/after-head"),
        "after HEAD: {}",
        next.summary()
    );

    for code in [204u16, 304] {
        c.send(&req("GET", &format!("/status/{code}"), "h", &[], b""));
        let resp = c.read_response();
        assert_eq!(resp.status, code, "{}", resp.summary());
        let next = c.get(&format!("/after-{code}"), "h");
        assert_eq!(
            next.header("x-target").map(String::from),
            Some(format!("/after-{code}")),
            "after {code}: {}",
            next.summary()
        );
    }

    // Pipelined, so nothing can hide between them.
    let mut batch = req("HEAD", "/download/100", "h", &[], b"");
    batch.extend(req("GET", "/status/304", "h", &[], b""));
    batch.extend(req("GET", "/status/204", "h", &[], b""));
    batch.extend(req("GET", "/end", "h", &[], b""));
    c.send(&batch);
    assert_eq!(c.read_head_response().status, 200);
    assert_eq!(c.read_response().status, 304);
    assert_eq!(c.read_response().status, 204);
    let last = c.read_response();
    assert_eq!(
        (last.status, last.body_str().as_str()),
        (200, "app"),
        "{}",
        last.summary()
    );
}

#[test]
fn close_delimited_response_is_relayed_then_client_closed() {
    let (p, _app) = one_backend("");
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req("GET", "/close", "h", &[], b""));
    let resp = c.read_response();
    assert_eq!(
        (resp.status, resp.body_str().as_str()),
        (200, "app"),
        "{}",
        resp.summary()
    );
    if resp.framing != client::Framing::Close {
        c.expect_closed(Duration::from_secs(5));
    }

    let mut c = Conn::connect(p.addr("web"));
    c.send(&req("GET", "/close/300000", "h", &[], b""));
    let resp = c.read_response();
    assert!(
        resp.body == pattern(0, 300_000),
        "close-delimited 300000 bytes: got {}",
        resp.body.len()
    );
    if resp.framing != client::Framing::Close {
        c.expect_closed(Duration::from_secs(5));
    }
}

#[test]
fn expect_100_continue_is_answered_by_the_proxy_before_the_body() {
    let (p, _app) = one_backend("max_body = 1000000");
    let mut c = Conn::connect(p.addr("web"));
    let body = pattern(3, 5000);
    c.send(&req(
        "POST",
        "/echo",
        "h",
        &[("Content-Length", "5000"), ("Expect", "100-continue")],
        b"",
    ));
    let first = c
        .try_read_message(false)
        .unwrap_or_else(|e| panic!("waiting for 100 Continue before sending the body: {e}"));
    assert_eq!(
        first.head.start_line,
        "HTTP/1.1 100 Continue",
        "{}",
        first.summary()
    );
    c.send(&body);
    let resp = c.read_response();
    assert_eq!(
        resp.body_str(),
        format!("{} 5000", sha256_hex(&body)),
        "{}",
        resp.summary()
    );

    // Too large with Expect: 413 straight away, no 100, then close.
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req(
        "POST",
        "/echo",
        "h",
        &[("Content-Length", "2000000"), ("Expect", "100-continue")],
        b"",
    ));
    let first = c
        .try_read_message(false)
        .expect("a final answer to an oversized Expect request");
    assert_eq!(first.status, 413, "{}", first.summary());
    c.expect_closed(Duration::from_secs(5));
}

#[test]
fn websocket_upgrade_tunnels_bytes_both_ways() {
    let (p, app) = one_backend("");
    let mut c = Conn::connect(p.addr("web"));
    let key = "x3JJHMbDL1EzLkh9GBhXDw==";
    c.send(&req(
        "GET",
        "/ws",
        "h",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    ));
    let resp = c.read_response();
    assert_eq!(resp.status, 101, "{}", resp.summary());
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some(websocket_accept(key).as_str())
    );
    assert!(
        resp.head.has_token("upgrade", "websocket"),
        "{}",
        resp.summary()
    );
    let seen = app.last_head().unwrap();
    assert!(
        seen.has_token("upgrade", "websocket"),
        "Upgrade not forwarded: {:?}",
        seen.headers
    );

    // Arbitrary bytes (not even valid frames: the tunnel must not care), small then large.
    for len in [5usize, 200_000] {
        let data = pattern(len as u64, len);
        c.send(&data);
        let mut got = Vec::new();
        while got.len() < len {
            let (more, end) = c.read_until_end(Duration::from_millis(2000));
            got.extend(more);
            if end != client::End::Timeout {
                break;
            }
            if got.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), len, "echo through the tunnel");
        assert!(got == data, "echoed bytes differ");
    }
    // Client closes its side: the backend closes, and so must the proxy.
    c.shutdown_write();
    c.expect_closed(Duration::from_secs(5));
}

#[test]
fn curl_get_upload_and_keep_alive() {
    let (p, app) = one_backend("");
    let base = format!("http://127.0.0.1:{}", p.port("web"));
    let (code, out, err) = curl(&[&format!("{base}/plain")]);
    assert_eq!(
        (code, String::from_utf8_lossy(&out).as_ref()),
        (0, "app"),
        "curl: {err}"
    );

    // A 2 MiB PUT: curl sends Expect: 100-continue for it.
    let file = p.dir.join("upload.bin");
    let body = pattern(11, 2 * MIB);
    std::fs::write(&file, &body).unwrap();
    let (code, out, err) = curl(&["-T", file.to_str().unwrap(), &format!("{base}/echo")]);
    assert_eq!(code, 0, "curl -T: {err}");
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("{} {}", sha256_hex(&body), 2 * MIB)
    );
    let seen = app.last_head().unwrap();
    assert_eq!(seen.start_line, "PUT /echo HTTP/1.1");

    // Chunked upload from stdin-like data.
    let (code, out, err) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{base}/echo"),
    ]);
    assert_eq!(code, 0, "curl chunked: {err}");
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("{} {}", sha256_hex(&body), 2 * MIB)
    );

    // Several URLs in one run: curl keeps the connection alive between them.
    let (code, out, err) = curl(&[
        "-w",
        " %{num_connects}",
        &format!("{base}/a"),
        &format!("{base}/b"),
        &format!("{base}/c"),
    ]);
    assert_eq!(
        (code, String::from_utf8_lossy(&out).as_ref()),
        (0, "app 1app 0app 0"),
        "curl x3 (body, then new connections made): {err}"
    );
    let resp_sha = {
        let (code, out, err) = curl(&[&format!("{base}/chunked/{}", MIB)]);
        assert_eq!(code, 0, "{err}");
        sha256_hex(&out)
    };
    assert_eq!(
        resp_sha,
        pattern_sha256(MIB as u64),
        "curl chunked download"
    );
}

#[test]
fn idle_websocket_tunnel_is_closed_by_tunnel_timeout() {
    let (p, _app) = one_backend("tunnel_timeout = \"1s\"");
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req(
        "GET",
        "/ws",
        "h",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "x3JJHMbDL1EzLkh9GBhXDw=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    ));
    let resp = c.read_response();
    assert_eq!(resp.status, 101, "{}", resp.summary());
    // Traffic keeps the tunnel open past the timeout...
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        c.send(b"ping");
        let (got, end) = c.read_until_end(Duration::from_millis(300));
        assert_eq!(got, b"ping", "echo while active ({end:?})");
    }
    // ...silence in both directions closes it.
    let (rest, end) = c.read_until_end(Duration::from_secs(5));
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
    assert_ne!(end, client::End::Timeout, "the idle tunnel was not closed");
}
