//! The message reader of the binary-upgrade channel (`upgrade::wire::decode`) on arbitrary
//! bytes: it never panics, and whatever it accepts encodes back to exactly the same bytes
//! (one canonical form: a message cannot mean two things). Then the counter totals carried in
//! `counters` messages are read from the decoded fields (`Totals::add_fields`), which must not
//! panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate::upgrade_wire::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok((kind, fields)) = decode(data) {
        let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(encode(&kind, &refs), data, "decode accepted a non-canonical message");
        let mut t = shardgate::upgrade_totals::Totals::default();
        t.add_fields(&fields);
        for (_, v) in &t.0 {
            assert!(!v.is_empty());
        }
    }
});
