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
//! Rooms: this file makes the plan ([`before`], PURGE); `serve.rs` writes every answer from a
//! stored copy; `store.rs` turns a response head into what is stored (fields kept, freshness,
//! Vary values, 304 merging) and rewrites the request for a fetch; `respond.rs` decides what
//! happens once the origin answered.
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
use super::relay::{self, BodyLeft};
use crate::cache::{self, policy, Entry, FlightGuard, Joined, Purge, Zone};
use crate::config::CacheConf;
use crate::proto::http::body::ChunkedDecoder;
use crate::proto::http::cache_control::{split_list, CacheControl};
use crate::proto::http::range::{self, Ranges};
use crate::proto::http::{date, Framing, HeaderSpan, Method, RequestHead, ResponseHead};
use crate::proxy::conns::Upstream;
use crate::route::RequestView;
use crate::rt::{self, Read, Socket};

mod respond;
mod serve;
mod store;

pub use respond::{add_label, respond, After};
use serve::via;
pub use serve::{serve, Via};
pub use store::rewrite_request;
use store::{clone_entry, entry_for, facts, merged};

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
        client: &mut Socket,
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
    client: &mut Socket,
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
    let http10 = head.minor_version == 0;
    answer::text(&mut conn.out, status, &[], keep, http10, false);
    finish_answer(conn, client, keep, status, head.head_len as u64, started).await
}

/// Look the request up before it goes to the origin.
pub async fn before(
    conn: &mut Conn<'_>,
    client: &mut Socket,
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
    client: &mut Socket,
    head: &RequestHead,
    z: &Zone,
    started: Instant,
) -> Outcome {
    z.stats.miss.add(1);
    let keep = !head.close && !conn.closing();
    conn.buf.drain(..head.head_len);
    let label: &[(&str, &[u8])] = if z.conf.status_header {
        &[("X-Cache", b"MISS")]
    } else {
        &[]
    };
    let (http10, head_only) = (head.minor_version == 0, head.method == Method::Head);
    answer::text(&mut conn.out, 504, label, keep, http10, head_only);
    finish_answer(conn, client, keep, 504, head.head_len as u64, started).await
}

pub(super) async fn finish_answer(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    keep: bool,
    status: u16,
    bytes_in: u64,
    started: Instant,
) -> Outcome {
    let mut answered = 0;
    let ok = conn.send_out(client, &mut answered).await.is_ok();
    conn.finish_ours(&Done::ours(started, status, bytes_in, answered, ok), keep)
}
