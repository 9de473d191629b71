//! Shards: one thread per core, pinned, each running its own monoio runtime with its own
//! SO_REUSEPORT listener for every frontend address, its own connection table (the tasks it
//! spawned), upstream pools and balancer state. What shards share is read-mostly and lock-free:
//! [`Shared`] (config, pool health/busyness atomics, per-shard counters summed on read).
//!
//! Stopping: the control plane sets [`Shared::stopping`]; each shard notices it on its 100 ms
//! tick, cancels its accepts, fires its [`Drain`] (idle keep-alive connections close at once,
//! busy ones finish their exchange and then close), and returns when its last connection is gone
//! or the stop deadline passes.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balance::{Balancer, Padded, PoolShared};
use crate::config::{Config, HttpFrontend};
use crate::proto::http::parse::Limits;
use crate::proxy::mysql::MysqlShardStats;
use crate::proxy::upstream::UpstreamPool;
use crate::rt::{self, Drain};
use crate::stats::ShardStats;

/// io_uring submission queue entries per shard: enough for thousands of connections (monoio
/// submits when the queue fills) while keeping ring memory well inside an 8 MiB RLIMIT_MEMLOCK.
pub const RING_ENTRIES: u32 = 2048;
/// Listen backlog per shard listener.
pub const BACKLOG: i32 = 4096;

/// State every shard reads, built once at start.
pub struct Shared {
    pub config: Config,
    pub pools: Vec<Arc<PoolShared>>,
    pub stats: Vec<Arc<Padded<ShardStats>>>,
    pub mysql_stats: Vec<Arc<MysqlShardStats>>,
    pub http_names: Vec<String>,
    pub stopping: AtomicBool,
    /// Client connections open in the whole process (for `daemon.max_connections`).
    pub connections: AtomicUsize,
    /// Shards still running.
    pub running: AtomicUsize,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        let shards = config.daemon.shards;
        Arc::new(Shared {
            pools: config
                .pools
                .iter()
                .map(|p| Arc::new(PoolShared::new(p, shards)))
                .collect(),
            stats: (0..shards)
                .map(|_| Arc::new(ShardStats::new(config.http.len())))
                .collect(),
            mysql_stats: (0..shards)
                .map(|_| Arc::new(MysqlShardStats::new(config.mysql.len())))
                .collect(),
            http_names: config.http.iter().map(|f| f.name.clone()).collect(),
            stopping: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            running: AtomicUsize::new(shards),
            config,
        })
    }
}

/// An HTTP frontend as a shard uses it.
pub struct HttpFront {
    pub index: usize,
    pub conf: HttpFrontend,
    pub limits: Limits,
}

/// One shard's own state. Lives in an `Rc`: only its thread ever touches it.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub stats: Arc<Padded<ShardStats>>,
    pub drain: Drain,
    pub http: Vec<Rc<HttpFront>>,
    pub upstreams: Vec<UpstreamPool>,
    pub balancers: RefCell<Vec<Balancer>>,
    /// Free body-relay buffers, so that large transfers do not allocate per request.
    pub relay_bufs: RefCell<Vec<Vec<u8>>>,
    /// Pipes for splicing long bodies.
    pub pipes: rt::PipePool,
}

impl Shard {
    pub fn stats(&self) -> &ShardStats {
        &self.stats.0
    }
}

/// Which frontend a listener belongs to.
#[derive(Clone, Copy, Debug)]
pub enum Front {
    Http(usize),
    Mysql(usize),
}

/// Bind every frontend address once per shard (SO_REUSEPORT), before any thread starts, so that
/// an address in use stops the daemon with a clear message.
pub fn bind_all(config: &Config) -> Result<Vec<Vec<(Front, std::net::TcpListener)>>, String> {
    let mut per_shard = Vec::new();
    for _ in 0..config.daemon.shards {
        let mut ls = Vec::new();
        let http = config
            .http
            .iter()
            .enumerate()
            .flat_map(|(i, f)| f.listen.iter().map(move |a| (Front::Http(i), *a, &f.name)));
        let mysql = config
            .mysql
            .iter()
            .enumerate()
            .flat_map(|(i, f)| f.listen.iter().map(move |a| (Front::Mysql(i), *a, &f.name)));
        for (front, addr, name) in http.chain(mysql) {
            let l = rt::bind_reuseport(addr, BACKLOG)
                .map_err(|e| format!("frontend {name}: cannot listen on {addr}: {e}"))?;
            ls.push((front, l));
        }
        per_shard.push(ls);
    }
    Ok(per_shard)
}

/// Start one thread per shard. Each returns when its shard has drained.
pub fn spawn(
    shared: Arc<Shared>,
    listeners: Vec<Vec<(Front, std::net::TcpListener)>>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::new();
    for (id, ls) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let core = if shared.config.daemon.pin_cores && !cores.is_empty() {
            Some(cores[id % cores.len()])
        } else {
            None
        };
        let h = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let want = shared.config.daemon.io_driver;
                let sh = shared.clone();
                let res = rt::run_shard(want, RING_ENTRIES, move |driver| {
                    shard_main(id, sh, ls, driver)
                });
                if let Err(e) = res {
                    tracing::error!(shard = id, error = %e, "shard runtime failed to start");
                    shared.stopping.store(true, Ordering::SeqCst);
                }
                shared.running.fetch_sub(1, Ordering::SeqCst);
            })?;
        handles.push(h);
    }
    Ok(handles)
}

async fn shard_main(
    id: usize,
    shared: Arc<Shared>,
    listeners: Vec<(Front, std::net::TcpListener)>,
    driver: rt::Driver,
) {
    let shard = Rc::new(Shard {
        id,
        stats: shared.stats[id].clone(),
        drain: Drain::default(),
        http: shared
            .config
            .http
            .iter()
            .enumerate()
            .map(|(index, f)| {
                Rc::new(HttpFront {
                    index,
                    limits: Limits {
                        max_request_line: f.max_request_line,
                        max_header_bytes: f.max_header_bytes,
                        max_headers: f.max_headers,
                        max_body: f.max_body,
                    },
                    conf: f.clone(),
                })
            })
            .collect(),
        upstreams: shared
            .config
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| UpstreamPool::new(p, shared.pools[i].clone()))
            .collect(),
        balancers: RefCell::new(shared.pools.iter().map(|p| Balancer::new(p, id)).collect()),
        relay_bufs: RefCell::new(Vec::new()),
        pipes: rt::PipePool::default(),
        shared: shared.clone(),
    });
    tracing::info!(shard = id, driver = ?driver, listeners = listeners.len(), "shard started");
    let mut cancellers = Vec::new();
    for (front, std_l) in listeners {
        let listener = match rt::TcpListener::from_std(std_l) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(shard = id, error = %e, "cannot register listener");
                shared.stopping.store(true, Ordering::SeqCst);
                continue;
            }
        };
        let canceller = rt::AcceptCanceller::new();
        rt::spawn(accept_loop(
            shard.clone(),
            listener,
            front,
            canceller.handle(),
        ));
        cancellers.push(canceller);
    }
    crate::proxy::mysql::start_shard(&shard);

    while !shared.stopping.load(Ordering::Relaxed) {
        rt::sleep(Duration::from_millis(100)).await;
    }
    for c in cancellers {
        let _ = c.cancel();
    }
    shard.drain.fire();
    let deadline = Instant::now() + shared.config.daemon.stop_timeout;
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
        self.shard
            .shared
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: rt::TcpListener,
    front: Front,
    cancel: monoio::io::CancelHandle,
) {
    let max = shard.shared.config.daemon.max_connections;
    let mut last_warn: Option<Instant> = None;
    loop {
        if shard.drain.fired() {
            break;
        }
        if shard.shared.connections.load(Ordering::Relaxed) >= max {
            // At the limit: leave new clients in the kernel backlog until a slot frees.
            rt::sleep(Duration::from_millis(5)).await;
            continue;
        }
        match rt::accept(&listener, cancel.clone()).await {
            Ok(Some((stream, peer))) => {
                if shard.drain.fired() {
                    break;
                }
                rt::prepare_accepted(&stream);
                shard.shared.connections.fetch_add(1, Ordering::Relaxed);
                let st = shard.stats();
                st.accepted.add(1);
                st.handled.add(1);
                st.active.add(1);
                let guard = ConnGuard {
                    shard: shard.clone(),
                };
                match front {
                    Front::Http(i) => {
                        let fe = shard.http[i].clone();
                        rt::spawn(crate::proxy::http::serve(
                            shard.clone(),
                            fe,
                            stream,
                            peer,
                            guard,
                        ));
                    }
                    Front::Mysql(i) => {
                        rt::spawn(crate::proxy::mysql::serve_client(
                            shard.clone(),
                            i,
                            stream,
                            peer,
                            guard,
                        ));
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                let fd_exhausted = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if fd_exhausted {
                    if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(shard = shard.id, error = %e, "accept failed: out of file descriptors or memory; backing off");
                        last_warn = Some(Instant::now());
                    }
                    rt::sleep(Duration::from_millis(100)).await;
                }
                // ECONNABORTED and friends: the client left before we accepted; go on.
            }
        }
    }
}
