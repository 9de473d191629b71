//! Background health of MySQL servers: at an interval, connect to each server of every pool a
//! MySQL frontend uses and read its first packet. A greeting, or an ERR such as "too many
//! connections" (the server is alive, just full), counts as up; a refused or timed-out connect
//! or no packet marks the server down for the pool's `down_time` on every shard, and the next
//! answer marks it up again. The checks run on shard 0 only, so a server sees one probe per
//! interval, not one per shard.
//!
//! A probe closes without authenticating, which MariaDB logs as an aborted connection and, on
//! servers that resolve host names, counts toward `max_connect_errors` (see docs/mysql.md).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::balance::ServerShared;
use crate::config::Pool;
use crate::rt;
use crate::shared::{Generation, Shared};

/// Check interval: half the pool's `down_time`, within these bounds, so that a server that is
/// back is seen again well before its down period would have ended by itself.
const MIN_INTERVAL: Duration = Duration::from_millis(500);
const MAX_INTERVAL: Duration = Duration::from_secs(5);

pub(super) fn interval(down_time: Duration) -> Duration {
    (down_time / 2).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Follow the running generation: one check loop per server of every pool used by a MySQL
/// frontend, unless the pool has a `[pool.NAME.health]` (the process-wide checker,
/// `crate::health`, serves it then). When the config changes the loops of the old generation
/// end and new ones start; a server that did not change keeps its record, so its state goes on.
pub(super) async fn supervise(shared: Arc<Shared>) {
    while !shared.life.stopping.load(Ordering::Relaxed) {
        let gen = shared.current();
        let mut pools: Vec<usize> = gen
            .config
            .mysql
            .iter()
            .map(|f| f.pool)
            .filter(|&p| gen.config.pools[p].health.is_none())
            .collect();
        pools.sort_unstable();
        pools.dedup();
        for pool in pools {
            for server in 0..gen.pools[pool].servers.len() {
                rt::spawn(check_loop(shared.clone(), gen.clone(), pool, server));
            }
        }
        while shared.generation() == gen.number && !shared.life.stopping.load(Ordering::Relaxed) {
            rt::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn check_loop(shared: Arc<Shared>, gen: Arc<Generation>, pool: usize, server: usize) {
    let conf = &gen.config.pools[pool];
    let ss = &gen.pools[pool].servers[server];
    let every = interval(conf.down_time);
    loop {
        rt::sleep(every).await;
        if shared.life.stopping.load(Ordering::Relaxed) || shared.generation() != gen.number {
            return;
        }
        if let Some(outcome) = check(conf, ss.addr).await {
            apply(conf, ss, outcome);
        }
    }
}

/// Connect and read the first packet; `None` when we could not even try (out of descriptors
/// or memory here), which says nothing about the server.
async fn check(conf: &Pool, addr: SocketAddr) -> Option<Result<(), String>> {
    let mut stream = match rt::connect(addr, conf.connect_timeout).await {
        Ok(s) => s,
        // Our own shortage says nothing about the server: leave its state as it is.
        Err(rt::ConnectError::Local(_)) => return None,
        Err(rt::ConnectError::Peer(e)) => return Some(Err(e.to_string())),
    };
    Some(
        super::read_greeting(&mut stream, conf.connect_timeout)
            .await
            .map(|_| ()),
    )
}

fn apply(conf: &Pool, ss: &ServerShared, outcome: Result<(), String>) {
    match outcome {
        Ok(()) => {
            if ss.mark_up() {
                tracing::info!(event = "mysql_probe_up", pool = %conf.name, server = %ss.name, "mysql server up: health check answered");
            }
        }
        Err(e) => {
            if ss.mark_down(rt::now_ms(), conf.down_time.as_millis() as u64) {
                tracing::warn!(event = "mysql_probe_down", pool = %conf.name, server = %ss.name, error = %e, "mysql server down: health check failed");
            }
        }
    }
}

/// A backend closed a connection while commands were outstanding: a crash or a KILL. Only a
/// failing connect tells them apart, so probe once and mark the server down if it refuses.
pub(super) async fn probe_after_loss(gen: Arc<Generation>, pool: usize, server: usize) {
    let conf = &gen.config.pools[pool];
    let ss = &gen.pools[pool].servers[server];
    if let Err(rt::ConnectError::Peer(e)) = rt::connect(ss.addr, conf.connect_timeout).await {
        apply(
            conf,
            ss,
            Err(format!("connection lost mid-command, then {e}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_follows_down_time_within_bounds() {
        assert_eq!(interval(Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(interval(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(interval(Duration::from_millis(100)), MIN_INTERVAL);
        assert_eq!(interval(Duration::from_secs(3600)), MAX_INTERVAL);
    }
}
