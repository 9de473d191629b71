//! PROXY protocol in (`accept_proxy` + `trusted_proxies` on a frontend) and out (`send_proxy`
//! on a server), black-box against the real binary. Headers are built byte by byte from
//! HAProxy's `proxy-protocol.txt` (tests/pp_support), never with shardgate's own writer.
//!
//! Where the client address shows: X-Forwarded-For, the access log, `balance = "hash"` by
//! source, `purge_from`, and the header shardgate itself sends upstream (HTTP and MySQL, the
//! latter checked by a real MariaDB with `proxy_protocol_networks`).

mod common;
mod mysql_support;
mod pp_support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::observe::{stat, stats};
use common::proxy::BIN;
use common::{daemon, req, Backend, Proxy};
use pp_support::*;

const HOST: &str = "pp.test";

/// One `[[http]]` frontend `web` with accept_proxy trusting 127.0.0.1 only, default pool `app`.
fn accept_proxy_config(front_extra: &str, pool: &str) -> String {
    daemon(2)
        + &format!(
            r#"
[admin]
listen = "127.0.0.1:{{port:admin}}"

[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"
accept_proxy = true
trusted_proxies = ["127.0.0.1/32"]
{front_extra}

[pool.app]
{pool}
"#
        )
}

/// Sends `bytes` on a fresh connection from 127.0.0.1 and reads one response.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<common::Response, String> {
    let mut c = common::Conn::connect(addr);
    c.send(bytes);
    c.try_read_response()
}

fn with_req(header: &[u8], path: &str) -> Vec<u8> {
    let mut out = header.to_vec();
    out.extend(req("GET", path, HOST, &[], b""));
    out
}

/// The X-Forwarded-For the backend got for the request to `path`.
fn xff_for(b: &Backend, path: &str) -> String {
    let heads = b.heads();
    let h = heads
        .iter()
        .find(|h| h.start_line.split(' ').nth(1) == Some(path))
        .unwrap_or_else(|| panic!("backend never got {path}"));
    h.header("x-forwarded-for").unwrap_or("<none>").to_string()
}

/// `GET /metrics` on the admin listener: the value of `shardgate_proxy_protocol_total{result}`.
fn prom_result(p: &Proxy, result: &str) -> f64 {
    let mut c = common::Conn::connect(p.addr("admin"));
    let r = c.get("/metrics", &p.addr("admin").to_string());
    assert_eq!(r.status, 200, "{}", r.summary());
    let text = r.body_str();
    let want = format!("result=\"{result}\"");
    text.lines()
        .filter(|l| l.starts_with("shardgate_proxy_protocol_total{") && l.contains(&want))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum::<f64>()
        + if text.contains("shardgate_proxy_protocol_total") {
            0.0
        } else {
            panic!("no shardgate_proxy_protocol_total in /metrics:\n{text}")
        }
}

/// Every header form of the spec, whole, split one byte per write, and followed in the same
/// write by the request (and by two pipelined requests): each request is answered, and the
/// address the header names is the client address in X-Forwarded-For and the access log;
/// LOCAL, UNKNOWN and AF_UNSPEC keep the connection's own address (127.0.0.1).
#[test]
fn every_header_form_sets_the_client_address() {
    let b = Backend::start("app");
    let dir = common::proxy::temp_dir("pp-log");
    let log = dir.join("access.log");
    let p = Proxy::start_with(
        &accept_proxy_config(
            &format!(
                "access_log = {{ path = \"{}\", format = \"combined\" }}",
                log.display()
            ),
            "servers = [ { name = \"app\", addr = \"{app}\" } ]",
        ),
        &[("app", b.addr_string())],
    );
    let web = p.addr("web");
    let dst4 = sa("198.51.100.1:80");
    let dst6 = sa("[2001:db8::1]:443");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("v1-tcp4", v1(sa("203.0.113.7:40001"), dst4), "203.0.113.7"),
        (
            "v1-tcp6",
            v1(sa("[2001:db8::7]:40002"), dst6),
            "2001:db8::7",
        ),
        (
            "v2-tcp4-tlvs",
            v2(
                sa("203.0.113.8:40003"),
                dst4,
                &[
                    (0x01, b"http/1.1"),     // PP2_TYPE_ALPN
                    (0x02, b"www.pp.test"),  // PP2_TYPE_AUTHORITY
                    (0x04, &[0u8; 37]),      // PP2_TYPE_NOOP
                    (0xE0, b"\x00\x01\x02"), // custom range
                ],
            ),
            "203.0.113.8",
        ),
        (
            "v2-tcp6",
            v2(sa("[2001:db8::8]:40004"), dst6, &[]),
            "2001:db8::8",
        ),
        ("v2-local", v2_local(), "127.0.0.1"),
        ("v1-unknown", v1_unknown(), "127.0.0.1"),
        // UNKNOWN may carry addresses after it; they must be ignored (spec 2.1).
        (
            "v1-unknown-with-addrs",
            b"PROXY UNKNOWN 203.0.113.99 198.51.100.1 1 2\r\n".to_vec(),
            "127.0.0.1",
        ),
        // v2 PROXY command with AF_UNSPEC: the receiver uses the real connection addresses.
        ("v2-unspec", v2_raw(0x21, 0x00, &[]), "127.0.0.1"),
        // AF_UNIX stream (0x31, 216-byte block): no IP address to use, the connection's own.
        ("v2-unix", v2_raw(0x21, 0x31, &[b'/'; 216]), "127.0.0.1"),
        // A LOCAL header may carry an address block: it is discarded.
        (
            "v2-local-with-addrs",
            {
                let mut h = v2(sa("203.0.113.77:1"), dst4, &[]);
                h[12] = 0x20;
                h
            },
            "127.0.0.1",
        ),
    ];
    let mut accepted = 0;
    for (name, header, want) in &cases {
        let path = format!("/whole/{name}");
        let r = exchange(web, &with_req(header, &path)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.status, 200, "{name}: {}", r.summary());
        assert_eq!(&xff_for(&b, &path), want, "{name}: X-Forwarded-For");
        accepted += 1;

        // One byte per write, header and request alike.
        let path = format!("/dribbled/{name}");
        let mut s = TcpStream::connect(web).unwrap();
        s.set_nodelay(true).unwrap();
        let bytes = with_req(header, &path);
        assert_eq!(
            common::client::dribble(&mut s, &bytes, Duration::from_millis(1)),
            bytes.len()
        );
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = vec![0u8; 4096];
        let n = s.read(&mut got).unwrap_or(0);
        assert!(
            got[..n].starts_with(b"HTTP/1.1 200"),
            "{name} dribbled: {:?}",
            String::from_utf8_lossy(&got[..n])
        );
        assert_eq!(
            &xff_for(&b, &path),
            want,
            "{name} dribbled: X-Forwarded-For"
        );
        accepted += 1;
    }

    // Header and two pipelined requests in one write: both answered (nothing after the header
    // is lost), in order, on the header's address.
    let mut bytes = v2(sa("203.0.113.9:40009"), dst4, &[]);
    bytes.extend(req("GET", "/pipe/1", HOST, &[], b""));
    bytes.extend(req("POST", "/echo", HOST, &[], &common::pattern(0, 3000)));
    let mut c = common::Conn::connect(web);
    c.send(&bytes);
    let r1 = c.read_response();
    let r2 = c.read_response();
    assert_eq!(r1.status, 200, "{}", r1.summary());
    assert_eq!(
        r2.body_str(),
        format!("{} 3000", common::sha256_hex(&common::pattern(0, 3000)))
    );
    assert_eq!(xff_for(&b, "/pipe/1"), "203.0.113.9");
    accepted += 1;
    // A later request on the same connection keeps the header's address.
    let r3 = c.get("/pipe/3", HOST);
    assert_eq!(r3.status, 200);
    assert_eq!(xff_for(&b, "/pipe/3"), "203.0.113.9");
    drop(c);

    let s = stats(&p);
    assert_eq!(stat(&s, "proxy_protocol.accepted"), accepted, "{s:?}");
    assert_eq!(stat(&s, "proxy_protocol.untrusted"), 0, "{s:?}");
    assert_eq!(prom_result(&p, "accepted"), accepted as f64);

    // The access log names the header's address first (combined: `$remote_addr - ...`).
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let all = text.contains("/pipe/3 ")
            && cases.iter().all(|(name, _, _)| {
                text.contains(&format!("/whole/{name} "))
                    && text.contains(&format!("/dribbled/{name} "))
            });
        if all || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for (name, _, want) in &cases {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("/whole/{name} ")))
            .unwrap_or_else(|| {
                panic!(
                    "no access log line for {name} after 5 s (access_log.dropped: {}):\n{text}",
                    stat(&stats(&p), "access_log.dropped")
                )
            });
        assert!(
            line.starts_with(&format!("{want} ")),
            "{name}: access log line does not start with {want}: {line}"
        );
    }
    let line = text.lines().find(|l| l.contains("/pipe/3 ")).unwrap();
    assert!(line.starts_with("203.0.113.9 "), "{line}");
}

/// A peer outside `trusted_proxies` is closed at once, before anything is read: a perfectly
/// valid header and request from 127.0.0.2 reach nothing, and a silent one is not kept open
/// for the header timeout. Counted `untrusted`, in `show stats` and Prometheus.
#[test]
fn untrusted_peer_is_closed_at_once() {
    let b = Backend::start("app");
    let p = Proxy::start_with(
        &accept_proxy_config(
            "client_header_timeout = \"10s\"",
            "servers = [ { name = \"app\", addr = \"{app}\" } ]",
        ),
        &[("app", b.addr_string())],
    );
    let web = p.addr("web");
    let before = stats(&p);

    // Valid header claiming the trusted address itself, and a request.
    let mut s = connect_from("127.0.0.2", web).unwrap();
    let _ = s.write_all(&with_req(
        &v2(sa("127.0.0.1:5000"), sa("127.0.0.1:80"), &[]),
        "/untrusted",
    ));
    let t0 = Instant::now();
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed, "untrusted peer's connection still open after 5 s");
    assert!(
        got.is_empty(),
        "untrusted peer got an answer: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "closed only after {:?}",
        t0.elapsed()
    );

    // Silent untrusted peer: closed at once, not after client_header_timeout (10 s).
    let mut s = connect_from("127.0.0.2", web).unwrap();
    let t0 = Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(
        closed && t0.elapsed() < Duration::from_secs(2),
        "silent untrusted peer kept {:?}",
        t0.elapsed()
    );

    // A v1 header too, and the trusted address still works.
    let mut s = connect_from("127.0.0.2", web).unwrap();
    let _ = s.write_all(&with_req(
        &v1(sa("203.0.113.1:1"), sa("127.0.0.1:80")),
        "/untrusted2",
    ));
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed && got.is_empty());
    let r = exchange(
        web,
        &with_req(&v1(sa("203.0.113.1:1"), sa("127.0.0.1:80")), "/trusted"),
    )
    .unwrap();
    assert_eq!(r.status, 200);

    assert_eq!(
        b.heads()
            .iter()
            .filter(|h| h.start_line.contains("untrusted"))
            .count(),
        0
    );
    let after = stats(&p);
    assert_eq!(
        stat(&after, "proxy_protocol.untrusted") - stat(&before, "proxy_protocol.untrusted"),
        3,
        "{after:?}"
    );
    assert_eq!(
        stat(&after, "proxy_protocol.accepted") - stat(&before, "proxy_protocol.accepted"),
        1
    );
    assert_eq!(prom_result(&p, "untrusted"), 3.0);
}

/// Missing, malformed, oversized and too slow headers: each connection is closed without an
/// answer and without a request reaching the backend, within the header timeout (the bound is
/// on the whole header, not per read: one byte every 300 ms does not keep it open); counted
/// `bad`. A valid header after all that still works.
#[test]
fn bad_missing_and_slow_headers_are_refused() {
    let b = Backend::start("app");
    let p = Proxy::start_with(
        &accept_proxy_config(
            "client_header_timeout = \"1s\"",
            "servers = [ { name = \"app\", addr = \"{app}\" } ]",
        ),
        &[("app", b.addr_string())],
    );
    let web = p.addr("web");
    // Let the start-up probe's connection be counted first.
    std::thread::sleep(Duration::from_millis(300));
    let before = stats(&p);
    let long_v1 = {
        let mut v = b"PROXY TCP4 ".to_vec();
        v.extend(std::iter::repeat_n(b'1', 200));
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no header", Vec::new()),
        (
            "lowercase proxy",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n".to_vec(),
        ),
        (
            "bad ipv4",
            b"PROXY TCP4 1.2.3.999 5.6.7.8 1111 2222\r\n".to_vec(),
        ),
        (
            "LF without CR",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\n".to_vec(),
        ),
        (
            "port > 65535",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2222\r\n".to_vec(),
        ),
        (
            "TCP4 with IPv6",
            b"PROXY TCP4 ::1 ::1 1111 2222\r\n".to_vec(),
        ),
        ("TCP5", b"PROXY TCP5 1.2.3.4 5.6.7.8 1111 2222\r\n".to_vec()),
        (
            "missing port",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n".to_vec(),
        ),
        (
            "double space",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1111 2222\r\n".to_vec(),
        ),
        ("v1 too long", long_v1),
        ("v2 version 1", v2_raw(0x11, 0x11, &[0u8; 12])),
        ("v2 version 3", v2_raw(0x31, 0x11, &[0u8; 12])),
        ("v2 command 2", v2_raw(0x22, 0x11, &[0u8; 12])),
        ("v2 TCP4 block too short", v2_raw(0x21, 0x11, &[1, 2, 3, 4])),
        ("v2 TCP6 block too short", v2_raw(0x21, 0x21, &[0u8; 12])),
        ("v2 bad signature", {
            let mut h = v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"), &[]);
            h[11] = b'X';
            h
        }),
        ("garbage", b"\x16\x03\x01\x00\x05hello".to_vec()),
    ];
    for (name, header) in &cases {
        let path = format!("/bad/{}", name.replace(' ', "-"));
        let mut s = TcpStream::connect(web).unwrap();
        let _ = s.write_all(&with_req(header, &path));
        let t0 = Instant::now();
        let (got, closed) = read_to_close(&mut s, Duration::from_secs(4));
        assert!(closed, "{name}: connection still open after 4 s");
        assert!(
            got.is_empty(),
            "{name}: got an answer instead of a close: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{name}: closed after {:?}",
            t0.elapsed()
        );
    }
    let mut n_bad = cases.len() as i64;

    // Too slow: part of a header, then silence; closed by the 1 s header timeout.
    for part in [
        &b"PROXY TCP4 1.2.3.4"[..],
        &v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"), &[])[..20],
        &b""[..],
    ] {
        let mut s = TcpStream::connect(web).unwrap();
        s.write_all(part).unwrap();
        let t0 = Instant::now();
        let (got, closed) = read_to_close(&mut s, Duration::from_secs(5));
        assert!(
            closed && got.is_empty(),
            "partial {part:?}: closed {closed}, got {got:?}"
        );
        let t = t0.elapsed();
        assert!(
            t >= Duration::from_millis(700) && t < Duration::from_secs(3),
            "partial header closed after {t:?}"
        );
        n_bad += 1;
    }
    // A v2 header declaring 65535 bytes of TLVs: refused (it would be buffered otherwise), at
    // the latest by the timeout.
    {
        let mut h = SIG.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        h.extend_from_slice(&[0u8; 12]);
        let mut s = TcpStream::connect(web).unwrap();
        s.write_all(&h).unwrap();
        let _ = s.write_all(&[0u8; 8192]);
        let (got, closed) = read_to_close(&mut s, Duration::from_secs(4));
        assert!(
            closed && got.is_empty(),
            "huge v2: closed {closed}, got {got:?}"
        );
        n_bad += 1;
    }
    // Slowloris: a valid header one byte every 300 ms (15 s in all) must not outlive the 1 s
    // header bound.
    {
        let mut s = TcpStream::connect(web).unwrap();
        s.set_nodelay(true).unwrap();
        let bytes = with_req(&v1(sa("203.0.113.50:1"), sa("5.6.7.8:2")), "/slowloris");
        let t0 = Instant::now();
        let sent = common::client::dribble(&mut s, &bytes[..20], Duration::from_millis(300));
        let (got, closed) = read_to_close(&mut s, Duration::from_secs(3));
        assert!(
            closed && got.is_empty(),
            "slowloris: closed {closed}, got {got:?}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5) || sent < 20,
            "slowloris connection lived {:?} ({sent} bytes accepted)",
            t0.elapsed()
        );
        n_bad += 1;
    }

    assert!(
        b.heads()
            .iter()
            .all(|h| !h.start_line.contains("/bad/") && !h.start_line.contains("/slowloris")),
        "a refused connection's request reached the backend: {:?}",
        b.heads()
            .iter()
            .map(|h| h.start_line.clone())
            .collect::<Vec<_>>()
    );
    let after = stats(&p);
    assert_eq!(
        stat(&after, "proxy_protocol.bad") - stat(&before, "proxy_protocol.bad"),
        n_bad,
        "{after:?}"
    );
    assert_eq!(
        stat(&after, "proxy_protocol.accepted"),
        stat(&before, "proxy_protocol.accepted")
    );
    assert_eq!(
        prom_result(&p, "bad"),
        stat(&after, "proxy_protocol.bad") as f64
    );

    let r = exchange(
        web,
        &with_req(&v1(sa("203.0.113.1:1"), sa("5.6.7.8:2")), "/ok"),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(xff_for(&b, "/ok"), "203.0.113.1");
}

/// `balance = "hash"` by source hashes the header's address, not the L4 tier's: 40 claimed
/// clients spread over both servers (all from 127.0.0.1 on the wire), each always to one.
#[test]
fn hash_balancing_uses_the_header_address() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let p = Proxy::start_with(
        &accept_proxy_config(
            "",
            "balance = \"hash\"\nhash_key = \"source_ip\"\nservers = [ { name = \"a\", addr = \"{a}\" }, { name = \"b\", addr = \"{b}\" } ]",
        ),
        &[("a", a.addr_string()), ("b", b.addr_string())],
    );
    let web = p.addr("web");
    let mut by_client: HashMap<String, HashSet<String>> = HashMap::new();
    for round in 0..2 {
        for i in 1..=40 {
            let ip = format!("203.0.113.{i}");
            let h = v1(sa(&format!("{ip}:{}", 1000 + round)), sa("198.51.100.1:80"));
            let r = exchange(web, &with_req(&h, "/")).unwrap();
            assert_eq!(r.status, 200);
            by_client
                .entry(ip)
                .or_default()
                .insert(r.backend().to_string());
        }
    }
    for (ip, servers) in &by_client {
        assert_eq!(servers.len(), 1, "client {ip} went to {servers:?}");
    }
    let used: HashSet<&String> = by_client.values().flat_map(|s| s.iter()).collect();
    assert_eq!(
        used.len(),
        2,
        "40 claimed clients all hashed to {used:?}: the L4 tier's address was hashed"
    );
}

/// `purge_from` checks the header's address: a claimed 203.0.113.5 may purge, a claimed
/// 198.51.100.5 may not, and the trusted L4 tier's own address (127.0.0.1) grants nothing.
#[test]
fn purge_from_checks_the_header_address() {
    let b = Backend::start("app");
    let p = Proxy::start_with(
        &accept_proxy_config(
            "purge_from = [\"203.0.113.0/24\", \"127.0.0.1\"]\n[[http.route]]\npool = \"app\"\ncache = { size = \"8MiB\", max_object = \"1MiB\" }",
            "servers = [ { name = \"app\", addr = \"{app}\" } ]",
        ).replace("default_pool = \"app\"\n", ""),
        &[("app", b.addr_string())],
    );
    let web = p.addr("web");
    let purge = |h: Vec<u8>| {
        let mut bytes = h;
        bytes.extend(req("PURGE", "/x", HOST, &[], b""));
        exchange(web, &bytes).unwrap().status
    };
    assert_ne!(purge(v1(sa("203.0.113.5:1"), sa("198.51.100.1:80"))), 403);
    assert_eq!(purge(v1(sa("198.51.100.5:1"), sa("198.51.100.1:80"))), 403);
    assert_eq!(
        purge(v2(sa("198.51.100.6:1"), sa("198.51.100.1:80"), &[])),
        403
    );
    // LOCAL keeps the connection's own address, which is listed.
    assert_ne!(purge(v2_local()), 403);
}

/// A plain frontend (clients from 127.0.0.1 and 127.0.0.2) in front of a server with
/// `send_proxy`: every upstream connection starts with a header of that version naming the
/// client's source and the frontend address it connected to; each client's requests reuse
/// its own upstream connection (keep-alive works) and never the other client's, and a new
/// client connection from the same IP gets a new upstream connection with its own port.
#[test]
fn send_proxy_names_each_client_and_keeps_connections_private() {
    for version in ["v1", "v2"] {
        let be = PpBackend::start();
        let cfg = daemon(2)
            + &format!(
                r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"

[pool.app]
servers = [ {{ name = "pp", addr = "{}", send_proxy = "{version}" }} ]
"#,
                be.addr
            );
        let p = Proxy::start(&cfg);
        let web = p.addr("web");
        let mut a = connect_from("127.0.0.1", web).unwrap();
        let mut b = connect_from("127.0.0.2", web).unwrap();
        let (a_src, b_src) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut a_conns = HashSet::new();
        let mut b_conns = HashSet::new();
        for i in 0..4 {
            for (s, src, set) in [(&mut a, a_src, &mut a_conns), (&mut b, b_src, &mut b_conns)] {
                let r = get_on(s, &format!("/{version}/{i}"));
                assert_eq!(r.status, 200, "{}", r.summary());
                let body = r.body_str();
                assert!(
                    body.contains(&format!("hdr={src}>{web} ")),
                    "{version}: client {src} answered over a connection whose header is: {body}"
                );
                assert!(body.ends_with(&format!("xff={}", src.ip())), "{body}");
                set.insert(r.header("x-conn").unwrap().to_string());
            }
        }
        assert!(
            a_conns.is_disjoint(&b_conns),
            "{version}: clients shared upstream connections {a_conns:?} {b_conns:?}"
        );
        assert_eq!(a_conns.len(), 1, "{version}: client A's 4 requests used upstream connections {a_conns:?} (no keep-alive reuse)");
        assert_eq!(
            b_conns.len(),
            1,
            "{version}: client B's 4 requests used {b_conns:?}"
        );

        // A closes; a new connection from the same IP is another client.
        drop(a);
        std::thread::sleep(Duration::from_millis(100));
        let mut c = connect_from("127.0.0.1", web).unwrap();
        let c_src = c.local_addr().unwrap();
        let r = get_on(&mut c, &format!("/{version}/c"));
        let body = r.body_str();
        assert!(
            body.contains(&format!("hdr={c_src}>{web} ")),
            "{version}: new client {c_src}: {body}"
        );
        assert!(!a_conns.contains(r.header("x-conn").unwrap()));

        for rec in be.used_conns() {
            let h = rec.header.as_ref().unwrap();
            match (version, h) {
                ("v1", Header::V1(Some(_))) | ("v2", Header::V2(Some(_))) => {}
                _ => panic!("{version}: upstream connection {} began with {h:?}", rec.id),
            }
            let (src, _) = h.addrs().unwrap();
            for (path, xff) in &rec.requests {
                assert_eq!(
                    xff,
                    &src.ip().to_string(),
                    "{version}: {path} on a connection for {src}"
                );
            }
        }
    }
}

/// GET `path` on a kept-alive raw stream and read the response (Content-Length framed).
fn get_on(s: &mut TcpStream, path: &str) -> common::Response {
    s.write_all(&req("GET", path, HOST, &[], b"")).unwrap();
    let mut io = common::wire::BufStream::new(s.try_clone().unwrap());
    io.set_read_timeout(Duration::from_secs(10));
    let head = io.read_head().unwrap().expect("response head");
    let n = head.content_length().unwrap().unwrap_or(0);
    let mut body = Vec::new();
    io.read_len(n, &mut |b| body.extend_from_slice(b)).unwrap();
    assert!(io.buffered().is_empty());
    common::Response {
        status: head.start_line.split(' ').nth(1).unwrap().parse().unwrap(),
        head,
        body,
        framing: common::client::Framing::Length,
    }
}

/// accept_proxy in, send_proxy out: the header shardgate sends carries the addresses of the
/// client's own header (v1 in, v2 out and the reverse); a LOCAL header in gives the
/// connection's own addresses out.
#[test]
fn incoming_header_addresses_are_sent_upstream() {
    for (out_version, header_in, want_src, want_dst) in [
        (
            "v2",
            v1(sa("203.0.113.9:5555"), sa("198.51.100.2:443")),
            "203.0.113.9:5555",
            "198.51.100.2:443",
        ),
        (
            "v1",
            v2(
                sa("[2001:db8::9]:6666"),
                sa("[2001:db8::2]:443"),
                &[(0x04, b"xx")],
            ),
            "[2001:db8::9]:6666",
            "[2001:db8::2]:443",
        ),
    ] {
        let be = PpBackend::start();
        let p = Proxy::start(&accept_proxy_config(
            "",
            &format!(
                "servers = [ {{ name = \"pp\", addr = \"{}\", send_proxy = \"{out_version}\" }} ]",
                be.addr
            ),
        ));
        let web = p.addr("web");
        let r = exchange(web, &with_req(&header_in, "/chained")).unwrap();
        assert_eq!(r.status, 200, "{}", r.summary());
        let body = r.body_str();
        assert!(
            body.contains(&format!("hdr={want_src}>{want_dst} ")),
            "{out_version}: {body}"
        );
        assert!(
            body.ends_with(&format!("xff={}", sa(want_src).ip())),
            "{body}"
        );

        // LOCAL in: the connection's own addresses out.
        let mut s = TcpStream::connect(web).unwrap();
        let src = s.local_addr().unwrap();
        s.write_all(&v2_local()).unwrap();
        let r = get_on(&mut s, "/local");
        assert!(
            r.body_str().contains(&format!("hdr={src}>{web} ")),
            "LOCAL in: {}",
            r.body_str()
        );
        let rec = be.used_conns();
        let out_ok = rec.iter().all(|c| {
            matches!(
                (out_version, c.header.as_ref().unwrap()),
                ("v1", Header::V1(Some(_))) | ("v2", Header::V2(Some(_)))
            )
        });
        assert!(out_ok, "{rec:?}");
    }
}

/// Two client connections (one after the other) whose PROXY headers claim the very same
/// source and destination are still two clients: the second must not be handed the first's
/// upstream connection (HAProxy keeps a connection that carried a header private to its
/// session).
#[test]
fn identical_claims_on_two_client_connections_do_not_share_upstream() {
    let be = PpBackend::start();
    // One shard, so both client connections meet the same upstream pool.
    let p = Proxy::start(
        &accept_proxy_config(
            "",
            &format!(
                "servers = [ {{ name = \"pp\", addr = \"{}\", send_proxy = \"v2\" }} ]",
                be.addr
            ),
        )
        .replace("shards = 2", "shards = 1"),
    );
    let web = p.addr("web");
    let h = v1(sa("203.0.113.44:4444"), sa("198.51.100.1:80"));
    let mut ids = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(web).unwrap();
        s.write_all(&h).unwrap();
        let r = get_on(&mut s, &format!("/same/{i}"));
        ids.push(r.header("x-conn").unwrap().to_string());
        drop(s);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(
        ids[0], ids[1],
        "the second client connection reused the first one's upstream connection"
    );
}

/// Health checks of a server with `send_proxy`: what they send is recorded and reported (HAProxy
/// sends the header on checks too). The server must stay usable either way here, since the
/// recording server also answers connections without a header.
#[test]
fn health_checks_to_a_send_proxy_server() {
    let be = PpBackend::start();
    let cfg = daemon(1)
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"

[pool.app]
servers = [ {{ name = "pp", addr = "{}", send_proxy = "v2" }} ]

[pool.app.health]
method = "http_get"
uri = "/health"
interval = "100ms"
timeout = "100ms"
"#,
            be.addr
        );
    let p = Proxy::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && !be
            .conns()
            .iter()
            .any(|c| c.requests.iter().any(|(p, _)| p == "/health"))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let checks: Vec<Header> = be
        .conns()
        .into_iter()
        .filter(|c| c.requests.iter().any(|(p, _)| p == "/health"))
        .map(|c| c.header.unwrap())
        .collect();
    assert!(
        !checks.is_empty(),
        "no health check reached the server: {:?}",
        be.conns()
    );
    eprintln!(
        "REPORT: health checks to a send_proxy = \"v2\" server began with: {:?}",
        &checks[..checks.len().min(3)]
    );
    let r = exchange(p.addr("web"), &req("GET", "/", HOST, &[], b"")).unwrap();
    assert_eq!(r.status, 200);
}

/// `--check` refuses each mistake with exit 2, naming the file and the key.
#[test]
fn config_errors_name_file_and_key() {
    let be = "127.0.0.1:9";
    let http = |front: &str, server: &str| {
        format!(
            "[[http]]\nname = \"web\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"app\"\n{front}\n\n[pool.app]\nservers = [ {{ name = \"a\", addr = \"{be}\"{server} }} ]\n"
        )
    };
    let mysql = |front: &str, server: &str| {
        format!(
            "[[mysql]]\nname = \"db\"\nlisten = [\"127.0.0.1:1\"]\npool = \"db\"\n{front}\n\n[pool.db]\nservers = [ {{ name = \"m\", addr = \"{be}\"{server} }} ]\n"
        )
    };
    let cases = [
        (
            "accept_proxy without trusted_proxies",
            http("accept_proxy = true", ""),
            "trusted_proxies",
        ),
        (
            "trusted_proxies without accept_proxy",
            http("trusted_proxies = [\"10.0.0.0/8\"]", ""),
            "trusted_proxies",
        ),
        (
            "trusted_proxies with accept_proxy = false",
            http(
                "accept_proxy = false\ntrusted_proxies = [\"10.0.0.0/8\"]",
                "",
            ),
            "trusted_proxies",
        ),
        (
            "empty trusted_proxies",
            http("accept_proxy = true\ntrusted_proxies = []", ""),
            "trusted_proxies",
        ),
        (
            "bad CIDR prefix",
            http(
                "accept_proxy = true\ntrusted_proxies = [\"10.0.0.0/33\"]",
                "",
            ),
            "trusted_proxies[0]",
        ),
        (
            "not an address",
            http(
                "accept_proxy = true\ntrusted_proxies = [\"127.0.0.1/32\", \"lb.example\"]",
                "",
            ),
            "trusted_proxies[1]",
        ),
        (
            "send_proxy v3",
            http("", ", send_proxy = \"v3\""),
            "send_proxy",
        ),
        (
            "send_proxy true",
            http("", ", send_proxy = true"),
            "send_proxy",
        ),
        (
            "mysql accept_proxy without trusted_proxies",
            mysql("accept_proxy = true", ""),
            "trusted_proxies",
        ),
        (
            "mysql bad CIDR",
            mysql("accept_proxy = true\ntrusted_proxies = [\"::1/129\"]", ""),
            "trusted_proxies[0]",
        ),
        (
            "mysql send_proxy v3",
            mysql("", ", send_proxy = \"v3\""),
            "send_proxy",
        ),
    ];
    let dir = common::proxy::temp_dir("pp-check");
    for (i, (name, text, key)) in cases.iter().enumerate() {
        let file = dir.join(format!("case{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .arg("--check")
            .output()
            .unwrap();
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: exit {:?}: {msg}\n{text}",
            out.status.code()
        );
        assert!(
            msg.contains(&file.display().to_string()),
            "{name}: message does not name the file: {msg}"
        );
        assert!(
            msg.contains(key),
            "{name}: message does not name {key}: {msg}"
        );
    }
    // And the valid forms pass.
    for (i, text) in [
        http("accept_proxy = true\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\", \"::1/128\", \"192.0.2.7\"]", ", send_proxy = \"v1\""),
        mysql("accept_proxy = true\ntrusted_proxies = [\"10.0.0.0/8\"]", ", send_proxy = \"v2\""),
    ]
    .iter()
    .enumerate()
    {
        let file = dir.join(format!("ok{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(BIN).arg("--config").arg(&file).arg("--check").output().unwrap();
        assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A MariaDB honouring PROXY headers from 127.0.0.1 (`proxy_protocol_networks`), and shardgate
/// with three MySQL frontends in front of it: `plain` (pool `v1out`, the server with
/// `send_proxy = "v1"`), `pp` (accept_proxy from 127.0.0.1, pool `v2out`, `send_proxy = "v2"`)
/// and `nohdr` (no PROXY anything). `None` when MariaDB cannot be installed.
fn mysql_setup(test: &str) -> Option<(mysql_support::MariaDb, Proxy)> {
    let db = mysql_support::MariaDb::start(test, 1)?;
    db.sql(0, "SET GLOBAL proxy_protocol_networks = '127.0.0.1/32'");
    let port = db.ports[0];
    let cfg = daemon(2)
        + &format!(
            r#"
[[mysql]]
name = "plain"
listen = ["127.0.0.1:{{port:plain}}"]
pool = "v1out"

[[mysql]]
name = "pp"
listen = ["127.0.0.1:{{port:pp}}"]
pool = "v2out"
accept_proxy = true
trusted_proxies = ["127.0.0.1/32"]

[[mysql]]
name = "nohdr"
listen = ["127.0.0.1:{{port:nohdr}}"]
pool = "nohdr"

[pool.v1out]
servers = [ {{ name = "m", addr = "127.0.0.1:{port}", send_proxy = "v1" }} ]

[pool.v2out]
servers = [ {{ name = "m", addr = "127.0.0.1:{port}", send_proxy = "v2" }} ]

[pool.nohdr]
servers = [ {{ name = "m", addr = "127.0.0.1:{port}" }} ]
"#
        );
    let p = Proxy::start(&cfg);
    Some((db, p))
}

/// `SELECT USER()` through 127.0.0.1:`port` as sg_a: `sg_a@` the address MariaDB saw.
fn mysql_user(port: u16) -> String {
    let out = mysql_support::cli(
        port,
        "sg_a",
        "pw_a",
        None,
        &["-N", "-B", "-e", "SELECT USER()"],
        None,
    );
    assert!(out.status.success(), "{}", mysql_support::stderr(&out));
    mysql_support::stdout(&out).trim().to_string()
}

fn relay(target: SocketAddr, opts: FwdOpts) -> Forwarder {
    Forwarder::start_opts(sa("127.0.0.1:0"), vec![target], opts)
}

/// MySQL `send_proxy`: a client on 127.0.0.3 through a plain frontend is `sg_a@127.0.0.3` to
/// MariaDB (the header shardgate sends names it); without `send_proxy` MariaDB sees shardgate
/// (127.0.0.1). MariaDB honouring a header sent straight to it checks the setup.
#[test]
fn mysql_send_proxy_gives_mariadb_the_client_address() {
    let Some((db, p)) = mysql_setup("mysql_send_proxy_gives_mariadb_the_client_address") else {
        return;
    };
    let direct = relay(
        sa(&format!("127.0.0.1:{}", db.ports[0])),
        FwdOpts {
            claim: Some(sa("127.0.0.7:7777")),
            ..Default::default()
        },
    );
    assert_eq!(
        mysql_user(direct.addr.port()),
        "sg_a@127.0.0.7",
        "MariaDB ignores PROXY headers: the test setup is broken"
    );
    let from_3 = |front: &str| {
        relay(
            p.addr(front),
            FwdOpts {
                no_header: true,
                bind: Some("127.0.0.3"),
                ..Default::default()
            },
        )
    };
    let nohdr = from_3("nohdr");
    assert_eq!(
        mysql_user(nohdr.addr.port()),
        "sg_a@127.0.0.1",
        "no send_proxy"
    );
    let plain = from_3("plain");
    assert_eq!(
        mysql_user(plain.addr.port()),
        "sg_a@127.0.0.3",
        "plain frontend, server with send_proxy = \"v1\""
    );
}

/// MySQL `accept_proxy`: the server speaks first, so shardgate must not send its greeting
/// before the client's header has been read; the greeting (protocol 10) follows the header.
/// Untrusted and bad peers are closed without a greeting; all three counted.
#[test]
fn mysql_accept_proxy_reads_the_header_before_the_greeting() {
    let Some((_db, p)) = mysql_setup("mysql_accept_proxy_reads_the_header_before_the_greeting")
    else {
        return;
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = stats(&p);
    let mut s = TcpStream::connect(p.addr("pp")).unwrap();
    let (got, closed) = read_to_close(&mut s, Duration::from_millis(500));
    assert!(
        !closed && got.is_empty(),
        "greeting sent before any PROXY header: closed {closed}, got {:?}",
        String::from_utf8_lossy(&got)
    );
    s.write_all(&v1(sa("127.0.0.6:6666"), sa("127.0.0.1:3306")))
        .unwrap();
    let mut greeting = [0u8; 5];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(greeting[4], 10, "not a MySQL greeting: {greeting:?}");
    drop(s);
    let mut s = connect_from("127.0.0.2", p.addr("pp")).unwrap();
    let _ = s.write_all(&v2_local());
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(3));
    assert!(
        closed && got.is_empty(),
        "untrusted: closed {closed}, got {:?}",
        String::from_utf8_lossy(&got)
    );
    let mut s = TcpStream::connect(p.addr("pp")).unwrap();
    let _ = s.write_all(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n");
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(3));
    assert!(
        closed && got.is_empty(),
        "bad header: closed {closed}, got {:?}",
        String::from_utf8_lossy(&got)
    );
    let after = stats(&p);
    for (k, n) in [("untrusted", 1), ("bad", 1), ("accepted", 1)] {
        let key = format!("proxy_protocol.{k}");
        assert_eq!(
            stat(&after, &key) - stat(&before, &key),
            n,
            "{key}: {after:?}"
        );
    }
}

/// MySQL, header in and header out: the address of the client's header (v2 and v1 in) is the
/// one MariaDB sees through `send_proxy = "v2"`.
#[test]
fn mysql_header_address_is_passed_on_to_mariadb() {
    let Some((_db, p)) = mysql_setup("mysql_header_address_is_passed_on_to_mariadb") else {
        return;
    };
    let before = stats(&p);
    let v2_in = relay(
        p.addr("pp"),
        FwdOpts {
            claim: Some(sa("127.0.0.4:4444")),
            ..Default::default()
        },
    );
    assert_eq!(
        mysql_user(v2_in.addr.port()),
        "sg_a@127.0.0.4",
        "v2 in, v2 out"
    );
    let v1_in = relay(
        p.addr("pp"),
        FwdOpts {
            v1: true,
            claim: Some(sa("127.0.0.5:5555")),
            ..Default::default()
        },
    );
    assert_eq!(
        mysql_user(v1_in.addr.port()),
        "sg_a@127.0.0.5",
        "v1 in, v2 out"
    );
    // Read by shardgate, not passed through for MariaDB to parse.
    let after = stats(&p);
    assert_eq!(
        stat(&after, "proxy_protocol.accepted") - stat(&before, "proxy_protocol.accepted"),
        2,
        "the MySQL frontend did not read the headers itself: {after:?}"
    );
}

/// Attacker: a client of a MySQL frontend without accept_proxy sends its own PROXY header
/// before the handshake. It must not get to choose the address MariaDB sees (MariaDB trusts
/// shardgate's address for headers, as it must for `send_proxy`): the session fails or MariaDB
/// sees shardgate's own address, never the claimed one.
#[test]
fn mysql_client_cannot_smuggle_a_header_through_a_plain_frontend() {
    let Some((_db, p)) =
        mysql_setup("mysql_client_cannot_smuggle_a_header_through_a_plain_frontend")
    else {
        return;
    };
    // `nohdr`: a pool without send_proxy; `plain`: one with it (the header shardgate sends
    // first must stay the one MariaDB uses).
    for (front, v1_hdr, claim) in [
        ("nohdr", true, "10.9.9.9:999"),
        ("nohdr", false, "10.8.8.8:888"),
        ("plain", true, "10.7.7.7:777"),
        ("plain", false, "10.6.6.6:666"),
    ] {
        let smuggler = relay(
            p.addr(front),
            FwdOpts {
                v1: v1_hdr,
                claim: Some(sa(claim)),
                ..Default::default()
            },
        );
        let out = mysql_support::cli(
            smuggler.addr.port(),
            "sg_a",
            "pw_a",
            None,
            &["-N", "-B", "-e", "SELECT USER()"],
            None,
        );
        let seen = mysql_support::stdout(&out).trim().to_string();
        assert!(
            !out.status.success() || seen == "sg_a@127.0.0.1",
            "{front}: a client's own PROXY header (v1: {v1_hdr}) went through shardgate: MariaDB sees {seen}"
        );
    }
}

/// `accept_proxy` with `tls`: header first, then the handshake (HAProxy's order). curl speaks
/// HTTPS through a forwarder that prepends a v2 header claiming 203.0.113.77: the backend sees
/// that address. The header's bound on a TLS frontend is `handshake_timeout` (1 s here), not
/// `client_header_timeout` (30 s); a ClientHello without a header is refused (`bad`).
#[test]
fn accept_proxy_with_tls_reads_the_header_before_the_handshake() {
    let dir = common::proxy::temp_dir("pp-tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pp.test",
            "-addext",
            "subjectAltName=DNS:pp.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = Backend::start("app");
    let p = Proxy::start_with(
        &accept_proxy_config(
            &format!(
                "client_header_timeout = \"30s\"\ntls = {{ certs = [ {{ cert = \"{}\", key = \"{}\" }} ], handshake_timeout = \"1s\" }}",
                cert.display(),
                key.display()
            ),
            "servers = [ { name = \"app\", addr = \"{app}\" } ]",
        ),
        &[("app", b.addr_string())],
    );
    let web = p.addr("web");
    let fwd = Forwarder::start_opts(
        sa("127.0.0.1:0"),
        vec![web],
        FwdOpts {
            claim: Some(sa("203.0.113.77:7777")),
            ..Default::default()
        },
    );
    let url = format!("https://pp.test:{}/tls-through-header", fwd.addr.port());
    let resolve = format!("pp.test:{}:127.0.0.1", fwd.addr.port());
    let (code, body, err) = common::curl(&["-k", "--resolve", &resolve, &url]);
    assert_eq!(code, 0, "curl: {err}");
    assert_eq!(String::from_utf8_lossy(&body), "app");
    assert_eq!(xff_for(&b, "/tls-through-header"), "203.0.113.77");

    let before = stats(&p);
    // Half a header, then silence: closed by handshake_timeout (1 s), not the 30 s one.
    let mut s = TcpStream::connect(web).unwrap();
    s.write_all(&v2(sa("203.0.113.1:1"), sa("5.6.7.8:443"), &[])[..10])
        .unwrap();
    let t0 = Instant::now();
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(
        closed && got.is_empty(),
        "partial header on TLS: closed {closed}, got {got:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        t0.elapsed()
    );
    // A client that starts TLS without a header: refused.
    let (code, _, _) = common::curl(&[
        "-k",
        "--resolve",
        &format!("pp.test:{}:127.0.0.1", web.port()),
        &format!("https://pp.test:{}/no-header", web.port()),
    ]);
    assert_ne!(code, 0, "a TLS client without a PROXY header was served");
    let after = stats(&p);
    assert_eq!(
        stat(&after, "proxy_protocol.bad") - stat(&before, "proxy_protocol.bad"),
        2,
        "{after:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Attacker: once a connection's header is read, a second PROXY line later on the same
/// connection is not a header (it is a bad HTTP request): it never changes the client address
/// of later requests.
#[test]
fn a_second_header_mid_connection_changes_nothing() {
    let b = Backend::start("app");
    let p = Proxy::start_with(
        &accept_proxy_config("", "servers = [ { name = \"app\", addr = \"{app}\" } ]"),
        &[("app", b.addr_string())],
    );
    let mut c = common::Conn::connect(p.addr("web"));
    c.send(&with_req(
        &v1(sa("203.0.113.10:1"), sa("198.51.100.1:80")),
        "/first",
    ));
    assert_eq!(c.read_response().status, 200);
    c.send(&with_req(
        &v1(sa("6.6.6.6:1"), sa("198.51.100.1:80")),
        "/second",
    ));
    c.send(&with_req(
        &v2(sa("6.6.6.7:1"), sa("198.51.100.1:80"), &[]),
        "/third",
    ));
    let (_, _) = c.read_until_end(Duration::from_secs(3));
    assert_eq!(xff_for(&b, "/first"), "203.0.113.10");
    for h in b.heads() {
        let xff = h.header("x-forwarded-for").unwrap_or("");
        assert!(
            !xff.contains("6.6.6."),
            "{}: X-Forwarded-For {xff}",
            h.start_line
        );
    }
}

/// `trusted_proxies` follows a reload: once 127.0.0.1 is no longer listed its connections are
/// refused unread; listed again, accepted.
#[test]
fn trusted_proxies_follow_a_reload() {
    let b = Backend::start("app");
    let pool = "servers = [ { name = \"app\", addr = \"{app}\" } ]";
    let vars = [("app", b.addr_string())];
    let cfg = accept_proxy_config("", pool);
    let mut p = Proxy::start_with(&cfg, &vars);
    let web = p.addr("web");
    let send = || {
        let mut s = TcpStream::connect(web).unwrap();
        let _ = s.write_all(&with_req(
            &v1(sa("203.0.113.20:1"), sa("198.51.100.1:80")),
            "/r",
        ));
        read_to_close(&mut s, Duration::from_secs(3)).0
    };
    assert!(send().starts_with(b"HTTP/1.1 200"));
    p.rewrite(
        &cfg.replace("[\"127.0.0.1/32\"]", "[\"10.0.0.0/8\"]"),
        &vars,
    );
    let (code, out) = p.ctl("reload");
    assert_eq!(code, 0, "{out}");
    let before = stat(&stats(&p), "proxy_protocol.untrusted");
    assert!(
        send().is_empty(),
        "127.0.0.1 still trusted after the reload"
    );
    assert_eq!(stat(&stats(&p), "proxy_protocol.untrusted") - before, 1);
    p.rewrite(&cfg, &vars);
    let (code, out) = p.ctl("reload");
    assert_eq!(code, 0, "{out}");
    assert!(send().starts_with(b"HTTP/1.1 200"));
}
