//! By traffic (mod_proxy_balancer's `bytraffic`): each server gets its weighted share of the
//! bytes moved (request bytes sent plus response bytes received), counted over every shard. The
//! pick is the usable server with the lowest `bytes / weight`; it is the
//! [`by_requests`](super::by_requests) rule over another counter, so a server whose answers are
//! ten times bigger gets about a tenth of the requests. The counters grow only when an
//! exchange ends, so a burst of long downloads that start together is not seen until they end.

use super::by_requests::{Metric, WeightedShare};

/// `balance = "by_traffic"`.
pub type ByTraffic = WeightedShare;

pub fn new(servers: usize, shard: usize) -> ByTraffic {
    WeightedShare::new(Metric::Bytes, servers, shard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{test_pool, Pick, Select};
    use crate::config::Balance;

    #[test]
    fn bigger_answers_get_fewer_requests() {
        let pool = test_pool(&[1, 1], Balance::ByTraffic, 2);
        let mut shards = [new(2, 0), new(2, 1)];
        let mut got = [0u64; 2];
        let mut out = Vec::new();
        for n in 0..1100 {
            let shard = n % 2;
            out.clear();
            shards[shard].order(&pool, &Pick::default(), &[0, 1], &mut out);
            let i = out[0];
            pool.servers[i].add_bytes(shard, if i == 0 { 1000 } else { 10_000 });
            got[i] += 1;
        }
        // Server 0 answers 10x smaller: 10x the requests, give or take a few.
        assert!((995..=1005).contains(&got[0]), "{got:?}");
    }

    #[test]
    fn weights_scale_the_byte_share() {
        let pool = test_pool(&[1, 3], Balance::ByTraffic, 1);
        let mut s = new(2, 0);
        let mut out = Vec::new();
        let mut got = [0u64; 2];
        for _ in 0..400 {
            out.clear();
            s.order(&pool, &Pick::default(), &[0, 1], &mut out);
            pool.servers[out[0]].add_bytes(0, 500);
            got[out[0]] += 1;
        }
        assert!((98..=102).contains(&got[0]), "{got:?}");
    }
}
