//! The data paths above the shards: [`http`] proxies HTTP/1.1 exchanges, [`mysql`] relays MySQL
//! sessions, and [`conns`] holds a shard's connections to the servers of each pool. A
//! [`ShardCtx`] is what both protocols see of the shard they run on; its [`ShardView`] is the
//! shard's own build of the running config generation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use crate::balance::Balancer;
use crate::config::MysqlFrontend;
use crate::rt::Drain;
use crate::shard::Shard;
use crate::shared::{Generation, Shared};
use crate::stats::ShardStats;

/// A client connection's (source, destination) addresses: its own, or those its PROXY header
/// named.
pub type ClientAddrs = (SocketAddr, SocketAddr);

pub mod conns;
pub mod http;
pub mod mysql;
pub mod preamble;

/// What a listening address serves in a view: an HTTP or a MySQL frontend, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    Http(usize),
    Mysql(usize),
}

/// A MySQL frontend as a shard uses it: its settings, this shard's counters, and every
/// shard's (the frontend-wide connection count is their sum).
pub struct MysqlFront {
    pub conf: MysqlFrontend,
    /// A terminating frontend's idle server connections on this shard.
    pub pool: Option<Rc<mysql::ShardPool>>,
    pub counters: Arc<mysql::FrontCounters>,
    pub all: Vec<Arc<mysql::FrontCounters>>,
}

/// One shard's build of one config generation. A request (an HTTP exchange, a MySQL session)
/// takes the view that is current when it starts and keeps it to its end, so it never sees
/// pool indexes of two generations; the next one starts on the newer view.
pub struct ShardView {
    pub gen: Arc<Generation>,
    /// Per pool: shard-local balancing state (round-robin positions).
    pub balancers: RefCell<Vec<Balancer>>,
    /// Per pool: this shard's connections to its servers.
    pub conns: Vec<Rc<conns::ConnCache>>,
    pub http: Vec<Rc<http::HttpFront>>,
    pub mysql: Vec<MysqlFront>,
    by_addr: HashMap<SocketAddr, Front>,
}

impl ShardView {
    fn build(shard: &Shard, gen: Arc<Generation>, prev: Option<&ShardView>) -> ShardView {
        let config = &gen.config;
        let conns = config
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let old = prev.and_then(|v| v.conns.iter().find(|c| c.conf.name == p.name));
                Rc::new(conns::ConnCache::next(
                    p,
                    gen.pools[i].clone(),
                    shard.id,
                    old.map(|c| &**c),
                ))
            })
            .collect();
        let mut by_addr = HashMap::new();
        for (i, f) in config.http.iter().enumerate() {
            by_addr.extend(f.listen.iter().map(|&a| (a, Front::Http(i))));
        }
        for (i, f) in config.mysql.iter().enumerate() {
            by_addr.extend(f.listen.iter().map(|&a| (a, Front::Mysql(i))));
        }
        let shared = &shard.shared;
        ShardView {
            balancers: RefCell::new(
                gen.pools
                    .iter()
                    .map(|p| Balancer::new(p, shard.id))
                    .collect(),
            ),
            conns,
            http: config
                .http
                .iter()
                .map(|f| {
                    let metrics = shard.stats().front_metrics(&f.name);
                    Rc::new(http::HttpFront::new(f.clone(), metrics))
                })
                .collect(),
            mysql: config
                .mysql
                .iter()
                .map(|f| MysqlFront {
                    pool: f.pooled.as_ref().map(|pc| {
                        let prev = prev
                            .and_then(|v| v.mysql.iter().find(|m| m.conf.name == f.name))
                            .and_then(|m| m.pool.clone())
                            .filter(|p| Arc::ptr_eq(&p.conf, pc));
                        prev.unwrap_or_else(|| {
                            Rc::new(mysql::ShardPool::new(
                                pc.clone(),
                                mysql::user_gauges(shared, &f.name, pc),
                                shard.id,
                                shared.shards,
                            ))
                        })
                    }),
                    counters: shared.mysql_stats[shard.id].front(&f.name),
                    all: shared
                        .mysql_stats
                        .iter()
                        .map(|s| s.front(&f.name))
                        .collect(),
                    conf: f.clone(),
                })
                .collect(),
            by_addr,
            gen,
        }
    }

    /// What the listener on `addr` serves now.
    pub fn front_at(&self, addr: SocketAddr) -> Option<Front> {
        self.by_addr.get(&addr).copied()
    }

    /// The HTTP frontend called `name`, if this view has it.
    pub fn http_front(&self, name: &str) -> Option<&Rc<http::HttpFront>> {
        self.http.iter().find(|f| f.conf.name == name)
    }
}

/// One shard as the protocols see it: its core, the process-wide state, and its view of the
/// running config.
/// Run with each new view a shard builds.
pub type RefreshHook = Box<dyn Fn(&ShardView)>;

pub struct ShardCtx {
    pub shard: Rc<Shard>,
    pub shared: Arc<Shared>,
    view: RefCell<Rc<ShardView>>,
    /// Called with each new view (the protocols drop what the config no longer has).
    on_refresh: RefCell<Vec<RefreshHook>>,
}

impl ShardCtx {
    pub fn new(shard: &Rc<Shard>, shared: Arc<Shared>) -> Rc<ShardCtx> {
        Rc::new(ShardCtx {
            view: RefCell::new(Rc::new(ShardView::build(shard, shared.current(), None))),
            shard: shard.clone(),
            shared,
            on_refresh: RefCell::new(Vec::new()),
        })
    }

    /// The view of the running generation (as of this shard's last tick).
    pub fn view(&self) -> Rc<ShardView> {
        self.view.borrow().clone()
    }

    /// Is `v` the current view? (One pointer compare, no clone.)
    pub fn is_current(&self, v: &Rc<ShardView>) -> bool {
        Rc::ptr_eq(&self.view.borrow(), v)
    }

    /// Rebuild the view from the running generation, keeping what did not change.
    pub fn refresh(&self) {
        let gen = self.shared.current();
        let (next, lost_front) = {
            let prev = self.view.borrow();
            if prev.gen.number == gen.number {
                return;
            }
            let next = ShardView::build(&self.shard, gen, Some(&prev));
            let lost = prev
                .http
                .iter()
                .any(|f| next.http_front(&f.conf.name).is_none());
            (next, lost)
        };
        let next = Rc::new(next);
        *self.view.borrow_mut() = next.clone();
        for hook in self.on_refresh.borrow().iter() {
            hook(&next);
        }
        if lost_front {
            // Idle connections of a removed frontend close now, not at their keep-alive timeout.
            self.shard.drain.nudge();
        }
    }

    pub fn id(&self) -> usize {
        self.shard.id
    }

    /// Run `hook` with every view this shard builds from now on.
    pub fn on_refresh(&self, hook: RefreshHook) {
        self.on_refresh.borrow_mut().push(hook);
    }

    /// The shard's drain (and shed) signal.
    pub fn drain(&self) -> &Drain {
        &self.shard.drain
    }

    pub fn stats(&self) -> &ShardStats {
        self.shard.stats()
    }
}
