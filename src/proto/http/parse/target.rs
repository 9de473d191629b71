//! The method token and the request-target forms (RFC 9112 §3.2): origin-form, absolute-form
//! (authority checked, userinfo refused) and asterisk-form.

use memchr::memchr;

use super::bytes::AUTHORITY;
use super::window::{bad, span, Stop};
use crate::proto::http::{Method, Span};

pub(super) fn method_of(m: &[u8]) -> Method {
    match m {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        b"PATCH" => Method::Patch,
        b"CONNECT" => Method::Connect,
        b"TRACE" => Method::Trace,
        _ => Method::Other,
    }
}

pub(super) struct Form {
    pub(super) origin: Span,
    pub(super) path: Span,
    pub(super) authority: Option<Span>,
}

/// RFC 9112 §3.2: origin-form, absolute-form or asterisk-form (authority-form is CONNECT's,
/// refused earlier). `t` is the target, starting at `base` in the buffer.
pub(super) fn target_form(t: &[u8], base: usize, method: Method) -> Result<Form, Stop> {
    let path_of = |start: usize, end: usize| -> Span {
        let rel = t.get(start - base..end - base).unwrap_or_default();
        span(start, memchr(b'?', rel).map_or(end, |q| start + q))
    };
    let end = base + t.len();
    match t.first() {
        Some(b'/') => Ok(Form {
            origin: span(base, end),
            path: path_of(base, end),
            authority: None,
        }),
        Some(b'*') => {
            if t.len() == 1 && method == Method::Options {
                Ok(Form {
                    origin: span(base, end),
                    path: span(base, end),
                    authority: None,
                })
            } else {
                Err(bad("asterisk-form only with OPTIONS"))
            }
        }
        _ => {
            let scheme_len = if starts_with_ci(t, b"http://") {
                7
            } else if starts_with_ci(t, b"https://") {
                8
            } else {
                return Err(bad("invalid request-target"));
            };
            let rest = t.get(scheme_len..).unwrap_or_default();
            let a_len = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            let auth = rest.get(..a_len).unwrap_or_default();
            if auth.is_empty() {
                return Err(bad("empty authority"));
            }
            if auth.contains(&b'@') {
                return Err(bad("userinfo in request-target"));
            }
            if !auth.iter().all(|&b| AUTHORITY[usize::from(b)]) {
                return Err(bad("invalid authority"));
            }
            let a_start = base + scheme_len;
            let a_end = a_start + a_len;
            // An empty path must read as "/": the last '/' of "://" is such a span.
            let slash = span(a_start - 1, a_start);
            let (origin, path) = match rest.get(a_len) {
                Some(b'/') => (span(a_end, end), path_of(a_end, end)),
                // "http://h?q": the origin is "?q" and writers put "/" before it.
                Some(_) => (span(a_end, end), slash),
                None => (slash, slash),
            };
            Ok(Form {
                origin,
                path,
                authority: Some(span(a_start, a_end)),
            })
        }
    }
}

fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}
