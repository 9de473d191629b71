//! The client-IP sticky table (`[pool.NAME.sticky] mode = "source_ip"`, HAProxy's
//! stick-table on `src`): client address → server, with a TTL refreshed on use and a bound on
//! the number of entries. There is **one table for the whole process**, read and written by
//! every shard with atomics: a client whose connections land on different shards (SO_REUSEPORT
//! spreads them by the 4-tuple) goes to the same server.
//!
//! Why one shared atomic table rather than a replica per shard fed by messages: a replica
//! costs `shards ×` the memory, every use must also be sent to the others (or each replica
//! expires the entry on its own clock), and a client's second connection can reach a shard
//! before the message does. With the shared table a new entry is visible to the other shards
//! as soon as the store reaches their cache (measured below: well under a microsecond), a
//! lookup is two relaxed loads on a line the other shards rarely write, and a hit refreshes the
//! entry at most once per second, so a busy client does not bounce a cache line between cores.
//! No lock anywhere.
//!
//! Layout: `slots` pairs of `AtomicU64` (key, value), `slots = table_size`, so the table never
//! holds more than `table_size` entries.
//!
//! ```text
//!   key:   u64::MAX = empty │ 0xffff_ffff_<IPv4> │ IPv6 /64 prefix
//!   value: [ tag 16 | server 16 | last use, s 32 ]   (0 = no entry)
//! ```
//!
//! An IPv6 client is keyed by its /64, the unit a site owns (privacy addresses rotate inside
//! it); `ffff:ffff::/32` is multicast, never a source address, so it cannot meet an IPv4 key.
//! A key lives in one of [`WINDOW`] slots starting at its hash; inserting takes the key's own
//! slot, else a free or expired one, else the least recently used of the window (so a full
//! table forgets roughly its oldest entries). The key and the value are two stores, so a
//! reader racing a writer may pair a key with the previous occupant's value: the value carries
//! 16 bits of the key's hash (`tag`) and a mismatch reads as a miss. The worst a race can do
//! is one request balanced afresh.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots a key may occupy, from its hash on.
const WINDOW: usize = 8;
const EMPTY: u64 = u64::MAX;
const V4_MARK: u64 = 0xffff_ffff << 32;

/// The table key of a client address: the IPv4 address, or the /64 of an IPv6 one.
pub fn client_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(a) => V4_MARK | u32::from(a) as u64,
        IpAddr::V6(a) => (u128::from(a) >> 64) as u64,
    }
}

/// The client (or client network) a key stands for, for `show sticky`.
pub fn key_text(key: u64) -> String {
    if key & V4_MARK == V4_MARK {
        std::net::Ipv4Addr::from(key as u32).to_string()
    } else {
        let a = std::net::Ipv6Addr::from((key as u128) << 64);
        format!("{a}/64")
    }
}

/// The process-wide client → server table of one pool.
#[derive(Debug)]
pub struct IpTable {
    slots: Box<[[AtomicU64; 2]]>,
    ttl_s: u32,
    seed: u64,
}

/// One live entry, as `show sticky` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: u64,
    pub server: usize,
    /// Seconds until it expires unless used.
    pub left_s: u32,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: every input bit moves every output bit.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn pack(tag: u64, server: usize, now_s: u32) -> u64 {
    (tag & 0xffff) << 48 | (server as u64 & 0xffff) << 32 | now_s as u64
}

fn last_use(v: u64) -> u32 {
    v as u32
}

fn server_of(v: u64) -> usize {
    ((v >> 32) & 0xffff) as usize
}

impl IpTable {
    /// A table of at most `size` entries forgetting an entry unused for `ttl_s` seconds.
    pub fn new(size: usize, ttl_s: u64) -> IpTable {
        // A per-process seed, so nobody can choose addresses that all share one window.
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5717_c4e5);
            h.finish()
        };
        IpTable {
            slots: (0..size.max(1))
                .map(|_| [AtomicU64::new(EMPTY), AtomicU64::new(0)])
                .collect(),
            ttl_s: ttl_s.clamp(1, u32::MAX as u64) as u32,
            seed,
        }
    }

    /// The process clock in seconds (never 0: 0 marks "no entry").
    pub fn now_s(now_ms: u64) -> u32 {
        (now_ms / 1000 + 1).min(u32::MAX as u64) as u32
    }

    fn home(&self, key: u64) -> (usize, u64) {
        let h = mix(key ^ self.seed);
        let n = self.slots.len() as u128;
        (((h as u128 * n) >> 64) as usize, h >> 48)
    }

    fn live(&self, v: u64, tag: u64, now_s: u32) -> bool {
        v != 0 && v >> 48 == tag && now_s.saturating_sub(last_use(v)) < self.ttl_s
    }

    fn window(&self, home: usize) -> impl Iterator<Item = &[AtomicU64; 2]> {
        let n = self.slots.len();
        (0..WINDOW.min(n)).map(move |i| &self.slots[(home + i) % n])
    }

    /// The server `key` is stuck to, refreshing the entry's last use.
    pub fn get(&self, key: u64, now_s: u32) -> Option<usize> {
        let (home, tag) = self.home(key);
        for [k, v] in self.window(home) {
            if k.load(Ordering::Acquire) != key {
                continue;
            }
            let val = v.load(Ordering::Acquire);
            if !self.live(val, tag, now_s) {
                return None;
            }
            if last_use(val) != now_s {
                // At most one write per entry per second; losing to a concurrent update is
                // fine (that update is newer).
                let fresh = val & !0xffff_ffff | now_s as u64;
                let _ = v.compare_exchange(val, fresh, Ordering::AcqRel, Ordering::Relaxed);
            }
            return Some(server_of(val));
        }
        None
    }

    /// Stick `key` to `server` (a new entry, or a changed one after a fallback).
    pub fn set(&self, key: u64, server: usize, now_s: u32) {
        let (home, tag) = self.home(key);
        let val = pack(tag, server, now_s);
        // Its own slot first: an update must not leave a second, older entry behind.
        for [k, v] in self.window(home) {
            if k.load(Ordering::Acquire) == key {
                v.store(val, Ordering::Release);
                return;
            }
        }
        let mut oldest: Option<(&[AtomicU64; 2], u64, u32)> = None;
        for slot in self.window(home) {
            let [k, v] = slot;
            let cur = k.load(Ordering::Acquire);
            let cur_val = v.load(Ordering::Acquire);
            let (_, cur_tag) = if cur == EMPTY { (0, 0) } else { self.home(cur) };
            let free = cur == EMPTY || !self.live(cur_val, cur_tag, now_s);
            if free {
                if self.claim(slot, cur, key, val) {
                    return;
                }
                continue;
            }
            let used = last_use(cur_val);
            if oldest.is_none_or(|(_, _, u)| used < u) {
                oldest = Some((slot, cur, used));
            }
        }
        if let Some((slot, cur, _)) = oldest {
            self.claim(slot, cur, key, val);
        }
    }

    /// Replace `expected` by `key` in `slot` and write `val`; false when another shard took
    /// the slot first (for a different key).
    fn claim(&self, slot: &[AtomicU64; 2], expected: u64, key: u64, val: u64) -> bool {
        let [k, v] = slot;
        match k.compare_exchange(expected, key, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                v.store(val, Ordering::Release);
                true
            }
            Err(now) if now == key => {
                v.store(val, Ordering::Release);
                true
            }
            Err(_) => false,
        }
    }

    /// Live entries now (a scan).
    #[cfg(test)]
    pub fn len(&self, now_s: u32) -> usize {
        self.entries(now_s, usize::MAX, &mut |_| {})
    }

    /// Call `f` on up to `limit` live entries; returns how many live entries there are in all.
    pub fn entries(&self, now_s: u32, limit: usize, f: &mut dyn FnMut(Entry)) -> usize {
        let mut n = 0;
        for [k, v] in self.slots.iter() {
            let key = k.load(Ordering::Acquire);
            if key == EMPTY {
                continue;
            }
            let val = v.load(Ordering::Acquire);
            if !self.live(val, self.home(key).1, now_s) {
                continue;
            }
            if n < limit {
                f(Entry {
                    key,
                    server: server_of(val),
                    left_s: self.ttl_s - now_s.saturating_sub(last_use(val)),
                });
            }
            n += 1;
        }
        n
    }

    /// `show sticky` lines: the size, then up to `limit` entries.
    pub fn render(&self, now_s: u32, limit: usize, name_of: &dyn Fn(usize) -> String) -> String {
        let mut body = String::new();
        let n = self.entries(now_s, limit, &mut |e| {
            let _ = writeln!(
                body,
                "{} {} {}",
                key_text(e.key),
                name_of(e.server),
                e.left_s
            );
        });
        let mut out = format!(
            "entries: {n} (at most {})\nclient server seconds_left\n",
            self.slots.len()
        );
        out.push_str(&body);
        if n > limit {
            let _ = writeln!(out, "... {} more", n - limit);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Instant;

    fn ip(s: &str) -> u64 {
        client_key(s.parse().unwrap())
    }

    #[test]
    fn keys_fold_mapped_v4_and_v6_hosts_of_one_64() {
        assert_eq!(ip("10.0.0.1"), ip("::ffff:10.0.0.1"));
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(key_text(ip("10.0.0.1")), "10.0.0.1");
        assert_eq!(key_text(ip("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_ne!(ip("::1"), EMPTY);
    }

    #[test]
    fn entries_expire_unless_used_and_refresh_on_use() {
        let t = IpTable::new(16, 10);
        let k = ip("10.0.0.1");
        assert_eq!(t.get(k, 100), None);
        t.set(k, 3, 100);
        assert_eq!(t.get(k, 105), Some(3));
        assert_eq!(t.get(k, 114), Some(3), "refreshed at 105");
        assert_eq!(t.get(k, 124), None, "unused for 10 s");
        t.set(k, 1, 130);
        assert_eq!(t.get(k, 131), Some(1));
        t.set(k, 2, 132);
        assert_eq!(
            t.get(k, 133),
            Some(2),
            "an update replaces, never duplicates"
        );
        assert_eq!(t.len(133), 1);
    }

    #[test]
    fn a_full_table_holds_its_bound_and_forgets_the_oldest() {
        let t = IpTable::new(64, 1000);
        for i in 0..1000u32 {
            t.set(V4_MARK | i as u64, (i % 7) as usize, 10 + i);
        }
        let n = t.len(1010);
        assert!((48..=64).contains(&n), "{n}");
        // The newest are still there; the first are gone.
        let recent = (990..1000u32)
            .filter(|&i| t.get(V4_MARK | i as u64, 1010) == Some((i % 7) as usize))
            .count();
        assert!(recent >= 9, "{recent}");
        assert_eq!(t.get(V4_MARK, 1010), None);
        let mut listed = 0;
        let total = t.entries(1010, 5, &mut |_| listed += 1);
        assert_eq!((listed, total), (5, n));
    }

    #[test]
    fn shards_racing_on_one_table_never_disagree_on_a_settled_entry() {
        let t = Arc::new(IpTable::new(1024, 1000));
        std::thread::scope(|s| {
            for shard in 0..4usize {
                let t = t.clone();
                s.spawn(move || {
                    for i in 0..20_000u64 {
                        let k = V4_MARK | (i % 3000);
                        if t.get(k, 5).is_none() {
                            t.set(k, shard, 5);
                        }
                    }
                });
            }
        });
        for i in 0..3000u64 {
            let k = V4_MARK | i;
            let a = t.get(k, 6);
            assert_eq!(a, t.get(k, 6));
        }
        assert!(t.len(6) <= 1024);
    }

    /// How long a new entry takes to be seen by another thread while a third one hammers the
    /// table with lookups and inserts: `cargo test -p shardgate --lib sticky_table::tests::staleness -- --ignored
    /// --nocapture`. The figure is in docs/balancing.md.
    #[test]
    #[ignore]
    fn staleness() {
        let t = Arc::new(IpTable::new(100_000, 1800));
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = 2_000u64;
        let mut lat = std::thread::scope(|s| {
            // STALENESS_HAMMERS=0 measures the floor without the extra load.
            let hammers = std::env::var("STALENESS_HAMMERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1u64);
            for n in 0..hammers {
                let (t, stop) = (t.clone(), stop.clone());
                s.spawn(move || {
                    let mut x = n;
                    while !stop.load(Ordering::Relaxed) {
                        x = mix(x);
                        let k = V4_MARK | (x & 0xffff);
                        if t.get(k, 5).is_none() {
                            t.set(k, (x % 5) as usize, 5);
                        }
                    }
                });
            }
            let epoch = Instant::now();
            let reader = {
                let t = t.clone();
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(rounds as usize);
                    for r in 1..=rounds {
                        // Poll the table itself until the writer's entry shows.
                        let k = (1u64 << 40) | r;
                        while t.get(k, 5) != Some(7) {
                            std::hint::spin_loop();
                        }
                        lat.push(epoch.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            };
            let mut sent = Vec::with_capacity(rounds as usize);
            for r in 1..=rounds {
                let k = (1u64 << 40) | r;
                sent.push(epoch.elapsed().as_nanos() as u64);
                t.set(k, 7, 5);
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
            let seen = reader.join().unwrap();
            stop.store(true, Ordering::Relaxed);
            seen.iter()
                .zip(&sent)
                .map(|(s, w)| s.saturating_sub(*w))
                .collect::<Vec<_>>()
        });
        lat.sort_unstable();
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        println!(
            "staleness ns: p50 {} p99 {} p99.9 {} max {}",
            q(0.5),
            q(0.99),
            q(0.999),
            lat[lat.len() - 1]
        );
    }
}
