//! Shards: one thread per core, pinned, each running its own monoio runtime with its own
//! SO_REUSEPORT listener for every frontend address and its own connections. A shard knows no
//! protocol: it accepts, counts connections, and hands each accepted socket to the handler the
//! daemon registered for that listener ([`Service`]); the protocols build their per-shard state
//! on the shard's thread when it starts.
//!
//! Stopping: the control plane sets [`Lifecycle::stopping`]; each shard notices it on its 100 ms
//! tick, cancels its accepts, fires its [`Drain`] (idle keep-alive connections close at once,
//! busy ones finish their exchange and then close), and returns when its last connection is gone
//! or the stop deadline passes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balance::Padded;
use crate::config::Daemon;
use crate::rt::{self, Drain, TcpStream};
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
}

impl Lifecycle {
    pub fn new(shards: usize) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            stopping: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            running: AtomicUsize::new(shards),
        })
    }
}

/// One shard's own protocol-free state. Lives in an `Rc`: only its thread ever touches it.
pub struct Shard {
    pub id: usize,
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

/// What serves the connections one listener accepts: the connection's whole life, as a future
/// the shard runs on its own task (a panic in it ends that connection only).
pub type Handler =
    Rc<dyn Fn(TcpStream, SocketAddr, ConnGuard) -> Pin<Box<dyn Future<Output = ()>>>>;

/// The protocols above the shards: called once on each shard's thread as it starts, returns
/// the handler of every listener tag given to [`bind_all`].
pub trait Service: Send + Sync + 'static {
    fn start(&self, shard: &Rc<Shard>) -> Vec<Handler>;
}

/// A listener to bind on every shard: its tag (index of its handler), address, and the
/// frontend name for error messages.
pub struct Listen {
    pub tag: usize,
    pub addr: SocketAddr,
    pub name: String,
}

/// Bind every address once per shard (SO_REUSEPORT), before any thread starts, so that an
/// address in use stops the daemon with a clear message.
pub fn bind_all(
    shards: usize,
    listen: &[Listen],
) -> Result<Vec<Vec<(usize, std::net::TcpListener)>>, String> {
    let mut per_shard = Vec::new();
    for _ in 0..shards {
        let mut ls = Vec::new();
        for l in listen {
            let sock = rt::bind_reuseport(l.addr, BACKLOG)
                .map_err(|e| format!("frontend {}: cannot listen on {}: {e}", l.name, l.addr))?;
            ls.push((l.tag, sock));
        }
        per_shard.push(ls);
    }
    Ok(per_shard)
}

/// Start one thread per shard. Each returns when its shard has drained.
pub fn spawn(
    daemon: &Daemon,
    life: Arc<Lifecycle>,
    stats: &[Arc<Padded<ShardStats>>],
    listeners: Vec<Vec<(usize, std::net::TcpListener)>>,
    service: Arc<dyn Service>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::new();
    for (id, ls) in listeners.into_iter().enumerate() {
        let core = if daemon.pin_cores && !cores.is_empty() {
            Some(cores[id % cores.len()])
        } else {
            None
        };
        let (life, stats, service) = (life.clone(), stats[id].clone(), service.clone());
        let (want, max_conns, stop_timeout) = (
            daemon.io_driver,
            daemon.max_connections,
            daemon.stop_timeout,
        );
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
                        life: l2,
                        stats,
                        drain: Drain::default(),
                        pipes: rt::PipePool::default(),
                        shed_hooks: Default::default(),
                    });
                    shard_main(shard, ls, service, driver, max_conns, stop_timeout)
                });
                if let Err(e) = res {
                    tracing::error!(shard = id, error = %e, "shard runtime failed to start");
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
    listeners: Vec<(usize, std::net::TcpListener)>,
    service: Arc<dyn Service>,
    driver: rt::Driver,
    max_connections: usize,
    stop_timeout: Duration,
) {
    let id = shard.id;
    let handlers = service.start(&shard);
    tracing::info!(shard = id, driver = ?driver, listeners = listeners.len(), "shard started");
    let mut cancellers = Vec::new();
    for (tag, std_l) in listeners {
        let listener = match rt::TcpListener::from_std(std_l) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(shard = id, error = %e, "cannot register listener");
                shard.life.stopping.store(true, Ordering::SeqCst);
                continue;
            }
        };
        let canceller = rt::AcceptCanceller::new();
        rt::spawn(accept_loop(
            shard.clone(),
            listener,
            handlers[tag].clone(),
            canceller.handle(),
            max_connections,
        ));
        cancellers.push(canceller);
    }

    while !shard.life.stopping.load(Ordering::Relaxed) {
        rt::sleep(Duration::from_millis(20)).await;
        let shed = crate::mem::level() >= crate::mem::Level::ClosingIdle;
        if shed != shard.drain.shedding() {
            shard.set_shed(shed);
        }
    }
    for c in cancellers {
        let _ = c.cancel();
    }
    shard.drain.fire();
    let deadline = Instant::now() + stop_timeout;
    while shard.stats().active.get() > 0 && Instant::now() < deadline {
        rt::sleep(Duration::from_millis(20)).await;
    }
    let left = shard.stats().active.get();
    if left > 0 {
        tracing::warn!(
            shard = id,
            connections = left,
            "stop deadline passed with connections still open"
        );
    }
    tracing::info!(shard = id, "shard stopped");
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
    handler: Handler,
    cancel: rt::CancelHandle,
    max: usize,
) {
    static EXHAUSTED_LOG: rt::LogLimit = rt::LogLimit::new();
    loop {
        if shard.drain.fired() {
            break;
        }
        // Reserve the connection's place before accepting: every shard waits in accept at
        // once, so counting only after the accept would let each of them pass the cap.
        let open = &shard.life.connections;
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
            Ok(Some((stream, peer))) => {
                if shard.drain.fired() {
                    open.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                rt::prepare_accepted(&stream);
                let st = shard.stats();
                st.accepted.add(1);
                st.handled.add(1);
                st.active.add(1);
                let guard = ConnGuard {
                    shard: shard.clone(),
                };
                let conn = handler(stream, peer, guard);
                let shard = shard.clone();
                rt::spawn(async move {
                    if let Err(why) = rt::catch_panic(conn).await {
                        shard.stats().panics.add(1);
                        tracing::error!(shard = shard.id, %peer, panic = %why, "connection task panicked; connection closed, shard goes on");
                    }
                });
            }
            Ok(None) => break,
            Err(e) => {
                if rt::is_local_exhaustion(&e) {
                    if let Some(suppressed) = EXHAUSTED_LOG.allow() {
                        tracing::warn!(shard = shard.id, error = %e, suppressed, "accept failed: out of file descriptors or memory; backing off");
                    }
                    rt::sleep(Duration::from_millis(100)).await;
                }
                // ECONNABORTED and friends: the client left before we accepted; go on.
            }
        }
    }
}
