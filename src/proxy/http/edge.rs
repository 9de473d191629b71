//! What a frontend at the edge adds to HTTP: the redirect of a plain frontend to https
//! (`redirect_https`), and HSTS on a TLS frontend's answers (`tls.hsts`).

use std::time::Instant;

use super::answer;
use super::conn::{Conn, Outcome};
use crate::proto::http::{Framing, Method, RequestHead};
use crate::rt::Socket;

/// Answer with a redirect to the same URL over https on `port`: 301 for GET and HEAD, 308 for
/// other methods (which keeps the method and body, RFC 9110 §15.4.9), as nginx's usual
/// `return 301 https://$host$request_uri` does for browsers. A request without a Host gets 400.
pub async fn redirect_https(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    head: &RequestHead,
    port: u16,
    started: Instant,
) -> Outcome {
    let has_body = !matches!(head.framing, Framing::None | Framing::Length(0));
    let keep = !head.close && !has_body && !conn.closing();
    let http10 = head.minor_version == 0;
    let head_only = head.method == Method::Head;
    let host = head
        .absolute_authority
        .or(head.host)
        .map(|s| s.of(&conn.buf))
        .filter(|h| host_ok(h));
    let status = match host {
        None => {
            answer::text(&mut conn.out, 400, &[], false, http10, head_only);
            400
        }
        Some(host) => {
            // The host without its port, then ours (omitted for 443).
            let name = match host.iter().rposition(|&b| b == b':') {
                Some(i) if !host.ends_with(b"]") => &host[..i],
                _ => host,
            };
            let mut location = Vec::with_capacity(name.len() + head.head_len + 16);
            location.extend_from_slice(b"https://");
            location.extend_from_slice(name);
            if port != 443 {
                location.push(b':');
                answer::push_decimal(&mut location, port as u64);
            }
            let origin = head.origin.of(&conn.buf);
            if origin.first() != Some(&b'/') {
                location.push(b'/');
            }
            location.extend_from_slice(origin);
            let status = if matches!(head.method, Method::Get | Method::Head) {
                301
            } else {
                308
            };
            answer::text(
                &mut conn.out,
                status,
                &[("Location", &location)],
                keep,
                http10,
                head_only,
            );
            status
        }
    };
    conn.buf.drain(..head.head_len);
    if has_body {
        conn.buf.clear();
    }
    let keep = keep && status != 400;
    super::cached::finish_answer(conn, client, keep, status, head.head_len as u64, started).await
}

/// A Host a `Location` may be built from (RFC 3986 §3.2.2): a registered name or an IPv4
/// address, or `[IPv6]`, then an optional port. Anything else gets 400, not a broken URL.
fn host_ok(h: &[u8]) -> bool {
    let (name, port) = if h.first() == Some(&b'[') {
        let Some(end) = h.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &h[1..end];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(b))
        {
            return false;
        }
        (&h[..=end], &h[end + 1..])
    } else {
        match h.iter().position(|&b| b == b':') {
            Some(i) => (&h[..i], &h[i..]),
            None => (h, &h[h.len()..]),
        }
    };
    let name_ok = !name.is_empty()
        && (name.first() == Some(&b'[')
            || name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b)));
    let port_ok = port.is_empty()
        || (port[0] == b':' && port.len() <= 6 && port[1..].iter().all(u8::is_ascii_digit));
    name_ok && port_ok
}

/// Add the frontend's `Strict-Transport-Security` to the response head that ends `out`, on a
/// connection that is TLS (`tls`).
pub fn hsts(out: &mut Vec<u8>, fe: &super::HttpFront, tls: bool) {
    let value = fe.conf.tls.as_ref().and_then(|t| t.hsts.as_deref());
    let Some(value) = value.filter(|_| tls) else {
        return;
    };
    if !out.ends_with(b"\r\n\r\n") {
        return;
    }
    out.truncate(out.len() - 2);
    answer::field(out, "Strict-Transport-Security", value.as_bytes());
    out.extend_from_slice(b"\r\n");
}
