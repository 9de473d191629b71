//! Answering a request from a `static` route: GET and HEAD of regular files under the route's
//! root, with `Last-Modified`/`ETag` validators, conditional requests (RFC 9110 §13), byte
//! ranges (§14, one range or several as `multipart/byteranges`), precompressed `.br`/`.gz`
//! siblings for clients that accept them, index files for directories and never a listing.
//! Small files come from memory (the shard's file cache); larger ones go from the page cache
//! to the socket with `sendfile(2)`.

use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::answer::{self, field, field_num};
use super::conn::{Conn, Outcome};
use super::done::Done;
use crate::config::StaticConf;
use crate::files::{self, mime, path, Found, OpenFile};
use crate::proto::http::range::{self, Ranges};
use crate::proto::http::{date, Framing, Method, RequestHead};
use crate::route::RequestView;
use crate::rt::{Pace, Socket};

/// The multipart boundary (a fixed token: a part's bytes cannot be mistaken for it, since
/// every part's length is given in the head before it is read... by a reader that counts;
/// RFC 2046 readers search for it, so it is long and unlikely).
const BOUNDARY: &str = "SHARDGATE_7c1f3e9a2b4d6081";

/// What the request asks of the file, read from its head before the head's bytes go.
struct Ask<'a> {
    get: bool,
    if_match: Option<&'a [u8]>,
    if_none_match: Option<&'a [u8]>,
    if_modified_since: Option<&'a [u8]>,
    if_unmodified_since: Option<&'a [u8]>,
    range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
    br: bool,
    gzip: bool,
}

/// The file chosen for the answer.
struct Chosen {
    file: Rc<OpenFile>,
    content_type: &'static str,
    encoding: Option<&'static str>,
    vary: bool,
}

/// Serve `head` (at the start of `conn.buf`) from `conf`'s root.
pub async fn serve(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    head: &RequestHead,
    conf: &Arc<StaticConf>,
    started: Instant,
) -> Outcome {
    let has_body = !matches!(head.framing, Framing::None | Framing::Length(0));
    let keep = !head.close && !has_body && !conn.closing();
    let http10 = head.minor_version == 0;
    let mut out = std::mem::take(&mut conn.out);
    out.clear();
    let (status, body) = decide(conn, head, conf, &mut out, keep, http10);
    super::edge::hsts(&mut out, &conn.fe, conn.tls);
    // The request (a body, if one came, is not read: the connection closes after the answer).
    conn.buf.drain(..head.head_len);
    if has_body {
        conn.buf.clear();
    }
    conn.out = out;
    let mut answered = 0;
    // One piece of a file held in memory goes out with the head in one writev.
    let in_memory = match &body {
        Some((f, parts)) if parts.len() == 1 && parts[0].0.is_empty() => f
            .bytes
            .as_ref()
            .map(|b| b.slice(parts[0].1.start as usize..parts[0].1.end as usize)),
        _ => None,
    };
    let ok = match (in_memory, body) {
        (_, _) if head.method == Method::Head => conn.send_out(client, &mut answered).await.is_ok(),
        (Some(bytes), _) => conn
            .send_out_with(client, bytes, &mut answered)
            .await
            .is_ok(),
        (None, None) => conn.send_out(client, &mut answered).await.is_ok(),
        (None, Some((file, parts))) => {
            conn.send_out(client, &mut answered).await.is_ok()
                && send_parts(conn, client, &file, &parts, &mut answered).await
        }
    };
    let first_byte = started.elapsed();
    let mut done = Done::ours(started, status, head.head_len as u64, answered, ok);
    done.first_byte = Some(first_byte);
    conn.finish_ours(&done, keep)
}

/// A body still to send after the head: the file and the byte ranges of it (with, for a
/// multipart answer, the part heads written before each range and the closing delimiter).
type Body = (Rc<OpenFile>, Vec<(Vec<u8>, Range<u64>)>);

/// Write the answer's head (and a small body) to `out`; return its status and any body
/// still to send.
fn decide(
    conn: &mut Conn<'_>,
    head: &RequestHead,
    conf: &Arc<StaticConf>,
    out: &mut Vec<u8>,
    keep: bool,
    http10: bool,
) -> (u16, Option<Body>) {
    let buf = &conn.buf;
    let req = RequestView {
        buf,
        host: None,
        path: head.path.of(buf),
        target: head.origin.of(buf),
        headers: &head.headers,
    };
    let one = |name: &str| req.header_values(name).next();
    let head_only = head.method == Method::Head;
    let simple = |out: &mut Vec<u8>, status: u16, extra: &[(&str, &[u8])]| {
        answer::text(out, status, extra, keep, http10, head_only);
        status
    };
    if !matches!(head.method, Method::Get | Method::Head) {
        return (simple(out, 405, &[("Allow", b"GET, HEAD")]), None);
    }
    let clean = match path::clean(req.path) {
        Ok(c) => c,
        Err(path::Refused(why)) => {
            tracing::debug!(peer = %conn.peer, why, "static path refused");
            return (simple(out, 400, &[]), None);
        }
    };
    let ask = Ask {
        get: head.method == Method::Get,
        if_match: one("if-match"),
        if_none_match: one("if-none-match"),
        if_modified_since: one("if-modified-since"),
        if_unmodified_since: one("if-unmodified-since"),
        range: one("range"),
        if_range: one("if-range"),
        br: conf.precompressed && files::accepts(req.header_values("accept-encoding"), b"br"),
        gzip: conf.precompressed && files::accepts(req.header_values("accept-encoding"), b"gzip"),
    };
    let mut cache = conn.http.files.borrow_mut();
    let mut rel = clean.rel;
    let file = match cache.lookup(conf, &rel) {
        Found::File(_) if clean.dir => return (simple(out, 404, &[]), None),
        Found::File(f) => f,
        Found::Dir if !clean.dir => {
            // A directory asked for without its slash: send the client to the slash form,
            // so relative links in its index resolve (nginx does the same).
            // Built from the cleaned path, never from the raw one: `//host` would send the
            // browser to another site.
            let mut loc = Vec::with_capacity(rel.len() + 8);
            loc.push(b'/');
            encode_path(&rel, &mut loc);
            loc.push(b'/');
            let (origin, path) = (head.origin.of(buf), head.path.of(buf));
            loc.extend_from_slice(&origin[path.len().min(origin.len())..]);
            return (simple(out, 301, &[("Location", &loc)]), None);
        }
        Found::Dir => {
            let base = rel.len();
            let mut hit = None;
            for name in &conf.index {
                rel.truncate(base);
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(name.as_bytes());
                if let Found::File(f) = cache.lookup(conf, &rel) {
                    hit = Some(f);
                    break;
                }
            }
            match hit {
                Some(f) => f,
                // No index and no listing.
                None => return (simple(out, 403, &[]), None),
            }
        }
        Found::Status(s) => return (simple(out, s, &[]), None),
    };
    let content_type = mime::for_path(&rel);
    let mut chosen = Chosen {
        file,
        content_type,
        encoding: None,
        vary: false,
    };
    if conf.precompressed {
        let base = rel.len();
        for (coding, suffix, wanted) in [("br", &b".br"[..], ask.br), ("gzip", b".gz", ask.gzip)] {
            rel.truncate(base);
            rel.extend_from_slice(suffix);
            if let Found::File(f) = cache.lookup(conf, &rel) {
                chosen.vary = true;
                if wanted && chosen.encoding.is_none() {
                    chosen.file = f;
                    chosen.encoding = Some(coding);
                }
            }
        }
    }
    drop(cache);
    respond_file(out, &ask, chosen, keep, http10, head_only)
}

/// The validators' fields of a file answer.
fn validators(out: &mut Vec<u8>, f: &OpenFile) {
    out.extend_from_slice(b"Last-Modified: ");
    date::write(f.mtime, out);
    out.extend_from_slice(b"\r\n");
    field(out, "ETag", f.etag.as_bytes());
}

fn respond_file(
    out: &mut Vec<u8>,
    ask: &Ask,
    c: Chosen,
    keep: bool,
    http10: bool,
    head_only: bool,
) -> (u16, Option<Body>) {
    let f = c.file;
    let etag = f.etag.as_bytes();
    let since = |v: Option<&[u8]>| v.and_then(date::parse);
    // RFC 9110 §13.2.2: If-Match, else If-Unmodified-Since; then If-None-Match, else
    // If-Modified-Since; then If-Range with Range.
    let failed = match ask.if_match {
        Some(list) => !answer::etag_matches(list, etag, false),
        None => since(ask.if_unmodified_since).is_some_and(|t| f.mtime > t),
    };
    let common = |out: &mut Vec<u8>, status: u16| {
        answer::status_line(out, status);
        answer::date(out);
        validators(out, &f);
        if c.vary {
            field(out, "Vary", b"Accept-Encoding");
        }
    };
    if failed {
        common(out, 412);
        field_num(out, "Content-Length", 0);
        answer::connection(out, keep, http10);
        out.extend_from_slice(b"\r\n");
        return (412, None);
    }
    let not_modified = match ask.if_none_match {
        Some(list) => answer::etag_matches(list, etag, true),
        None => since(ask.if_modified_since).is_some_and(|t| f.mtime <= t),
    };
    if not_modified {
        common(out, 304);
        answer::connection(out, keep, http10);
        out.extend_from_slice(b"\r\n");
        return (304, None);
    }
    let ranges = match ask.range.filter(|_| ask.get) {
        None => Ranges::Whole,
        Some(r) => {
            // If-Range: the range only if the representation is the one the client has.
            let current = match ask.if_range {
                None => true,
                Some(v) if v.starts_with(b"\"") => v == etag,
                Some(v) if v.starts_with(b"W/") => false,
                Some(v) => date::parse(v) == Some(f.mtime),
            };
            if current {
                range::resolve(r, f.size)
            } else {
                Ranges::Whole
            }
        }
    };
    let typed = |out: &mut Vec<u8>| {
        field(out, "Content-Type", c.content_type.as_bytes());
        if let Some(e) = c.encoding {
            field(out, "Content-Encoding", e.as_bytes());
        }
    };
    match ranges {
        Ranges::Unsatisfiable => {
            common(out, 416);
            let mut cr = b"bytes */".to_vec();
            answer::push_decimal(&mut cr, f.size);
            field(out, "Content-Range", &cr);
            field_num(out, "Content-Length", 0);
            answer::connection(out, keep, http10);
            out.extend_from_slice(b"\r\n");
            (416, None)
        }
        Ranges::Whole => {
            common(out, 200);
            typed(out);
            field(out, "Accept-Ranges", b"bytes");
            field_num(out, "Content-Length", f.size);
            answer::connection(out, keep, http10);
            out.extend_from_slice(b"\r\n");
            if head_only {
                return (200, None);
            }
            let whole = 0..f.size;
            (200, Some((f, vec![(Vec::new(), whole)])))
        }
        Ranges::Parts(parts) if parts.len() == 1 => {
            let r = parts[0].clone();
            common(out, 206);
            typed(out);
            let mut cr = Vec::with_capacity(48);
            content_range(&mut cr, &r, f.size);
            field(out, "Content-Range", &cr);
            field_num(out, "Content-Length", r.end - r.start);
            answer::connection(out, keep, http10);
            out.extend_from_slice(b"\r\n");
            (206, Some((f, vec![(Vec::new(), r)])))
        }
        Ranges::Parts(parts) => {
            let mut pieces = Vec::with_capacity(parts.len() + 1);
            let mut len = 0;
            for r in parts {
                let mut h = Vec::with_capacity(128);
                h.extend_from_slice(b"\r\n--");
                h.extend_from_slice(BOUNDARY.as_bytes());
                h.extend_from_slice(b"\r\n");
                typed(&mut h);
                let mut cr = Vec::with_capacity(48);
                content_range(&mut cr, &r, f.size);
                field(&mut h, "Content-Range", &cr);
                h.extend_from_slice(b"\r\n");
                len += h.len() as u64 + (r.end - r.start);
                pieces.push((h, r));
            }
            let mut tail = b"\r\n--".to_vec();
            tail.extend_from_slice(BOUNDARY.as_bytes());
            tail.extend_from_slice(b"--\r\n");
            len += tail.len() as u64;
            pieces.push((tail, 0..0));
            common(out, 206);
            let mut ct = b"multipart/byteranges; boundary=".to_vec();
            ct.extend_from_slice(BOUNDARY.as_bytes());
            field(out, "Content-Type", &ct);
            field_num(out, "Content-Length", len);
            answer::connection(out, keep, http10);
            out.extend_from_slice(b"\r\n");
            (206, Some((f, pieces)))
        }
    }
}

/// Percent-encode a cleaned path for a `Location`: unreserved characters, sub-delims, `:`,
/// `@` and `/` stay, everything else is escaped.
fn encode_path(rel: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in rel {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

fn content_range(out: &mut Vec<u8>, r: &Range<u64>, len: u64) {
    out.extend_from_slice(b"bytes ");
    answer::push_decimal(out, r.start);
    out.push(b'-');
    answer::push_decimal(out, r.end - 1);
    out.push(b'/');
    answer::push_decimal(out, len);
}

/// Send each piece: its part head, then its bytes of the file (from memory for a small file,
/// by `sendfile` otherwise).
async fn send_parts(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    file: &OpenFile,
    parts: &[(Vec<u8>, Range<u64>)],
    answered: &mut u64,
) -> bool {
    let send_timeout = conn.fe.conf.send_timeout;
    let pace = Pace::new(send_timeout, conn.fe.conf.send_min_rate);
    for (part_head, r) in parts {
        conn.out.clear();
        conn.out.extend_from_slice(part_head);
        if let Some(b) = &file.bytes {
            conn.out
                .extend_from_slice(&b[r.start as usize..r.end as usize]);
        }
        if !conn.out.is_empty() && conn.send_out(client, answered).await.is_err() {
            return false;
        }
        if let (None, Some(fd)) = (&file.bytes, &file.fd) {
            if r.end <= r.start {
                continue;
            }
            use std::os::fd::AsRawFd;
            let fd = fd.as_raw_fd();
            let len = r.end - r.start;
            let mut scratch = Vec::new();
            let res = client
                .send_file(
                    fd,
                    r.start,
                    len,
                    send_timeout,
                    Some(&pace),
                    &mut scratch,
                    answered,
                )
                .await;
            if let Err(e) = res {
                tracing::debug!(peer = %conn.peer, error = %e, "static file send failed");
                return false;
            }
        }
    }
    true
}
