//! One request/response exchange. [`Exchange`] is the whole state of it as a plain value: what
//! went upstream, what is left of the request body, whether the request was cut short by an
//! early answer, how the response ended; the decisions (retry? keep the client? keep the
//! upstream connection?) are methods on it, so each can be driven in a unit test without a
//! socket. [`run`] walks the stages: route → begin → [`forward`](super::forward) → respond.
//!
//! Ownership of the client's bytes is simple on purpose: [`Exchange::begin`] says how many bytes
//! at the start of the client buffer belong to this request (head and the body bytes already
//! read) and they are removed at once; if the body is not complete, every byte read was body,
//! the buffer is empty, and the body relay appends whatever follows the body's end (the next
//! pipelined request) to it.

use std::net::IpAddr;
use std::time::Instant;

use super::cached;
use super::conn::{Conn, Outcome};
use super::done::{reason, Done};
use super::error::Failure;
use super::forward;
use super::pick;
use super::relay::{BodyLeft, Dir, Relay, RelayEnd, Spill};
use super::sticky::{self, StickyReq};
use super::HttpFront;
use crate::proto::http::write::{write_request_head, write_response_head, ForwardInfo};
use crate::proto::http::{Framing, Method, RequestHead, ResponseHead};
use crate::proxy::conns::Upstream;
use crate::proxy::ShardView;
use crate::route::{self, RequestView, Target};
use crate::rt::{Pace, Socket};

/// What the exchange needs to remember of the request head once its bytes are gone.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts {
    pub method: Method,
    pub http10: bool,
    /// The client asked to close after this exchange.
    pub close: bool,
    pub expect_continue: bool,
    pub upgrade: bool,
}

/// The state of one exchange.
#[derive(Debug)]
pub struct Exchange {
    pub req: RequestFacts,
    pub pool: usize,
    /// The request as it goes upstream: the rewritten head, then the body bytes already read.
    pub out: Vec<u8>,
    /// The part of the request body still to come from the client; `None` once all of it has
    /// been forwarded (or there is none).
    pub body: Option<BodyLeft>,
    /// The whole request was in `out` before anything was sent: it can be sent again.
    pub whole: bool,
    /// Request bytes written upstream by the attempt that got the response.
    pub sent: u64,
    /// Response bytes written to the client (interim responses included).
    pub answered: u64,
    /// The server answered (or stopped reading) before the request body was all forwarded.
    pub cut: bool,
    /// We answered `Expect: 100-continue` ourselves.
    pub sent_continue: bool,
    /// The response body reached its end.
    pub response_complete: bool,
    /// The server sent bytes past its response's framing.
    pub response_extra: bool,
    /// The sticky server the request named, and whether the response gets our cookie.
    pub sticky: StickyReq,
    /// `balance = "hash"`: the hash of the pool's `hash_key` for this request.
    pub hash: u64,
    /// The server of the last attempt (the one that answered, or failed last).
    pub server: Option<usize>,
    /// Attempts after the first: the next server after a refused connect, or the same
    /// request again on a fresh connection.
    pub retries: u8,
}

impl Exchange {
    /// Rewrite `head` for the server and take the body bytes that follow it in `buf`. Returns
    /// the exchange and how many bytes at the start of `buf` belong to this request.
    /// `strip_cookie`: a cookie taken out of the request (sticky `insert_cookie`); `https`:
    /// the client connection is TLS (X-Forwarded-Proto).
    pub fn begin(
        buf: &[u8],
        head: &RequestHead,
        fe: &HttpFront,
        (client_ip, https): (IpAddr, bool),
        pool: usize,
        mut out: Vec<u8>,
        strip_cookie: Option<&[u8]>,
    ) -> Result<(Exchange, usize), Failure> {
        let info = ForwardInfo {
            client_ip,
            proto: if https { "https" } else { "http" },
            strip_expect: head.expect_continue,
            underscores: fe.conf.underscores_in_headers,
        };
        out.clear();
        match strip_cookie
            .and_then(|name| crate::proto::http::cookie::without_cookie(buf, head, name))
        {
            None => write_request_head(buf, head, &info, &mut out),
            Some((stripped, cookies)) => {
                write_request_head(buf, &stripped, &info, &mut out);
                // The head ends with its blank line: the Cookie fields go before it.
                out.truncate(out.len() - 2);
                out.extend_from_slice(&cookies);
                out.extend_from_slice(b"\r\n");
            }
        }
        let mut body = BodyLeft::request(
            head.framing,
            fe.limits.max_body,
            fe.conf.keep_chunk_extensions,
        );
        let mut consumed = head.head_len;
        if let Some(b) = body.as_mut() {
            let (k, done) = b
                .take_into(&buf[head.head_len..], &mut out)
                .map_err(Failure::BadRequest)?;
            consumed += k;
            if done {
                body = None;
            }
        }
        let x = Exchange {
            req: RequestFacts {
                method: head.method,
                http10: head.minor_version == 0,
                close: head.close,
                expect_continue: head.expect_continue,
                upgrade: head.upgrade_websocket,
            },
            pool,
            out,
            whole: body.is_none(),
            body,
            sent: 0,
            answered: 0,
            cut: false,
            sent_continue: false,
            response_complete: false,
            response_extra: false,
            sticky: StickyReq::default(),
            hash: 0,
            server: None,
            retries: 0,
        };
        Ok((x, consumed))
    }

    /// RFC 9110 §9.2.2.
    pub fn idempotent(&self) -> bool {
        matches!(
            self.req.method,
            Method::Get
                | Method::Head
                | Method::Options
                | Method::Trace
                | Method::Put
                | Method::Delete
        )
    }

    /// After `failure` on an upstream connection, may the request go again on a fresh one?
    /// Once, only when the failed connection was reused (a server closing an idle connection
    /// is normal; a fresh one failing is the server's answer), only with the whole request in
    /// hand, and only as [`Failure::replayable`] allows.
    pub fn may_retry(&self, failure: Failure, reused: bool, retried: bool) -> bool {
        reused && !retried && self.whole && failure.replayable(self.idempotent())
    }

    /// Forward this interim (1xx) response to the client? RFC 9110 §15.2: yes, except to an
    /// HTTP/1.0 client, and except a `100 Continue` when we already sent our own.
    pub fn forwards_interim(&self, status: u16) -> bool {
        let answered_ourselves = status == 100 && self.sent_continue;
        !self.req.http10 && !answered_ourselves
    }

    /// May the client connection carry another request after this response?
    pub fn client_keeps(&self, resp: &ResponseHead, draining: bool) -> bool {
        !self.req.close && !draining && resp.framing != Framing::UntilClose && !self.cut
    }

    /// May the upstream connection go back to the idle set? Only when both messages ended
    /// exactly where their framing said, and the server did not say it closes.
    pub fn upstream_reusable(&self, resp: &ResponseHead) -> bool {
        self.body.is_none()
            && !self.cut
            && self.response_complete
            && !self.response_extra
            && !resp.close
            && resp.framing != Framing::UntilClose
    }
}

/// Serve the request whose head starts `conn.buf`.
pub async fn run(conn: &mut Conn<'_>, client: &mut Socket, head: &RequestHead) -> Outcome {
    let started = Instant::now();
    let host = head.absolute_authority.or(head.host);
    crate::stats::site_key(host.map(|s| s.of(&conn.buf)), &mut conn.site);
    conn.logged =
        conn.fe.conf.access_log.as_ref().and_then(|a| {
            crate::log::capture(&conn.http.ctx, a, &conn.fe.conf.name, &conn.buf, head)
        });
    if crate::mem::level() >= crate::mem::Level::Refusing {
        conn.http.ctx.stats().shed_refused.add(1);
        return fail(conn, Failure::Overloaded, head.head_len as u64, started);
    }
    if let Some(port) = conn.fe.conf.redirect_https {
        return super::edge::redirect_https(conn, client, head, port, started).await;
    }
    // What routing and the hash key read of the request, built once.
    let req = view(&conn.buf, head);
    let (pool, cache) = match choose(conn, head, &req) {
        Ok(Target::Pool { pool, cache }) => (pool, cache.cloned()),
        Ok(Target::Static(conf)) => {
            let conf = conf.clone();
            return super::files::serve(conn, client, head, &conf, started).await;
        }
        Err(f) => return fail(conn, f, head.head_len as u64, started),
    };
    let view = conn.view.clone();
    // The route's cache, else the pool's.
    let cache = cache.or_else(|| view.conns.get(pool).and_then(|c| c.conf.cache.clone()));
    let mut plan = None;
    if let Some(c) = &cache {
        if cached::is_purge(&conn.buf, head) {
            return cached::purge(conn, client, head, c, started).await;
        }
        let timeout = view.conns[pool].conf.response_timeout;
        match cached::before(conn, client, head, c, timeout, started).await {
            cached::Before::Answered(outcome) => return outcome,
            cached::Before::Forward(p) => plan = Some(p),
        }
    }
    let out = std::mem::take(&mut conn.out);
    let shared = &view.conns[pool].shared;
    let strip = sticky::strip_name(shared);
    // A background refresh: the client was answered from the cache and its head is gone
    // from the buffer; the plan kept a copy.
    let bg_head = plan
        .as_ref()
        .filter(|p| p.background.is_some())
        .map(|p| p.head_bytes.clone());
    let background = bg_head.is_some();
    let src: &[u8] = bg_head.as_deref().unwrap_or(&conn.buf);
    let req = self::view(src, head);
    let (mut x, consumed) =
        match Exchange::begin(src, head, &conn.fe, (conn.peer, conn.tls), pool, out, strip) {
            Ok(v) => v,
            Err(f) if background => {
                tracing::debug!(failure = ?f, "cache refresh not sent");
                return plan
                    .and_then(|mut p| p.background.take())
                    .unwrap_or(Outcome::Close { linger: false });
            }
            Err(f) => return fail(conn, f, head.head_len as u64, started),
        };
    x.sticky = sticky::resolve(shared, src, head, conn.peer);
    x.hash = pick::hash(&view.conns[pool].conf, &req, conn.peer);
    if !background {
        conn.buf.drain(..consumed);
    }
    if let Some(p) = plan.as_ref() {
        if matches!(p.mode, cached::Mode::Fetch | cached::Mode::Revalidate) {
            let validators = p
                .entry
                .as_deref()
                .filter(|_| p.mode == cached::Mode::Revalidate);
            cached::rewrite_request(&mut x.out, validators);
            x.whole = true;
        }
        if background {
            // Nothing of this exchange may reach the client: no interim responses either.
            x.req.http10 = true;
        }
    }
    let mut ours = 0;
    let mut done = Done {
        pool: Some(pool),
        ..Done::failed(started, Failure::ClientGone, 0, 0)
    };
    let mut counted = false;
    let outcome = match forward::forward(conn, client, &mut x, &view).await {
        Ok((up, resp, inflight)) => {
            done.first_byte = Some(started.elapsed());
            done.status = resp.status;
            let pool = &view.conns[x.pool].shared;
            sticky::settle(pool, conn.http.ctx.id(), &mut x.sticky, inflight.server());
            // No retry after this point: the request buffer serves the response head.
            std::mem::swap(&mut conn.out, &mut x.out);
            let status = resp.status;
            let (up, resp, label) = match plan.as_mut() {
                None => (up, resp, ""),
                Some(p) => {
                    let timeout = view.conns[x.pool].conf.response_timeout;
                    match cached::respond(conn, client, &mut x, up, resp, p, timeout, started).await
                    {
                        cached::After::Relay(up, resp, label) => (up, resp, label),
                        cached::After::Done(outcome, st, whole) => {
                            // Answered from the stored copy (`serve` counted it), or done in
                            // the background, or relayed here past the size limit.
                            counted = st == 0;
                            if let Some(o) = p.background.take() {
                                inflight
                                    .server()
                                    .add_bytes(inflight.shard(), x.sent + x.answered);
                                drop(inflight);
                                return o;
                            }
                            done.status = if st == 0 { status } else { st };
                            done.reason = if whole {
                                reason::OK
                            } else {
                                reason::INCOMPLETE
                            };
                            inflight
                                .server()
                                .add_bytes(inflight.shard(), x.sent + x.answered);
                            if !counted {
                                done.bytes_in = x.sent;
                                done.bytes_out = x.answered;
                                done.server = x.server;
                                done.retries = x.retries;
                                conn.finish(&done);
                            }
                            return outcome;
                        }
                    }
                }
            };
            let status_header = cache.as_ref().is_some_and(|c| c.status_header);
            let outcome =
                respond(conn, client, &mut x, up, resp, &view, label, status_header).await;
            done.reason = if status == 101 {
                reason::UPGRADED
            } else if x.response_complete {
                reason::OK
            } else {
                reason::INCOMPLETE
            };
            // For by_traffic: what went up and what came back.
            inflight
                .server()
                .add_bytes(inflight.shard(), x.sent + x.answered);
            outcome
        }
        Err(f) if plan.as_ref().is_some_and(|p| p.background.is_some()) => {
            // A background refresh failed: the client already has its answer.
            tracing::debug!(failure = ?f, "cache refresh failed");
            if let Some(p) = plan.as_mut() {
                if let Some(e) = &p.entry {
                    e.updating.set(false);
                }
                if let Some(o) = p.background.take() {
                    return o;
                }
            }
            return Outcome::Close { linger: false };
        }
        Err(f) if plan.as_ref().is_some_and(|p| p.stale_on_error()) => {
            // The origin is unreachable: a stale copy that allows it answers instead.
            let Some(p) = plan.as_mut() else {
                return f.into();
            };
            return p.answer_stale(conn, client, started).await;
        }
        Err(f) if plan.as_ref().is_some_and(|p| p.entry.is_some()) && f.status().is_some() => {
            // A stored answer that may not be served stale (must-revalidate, no-cache, or
            // past its stale-if-error) and an origin that cannot be asked: 504 (RFC 9111
            // §4.2.4, §5.2.2.2), not the stale copy.
            tracing::debug!(peer = %conn.peer, failure = ?f, "stale entry, origin unreachable");
            done.status = 504;
            done.reason = f.name();
            ours = answered_len(conn, 504);
            Outcome::Answer(504)
        }
        Err(f) => {
            tracing::debug!(peer = %conn.peer, side = ?f.side(), failure = ?f, "exchange failed");
            done.status = f.status().unwrap_or(0);
            done.reason = f.name();
            // Our answer (if any) goes out after this exchange; its bytes count here.
            ours = answered_len(conn, done.status);
            Outcome::from(f)
        }
    };
    done.bytes_in = x.sent;
    done.bytes_out = x.answered + ours;
    done.server = x.server;
    done.retries = x.retries;
    done.sticky = x.sticky.ticket.named;
    if !counted {
        conn.finish(&done);
    }
    if conn.out.capacity() < x.out.capacity() {
        conn.out = x.out;
    }
    outcome
}

/// An exchange that ends before a server is tried: our answer (if any) is what the client gets.
fn fail(conn: &mut Conn, f: Failure, bytes_in: u64, started: Instant) -> Outcome {
    let answered = f.status().map_or(0, |s| answered_len(conn, s));
    conn.finish(&Done::failed(started, f, bytes_in, answered));
    f.into()
}

/// The length of our canned answer with status `status` (0: none).
fn answered_len(conn: &Conn, status: u16) -> u64 {
    if status == 0 {
        return 0;
    }
    crate::proto::http::answers::canned_for(status, conn.head_request).len() as u64
}

/// Route the request: a pool of the frontend, or a static route.
fn choose<'c>(
    conn: &'c Conn,
    head: &RequestHead,
    req: &RequestView,
) -> Result<Target<'c>, Failure> {
    let conf = &conn.fe.conf;
    if let Some(auth) = head.absolute_authority {
        if !route::serves_host(conf, auth.of(&conn.buf)) {
            return Err(Failure::ForeignHost);
        }
    }
    route::select(conf, req).ok_or(Failure::NoRoute)
}

/// The request as routing and balancing read it.
fn view<'a>(buf: &'a [u8], head: &'a RequestHead) -> RequestView<'a> {
    let or_root = |s: crate::proto::http::Span| -> &'a [u8] {
        if s.is_empty() {
            b"/"
        } else {
            s.of(buf)
        }
    };
    RequestView {
        buf,
        host: head.absolute_authority.or(head.host).map(|s| s.of(buf)),
        path: or_root(head.path),
        target: or_root(head.origin),
        headers: &head.headers,
    }
}

/// Relay the response (head in `up.buf`) to the client, then decide what both connections do.
#[allow(clippy::too_many_arguments)]
async fn respond(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    x: &mut Exchange,
    mut up: Upstream,
    resp: ResponseHead,
    view: &ShardView,
    label: &str,
    status_header: bool,
) -> Outcome {
    let http = conn.http;
    let cache = &view.conns[x.pool];
    let send_timeout = conn.fe.conf.send_timeout;
    if resp.status == 101 {
        if !x.req.upgrade || x.cut {
            return Failure::BadResponse.into();
        }
        conn.out.clear();
        write_response_head(&up.buf, &resp, true, x.req.http10, true, &mut conn.out);
        // A client whose first request is an upgrade gets our cookie too.
        if let Some(server) = x.sticky.insert {
            let id = http.ctx.id();
            sticky::insert(&cache.shared, id, server, &up.buf, &resp, &mut conn.out);
        }
        conn.out.extend_from_slice(&up.buf[resp.head_len..]);
        up.buf.clear();
        return match conn.send_out(client, &mut x.answered).await {
            Ok(()) => Outcome::Tunnel(up),
            Err(_) => Outcome::Close { linger: false },
        };
    }
    let drain = http.ctx.drain();
    let keep = x.client_keeps(&resp, conn.closing());
    conn.out.clear();
    write_response_head(&up.buf, &resp, keep, x.req.http10, false, &mut conn.out);
    cached::add_label(&mut conn.out, label, status_header);
    super::edge::hsts(&mut conn.out, &conn.fe, conn.tls);
    if let Some(server) = x.sticky.insert {
        sticky::insert(
            &cache.shared,
            http.ctx.id(),
            server,
            &up.buf,
            &resp,
            &mut conn.out,
        );
    }
    let after = &up.buf[resp.head_len..];
    let mut body = BodyLeft::response(resp.framing);
    match body.as_mut() {
        None => {
            x.response_complete = true;
            x.response_extra = !after.is_empty();
        }
        Some(b) => match b.take_into(after, &mut conn.out) {
            Ok((k, done)) => {
                x.response_complete = done;
                x.response_extra = k < after.len();
            }
            Err(_) => return Failure::BadResponse.into(),
        },
    }
    if conn.send_out(client, &mut x.answered).await.is_err() {
        return Outcome::Close { linger: false };
    }
    if let Some(b) = body.as_mut().filter(|_| !x.response_complete) {
        let pace = Pace::new(send_timeout, conn.fe.conf.send_min_rate);
        let relay = Relay {
            pipes: &http.ctx.shard.pipes,
            read_timeout: cache.conf.response_timeout,
            write_timeout: send_timeout,
            dir: Dir::Response,
            pace: &pace,
        };
        let mut overran = false;
        let rbuf = http.relay_buf();
        let (end, rbuf) = relay
            .run(
                &mut up.stream,
                client,
                b,
                rbuf,
                &mut conn.wbuf,
                Spill::Note(&mut overran),
                &mut x.answered,
            )
            .await;
        http.give_back(rbuf);
        match end {
            RelayEnd::Done => {
                x.response_complete = !matches!(b, BodyLeft::UntilClose);
                x.response_extra = overran;
            }
            // The client has a truncated response: only closing tells it so.
            _ => return Outcome::Close { linger: false },
        }
    }
    if x.upstream_reusable(&resp) {
        cache.checkin(up, drain.shedding());
    }
    conn.resp_headers = resp.headers;
    if keep {
        Outcome::KeepAlive
    } else {
        Outcome::Close { linger: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse::{parse_request, parse_response};
    use crate::proto::http::{ParseError, Status};

    fn front(toml_extra: &str) -> HttpFront {
        let toml = format!(
            "[[http]]\nname = \"w\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"p\"\n{toml_extra}\n[pool.p]\nservers = [ {{ name = \"s\", addr = \"127.0.0.1:2\" }} ]\n"
        );
        let c = crate::config::from_str(&toml, "<test>").unwrap();
        HttpFront::new(c.http[0].clone(), Default::default())
    }

    fn begin(fe: &HttpFront, buf: &[u8]) -> Result<(Exchange, usize), Failure> {
        let head = match parse_request(buf, &fe.limits, Vec::new()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        Exchange::begin(
            buf,
            &head,
            fe,
            ("10.0.0.1".parse().unwrap(), false),
            0,
            Vec::new(),
            None,
        )
    }

    fn resp(raw: &[u8], method: Method) -> ResponseHead {
        match parse_response(raw, method, 4096, 64, Vec::new()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn begin_takes_exactly_the_request_and_leaves_the_next_one() {
        let fe = front("");
        let get = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut buf = get.to_vec();
        buf.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let (x, used) = begin(&fe, &buf).unwrap();
        assert_eq!(used, get.len());
        assert!(x.whole && x.body.is_none());

        // A length body complete in the buffer, then a pipelined request.
        let post = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        let mut buf = post.to_vec();
        buf.extend_from_slice(b"GET /next");
        let (x, used) = begin(&fe, &buf).unwrap();
        assert_eq!(used, post.len());
        assert!(x.out.ends_with(b"\r\n\r\nhello"));
        assert!(x.whole);

        // A body that has not all arrived: every byte read is body, none is left over.
        let partial = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        let (x, used) = begin(&fe, partial).unwrap();
        assert_eq!(used, partial.len());
        assert!(!x.whole && x.body.is_some());
        assert!(x.out.ends_with(b"\r\n\r\n5\r\nhel"));
    }

    #[test]
    fn begin_normalises_framing_and_drops_underscored_fields() {
        let fe = front("");
        let raw = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\nX_Evil: 1\r\nTransfer_Encoding: chunked\r\n\r\nhello";
        let (x, _) = begin(&fe, raw).unwrap();
        let sent = String::from_utf8_lossy(&x.out).to_string();
        assert_eq!(sent.matches("Content-Length").count(), 1, "{sent}");
        assert!(sent.contains("Content-Length: 5\r\n"), "{sent}");
        assert!(!sent.contains('_'), "{sent}");

        let fe = front("underscores_in_headers = true");
        let (x, _) = begin(&fe, raw).unwrap();
        assert!(String::from_utf8_lossy(&x.out).contains("X_Evil: 1\r\n"));
    }

    #[test]
    fn begin_refuses_bad_chunks_and_oversized_chunked_bodies() {
        let fe = front("");
        let raw = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n";
        assert!(matches!(
            begin(&fe, raw),
            Err(Failure::BadRequest(ParseError::BadRequest(_)))
        ));
        let fe = front("max_body = 4");
        let raw = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(
            begin(&fe, raw).err(),
            Some(Failure::BadRequest(ParseError::BodyTooLarge))
        );
    }

    #[test]
    fn retries_only_whole_requests_on_reused_connections() {
        let fe = front("");
        let (get, _) = begin(&fe, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let (post, _) = begin(
            &fe,
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx",
        )
        .unwrap();
        let (streamed, _) = begin(
            &fe,
            b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nx",
        )
        .unwrap();
        let closed = Failure::UpstreamClosed { any_byte: false };
        assert!(get.may_retry(closed, true, false));
        assert!(!get.may_retry(closed, false, false), "fresh connection");
        assert!(!get.may_retry(closed, true, true), "only once");
        assert!(
            !post.may_retry(closed, true, false),
            "POST may have been processed"
        );
        assert!(
            post.may_retry(Failure::UpstreamWrite, true, false),
            "write failed"
        );
        assert!(
            !streamed.may_retry(Failure::UpstreamWrite, true, false),
            "body not in hand"
        );
        assert!(!get.may_retry(Failure::UpstreamTimeout, true, false));
    }

    #[test]
    fn an_early_answer_closes_the_client_and_the_upstream() {
        let fe = front("");
        let (mut x, _) = begin(
            &fe,
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc",
        )
        .unwrap();
        let r = resp(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
            Method::Post,
        );
        assert!(x.client_keeps(&r, false), "before the cut");
        x.cut = true;
        x.response_complete = true;
        assert!(!x.client_keeps(&r, false));
        assert!(!x.upstream_reusable(&r));
    }

    #[test]
    fn upstream_kept_only_after_a_clean_exchange() {
        let fe = front("");
        let (mut x, _) = begin(&fe, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let ok = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", Method::Get);
        assert!(!x.upstream_reusable(&ok), "response not complete yet");
        x.response_complete = true;
        assert!(x.upstream_reusable(&ok));
        x.response_extra = true;
        assert!(!x.upstream_reusable(&ok), "server sent more than it framed");
        x.response_extra = false;
        let close = resp(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
            Method::Get,
        );
        assert!(!x.upstream_reusable(&close));
        let eof = resp(b"HTTP/1.1 200 OK\r\n\r\n", Method::Get);
        assert!(!x.upstream_reusable(&eof));
        assert!(
            !x.client_keeps(&eof, false),
            "close-delimited: the client sees the end by close"
        );
        assert!(!x.client_keeps(&ok, true), "draining");

        // A request body not all sent keeps the connection out of the idle set.
        let (mut y, _) = begin(
            &fe,
            b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nx",
        )
        .unwrap();
        y.response_complete = true;
        assert!(!y.upstream_reusable(&ok));
    }

    #[test]
    fn interim_responses_go_to_http11_clients_only() {
        let fe = front("");
        let (mut x, _) = begin(&fe, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert!(x.forwards_interim(103));
        assert!(x.forwards_interim(100));
        x.sent_continue = true;
        assert!(!x.forwards_interim(100), "we answered Expect ourselves");
        let (old, _) = begin(&fe, b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!old.forwards_interim(103));
    }
}
