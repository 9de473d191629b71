//! Query digest normaliser: any bytes, cut into arbitrary pieces: no panic, and
//! - the digest does not depend on how the statement is cut (pieces sized by byte 0's seed,
//!   and byte by byte, on one reused normaliser);
//! - the text is bounded (`MAX_TEXT` plus the `...` marking a cut) and valid UTF-8 (a
//!   `Box<str>`) without ASCII control characters: it is one line;
//! - when the text is neither cut nor lossy, the hash is FNV-1a of the text.
//!
//! Input: byte 0 seeds the piece sizes, the rest is the statement.
#![no_main]

mod common;

use common::Rng;
use libfuzzer_sys::fuzz_target;
use shardgate::proto::mysql::digest::{fnv1a, Normalizer, FNV_START, MAX_TEXT};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stmt)) = data.split_first() else {
        return;
    };
    let whole = Normalizer::digest(stmt);
    assert!(
        whole.text.len() <= MAX_TEXT + 3,
        "text of {} bytes",
        whole.text.len()
    );
    assert!(
        !whole.text.chars().any(|c| c.is_ascii_control()),
        "control character in {:?}",
        whole.text
    );
    if !whole.text.contains('\u{fffd}') && !whole.text.ends_with("...") {
        assert_eq!(whole.hash, fnv1a(FNV_START, whole.text.as_bytes()));
    }

    let mut rng = Rng::new(u64::from(seed));
    let max = 1 + (seed as usize % 17);
    let mut n = Normalizer::new();
    let mut rest = stmt;
    while !rest.is_empty() {
        let k = (1 + rng.upto(max - 1)).min(rest.len());
        let (piece, tail) = rest.split_at(k);
        n.feed(piece);
        rest = tail;
    }
    assert_eq!(n.finish(), whole, "pieces of at most {max}");
    for b in stmt {
        n.feed(std::slice::from_ref(b));
    }
    assert_eq!(n.finish(), whole, "byte by byte");
});
