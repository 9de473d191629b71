//! parse_request: no panic, and
//! - every span of a complete head lies inside `buf[..head_len]`, `head_len <= buf.len()`, and
//!   the head is what its bytes say (method name, target bytes, CRLF CRLF at the end, header
//!   names/values well formed, at most one Host, the framing agrees with the fields);
//! - the parser is stateless and incremental: every prefix of the buffer answers Partial up to
//!   some length and the whole buffer's exact answer from there on (checked at the boundary,
//!   at bisection points and at random lengths), with a dirty recycled header vector;
//! - limits are monotone: with no limits at all, a head accepted under the drawn limits is
//!   accepted identically, and a non-limit error stays the same error;
//! - empty lines before the request line only shift every span by their length.
//!
//! Input: byte 0 picks the limits, byte 1 seeds the prefix lengths, the rest is the buffer.
#![no_main]

mod common;

use common::{check_prefixes, check_span, is_limit_error, Out, Rng};
use libfuzzer_sys::fuzz_target;
use shardgate::proto::http::parse::{parse_request, Limits};
use shardgate::proto::http::{Framing, HeaderSpan, Method, RequestHead, Span};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    method: Method,
    method_span: Span,
    minor_version: u8,
    target: Span,
    origin: Span,
    path: Span,
    absolute_authority: Option<Span>,
    host: Option<Span>,
    headers: Vec<HeaderSpan>,
    framing: Framing,
    close: bool,
    expect_continue: bool,
    upgrade_websocket: bool,
    head_len: usize,
}

fn key(h: RequestHead) -> Key {
    Key {
        method: h.method,
        method_span: h.method_span,
        minor_version: h.minor_version,
        target: h.target,
        origin: h.origin,
        path: h.path,
        absolute_authority: h.absolute_authority,
        host: h.host,
        headers: h.headers,
        framing: h.framing,
        close: h.close,
        expect_continue: h.expect_continue,
        upgrade_websocket: h.upgrade_websocket,
        head_len: h.head_len,
    }
}

fn shifted(k: &Key, by: u32) -> Key {
    let s = |x: Span| Span {
        start: x.start + by,
        end: x.end + by,
    };
    Key {
        method_span: s(k.method_span),
        target: s(k.target),
        origin: s(k.origin),
        path: s(k.path),
        absolute_authority: k.absolute_authority.map(s),
        host: k.host.map(s),
        headers: k
            .headers
            .iter()
            .map(|h| HeaderSpan {
                name: s(h.name),
                value: s(h.value),
            })
            .collect(),
        head_len: k.head_len + by as usize,
        ..k.clone()
    }
}

const NO_LIMITS: Limits = Limits {
    max_request_line: usize::MAX,
    max_header_bytes: usize::MAX,
    max_headers: usize::MAX,
    max_body: None,
};

fn limits_of(b: u8) -> Limits {
    Limits {
        max_request_line: [8 * 1024, 16, 40, 300][usize::from(b & 3)],
        max_header_bytes: [32 * 1024, 48, 128, 1024][usize::from((b >> 2) & 3)],
        max_headers: [100, 0, 1, 4][usize::from((b >> 4) & 3)],
        max_body: [None, Some(0), Some(10), Some(1 << 20)][usize::from(b >> 6)],
    }
}

/// A recycled vector holding junk from an earlier request: the parser must clear it.
fn dirty() -> Vec<HeaderSpan> {
    let junk = Span { start: 7, end: 3 };
    vec![
        HeaderSpan {
            name: junk,
            value: junk
        };
        3
    ]
}

fn parse(buf: &[u8], l: &Limits, v: Vec<HeaderSpan>) -> Out<Key> {
    Out::of(parse_request(buf, l, v), key)
}

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [f, r @ ..] = s {
        if !ows(*f) {
            break;
        }
        s = r;
    }
    while let [r @ .., l] = s {
        if !ows(*l) {
            break;
        }
        s = r;
    }
    s
}

/// Everything a complete head claims, re-derived from the bytes.
fn check_head(buf: &[u8], k: &Key, l: &Limits) {
    let h = k.head_len;
    assert!(
        h <= buf.len() && h >= 4,
        "head_len {h} of {} bytes",
        buf.len()
    );
    let head = &buf[..h];
    assert_eq!(
        &head[h - 4..],
        b"\r\n\r\n",
        "head does not end with CRLF CRLF"
    );
    assert!(h <= l.max_header_bytes, "head of {h} bytes over the limit");
    assert!(
        k.headers.len() <= l.max_headers,
        "too many headers accepted"
    );
    for (what, s) in [
        ("method", k.method_span),
        ("target", k.target),
        ("origin", k.origin),
        ("path", k.path),
    ] {
        check_span(what, s, h, buf);
    }
    if let Some(a) = k.absolute_authority {
        check_span("authority", a, h, buf);
    }
    if let Some(s) = k.host {
        check_span("host", s, h, buf);
    }
    for f in &k.headers {
        check_span("field name", f.name, h, buf);
        check_span("field value", f.value, h, buf);
    }

    // Request line: method SP target SP HTTP/1.x CRLF, after optional empty lines.
    let m = k.method_span.of(buf);
    assert!(!m.is_empty() && m.iter().all(|&b| tchar(b)));
    let lead = k.method_span.start as usize;
    assert!(lead % 2 == 0 && buf[..lead].chunks(2).all(|c| c == b"\r\n"));
    let want_method = match m {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        b"PATCH" => Method::Patch,
        b"TRACE" => Method::Trace,
        _ => Method::Other,
    };
    assert_eq!(k.method, want_method);
    assert_eq!(k.target.start, k.method_span.end + 1);
    let t = k.target.of(buf);
    assert!(!t.is_empty() && t.iter().all(|&b| (0x21..=0x7e).contains(&b)));
    let v = k.target.end as usize + 1;
    let want_line = format!("HTTP/1.{}\r\n", k.minor_version);
    assert_eq!(&buf[v - 1..v + 10], format!(" {want_line}").as_bytes());
    assert!(
        v + 10 - lead <= l.max_request_line,
        "request line over its limit"
    );
    // Origin and path: inside the target (or the '/' of "://"), path without '?', not empty.
    for s in [k.origin, k.path] {
        assert!(s.start >= k.target.start && s.end <= k.target.end);
    }
    let p = k.path.of(buf);
    assert!(!p.is_empty() && !p.contains(&b'?'));
    match k.absolute_authority {
        Some(a) => {
            assert!(t[0] != b'/');
            assert!(!a.is_empty() && !a.of(buf).contains(&b'@'));
        }
        None => assert!(t[0] == b'/' || t == b"*"),
    }

    // Field lines: contiguous, name ":" OWS value OWS CRLF, no CR/LF/NUL in values.
    let mut pos = v + 10;
    let mut hosts = Vec::new();
    let (mut te, mut cl) = (false, None::<u64>);
    for f in &k.headers {
        assert_eq!(f.name.start as usize, pos, "field lines not contiguous");
        let name = f.name.of(buf);
        assert!(!name.is_empty() && name.iter().all(|&b| tchar(b)));
        let line_end = pos + buf[pos..h].windows(2).position(|w| w == b"\r\n").unwrap();
        assert_eq!(buf[f.name.end as usize], b':');
        assert!((f.value.end as usize) <= line_end);
        let raw = &buf[f.name.end as usize + 1..line_end];
        let value = f.value.of(buf);
        assert_eq!(trim(raw), value, "value not trimmed as sent");
        assert!(value
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
        if name.eq_ignore_ascii_case(b"host") {
            hosts.push(f.value);
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = true;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            for m in value.split(|&b| b == b',') {
                let m = trim(m);
                assert!(!m.is_empty() && m.iter().all(u8::is_ascii_digit));
                let n: u64 = std::str::from_utf8(m).unwrap().parse().unwrap();
                assert!(
                    cl.is_none_or(|c| c == n),
                    "differing Content-Length accepted"
                );
                cl = Some(n);
            }
        }
        pos = line_end + 2;
    }
    assert_eq!(pos + 2, h, "fields do not end at the empty line");
    assert!(hosts.len() <= 1, "several Host fields accepted");
    assert_eq!(k.host, hosts.first().copied());
    if k.minor_version == 1 {
        assert!(k.host.is_some(), "HTTP/1.1 without Host accepted");
    }
    // Smuggling rules: never both framings, never TE in 1.0, the framing the fields declare.
    if te {
        assert!(
            cl.is_none(),
            "Transfer-Encoding and Content-Length both accepted"
        );
        assert_eq!(k.minor_version, 1, "Transfer-Encoding in HTTP/1.0 accepted");
        assert_eq!(k.framing, Framing::Chunked);
    } else {
        let want = cl.map_or(Framing::None, Framing::Length);
        assert_eq!(k.framing, want);
        if let (Some(n), Some(max)) = (cl, l.max_body) {
            assert!(n <= max, "body over max_body accepted");
        }
    }
    assert!(k.method != Method::Other || m != b"CONNECT");
    if k.upgrade_websocket {
        assert!(k.method == Method::Get && k.minor_version == 1);
    }
    if k.expect_continue {
        assert_eq!(k.minor_version, 1);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let limits = limits_of(data[0]);
    let mut rng = Rng::new(u64::from(data[1]) << 32 | data.len() as u64);
    let buf = &data[2..];
    let n = buf.len();

    let whole = parse(buf, &limits, Vec::new());
    let head_len = match &whole {
        Out::Complete(k) => {
            check_head(buf, k, &limits);
            Some(k.head_len)
        }
        _ => None,
    };
    // Same answer with a dirty recycled vector.
    assert_eq!(
        parse(buf, &limits, dirty()),
        whole,
        "recycled vector changes the answer"
    );

    let ks = [rng.upto(n), rng.upto(n), n.saturating_sub(1 + rng.upto(3))];
    check_prefixes(buf, &whole, head_len, &ks, |b| parse(b, &limits, dirty()));

    // Monotone in the limits.
    let free = parse(buf, &NO_LIMITS, Vec::new());
    match (&whole, &free) {
        (Out::Partial, f) => assert!(f.is_partial(), "no limits: {f:?}, drawn limits: Partial"),
        (Out::Complete(_), f) => assert_eq!(f, &whole, "no limits changes a complete head"),
        (Out::Err(e), f) if !is_limit_error(e) => {
            assert_eq!(f, &whole, "no limits changes a non-limit error")
        }
        (Out::Err(_), Out::Partial) => {}
        (Out::Err(_), Out::Complete(k)) => check_head(buf, k, &NO_LIMITS),
        (Out::Err(_), Out::Err(_)) => {}
    }

    // Empty lines before the request line shift everything.
    let mut lead = b"\r\n".to_vec();
    lead.extend_from_slice(buf);
    let led = parse(&lead, &NO_LIMITS, Vec::new());
    match (&free, &led) {
        (Out::Complete(a), Out::Complete(b)) => assert_eq!(b, &shifted(a, 2)),
        (a, b) => assert_eq!(a, b, "a leading CRLF changes the answer"),
    }
});
