//! The DNS response reader (`dns::wire::parse_response`) on arbitrary bytes: it never panics,
//! and every name it returns (the canonical name, SRV targets, additional-section owners) is
//! a valid name: `.`, or at most 253 bytes of 1..=63-byte labels of printable ASCII. The query
//! ID is always the response's own, so the parser gets past the ID check; every other header
//! field, the question and the records are the fuzzer's.
//!
//! Input: byte 0 picks the name queried (one of `NAMES`), the rest is the response; it is
//! parsed as the answer to an A, an AAAA and an SRV query. The same bytes with the ID changed
//! must be refused as another query's answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate::dns::wire::{parse_response, Answer, Error, QType};

const NAMES: [&str; 4] = [
    "example.com",
    "_http._tcp.example.com",
    "a",
    "Api.Internal.",
];

fn valid_name(name: &str) -> bool {
    if name == "." {
        return true;
    }
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_graphic() && b != b'.')
        })
}

fn check(a: &Answer, qtype: QType) {
    assert!(valid_name(&a.canonical), "canonical {:?}", a.canonical);
    for s in &a.srv {
        assert!(valid_name(&s.target), "SRV target {:?}", s.target);
    }
    for (owner, _) in &a.additional {
        assert!(valid_name(owner), "additional {owner:?}");
    }
    match qtype {
        QType::A => assert!(a.addrs.iter().all(|ip| ip.is_ipv4()) && a.srv.is_empty()),
        QType::Aaaa => assert!(a.addrs.iter().all(|ip| ip.is_ipv6()) && a.srv.is_empty()),
        QType::Srv => assert!(a.addrs.is_empty()),
    }
    assert_eq!(a.ttl.is_some(), !a.addrs.is_empty() || !a.srv.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, buf)) = data.split_first() else {
        return;
    };
    let name = NAMES[pick as usize % NAMES.len()];
    let id = match buf {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    };
    for qtype in QType::ALL {
        match parse_response(buf, id, name, qtype) {
            Ok(a) => {
                check(&a, qtype);
                assert!(buf.len() >= 12);
            }
            Err(Error::BadName(_)) => panic!("{name:?} is a valid name"),
            Err(Error::WrongId { .. }) => panic!("the ID is the response's own"),
            Err(_) => {}
        }
        if buf.len() >= 12 {
            let other = id.wrapping_add(1);
            assert_eq!(
                parse_response(buf, other, name, qtype),
                Err(Error::WrongId { got: id, want: other })
            );
        }
    }
});
