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
    pub shard: Rc<Shard>,
    pub shared: Arc<Shared>,
    pub balancers: RefCell<Vec<Balancer>>,
}

impl ShardCtx {
    pub fn new(shard: &Rc<Shard>, shared: Arc<Shared>) -> Rc<ShardCtx> {
        Rc::new(ShardCtx {
            balancers: RefCell::new(
                shared
                    .pools
                    .iter()
                    .map(|p| Balancer::new(p, shard.id))
                    .collect(),
            ),
            shard: shard.clone(),
            shared,
        })
    }

    pub fn id(&self) -> usize {
        self.shard.id
    }

    /// The shard's drain (and shed) signal.
    pub fn drain(&self) -> &Drain {
        &self.shard.drain
    }

    pub fn stats(&self) -> &ShardStats {
        self.shard.stats()
    }
}
