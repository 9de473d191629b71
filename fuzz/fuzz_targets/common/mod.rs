//! Helpers shared by the HTTP head targets: an owned, comparable outcome of one parse, span
//! checks, and the prefix ("stateless incremental parser") check.
#![allow(dead_code)]

pub mod chunked_ref;

use std::fmt::Debug;

use shardgate::proto::http::{ParseError, Span, Status};

/// One parse, reduced to something comparable: `K` is an owned copy of every field of the head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out<K> {
    Partial,
    Complete(K),
    Err(ParseError),
}

impl<K> Out<K> {
    pub fn of<H>(r: Result<Status<H>, ParseError>, key: impl FnOnce(H) -> K) -> Self {
        match r {
            Ok(Status::Partial) => Out::Partial,
            Ok(Status::Complete(h)) => Out::Complete(key(h)),
            Err(e) => Out::Err(e),
        }
    }

    pub fn is_partial(&self) -> bool {
        matches!(self, Out::Partial)
    }
}

/// Which error class (HTTP status) an error maps to; limit errors are the ones a larger limit
/// can turn into something else.
pub fn is_limit_error(e: &ParseError) -> bool {
    matches!(
        e,
        ParseError::UriTooLong | ParseError::HeadersTooLarge | ParseError::BodyTooLarge
    )
}

/// `s` lies inside `buf[..head_len]`.
pub fn check_span(what: &str, s: Span, head_len: usize, buf: &[u8]) {
    assert!(
        s.start <= s.end && (s.end as usize) <= head_len && head_len <= buf.len(),
        "{what} span {s:?} outside head of {head_len} bytes (buffer {})",
        buf.len()
    );
}

/// A small deterministic generator for split points and piece sizes.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform-ish in 0..=n.
    pub fn upto(&mut self, n: usize) -> usize {
        (self.next() % (n as u64 + 1)) as usize
    }
}

/// The parser is stateless over "everything read so far": for any k, parsing `buf[..k]` must
/// give Partial before some point k* and exactly the whole buffer's answer from k* on (for a
/// complete head, k* = head_len). Checks k* - 1, k*, and the caller's `ks`; the first
/// non-Partial prefix of an error is found by bisection, and every non-Partial answer seen on
/// the way must already be the final one.
pub fn check_prefixes<K: PartialEq + Debug>(
    buf: &[u8],
    whole: &Out<K>,
    head_len: Option<usize>,
    ks: &[usize],
    parse: impl Fn(&[u8]) -> Out<K>,
) {
    let n = buf.len();
    let at = |k: usize| parse(&buf[..k]);
    let expect_at = |k: usize, kstar: usize| {
        let got = at(k);
        if k < kstar {
            assert!(
                got.is_partial(),
                "prefix of {k} bytes gave {got:?}, but the whole buffer ({n} bytes) first \
                 answers at {kstar} with {whole:?}"
            );
        } else {
            assert_eq!(
                &got, whole,
                "prefix of {k} bytes disagrees with the whole buffer ({n} bytes, first answer at {kstar})"
            );
        }
    };
    let kstar = match whole {
        Out::Partial => n + 1,
        Out::Complete(_) => {
            let h = head_len.expect("complete heads have a length");
            assert!(h >= 1 && h <= n);
            h
        }
        Out::Err(_) => {
            assert!(
                at(0).is_partial(),
                "empty buffer is not Partial: {:?}",
                at(0)
            );
            let (mut lo, mut hi) = (0usize, n);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let got = at(mid);
                if got.is_partial() {
                    lo = mid;
                } else {
                    assert_eq!(
                        &got, whole,
                        "prefix of {mid} bytes gives another error than the whole ({n} bytes)"
                    );
                    hi = mid;
                }
            }
            hi
        }
    };
    if kstar <= n {
        if kstar > 0 {
            expect_at(kstar - 1, kstar);
        }
        expect_at(kstar, kstar);
    }
    for &k in ks {
        expect_at(k.min(n), kstar);
    }
}
