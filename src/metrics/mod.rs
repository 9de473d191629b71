//! Metrics: per-shard latency histograms merged when read, and the Prometheus exposition of
//! every counter the process keeps (`/metrics` on the admin listener).
//!
//! (Being written: the API below is what the admin listener and the control commands call.)

mod edge;
mod exposition;
pub mod histogram;
mod mysql;
pub(crate) mod prom;

use crate::shared::Shared;
use crate::stats::Counter;
use histogram::Histogram;

/// What one shard counts of the exchanges of one HTTP frontend or one server: responses by
/// status class, bytes, and the two latency histograms. Only that shard writes it.
#[derive(Default, Debug)]
pub struct ExchangeMetrics {
    /// Responses by status class: index 1..=5 for 1xx..5xx, 0 for exchanges that ended with
    /// nothing answered (the client left, or the server failed mid-response with no head).
    pub responses: [Counter; 6],
    /// Request bytes sent on (to the server; for a frontend, what its exchanges sent).
    pub bytes_in: Counter,
    /// Response bytes written to the client.
    pub bytes_out: Counter,
    /// Requests sent again (a fresh connection, or the next server after a refused connect).
    pub retries: Counter,
    /// Connects to the server that failed (the server was marked down).
    pub connect_failures: Counter,
    /// From the complete request head to the end of the exchange.
    pub total: Histogram,
    /// From the complete request head to the server's response head.
    pub first_byte: Histogram,
}

impl ExchangeMetrics {
    /// Count one finished exchange.
    #[inline]
    pub fn record(
        &self,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
        total_us: u64,
        first_byte_us: Option<u64>,
    ) {
        let class = (status / 100) as usize;
        self.responses[if class <= 5 { class } else { 0 }].add(1);
        self.bytes_in.add(bytes_in);
        self.bytes_out.add(bytes_out);
        self.total.record(total_us);
        if let Some(us) = first_byte_us {
            self.first_byte.record(us);
        }
    }
}

/// Latency percentiles of one scope, in seconds, and how many samples they come from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
}

/// What a latency figure is about.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Frontend(&'a str),
    Pool(&'a str),
    /// Pool name, server name.
    Server(&'a str, &'a str),
}

/// One frontend's or server's metrics summed over shards.
#[derive(Default, Clone)]
pub struct Merged {
    pub responses: [u64; 6],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub retries: u64,
    pub connect_failures: u64,
    pub total: histogram::Snapshot,
    pub first_byte: histogram::Snapshot,
}

impl Merged {
    pub fn add(&mut self, m: &ExchangeMetrics) {
        for (a, c) in self.responses.iter_mut().zip(m.responses.iter()) {
            *a += c.get();
        }
        self.bytes_in += m.bytes_in.get();
        self.bytes_out += m.bytes_out.get();
        self.retries += m.retries.get();
        self.connect_failures += m.connect_failures.get();
        m.total.add_to(&mut self.total);
        m.first_byte.add_to(&mut self.first_byte);
    }

    pub fn requests(&self) -> u64 {
        self.total.count()
    }
}

/// Every HTTP frontend's metrics, summed over shards: the running config's frontends first
/// (in its order), then any a reload removed that counted something.
pub fn frontends(shared: &Shared) -> Vec<(String, Merged)> {
    let gen = shared.current();
    let mut out: Vec<(String, Merged)> = gen
        .config
        .http
        .iter()
        .map(|f| (f.name.clone(), Merged::default()))
        .collect();
    for st in &shared.stats {
        let fronts =
            st.0.fronts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        for (name, m) in fronts {
            let i = match out.iter().position(|(n, _)| **n == *name) {
                Some(i) => i,
                None => {
                    out.push((name.to_string(), Merged::default()));
                    out.len() - 1
                }
            };
            out[i].1.add(&m);
        }
    }
    out
}

/// One server's metrics summed over shards.
pub fn server(s: &crate::balance::ServerShared) -> Merged {
    let mut m = Merged::default();
    for x in s.all_metrics() {
        m.add(x);
    }
    m
}

/// Latency percentiles (seconds) of a merged histogram.
pub fn percentiles(h: &histogram::Snapshot) -> Percentiles {
    Percentiles {
        count: h.count(),
        p50: h.quantile_us(0.5) / 1e6,
        p90: h.quantile_us(0.9) / 1e6,
        p99: h.quantile_us(0.99) / 1e6,
        p999: h.quantile_us(0.999) / 1e6,
    }
}

/// Total time of the HTTP requests of `scope`, merged over shards;
/// `None` when the scope is unknown. A pool's figure is its servers' together: requests
/// that never got a server (no route, none up) are in their frontend's figure only.
pub fn latency(shared: &Shared, scope: Scope) -> Option<Percentiles> {
    match scope {
        Scope::Frontend(name) => frontends(shared)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| percentiles(&m.total)),
        Scope::Pool(name) => {
            let gen = shared.current();
            let pool = gen.pool(name)?;
            let mut h = histogram::Snapshot::default();
            for s in pool.servers.iter() {
                h.merge(&server(s).total);
            }
            Some(percentiles(&h))
        }
        Scope::Server(pool, name) => {
            let gen = shared.current();
            let pool = gen.pool(pool)?;
            let s = pool.servers.iter().find(|s| s.name == name)?;
            Some(percentiles(&server(s).total))
        }
    }
}

/// Percentiles (seconds) of a MySQL user's HDR histogram of microseconds.
fn hdr_percentiles(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
    let q = |x: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(x) as f64 / 1e6
        }
    };
    Percentiles {
        count: h.len(),
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
    }
}

/// `show latency`: one line per frontend, pool, server and MySQL user: the count and the
/// percentiles of the total time, in milliseconds.
pub fn render_latency(shared: &Shared) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("scope name count p50_ms p90_ms p99_ms p999_ms\n");
    let mut line = |scope: &str, name: &str, p: Percentiles| {
        let _ = writeln!(
            out,
            "{scope} {name} {} {:.3} {:.3} {:.3} {:.3}",
            p.count,
            p.p50 * 1e3,
            p.p90 * 1e3,
            p.p99 * 1e3,
            p.p999 * 1e3
        );
    };
    for (name, _) in frontends(shared) {
        if let Some(l) = latency(shared, Scope::Frontend(&name)) {
            line("frontend", &name, l);
        }
    }
    let gen = shared.current();
    for p in &gen.pools {
        if let Some(l) = latency(shared, Scope::Pool(&p.name)) {
            line("pool", &p.name, l);
        }
    }
    for p in &gen.pools {
        for s in p.servers.iter() {
            if let Some(l) = latency(shared, Scope::Server(&p.name, &s.name)) {
                line("server", &format!("{}/{}", p.name, s.name), l);
            }
        }
    }
    let shards: Vec<&crate::proxy::mysql::MysqlShardStats> =
        shared.mysql_stats.iter().map(|s| &**s).collect();
    for (user, u) in crate::proxy::mysql::stats::merged_users(&shards) {
        let name = crate::proxy::mysql::stats::display_user(&user);
        line("mysql_user", &name, hdr_percentiles(&u.latency_us));
    }
    out
}

/// The Prometheus text exposition (format 0.0.4), or OpenMetrics 1.0 text when `open_metrics`.
pub fn render(shared: &Shared, open_metrics: bool) -> String {
    exposition::render(shared, open_metrics)
}
