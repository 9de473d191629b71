//! `files::path::clean`, the gate between a request path and the file system, against a
//! reference written the obvious way: percent-decode everything first (a bad escape fails),
//! refuse an encoded `/` or `\`, any `\`, control byte or DEL, then split on `/`, drop empty
//! and `.` segments, refuse `..` and segments that are not UTF-8. The two must agree exactly,
//! and what `clean` returns can never climb out of the root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate::files::path::clean;

fn reference(p: &[u8]) -> Option<(Vec<u8>, bool)> {
    if p.first() != Some(&b'/') {
        return None;
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut dec = Vec::new();
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'%' {
            let h = hex(*p.get(i + 1)?)?;
            let l = hex(*p.get(i + 2)?)?;
            let d = h << 4 | l;
            if d == b'/' || d == b'\\' {
                return None;
            }
            // Mark decoded bytes so a decoded '/' cannot split (none can reach here).
            dec.push(d);
            i += 3;
        } else {
            dec.push(p[i]);
            i += 1;
        }
    }
    if dec.iter().any(|&b| b == b'\\' || b < 0x20 || b == 0x7f) {
        return None;
    }
    let segs: Vec<&[u8]> = dec.split(|&b| b == b'/').collect();
    let last = segs.last().copied().unwrap_or_default();
    let dir = last.is_empty() || last == b".";
    let mut kept = Vec::new();
    for s in segs {
        match s {
            b"" | b"." => {}
            b".." => return None,
            s if std::str::from_utf8(s).is_err() => return None,
            s => kept.push(s),
        }
    }
    Some((kept.join(&b'/'), dir))
}

fuzz_target!(|data: &[u8]| {
    let got = clean(data).ok().map(|c| (c.rel, c.dir));
    assert_eq!(got, reference(data), "{:?}", String::from_utf8_lossy(data));
    if let Some((rel, _)) = got {
        assert!(!rel.starts_with(b"/"));
        assert!(
            rel.is_empty()
                || rel.split(|&b| b == b'/').all(|s| !s.is_empty() && s != b"." && s != b"..")
        );
        assert!(!rel.contains(&0));
    }
});
