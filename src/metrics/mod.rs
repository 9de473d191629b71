//! Metrics: per-shard latency histograms merged when read, and the Prometheus exposition of
//! every counter the process keeps (`/metrics` on the admin listener).
//!
//! (Being written: the API below is what the admin listener and the control commands call.)

use crate::shared::Shared;

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
    MysqlUser(&'a str),
}

/// Total time of the requests (HTTP) or commands (MySQL) of `scope`, merged over shards;
/// `None` when the scope is unknown.
pub fn latency(shared: &Shared, scope: Scope) -> Option<Percentiles> {
    let _ = (shared, scope);
    None
}

/// The Prometheus text exposition (format 0.0.4), or OpenMetrics 1.0 text when `open_metrics`.
pub fn render(shared: &Shared, open_metrics: bool) -> String {
    let _ = (shared, open_metrics);
    String::new()
}
