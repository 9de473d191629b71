//! Per-query-digest statistics (`show digest mysql`), like ProxySQL's
//! `stats_mysql_query_digest` plus bytes. Each shard owns one [`DigestShard`]: a table keyed by
//! (digest hash, user, schema) behind a mutex that only its own shard and the occasional
//! `show digest mysql` reader take, once per finished statement. The control thread sums the
//! shards on read ([`merged`]).
//!
//! The table is bounded: [`MAX_DIGESTS`] entries per shard. When a new key arrives at the
//! bound, the least recently seen sixteenth of the entries is evicted at once (one pass over
//! the table per [`EVICT_BATCH`] insertions, not one per insertion), and counted in
//! `evicted`, which the output shows. The time histogram is a small log-scale one ([`TimeHist`],
//! 4 buckets per doubling, 512 bytes) rather than the per-user HdrHistogram of
//! [`super::stats`], which would cost 26 KB per entry (100 MB per shard at the bound).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::proto::mysql::digest::{fnv1a, Digest, FNV_START};

use super::stats::display_user;

/// Entries (digest, user, schema) kept per shard.
pub const MAX_DIGESTS: usize = 4096;
/// Entries evicted at once when a new one arrives at the bound.
pub const EVICT_BATCH: usize = MAX_DIGESTS / 16;
/// Buckets of [`TimeHist`]: 4 per doubling from 1 µs, the last one open (from about 1.1 h).
const BUCKETS: usize = 128;

/// Response times in µs, 4 log-scale buckets per doubling (each bucket 19% wide; a
/// percentile is reported as its bucket's middle, within ±10%).
#[derive(Clone, PartialEq, Eq)]
pub struct TimeHist {
    counts: [u32; BUCKETS],
}

impl Default for TimeHist {
    fn default() -> Self {
        TimeHist {
            counts: [0; BUCKETS],
        }
    }
}

impl std::fmt::Debug for TimeHist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeHist")
            .field("count", &self.count())
            .finish()
    }
}

impl TimeHist {
    fn bucket(us: u64) -> usize {
        let v = us.max(1);
        let e = 63 - v.leading_zeros() as usize;
        let sub = if e >= 2 {
            (v >> (e - 2)) & 3
        } else {
            (v << (2 - e)) & 3
        } as usize;
        (4 * e + sub).min(BUCKETS - 1)
    }

    /// The middle of bucket `i`, in µs.
    fn value(i: usize) -> f64 {
        let (e, sub) = (i / 4, (i % 4) as f64);
        let scale = (e as f64).exp2() / 4.0;
        ((4.0 + sub) * scale + (5.0 + sub) * scale) / 2.0
    }

    pub fn record(&mut self, us: u64) {
        let c = &mut self.counts[Self::bucket(us)];
        *c = c.saturating_add(1);
    }

    pub fn add(&mut self, o: &TimeHist) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| u64::from(*c)).sum()
    }

    /// The `q` quantile (0..=1) in µs; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Self::value(i);
            }
        }
        Self::value(BUCKETS - 1)
    }
}

/// What one finished statement (`COM_QUERY`, or one `COM_STMT_EXECUTE` of a prepared
/// statement) adds to its digest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The reply did not end with ERR (and the connection did not close under it).
    pub ok: bool,
    /// Rows of the result sets sent to the client.
    pub rows: u64,
    /// Client → server bytes of the command (packet headers included).
    pub bytes_in: u64,
    /// Server → client bytes of the reply.
    pub bytes_out: u64,
    /// From the first byte of the command to the last byte of its reply.
    pub elapsed_us: u64,
}

/// One (digest, user, schema) on one shard, or summed over shards.
#[derive(Debug, Clone)]
pub struct DigestStats {
    pub hash: u64,
    pub user: Box<[u8]>,
    pub schema: Option<Box<[u8]>>,
    pub text: Box<str>,
    pub count: u64,
    pub errors: u64,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub time_total_us: u64,
    pub time: TimeHist,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    /// Recency on its shard (larger = more recent), for eviction.
    tick: u64,
}

impl DigestStats {
    fn merge(&mut self, o: &DigestStats) {
        self.count += o.count;
        self.errors += o.errors;
        self.rows += o.rows;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.time_total_us += o.time_total_us;
        self.time.add(&o.time);
        self.first_seen = self.first_seen.min(o.first_seen);
        self.last_seen = self.last_seen.max(o.last_seen);
    }
}

#[derive(Debug, Default)]
struct Table {
    /// By a hash of (digest hash, user, schema); a collision shares the vector.
    map: HashMap<u64, Vec<DigestStats>>,
    len: usize,
    tick: u64,
    evicted: u64,
}

impl Table {
    /// Remove the [`EVICT_BATCH`] least recently seen entries.
    fn evict(&mut self) {
        let mut ticks: Vec<u64> = self.map.values().flatten().map(|e| e.tick).collect();
        if ticks.is_empty() {
            return;
        }
        let k = EVICT_BATCH.min(ticks.len()) - 1;
        let (_, &mut cut, _) = ticks.select_nth_unstable(k);
        let mut removed = 0;
        self.map.retain(|_, v| {
            let before = v.len();
            v.retain(|e| e.tick > cut);
            removed += before - v.len();
            !v.is_empty()
        });
        self.len -= removed;
        self.evicted += removed as u64;
    }
}

/// One shard's digest table.
#[derive(Debug, Default)]
pub struct DigestShard {
    table: Mutex<Table>,
}

fn key(hash: u64, user: &[u8], schema: Option<&[u8]>) -> u64 {
    let h = fnv1a(FNV_START, &hash.to_le_bytes());
    let h = fnv1a(h, &(user.len() as u64).to_le_bytes());
    let h = fnv1a(h, user);
    match schema {
        None => fnv1a(h, &[0]),
        Some(s) => fnv1a(fnv1a(h, &[1]), s),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl DigestShard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one finished statement of `digest` run by `user` with `schema` as default
    /// database (`None`: none selected).
    pub fn record(&self, user: &[u8], schema: Option<&[u8]>, digest: &Digest, o: &Outcome) {
        self.record_at(user, schema, digest, o, unix_now());
    }

    fn record_at(
        &self,
        user: &[u8],
        schema: Option<&[u8]>,
        digest: &Digest,
        o: &Outcome,
        now: u64,
    ) {
        let k = key(digest.hash, user, schema);
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.tick += 1;
        let tick = t.tick;
        let found = t.map.get_mut(&k).and_then(|v| {
            v.iter_mut().find(|e| {
                e.hash == digest.hash && &*e.user == user && e.schema.as_deref() == schema
            })
        });
        let e = match found {
            Some(e) => e,
            None => {
                if t.len >= MAX_DIGESTS {
                    t.evict();
                }
                t.len += 1;
                let v = t.map.entry(k).or_default();
                v.push(DigestStats {
                    hash: digest.hash,
                    user: user.into(),
                    schema: schema.map(Into::into),
                    text: digest.text.clone(),
                    count: 0,
                    errors: 0,
                    rows: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    time_total_us: 0,
                    time: TimeHist::default(),
                    first_seen: now,
                    last_seen: now,
                    tick,
                });
                let Some(e) = v.last_mut() else { return };
                e
            }
        };
        e.count += 1;
        e.errors += u64::from(!o.ok);
        e.rows = e.rows.saturating_add(o.rows);
        e.bytes_in = e.bytes_in.saturating_add(o.bytes_in);
        e.bytes_out = e.bytes_out.saturating_add(o.bytes_out);
        e.time_total_us = e.time_total_us.saturating_add(o.elapsed_us);
        e.time.record(o.elapsed_us);
        e.last_seen = now;
        e.tick = tick;
    }

    /// Entries held now, and entries evicted since start.
    pub fn sizes(&self) -> (usize, u64) {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        (t.len, t.evicted)
    }
}

/// Every shard's table summed by (digest, user, schema); plus entries held over all shards
/// and evicted in total. Each shard's lock is held only while its entries are added in.
pub fn merged(shards: &[&DigestShard]) -> (Vec<DigestStats>, usize, u64) {
    type Key = (u64, Box<[u8]>, Option<Box<[u8]>>);
    let mut all: BTreeMap<Key, DigestStats> = BTreeMap::new();
    let (mut held, mut evicted) = (0, 0);
    for s in shards {
        let t = s.table.lock().unwrap_or_else(|e| e.into_inner());
        held += t.len;
        evicted += t.evicted;
        for e in t.map.values().flatten() {
            match all.get_mut(&(e.hash, e.user.clone(), e.schema.clone())) {
                Some(m) => m.merge(e),
                None => {
                    all.insert((e.hash, e.user.clone(), e.schema.clone()), e.clone());
                }
            }
        }
    }
    let mut rows: Vec<DigestStats> = all.into_values().collect();
    rows.sort_by(|a, b| {
        b.time_total_us
            .cmp(&a.time_total_us)
            .then(b.count.cmp(&a.count))
            .then(a.hash.cmp(&b.hash))
            .then(a.user.cmp(&b.user))
            .then(a.schema.cmp(&b.schema))
    });
    (rows, held, evicted)
}

/// One line of `show digest mysql`, as the text shows it and the JSON carries it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DigestRow {
    /// The digest hash, 16 hex digits.
    pub digest: String,
    pub user: String,
    /// `-` when no default database was selected.
    pub schema: String,
    pub count: u64,
    pub errors: u64,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub time_total_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// RFC 3339 UTC.
    pub first_seen: String,
    pub last_seen: String,
    pub text: String,
}

/// The whole answer of `show digest mysql`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DigestReport {
    pub rows: Vec<DigestRow>,
    /// Entries held now, over all shards (one (digest, user, schema) on two shards is two).
    pub entries: usize,
    /// Entries evicted at the bound since start, over all shards.
    pub evicted: u64,
    pub max_per_shard: usize,
}

/// Three decimals, as the other tables show milliseconds.
fn ms(us: f64) -> f64 {
    (us / 1000.0 * 1000.0).round() / 1000.0
}

/// The rows of `show digest mysql`, sorted by total time, largest first.
pub fn report(shards: &[&DigestShard]) -> DigestReport {
    let (merged, entries, evicted) = merged(shards);
    let rows = merged
        .iter()
        .map(|e| DigestRow {
            digest: format!("{:016x}", e.hash),
            user: display_user(&e.user),
            schema: e.schema.as_deref().map_or_else(
                || "-".to_string(),
                |s| {
                    if s.is_empty() {
                        "-".to_string()
                    } else {
                        String::from_utf8_lossy(s).replace(char::is_whitespace, "_")
                    }
                },
            ),
            count: e.count,
            errors: e.errors,
            rows: e.rows,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            time_total_ms: ms(e.time_total_us as f64),
            p50_ms: ms(e.time.quantile(0.5)),
            p99_ms: ms(e.time.quantile(0.99)),
            first_seen: crate::control::utc(e.first_seen),
            last_seen: crate::control::utc(e.last_seen),
            text: e.text.replace(char::is_control, " "),
        })
        .collect();
    DigestReport {
        rows,
        entries,
        evicted,
        max_per_shard: MAX_DIGESTS,
    }
}

/// `show digest mysql` as text: a header, one line per (digest, user, schema) with the
/// statement text last (it has spaces), and a `digests` line with the table's size.
pub fn render(r: &DigestReport) -> String {
    let mut out = String::from(
        "digest user schema count errors rows bytes_in bytes_out time_total_ms p50_ms p99_ms \
         first_seen last_seen text\n",
    );
    for d in &r.rows {
        let _ = writeln!(
            out,
            "{} {} {} {} {} {} {} {} {:.3} {:.3} {:.3} {} {} {}",
            d.digest,
            d.user,
            d.schema,
            d.count,
            d.errors,
            d.rows,
            d.bytes_in,
            d.bytes_out,
            d.time_total_ms,
            d.p50_ms,
            d.p99_ms,
            d.first_seen,
            d.last_seen,
            d.text
        );
    }
    let _ = writeln!(
        out,
        "digests entries={} evicted={} max_per_shard={}",
        r.entries, r.evicted, r.max_per_shard
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mysql::digest::Normalizer;

    fn ok(rows: u64, us: u64) -> Outcome {
        Outcome {
            ok: true,
            rows,
            bytes_in: 40,
            bytes_out: 100,
            elapsed_us: us,
        }
    }

    #[test]
    fn histogram_buckets_and_quantiles() {
        for us in [
            0,
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            100,
            999,
            1000,
            123_456,
            3_600_000_000,
            u64::MAX,
        ] {
            let i = TimeHist::bucket(us);
            assert!(i < BUCKETS);
            let v = TimeHist::value(i);
            if (1..1u64 << 30).contains(&us) {
                assert!(
                    (v - us as f64).abs() <= 0.13 * us as f64 + 0.2,
                    "{us} -> {v}"
                );
            }
        }
        let mut h = TimeHist::default();
        for us in 1..=1000 {
            h.record(us);
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!((450.0..=560.0).contains(&p50), "{p50}");
        assert!((890.0..=1100.0).contains(&p99), "{p99}");
        assert_eq!(TimeHist::default().quantile(0.5), 0.0);
    }

    #[test]
    fn records_merge_across_shards_and_render() {
        let shards = [DigestShard::new(), DigestShard::new()];
        let sel = Normalizer::digest(b"SELECT * FROM t WHERE id = 1");
        let sel2 = Normalizer::digest(b"SELECT * FROM t WHERE id = 2");
        assert_eq!(sel, sel2);
        let ins = Normalizer::digest(b"INSERT INTO t VALUES (1,'a'),(2,'b')");
        shards[0].record_at(b"app", Some(b"shop"), &sel, &ok(1, 1000), 100);
        shards[1].record_at(b"app", Some(b"shop"), &sel2, &ok(3, 3000), 50);
        shards[1].record_at(b"app", None, &sel2, &ok(0, 10), 60);
        shards[0].record_at(
            b"app",
            Some(b"shop"),
            &ins,
            &Outcome {
                ok: false,
                ..ok(0, 100_000)
            },
            200,
        );
        shards[0].record_at(b"", Some(b"my db"), &ins, &ok(0, 5), 200);

        let r = report(&[&shards[0], &shards[1]]);
        assert_eq!(r.entries, 5);
        assert_eq!(r.evicted, 0);
        assert_eq!(r.rows.len(), 4);
        // Sorted by total time: the INSERT with 100 ms first.
        let i = &r.rows[0];
        assert_eq!(i.text, "INSERT INTO t VALUES (...)");
        assert_eq!((i.count, i.errors, i.time_total_ms), (1, 1, 100.0));
        let s = &r.rows[1];
        assert_eq!(s.digest, format!("{:016x}", sel.hash));
        assert_eq!((s.user.as_str(), s.schema.as_str()), ("app", "shop"));
        assert_eq!((s.count, s.errors, s.rows), (2, 0, 4));
        assert_eq!((s.bytes_in, s.bytes_out), (80, 200));
        assert_eq!(s.time_total_ms, 4.0);
        assert!((0.9..=1.1).contains(&s.p50_ms), "{}", s.p50_ms);
        assert!((2.7..=3.3).contains(&s.p99_ms), "{}", s.p99_ms);
        assert_eq!(s.first_seen, "1970-01-01T00:00:50Z");
        assert_eq!(s.last_seen, "1970-01-01T00:01:40Z");
        assert_eq!(r.rows[2].schema, "-");
        assert_eq!(
            (r.rows[3].user.as_str(), r.rows[3].schema.as_str()),
            ("(anonymous)", "my_db")
        );

        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[0].starts_with("digest user schema count "), "{text}");
        assert!(lines[0].ends_with(" last_seen text"), "{text}");
        let f: Vec<&str> = lines[2].splitn(14, ' ').collect();
        assert_eq!(
            &f[1..10],
            &[
                "app",
                "shop",
                "2",
                "0",
                "4",
                "80",
                "200",
                "4.000",
                &format!("{:.3}", s.p50_ms)
            ],
            "{text}"
        );
        assert_eq!(f[13], "SELECT * FROM t WHERE id = ?");
        assert_eq!(lines[5], "digests entries=5 evicted=0 max_per_shard=4096");
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["rows"][1]["count"], 2);
        assert_eq!(json["rows"][1]["text"], "SELECT * FROM t WHERE id = ?");
        assert_eq!(json["evicted"], 0);
    }

    #[test]
    fn bounded_with_eviction_of_the_least_recently_seen() {
        let s = DigestShard::new();
        let keep = Normalizer::digest(b"SELECT keep");
        s.record_at(b"u", None, &keep, &ok(0, 1), 1);
        for i in 0..MAX_DIGESTS + 10 {
            let d = Normalizer::digest(format!("SELECT c{i} FROM t").as_bytes());
            s.record_at(b"u", None, &d, &ok(0, 1), 2);
            // `keep` stays recent.
            s.record_at(b"u", None, &keep, &ok(0, 1), 2);
        }
        let (len, evicted) = s.sizes();
        assert!(len <= MAX_DIGESTS, "{len}");
        assert_eq!(len as u64 + evicted, MAX_DIGESTS as u64 + 11);
        assert_eq!(evicted, EVICT_BATCH as u64);
        let (rows, _, _) = merged(&[&s]);
        let k = rows.iter().find(|r| r.hash == keep.hash).map(|r| r.count);
        assert_eq!(k, Some(MAX_DIGESTS as u64 + 11));
        // The oldest went: c0 .. c(EVICT_BATCH-1).
        let c0 = Normalizer::digest(b"SELECT c0 FROM t");
        assert!(rows.iter().all(|r| r.hash != c0.hash));
        assert!(render(&report(&[&s])).contains(&format!(" evicted={EVICT_BATCH} ")));
    }
}
