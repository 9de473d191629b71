//! `loadgen serve`: the benchmark backend. HTTP/1.1 keep-alive (and pipelining), one epoll
//! loop per thread on its own SO_REUSEPORT listener, replies with its name in `X-Backend` and
//! in the body. Per request, `?size=N&delay=MS&status=CODE` choose the body size, a delay
//! before the reply (a timer, the thread keeps serving others) and the status.
//!
//! It counts accepted connections and served requests, answers `GET /__stats` with them as
//! JSON (not counted as a served request), and prints them on SIGINT/SIGTERM. It raises its
//! open-file limit to the hard limit so it can hold 10,000+ connections.

use crate::cli::ServeArgs;
use crate::http::response::ChunkedDecoder;
use crate::sys;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request head accepted; beyond it the reply is 431 and the connection closes.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
const READ_BUF: usize = 64 * 1024;
const MAX_EVENTS: usize = 1024;
/// Bodies up to this size are rendered into the connection's output buffer; larger ones are
/// streamed from a shared pattern so a 100 MB reply costs no 100 MB buffer.
const INLINE_BODY: usize = 256 * 1024;
const LISTEN_BACKLOG: i32 = 65_535;
/// How long accepting pauses after EMFILE, instead of spinning on a full fd table.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_STOP: u64 = u64::MAX - 1;

/// One worker's counters, published after each event batch.
#[repr(align(128))]
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    requests: AtomicU64,
    open: AtomicU64,
}

struct Shared {
    name: String,
    default_size: Option<usize>,
    default_delay: u64,
    counters: Vec<Counters>,
    /// The body pattern: the name, a newline, then INLINE_BODY bytes of `x`.
    pattern: Vec<u8>,
}

impl Shared {
    fn totals(&self) -> (u64, u64, u64) {
        let sum = |f: fn(&Counters) -> &AtomicU64| {
            self.counters
                .iter()
                .map(|c| f(c).load(Ordering::Relaxed))
                .sum()
        };
        (sum(|c| &c.accepted), sum(|c| &c.requests), sum(|c| &c.open))
    }
}

pub(crate) fn run(a: ServeArgs) -> Result<i32, String> {
    let limit =
        sys::raise_nofile_limit().map_err(|e| format!("cannot raise the open-file limit: {e}"))?;
    let addr = crate::url::resolve_listen(&a.listen)?;
    let threads = a.threads.max(1);
    let mut listeners = Vec::with_capacity(threads);
    let mut bound = addr;
    for _ in 0..threads {
        let fd = listen(bound).map_err(|e| format!("cannot listen on {bound}: {e}"))?;
        bound = local_addr(fd).unwrap_or(bound);
        listeners.push(fd);
    }
    let mut pattern = format!("{}\n", a.name).into_bytes();
    pattern.resize(pattern.len() + INLINE_BODY, b'x');
    let shared = Arc::new(Shared {
        name: a.name.clone(),
        default_size: a.body_size,
        default_delay: a.delay,
        counters: (0..threads).map(|_| Counters::default()).collect(),
        pattern,
    });
    // Block SIGINT/SIGTERM before spawning so every worker inherits the mask and the main
    // thread takes the signal synchronously.
    sys::block_stop_signals().map_err(|e| format!("cannot block signals: {e}"))?;
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    for (i, lfd) in listeners.into_iter().enumerate() {
        let stop = Arc::new(sys::EventFd::new().map_err(|e| format!("eventfd: {e}"))?);
        stops.push(stop.clone());
        let shared = shared.clone();
        let h = std::thread::Builder::new()
            .name(format!("serve-{i}"))
            .spawn(move || Worker::new(i, lfd, stop, shared).and_then(|w| w.run()))
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(h);
    }
    println!(
        "serve {} listening on {bound} ({threads} threads, open-file limit {limit})",
        a.name
    );
    let _ = io::stdout().flush();
    sys::wait_for_stop_signal();
    for s in &stops {
        s.notify();
    }
    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some("worker thread panicked".to_string()),
        }
    }
    let (accepted, requests, _) = shared.totals();
    println!(
        "serve {}: {accepted} connections accepted, {requests} requests served",
        a.name
    );
    match failed {
        Some(e) => Err(e),
        None => Ok(0),
    }
}

fn listen(addr: SocketAddr) -> io::Result<RawFd> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(s.into_raw_fd())
}

fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    let b = BorrowFd(fd);
    let s = socket2::SockRef::from(&b);
    s.local_addr().ok()?.as_socket()
}

/// Lets socket2 borrow a raw fd we own.
struct BorrowFd(RawFd);
impl std::os::fd::AsFd for BorrowFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        sys::borrow_fd(self.0)
    }
}

/// A reply chosen for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    size: Option<usize>,
    head_only: bool,
    close: bool,
    stats: bool,
}

/// Request-body framing still to skip.
#[derive(Clone, Copy, Debug)]
enum BodySkip {
    None,
    Length(u64),
    Chunked(ChunkedDecoder),
}

struct SConn {
    fd: RawFd,
    gen: u32,
    /// Unparsed input (partial head, or requests queued behind a delayed reply).
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_off: usize,
    /// Body bytes still to stream after `out` (large bodies).
    stream_rem: usize,
    skip: BodySkip,
    /// A reply waiting for its delay timer.
    parked: Option<Reply>,
    close_after: bool,
}

struct Worker {
    index: usize,
    ep: sys::Epoll,
    listener: RawFd,
    _stop: Arc<sys::EventFd>,
    shared: Arc<Shared>,
    conns: Vec<Option<SConn>>,
    free: Vec<u32>,
    next_gen: u32,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    accept_paused_until: Option<Instant>,
    accepted: u64,
    requests: u64,
    open: u64,
    stopping: bool,
    buf: Vec<u8>,
}

impl Worker {
    fn new(
        index: usize,
        listener: RawFd,
        stop: Arc<sys::EventFd>,
        shared: Arc<Shared>,
    ) -> Result<Worker, String> {
        let ep = sys::Epoll::new().map_err(|e| format!("epoll_create: {e}"))?;
        ep.add(listener, sys::EV_IN, TOKEN_LISTENER)
            .map_err(|e| format!("epoll_ctl: {e}"))?;
        ep.add(stop.fd, sys::EV_IN, TOKEN_STOP)
            .map_err(|e| format!("epoll_ctl: {e}"))?;
        Ok(Worker {
            index,
            ep,
            listener,
            _stop: stop,
            shared,
            conns: Vec::new(),
            free: Vec::new(),
            next_gen: 0,
            timers: BinaryHeap::new(),
            accept_paused_until: None,
            accepted: 0,
            requests: 0,
            open: 0,
            stopping: false,
            buf: vec![0; READ_BUF],
        })
    }

    fn publish(&self) {
        let c = &self.shared.counters[self.index];
        c.accepted.store(self.accepted, Ordering::Relaxed);
        c.requests.store(self.requests, Ordering::Relaxed);
        c.open.store(self.open, Ordering::Relaxed);
    }

    fn run(mut self) -> Result<(), String> {
        let mut events = vec![sys::empty_event(); MAX_EVENTS];
        while !self.stopping {
            let now = Instant::now();
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                let _ = self.ep.modify(self.listener, sys::EV_IN, TOKEN_LISTENER);
            }
            while let Some(&Reverse((due, ci, gen))) = self.timers.peek() {
                if due > now {
                    break;
                }
                self.timers.pop();
                self.fire_timer(ci, gen);
            }
            let mut wake: Option<Instant> = self.timers.peek().map(|Reverse((t, _, _))| *t);
            if let Some(t) = self.accept_paused_until {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
            let timeout = wake.map(|t| t.saturating_duration_since(Instant::now()));
            let n = self
                .ep
                .wait(&mut events, timeout)
                .map_err(|e| format!("epoll_wait: {e}"))?;
            for ev in &events[..n] {
                let (token, bits) = (ev.u64, ev.events);
                match token {
                    TOKEN_LISTENER => self.accept_all(),
                    TOKEN_STOP => self.stopping = true,
                    _ => self.on_conn_event(token, bits),
                }
            }
            self.publish();
        }
        for c in self.conns.iter().flatten() {
            sys::close(c.fd);
        }
        sys::close(self.listener);
        Ok(())
    }

    fn accept_all(&mut self) {
        // Bounded batch so a connect storm cannot starve established connections.
        for _ in 0..1024 {
            match sys::accept(self.listener) {
                Ok(fd) => self.add_conn(fd),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // Out of descriptors: stop polling the listener for a moment rather than
                    // spin on an error that will not go away by itself.
                    let _ = self.ep.modify(self.listener, 0, TOKEN_LISTENER);
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                // ECONNABORTED and friends concern one connection only.
                Err(_) => continue,
            }
        }
    }

    fn add_conn(&mut self, fd: RawFd) {
        sys::set_nodelay(fd);
        let ci = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as u32
            }
        };
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let token = (u64::from(gen) << 32) | u64::from(ci);
        if self
            .ep
            .add(
                fd,
                sys::EV_IN | sys::EV_OUT | sys::EV_RDHUP | sys::EV_ET,
                token,
            )
            .is_err()
        {
            sys::close(fd);
            self.free.push(ci);
            return;
        }
        self.conns[ci as usize] = Some(SConn {
            fd,
            gen,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_off: 0,
            stream_rem: 0,
            skip: BodySkip::None,
            parked: None,
            close_after: false,
        });
        self.accepted += 1;
        self.open += 1;
    }

    fn close_conn(&mut self, ci: u32) {
        if let Some(c) = self.conns[ci as usize].take() {
            sys::close(c.fd);
            self.free.push(ci);
            self.open -= 1;
        }
    }

    fn conn(&mut self, ci: u32, gen: u32) -> Option<&mut SConn> {
        self.conns
            .get_mut(ci as usize)?
            .as_mut()
            .filter(|c| c.gen == gen)
    }

    fn on_conn_event(&mut self, token: u64, bits: u32) {
        let (ci, gen) = (token as u32, (token >> 32) as u32);
        if self.conn(ci, gen).is_none() {
            return;
        }
        if bits & sys::EV_OUT != 0 && !self.flush(ci) {
            return;
        }
        if bits & (sys::EV_IN | sys::EV_RDHUP | sys::EV_ERR) != 0 {
            self.read_ready(ci, gen, bits & (sys::EV_RDHUP | sys::EV_ERR) != 0);
        }
    }

    fn read_ready(&mut self, ci: u32, gen: u32, hup: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(c) = self.conn(ci, gen) {
            match sys::read(c.fd, &mut buf) {
                Ok(0) => {
                    self.close_conn(ci);
                    break;
                }
                Ok(n) => {
                    let alive = self.on_input(ci, &buf[..n]);
                    if !alive || (n < buf.len() && !hup) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_conn(ci);
                    break;
                }
            }
        }
        self.buf = buf;
    }

    /// Handles freshly read bytes; false once the connection is closed.
    fn on_input(&mut self, ci: u32, data: &[u8]) -> bool {
        let Some(c) = self.conns[ci as usize].as_mut() else {
            return false;
        };
        if c.parked.is_some() || !c.inbuf.is_empty() {
            c.inbuf.extend_from_slice(data);
            if c.parked.is_some() {
                return true;
            }
            let input = std::mem::take(&mut c.inbuf);
            let used = self.process(ci, &input);
            let Some(c) = self.conns[ci as usize].as_mut() else {
                return false;
            };
            c.inbuf = input;
            c.inbuf.drain(..used);
        } else {
            let used = self.process(ci, data);
            let Some(c) = self.conns[ci as usize].as_mut() else {
                return false;
            };
            c.inbuf.extend_from_slice(&data[used..]);
        }
        let Some(c) = self.conns[ci as usize].as_ref() else {
            return false;
        };
        if c.inbuf.len() > MAX_REQUEST_HEAD {
            let reply = Reply {
                status: 431,
                size: Some(0),
                head_only: false,
                close: true,
                stats: false,
            };
            self.render(ci, reply);
        }
        self.flush(ci)
    }

    /// Serves every complete request in `input`; returns the bytes consumed. Stops early at a
    /// delayed reply (later requests wait, in order) or at a connection-closing reply.
    fn process(&mut self, ci: u32, input: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let Some(c) = self.conns[ci as usize].as_mut() else {
                return used;
            };
            if c.close_after || c.parked.is_some() {
                return used;
            }
            // Skip the previous request's body first.
            match &mut c.skip {
                BodySkip::None => {}
                BodySkip::Length(rem) => {
                    let take = (*rem).min((input.len() - used) as u64);
                    *rem -= take;
                    used += take as usize;
                    if *rem > 0 {
                        return used;
                    }
                    c.skip = BodySkip::None;
                }
                BodySkip::Chunked(dec) => match dec.advance(&input[used..]) {
                    Ok(Some(n)) => {
                        used += n;
                        c.skip = BodySkip::None;
                    }
                    Ok(None) => return input.len(),
                    Err(_) => {
                        let reply = Reply {
                            status: 400,
                            size: Some(0),
                            head_only: false,
                            close: true,
                            stats: false,
                        };
                        self.render(ci, reply);
                        return input.len();
                    }
                },
            }
            if used == input.len() {
                return used;
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let (n, reply, skip, delay) = match req.parse(&input[used..]) {
                Ok(httparse::Status::Partial) => return used,
                Ok(httparse::Status::Complete(n)) => {
                    let (reply, skip, delay) = self.decide(&req);
                    (n, reply, skip, delay)
                }
                Err(_) => {
                    let reply = Reply {
                        status: 400,
                        size: Some(0),
                        head_only: false,
                        close: true,
                        stats: false,
                    };
                    self.render(ci, reply);
                    return input.len();
                }
            };
            used += n;
            let Some(c) = self.conns[ci as usize].as_mut() else {
                return used;
            };
            c.skip = skip;
            if delay > 0 && !reply.stats {
                c.parked = Some(reply);
                let gen = c.gen;
                self.timers.push(Reverse((
                    Instant::now() + Duration::from_millis(delay),
                    ci,
                    gen,
                )));
            } else {
                self.render(ci, reply);
            }
        }
    }

    /// Chooses the reply for a parsed request: query parameters, then the defaults.
    fn decide(&self, req: &httparse::Request) -> (Reply, BodySkip, u64) {
        let path = req.path.unwrap_or("/");
        let version = req.version.unwrap_or(1);
        let mut close = version == 0;
        let mut skip = BodySkip::None;
        let mut bad = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                for tok in h.value.split(|&b| b == b',') {
                    let tok = tok.trim_ascii();
                    if tok.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if tok.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                        close = false;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("content-length") {
                match std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    Some(l) if l > 0 => skip = BodySkip::Length(l),
                    Some(_) => {}
                    None => bad = true,
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                skip = BodySkip::Chunked(ChunkedDecoder::new());
            }
        }
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let mut reply = Reply {
            status: 200,
            size: self.shared.default_size,
            head_only: req.method == Some("HEAD"),
            close: close || bad,
            stats: route == "/__stats",
        };
        let mut delay = self.shared.default_delay;
        for kv in query.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "size" => match v.parse() {
                    Ok(s) => reply.size = Some(s),
                    Err(_) => bad = true,
                },
                "delay" => match v.parse() {
                    Ok(d) => delay = d,
                    Err(_) => bad = true,
                },
                "status" => match v.parse::<u16>() {
                    Ok(s) if (200..=599).contains(&s) => reply.status = s,
                    _ => bad = true,
                },
                _ => {}
            }
        }
        if bad {
            reply = Reply {
                status: 400,
                size: Some(0),
                head_only: false,
                close: true,
                stats: false,
            };
            delay = 0;
        }
        (reply, skip, delay)
    }

    fn fire_timer(&mut self, ci: u32, gen: u32) {
        let Some(c) = self.conn(ci, gen) else { return };
        let Some(reply) = c.parked.take() else { return };
        self.render(ci, reply);
        // Requests that arrived behind the delayed one are served now, in order.
        if let Some(c) = self.conns[ci as usize].as_mut() {
            if !c.inbuf.is_empty() {
                let input = std::mem::take(&mut c.inbuf);
                let used = self.process(ci, &input);
                if let Some(c) = self.conns[ci as usize].as_mut() {
                    c.inbuf = input;
                    c.inbuf.drain(..used);
                }
            }
        }
        self.flush(ci);
    }

    /// Appends the reply to the connection's output.
    fn render(&mut self, ci: u32, reply: Reply) {
        let stats_body;
        let body: &[u8] = if reply.stats {
            self.publish();
            let (accepted, requests, open) = self.shared.totals();
            stats_body = format!(
                "{{\"name\":{},\"connections\":{accepted},\"requests\":{requests},\"open\":{open}}}\n",
                json_string(&self.shared.name)
            );
            stats_body.as_bytes()
        } else {
            &[]
        };
        if !reply.stats {
            self.requests += 1;
        }
        let shared = &self.shared;
        let Some(c) = self.conns[ci as usize].as_mut() else {
            return;
        };
        let no_body = matches!(reply.status, 204 | 304);
        let len = if reply.stats {
            body.len()
        } else if no_body {
            0
        } else {
            reply.size.unwrap_or(shared.name.len() + 1)
        };
        let _ = write!(
            c.out,
            "HTTP/1.1 {} {}\r\nX-Backend: {}\r\n",
            reply.status,
            reason(reply.status),
            shared.name
        );
        if !no_body {
            let ctype = if reply.stats {
                "application/json"
            } else {
                "text/plain"
            };
            let _ = write!(c.out, "Content-Type: {ctype}\r\nContent-Length: {len}\r\n");
        }
        if reply.close {
            c.out.extend_from_slice(b"Connection: close\r\n");
            c.close_after = true;
        }
        c.out.extend_from_slice(b"\r\n");
        if reply.head_only || no_body {
            return;
        }
        if reply.stats {
            c.out.extend_from_slice(body);
        } else {
            let inline = len.min(INLINE_BODY);
            c.out.extend_from_slice(&shared.pattern[..inline]);
            c.stream_rem = len - inline;
        }
    }

    /// Writes pending output; closes the connection when a closing reply is out. False once
    /// the connection is closed.
    fn flush(&mut self, ci: u32) -> bool {
        let Some(c) = self.conns[ci as usize].as_mut() else {
            return false;
        };
        let mut failed = false;
        while c.out_off < c.out.len() {
            match sys::write(c.fd, &c.out[c.out_off..]) {
                Ok(n) => c.out_off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            c.out.clear();
            c.out_off = 0;
            let filler = &self.shared.pattern[self.shared.name.len() + 1..];
            while c.stream_rem > 0 {
                let chunk = c.stream_rem.min(filler.len());
                match sys::write(c.fd, &filler[..chunk]) {
                    Ok(n) => c.stream_rem -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        }
        if failed || (c.close_after && c.stream_rem == 0 && c.out.is_empty()) {
            self.close_conn(ci);
            return false;
        }
        true
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}
