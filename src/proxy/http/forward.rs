//! Getting a request to a server and its response head back: pick the servers to try (the
//! balancer orders the usable ones), check a connection out, send the head and the body, read
//! the response head, forwarding interim responses. Every failover and retry rule is here:
//!
//! - a refused or timed-out connect marks the server down on every shard and moves to the next
//!   candidate (no request byte left us, so any method may go on);
//! - no slot free within `response_timeout`: 503;
//! - no socket to be had (out of descriptors or memory): 503 for this request, and no server
//!   is marked down for it;
//! - a failure on a connection reused from the idle set is retried once on a fresh connection
//!   to the same server, when [`Exchange::may_retry`] says the request may be sent again;
//! - anything else ends the exchange with the failure's status.

use std::time::{Duration, Instant};

use super::conn::Conn;
use super::error::Failure;
use super::exchange::Exchange;
use super::relay::{Dir, Relay, RelayEnd, Spill};
use crate::balance::{InFlight, Pick};
use crate::config::Balance;
use crate::proto::http::answers::CONTINUE_100;
use crate::proto::http::parse::parse_response;
use crate::proto::http::write::write_response_head;
use crate::proto::http::{ResponseHead, Status};
use crate::proxy::conns::{CheckoutError, ConnCache, Upstream};
use crate::proxy::ShardView;
use crate::rt::{self, Pace, Read, Socket};

/// Largest response head accepted from a server.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 200;

/// Send `x` to a server of its pool; on success the connection (response head in its buffer,
/// perhaps followed by body bytes), the parsed head, and the in-flight mark of the server.
pub async fn forward<'v>(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    x: &mut Exchange,
    view: &'v ShardView,
) -> Result<(Upstream, ResponseHead, InFlight<'v>), Failure> {
    let cache: &'v ConnCache = &view.conns[x.pool];
    let mut candidates = std::mem::take(&mut conn.cands);
    let pick = Pick {
        now_ms: rt::now_ms(),
        sticky: x.sticky.ticket.target,
        hash: x.hash,
    };
    view.balancers.borrow_mut()[x.pool].candidates(
        &cache.shared,
        &pick,
        &mut conn.scratch,
        &mut candidates,
    );
    let result = try_servers(conn, client, x, cache, &candidates).await;
    conn.cands = candidates;
    result
}

async fn try_servers<'v>(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    x: &mut Exchange,
    cache: &'v ConnCache,
    candidates: &[usize],
) -> Result<(Upstream, ResponseHead, InFlight<'v>), Failure> {
    let st = conn.http.ctx.stats();
    let mut next = 0;
    let mut fresh = false;
    let mut retried = false;
    let mut attempted = false;
    loop {
        let &server = candidates.get(next).ok_or(Failure::NoServer)?;
        if attempted {
            x.retries = x.retries.saturating_add(1);
        }
        attempted = true;
        let ss = &cache.shared.servers[server];
        let mut up = match cache
            .checkout(
                server,
                fresh,
                cache.conf.queue_timeout,
                rt::client_key(conn.peer),
                (&conn.addrs, conn.id),
            )
            .await
        {
            Ok(up) => up,
            Err(CheckoutError::NoSlot) => return Err(Failure::NoServer),
            Err(CheckoutError::Local(e)) => {
                static LOG: rt::LogLimit = rt::LogLimit::new();
                if let Some(suppressed) = LOG.allow() {
                    tracing::warn!(event = "upstream_no_resources", pool = %cache.shared.name, error = %e, suppressed, "cannot open an upstream connection: out of local resources");
                }
                return Err(Failure::NoResources);
            }
            Err(CheckoutError::Connect(e)) => {
                ss.metrics(conn.http.ctx.id()).connect_failures.add(1);
                let down_for = cache.conf.down_time;
                if ss.mark_down(rt::now_ms(), down_for.as_millis() as u64) {
                    tracing::warn!(event = "server_down", pool = %cache.shared.name, server = %ss.name, error = %e, ?down_for, "server down: connect failed");
                }
                next += 1;
                fresh = false;
                continue;
            }
        };
        // The server the exchange is charged to: one that got a connection (a refused
        // connect is counted in its connect failures, not as a request).
        x.server = Some(server);
        if up.reused {
            st.upstream_reused.add(1);
        } else {
            st.upstream_connects.add(1);
            if ss.mark_up() {
                tracing::info!(event = "server_up", pool = %cache.shared.name, server = %ss.name, "server up: connect succeeded");
            }
        }
        let inflight = ss.track(conn.http.ctx.id());
        match attempt(conn, client, x, &mut up, cache.conf.response_timeout).await {
            Ok((resp, sent_at)) => {
                // Only least_time reads the average: other pools skip the clock read.
                if cache.shared.balance == Balance::LeastTime {
                    ss.observe_latency(sent_at.elapsed().as_micros() as u64);
                }
                return Ok((up, resp, inflight));
            }
            Err(f) if x.may_retry(f, up.reused, retried) => {
                retried = true;
                fresh = true;
                st.upstream_retries.add(1);
                ss.metrics(conn.http.ctx.id()).retries.add(1);
            }
            Err(f) => return Err(f),
        }
    }
}

/// One try on one connection: the request out, the response head in (and when the request
/// had gone out).
async fn attempt(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    x: &mut Exchange,
    up: &mut Upstream,
    timeout: Duration,
) -> Result<(ResponseHead, Instant), Failure> {
    let http = conn.http;
    let out = std::mem::take(&mut x.out);
    let (r, out) = rt::write_all(&mut up.stream, out, timeout).await;
    x.sent = out.len() as u64;
    x.out = out;
    // A write that timed out may have delivered part of the request: not a "never sent".
    r.map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => Failure::UpstreamTimeout,
        _ => Failure::UpstreamWrite,
    })?;

    if x.body.is_some() {
        if x.req.expect_continue && !x.sent_continue {
            let send = conn.fe.conf.send_timeout;
            let (r, _) = rt::write_all(client, CONTINUE_100, send).await;
            r.map_err(|_| Failure::ClientGone)?;
            x.sent_continue = true;
            x.answered += CONTINUE_100.len() as u64;
        }
        // Every byte the client had sent was body (see `Exchange::begin`): what follows the
        // body's end is the next request, and goes back to the client buffer.
        debug_assert!(conn.buf.is_empty());
        let conf = &conn.fe.conf;
        let pace = Pace::new(conf.client_body_timeout, conf.client_body_min_rate);
        let relay = Relay {
            pipes: &http.ctx.shard.pipes,
            read_timeout: conf.client_body_timeout,
            write_timeout: timeout,
            dir: Dir::Request,
            pace: &pace,
        };
        let mut rbuf = http.relay_buf();
        while let Some(body) = x.body.as_mut() {
            let (end, b) = relay
                .run(
                    client,
                    &mut up.stream,
                    body,
                    rbuf,
                    &mut conn.wbuf,
                    Spill::Keep(&mut conn.buf),
                    &mut x.sent,
                )
                .await;
            rbuf = b;
            match end {
                RelayEnd::Done => x.body = None,
                RelayEnd::SourceClosed => return Err(Failure::ClientGone),
                RelayEnd::SourceTimeout => return Err(Failure::ClientTimeout),
                RelayEnd::Framing(e) => return Err(Failure::BadRequest(e)),
                // The server spoke first: interim responses are passed on and the body goes
                // on; anything else (an answer, a close) cuts the request short.
                RelayEnd::Woken { resumable: true } => {
                    if take_interim(conn, client, x, up, timeout).await? {
                        continue;
                    }
                    x.cut = true;
                }
                RelayEnd::DestFailed | RelayEnd::Woken { .. } => x.cut = true,
            }
            break;
        }
        http.give_back(rbuf);
    }
    read_response_head(conn, client, x, up, timeout).await
}

fn is_interim(h: &ResponseHead) -> bool {
    (100..200).contains(&h.status) && h.status != 101
}

/// Forward (or drop, see [`Exchange::forwards_interim`]) the interim response `h` at the start
/// of `up.buf`, and remove it from there.
async fn pass_interim(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    x: &mut Exchange,
    up: &mut Upstream,
    h: &ResponseHead,
) -> Result<(), Failure> {
    if x.forwards_interim(h.status) {
        conn.out.clear();
        write_response_head(&up.buf, h, true, false, false, &mut conn.out);
        conn.send_out(client, &mut x.answered)
            .await
            .map_err(|_| Failure::ClientGone)?;
    }
    up.buf.drain(..h.head_len);
    Ok(())
}

/// The server sent something while the request body was streaming: read it, pass on any
/// complete interim responses, and say whether the body may go on (`true`: what is left in
/// `up.buf` is at most the start of another head). A final response, a close or garbage
/// ends the streaming (`false`); [`read_response_head`] then reads what it is.
async fn take_interim(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    x: &mut Exchange,
    up: &mut Upstream,
    timeout: Duration,
) -> Result<bool, Failure> {
    let spare = if up.buf.len() == up.buf.capacity() {
        4096
    } else {
        0
    };
    let buf = std::mem::take(&mut up.buf);
    let (r, b) = rt::read_into(&mut up.stream, buf, spare, timeout).await;
    up.buf = b;
    if !matches!(r, Read::Data) {
        return Ok(false);
    }
    Ok(matches!(
        pass_buffered_interims(conn, client, x, up).await?,
        Buffered::Partial
    ))
}

/// What `up.buf` holds once the complete interim responses at its start are passed on.
enum Buffered {
    /// A final response head.
    Final(ResponseHead),
    /// Nothing, or the start of a head.
    Partial,
    /// Bytes that are no response head.
    Bad,
}

/// Parse the response heads at the start of `up.buf`, forwarding (or dropping) the interim
/// ones, until a final head, an incomplete one, or garbage.
async fn pass_buffered_interims(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    x: &mut Exchange,
    up: &mut Upstream,
) -> Result<Buffered, Failure> {
    loop {
        let headers = std::mem::take(&mut conn.resp_headers);
        let parsed = parse_response(
            &up.buf,
            x.req.method,
            MAX_RESPONSE_HEAD,
            MAX_RESPONSE_HEADERS,
            headers,
        );
        match parsed {
            Ok(Status::Complete(h)) if is_interim(&h) => {
                pass_interim(conn, client, x, up, &h).await?;
                conn.resp_headers = h.headers;
            }
            Ok(Status::Complete(h)) => return Ok(Buffered::Final(h)),
            Ok(Status::Partial) => return Ok(Buffered::Partial),
            Err(_) => return Ok(Buffered::Bad),
        }
    }
}

/// Read the final response head into `up.buf`, forwarding interim (1xx, not 101) responses to
/// the client as they come. Also returns when the wait began (the request was sent).
async fn read_response_head(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    x: &mut Exchange,
    up: &mut Upstream,
    timeout: Duration,
) -> Result<(ResponseHead, Instant), Failure> {
    let sent_at = Instant::now();
    let deadline = sent_at + timeout;
    let mut any_byte = false;
    loop {
        if !up.buf.is_empty() {
            any_byte = true;
            match pass_buffered_interims(conn, client, x, up).await? {
                Buffered::Final(h) => return Ok((h, sent_at)),
                Buffered::Partial => {}
                Buffered::Bad => return Err(Failure::BadResponse),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::UpstreamTimeout);
        }
        let spare = if up.buf.len() == up.buf.capacity() {
            up.buf.capacity().max(4096)
        } else {
            0
        };
        let buf = std::mem::take(&mut up.buf);
        let (r, b) = rt::read_into(&mut up.stream, buf, spare, left).await;
        up.buf = b;
        match r {
            Read::Data => {}
            Read::TimedOut => return Err(Failure::UpstreamTimeout),
            _ => return Err(Failure::UpstreamClosed { any_byte }),
        }
    }
}
