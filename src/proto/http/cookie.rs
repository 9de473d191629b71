//! Reading cookies and URL parameters out of a parsed request, and taking one cookie out of
//! a request head: pure functions of bytes the request parser already accepted, used by
//! sticky sessions (`proxy::http::sticky`). They never panic on any input (fuzzed by
//! `fuzz/fuzz_targets/sticky_cookie.rs` against a model).

use super::{HeaderSpan, RequestHead, Span};

/// The bytes of span `s` in `buf` (empty when out of range).
pub fn sl(buf: &[u8], s: Span) -> &[u8] {
    buf.get(s.start as usize..s.end as usize)
        .unwrap_or_default()
}

/// `s` without spaces and tabs at either end.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A `Cookie` header field (any case).
pub fn is_cookie_field(buf: &[u8], h: &HeaderSpan) -> bool {
    sl(buf, h.name).eq_ignore_ascii_case(b"cookie")
}

/// A cookie pair's name and value (`name=value`, spaces around either trimmed, a quoted value
/// unquoted); `None` for a pair without `=`.
pub fn cookie_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = memchr::memchr(b'=', pair)?;
    let name = trim_ows(&pair[..eq]);
    let mut value = trim_ows(&pair[eq + 1..]);
    if let [b'"', inner @ .., b'"'] = value {
        value = inner;
    }
    Some((name, value))
}

/// The value of the first cookie called `name` in the request's Cookie fields.
pub fn cookie_value<'a>(buf: &'a [u8], headers: &[HeaderSpan], name: &[u8]) -> Option<&'a [u8]> {
    headers
        .iter()
        .filter(|h| is_cookie_field(buf, h))
        .flat_map(|h| sl(buf, h.value).split(|&b| b == b';'))
        .filter_map(cookie_pair)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The value of URL parameter `name` in an origin-form target: a `;name=` path parameter
/// (Apache `scolonpathdelim`), else a `name=` query parameter.
pub fn url_param<'a>(target: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if name.is_empty() {
        return None;
    }
    let q = memchr::memchr(b'?', target).unwrap_or(target.len());
    let (path, query) = (&target[..q], target.get(q + 1..).unwrap_or_default());
    let query = &query[..memchr::memchr(b'#', query).unwrap_or(query.len())];
    // Path parameters: every ';' segment of every path segment.
    let from_path = path
        .split(|&b| b == b';')
        .skip(1)
        .map(|p| &p[..memchr::memchr(b'/', p).unwrap_or(p.len())])
        .find_map(|p| p.strip_prefix(name)?.strip_prefix(b"="));
    from_path.or_else(|| {
        query
            .split(|&b| b == b'&' || b == b';')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix(b"="))
    })
}

/// The route in a session id: what follows its last `.` (`ABC123.node1` → `node1`).
pub fn route_of(session: &[u8]) -> Option<&[u8]> {
    let dot = memchr::memrchr(b'.', session)?;
    Some(&session[dot + 1..]).filter(|r| !r.is_empty())
}

/// When a Cookie field of `head` holds cookie `name`: the head without any Cookie field, and
/// the Cookie fields to write instead (`Cookie: ...\r\n` each, the other pairs of each field
/// in their order, joined by `; `; a field left empty is not written). `None`: leave the head.
pub fn without_cookie(
    buf: &[u8],
    head: &RequestHead,
    name: &[u8],
) -> Option<(RequestHead, Vec<u8>)> {
    let ours = |h: &HeaderSpan| {
        is_cookie_field(buf, h)
            && sl(buf, h.value)
                .split(|&b| b == b';')
                .filter_map(cookie_pair)
                .any(|(n, _)| n == name)
    };
    if !head.headers.iter().any(ours) {
        return None;
    }
    let mut lines = Vec::new();
    for h in head.headers.iter().filter(|h| is_cookie_field(buf, h)) {
        let mut first = true;
        for pair in sl(buf, h.value).split(|&b| b == b';').map(trim_ows) {
            if pair.is_empty() || cookie_pair(pair).is_some_and(|(n, _)| n == name) {
                continue;
            }
            lines.extend_from_slice(if first { b"Cookie: " } else { b"; " });
            lines.extend_from_slice(pair);
            first = false;
        }
        if !first {
            lines.extend_from_slice(b"\r\n");
        }
    }
    let mut stripped = head.clone();
    stripped.headers.retain(|h| !is_cookie_field(buf, h));
    Some((stripped, lines))
}
