//! Edge cases around the TLS frontend: a frontend switching between plain and TLS on reload,
//! requests in 1-byte records, slow readers, crowds of silent clients, plain-text variants,
//! OCSP on `reload certs`, the Prometheus counters.

use crate::common::*;
use crate::support::*;
use std::io::Write;
use std::time::{Duration, Instant};

fn plain_config(shards: u32) -> String {
    format!(
        r#"{daemon}
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"

[pool.app]
servers = [ {{ name = "app", addr = "{{app}}" }} ]
"#,
        daemon = daemon(shards)
    )
}

#[test]
fn reload_turns_tls_on_and_off_keeping_open_connections() {
    let mut s = start(1, "");
    let addr = s.addr();
    let app = s.backend.addr_string();
    let mut tls_conn = TlsConn::connect(addr, "a.test");
    assert_eq!(tls_conn.get("/", "a.test").status, 200);

    // TLS off.
    s.proxy.rewrite(&plain_config(1), &[("app", app.clone())]);
    let (code, out) = s.proxy.ctl("reload");
    assert_eq!(code, 0, "{out}");
    let mut plain = Conn::connect(addr);
    let r = plain.get("/", "a.test");
    assert_eq!(
        r.status,
        200,
        "plain HTTP after TLS was turned off: {}",
        r.summary()
    );
    assert_eq!(
        tls_conn.try_read_after_get("a.test").map(|r| r.status),
        Ok(200),
        "TLS connection open across the reload"
    );

    // TLS on again.
    s.proxy
        .rewrite(&tls_config(1, &std_certs(), "", "", ""), &[("app", app)]);
    let (code, out) = s.proxy.ctl("reload");
    assert_eq!(code, 0, "{out}");
    let mut again = TlsConn::connect(addr, "b.test");
    assert_eq!(again.get("/", "b.test").status, 200);
    assert_eq!(
        plain.get("/", "a.test").status,
        200,
        "plain connection open across the reload"
    );
    let mut c = Conn::connect(addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        c.read_response().status,
        400,
        "plain HTTP on the TLS port again"
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn reload_adds_a_certificate() {
    let mut s = start(1, "");
    let r = s_client(
        s.port(),
        &["-servername", "c.test"],
        b"",
        Duration::from_millis(100),
    );
    assert!(r.subject().contains("a.test"), "{}", r.all());
    let certs = std_certs().trim_end_matches(" ]").to_string()
        + &format!(
            r#", {{ cert = "{}", key = "{}" }} ]"#,
            cp("c-chain.pem"),
            cp("c.key")
        );
    s.proxy.rewrite(
        &tls_config(1, &certs, "", "", ""),
        &[("app", s.backend.addr_string())],
    );
    let (code, out) = s.proxy.ctl("reload");
    assert_eq!(code, 0, "{out}");
    let mut c = TlsConn::connect(s.addr(), "c.test");
    assert_eq!(c.peer_chain_len(), 2);
    assert_eq!(c.get("/", "c.test").status, 200);
    assert_healthy(&mut s.proxy);
}

#[test]
fn request_in_one_byte_records_and_pipelined_across_records() {
    let mut s = start(1, "");
    let mut c = TlsConn::connect(s.addr(), "a.test");
    let mut all = req("POST", "/echo", "a.test", &[], b"0123456789");
    all.extend(req("GET", "/second", "a.test", &[], b""));
    for b in &all {
        // one TLS record per byte
        c.send(&[*b]);
    }
    let r = c.read_response();
    assert_eq!(r.body_str(), format!("{} 10", sha256_hex(b"0123456789")));
    let r = c.read_response();
    assert_eq!(r.header("x-target"), Some("/second"));
    assert_healthy(&mut s.proxy);
}

#[test]
fn slow_reader_of_a_big_response_gets_every_byte() {
    let mut s = start(1, "");
    let n = 8usize << 20;
    let mut c = TlsConn::connect(s.addr(), "a.test");
    c.send(&req("GET", &format!("/download/{n}"), "a.test", &[], b""));
    std::thread::sleep(Duration::from_millis(1500));
    c.set_read_timeout(Duration::from_secs(20));
    let r = c.read_response();
    assert_eq!(r.body.len(), n);
    assert_eq!(sha256_hex(&r.body), pattern_sha256(n as u64));
    // And the connection is still usable.
    assert_eq!(c.get("/", "a.test").status, 200);
    assert_healthy(&mut s.proxy);
}

#[test]
fn silent_crowd_does_not_delay_a_real_client() {
    let mut s = start(1, r#"handshake_timeout = "5s""#);
    let mut crowd: Vec<std::net::TcpStream> = (0..150).map(|_| tcp(s.addr())).collect();
    // Some of them send half a ClientHello.
    for (i, c) in crowd.iter_mut().enumerate() {
        if i % 2 == 0 {
            let _ = c.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
        }
    }
    let t0 = Instant::now();
    let mut c = TlsConn::connect(s.addr(), "a.test");
    assert_eq!(c.get("/", "a.test").status, 200);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "handshake took {:?} behind 150 silent clients",
        t0.elapsed()
    );
    drop(crowd);
    drop(c);
    // Everything they held is let go: no connection, no descriptor left behind.
    let fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let active = counter(&s.proxy, "connections.active");
        if active == 0 || Instant::now() > deadline {
            assert_eq!(
                active, 0,
                "connections.active after 150 silent clients left"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = fds(s.proxy.pid());
    assert!(
        after < 150,
        "{after} descriptors open in the daemon after the crowd left"
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn plain_text_variants_on_the_tls_port() {
    let mut s = start(1, "");
    let before = counter(&s.proxy, "tls.failed.plain_http");
    for (what, bytes) in [
        ("HEAD", &b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"[..]),
        ("OPTIONS *", &b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"[..]),
        ("HTTP/1.0", &b"GET / HTTP/1.0\r\n\r\n"[..]),
        (
            "CONNECT",
            &b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n"[..],
        ),
    ] {
        let mut c = Conn::connect(s.addr());
        c.send(bytes);
        let (got, _end) = c.read_until_end(Duration::from_secs(3));
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{what}: {text:?}"
        );
        assert!(
            text.ends_with("The plain HTTP request was sent to the HTTPS port\n") || what == "HEAD",
            "{what}: {text:?}"
        );
    }
    // A request head that comes in pieces.
    let mut c = Conn::connect(s.addr());
    c.send(b"GE");
    std::thread::sleep(Duration::from_millis(200));
    c.send(b"T / HTTP/1.1\r\nHo");
    std::thread::sleep(Duration::from_millis(200));
    c.send(b"st: a\r\n\r\n");
    let (got, _) = c.read_until_end(Duration::from_secs(3));
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "split head: {:?}",
        String::from_utf8_lossy(&got)
    );
    wait_counter(
        &s.proxy,
        "tls.failed.plain_http",
        before + 5,
        Duration::from_secs(3),
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn reload_certs_rereads_and_checks_the_ocsp_file() {
    let dir = private_certs();
    let p = |n: &str| dir.join(n).display().to_string();
    let certs = format!(
        r#"[ {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}", ocsp = "{}" }} ]"#,
        p("a-ec.pem"),
        p("a-ec.key"),
        p("b.pem"),
        p("b.key"),
        p("b.ocsp.der")
    );
    let mut s = start_full(1, &certs, "", "", "");
    let status = |s: &Setup| {
        s_client(
            s.port(),
            &["-servername", "b.test", "-status"],
            b"",
            Duration::from_millis(100),
        )
        .all()
    };
    assert!(status(&s).contains("OCSP Response Status: successful"));
    std::fs::write(dir.join("b.ocsp.der"), b"not DER at all").unwrap();
    let (_, out) = s.proxy.ctl("reload certs");
    assert!(
        out.lines().any(|l| l.starts_with("error:")),
        "a non-DER OCSP file accepted by reload certs: {out:?}"
    );
    assert!(
        status(&s).contains("OCSP Response Status: successful"),
        "the old staple stays"
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn prometheus_counts_handshakes_and_failures() {
    let mut s = start(1, "");
    let cfg = client_config(&["http/1.1"], &["1.3"]);
    for _ in 0..3 {
        let mut c = TlsConn::try_connect_with(s.addr(), "a.test", cfg.clone()).unwrap();
        assert_eq!(c.get("/", "a.test").status, 200);
    }
    let mut c = Conn::connect(s.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let _ = c.read_until_end(Duration::from_secs(3));
    wait_counter(&s.proxy, "tls.failed.plain_http", 1, Duration::from_secs(3));
    let (code, text) = s.proxy.ctl("show metrics");
    assert_eq!(code, 0);
    // The sum over every series of `name` whose labels include `label` (shards add theirs).
    let line = |sel: &str| -> Option<f64> {
        let (name, label) = sel.split_once('{').unwrap();
        let label = label.trim_end_matches('}');
        let vals: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| l.split('}').next().unwrap().contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!vals.is_empty()).then(|| vals.iter().sum())
    };
    let tls: Vec<&str> = text.lines().filter(|l| l.contains("tls")).collect();
    assert_eq!(
        line(r#"shardgate_tls_handshakes_total{kind="full"}"#),
        Some(1.0),
        "{tls:#?}"
    );
    assert_eq!(
        line(r#"shardgate_tls_handshakes_total{kind="resumed"}"#),
        Some(2.0),
        "{tls:#?}"
    );
    assert_eq!(
        line(r#"shardgate_tls_handshake_failures_total{reason="plain_http"}"#),
        Some(1.0),
        "{tls:#?}"
    );
    assert!(
        line(r#"shardgate_tls_handshake_failures_total{reason="timeout"}"#).is_some(),
        "{tls:#?}"
    );
    assert!(
        text.contains("# TYPE shardgate_tls_handshakes_total counter"),
        "{tls:#?}"
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn no_cipher_suite_in_common_is_incompatible() {
    let mut s = start(1, "");
    for args in [
        &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"][..],
        &["-tls1_2", "-cipher", "AES128-SHA"][..],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"][..],
        &["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"][..],
        &["-tls1_3", "-groups", "ffdhe2048"][..],
    ] {
        let before = counter(&s.proxy, "tls.failed.incompatible");
        let mut a = args.to_vec();
        a.extend(["-servername", "a.test"]);
        let r = s_client(s.port(), &a, b"", Duration::from_millis(100));
        assert!(!r.connected(), "{args:?}: {}", r.all());
        // handshake_failure (40) is the alert for "nothing in common"; not access_denied.
        assert!(
            r.all().contains("alert handshake failure"),
            "{args:?}: wrong alert: {}",
            r.all()
        );
        std::thread::sleep(Duration::from_millis(100));
        let st = stats_of(&s.proxy);
        let after = counter(&s.proxy, "tls.failed.incompatible");
        assert_eq!(
            after,
            before + 1,
            "{args:?} not counted as incompatible: {:?}",
            st.iter()
                .filter(|(k, _)| k.starts_with("tls.failed"))
                .collect::<Vec<_>>()
        );
    }
    assert_healthy(&mut s.proxy);
}

#[test]
fn tunnel_half_close_over_tls() {
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
    assert_eq!(c.read_response().status, 101);
    let mut echoed = c.take_buffered();
    let payload = pattern(11, 200_000);
    c.send(&payload);
    // The client is done sending: close_notify (TLS half-close). The backend echoes to EOF,
    // then closes; everything must come back, then the server's close_notify.
    c.tls.conn.send_close_notify();
    c.tls.flush().unwrap();
    c.set_read_timeout(Duration::from_secs(10));
    let rest = c.read_to_end();
    match rest {
        Ok(b) => echoed.extend(b),
        Err(e) => panic!(
            "tunnel after the client's close_notify: {e} ({} bytes echoed before)",
            echoed.len()
        ),
    }
    assert_eq!(echoed.len(), payload.len());
    assert_eq!(echoed, payload);
    assert_healthy(&mut s.proxy);
}

#[test]
fn hsts_on_cache_hits() {
    let origin = origin::Origin::start();
    origin.on("/c", |_| {
        origin::Reply::ok("cached body").h("Cache-Control", "max-age=60")
    });
    let front = r#"
  [[http.route]]
  pool = "app"
  path_prefix = "/c"
  cache = { size = "16MiB", max_object = "1MiB" }
"#;
    let cfg = tls_config(1, &std_certs(), r#"hsts = "max-age=99""#, front, "");
    let mut p = Proxy::start_with(&cfg, &[("app", origin.addr_string())]);
    let mut c = TlsConn::connect(p.addr("web"), "a.test");
    let mut wrong = Vec::new();
    for i in 0..3 {
        let r = c.get("/c", "a.test");
        assert_eq!(r.body, b"cached body");
        if r.head.header_all("strict-transport-security") != vec!["max-age=99"] {
            wrong.push(format!(
                "answer {i} (X-Cache {:?}): {:?}",
                r.header("x-cache"),
                r.head.headers
            ));
        }
    }
    let seen = origin.reqs("/c");
    if let Some(first) = seen.first() {
        if first.header("x-forwarded-proto") != Some("https") {
            wrong.push(format!(
                "origin saw X-Forwarded-Proto {:?}",
                first.header("x-forwarded-proto")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "HSTS missing on a cache route:\n{}",
        wrong.join("\n")
    );
    assert_eq!(origin.count("/c"), 1, "not cached");
    assert_healthy(&mut p);
}

#[test]
fn ctl_reload_rereads_changed_cert_files() {
    let dir = private_certs();
    let p = |n: &str| dir.join(n).display().to_string();
    let certs = format!(
        r#"[ {{ cert = "{}", key = "{}" }} ]"#,
        p("a-ec.pem"),
        p("a-ec.key")
    );
    let mut s = start_full(1, &certs, "", "", "");
    let old = der_of(&dir.join("a-ec.pem"));
    assert_eq!(TlsConn::connect(s.addr(), "a.test").peer_leaf(), old);
    let gen = crate::common::certs::Certs { dir: dir.clone() };
    gen.leaf("a-ec-2", "ec", "a.test", &["a.test"], "ca", 30);
    std::fs::copy(dir.join("a-ec-2.key"), dir.join("a-ec.key")).unwrap();
    std::fs::copy(dir.join("a-ec-2.pem"), dir.join("a-ec.pem")).unwrap();
    let (code, out) = s.proxy.ctl("reload");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        TlsConn::connect(s.addr(), "a.test").peer_leaf(),
        der_of(&dir.join("a-ec-2.pem")),
        "`ctl reload` with the same TOML and new cert files"
    );
    assert_healthy(&mut s.proxy);
}
