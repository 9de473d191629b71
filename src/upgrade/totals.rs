//! The counter totals a process hands to the one that replaces it, so that every counter an
//! operator or a billing script reads goes on from where it was: the connection and request
//! counters of `show stats`, per-site HTTP traffic, per-server requests and bytes, MySQL
//! frontend counters and per-user traffic. Gauges (connections open now, in flight) are not
//! carried: they describe the old process.
//!
//! The old process sends its totals once before the new one starts serving, and the
//! difference it counted after that (requests that were still running) when it exits; the new
//! process adds both to shard 0's own counters, on shard 0's thread, so every counter keeps
//! its single writer.

use std::collections::BTreeMap;

use crate::balance::Admin;
use crate::proxy::mysql::{FrontCounters, UserStats};
use crate::shared::Shared;
use crate::stats::{Counter, ShardStats};

/// The key prefix of a server's operator state (admin state, weight): carried, never
/// subtracted.
const ADMIN: &str = "admin\t";

/// A named counter of a counter set.
type Named<T> = (&'static str, fn(&T) -> &Counter);

/// The carried counters of `show stats`.
const STATS: [Named<ShardStats>; 11] = [
    ("accepted", |s| &s.accepted),
    ("adopted", |s| &s.adopted),
    ("handled", |s| &s.handled),
    ("requests", |s| &s.requests),
    ("errors", |s| &s.errors),
    ("upstream_connects", |s| &s.upstream_connects),
    ("upstream_reused", |s| &s.upstream_reused),
    ("upstream_retries", |s| &s.upstream_retries),
    ("shed_refused", |s| &s.shed_refused),
    ("shed_idle_closed", |s| &s.shed_idle_closed),
    ("panics", |s| &s.panics),
];

/// The carried counters of a MySQL frontend.
const FRONT: [Named<FrontCounters>; 9] = [
    ("accepted", |c| &c.accepted),
    ("refused_limit", |c| &c.refused_limit),
    ("no_server", |c| &c.no_server),
    ("connect_failures", |c| &c.connect_failures),
    ("backend_lost", |c| &c.backend_lost),
    ("idle_closed", |c| &c.idle_closed),
    ("write_timeout", |c| &c.write_timeout),
    ("login_failed", |c| &c.login_failed),
    ("pipeline_paused", |c| &c.pipeline_paused),
];

/// Every carried counter, keyed by what it counts (kind, then names, tab-separated), as
/// numbers. A flat map so that two snapshots subtract key by key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals(pub BTreeMap<String, Vec<u64>>);

impl Totals {
    /// Sum every shard's counters now.
    pub fn collect(shared: &Shared) -> Totals {
        let mut t = Totals::default();
        let mut add = |key: String, vals: &[u64]| {
            let e = t.0.entry(key).or_insert_with(|| vec![0; vals.len()]);
            for (a, b) in e.iter_mut().zip(vals) {
                *a += b;
            }
        };
        for s in &shared.stats {
            for (name, f) in STATS {
                add(format!("stat\t{name}"), &[f(&s.0).get()]);
            }
            let sites = s.0.sites.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for (fe, list) in sites {
                for (site, c) in list {
                    let site = String::from_utf8_lossy(&site);
                    add(
                        format!("site\t{fe}\t{site}"),
                        &[
                            c.requests.get(),
                            c.bytes_in.get(),
                            c.bytes_out.get(),
                            c.time_total_us.get(),
                        ],
                    );
                }
            }
        }
        let gen = shared.current();
        for p in &gen.pools {
            for sv in p.servers.iter() {
                add(
                    format!("server\t{}\t{}", p.name, sv.name),
                    &[sv.requests(), sv.bytes()],
                );
                // Not a counter: what an operator set (state, weight) carries over too.
                add(
                    format!("{ADMIN}{}\t{}", p.name, sv.name),
                    &[
                        sv.admin() as u64,
                        u64::from(sv.operator_admin()),
                        u64::from(sv.weight()),
                        u64::from(sv.file_weight()),
                    ],
                );
            }
        }
        for m in &shared.mysql_stats {
            for (name, c) in m.fronts() {
                let vals: Vec<u64> = FRONT.iter().map(|(_, f)| f(&c).get()).collect();
                add(format!("front\t{name}"), &vals);
            }
            for (user, u) in m.users() {
                add(
                    format!("user\t{}", String::from_utf8_lossy(&user)),
                    &user_values(&u),
                );
            }
        }
        t
    }

    /// What `self` counted beyond `base` (never negative).
    pub fn minus(&self, base: &Totals) -> Totals {
        let mut out = Totals::default();
        for (k, v) in self.0.iter().filter(|(k, _)| !k.starts_with(ADMIN)) {
            let b = base.0.get(k);
            let d: Vec<u64> = v
                .iter()
                .enumerate()
                .map(|(i, x)| x.saturating_sub(b.and_then(|b| b.get(i)).copied().unwrap_or(0)))
                .collect();
            if d.iter().any(|&x| x > 0) {
                out.0.insert(k.clone(), d);
            }
        }
        out
    }

    /// As message fields (`t` = key, then the numbers), in pieces that each fit a message.
    pub fn to_fields(&self) -> Vec<Vec<(String, String)>> {
        let mut pieces = vec![Vec::new()];
        let mut size = 0;
        for (k, v) in &self.0 {
            let nums: Vec<String> = v.iter().map(|n| n.to_string()).collect();
            let val = format!("{k}\t{}", nums.join(" "));
            size += val.len() + 4;
            if size > 200 * 1024 {
                pieces.push(Vec::new());
                size = val.len() + 4;
            }
            if let Some(last) = pieces.last_mut() {
                last.push(("t".to_string(), val));
            }
        }
        pieces
    }

    /// Add fields of a `counters` message; malformed ones are skipped.
    pub fn add_fields(&mut self, fields: &[(String, String)]) {
        for (k, v) in fields {
            if k != "t" {
                continue;
            }
            let Some((key, nums)) = v.rsplit_once('\t') else {
                continue;
            };
            let nums: Option<Vec<u64>> = nums.split(' ').map(|n| n.parse().ok()).collect();
            if let Some(nums) = nums {
                self.0.insert(key.to_string(), nums);
            }
        }
    }

    /// Add these totals to shard 0's counters. Runs on shard 0's thread (the counters' only
    /// writer); `sites` is shard 0's site table.
    pub fn apply(&self, shared: &Shared, sites: &crate::stats::SiteTable) {
        let Some(stats) = shared.stats.first() else {
            return;
        };
        let Some(my) = shared.mysql_stats.first() else {
            return;
        };
        let gen = shared.current();
        for (key, v) in &self.0 {
            let parts: Vec<&str> = key.split('\t').collect();
            match parts[..] {
                ["stat", name] => {
                    if let (Some((_, f)), Some(&n)) =
                        (STATS.iter().find(|(s, _)| *s == name), v.first())
                    {
                        f(&stats.0).add(n);
                    }
                }
                ["site", fe, site] if v.len() == 4 => {
                    if let Some(c) = sites.counters(&stats.0, fe, site.as_bytes()) {
                        c.requests.add(v[0]);
                        c.bytes_in.add(v[1]);
                        c.bytes_out.add(v[2]);
                        c.time_total_us.add(v[3]);
                    }
                }
                ["server", pool, name] if v.len() == 2 => {
                    if let Some(sv) = gen
                        .pool(pool)
                        .and_then(|p| p.servers.iter().find(|s| s.name == name))
                    {
                        sv.seed(0, v[0], v[1]);
                    }
                }
                ["admin", pool, name] if v.len() == 4 => {
                    let Some(sv) = gen
                        .pool(pool)
                        .and_then(|p| p.servers.iter().find(|s| s.name == name))
                    else {
                        continue;
                    };
                    if v[1] == 1 {
                        let a = match v[0] {
                            1 => Admin::Drain,
                            2 => Admin::Maint,
                            _ => Admin::Ready,
                        };
                        sv.set_admin_by_operator(a);
                    }
                    // An operator's weight, unless the file's weight changed since.
                    if v[2] != v[3] && u64::from(sv.file_weight()) == v[3] {
                        sv.set_weight(u32::try_from(v[2]).unwrap_or(1000).min(1000));
                    }
                }
                ["front", name] if v.len() == FRONT.len() => {
                    let c = my.front(name);
                    for ((_, f), n) in FRONT.iter().zip(v) {
                        f(&c).add(*n);
                    }
                }
                ["user", name] => {
                    if let Some(u) = user_from(v) {
                        my.seed_user(name.as_bytes(), &u);
                    }
                }
                _ => {}
            }
        }
    }
}

fn user_values(u: &UserStats) -> Vec<u64> {
    let mut v = vec![
        u.connections,
        u.login_failures,
        u.replies,
        u.errors,
        u.bytes_in,
        u.bytes_out,
        u.time_total_us,
        u.unparsed,
    ];
    v.extend_from_slice(&u.commands);
    v
}

fn user_from(v: &[u64]) -> Option<UserStats> {
    let mut u = UserStats::default();
    if v.len() != 8 + u.commands.len() {
        return None;
    }
    u.connections = v[0];
    u.login_failures = v[1];
    u.replies = v[2];
    u.errors = v[3];
    u.bytes_in = v[4];
    u.bytes_out = v[5];
    u.time_total_us = v[6];
    u.unparsed = v[7];
    u.commands.copy_from_slice(&v[8..]);
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_subtract() {
        let mut a = Totals::default();
        a.0.insert("stat\trequests".into(), vec![10]);
        a.0.insert("site\twww\tex ample.com".into(), vec![3, 100, 200, 5]);
        let mut b = a.clone();
        b.0.insert("stat\trequests".into(), vec![15]);
        b.0.insert("server\tapp\ta".into(), vec![2, 7]);
        let mut back = Totals::default();
        for piece in b.to_fields() {
            back.add_fields(&piece);
        }
        assert_eq!(back, b);
        let d = b.minus(&a);
        assert_eq!(d.0.len(), 2, "{d:?}");
        assert_eq!(d.0["stat\trequests"], vec![5]);
        assert_eq!(d.0["server\tapp\ta"], vec![2, 7]);
    }

    #[test]
    fn large_totals_are_split_into_messages() {
        let mut t = Totals::default();
        for i in 0..20_000 {
            t.0.insert(format!("site\twww\tsite-{i}.example.com"), vec![1, 2, 3, 4]);
        }
        let pieces = t.to_fields();
        assert!(pieces.len() > 1);
        let mut back = Totals::default();
        for p in &pieces {
            let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let msg = super::super::wire::encode("counters", &refs);
            assert!(msg.len() <= super::super::wire::MAX_MSG, "{}", msg.len());
            back.add_fields(p);
        }
        assert_eq!(back, t);
    }
}
