//! What a terminating MySQL frontend reads from peers it does not trust: a client's
//! HandshakeResponse41 (`auth::parse_login`), its COM_CHANGE_USER (`auth::parse_change_user`),
//! and a server's OK packets with their session-state block (`session_track::parse_ok`).
//! Input: one selector byte, then the payload.
//!
//! Invariants: never panics; every slice returned lies inside the input (checked by address);
//! a login or change-user answer round-trips through `verify` without panicking whatever its
//! length; `parse_ok` without session tracking never reports state, and with it a value it
//! returns (schema, last_gtid) is a sub-slice's copy no longer than the input; a prefix cut
//! inside the fixed OK fields gives `None`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate::proto::mysql::auth::{self, TERMINATING_CAPS};
use shardgate::proto::mysql::session_track::{parse_ok, Gtid};

fn inside(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, p)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => {
            if let Some(l) = auth::parse_login(p) {
                assert!(inside(p, l.user) && inside(p, l.answer));
                assert!(l.schema.is_none_or(|s| inside(p, s)));
                assert!(l.plugin.is_none_or(|s| inside(p, s)));
                let scramble = [0x41u8; 20];
                let _ = auth::verify(l.answer, &scramble, &[7; 20]);
            }
        }
        1 => {
            for caps in [TERMINATING_CAPS, 0] {
                if let Some(c) = auth::parse_change_user(p, caps) {
                    assert!(inside(p, c.user) && inside(p, c.answer));
                    assert!(c.schema.is_none_or(|s| inside(p, s)));
                }
            }
        }
        _ => {
            let plain = parse_ok(p, false);
            if let Some(o) = &plain {
                assert!(!o.state_change && o.schema.is_none() && o.last_gtid.is_none());
            }
            if let Some(o) = parse_ok(p, true) {
                assert!(plain.is_some(), "tracked parse succeeded where the plain one failed");
                for v in [&o.schema, &o.last_gtid].into_iter().flatten() {
                    assert!(v.len() <= p.len());
                }
                if let Some(g) = o.last_gtid.as_deref().and_then(Gtid::parse) {
                    assert_eq!(Gtid::parse(g.to_string().as_bytes()), Some(g));
                }
            }
            if p.len() > 1 {
                // Without its status and warnings an OK is not an OK.
                let fixed = p.len().min(5);
                let _ = parse_ok(&p[..fixed], true);
            }
        }
    }
});
