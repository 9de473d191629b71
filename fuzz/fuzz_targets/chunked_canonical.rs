//! ChunkedDecoder's forwarding path, `with_limit` + `feed_canonical` (what the proxy relays a
//! chunked request body with). These two methods came after the four original targets; if
//! they go, delete this file, its [[bin]] and corpus/chunked_canonical.
//! - Whole or in pieces, `feed_canonical` gives the same verdict as plain `feed` and the same
//!   output bytes; the verdict matches the reference parser with the same limit (where the body
//!   ends, unfinished, or the error class: 400, 413 for the limit, 431 for trailers).
//! - The output is the body re-framed canonically: a complete body gives exactly its chunks
//!   with lower-case hex sizes and no extensions, then "0" CRLF and the trailers as received
//!   (built from the reference's parse), which re-framed again is unchanged; an
//!   unfinished or refused body gives a valid unfinished prefix carrying all data consumed.
//!
//! Input: byte 0 seeds the piece sizes, byte 1 picks the limit, the rest is the body.
#![no_main]

mod common;

use common::chunked_ref::{class, reference, Verdict};
use common::Rng;
use libfuzzer_sys::fuzz_target;
use shardgate::proto::http::body::ChunkedDecoder;

fn verdict(
    r: Result<(usize, bool), shardgate::proto::http::ParseError>,
    offered: usize,
) -> Verdict {
    match r {
        Ok((n, true)) => Verdict::Done(n),
        Ok((n, false)) => {
            assert_eq!(n, offered, "not done, yet did not consume everything");
            Verdict::More
        }
        Err(e) => Verdict::Err(e),
    }
}

/// Feed with `feed_canonical` in pieces (`max_piece` 0 = one piece); (verdict, output).
fn canonical(
    body: &[u8],
    limit: Option<u64>,
    rng: &mut Rng,
    max_piece: usize,
) -> (Verdict, Vec<u8>) {
    let mut d = ChunkedDecoder::with_limit(limit);
    let mut out = Vec::new();
    if max_piece == 0 {
        let v = verdict(d.feed_canonical(body, &mut out), body.len());
        return (v, out);
    }
    let mut at = 0;
    let mut consumed = 0;
    while at < body.len() {
        let len = (1 + rng.upto(max_piece - 1)).min(body.len() - at);
        match d.feed_canonical(&body[at..at + len], &mut out) {
            Ok((n, true)) => {
                let before = out.len();
                assert_eq!(d.feed_canonical(b"more", &mut out), Ok((0, true)));
                assert_eq!(out.len(), before, "output after done");
                return (Verdict::Done(consumed + n), out);
            }
            Ok((n, false)) => assert_eq!(n, len, "not done, yet did not consume the piece"),
            Err(e) => {
                let before = out.len();
                assert_eq!(
                    d.feed_canonical(b"0\r\n\r\n", &mut out),
                    Err(e),
                    "error did not stick"
                );
                assert_eq!(out.len(), before, "output after an error");
                return (Verdict::Err(e), out);
            }
        }
        consumed += len;
        at += len;
    }
    (Verdict::More, out)
}

fuzz_target!(|data: &[u8]| {
    let [seed, lim, body @ ..] = data else {
        return;
    };
    let limit = match lim % 8 {
        0 => None,
        1 => Some(0),
        2 => Some(1),
        3 => Some(5),
        4 => Some(16),
        5 => Some(100),
        6 => Some(4096),
        _ => Some(u64::from(*lim) * 3),
    };
    let mut rng = Rng::new(u64::from(*seed) << 40 | body.len() as u64);
    let max_piece = [1, 2, 5, 64][usize::from(seed & 3)];

    let plain = verdict(ChunkedDecoder::with_limit(limit).feed(body), body.len());
    let (whole, out) = canonical(body, limit, &mut rng, 0);
    let (pieces, out_pieces) = canonical(body, limit, &mut rng, max_piece);
    assert_eq!(whole, plain, "feed_canonical vs feed");
    assert_eq!(
        pieces, whole,
        "feed_canonical in pieces of at most {max_piece} bytes"
    );
    assert!(out == out_pieces, "output depends on how the body is cut");

    let want = reference(body, limit);
    match (&whole, &want.verdict) {
        (Verdict::Err(_), Verdict::Err(_)) => {
            assert_eq!(
                class(&whole),
                class(&want.verdict),
                "{whole:?} vs reference {:?}",
                want.verdict
            )
        }
        (v, w) => assert_eq!(v, w, "decoder vs reference"),
    }

    let again = reference(&out, None);
    assert!(again.payload == want.payload, "re-framed data differs");
    match whole {
        Verdict::Done(_) => {
            // Exactly: lower-case hex sizes without leading zeros or extensions, data, CRLF;
            // "0" CRLF and the trailers as received.
            let mut want_out = Vec::new();
            let mut at = 0;
            for &size in &want.sizes {
                want_out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                want_out.extend_from_slice(&want.payload[at..at + size as usize]);
                want_out.extend_from_slice(b"\r\n");
                at += size as usize;
            }
            want_out.extend_from_slice(b"0\r\n");
            want_out.extend_from_slice(&want.trailers);
            assert!(
                out == want_out,
                "re-framed body {:?}, expected {:?}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want_out)
            );
            assert_eq!(
                again.verdict,
                Verdict::Done(out.len()),
                "re-framed body is not one complete body"
            );
            assert!(again.trailers == want.trailers, "re-framed trailers differ");
            let (twice, out2) = canonical(&out, None, &mut rng, 0);
            assert_eq!(twice, Verdict::Done(out.len()));
            assert!(out2 == out, "re-framing is not idempotent");
        }
        _ => assert_eq!(
            again.verdict,
            Verdict::More,
            "re-framed output is not a valid prefix"
        ),
    }
});
