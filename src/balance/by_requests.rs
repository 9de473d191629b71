//! By requests (mod_proxy_balancer's `byrequests`): each server gets its weighted share of the
//! requests counted over every shard. The pick is the usable server with the lowest
//! `requests / weight`, where `requests` is the sum of the per-shard counters; equal scores
//! rotate per shard. [`by_traffic`](super::by_traffic) is the same rule over bytes moved.
//!
//! A server that was out (down, disabled) and comes back would have a low count and take every
//! request until it caught up. So each shard keeps, per server, a baseline taken when the
//! server becomes usable again: the count it would have had at the lowest score of the others.
//! Shards see the same global counters, so their baselines agree to within a few requests.

use super::{Pick, PoolShared, Select, ServerShared};

/// What a share is counted in.
#[derive(Debug, Clone, Copy)]
pub enum Metric {
    Requests,
    Bytes,
}

impl Metric {
    fn read(self, s: &ServerShared) -> u64 {
        match self {
            Metric::Requests => s.requests(),
            Metric::Bytes => s.bytes(),
        }
    }
}

/// Lowest `count / weight` first, over the counters of every shard.
#[derive(Debug)]
pub struct WeightedShare {
    metric: Metric,
    rotate: usize,
    /// Per server: added to its count (see the module doc).
    adjust: Vec<i64>,
    /// Per server: usable at the last pick.
    was_usable: Vec<bool>,
    /// Reused per pick: (score, server).
    scores: Vec<(u128, usize)>,
}

/// `balance = "by_requests"`.
pub type ByRequests = WeightedShare;

/// Scores compare `count / weight` without division losing small differences.
fn score(count: u64, weight: u32) -> u128 {
    ((count as u128) << 32) / weight.max(1) as u128
}

impl WeightedShare {
    pub fn new(metric: Metric, servers: usize, shard: usize) -> Self {
        WeightedShare {
            metric,
            rotate: shard,
            adjust: vec![0; servers],
            was_usable: vec![true; servers],
            scores: Vec::with_capacity(servers),
        }
    }

    /// Server `i`'s count, adjusted.
    fn count(&self, pool: &PoolShared, i: usize) -> u64 {
        (self.metric.read(&pool.servers[i]) as i64)
            .wrapping_add(self.adjust[i])
            .max(0) as u64
    }

    /// Reset the baseline of servers that just became usable to the lowest score among the
    /// servers that stayed usable.
    fn rebase(&mut self, pool: &PoolShared, pick: &Pick, usable: &[usize]) {
        let n = pool.servers.len();
        if self.adjust.len() != n {
            self.adjust = vec![0; n];
            self.was_usable = vec![true; n];
        }
        let back = usable.iter().any(|&i| !self.was_usable[i]);
        if back {
            let low = usable
                .iter()
                .filter(|&&i| self.was_usable[i])
                .map(|&i| (self.count(pool, i), pool.weight(i, pick.now_ms).max(1)))
                .min_by_key(|&(c, w)| score(c, w));
            for &i in usable.iter().filter(|&&i| !self.was_usable[i]) {
                let count = self.metric.read(&pool.servers[i]);
                let target = low.map_or(0, |(c, w)| {
                    (c as u128 * pool.weight(i, pick.now_ms).max(1) as u128 / w as u128) as u64
                });
                self.adjust[i] = (target as i64).wrapping_sub(count as i64);
            }
        }
        self.was_usable.iter_mut().for_each(|u| *u = false);
        for &i in usable {
            self.was_usable[i] = true;
        }
    }
}

impl Select for WeightedShare {
    fn order(&mut self, pool: &PoolShared, pick: &Pick, usable: &[usize], out: &mut Vec<usize>) {
        self.rebase(pool, pick, usable);
        let n = usable.len();
        let start = self.rotate % n;
        self.rotate = self.rotate.wrapping_add(1);
        self.scores.clear();
        for &i in usable[start..].iter().chain(&usable[..start]) {
            let c = self.count(pool, i);
            self.scores.push((score(c, pool.weight(i, pick.now_ms)), i));
        }
        // Stable: equal scores keep the rotation.
        self.scores.sort_by_key(|&(s, _)| s);
        out.extend(self.scores.iter().map(|&(_, i)| i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_pool;
    use crate::config::Balance;

    /// A cheap deterministic generator for the model test.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn lowest_weighted_count_first_across_shards() {
        let pool = test_pool(&[1, 2, 1], Balance::ByRequests, 2);
        for _ in 0..4 {
            pool.servers[0].begin(0);
        }
        for _ in 0..4 {
            pool.servers[1].begin(1);
        }
        pool.servers[2].begin(1);
        let mut s = ByRequests::new(Metric::Requests, 3, 0);
        let mut out = Vec::new();
        s.order(&pool, &Pick::default(), &[0, 1, 2], &mut out);
        // Scores 4/1, 4/2, 1/1.
        assert_eq!(out, vec![2, 1, 0]);
    }

    #[test]
    fn ties_rotate() {
        let pool = test_pool(&[1, 1], Balance::ByRequests, 1);
        let mut s = ByRequests::new(Metric::Requests, 2, 0);
        let firsts: Vec<usize> = (0..4)
            .map(|_| {
                let mut out = Vec::new();
                s.order(&pool, &Pick::default(), &[0, 1], &mut out);
                out[0]
            })
            .collect();
        assert_eq!(firsts, vec![0, 1, 0, 1]);
    }

    #[test]
    fn a_server_back_from_down_does_not_take_everything() {
        let pool = test_pool(&[1, 1], Balance::ByRequests, 1);
        let mut s = ByRequests::new(Metric::Requests, 2, 0);
        let mut out = Vec::new();
        // Only server 0 for 1000 requests.
        for _ in 0..1000 {
            out.clear();
            s.order(&pool, &Pick::default(), &[0], &mut out);
            pool.servers[out[0]].begin(0);
        }
        let mut got = [0u32; 2];
        for _ in 0..100 {
            out.clear();
            s.order(&pool, &Pick::default(), &[0, 1], &mut out);
            pool.servers[out[0]].begin(0);
            got[out[0]] += 1;
        }
        assert!((45..=55).contains(&got[1]), "{got:?}");
    }

    /// Model: whatever the sequence of servers going up and down, each server's share of the
    /// picks made while it was usable tracks its weight, and an unusable server is never
    /// picked.
    #[test]
    fn model_shares_follow_weights_through_ups_and_downs() {
        let weights = [1u32, 2, 3, 1];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20 {
            let pool = test_pool(&weights, Balance::ByRequests, 2);
            let mut shards = [
                ByRequests::new(Metric::Requests, 4, 0),
                ByRequests::new(Metric::Requests, 4, 1),
            ];
            let mut up = [true; 4];
            let mut out = Vec::new();
            // Picks made in the current all-up phase, per server.
            let mut phase = [0u64; 4];
            for step in 0..4000 {
                if step % 400 == 399 {
                    // Flip one server; keep at least one up.
                    let i = (xorshift(&mut rng) % 4) as usize;
                    up[i] = !up[i];
                    if !up.iter().any(|&u| u) {
                        up[i] = true;
                    }
                    phase = [0; 4];
                }
                let usable: Vec<usize> = (0..4).filter(|&i| up[i]).collect();
                let shard = (xorshift(&mut rng) % 2) as usize;
                out.clear();
                shards[shard].order(&pool, &Pick::default(), &usable, &mut out);
                assert!(up[out[0]], "round {round}: picked a down server");
                assert_eq!(out.len(), usable.len());
                pool.servers[out[0]].begin(shard);
                phase[out[0]] += 1;
                if step % 400 == 398 {
                    let total: u64 = phase.iter().sum();
                    let wsum: u32 = usable.iter().map(|&i| weights[i]).sum();
                    for &i in &usable {
                        let want = total as f64 * weights[i] as f64 / wsum as f64;
                        let diff = (phase[i] as f64 - want).abs();
                        assert!(
                            diff <= 8.0,
                            "round {round} step {step}: {phase:?} up {up:?}"
                        );
                    }
                }
            }
        }
    }
}
