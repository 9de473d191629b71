//! Least requests (mod_proxy_lb's "bybusyness", oProxy's rule): the server with the fewest
//! requests in flight summed over all shards, weight-scaled (`inflight / weight`), ties broken
//! by a per-shard rotating start so that equally idle servers share the load.

use super::{Pick, PoolShared, Select};

#[derive(Debug)]
pub struct LeastRequests {
    rotate: usize,
}

impl LeastRequests {
    pub fn new(shard: usize) -> Self {
        LeastRequests { rotate: shard }
    }
}

impl Select for LeastRequests {
    fn order(&mut self, pool: &PoolShared, pick: &Pick, usable: &[usize], out: &mut Vec<usize>) {
        let n = usable.len();
        let start = self.rotate % n;
        self.rotate = self.rotate.wrapping_add(1);
        // Only what this call adds is sorted: `out` may already hold a sticky target, which
        // must stay first.
        let from = out.len();
        out.extend(usable[start..].iter().chain(&usable[..start]));
        // Stable sort keeps the rotation among equals. Compare a/wa < b/wb as a*wb < b*wa.
        out[from..].sort_by_cached_key(|&i| {
            let s = &pool.servers[i];
            (s.inflight() as u64 * 1_000_000) / pool.weight(i, pick.now_ms).max(1) as u64
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_pool;
    use crate::config::Balance;

    #[test]
    fn fewest_in_flight_first_across_shards() {
        let pool = test_pool(&[1, 1, 1], Balance::LeastRequests, 2);
        pool.servers[0].begin(0);
        pool.servers[0].begin(1);
        pool.servers[1].begin(1);
        let mut s = LeastRequests::new(0);
        let mut out = Vec::new();
        s.order(&pool, &Pick::default(), &[0, 1, 2], &mut out);
        assert_eq!(out, vec![2, 1, 0]);
    }

    #[test]
    fn ties_rotate() {
        let pool = test_pool(&[1, 1], Balance::LeastRequests, 1);
        let mut s = LeastRequests::new(0);
        let firsts: Vec<usize> = (0..4)
            .map(|_| {
                let mut out = Vec::new();
                s.order(&pool, &Pick::default(), &[0, 1], &mut out);
                out[0]
            })
            .collect();
        assert_eq!(firsts, vec![0, 1, 0, 1]);
    }
}
