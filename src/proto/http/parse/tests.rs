//! The head parsers end to end: malformed input and its status, fields and flags, framing,
//! target forms, limits on partial input, byte-at-a-time and pipelined input, responses,
//! and random mutations.

use super::bytes::{find_ctl, scan_vchar};
use crate::proto::http::Framing;

use super::*;

fn lim() -> Limits {
    Limits {
        max_request_line: 256,
        max_header_bytes: 1024,
        max_headers: 8,
        max_body: Some(1000),
    }
}

fn req(b: &[u8]) -> Result<Status<RequestHead>, ParseError> {
    parse_request(b, &lim(), Vec::new())
}

fn ok(b: &[u8]) -> RequestHead {
    match req(b) {
        Ok(Status::Complete(h)) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(b)),
    }
}

fn resp(b: &[u8], m: Method) -> Result<Status<ResponseHead>, ParseError> {
    parse_response(b, m, 1024, 8, Vec::new())
}

fn resp_ok(b: &[u8], m: Method) -> ResponseHead {
    match resp(b, m) {
        Ok(Status::Complete(h)) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(b)),
    }
}

const BAD: u16 = 400;
const PARTIAL: Result<&str, ParseError> = Ok("partial");
const COMPLETE: Result<&str, ParseError> = Ok("complete");

/// Heads have no PartialEq; compare what kind of answer came back.
fn outcome<T>(r: Result<Status<T>, ParseError>) -> Result<&'static str, ParseError> {
    r.map(|s| match s {
        Status::Complete(_) => "complete",
        Status::Partial => "partial",
    })
}

#[test]
fn malformed_requests_get_their_status() {
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\n", BAD),
        (b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"\rXGET / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\rX\nHost: a\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\rX", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\n X: folded\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\tX: folded\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad(name): x\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef\x01\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n", BAD),
        // Request line.
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET /\r\n\r\n", BAD),
        (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", BAD),
        (b"GET / http/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", BAD),
        (b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", BAD),
        (b"GET / HTTX/1.1\r\n\r\n", BAD),
        (b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET /a\x80b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET /0123456789abcdef\xff HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\n\r\n", 505),
        // Targets.
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET http:///b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET http://u@a/b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"GET http://a\"b/ HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        // Host.
        (b"GET / HTTP/1.1\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", BAD),
        (b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", BAD),
        (b"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n", BAD),
        // Framing.
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , \r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3,\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 4\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", BAD),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n", 413),
    ];
    for (input, status) in cases {
        match req(input) {
            Err(e) => assert_eq!(
                e.status(),
                *status,
                "{:?}: {e:?}",
                String::from_utf8_lossy(input)
            ),
            other => panic!(
                "{:?}: expected {status}, got {other:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }
}

#[test]
fn request_fields_and_flags() {
    let b = b"\r\n\r\nPOST /a/b?c=d HTTP/1.1\r\nHost:  example.com:8080 \t\r\nX-Empty:\r\n\
              X-Obs: caf\xc3\xa9\tok\r\nContent-Length: 12, 12\r\ncontent-length:12\r\n\
              Connection: foo, Close\r\nExpect: 100-Continue\r\n\r\nBODY";
    let h = ok(b);
    assert_eq!(h.method, Method::Post);
    assert_eq!(h.method_span.of(b), b"POST");
    assert_eq!(h.minor_version, 1);
    assert_eq!(h.target.of(b), b"/a/b?c=d");
    assert_eq!(h.origin.of(b), b"/a/b?c=d");
    assert_eq!(h.path.of(b), b"/a/b");
    assert_eq!(h.absolute_authority, None);
    assert_eq!(h.host.map(|s| s.of(b)), Some(&b"example.com:8080"[..]));
    assert_eq!(h.framing, Framing::Length(12));
    assert!(h.close);
    assert!(h.expect_continue);
    assert!(!h.upgrade_websocket);
    assert_eq!(h.head_len, b.len() - 4);
    let fields: Vec<(&[u8], &[u8])> = h
        .headers
        .iter()
        .map(|f| (f.name.of(b), f.value.of(b)))
        .collect();
    assert_eq!(fields.len(), 7);
    assert_eq!(fields[1], (&b"X-Empty"[..], &b""[..]));
    assert_eq!(fields[2], (&b"X-Obs"[..], &b"caf\xc3\xa9\tok"[..]));
    assert_eq!(fields[4], (&b"content-length"[..], &b"12"[..]));
}

#[test]
fn framing_and_connection_rules() {
    let cases: &[(&[u8], Framing, bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Framing::None, false),
        (b"GET / HTTP/1.0\r\n\r\n", Framing::None, true),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", Framing::None, false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", Framing::None, true),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: CLOSE\r\n\r\n", Framing::None, true),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", Framing::None, false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", Framing::Length(0), false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0007\r\n\r\n", Framing::Length(7), false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n", Framing::Length(1000), false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", Framing::Chunked, false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", Framing::Chunked, false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Framing::Chunked, false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", Framing::Chunked, false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x-gzip,deflate , chunked\r\n\r\n", Framing::Chunked, false),
    ];
    for (input, framing, close) in cases {
        let h = ok(input);
        assert_eq!(
            (h.framing, h.close),
            (*framing, *close),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    // No max_body: any valid length passes.
    let l = Limits {
        max_body: None,
        ..lim()
    };
    let b = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n";
    match parse_request(b, &l, Vec::new()) {
        Ok(Status::Complete(h)) => assert_eq!(h.framing, Framing::Length(u64::MAX)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn websocket_upgrade_needs_get_1_1_and_both_fields() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n", true),
        (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo, websocket/13\r\n\r\n", true),
        (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", false),
        (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", false),
        (b"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", false),
        (b"GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", false),
    ];
    for (input, ws) in cases {
        assert_eq!(
            ok(input).upgrade_websocket,
            *ws,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn expect_continue_only_in_http_1_1() {
    let cases: &[(&[u8], bool)] = &[
        (
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            true,
        ),
        (
            b"PUT / HTTP/1.1\r\nHost: a\r\nexpect:  100-CONTINUE \r\n\r\n",
            true,
        ),
        (
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
            false,
        ),
        (
            b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            false,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            ok(input).expect_continue,
            *want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn target_forms() {
    // (input, origin, path, authority)
    type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], Option<&'a [u8]>);
    let cases: &[Case] = &[
        (
            b"GET /x?y HTTP/1.1\r\nHost: a\r\n\r\n",
            b"/x?y",
            b"/x",
            None,
        ),
        (b"GET /? HTTP/1.1\r\nHost: a\r\n\r\n", b"/?", b"/", None),
        (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", b"*", b"*", None),
        (
            b"GET http://b.example/x?y HTTP/1.1\r\nHost: a\r\n\r\n",
            b"/x?y",
            b"/x",
            Some(b"b.example"),
        ),
        (
            b"GET HTTPS://b:8443/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"/",
            b"/",
            Some(b"b:8443"),
        ),
        (
            b"GET http://b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"/",
            b"/",
            Some(b"b"),
        ),
        (
            b"GET http://[::1]:80?q HTTP/1.1\r\nHost: a\r\n\r\n",
            b"?q",
            b"/",
            Some(b"[::1]:80"),
        ),
        (b"GET http://b/ HTTP/1.0\r\n\r\n", b"/", b"/", Some(b"b")),
    ];
    for (input, origin, path, auth) in cases {
        let h = ok(input);
        let name = String::from_utf8_lossy(input);
        assert_eq!(h.origin.of(input), *origin, "{name}");
        assert_eq!(h.path.of(input), *path, "{name}");
        assert_eq!(h.absolute_authority.map(|a| a.of(input)), *auth, "{name}");
    }
    assert_eq!(
        ok(b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n").method,
        Method::Other
    );
}

#[test]
fn limits_apply_to_partial_input() {
    let l = Limits {
        max_request_line: 32,
        max_header_bytes: 64,
        max_headers: 2,
        max_body: None,
    };
    let p = |b: &[u8]| outcome(parse_request(b, &l, Vec::new()));
    // Request line of exactly 32 bytes with CRLF fits; 33 does not.
    let line32 = b"GET /0123456789abcdefgh HTTP/1.1\r\n";
    assert_eq!(line32.len(), 34);
    assert_eq!(p(b"GET /0123456789abcdef HTTP/1.1\r\n"), PARTIAL);
    assert_eq!(p(line32), Err(ParseError::UriTooLong));
    // No line end yet: partial up to the limit, 414 beyond it, even mid-target.
    assert_eq!(p(&[b"GET /".as_slice(), &[b'a'; 27]].concat()), PARTIAL);
    assert_eq!(
        p(&[b"GET /".as_slice(), &[b'a'; 28]].concat()),
        Err(ParseError::UriTooLong)
    );
    // Leading empty lines do not count into the request line but do into the head.
    let mut lead = b"\r\n\r\n".to_vec();
    lead.extend_from_slice(b"GET /0123456789abcdef HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(p(&lead), COMPLETE);
    // Head: complete within 64 bytes is fine, anything longer is 431 complete or not.
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: 01234567890123456789012345678901\r\n\r\n";
    assert_eq!(head.len(), 64);
    assert_eq!(p(head), COMPLETE);
    assert_eq!(ok(head).head_len, 64);
    let head65 = b"GET / HTTP/1.1\r\nHost: a\r\nX: 012345678901234567890123456789012\r\n\r\n";
    assert_eq!(head65.len(), 65);
    assert_eq!(p(head65), Err(ParseError::HeadersTooLarge));
    assert_eq!(p(&head65[..64]), PARTIAL);
    assert_eq!(p(&head65[..65]), Err(ParseError::HeadersTooLarge));
    assert_eq!(
        p(&[b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 60]].concat()),
        Err(ParseError::HeadersTooLarge)
    );
    // A complete head followed by more data than the limit is fine (pipelining, bodies).
    let mut more = head.to_vec();
    more.extend_from_slice(&[b'x'; 500]);
    assert!(
        matches!(parse_request(&more, &l, Vec::new()), Ok(Status::Complete(h)) if h.head_len == 64)
    );
    // Field count.
    assert_eq!(p(b"GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\n\r\n"), COMPLETE);
    assert_eq!(
        p(b"GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\n\r\n"),
        Err(ParseError::HeadersTooLarge)
    );
    // The head limit cuts the request line before its own limit: 431.
    let l2 = Limits {
        max_request_line: 100,
        max_header_bytes: 20,
        max_headers: 2,
        max_body: None,
    };
    assert_eq!(
        outcome(parse_request(b"GET /0123456789012345678", &l2, Vec::new())),
        Err(ParseError::HeadersTooLarge)
    );
}

/// Every strict prefix of a valid head is Partial, and the whole gives the same head as
/// when parsed at once.
#[test]
fn byte_at_a_time_requests_and_responses() {
    let reqs: &[&[u8]] = &[
        b"\r\nGET /x HTTP/1.1\r\nHost: a\r\nX-Long-Header-Value: 0123456789abcdefghijklmnop\r\n\r\n",
        b"POST http://h/p?q HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];
    for r in reqs {
        for n in 0..r.len() {
            assert_eq!(
                outcome(req(&r[..n])),
                PARTIAL,
                "{n} of {:?}",
                String::from_utf8_lossy(r)
            );
        }
        let h = ok(r);
        assert_eq!(h.head_len, r.len());
    }
    let resps: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\n",
        b"HTTP/1.0 404\r\n\r\n",
        b"HTTP/1.1 204 \r\n\r\n",
    ];
    for r in resps {
        for n in 0..r.len() {
            assert_eq!(outcome(resp(&r[..n], Method::Get)), PARTIAL, "{n}");
        }
        assert_eq!(resp_ok(r, Method::Get).head_len, r.len());
    }
}

#[test]
fn pipelined_requests_split_by_head_len() {
    let b = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut at = 0;
    let mut seen = Vec::new();
    let mut v = Vec::new();
    while at < b.len() {
        let h = match parse_request(&b[at..], &lim(), v) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        seen.push(h.path.of(&b[at..]).to_vec());
        at += h.head_len;
        if let Framing::Length(n) = h.framing {
            at += n as usize;
        }
        v = h.headers;
    }
    assert_eq!(at, b.len());
    assert_eq!(seen, [b"/1".to_vec(), b"/2".to_vec(), b"/3".to_vec()]);
}

#[test]
fn recycled_vector_is_cleared_and_reused() {
    let b = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
    let h = ok(b);
    let cap = h.headers.capacity();
    let ptr = h.headers.as_ptr();
    let h2 = match parse_request(b, &lim(), h.headers) {
        Ok(Status::Complete(h)) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(h2.headers.len(), 2);
    assert_eq!((h2.headers.capacity(), h2.headers.as_ptr()), (cap, ptr));
}

#[test]
fn responses() {
    use Framing::*;
    let cases: &[(&[u8], Method, u16, Framing, bool)] = &[
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::Get, 200, Length(5), false),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::Head, 200, None, false),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::Head, 200, None, false),
        (b"HTTP/1.1 100 Continue\r\n\r\n", Method::Post, 100, None, false),
        (b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", Method::Get, 101, None, false),
        (b"HTTP/1.1 204 No Content\r\n\r\n", Method::Get, 204, None, false),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", Method::Get, 304, None, false),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Method::Get, 200, Chunked, false),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: br\r\n\r\n", Method::Get, 200, UntilClose, true),
        (b"HTTP/1.1 200 OK\r\n\r\n", Method::Get, 200, UntilClose, true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", Method::Post, 200, Length(3), false),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", Method::Get, 200, Length(0), true),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Method::Get, 200, Length(0), true),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", Method::Get, 200, Length(0), false),
        (b"HTTP/1.1 599 \xe2\x9c\x93 obs\ttext\r\nContent-Length: 0\r\n\r\n", Method::Get, 599, Length(0), false),
        (b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", Method::Get, 200, Length(0), false),
    ];
    for (input, m, status, framing, close) in cases {
        let h = resp_ok(input, *m);
        assert_eq!(
            (h.status, h.framing, h.close, h.head_len),
            (*status, *framing, *close, input.len()),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let bad: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
        b"HTTP/1.1 200 OK\r\n X: fold\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
        b"HTTP/1.1 200 O\x00K\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1 99 OK\r\n\r\n",
        b"HTTP/1.1 600 OK\r\n\r\n",
        b"HTTP/1.1 20x OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"\r\nHTTP/1.1 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ];
    for input in bad {
        let r = resp(input, Method::Get);
        assert!(
            matches!(r, Err(ParseError::BadRequest(_))),
            "{:?}: {r:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(
        outcome(parse_response(
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n",
            Method::Get,
            1024,
            1,
            Vec::new()
        )),
        Err(ParseError::HeadersTooLarge)
    );
    assert_eq!(
        outcome(parse_response(
            b"HTTP/1.1 200 OK\r\nA: 1\r\n",
            Method::Get,
            20,
            8,
            Vec::new()
        )),
        Err(ParseError::HeadersTooLarge)
    );
}

#[test]
fn swar_matches_bytewise_scan() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = (rng.next() % 24) as usize;
        let s: Vec<u8> = (0..len)
            .map(|_| match rng.next() % 4 {
                0 => rng.next() as u8,
                _ => b'!' + (rng.next() % 94) as u8,
            })
            .collect();
        let ctl = s
            .iter()
            .position(|&b| b < 0x20 || b == 0x7f)
            .unwrap_or(s.len());
        let vis = s
            .iter()
            .position(|&b| !(0x21..=0x7e).contains(&b))
            .unwrap_or(s.len());
        assert_eq!(find_ctl(&s, 0), ctl, "{s:?}");
        assert_eq!(scan_vchar(&s, 0), vis, "{s:?}");
    }
}

pub(crate) struct XorShift(pub u64);
impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Mutate valid messages at random: whatever comes out, the parsers answer without
/// panicking, and a complete head's spans lie inside the buffer.
#[test]
fn random_mutations_never_panic() {
    let seeds: &[&[u8]] = &[
        b"GET /a?b HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"POST http://h/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
        b"\r\nPUT / HTTP/1.0\r\nContent-Length: 10, 10\r\nConnection: keep-alive\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
    ];
    let alphabet = b"\r\n :,;\t/?*@\x00\x7f\x80chunkedHTTP/1.0";
    let limits = Limits {
        max_request_line: 40,
        max_header_bytes: 120,
        max_headers: 4,
        max_body: Some(50),
    };
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut v = Vec::new();
    let mut rv = Vec::new();
    for _ in 0..100_000 {
        let mut m = seeds[(rng.next() % seeds.len() as u64) as usize].to_vec();
        for _ in 0..1 + rng.next() % 4 {
            let at = (rng.next() as usize) % (m.len() + 1);
            match rng.next() % 4 {
                0 if at < m.len() => m[at] = alphabet[(rng.next() as usize) % alphabet.len()],
                1 if at < m.len() => m[at] = rng.next() as u8,
                2 if at < m.len() => {
                    m.remove(at);
                }
                _ => m.insert(at, alphabet[(rng.next() as usize) % alphabet.len()]),
            }
        }
        let cut = (rng.next() as usize) % (m.len() + 1);
        let input = if rng.next() & 1 == 0 {
            &m[..]
        } else {
            &m[..cut]
        };
        if let Ok(Status::Complete(h)) = parse_request(input, &limits, std::mem::take(&mut v)) {
            assert!(h.head_len <= input.len() && h.head_len <= limits.max_header_bytes);
            for s in [h.method_span, h.target, h.origin, h.path]
                .into_iter()
                .chain(h.host)
                .chain(h.absolute_authority)
            {
                assert!(s.start <= s.end && s.end as usize <= h.head_len);
            }
            for f in &h.headers {
                assert!(f.name.end as usize <= h.head_len && f.value.end as usize <= h.head_len);
            }
            v = h.headers;
        }
        for method in [Method::Get, Method::Head] {
            if let Ok(Status::Complete(h)) =
                parse_response(input, method, 120, 4, std::mem::take(&mut rv))
            {
                assert!(h.head_len <= input.len());
                rv = h.headers;
            }
        }
    }
}
