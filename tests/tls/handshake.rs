//! The handshake itself: certificate choice by SNI and by what the client can verify, versions,
//! ALPN, session resumption across shards and reloads, OCSP stapling, chains.

use crate::support::*;
use std::time::Duration;

fn leaf_for(s: &Setup, sni: &str) -> String {
    let c = TlsConn::connect(s.addr(), sni);
    which_cert(&c.peer_leaf())
}

#[test]
fn sni_picks_the_certificate_by_exact_and_wildcard_name() {
    let mut s = start(1, "");
    assert_eq!(leaf_for(&s, "a.test"), "a-ec");
    assert_eq!(leaf_for(&s, "b.test"), "b");
    assert_eq!(leaf_for(&s, "x.w.test"), "a-ec");
    // An unknown name gets the first certificate (the client then refuses it: name mismatch).
    let r = s_client(
        s.port(),
        &["-servername", "unknown.test"],
        b"",
        Duration::from_millis(100),
    );
    assert!(r.subject().contains("a.test"), "{}", r.all());
    // No SNI at all: the first certificate.
    let r = s_client(
        s.port(),
        &["-noservername"],
        b"",
        Duration::from_millis(100),
    );
    assert!(r.subject().contains("a.test"), "{}", r.all());
    // Uppercase SNI is the same name.
    let r = s_client(
        s.port(),
        &["-servername", "B.TEST"],
        b"",
        Duration::from_millis(100),
    );
    assert!(
        r.subject().contains("b.test"),
        "uppercase SNI B.TEST: {}",
        r.all()
    );
    let r = s_client(
        s.port(),
        &["-servername", "X.W.Test"],
        b"",
        Duration::from_millis(100),
    );
    assert!(
        r.subject().contains("a.test"),
        "uppercase SNI X.W.Test: {}",
        r.all()
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn wildcard_covers_exactly_one_label_and_the_first_cert_is_the_default() {
    // b first: the default is b; *.w.test must not cover w.test nor a.b.w.test.
    let certs = format!(
        r#"[ {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }} ]"#,
        cp("b.pem"),
        cp("b.key"),
        cp("a-ec.pem"),
        cp("a-ec.key")
    );
    let mut s = start_full(1, &certs, "", "", "");
    let subj = |sni: &str| {
        s_client(
            s.port(),
            &["-servername", sni],
            b"",
            Duration::from_millis(100),
        )
        .subject()
    };
    assert!(subj("x.w.test").contains("a.test"), "x.w.test");
    assert!(
        subj("w.test").contains("b.test"),
        "w.test must not match *.w.test"
    );
    assert!(
        subj("a.b.w.test").contains("b.test"),
        "a.b.w.test must not match *.w.test"
    );
    assert!(subj("nope.test").contains("b.test"), "unknown → first cert");
    let r = s_client(
        s.port(),
        &["-noservername"],
        b"",
        Duration::from_millis(100),
    );
    assert!(
        r.subject().contains("b.test"),
        "no SNI → first: {}",
        r.all()
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn sni_that_is_an_ip_address_gets_the_default_certificate() {
    let mut s = start(1, "");
    let r = s_client(
        s.port(),
        &["-servername", "127.0.0.1"],
        b"",
        Duration::from_millis(100),
    );
    // Either the default certificate, or a refused handshake; never a crash.
    if r.connected() {
        assert!(r.subject().contains("a.test"), "{}", r.all());
    }
    let r = s_client(
        s.port(),
        &["-servername", "a.test"],
        b"",
        Duration::from_millis(100),
    );
    assert!(r.connected(), "{}", r.all());
    assert_healthy(&mut s.proxy);
}

#[test]
fn ecdsa_for_ecdsa_clients_rsa_for_the_others() {
    let mut s = start(1, "");
    for (v, ecdsa, rsa) in [
        ("-tls1_3", "ECDSA+SHA256", "RSA-PSS+SHA256"),
        ("-tls1_2", "ECDSA+SHA256", "RSA+SHA256"),
    ] {
        for sni in ["a.test", "x.w.test"] {
            let r = s_client(
                s.port(),
                &[v, "-servername", sni, "-sigalgs", ecdsa],
                b"",
                Duration::from_millis(100),
            );
            assert!(r.connected(), "{v} {sni} {ecdsa}: {}", r.all());
            assert!(
                r.peer_sig_type().contains("ECDSA"),
                "{v} {sni} {ecdsa}: {}",
                r.peer_sig_type()
            );
            let r = s_client(
                s.port(),
                &[v, "-servername", sni, "-sigalgs", rsa],
                b"",
                Duration::from_millis(100),
            );
            assert!(r.connected(), "{v} {sni} {rsa}: {}", r.all());
            assert!(
                r.peer_sig_type().contains("RSA"),
                "{v} {sni} {rsa}: {}",
                r.peer_sig_type()
            );
        }
        // No SNI and RSA only: the default group (a-ec and a-rsa have the same names) → RSA.
        let r = s_client(
            s.port(),
            &[v, "-noservername", "-sigalgs", rsa],
            b"",
            Duration::from_millis(100),
        );
        assert!(r.connected(), "{v} no SNI {rsa}: {}", r.all());
        assert!(
            r.peer_sig_type().contains("RSA"),
            "{v} no SNI {rsa}: {}",
            r.all()
        );
    }
    // b.test has no RSA certificate: an RSA-only client either fails (counted) or gets some
    // certificate; never a crash.
    let before = failures(&s.proxy);
    let r = s_client(
        s.port(),
        &["-servername", "b.test", "-sigalgs", "RSA-PSS+SHA256"],
        b"",
        Duration::from_millis(100),
    );
    if !r.connected() {
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            failures(&s.proxy) > before,
            "failed handshake not counted: {}",
            r.all()
        );
    }
    assert_healthy(&mut s.proxy);
}

#[test]
fn versions_default_both_and_restricted() {
    let s = start(1, "");
    for v in ["1.2", "1.3"] {
        let c = TlsConn::try_connect_with(s.addr(), "a.test", client_config(&["http/1.1"], &[v]))
            .unwrap_or_else(|e| panic!("TLS {v} by default: {e}"));
        drop(c);
    }
    drop(s);
    let mut s = start(1, r#"versions = ["1.3"]"#);
    assert!(
        TlsConn::try_connect_with(s.addr(), "a.test", client_config(&["http/1.1"], &["1.3"]))
            .is_ok()
    );
    let e = TlsConn::try_connect_with(s.addr(), "a.test", client_config(&["http/1.1"], &["1.2"]));
    assert!(e.is_err(), "TLS 1.2 accepted with versions = [\"1.3\"]");
    wait_counter(
        &s.proxy,
        "tls.failed.incompatible",
        1,
        Duration::from_secs(3),
    );
    assert_healthy(&mut s.proxy);
    drop(s);
    let mut s = start(1, r#"versions = ["1.2"]"#);
    let c = TlsConn::try_connect_with(s.addr(), "a.test", default_client()).unwrap();
    assert_eq!(c.version(), Some(rustls::ProtocolVersion::TLSv1_2));
    let e = TlsConn::try_connect_with(s.addr(), "a.test", client_config(&["http/1.1"], &["1.3"]));
    assert!(e.is_err(), "TLS 1.3 accepted with versions = [\"1.2\"]");
    wait_counter(
        &s.proxy,
        "tls.failed.incompatible",
        1,
        Duration::from_secs(3),
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn alpn_http11_only() {
    let mut s = start(1, "");
    let mut c =
        TlsConn::try_connect_with(s.addr(), "a.test", client_config(&["h2", "http/1.1"], &[]))
            .unwrap();
    assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(c.get("/", "a.test").status, 200);
    let mut c = TlsConn::try_connect_with(s.addr(), "a.test", client_config(&[], &[])).unwrap();
    assert_eq!(c.alpn(), None);
    assert_eq!(c.get("/", "a.test").status, 200);
    let e = TlsConn::try_connect_with(s.addr(), "a.test", client_config(&["h2"], &[]));
    let msg = e.err().expect("a client offering only h2 was accepted");
    assert!(
        msg.to_lowercase().contains("noapplicationprotocol") || msg.contains("alert"),
        "{msg}"
    );
    // curl --http2 falls back to http/1.1.
    let (code, out, err) = curl_tls(s.port(), "a.test", "/", &["--http2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_healthy(&mut s.proxy);
}

/// Connects `n` times with one client config (its session cache), asking one request each
/// (so post-handshake tickets are read); returns how many handshakes resumed.
fn resume_many(
    s: &Setup,
    cfg: &std::sync::Arc<rustls::ClientConfig>,
    n: usize,
) -> (usize, Vec<usize>) {
    let mut resumed = 0;
    let mut not = Vec::new();
    for i in 0..n {
        let mut c = TlsConn::try_connect_with(s.addr(), "a.test", cfg.clone())
            .unwrap_or_else(|e| panic!("handshake {i}: {e}"));
        assert_eq!(c.get("/", "a.test").status, 200);
        if c.resumed() {
            resumed += 1;
        } else {
            not.push(i);
        }
    }
    (resumed, not)
}

#[test]
fn tls13_resumption_works_on_every_shard() {
    let mut s = start(2, "");
    let cfg = client_config(&["http/1.1"], &["1.3"]);
    let (resumed, not) = resume_many(&s, &cfg, 40);
    assert_eq!(
        not,
        vec![0],
        "only the first handshake may be full; {resumed} resumed"
    );
    wait_counter(
        &s.proxy,
        "tls.handshakes.resumed",
        39,
        Duration::from_secs(3),
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn tls12_resumption_works_on_every_shard() {
    let mut s = start(2, "");
    let cfg = client_config(&["http/1.1"], &["1.2"]);
    let (resumed, not) = resume_many(&s, &cfg, 40);
    assert_eq!(
        not,
        vec![0],
        "only the first handshake may be full; {resumed} resumed"
    );
    wait_counter(
        &s.proxy,
        "tls.handshakes.resumed",
        39,
        Duration::from_secs(3),
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn openssl_sess_out_sess_in_resumes() {
    let mut s = start(2, "");
    for v in ["-tls1_3", "-tls1_2"] {
        let sess = s.proxy.dir.join(format!("sess{v}"));
        let sess = sess.display().to_string();
        let r = s_client(
            s.port(),
            &[v, "-servername", "a.test", "-sess_out", &sess],
            b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
            Duration::from_millis(500),
        );
        assert!(r.connected(), "{}", r.all());
        for i in 0..6 {
            let r = s_client(
                s.port(),
                &[v, "-servername", "a.test", "-sess_in", &sess],
                b"",
                Duration::from_millis(200),
            );
            assert!(r.reused(), "{v} resumption {i} not reused: {}", r.all());
        }
    }
    assert_healthy(&mut s.proxy);
}

#[test]
fn tickets_survive_reload_and_reload_certs() {
    let mut s = start(2, "");
    for v in ["1.3", "1.2"] {
        let cfg = client_config(&["http/1.1"], &[v]);
        let (_, not) = resume_many(&s, &cfg, 3);
        assert_eq!(not, vec![0]);
        let (code, out) = s.proxy.ctl("reload");
        assert_eq!(code, 0, "reload: {out}");
        let (_, not) = resume_many(&s, &cfg, 6);
        assert!(
            not.is_empty(),
            "TLS {v}: handshakes {not:?} after `reload` were not resumed"
        );
        let (code, out) = s.proxy.ctl("reload certs");
        assert_eq!(code, 0, "reload certs: {out}");
        assert!(!out.starts_with("error"), "{out}");
        let (_, not) = resume_many(&s, &cfg, 6);
        assert!(
            not.is_empty(),
            "TLS {v}: handshakes {not:?} after `reload certs` were not resumed"
        );
    }
    assert_healthy(&mut s.proxy);
}

#[test]
fn ocsp_is_stapled_for_the_cert_that_has_one() {
    let mut s = start(1, "");
    for v in ["-tls1_3", "-tls1_2"] {
        let r = s_client(
            s.port(),
            &[v, "-servername", "b.test", "-status"],
            b"",
            Duration::from_millis(100),
        );
        assert!(
            r.all().contains("OCSP Response Status: successful"),
            "{v} b.test: {}",
            r.all()
        );
        assert!(
            r.all().contains("Cert Status: good"),
            "{v} b.test: {}",
            r.all()
        );
        let r = s_client(
            s.port(),
            &[v, "-servername", "a.test", "-status"],
            b"",
            Duration::from_millis(100),
        );
        assert!(r.connected(), "{}", r.all());
        assert!(
            !r.all().contains("OCSP Response Status"),
            "{v} a.test has no OCSP file: {}",
            r.all()
        );
    }
    assert_healthy(&mut s.proxy);
}

#[test]
fn a_chain_file_sends_the_intermediate() {
    let certs = format!(
        r#"[ {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }} ]"#,
        cp("a-ec.pem"),
        cp("a-ec.key"),
        cp("c-chain.pem"),
        cp("c.key")
    );
    let mut s = start_full(1, &certs, "", "", "");
    // The client trusts only the root: verification needs the intermediate from the server.
    let mut c = TlsConn::connect(s.addr(), "c.test");
    assert_eq!(c.peer_chain_len(), 2);
    assert_eq!(c.get("/", "c.test").status, 200);
    let (code, _, err) = curl_tls(s.port(), "c.test", "/", &[]);
    assert_eq!(code, 0, "curl c.test: {err}");
    assert_healthy(&mut s.proxy);
}

#[test]
fn expired_certificate_is_served_and_refused_by_verifying_clients() {
    let certs = format!(
        r#"[ {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }} ]"#,
        cp("a-ec.pem"),
        cp("a-ec.key"),
        cp("expired.pem"),
        cp("expired.key")
    );
    let mut s = start_full(1, &certs, "", "", "");
    let (code, _, err) = curl_tls(s.port(), "e.test", "/", &[]);
    assert_ne!(code, 0, "curl accepted an expired cert");
    assert!(
        err.to_lowercase().contains("expired") || err.contains("certificate"),
        "{err}"
    );
    wait_counter(&s.proxy, "tls.failed.peer_alert", 1, Duration::from_secs(3));
    let (code, out, err) = curl_tls(s.port(), "e.test", "/", &["-k"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(curl_status(&out), 200);
    assert_healthy(&mut s.proxy);
}

#[test]
fn stats_show_the_tls_mode_and_counters() {
    let mut s = start(1, "");
    let mut c = TlsConn::connect(s.addr(), "a.test");
    assert_eq!(c.get("/", "a.test").status, 200);
    let st = stats_of(&s.proxy);
    assert_eq!(
        st.get("tls.mode").map(String::as_str),
        Some("user space (rustls)"),
        "{st:?}"
    );
    assert!(st.contains_key("tls.kernel_tls"), "{st:?}");
    for k in ["full", "resumed"] {
        assert!(
            st.contains_key(&format!("tls.handshakes.{k}")),
            "tls.handshakes.{k} missing: {st:?}"
        );
    }
    for r in [
        "timeout",
        "plain_http",
        "closed",
        "peer_alert",
        "incompatible",
        "no_certificate",
        "bad_certificate",
        "bad_message",
    ] {
        assert!(
            st.contains_key(&format!("tls.failed.{r}")),
            "tls.failed.{r} missing: {st:?}"
        );
    }
    assert!(counter(&s.proxy, "tls.handshakes.full") >= 1);
    assert_healthy(&mut s.proxy);
}

#[test]
fn a_session_does_not_resume_under_another_name_or_another_process() {
    let mut s = start(1, "");
    let sess = s.proxy.dir.join("sess-a").display().to_string();
    let r = s_client(
        s.port(),
        &["-servername", "a.test", "-sess_out", &sess],
        b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Duration::from_millis(500),
    );
    assert!(r.connected(), "{}", r.all());
    let r = s_client(
        s.port(),
        &["-servername", "b.test", "-sess_in", &sess],
        b"",
        Duration::from_millis(200),
    );
    assert!(r.connected(), "{}", r.all());
    assert!(
        !r.reused(),
        "a.test's session resumed with SNI b.test: {}",
        r.all()
    );
    assert!(r.subject().contains("b.test"), "{}", r.all());
    // Another process has other ticket keys: a full handshake, not a failure.
    let mut other = start(1, "");
    let r = s_client(
        other.port(),
        &["-servername", "a.test", "-sess_in", &sess],
        b"",
        Duration::from_millis(200),
    );
    assert!(r.connected() && !r.reused(), "{}", r.all());
    assert_healthy(&mut s.proxy);
    assert_healthy(&mut other.proxy);
}
