//! Counters. Every shard owns its own [`ShardStats`] and is its only writer, so a counter
//! update is a relaxed load + store on a cache line no other core writes; readers (the command
//! socket) sum the shards.
//!
//! Per-site HTTP traffic: each site's counters are an `Arc<SiteCounters>` written by its shard
//! alone. The shard finds them in its own [`SiteTable`] (no lock on the request path); a new
//! site is also appended to the shard's registry in [`ShardStats::sites`], a mutex taken only
//! for that append and by a `show traffic` reader, which holds it just long enough to clone the
//! list of pointers and reads the counters after letting go.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::balance::Padded;

/// Distinct sites kept per frontend per shard; further Host values are counted under `(other)`
/// so that a client inventing Host headers cannot grow memory without bound.
pub const MAX_SITES: usize = 1024;

/// Longest site key kept (a DNS name has at most 253 bytes); longer Host values are counted
/// under `(other)`, so a site entry never holds a peer-sized key.
pub const MAX_SITE_KEY: usize = 255;

/// The key under which sites beyond the bounds are counted.
const OTHER: &[u8] = b"(other)";

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
    /// For a gauge its shard recomputes (the length of a list it owns).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// nginx stub_status / URLSW style connection and request counters for one shard.
#[derive(Default, Debug)]
pub struct ShardStats {
    pub accepted: Counter,
    /// Connections handed over by the process this one replaced (binary upgrade).
    pub adopted: Counter,
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
    /// Requests answered 503 because the heap was near `daemon.memory_limit`.
    pub shed_refused: Counter,
    /// Idle keep-alive connections closed to shed load near `daemon.memory_limit`.
    pub shed_idle_closed: Counter,
    /// WebSocket (and other upgraded) tunnels open; they hold no server slot.
    pub tunnels: Counter,
    /// Tunnels opened since start.
    pub tunnels_opened: Counter,
    /// Connection tasks that panicked (each closed its connection; the shard went on).
    pub panics: Counter,
    /// Access log lines thrown away because the writer was behind (`src/log/`).
    pub access_log_dropped: Counter,
    /// TLS handshakes that completed, full and resumed (by session ticket).
    pub tls_full: Counter,
    pub tls_resumed: Counter,
    /// Handshakes that failed, by [`TLS_FAILURES`] reason (in that order).
    pub tls_failed: [Counter; TLS_FAILURES.len()],
    /// PROXY headers accepted; connections refused for a bad or missing header, or from a
    /// peer outside `trusted_proxies`.
    pub proxy_accepted: Counter,
    pub proxy_bad: Counter,
    pub proxy_untrusted: Counter,
    /// Per frontend (by name, so that counts survive a reload that reorders or renames
    /// others), every site this shard has counted (see the module head).
    pub sites: Mutex<Vec<(Arc<str>, Vec<SiteEntry>)>>,
    /// Per HTTP frontend, by name (so they survive reloads): responses and latencies. A shard
    /// looks its own up when it builds its view of a generation, not per request.
    pub fronts: Mutex<Vec<(Arc<str>, Arc<crate::metrics::ExchangeMetrics>)>>,
}

/// A site's key and its counters, as registered for readers.
pub type SiteEntry = (Arc<[u8]>, Arc<SiteCounters>);

/// One site's traffic on one shard, written by that shard only.
#[derive(Default, Debug)]
pub struct SiteCounters {
    pub requests: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub time_total_us: Counter,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct SiteTraffic {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub time_total_us: u64,
}

impl ShardStats {
    pub fn new() -> Padded<ShardStats> {
        Padded(ShardStats::default())
    }

    /// The metrics of HTTP frontend `name` on this shard, made on first use.
    pub fn front_metrics(&self, name: &str) -> Arc<crate::metrics::ExchangeMetrics> {
        let mut fronts = self.fronts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = fronts.iter().find(|(n, _)| &**n == name) {
            return m.clone();
        }
        let m = Arc::new(crate::metrics::ExchangeMetrics::default());
        fronts.push((name.into(), m.clone()));
        m
    }

    fn register(&self, fe: &str, entry: SiteEntry) {
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        match sites.iter_mut().find(|(name, _)| &**name == fe) {
            Some((_, list)) => list.push(entry),
            None => sites.push((fe.into(), vec![entry])),
        }
    }
}

/// Why TLS handshakes fail, as counted (`rt::HandshakeError::reason`, plus the two the
/// preamble decides: a plain HTTP request on a TLS port, and the handshake timeout).
pub const TLS_FAILURES: [&str; 8] = [
    "timeout",
    "plain_http",
    "closed",
    "peer_alert",
    "incompatible",
    "no_certificate",
    "bad_certificate",
    "bad_message",
];

impl ShardStats {
    /// Count a failed handshake by its reason.
    pub fn tls_failure(&self, reason: &str) {
        let i = TLS_FAILURES
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(TLS_FAILURES.len() - 1);
        self.tls_failed[i].add(1);
    }
}

/// One frontend's sites on one shard, by key.
type SiteIndex = HashMap<Box<[u8]>, Arc<SiteCounters>>;

/// A shard's own index of its site counters, per frontend name; only the shard's thread
/// touches it. A connection keeps the counters it last used, so the lookup here happens only
/// when a connection names another site.
#[derive(Default)]
pub struct SiteTable {
    fronts: RefCell<HashMap<Arc<str>, SiteIndex>>,
}

impl SiteTable {
    /// The counters of `site` (lower-cased host without port) of frontend `fe`, made on first
    /// sight. A site beyond [`MAX_SITES`] or longer than [`MAX_SITE_KEY`] counts as `(other)`.
    pub fn counters(&self, stats: &ShardStats, fe: &str, site: &[u8]) -> Option<Arc<SiteCounters>> {
        let mut fronts = self.fronts.borrow_mut();
        if !fronts.contains_key(fe) {
            fronts.insert(fe.into(), HashMap::new());
        }
        let map = fronts.get_mut(fe)?;
        if let Some(c) = map.get(site) {
            return Some(c.clone());
        }
        let key = if map.len() < MAX_SITES && site.len() <= MAX_SITE_KEY {
            site
        } else {
            OTHER
        };
        let c = map.entry(key.into()).or_insert_with(|| {
            let c = Arc::new(SiteCounters::default());
            stats.register(fe, (Arc::from(key), c.clone()));
            c
        });
        Some(c.clone())
    }
}

impl SiteCounters {
    /// Account one finished request.
    pub fn add(&self, bytes_in: u64, bytes_out: u64, time_us: u64) {
        self.requests.add(1);
        self.bytes_in.add(bytes_in);
        self.bytes_out.add(bytes_out);
        self.time_total_us.add(time_us);
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
    let rows: [(&str, Pick); 16] = [
        ("connections.active", |s| &s.active),
        ("connections.accepted", |s| &s.accepted),
        ("connections.adopted", |s| &s.adopted),
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
        ("tunnels.open", |s| &s.tunnels),
        ("shed.refused", |s| &s.shed_refused),
        ("shed.idle_closed", |s| &s.shed_idle_closed),
    ];
    for (name, f) in rows {
        let _ = writeln!(out, "{name}: {}", sum(f));
    }
    let _ = writeln!(
        out,
        "access_log.dropped: {}",
        sum(|s| &s.access_log_dropped) + crate::log::writer_dropped()
    );
    let _ = writeln!(out, "tls.mode: user space (rustls)");
    let _ = writeln!(out, "tls.kernel_tls: {}", crate::tls::ktls_support());
    let _ = writeln!(out, "tls.handshakes.full: {}", sum(|s| &s.tls_full));
    let _ = writeln!(out, "tls.handshakes.resumed: {}", sum(|s| &s.tls_resumed));
    for (i, reason) in TLS_FAILURES.iter().enumerate() {
        let n: u64 = shards.iter().map(|s| s.0.tls_failed[i].get()).sum();
        let _ = writeln!(out, "tls.failed.{reason}: {n}");
    }
    let _ = writeln!(
        out,
        "proxy_protocol.accepted: {}",
        sum(|s| &s.proxy_accepted)
    );
    let _ = writeln!(out, "proxy_protocol.bad: {}", sum(|s| &s.proxy_bad));
    let _ = writeln!(
        out,
        "proxy_protocol.untrusted: {}",
        sum(|s| &s.proxy_untrusted)
    );
    let _ = writeln!(out, "memory.held_bytes: {}", crate::mem::held());
    let _ = writeln!(out, "memory.allocations: {}", crate::mem::allocations());
    let _ = writeln!(out, "memory.limit_bytes: {}", crate::mem::limit());
    let _ = writeln!(out, "memory.level: {}", crate::mem::level().name());
    let _ = writeln!(out, "memory.shed_episodes: {}", crate::mem::episodes());
    out
}

/// One frontend's sites and their traffic, sorted by site.
pub type SiteMap = BTreeMap<Arc<[u8]>, SiteTraffic>;

/// Per-site HTTP traffic summed over shards, per frontend: the frontends in `frontends` order
/// (the running config's), then any other frontend that counted traffic (one a reload
/// removed), by name; sites sorted.
pub fn http_traffic(
    shards: &[std::sync::Arc<Padded<ShardStats>>],
    frontends: &[String],
) -> Vec<(Arc<str>, SiteMap)> {
    let mut out: Vec<(Arc<str>, SiteMap)> = frontends
        .iter()
        .map(|f| (Arc::from(f.as_str()), BTreeMap::new()))
        .collect();
    for s in shards {
        // Only pointers are copied under the lock; the counters are read after it.
        let lists = s.0.sites.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (name, list) in lists.iter() {
            let fe = match out.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    out.push((name.clone(), BTreeMap::new()));
                    out.len() - 1
                }
            };
            let m = &mut out[fe].1;
            for (site, c) in list {
                let t = m.entry(site.clone()).or_default();
                t.requests += c.requests.get();
                t.bytes_in += c.bytes_in.get();
                t.bytes_out += c.bytes_out.get();
                t.time_total_us += c.time_total_us.get();
            }
        }
    }
    out
}

/// `show traffic http`: [`http_traffic`] as a table.
pub fn render_http_traffic(
    shards: &[std::sync::Arc<Padded<ShardStats>>],
    frontends: &[String],
) -> String {
    let merged = http_traffic(shards, frontends);
    let mut out =
        String::from("frontend site requests bytes_in bytes_out time_total_ms time_mean_ms\n");
    for (fe, map) in &merged {
        for (site, t) in map {
            let mean = if t.requests == 0 {
                0.0
            } else {
                t.time_total_us as f64 / t.requests as f64 / 1000.0
            };
            let _ = writeln!(
                out,
                "{} {} {} {} {} {:.3} {:.3}",
                fe,
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
        let shards: Vec<_> = (0..2).map(|_| Arc::new(ShardStats::new())).collect();
        let tables: Vec<_> = (0..2).map(|_| SiteTable::default()).collect();
        let record = |shard: usize, site: &[u8], i: u64, o: u64, t: u64| {
            let c = tables[shard]
                .counters(&shards[shard].0, "www", site)
                .unwrap();
            c.add(i, o, t);
        };
        record(0, b"a", 10, 20, 1000);
        record(1, b"a", 1, 2, 3000);
        for i in 0..MAX_SITES + 5 {
            record(0, format!("h{i}").as_bytes(), 0, 0, 0);
        }
        // A key longer than a DNS name is never stored.
        record(1, &[b'x'; MAX_SITE_KEY + 1], 1, 1, 1);
        assert_eq!(shards[0].0.sites.lock().unwrap()[0].1.len(), MAX_SITES + 1);
        assert_eq!(shards[1].0.sites.lock().unwrap()[0].1.len(), 2);
        // A frontend the running config no longer has is still shown, after the others.
        tables[1]
            .counters(&shards[1].0, "old", b"b")
            .unwrap()
            .add(1, 1, 1);
        let text = render_http_traffic(&shards, &["www".into()]);
        assert!(text.ends_with("old b 1 1 1 0.001 0.001\n"), "{text}");
        assert!(text.contains("\nwww a 2 11 22 4.000 2.000\n"), "{text}");
        assert!(text.contains("www (other) 7 1 1 "), "{text}");
        assert!(!text.contains("xxx"), "{text}");
    }
}
