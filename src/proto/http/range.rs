//! `Range: bytes=...` (RFC 9110 §14.2) resolved against a representation's length. A header
//! that is not a valid `bytes` range set is ignored (the whole representation is sent); one
//! whose ranges all lie past the end is unsatisfiable (416). To keep a client from asking for
//! the same bytes many times over (CVE-2011-3192), more than [`MAX_RANGES`] ranges, or ranges
//! that overlap, make the request answered whole (§14.2 lets a server ignore such a Range).

use std::ops::Range;

/// Most ranges honoured in one request.
pub const MAX_RANGES: usize = 16;

#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// No usable Range: send the whole representation (200).
    Whole,
    /// Nothing satisfiable: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
    /// One or more byte ranges (end exclusive), in the order asked, each within the length.
    Parts(Vec<Range<u64>>),
}

fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

/// Resolve a Range field value against a representation of `len` bytes.
pub fn resolve(value: &[u8], len: u64) -> Ranges {
    let v = value.trim_ascii();
    let Some(set) = v
        .get(..6)
        .filter(|u| u.eq_ignore_ascii_case(b"bytes="))
        .map(|_| &v[6..])
    else {
        return Ranges::Whole;
    };
    let mut parts: Vec<Range<u64>> = Vec::new();
    let mut any = false;
    for spec in set.split(|&b| b == b',') {
        let spec = spec.trim_ascii();
        if spec.is_empty() {
            continue;
        }
        any = true;
        let Some(dash) = memchr::memchr(b'-', spec) else {
            return Ranges::Whole;
        };
        let (first, last) = (spec[..dash].trim_ascii(), spec[dash + 1..].trim_ascii());
        let r = if first.is_empty() {
            // suffix-range: the last N bytes.
            let Some(n) = number(last) else {
                return Ranges::Whole;
            };
            if n == 0 || len == 0 {
                continue;
            }
            len.saturating_sub(n)..len
        } else {
            let Some(a) = number(first) else {
                return Ranges::Whole;
            };
            let b = if last.is_empty() {
                None
            } else {
                match number(last) {
                    Some(b) if b >= a => Some(b),
                    _ => return Ranges::Whole,
                }
            };
            if a >= len {
                continue;
            }
            a..b.map_or(len, |b| b.saturating_add(1).min(len))
        };
        parts.push(r);
        if parts.len() > MAX_RANGES {
            return Ranges::Whole;
        }
    }
    if !any {
        return Ranges::Whole;
    }
    if parts.is_empty() {
        return Ranges::Unsatisfiable;
    }
    let mut sorted: Vec<&Range<u64>> = parts.iter().collect();
    sorted.sort_by_key(|r| r.start);
    if sorted.windows(2).any(|w| w[1].start < w[0].end) {
        return Ranges::Whole;
    }
    Ranges::Parts(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn ranges() {
        use Ranges::*;
        let p = |v: &str| resolve(v.as_bytes(), 10);
        assert_eq!(p("bytes=0-4"), Parts(vec![0..5]));
        assert_eq!(p("bytes=5-"), Parts(vec![5..10]));
        assert_eq!(p("bytes=-3"), Parts(vec![7..10]));
        assert_eq!(p("bytes=-30"), Parts(vec![0..10]));
        assert_eq!(p("bytes=8-100"), Parts(vec![8..10]));
        assert_eq!(p("Bytes=0-0, 9-9"), Parts(vec![0..1, 9..10]));
        assert_eq!(p("bytes=10-"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        assert_eq!(p("bytes=10-20, 30-"), Unsatisfiable);
        assert_eq!(p("bytes=10-20, 3-4"), Parts(vec![3..5]));
        for whole in [
            "",
            "bytes=",
            "bytes=,",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=0-1-2",
            "bytes 0-1",
            "bytes=0-4,2-6",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(p(whole), Whole, "{whole}");
        }
        let many = (0..17)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(resolve(format!("bytes={many}").as_bytes(), 100), Whole);
        assert_eq!(resolve(b"bytes=-5", 0), Unsatisfiable);
    }
}
