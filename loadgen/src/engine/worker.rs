//! One worker thread: an edge-triggered epoll loop over its connections. Each socket is
//! registered once for IN|OUT; a reply is read and the next request written in the same pass,
//! so a request costs one `read`, one `write` and a share of one `epoll_wait`, with no
//! `epoll_ctl` on the request path (wrk re-arms EPOLLOUT for every request).
//!
//! Connection states:
//! ```text
//!  Down --connect--> Connecting --ok--> Handshake --Ready--> Idle <--reply, keep-alive-- Busy
//!   ^                  |                   |                  \---------issue--------->/
//!   +----error/close---+-------------------+--------------------------------------------+
//! ```
//! Times are nanoseconds since the run's start (`t0`), on the monotonic clock.

use super::{ErrorClass, Live, Plan, Protocol, Share, Step, ThreadStats};
use crate::sys;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{IntoRawFd, RawFd};
use std::time::{Duration, Instant};

const READ_BUF: usize = 64 * 1024;
const MAX_EVENTS: usize = 1024;
/// Wait before reconnecting after a failed connect, so a dead target is not hammered.
const CONNECT_BACKOFF: u64 = 100_000_000;
/// Wait before reconnecting after a connection failed mid-request.
const ERROR_BACKOFF: u64 = 10_000_000;
/// After the last request was sent, how long in-flight replies of a timed run may take.
const DRAIN_GRACE: u64 = 2_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Down,
    Connecting,
    Handshake,
    Idle,
    Busy,
}

struct Conn<'a, C> {
    fd: RawFd,
    /// Bumped on every connect; epoll tokens carry it so a stale event for a closed socket
    /// is never applied to its successor.
    gen: u32,
    st: St,
    p: C,
    group: usize,
    source: Option<IpAddr>,
    sched: u64,
    sent: u64,
    deadline: u64,
    /// Unsent tail of the current request (requests are shared templates).
    pending: &'a [u8],
    /// Unsent handshake bytes (per-connection, e.g. the MySQL login).
    owned: Vec<u8>,
}

struct Worker<'a, P: Protocol> {
    proto: &'a P,
    plan: &'a Plan,
    t0: Instant,
    ep: sys::Epoll,
    conns: Vec<Conn<'a, P::Conn>>,
    idle: VecDeque<u32>,
    reconnect: BinaryHeap<Reverse<(u64, u32)>>,
    stats: ThreadStats,
    open: u64,
    busy: u64,
    /// Connections connecting or logging in: with a request budget, each will claim one.
    warming: u64,
    load_start: u64,
    end_send: Option<u64>,
    interval: Option<f64>,
    quota: Option<u64>,
    issued: u64,
    released: u64,
    started: bool,
    connect_failures_in_row: u64,
    last_reply: u64,
    /// Requests issued in this batch, written by `send_deferred` (connection, generation).
    deferred: Vec<(u32, u32)>,
    out: Vec<u8>,
    buf: Vec<u8>,
}

pub(super) fn run<P: Protocol>(
    proto: &P,
    plan: &Plan,
    share: &Share,
    live: &Live,
    t0: Instant,
) -> Result<(ThreadStats, Duration), String> {
    let ep = sys::Epoll::new().map_err(|e| format!("epoll_create: {e}"))?;
    let ntargets = plan.targets.len().max(1);
    let conns = (0..share.connections)
        .map(|i| {
            let g = share.first_conn + i;
            let group = g % ntargets;
            let source = if plan.sources.is_empty() {
                None
            } else {
                Some(plan.sources[(g / ntargets) % plan.sources.len()])
            };
            Conn {
                fd: -1,
                gen: 0,
                st: St::Down,
                p: proto.new_conn(group, g),
                group,
                source,
                sched: 0,
                sent: 0,
                deadline: 0,
                pending: &[],
                owned: Vec::new(),
            }
        })
        .collect();
    let load_start = plan.ramp.as_nanos() as u64;
    let mut w = Worker {
        proto,
        plan,
        t0,
        ep,
        conns,
        idle: VecDeque::with_capacity(share.connections),
        reconnect: BinaryHeap::with_capacity(share.connections),
        stats: ThreadStats::new(share.rate.is_some()),
        open: 0,
        busy: 0,
        warming: 0,
        load_start,
        end_send: plan.duration.map(|d| load_start + d.as_nanos() as u64),
        interval: share.rate.map(|r| 1e9 / r),
        quota: share.requests,
        issued: 0,
        released: 0,
        started: false,
        connect_failures_in_row: 0,
        last_reply: 0,
        deferred: Vec::with_capacity(MAX_EVENTS),
        out: Vec::with_capacity(512),
        buf: vec![0; READ_BUF],
    };
    let n = w.conns.len() as u64;
    for i in 0..n {
        // Spread connects evenly over the first three quarters of the ramp, so the last ones
        // are established (not just started) when the load begins; no ramp: all at once.
        let at = load_start * 3 / 4 * i / n;
        w.reconnect.push(Reverse((at, i as u32)));
    }
    w.event_loop(live)
}

impl<'a, P: Protocol> Worker<'a, P> {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn sending_over(&self, now: u64) -> bool {
        self.started
            && (self.end_send.is_some_and(|e| now >= e)
                || self.quota.is_some_and(|q| self.issued >= q))
    }

    /// Whether another connection would get a request: with `-n`, connections being set up
    /// already claim what is left, so no connection is opened only to sit unused.
    fn need_conn(&self, now: u64) -> bool {
        !self.sending_over(now) && self.quota.is_none_or(|q| self.issued + self.warming < q)
    }

    fn event_loop(mut self, live: &Live) -> Result<(ThreadStats, Duration), String> {
        let mut events = vec![sys::empty_event(); MAX_EVENTS];
        let min_timeout = self.plan.timeout.min(self.plan.connect_timeout).as_nanos() as u64;
        let scan_step = (min_timeout / 10).clamp(10_000_000, 250_000_000);
        let mut next_scan = scan_step;
        let mut drain_deadline: Option<u64> = None;
        loop {
            let now = self.now();
            if sys::interrupted() && !self.sending_over(now) {
                // Ctrl-C: stop sending now, let in-flight replies finish, report.
                self.started = true;
                self.end_send = Some(now);
                self.quota = Some(self.issued);
            }
            if !self.started && now >= self.load_start {
                self.started = true;
                self.stats.open_at_load_start = self.open;
                if self.interval.is_none() {
                    let idle = std::mem::take(&mut self.idle);
                    for ci in idle {
                        self.on_ready(ci, now);
                    }
                }
            }
            let over = self.sending_over(now);
            while let Some(&Reverse((at, ci))) = self.reconnect.peek() {
                if at > now {
                    break;
                }
                self.reconnect.pop();
                if !over && self.conns[ci as usize].st == St::Down && self.need_conn(now) {
                    self.connect(ci, now);
                }
            }
            if self.started && self.interval.is_some() {
                self.release(now);
            }
            if now >= next_scan {
                self.scan_timeouts(now);
                next_scan = now + scan_step;
            }
            if self.sending_over(now) {
                if self.busy == 0 {
                    break;
                }
                let grace = match self.end_send {
                    Some(_) => DRAIN_GRACE.min(self.plan.timeout.as_nanos() as u64),
                    None => self.plan.timeout.as_nanos() as u64 + scan_step,
                };
                let d = *drain_deadline.get_or_insert(now + grace);
                if now >= d {
                    break;
                }
            }
            if self.open == 0
                && self.connect_failures_in_row >= (3 * self.conns.len() as u64).max(3)
            {
                let sample = self.stats.error_samples.iter().flatten().next().cloned();
                self.stats.aborted =
                    Some(sample.unwrap_or_else(|| "every connection failed".into()));
                break;
            }

            let mut wake = next_scan;
            if !self.started {
                wake = wake.min(self.load_start);
            }
            if let Some(&Reverse((at, _))) = self.reconnect.peek() {
                wake = wake.min(at);
            }
            if let (Some(end), false) = (self.end_send, self.sending_over(now)) {
                wake = wake.min(end);
            }
            if let Some(d) = drain_deadline {
                wake = wake.min(d);
            }
            if let Some(t) = self.next_release() {
                if !self.idle.is_empty() {
                    wake = wake.min(t);
                }
            }
            self.send_deferred();
            let timeout = Duration::from_nanos(wake.saturating_sub(now));
            let n = self
                .ep
                .wait(&mut events, Some(timeout))
                .map_err(|e| format!("epoll_wait: {e}"))?;
            for ev in &events[..n] {
                let (token, bits) = (ev.u64, ev.events);
                let ci = token as u32;
                if self
                    .conns
                    .get(ci as usize)
                    .is_some_and(|c| c.gen == (token >> 32) as u32)
                {
                    self.handle(ci, bits);
                }
            }
            live.publish(&self.stats, self.open);
        }
        self.finish(live)
    }

    fn finish(mut self, live: &Live) -> Result<(ThreadStats, Duration), String> {
        let now = self.now();
        self.stats.unfinished = self.busy;
        self.stats.unsent = self.released.saturating_sub(self.issued);
        self.stats.open_at_end = self.open;
        for c in &mut self.conns {
            if c.fd >= 0 {
                sys::close(c.fd);
                c.fd = -1;
            }
        }
        live.publish(&self.stats, 0);
        let end = if self.last_reply > 0 {
            self.last_reply
        } else {
            now
        };
        let elapsed = Duration::from_nanos(end.saturating_sub(self.load_start));
        Ok((self.stats, elapsed))
    }

    /// Rate mode: the time the next not-yet-released request is due, if any remain.
    fn next_release(&self) -> Option<u64> {
        let interval = self.interval?;
        if !self.started || self.quota.is_some_and(|q| self.released >= q) {
            return None;
        }
        let t = self.load_start + (self.released as f64 * interval) as u64;
        match self.end_send {
            Some(e) if t >= e => None,
            _ => Some(t),
        }
    }

    /// Rate mode: marks every request whose scheduled time has come as due, and hands due
    /// requests to idle connections in FIFO order, so load spreads over all connections.
    fn release(&mut self, now: u64) {
        let Some(interval) = self.interval else {
            return;
        };
        let mut cap = u64::MAX;
        if let Some(end) = self.end_send {
            cap = ((end - self.load_start) as f64 / interval).ceil() as u64;
        }
        if let Some(q) = self.quota {
            cap = cap.min(q);
        }
        let due = (((now.saturating_sub(self.load_start)) as f64 / interval) as u64 + 1).min(cap);
        self.released = self.released.max(due);
        while self.issued < self.released {
            let Some(ci) = self.pop_idle() else { break };
            let sched = self.load_start + (self.issued as f64 * interval) as u64;
            self.issue(ci, sched, now);
        }
    }

    fn pop_idle(&mut self) -> Option<u32> {
        // Entries go stale when an idle connection is closed; skip those.
        while let Some(ci) = self.idle.pop_front() {
            if self.conns[ci as usize].st == St::Idle {
                return Some(ci);
            }
        }
        None
    }

    /// A connection can take a request: give it one now, or park it.
    fn on_ready(&mut self, ci: u32, now: u64) {
        if matches!(self.conns[ci as usize].st, St::Connecting | St::Handshake) {
            self.warming -= 1;
        }
        self.conns[ci as usize].st = St::Idle;
        if !self.started || self.sending_over(now) {
            self.idle.push_back(ci);
            return;
        }
        match self.interval {
            None => self.issue(ci, now, now),
            Some(interval) if self.issued < self.released => {
                let sched = self.load_start + (self.issued as f64 * interval) as u64;
                self.issue(ci, sched, now);
            }
            Some(_) => self.idle.push_back(ci),
        }
    }

    /// Assigns the next request to a connection. The write itself is deferred to the end of
    /// the event batch (`send_deferred`): the server then receives the batch's requests as one
    /// burst and handles them in one wakeup instead of being woken per request, which on a VM
    /// (cross-core wakeups of ~20 µs) is what limits a ping-pong benchmark.
    fn issue(&mut self, ci: u32, sched: u64, now: u64) {
        self.issued += 1;
        self.busy += 1;
        let proto: &'a P = self.proto;
        let timeout = self.plan.timeout.as_nanos() as u64;
        let c = &mut self.conns[ci as usize];
        c.pending = proto.request(&mut c.p);
        c.st = St::Busy;
        c.sched = sched;
        c.sent = now;
        c.deadline = now + timeout;
        self.deferred.push((ci, c.gen));
    }

    /// Writes the requests issued during this batch; their send time is now.
    fn send_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let now = self.now();
        let deadline = now + self.plan.timeout.as_nanos() as u64;
        let closed_loop = self.interval.is_none();
        let mut list = std::mem::take(&mut self.deferred);
        for &(ci, gen) in &list {
            let c = &mut self.conns[ci as usize];
            if c.gen != gen || c.st != St::Busy || c.pending.is_empty() {
                continue;
            }
            c.sent = now;
            c.deadline = deadline;
            if closed_loop {
                c.sched = now;
            }
            self.flush(ci);
        }
        list.clear();
        self.deferred = list;
    }

    fn connect(&mut self, ci: u32, now: u64) {
        self.stats.connects_started += 1;
        let addr = self.plan.targets[self.conns[ci as usize].group];
        let source = self.conns[ci as usize].source;
        match open_socket(addr, source) {
            Ok((fd, done)) => {
                let c = &mut self.conns[ci as usize];
                c.gen = c.gen.wrapping_add(1);
                c.fd = fd;
                c.st = St::Connecting;
                c.deadline = now + self.plan.connect_timeout.as_nanos() as u64;
                self.warming += 1;
                let token = (u64::from(c.gen) << 32) | u64::from(ci);
                let bits = sys::EV_IN | sys::EV_OUT | sys::EV_RDHUP | sys::EV_ET;
                if let Err(e) = self.ep.add(fd, bits, token) {
                    self.fail(ci, ErrorClass::ConnectOther, format!("epoll_ctl: {e}"));
                    return;
                }
                if done {
                    self.connected(ci, now);
                }
            }
            Err(e) => {
                let class = ErrorClass::of_io(&e, true);
                self.fail(ci, class, format!("connect to {addr}: {e}"));
            }
        }
    }

    fn connected(&mut self, ci: u32, now: u64) {
        self.open += 1;
        self.stats.max_open = self.stats.max_open.max(self.open);
        self.stats.connects_ok += 1;
        self.connect_failures_in_row = 0;
        let timeout = self.plan.timeout.as_nanos() as u64;
        let c = &mut self.conns[ci as usize];
        if self.proto.on_connect(&mut c.p) {
            self.on_ready(ci, now);
        } else {
            c.st = St::Handshake;
            c.deadline = now + timeout;
        }
    }

    fn handle(&mut self, ci: u32, bits: u32) {
        let c = &self.conns[ci as usize];
        match c.st {
            St::Down => return,
            St::Connecting => {
                if bits & (sys::EV_OUT | sys::EV_ERR) == 0 {
                    return;
                }
                let addr = self.plan.targets[c.group];
                match sys_take_error(c.fd) {
                    None => {
                        let now = self.now();
                        self.connected(ci, now);
                    }
                    Some(e) => {
                        let class = ErrorClass::of_io(&e, true);
                        self.fail(ci, class, format!("connect to {addr}: {e}"));
                        return;
                    }
                }
            }
            _ => {}
        }
        let c = &self.conns[ci as usize];
        if bits & sys::EV_OUT != 0
            && (!c.pending.is_empty() || !c.owned.is_empty())
            && !self.flush(ci)
        {
            return;
        }
        if bits & (sys::EV_IN | sys::EV_ERR | sys::EV_RDHUP) != 0 {
            self.read_ready(ci, bits & (sys::EV_RDHUP | sys::EV_ERR) != 0);
        }
    }

    /// Writes what is pending; false if the connection failed.
    fn flush(&mut self, ci: u32) -> bool {
        let c = &mut self.conns[ci as usize];
        while !c.owned.is_empty() {
            match sys::write(c.fd, &c.owned) {
                Ok(n) => {
                    self.stats.bytes_out += n as u64;
                    c.owned.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    self.fail(ci, ErrorClass::of_io(&e, false), format!("write: {e}"));
                    return false;
                }
            }
        }
        while !c.pending.is_empty() {
            match sys::write(c.fd, c.pending) {
                Ok(n) => {
                    self.stats.bytes_out += n as u64;
                    c.pending = &c.pending[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    self.fail(ci, ErrorClass::of_io(&e, false), format!("write: {e}"));
                    return false;
                }
            }
        }
        true
    }

    /// Reads until the socket is drained. A short read means drained (edge-triggered epoll
    /// reports new data with a new edge), unless the peer already closed: then read to EOF.
    fn read_ready(&mut self, ci: u32, hup: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        let gen = self.conns[ci as usize].gen;
        loop {
            let c = &self.conns[ci as usize];
            if c.gen != gen || c.fd < 0 {
                break;
            }
            match sys::read(c.fd, &mut buf) {
                Ok(0) => {
                    self.on_eof(ci);
                    break;
                }
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    if !self.on_bytes(ci, &buf[..n]) || (n < buf.len() && !hup) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(ci, ErrorClass::of_io(&e, false), format!("read: {e}"));
                    break;
                }
            }
        }
        self.buf = buf;
    }

    /// Feeds bytes to the protocol; false once the connection is closed.
    fn on_bytes(&mut self, ci: u32, data: &[u8]) -> bool {
        let c = &mut self.conns[ci as usize];
        match c.st {
            St::Busy | St::Handshake => {
                self.out.clear();
                let step = self.proto.on_data(&mut c.p, data, &mut self.out);
                if !self.out.is_empty() {
                    c.owned.extend_from_slice(&self.out);
                    if !self.flush(ci) {
                        return false;
                    }
                }
                self.on_step(ci, step)
            }
            St::Idle => {
                self.fail(
                    ci,
                    ErrorClass::BadResponse,
                    "data received on an idle connection".into(),
                );
                false
            }
            St::Down | St::Connecting => false,
        }
    }

    fn on_step(&mut self, ci: u32, step: Step) -> bool {
        match step {
            Step::More => true,
            Step::Ready => {
                let now = self.now();
                self.on_ready(ci, now);
                true
            }
            Step::Done {
                code,
                ok,
                keep_alive,
            } => {
                let now = self.now();
                let c = &self.conns[ci as usize];
                if c.st != St::Busy {
                    self.fail(ci, ErrorClass::BadResponse, "reply before request".into());
                    return false;
                }
                let latency = now.saturating_sub(c.sched) / 1000;
                let uncorrected = now.saturating_sub(c.sent) / 1000;
                self.stats.record_response(code, ok, latency, uncorrected);
                self.busy -= 1;
                self.last_reply = now;
                if keep_alive && !self.plan.close {
                    self.on_ready(ci, now);
                    true
                } else {
                    self.close_conn(ci);
                    if self.need_conn(now) {
                        self.connect(ci, now);
                    }
                    false
                }
            }
            Step::Fail(class, msg) => {
                self.fail(ci, class, msg);
                false
            }
        }
    }

    fn on_eof(&mut self, ci: u32) {
        let c = &mut self.conns[ci as usize];
        match c.st {
            St::Busy | St::Handshake => {
                let step = self.proto.on_eof(&mut c.p);
                match step {
                    Step::Done { code, ok, .. } => {
                        self.on_step(
                            ci,
                            Step::Done {
                                code,
                                ok,
                                keep_alive: false,
                            },
                        );
                    }
                    Step::Fail(class, msg) => self.fail(ci, class, msg),
                    _ => self.fail(ci, ErrorClass::Closed, "connection closed by server".into()),
                }
            }
            _ => {
                // The server closed an idle keep-alive connection: not an error, reopen it.
                self.close_conn(ci);
                let now = self.now();
                if !self.sending_over(now) {
                    self.reconnect.push(Reverse((now, ci)));
                }
            }
        }
    }

    fn fail(&mut self, ci: u32, class: ErrorClass, msg: String) {
        let c = &self.conns[ci as usize];
        if c.st == St::Busy {
            self.stats.failed_requests += 1;
            self.busy -= 1;
        }
        if class.is_connect() {
            self.connect_failures_in_row += 1;
        }
        self.stats.record_error(class, || msg);
        self.close_conn(ci);
        let now = self.now();
        let backoff = if class.is_connect() {
            CONNECT_BACKOFF
        } else {
            ERROR_BACKOFF
        };
        if !self.sending_over(now) {
            self.reconnect.push(Reverse((now + backoff, ci)));
        }
    }

    fn close_conn(&mut self, ci: u32) {
        let c = &mut self.conns[ci as usize];
        if c.fd >= 0 {
            // Closing removes the fd from the epoll set.
            sys::close(c.fd);
            c.fd = -1;
        }
        if matches!(c.st, St::Handshake | St::Idle | St::Busy) {
            self.open -= 1;
        }
        if matches!(c.st, St::Connecting | St::Handshake) {
            self.warming -= 1;
        }
        c.st = St::Down;
        c.pending = &[];
        c.owned.clear();
    }

    fn scan_timeouts(&mut self, now: u64) {
        for ci in 0..self.conns.len() as u32 {
            let c = &self.conns[ci as usize];
            if now < c.deadline {
                continue;
            }
            match c.st {
                St::Connecting => {
                    let addr = self.plan.targets[c.group];
                    let t = self.plan.connect_timeout;
                    self.fail(
                        ci,
                        ErrorClass::ConnectTimeout,
                        format!("connect to {addr}: no answer within {t:?}"),
                    );
                }
                St::Busy | St::Handshake => {
                    let t = self.plan.timeout;
                    self.fail(
                        ci,
                        ErrorClass::ReadTimeout,
                        format!("no complete reply within {t:?}"),
                    );
                }
                _ => {}
            }
        }
    }
}

/// Opens a non-blocking TCP socket and starts connecting; `true` if it connected at once.
fn open_socket(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<(RawFd, bool)> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    sock.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        sys::set_bind_address_no_port(fd)?;
        sock.bind(&SocketAddr::new(ip, 0).into())
            .map_err(|e| io::Error::new(e.kind(), format!("bind to source {ip}: {e}")))?;
    }
    let done = match sock.connect(&addr.into()) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
        Err(e) => return Err(e),
    };
    Ok((sock.into_raw_fd(), done))
}

fn sys_take_error(fd: RawFd) -> Option<io::Error> {
    sys::take_error(fd).unwrap_or_else(Some)
}
