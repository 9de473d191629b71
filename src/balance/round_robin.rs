//! Smooth weighted round-robin (the nginx algorithm): each pick adds every usable server's
//! weight to its current score, takes the highest, and subtracts the total from the winner.
//! Over a cycle each server is chosen in proportion to its weight, interleaved rather than in
//! bursts. State is per shard, so with several shards each one spreads its own requests.

use super::{Pick, PoolShared, Select};

#[derive(Debug)]
pub struct SmoothWeighted {
    current: Vec<i64>,
}

impl SmoothWeighted {
    pub fn new(servers: usize) -> Self {
        SmoothWeighted {
            current: vec![0; servers],
        }
    }
}

impl Select for SmoothWeighted {
    fn order(&mut self, pool: &PoolShared, pick: &Pick, usable: &[usize], out: &mut Vec<usize>) {
        if self.current.len() != pool.servers.len() {
            self.current = vec![0; pool.servers.len()];
        }
        let mut total = 0i64;
        let mut best = usable[0];
        for &i in usable {
            let w = pool.weight(i, pick.now_ms) as i64;
            self.current[i] += w;
            total += w;
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        out.push(best);
        // The fallbacks, should the pick refuse: the rest in index order after it.
        let pos = usable.iter().position(|&i| i == best).unwrap_or(0);
        out.extend(usable[pos + 1..].iter().chain(&usable[..pos]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_pool;
    use crate::config::Balance;

    #[test]
    fn weights_are_honoured_and_interleaved() {
        let pool = test_pool(&[1, 2], Balance::RoundRobin, 1);
        let mut s = SmoothWeighted::new(2);
        let usable = [0, 1];
        let mut picks = Vec::new();
        for _ in 0..6 {
            let mut out = Vec::new();
            s.order(&pool, &Pick::default(), &usable, &mut out);
            assert_eq!(out.len(), 2);
            picks.push(out[0]);
        }
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 4);
        assert_eq!(picks, vec![1, 0, 1, 1, 0, 1]);
    }

    #[test]
    fn equal_weights_alternate() {
        let pool = test_pool(&[1, 1, 1], Balance::RoundRobin, 1);
        let mut s = SmoothWeighted::new(3);
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                let mut out = Vec::new();
                s.order(&pool, &Pick::default(), &[0, 1, 2], &mut out);
                out[0]
            })
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }
}
