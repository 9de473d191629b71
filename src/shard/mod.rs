//! Shards: one thread per core, pinned, each running its own monoio runtime with its own
//! SO_REUSEPORT listener for every frontend address and its own connections. A shard knows no
//! protocol: it accepts, counts connections, and hands each accepted socket to the handler the
//! daemon registered for that listener ([`Service`]); the protocols build their per-shard state
//! on the shard's thread when it starts.
//!
//! Config changes: on each tick a shard compares the running generation's number with the one
//! it applied; when it changed it has the protocols rebuild their view ([`ShardService::refresh`]),
//! stops accepting on addresses the new config no longer has (their connections drain), and
//! starts accepting on the sockets the control plane bound for new ones (its inbox).
//!
//! Stopping: the control plane sets [`Lifecycle::stopping`]; each shard notices it on its 100 ms
//! tick, cancels its accepts, fires its [`Drain`] (idle keep-alive connections close at once,
//! busy ones finish their exchange and then close), and returns when its last connection is gone
//! or the stop deadline passes.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balance::Padded;
use crate::config::Daemon;
use crate::rt::{self, Drain, TcpStream};
use crate::shared::{ShardMsg, Shared};
use crate::stats::ShardStats;

/// io_uring submission queue entries per shard: enough for thousands of connections (monoio
/// submits when the queue fills) while keeping ring memory well inside an 8 MiB RLIMIT_MEMLOCK.
const RING_ENTRIES: u32 = 2048;
/// Listen backlog per shard listener.
const BACKLOG: i32 = 4096;

/// The process-wide switches every shard and the control plane see.
pub struct Lifecycle {
    pub stopping: AtomicBool,
    /// Client connections open in the whole process (for `daemon.max_connections`).
    pub connections: AtomicUsize,
    /// Shards still running.
    pub running: AtomicUsize,
    /// The client connection cap in force (`daemon.max_connections` within the descriptor
    /// budget); a reload may change it.
    pub max_connections: AtomicUsize,
    /// Stopping for a binary upgrade: idle connections go to the new process.
    pub handover: AtomicBool,
    /// The command socket is the new process's now.
    pub control_closed: AtomicBool,
    /// Handing over: when idle MySQL sessions (which stay) are closed between commands.
    pub mysql_close_at_ms: AtomicU64,
}

impl Lifecycle {
    pub fn new(shards: usize, max_connections: usize) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            stopping: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            running: AtomicUsize::new(shards),
            max_connections: AtomicUsize::new(max_connections),
            handover: AtomicBool::new(false),
            control_closed: AtomicBool::new(false),
            mysql_close_at_ms: AtomicU64::new(0),
        })
    }
}

/// One shard's own protocol-free state. Lives in an `Rc`: only its thread ever touches it.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub life: Arc<Lifecycle>,
    pub stats: Arc<Padded<ShardStats>>,
    pub drain: Drain,
    /// Pipes for splicing long bodies and tunnels.
    pub pipes: rt::PipePool,
    /// What the protocols give back when the shard starts shedding load near the memory
    /// ceiling (idle upstream connections, spare buffers); idle client connections go through
    /// [`Drain::set_shed`].
    shed_hooks: std::cell::RefCell<Vec<Box<dyn Fn()>>>,
}

impl Shard {
    /// Run `hook` each time the shard starts shedding load.
    pub fn on_shed(&self, hook: Box<dyn Fn()>) {
        self.shed_hooks.borrow_mut().push(hook);
    }

    fn set_shed(&self, on: bool) {
        self.drain.set_shed(on);
        if on {
            for hook in self.shed_hooks.borrow().iter() {
                hook();
            }
        }
    }

    pub fn stats(&self) -> &ShardStats {
        &self.stats.0
    }
}

/// A connection's whole life, as a future the shard runs on its own task (a panic in it ends
/// that connection only).
pub type ConnFuture = Pin<Box<dyn Future<Output = ()>>>;

/// The protocols above the shards: called once on each shard's thread as it starts, returns
/// that shard's protocol state.
pub trait Service: Send + Sync + 'static {
    fn start(&self, shard: &Rc<Shard>) -> Rc<dyn ShardService>;
}

/// One shard's protocols.
pub trait ShardService {
    /// Serve a connection accepted on `listen`, by what the running config has there;
    /// `None` when nothing does any more (the connection is closed).
    fn serve(
        &self,
        listen: SocketAddr,
        stream: TcpStream,
        peer: SocketAddr,
        guard: ConnGuard,
    ) -> Option<ConnFuture>;
    /// Rebuild the view from the running generation.
    fn refresh(&self);
    /// Serve a connection the process this one replaced handed over, as frontend `frontend`.
    fn adopt(
        &self,
        frontend: &str,
        stream: TcpStream,
        peer: SocketAddr,
        guard: ConnGuard,
    ) -> Option<ConnFuture>;
    /// Add carried-over counter totals (shard 0).
    fn seed(&self, totals: &crate::upgrade::totals::Totals);
}

/// A listener to bind on every shard: its address and the frontend name for messages.
pub struct Listen {
    pub addr: SocketAddr,
    pub name: String,
}

/// Bind every address once per shard (SO_REUSEPORT), so that an address in use is reported
/// with a clear message before anything changes (at start, or by a reload).
pub fn bind_all(
    shards: usize,
    listen: &[Listen],
) -> Result<Vec<Vec<std::net::TcpListener>>, String> {
    let mut per_shard = Vec::new();
    for _ in 0..shards {
        let mut ls = Vec::new();
        for l in listen {
            let sock = rt::bind_reuseport(l.addr, BACKLOG)
                .map_err(|e| format!("frontend {}: cannot listen on {}: {e}", l.name, l.addr))?;
            ls.push(sock);
        }
        per_shard.push(ls);
    }
    Ok(per_shard)
}

/// Start one thread per shard. Each returns when its shard has drained.
pub fn spawn(
    daemon: &Daemon,
    shared: &Arc<Shared>,
    listeners: Vec<Vec<std::net::TcpListener>>,
    service: Arc<dyn Service>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let (life, stats) = (&shared.life, &shared.stats);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::new();
    for (id, ls) in listeners.into_iter().enumerate() {
        let core = if daemon.pin_cores && !cores.is_empty() {
            Some(cores[id % cores.len()])
        } else {
            None
        };
        let (life, stats, service) = (life.clone(), stats[id].clone(), service.clone());
        let shared = shared.clone();
        let want = daemon.io_driver;
        let h = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let l2 = life.clone();
                let res = rt::run_shard(want, RING_ENTRIES, move |driver| {
                    let shard = Rc::new(Shard {
                        id,
                        shared,
                        life: l2,
                        stats,
                        drain: Drain::default(),
                        pipes: rt::PipePool::default(),
                        shed_hooks: Default::default(),
                    });
                    shard_main(shard, ls, service, driver)
                });
                if let Err(e) = res {
                    tracing::error!(event = "shard_start_failed", shard = id, error = %e, "shard runtime failed to start");
                    life.stopping.store(true, Ordering::SeqCst);
                }
                life.running.fetch_sub(1, Ordering::SeqCst);
            })?;
        handles.push(h);
    }
    Ok(handles)
}

async fn shard_main(
    shard: Rc<Shard>,
    listeners: Vec<std::net::TcpListener>,
    service: Arc<dyn Service>,
    driver: rt::Driver,
) {
    let id = shard.id;
    let svc = service.start(&shard);
    let mut applied = shard.shared.generation();
    shard.shared.applied[id].0.store(applied, Ordering::Release);
    tracing::info!(event = "shard_started", shard = id, driver = ?driver, listeners = listeners.len(), "shard started");
    let mut accepting = Accepting::default();
    accepting.add(&shard, &svc, listeners);

    while !shard.life.stopping.load(Ordering::Relaxed) {
        rt::sleep(Duration::from_millis(20)).await;
        let shed = crate::mem::level() >= crate::mem::Level::ClosingIdle;
        if shed != shard.drain.shedding() {
            shard.set_shed(shed);
        }
        let msgs = std::mem::take(
            &mut *shard.shared.inbox[id]
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for msg in msgs {
            match msg {
                ShardMsg::Listen(ls) => accepting.add(&shard, &svc, ls),
                ShardMsg::Adopt(conns) => adopt(&shard, &svc, conns),
                ShardMsg::Seed(t) => svc.seed(&t),
            }
        }
        accepting.sweep(&shard, &svc);
        let now = shard.shared.generation();
        if now != applied {
            svc.refresh();
            let wanted = shard.shared.current().listen_addrs();
            accepting.keep_only(id, &wanted);
            applied = now;
            shard.shared.applied[id].0.store(now, Ordering::Release);
        }
    }
    accepting.stop_all(!shard.life.handover.load(Ordering::SeqCst));
    // Messages that came too late (connections handed over, listeners bound): closed.
    drop(std::mem::take(
        &mut *shard.shared.inbox[id]
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    ));
    if shard.life.handover.load(Ordering::SeqCst) {
        shard.drain.fire_handover();
    } else {
        shard.drain.fire();
    }
    let deadline = Instant::now() + shard.shared.current().config.daemon.stop_timeout;
    while shard.stats().active.get() > 0 && Instant::now() < deadline {
        rt::sleep(Duration::from_millis(20)).await;
    }
    let left = shard.stats().active.get();
    if left > 0 {
        tracing::warn!(
            event = "shard_stop_deadline",
            shard = id,
            connections = left,
            "stop deadline passed with connections still open"
        );
    }
    tracing::info!(event = "shard_stopped", shard = id, "shard stopped");
}

/// A shard's accept loops, by listening address (one socket per address per shard; a
/// reload may add or remove addresses).
#[derive(Default)]
struct Accepting {
    loops: HashMap<SocketAddr, Vec<(rt::AcceptCanceller, RawFd)>>,
}

impl Accepting {
    fn add(
        &mut self,
        shard: &Rc<Shard>,
        svc: &Rc<dyn ShardService>,
        ls: Vec<std::net::TcpListener>,
    ) {
        for std_l in ls {
            let addr = match std_l.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(event = "listener_dropped", shard = shard.id, error = %e, "listener without an address; dropped");
                    continue;
                }
            };
            let listener = match rt::TcpListener::from_std(std_l) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(event = "listener_register_failed", shard = shard.id, %addr, error = %e, "cannot register listener");
                    continue;
                }
            };
            let canceller = rt::AcceptCanceller::new();
            let fd = listener.as_raw_fd();
            rt::spawn(accept_loop(
                shard.clone(),
                listener,
                addr,
                svc.clone(),
                canceller.handle(),
            ));
            self.loops.entry(addr).or_default().push((canceller, fd));
        }
    }

    /// Stop accepting on every address not in `wanted` (its listening socket closes when
    /// its loop ends; connections already accepted go on).
    fn keep_only(&mut self, shard: usize, wanted: &[SocketAddr]) {
        self.loops.retain(|addr, cs| {
            let keep = wanted.contains(addr);
            if !keep {
                tracing::info!(event = "listen_removed", shard, %addr, "no longer listening (removed from the config)");
                for (c, _) in cs.drain(..) {
                    let _ = c.cancel();
                }
            }
            keep
        });
    }

    /// Stop every accept loop. On a real stop (not a binary upgrade, whose new process
    /// keeps these very sockets) each listening socket stops listening at once: with
    /// io_uring the kernel releases the ring's hold on it only some time after the process
    /// exits, and meanwhile it would still complete connections nobody will accept.
    fn stop_all(&mut self, unlisten: bool) {
        for (_, cs) in self.loops.drain() {
            for (c, fd) in cs {
                let _ = c.cancel();
                if unlisten {
                    // SAFETY: shutdown(2) of a listening socket we own: it stops listening.
                    unsafe {
                        libc::shutdown(fd, libc::SHUT_RD);
                    }
                }
            }
        }
    }

    /// Take connections left waiting in a backlog with no accept woken for them. A listening
    /// socket shared with another process (the one this one replaced, or the one replacing
    /// it) can be left that way: io_uring wakes one accept per connection, and the one woken
    /// may be the other process's, cancelled just then. A non-blocking accept per listener
    /// per tick takes them (normally it finds nothing: one syscall each).
    fn sweep(&self, shard: &Rc<Shard>, svc: &Rc<dyn ShardService>) {
        for (addr, cs) in &self.loops {
            for (_, fd) in cs {
                for _ in 0..16 {
                    let open = &shard.life.connections;
                    let max = shard.life.max_connections.load(Ordering::Relaxed);
                    if open.fetch_add(1, Ordering::Relaxed) >= max || !crate::mem::admits() {
                        open.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    match rt::accept_now(*fd) {
                        Some((stream, peer)) => {
                            serve_accepted(shard, svc, *addr, stream, peer);
                        }
                        None => {
                            open.fetch_sub(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Serve connections handed over by the process this one replaced, as if just accepted (they
/// count as `adopted`, not `accepted`: the old process counted their accept).
fn adopt(shard: &Rc<Shard>, svc: &Rc<dyn ShardService>, conns: Vec<crate::upgrade::Adopted>) {
    for a in conns {
        let stream = match rt::TcpStream::from_std(a.stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(event = "adopt_failed", shard = shard.id, peer = %a.peer, error = %e, "cannot adopt a handed-over connection");
                continue;
            }
        };
        rt::prepare_accepted(&stream);
        let st = shard.stats();
        st.adopted.add(1);
        st.active.add(1);
        shard.life.connections.fetch_add(1, Ordering::Relaxed);
        let guard = ConnGuard {
            shard: shard.clone(),
        };
        let Some(conn) = svc.adopt(&a.frontend, stream, a.peer, guard) else {
            continue;
        };
        spawn_conn(shard, conn, a.peer);
    }
}

/// Count and serve a connection accepted on `addr` (its place in `life.connections` is already
/// taken).
fn serve_accepted(
    shard: &Rc<Shard>,
    svc: &Rc<dyn ShardService>,
    addr: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
) {
    rt::prepare_accepted(&stream);
    let st = shard.stats();
    st.accepted.add(1);
    st.handled.add(1);
    st.active.add(1);
    let guard = ConnGuard {
        shard: shard.clone(),
    };
    if let Some(conn) = svc.serve(addr, stream, peer, guard) {
        spawn_conn(shard, conn, peer);
    }
}

/// Run a connection on its own task; a panic ends that connection only.
fn spawn_conn(shard: &Rc<Shard>, conn: ConnFuture, peer: SocketAddr) {
    let shard = shard.clone();
    rt::spawn(async move {
        if let Err(why) = rt::catch_panic(conn).await {
            shard.stats().panics.add(1);
            tracing::error!(event = "connection_panicked", shard = shard.id, %peer, panic = %why, "connection task panicked; connection closed, shard goes on");
        }
    });
}

/// Releases a connection's place in the counters however its task ends.
pub struct ConnGuard {
    shard: Rc<Shard>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shard.stats().active.sub(1);
        self.shard.life.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: rt::TcpListener,
    addr: SocketAddr,
    svc: Rc<dyn ShardService>,
    cancel: rt::CancelHandle,
) {
    static EXHAUSTED_LOG: rt::LogLimit = rt::LogLimit::new();
    loop {
        if shard.drain.fired() {
            break;
        }
        // Reserve the connection's place before accepting: every shard waits in accept at
        // once, so counting only after the accept would let each of them pass the cap.
        let open = &shard.life.connections;
        let max = shard.life.max_connections.load(Ordering::Relaxed);
        if open.fetch_add(1, Ordering::Relaxed) >= max || !crate::mem::admits() {
            open.fetch_sub(1, Ordering::Relaxed);
            // At the limit (connections, or near the memory ceiling): leave new clients in the
            // kernel backlog until a slot frees.
            rt::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let accepted = rt::accept(&listener, cancel.clone()).await;
        if !matches!(accepted, Ok(Some(_))) {
            open.fetch_sub(1, Ordering::Relaxed);
        }
        match accepted {
            // Served even when the shard began draining meanwhile: the connection itself
            // closes (a stop) or moves to the new process (an upgrade) before reading, rather
            // than being reset here.
            Ok(Some((stream, peer))) => serve_accepted(&shard, &svc, addr, stream, peer),
            Ok(None) => break,
            Err(e) => {
                if rt::is_local_exhaustion(&e) {
                    if let Some(suppressed) = EXHAUSTED_LOG.allow() {
                        tracing::warn!(event = "accept_backoff", shard = shard.id, error = %e, suppressed, "accept failed: out of file descriptors or memory; backing off");
                    }
                    rt::sleep(Duration::from_millis(100)).await;
                }
                // ECONNABORTED and friends: the client left before we accepted; go on.
            }
        }
    }
}
