//! Answers from a stored copy: hits, and what a fetch stored.

use super::*;

/// The exchange behind an answer from the cache: none for a hit; the pool and server that
/// were asked for one stored or refreshed on the way (so their metrics count it).
#[derive(Clone, Copy, Default)]
pub struct Via {
    pub pool: Option<usize>,
    pub server: Option<usize>,
    pub first_byte: Option<std::time::Duration>,
    /// Request bytes sent to the server.
    pub sent: u64,
}

pub(super) fn via(x: &Exchange) -> Via {
    Via {
        pool: Some(x.pool),
        server: x.server,
        first_byte: None,
        sent: x.sent,
    }
}

/// Answer from a stored entry (the request head, `head_len` bytes, still starts `conn.buf`),
/// honouring the client's conditionals and a single range; counts the exchange.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    head_len: usize,
    ask: &Ask,
    e: &Entry,
    label: &str,
    z: &Zone,
    started: Instant,
    via: Via,
) -> Outcome {
    conn.buf.drain(..head_len.min(conn.buf.len()));
    let keep = !ask.close && !conn.closing();
    let (status, body) = write_entry(&mut conn.out, ask, e, label, z.conf.status_header, keep);
    crate::proxy::http::edge::hsts(&mut conn.out, &conn.fe, conn.tls);
    let mut answered = 0;
    let ok = conn
        .send_out_with(client, e.body.slice(body), &mut answered)
        .await
        .is_ok();
    let mut done = Done::ours(started, status, head_len as u64, answered, ok);
    if via.pool.is_some() {
        done.bytes_in = via.sent;
    }
    done.first_byte = via.first_byte.or(done.first_byte);
    done.pool = via.pool;
    done.server = via.server;
    conn.finish_ours(&done, keep)
}

/// Write the head of an answer from `e` to `out`; returns the status and the byte range of
/// the body to send after it.
pub(super) fn write_entry(
    out: &mut Vec<u8>,
    ask: &Ask,
    e: &Entry,
    label: &str,
    status_header: bool,
    keep: bool,
) -> (u16, std::ops::Range<usize>) {
    out.clear();
    let now = now_ms();
    let len = e.body.len() as u64;
    let not_modified = e.status == 200
        && match &ask.if_none_match {
            Some(list) => e
                .etag
                .as_ref()
                .is_some_and(|t| answer::etag_matches(list, t, true)),
            None => ask
                .if_modified_since
                .as_deref()
                .and_then(date::parse)
                .zip(e.last_modified)
                .is_some_and(|(since, lm)| lm <= since),
        };
    let mut status = e.status;
    let mut body = 0..e.body.len();
    let mut content_range = None;
    if not_modified {
        status = 304;
        body = 0..0;
    } else if let (200, Some(r)) = (e.status, &ask.range) {
        let current = match &ask.if_range {
            None => true,
            Some(v) if v.starts_with(b"\"") => e.etag.as_deref() == Some(v.as_slice()),
            Some(v) => date::parse(v).is_some() && date::parse(v) == e.last_modified,
        };
        if current {
            match range::resolve(r, len) {
                Ranges::Parts(p) if p.len() == 1 => {
                    status = 206;
                    body = p[0].start as usize..p[0].end as usize;
                    content_range = Some(p[0].clone());
                }
                Ranges::Unsatisfiable => {
                    status = 416;
                    body = 0..0;
                }
                _ => {}
            }
        }
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    answer::push_decimal(out, status as u64);
    out.push(b' ');
    if status == e.status {
        out.extend_from_slice(&e.reason);
    } else {
        out.extend_from_slice(answer::reason(status).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&e.fields);
    field_num(out, "Age", e.age_ms(now) / 1000);
    if status_header {
        field(out, "X-Cache", label.as_bytes());
    }
    if let Some(r) = content_range {
        let mut v = b"bytes ".to_vec();
        answer::push_decimal(&mut v, r.start);
        v.push(b'-');
        answer::push_decimal(&mut v, r.end - 1);
        v.push(b'/');
        answer::push_decimal(&mut v, len);
        field(out, "Content-Range", &v);
    } else if status == 416 {
        let mut v = b"bytes */".to_vec();
        answer::push_decimal(&mut v, len);
        field(out, "Content-Range", &v);
    }
    if status != 304 && status != 204 {
        field_num(out, "Content-Length", body.len() as u64);
    }
    answer::connection(out, keep, ask.http10);
    out.extend_from_slice(b"\r\n");
    if ask.head_only {
        body = 0..0;
    }
    (status, body)
}
