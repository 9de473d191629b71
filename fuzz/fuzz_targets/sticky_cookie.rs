//! The cookie and URL-parameter readers of sticky sessions (`proto::http::cookie`), checked
//! against a model on requests the real parser accepted:
//! - `without_cookie(name)` answers `Some` exactly when a Cookie field holds a `name=` pair; the
//!   head it returns is the original without its Cookie fields, and the lines it returns are
//!   well-formed `Cookie:` fields holding every other non-empty pair, in order, field by field
//!   (a field left empty is dropped); a request rebuilt with them parses, and its Cookie fields
//!   say exactly that;
//! - `cookie_value(name)` is the value of the first `name=` pair (spaces trimmed, one pair of
//!   quotes removed);
//! - `url_param` returns a part of the target without `;`; `route_of` the non-empty text after
//!   the last `.`.
//!
//! Input: byte 0 picks the cookie name, then newline-separated lines: the request target, then
//! one Cookie field value per line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate::proto::http::cookie::{
    cookie_value, is_cookie_field, route_of, sl, trim_ows, url_param, without_cookie,
};
use shardgate::proto::http::parse::{parse_request, Limits};
use shardgate::proto::http::{RequestHead, Status};

const NAMES: [&[u8]; 4] = [b"SGROUTE", b"JSESSIONID", b"a", b"jsessionid"];

fn parse(buf: &[u8]) -> Option<RequestHead> {
    match parse_request(buf, &Limits::default(), Vec::new()) {
        Ok(Status::Complete(h)) => Some(h),
        _ => None,
    }
}

/// The model of one Cookie field: its pairs split on `;`, trimmed, empty ones dropped.
fn pairs(value: &[u8]) -> Vec<&[u8]> {
    value
        .split(|&b| b == b';')
        .map(trim_ows)
        .filter(|p| !p.is_empty())
        .collect()
}

/// A pair's name, when it has an `=`.
fn name_of(pair: &[u8]) -> Option<&[u8]> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    Some(trim_ows(&pair[..eq]))
}

fn value_of(pair: &[u8]) -> &[u8] {
    let eq = pair.iter().position(|&b| b == b'=').unwrap();
    let mut v = trim_ows(&pair[eq + 1..]);
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        v = &v[1..v.len() - 1];
    }
    v
}

fn is_within(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = NAMES[pick as usize % NAMES.len()];
    let mut lines = rest.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or_default();
    let mut buf = b"GET ".to_vec();
    buf.extend_from_slice(target);
    buf.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n");
    for l in lines.take(8) {
        buf.extend_from_slice(b"Cookie: ");
        buf.extend_from_slice(l);
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    let Some(head) = parse(&buf) else {
        return;
    };

    let fields: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|h| is_cookie_field(&buf, h))
        .map(|h| sl(&buf, h.value))
        .collect();
    let ours = |p: &&[u8]| name_of(p) == Some(name);

    // cookie_value: the first pair named `name`.
    let want = fields
        .iter()
        .flat_map(|f| f.split(|&b| b == b';'))
        .find(|p| name_of(p) == Some(name))
        .map(value_of);
    assert_eq!(cookie_value(&buf, &head.headers, name), want);

    // without_cookie against the model.
    let holds = fields.iter().any(|f| pairs(f).iter().any(ours));
    match without_cookie(&buf, &head, name) {
        None => assert!(!holds, "a field holds {name:?} but nothing was stripped"),
        Some((stripped, out)) => {
            assert!(holds, "stripped although no field holds {name:?}");
            let kept: Vec<_> = head
                .headers
                .iter()
                .filter(|h| !is_cookie_field(&buf, h))
                .cloned()
                .collect();
            assert_eq!(stripped.headers, kept);
            let want: Vec<Vec<&[u8]>> = fields
                .iter()
                .map(|f| pairs(f).into_iter().filter(|p| !ours(p)).collect::<Vec<_>>())
                .filter(|ps| !ps.is_empty())
                .collect();
            // Every line is one well-formed field; together they hold the model's pairs.
            let mut got: Vec<Vec<&[u8]>> = Vec::new();
            let mut rest: &[u8] = &out;
            while !rest.is_empty() {
                let end = rest.windows(2).position(|w| w == b"\r\n").expect("a line ends");
                let line = &rest[..end];
                let value = line.strip_prefix(b"Cookie: ").expect("a Cookie field");
                assert!(!value.contains(&b'\r') && !value.contains(&b'\n'));
                got.push(value.split(|&b| b == b';').map(trim_ows).collect());
                rest = &rest[end + 2..];
            }
            assert_eq!(got, want);
            // What goes upstream parses, with exactly those Cookie fields.
            let mut up = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
            up.extend_from_slice(&out);
            up.extend_from_slice(b"\r\n");
            let again = parse(&up).expect("the rewritten head parses");
            let values: Vec<Vec<&[u8]>> = again
                .headers
                .iter()
                .filter(|h| is_cookie_field(&up, h))
                .map(|h| sl(&up, h.value).split(|&b| b == b';').map(trim_ows).collect())
                .collect();
            assert_eq!(values, want);
        }
    }

    // url_param and route_of.
    let origin = sl(&buf, head.origin);
    for n in [name, b"jsessionid".as_slice()] {
        if let Some(v) = url_param(origin, n) {
            assert!(is_within(v, origin) && !v.contains(&b';'), "{v:?} from {origin:?}");
            if let Some(r) = route_of(v) {
                assert!(!r.is_empty() && !r.contains(&b'.') && v.ends_with(r));
                assert_eq!(v[v.len() - r.len() - 1], b'.');
            }
        }
    }
});
