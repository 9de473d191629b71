//! The responses the proxy writes itself (errors and `100 Continue`), rendered once so that
//! answering a bad request costs one write of a static slice. Every error answer closes the
//! connection: after a framing error the rest of the stream cannot be trusted.

use std::sync::LazyLock;

/// Interim response sent before reading a body the client announced with
/// `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The statuses the proxy generates, with their RFC 9110 reason phrases.
const REASONS: [(u16, &str); 14] = [
    (400, "Bad Request"),
    (403, "Forbidden"),
    (404, "Not Found"),
    (408, "Request Timeout"),
    (413, "Content Too Large"),
    (414, "URI Too Long"),
    (417, "Expectation Failed"),
    (431, "Request Header Fields Too Large"),
    (500, "Internal Server Error"),
    (501, "Not Implemented"),
    (502, "Bad Gateway"),
    (503, "Service Unavailable"),
    (504, "Gateway Timeout"),
    (505, "HTTP Version Not Supported"),
];

static RENDERED: LazyLock<[Box<[u8]>; REASONS.len()]> = LazyLock::new(|| {
    REASONS.map(|(code, reason)| {
        let body = format!("{code} {reason}\n");
        // Every 503 of ours is a momentary state (no server free, out of descriptors, the
        // memory ceiling): say when to come back.
        let retry = if code == 503 {
            "Retry-After: 1\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             {retry}Connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
        .into_boxed_slice()
    })
});

/// A complete response for `status`; statuses the proxy never generates get the 500 answer.
pub fn canned(status: u16) -> &'static [u8] {
    let i = REASONS
        .iter()
        .position(|&(c, _)| c == status)
        .or_else(|| REASONS.iter().position(|&(c, _)| c == 500))
        .unwrap_or(0);
    RENDERED.get(i).map_or(&[], |r| r)
}

/// [`canned`] for a request of method `HEAD` when `head_only`: the same head, no body (RFC
/// 9110 §9.3.2; the Content-Length still says how long the body would be).
pub fn canned_for(status: u16, head_only: bool) -> &'static [u8] {
    let full = canned(status);
    if !head_only {
        return full;
    }
    match memchr::memmem::find(full, b"\r\n\r\n") {
        Some(i) => &full[..i + 4],
        None => full,
    }
}

/// Render every answer now, so the first error served does not pay for it.
pub fn init() {
    LazyLock::force(&RENDERED);
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_response;
    use super::super::{Framing, Method, Status};
    use super::*;

    #[test]
    fn every_answer_is_a_complete_closing_response() {
        for &(code, reason) in &REASONS {
            let r = canned(code);
            let text = std::str::from_utf8(r).unwrap();
            let body = format!("{code} {reason}\n");
            assert!(
                text.starts_with(&format!("HTTP/1.1 {code} {reason}\r\n")),
                "{text}"
            );
            assert!(text.ends_with(&format!("\r\n\r\n{body}")), "{text}");
            match parse_response(r, Method::Get, 1024, 16, Vec::new()) {
                Ok(Status::Complete(h)) => {
                    assert_eq!(h.status, code);
                    assert_eq!(h.framing, Framing::Length(body.len() as u64));
                    assert!(h.close);
                    assert_eq!(h.head_len + body.len(), r.len());
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn answers_to_head_have_no_body() {
        for &(code, _) in &REASONS {
            let h = canned_for(code, true);
            assert!(h.ends_with(b"\r\n\r\n"));
            assert_eq!(&canned(code)[..h.len()], h);
            assert!(canned(code).len() > h.len());
            assert_eq!(canned_for(code, false), canned(code));
        }
    }

    #[test]
    fn unknown_statuses_get_500() {
        assert_eq!(canned(200), canned(500));
        assert_eq!(canned(0), canned(500));
        assert!(canned(500).starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
        assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}
