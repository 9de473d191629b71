//! One HTTP/1.1 client connection, from accept to close. Exchanges on a connection are strictly
//! sequential, which is what answers pipelined requests in order: the bytes of the next request
//! wait in [`Conn::buf`] while the current one is served.
//!
//! ```text
//!   ┌──────► WAITING (idle, keepalive_timeout; drain closes) ──first byte──┐
//!   │                                                                     ▼
//!   │                       READING head (client_header_timeout from its first byte;
//!   │                                     parsed once the scan sees its end)
//!   │                                 │ complete                │ error → 4xx, close
//!   │                                 ▼
//!   │                           WRITING: the exchange ──► tunnel (101)
//!   └──── keep-alive ◄────────────────┴──────────────────► close (lingering)
//! ```
//!
//! Closing after a response, our side is shut down first and the client's unread input is
//! drained for a moment, so the kernel does not answer that input with a reset that would
//! destroy the response on its way.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::Failure;
use super::exchange;
use super::{HttpFront, HttpShard};
use crate::proto::http::answers::canned_for;
use crate::proto::http::parse::parse_request;
use crate::proto::http::scan::HeadScan;
use crate::proto::http::{HeaderSpan, Method, RequestHead, Status};
use crate::proxy::conns::Upstream;
use crate::proxy::preamble::{self, Edge, Ready, PLAIN_HTTP_ON_TLS};
use crate::proxy::ClientAddrs;
use crate::proxy::ShardView;
use crate::rt::{self, Read, Socket, TcpStream};
use crate::shard::ConnGuard;
use crate::stats::{Counter, ShardStats, SiteCounters};

/// First read buffer of a client connection (nginx's `client_header_buffer_size` default);
/// grows up to the head limit when a head needs it. Every idle keep-alive connection holds
/// one, so it is sized for common heads, not for the largest.
const CLIENT_BUF: usize = 1024;
/// A grown client buffer is kept up to this size while idle (a client whose heads need 2 KiB
/// does not reallocate per request), and given back above it.
const CLIENT_BUF_KEEP: usize = 4 * 1024;
/// Scratch buffers larger than this are given back when the connection goes idle, so a
/// keep-alive connection that once carried a large head holds only small buffers while it waits.
const IDLE_KEEP: usize = 8 * 1024;
/// Header slots kept by an idle connection.
const IDLE_HEADERS: usize = 128;
/// How long a closing connection keeps draining the client's unread input (lingering close).
const LINGER: Duration = Duration::from_millis(500);

/// How a connection's time with the proxy ends, or goes on.
pub enum Outcome {
    /// Read the next request.
    KeepAlive,
    /// Close; `linger` when the client may still be sending (see the module head).
    Close { linger: bool },
    /// Answer this status (canned, `Connection: close`) and close.
    Answer(u16),
    /// The server switched protocols: tunnel bytes both ways.
    Tunnel(Upstream),
    /// Idle with nothing read of a next request, while the process hands its connections to
    /// a new one (binary upgrade): the socket goes to the new process.
    Handover,
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Outcome {
        match f.status() {
            Some(s) => Outcome::Answer(s),
            None => Outcome::Close { linger: false },
        }
    }
}

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
    fn counter(&self, p: Phase) -> Option<&'a Counter> {
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

/// A client connection's state between and during exchanges; the buffers are kept across
/// requests so a keep-alive connection allocates nothing per request.
pub struct Conn<'h> {
    pub http: &'h HttpShard,
    /// The view of the config the current exchange runs on (refreshed between requests).
    pub view: Rc<ShardView>,
    pub fe: Rc<HttpFront>,
    pub peer: IpAddr,
    /// The client's (source, destination) addresses: the socket's, or its PROXY header's.
    pub addrs: ClientAddrs,
    /// The client connection is TLS.
    pub tls: bool,
    /// This connection's number on the shard (upstream connections carrying its PROXY
    /// header are kept for it alone).
    pub id: u64,
    /// Bytes read from the client not yet consumed: the current head (until the exchange
    /// takes it), or the next pipelined request.
    pub buf: Vec<u8>,
    scan: HeadScan,
    headers: Vec<HeaderSpan>,
    pub resp_headers: Vec<HeaderSpan>,
    pub cands: Vec<usize>,
    pub scratch: Vec<usize>,
    /// What goes out next: the request for the server, then the response head for the client.
    pub out: Vec<u8>,
    /// Re-framed body bytes (canonical chunks).
    pub wbuf: Vec<u8>,
    /// The site key (Host without port) of the current request.
    pub site: Vec<u8>,
    /// The counters of the site this connection last counted to, and its key: a keep-alive
    /// connection nearly always names the same Host, so most requests skip the site lookup.
    site_seen: (Vec<u8>, Option<Arc<SiteCounters>>),
    /// The current request is a HEAD: an answer of ours carries no body.
    pub head_request: bool,
    /// Cancels the idle read when the shard drains (made at the first idle wait).
    canceller: Option<rt::Canceller>,
    /// The config no longer has this connection's frontend: the current request is the last
    /// (answered with `Connection: close`).
    pub retiring: bool,
    /// Handed over by the process this one replaced: an idle keep-alive connection, even
    /// before its first request here.
    adopted: bool,
    /// The current request's head as the access log needs it (None without an access log).
    pub logged: Option<crate::log::Captured>,
}

/// How an idle connection ends when the shard drains: handed to the new process during a
/// binary upgrade, closed otherwise.
fn idle_end(drain: &rt::Drain) -> Outcome {
    if drain.handing_over() {
        Outcome::Handover
    } else {
        Outcome::Close { linger: false }
    }
}

/// Serve one client connection until it closes.
pub async fn serve(
    http: Rc<HttpShard>,
    view: Rc<ShardView>,
    fe: usize,
    stream: TcpStream,
    peer: SocketAddr,
    guard: ConnGuard,
    adopted: bool,
) {
    let Some(front) = view.http.get(fe).cloned() else {
        return;
    };
    let st = http.ctx.stats();
    let buf = Vec::with_capacity(CLIENT_BUF);
    let conf = &front.conf;
    let Ready {
        socket: mut client,
        addrs,
        buf,
    } = if adopted || (conf.tls.is_none() && conf.accept_proxy.is_none()) {
        // No edge work: the local address is asked for only if a server needs it.
        let local = stream.local_addr().unwrap_or(peer);
        Ready {
            socket: Socket::Tcp(stream),
            addrs: (peer, local),
            buf,
        }
    } else {
        let local = stream.local_addr().unwrap_or(peer);
        let edge = Edge {
            accept_proxy: conf.accept_proxy.as_ref(),
            tls: conf.tls.as_deref(),
            timeout: conf.client_header_timeout,
            plain_answer: Some(PLAIN_HTTP_ON_TLS),
        };
        match rt::Pooled::new(preamble::run(stream, peer, local, &edge, buf, st)).await {
            Some(r) => r,
            None => return,
        }
    };
    let mut conn = Conn {
        http: &http,
        view,
        fe: front.clone(),
        peer: addrs.0.ip(),
        addrs,
        tls: matches!(client, Socket::Tls(_)),
        id: http.next_conn_id(),
        buf,
        scan: HeadScan::default(),
        headers: Vec::new(),
        resp_headers: Vec::new(),
        cands: Vec::new(),
        scratch: Vec::new(),
        out: Vec::new(),
        wbuf: Vec::new(),
        site: Vec::new(),
        site_seen: (Vec::new(), None),
        head_request: false,
        canceller: None,
        retiring: false,
        adopted,
        logged: None,
    };
    let outcome = {
        let mut gauge = PhaseGauge {
            st,
            cur: Phase::None,
        };
        conn.run(&mut client, &mut gauge).await
    };
    match outcome {
        Outcome::Answer(status) => {
            st.errors.add(1);
            let send = conn.fe.conf.send_timeout;
            let answer = canned_for(status, conn.head_request);
            let (_, _) = rt::write_all(&mut client, answer, send).await;
            rt::linger_close(client, std::mem::take(&mut conn.buf), LINGER).await;
        }
        Outcome::Tunnel(up) => {
            let leftover = std::mem::take(&mut conn.buf);
            let conf = conn.fe.clone();
            rt::Pooled::new(super::tunnel::run(&http, &conf.conf, client, up, leftover)).await;
        }
        Outcome::Close { linger: true } => {
            rt::linger_close(client, std::mem::take(&mut conn.buf), LINGER).await
        }
        Outcome::Handover => match client {
            // The new process would see the balancer's address instead of the PROXY header's:
            // such connections are closed like TLS ones.
            Socket::Tcp(tcp) if conn.fe.conf.accept_proxy.is_none() => {
                let name = conn.fe.conf.name.clone();
                crate::upgrade::hand_over(&http.ctx.shared, tcp, &name, peer);
            }
            // A TLS session cannot move to another process: closed (the client reconnects,
            // as it would after any idle close).
            Socket::Tls(mut tls) => {
                let _ = rt::timeout(LINGER, tls.close_notify()).await;
            }
            Socket::Tcp(_) => {}
        },
        Outcome::Close { linger: false } | Outcome::KeepAlive => {}
    }
    drop(guard);
}

impl Conn<'_> {
    async fn run(&mut self, client: &mut Socket, gauge: &mut PhaseGauge<'_>) -> Outcome {
        let mut first = true;
        loop {
            let head = match self.read_head(client, gauge, first).await {
                Ok(h) => h,
                Err(end) => {
                    if let (Outcome::Answer(status), Some(a)) = (&end, &self.fe.conf.access_log) {
                        let (fe, ctx, hr) = (&self.fe.conf.name, &self.http.ctx, self.head_request);
                        crate::log::refused(ctx, a, fe, self.peer, &self.buf, *status, hr);
                    }
                    return end;
                }
            };
            first = false;
            self.head_request = head.method == Method::Head;
            gauge.set(Phase::Writing);
            self.http.ctx.stats().requests.add(1);
            self.retiring = !self.refresh_view();
            let current = !self.retiring;
            // In a reused block, not in this future: an idle connection holds only what
            // waiting for a head needs (rt::Pooled).
            let outcome = rt::Pooled::new(exchange::run(self, client, &head)).await;
            self.headers = head.headers;
            self.scan.reset();
            let drain = self.http.ctx.drain();
            match outcome {
                Outcome::KeepAlive if current && !drain.fired() && self.still_served() => continue,
                // Handing over: a pipelined request already read is served here first.
                Outcome::KeepAlive if current && drain.handing_over() && !self.buf.is_empty() => {
                    continue
                }
                Outcome::KeepAlive if current && drain.handing_over() => return Outcome::Handover,
                Outcome::KeepAlive => return Outcome::Close { linger: false },
                other => return other,
            }
        }
    }

    /// Read until `self.buf` starts with a complete request head. client_header_timeout runs
    /// from the head's first byte (from accept for the first request) to its end, however the
    /// bytes trickle in: a slowloris gets no more.
    async fn read_head(
        &mut self,
        client: &mut Socket,
        gauge: &mut PhaseGauge<'_>,
        first: bool,
    ) -> Result<RequestHead, Outcome> {
        let fe = self.fe.clone();
        let (conf, limits) = (&fe.conf, &fe.limits);
        let drain = self.http.ctx.drain();
        self.head_request = false;
        let mut deadline =
            (first || !self.buf.is_empty()).then(|| Instant::now() + conf.client_header_timeout);
        loop {
            if !self.buf.is_empty() && self.scan.worth_parsing(&self.buf, limits) {
                match parse_request(&self.buf, limits, std::mem::take(&mut self.headers)) {
                    Ok(Status::Complete(h)) => return Ok(h),
                    Ok(Status::Partial) => {}
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = ?e, "bad request");
                        // The head is refused, but a HEAD request's answer still has no body.
                        let line = self.buf.trim_ascii_start();
                        self.head_request = line.starts_with(b"HEAD ");
                        return Err(Failure::BadRequest(e).into());
                    }
                }
            }
            gauge.set(if self.buf.is_empty() {
                Phase::Waiting
            } else {
                Phase::Reading
            });
            if drain.fired() && self.buf.is_empty() {
                return Err(idle_end(drain));
            }
            // A keep-alive wait (also a handed-over connection's first wait): a drain may end
            // this read, without losing a byte. A new connection's first read is not idle
            // (shedding load does not close it; a stop waits for its request).
            let idle = self.buf.is_empty() && (deadline.is_none() || (first && self.adopted));
            let timeout = match deadline {
                None => {
                    self.shrink_idle();
                    conf.keepalive_timeout
                }
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            // Grow in steps up to just past the head limit, so the parser can say 431.
            let spare = if self.buf.len() == self.buf.capacity() {
                if !crate::mem::may_grow() {
                    // Near the memory ceiling a growing head is refused, not grown.
                    self.http.ctx.stats().shed_refused.add(1);
                    return Err(Failure::Overloaded.into());
                }
                self.buf.capacity().min(limits.max_header_bytes + 1)
            } else {
                0
            };
            let partial = !self.buf.is_empty();
            let buf = std::mem::take(&mut self.buf);
            let (r, b) = if idle {
                let c = self.canceller.get_or_insert_with(rt::Canceller::new);
                client.read_idle(buf, spare, timeout, drain, c).await
            } else {
                rt::read_into(client, buf, spare, timeout).await
            };
            self.buf = b;
            match r {
                Read::Data => {
                    deadline.get_or_insert_with(|| Instant::now() + conf.client_header_timeout);
                }
                Read::TimedOut if partial => return Err(Failure::ClientTimeout.into()),
                Read::Drained if drain.shedding() => {
                    // Shedding load near the memory ceiling: an idle connection goes first.
                    self.http.ctx.stats().shed_idle_closed.add(1);
                    return Err(Outcome::Close { linger: false });
                }
                Read::Drained if !drain.fired() => {
                    // Nudged by a config change (nothing was read): an idle connection of a
                    // frontend the config no longer has closes; others wait on.
                    if self
                        .http
                        .ctx
                        .view()
                        .http_front(&self.fe.conf.name)
                        .is_none()
                    {
                        return Err(Outcome::Close { linger: false });
                    }
                }
                Read::Drained => return Err(idle_end(drain)),
                Read::Eof | Read::TimedOut | Read::Woken | Read::Err(_) => {
                    return Err(Outcome::Close { linger: false })
                }
            }
        }
    }

    /// Does the running config still have this connection's frontend? (One pointer compare
    /// unless the config changed since the connection's view.)
    pub fn still_served(&self) -> bool {
        let ctx = &self.http.ctx;
        ctx.is_current(&self.view) || ctx.view().http_front(&self.fe.conf.name).is_some()
    }

    /// Move to the shard's current view of the config if it changed since the last request.
    /// False when the new config no longer has this connection's frontend: the request is
    /// served on the old view, then the connection closes (it drains with its listener).
    fn refresh_view(&mut self) -> bool {
        if self.http.ctx.is_current(&self.view) {
            return true;
        }
        let now = self.http.ctx.view();
        match now.http_front(&self.fe.conf.name) {
            Some(f) => {
                self.fe = f.clone();
                self.view = now;
                true
            }
            None => false,
        }
    }

    /// Between requests (nothing buffered), give back buffers a large request or response
    /// made grow.
    fn shrink_idle(&mut self) {
        if self.buf.capacity() > CLIENT_BUF_KEEP {
            self.buf = Vec::with_capacity(CLIENT_BUF);
        }
        for v in [&mut self.out, &mut self.wbuf, &mut self.site] {
            if v.capacity() > IDLE_KEEP {
                *v = Vec::new();
            }
        }
        if self.site_seen.0.capacity() > IDLE_KEEP {
            self.site_seen = (Vec::new(), None);
        }
        for v in [&mut self.headers, &mut self.resp_headers] {
            if v.capacity() > IDLE_HEADERS {
                *v = Vec::new();
            }
        }
    }

    /// Must the client connection close after the current answer? A stop (not an upgrade's
    /// handover, which moves the connection instead), shedding load, or a frontend the config
    /// no longer has.
    pub fn closing(&self) -> bool {
        let drain = self.http.ctx.drain();
        (drain.fired() && !drain.handing_over())
            || drain.shedding()
            || self.retiring
            || !self.still_served()
    }

    /// Send what `out` holds to the client within `send_timeout`, counting it as answered.
    pub async fn send_out(&mut self, client: &mut Socket, answered: &mut u64) -> io::Result<()> {
        let out = std::mem::take(&mut self.out);
        let (r, out) = rt::write_all(client, out, self.fe.conf.send_timeout).await;
        *answered += out.len() as u64;
        self.out = out;
        r
    }

    /// Send what `out` holds, then `body`, to the client within `send_timeout` (one `writev`
    /// when the socket takes it all; small bodies are copied after the head instead).
    pub async fn send_out_with(
        &mut self,
        client: &mut Socket,
        body: bytes::Bytes,
        answered: &mut u64,
    ) -> io::Result<()> {
        if body.len() < 2048 {
            self.out.extend_from_slice(&body);
            return self.send_out(client, answered).await;
        }
        let out = std::mem::take(&mut self.out);
        let len = (out.len() + body.len()) as u64;
        let (r, out) = rt::write_head_body(client, out, body, self.fe.conf.send_timeout).await;
        if r.is_ok() {
            *answered += len;
        }
        self.out = out;
        r
    }

    /// Count one finished exchange in its site's traffic.
    pub fn record_site(&mut self, bytes_in: u64, bytes_out: u64, us: u64) {
        let (key, counters) = &mut self.site_seen;
        if counters.is_none() || *key != self.site {
            let http = self.http;
            *counters = http
                .sites
                .counters(http.ctx.stats(), &self.fe.conf.name, &self.site);
            key.clear();
            key.extend_from_slice(&self.site);
        }
        if let Some(c) = counters {
            c.add(bytes_in, bytes_out, us);
        }
    }
}
