//! Least time (Envoy's and Linkerd's peak-EWMA, nginx Plus `least_time header`): the server with
//! the lowest `ewma × (inflight + 1) / weight`, where `ewma` is the peak-EWMA of the time from
//! request sent to response head (kept in [`ServerShared`](super::ServerShared), fed by every
//! shard) and `inflight` the requests in flight summed over shards. A slow server is avoided as
//! soon as one slow answer is seen (the peak is taken at once). The average moves only with
//! new samples, so a server that is never picked would never be seen to recover: one pick in
//! [`PROBE_EVERY`] per shard goes to the next server in turn instead of the best. Servers with
//! no sample yet come first, so each gets measured; equal scores rotate per shard.

use super::{Pick, PoolShared, Select};

/// One pick in this many (per shard) re-measures a server in turn.
pub const PROBE_EVERY: u32 = 100;

#[derive(Debug)]
pub struct LeastTime {
    rotate: usize,
    /// Picks until the next probe.
    probe_in: u32,
    scores: Vec<(u128, usize)>,
}

impl LeastTime {
    pub fn new(shard: usize) -> Self {
        LeastTime {
            rotate: shard,
            probe_in: PROBE_EVERY,
            scores: Vec::new(),
        }
    }
}

impl Select for LeastTime {
    fn order(&mut self, pool: &PoolShared, pick: &Pick, usable: &[usize], out: &mut Vec<usize>) {
        let n = usable.len();
        let start = self.rotate % n;
        self.rotate = self.rotate.wrapping_add(1);
        self.scores.clear();
        for &i in usable[start..].iter().chain(&usable[..start]) {
            let s = &pool.servers[i];
            let ewma = s.ewma_us.load(std::sync::atomic::Ordering::Relaxed);
            let w = pool.weight(i, pick.now_ms).max(1) as u128;
            // No sample: score 0 (first); otherwise at least 1.
            let score = if ewma == 0 {
                0
            } else {
                ((ewma as u128 * (s.inflight() as u128 + 1)) << 16) / w + 1
            };
            self.scores.push((score, i));
        }
        self.probe_in -= 1;
        if self.probe_in == 0 {
            self.probe_in = PROBE_EVERY;
            // The rotation's first server goes first; the others in score order.
            out.push(self.scores[0].1);
            self.scores[1..].sort_by_key(|&(s, _)| s);
            out.extend(self.scores[1..].iter().map(|&(_, i)| i));
            return;
        }
        self.scores.sort_by_key(|&(s, _)| s);
        out.extend(self.scores.iter().map(|&(_, i)| i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_pool;
    use crate::config::Balance;

    fn first(s: &mut LeastTime, pool: &PoolShared, usable: &[usize]) -> usize {
        let mut out = Vec::new();
        s.order(pool, &Pick::default(), usable, &mut out);
        assert_eq!(out.len(), usable.len());
        out[0]
    }

    #[test]
    fn unmeasured_servers_first_then_fastest() {
        let pool = test_pool(&[1, 1, 1], Balance::LeastTime, 1);
        pool.servers[0].observe_latency(1000);
        pool.servers[1].observe_latency(200);
        let mut s = LeastTime::new(0);
        assert_eq!(first(&mut s, &pool, &[0, 1, 2]), 2);
        pool.servers[2].observe_latency(5000);
        let mut out = Vec::new();
        s.order(&pool, &Pick::default(), &[0, 1, 2], &mut out);
        assert_eq!(out, vec![1, 0, 2]);
    }

    #[test]
    fn in_flight_and_weight_scale_the_time() {
        let pool = test_pool(&[1, 1], Balance::LeastTime, 2);
        pool.servers[0].observe_latency(100);
        pool.servers[1].observe_latency(300);
        let mut s = LeastTime::new(0);
        assert_eq!(first(&mut s, &pool, &[0, 1]), 0);
        // 100 × 4 in flight > 300 × 1.
        for shard in [0, 1, 1] {
            pool.servers[0].begin(shard);
        }
        assert_eq!(first(&mut s, &pool, &[0, 1]), 1);
        let pool = test_pool(&[1, 4], Balance::LeastTime, 1);
        pool.servers[0].observe_latency(100);
        pool.servers[1].observe_latency(300);
        assert_eq!(first(&mut s, &pool, &[0, 1]), 1, "300/4 < 100/1");
    }

    #[test]
    fn a_server_never_picked_is_probed_in_turn() {
        let pool = test_pool(&[1, 1, 1], Balance::LeastTime, 1);
        pool.servers[0].observe_latency(100);
        pool.servers[1].observe_latency(50_000);
        pool.servers[2].observe_latency(60_000);
        let mut s = LeastTime::new(0);
        let picks: Vec<usize> = (0..PROBE_EVERY * 3)
            .map(|_| first(&mut s, &pool, &[0, 1, 2]))
            .collect();
        // Every 100th pick goes to the rotation's server (picks 99, 199, 299: servers 0, 1, 2),
        // every other pick to the fast one.
        let p = PROBE_EVERY as usize;
        for (n, &got) in picks.iter().enumerate() {
            let want = if n % p == p - 1 { n % 3 } else { 0 };
            assert_eq!(got, want, "pick {n}");
        }
    }

    #[test]
    fn a_slow_answer_counts_at_once_and_decays() {
        let pool = test_pool(&[1, 1], Balance::LeastTime, 1);
        pool.servers[0].observe_latency(100);
        pool.servers[1].observe_latency(150);
        let mut s = LeastTime::new(0);
        assert_eq!(first(&mut s, &pool, &[0, 1]), 0);
        pool.servers[0].observe_latency(10_000);
        assert_eq!(first(&mut s, &pool, &[0, 1]), 1);
        for _ in 0..60 {
            pool.servers[0].observe_latency(100);
        }
        assert_eq!(first(&mut s, &pool, &[0, 1]), 0);
    }
}
