//! What every shard and the control plane read: the running [`Generation`] of the config (an
//! atomically swapped snapshot), every shard's counters (summed when read), each shard's inbox
//! for the rare messages the control plane sends it, and the process lifecycle switches.
//! Nothing here is locked on the request path: a shard looks at the generation number on its
//! 20 ms tick and rebuilds its own view when it changed; a request runs on the view it started
//! with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::balance::{Padded, PoolShared, ServerShared};
use crate::config::Config;
use crate::proxy::mysql::MysqlShardStats;
use crate::shard::Lifecycle;
use crate::stats::ShardStats;

/// One version of the running configuration and the pool state built for it. A reload, a
/// runtime server change or a DNS answer makes the next one; pools and servers that did not
/// change are the same `Arc`s in both, so their health, busyness and counters go on.
pub struct Generation {
    /// 1 at start, +1 per change.
    pub number: u64,
    pub loaded_at: SystemTime,
    /// What made it: `start`, `reload`, `add server web/a`, `dns`, ...
    pub cause: String,
    pub config: Config,
    /// The file as read (and edited by runtime commands): what `show config` prints and what
    /// runtime changes edit before validating the result like a file.
    pub file: crate::config::file::FileConfig,
    pub pools: Vec<Arc<PoolShared>>,
    /// Servers the change that made this generation removed, by pool name: their counters
    /// stay readable (`show servers`) until the next change.
    pub removed: Vec<(String, Arc<ServerShared>)>,
}

impl Generation {
    pub fn first(config: Config, file: crate::config::file::FileConfig) -> Generation {
        let shards = config.daemon.shards;
        Generation {
            number: 1,
            loaded_at: SystemTime::now(),
            cause: "start".into(),
            pools: config
                .pools
                .iter()
                .map(|p| Arc::new(PoolShared::new(p, shards)))
                .collect(),
            removed: Vec::new(),
            config,
            file,
        }
    }

    /// The generation after `self` for `config`, keeping by name every pool and server that
    /// did not change (see [`PoolShared::next`]). `shards` is the running shard count (a
    /// changed `daemon.shards` takes effect only at the next start or upgrade).
    pub fn next(
        &self,
        config: Config,
        file: crate::config::file::FileConfig,
        cause: String,
        shards: usize,
    ) -> Generation {
        let mut removed = Vec::new();
        let pools = config
            .pools
            .iter()
            .map(|p| match self.pools.iter().find(|o| o.name == p.name) {
                Some(old) => {
                    let (pool, gone) = PoolShared::next(p, shards, old);
                    removed.extend(gone.into_iter().map(|s| (p.name.clone(), s)));
                    Arc::new(pool)
                }
                None => Arc::new(PoolShared::new(p, shards)),
            })
            .collect();
        for old in &self.pools {
            if !config.pools.iter().any(|p| p.name == old.name) {
                removed.extend(old.servers.iter().map(|s| (old.name.clone(), s.clone())));
            }
        }
        Generation {
            number: self.number + 1,
            loaded_at: SystemTime::now(),
            cause,
            config,
            file,
            pools,
            removed,
        }
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<PoolShared>> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Every address the config listens on.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        crate::daemon::listen_of(&self.config)
            .into_iter()
            .map(|l| l.addr)
            .collect()
    }
}

/// A message from the control plane to one shard, taken on its next tick.
pub enum ShardMsg {
    /// Listen on these sockets too (bound by the control plane, one per shard per address).
    Listen(Vec<std::net::TcpListener>),
    /// Serve these connections, handed over by the process this one replaced.
    Adopt(Vec<crate::upgrade::Adopted>),
    /// Add these totals to the shard's counters (shard 0; carried by an upgrade).
    Seed(crate::upgrade::totals::Totals),
}

pub struct Shared {
    gen: ArcSwap<Generation>,
    /// Per shard: the generation its view was last built from.
    pub applied: Box<[Padded<AtomicU64>]>,
    /// Per shard: messages waiting for its next tick.
    pub inbox: Box<[Mutex<Vec<ShardMsg>>]>,
    pub stats: Vec<Arc<Padded<ShardStats>>>,
    pub mysql_stats: Vec<Arc<MysqlShardStats>>,
    pub life: Arc<Lifecycle>,
    /// The running shard count (fixed for the life of the process).
    pub shards: usize,
    pub started: SystemTime,
    pub upgrade: crate::upgrade::State,
    /// The latest DNS answers for server names and SRV discovery, laid over every config
    /// that is applied.
    pub dns: Mutex<crate::dns::refresh::Overlay>,
    /// Serialises the publishing of generations.
    pub changing: Mutex<()>,
    /// Held across read-edit-apply by every change (reload, runtime server commands, DNS), so
    /// that each builds on the one before and none is lost.
    pub runtime: Mutex<()>,
}

impl Shared {
    pub fn new(config: Config, file: crate::config::file::FileConfig) -> Arc<Shared> {
        let shards = config.daemon.shards;
        Arc::new(Shared {
            stats: (0..shards).map(|_| Arc::new(ShardStats::new())).collect(),
            mysql_stats: (0..shards)
                .map(|_| Arc::new(MysqlShardStats::new()))
                .collect(),
            applied: (0..shards).map(|_| Padded(AtomicU64::new(0))).collect(),
            inbox: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            life: Lifecycle::new(shards, config.daemon.max_connections),
            shards,
            started: SystemTime::now(),
            upgrade: Default::default(),
            dns: Default::default(),
            changing: Mutex::new(()),
            runtime: Mutex::new(()),
            gen: ArcSwap::from_pointee(Generation::first(config, file)),
        })
    }

    /// The running generation.
    pub fn current(&self) -> Arc<Generation> {
        self.gen.load_full()
    }

    /// The running generation's number (one atomic load).
    pub fn generation(&self) -> u64 {
        self.gen.load().number
    }

    /// Make `g` the running generation; shards pick it up on their next tick.
    pub fn publish(&self, g: Generation) {
        self.gen.store(Arc::new(g));
    }

    /// Send `msg` to shard `id`.
    pub fn send(&self, id: usize, msg: ShardMsg) {
        if let Some(q) = self.inbox.get(id) {
            q.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
        }
    }

    /// Have all running shards built their view from generation `n` (or a later one)?
    pub fn all_applied(&self, n: u64) -> bool {
        self.applied
            .iter()
            .all(|a| a.0.load(Ordering::Acquire) >= n)
            || self.life.running.load(Ordering::SeqCst) == 0
    }
}
