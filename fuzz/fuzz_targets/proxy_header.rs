//! The PROXY protocol header parser (`proto::proxy_protocol::parse`) on arbitrary bytes, and its
//! writers on what it returns. Input: the bytes a client sent first, as is.
//!
//! Invariants: never panics; a header is at most `MAX_HEADER` bytes (a v1 line at most
//! `V1_MAX` and ending in CRLF, a v2 header exactly 16 + its declared length) and parsing
//! exactly its bytes gives the same answer, so nothing after it is ever consumed; every strict
//! prefix of it is `Incomplete`; once a prefix is refused every longer one is refused the same
//! way (refusal is final, a caller may act on it); `Incomplete` only below the size limits;
//! the addresses equal an independent reading (v1: split on spaces and `std` parsing, no leading
//! zero in ports; v2: the bytes at their offsets; none for UNKNOWN, LOCAL, UNSPEC, UNIX);
//! both addresses are of one family, and re-encoding them with `write_v1` and `write_v2` parses
//! back to the same addresses.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use shardgate::proto::proxy_protocol::{
    parse, write_v1, write_v2, Error, Parsed, MAX_HEADER, V1_MAX,
};

/// The first `k` at which the answer is not `Incomplete`, and that answer (at most `data.len()`).
fn first_answer(data: &[u8]) -> Option<(usize, Result<Parsed, Error>)> {
    (0..=data.len()).find_map(|k| match parse(&data[..k]) {
        Ok(Parsed::Incomplete) => None,
        r => Some((k, r)),
    })
}

/// The addresses of an accepted v1 line (CRLF removed), re-derived with `std`: split on single
/// spaces, `TCP4`/`TCP6` and exactly four fields, or `UNKNOWN` and none.
fn v1_oracle(line: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    // What follows UNKNOWN is ignored, whatever its bytes.
    if line.starts_with(b"PROXY UNKNOWN") {
        return None;
    }
    let text = std::str::from_utf8(line).expect("an accepted TCP line is ASCII");
    let fields: Vec<&str> = text.split(' ').collect();
    assert_eq!(fields.len(), 6, "{text:?}");
    let ip = |s: &str| -> IpAddr {
        let ip: IpAddr = s.parse().expect("address");
        assert_eq!(ip.is_ipv6(), fields[1] == "TCP6", "{text:?}");
        ip
    };
    let port = |s: &str| -> u16 {
        assert!(s == "0" || !s.starts_with('0'), "leading zero in {text:?}");
        s.parse().expect("port")
    };
    Some((
        SocketAddr::new(ip(fields[2]), port(fields[4])),
        SocketAddr::new(ip(fields[3]), port(fields[5])),
    ))
}

/// The addresses of an accepted v2 header, read straight from its bytes.
fn v2_oracle(h: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let port = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    match (h[12], h[13]) {
        (0x21, 0x11) => {
            assert!(
                h.len() >= 28,
                "TCP4 header without its 12-byte address block"
            );
            let ip = |at: usize| IpAddr::from([h[at], h[at + 1], h[at + 2], h[at + 3]]);
            Some((
                SocketAddr::new(ip(16), port(24)),
                SocketAddr::new(ip(20), port(26)),
            ))
        }
        (0x21, 0x21) => {
            assert!(
                h.len() >= 52,
                "TCP6 header without its 36-byte address block"
            );
            let ip = |at: usize| {
                let b: [u8; 16] = h[at..at + 16].try_into().expect("16 bytes");
                IpAddr::from(b)
            };
            Some((
                SocketAddr::new(ip(16), port(48)),
                SocketAddr::new(ip(32), port(50)),
            ))
        }
        (0x20, _) | (0x21, 0x00 | 0x31) => None,
        other => panic!("accepted version/command and family {other:x?}"),
    }
}

fn check_reencode(src: SocketAddr, dst: SocketAddr) {
    assert_eq!(src.is_ipv4(), dst.is_ipv4(), "mixed families {src} {dst}");
    for v1 in [true, false] {
        let mut out = Vec::new();
        if v1 {
            write_v1(src, dst, &mut out);
            assert!(out.len() <= V1_MAX);
        } else {
            write_v2(src, dst, &mut out);
        }
        assert_eq!(
            parse(&out),
            Ok(Parsed::Header {
                len: out.len(),
                addrs: Some((src, dst))
            }),
            "re-encoded {src} {dst} (v1: {v1})"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(2 * MAX_HEADER)];
    let whole = parse(data);
    let first = first_answer(data);
    match whole {
        Ok(Parsed::Header { len, addrs }) => {
            assert!(len <= data.len() && len <= MAX_HEADER && len > 0);
            assert_eq!(parse(&data[..len]), whole);
            // Every strict prefix is Incomplete: the first answer comes at exactly `len`.
            assert_eq!(first, Some((len, whole)));
            if data[0] == b'P' {
                assert!(len <= V1_MAX && data[..len].ends_with(b"\r\n"), "{data:?}");
                assert!(data[..len - 2].iter().all(|&b| b != b'\n'));
                assert_eq!(addrs, v1_oracle(&data[..len - 2]), "{data:?}");
            } else {
                assert_eq!(
                    len,
                    16 + usize::from(u16::from_be_bytes([data[14], data[15]]))
                );
                assert_eq!(addrs, v2_oracle(&data[..len]), "{data:?}");
            }
            if let Some((src, dst)) = addrs {
                check_reencode(src, dst);
            }
        }
        Ok(Parsed::Incomplete) => {
            assert_eq!(first, None);
            assert!(data.len() < MAX_HEADER);
            if data.first() == Some(&b'P') {
                assert!(data.len() < V1_MAX);
            }
        }
        Err(e) => {
            // Refusal is final: from the first refused prefix on, the same error.
            let (k, r) = first.expect("the whole buffer is refused");
            assert_eq!(r, Err(e), "first refusal at {k} differs from the whole's");
            for j in k..data.len().min(k + 64) {
                assert_eq!(parse(&data[..j]), Err(e), "refusal at {k} not final at {j}");
            }
            if e == Error::NotProxy {
                assert!(k <= 12, "NotProxy decided late, at {k}");
            }
        }
    }
});
