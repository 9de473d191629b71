//! MySQL pass-through: one client connection ↔ one backend connection, chosen at connect time,
//! with an [`Observer`] watching both directions for per-user accounting.
//!
//! ```text
//! accept ─ frontend full? ─ yes ─► ERR 1040 (first packet), close
//!    │ no
//!    ▼
//! candidates (pool's balancer: fewest in-flight commands, ties rotate)
//!    │ connect + read greeting, each bounded by connect_timeout
//!    ├─ refused / timed out / no greeting ─► mark server down (all shards), next candidate
//!    ├─ none left ─► ERR 2003 (first packet), close
//!    ▼
//! greeting: observer sees it as sent, client gets it with TLS/compression bits hidden
//!    ▼
//! relay both ways as bytes arrive; observer → per-user stats, in-flight counts
//!    │ MAX_OUTSTANDING commands unanswered ─► stop reading the client until replies drain
//!    │ either side closes, idle timeout, client write stalled, or drain ─► close both;
//!    │ open commands fail
//!    ▼
//! backend closed while commands were open ─► probe it; refused → mark down
//! ```
//!
//! Idle timeouts, client write timeouts and graceful stop never cancel a read or a write
//! (monoio 0.2.4: a cancelled read can lose bytes): a per-shard sweeper shuts the sockets down
//! instead, which ends the pending reads with EOF and the pending writes with an error.

mod backend;
mod cached;
pub mod digest;
mod health;
mod pooled;
pub mod qcache;
pub mod stats;
mod tls;
mod track;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::balance::{Place, ServerShared};
use crate::proto::mysql::packet::{complete_packet_len, err_packet_pre41};
use crate::proto::mysql::{com, handshake, Event, Observer};
use crate::proxy::preamble::{self, Edge, Ready};
use crate::proxy::{ShardCtx, ShardView};
use crate::rt::{self, Read, Socket, Splitable, TcpStream};
use crate::shard::ConnGuard;
use crate::shared::Shared;

use crate::config::MysqlCacheConf;
use backend::{connect_backend, read_greeting, NoBackend};
use cached::Capture;
use digest::DigestShard;
pub use pooled::{
    render as render_pool, render_json as render_pool_json, ReplState, ShardPool, UserGauge,
};
use qcache::QcacheShard;
use stats::ConnAccount;
pub use stats::{FrontCounters, MysqlShardStats, UserStats};
use track::DigestTrack;

/// The per-user gauges of a terminating frontend, shared by every shard (and kept across
/// reloads, so a reload does not reset the counts of connections that stay open).
pub fn user_gauges(
    shared: &Shared,
    frontend: &str,
    pc: &crate::config::MysqlPooled,
) -> Vec<std::sync::Arc<UserGauge>> {
    let mut all = shared
        .mysql_user_gauges
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    pc.users
        .iter()
        .map(|u| {
            all.entry((frontend.to_owned(), u.name.clone()))
                .or_default()
                .clone()
        })
        .collect()
}

/// Relay buffer per direction: MySQL packets are small except blobs, which stream through.
const RELAY_BUF: usize = 16 * 1024;
/// Largest greeting accepted from a server (real ones are about 100 bytes).
const MAX_GREETING: usize = 4096;
/// How often the sweeper checks idle timeouts, stalled client writes and drain.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Commands a client may have sent and not had answered (pipelining) before shardgate stops
/// reading from it. Each costs a queue entry in the observer and counts as in flight for the
/// balancer; real connectors pipeline a handful (PREPARE + EXECUTE). Reading resumes as soon
/// as replies bring the count under the bound, so nothing is refused: the client just waits,
/// as it would on a full socket buffer. One read (up to [`RELAY_BUF`] bytes) is taken whole,
/// so the count can pass the bound by what one read holds (about 3,300 5-byte COM_PINGs).
pub const MAX_OUTSTANDING: usize = 1024;
/// How long a refused client's ERR is given to leave before the socket closes.
const LINGER: Duration = Duration::from_millis(200);

/// MariaDB's own code and text for a full server, so clients react as they would to it.
const ER_CON_COUNT_ERROR: u16 = 1040;
/// The client-side "can't connect" code: what a client reports when no server answers.
const CR_CONN_HOST_ERROR: u16 = 2003;

/// Called once per shard at start: the idle/drain sweeper, and on shard 0 the health checks.
pub fn start_shard(shard: &Rc<ShardCtx>) {
    // Cheap while there is no MySQL connection; a reload may add MySQL frontends.
    rt::spawn(sweeper(shard.clone()));
    if shard.id() == 0 {
        rt::spawn(health::supervise(shard.shared.clone()));
        rt::spawn(pooled::monitor::supervise(shard.shared.clone()));
    }
}

/// `show traffic mysql`: per-user traffic summed over shards (see [`stats::render`]).
pub fn render_traffic(shared: &Shared) -> String {
    let shards: Vec<&MysqlShardStats> = shared.mysql_stats.iter().map(|s| &**s).collect();
    let names: Vec<String> = shared
        .current()
        .config
        .mysql
        .iter()
        .map(|f| f.name.clone())
        .collect();
    stats::render(&shards, &names)
}

/// What the sweeper needs to know about a live connection. The fds are only shut down while
/// `closed` is false, and the handler sets it before the streams are dropped, so a shut down
/// fd is always still ours.
struct Ctl {
    client_fd: RawFd,
    server_fd: RawFd,
    idle_ms: u64,
    /// `client_write_timeout` in ms.
    write_ms: u64,
    last_active_ms: Cell<u64>,
    /// When the pending write to the client started (0: none pending). A write that returns,
    /// even partially, is progress; one pending for `write_ms` means the client stopped reading.
    client_write_since_ms: Cell<u64>,
    /// Commands outstanding (or the observer gave up and only byte activity counts).
    busy: Cell<bool>,
    closed: Cell<bool>,
    /// Set by the sweeper when it closed the connection for idleness.
    idle_expired: Cell<bool>,
    /// Set by the sweeper when it closed the connection for a stalled client write.
    write_expired: Cell<bool>,
    /// Set by the sweeper when it closed the connection (idle, write timeout or drain).
    swept: Cell<bool>,
    /// The direction whose source ended first.
    first_end: Cell<Option<Dir>>,
}

impl Ctl {
    fn shutdown(&self) {
        if !self.closed.get() {
            rt::shutdown_fd(self.client_fd);
            rt::shutdown_fd(self.server_fd);
        }
    }
}

thread_local! {
    /// This shard's live MySQL connections, for the sweeper.
    static LIVE: RefCell<Vec<Weak<Ctl>>> = const { RefCell::new(Vec::new()) };
}

async fn sweeper(shard: Rc<ShardCtx>) {
    loop {
        rt::sleep(SWEEP_EVERY).await;
        let now = rt::now_ms();
        // Handing over to a new process (upgrade): MySQL sessions stay here, and idle ones
        // close between commands only once most of stop_timeout has passed.
        let life = &shard.shared.life;
        let draining = shard.drain().fired()
            && (!shard.drain().handing_over()
                || now >= life.mysql_close_at_ms.load(Ordering::Relaxed));
        let empty = LIVE.with(|live| {
            let mut live = live.borrow_mut();
            live.retain(|w| match w.upgrade() {
                Some(c) if !c.closed.get() => {
                    let idle_for = now.saturating_sub(c.last_active_ms.get());
                    let since = c.client_write_since_ms.get();
                    if since != 0 && now.saturating_sub(since) >= c.write_ms {
                        // Busy or not: a client that takes nothing holds a backend for nothing.
                        c.write_expired.set(true);
                        c.swept.set(true);
                        c.shutdown();
                    } else if !c.busy.get() && (draining || idle_for >= c.idle_ms) {
                        c.idle_expired.set(!draining);
                        c.swept.set(true);
                        c.shutdown();
                    }
                    true
                }
                _ => false,
            });
            live.is_empty()
        });
        if empty && shard.shared.life.stopping.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Serve one accepted MySQL client connection until either side closes.
pub async fn serve_client(
    shard: Rc<ShardCtx>,
    view: Rc<ShardView>,
    fe: usize,
    client: TcpStream,
    peer: SocketAddr,
    guard: ConnGuard,
) {
    let shared = shard.shared.clone();
    let Some(front) = view.mysql.get(fe) else {
        return;
    };
    let conf = &front.conf;
    // A PROXY header first, if the frontend takes one (TLS starts later, after the greeting).
    let (mut client, addrs, early) = match &conf.accept_proxy {
        None => {
            let local = client.local_addr().unwrap_or(peer);
            (client, (peer, local), Vec::new())
        }
        Some(ap) => {
            let local = client.local_addr().unwrap_or(peer);
            let edge = Edge {
                accept_proxy: Some(ap),
                tls: None,
                timeout: conf
                    .tls
                    .as_ref()
                    .map_or(Duration::from_secs(10), |t| t.handshake_timeout),
                plain_answer: None,
            };
            match preamble::run(client, peer, local, &edge, Vec::new(), shard.stats()).await {
                Some(Ready {
                    socket: Socket::Tcp(c),
                    addrs,
                    buf,
                }) => (c, addrs, buf),
                _ => return,
            }
        }
    };
    let my = &shared.mysql_stats[shard.id()];
    let counters = &*front.counters;
    counters.accepted.add(1);

    // The frontend-wide count is the sum of every shard's own gauge.
    let open: u64 = front.all.iter().map(|c| c.active.get()).sum();
    if open >= conf.max_connections as u64 {
        counters.refused_limit.add(1);
        tracing::debug!(frontend = %conf.name, %peer, "refused: frontend connection limit");
        refuse(client, ER_CON_COUNT_ERROR, "Too many connections").await;
        return;
    }
    counters.active.add(1);
    let _active = ActiveGuard(&counters.active);

    if let Some(sp) = &front.pool {
        pooled::serve(&shard, &view, front, sp, client, peer, early).await;
        drop(guard);
        return;
    }
    let pool_ix = conf.pool;
    let pool = &view.gen.pools[pool_ix];
    let mut acct = ConnAccount::default();
    let mut observer = Observer::new();

    let (server_ix, server, greeting, _place) =
        match connect_backend(&shard, &view, pool_ix, counters, addrs).await {
            Ok(v) => v,
            Err(NoBackend::Unreachable) => {
                counters.no_server.add(1);
                let msg = format!(
                    "shardgate: no server of pool '{}' can be reached",
                    pool.name
                );
                refuse(client, CR_CONN_HOST_ERROR, &msg).await;
                return;
            }
            Err(NoBackend::LocalExhaustion) => {
                counters.no_server.add(1);
                refuse(client, ER_CON_COUNT_ERROR, "Too many connections").await;
                return;
            }
            Err(NoBackend::Full) => {
                counters.no_server.add(1);
                let msg = format!(
                    "shardgate: every server of pool '{}' is at its max_connections",
                    pool.name
                );
                refuse(client, ER_CON_COUNT_ERROR, &msg).await;
                return;
            }
        };
    let ss = &pool.servers[server_ix];
    tracing::debug!(frontend = %conf.name, %peer, server = %ss.name, "mysql session");

    // The observer sees the greeting as the server sent it; the client gets it rewritten.
    let mut greeting = greeting;
    let mut sink_events = Vec::new();
    observer.feed_server(&greeting, rt::now_us(), &mut |e| {
        sink_events.push(own_event(e))
    });
    if greeting.get(4) != Some(&0xFF) {
        let _ = handshake::hide_capabilities(&mut greeting[4..]);
        if conf.tls.is_some() {
            let _ = handshake::offer_ssl(&mut greeting[4..]);
        }
    }
    acct.bytes_out(greeting.len());
    let (res, _) = rt::write_all(&mut client, greeting, conf.client_write_timeout).await;
    if res.is_err() {
        acct.flush(my, None);
        return;
    }

    let ctl = Rc::new(Ctl {
        client_fd: client.as_raw_fd(),
        server_fd: server.as_raw_fd(),
        idle_ms: conf.client_idle_timeout.as_millis().min(u64::MAX as u128) as u64,
        write_ms: conf.client_write_timeout.as_millis().min(u64::MAX as u128) as u64,
        last_active_ms: Cell::new(rt::now_ms()),
        client_write_since_ms: Cell::new(0),
        busy: Cell::new(false),
        closed: Cell::new(false),
        idle_expired: Cell::new(false),
        write_expired: Cell::new(false),
        swept: Cell::new(false),
        first_end: Cell::new(None),
    });
    LIVE.with(|l| l.borrow_mut().push(Rc::downgrade(&ctl)));

    let session = Session {
        shard: &shard,
        stats: my,
        digests: conf
            .digests
            .then(|| &*shard.shared.mysql_digests[shard.id()]),
        track: conf.digests || conf.cache.is_some(),
        cache: conf.cache.as_deref().map(|c| (conf.name.as_str(), c)),
        qcache: &shard.shared.mysql_qcache[shard.id()],
        down_busy: Cell::new(false),
        client_dup: RefCell::new(None),
        counters,
        server: ss,
        ctl: &ctl,
        state: RefCell::new(SessionState {
            observer,
            acct,
            digests: DigestTrack::default(),
            capture: None,
            pending: sink_events,
        }),
        server_lost: Cell::new(false),
        client_reader: Cell::new(None),
    };
    session.apply_pending();

    let server = Socket::Tcp(server);
    let back = view
        .conns
        .get(pool_ix)
        .and_then(|c| c.tls_config())
        .zip(pool_conf(&view, pool_ix).and_then(|p| p.tls.as_ref()))
        .map(|(config, t)| (config, t.name_for(None, ss.addr)));
    // The client's first packet is read whole before anything is relayed (see tls::start:
    // a PROXY header a client sends itself must never reach a server that trusts ours).
    let started = tls::start(
        &session,
        Socket::Tcp(client),
        server,
        conf.tls.as_deref(),
        back,
        early,
    )
    .await;
    match started {
        tls::Start::Pumps(Socket::Tcp(client), Socket::Tcp(mut server), first) => {
            // What the client sent before the pumps start (its first packet, when TLS was
            // offered and declined) goes first.
            let sent = first.is_empty() || {
                session.observe(&first, Dir::ClientToServer);
                rt::write_all(&mut server, first, conf.client_write_timeout)
                    .await
                    .0
                    .is_ok()
            };
            if sent {
                let (cfd, sfd) = (client.as_raw_fd(), server.as_raw_fd());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = session.pump(cr, (sw, sfd), Dir::ClientToServer);
                let down = session.pump(sr, (cw, cfd), Dir::ServerToClient);
                monoio::join!(up, down);
            } else {
                session.ended(Dir::ServerToClient);
            }
        }
        tls::Start::Relay(mut client, mut server) => {
            session.relay_tls(&mut client, &mut server).await
        }
        // start() closed both sockets: their numbers may already be someone else's, so
        // the session must not shut them down.
        _ => ctl.closed.set(true),
    }

    // Both directions are done: account what was left open, then let the streams go.
    {
        let mut st = session.state.borrow_mut();
        let SessionState {
            observer,
            acct,
            digests,
            ..
        } = &mut *st;
        let busy = observer.outstanding() > 0;
        let to = Sinks {
            stats: my,
            counters,
            server: ss,
            shard: shard.id(),
            digests: conf
                .digests
                .then(|| &*shard.shared.mysql_digests[shard.id()]),
            track: conf.digests || conf.cache.is_some(),
            from_cache: false,
        };
        observer.close(rt::now_us(), &mut |e| on_event(e, acct, digests, &to));
        acct.flush(my, None);
        if busy && session.server_lost.get() {
            counters.backend_lost.add(1);
        }
    }
    if ctl.idle_expired.get() {
        counters.idle_closed.add(1);
    }
    if ctl.write_expired.get() {
        counters.write_timeout.add(1);
        tracing::debug!(frontend = %conf.name, %peer, "closed: client stopped reading (client_write_timeout)");
    }
    ctl.closed.set(true);
    if session.server_lost.get() {
        rt::spawn(health::probe_after_loss(
            view.gen.clone(),
            pool_ix,
            server_ix,
        ));
    }
    drop(guard);
}

fn pool_conf(view: &ShardView, pool: usize) -> Option<&crate::config::Pool> {
    view.gen.config.pools.get(pool)
}

/// Decrements a frontend's active gauge however the connection ends.
struct ActiveGuard<'a>(&'a stats::ShardCounter);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.sub(1);
    }
}

/// Send a pre-handshake ERR (no SQL state, as servers do before the greeting) and close.
async fn refuse(mut client: TcpStream, code: u16, msg: &str) {
    let mut out = Vec::with_capacity(64 + msg.len());
    err_packet_pre41(&mut out, 0, code, msg);
    let (res, out) = rt::write_all(&mut client, out, LINGER).await;
    if res.is_ok() {
        // What the client may still send must not turn the close into a reset that eats the ERR.
        rt::linger_close(client, out, LINGER).await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

struct SessionState {
    observer: Observer,
    acct: ConnAccount,
    digests: DigestTrack,
    /// A cacheable query's reply being collected for the query cache.
    capture: Option<Capture>,
    /// Events seen before the session existed (the greeting), applied once it does.
    pending: Vec<OwnedEvent>,
}

struct Session<'a> {
    shard: &'a ShardCtx,
    stats: &'a MysqlShardStats,
    /// The digest table (`None`: the frontend has `digests = false`).
    digests: Option<&'a DigestShard>,
    /// Follow statements at all: for digests, or for the query cache's session state.
    track: bool,
    /// The frontend's query cache rules (`None`: no cache) and this shard's store.
    cache: Option<(&'a str, &'a MysqlCacheConf)>,
    qcache: &'a QcacheShard,
    /// The server→client pump has bytes read and not yet written to the client: a reply
    /// from the cache now would overtake them.
    down_busy: Cell<bool>,
    /// A second descriptor of the client socket for replies from the cache (the client's
    /// write half belongs to the server→client pump, parked on a read of the server).
    client_dup: RefCell<Option<TcpStream>>,
    counters: &'a FrontCounters,
    server: &'a ServerShared,
    ctl: &'a Ctl,
    state: RefCell<SessionState>,
    /// The backend side ended first (closed or failed), not the client.
    server_lost: Cell<bool>,
    /// The client→server pump, parked while [`MAX_OUTSTANDING`] commands are unanswered.
    client_reader: Cell<Option<Waker>>,
}

impl Session<'_> {
    fn apply_pending(&self) {
        let mut st = self.state.borrow_mut();
        let SessionState { acct, pending, .. } = &mut *st;
        for e in pending.drain(..) {
            if let OwnedEvent::LoginFailed = e {
                acct.login_failed();
                self.counters.login_failed.add(1);
            }
        }
    }

    /// Too many commands unanswered to read more from the client? Never while the server
    /// waits for the client itself (LOCAL INFILE data, COM_CHANGE_USER authentication), or
    /// the two would wait for each other.
    fn client_must_wait(&self) -> bool {
        let st = self.state.borrow();
        st.observer.outstanding() >= MAX_OUTSTANDING && !st.observer.awaiting_client()
    }

    /// Resolves when the client may be read again (or the session is ending).
    async fn client_may_send(&self) {
        let mut counted = false;
        poll_fn(|cx| {
            if self.ctl.first_end.get().is_some() || !self.client_must_wait() {
                return Poll::Ready(());
            }
            if !counted {
                counted = true;
                self.counters.pipeline_paused.add(1);
            }
            self.client_reader.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    fn wake_client_reader(&self) {
        if let Some(w) = self.client_reader.take() {
            w.wake();
        }
    }

    /// Relay one direction until its source ends or a write fails; then shut both sockets
    /// down so the other direction ends too.
    async fn pump<R, W>(&self, mut r: R, (mut w, wfd): (W, RawFd), dir: Dir)
    where
        R: AsyncReadRent,
        W: AsyncWriteRent,
    {
        let mut buf = Vec::with_capacity(RELAY_BUF);
        'relay: loop {
            if dir == Dir::ClientToServer {
                self.client_may_send().await;
                if self.ctl.first_end.get().is_some() {
                    break;
                }
            }
            buf.clear();
            let (res, b) = r.read(buf).await;
            buf = b;
            let n = match res {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if dir == Dir::ClientToServer && self.cache.is_some() {
                if let Some(reply) = self.cache_lookup(&buf[..n]) {
                    self.observe_hit(&buf[..n], &reply);
                    if !self.write_cached(reply).await {
                        break 'relay;
                    }
                    continue;
                }
            }
            if dir == Dir::ServerToClient {
                self.down_busy.set(true);
            }
            self.observe(&buf[..n], dir);
            // Write by hand rather than write_all: each partial write is progress, and the
            // sweeper's client_write_timeout looks at how long the pending one has waited.
            let mut off = 0;
            while off < n {
                // First without the runtime: a socket with room takes a reply at once, and
                // the io_uring write and its extra wake-up are saved (rt::send_now).
                match rt::send_now(wfd, &buf[off..n]) {
                    Ok(k) => {
                        off += k;
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break 'relay,
                }
                if dir == Dir::ServerToClient {
                    self.ctl.client_write_since_ms.set(rt::now_ms());
                }
                let (res, slice) = w.write(buf.slice(off..n)).await;
                buf = slice.into_inner();
                self.ctl.client_write_since_ms.set(0);
                match res {
                    Ok(0) | Err(_) => break 'relay,
                    Ok(k) => off += k,
                }
            }
            self.down_busy.set(false);
        }
        self.ended(dir);
    }

    /// Where this session's events are counted (`from_cache`: a reply the server never saw).
    fn sinks(&self, from_cache: bool) -> Sinks<'_> {
        Sinks {
            stats: self.stats,
            counters: self.counters,
            server: self.server,
            shard: self.shard.id(),
            digests: self.digests,
            track: self.track,
            from_cache,
        }
    }

    /// One direction (or the TLS relay, naming the side that ended it) is over: wake the other,
    /// note which side ended first, and shut both sockets down.
    fn ended(&self, dir: Dir) {
        // The other pump may be parked waiting for replies that will not come now.
        self.wake_client_reader();
        if self.ctl.first_end.get().is_none() {
            self.ctl.first_end.set(Some(dir));
            // The backend went away by itself while a command was open: it may have died.
            let busy = self.state.borrow().observer.outstanding() > 0;
            if dir == Dir::ServerToClient && busy && !self.ctl.swept.get() {
                self.server_lost.set(true);
            }
        }
        self.ctl.shutdown();
    }

    fn observe(&self, data: &[u8], dir: Dir) {
        let now = rt::now_us();
        self.ctl.last_active_ms.set(rt::ms_of(now));
        let mut st = self.state.borrow_mut();
        if dir == Dir::ServerToClient {
            self.collect(&mut st, data);
        }
        let first_reply = self.feed(&mut st, data, dir, now, false);
        self.ctl.busy.set(st.observer.outstanding() > 0);
        if let Some((ok, bytes_out)) = first_reply {
            if st.capture.is_some() {
                self.finish_capture(&mut st, ok, bytes_out);
            }
        }
        drop(st);
        if dir == Dir::ServerToClient && !self.client_must_wait() {
            self.wake_client_reader();
        }
    }

    /// Feed relayed bytes (or, `from_cache`, a query and its cached reply) to the observer and
    /// count them; returns (ok, bytes_out) of the first reply that ended in them.
    fn feed(
        &self,
        st: &mut SessionState,
        data: &[u8],
        dir: Dir,
        now: u64,
        from_cache: bool,
    ) -> Option<(bool, u64)> {
        let SessionState {
            observer,
            acct,
            digests,
            ..
        } = st;
        let to = self.sinks(from_cache);
        if !from_cache {
            to.server.add_bytes(to.shard, data.len() as u64);
        }
        let mut first_reply = None;
        match dir {
            Dir::ClientToServer => {
                acct.bytes_in(data.len());
                observer.feed_client(data, now, &mut |e| on_event(e, acct, digests, &to));
            }
            Dir::ServerToClient => {
                acct.bytes_out(data.len());
                observer.feed_server(data, now, &mut |e| {
                    if let Event::Reply { ok, detail, .. } = &e {
                        first_reply.get_or_insert((*ok, detail.bytes_out));
                    }
                    on_event(e, acct, digests, &to)
                });
            }
        }
        first_reply
    }
}

/// The few greeting-time events worth keeping until the session exists.
enum OwnedEvent {
    LoginFailed,
    Other,
}

fn own_event(e: Event<'_>) -> OwnedEvent {
    match e {
        Event::Authenticated { ok: false } => OwnedEvent::LoginFailed,
        _ => OwnedEvent::Other,
    }
}

/// Where a session's events are counted.
struct Sinks<'a> {
    stats: &'a MysqlShardStats,
    counters: &'a FrontCounters,
    server: &'a ServerShared,
    shard: usize,
    /// The digest table, when the frontend counts digests.
    digests: Option<&'a DigestShard>,
    /// Statements are followed (digests, or the query cache's session state).
    track: bool,
    /// The events replay a reply from the query cache: the server did not see this command.
    from_cache: bool,
}

fn on_event(e: Event<'_>, acct: &mut ConnAccount, dig: &mut DigestTrack, to: &Sinks<'_>) {
    if to.track {
        dig.on_event(&e, acct.user(), to.digests);
    }
    let Sinks {
        stats,
        counters,
        server,
        shard,
        from_cache,
        ..
    } = *to;
    match e {
        Event::Login { user, .. } => acct.login(user),
        Event::Authenticated { ok: true } => acct.authenticated(),
        Event::Authenticated { ok: false } => {
            acct.login_failed();
            counters.login_failed.add(1);
        }
        Event::Statement { .. } | Event::Ok { .. } => {}
        Event::Command { cmd, .. } => {
            if !from_cache {
                server.begin(shard);
            }
            acct.command(cmd);
        }
        Event::Reply {
            cmd, ok, elapsed, ..
        } => {
            if !from_cache {
                server.end(shard);
            }
            if cmd == com::CHANGE_USER && !ok {
                counters.login_failed.add(1);
            }
            acct.reply(stats, ok, elapsed);
        }
        Event::UserChanged { user, .. } => acct.change_user(stats, user),
        Event::UnsolicitedError { .. } => acct.error(),
        Event::Unparsed { reason, abandoned } => {
            for _ in 0..abandoned {
                server.end(shard);
            }
            tracing::debug!(reason, "mysql session no longer followed");
            acct.unparsed();
        }
    }
}
