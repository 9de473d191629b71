//! Power of two choices (Mitzenmacher; Envoy's and Finagle's default): draw two distinct usable
//! servers at random, with probability proportional to their weights, and take the one with
//! fewer requests in flight per weight (summed over shards); on a tie the first drawn. The
//! loser is the first fallback, then the rest. Each pick reads the counters of two servers
//! only, so its cost does not grow with the pool, and because the draw is random, shards that
//! read the same stale counters do not all pile onto the same server (the herd effect of
//! "least" rules). The generator is a per-shard xorshift: no shared state.

use super::{Pick, PoolShared, Select};

#[derive(Debug)]
pub struct P2c {
    rng: u64,
    /// Reused per pick: the weight of each usable server, in `usable` order.
    weights: Vec<u64>,
}

impl P2c {
    pub fn new(shard: usize) -> Self {
        // Distinct non-zero seeds per shard.
        P2c {
            rng: 0x9e37_79b9_7f4a_7c15 ^ (shard as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            weights: Vec::new(),
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Position in `usable` of a draw weighted by `self.weights` (summing to `total`), skipping
    /// position `skip`.
    fn draw(&mut self, total: u64, skip: Option<usize>) -> usize {
        let mut r = self.next() % total.max(1);
        for (p, &w) in self.weights.iter().enumerate() {
            if Some(p) == skip {
                continue;
            }
            if r < w {
                return p;
            }
            r -= w;
        }
        // Not reached: the weights sum to `total`.
        self.weights.len() - 1 - usize::from(skip == Some(self.weights.len() - 1))
    }
}

impl Select for P2c {
    fn order(&mut self, pool: &PoolShared, pick: &Pick, usable: &[usize], out: &mut Vec<usize>) {
        if usable.len() == 1 {
            out.push(usable[0]);
            return;
        }
        self.weights.clear();
        self.weights.extend(
            usable
                .iter()
                .map(|&i| pool.weight(i, pick.now_ms).max(1) as u64),
        );
        let total: u64 = self.weights.iter().sum();
        let a = self.draw(total, None);
        let b = self.draw(total - self.weights[a], Some(a));
        let (ia, ib) = (usable[a], usable[b]);
        let (wa, wb) = (self.weights[a], self.weights[b]);
        // inflight_a / wa <= inflight_b / wb, as inflight_a * wb <= inflight_b * wa.
        let load = |i: usize| pool.servers[i].inflight() as u64;
        let (win, lose) = if load(ia) * wb <= load(ib) * wa {
            (ia, ib)
        } else {
            (ib, ia)
        };
        out.push(win);
        out.push(lose);
        out.extend(usable.iter().filter(|&&i| i != win && i != lose));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_pool;
    use crate::config::Balance;

    #[test]
    fn the_two_drawn_are_distinct_and_every_server_is_a_fallback() {
        let pool = test_pool(&[1, 1, 1, 1], Balance::P2c, 1);
        let mut s = P2c::new(0);
        for _ in 0..1000 {
            let mut out = Vec::new();
            s.order(&pool, &Pick::default(), &[0, 2, 3], &mut out);
            let mut sorted = out.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 2, 3]);
        }
    }

    #[test]
    fn idle_picks_follow_weights() {
        let pool = test_pool(&[1, 2, 3], Balance::P2c, 1);
        let mut s = P2c::new(3);
        let mut got = [0u32; 3];
        for _ in 0..60_000 {
            let mut out = Vec::new();
            s.order(&pool, &Pick::default(), &[0, 1, 2], &mut out);
            got[out[0]] += 1;
        }
        // With nothing in flight the first drawn wins: its chance is its weight share.
        for (i, want) in [10_000, 20_000, 30_000].into_iter().enumerate() {
            assert!(got[i].abs_diff(want) < 800, "{got:?}");
        }
    }

    #[test]
    fn the_less_loaded_of_the_two_wins() {
        let pool = test_pool(&[1, 1], Balance::P2c, 2);
        for _ in 0..3 {
            pool.servers[1].begin(1);
        }
        let mut s = P2c::new(0);
        for _ in 0..100 {
            let mut out = Vec::new();
            s.order(&pool, &Pick::default(), &[0, 1], &mut out);
            assert_eq!(out, vec![0, 1]);
        }
    }

    /// Model: requests that stay in flight for a random while, placed by p2c and, as the
    /// model to beat, by one uniform random draw; p2c keeps the in-flight counts much closer
    /// together (mean max-min spread), and never lets them drift apart.
    #[test]
    fn model_in_flight_stays_balanced() {
        fn run(two: bool) -> (f64, u32) {
            let pool = test_pool(&[1; 8], Balance::P2c, 1);
            let usable: Vec<usize> = (0..8).collect();
            let mut s = P2c::new(1);
            let mut open: Vec<usize> = Vec::new();
            let (mut sum, mut worst) = (0u64, 0u32);
            for _ in 0..20_000 {
                let r = s.next();
                if open.len() > 40 || (r.is_multiple_of(3) && !open.is_empty()) {
                    let k = (r as usize / 3) % open.len();
                    pool.servers[open.swap_remove(k)].end(0);
                } else {
                    let i = if two {
                        let mut out = Vec::new();
                        s.order(&pool, &Pick::default(), &usable, &mut out);
                        out[0]
                    } else {
                        (s.next() % 8) as usize
                    };
                    pool.servers[i].begin(0);
                    open.push(i);
                }
                let loads: Vec<u32> = pool.servers.iter().map(|s| s.inflight()).collect();
                let spread = loads.iter().max().unwrap() - loads.iter().min().unwrap();
                sum += spread as u64;
                worst = worst.max(spread);
            }
            (sum as f64 / 20_000.0, worst)
        }
        let (p2c, p2c_worst) = run(true);
        let (random, _) = run(false);
        assert!(p2c * 1.5 < random, "p2c {p2c} random {random}");
        assert!(p2c_worst <= 10, "{p2c_worst}");
    }
}
