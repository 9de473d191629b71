//! Consistent hashing (`balance = "hash"`; Karger's ring, as in ketama and HAProxy's
//! `hash-type consistent`). Each server owns [`POINTS_PER_WEIGHT`] × weight points on a ring of
//! 64-bit values, placed by hashing the server's *name* (not its position in the list) with the
//! point's number, so adding, removing or reordering servers leaves the other servers' points
//! where they were. A request's key hash goes to the first point at or after it, walking
//! clockwise past points of servers that may not take it: a server that is down or removed
//! gives its keys to the servers that follow its points, and no other key moves. The same walk
//! yields the fallback order.
//!
//! The ring is built once per pool at start ([`Ring::new`], kept in
//! [`PoolShared`](super::PoolShared)) and only read afterwards, by every shard. It follows the
//! configured weights: `set server ... weight` and slow start do not reshape it (a weight of 0
//! still takes the server out). A lookup is a binary search plus a short walk.

use std::net::IpAddr;

use super::{Pick, PoolShared, Select};
use crate::config::Server;

/// Points on the ring per unit of weight: with 160 the share of each of 10 equal servers is
/// within about ±10 % of a tenth.
pub const POINTS_PER_WEIGHT: u32 = 160;

/// The 64-bit hash used for ring points and request keys: FNV-1a, then the murmur3 finalizer
/// so that nearby inputs land far apart.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// The hash of a client address (`hash_key = "source_ip"`; what MySQL pools hash).
pub fn ip_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => hash64(&a.octets()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => hash64(&v4.octets()),
            None => hash64(&a.octets()),
        },
    }
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The points of every server, sorted: (position, server index).
#[derive(Debug, Default)]
pub struct Ring {
    points: Box<[(u64, u32)]>,
}

impl Ring {
    pub fn new(servers: &[Server]) -> Ring {
        let mut points = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            let base = hash64(s.name.as_bytes());
            for k in 0..POINTS_PER_WEIGHT * s.weight.max(1) {
                points.push((fmix64(base ^ fmix64(k as u64 + 1)), i as u32));
            }
        }
        // Ties (two names on one point) go to the lower index, the same on every shard.
        points.sort_unstable();
        Ring {
            points: points.into(),
        }
    }
}

/// A shard's view of the ring: only scratch space (which servers are usable, and not yet
/// listed).
#[derive(Debug, Default)]
pub struct ConsistentHash {
    wanted: Vec<bool>,
}

impl Select for ConsistentHash {
    fn order(&mut self, pool: &PoolShared, pick: &Pick, usable: &[usize], out: &mut Vec<usize>) {
        let points = &pool.ring.points;
        if points.is_empty() {
            out.extend_from_slice(usable);
            return;
        }
        self.wanted.clear();
        self.wanted.resize(pool.servers.len(), false);
        for &i in usable {
            self.wanted[i] = true;
        }
        let start = points.partition_point(|&(p, _)| p < pick.hash);
        let mut left = usable.len();
        for &(_, i) in points[start..].iter().chain(&points[..start]) {
            let i = i as usize;
            if self.wanted[i] {
                self.wanted[i] = false;
                out.push(i);
                left -= 1;
                if left == 0 {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{test_server, PoolShared, ServerShared};
    use crate::config::Balance;

    fn pool(servers: &[Server]) -> PoolShared {
        PoolShared {
            name: "p".into(),
            balance: Balance::Hash,
            slow_start_ms: 0,
            servers: servers
                .iter()
                .map(|s| std::sync::Arc::new(ServerShared::new(s, 1)))
                .collect(),
            ring: Ring::new(servers),
            sticky: None,
        }
    }

    fn named(names: &[&str]) -> Vec<Server> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Server {
                name: n.to_string(),
                ..test_server(i, 1)
            })
            .collect()
    }

    /// Server name each of `keys` goes to, with `usable` servers.
    fn owners(p: &PoolShared, usable: &[usize], keys: u64) -> Vec<String> {
        let mut h = ConsistentHash::default();
        (0..keys)
            .map(|k| {
                let mut out = Vec::new();
                let pick = Pick {
                    hash: hash64(format!("key-{k}").as_bytes()),
                    ..Pick::default()
                };
                h.order(p, &pick, usable, &mut out);
                assert_eq!(out.len(), usable.len());
                p.servers[out[0]].name.clone()
            })
            .collect()
    }

    const KEYS: u64 = 20_000;

    #[test]
    fn shares_follow_weights() {
        let mut servers = named(&["a", "b", "c"]);
        servers[2].weight = 2;
        let p = pool(&servers);
        let got = owners(&p, &[0, 1, 2], KEYS);
        for (name, want) in [("a", 0.25), ("b", 0.25), ("c", 0.5)] {
            let share = got.iter().filter(|n| *n == name).count() as f64 / KEYS as f64;
            assert!((share - want).abs() < 0.05, "{name}: {share}");
        }
    }

    #[test]
    fn adding_a_server_moves_about_one_share_and_only_to_it() {
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        let before = pool(&named(&names));
        let mut more = names.to_vec();
        more.push("new");
        let after = pool(&named(&more));
        let was = owners(&before, &(0..9).collect::<Vec<_>>(), KEYS);
        let now = owners(&after, &(0..10).collect::<Vec<_>>(), KEYS);
        let moved: Vec<usize> = (0..KEYS as usize).filter(|&k| was[k] != now[k]).collect();
        let share = moved.len() as f64 / KEYS as f64;
        assert!((share - 0.1).abs() < 0.03, "moved {share}");
        assert!(
            moved.iter().all(|&k| now[k] == "new"),
            "a key moved between old servers"
        );
    }

    #[test]
    fn a_down_server_moves_only_its_own_keys() {
        let p = pool(&named(&["a", "b", "c", "d", "e"]));
        let all = owners(&p, &[0, 1, 2, 3, 4], KEYS);
        let without_c = owners(&p, &[0, 1, 3, 4], KEYS);
        let mut moved = 0;
        for k in 0..KEYS as usize {
            if all[k] == "c" {
                moved += 1;
                assert_ne!(without_c[k], "c");
            } else {
                assert_eq!(all[k], without_c[k], "key {k} of {} moved", all[k]);
            }
        }
        let share = moved as f64 / KEYS as f64;
        assert!((share - 0.2).abs() < 0.05, "moved {share}");
    }

    #[test]
    fn the_order_of_servers_in_the_file_does_not_matter() {
        let p1 = pool(&named(&["a", "b", "c"]));
        let p2 = pool(&named(&["c", "a", "b"]));
        assert_eq!(owners(&p1, &[0, 1, 2], 2000), owners(&p2, &[0, 1, 2], 2000));
    }

    /// Model: any sequence of servers going down and up; a key's owner is always the first
    /// usable server in its walk over the full ring (computed by brute force here), so a key
    /// goes back to its server when that server comes back.
    #[test]
    fn model_owner_is_first_usable_in_walk() {
        let p = pool(&named(&["a", "b", "c", "d", "e", "f"]));
        let mut up = [true; 6];
        let mut rng = 77u64;
        let mut h = ConsistentHash::default();
        for _ in 0..300 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng % 6) as usize;
            up[i] = !up[i];
            let usable: Vec<usize> = (0..6).filter(|&i| up[i]).collect();
            if usable.is_empty() {
                continue;
            }
            for k in 0..50u64 {
                let hash = fmix64(k ^ rng);
                let mut out = Vec::new();
                h.order(
                    &p,
                    &Pick {
                        hash,
                        ..Pick::default()
                    },
                    &usable,
                    &mut out,
                );
                let full = {
                    let pts = &p.ring.points;
                    let s = pts.iter().position(|&(x, _)| x >= hash).unwrap_or(0);
                    pts[s..]
                        .iter()
                        .chain(&pts[..s])
                        .map(|&(_, i)| i as usize)
                        .find(|&i| up[i])
                        .unwrap()
                };
                assert_eq!(out[0], full);
            }
        }
    }
}
