//! One HTTP/1.1 client connection, from accept to close: read a head, route it, pick a server,
//! forward head and body, relay the response, and loop while both sides keep the connection
//! alive. Exchanges on a connection are strictly sequential, which is what answers pipelined
//! requests in order.
//!
//! ```text
//!   ┌──────────► WAITING (idle, keepalive_timeout, drain closes) ──first byte──┐
//!   │                                                                         ▼
//!   │                              READING head (client_header_timeout from first byte)
//!   │                                   │ complete            │ error → 4xx, close
//!   │                                   ▼
//!   │            route → balance → upstream (idle or connect; refused → mark down, next server)
//!   │                                   │ head (+100 Continue) + body  → upstream
//!   │                                   ▼
//!   │                     response head (response_timeout; stale reused conn → retry once)
//!   │                                   │ 101 → tunnel until either side closes
//!   └──── keep-alive ◄──── relay response body to client (send_timeout) ───► close
//! ```
//!
//! Errors the proxy itself answers (400/404/408/413/414/431/501/502/503/504/505) use the canned
//! responses, which carry `Connection: close`; the connection is then closed gracefully (our
//! side shut down first, the client's unread input drained briefly) so the answer is not lost
//! to a reset.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::config::HttpFrontend;

use crate::balance::InFlight;
use crate::proto::http::answers::{canned, CONTINUE_100};
use crate::proto::http::body::ChunkedDecoder;
use crate::proto::http::parse::{parse_request, parse_response};
use crate::proto::http::write::{write_request_head, write_response_head, ForwardInfo};
use crate::proto::http::{
    Framing, HeaderSpan, Method, ParseError, RequestHead, ResponseHead, Status,
};
use crate::proxy::upstream::{CheckoutError, Upstream, UpstreamPool};
use crate::route::{self, RequestView};
use crate::rt::{self, Read, TcpStream};
use crate::shard::{ConnGuard, HttpFront, Shard};
use crate::stats::ShardStats;

/// First read buffer of a client connection; grows up to the head limit when a head needs it.
const CLIENT_BUF: usize = 2 * 1024;
/// Buffer used to relay bodies and tunnels.
const RELAY_BUF: usize = 64 * 1024;
/// How long a closing connection keeps draining the client's unread input (lingering close).
const LINGER: Duration = Duration::from_millis(500);
/// Largest response head accepted from a server.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 200;

/// Where a connection is, for the reading/writing/waiting counters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    None,
    Waiting,
    Reading,
    Writing,
}

struct PhaseGauge<'a> {
    st: &'a ShardStats,
    cur: Phase,
}

impl<'a> PhaseGauge<'a> {
    fn set(&mut self, p: Phase) {
        if p == self.cur {
            return;
        }
        if let Some(c) = self.counter(self.cur) {
            c.sub(1);
        }
        if let Some(c) = self.counter(p) {
            c.add(1);
        }
        self.cur = p;
    }
    fn counter(&self, p: Phase) -> Option<&'a crate::stats::Counter> {
        match p {
            Phase::None => None,
            Phase::Waiting => Some(&self.st.waiting),
            Phase::Reading => Some(&self.st.reading),
            Phase::Writing => Some(&self.st.writing),
        }
    }
}

impl Drop for PhaseGauge<'_> {
    fn drop(&mut self) {
        self.set(Phase::None);
    }
}

/// How an exchange ended, as far as the client connection is concerned.
enum Next {
    KeepAlive,
    Close,
    /// Answer this status (canned) and close.
    Answer(u16),
    /// The server switched protocols: tunnel bytes both ways.
    Tunnel(Upstream),
}

/// Which side failed while relaying a body.
enum RelayError {
    /// Reading the source failed, closed early or timed out.
    Source(Read),
    /// Writing to the destination failed.
    Dest,
    /// The body's framing was malformed.
    Framing(ParseError),
}

/// What remains of a body being relayed.
enum BodyLeft {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl BodyLeft {
    /// How many of `data`'s bytes belong to the body, and whether the body ends there.
    fn take(&mut self, data: &[u8]) -> Result<(usize, bool), ParseError> {
        match self {
            BodyLeft::Length(n) => {
                let k = (*n).min(data.len() as u64);
                *n -= k;
                Ok((k as usize, *n == 0))
            }
            BodyLeft::Chunked(d) => d.feed(data),
            BodyLeft::UntilClose => Ok((data.len(), false)),
        }
    }

    fn from_framing(f: Framing) -> Option<BodyLeft> {
        match f {
            Framing::None | Framing::Length(0) => None,
            Framing::Length(n) => Some(BodyLeft::Length(n)),
            Framing::Chunked => Some(BodyLeft::Chunked(ChunkedDecoder::new())),
            Framing::UntilClose => Some(BodyLeft::UntilClose),
        }
    }
}

/// Serve one client connection until it closes.
pub async fn serve(
    shard: Rc<Shard>,
    fe: Rc<HttpFront>,
    mut client: TcpStream,
    peer: SocketAddr,
    guard: ConnGuard,
) {
    let st = shard.stats();
    let mut gauge = PhaseGauge {
        st,
        cur: Phase::None,
    };
    let mut conn = ClientConn {
        shard: &shard,
        fe: &fe,
        peer: peer.ip(),
        buf: Vec::with_capacity(CLIENT_BUF),
        headers: Vec::new(),
        resp_headers: Vec::new(),
        cands: Vec::new(),
        scratch: Vec::new(),
        out: Vec::new(),
        site: Vec::new(),
    };
    let next = conn.run(&mut client, &mut gauge).await;
    drop(gauge);
    match next {
        Next::Answer(status) => {
            st.errors.add(1);
            let (_, _) = rt::write_all(&mut client, canned(status), fe.conf.send_timeout).await;
            linger_close(client).await;
        }
        Next::Tunnel(up) => {
            let leftover = std::mem::take(&mut conn.buf);
            tunnel(&shard, &fe.conf, client, up, leftover).await;
        }
        Next::Close | Next::KeepAlive => {}
    }
    drop(guard);
}

/// Shut our side down, then read and discard what the client still sends for a short while, so
/// the kernel does not answer unread data with a reset that could destroy our last response.
async fn linger_close(mut client: TcpStream) {
    rt::shutdown_write(&mut client).await;
    let deadline = Instant::now() + LINGER;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        buf.clear();
        let (r, b) = rt::read_into(&mut client, buf, 0, left, None).await;
        buf = b;
        if !matches!(r, Read::Data(_)) {
            break;
        }
    }
}

struct ClientConn<'a> {
    shard: &'a Rc<Shard>,
    fe: &'a HttpFront,
    peer: IpAddr,
    /// Bytes read from the client not yet consumed: the current head, maybe body bytes, maybe
    /// the next pipelined request.
    buf: Vec<u8>,
    headers: Vec<HeaderSpan>,
    resp_headers: Vec<HeaderSpan>,
    cands: Vec<usize>,
    scratch: Vec<usize>,
    out: Vec<u8>,
    site: Vec<u8>,
}

impl<'a> ClientConn<'a> {
    async fn run(&mut self, client: &mut TcpStream, gauge: &mut PhaseGauge<'_>) -> Next {
        let conf = &self.fe.conf;
        let mut first = true;
        loop {
            // ---- read a complete request head ----
            // client_header_timeout runs from the head's first byte (from accept for the first
            // request) to its end, however the bytes trickle in: a slowloris gets no more.
            let mut head_deadline = (first || !self.buf.is_empty())
                .then(|| Instant::now() + conf.client_header_timeout);
            let head = loop {
                if !self.buf.is_empty() {
                    match parse_request(
                        &self.buf,
                        &self.fe.limits,
                        std::mem::take(&mut self.headers),
                    ) {
                        Ok(Status::Complete(h)) => break h,
                        Ok(Status::Partial) => {}
                        Err(e) => {
                            tracing::debug!(peer = %self.peer, error = ?e, "bad request");
                            return Next::Answer(e.status());
                        }
                    }
                }
                gauge.set(if self.buf.is_empty() {
                    Phase::Waiting
                } else {
                    Phase::Reading
                });
                let (timeout, drain) = match head_deadline {
                    None => (conf.keepalive_timeout, Some(&self.shard.drain)),
                    Some(d) => (d.saturating_duration_since(Instant::now()), None),
                };
                if self.shard.drain.fired() && self.buf.is_empty() {
                    return Next::Close;
                }
                // Grow in steps up to just past the head limit, so the parser can say 431.
                let spare = if self.buf.len() == self.buf.capacity() {
                    self.buf.capacity().min(self.fe.limits.max_header_bytes + 1)
                } else {
                    0
                };
                let partial = !self.buf.is_empty();
                let deadline_read =
                    rt::read_into(client, std::mem::take(&mut self.buf), spare, timeout, drain);
                let (r, b) = deadline_read.await;
                self.buf = b;
                match r {
                    Read::Data(_) => {
                        head_deadline
                            .get_or_insert_with(|| Instant::now() + conf.client_header_timeout);
                    }
                    Read::TimedOut if partial => return Next::Answer(408),
                    Read::Eof | Read::TimedOut | Read::Drained | Read::Err(_) => {
                        return Next::Close
                    }
                }
            };
            first = false;
            gauge.set(Phase::Writing);
            self.shard.stats().requests.add(1);
            let started = Instant::now();
            let head_len = head.head_len as u64;
            let next = self.exchange(client, &head, started).await;
            self.headers = head.headers;
            if let Next::Answer(status) = next {
                // Answered by the proxy itself: still a request of this site.
                self.record(head_len, canned(status).len() as u64, started);
            }
            match next {
                Next::KeepAlive if !self.shard.drain.fired() => continue,
                Next::KeepAlive => return Next::Close,
                other => return other,
            }
        }
    }

    /// One request/response exchange. On return the request's bytes have been consumed from
    /// `self.buf` (unless the connection is closing anyway).
    async fn exchange(
        &mut self,
        client: &mut TcpStream,
        head: &RequestHead,
        started: Instant,
    ) -> Next {
        let conf = &self.fe.conf;
        let host_span = head.absolute_authority.or(head.host);
        crate::stats::site_key(host_span.map(|s| s.of(&self.buf)), &mut self.site);
        if let Some(auth) = head.absolute_authority {
            if !route::serves_host(conf, auth.of(&self.buf)) {
                return Next::Answer(400);
            }
        }
        let origin: &[u8] = if head.origin.is_empty() {
            b"/"
        } else {
            head.origin.of(&self.buf)
        };
        let view = RequestView {
            buf: &self.buf,
            host: host_span.map(|s| s.of(&self.buf)),
            path: if head.path.is_empty() {
                b"/"
            } else {
                head.path.of(&self.buf)
            },
            target: origin,
            headers: &head.headers,
        };
        let Some(pool_idx) = route::select_pool(conf, &view) else {
            return Next::Answer(404);
        };

        // The head rewritten for the server, followed by whatever body bytes are already here.
        self.out.clear();
        let info = ForwardInfo {
            client_ip: self.peer,
            proto: "http",
            strip_expect: head.expect_continue,
        };
        write_request_head(&self.buf, head, &info, &mut self.out);
        let mut body = BodyLeft::from_framing(head.framing);
        let mut body_done = body.is_none();
        let mut consumed = head.head_len;
        if let Some(b) = body.as_mut() {
            match b.take(&self.buf[head.head_len..]) {
                Ok((k, done)) => {
                    self.out
                        .extend_from_slice(&self.buf[head.head_len..head.head_len + k]);
                    consumed += k;
                    body_done = done;
                }
                Err(e) => return Next::Answer(e.status()),
            }
            if self.over_max_body(b) {
                return Next::Answer(413);
            }
        }

        let shard: &'a Rc<Shard> = self.shard;
        let pool = &shard.upstreams[pool_idx];
        let (mut up, resp, bytes_in, _inflight) = match self
            .send_request(client, pool_idx, head, body, body_done, consumed)
            .await
        {
            Ok(v) => v,
            Err(next) => return next,
        };

        // ---- response ----
        if resp.status == 101 {
            if !head.upgrade_websocket {
                return Next::Answer(502);
            }
            self.out.clear();
            write_response_head(
                &up.buf,
                &resp,
                true,
                head.minor_version == 0,
                true,
                &mut self.out,
            );
            self.out.extend_from_slice(&up.buf[resp.head_len..]);
            up.buf.clear();
            let out = std::mem::take(&mut self.out);
            let (r, out) = rt::write_all(client, out, conf.send_timeout).await;
            self.out = out;
            self.record(bytes_in, self.out.len() as u64, started);
            if r.is_err() {
                return Next::Close;
            }
            self.buf.drain(..consumed.min(self.buf.len()));
            return Next::Tunnel(up);
        }
        // The client's connection lives on whatever the server does with ours, as long as the
        // response has an end the client can see.
        let client_keep =
            !head.close && !self.shard.drain.fired() && resp.framing != Framing::UntilClose;
        self.out.clear();
        write_response_head(
            &up.buf,
            &resp,
            client_keep,
            head.minor_version == 0,
            false,
            &mut self.out,
        );
        let mut rbody = BodyLeft::from_framing(resp.framing);
        let mut rdone = rbody.is_none();
        let after_head = &up.buf[resp.head_len..];
        let mut extra = !after_head.is_empty();
        if let Some(b) = rbody.as_mut() {
            match b.take(after_head) {
                Ok((k, done)) => {
                    self.out.extend_from_slice(&after_head[..k]);
                    rdone = done;
                    extra = k < after_head.len();
                }
                Err(_) => {
                    return Next::Answer(502);
                }
            }
        }
        let out = std::mem::take(&mut self.out);
        let mut bytes_out = out.len() as u64;
        let (r, out) = rt::write_all(client, out, conf.send_timeout).await;
        self.out = out;
        if r.is_err() {
            return Next::Close;
        }
        let mut complete = rdone;
        if let Some(mut b) = rbody.filter(|_| !rdone) {
            let relay = self.relay_buf();
            let res = relay_body(
                &self.shard.pipes,
                &mut up.stream,
                client,
                &mut b,
                relay,
                pool.conf.response_timeout,
                conf.send_timeout,
                None,
            )
            .await;
            match res {
                (Ok(n), relay) => {
                    bytes_out += n;
                    complete = !matches!(b, BodyLeft::UntilClose);
                    self.give_back(relay);
                }
                (Err(_), relay) => {
                    self.give_back(relay);
                    self.record(bytes_in, bytes_out, started);
                    return Next::Close;
                }
            }
        }
        if complete && !resp.close && !extra {
            pool.checkin(up);
        }
        self.record(bytes_in, bytes_out, started);
        self.buf.drain(..consumed.min(self.buf.len()));
        self.resp_headers = resp.headers;
        if client_keep {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// A chunked body has carried more data than `max_body` allows.
    fn over_max_body(&self, body: &BodyLeft) -> bool {
        match (self.fe.limits.max_body, body) {
            (Some(max), BodyLeft::Chunked(d)) => d.data_bytes() > max,
            _ => false,
        }
    }

    fn record(&self, bytes_in: u64, bytes_out: u64, started: Instant) {
        let us = started.elapsed().as_micros() as u64;
        self.shard
            .stats()
            .record_site(self.fe.index, &self.site, bytes_in, bytes_out, us);
    }

    fn relay_buf(&self) -> Vec<u8> {
        self.shard
            .relay_bufs
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(RELAY_BUF))
    }

    fn give_back(&self, mut b: Vec<u8>) {
        let mut pool = self.shard.relay_bufs.borrow_mut();
        if pool.len() < 64 && b.capacity() == RELAY_BUF {
            b.clear();
            pool.push(b);
        }
    }

    /// Pick a server, send the request (head, then the body as it arrives) and read the response
    /// head. Walks past servers whose connect fails (marking them down on every shard), and
    /// replays once on a fresh connection when a reused one turns out to be dead.
    /// On success: the upstream connection (response head in its buffer), the parsed head, and
    /// the request bytes sent. `self.buf` loses the body bytes streamed past it.
    async fn send_request(
        &mut self,
        client: &mut TcpStream,
        pool_idx: usize,
        head: &RequestHead,
        body: Option<BodyLeft>,
        body_done: bool,
        consumed: usize,
    ) -> Result<(Upstream, ResponseHead, u64, InFlight<'a>), Next> {
        let shard: &'a Rc<Shard> = self.shard;
        let pool = &shard.upstreams[pool_idx];
        let mut candidates = std::mem::take(&mut self.cands);
        {
            let mut balancers = shard.balancers.borrow_mut();
            balancers[pool_idx].candidates(
                &pool.shared,
                rt::now_ms(),
                &mut self.scratch,
                &mut candidates,
            );
        }
        let result = self
            .try_servers(client, pool, head, body, body_done, consumed, &candidates)
            .await;
        self.cands = candidates;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_servers(
        &mut self,
        client: &mut TcpStream,
        pool: &'a UpstreamPool,
        head: &RequestHead,
        mut body: Option<BodyLeft>,
        body_done: bool,
        consumed: usize,
        candidates: &[usize],
    ) -> Result<(Upstream, ResponseHead, u64, InFlight<'a>), Next> {
        let shard = self.shard;
        if candidates.is_empty() {
            return Err(Next::Answer(503));
        }
        let fe_conf = &self.fe.conf;
        let wait = pool.conf.response_timeout;
        let mut ci = 0;
        let mut fresh = false;
        let mut retried = false;
        loop {
            let Some(&server) = candidates.get(ci) else {
                return Err(Next::Answer(503));
            };
            let ss = &pool.shared.servers[server];
            let mut up = match pool.checkout(server, fresh, wait).await {
                Ok(up) => up,
                Err(CheckoutError::NoSlot) => return Err(Next::Answer(503)),
                Err(CheckoutError::Connect(e)) => {
                    if ss.mark_down(rt::now_ms(), pool.conf.down_time.as_millis() as u64) {
                        tracing::warn!(pool = %pool.shared.name, server = %ss.name, error = %e, down_for = ?pool.conf.down_time, "server down: connect failed");
                    }
                    ci += 1;
                    fresh = false;
                    continue;
                }
            };
            let st = shard.stats();
            if up.reused {
                st.upstream_reused.add(1);
            } else {
                st.upstream_connects.add(1);
                if ss.mark_up() {
                    tracing::info!(pool = %pool.shared.name, server = %ss.name, "server up: connect succeeded");
                }
            }
            let inflight = ss.track(shard.id);
            // Send the head and the buffered body bytes.
            let out = std::mem::take(&mut self.out);
            let (r, out) = rt::write_all(&mut up.stream, out, pool.conf.response_timeout).await;
            self.out = out;
            let mut bytes_in = self.out.len() as u64;
            if r.is_err() {
                if up.reused && body_done && !retried {
                    retried = true;
                    fresh = true;
                    st.upstream_retries.add(1);
                    continue;
                }
                return Err(Next::Answer(502));
            }
            // Stream the rest of the body from the client.
            let mut early_response = false;
            if let Some(b) = body.as_mut().filter(|_| !body_done) {
                if head.expect_continue {
                    let (r, _) = rt::write_all(client, CONTINUE_100, fe_conf.send_timeout).await;
                    if r.is_err() {
                        return Err(Next::Close);
                    }
                }
                // Body bytes already forwarded from `self.buf`; keep only what follows them.
                self.buf.drain(..consumed.min(self.buf.len()));
                let relay = self.relay_buf();
                let mut leftover = std::mem::take(&mut self.buf);
                let (res, relay) = relay_body(
                    &self.shard.pipes,
                    client,
                    &mut up.stream,
                    b,
                    relay,
                    fe_conf.client_body_timeout,
                    pool.conf.response_timeout,
                    Some(&mut leftover),
                )
                .await;
                self.buf = leftover;
                self.give_back(relay);
                match res {
                    Ok(n) => bytes_in += n,
                    Err(RelayError::Framing(e)) => {
                        return Err(Next::Answer(e.status()));
                    }
                    Err(RelayError::Source(Read::TimedOut)) => {
                        return Err(Next::Answer(408));
                    }
                    Err(RelayError::Source(_)) => {
                        return Err(Next::Close);
                    }
                    Err(RelayError::Dest) => early_response = true,
                }
                if self.over_max_body(b) {
                    return Err(Next::Answer(413));
                }
            }
            // Read the response head (skipping interim 1xx other than 101).
            let recycled = std::mem::take(&mut self.resp_headers);
            match read_response_head(&mut up, head.method, pool.conf.response_timeout, recycled)
                .await
            {
                Ok(resp) => return Ok((up, resp, bytes_in, inflight)),
                Err(HeadError::Timeout) => {
                    return Err(Next::Answer(504));
                }
                Err(HeadError::Closed { any_byte }) => {
                    if up.reused && body_done && !any_byte && !retried && !early_response {
                        retried = true;
                        fresh = true;
                        st.upstream_retries.add(1);
                        continue;
                    }
                    return Err(Next::Answer(502));
                }
                Err(HeadError::Bad) => {
                    return Err(Next::Answer(502));
                }
            }
        }
    }
}

enum HeadError {
    Timeout,
    Closed { any_byte: bool },
    Bad,
}

async fn read_response_head(
    up: &mut Upstream,
    method: Method,
    timeout: Duration,
    mut headers: Vec<HeaderSpan>,
) -> Result<ResponseHead, HeadError> {
    let deadline = Instant::now() + timeout;
    let mut any_byte = false;
    loop {
        if !up.buf.is_empty() {
            any_byte = true;
            match parse_response(
                &up.buf,
                method,
                MAX_RESPONSE_HEAD,
                MAX_RESPONSE_HEADERS,
                std::mem::take(&mut headers),
            ) {
                Ok(Status::Complete(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                    // Interim response: we answered 100 Continue ourselves; drop it.
                    up.buf.drain(..h.head_len);
                    headers = h.headers;
                    continue;
                }
                Ok(Status::Complete(h)) => return Ok(h),
                Ok(Status::Partial) => {}
                Err(_) => return Err(HeadError::Bad),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Timeout);
        }
        let spare = if up.buf.len() == up.buf.capacity() {
            up.buf.capacity().max(4096)
        } else {
            0
        };
        let (r, b) = rt::read_into(
            &mut up.stream,
            std::mem::take(&mut up.buf),
            spare,
            left,
            None,
        )
        .await;
        up.buf = b;
        match r {
            Read::Data(_) => {}
            Read::TimedOut => return Err(HeadError::Timeout),
            _ => return Err(HeadError::Closed { any_byte }),
        }
    }
}

/// Copy a body from `src` to `dst` until its framing says it ended (or, for close-delimited
/// bodies, until `src` closes). Bytes read past the end go to `leftover` (the next pipelined
/// request) or, when there is no `leftover`, are reported as an error-free early stop by the
/// caller's framing checks. Returns the bytes forwarded.
#[allow(clippy::too_many_arguments)]
async fn relay_body(
    pipes: &rt::PipePool,
    src: &mut TcpStream,
    dst: &mut TcpStream,
    body: &mut BodyLeft,
    buf: Vec<u8>,
    read_timeout: Duration,
    write_timeout: Duration,
    leftover: Option<&mut Vec<u8>>,
) -> (Result<u64, RelayError>, Vec<u8>) {
    // Long bodies of known length pass untouched: splice them through a pipe.
    if let BodyLeft::Length(n) = body {
        if *n >= rt::SPLICE_MIN {
            let res = rt::splice_exact(pipes, src, dst, *n, read_timeout, write_timeout).await;
            return match res {
                Ok(moved) => {
                    *n = 0;
                    (Ok(moved), buf)
                }
                Err(rt::SpliceError::Source(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    (Err(RelayError::Source(Read::TimedOut)), buf)
                }
                Err(rt::SpliceError::Source(e)) => (Err(RelayError::Source(Read::Err(e))), buf),
                Err(rt::SpliceError::Dest(_)) => (Err(RelayError::Dest), buf),
            };
        }
    }
    relay_copy(src, dst, body, buf, read_timeout, write_timeout, leftover).await
}

/// [`relay_body`] by copying through `buf`.
async fn relay_copy(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    body: &mut BodyLeft,
    mut buf: Vec<u8>,
    read_timeout: Duration,
    write_timeout: Duration,
    mut leftover: Option<&mut Vec<u8>>,
) -> (Result<u64, RelayError>, Vec<u8>) {
    let mut total = 0u64;
    loop {
        buf.clear();
        let (r, b) = rt::read_into(src, buf, 0, read_timeout, None).await;
        buf = b;
        match r {
            Read::Data(_) => {}
            Read::Eof if matches!(body, BodyLeft::UntilClose) => return (Ok(total), buf),
            other => return (Err(RelayError::Source(other)), buf),
        }
        let (k, done) = match body.take(&buf) {
            Ok(v) => v,
            Err(e) => return (Err(RelayError::Framing(e)), buf),
        };
        if k < buf.len() {
            if let Some(l) = leftover.as_deref_mut() {
                l.extend_from_slice(&buf[k..]);
            }
        }
        let (w, slice) =
            rt::write_all(dst, monoio::buf::IoBuf::slice(buf, 0..k), write_timeout).await;
        buf = slice.into_inner();
        if w.is_err() {
            return (Err(RelayError::Dest), buf);
        }
        total += k as u64;
        if done {
            return (Ok(total), buf);
        }
    }
}

/// After `101 Switching Protocols`: splice bytes both ways until both directions have closed
/// (a side that finishes sending is half-closed towards the other), one fails (then both are
/// shut down at once), or nothing has moved either way for `tunnel_timeout`.
async fn tunnel(
    shard: &Shard,
    conf: &HttpFrontend,
    client: TcpStream,
    up: Upstream,
    client_leftover: Vec<u8>,
) {
    let Upstream {
        stream: mut upstream,
        slot,
        ..
    } = up;
    if !client_leftover.is_empty() {
        let (r, _) = rt::write_all(&mut upstream, client_leftover, conf.send_timeout).await;
        if r.is_err() {
            return;
        }
    }
    let activity = Cell::new(Instant::now());
    let (cfd, ufd) = (client.as_raw_fd(), upstream.as_raw_fd());
    let mut up_dir = pin!(rt::splice_until_eof(
        &shard.pipes,
        &client,
        &upstream,
        conf.tunnel_timeout,
        &activity
    ));
    let mut down_dir = pin!(rt::splice_until_eof(
        &shard.pipes,
        &upstream,
        &client,
        conf.tunnel_timeout,
        &activity
    ));
    let (mut up_done, mut down_done) = (false, false);
    poll_fn(|cx| {
        for (fut, done) in [
            (up_dir.as_mut(), &mut up_done),
            (down_dir.as_mut(), &mut down_done),
        ] {
            if !*done {
                if let Poll::Ready(r) = fut.poll(cx) {
                    *done = true;
                    if r.is_err() {
                        // One side failed or the tunnel idled out: end the other direction too.
                        rt::shutdown_fd(cfd);
                        rt::shutdown_fd(ufd);
                    }
                }
            }
        }
        if up_done && down_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    drop(slot);
}
