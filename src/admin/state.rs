//! What the page shows, as one JSON document (`GET /api/state`), and the history behind its
//! chart.
//!
//! The rows come from the same builders as the control commands' JSON answers
//! ([`crate::control::data`]): the servers as `show servers` lists them, the sites as
//! `show traffic http`, the counters as `show stats`. Added here: request rates and the
//! latency percentiles ([`crate::metrics::latency`]; `null` until it has figures).
//!
//! The history is kept server-side, so a page opened now shows the last minutes: the sampler
//! thread reads every server's request total every [`SAMPLE_EVERY`] into a ring of
//! [`SAMPLES`] (about 10 minutes); rates are differences of consecutive samples.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::control::data;
use crate::metrics::{self, Percentiles, Scope};
use crate::shared::Shared;

/// How often request totals are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: 10 minutes and one more to make the first difference.
pub const SAMPLES: usize = 121;

/// One sample: when, and every server's request total by `pool/server`.
struct Sample {
    unix_ms: u64,
    totals: HashMap<String, u64>,
    /// Pool name → the sum of its servers' totals.
    pools: Vec<(String, u64)>,
}

/// The ring of samples.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Take one sample now.
    pub fn sample(&self, s: &Shared) {
        let gen = s.current();
        let mut totals = HashMap::new();
        let mut pools = Vec::with_capacity(gen.pools.len());
        for p in &gen.pools {
            let mut sum = 0;
            for sv in &p.servers {
                let n = sv.requests();
                sum += n;
                totals.insert(format!("{}/{}", p.name, sv.name), n);
            }
            pools.push((p.name.clone(), sum));
        }
        let mut ring = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() >= SAMPLES {
            ring.pop_front();
        }
        ring.push_back(Sample {
            unix_ms: unix_ms(),
            totals,
            pools,
        });
    }

    /// Requests per second of `key` (`pool/server`) between the last two samples.
    fn rate_of(ring: &VecDeque<Sample>, key: &str) -> Option<f64> {
        let (a, b) = last_two(ring)?;
        let (x, y) = (a.totals.get(key)?, b.totals.get(key)?);
        Some(rate(*x, *y, a.unix_ms, b.unix_ms))
    }

    fn pool_rate(ring: &VecDeque<Sample>, pool: &str) -> Option<f64> {
        let (a, b) = last_two(ring)?;
        let find = |s: &Sample| s.pools.iter().find(|(n, _)| n == pool).map(|(_, t)| *t);
        Some(rate(find(a)?, find(b)?, a.unix_ms, b.unix_ms))
    }

    /// Per pool, the rate between each pair of consecutive samples (`null` where the pool
    /// was not in both), with the sample times.
    fn series(ring: &VecDeque<Sample>) -> Value {
        let mut names: Vec<&str> = Vec::new();
        for s in ring {
            for (n, _) in &s.pools {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
        }
        let pairs: Vec<(&Sample, &Sample)> = ring.iter().zip(ring.iter().skip(1)).collect();
        let t: Vec<u64> = pairs.iter().map(|(_, b)| b.unix_ms).collect();
        let mut pools = serde_json::Map::new();
        for name in names {
            let find = |s: &Sample| s.pools.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
            let rates: Vec<Value> = pairs
                .iter()
                .map(|(a, b)| match (find(a), find(b)) {
                    (Some(x), Some(y)) => json!(round2(rate(x, y, a.unix_ms, b.unix_ms))),
                    _ => Value::Null,
                })
                .collect();
            pools.insert(name.to_owned(), Value::Array(rates));
        }
        json!({ "interval_s": SAMPLE_EVERY.as_secs(), "t": t, "pools": pools })
    }
}

fn last_two(ring: &VecDeque<Sample>) -> Option<(&Sample, &Sample)> {
    let n = ring.len();
    (n >= 2).then(|| (&ring[n - 2], &ring[n - 1]))
}

fn rate(before: u64, after: u64, t0: u64, t1: u64) -> f64 {
    let secs = t1.saturating_sub(t0) as f64 / 1000.0;
    if secs <= 0.0 {
        return 0.0;
    }
    after.saturating_sub(before) as f64 / secs
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sample every [`SAMPLE_EVERY`] until the daemon stops.
pub fn run_sampler(shared: Arc<Shared>, history: Arc<History>) {
    history.sample(&shared);
    let mut next = std::time::Instant::now() + SAMPLE_EVERY;
    while !shared.life.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if std::time::Instant::now() >= next {
            history.sample(&shared);
            next += SAMPLE_EVERY;
        }
    }
}

fn latency_json(p: Option<Percentiles>) -> Value {
    match p {
        Some(p) => json!({
            "count": p.count, "p50": p.p50, "p90": p.p90, "p99": p.p99, "p999": p.p999,
        }),
        None => Value::Null,
    }
}

/// `GET /api/state`: everything the page shows.
pub fn state(shared: &Arc<Shared>, history: &History, user: &str, role: &str) -> Value {
    let gen = shared.current();
    let ring = history.samples.lock().unwrap_or_else(|e| e.into_inner());
    let sites = data::table_json(&crate::control::http_traffic_text(shared));
    let sites = sites
        .get("rows")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let mut frontends = Vec::new();
    for f in &gen.config.http {
        let requests: u64 = sites
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["frontend"] == f.name.as_str())
            .filter_map(|r| r["requests"].as_u64())
            .sum();
        frontends.push(json!({
            "name": f.name, "kind": "http",
            "listen": f.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "requests": requests,
            "latency": latency_json(metrics::latency(shared, Scope::Frontend(&f.name))),
        }));
    }
    for f in &gen.config.mysql {
        frontends.push(json!({
            "name": f.name, "kind": "mysql",
            "listen": f.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "requests": Value::Null,
            "latency": latency_json(metrics::latency(shared, Scope::Frontend(&f.name))),
        }));
    }
    let rows = data::servers(shared);
    let servers: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut v {
                let key = format!("{}/{}", r.pool, r.server);
                o.insert(
                    "rate".into(),
                    json!(History::rate_of(&ring, &key).map(round2)),
                );
                o.insert(
                    "latency".into(),
                    latency_json(metrics::latency(shared, Scope::Server(&r.pool, &r.server))),
                );
            }
            v
        })
        .collect();
    let pools: Vec<Value> = gen
        .pools
        .iter()
        .map(|p| {
            let conf = gen.config.pools.iter().find(|c| c.name == p.name);
            json!({
                "name": p.name,
                "balance": conf.map(|c| format!("{:?}", c.balance)),
                "servers": p.servers.len(),
                "requests": p.servers.iter().map(|s| s.requests()).sum::<u64>(),
                "inflight": p.servers.iter().map(|s| u64::from(s.inflight())).sum::<u64>(),
                "queue": p.servers.iter().map(|s| u64::from(s.queue())).sum::<u64>(),
                "rate": History::pool_rate(&ring, &p.name).map(round2),
                "latency": latency_json(metrics::latency(shared, Scope::Pool(&p.name))),
            })
        })
        .collect();
    json!({
        "user": user,
        "role": role,
        "pid": std::process::id(),
        "generation": gen.number,
        "time_ms": unix_ms(),
        "frontends": frontends,
        "sites": sites,
        "pools": pools,
        "servers": servers,
        "stats": data::lines_json(&crate::control::stats_text(shared)),
        "history": History::series(&ring),
    })
}
