//! TLS configuration: what `--check` refuses and how it says so, relative paths, `reload` and
//! `reload certs` with good and broken files, `redirect_https`, reload and stop with open TLS
//! connections.

use crate::common::certs::Certs;
use crate::common::*;
use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A config file in `dir` with one TLS frontend (`tls = { certs = CERTS, EXTRA }`) and extra
/// frontend keys; returns its path.
fn write_cfg(dir: &Path, certs: &str, tls_extra: &str, front_extra: &str) -> std::path::PathBuf {
    let sep = if tls_extra.is_empty() { "" } else { ", " };
    let text = format!(
        r#"[daemon]
shards = 1

[[http]]
name = "web"
listen = ["127.0.0.1:{port}"]
default_pool = "app"
tls = {{ certs = {certs}{sep}{tls_extra} }}
{front_extra}

[pool.app]
servers = [ {{ name = "app", addr = "127.0.0.1:9" }} ]
"#,
        port = free_port()
    );
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = r#"[ { cert = "a-ec.pem", key = "a-ec.key" }, { cert = "a-rsa.pem", key = "a-rsa.key" }, { cert = "b.pem", key = "b.key", ocsp = "b.ocsp.der" } ]"#;

#[test]
fn check_accepts_relative_paths_and_refuses_each_bad_setting_by_name() {
    let dir = private_certs();
    std::fs::write(dir.join("notder.ocsp"), b"-----BEGIN OCSP-----\n").unwrap();
    let cfg = write_cfg(
        &dir,
        GOOD,
        r#"handshake_timeout = "2s", hsts = "max-age=63072000; includeSubDomains", versions = ["1.2", "1.3"], ktls = "auto""#,
        "",
    );
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "the spec's own example refused: {out}");

    let cases: &[(&str, &str, &str, &str, &[&str])] = &[
        (
            "missing cert",
            r#"[ { cert = "missing.pem", key = "a-ec.key" } ]"#,
            "",
            "",
            &["http[0].tls.certs", "missing.pem"],
        ),
        (
            "missing key",
            r#"[ { cert = "a-ec.pem", key = "missing.key" } ]"#,
            "",
            "",
            &["http[0].tls.certs", "missing.key"],
        ),
        (
            "key does not match",
            r#"[ { cert = "mismatch.pem", key = "mismatch.key" } ]"#,
            "",
            "",
            &["http[0].tls.certs", "mismatch"],
        ),
        (
            "garbage PEM",
            r#"[ { cert = "garbage.pem", key = "a-ec.key" } ]"#,
            "",
            "",
            &["http[0].tls.certs", "garbage.pem"],
        ),
        (
            "garbage key",
            r#"[ { cert = "a-ec.pem", key = "garbage.pem" } ]"#,
            "",
            "",
            &["http[0].tls.certs", "garbage.pem"],
        ),
        (
            "cert without DNS SAN",
            r#"[ { cert = "nosan.pem", key = "nosan.key" } ]"#,
            "",
            "",
            &["http[0].tls.certs", "nosan.pem"],
        ),
        ("empty certs", "[]", "", "", &["http[0].tls.certs"]),
        (
            "versions 1.1",
            GOOD,
            r#"versions = ["1.1"]"#,
            "",
            &["http[0].tls.versions[0]"],
        ),
        (
            "versions empty",
            GOOD,
            r#"versions = []"#,
            "",
            &["http[0].tls.versions"],
        ),
        (
            "bad hsts",
            GOOD,
            r#"hsts = "includeSubDomains""#,
            "",
            &["http[0].tls.hsts"],
        ),
        (
            "hsts max-age without a value",
            GOOD,
            r#"hsts = "max-age=""#,
            "",
            &["http[0].tls.hsts"],
        ),
        (
            "hsts max-age not a number",
            GOOD,
            r#"hsts = "max-age=abc; includeSubDomains""#,
            "",
            &["http[0].tls.hsts"],
        ),
        (
            "hsts with a CRLF",
            GOOD,
            r#"hsts = "max-age=1\r\nSet-Cookie: x=1""#,
            "",
            &["http[0].tls.hsts"],
        ),
        ("ktls on", GOOD, r#"ktls = "on""#, "", &["http[0].tls.ktls"]),
        (
            "ocsp not DER",
            r#"[ { cert = "b.pem", key = "b.key", ocsp = "notder.ocsp" } ]"#,
            "",
            "",
            &["http[0].tls.certs", "notder.ocsp"],
        ),
        (
            "ocsp missing",
            r#"[ { cert = "b.pem", key = "b.key", ocsp = "nope.der" } ]"#,
            "",
            "",
            &["http[0].tls.certs", "nope.der"],
        ),
        (
            "redirect_https on TLS",
            GOOD,
            "",
            "redirect_https = true",
            &["http[0]", "redirect_https"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, certs, extra, front, want) in cases {
        let cfg = write_cfg(&dir, certs, extra, front);
        let (code, out) = check(&cfg);
        if code == 0 {
            failures.push(format!("{what}: accepted ({out})"));
            continue;
        }
        let mut missing: Vec<&str> = want.iter().copied().filter(|w| !out.contains(w)).collect();
        if !out.contains(&cfg.display().to_string()) {
            missing.push("<config file path>");
        }
        if !missing.is_empty() {
            failures.push(format!("{what}: message lacks {missing:?}: {out:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn paths_relative_to_the_config_directory_at_startup() {
    // The proxy's config is in its own temp dir; the certs are in a sibling dir.
    let dir = private_certs();
    let rel = format!("../{}", dir.file_name().unwrap().to_string_lossy());
    let certs = format!(
        r#"[ {{ cert = "{rel}/a-ec.pem", key = "{rel}/a-ec.key" }}, {{ cert = "{rel}/b.pem", key = "{rel}/b.key", ocsp = "{rel}/b.ocsp.der" }} ]"#
    );
    let mut s = start_full(1, &certs, "", "", "");
    assert_eq!(leaf_der(&s, "b.test"), der_of(&dir.join("b.pem")));
    assert_healthy(&mut s.proxy);
}

fn leaf_der(s: &Setup, sni: &str) -> Vec<u8> {
    TlsConn::connect(s.addr(), sni).peer_leaf()
}

fn certs_in(dir: &Path) -> String {
    let p = |n: &str| dir.join(n).display().to_string();
    format!(
        r#"[ {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }} ]"#,
        p("a-ec.pem"),
        p("a-ec.key"),
        p("b.pem"),
        p("b.key")
    )
}

#[test]
fn reload_with_a_broken_cert_is_refused_and_the_old_config_serves() {
    let dir = private_certs();
    let backend = Backend::start("app");
    let cfg = tls_config(1, &certs_in(&dir), "", "", "");
    let mut proxy = Proxy::start_with(&cfg, &[("app", backend.addr_string())]);
    let addr = proxy.addr("web");
    let mut kept = TlsConn::connect(addr, "a.test");
    assert_eq!(kept.get("/", "a.test").status, 200);
    for (what, certs) in [
        (
            "garbage",
            format!(
                r#"[ {{ cert = "{}", key = "{}" }} ]"#,
                dir.join("garbage.pem").display(),
                dir.join("a-ec.key").display()
            ),
        ),
        (
            "mismatch",
            format!(
                r#"[ {{ cert = "{}", key = "{}" }} ]"#,
                dir.join("mismatch.pem").display(),
                dir.join("mismatch.key").display()
            ),
        ),
        (
            "missing",
            format!(
                r#"[ {{ cert = "{}", key = "{}" }} ]"#,
                dir.join("nope.pem").display(),
                dir.join("a-ec.key").display()
            ),
        ),
    ] {
        proxy.rewrite(
            &tls_config(1, &certs, "", "", ""),
            &[("app", backend.addr_string())],
        );
        let (code, out, err) = proxy.ctl_full("reload");
        assert!(
            code != 0 || out.starts_with("error"),
            "reload with a {what} cert accepted: {out} {err}"
        );
        assert_eq!(
            TlsConn::connect(addr, "b.test").peer_leaf(),
            der_of(&dir.join("b.pem")),
            "after refused {what}"
        );
        assert_eq!(kept.get("/", "a.test").status, 200);
    }
    assert_healthy(&mut proxy);
}

#[test]
fn reload_certs_swaps_files_and_refuses_broken_ones() {
    let dir = private_certs();
    let backend = Backend::start("app");
    let cfg = tls_config(2, &certs_in(&dir), "", "", "");
    let mut proxy = Proxy::start_with(&cfg, &[("app", backend.addr_string())]);
    let addr = proxy.addr("web");
    let old = der_of(&dir.join("a-ec.pem"));
    let mut kept = TlsConn::connect(addr, "a.test");
    assert_eq!(kept.peer_leaf(), old);
    assert_eq!(kept.get("/", "a.test").status, 200);

    // New key and cert (new serial) for a.test, written over the old files.
    let gen = Certs { dir: dir.clone() };
    gen.leaf(
        "a-ec-new",
        "ec",
        "a.test",
        &["a.test", "*.w.test"],
        "ca",
        30,
    );
    std::fs::copy(dir.join("a-ec-new.key"), dir.join("a-ec.key")).unwrap();
    std::fs::copy(dir.join("a-ec-new.pem"), dir.join("a-ec.pem")).unwrap();
    let new = der_of(&dir.join("a-ec.pem"));
    assert_ne!(new, old);
    // Files alone change nothing.
    assert_eq!(
        TlsConn::connect(addr, "a.test").peer_leaf(),
        old,
        "cert changed before `reload certs`"
    );
    let (code, out) = proxy.ctl("reload certs");
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("error"), "{out}");
    for i in 0..8 {
        assert_eq!(
            TlsConn::connect(addr, "a.test").peer_leaf(),
            new,
            "handshake {i} after reload certs"
        );
    }
    assert_eq!(
        kept.get("/again", "a.test").status,
        200,
        "keep-alive TLS connection after reload certs"
    );

    // A broken file: `error:` and the current cert stays.
    std::fs::write(
        dir.join("a-ec.pem"),
        std::fs::read(dir.join("garbage.pem")).unwrap(),
    )
    .unwrap();
    let (code, out, err) = proxy.ctl_full("reload certs");
    assert!(
        out.lines().any(|l| l.starts_with("error:")),
        "reload certs with a garbage file: code {code}, {out:?} {err:?}"
    );
    assert!(
        out.contains("a-ec.pem"),
        "the error does not name the file: {out:?}"
    );
    for _ in 0..4 {
        assert_eq!(
            TlsConn::connect(addr, "a.test").peer_leaf(),
            new,
            "after a refused reload certs"
        );
    }
    // A key that no longer matches: refused too.
    std::fs::copy(dir.join("a-ec-new.pem"), dir.join("a-ec.pem")).unwrap();
    std::fs::copy(dir.join("b.key"), dir.join("a-ec.key")).unwrap();
    let (_, out) = proxy.ctl("reload certs");
    assert!(
        out.lines().any(|l| l.starts_with("error:")),
        "mismatched key accepted: {out:?}"
    );
    assert_eq!(TlsConn::connect(addr, "a.test").peer_leaf(), new);
    assert_eq!(
        TlsConn::connect(addr, "b.test").peer_leaf(),
        der_of(&dir.join("b.pem"))
    );
    assert_eq!(kept.get("/again", "a.test").status, 200);
    assert_healthy(&mut proxy);
}

#[test]
fn reload_keeps_open_tls_connections() {
    let mut s = start(2, "");
    let mut conns: Vec<TlsConn> = (0..6)
        .map(|_| TlsConn::connect(s.addr(), "a.test"))
        .collect();
    for c in &mut conns {
        assert_eq!(c.get("/", "a.test").status, 200);
    }
    let (code, out) = s.proxy.ctl("reload");
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(Duration::from_millis(300));
    for (i, c) in conns.iter_mut().enumerate() {
        let r = c.try_read_after_get("a.test");
        assert!(
            matches!(r, Ok(ref r) if r.status == 200),
            "connection {i} after reload: {r:?}"
        );
    }
    assert_healthy(&mut s.proxy);
}

#[test]
fn sigterm_lets_an_in_flight_tls_request_finish() {
    let mut s = start(1, "");
    let mut c = TlsConn::connect(s.addr(), "a.test");
    c.send(&req("GET", "/delay/1500", "a.test", &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    s.proxy.signal(libc::SIGTERM);
    let r = c.try_read(false);
    assert!(
        matches!(r, Ok(ref r) if r.status == 200),
        "in-flight request during SIGTERM: {r:?}"
    );
    assert!(
        s.proxy.wait_exit(Duration::from_secs(15)).is_some(),
        "did not stop"
    );
}

fn redirect_setup(redirect: &str) -> (Proxy, Backend) {
    let backend = Backend::start("app");
    let cfg = tls_config(
        1,
        &std_certs(),
        "",
        "",
        &format!(
            r#"
[[http]]
name = "plain"
listen = ["127.0.0.1:{{port:plain}}"]
default_pool = "app"
redirect_https = {redirect}
"#
        ),
    );
    let p = Proxy::start_with(&cfg, &[("app", backend.addr_string())]);
    (p, backend)
}

#[test]
fn redirect_https_to_a_port() {
    let (mut p, backend) = redirect_setup("{port:web}");
    let tls = p.port("web");
    let plain = p.addr("plain");
    let mut c = Conn::connect(plain);
    let cases: &[(&str, &str, Option<&str>, u16, String)] = &[
        (
            "GET",
            "/a/b?c=d&e",
            Some("a.test:8080"),
            301,
            format!("https://a.test:{tls}/a/b?c=d&e"),
        ),
        (
            "HEAD",
            "/",
            Some("a.test"),
            301,
            format!("https://a.test:{tls}/"),
        ),
        (
            "POST",
            "/form?x=1",
            Some("A.Test:80"),
            308,
            format!("https://A.Test:{tls}/form?x=1"),
        ),
        (
            "DELETE",
            "/thing",
            Some("a.test"),
            308,
            format!("https://a.test:{tls}/thing"),
        ),
        (
            "GET",
            "/v6",
            Some("[::1]:8080"),
            301,
            format!("https://[::1]:{tls}/v6"),
        ),
    ];
    for (method, target, host, status, loc) in cases {
        let mut bytes = format!("{method} {target} HTTP/1.1\r\n");
        if let Some(h) = host {
            bytes.push_str(&format!("Host: {h}\r\n"));
        }
        if *method == "POST" {
            bytes.push_str("Content-Length: 3\r\n\r\nabc");
        } else {
            bytes.push_str("\r\n");
        }
        c.send(bytes.as_bytes());
        let r = if *method == "HEAD" {
            c.read_head_response()
        } else {
            c.read_response()
        };
        assert_eq!(r.status, *status, "{method} {target}: {}", r.summary());
        assert_eq!(
            r.header("location"),
            Some(loc.as_str()),
            "{method} {target}: {}",
            r.summary()
        );
        if r.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            c = Conn::connect(plain);
        }
    }
    // No Host: 400.
    let mut c = Conn::connect(plain);
    c.send(b"GET /x HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 400, "{}", r.summary());
    assert_eq!(
        backend.requests(),
        0,
        "a redirect frontend reached the backend"
    );
    // The redirect target works.
    let (code, out, err) = curl_tls(tls, "a.test", "/a/b?c=d", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(curl_status(&out), 200);
    // curl -L from plain to TLS.
    let resolve_tls = format!("a.test:{tls}:127.0.0.1");
    let resolve_plain = format!("a.test:{}:127.0.0.1", plain.port());
    let url = format!("http://a.test:{}/follow?q=1", plain.port());
    let ca = certs().ca().display().to_string();
    let (code, out, err) = curl(&[
        "-L",
        "--cacert",
        &ca,
        "--resolve",
        &resolve_tls,
        "--resolve",
        &resolve_plain,
        "-D",
        "-",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        String::from_utf8_lossy(&out).contains("x-target: /follow?q=1")
            || String::from_utf8_lossy(&out).contains("X-Target: /follow?q=1"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_healthy(&mut p);
}

#[test]
fn redirect_https_true_means_443_without_a_port() {
    let (mut p, _b) = redirect_setup("true");
    let mut c = Conn::connect(p.addr("plain"));
    for (host, loc) in [
        ("a.test:8080", "https://a.test/x?y=1"),
        ("a.test", "https://a.test/x?y=1"),
    ] {
        c.send(&req("GET", "/x?y=1", host, &[], b""));
        let r = c.read_response();
        assert_eq!(r.status, 301);
        assert_eq!(
            r.header("location"),
            Some(loc),
            "Host {host}: {}",
            r.summary()
        );
        if r.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            c = Conn::connect(p.addr("plain"));
        }
    }
    assert_healthy(&mut p);
}

#[test]
fn handshake_timeout_and_hsts_apply_after_reload() {
    let mut s = start(1, r#"hsts = "max-age=10""#);
    let mut c = TlsConn::connect(s.addr(), "a.test");
    assert_eq!(
        c.get("/", "a.test").header("strict-transport-security"),
        Some("max-age=10")
    );
    let cfg = tls_config(
        1,
        &std_certs(),
        r#"hsts = "max-age=20", handshake_timeout = "1s""#,
        "",
        "",
    );
    s.proxy.rewrite(&cfg, &[("app", s.backend.addr_string())]);
    let (code, out) = s.proxy.ctl("reload");
    assert_eq!(code, 0, "{out}");
    let mut c = TlsConn::connect(s.addr(), "a.test");
    assert_eq!(
        c.get("/", "a.test").header("strict-transport-security"),
        Some("max-age=20")
    );
    let mut silent = tcp(s.addr());
    let t0 = Instant::now();
    let mut b = [0u8; 16];
    silent
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let _ = std::io::Read::read(&mut silent, &mut b);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "new handshake_timeout not applied: {:?}",
        t0.elapsed()
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn reload_certs_during_a_stream_of_handshakes() {
    let dir = private_certs();
    let backend = Backend::start("app");
    let cfg = tls_config(2, &certs_in(&dir), "", "", "");
    let mut proxy = Proxy::start_with(&cfg, &[("app", backend.addr_string())]);
    let addr = proxy.addr("web");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let sni = if n % 2 == 0 { "a.test" } else { "b.test" };
                    match TlsConn::try_connect_with(addr, sni, client_config(&["http/1.1"], &[])) {
                        Ok(mut c) => {
                            if let Err(e) = c.try_read_after_get(sni) {
                                errors.push(format!("worker {w} #{n}: request: {e}"));
                            }
                        }
                        Err(e) => errors.push(format!("worker {w} #{n}: handshake: {e}")),
                    }
                    n += 1;
                }
                (n, errors)
            })
        })
        .collect();
    let gen = Certs { dir: dir.clone() };
    for i in 0..8 {
        let name = format!("a-ec-r{i}");
        gen.leaf(&name, "ec", "a.test", &["a.test", "*.w.test"], "ca", 30);
        // Write key and cert together (rename), then reload.
        std::fs::copy(dir.join(format!("{name}.key")), dir.join("a-ec.key.tmp")).unwrap();
        std::fs::copy(dir.join(format!("{name}.pem")), dir.join("a-ec.pem.tmp")).unwrap();
        std::fs::rename(dir.join("a-ec.key.tmp"), dir.join("a-ec.key")).unwrap();
        std::fs::rename(dir.join("a-ec.pem.tmp"), dir.join("a-ec.pem")).unwrap();
        let (code, out) = proxy.ctl("reload certs");
        assert!(
            code == 0 && !out.contains("error"),
            "reload certs {i}: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    let mut errors = Vec::new();
    for w in workers {
        let (n, e) = w.join().unwrap();
        total += n;
        errors.extend(e);
    }
    assert!(
        errors.is_empty(),
        "{} of {total} failed: {errors:?}",
        errors.len()
    );
    assert!(total > 20, "only {total} handshakes");
    assert_eq!(
        TlsConn::connect(addr, "a.test").peer_leaf(),
        der_of(&dir.join("a-ec.pem"))
    );
    assert_healthy(&mut proxy);
}

#[test]
fn redirect_https_refuses_malformed_hosts() {
    let (mut p, backend) = redirect_setup("{port:web}");
    let tls = p.port("web");
    let mut wrong = Vec::new();
    for host in [
        "a.test/x",
        "a.test@evil.com",
        "a b",
        "a.test?x",
        "[::1",
        "[::1]x:80",
    ] {
        let mut c = Conn::connect(p.addr("plain"));
        c.send(format!("GET /p HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        let r = c.read_response();
        if r.status != 400 {
            wrong.push(format!(
                "Host {host:?}: {} Location {:?}",
                r.status,
                r.header("location")
            ));
        }
    }
    // Absolute-form targets: the target's authority wins over Host (RFC 9112 3.2.2).
    let mut c = Conn::connect(p.addr("plain"));
    c.send(b"GET http://other.test:8080/p?q HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let r = c.read_response();
    let want = format!("https://other.test:{tls}/p?q");
    if r.header("location") != Some(want.as_str()) {
        wrong.push(format!("absolute-form: {}", r.summary()));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(backend.requests(), 0);
    assert_healthy(&mut p);
}
