//! Clients that fail the handshake or misbehave around it: plain HTTP on the TLS port, silent
//! and slow clients, garbage, alerts, renegotiation, abrupt closes, a crowd of handshakes.

use crate::common::*;
use crate::support::*;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// The bytes of a ClientHello for `sni` and the client state that produced it.
fn client_hello(sni: &str) -> (ClientConnection, Vec<u8>) {
    let mut conn = ClientConnection::new(
        default_client(),
        ServerName::try_from(sni.to_string()).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    (conn, out)
}

/// Reads until EOF/reset/timeout; (bytes, how long it took, ended by EOF or reset).
fn read_until_closed(s: &mut std::net::TcpStream, limit: Duration) -> (Vec<u8>, Duration, bool) {
    let t0 = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, t0.elapsed(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, t0.elapsed(), false)
            }
            Err(_) => return (got, t0.elapsed(), true),
        }
        if t0.elapsed() > limit {
            return (got, t0.elapsed(), false);
        }
    }
}

#[test]
fn plain_http_on_the_tls_port_gets_400_and_close() {
    let mut s = start(1, "");
    let before = counter(&s.proxy, "tls.failed.plain_http");
    let log_before = s.proxy.log().lines().count();
    for req_bytes in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        &b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc"[..],
    ] {
        let mut c = Conn::connect(s.addr());
        c.send(req_bytes);
        let r = c.read_response();
        assert_eq!(
            r.head.start_line,
            "HTTP/1.1 400 Bad Request",
            "{}",
            r.summary()
        );
        assert_eq!(
            r.body_str(),
            "The plain HTTP request was sent to the HTTPS port\n"
        );
        c.expect_closed(Duration::from_secs(3));
    }
    wait_counter(
        &s.proxy,
        "tls.failed.plain_http",
        before + 2,
        Duration::from_secs(3),
    );
    // The request never reached the backend.
    assert_eq!(s.backend.requests(), 0);
    // Not logged per connection.
    for _ in 0..20 {
        let mut c = Conn::connect(s.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let _ = c.read_until_end(Duration::from_secs(3));
    }
    wait_counter(
        &s.proxy,
        "tls.failed.plain_http",
        before + 22,
        Duration::from_secs(3),
    );
    let grown = s.proxy.log().lines().count() - log_before;
    assert!(
        grown < 5,
        "{grown} log lines for 22 plain-HTTP clients:\n{}",
        s.proxy.log()
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn silent_and_half_hello_clients_are_closed_after_handshake_timeout() {
    let mut s = start(2, r#"handshake_timeout = "1s""#);
    let before = counter(&s.proxy, "tls.failed.timeout");
    let (_, hello) = client_hello("a.test");
    let mut silent = tcp(s.addr());
    let mut half = tcp(s.addr());
    half.write_all(&hello[..hello.len() / 2]).unwrap();
    let mut header_only = tcp(s.addr());
    header_only.write_all(&hello[..5]).unwrap();
    for (what, sock) in [
        ("silent", &mut silent),
        ("half hello", &mut half),
        ("record header only", &mut header_only),
    ] {
        let (_, took, closed) = read_until_closed(sock, Duration::from_secs(6));
        assert!(closed, "{what}: still open after {took:?}");
        assert!(
            took < Duration::from_secs(4),
            "{what}: closed only after {took:?}"
        );
    }
    // Bytes trickling in do not extend the deadline forever.
    let mut slow = tcp(s.addr());
    let t0 = Instant::now();
    let mut closed_at = None;
    for b in &hello {
        if slow.write_all(&[*b]).is_err() {
            closed_at = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if t0.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    if closed_at.is_none() {
        let (_, _, closed) = read_until_closed(&mut slow, Duration::from_millis(500));
        assert!(
            closed,
            "a ClientHello trickled at 10 B/s kept the handshake open for {:?}",
            t0.elapsed()
        );
    }
    wait_counter(
        &s.proxy,
        "tls.failed.timeout",
        before + 4,
        Duration::from_secs(3),
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn default_handshake_timeout_is_ten_seconds() {
    let mut s = start(1, "");
    let mut silent = tcp(s.addr());
    let (_, took, closed) = read_until_closed(&mut silent, Duration::from_secs(14));
    assert!(closed, "still open after {took:?}");
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(13),
        "closed after {took:?}"
    );
    wait_counter(&s.proxy, "tls.failed.timeout", 1, Duration::from_secs(3));
    assert_healthy(&mut s.proxy);
}

#[test]
fn failures_are_counted_by_reason() {
    let mut s = start(1, "");
    // closed: half a ClientHello, then FIN.
    let before = counter(&s.proxy, "tls.failed.closed");
    let (_, hello) = client_hello("a.test");
    let mut c = tcp(s.addr());
    c.write_all(&hello[..20]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let _ = read_until_closed(&mut c, Duration::from_secs(3));
    wait_counter(
        &s.proxy,
        "tls.failed.closed",
        before + 1,
        Duration::from_secs(3),
    );

    // bad_message: a handshake record holding garbage.
    let before = counter(&s.proxy, "tls.failed.bad_message");
    let mut c = tcp(s.addr());
    c.write_all(b"\x16\x03\x01\x00\x10ABCDEFGHIJKLMNOP")
        .unwrap();
    let (_, _, closed) = read_until_closed(&mut c, Duration::from_secs(3));
    assert!(closed, "garbage handshake record: connection left open");
    wait_counter(
        &s.proxy,
        "tls.failed.bad_message",
        before + 1,
        Duration::from_secs(3),
    );

    // bad_message too: a record that is not TLS at all and not HTTP either (binary junk).
    let mut c = tcp(s.addr());
    c.write_all(&[0x01, 0x02, 0x03, 0x04, 0xff, 0xfe, 0x00, 0x00, 0x10, 0x20])
        .unwrap();
    let (_, _, closed) = read_until_closed(&mut c, Duration::from_secs(3));
    assert!(closed, "binary junk: connection left open");

    // peer_alert: a client that does not trust the CA.
    let before = counter(&s.proxy, "tls.failed.peer_alert");
    let resolve = format!("a.test:{}:127.0.0.1", s.port());
    let url = format!("https://a.test:{}/", s.port());
    let (code, _, _) = curl(&["--resolve", &resolve, &url]);
    assert_ne!(code, 0);
    wait_counter(
        &s.proxy,
        "tls.failed.peer_alert",
        before + 1,
        Duration::from_secs(3),
    );

    // incompatible: only h2.
    let before = counter(&s.proxy, "tls.failed.incompatible");
    assert!(TlsConn::try_connect_with(s.addr(), "a.test", client_config(&["h2"], &[])).is_err());
    wait_counter(
        &s.proxy,
        "tls.failed.incompatible",
        before + 1,
        Duration::from_secs(3),
    );

    // None of those is a completed handshake.
    assert_eq!(
        counter(&s.proxy, "tls.handshakes.full"),
        0,
        "failed handshakes counted as full"
    );
    let mut ok = TlsConn::connect(s.addr(), "a.test");
    assert_eq!(ok.get("/", "a.test").status, 200);
    wait_counter(&s.proxy, "tls.handshakes.full", 1, Duration::from_secs(3));
    let log = s.proxy.log();
    assert!(
        !log.to_lowercase().contains("alert") && !log.to_lowercase().contains("handshake"),
        "handshake failures logged at the default level:\n{log}"
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn client_hello_in_one_byte_writes() {
    let mut s = start(2, "");
    for sni in ["a.test", "b.test"] {
        let (conn, hello) = client_hello(sni);
        let mut sock = tcp(s.addr());
        assert_eq!(
            client::dribble(&mut sock, &hello, Duration::from_millis(1)),
            hello.len()
        );
        let mut c = TlsConn::resume_handshake(conn, sock).unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(c.get("/", sni).status, 200);
    }
    assert_healthy(&mut s.proxy);
}

#[test]
fn two_hundred_concurrent_handshakes_all_succeed() {
    let mut s = start(2, "");
    let addr = s.addr();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(200));
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let cfg = if i % 2 == 0 {
                    default_client()
                } else {
                    client_config(&["http/1.1"], &["1.2"])
                };
                let sni = if i % 3 == 0 { "b.test" } else { "a.test" };
                barrier.wait();
                let mut c =
                    TlsConn::try_connect_with(addr, sni, cfg).map_err(|e| format!("{i}: {e}"))?;
                let r = c.try_read_after_get(sni).map_err(|e| format!("{i}: {e}"))?;
                if r.status != 200 {
                    return Err(format!("{i}: {}", r.summary()));
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap().err())
        .collect();
    assert!(
        errors.is_empty(),
        "{} of 200 failed: {errors:?}",
        errors.len()
    );
    std::thread::sleep(Duration::from_millis(200));
    let done =
        counter(&s.proxy, "tls.handshakes.full") + counter(&s.proxy, "tls.handshakes.resumed");
    assert!(done >= 200, "{done} handshakes counted for 200");
    assert_healthy(&mut s.proxy);
}

#[test]
fn renegotiation_is_refused_without_harm() {
    let mut s = start(1, "");
    // openssl s_client: `R` asks for a renegotiation. rustls refuses it with a
    // no_renegotiation warning alert; the client must hear it (and give up), not hang.
    let r = s_client_limit(
        s.port(),
        &["-tls1_2", "-servername", "a.test", "-msg"],
        b"R\n",
        Duration::from_millis(500),
        Duration::from_secs(10),
    );
    assert!(r.connected(), "{}", r.all());
    assert!(
        r.all().contains("no_renegotiation") || r.all().contains("handshake_failure"),
        "no refusal alert seen: {}",
        r.all()
    );
    // A plaintext ClientHello inside an established session: the connection ends.
    let mut c =
        TlsConn::try_connect_with(s.addr(), "a.test", client_config(&["http/1.1"], &["1.2"]))
            .unwrap();
    assert_eq!(c.get("/", "a.test").status, 200);
    let (_, hello) = client_hello("a.test");
    let _ = c.tls.sock.write_all(&hello);
    let mut sock = c.tls.sock.try_clone().unwrap();
    let (_, took, closed) = read_until_closed(&mut sock, Duration::from_secs(5));
    assert!(
        closed,
        "a plaintext ClientHello inside a session left it open for {took:?}"
    );
    let mut ok = TlsConn::connect(s.addr(), "a.test");
    assert_eq!(ok.get("/", "a.test").status, 200);
    assert_healthy(&mut s.proxy);
}

#[test]
fn tls13_key_update_then_requests_still_work() {
    let mut s = start(1, "");
    // `K`: a KeyUpdate asking the server to update its keys too; then a request.
    let r = s_client_steps(
        s.port(),
        &["-tls1_3", "-servername", "a.test", "-msg"],
        &[
            b"K\n",
            b"GET /after-key-update HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        ],
        Duration::from_millis(800),
        Duration::from_secs(10),
    );
    assert!(r.all().contains("HTTP/1.1 200 OK"), "{}", r.all());
    assert!(
        r.all()
            .contains("<<< TLS 1.3, Handshake [length 0005], KeyUpdate"),
        "the server did not update its keys: {}",
        r.all()
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn garbage_after_the_handshake_closes_that_connection_only() {
    let mut s = start(1, "");
    let mut other = TlsConn::connect(s.addr(), "a.test");
    assert_eq!(other.get("/", "a.test").status, 200);
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        &b"\x17\x03\x03\x00\x20AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"[..],
        &b"\x17\x03\x03\xff\xff"[..],
    ] {
        let mut c = TlsConn::connect(s.addr(), "a.test");
        assert_eq!(c.get("/", "a.test").status, 200);
        c.tls.sock.write_all(junk).unwrap();
        let mut sock = c.tls.sock.try_clone().unwrap();
        let (_, took, closed) = read_until_closed(&mut sock, Duration::from_secs(5));
        assert!(
            closed,
            "junk {junk:?} after the handshake: still open after {took:?}"
        );
    }
    assert_eq!(other.get("/", "a.test").status, 200);
    assert_healthy(&mut s.proxy);
}

#[test]
fn client_vanishing_mid_response_without_close_notify() {
    let mut s = start(2, "");
    for i in 0..10 {
        let mut c = TlsConn::connect(s.addr(), "a.test");
        c.send(&req("GET", "/download/20971520", "a.test", &[], b""));
        let mut buf = [0u8; 65536];
        let _ = c.tls.read(&mut buf).unwrap();
        if i % 2 == 0 {
            c.tls.sock.shutdown(Shutdown::Both).unwrap();
        } else {
            // SO_LINGER 0: a reset.
            let sock = socket2::SockRef::from(&c.tls.sock);
            sock.set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(c);
    }
    let mut ok = TlsConn::connect(s.addr(), "a.test");
    let r = ok.get("/download/1000", "a.test");
    assert_eq!(r.body, pattern(0, 1000));
    // The abandoned connections are let go.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = counter(&s.proxy, "connections.active");
        if open <= 1 || Instant::now() > deadline {
            assert!(
                open <= 1,
                "connections.active = {open} after 10 clients vanished"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_healthy(&mut s.proxy);
}

#[test]
fn close_notify_from_the_client_is_answered_with_close_notify() {
    let mut s = start(1, "");
    let mut c = TlsConn::connect(s.addr(), "a.test");
    assert_eq!(c.get("/", "a.test").status, 200);
    c.tls.conn.send_close_notify();
    c.tls.flush().unwrap();
    let rest = c.read_to_end();
    assert!(
        matches!(rest, Ok(ref b) if b.is_empty()),
        "after the client's close_notify the server closed without its own (RFC 8446 6.1): {rest:?}"
    );
    assert_healthy(&mut s.proxy);
}

#[test]
fn server_side_closes_end_with_close_notify() {
    let mut s = start(1, "");
    // Connection: close from the client.
    let mut c = TlsConn::connect(s.addr(), "a.test");
    c.send(&req("GET", "/", "a.test", &[("Connection", "close")], b""));
    assert_eq!(c.read_response().status, 200);
    let rest = c.read_to_end();
    assert!(
        matches!(rest, Ok(ref b) if b.is_empty()),
        "after Connection: close: {rest:?}"
    );
    // A body delimited by the close: only close_notify tells it from a truncation.
    let mut c = TlsConn::connect(s.addr(), "a.test");
    c.send(&req("GET", "/close/100000", "a.test", &[], b""));
    let r = c.try_read(false);
    match r {
        Ok(r) => {
            assert_eq!(r.framing, client::Framing::Close);
            assert_eq!(r.body, pattern(0, 100000));
        }
        Err(e) => panic!("close-delimited body over TLS: {e}"),
    }
    assert_healthy(&mut s.proxy);
}

// A client's KeyUpdate with update_requested is answered by rustls before our next
// application data record, which RFC 8446 §4.6.3 allows ("prior to sending its next
// Application Data record"): `tls13_key_update_then_requests_still_work` covers it.

#[test]
fn client_hello_fragmented_across_records() {
    let mut s = start(2, "");
    for piece in [1usize, 7, 100] {
        let (conn, hello) = client_hello("b.test");
        assert_eq!(hello[0], 0x16);
        let body = &hello[5..];
        let mut out = Vec::new();
        for chunk in body.chunks(piece) {
            out.extend_from_slice(&[0x16, hello[1], hello[2]]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        let mut sock = tcp(s.addr());
        sock.write_all(&out).unwrap();
        let mut c = TlsConn::resume_handshake(conn, sock)
            .unwrap_or_else(|e| panic!("ClientHello in records of {piece} bytes: {e}"));
        assert_eq!(
            which_cert(&c.peer_leaf()),
            "b",
            "SNI lost with {piece}-byte records"
        );
        assert_eq!(c.get("/", "b.test").status, 200);
    }
    assert_healthy(&mut s.proxy);
}

#[test]
fn request_sent_together_with_the_client_finished() {
    let mut s = start(2, "");
    for v in ["1.3", "1.2"] {
        let cfg = client_config(&["http/1.1"], &[v]);
        let mut conn = ClientConnection::new(cfg, ServerName::try_from("a.test").unwrap()).unwrap();
        // Written before the handshake ends: rustls sends it right behind its Finished, in
        // the same flight.
        conn.writer()
            .write_all(&req("GET", "/with-finished", "a.test", &[], b""))
            .unwrap();
        let sock = tcp(s.addr());
        let mut c =
            TlsConn::resume_handshake(conn, sock).unwrap_or_else(|e| panic!("TLS {v}: {e}"));
        c.set_read_timeout(Duration::from_secs(5));
        let r = c.try_read(false);
        assert!(
            matches!(r, Ok(ref r) if r.header("x-target") == Some("/with-finished")),
            "TLS {v}: request sent with the Finished: {r:?}"
        );
    }
    assert_healthy(&mut s.proxy);
}
