//! The request line (RFC 9112 §3) and the status line (§4), then the fields and framing that
//! complete a [`RequestHead`] or a [`ResponseHead`].

use memchr::memchr;

use super::bytes::{all_vchar, scan_token, scan_vchar};
use super::fields::{fields, line_rest};
use super::framing::FieldFacts;
use super::target::{method_of, target_form};
use super::window::{bad, span, Stop, Window};
use super::Limits;
use crate::proto::http::{Framing, HeaderSpan, Method, ParseError, RequestHead, ResponseHead};

pub(super) fn request(
    buf: &[u8],
    limits: &Limits,
    mut headers: Vec<HeaderSpan>,
) -> Result<RequestHead, Stop> {
    let win = Window::new(buf, limits.max_header_bytes, ParseError::HeadersTooLarge);

    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
    let mut pos = 0;
    loop {
        match win.at(pos)? {
            b'\r' => match win.at(pos + 1)? {
                b'\n' => pos += 2,
                _ => return Err(bad("CR not followed by LF")),
            },
            b'\n' => return Err(bad("bare LF")),
            _ => break,
        }
    }

    // The request line gets its own, usually smaller, window: 414 when it is cut by
    // max_request_line, 431 when the head limit cuts first.
    let line_cap = pos.saturating_add(limits.max_request_line);
    let line = if line_cap <= win.w.len() && line_cap < buf.len() {
        Window::new(buf, line_cap, ParseError::UriTooLong)
    } else {
        win
    };

    // RFC 9112 §3: request-line = method SP request-target SP HTTP-version CRLF
    let m_start = pos;
    let m_end = scan_token(line.w, m_start);
    match line.at(m_end)? {
        b' ' if m_end > m_start => {}
        _ => return Err(bad("invalid method")),
    }
    let t_start = m_end + 1;
    let rest = line.w.get(t_start..).unwrap_or_default();
    let t_end = match memchr(b' ', rest) {
        Some(off) if rest.get(..off).is_some_and(all_vchar) => t_start + off,
        _ => scan_vchar(line.w, t_start),
    };
    match line.at(t_end)? {
        b' ' if t_end > t_start => {}
        b' ' => return Err(bad("empty request-target")),
        _ => return Err(bad("invalid request-target")),
    }
    let v = t_end + 1;
    let (major, minor) = version(&line, v)?;
    match line.at(v + 8)? {
        b'\r' => {}
        b'\n' => return Err(bad("bare LF")),
        _ => return Err(bad("invalid request line")),
    }
    match line.at(v + 9)? {
        b'\n' => {}
        _ => return Err(bad("CR not followed by LF")),
    }
    let minor_version = match (major, minor) {
        (1, 0) => 0,
        (1, 1) => 1,
        _ => return Err(Stop::Err(ParseError::VersionNotSupported)),
    };

    let method_bytes = buf.get(m_start..m_end).unwrap_or_default();
    let method = method_of(method_bytes);
    if method == Method::Connect {
        return Err(Stop::Err(ParseError::NotImplemented("CONNECT")));
    }
    let target = buf.get(t_start..t_end).unwrap_or_default();
    let form = target_form(target, t_start, method)?;

    // Fields.
    headers.clear();
    if headers.capacity() == 0 {
        headers.reserve(limits.max_headers.min(32));
    }
    let mut f = FieldFacts::new(true, minor_version);
    let head_len = fields(&win, v + 10, limits.max_headers, &mut headers, &mut f)?;

    // RFC 9112 §3.2: exactly one Host in HTTP/1.1; at most one anywhere.
    if minor_version == 1 && f.host_count == 0 {
        return Err(bad("missing Host"));
    }
    let framing = f.request_framing()?;
    if let (Framing::Length(n), Some(max)) = (framing, limits.max_body) {
        if n > max {
            return Err(Stop::Err(ParseError::BodyTooLarge));
        }
    }

    Ok(RequestHead {
        method,
        method_span: span(m_start, m_end),
        minor_version,
        target: span(t_start, t_end),
        origin: form.origin,
        path: form.path,
        absolute_authority: form.authority,
        host: f.host,
        headers,
        framing,
        close: f.close || (minor_version == 0 && !f.keep_alive),
        // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
        expect_continue: f.expect_continue && minor_version == 1,
        // RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored.
        upgrade_websocket: method == Method::Get
            && minor_version == 1
            && f.conn_upgrade
            && f.upgrade_websocket,
        head_len,
    })
}

pub(super) fn response(
    buf: &[u8],
    request_method: Method,
    max_header_bytes: usize,
    max_headers: usize,
    mut headers: Vec<HeaderSpan>,
) -> Result<ResponseHead, Stop> {
    let win = Window::new(buf, max_header_bytes, ParseError::HeadersTooLarge);

    // RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF
    let minor_version = match version(&win, 0)? {
        (1, 0) => 0,
        (1, 1) => 1,
        _ => return Err(bad("unsupported response version")),
    };
    if win.at(8)? != b' ' {
        return Err(bad("invalid status line"));
    }
    let mut status: u16 = 0;
    for i in 9..12 {
        let d = win.at(i)?.wrapping_sub(b'0');
        if d > 9 {
            return Err(bad("invalid status code"));
        }
        status = status * 10 + u16::from(d);
    }
    if !(100..=599).contains(&status) {
        return Err(bad("invalid status code"));
    }
    // The SP before an empty reason is tolerated missing: servers omit it and it cannot
    // change the framing.
    let line_end = match win.at(12)? {
        b'\r' => 12,
        b' ' => line_rest(&win, 13)?,
        b'\n' => return Err(bad("bare LF")),
        _ => return Err(bad("invalid status line")),
    };
    if win.at(line_end + 1)? != b'\n' {
        return Err(bad("CR not followed by LF"));
    }

    headers.clear();
    if headers.capacity() == 0 {
        headers.reserve(max_headers.min(32));
    }
    let mut f = FieldFacts::new(false, minor_version);
    let head_len = fields(&win, line_end + 2, max_headers, &mut headers, &mut f)?;

    // RFC 9112 §6.3: the order of these rules is the order of the RFC's list.
    let declared = f.response_framing()?;
    let framing = if request_method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Framing::None
    } else {
        declared
    };

    Ok(ResponseHead {
        status,
        minor_version,
        headers,
        framing,
        close: f.close || (minor_version == 0 && !f.keep_alive) || framing == Framing::UntilClose,
        head_len,
    })
}

/// `HTTP/d.d` at `p`, as (major, minor) digits. Other text is 400; checked byte by byte so a
/// wrong prefix is refused without waiting for the rest of the line.
fn version(win: &Window, p: usize) -> Result<(u8, u8), Stop> {
    for (i, &c) in b"HTTP/".iter().enumerate() {
        if win.at(p + i)? != c {
            return Err(bad("invalid HTTP version"));
        }
    }
    let major = win.at(p + 5)?.wrapping_sub(b'0');
    if major > 9 || win.at(p + 6)? != b'.' {
        return Err(bad("invalid HTTP version"));
    }
    let minor = win.at(p + 7)?.wrapping_sub(b'0');
    if minor > 9 {
        return Err(bad("invalid HTTP version"));
    }
    Ok((major, minor))
}
