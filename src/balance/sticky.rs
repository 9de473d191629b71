//! Sticky sessions, the part every protocol shares (`[pool.NAME.sticky]`): which server a
//! request is stuck to, whether that server may take it, what to remember once a server was
//! chosen, and the counters. How HTTP finds a route in a request (cookie, URL) is in
//! `proxy::http::sticky`; the process-wide client-IP table in [`super::sticky_table`].
//!
//! A request goes through two steps:
//!
//! ```text
//!   resolve: named server (route / table entry) ──► usable for sticky? ── yes: Pick.sticky
//!                                                        └─ down, maint, full: fallback (quiet)
//!   settle (server chosen):  chosen == named ─► hit
//!                            nothing named   ─► miss     ┐ source_ip: remember the client
//!                            chosen != named ─► fallback ┘ insert_cookie: Set-Cookie
//! ```
//!
//! A draining server still takes its sticky clients ([`ServerShared::is_sticky_usable`]); a
//! server at its `max_connections` does not (the request would only queue behind it).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::sticky_table::{client_key, IpTable};
use super::{Padded, PoolShared, ServerShared};
use crate::config::{Sticky, StickyMode};
use crate::stats::Counter;

/// Entries `show sticky` lists at most.
pub const SHOW_LIMIT: usize = 100;

/// One shard's sticky counters for one pool (written by that shard only).
#[derive(Debug, Default)]
pub struct StickyCounts {
    /// The request named a server and went to it.
    pub hits: Counter,
    /// No route, an unknown route, or no table entry: balanced.
    pub misses: Counter,
    /// The named server could not take the request: balanced, and re-stuck.
    pub fallbacks: Counter,
    /// insert_cookie: responses given our Set-Cookie.
    pub inserted: Counter,
}

/// A pool's sticky state, shared by every shard.
#[derive(Debug)]
pub struct StickyShared {
    pub conf: Sticky,
    /// source_ip only.
    pub table: Option<IpTable>,
    counts: Box<[Padded<StickyCounts>]>,
}

/// What one request is stuck to, from [`StickyShared::resolve`] to [`StickyShared::settle`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticket {
    /// The server the request named (by route or table entry).
    pub named: Option<usize>,
    /// `named`, if it may take the request now: the balancer tries it first.
    pub target: Option<usize>,
    /// source_ip: the client's table key.
    pub client: Option<u64>,
}

/// What [`StickyShared::settle`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Hit,
    Miss,
    Fallback,
}

/// May `s` take a request stuck to it now?
pub fn takes_sticky(s: &ServerShared, now_ms: u64) -> bool {
    s.is_sticky_usable(now_ms)
        && s.max_connections
            .is_none_or(|m| s.conns.load(Ordering::Relaxed) < m)
}

impl StickyShared {
    pub fn new(conf: &Sticky, shards: usize) -> StickyShared {
        StickyShared {
            table: (conf.mode == StickyMode::SourceIp)
                .then(|| IpTable::new(conf.table_size, conf.ttl.as_secs().max(1))),
            conf: conf.clone(),
            counts: (0..shards.max(1)).map(|_| Padded::default()).collect(),
        }
    }

    pub fn counts(&self, shard: usize) -> &StickyCounts {
        &self.counts[shard.min(self.counts.len() - 1)].0
    }

    /// A ticket for a request that named server `named` (a cookie's route, or `None`).
    pub fn resolve_named(pool: &PoolShared, named: Option<usize>, now_ms: u64) -> Ticket {
        Ticket {
            named,
            target: named.filter(|&i| takes_sticky(&pool.servers[i], now_ms)),
            client: None,
        }
    }

    /// source_ip: a ticket from the client's table entry.
    pub fn resolve_client(&self, pool: &PoolShared, ip: IpAddr, now_ms: u64) -> Ticket {
        let Some(table) = &self.table else {
            return Ticket::default();
        };
        let key = client_key(ip);
        let named = table
            .get(key, IpTable::now_s(now_ms))
            .filter(|&i| i < pool.servers.len());
        Ticket {
            client: Some(key),
            ..Self::resolve_named(pool, named, now_ms)
        }
    }

    /// `chosen` will serve the request (it may still fail and another be tried: call again,
    /// nothing is counted twice that matters). Records a source_ip entry and counts; true
    /// when an insert_cookie response must carry our cookie (the request named no server, or
    /// one that did not serve it).
    pub fn remember(&self, t: &Ticket, chosen: usize, now_ms: u64) -> bool {
        if t.named == Some(chosen) {
            return false;
        }
        if let (Some(table), Some(key)) = (&self.table, t.client) {
            table.set(key, chosen, IpTable::now_s(now_ms));
        }
        self.conf.mode == StickyMode::InsertCookie
    }

    /// Count the outcome of a request that `chosen` served.
    pub fn settle(&self, shard: usize, t: &Ticket, chosen: usize) -> Settled {
        let c = self.counts(shard);
        let s = match t.named {
            None => Settled::Miss,
            Some(n) if n == chosen => Settled::Hit,
            Some(_) => Settled::Fallback,
        };
        match s {
            Settled::Hit => c.hits.add(1),
            Settled::Miss => c.misses.add(1),
            Settled::Fallback => c.fallbacks.add(1),
        }
        s
    }

    fn sum(&self, f: fn(&StickyCounts) -> &Counter) -> u64 {
        self.counts.iter().map(|c| f(&c.0).get()).sum()
    }

    /// `show sticky POOL`.
    pub fn render(&self, pool: &PoolShared, now_ms: u64) -> String {
        let mode = match self.conf.mode {
            StickyMode::AppCookie => "app_cookie",
            StickyMode::InsertCookie => "insert_cookie",
            StickyMode::SourceIp => "source_ip",
        };
        let mut out = format!("pool: {}\nmode: {mode}\n", pool.name);
        for (name, f) in COUNTERS {
            let per: Vec<String> = self
                .counts
                .iter()
                .map(|c| f(&c.0).get().to_string())
                .collect();
            let _ = writeln!(
                out,
                "{name}: {} (per shard: {})",
                self.sum(f),
                per.join(" ")
            );
        }
        match &self.table {
            Some(t) => {
                let _ = writeln!(out, "ttl_seconds: {}", self.conf.ttl.as_secs().max(1));
                out.push_str(&t.render(IpTable::now_s(now_ms), SHOW_LIMIT, &|i| {
                    pool.servers.get(i).map_or("?".into(), |s| s.name.clone())
                }));
            }
            None => {
                let _ = writeln!(out, "cookie: {}", self.conf.cookie);
                out.push_str("route server state\n");
                for s in pool.servers.iter().take(SHOW_LIMIT) {
                    let state = if takes_sticky(s, now_ms) {
                        "sticky"
                    } else {
                        "fallback"
                    };
                    let _ = writeln!(out, "{} {} {state}", s.route, s.name);
                }
            }
        }
        out
    }
}

type CounterOf = fn(&StickyCounts) -> &Counter;

const COUNTERS: [(&str, CounterOf); 4] = [
    ("hits", |c| &c.hits),
    ("misses", |c| &c.misses),
    ("fallbacks", |c| &c.fallbacks),
    ("inserted", |c| &c.inserted),
];

/// `show stats` lines: the sticky counters summed over every pool and shard.
pub fn render_stats<'a>(pools: impl Iterator<Item = &'a PoolShared>) -> String {
    let mut sums = [0u64; 4];
    for st in pools.filter_map(|p| p.sticky.as_ref()) {
        for (sum, (_, f)) in sums.iter_mut().zip(COUNTERS) {
            *sum += st.sum(f);
        }
    }
    let mut out = String::new();
    for (sum, (name, _)) in sums.iter().zip(COUNTERS) {
        let _ = writeln!(out, "sticky.{name}: {sum}");
    }
    out
}

/// `show sticky POOL`.
pub fn show(pools: &[std::sync::Arc<PoolShared>], args: &[&str]) -> Result<String, String> {
    let [name] = args else {
        return Err("expected POOL".into());
    };
    let p = pools
        .iter()
        .find(|p| p.name == *name)
        .ok_or_else(|| format!("no pool named '{name}'"))?;
    let st = p
        .sticky
        .as_ref()
        .ok_or_else(|| format!("pool '{name}' has no [pool.{name}.sticky]"))?;
    Ok(st.render(p, crate::rt::now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{test_pool, Admin, Balancer, Pick};
    use crate::config::Balance;
    use std::time::Duration;

    fn conf(mode: StickyMode) -> Sticky {
        Sticky {
            mode,
            cookie: "SGROUTE".into(),
            url_param: None,
            ttl: Duration::from_secs(60),
            table_size: 100,
            cookie_path: "/".into(),
            cookie_secure: false,
            cookie_httponly: true,
            cookie_samesite: None,
            cookie_max_age: None,
        }
    }

    fn first(pool: &PoolShared, t: &Ticket, now_ms: u64) -> Option<usize> {
        let mut b = Balancer::new(pool, 0);
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        let pick = Pick {
            now_ms,
            sticky: t.target,
            ..Pick::default()
        };
        b.candidates(pool, &pick, &mut scratch, &mut out);
        out.first().copied()
    }

    #[test]
    fn draining_keeps_sticky_clients_maint_and_down_and_full_fall_back() {
        let mut pool = test_pool(&[1, 1, 1], Balance::RoundRobin, 1);
        pool.sticky = Some(std::sync::Arc::new(StickyShared::new(
            &conf(StickyMode::InsertCookie),
            1,
        )));
        let st = pool.sticky.as_ref().unwrap();
        let now = 1000;
        let t = StickyShared::resolve_named(&pool, Some(2), now);
        assert_eq!(first(&pool, &t, now), Some(2));

        pool.servers[2].set_admin(Admin::Drain);
        let t = StickyShared::resolve_named(&pool, Some(2), now);
        assert_eq!(
            first(&pool, &t, now),
            Some(2),
            "drain keeps its sticky clients"
        );
        assert_eq!(
            first(&pool, &Ticket::default(), now),
            Some(0),
            "but no new ones"
        );
        assert_eq!(st.settle(0, &t, 2), Settled::Hit);
        assert!(!st.remember(&t, 2, now), "no new cookie for a hit");

        pool.servers[2].set_admin(Admin::Maint);
        let t = StickyShared::resolve_named(&pool, Some(2), now);
        assert_eq!(t.target, None);
        let chosen = first(&pool, &t, now).unwrap();
        assert_ne!(chosen, 2);
        assert_eq!(st.settle(0, &t, chosen), Settled::Fallback);
        assert!(st.remember(&t, chosen, now), "re-stick with a new cookie");

        pool.servers[2].set_admin(Admin::Ready);
        pool.servers[2].mark_down(now, 5000);
        assert_eq!(
            StickyShared::resolve_named(&pool, Some(2), now).target,
            None
        );
        assert_eq!(
            StickyShared::resolve_named(&pool, Some(2), now + 6000).target,
            Some(2)
        );

        assert_eq!(
            st.settle(0, &StickyShared::resolve_named(&pool, None, now), 1),
            Settled::Miss
        );
        let text = st.render(&pool, now);
        assert!(text.contains("hits: 1 (per shard: 1)"), "{text}");
        assert!(text.contains("fallbacks: 1 "), "{text}");
        assert!(text.contains("misses: 1 "), "{text}");
        assert!(text.contains("r2 s2 fallback\n"), "{text}");
    }

    #[test]
    fn a_server_at_max_connections_is_no_sticky_target() {
        let mut pool = test_pool(&[1, 1], Balance::RoundRobin, 1);
        let mut s = crate::balance::test_server(1, 1);
        s.max_connections = Some(2);
        pool.servers = vec![
            std::sync::Arc::new(ServerShared::new(&crate::balance::test_server(0, 1), 1)),
            std::sync::Arc::new(ServerShared::new(&s, 1)),
        ]
        .into();
        assert_eq!(
            StickyShared::resolve_named(&pool, Some(1), 5).target,
            Some(1)
        );
        pool.servers[1].conns.store(2, Ordering::Relaxed);
        assert_eq!(StickyShared::resolve_named(&pool, Some(1), 5).target, None);
    }

    #[test]
    fn source_ip_remembers_the_chosen_server_and_updates_it_on_fallback() {
        let pool = test_pool(&[1, 1], Balance::RoundRobin, 2);
        let st = StickyShared::new(&conf(StickyMode::SourceIp), 2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t = st.resolve_client(&pool, ip, 1000);
        assert_eq!(t.named, None);
        assert!(!st.remember(&t, 1, 1000), "no cookie in source_ip mode");
        // Another shard sees it at once.
        let t = st.resolve_client(&pool, ip, 1500);
        assert_eq!((t.named, t.target), (Some(1), Some(1)));
        assert_eq!(st.settle(1, &t, 1), Settled::Hit);
        pool.servers[1].set_admin(Admin::Maint);
        let t = st.resolve_client(&pool, ip, 2000);
        assert_eq!((t.named, t.target), (Some(1), None));
        st.remember(&t, 0, 2000);
        assert_eq!(st.resolve_client(&pool, ip, 2500).named, Some(0));
        let text = st.render(&pool, 3000);
        assert!(text.contains("entries: 1 (at most 100)"), "{text}");
        assert!(text.contains("\n192.0.2.7 s0 59\n"), "{text}");
    }
}
