//! Every family `/metrics` exports (names documented in `docs/metrics.md`; the Grafana
//! dashboard in `config/` uses them): here, with the TLS and PROXY families in `edge.rs` and
//! the MySQL ones in `mysql.rs`.

use std::time::UNIX_EPOCH;

use super::prom::{Kind, Writer};
use super::{frontends, server, Merged};
use crate::shared::Shared;
use crate::stats::{Counter, ShardStats};

const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

pub fn render(shared: &Shared, open_metrics: bool) -> String {
    let mut w = Writer::new(open_metrics);
    process(&mut w, shared);
    shards(&mut w, shared);
    http_frontends(&mut w, shared);
    sites(&mut w, shared);
    pools_and_servers(&mut w, shared);
    crate::cache::show::metrics(&mut w, shared);
    super::edge::metrics(&mut w, shared);
    super::mysql::metrics(&mut w, shared);
    w.finish()
}

fn process(w: &mut Writer, shared: &Shared) {
    let gen = shared.current();
    w.family("shardgate_build_info", Kind::Gauge, "The running version.");
    w.sample(
        "shardgate_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    let secs = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    w.family(
        "shardgate_start_time_seconds",
        Kind::Gauge,
        "When this process started (unix time).",
    );
    w.sample("shardgate_start_time_seconds", &[], secs(shared.started));
    w.family(
        "shardgate_config_generation",
        Kind::Gauge,
        "The running config generation (1 at start, +1 per reload or runtime change).",
    );
    w.sample("shardgate_config_generation", &[], gen.number as f64);
    w.family(
        "shardgate_config_loaded_timestamp_seconds",
        Kind::Gauge,
        "When the running config generation was applied (unix time).",
    );
    w.sample(
        "shardgate_config_loaded_timestamp_seconds",
        &[],
        secs(gen.loaded_at),
    );
    w.family(
        "shardgate_upgrades",
        Kind::Gauge,
        "Binary upgrades since the first process of this tree started.",
    );
    w.sample(
        "shardgate_upgrades",
        &[],
        shared
            .upgrade
            .upgrades
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    os_process(w);
    w.family(
        "shardgate_memory_held_bytes",
        Kind::Gauge,
        "Heap bytes held (the figure daemon.memory_limit is checked against).",
    );
    w.sample(
        "shardgate_memory_held_bytes",
        &[],
        crate::mem::held() as f64,
    );
    w.family(
        "shardgate_memory_allocations",
        Kind::Counter,
        "Heap allocations (and reallocations) made by the process since it started.",
    );
    w.sample(
        "shardgate_memory_allocations_total",
        &[],
        crate::mem::allocations() as f64,
    );
    w.family(
        "shardgate_memory_limit_bytes",
        Kind::Gauge,
        "daemon.memory_limit (0: none).",
    );
    w.sample(
        "shardgate_memory_limit_bytes",
        &[],
        crate::mem::limit() as f64,
    );
}

/// The process metrics every Prometheus client library exports (`process_*`), from /proc.
fn os_process(w: &mut Writer) {
    // SAFETY: sysconf(3) with a valid name has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // stat(5) fields 14 and 15 (utime, stime) and 24 (rss) are 11, 12 and 21 here (the state,
    // field 3, is index 0).
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    if let (Some(user), Some(system)) = (field(11), field(12)) {
        if ticks > 0 {
            w.family(
                "process_cpu_seconds",
                Kind::Counter,
                "User and system CPU time spent.",
            );
            w.sample(
                "process_cpu_seconds_total",
                &[],
                (user + system) / ticks as f64,
            );
        }
    }
    if let Some(rss) = field(21) {
        w.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size.",
        );
        w.sample("process_resident_memory_bytes", &[], rss * page as f64);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        w.family("process_open_fds", Kind::Gauge, "Open file descriptors.");
        w.sample("process_open_fds", &[], dir.count() as f64);
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        w.family(
            "process_max_fds",
            Kind::Gauge,
            "The open file descriptor limit.",
        );
        w.sample("process_max_fds", &[], lim.rlim_cur as f64);
    }
}

/// Per-shard counters, labelled `shard`.
fn shards(w: &mut Writer, shared: &Shared) {
    type Pick = fn(&ShardStats) -> &Counter;
    let counters: [(&str, &str, Pick); 12] = [
        (
            "shardgate_connections_accepted",
            "Client connections accepted.",
            |s| &s.accepted,
        ),
        (
            "shardgate_connections_adopted",
            "Idle client connections handed over by the process this one replaced.",
            |s| &s.adopted,
        ),
        (
            "shardgate_connections_handled",
            "Client connections served to their end.",
            |s| &s.handled,
        ),
        (
            "shardgate_requests",
            "HTTP requests read (every exchange started).",
            |s| &s.requests,
        ),
        (
            "shardgate_proxy_errors",
            "Requests the proxy answered itself with an error status.",
            |s| &s.errors,
        ),
        (
            "shardgate_upstream_connects",
            "Connections opened to servers.",
            |s| &s.upstream_connects,
        ),
        (
            "shardgate_upstream_reused",
            "Requests sent on an idle server connection.",
            |s| &s.upstream_reused,
        ),
        (
            "shardgate_upstream_retries",
            "Requests sent again on a fresh server connection.",
            |s| &s.upstream_retries,
        ),
        (
            "shardgate_connection_panics",
            "Connection tasks that panicked (each closed its connection only).",
            |s| &s.panics,
        ),
        (
            "shardgate_shed_refused",
            "Requests answered 503 near daemon.memory_limit.",
            |s| &s.shed_refused,
        ),
        (
            "shardgate_shed_idle_closed",
            "Idle connections closed near daemon.memory_limit.",
            |s| &s.shed_idle_closed,
        ),
        (
            "shardgate_tunnels",
            "WebSocket and other upgraded tunnels opened.",
            |s| &s.tunnels_opened,
        ),
    ];
    let ids: Vec<String> = (0..shared.stats.len()).map(|i| i.to_string()).collect();
    for (name, help, pick) in counters {
        w.family(name, Kind::Counter, help);
        let total = format!("{name}_total");
        for (id, st) in ids.iter().zip(&shared.stats) {
            w.sample(&total, &[("shard", id)], pick(&st.0).get() as f64);
        }
    }
    w.family(
        "shardgate_access_log_dropped",
        Kind::Counter,
        "Access log lines dropped because the writer fell behind (never blocking a request).",
    );
    let dropped: u64 = shared
        .stats
        .iter()
        .map(|s| s.0.access_log_dropped.get())
        .sum::<u64>()
        + crate::log::writer_dropped();
    w.sample("shardgate_access_log_dropped_total", &[], dropped as f64);
    let gauges: [(&str, &str, Pick); 2] = [
        (
            "shardgate_connections_active",
            "Client connections open.",
            |s| &s.active,
        ),
        ("shardgate_tunnels_open", "Upgraded tunnels open.", |s| {
            &s.tunnels
        }),
    ];
    for (name, help, pick) in gauges {
        w.family(name, Kind::Gauge, help);
        for (id, st) in ids.iter().zip(&shared.stats) {
            w.sample(name, &[("shard", id)], pick(&st.0).get() as f64);
        }
    }
    w.family(
        "shardgate_connections",
        Kind::Gauge,
        "HTTP client connections by phase: reading a head, writing (a request in progress), waiting (idle keep-alive).",
    );
    let phases: [(&str, Pick); 3] = [
        ("reading", |s| &s.reading),
        ("writing", |s| &s.writing),
        ("waiting", |s| &s.waiting),
    ];
    for (state, pick) in phases {
        let n: u64 = shared.stats.iter().map(|s| pick(&s.0).get()).sum();
        w.sample("shardgate_connections", &[("state", state)], n as f64);
    }
}

/// The families of an exchange scope (frontend or server), with `prefix` and `labels`.
fn exchange(
    w: &mut Writer,
    prefix: &str,
    rows: &[(Vec<(&str, &str)>, &Merged)],
    with_upstream: bool,
) {
    let requests = format!("{prefix}_requests");
    let responses = format!("{prefix}_responses");
    let bytes_in = format!("{prefix}_bytes_in");
    let bytes_out = format!("{prefix}_bytes_out");
    w.family(
        &responses,
        Kind::Counter,
        "Finished exchanges by status class of the answer the client got (none: nothing answered).",
    );
    for (labels, m) in rows {
        for (class, n) in CLASSES.iter().zip(m.responses) {
            let mut l = labels.clone();
            l.push(("code", class));
            w.sample(&format!("{responses}_total"), &l, n as f64);
        }
    }
    w.family(&bytes_in, Kind::Counter, "Request bytes sent to servers.");
    for (labels, m) in rows {
        w.sample(&format!("{bytes_in}_total"), labels, m.bytes_in as f64);
    }
    w.family(
        &bytes_out,
        Kind::Counter,
        "Response bytes written to clients.",
    );
    for (labels, m) in rows {
        w.sample(&format!("{bytes_out}_total"), labels, m.bytes_out as f64);
    }
    if with_upstream {
        let retries = format!("{prefix}_retries");
        w.family(
            &retries,
            Kind::Counter,
            "Requests sent again on a fresh connection to the server.",
        );
        for (labels, m) in rows {
            w.sample(&format!("{retries}_total"), labels, m.retries as f64);
        }
        let failures = format!("{prefix}_connect_failures");
        w.family(
            &failures,
            Kind::Counter,
            "Connects to the server that failed.",
        );
        for (labels, m) in rows {
            w.sample(
                &format!("{failures}_total"),
                labels,
                m.connect_failures as f64,
            );
        }
    } else {
        w.family(
            &requests,
            Kind::Counter,
            "Finished exchanges (equal to the count of the duration histogram).",
        );
        for (labels, m) in rows {
            w.sample(&format!("{requests}_total"), labels, m.requests() as f64);
        }
    }
    let total = format!("{prefix}_request_duration_seconds");
    w.family(
        &total,
        Kind::Histogram,
        "From the complete request head to the end of the exchange.",
    );
    for (labels, m) in rows {
        w.histogram(&total, labels, &m.total);
    }
    let first = format!("{prefix}_first_byte_seconds");
    w.family(
        &first,
        Kind::Histogram,
        "From the complete request head to the server's response head.",
    );
    for (labels, m) in rows {
        w.histogram(&first, labels, &m.first_byte);
    }
}

fn http_frontends(w: &mut Writer, shared: &Shared) {
    let fronts = frontends(shared);
    let rows: Vec<(Vec<(&str, &str)>, &Merged)> = fronts
        .iter()
        .map(|(n, m)| (vec![("frontend", n.as_str())], m))
        .collect();
    exchange(w, "shardgate_http", &rows, false);
}

fn sites(w: &mut Writer, shared: &Shared) {
    let gen = shared.current();
    let names: Vec<String> = gen.config.http.iter().map(|f| f.name.clone()).collect();
    let traffic = crate::stats::http_traffic(&shared.stats, &names);
    type Pick = fn(&crate::stats::SiteTraffic) -> f64;
    let families: [(&str, &str, Pick); 4] = [
        ("shardgate_site_requests", "Requests per site (Host without port; at most 1024 per frontend and shard, the rest under (other)).", |t| t.requests as f64),
        ("shardgate_site_bytes_in", "Request bytes per site.", |t| t.bytes_in as f64),
        ("shardgate_site_bytes_out", "Response bytes per site.", |t| t.bytes_out as f64),
        ("shardgate_site_time_seconds", "Total response time per site.", |t| t.time_total_us as f64 / 1e6),
    ];
    for (name, help, pick) in families {
        w.family(name, Kind::Counter, help);
        let total = format!("{name}_total");
        for (fe, map) in &traffic {
            for (site, t) in map {
                let site = String::from_utf8_lossy(site);
                w.sample(&total, &[("frontend", fe), ("site", &site)], pick(t));
            }
        }
    }
}

fn pools_and_servers(w: &mut Writer, shared: &Shared) {
    let gen = shared.current();
    let now = crate::rt::now_ms();
    let merged: Vec<Vec<Merged>> = gen
        .pools
        .iter()
        .map(|p| p.servers.iter().map(|s| server(s)).collect())
        .collect();
    // Pools: their servers together.
    let pools: Vec<Merged> = merged
        .iter()
        .map(|servers| {
            let mut m = Merged::default();
            for s in servers {
                m.total.merge(&s.total);
                m.first_byte.merge(&s.first_byte);
            }
            m
        })
        .collect();
    w.family("shardgate_pool_requests", Kind::Counter, "Requests sent to the pool's servers (every record of each, carried across reloads and upgrades).");
    for p in &gen.pools {
        let n: u64 = p.servers.iter().map(|s| s.requests()).sum();
        w.sample(
            "shardgate_pool_requests_total",
            &[("pool", &p.name)],
            n as f64,
        );
    }
    w.family(
        "shardgate_pool_servers_up",
        Kind::Gauge,
        "Servers of the pool that take requests now.",
    );
    for p in &gen.pools {
        let n = p
            .servers
            .iter()
            .filter(|s| s.state_name(now) == "up")
            .count();
        w.sample("shardgate_pool_servers_up", &[("pool", &p.name)], n as f64);
    }
    for (name, help, first) in [
        ("shardgate_pool_request_duration_seconds", "From the complete request head to the end of the exchange, requests that got a server of the pool.", false),
        ("shardgate_pool_first_byte_seconds", "From the complete request head to the server's response head.", true),
    ] {
        w.family(name, Kind::Histogram, help);
        for (p, m) in gen.pools.iter().zip(&pools) {
            w.histogram(name, &[("pool", &p.name)], if first { &m.first_byte } else { &m.total });
        }
    }
    // Servers.
    let mut rows: Vec<(Vec<(&str, &str)>, &Merged)> = Vec::new();
    for (p, servers) in gen.pools.iter().zip(&merged) {
        for (s, m) in p.servers.iter().zip(servers) {
            rows.push((
                vec![("pool", p.name.as_str()), ("server", s.name.as_str())],
                m,
            ));
        }
    }
    w.family(
        "shardgate_server_requests",
        Kind::Counter,
        "Requests sent to the server (carried across reloads and upgrades).",
    );
    for p in &gen.pools {
        for s in p.servers.iter() {
            w.sample(
                "shardgate_server_requests_total",
                &[("pool", &p.name), ("server", &s.name)],
                s.requests() as f64,
            );
        }
    }
    type Gauge = fn(&crate::balance::ServerShared, u64) -> f64;
    let gauges: [(&str, &str, Gauge); 4] = [
        (
            "shardgate_server_in_flight",
            "Requests in progress on the server.",
            |s, _| s.inflight() as f64,
        ),
        (
            "shardgate_server_queued",
            "Requests waiting for a connection slot to the server.",
            |s, _| s.queue() as f64,
        ),
        (
            "shardgate_server_up",
            "1 when the server takes new requests (state up), else 0.",
            |s, now| f64::from(u8::from(s.state_name(now) == "up")),
        ),
        (
            "shardgate_server_weight",
            "The weight in force (0..1000).",
            |s, _| s.weight() as f64,
        ),
    ];
    for (name, help, pick) in gauges {
        w.family(name, Kind::Gauge, help);
        for p in &gen.pools {
            for s in p.servers.iter() {
                w.sample(
                    name,
                    &[("pool", &p.name), ("server", &s.name)],
                    pick(s, now),
                );
            }
        }
    }
    w.family(
        "shardgate_server_state",
        Kind::Gauge,
        "1 for the server's state (up, drain, down, maint), 0 for the others.",
    );
    for p in &gen.pools {
        for s in p.servers.iter() {
            let state = s.state_name(now);
            for st in ["up", "drain", "down", "maint"] {
                w.sample(
                    "shardgate_server_state",
                    &[("pool", &p.name), ("server", &s.name), ("state", st)],
                    f64::from(u8::from(st == state)),
                );
            }
        }
    }
    exchange(w, "shardgate_server", &rows, true);
}
