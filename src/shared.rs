//! What every shard and the control plane read, built once at start: the validated config,
//! each pool's health and busyness (atomics), every shard's counters (summed when read), and
//! the process lifecycle switches. Nothing here is locked on the request path.

use std::sync::Arc;

use crate::balance::{Padded, PoolShared};
use crate::config::Config;
use crate::proxy::mysql::MysqlShardStats;
use crate::shard::Lifecycle;
use crate::stats::ShardStats;

pub struct Shared {
    pub config: Config,
    pub pools: Vec<Arc<PoolShared>>,
    pub stats: Vec<Arc<Padded<ShardStats>>>,
    pub mysql_stats: Vec<Arc<MysqlShardStats>>,
    pub http_names: Vec<String>,
    pub life: Arc<Lifecycle>,
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
            life: Lifecycle::new(shards),
            config,
        })
    }
}
