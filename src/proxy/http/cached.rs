//! The HTTP cache on the request path (RFC 9111; the rules themselves are in
//! `cache::policy`, the store in `cache`). Before forwarding, [`before`] looks the request up:
//! a usable stored response answers it here ([`serve`]), otherwise it returns a [`Plan`] for
//! the exchange: fetch (leading a coalesced fetch, or alone), revalidate a stale entry with its
//! validators, refresh one in the background after answering stale (stale-while-revalidate),
//! or pass through (unsafe methods invalidate on success). After the origin's head arrives,
//! [`respond`] stores what may be stored (the body is read into memory, up to `max_object`)
//! and answers from the stored copy, merges a `304` into the entry, or falls back to a stale
//! copy on an error when `stale-if-error` allows.
//!
//! Answers that went through the cache carry `X-Cache` (unless `status_header = false`):
//! HIT, MISS, STALE, REVALIDATED, EXPIRED, BYPASS.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::answer::{self, field, field_num};
use super::conn::{Conn, Outcome};
use super::done::Done;
use super::exchange::Exchange;
use super::relay::BodyLeft;
use crate::cache::{self, policy, Entry, FlightGuard, Joined, Purge, Zone};
use crate::config::CacheConf;
use crate::proto::http::body::ChunkedDecoder;
use crate::proto::http::cache_control::{split_list, CacheControl};
use crate::proto::http::range::{self, Ranges};
use crate::proto::http::{date, Framing, HeaderSpan, Method, RequestHead, ResponseHead};
use crate::proxy::conns::Upstream;
use crate::route::RequestView;
use crate::rt::{self, Read, TcpStream};

/// What the exchange does with the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Fetch the whole response to store it (conditionals of the client's removed).
    Fetch,
    /// Ask with the stored entry's validators.
    Revalidate,
    /// An unsafe method: forwarded as is; a success evicts the URL (§4.4).
    Invalidate,
    /// Not for the cache: forwarded as is.
    Bypass,
}

/// What the client asked that an answer from the cache must honour.
#[derive(Debug, Default)]
pub struct Ask {
    pub head_only: bool,
    pub http10: bool,
    pub close: bool,
    pub if_none_match: Option<Vec<u8>>,
    pub if_modified_since: Option<Vec<u8>>,
    pub range: Option<Vec<u8>>,
    pub if_range: Option<Vec<u8>>,
}

/// The cache's part of an exchange that goes to the origin.
pub struct Plan {
    pub zone: Rc<Zone>,
    pub key: Vec<u8>,
    pub mode: Mode,
    pub req: policy::Request,
    pub ask: Ask,
    pub request_ms: u64,
    /// The stored entry being revalidated (or to fall back on).
    pub entry: Option<Rc<Entry>>,
    /// This request leads a coalesced fetch: others wait until it is dropped.
    pub lead: Option<FlightGuard>,
    /// The request's head (bytes and fields), for the Vary values of what gets stored.
    pub head_bytes: Vec<u8>,
    pub headers: Vec<HeaderSpan>,
    /// The client was already answered (stale-while-revalidate): this fetch only refreshes
    /// the entry, and this is how the client's exchange ended.
    pub background: Option<Outcome>,
    /// The `X-Cache` value for an answer passed through.
    pub label: &'static str,
    /// The purge count when the plan was made: a purge meanwhile keeps the fetch unstored.
    pub purges: u64,
}

impl Plan {
    /// After the origin could not be reached: may the stale entry answer (stale-if-error)?
    pub fn stale_on_error(&self) -> bool {
        self.background.is_none()
            && self
                .entry
                .as_ref()
                .is_some_and(|e| policy::stale_if_error(&e.stored, &self.req, e.age_ms(now_ms())))
    }

    /// Answer with the stale entry (see [`stale_on_error`](Self::stale_on_error)).
    pub async fn answer_stale(
        &mut self,
        conn: &mut Conn<'_>,
        client: &mut TcpStream,
        started: Instant,
    ) -> Outcome {
        let Some(e) = self.entry.clone() else {
            return Outcome::Close { linger: false };
        };
        self.zone.stats.stale.add(1);
        let z = self.zone.clone();
        serve(
            conn,
            client,
            0,
            &self.ask,
            &e,
            "STALE",
            &z,
            started,
            Via::default(),
        )
        .await
    }
}

/// What [`before`] decided.
pub enum Before {
    /// Answered from the cache (counted).
    Answered(Outcome),
    Forward(Box<Plan>),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn view<'a>(buf: &'a [u8], head: &'a RequestHead) -> RequestView<'a> {
    RequestView {
        buf,
        host: None,
        path: head.path.of(buf),
        target: head.origin.of(buf),
        headers: &head.headers,
    }
}

fn request_facts(req: &RequestView) -> policy::Request {
    let cc = CacheControl::of(req.header_values("cache-control"));
    let has_cc = req.header_values("cache-control").next().is_some();
    let pragma_no_cache = !has_cc
        && req
            .header_values("pragma")
            .flat_map(split_list)
            .any(|d| d.eq_ignore_ascii_case(b"no-cache"));
    policy::Request {
        cc,
        pragma_no_cache,
        authorization: req.header_values("authorization").next().is_some(),
    }
}

/// Is this a `PURGE` request?
pub fn is_purge(buf: &[u8], head: &RequestHead) -> bool {
    head.method == Method::Other && head.method_span.of(buf) == b"PURGE"
}

/// The zone of `conf` on this shard.
pub fn zone(conn: &Conn, conf: &Arc<CacheConf>) -> Rc<Zone> {
    let ctx = &conn.http.ctx;
    let shared = &ctx.shared;
    conn.http
        .caches
        .get(conf, shared.shards, ctx.id(), &shared.caches)
}

/// Answer a `PURGE` of the request's URL: 200 when something was stored, 404 when not, 403 for
/// a client outside `purge_from`. The purge also goes to every other shard's zones.
pub async fn purge(
    conn: &mut Conn<'_>,
    client: &mut TcpStream,
    head: &RequestHead,
    conf: &Arc<CacheConf>,
    started: Instant,
) -> Outcome {
    let has_body = !matches!(head.framing, Framing::None | Framing::Length(0));
    let keep = !head.close && !has_body && !conn.closing();
    let allowed = conn
        .fe
        .conf
        .purge_from
        .iter()
        .any(|c| c.contains(conn.peer));
    let status = if allowed {
        let z = zone(conn, conf);
        let mut key = Vec::new();
        let host = head
            .absolute_authority
            .or(head.host)
            .map(|s| s.of(&conn.buf));
        cache::key(
            host.unwrap_or_default(),
            head.origin.of(&conn.buf),
            &mut key,
        );
        let n = z.remove(&Purge::Key(key.clone()));
        z.stats.purged.add(n as u64);
        conn.http.ctx.shared.caches.purge(Purge::Key(key));
        if n > 0 {
            200
        } else {
            404
        }
    } else {
        403
    };
    conn.buf.drain(..head.head_len);
    if has_body {
        conn.buf.clear();
    }
    let text = answer::reason(status);
    conn.out.clear();
    answer::status_line(&mut conn.out, status);
    field(&mut conn.out, "Content-Type", b"text/plain; charset=utf-8");
    field_num(&mut conn.out, "Content-Length", text.len() as u64 + 1);
    answer::connection(&mut conn.out, keep, head.minor_version == 0);
    conn.out.extend_from_slice(b"\r\n");
    conn.out.extend_from_slice(text.as_bytes());
    conn.out.push(b'\n');
    let mut answered = 0;
    let ok = conn.send_out(client, &mut answered).await.is_ok();
    conn.finish_ours(
        &Done::ours(started, status, head.head_len as u64, answered, ok),
        keep,
    )
}

/// Look the request up before it goes to the origin.
pub async fn before(
    conn: &mut Conn<'_>,
    client: &mut TcpStream,
    head: &RequestHead,
    conf: &Arc<CacheConf>,
    timeout: std::time::Duration,
    started: Instant,
) -> Before {
    let z = zone(conn, conf);
    let mut key = Vec::new();
    let host = head
        .absolute_authority
        .or(head.host)
        .map(|s| s.of(&conn.buf));
    cache::key(
        host.unwrap_or_default(),
        head.origin.of(&conn.buf),
        &mut key,
    );
    let has_body = !matches!(head.framing, Framing::None | Framing::Length(0));
    let req = request_facts(&view(&conn.buf, head));
    let ask = {
        let v = view(&conn.buf, head);
        let own = |n: &str| v.header_values(n).next().map(<[u8]>::to_vec);
        Ask {
            head_only: head.method == Method::Head,
            http10: head.minor_version == 0,
            close: head.close,
            if_none_match: own("if-none-match"),
            if_modified_since: own("if-modified-since"),
            range: own("range"),
            if_range: own("if-range"),
        }
    };
    let plan = |buf: &[u8], mode, label, entry, lead, ask, req| {
        Before::Forward(Box::new(Plan {
            zone: z.clone(),
            key: key.clone(),
            mode,
            req,
            ask,
            request_ms: now_ms(),
            entry,
            lead,
            head_bytes: buf[..head.head_len].to_vec(),
            headers: head.headers.clone(),
            background: None,
            label,
            purges: z.purges(),
        }))
    };
    match head.method {
        Method::Get | Method::Head if !has_body => {}
        Method::Get | Method::Head | Method::Options | Method::Trace | Method::Connect => {
            z.stats.bypass.add(1);
            return plan(&conn.buf, Mode::Bypass, "BYPASS", None, None, ask, req);
        }
        _ => {
            z.stats.bypass.add(1);
            return plan(&conn.buf, Mode::Invalidate, "BYPASS", None, None, ask, req);
        }
    }
    if req.cc.no_store {
        z.stats.bypass.add(1);
        return plan(&conn.buf, Mode::Bypass, "BYPASS", None, None, ask, req);
    }
    let mut waited = false;
    loop {
        let found = {
            let v = view(&conn.buf, head);
            z.lookup(&key, &|name| cache::vary_value(name, v.header_values(name)))
        }
        .filter(|e| !req.authorization || e.auth_ok);
        let Some(e) = found else {
            if req.cc.only_if_cached {
                return Before::Answered(answer_504(conn, client, head, &z, started).await);
            }
            if head.method == Method::Head {
                // A HEAD response has no body to store.
                z.stats.miss.add(1);
                return plan(&conn.buf, Mode::Bypass, "MISS", None, None, ask, req);
            }
            if ask.range.is_some() || has_preconditions(&view(&conn.buf, head)) {
                // Nothing stored to answer a range or a precondition from: they go to the
                // origin as sent (§4.3.2), and what comes back is not stored.
                z.stats.miss.add(1);
                return plan(&conn.buf, Mode::Bypass, "MISS", None, None, ask, req);
            }
            if waited {
                z.stats.miss.add(1);
                return plan(&conn.buf, Mode::Fetch, "MISS", None, None, ask, req);
            }
            match z.join_or_lead(&key) {
                Joined::Lead(g) => {
                    z.stats.miss.add(1);
                    return plan(&conn.buf, Mode::Fetch, "MISS", None, Some(g), ask, req);
                }
                Joined::Alone => {
                    z.stats.miss.add(1);
                    return plan(&conn.buf, Mode::Fetch, "MISS", None, None, ask, req);
                }
                Joined::Wait(w) => {
                    z.stats.coalesced.add(1);
                    let _ = rt::timeout(timeout, w).await;
                    waited = true;
                    continue;
                }
            }
        };
        let age = e.age_ms(now_ms());
        let outcome = match policy::usable(&e.stored, &req, age) {
            policy::Use::Fresh => "HIT",
            policy::Use::StaleAllowed => "STALE",
            policy::Use::StaleRevalidate if e.updating.get() || head.method == Method::Head => {
                "STALE"
            }
            policy::Use::StaleRevalidate => {
                e.updating.set(true);
                z.stats.stale.add(1);
                let ask2 = Ask {
                    head_only: ask.head_only,
                    http10: ask.http10,
                    close: ask.close,
                    ..Ask::default()
                };
                let mut p = match plan(
                    &conn.buf,
                    Mode::Revalidate,
                    "STALE",
                    Some(e.clone()),
                    None,
                    ask2,
                    req,
                ) {
                    Before::Forward(p) => p,
                    Before::Answered(o) => return Before::Answered(o),
                };
                let out = serve(
                    conn,
                    client,
                    head.head_len,
                    &ask,
                    &e,
                    "STALE",
                    &z,
                    started,
                    Via::default(),
                )
                .await;
                p.background = Some(out);
                return Before::Forward(p);
            }
            policy::Use::Validate if req.cc.only_if_cached => {
                return Before::Answered(answer_504(conn, client, head, &z, started).await);
            }
            policy::Use::Validate if head.method == Method::Head => {
                z.stats.expired.add(1);
                return plan(&conn.buf, Mode::Bypass, "EXPIRED", None, None, ask, req);
            }
            policy::Use::Validate => {
                let validators = e.etag.is_some() || e.last_modified.is_some();
                let mode = if validators {
                    Mode::Revalidate
                } else {
                    Mode::Fetch
                };
                return plan(&conn.buf, mode, "EXPIRED", Some(e), None, ask, req);
            }
        };
        count(&z, outcome);
        let out = serve(
            conn,
            client,
            head.head_len,
            &ask,
            &e,
            outcome,
            &z,
            started,
            Via::default(),
        )
        .await;
        return Before::Answered(out);
    }
}

/// `If-Match`, `If-Unmodified-Since` or `If-Range`: preconditions meant for the origin.
fn has_preconditions(v: &RequestView) -> bool {
    ["if-match", "if-unmodified-since", "if-range"]
        .iter()
        .any(|n| v.header_values(n).next().is_some())
}

fn count(z: &Zone, label: &str) {
    let s = &z.stats;
    match label {
        "HIT" => s.hit.add(1),
        "MISS" => s.miss.add(1),
        "STALE" => s.stale.add(1),
        "REVALIDATED" => s.revalidated.add(1),
        "EXPIRED" => s.expired.add(1),
        _ => s.bypass.add(1),
    }
}

/// `only-if-cached` with nothing usable stored: 504 (§5.2.1.7).
async fn answer_504(
    conn: &mut Conn<'_>,
    client: &mut TcpStream,
    head: &RequestHead,
    z: &Zone,
    started: Instant,
) -> Outcome {
    z.stats.miss.add(1);
    let keep = !head.close && !conn.closing();
    conn.buf.drain(..head.head_len);
    let text = answer::reason(504);
    conn.out.clear();
    answer::status_line(&mut conn.out, 504);
    answer::date(&mut conn.out);
    if z.conf.status_header {
        field(&mut conn.out, "X-Cache", b"MISS");
    }
    field(&mut conn.out, "Content-Type", b"text/plain; charset=utf-8");
    field_num(&mut conn.out, "Content-Length", text.len() as u64 + 1);
    answer::connection(&mut conn.out, keep, head.minor_version == 0);
    conn.out.extend_from_slice(b"\r\n");
    if head.method != Method::Head {
        conn.out.extend_from_slice(text.as_bytes());
        conn.out.push(b'\n');
    }
    finish_answer(conn, client, keep, 504, head.head_len as u64, started).await
}

async fn finish_answer(
    conn: &mut Conn<'_>,
    client: &mut TcpStream,
    keep: bool,
    status: u16,
    bytes_in: u64,
    started: Instant,
) -> Outcome {
    let mut answered = 0;
    let ok = conn.send_out(client, &mut answered).await.is_ok();
    conn.finish_ours(&Done::ours(started, status, bytes_in, answered, ok), keep)
}

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

fn via(x: &Exchange) -> Via {
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
    client: &mut TcpStream,
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
fn write_entry(
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

/// Rewrite the request head in `out` (the head alone: the request has no body) for a fetch
/// the cache makes: the client's conditionals and Range go (the cache wants the whole
/// response and answers those itself), the stored entry's validators come in.
pub fn rewrite_request(out: &mut Vec<u8>, validators: Option<&Entry>) {
    const DROP: [&[u8]; 6] = [
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    ];
    let mut next = Vec::with_capacity(out.len() + 96);
    let mut lines = out.split(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        next.extend_from_slice(first);
        next.push(b'\n');
    }
    for line in lines {
        let l = line.strip_suffix(b"\r").unwrap_or(line);
        if l.is_empty() {
            break;
        }
        let name = l.split(|&b| b == b':').next().unwrap_or_default();
        if DROP.iter().any(|d| name.eq_ignore_ascii_case(d)) {
            continue;
        }
        next.extend_from_slice(line);
        next.push(b'\n');
    }
    if let Some(e) = validators {
        if let Some(t) = &e.etag {
            field(&mut next, "If-None-Match", t);
        }
        if let Some(lm) = e.last_modified {
            next.extend_from_slice(b"If-Modified-Since: ");
            date::write(lm, &mut next);
            next.extend_from_slice(b"\r\n");
        }
    }
    next.extend_from_slice(b"\r\n");
    *out = next;
}

/// Fields a stored response does not keep: hop-by-hop, framing, and those recomputed.
fn dropped_field(name: &[u8]) -> bool {
    const DROP: [&[u8]; 11] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
        b"content-length",
        b"age",
        b"x-cache",
        b"proxy-authenticate",
    ];
    DROP.iter().any(|d| name.eq_ignore_ascii_case(d))
}

/// What storing reads of a response head's fields.
struct Facts {
    resp: policy::Response,
    etag: Option<Bytes>,
    vary: Vec<Box<str>>,
    /// Fields named by `Connection` (hop-by-hop too).
    connection_named: Vec<Vec<u8>>,
}

fn facts(buf: &[u8], status: u16, headers: &[HeaderSpan]) -> Facts {
    let vals = |n: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.of(buf).eq_ignore_ascii_case(n.as_bytes()))
            .map(move |h| h.value.of(buf))
    };
    let cc = CacheControl::of(vals("cache-control"));
    let mut vary = Vec::new();
    let mut vary_star = false;
    for v in vals("vary") {
        for item in split_list(v) {
            if item == b"*" {
                vary_star = true;
            } else if let Ok(s) = std::str::from_utf8(item) {
                vary.push(s.to_ascii_lowercase().into_boxed_str());
            }
        }
    }
    let etag = vals("etag").next().map(Bytes::copy_from_slice);
    let last_modified = vals("last-modified").next().and_then(date::parse);
    // §1.2.2: delta-seconds beyond 2^31 are 2^31 (and a huge Age cannot overflow later).
    let age = vals("age")
        .next()
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .min(1 << 31);
    let connection_named = vals("connection")
        .flat_map(split_list)
        .map(|n| n.to_ascii_lowercase())
        .collect();
    Facts {
        resp: policy::Response {
            status,
            cc,
            expires: vals("expires").next().map(date::parse),
            date: vals("date").next().and_then(date::parse),
            last_modified,
            age,
            set_cookie: vals("set-cookie").next().is_some(),
            vary_star,
            has_validator: etag.is_some() || last_modified.is_some(),
        },
        etag,
        vary,
        connection_named,
    }
}

/// The stored fields of a response head: end-to-end ones, as sent.
fn stored_fields(buf: &[u8], headers: &[HeaderSpan], named: &[Vec<u8>], out: &mut Vec<u8>) {
    for h in headers {
        let name = h.name.of(buf);
        if dropped_field(name) || named.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.of(buf));
        out.extend_from_slice(b"\r\n");
    }
}

/// The reason phrase of the status line at the start of `buf`.
fn reason_of(buf: &[u8]) -> &[u8] {
    let end = memchr::memchr(b'\r', buf).unwrap_or(0);
    match buf.get(12) {
        Some(b' ') => buf.get(13..end).unwrap_or_default(),
        _ => &[],
    }
}

/// Build the entry for a response (head in `head_buf`, whole body in `body`).
fn entry_for(plan: &Plan, head_buf: &[u8], resp: &ResponseHead, f: &Facts, body: Bytes) -> Entry {
    let response_ms = now_ms();
    let mut fields = Vec::with_capacity(resp.head_len);
    stored_fields(head_buf, &resp.headers, &f.connection_named, &mut fields);
    let v = RequestView {
        buf: &plan.head_bytes,
        host: None,
        path: &[],
        target: &[],
        headers: &plan.headers,
    };
    let vary = f
        .vary
        .iter()
        .map(|n| (n.clone(), cache::vary_value(n, v.header_values(n))))
        .collect();
    Entry::new(
        resp.status,
        Bytes::copy_from_slice(reason_of(head_buf)),
        Bytes::from(fields),
        body,
        response_ms,
        policy::initial_age_ms(&f.resp, plan.request_ms, response_ms),
        policy::Stored {
            lifetime: policy::lifetime(&f.resp, response_ms / 1000),
            cc: f.resp.cc,
        },
        f.etag.clone(),
        f.resp.last_modified,
        vary,
        f.resp.cc.public || f.resp.cc.s_maxage.is_some() || f.resp.cc.must_revalidate,
    )
}

/// A 304 merged into the stored entry (§4.3.4): the 304's fields replace the stored ones of
/// the same name; the body stays.
fn merged(
    plan: &Plan,
    old: &Entry,
    head_buf: &[u8],
    resp: &ResponseHead,
) -> (Option<Entry>, Option<Entry>) {
    let f = facts(head_buf, resp.status, &resp.headers);
    let mut fields = Vec::with_capacity(old.fields.len() + resp.head_len);
    let mut new_fields = Vec::new();
    stored_fields(
        head_buf,
        &resp.headers,
        &f.connection_named,
        &mut new_fields,
    );
    let replaced = |name: &[u8]| {
        resp.headers
            .iter()
            .any(|h| h.name.of(head_buf).eq_ignore_ascii_case(name))
    };
    for line in old.fields.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if !replaced(name) || name.eq_ignore_ascii_case(b"content-type") {
            fields.extend_from_slice(line);
        }
    }
    for line in new_fields.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if !name.eq_ignore_ascii_case(b"content-type") {
            fields.extend_from_slice(line);
        }
    }
    // The merged fields decide freshness from now on.
    let mut all = Vec::with_capacity(fields.len() + 32);
    all.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    all.extend_from_slice(&fields);
    all.extend_from_slice(b"\r\n");
    let mf = match crate::proto::http::parse::parse_response(
        &all,
        Method::Get,
        all.len() + 1,
        1000,
        Vec::new(),
    ) {
        Ok(crate::proto::http::Status::Complete(h)) => facts(&all, old.status, &h.headers),
        _ => f,
    };
    let response_ms = now_ms();
    let build = |fields: Vec<u8>| {
        Entry::new(
            old.status,
            old.reason.clone(),
            Bytes::from(fields),
            old.body.clone(),
            response_ms,
            policy::initial_age_ms(&mf.resp, plan.request_ms, response_ms),
            policy::Stored {
                lifetime: policy::lifetime(&mf.resp, response_ms / 1000),
                cc: mf.resp.cc,
            },
            mf.etag.clone().or_else(|| old.etag.clone()),
            mf.resp.last_modified.or(old.last_modified),
            old.vary.clone(),
            old.auth_ok,
        )
    };
    // What may be stored: the merged response must still be storable (§3; Set-Cookie aside,
    // which is simply never stored), and without the cookie.
    let mut facts_no_cookie = mf.resp;
    facts_no_cookie.set_cookie = false;
    let storable = policy::not_storable(&plan.req, &facts_no_cookie).is_none();
    let has_cookie = mf.resp.set_cookie;
    let stored = storable.then(|| {
        let without: Vec<u8> = fields
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| {
                let name = l.split(|&b| b == b':').next().unwrap_or_default();
                !name.eq_ignore_ascii_case(b"set-cookie")
            })
            .flatten()
            .copied()
            .collect();
        build(without)
    });
    // This client's answer differs from the stored copy only when it carries a cookie.
    let mine = (has_cookie || stored.is_none()).then(|| build(fields));
    (mine, stored)
}

/// A copy of an entry (for an answer that must not share the stored one).
fn clone_entry(e: &Entry) -> Entry {
    Entry::new(
        e.status,
        e.reason.clone(),
        e.fields.clone(),
        e.body.clone(),
        e.response_ms,
        e.initial_age_ms,
        e.stored,
        e.etag.clone(),
        e.last_modified,
        e.vary.clone(),
        e.auth_ok,
    )
}

/// What [`respond`] did.
pub enum After {
    /// Answered (or, in the background, done); the status the client got and whether the
    /// answer went out whole.
    Done(Outcome, u16, bool),
    /// Not for the cache: relay the response as usual, with this `X-Cache` value (if any).
    Relay(Upstream, ResponseHead, &'static str),
}

/// After the origin's response head: store, merge, fall back, or hand back for relaying.
#[allow(clippy::too_many_arguments)]
pub async fn respond(
    conn: &mut Conn<'_>,
    client: &mut TcpStream,
    x: &mut Exchange,
    mut up: Upstream,
    resp: ResponseHead,
    plan: &mut Plan,
    read_timeout: std::time::Duration,
    started: Instant,
) -> After {
    let z = plan.zone.clone();
    let status = resp.status;
    if plan.mode == Mode::Invalidate {
        if (200..400).contains(&status) {
            invalidate(conn, plan, &up.buf, &resp);
        }
        return After::Relay(up, resp, plan.label);
    }
    if plan.mode == Mode::Bypass {
        return After::Relay(up, resp, plan.label);
    }
    let background = plan.background.is_some();
    // A 304 to our validators: the stored entry is current again.
    if let (304, Some(old)) = (status, plan.entry.clone()) {
        if plan.mode == Mode::Revalidate {
            let reusable = up.buf.len() == resp.head_len && !resp.close;
            // The answer for this client keeps the 304's Set-Cookie; the stored copy never
            // does, and a 304 that makes the response private or no-store ends the entry.
            let (mine, stored) = merged(plan, &old, &up.buf, &resp);
            let keep = z.is_stored(&plan.key, &old) && z.purges() == plan.purges;
            let e = match stored {
                Some(st) if keep => {
                    let st = z.insert(&plan.key, st);
                    mine.map_or(st, Rc::new)
                }
                st => {
                    z.remove_entry(&plan.key, &old);
                    Rc::new(mine.or(st).unwrap_or_else(|| clone_entry(&old)))
                }
            };
            // Requests waiting for this fetch may look again now.
            plan.lead.take();
            if reusable {
                if let Some(c) = conn.view.conns.get(x.pool) {
                    c.checkin(up, false);
                }
            }
            if background {
                return After::Done(Outcome::KeepAlive, 0, true);
            }
            z.stats.revalidated.add(1);
            return answered(conn, client, plan, &e, "REVALIDATED", started, via(x)).await;
        }
    }
    // An error from the origin: a stale entry that allows it answers instead.
    if status >= 500 {
        if let Some(old) = plan.entry.clone() {
            if policy::stale_if_error(&old.stored, &plan.req, old.age_ms(now_ms())) {
                if background {
                    old.updating.set(false);
                    return After::Done(Outcome::KeepAlive, 0, true);
                }
                z.stats.stale.add(1);
                return answered(conn, client, plan, &old, "STALE", started, via(x)).await;
            }
        }
    }
    let f = facts(&up.buf, status, &resp.headers);
    let why_not = policy::not_storable(&plan.req, &f.resp).or_else(|| {
        // The origin saw these as the proxy wrote them, not as the client sent them: a
        // variant keyed on the client's value would be served to the wrong clients.
        f.vary
            .iter()
            .any(|n| {
                matches!(
                    &**n,
                    "x-forwarded-for" | "x-forwarded-proto" | "forwarded" | "x-real-ip"
                ) || n.contains('_')
            })
            .then_some("Vary on a field the proxy rewrites")
    });
    let max = z.max_object();
    let fits = match resp.framing {
        Framing::None => true,
        Framing::Length(n) => n <= max,
        Framing::Chunked => true,
        Framing::UntilClose => false,
    };
    if why_not.is_some() || !fits || x.req.upgrade {
        tracing::debug!(
            why = why_not.unwrap_or("too large or close-delimited"),
            "not stored"
        );
        if let Some(old) = &plan.entry {
            // The stored copy is outdated by this answer.
            if (200..400).contains(&status) {
                z.remove_entry(&plan.key, old);
            }
        }
        plan.lead.take();
        if background {
            if let Some(e) = &plan.entry {
                e.updating.set(false);
            }
            return After::Done(Outcome::KeepAlive, 0, true);
        }
        return After::Relay(up, resp, plan.label);
    }
    // Read the whole body into memory (up to the limit), within the shard's budget for fills
    // under way: beyond it, the answer is relayed as it comes instead.
    let reserve = match resp.framing {
        Framing::Length(n) => n as usize,
        _ => max as usize,
    };
    let Some(_fill) = z.fill(reserve) else {
        plan.lead.take();
        if background {
            if let Some(e) = &plan.entry {
                e.updating.set(false);
            }
            return After::Done(Outcome::KeepAlive, 0, true);
        }
        return After::Relay(up, resp, plan.label);
    };
    let mut raw: Vec<u8> = up.buf[resp.head_len..].to_vec();
    let mut body = BodyLeft::response(resp.framing);
    let mut scratch = Vec::new();
    let mut taken = 0usize;
    let mut complete = body.is_none();
    let mut extra = false;
    let limit = max as usize + 64 * 1024;
    if let Some(b) = body.as_mut() {
        loop {
            match b.take(&raw[taken..], &mut scratch) {
                Ok((k, done)) => {
                    taken += k;
                    if done {
                        complete = true;
                        extra = taken < raw.len();
                        break;
                    }
                }
                Err(_) => {
                    if let Some(e) = &plan.entry {
                        e.updating.set(false);
                    }
                    if background {
                        return After::Done(Outcome::KeepAlive, 0, true);
                    }
                    // Nothing went to the client yet: it gets a 502.
                    return After::Done(Outcome::Answer(502), 502, false);
                }
            }
            if taken > limit {
                break;
            }
            let (r, next) = rt::read_into(
                &mut up.stream,
                std::mem::take(&mut raw),
                16 * 1024,
                read_timeout,
            )
            .await;
            raw = next;
            if !matches!(r, Read::Data) {
                // The origin went away or stalled mid-body: nothing to store or answer with.
                if let (false, Some(old)) = (background, plan.entry.clone()) {
                    if policy::stale_if_error(&old.stored, &plan.req, old.age_ms(now_ms())) {
                        z.stats.stale.add(1);
                        return answered(conn, client, plan, &old, "STALE", started, via(x)).await;
                    }
                }
                if let Some(e) = &plan.entry {
                    e.updating.set(false);
                }
                if background {
                    return After::Done(Outcome::KeepAlive, 0, true);
                }
                return After::Done(Outcome::Answer(502), 502, false);
            }
        }
    }
    let data = match (complete, resp.framing) {
        (false, _) => None,
        (true, Framing::Chunked) => {
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::with_capacity(taken);
            let _ = d.feed_data(&raw[..taken], &mut out);
            Some(out)
        }
        (true, _) => Some(raw[..taken].to_vec()),
    };
    match data.filter(|d| d.len() as u64 <= max) {
        Some(d) => {
            let e = entry_for(plan, &up.buf, &resp, &f, Bytes::from(d));
            let reusable = !extra && !resp.close;
            // A purge that arrived while this was fetched may name it: answer, do not store.
            let e = if z.purges() == plan.purges {
                z.insert(&plan.key, e)
            } else {
                Rc::new(e)
            };
            plan.lead.take();
            if reusable {
                if let Some(c) = conn.view.conns.get(x.pool) {
                    c.checkin(up, false);
                }
            }
            if background {
                return After::Done(Outcome::KeepAlive, 0, true);
            }
            let label = plan.label;
            answered(conn, client, plan, &e, label, started, via(x)).await
        }
        None => {
            // Over the limit: the client gets the response as it came, the rest relayed.
            plan.lead.take();
            if let Some(e) = &plan.entry {
                e.updating.set(false);
            }
            if background {
                return After::Done(Outcome::KeepAlive, 0, true);
            }
            let keep = x.client_keeps(&resp, conn.closing());
            conn.out.clear();
            crate::proto::http::write::write_response_head(
                &up.buf,
                &resp,
                keep,
                x.req.http10,
                false,
                &mut conn.out,
            );
            add_label(&mut conn.out, plan.label, z.conf.status_header);
            conn.out.extend_from_slice(&raw[..taken]);
            if conn.send_out(client, &mut x.answered).await.is_err() {
                return After::Done(Outcome::Close { linger: false }, status, false);
            }
            if complete {
                // All of it was read (a chunked body whose decoded size turned out too large):
                // nothing is left to relay.
                if !extra && !resp.close {
                    if let Some(c) = conn.view.conns.get(x.pool) {
                        c.checkin(up, false);
                    }
                }
                let outcome = if keep {
                    Outcome::KeepAlive
                } else {
                    Outcome::Close { linger: true }
                };
                return After::Done(outcome, status, true);
            }
            let Some(mut b) = body else {
                return After::Done(Outcome::Close { linger: false }, status, false);
            };
            let rbuf = conn.http.relay_buf();
            let pace = rt::Pace::new(conn.fe.conf.send_timeout, conn.fe.conf.send_min_rate);
            let relay = super::relay::Relay {
                pipes: &conn.http.ctx.shard.pipes,
                read_timeout,
                write_timeout: conn.fe.conf.send_timeout,
                dir: super::relay::Dir::Response,
                pace: &pace,
            };
            let mut overran = false;
            let (end, rbuf) = relay
                .run(
                    &mut up.stream,
                    client,
                    &mut b,
                    rbuf,
                    &mut conn.wbuf,
                    super::relay::Spill::Note(&mut overran),
                    &mut x.answered,
                )
                .await;
            conn.http.give_back(rbuf);
            let whole = matches!(end, super::relay::RelayEnd::Done);
            let outcome = if whole && keep {
                Outcome::KeepAlive
            } else {
                Outcome::Close { linger: whole }
            };
            After::Done(outcome, status, whole)
        }
    }
}

/// Answer the client from `e` after a fetch (the request's head is gone from `conn.buf`).
async fn answered(
    conn: &mut Conn<'_>,
    client: &mut TcpStream,
    plan: &Plan,
    e: &Rc<Entry>,
    label: &str,
    started: Instant,
    via: Via,
) -> After {
    let z = plan.zone.clone();
    let out = serve(conn, client, 0, &plan.ask, e, label, &z, started, via).await;
    // `serve` counted the exchange: the caller must not count it again.
    After::Done(out, 0, true)
}

/// Append `X-Cache: label` to a head written in `out` (which ends with the blank line).
pub fn add_label(out: &mut Vec<u8>, label: &str, on: bool) {
    if !on || label.is_empty() || !out.ends_with(b"\r\n\r\n") {
        return;
    }
    out.truncate(out.len() - 2);
    field(out, "X-Cache", label.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// §4.4: a successful unsafe request evicts its URL and those in `Location` and
/// `Content-Location` on the same host, here and on every shard.
fn invalidate(conn: &Conn, plan: &Plan, buf: &[u8], resp: &ResponseHead) {
    let host_end = plan
        .key
        .iter()
        .position(|&b| b == b'/')
        .unwrap_or(plan.key.len());
    let host = &plan.key[..host_end];
    let mut keys = vec![plan.key.clone()];
    for h in &resp.headers {
        let n = h.name.of(buf);
        if !(n.eq_ignore_ascii_case(b"location") || n.eq_ignore_ascii_case(b"content-location")) {
            continue;
        }
        let v = h.value.of(buf);
        let target = if v.starts_with(b"/") {
            Some(v.to_vec())
        } else {
            // Absolute: only the same host (another host's URL is not ours to evict).
            v.strip_prefix(b"http://")
                .or_else(|| v.strip_prefix(b"https://"))
                .and_then(|rest| {
                    let slash = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
                    let mut k = Vec::new();
                    cache::key(&rest[..slash], &rest[slash..], &mut k);
                    (k.starts_with(host) && k.get(host.len()) == Some(&b'/'))
                        .then(|| k[host.len()..].to_vec())
                })
        };
        if let Some(t) = target {
            let mut k = Vec::new();
            cache::key(host, &t, &mut k);
            keys.push(k);
        }
    }
    for k in keys {
        let n = plan.zone.remove(&Purge::Key(k.clone()));
        plan.zone.stats.purged.add(n as u64);
        conn.http.ctx.shared.caches.purge(Purge::Key(k));
    }
}
