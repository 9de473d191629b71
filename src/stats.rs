//! Counters. Every shard owns its own [`ShardStats`] and is its only writer, so a counter
//! update is a relaxed load + store on a cache line no other core writes; readers (the command
//! socket) sum the shards. Per-site HTTP traffic lives in a per-shard map behind a mutex that
//! only its shard and the occasional `show traffic` reader ever take, never another shard.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::balance::Padded;

/// Distinct sites kept per frontend per shard; further Host values are counted under `(other)`
/// so that a client inventing Host headers cannot grow memory without bound.
pub const MAX_SITES: usize = 1024;

/// A counter written by one thread only.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// nginx stub_status / URLSW style connection and request counters for one shard.
#[derive(Default, Debug)]
pub struct ShardStats {
    pub accepted: Counter,
    pub handled: Counter,
    pub active: Counter,
    pub requests: Counter,
    /// Connections reading a request head.
    pub reading: Counter,
    /// Connections with a request being proxied (upstream or writing the response).
    pub writing: Counter,
    /// Keep-alive connections idle between requests.
    pub waiting: Counter,
    /// Requests the proxy answered itself with an error status.
    pub errors: Counter,
    pub upstream_connects: Counter,
    pub upstream_reused: Counter,
    pub upstream_retries: Counter,
    /// Connection tasks that panicked (each closed its connection; the shard went on).
    pub panics: Counter,
    pub sites: Mutex<Vec<HashMap<Box<[u8]>, SiteTraffic>>>,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct SiteTraffic {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub time_total_us: u64,
}

impl ShardStats {
    pub fn new(http_frontends: usize) -> Padded<ShardStats> {
        let s = ShardStats::default();
        *s.sites.lock().unwrap_or_else(|e| e.into_inner()) = vec![HashMap::new(); http_frontends];
        Padded(s)
    }

    /// Account one finished request to `site` (lower-cased host without port) of frontend `fe`.
    pub fn record_site(&self, fe: usize, site: &[u8], bytes_in: u64, bytes_out: u64, time_us: u64) {
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        let Some(map) = sites.get_mut(fe) else { return };
        let entry = match map.get_mut(site) {
            Some(e) => e,
            None => {
                let key: &[u8] = if map.len() < MAX_SITES {
                    site
                } else {
                    b"(other)"
                };
                map.entry(key.into()).or_default()
            }
        };
        entry.requests += 1;
        entry.bytes_in += bytes_in;
        entry.bytes_out += bytes_out;
        entry.time_total_us += time_us;
    }
}

/// Lower-case `host` and strip a `:port` suffix (keeping `[v6]` literals whole) into `out`.
pub fn site_key(host: Option<&[u8]>, out: &mut Vec<u8>) {
    out.clear();
    let Some(h) = host else {
        out.push(b'-');
        return;
    };
    let h = if h.first() == Some(&b'[') {
        match memchr::memchr(b']', h) {
            Some(i) => &h[..=i],
            None => h,
        }
    } else {
        match memchr::memrchr(b':', h) {
            Some(i) => &h[..i],
            None => h,
        }
    };
    let h = h.strip_suffix(b".").unwrap_or(h);
    out.extend(h.iter().map(|b| b.to_ascii_lowercase()));
    if out.is_empty() {
        out.push(b'-');
    }
}

/// `show stats`: the counters summed over shards, one `name: value` per line.
pub fn render_stats(shards: &[std::sync::Arc<Padded<ShardStats>>]) -> String {
    let sum = |f: fn(&ShardStats) -> &Counter| shards.iter().map(|s| f(&s.0).get()).sum::<u64>();
    let mut out = String::new();
    let _ = writeln!(out, "shards: {}", shards.len());
    type Pick = fn(&ShardStats) -> &Counter;
    let rows: [(&str, Pick); 12] = [
        ("connections.active", |s| &s.active),
        ("connections.accepted", |s| &s.accepted),
        ("connections.handled", |s| &s.handled),
        ("requests", |s| &s.requests),
        ("connections.reading", |s| &s.reading),
        ("connections.writing", |s| &s.writing),
        ("connections.waiting", |s| &s.waiting),
        ("errors.proxy_answered", |s| &s.errors),
        ("upstream.connects", |s| &s.upstream_connects),
        ("upstream.reused", |s| &s.upstream_reused),
        ("upstream.retries", |s| &s.upstream_retries),
        ("connections.panicked", |s| &s.panics),
    ];
    for (name, f) in rows {
        let _ = writeln!(out, "{name}: {}", sum(f));
    }
    out
}

/// `show traffic http`: per frontend and site, summed over shards, sorted by site.
pub fn render_http_traffic(
    shards: &[std::sync::Arc<Padded<ShardStats>>],
    frontends: &[String],
) -> String {
    let mut merged: Vec<std::collections::BTreeMap<Vec<u8>, SiteTraffic>> =
        vec![Default::default(); frontends.len()];
    for s in shards {
        let sites = s.0.sites.lock().unwrap_or_else(|e| e.into_inner());
        for (fe, map) in sites.iter().enumerate() {
            for (site, t) in map {
                let m = merged[fe].entry(site.to_vec()).or_default();
                m.requests += t.requests;
                m.bytes_in += t.bytes_in;
                m.bytes_out += t.bytes_out;
                m.time_total_us += t.time_total_us;
            }
        }
    }
    let mut out =
        String::from("frontend site requests bytes_in bytes_out time_total_ms time_mean_ms\n");
    for (fe, map) in merged.iter().enumerate() {
        for (site, t) in map {
            let mean = if t.requests == 0 {
                0.0
            } else {
                t.time_total_us as f64 / t.requests as f64 / 1000.0
            };
            let _ = writeln!(
                out,
                "{} {} {} {} {} {:.3} {:.3}",
                frontends[fe],
                String::from_utf8_lossy(site),
                t.requests,
                t.bytes_in,
                t.bytes_out,
                t.time_total_us as f64 / 1000.0,
                mean
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_keys_fold_case_and_ports() {
        let mut out = Vec::new();
        for (host, want) in [
            (Some(&b"WWW.Example.com:8080"[..]), "www.example.com"),
            (Some(b"example.com."), "example.com"),
            (Some(b"[::1]:80"), "[::1]"),
            (Some(b""), "-"),
            (None, "-"),
        ] {
            site_key(host, &mut out);
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn sites_are_bounded_and_summed() {
        let shards: Vec<_> = (0..2)
            .map(|_| std::sync::Arc::new(ShardStats::new(1)))
            .collect();
        shards[0].0.record_site(0, b"a", 10, 20, 1000);
        shards[1].0.record_site(0, b"a", 1, 2, 3000);
        for i in 0..MAX_SITES + 5 {
            shards[0]
                .0
                .record_site(0, format!("h{i}").as_bytes(), 0, 0, 0);
        }
        assert_eq!(shards[0].0.sites.lock().unwrap()[0].len(), MAX_SITES + 1);
        let text = render_http_traffic(&shards, &["www".into()]);
        assert!(text.contains("\nwww a 2 11 22 4.000 2.000\n"), "{text}");
        assert!(text.contains("www (other) "), "{text}");
    }
}
