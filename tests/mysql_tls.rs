//! MySQL over TLS through the real `shardgate` binary against a real MariaDB that speaks TLS
//! itself: every combination of a TLS or plain client with a TLS or plain server side, with the
//! `mariadb` CLI (`--ssl`, verifying shardgate's certificate) and `mysql_async` requiring TLS.
//! Checked each time: the client's side really is TLS (the CLI's `status`), the server's side
//! is what the pool says (`Ssl_cipher` as the server sees the session), results are right, and
//! per-user accounting is the same as in plain (no session left unparsed).

mod common;
mod mysql_support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Proxy;
use mysql_async::prelude::*;
use mysql_support::*;

/// A CA, a certificate for shardgate (127.0.0.1 and db.test) and one for MariaDB (db.internal).
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=shardgate test CA",
    ]);
    for (name, san) in [
        ("proxy", "IP:127.0.0.1,DNS:db.test"),
        ("server", "DNS:db.internal"),
    ] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName={san}\n"),
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

struct Setup {
    db: MariaDb,
    certs: std::path::PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    let certs = common::proxy::temp_dir(&format!("mysql-tls-{test}"));
    make_certs(&certs);
    let dir = certs.to_str().unwrap().to_string();
    let db = MariaDb::start_env(test, 1, &[("MARIADB_SSL_DIR", &dir)])?;
    Some(Setup { db, certs })
}

/// A proxy with frontend "db" (TLS towards clients when `front_tls`) in front of the server
/// (TLS towards it when `back_tls`).
fn proxy(s: &Setup, front_tls: bool, back_tls: bool, extra: &str) -> Proxy {
    let c = s.certs.display();
    let front = if front_tls {
        format!("tls = {{ certs = [ {{ cert = \"{c}/proxy.pem\", key = \"{c}/proxy.key\" }} ], handshake_timeout = \"2s\" }}\n{extra}")
    } else {
        extra.to_string()
    };
    let back = if back_tls {
        format!("tls = {{ ca = \"{c}/ca.pem\", sni = \"db.internal\" }}")
    } else {
        String::new()
    };
    let p = Proxy::start(&config(2, &s.db.ports, &front, &back));
    assert!(
        wait_until(Duration::from_secs(10), || traffic(&p).front("active") == 0),
        "start-up probe session still open"
    );
    p
}

/// The `mariadb` CLI through the proxy: verify shardgate's certificate when `tls`.
fn cli_run(
    s: &Setup,
    port: u16,
    user: &str,
    pass: &str,
    tls: bool,
    sql: &str,
) -> std::process::Output {
    let ca = format!("--ssl-ca={}/ca.pem", s.certs.display());
    let args: Vec<&str> = if tls {
        vec!["--ssl", &ca, "--ssl-verify-server-cert", "-e", sql]
    } else {
        vec!["--ssl=0", "-e", sql]
    };
    cli(port, user, pass, None, &args, None)
}

const SQL: &str = "status; select 40+2 as answer; show session status like 'Ssl_cipher';";

/// What one CLI session showed: (client side used TLS, the server saw TLS, the answer).
fn run_case(s: &Setup, p: &Proxy, tls: bool) -> (bool, bool, String) {
    let out = cli_run(s, p.port("db"), "sg_a", "pw_a", tls, SQL);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "client failed: {}\n{text}",
        stderr(&out)
    );
    let client_tls = text
        .lines()
        .any(|l| l.starts_with("SSL:") && l.contains("Cipher in use"));
    let server_tls = text
        .lines()
        .find(|l| l.starts_with("Ssl_cipher"))
        .map(|l| l.split('\t').nth(1).is_some_and(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| panic!("no Ssl_cipher row in\n{text}"));
    let answer = text
        .lines()
        .skip_while(|l| *l != "answer")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (client_tls, server_tls, answer)
}

#[test]
fn every_combination_of_client_and_server_tls_works_and_is_counted() {
    let Some(s) = setup("every_combination_of_client_and_server_tls_works_and_is_counted") else {
        return;
    };
    for back_tls in [false, true] {
        let p = proxy(&s, true, back_tls, "");
        // Each session's commands as counted: TLS on a side must change nothing.
        let mut counted = Vec::new();
        for client_tls in [true, false] {
            let before = traffic(&p).users.get("sg_a").map_or(0, |u| u.cmd("query"));
            let (c, srv, answer) = run_case(&s, &p, client_tls);
            assert_eq!(
                c, client_tls,
                "client side TLS (client {client_tls}, server {back_tls})"
            );
            assert_eq!(
                srv, back_tls,
                "server side TLS (client {client_tls}, server {back_tls})"
            );
            assert_eq!(answer, "42");
            counted.push(traffic(&p).user("sg_a").cmd("query") - before);
        }
        assert_eq!(
            counted[0], counted[1],
            "queries counted with and without TLS"
        );
        assert!(counted[0] >= 2, "{counted:?}");
        let t = traffic(&p);
        let u = t.user("sg_a");
        assert_eq!(u.connections, 2, "{}", t.text);
        assert_eq!(u.unparsed, 0, "{}", t.text);
        assert_eq!(u.login_failures, 0, "{}", t.text);
        let (_, stats) = p.ctl("show stats");
        assert!(stats.contains("tls.handshakes.full: 1"), "{stats}");
        assert!(stats.contains("connections.panicked: 0"), "{stats}");
    }
    // A plain frontend in front of a TLS server too.
    let p = proxy(&s, false, true, "");
    let (c, srv, answer) = run_case(&s, &p, false);
    assert!(!c && srv);
    assert_eq!(answer, "42");
    assert_eq!(traffic(&p).user("sg_a").unparsed, 0);
}

#[test]
fn wrong_password_over_tls_is_refused_cleanly_and_counted() {
    let Some(s) = setup("wrong_password_over_tls_is_refused_cleanly_and_counted") else {
        return;
    };
    for back_tls in [false, true] {
        let p = proxy(&s, true, back_tls, "");
        let out = cli_run(&s, p.port("db"), "sg_b", "nope", true, "select 1");
        assert!(!out.status.success());
        assert!(stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
        // The next login on the same proxy works.
        let (_, _, answer) = run_case(&s, &p, true);
        assert_eq!(answer, "42");
        assert_eq!(traffic(&p).front("login_failed"), 1);
    }
}

#[test]
fn mysql_async_requiring_tls_runs_text_prepared_and_change_user() {
    let Some(s) = setup("mysql_async_requiring_tls_runs_text_prepared_and_change_user") else {
        return;
    };
    for back_tls in [false, true] {
        let p = proxy(&s, true, back_tls, "");
        let ssl =
            mysql_async::SslOpts::default().with_root_certs(vec![s.certs.join("ca.pem").into()]);
        let opts: mysql_async::Opts =
            mysql_async::OptsBuilder::from_opts(opts(p.port("db"), "sg_a", "pw_a", Some("app")))
                .ssl_opts(Some(ssl))
                .into();
        block_on(Duration::from_secs(60), async move {
            let mut conn = mysql_async::Conn::new(opts)
                .await
                .expect("connect over TLS");
            let v: Option<i64> = conn.query_first("select 6*7").await.unwrap();
            assert_eq!(v, Some(42));
            // A 3 MiB value through TLS on both sides, byte-exact.
            let big = "x".repeat(3 << 20);
            let back: Option<String> = conn.exec_first("select ?", (big.clone(),)).await.unwrap();
            assert_eq!(back.as_deref(), Some(big.as_str()));
            for i in 0..50i64 {
                let r: Option<i64> = conn.exec_first("select ? + 1", (i,)).await.unwrap();
                assert_eq!(r, Some(i + 1));
            }
            conn.change_user(
                mysql_async::ChangeUserOpts::default()
                    .with_user(Some("sg_b".into()))
                    .with_pass(Some("pw_b".into())),
            )
            .await
            .expect("COM_CHANGE_USER over TLS");
            let who: Option<String> = conn.query_first("select current_user()").await.unwrap();
            assert!(who.unwrap().starts_with("sg_b@"));
            conn.disconnect().await.unwrap();
        });
        let t = traffic(&p);
        assert_eq!(t.user("sg_a").unparsed, 0, "{}", t.text);
        assert!(t.user("sg_b").requests >= 1, "{}", t.text);
    }
}

/// Raw bytes: read the greeting, return its capability flags.
fn greeting_caps(c: &mut TcpStream) -> u32 {
    let mut head = [0u8; 4];
    c.read_exact(&mut head).unwrap();
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut p = vec![0u8; len];
    c.read_exact(&mut p).unwrap();
    let nul = p[1..].iter().position(|&b| b == 0).unwrap() + 1;
    let at = nul + 1 + 4 + 8 + 1;
    let lo = u16::from_le_bytes([p[at], p[at + 1]]) as u32;
    let hi = u16::from_le_bytes([p[at + 5], p[at + 6]]) as u32;
    lo | hi << 16
}

fn ssl_request() -> Vec<u8> {
    // CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_SSL | CLIENT_PLUGIN_AUTH
    let caps: u32 = 0x200 | 0x8000 | 0x800 | 0x80000;
    let mut p = vec![32, 0, 0, 1];
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(33);
    p.extend_from_slice(&[0u8; 23]);
    p
}

#[test]
fn greeting_offers_ssl_only_with_tls_and_bad_handshakes_close_and_count() {
    let Some(s) = setup("greeting_offers_ssl_only_with_tls_and_bad_handshakes_close_and_count")
    else {
        return;
    };
    let plain = proxy(&s, false, false, "");
    let mut c = TcpStream::connect(plain.addr("db")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        greeting_caps(&mut c) & 0x800,
        0,
        "a plain frontend must hide CLIENT_SSL"
    );
    drop(plain);

    let p = proxy(&s, true, false, "");
    // SSLRequest, then garbage instead of a ClientHello: closed, counted, nothing else hurt.
    let mut c = TcpStream::connect(p.addr("db")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_ne!(
        greeting_caps(&mut c) & 0x800,
        0,
        "a TLS frontend offers CLIENT_SSL"
    );
    c.write_all(&ssl_request()).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(
        rest.len() < 16,
        "expected a close (maybe an alert), got {rest:?}"
    );
    // SSLRequest, then silence: closed after handshake_timeout (2 s).
    let mut c = TcpStream::connect(p.addr("db")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    greeting_caps(&mut c);
    c.write_all(&ssl_request()).unwrap();
    let started = std::time::Instant::now();
    let _ = c.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "not closed by handshake_timeout"
    );
    // Counted just after the close the client saw: give the shard a moment.
    let counted = || {
        let (_, stats) = p.ctl("show stats");
        stats.contains("tls.failed.bad_message: 1") && stats.contains("tls.failed.timeout: 1")
    };
    assert!(
        wait_until(Duration::from_secs(5), counted),
        "{}",
        p.ctl("show stats").1
    );
    let (_, stats) = p.ctl("show stats");
    assert!(stats.contains("connections.panicked: 0"), "{stats}");
    let (_, _, answer) = run_case(&s, &p, true);
    assert_eq!(answer, "42");
}

#[test]
fn proxy_header_then_tls_login_works() {
    let Some(s) = setup("proxy_header_then_tls_login_works") else {
        return;
    };
    let p = proxy(
        &s,
        true,
        true,
        "accept_proxy = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    // The CLI cannot send a PROXY header: a small forwarder adds one, then relays.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let front = l.local_addr().unwrap();
    let target = p.addr("db");
    std::thread::spawn(move || {
        if let Ok((client, _)) = l.accept() {
            let mut up = TcpStream::connect(target).unwrap();
            up.write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 3306\r\n")
                .unwrap();
            let (mut a, mut b) = (client.try_clone().unwrap(), up.try_clone().unwrap());
            let t = std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
            let (mut c2, mut u2) = (client, up);
            let _ = std::io::copy(&mut u2, &mut c2);
            let _ = c2.shutdown(std::net::Shutdown::Write);
            let _ = t.join();
        }
    });
    let ca = format!("--ssl-ca={}/ca.pem", s.certs.display());
    let out = cli(
        front.port(),
        "sg_a",
        "pw_a",
        None,
        &["--ssl", &ca, "-e", "status; select 40+2 as answer"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Cipher in use"), "{text}");
    assert!(text.contains("\n42\n"), "{text}");
    let (_, stats) = p.ctl("show stats");
    assert!(stats.contains("proxy_protocol.accepted: 1"), "{stats}");
}
