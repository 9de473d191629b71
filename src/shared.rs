//! What every shard and the control plane read: the running [`Generation`] of the config (an
//! atomically swapped snapshot), every shard's counters (summed when read), each shard's inbox
//! for the rare messages the control plane sends it, and the process lifecycle switches.
//! Nothing here is locked on the request path: a shard looks at the generation number on its
//! 20 ms tick and rebuilds its own view when it changed; a request runs on the view it started
//! with.

use std::collections::HashMap;
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
    /// Per shard: the MySQL query digest table (`show digest mysql`).
    pub mysql_digests: Vec<Arc<crate::proxy::mysql::digest::DigestShard>>,
    /// Per shard: the MySQL query cache (`[[mysql.cache]]`, `show cache mysql`).
    pub mysql_qcache: Vec<Arc<crate::proxy::mysql::qcache::QcacheShard>>,
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
    /// The access log writer's channel and switches, the latest traffic period.
    pub logs: crate::log::Logs,
    /// HTTP cache purges for every shard's zones, and the zones' counters.
    pub caches: Arc<crate::cache::Registry>,
    /// Terminating MySQL frontends: client and server connections per (frontend, user),
    /// all shards (taken when a view is built; the atomics inside change per connection).
    pub mysql_user_gauges: Mutex<HashMap<(String, String), Arc<crate::proxy::mysql::UserGauge>>>,
}

impl Shared {
    pub fn new(config: Config, file: crate::config::file::FileConfig) -> Arc<Shared> {
        let shards = config.daemon.shards;
        Arc::new(Shared {
            stats: (0..shards).map(|_| Arc::new(ShardStats::new())).collect(),
            mysql_stats: (0..shards)
                .map(|_| Arc::new(MysqlShardStats::new()))
                .collect(),
            mysql_qcache: (0..shards)
                .map(|_| Arc::new(crate::proxy::mysql::qcache::QcacheShard::new()))
                .collect(),
            mysql_digests: (0..shards)
                .map(|_| Arc::new(crate::proxy::mysql::digest::DigestShard::new()))
                .collect(),
            applied: (0..shards).map(|_| Padded(AtomicU64::new(0))).collect(),
            inbox: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            life: Lifecycle::new(shards, config.daemon.max_connections),
            shards,
            started: SystemTime::now(),
            upgrade: Default::default(),
            mysql_user_gauges: Mutex::new(HashMap::new()),
            dns: Default::default(),
            changing: Mutex::new(()),
            runtime: Mutex::new(()),
            logs: Default::default(),
            caches: Default::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Admin;

    fn gen_of(servers: &str, extra: &str) -> (Config, crate::config::file::FileConfig) {
        let text = format!(
            "[[http]]\nname = \"w\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"p\"\n[pool.p]\n{extra}servers = [{servers}]\n"
        );
        let file = crate::config::parse(&text, "<t>").unwrap();
        (crate::config::from_file(file.clone(), "<t>").unwrap(), file)
    }

    #[test]
    fn a_new_generation_keeps_what_did_not_change_by_name() {
        let (c, f) = gen_of(
            "{ name = \"a\", addr = \"127.0.0.1:1001\" }, { name = \"b\", addr = \"127.0.0.1:1002\", weight = 2 }, { name = \"c\", addr = \"127.0.0.1:1003\" }",
            "",
        );
        let g1 = Generation::first(c, f);
        let p1 = g1.pools[0].clone();
        p1.servers[0].seed(0, 5, 50);
        p1.servers[1].seed(0, 7, 70);
        p1.servers[1].set_admin_by_operator(Admin::Maint);
        p1.servers[0].set_weight(9);
        // b moves, c is removed, d is added, a's file weight is unchanged, the order changes.
        let (c2, f2) = gen_of(
            "{ name = \"d\", addr = \"127.0.0.1:1004\" }, { name = \"b\", addr = \"127.0.0.1:2002\", weight = 2 }, { name = \"a\", addr = \"127.0.0.1:1001\" }",
            "",
        );
        let g2 = g1.next(c2, f2, "reload".into(), 1);
        assert_eq!(g2.number, 2);
        let p2 = &g2.pools[0];
        let a = &p2.servers[p2.server_index("a").unwrap()];
        assert!(
            Arc::ptr_eq(a, &p1.servers[0]),
            "a unchanged: the same record"
        );
        assert_eq!(
            a.weight(),
            9,
            "an operator's weight survives a reload that keeps the file's"
        );
        let b = &p2.servers[p2.server_index("b").unwrap()];
        assert!(!Arc::ptr_eq(b, &p1.servers[1]), "b moved: a new record");
        assert_eq!(b.addr, "127.0.0.1:2002".parse().unwrap());
        assert_eq!((b.requests(), b.bytes()), (7, 70), "b's totals carried");
        assert_eq!(b.admin(), Admin::Maint, "the operator's maint carried");
        let removed: Vec<&str> = g2.removed.iter().map(|(_, s)| s.name.as_str()).collect();
        assert_eq!(removed, ["c"]);
        assert_eq!(p2.servers[p2.server_index("d").unwrap()].requests(), 0);

        // The file's weight changed: it applies.
        let (c3, f3) = gen_of(
            "{ name = \"d\", addr = \"127.0.0.1:1004\" }, { name = \"b\", addr = \"127.0.0.1:2002\", weight = 2 }, { name = \"a\", addr = \"127.0.0.1:1001\", weight = 3 }",
            "",
        );
        let g3 = g2.next(c3, f3, "reload".into(), 1);
        let p3 = &g3.pools[0];
        assert_eq!(p3.servers[p3.server_index("a").unwrap()].weight(), 3);
        assert!(
            g3.removed.is_empty(),
            "removed servers are shown until the next change only"
        );
    }

    #[test]
    fn the_source_ip_table_follows_servers_by_name() {
        let sticky = "[pool.p.sticky]\nmode = \"source_ip\"\n";
        let text = |servers: &str| {
            format!(
                "[[http]]\nname = \"w\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"p\"\n[pool.p]\nservers = [{servers}]\n{sticky}"
            )
        };
        let load = |t: &str| {
            let f = crate::config::parse(t, "<t>").unwrap();
            (crate::config::from_file(f.clone(), "<t>").unwrap(), f)
        };
        let (c, f) = load(&text(
            "{ name = \"a\", addr = \"127.0.0.1:1001\" }, { name = \"b\", addr = \"127.0.0.1:1002\" }",
        ));
        let g1 = Generation::first(c, f);
        let t1 = g1.pools[0].sticky.as_ref().unwrap().table.as_ref().unwrap();
        let now = crate::balance::sticky_table::IpTable::now_s(crate::rt::now_ms());
        t1.set(42, 1, now); // client 42 -> b
                            // Same servers and settings: the same table.
        let (c, f) = load(&text(
            "{ name = \"a\", addr = \"127.0.0.1:1001\" }, { name = \"b\", addr = \"127.0.0.1:1002\" }",
        ));
        let g2 = g1.next(c, f, "reload".into(), 1);
        assert!(Arc::ptr_eq(
            g2.pools[0].sticky.as_ref().unwrap(),
            g1.pools[0].sticky.as_ref().unwrap()
        ));
        // b is now first: the entry follows b, not index 1.
        let (c, f) = load(&text(
            "{ name = \"b\", addr = \"127.0.0.1:1002\" }, { name = \"a\", addr = \"127.0.0.1:1001\" }",
        ));
        let g3 = g2.next(c, f, "reload".into(), 1);
        let t3 = g3.pools[0].sticky.as_ref().unwrap().table.as_ref().unwrap();
        assert_eq!(t3.get(42, now), Some(0));
    }
}
