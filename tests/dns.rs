//! The test DNS server (`tests/common/dns.rs`) checked two ways: by raw hand-built queries
//! (what it sends, byte for byte where it matters), and end to end by the proxy's own resolver
//! (`shardgate::dns`), which is how the black-box tests will use it.

mod common;

use common::DnsServer;
use shardgate::dns::{ErrorKind, Resolver, SrvTarget};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::time::{Duration, Instant};

fn resolver(dns: &DnsServer) -> Resolver {
    Resolver {
        servers: vec![dns.addr()],
        timeout: Duration::from_millis(500),
        attempts: 1,
    }
}

fn raw_query(dns: &DnsServer, id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&q, dns.addr()).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, dns.addr());
    buf[..n].to_vec()
}

#[test]
fn raw_answers() {
    let dns = DnsServer::start();
    dns.set_a("web.test", vec![Ipv4Addr::new(10, 0, 0, 1)]);
    let r = raw_query(&dns, 0xABCD, "Web.test", 1);
    // ID, QR|AA|RD|RA, NOERROR, one question, one answer.
    assert_eq!(r[..12], [0xAB, 0xCD, 0x85, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    // The question echoed as sent, then the answer: pointer, A, IN, TTL 1, 4 bytes.
    assert_eq!(&r[12..26], b"\x03Web\x04test\x00\x00\x01\x00\x01");
    assert_eq!(
        &r[26..],
        b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x01\x00\x04\x0a\x00\x00\x01"
    );
    // AAAA of a name with only A records: NODATA; unknown name: NXDOMAIN.
    let r = raw_query(&dns, 1, "web.test", 28);
    assert_eq!(r[3] & 0x0F, 0);
    assert_eq!(r[6..8], [0, 0]);
    let r = raw_query(&dns, 2, "nope.test", 1);
    assert_eq!(r[3] & 0x0F, 3);
    dns.remove("web.test");
    let r = raw_query(&dns, 3, "web.test", 1);
    assert_eq!(r[3] & 0x0F, 3);
    assert_eq!(dns.queries(), 4);
}

#[test]
fn resolver_against_the_test_server() {
    let dns = DnsServer::start();
    let r = resolver(&dns);
    dns.set_a(
        "api.internal",
        vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
    );
    dns.set_aaaa("api.internal", vec![Ipv6Addr::LOCALHOST]);
    assert_eq!(
        r.lookup_ip("api.internal").unwrap(),
        vec![
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 2]),
            IpAddr::from(Ipv6Addr::LOCALHOST)
        ]
    );
    assert_eq!(dns.queries(), 2);

    dns.set_a("a.svc", vec![Ipv4Addr::new(10, 1, 0, 1)]);
    dns.set_srv(
        "_http._tcp.svc",
        vec![
            (10, 60, 8080, "a.svc"),
            (10, 40, 8081, "b.svc"),
            (5, 1, 9000, "a.svc"),
        ],
    );
    // b.svc unknown: no additional, the follow-up lookup fails, the target stays without
    // addresses.
    let got = r.lookup_srv("_http._tcp.svc").unwrap();
    let a = vec![IpAddr::from([10, 1, 0, 1])];
    assert_eq!(
        got,
        vec![
            SrvTarget {
                priority: 5,
                weight: 1,
                port: 9000,
                target: "a.svc".into(),
                addrs: a.clone()
            },
            SrvTarget {
                priority: 10,
                weight: 60,
                port: 8080,
                target: "a.svc".into(),
                addrs: a
            },
            SrvTarget {
                priority: 10,
                weight: 40,
                port: 8081,
                target: "b.svc".into(),
                addrs: vec![]
            },
        ]
    );
    // SRV, then A for b.svc (NXDOMAIN: no AAAA).
    assert_eq!(dns.queries(), 4);

    dns.remove("api.internal");
    let e = r.lookup_ip("api.internal").unwrap_err();
    assert!(e.is_nxdomain());
    assert_eq!(
        e.to_string(),
        format!(
            "dns: api.internal: no such name (NXDOMAIN) from {}",
            dns.addr()
        )
    );
    dns.set_a("empty.internal", vec![]);
    let e = r.lookup_ip("empty.internal").unwrap_err();
    assert_eq!(
        e.to_string(),
        "dns: empty.internal: no addresses (A or AAAA)"
    );
}

#[test]
fn tcp_fallback() {
    let dns = DnsServer::start();
    let r = resolver(&dns);
    // 40 A records do not fit in 512 bytes: TC over UDP, the whole answer over TCP.
    let many: Vec<Ipv4Addr> = (1..=40).map(|i| Ipv4Addr::new(10, 2, 0, i)).collect();
    dns.set_a("many.test", many.clone());
    let got = r.lookup_ip("many.test").unwrap();
    assert_eq!(
        got,
        many.iter().map(|&ip| IpAddr::from(ip)).collect::<Vec<_>>()
    );
    // A over UDP then TCP, AAAA over UDP (NODATA fits).
    assert_eq!(dns.queries(), 3);
    dns.set_truncate(true);
    dns.set_a("small.test", vec![Ipv4Addr::new(10, 3, 0, 1)]);
    assert_eq!(
        r.lookup_ip("small.test").unwrap(),
        vec![IpAddr::from([10, 3, 0, 1])]
    );
    assert_eq!(dns.queries(), 7);
}

#[test]
fn silent_server_times_out() {
    let dns = DnsServer::start();
    dns.set_a("web.test", vec![Ipv4Addr::new(10, 0, 0, 1)]);
    dns.set_silent(true);
    let mut r = resolver(&dns);
    r.timeout = Duration::from_millis(100);
    r.attempts = 2;
    let t0 = Instant::now();
    let e = r.lookup_ip("web.test").unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Timeout { .. }), "{e}");
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(dns.queries(), 4);
    dns.set_silent(false);
    assert_eq!(
        r.lookup_ip("web.test").unwrap(),
        vec![IpAddr::from([10, 0, 0, 1])]
    );
}

/// The fuzz target's seeds (`fuzz/corpus/dns_response`, written by `fuzz/make_corpus.py`)
/// are what they claim: valid responses (or the NXDOMAIN and TC they are named after), so
/// the fuzzer starts from inputs that reach the record parsing.
#[test]
fn fuzz_seeds_are_valid_responses() {
    use shardgate::dns::wire::{parse_response, Error, QType};
    const NAMES: [&str; 4] = [
        "example.com",
        "_http._tcp.example.com",
        "a",
        "Api.Internal.",
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dns_response");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let name = NAMES[data[0] as usize % NAMES.len()];
        let buf = &data[1..];
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        // The question's type, after its (uncompressed) name.
        let mut end = 12;
        while buf[end] != 0 {
            end += 1 + buf[end] as usize;
        }
        let qtype = match u16::from_be_bytes([buf[end + 1], buf[end + 2]]) {
            1 => QType::A,
            28 => QType::Aaaa,
            33 => QType::Srv,
            t => panic!("query type {t}"),
        };
        let file = path.file_name().unwrap().to_str().unwrap();
        let got = parse_response(buf, id, name, qtype);
        match file {
            "nxdomain" => assert_eq!(got, Err(Error::NxDomain)),
            "truncated" => assert_eq!(got, Err(Error::Truncated)),
            _ => {
                let a = got.unwrap_or_else(|e| panic!("{file}: {e}"));
                assert!(!a.addrs.is_empty() || !a.srv.is_empty(), "{file}: {a:?}");
            }
        }
        seen += 1;
    }
    assert!(seen >= 6);
}
