//! Writing a parsed head for the other side of the proxy: requests go upstream as HTTP/1.1
//! (HTTP/1.0 for HTTP/1.0 clients),
//! responses go to the client as HTTP/1.1. Hop-by-hop fields (RFC 9110 §7.6.1) are dropped,
//! X-Forwarded-For / X-Forwarded-Proto are set, a request's Content-Length is written once in
//! canonical form (RFC 9110 §8.6: `5, 5` or two equal fields become one), request fields whose
//! name holds an underscore are dropped unless allowed (`Content_Length` must not reach a server
//! that maps `_` to `-`), and everything else passes byte for byte.
//!
//! Runs of fields that are kept are copied from the read buffer with one `extend_from_slice`
//! (the CRLFs between them included), so a typical head costs a handful of copies.

use std::net::IpAddr;

use super::{HeaderSpan, RequestHead, ResponseHead, Span};

/// What the proxy knows about the client that the upstream should learn.
#[derive(Clone, Copy, Debug)]
pub struct ForwardInfo {
    pub client_ip: IpAddr,
    /// The scheme the client used: "http".
    pub proto: &'static str,
    /// Drop `Expect` because the proxy answers 100-continue itself.
    pub strip_expect: bool,
    /// Forward field names containing `_` (nginx `underscores_in_headers`); dropped otherwise.
    pub underscores: bool,
}

#[inline]
fn sl(buf: &[u8], s: Span) -> &[u8] {
    buf.get(s.start as usize..s.end as usize)
        .unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Host,
    Connection,
    /// Keep-Alive, Proxy-Connection, TE, Trailer: always dropped.
    HopByHop,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    /// Written anew from the parsed framing (requests) or kept (responses).
    ContentLength,
    /// Transfer-Encoding: always kept (validated: chunked is last).
    TransferEncoding,
    Other,
}

#[inline]
fn kind(name: &[u8]) -> Kind {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is(b"te") => Kind::HopByHop,
        4 if is(b"host") => Kind::Host,
        6 if is(b"expect") => Kind::Expect,
        7 if is(b"upgrade") => Kind::Upgrade,
        7 if is(b"trailer") => Kind::HopByHop,
        10 if is(b"connection") => Kind::Connection,
        10 if is(b"keep-alive") => Kind::HopByHop,
        14 if is(b"content-length") => Kind::ContentLength,
        15 if is(b"x-forwarded-for") => Kind::XForwardedFor,
        16 if is(b"proxy-connection") => Kind::HopByHop,
        17 if is(b"x-forwarded-proto") => Kind::XForwardedProto,
        17 if is(b"transfer-encoding") => Kind::TransferEncoding,
        _ => Kind::Other,
    }
}

/// Is `name` listed in any Connection field? Those fields are hop-by-hop too.
fn named_by_connection(buf: &[u8], headers: &[HeaderSpan], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| kind(sl(buf, h.name)) == Kind::Connection)
        .any(|h| {
            sl(buf, h.value)
                .split(|&b| b == b',')
                .any(|m| trim_ows(m).eq_ignore_ascii_case(name))
        })
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Copies kept fields; consecutive kept fields are copied as one slice of the buffer.
struct Runs<'a> {
    buf: &'a [u8],
    run: Option<(usize, usize)>,
}

impl Runs<'_> {
    #[inline]
    fn keep(&mut self, h: &HeaderSpan, out: &mut Vec<u8>) {
        let (start, end) = (h.name.start as usize, h.value.end as usize);
        if let Some((_, e)) = &mut self.run {
            // Only what the parser left between two fields (trailing OWS, CRLF) may be
            // copied along: a caller that removed a field from the list must not see it back.
            let gap = self.buf.get(*e..start).unwrap_or(b"x");
            if let [ows @ .., b'\r', b'\n'] = gap {
                if ows.iter().all(|&b| b == b' ' || b == b'\t') {
                    *e = end;
                    return;
                }
            }
            self.flush(out);
        }
        self.run = Some((start, end));
    }

    #[inline]
    fn flush(&mut self, out: &mut Vec<u8>) {
        if let Some((s, e)) = self.run.take() {
            out.extend_from_slice(self.buf.get(s..e).unwrap_or_default());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Does any Connection field name something other than the options we handle anyway? Only
/// then must every other field be looked up in it.
fn connection_names_fields(buf: &[u8], headers: &[HeaderSpan]) -> bool {
    headers
        .iter()
        .filter(|h| kind(sl(buf, h.name)) == Kind::Connection)
        .any(|h| {
            sl(buf, h.value)
                .split(|&b| b == b',')
                .map(trim_ows)
                .any(|m| {
                    !(m.is_empty()
                        || m.eq_ignore_ascii_case(b"close")
                        || m.eq_ignore_ascii_case(b"keep-alive")
                        || m.eq_ignore_ascii_case(b"upgrade"))
                })
        })
}

/// Copy `headers` to `out` without the hop-by-hop fields and those `skip` says to drop
/// (`skip` also sees the name, for the fields of kind `Other`).
fn copy_fields(
    buf: &[u8],
    headers: &[HeaderSpan],
    out: &mut Vec<u8>,
    mut skip: impl FnMut(Kind, &[u8]) -> bool,
) {
    let check_named = connection_names_fields(buf, headers);
    let mut runs = Runs { buf, run: None };
    for h in headers {
        let name = sl(buf, h.name);
        let k = kind(name);
        let dropped = match k {
            Kind::Connection | Kind::HopByHop => true,
            // Fields the sender marked hop-by-hop. Host, framing and the fields handled
            // through `skip` are never dropped this way: "Connection: content-length" must
            // not unframe a body on its way through.
            Kind::Other => {
                (check_named && named_by_connection(buf, headers, name)) || skip(k, name)
            }
            Kind::TransferEncoding => false,
            _ => skip(k, name),
        };
        if dropped {
            runs.flush(out);
        } else {
            runs.keep(h, out);
        }
    }
    runs.flush(out);
}

/// Write `head` (parsed from `buf`) as an HTTP/1.1 request for the upstream.
///
/// For an absolute-form target the authority becomes the Host; a request without Host
/// (HTTP/1.0) gets an empty one (RFC 9112 §3.2). Transfer-Encoding is kept as received (the
/// caller re-frames a chunked body); a Content-Length is written once, from the parsed framing.
pub fn write_request_head(buf: &[u8], head: &RequestHead, info: &ForwardInfo, out: &mut Vec<u8>) {
    out.reserve(head.head_len + 96);
    out.extend_from_slice(sl(buf, head.method_span));
    out.push(b' ');
    let origin = sl(buf, head.origin);
    // An absolute-form target without a path ("http://h?q") has an origin starting at '?'.
    if origin.first() != Some(&b'/') && origin != b"*" {
        out.push(b'/');
    }
    out.extend_from_slice(origin);
    // An HTTP/1.0 client cannot read a chunked response, and a server may only send one to an
    // HTTP/1.1 request: forward 1.0 requests as 1.0 (the response then comes by length or close).
    out.extend_from_slice(if head.minor_version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });

    match (head.absolute_authority, head.host) {
        // RFC 9112 §3.2.2: the target's authority overrides Host.
        (Some(a), _) => {
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(sl(buf, a));
            out.extend_from_slice(b"\r\n");
        }
        (None, None) => out.extend_from_slice(b"Host: \r\n"),
        (None, Some(_)) => {}
    }

    let absolute = head.absolute_authority.is_some();
    let mut xff = false;
    copy_fields(buf, &head.headers, out, |k, name| match k {
        Kind::Host => absolute,
        Kind::Upgrade => !head.upgrade_websocket,
        Kind::Expect => info.strip_expect,
        Kind::XForwardedFor => {
            xff = true;
            true
        }
        Kind::XForwardedProto | Kind::ContentLength => true,
        Kind::Other => !info.underscores && memchr::memchr(b'_', name).is_some(),
        _ => false,
    });
    if let super::Framing::Length(n) = head.framing {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }

    if head.upgrade_websocket {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if head.minor_version == 0 {
        // HTTP/1.0 closes by default; ask to keep the upstream connection for the pool.
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if xff {
        for h in &head.headers {
            if kind(sl(buf, h.name)) == Kind::XForwardedFor && !h.value.is_empty() {
                out.extend_from_slice(sl(buf, h.value));
                out.extend_from_slice(b", ");
            }
        }
    }
    push_ip(out, info.client_ip);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(info.proto.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Write `head` (parsed from `buf`) as an HTTP/1.1 response for the client.
///
/// `upgrade`: the request asked for a WebSocket upgrade; with a 101 the Upgrade field is kept
/// and `Connection: upgrade` written. Otherwise the Connection field says what the proxy will
/// do with the client connection: `close` when it will not be kept alive, `keep-alive` for an
/// HTTP/1.0 client that keeps it (1.0 closes by default).
pub fn write_response_head(
    buf: &[u8],
    head: &ResponseHead,
    client_keep_alive: bool,
    client_http10: bool,
    upgrade: bool,
    out: &mut Vec<u8>,
) {
    out.reserve(head.head_len + 48);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, head.status);
    out.push(b' ');
    out.extend_from_slice(reason(buf, head.head_len));
    out.extend_from_slice(b"\r\n");

    let switching = upgrade && head.status == 101;
    copy_fields(buf, &head.headers, out, |k, _| match k {
        Kind::Upgrade => !switching,
        _ => false,
    });

    if switching {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if head.status < 200 {
        // Interim responses say nothing about the connection; the final one will.
    } else if !client_keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if client_http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase of the status line at the start of `buf` (empty if there is none).
pub(crate) fn reason(buf: &[u8], head_len: usize) -> &[u8] {
    let head = buf.get(..head_len).unwrap_or(buf);
    let end = memchr::memchr(b'\r', head).unwrap_or(0);
    match head.get(12) {
        Some(b' ') => head.get(13..end).unwrap_or_default(),
        _ => &[],
    }
}

pub(crate) fn push_status(out: &mut Vec<u8>, status: u16) {
    let s = status.min(999);
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
}

pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; upstreams expect a.b.c.d.
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if o >= 100 {
                    out.push(b'0' + o / 100);
                }
                if o >= 10 {
                    out.push(b'0' + o / 10 % 10);
                }
                out.push(b'0' + o % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse_request, parse_response, Limits};
    use super::super::{Method, Status};
    use super::*;

    fn info(ip: &str, strip_expect: bool) -> ForwardInfo {
        ForwardInfo {
            client_ip: ip.parse().unwrap(),
            proto: "http",
            strip_expect,
            underscores: false,
        }
    }

    fn rewrite_request(input: &[u8], fi: &ForwardInfo) -> String {
        let head = match parse_request(input, &Limits::default(), Vec::new()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        let mut out = b"previous".to_vec();
        write_request_head(input, &head, fi, &mut out);
        assert!(out.starts_with(b"previous"), "appends to out");
        // What we write must itself parse, and as a complete head.
        match parse_request(&out[8..], &Limits::default(), Vec::new()) {
            Ok(Status::Complete(h)) => assert_eq!(h.head_len, out.len() - 8),
            other => panic!("rewritten head does not parse: {other:?}"),
        }
        String::from_utf8(out[8..].to_vec()).unwrap()
    }

    fn rewrite_response(input: &[u8], m: Method, ka: bool, h10: bool, up: bool) -> String {
        let head = match parse_response(input, m, 8192, 100, Vec::new()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        let mut out = Vec::new();
        write_response_head(input, &head, ka, h10, up, &mut out);
        match parse_response(&out, m, 8192, 100, Vec::new()) {
            Ok(Status::Complete(h)) => assert_eq!(h.head_len, out.len()),
            other => panic!("rewritten head does not parse: {other:?}"),
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_rewrites() {
        let cases: &[(&[u8], ForwardInfo, &str)] = &[
            (
                b"GET /a?b HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: t\r\n\r\n",
                info("10.0.0.1", false),
                "GET /a?b HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: t\r\n\
                 X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            // HTTP/1.0 without Host: stays 1.0 (no chunked reply possible), empty Host, keep-alive asked.
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
                info("::ffff:192.168.100.7", false),
                "GET / HTTP/1.0\r\nHost: \r\nConnection: keep-alive\r\nX-Forwarded-For: 192.168.100.7\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            // Absolute-form: the authority replaces Host; empty path becomes "/".
            (
                b"GET http://b.example HTTP/1.1\r\nHost: a.example\r\nX: 1\r\n\r\n",
                info("2001:db8::1", false),
                "GET / HTTP/1.1\r\nHost: b.example\r\nX: 1\r\nX-Forwarded-For: 2001:db8::1\r\n\
                 X-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                b"GET https://b.example?q=1 HTTP/1.1\r\nhost: a\r\n\r\n",
                info("1.2.3.4", false),
                "GET /?q=1 HTTP/1.1\r\nHost: b.example\r\nX-Forwarded-For: 1.2.3.4\r\n\
                 X-Forwarded-Proto: http\r\n\r\n",
            ),
            // Hop-by-hop, named-by-Connection, XFF merged, XFP replaced, Expect stripped,
            // framing kept even when Connection names it.
            (
                b"POST /u HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret, content-length\r\n\
                  X-Forwarded-For: 1.1.1.1\r\nTE: trailers\r\nX-Secret: s\r\nContent-Length: 3\r\n\
                  Proxy-Connection: x\r\nExpect: 100-continue\r\nx-forwarded-proto: https\r\n\
                  Trailer: Foo\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\nX-Forwarded-For:\r\n\
                  Upgrade: h2c\r\nAfter:  v \r\n\r\n",
                info("4.4.4.4", true),
                "POST /u HTTP/1.1\r\nHost: h\r\nAfter:  v\r\nContent-Length: 3\r\n\
                 X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            // Expect kept when the proxy does not answer 100-continue itself.
            (
                b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                info("127.0.0.1", false),
                "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\
                 X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            // WebSocket: Upgrade kept, Connection rewritten to exactly "upgrade".
            (
                b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
                  Sec-WebSocket-Key: k\r\n\r\n",
                info("10.1.2.3", false),
                "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\
                 Connection: upgrade\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
                info("0.0.0.0", false),
                "OPTIONS * HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 0.0.0.0\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
        ];
        for (input, fi, want) in cases {
            assert_eq!(
                rewrite_request(input, fi),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn response_rewrites() {
        let cases: &[(&[u8], bool, bool, bool, &str)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: s\r\n\r\n",
                true,
                false,
                false,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: s\r\n\r\n",
            ),
            (
                b"HTTP/1.0 200 Fine Thanks\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
                  X-Hop: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                false,
                false,
                "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
            ),
            (
                b"HTTP/1.1 404\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n",
                true,
                true,
                false,
                "HTTP/1.1 404 \r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: a\r\n\r\n",
                true,
                false,
                true,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\n\
                 Connection: upgrade\r\n\r\n",
            ),
            // An Upgrade offered in a normal response is hop-by-hop.
            (
                b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
                true,
                false,
                true,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\n",
                false,
                true,
                false,
                "HTTP/1.1 100 Continue\r\n\r\n",
            ),
            (
                b"HTTP/1.1 503 Busy \xe2\x9c\x97\r\nContent-Length: 0\r\n\r\n",
                true,
                false,
                false,
                "HTTP/1.1 503 Busy \u{2717}\r\nContent-Length: 0\r\n\r\n",
            ),
        ];
        for (input, ka, h10, up, want) in cases {
            assert_eq!(
                rewrite_response(input, Method::Get, *ka, *h10, *up),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// A field the caller removed from the list is not copied back with its neighbours.
    #[test]
    fn removed_fields_stay_removed() {
        let input =
            b"GET / HTTP/1.1\r\nHost: h\r\nA: 1  \r\nX-Route: secret\r\nB: 2\r\nC: 3\r\n\r\n";
        let mut head = match parse_request(input, &Limits::default(), Vec::new()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        head.headers.remove(2);
        let mut out = Vec::new();
        write_request_head(input, &head, &info("1.2.3.4", false), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nX-Forwarded-For: 1.2.3.4\r\n\
             X-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn client_ip_formatting() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
        ] {
            let mut out = Vec::new();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(out, ip.as_bytes());
        }
    }
}
