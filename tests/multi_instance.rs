//! Several shardgate instances behind an L4 tier (docs/operations.md, "Several instances behind
//! an L4 tier"): two daemons, each with `accept_proxy` trusting only the tier's address, on
//! 127.0.0.11:P and 127.0.0.12:P, behind a forwarder on 127.0.0.10 that balances connections
//! round-robin and prepends a PROXY v2 header (HAProxy `mode tcp` + `send-proxy-v2`, an NLB).
//! Clients on 127.0.0.1, .2 and .3: every request arrives whole (body digests), the backend
//! sees each client's own address in X-Forwarded-For, both instances serve, and draining one
//! instance from the tier then stopping it with SIGTERM loses nothing: its in-flight request
//! completes, new connections go to the survivor, and a tier that still sends to the stopped
//! instance (connect refused) falls over to the survivor.

mod common;
mod pp_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::observe::{stat, stats};
use common::wire::BufStream;
use common::{daemon, pattern, req, sha256_hex, Backend, Proxy};
use pp_support::*;

/// The tier's address, the only one each instance trusts.
const TIER: &str = "127.0.0.10";
const CLIENTS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// The config of one instance, as docs/operations.md gives it (addresses changed).
fn instance(ip: &str, port: u16, backend: &Backend) -> Proxy {
    let cfg = daemon(2)
        + &format!(
            r#"stop_timeout = "10s"

[[http]]
name = "web"
listen = ["{ip}:{port}"]
default_pool = "app"
# Every connection comes from the L4 tier and starts with its PROXY header.
accept_proxy = true
trusted_proxies = ["{TIER}/32"]
client_header_timeout = "5s"

[pool.app]
servers = [ {{ name = "app", addr = "{}" }} ]
"#,
            backend.addr
        );
    Proxy::start(&cfg)
}

/// `conns` connections from each client address through `tier`, `per_conn` keep-alive
/// `POST /echo` requests each (bodies of varying size); every answer's digest checked. Returns
/// the request targets sent, each with the client address that sent it.
fn load(tier: SocketAddr, tag: &str, conns: usize, per_conn: usize) -> Vec<(String, String)> {
    let handles: Vec<_> = CLIENTS
        .iter()
        .map(|&src| {
            let tag = tag.to_string();
            thread::spawn(move || {
                let mut sent = Vec::new();
                for c in 0..conns {
                    let s = connect_from(src, tier)
                        .unwrap_or_else(|e| panic!("{src}: connect {tier}: {e}"));
                    let mut io = BufStream::new(s);
                    io.set_read_timeout(Duration::from_secs(15));
                    for r in 0..per_conn {
                        let target = format!("/echo?tag={tag}&src={src}&c={c}&r={r}");
                        let len = 1 + (c * 7919 + r * 104_729) % 70_000;
                        let body = pattern((c * 31 + r) as u64, len);
                        io.write_all(&req("POST", &target, "multi.test", &[], &body))
                            .unwrap_or_else(|e| panic!("{src} {target}: send: {e}"));
                        let head = io
                            .read_head()
                            .unwrap_or_else(|e| panic!("{src} {target}: {e}"))
                            .unwrap_or_else(|| panic!("{src} {target}: closed before an answer"));
                        assert!(
                            head.start_line.starts_with("HTTP/1.1 200"),
                            "{src} {target}: {}",
                            head.start_line
                        );
                        let n = head.content_length().unwrap().expect("Content-Length");
                        let mut got = Vec::new();
                        io.read_len(n, &mut |b| got.extend_from_slice(b)).unwrap();
                        assert_eq!(
                            String::from_utf8_lossy(&got),
                            format!("{} {len}", sha256_hex(&body)),
                            "{src} {target}: body corrupted on the way"
                        );
                        sent.push((target, src.to_string()));
                        if head.has_token("connection", "close") {
                            break;
                        }
                    }
                }
                sent
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// Every request in `sent` reached the backend once, with X-Forwarded-For = its client.
#[track_caller]
fn check_backend(b: &Backend, sent: &[(String, String)]) {
    let heads = b.heads();
    for (target, src) in sent {
        let seen: Vec<_> = heads
            .iter()
            .filter(|h| h.start_line.split(' ').nth(1) == Some(target))
            .collect();
        assert_eq!(
            seen.len(),
            1,
            "{target} reached the backend {} times",
            seen.len()
        );
        assert_eq!(
            seen[0].header("x-forwarded-for"),
            Some(src.as_str()),
            "{target}"
        );
    }
}

#[test]
fn two_instances_behind_an_l4_tier() {
    let backend = Backend::start("app");
    let port = common::free_port();
    let mut a = instance("127.0.0.11", port, &backend);
    let b = instance("127.0.0.12", port, &backend);
    let addr_a: SocketAddr = format!("127.0.0.11:{port}").parse().unwrap();
    let addr_b: SocketAddr = format!("127.0.0.12:{port}").parse().unwrap();
    let opts = FwdOpts {
        bind: Some(TIER),
        ..Default::default()
    };
    let tier = Forwarder::start_opts(sa(&format!("{TIER}:0")), vec![addr_a, addr_b], opts.clone());

    // The instances only take connections from the tier: a client that goes around it is
    // closed at once, even with a header.
    let mut around = connect_from("127.0.0.1", addr_a).unwrap();
    use std::io::Write as _;
    let _ = around.write_all(&v2(sa("198.51.100.1:1"), addr_a, &[]));
    let (got, closed) = read_to_close(&mut around, Duration::from_secs(3));
    assert!(
        closed && got.is_empty(),
        "a client bypassing the tier was served"
    );

    // Phase 1: both instances in the tier.
    let t0 = Instant::now();
    let sent1 = load(tier.addr, "both", 8, 3);
    assert_eq!(sent1.len(), CLIENTS.len() * 8 * 3);
    check_backend(&backend, &sent1);
    assert!(
        tier.sent(0) > 0 && tier.sent(1) > 0,
        "tier used {} / {}",
        tier.sent(0),
        tier.sent(1)
    );
    for (name, p) in [("a", &a), ("b", &b)] {
        let s = stats(p);
        assert!(
            stat(&s, "proxy_protocol.accepted") > 0,
            "instance {name} served nothing: {s:?}"
        );
        assert_eq!(
            stat(&s, "proxy_protocol.untrusted"),
            // The harness's start-up probe (from 127.0.0.1), and on A the client that went around.
            1 + (name == "a") as i64,
            "{name}: {s:?}"
        );
    }
    eprintln!("phase 1: {} requests in {:?}", sent1.len(), t0.elapsed());

    // Phase 2: a slow request in flight on A (through a tier path that only knows A), then A
    // is drained from the tier and stopped with SIGTERM while new load goes to B.
    let only_a = Arc::new(Forwarder::start_opts(
        sa(&format!("{TIER}:0")),
        vec![addr_a],
        opts.clone(),
    ));
    let slow = {
        let only_a = only_a.clone();
        thread::spawn(move || {
            let s = connect_from("127.0.0.2", only_a.addr).unwrap();
            let mut io = BufStream::new(s);
            io.set_read_timeout(Duration::from_secs(15));
            io.write_all(&req("GET", "/delay/1500?slow", "multi.test", &[], b""))
                .unwrap();
            let head = io
                .read_head()
                .unwrap()
                .expect("slow request: closed before an answer");
            let n = head.content_length().unwrap().unwrap_or(0);
            io.read_len(n, &mut |_| {}).unwrap();
            head.start_line
        })
    };
    thread::sleep(Duration::from_millis(300));
    tier.drain(0);
    let to_a = tier.sent(0);
    a.signal(libc::SIGTERM);
    let sent2 = load(tier.addr, "drained", 6, 3);
    assert_eq!(
        slow.join().unwrap(),
        "HTTP/1.1 200 OK",
        "the in-flight request on the stopped instance"
    );
    let exit = a
        .wait_exit(Duration::from_secs(12))
        .expect("instance a did not stop within 12 s of SIGTERM");
    assert!(exit.success(), "instance a exited {exit}");
    assert_eq!(tier.sent(0), to_a, "the tier sent to a drained instance");
    check_backend(&backend, &sent2);
    let slow_head = backend
        .heads()
        .into_iter()
        .find(|h| h.start_line.contains("?slow"))
        .unwrap();
    assert_eq!(slow_head.header("x-forwarded-for"), Some("127.0.0.2"));

    // Phase 3: the tier puts the stopped instance back in its rotation (its health check has
    // not noticed): connects to it are refused and the tier falls over to B; nothing is lost.
    tier.undrain(0);
    // (Right after the exit, an io_uring instance's listener may still complete handshakes for
    // a moment: see `a_stopped_instance_refuses_connections`. Let it go first.)
    thread::sleep(Duration::from_millis(300));
    let sent3 = load(tier.addr, "failover", 6, 2);
    check_backend(&backend, &sent3);
    assert_eq!(tier.sent(0), to_a);
    let s = stats(&b);
    assert_eq!(stat(&s, "proxy_protocol.bad"), 0, "{s:?}");
    eprintln!("total {:?}", t0.elapsed());
}

/// Once an instance has exited after SIGTERM, its address refuses connections: a tier whose
/// health check is a TCP connect must not see a stopped instance as up, and connections sent
/// to it must be refused (the tier then tries another) rather than accepted and dropped.
/// Connecting right after the exit, in a loop for 300 ms.
#[test]
fn a_stopped_instance_refuses_connections() {
    let backend = Backend::start("app");
    for round in 0..6 {
        let port = common::free_port();
        let mut p = instance("127.0.0.11", port, &backend);
        let addr: SocketAddr = format!("127.0.0.11:{port}").parse().unwrap();
        // Some traffic first, as in production: a slow request in flight at the SIGTERM.
        let tier = Forwarder::start_opts(
            sa(&format!("{TIER}:0")),
            vec![addr],
            FwdOpts {
                bind: Some(TIER),
                ..Default::default()
            },
        );
        load(tier.addr, "warm", 2, 2);
        let slow = thread::spawn(move || {
            let s = connect_from("127.0.0.1", tier.addr).unwrap();
            let mut io = BufStream::new(s);
            io.write_all(&req("GET", "/delay/500", "multi.test", &[], b""))
                .unwrap();
            io.read_head().ok().flatten().map(|h| h.start_line)
        });
        thread::sleep(Duration::from_millis(100));
        p.signal(libc::SIGTERM);
        let exit = p
            .wait_exit(Duration::from_secs(12))
            .expect("no exit 12 s after SIGTERM");
        assert!(exit.success(), "{exit}");
        let t0 = Instant::now();
        let slow = slow.join().unwrap();
        let mut accepted = 0;
        let mut tries = 0;
        while t0.elapsed() < Duration::from_millis(300) {
            tries += 1;
            if let Ok(mut s) = connect_from(TIER, addr) {
                accepted += 1;
                use std::io::Write as _;
                let _ = s.write_all(&v2_local());
            }
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            accepted, 0,
            "round {round}: {accepted} of {tries} connects to {addr} succeeded after the instance exited"
        );
        assert_eq!(slow.as_deref(), Some("HTTP/1.1 200 OK"));
    }
}

/// The per-instance example of docs/operations.md ("Several instances behind an L4 tier") is
/// accepted by `--check` as written; `instance()` above runs the same settings on loopback.
#[test]
fn operations_doc_example_is_valid() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let section = &doc[doc
        .find("## Several instances behind an L4 tier")
        .expect("section missing")..];
    let start = section
        .find("```toml\n")
        .expect("no toml block in the section")
        + 8;
    let block = &section[start..start + section[start..].find("```").unwrap()];
    for key in [
        "accept_proxy = true",
        "trusted_proxies",
        "client_header_timeout",
        "stop_timeout",
    ] {
        assert!(block.contains(key), "the example lacks {key}");
    }
    let dir = common::proxy::temp_dir("ops-doc");
    let file = dir.join("instance.toml");
    std::fs::write(&file, block).unwrap();
    let out = std::process::Command::new(common::proxy::BIN)
        .arg("--config")
        .arg(&file)
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{block}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
