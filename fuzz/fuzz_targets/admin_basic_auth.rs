//! The admin listener's `Authorization: Basic` reader on any header value: it never panics,
//! and on a value built from a user (no `:`) and a password it gives exactly them back
//! (RFC 7617: the user ends at the first colon), up to its bound of 4,096 base64 characters
//! (longer credentials are refused, never decoded).
//!
//! Input: the header value as sent; its bytes before a NUL, if any, are also used as
//! `user:password` to build a well-formed value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate::admin_parse_basic as parse_basic;

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_basic(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (user, password) = text.split_once('\0').unwrap_or((text, ""));
    if user.contains(':') {
        return;
    }
    let encoded = base64(format!("{user}:{password}").as_bytes());
    let value = format!("Basic {encoded}");
    if encoded.trim_end_matches('=').len() > 4096 {
        assert_eq!(parse_basic(value.as_bytes()), None, "over the bound");
        return;
    }
    assert_eq!(
        parse_basic(value.as_bytes()),
        Some((user.to_owned(), password.to_owned())),
        "{value}"
    );
});
