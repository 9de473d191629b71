//! The data paths above the shards: [`http`] proxies HTTP/1.1 exchanges, [`mysql`] relays MySQL
//! sessions, and [`conns`] holds a shard's connections to the servers of each pool. A
//! [`ShardCtx`] is what both protocols see of the shard they run on.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::balance::Balancer;
use crate::rt::Drain;
use crate::shard::Shard;
use crate::shared::Shared;
use crate::stats::ShardStats;

pub mod conns;
pub mod http;
pub mod mysql;

/// One shard as the protocols see it: its core, the process-wide state, and the balancer state
/// of every pool (per shard: round-robin positions are not shared).
pub struct ShardCtx {
    pub id: usize,
    pub shard: Rc<Shard>,
    pub shared: Arc<Shared>,
    pub drain: Drain,
    pub balancers: RefCell<Vec<Balancer>>,
}

impl ShardCtx {
    pub fn new(shard: &Rc<Shard>, shared: Arc<Shared>) -> Rc<ShardCtx> {
        Rc::new(ShardCtx {
            id: shard.id,
            balancers: RefCell::new(
                shared
                    .pools
                    .iter()
                    .map(|p| Balancer::new(p, shard.id))
                    .collect(),
            ),
            drain: shard.drain.clone(),
            shard: shard.clone(),
            shared,
        })
    }

    pub fn stats(&self) -> &ShardStats {
        self.shard.stats()
    }
}
