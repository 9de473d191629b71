//! Server selection. A pool's servers live in [`PoolShared`], built once and shared by every
//! shard through an `Arc`: health (`down_until`), admin state and busyness are atomics that a
//! shard reads on the request path without any lock. Busyness is kept as one counter per shard
//! per server, each on its own cache line, written only by its shard and summed on read; a sum
//! is therefore as fresh as the last store of each shard (nanoseconds on one machine), never
//! older than the request that changed it.
//!
//! Each algorithm lives in its own file behind [`Select`], which yields the usable servers in
//! preference order so the caller can walk past a server whose connect fails.

mod least_requests;
mod round_robin;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::config::{Balance, Pool};

pub use least_requests::LeastRequests;
pub use round_robin::SmoothWeighted;

/// A value alone on its cache line, so that shards writing neighbouring counters do not
/// invalidate each other's lines.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct Padded<T>(pub T);

/// One backend server as every shard sees it.
#[derive(Debug)]
pub struct ServerShared {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Milliseconds since the process clock's epoch until which the server is skipped; 0 = up.
    down_until: AtomicU64,
    /// Set by `disable server`, cleared by `enable server`.
    disabled: AtomicBool,
    /// Requests (HTTP) or commands (MySQL) in flight, one counter per shard.
    inflight: Box<[Padded<AtomicU32>]>,
}

impl ServerShared {
    pub fn new(name: String, addr: SocketAddr, weight: u32, shards: usize) -> Self {
        ServerShared {
            name,
            addr,
            weight: weight.max(1),
            down_until: AtomicU64::new(0),
            disabled: AtomicBool::new(false),
            inflight: (0..shards.max(1)).map(|_| Padded::default()).collect(),
        }
    }

    /// Usable now: not administratively disabled and not inside a down period.
    pub fn is_usable(&self, now_ms: u64) -> bool {
        !self.disabled.load(Ordering::Relaxed) && self.down_until.load(Ordering::Relaxed) <= now_ms
    }

    pub fn is_down(&self, now_ms: u64) -> bool {
        self.down_until.load(Ordering::Relaxed) > now_ms
    }

    /// Mark the server down until `now_ms + down_ms`. Returns true when it was up before, so
    /// the caller logs the transition once rather than once per failing request.
    pub fn mark_down(&self, now_ms: u64, down_ms: u64) -> bool {
        let until = now_ms + down_ms.max(1);
        let prev = self.down_until.swap(until, Ordering::Relaxed);
        prev <= now_ms
    }

    /// Clear a down mark (a health check or a successful connect saw it alive).
    pub fn mark_up(&self) -> bool {
        self.down_until.swap(0, Ordering::Relaxed) != 0
    }

    pub fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Ordering::Relaxed);
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// In-flight count summed over every shard.
    pub fn inflight(&self) -> u32 {
        self.inflight
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Count one more in flight on `shard`. Only that shard writes its slot, so a plain
    /// load + store is enough (no read-modify-write across cores).
    pub fn begin(&self, shard: usize) {
        let slot = &self.inflight[shard].0;
        slot.store(slot.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub fn end(&self, shard: usize) {
        let slot = &self.inflight[shard].0;
        slot.store(
            slot.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }

    /// Count one request in flight on `shard` until the returned guard is dropped, however the
    /// request ends.
    pub fn track(&self, shard: usize) -> InFlight<'_> {
        self.begin(shard);
        InFlight {
            server: self,
            shard,
        }
    }
}

/// One request counted in its server's in-flight total (see [`ServerShared::track`]). A borrow,
/// not an `Arc`: taking it writes only the shard's own counter.
pub struct InFlight<'a> {
    server: &'a ServerShared,
    shard: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.server.end(self.shard);
    }
}

/// A pool's servers, shared by all shards.
#[derive(Debug)]
pub struct PoolShared {
    pub name: String,
    pub balance: Balance,
    pub servers: Box<[ServerShared]>,
}

impl PoolShared {
    pub fn new(pool: &Pool, shards: usize) -> Self {
        PoolShared {
            name: pool.name.clone(),
            balance: pool.balance,
            servers: pool
                .servers
                .iter()
                .map(|s| ServerShared::new(s.name.clone(), s.addr, s.weight, shards))
                .collect(),
        }
    }

    pub fn server_index(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }
}

/// One balancing algorithm: given the pool and the indexes of the servers usable now, push
/// them onto `out` best first. `out` is cleared by the caller.
pub trait Select {
    fn order(&mut self, pool: &PoolShared, usable: &[usize], out: &mut Vec<usize>);
}

/// A shard's selector for one pool (shard-local state such as round-robin weights).
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(SmoothWeighted),
    LeastRequests(LeastRequests),
}

impl Balancer {
    pub fn new(pool: &PoolShared, shard: usize) -> Self {
        match pool.balance {
            Balance::RoundRobin => Balancer::RoundRobin(SmoothWeighted::new(pool.servers.len())),
            Balance::LeastRequests => Balancer::LeastRequests(LeastRequests::new(shard)),
        }
    }

    /// Fill `out` with the servers to try, best first; empty when every server is down or
    /// disabled. `scratch` is reused to avoid allocating per request.
    pub fn candidates(
        &mut self,
        pool: &PoolShared,
        now_ms: u64,
        scratch: &mut Vec<usize>,
        out: &mut Vec<usize>,
    ) {
        scratch.clear();
        out.clear();
        scratch.extend((0..pool.servers.len()).filter(|&i| pool.servers[i].is_usable(now_ms)));
        if scratch.is_empty() {
            return;
        }
        match self {
            Balancer::RoundRobin(s) => s.order(pool, scratch, out),
            Balancer::LeastRequests(s) => s.order(pool, scratch, out),
        }
    }
}

#[cfg(test)]
pub(crate) fn test_pool(weights: &[u32], balance: Balance, shards: usize) -> PoolShared {
    PoolShared {
        name: "p".into(),
        balance,
        servers: weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                ServerShared::new(
                    format!("s{i}"),
                    ([127, 0, 0, 1], 1000 + i as u16).into(),
                    w,
                    shards,
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_servers_are_skipped_until_their_time_passes() {
        let pool = test_pool(&[1, 1], Balance::RoundRobin, 1);
        assert!(pool.servers[0].mark_down(1000, 500));
        assert!(
            !pool.servers[0].mark_down(1100, 500),
            "second mark is not a transition"
        );
        let mut b = Balancer::new(&pool, 0);
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        b.candidates(&pool, 1200, &mut scratch, &mut out);
        assert_eq!(out, vec![1]);
        b.candidates(&pool, 1600, &mut scratch, &mut out);
        assert_eq!(out.len(), 2);
        pool.servers[1].set_disabled(true);
        pool.servers[0].mark_down(2000, 10);
        b.candidates(&pool, 2005, &mut scratch, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn inflight_sums_over_shards() {
        let pool = test_pool(&[1], Balance::LeastRequests, 3);
        let s = &pool.servers[0];
        s.begin(0);
        s.begin(2);
        s.begin(2);
        assert_eq!(s.inflight(), 3);
        s.end(2);
        s.end(1); // never below zero
        assert_eq!(s.inflight(), 2);
    }
}
