//! Writing answers that the proxy makes itself (static files, cached objects): status line,
//! fields, the connection field, the body's length. Proxied heads are written by
//! `proto::http::write` from the server's head instead.

pub(crate) use crate::proto::http::write::push_decimal;

/// Append `HTTP/1.1 NNN Reason\r\n`.
pub fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    crate::proto::http::write::push_status(out, status);
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A short plain-text answer of ours, whole: status line, `Date`, the `extra` fields, and the
/// reason phrase as the body (not sent for a HEAD request).
pub fn text(
    out: &mut Vec<u8>,
    status: u16,
    extra: &[(&str, &[u8])],
    keep: bool,
    http10: bool,
    head_only: bool,
) {
    out.clear();
    status_line(out, status);
    date(out);
    for (n, v) in extra {
        field(out, n, v);
    }
    let text = reason(status);
    field(out, "Content-Type", b"text/plain; charset=utf-8");
    field_num(out, "Content-Length", text.len() as u64 + 1);
    connection(out, keep, http10);
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }
}

/// The reason phrase we write for a status (RFC 9110 §15).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        304 => "Not Modified",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Append `Name: value\r\n`.
pub fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append `Name: n\r\n`.
pub fn field_num(out: &mut Vec<u8>, name: &str, n: u64) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Append `Date: <now>\r\n`.
pub fn date(out: &mut Vec<u8>) {
    out.extend_from_slice(b"Date: ");
    crate::proto::http::date::write(crate::proto::http::date::now(), out);
    out.extend_from_slice(b"\r\n");
}

/// What the connection field says, as in `write::write_response_head`.
pub fn connection(out: &mut Vec<u8>, keep: bool, http10: bool) {
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}

/// Does an entity-tag list (`If-None-Match`, `If-Match`) match `etag`? `weak`: compare
/// ignoring `W/` (If-None-Match, §13.1.2); strong otherwise (If-Match: a weak tag never
/// matches).
pub fn etag_matches(list: &[u8], etag: &[u8], weak: bool) -> bool {
    let list = list.trim_ascii();
    if list == b"*" {
        return true;
    }
    let (etag_weak, etag_opaque) = match etag.strip_prefix(b"W/") {
        Some(o) => (true, o),
        None => (false, etag),
    };
    if !weak && etag_weak {
        return false;
    }
    crate::proto::http::cache_control::split_list(list).any(|t| match t.strip_prefix(b"W/") {
        Some(o) => weak && o == etag_opaque,
        None => t == etag_opaque,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert!(etag_matches(b"\"a\"", b"\"a\"", false));
        assert!(etag_matches(b"\"x\", W/\"a\"", b"\"a\"", true));
        assert!(!etag_matches(b"W/\"a\"", b"\"a\"", false));
        assert!(!etag_matches(b"\"a\"", b"W/\"a\"", false));
        assert!(etag_matches(b"\"a\"", b"W/\"a\"", true));
        assert!(etag_matches(b"*", b"\"q\"", false));
        assert!(!etag_matches(b"\"b\"", b"\"a\"", true));
        assert!(!etag_matches(b"", b"\"a\"", true));
    }
}
