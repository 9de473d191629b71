//! ChunkedDecoder (`new` and `feed` only): no panic, and
//! - fed in pieces whose sizes come from the input (including empty pieces), it agrees with
//!   one-shot feeding: same total consumed, same done flag, same error;
//! - every feed consumes at most what it was given, and everything it was given until the
//!   body ends; after done, every feed returns `(0, true)`; after an error, the same error;
//! - its verdict matches an independent, slice-based reference parser of RFC 9112 §7.1 (chunk
//!   extensions by the §7.1.1 grammar, with BWS and quoted strings) with the same limits: where
//!   a complete body ends, whether the input is a valid unfinished prefix of a body, and the
//!   error's class (400 or 431);
//! - the byte before the end of a complete body leaves it unfinished.
//!
//! Input: byte 0 seeds the piece sizes, the rest is the body (and whatever follows it).
#![no_main]

mod common;

use common::chunked_ref::{class, reference, Verdict};
use common::Rng;
use libfuzzer_sys::fuzz_target;
use shardgate::proto::http::body::ChunkedDecoder;

fn one_shot(body: &[u8]) -> Verdict {
    let mut d = ChunkedDecoder::new();
    match d.feed(body) {
        Ok((n, true)) => {
            assert!(n <= body.len());
            assert_eq!(d.feed(b"0\r\n\r\n"), Ok((0, true)), "fed after done");
            Verdict::Done(n)
        }
        Ok((n, false)) => {
            assert_eq!(n, body.len(), "not done, yet did not consume everything");
            Verdict::More
        }
        Err(e) => {
            assert_eq!(d.feed(b"0\r\n\r\n"), Err(e), "error did not stick");
            Verdict::Err(e)
        }
    }
}

fn in_pieces(body: &[u8], rng: &mut Rng, max_piece: usize) -> Verdict {
    let mut d = ChunkedDecoder::new();
    let mut at = 0;
    let mut verdict = None;
    let mut consumed = 0;
    loop {
        let len = rng.upto(max_piece).min(body.len() - at);
        let piece = &body[at..at + len];
        match (&verdict, d.feed(piece)) {
            (None, Ok((n, done))) => {
                assert!(n <= len, "consumed {n} of a {len}-byte piece");
                consumed += n;
                if done {
                    verdict = Some(Verdict::Done(consumed));
                } else {
                    assert_eq!(n, len, "not done, yet did not consume the whole piece");
                }
            }
            (None, Err(e)) => verdict = Some(Verdict::Err(e)),
            (Some(Verdict::Done(..)), r) => {
                assert_eq!(r, Ok((0, true)), "fed after done");
            }
            (Some(Verdict::Err(e)), r) => assert_eq!(r, Err(*e), "error did not stick"),
            (Some(Verdict::More), _) => unreachable!(),
        }
        at += len;
        if at == body.len() && (len == 0 || rng.upto(3) == 0) {
            break;
        }
    }
    verdict.unwrap_or(Verdict::More)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let whole = one_shot(body);

    let want = reference(body, None).verdict;
    match (&whole, &want) {
        (Verdict::Err(_), Verdict::Err(_)) => assert_eq!(
            class(&whole),
            class(&want),
            "{whole:?} vs reference {want:?}"
        ),
        _ => assert_eq!(whole, want, "decoder vs reference"),
    }

    let mut rng = Rng::new(u64::from(seed) << 40 | body.len() as u64);
    let max_piece = match seed & 7 {
        0 => 1,
        1 => 2,
        2 => 3,
        3 => 7,
        4 => 64,
        _ => body.len().max(1),
    };
    for _ in 0..2 {
        let pieces = in_pieces(body, &mut rng, max_piece);
        assert_eq!(
            pieces, whole,
            "pieces (at most {max_piece} bytes) vs one shot"
        );
    }

    // A complete body ends exactly there: the bytes before it are a valid, unfinished prefix.
    if let Verdict::Done(n) = whole {
        let before = one_shot(&body[..n - 1]);
        assert_eq!(
            before,
            Verdict::More,
            "body ends at {n} but its {}-byte prefix: {before:?}",
            n - 1
        );
    }
});
