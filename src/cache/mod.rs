//! The HTTP cache (RFC 9111, a shared cache): [`policy`] decides what may be stored and served;
//! this module keeps what is stored. Thread-per-core: each shard has its own [`Zone`] per
//! configured cache (`size` split evenly between shards), so a hit takes no lock and touches no
//! memory another core writes; the price is that a hot object is stored once per shard (see
//! `docs/architecture.md`, "The cache"). What crosses shards: purges (a list every zone checks
//! with one atomic load per lookup, see [`Registry`]) and counters (single-writer atomics
//! summed when read).
//!
//! A zone maps a key (host + target) to the stored variants of that URL (one per `Vary`
//! outcome). When over its byte budget it evicts the least recently used entries, a tenth of
//! the budget at a time. Concurrent misses for one key wait for the first one's fetch
//! ([`Flight`]: request coalescing, nginx's `proxy_cache_lock`), at most `max_waiters` of them.

pub mod policy;
pub mod show;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::config::CacheConf;
use crate::stats::Counter;

/// Entry overhead counted against the budget besides its bytes (map slot, struct, vary).
const ENTRY_OVERHEAD: usize = 256;
/// Variants kept per URL; a `Vary` that splits further evicts the oldest.
const MAX_VARIANTS: usize = 8;
/// Purges remembered for zones that have not looked since; a zone further behind clears.
const PURGES_KEPT: usize = 1024;

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    pub status: u16,
    pub reason: Bytes,
    /// The end-to-end fields to send, each `Name: value\r\n` (no Age, Content-Length, hop-by-hop).
    pub fields: Bytes,
    pub body: Bytes,
    /// When the response arrived, ms since the epoch.
    pub response_ms: u64,
    /// Its age on arrival (§4.2.3), ms.
    pub initial_age_ms: u64,
    pub stored: policy::Stored,
    pub etag: Option<Bytes>,
    pub last_modified: Option<u64>,
    /// The request's values of the fields the response varies on, normalised (None: absent).
    pub vary: Vec<(Box<str>, Option<Vec<u8>>)>,
    /// A request that may be sent with Authorization may be served this (§3.5).
    pub auth_ok: bool,
    last_used: Cell<u64>,
    /// A stale-while-revalidate refresh is under way.
    pub updating: Cell<bool>,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        status: u16,
        reason: Bytes,
        fields: Bytes,
        body: Bytes,
        response_ms: u64,
        initial_age_ms: u64,
        stored: policy::Stored,
        etag: Option<Bytes>,
        last_modified: Option<u64>,
        vary: Vec<(Box<str>, Option<Vec<u8>>)>,
        auth_ok: bool,
    ) -> Entry {
        Entry {
            status,
            reason,
            fields,
            body,
            response_ms,
            initial_age_ms,
            stored,
            etag,
            last_modified,
            vary,
            auth_ok,
            last_used: Cell::new(0),
            updating: Cell::new(false),
        }
    }

    /// Current age (§4.2.3), ms.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        self.initial_age_ms
            .saturating_add(now_ms.saturating_sub(self.response_ms))
    }

    fn size(&self, key: &[u8]) -> usize {
        ENTRY_OVERHEAD + key.len() + self.reason.len() + self.fields.len() + self.body.len()
    }
}

/// A zone's counters (this shard's; single writer).
#[derive(Default)]
pub struct CacheStats {
    pub hit: Counter,
    pub miss: Counter,
    pub stale: Counter,
    pub revalidated: Counter,
    pub expired: Counter,
    pub bypass: Counter,
    pub stored: Counter,
    pub evicted: Counter,
    pub purged: Counter,
    pub coalesced: Counter,
    pub entries: AtomicU64,
    pub bytes: AtomicU64,
}

/// What a purge removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purge {
    /// Every variant stored under this key (host + target).
    Key(Vec<u8>),
    /// Every key starting with this.
    Prefix(Vec<u8>),
}

/// What crosses shards: purges to apply, and every zone's counters for `show cache`.
#[derive(Default)]
pub struct Registry {
    /// Number of the latest purge (0: none yet).
    gen: AtomicU64,
    purges: Mutex<Vec<(u64, Purge)>>,
    /// (shard, zone name, counters).
    stats: Mutex<Vec<(usize, String, Arc<CacheStats>)>>,
}

impl Registry {
    /// Queue a purge for every zone on every shard; each applies it before its next lookup.
    pub fn purge(&self, p: Purge) {
        let mut list = self.purges.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.gen.load(Ordering::Relaxed) + 1;
        list.push((n, p));
        if list.len() > PURGES_KEPT {
            let extra = list.len() - PURGES_KEPT;
            list.drain(..extra);
        }
        self.gen.store(n, Ordering::Release);
    }

    fn register(&self, shard: usize, zone: &str, stats: Arc<CacheStats>) {
        let mut list = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|(s, z, _)| !(*s == shard && z == zone));
        list.push((shard, zone.to_owned(), stats));
    }

    /// Drop shard `shard`'s counters of the zones `keep` refuses (a reload removed them).
    pub fn forget(&self, shard: usize, keep: impl Fn(&str) -> bool) {
        let mut list = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|(s, z, _)| *s != shard || keep(z));
    }

    /// Every zone's counters, by name, summed over shards.
    pub fn totals(&self) -> Vec<(String, ZoneTotals)> {
        let list = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, ZoneTotals)> = Vec::new();
        for (_, zone, s) in list.iter() {
            let i = match out.iter().position(|(z, _)| z == zone) {
                Some(i) => i,
                None => {
                    out.push((zone.clone(), ZoneTotals::default()));
                    out.len() - 1
                }
            };
            let t = &mut out[i].1;
            t.hit += s.hit.get();
            t.miss += s.miss.get();
            t.stale += s.stale.get();
            t.revalidated += s.revalidated.get();
            t.expired += s.expired.get();
            t.bypass += s.bypass.get();
            t.stored += s.stored.get();
            t.evicted += s.evicted.get();
            t.purged += s.purged.get();
            t.coalesced += s.coalesced.get();
            t.entries += s.entries.load(Ordering::Relaxed);
            t.bytes += s.bytes.load(Ordering::Relaxed);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// A zone's counters summed over shards.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZoneTotals {
    pub hit: u64,
    pub miss: u64,
    pub stale: u64,
    pub revalidated: u64,
    pub expired: u64,
    pub bypass: u64,
    pub stored: u64,
    pub evicted: u64,
    pub purged: u64,
    pub coalesced: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// One shard's part of a configured cache.
pub struct Zone {
    pub conf: Arc<CacheConf>,
    budget: usize,
    map: RefCell<HashMap<Vec<u8>, Vec<Rc<Entry>>>>,
    bytes: Cell<usize>,
    entries: Cell<usize>,
    flights: RefCell<HashMap<Vec<u8>, Rc<Flight>>>,
    pub stats: Arc<CacheStats>,
    clock: Cell<u64>,
    purge_seen: Cell<u64>,
    registry: Arc<Registry>,
    /// Bytes reserved by fills under way ([`Zone::fill`]).
    filling: Cell<usize>,
}

/// A reservation of fill memory; given back when dropped.
pub struct Fill {
    zone: Rc<Zone>,
    bytes: usize,
}

impl Drop for Fill {
    fn drop(&mut self) {
        let z = &self.zone;
        z.filling.set(z.filling.get().saturating_sub(self.bytes));
    }
}

impl Zone {
    pub fn new(conf: Arc<CacheConf>, shards: usize, shard: usize, registry: Arc<Registry>) -> Zone {
        let stats = Arc::new(CacheStats::default());
        registry.register(shard, &conf.zone, stats.clone());
        Zone {
            budget: (conf.size / shards.max(1) as u64) as usize,
            purge_seen: Cell::new(registry.gen.load(Ordering::Acquire)),
            conf,
            map: RefCell::new(HashMap::new()),
            bytes: Cell::new(0),
            entries: Cell::new(0),
            flights: RefCell::new(HashMap::new()),
            stats,
            clock: Cell::new(0),
            registry,
            filling: Cell::new(0),
        }
    }

    /// The largest object this zone stores (max_object, and never more than its budget).
    pub fn max_object(&self) -> u64 {
        self.conf.max_object.min(self.budget as u64)
    }

    /// Apply the purges queued since this zone last looked (one atomic load when none are).
    fn catch_up(&self) {
        let gen = self.registry.gen.load(Ordering::Acquire);
        let seen = self.purge_seen.get();
        if gen == seen {
            return;
        }
        let list = self
            .registry
            .purges
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let behind = list.first().is_some_and(|(n, _)| *n > seen + 1);
        let todo: Vec<Purge> = list
            .iter()
            .filter(|(n, _)| *n > seen)
            .map(|(_, p)| p.clone())
            .collect();
        drop(list);
        self.purge_seen.set(gen);
        if behind {
            // Purges were forgotten before this zone saw them: it cannot tell which keys they
            // named, so it forgets everything.
            let n = self.clear();
            self.stats.purged.add(n as u64);
            return;
        }
        for p in todo {
            let n = self.remove(&p);
            self.stats.purged.add(n as u64);
        }
    }

    /// The stored variant of `key` whose Vary values match the request's.
    pub fn lookup(
        &self,
        key: &[u8],
        request_value: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Option<Rc<Entry>> {
        self.catch_up();
        let map = self.map.borrow();
        let variants = map.get(key)?;
        // The most recent matching variant (§4.1), which is the last stored.
        let e = variants.iter().rev().find(|e| {
            e.vary
                .iter()
                .all(|(name, v)| request_value(name).as_deref() == v.as_deref())
        })?;
        let t = self.clock.get() + 1;
        self.clock.set(t);
        e.last_used.set(t);
        Some(e.clone())
    }

    /// Store `e` under `key`, replacing the variant with the same Vary values.
    pub fn insert(&self, key: &[u8], e: Entry) -> Rc<Entry> {
        self.catch_up();
        let t = self.clock.get() + 1;
        self.clock.set(t);
        e.last_used.set(t);
        let size = e.size(key);
        let e = Rc::new(e);
        {
            let mut map = self.map.borrow_mut();
            let variants = map.entry(key.to_vec()).or_default();
            let mut freed = 0;
            let mut gone = 0;
            variants.retain(|o| {
                let same = o.vary == e.vary;
                if same {
                    freed += o.size(key);
                    gone += 1;
                }
                !same
            });
            if variants.len() >= MAX_VARIANTS {
                let old = variants.remove(0);
                freed += old.size(key);
                gone += 1;
            }
            variants.push(e.clone());
            self.bytes.set(self.bytes.get() + size - freed);
            self.entries.set(self.entries.get() + 1 - gone);
        }
        self.stats.stored.add(1);
        if self.bytes.get() > self.budget {
            self.evict(self.budget - self.budget / 10);
        }
        self.publish();
        e
    }

    /// Remove what `p` names; returns how many entries went.
    pub fn remove(&self, p: &Purge) -> usize {
        let mut map = self.map.borrow_mut();
        let mut gone = 0;
        let mut freed = 0;
        let mut drop_key = |k: &[u8], v: &Vec<Rc<Entry>>| {
            gone += v.len();
            freed += v.iter().map(|e| e.size(k)).sum::<usize>();
        };
        match p {
            Purge::Key(k) => {
                if let Some(v) = map.remove(k.as_slice()) {
                    drop_key(k, &v);
                }
            }
            Purge::Prefix(pre) => map.retain(|k, v| {
                let hit = k.starts_with(pre);
                if hit {
                    drop_key(k, v);
                }
                !hit
            }),
        }
        drop(map);
        self.bytes.set(self.bytes.get() - freed);
        self.entries.set(self.entries.get() - gone);
        self.publish();
        gone
    }

    /// Is `e` still the stored copy it was (not purged, evicted or replaced)?
    pub fn is_stored(&self, key: &[u8], e: &Rc<Entry>) -> bool {
        self.map
            .borrow()
            .get(key)
            .is_some_and(|v| v.iter().any(|o| Rc::ptr_eq(o, e)))
    }

    /// How many purges have been queued (compared before storing a fetch that took a while).
    pub fn purges(&self) -> u64 {
        self.registry.gen.load(Ordering::Acquire)
    }

    /// Reserve `bytes` of this shard's budget for bodies being read to be stored (a quarter
    /// of the zone's size): `None` when it is spent, and the answer is relayed unstored.
    pub fn fill(self: &Rc<Self>, bytes: usize) -> Option<Fill> {
        let limit = (self.budget / 4).max(self.max_object() as usize);
        if self.filling.get() + bytes > limit {
            return None;
        }
        self.filling.set(self.filling.get() + bytes);
        Some(Fill {
            zone: self.clone(),
            bytes,
        })
    }

    /// Remove one entry (a stored variant that turned out unusable).
    pub fn remove_entry(&self, key: &[u8], e: &Rc<Entry>) {
        let mut map = self.map.borrow_mut();
        if let Some(v) = map.get_mut(key) {
            let before = v.len();
            v.retain(|o| !Rc::ptr_eq(o, e));
            if v.len() < before {
                self.bytes.set(self.bytes.get() - e.size(key));
                self.entries.set(self.entries.get() - 1);
            }
            if v.is_empty() {
                map.remove(key);
            }
        }
        drop(map);
        self.publish();
    }

    fn clear(&self) -> usize {
        let n = self.entries.get();
        self.map.borrow_mut().clear();
        self.bytes.set(0);
        self.entries.set(0);
        self.publish();
        n
    }

    /// Evict least recently used entries until at most `target` bytes are held.
    fn evict(&self, target: usize) {
        let mut map = self.map.borrow_mut();
        let mut all: Vec<(u64, Vec<u8>, usize)> = Vec::with_capacity(self.entries.get());
        for (k, v) in map.iter() {
            for (i, e) in v.iter().enumerate() {
                all.push((e.last_used.get(), k.clone(), i));
            }
        }
        all.sort_unstable_by_key(|(t, _, _)| *t);
        let mut bytes = self.bytes.get();
        let mut victims: Vec<(Vec<u8>, u64)> = Vec::new();
        for (t, k, _) in all {
            if bytes <= target {
                break;
            }
            if let Some(v) = map.get(&k) {
                if let Some(e) = v.iter().find(|e| e.last_used.get() == t) {
                    bytes -= e.size(&k);
                    victims.push((k, t));
                }
            }
        }
        let mut gone = 0;
        for (k, t) in victims {
            if let Some(v) = map.get_mut(&k) {
                let before = v.len();
                v.retain(|e| e.last_used.get() != t);
                gone += before - v.len();
                if v.is_empty() {
                    map.remove(&k);
                }
            }
        }
        self.bytes.set(bytes);
        self.entries.set(self.entries.get() - gone);
        self.stats.evicted.add(gone as u64);
    }

    fn publish(&self) {
        self.stats
            .entries
            .store(self.entries.get() as u64, Ordering::Relaxed);
        self.stats
            .bytes
            .store(self.bytes.get() as u64, Ordering::Relaxed);
    }

    /// Join the fetch already under way for `key`, if there is one and it has room for
    /// another waiter; otherwise become the one fetching (the guard ends the flight).
    pub fn join_or_lead(self: &Rc<Self>, key: &[u8]) -> Joined {
        if let Some(f) = self.flights.borrow().get(key) {
            if f.waiters.get() < self.conf.max_waiters {
                f.waiters.set(f.waiters.get() + 1);
                return Joined::Wait(FlightWait { f: f.clone() });
            }
            return Joined::Alone;
        }
        let f = Rc::new(Flight::default());
        self.flights.borrow_mut().insert(key.to_vec(), f.clone());
        Joined::Lead(FlightGuard {
            zone: self.clone(),
            key: key.to_vec(),
            f,
        })
    }
}

/// One fetch that other requests for the same key wait for.
#[derive(Default)]
pub struct Flight {
    done: Cell<bool>,
    waiters: Cell<usize>,
    wakers: RefCell<Vec<Waker>>,
}

/// What a miss does about a fetch of the same key under way.
pub enum Joined {
    /// Fetch, and let others wait for this fetch.
    Lead(FlightGuard),
    /// Wait for the fetch under way, then look again.
    Wait(FlightWait),
    /// Too many wait already: fetch alone.
    Alone,
}

/// Held by the request fetching a key; dropping it wakes the waiters.
pub struct FlightGuard {
    zone: Rc<Zone>,
    key: Vec<u8>,
    f: Rc<Flight>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flights = self.zone.flights.borrow_mut();
        if flights
            .get(&self.key)
            .is_some_and(|f| Rc::ptr_eq(f, &self.f))
        {
            flights.remove(&self.key);
        }
        drop(flights);
        self.f.done.set(true);
        for w in self.f.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// Resolves when the flight it waits for ends.
pub struct FlightWait {
    f: Rc<Flight>,
}

impl Future for FlightWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.f.done.get() {
            return Poll::Ready(());
        }
        self.f.wakers.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for FlightWait {
    fn drop(&mut self) {
        self.f.waiters.set(self.f.waiters.get().saturating_sub(1));
    }
}

/// A shard's zones, by name; a zone whose config changed starts empty.
#[derive(Default)]
pub struct Zones {
    map: RefCell<HashMap<String, Rc<Zone>>>,
}

impl Zones {
    pub fn get(
        &self,
        conf: &Arc<CacheConf>,
        shards: usize,
        shard: usize,
        registry: &Arc<Registry>,
    ) -> Rc<Zone> {
        if let Some(z) = self.map.borrow().get(&conf.zone) {
            if Arc::ptr_eq(&z.conf, conf) || *z.conf == **conf {
                return z.clone();
            }
        }
        let z = Rc::new(Zone::new(conf.clone(), shards, shard, registry.clone()));
        self.map.borrow_mut().insert(conf.zone.clone(), z.clone());
        z
    }

    /// Drop zones the config no longer has (their memory goes at once).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.map.borrow_mut().retain(|name, _| keep(name));
    }
}

/// The cache key of a request: the host (lower-case, with its port unless it is 80) and the
/// target.
pub fn key(host: &[u8], target: &[u8], out: &mut Vec<u8>) {
    out.clear();
    // The port stays in the key (the origin sees it in Host and may echo it); only the
    // default one goes, so `example.com` and `example.com:80` are one object.
    let name = host.strip_suffix(b":80").unwrap_or(host);
    out.extend(name.iter().map(u8::to_ascii_lowercase));
    out.extend_from_slice(if target.is_empty() { b"/" } else { target });
}

/// A request field's values as a Vary comparison sees them: every value joined by `,`,
/// whitespace around items removed; for the fields whose items are tokens a client orders
/// freely (`Accept-Encoding`, `Accept-Language`, `Accept`), items lower-cased and sorted.
pub fn vary_value<'a>(name: &str, values: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut any = false;
    for v in values {
        any = true;
        for item in crate::proto::http::cache_control::split_list(v) {
            let item: Vec<u8> = item.iter().copied().filter(|b| *b != b' ').collect();
            items.push(item);
        }
    }
    if !any {
        return None;
    }
    let sortable = ["accept-encoding", "accept-language", "accept"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n));
    if sortable {
        for i in &mut items {
            i.make_ascii_lowercase();
        }
        items.sort();
        items.dedup();
    }
    Some(items.join(&b","[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(size: u64) -> Arc<CacheConf> {
        Arc::new(CacheConf {
            zone: "z".into(),
            pool: "p".into(),
            size,
            max_object: size,
            status_header: true,
            max_waiters: 2,
        })
    }

    fn entry(body: usize, vary: Vec<(Box<str>, Option<Vec<u8>>)>) -> Entry {
        Entry::new(
            200,
            Bytes::from_static(b"OK"),
            Bytes::new(),
            Bytes::from(vec![b'x'; body]),
            0,
            0,
            policy::Stored {
                lifetime: 10,
                cc: Default::default(),
            },
            None,
            None,
            vary,
            false,
        )
    }

    #[test]
    fn store_lookup_vary_evict_purge() {
        let reg = Arc::new(Registry::default());
        let z = Rc::new(Zone::new(conf(10_000), 1, 0, reg.clone()));
        let none = |_: &str| None;
        assert!(z.lookup(b"h/a", &none).is_none());
        let gz = vec![("accept-encoding".into(), Some(b"gzip".to_vec()))];
        z.insert(b"h/a", entry(100, gz.clone()));
        z.insert(b"h/a", entry(100, vec![("accept-encoding".into(), None)]));
        let want_gz = |n: &str| (n == "accept-encoding").then(|| b"gzip".to_vec());
        assert!(z.lookup(b"h/a", &want_gz).is_some());
        assert!(z.lookup(b"h/a", &none).is_some());
        let br = |_: &str| Some(b"br".to_vec());
        assert!(z.lookup(b"h/a", &br).is_none());
        // Replacing a variant does not add one.
        z.insert(b"h/a", entry(100, gz));
        assert_eq!(z.entries.get(), 2);
        // Over budget: the least recently used go first.
        for i in 0..40 {
            z.insert(format!("h/k{i}").as_bytes(), entry(300, vec![]));
            assert!(z.bytes.get() <= 10_000);
        }
        assert!(z.lookup(b"h/k39", &none).is_some());
        assert!(z.lookup(b"h/k0", &none).is_none());
        assert!(z.stats.evicted.get() > 0);
        // Purges queued in the registry apply before the next lookup.
        reg.purge(Purge::Key(b"h/k39".to_vec()));
        assert!(z.lookup(b"h/k39", &none).is_none());
        reg.purge(Purge::Prefix(b"h/k".to_vec()));
        assert!(z.lookup(b"h/k38", &none).is_none());
        let bytes: usize = z
            .map
            .borrow()
            .iter()
            .map(|(k, v)| v.iter().map(|e| e.size(k)).sum::<usize>())
            .sum();
        assert_eq!(bytes, z.bytes.get(), "byte count matches what is stored");
    }

    #[test]
    fn flights_bound_waiters() {
        let reg = Arc::new(Registry::default());
        let z = Rc::new(Zone::new(conf(100_000), 1, 0, reg));
        let lead = match z.join_or_lead(b"k") {
            Joined::Lead(g) => g,
            _ => panic!("first is the leader"),
        };
        let w1 = z.join_or_lead(b"k");
        let w2 = z.join_or_lead(b"k");
        assert!(matches!(w1, Joined::Wait(_)) && matches!(w2, Joined::Wait(_)));
        assert!(
            matches!(z.join_or_lead(b"k"), Joined::Alone),
            "max_waiters = 2"
        );
        drop(lead);
        assert!(matches!(z.join_or_lead(b"k"), Joined::Lead(_)));
    }

    #[test]
    fn keys_and_vary_values() {
        let mut k = Vec::new();
        key(b"Example.COM:8080", b"/a?b", &mut k);
        assert_eq!(k, b"example.com:8080/a?b");
        key(b"Example.COM:80", b"/a?b", &mut k);
        assert_eq!(k, b"example.com/a?b");
        key(b"[::1]:80", b"", &mut k);
        assert_eq!(k, b"[::1]/");
        key(b"v.example:1337'x", b"/", &mut k);
        assert_eq!(k, b"v.example:1337'x/");
        let v = |s: &[&str]| vary_value("Accept-Encoding", s.iter().map(|x| x.as_bytes()));
        assert_eq!(v(&["gzip, deflate"]), v(&["deflate,GZIP"]));
        assert_ne!(v(&["gzip"]), v(&["br"]));
        assert_eq!(v(&[]), None);
        assert_eq!(
            vary_value("x-a", [&b"A, b"[..]].into_iter()),
            Some(b"A,b".to_vec())
        );
    }
}
