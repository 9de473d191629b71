//! The field parsers the cache and static files read, fed arbitrary values:
//! - `date::parse`: whatever it accepts, `date::write` writes back as an IMF-fixdate that
//!   parses to the same second;
//! - `range::resolve`: the ranges it returns are non-empty, inside the length, at most
//!   `MAX_RANGES`, and do not overlap; it never panics on any length;
//! - `CacheControl` and `split_list`: never panic; `max-age` read from a simple list agrees
//!   with a reference that splits on commas;
//! - `answer::etag_matches` style comparison is exercised through `files::accepts` (q-values).
//!
//! Input: byte 0 picks the parser, bytes 1..9 a length for ranges, the rest is the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate::proto::http::cache_control::{split_list, CacheControl};
use shardgate::proto::http::range::{resolve, Ranges, MAX_RANGES};
use shardgate::proto::http::date;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => {
            if let Some(t) = date::parse(rest) {
                let mut out = Vec::new();
                date::write(t, &mut out);
                assert_eq!(out.len(), 29);
                assert_eq!(date::parse(&out), Some(t), "{:?}", String::from_utf8_lossy(&out));
            }
        }
        1 => {
            if rest.len() < 8 {
                return;
            }
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) % (1 << 40);
            match resolve(&rest[8..], len) {
                Ranges::Whole | Ranges::Unsatisfiable => {}
                Ranges::Parts(p) => {
                    assert!(!p.is_empty() && p.len() <= MAX_RANGES);
                    for r in &p {
                        assert!(r.start < r.end && r.end <= len, "{r:?} of {len}");
                    }
                    let mut s = p.clone();
                    s.sort_by_key(|r| r.start);
                    assert!(s.windows(2).all(|w| w[0].end <= w[1].start));
                }
            }
        }
        2 => {
            let cc = CacheControl::of([rest].into_iter());
            // Reference for lists of plain items: the last max-age wins only if alone.
            if rest.iter().all(|b| b.is_ascii_alphanumeric() || b"-=, ".contains(b)) {
                let ages: Vec<&[u8]> = rest
                    .split(|&b| b == b',')
                    .map(|i| i.trim_ascii())
                    .filter(|i| {
                        let name = i.split(|&b| b == b'=').next().unwrap_or_default();
                        name.trim_ascii().eq_ignore_ascii_case(b"max-age")
                    })
                    .collect();
                match ages.as_slice() {
                    [] => assert_eq!(cc.max_age, None),
                    [one] => {
                        // No value, or not only digits after the '=': invalid.
                        let v = match one.iter().position(|&b| b == b'=') {
                            Some(eq) => one[eq + 1..].trim_ascii(),
                            None => &[][..],
                        };
                        let ok = !v.is_empty() && v.iter().all(u8::is_ascii_digit);
                        assert_eq!(cc.max_age.map(|m| m.is_some()), Some(ok));
                    }
                    _ => assert_eq!(cc.max_age, Some(None)),
                }
            }
            for item in split_list(rest) {
                assert!(!item.is_empty());
                assert_eq!(item, item.trim_ascii());
            }
        }
        _ => {
            let _ = shardgate::files::accepts([rest].into_iter(), b"gzip");
        }
    }
});
