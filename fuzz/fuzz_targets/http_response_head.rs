//! parse_response: no panic, and
//! - every span of a complete head lies inside `buf[..head_len]`, `head_len <= buf.len()`, the
//!   status line and field lines are what the bytes say, the framing follows RFC 9112 §6.3
//!   (HEAD, 1xx, 204 and 304 have no body; never both Transfer-Encoding and Content-Length);
//! - the parser is stateless and incremental (every prefix answers Partial up to some length,
//!   then exactly the whole buffer's answer), with a dirty recycled header vector;
//! - the request method changes nothing but the framing (checked against every other method);
//! - limits are monotone: with no limits a complete head stays identical, a non-limit error
//!   stays the same error.
//!
//! Input: byte 0 picks the request method and the limits, byte 1 seeds the prefix lengths, the
//! rest is the buffer.
#![no_main]

mod common;

use common::{check_prefixes, check_span, is_limit_error, Out, Rng};
use libfuzzer_sys::fuzz_target;
use shardgate::proto::http::parse::parse_response;
use shardgate::proto::http::{Framing, HeaderSpan, Method, ResponseHead, Span};

const METHODS: [Method; 10] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Options,
    Method::Patch,
    Method::Connect,
    Method::Trace,
    Method::Other,
];

#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    status: u16,
    minor_version: u8,
    headers: Vec<HeaderSpan>,
    framing: Framing,
    close: bool,
    head_len: usize,
}

fn key(h: ResponseHead) -> Key {
    Key {
        status: h.status,
        minor_version: h.minor_version,
        headers: h.headers,
        framing: h.framing,
        close: h.close,
        head_len: h.head_len,
    }
}

fn dirty() -> Vec<HeaderSpan> {
    let junk = Span { start: 9, end: 2 };
    vec![
        HeaderSpan {
            name: junk,
            value: junk
        };
        5
    ]
}

fn parse(
    buf: &[u8],
    m: Method,
    max_bytes: usize,
    max_headers: usize,
    v: Vec<HeaderSpan>,
) -> Out<Key> {
    Out::of(parse_response(buf, m, max_bytes, max_headers, v), key)
}

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(s: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let a = s.iter().position(|b| !ows(b)).unwrap_or(s.len());
    let z = s.iter().rposition(|b| !ows(b)).map_or(a, |z| z + 1);
    &s[a..z.max(a)]
}

fn check_head(buf: &[u8], k: &Key, m: Method, max_bytes: usize, max_headers: usize) {
    let h = k.head_len;
    assert!(
        h <= buf.len() && h >= 15,
        "head_len {h} of {} bytes",
        buf.len()
    );
    assert!(
        h <= max_bytes && k.headers.len() <= max_headers,
        "limit not enforced"
    );
    assert_eq!(&buf[h - 4..h], b"\r\n\r\n");
    assert!((100..=599).contains(&k.status));
    assert_eq!(
        &buf[..12],
        format!("HTTP/1.{} {}", k.minor_version, k.status).as_bytes()
    );
    let status_end = buf.windows(2).position(|w| w == b"\r\n").unwrap();
    assert!(buf[12..status_end]
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
    let mut pos = status_end + 2;
    let (mut te, mut te_last_chunked, mut cl) = (false, false, None::<u64>);
    let mut close = false;
    let mut keep_alive = false;
    for f in &k.headers {
        check_span("field name", f.name, h, buf);
        check_span("field value", f.value, h, buf);
        assert_eq!(f.name.start as usize, pos, "field lines not contiguous");
        let name = f.name.of(buf);
        assert!(!name.is_empty() && name.iter().all(|&b| tchar(b)));
        assert_eq!(buf[f.name.end as usize], b':');
        let line_end = pos + buf[pos..h].windows(2).position(|w| w == b"\r\n").unwrap();
        let value = f.value.of(buf);
        assert_eq!(trim(&buf[f.name.end as usize + 1..line_end]), value);
        assert!(value
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
        let members = || {
            value
                .split(|&b| b == b',')
                .map(trim)
                .filter(|m| !m.is_empty())
        };
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            assert_eq!(k.minor_version, 1, "Transfer-Encoding in HTTP/1.0 accepted");
            te = true;
            for m in members() {
                te_last_chunked = m.eq_ignore_ascii_case(b"chunked");
            }
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
        if name.eq_ignore_ascii_case(b"connection") {
            close |= members().any(|m| m.eq_ignore_ascii_case(b"close"));
            keep_alive |= members().any(|m| m.eq_ignore_ascii_case(b"keep-alive"));
        }
        pos = line_end + 2;
    }
    assert_eq!(pos + 2, h, "fields do not end at the empty line");
    assert!(
        !(te && cl.is_some()),
        "Transfer-Encoding and Content-Length both accepted"
    );
    let declared = match (te, cl) {
        (true, _) if te_last_chunked => Framing::Chunked,
        (true, _) => Framing::UntilClose,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::UntilClose,
    };
    let bodyless =
        m == Method::Head || (100..200).contains(&k.status) || k.status == 204 || k.status == 304;
    assert_eq!(k.framing, if bodyless { Framing::None } else { declared });
    let want_close =
        close || (k.minor_version == 0 && !keep_alive) || k.framing == Framing::UntilClose;
    assert_eq!(k.close, want_close);
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let method = METHODS[usize::from(data[0] % 10)];
    let (max_bytes, max_headers) = match data[0] / 10 % 4 {
        0 => (32 * 1024, 100),
        1 => (20, 0),
        2 => (64, 2),
        _ => (300, 8),
    };
    let mut rng = Rng::new(u64::from(data[1]) << 32 | data.len() as u64);
    let buf = &data[2..];
    let n = buf.len();

    let whole = parse(buf, method, max_bytes, max_headers, Vec::new());
    let head_len = match &whole {
        Out::Complete(k) => {
            check_head(buf, k, method, max_bytes, max_headers);
            Some(k.head_len)
        }
        _ => None,
    };
    assert_eq!(parse(buf, method, max_bytes, max_headers, dirty()), whole);

    let ks = [rng.upto(n), rng.upto(n), n.saturating_sub(1 + rng.upto(3))];
    check_prefixes(buf, &whole, head_len, &ks, |b| {
        parse(b, method, max_bytes, max_headers, dirty())
    });

    // The method changes only the framing.
    let other = METHODS[rng.upto(9)];
    let alt = parse(buf, other, max_bytes, max_headers, Vec::new());
    match (&whole, &alt) {
        (Out::Complete(a), Out::Complete(b)) => {
            check_head(buf, b, other, max_bytes, max_headers);
            assert_eq!(
                Key {
                    framing: b.framing,
                    close: b.close,
                    ..a.clone()
                },
                *b,
                "{method:?} and {other:?} differ beyond the framing"
            );
        }
        (a, b) => assert_eq!(a, b, "{method:?} and {other:?} give different answers"),
    }

    // Monotone in the limits.
    let free = parse(buf, method, usize::MAX, usize::MAX, Vec::new());
    match (&whole, &free) {
        (Out::Partial, f) => assert!(f.is_partial(), "no limits: {f:?}, limits: Partial"),
        (Out::Complete(_), f) => assert_eq!(f, &whole, "no limits changes a complete head"),
        (Out::Err(e), f) if !is_limit_error(e) => assert_eq!(f, &whole),
        (Out::Err(_), Out::Complete(k)) => check_head(buf, k, method, usize::MAX, usize::MAX),
        (Out::Err(_), _) => {}
    }
});
