//! Command-line interface: one subcommand per mode, engine flags shared and spelled like wrk
//! and oha (`-c`, `-t`, `-d`, `-n`, `-R`). Parsing helpers for durations and `--source`
//! ranges live here so every mode reads them the same way.

use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "HTTP/1.1 and MySQL load generator, benchmark backend, and shardgate's verify run"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// HTTP/1.1 load against one or more URLs (used in turn).
    Http(HttpArgs),
    /// MySQL load: log in with mysql_native_password, then COM_QUERY in a loop.
    Mysql(MysqlArgs),
    /// A fast HTTP/1.1 keep-alive backend that answers with its own name.
    Serve(ServeArgs),
    /// The target run: 10,000 connections, >= 3000 req/s, zero errors, bounded p99.
    Verify(VerifyArgs),
}

/// Engine flags shared by `http` and `mysql`.
#[derive(Args, Debug, Clone)]
pub(crate) struct LoadArgs {
    /// Connections to keep open.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub(crate) connections: usize,
    /// Worker threads (default: one per core).
    #[arg(short = 't', long)]
    pub(crate) threads: Option<usize>,
    /// How long to send load (e.g. 10s, 500ms, 2m); default 10s unless -n is given.
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Total requests to send, then stop.
    #[arg(short = 'n', long)]
    pub(crate) requests: Option<u64>,
    /// Constant rate in requests/s for the whole run (open loop, latency corrected for
    /// coordinated omission). Without it: closed loop, as fast as replies come.
    #[arg(short = 'R', long)]
    pub(crate) rate: Option<f64>,
    /// Time over which to open the connections (evenly, over its first three quarters);
    /// load starts when it ends and -d counts from there.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub(crate) ramp: Duration,
    /// Longest wait for a complete reply.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) timeout: Duration,
    /// Longest wait for a TCP connect.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) connect_timeout: Duration,
    /// Local addresses to connect from, in turn: `127.0.0.2-127.0.0.9` or `a,b,c`.
    /// Needed beyond ~28k connections to one address (ephemeral ports).
    #[arg(long, value_parser = parse_sources)]
    pub(crate) source: Option<Sources>,
    /// Write the full result as JSON.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Write the latency percentile distribution in HdrHistogram text format (ms).
    #[arg(long)]
    pub(crate) hgrm: Option<PathBuf>,
    /// Draw latency by percentile as an SVG.
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct HttpArgs {
    /// Target URLs (http://host[:port]/path); several are used in turn.
    #[arg(required_unless_present = "urls_file")]
    pub(crate) urls: Vec<String>,
    /// File with one URL per line (blank lines and # comments skipped).
    #[arg(long)]
    pub(crate) urls_file: Option<PathBuf>,
    /// Request method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub(crate) method: String,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub(crate) headers: Vec<String>,
    /// Request body size in bytes (sent with Content-Length).
    #[arg(long, default_value_t = 0)]
    pub(crate) body_size: usize,
    /// One request per connection (sends `Connection: close`, reconnects each time).
    #[arg(long)]
    pub(crate) close: bool,
    #[command(flatten)]
    pub(crate) load: LoadArgs,
}

#[derive(Args, Debug)]
pub(crate) struct MysqlArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    #[arg(long, default_value_t = 3306)]
    pub(crate) port: u16,
    #[arg(long, default_value = "root")]
    pub(crate) user: String,
    #[arg(long, default_value = "")]
    pub(crate) password: String,
    /// Default database to select at login.
    #[arg(long)]
    pub(crate) db: Option<String>,
    /// The statement each request sends.
    #[arg(long, default_value = "SELECT 1")]
    pub(crate) query: String,
    #[command(flatten)]
    pub(crate) load: LoadArgs,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
    /// Name sent in `X-Backend` and the body.
    #[arg(long, default_value = "serve")]
    pub(crate) name: String,
    /// Default body size (otherwise the body is the name and a newline).
    #[arg(long)]
    pub(crate) body_size: Option<usize>,
    /// Default delay before each reply, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) delay: u64,
    /// Worker threads, each with its own SO_REUSEPORT listener.
    #[arg(short = 't', long, default_value_t = 1)]
    pub(crate) threads: usize,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The proxy's URL.
    #[arg(default_value = "http://127.0.0.1:18080/")]
    pub(crate) url: String,
    /// Concurrent keep-alive connections to hold.
    #[arg(short = 'c', long, default_value_t = 10_000)]
    pub(crate) connections: usize,
    /// Request rate to send across them (the target is >= 3000 req/s achieved).
    #[arg(short = 'R', long, default_value_t = 4000.0)]
    pub(crate) rate: f64,
    /// Length of the load phase, after the ramp.
    #[arg(short = 'd', long, value_parser = parse_duration, default_value = "30s")]
    pub(crate) duration: Duration,
    /// Time to open all connections before load starts.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) ramp: Duration,
    /// Worker threads (default: one per core).
    #[arg(short = 't', long)]
    pub(crate) threads: Option<usize>,
    /// Throughput that must be reached, req/s.
    #[arg(long, default_value_t = 3000.0)]
    pub(crate) min_rate: f64,
    /// Bound on the corrected p99 latency, in milliseconds.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) max_p99_ms: f64,
    /// Backends (`host:port` of `loadgen serve`) whose /__stats to read before and after, to
    /// report how many upstream connections the proxy opened (repeatable).
    #[arg(long = "backend")]
    pub(crate) backends: Vec<String>,
    /// Start the run's processes from this shardgate config: one `loadgen serve` per pool
    /// server, then the proxy; the URL is its first [[http]] listener. All are stopped at the end.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// The proxy binary for --config (default: `shardgate` next to this executable).
    #[arg(long)]
    pub(crate) shardgate: Option<PathBuf>,
    #[arg(long, value_parser = parse_sources)]
    pub(crate) source: Option<Sources>,
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    #[arg(long)]
    pub(crate) hgrm: Option<PathBuf>,
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
}

/// Parsed `--source` list.
#[derive(Debug, Clone)]
pub(crate) struct Sources(pub(crate) Vec<IpAddr>);

/// `10s`, `500ms`, `2m`, `1h`, `1.5s`, or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration '{s}': expected e.g. 10s, 500ms, 2m"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(format!(
                "bad duration '{s}': unknown unit '{unit}' (use ms, s, m, h)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration '{s}'"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Largest address range `--source` accepts; more would be a typo, not a plan.
const MAX_SOURCES: u32 = 65_536;

pub(crate) fn parse_sources(s: &str) -> Result<Sources, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| format!("bad source range '{part}': '{a}' is not an IPv4 address"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| format!("bad source range '{part}': '{b}' is not an IPv4 address"))?;
            let (lo, hi) = (u32::from(a), u32::from(b));
            if hi < lo || hi - lo >= MAX_SOURCES {
                return Err(format!("bad source range '{part}': must be ascending and at most {MAX_SOURCES} addresses"));
            }
            out.extend((lo..=hi).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            out.push(
                part.parse()
                    .map_err(|_| format!("bad source address '{part}'"))?,
            );
        }
    }
    if out.is_empty() {
        return Err("empty --source".into());
    }
    Ok(Sources(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("10s", 10.0),
            ("500ms", 0.5),
            ("2m", 120.0),
            ("1.5", 1.5),
            ("0s", 0.0),
            ("1h", 3600.0),
        ];
        for (s, secs) in ok {
            assert_eq!(
                parse_duration(s).unwrap(),
                Duration::from_secs_f64(secs),
                "{s}"
            );
        }
        for bad in ["", "x", "10q", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources() {
        let s = parse_sources("127.0.0.2-127.0.0.4,127.0.0.9").unwrap().0;
        let want: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(s, want);
        for bad in [
            "127.0.0.9-127.0.0.2",
            "x",
            "1.2.3.4-y",
            "",
            "10.0.0.0-10.255.255.255",
        ] {
            assert!(parse_sources(bad).is_err(), "{bad}");
        }
    }
}
