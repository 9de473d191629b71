//! The command socket: a UNIX stream socket (mode 0600, only root and the daemon's own uid may
//! run commands) served by plain threads, off the shards. A client sends one command line and
//! reads the answer until EOF; an answer that starts with `error:` is a failure. Commands are a
//! table of `{name, usage, help, handler}` that also generates `help` (HAProxy's `cli_kws`).
//!
//! - [`socket`]: what may be at the configured path, creating the socket so that it is never
//!   accessible to others, removing it at stop only if it is still ours;
//! - [`server`]: credentials check, several clients at once, bounded input and timeouts;
//! - [`client`] is the other end, used by `shardgate ctl`.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::balance::Admin;
use crate::shared::Shared;

pub(crate) mod data;
mod runtime;
mod server;
mod socket;

pub use server::serve;
pub use socket::{adopt, bind};

/// What the main thread should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Stop,
}

/// A command's handler: the daemon's shared state and the words after the command's name.
type Handler = fn(&Arc<Shared>, &[&str]) -> Result<(String, Action), String>;

/// A command's JSON form (`json COMMAND`, what `ctl --json` sends): one JSON document.
type JsonHandler = fn(&Arc<Shared>, &[&str]) -> Result<serde_json::Value, String>;

struct Command {
    /// The words that select it, e.g. "show stats".
    name: &'static str,
    /// Arguments after the name, for `help`.
    args: &'static str,
    help: &'static str,
    run: Handler,
    /// The answer as JSON, for the commands that have one.
    json: Option<JsonHandler>,
}

/// The word before a command that asks for its answer as JSON.
pub const JSON_PREFIX: &str = "json";

const COMMANDS: &[Command] = &[
    Command {
        name: "help",
        args: "",
        help: "list the commands",
        run: |_, _| Ok((help_text(), Action::None)),
        json: None,
    },
    Command {
        name: "show stats",
        args: "",
        help: "connections active/accepted/handled, requests, connections reading/writing/waiting, control socket refusals",
        run: |s, _| Ok((stats_text(s), Action::None)),
        json: Some(|s, _| Ok(data::lines_json(&stats_text(s)))),
    },
    Command {
        name: "show traffic http",
        args: "",
        help: "per frontend and site (Host): requests, bytes in/out, response time; with the traffic log on, also the latest complete period (last_period lines)",
        run: |s, _| {
            let mut out = http_traffic_text(s);
            out.push_str(&crate::log::show_period(s, crate::log::traffic::Kind::Http));
            Ok((out, Action::None))
        },
        json: Some(|s, _| Ok(data::table_json(&http_traffic_text(s)))),
    },
    Command {
        name: "show traffic mysql",
        args: "",
        help: "per MySQL user: connections, commands, errors, bytes, response time; with the traffic log on, also the latest complete period (last_period lines)",
        run: |s, _| {
            let mut out = crate::proxy::mysql::render_traffic(s);
            out.push_str(&crate::log::show_period(s, crate::log::traffic::Kind::Mysql));
            Ok((out, Action::None))
        },
        json: Some(|s, _| Ok(data::table_json(&crate::proxy::mysql::render_traffic(s)))),
    },
    Command {
        name: "show traffic site",
        args: "",
        help: "per [[site]]: HTTP requests and bytes of its hosts, MySQL connections, commands, errors and bytes of its users, bytes in/out of both; with the traffic log on, also the latest complete period (last_period lines)",
        run: |s, _| {
            let mut out = site_traffic_text(s);
            out.push_str(&crate::log::show_site_period(s));
            Ok((out, Action::None))
        },
        json: Some(|s, _| Ok(data::table_json(&site_traffic_text(s)))),
    },
    Command {
        name: "show pool mysql",
        args: "",
        help: "per multiplexing or read/write-splitting MySQL frontend, summed over shards: clients, sessions holding a server connection for good, server connections open and idle, opened, reused, reset, commands to primary and replicas, read-your-writes waits, timeouts and reads sent to the primary; per user its client and server connections; per server its role, replication lag and GTID position as the monitor last read them",
        run: |s, _| Ok((crate::proxy::mysql::render_pool(s), Action::None)),
        json: Some(|s, _| Ok(crate::proxy::mysql::render_pool_json(s))),
    },
    Command {
        name: "show cache mysql",
        args: "",
        help: "per MySQL frontend and [[mysql.cache]] rule, summed over shards: TTL, hits, misses, hit ratio, results stored and not stored, bytes served; then the stores' entries, bytes, evicted, expired",
        run: |s, _| Ok((mysql_cache_text(s), Action::None)),
        json: None,
    },
    Command {
        name: "show digest mysql",
        args: "[--json]",
        help: "per MySQL query digest, user and schema: count, errors, rows, bytes, time total/p50/p99, first and last seen, normalised text; by total time",
        run: |s, a| match a {
            [] => Ok((
                crate::proxy::mysql::digest::render(&digest_report(s)),
                Action::None,
            )),
            ["--json"] => Ok((digest_json(s)?.to_string() + "\n", Action::None)),
            _ => Err("expected [--json]".into()),
        },
        json: Some(|s, a| match a {
            [] | ["--json"] => digest_json(s),
            _ => Err("expected [--json]".into()),
        }),
    },
    Command {
        name: "show servers",
        args: "",
        help: "every pool's servers: state, in flight, admin state, health, weights, requests, last check",
        run: |s, _| Ok((data::render_servers(&data::servers(s)), Action::None)),
        json: Some(|s, _| serde_json::to_value(data::servers(s)).map_err(|e| e.to_string())),
    },
    Command {
        name: "show sticky",
        args: "POOL",
        help: "a pool's sticky counters; source_ip: table size and up to 100 entries; cookies: routes",
        run: |s, a| Ok((crate::balance::sticky::show(&s.current().pools, a)?, Action::None)),
        json: None,
    },
    Command {
        name: "disable server",
        args: "POOL/SERVER",
        help: "same as 'set server POOL/SERVER state maint'",
        run: |s, a| set_admin(s, a, Admin::Maint),
        json: None,
    },
    Command {
        name: "enable server",
        args: "POOL/SERVER",
        help: "same as 'set server POOL/SERVER state ready'",
        run: |s, a| set_admin(s, a, Admin::Ready),
        json: None,
    },
    Command {
        name: "set server",
        args: "POOL/SERVER weight N | state ready|drain|maint | addr HOST:PORT",
        help: "change a server's weight (0-1000), admin state or address, on every shard at once",
        run: |s, a| set_server(s, a),
        json: None,
    },
    Command {
        name: "add server",
        args: "POOL/NAME ADDR [weight N] [backup]",
        help: "add a server to a pool on every shard at once (until the next reload)",
        run: |s, a| runtime::add_server(s, a),
        json: None,
    },
    Command {
        name: "del server",
        args: "POOL/NAME",
        help: "stop sending to a server, let its requests finish (stop_timeout), remove it",
        run: |s, a| runtime::del_server(s, a),
        json: None,
    },
    Command {
        name: "show config",
        args: "",
        help: "the running config as TOML (runtime changes included), to save as a file",
        run: |s, a| runtime::show_config(s, a),
        json: None,
    },
    Command {
        name: "reload",
        args: "",
        help: "re-read the config file and apply it without dropping a connection (also SIGHUP); answers 'ok generation N' or the config error",
        run: |s, _| {
            let applied = crate::reload::reload(s).map_err(|e| {
                tracing::error!(event = "reload_refused", error = %e, "reload refused; the running config stays");
                e
            })?;
            Ok((applied.answer(), Action::None))
        },
        json: None,
    },
    Command {
        name: "reload certs",
        args: "",
        help: "read every TLS certificate, key and OCSP file of the running config again and use them for new handshakes (open connections keep theirs); refused whole if a file is bad",
        run: |s, _| {
            let applied = crate::reload::reload_certs(s).map_err(|e| {
                tracing::error!(event = "reload_refused", error = %e, "certificate reload refused; the running certificates stay");
                e
            })?;
            Ok((applied.answer(), Action::None))
        },
        json: None,
    },
    Command {
        name: "show cache",
        args: "",
        help: "every HTTP cache zone, summed over shards: entries, bytes, hits, misses, stale, revalidated, expired, bypassed, hit ratio, stored, evicted, purged, coalesced",
        run: |s, _| Ok((crate::cache::show::text(s), Action::None)),
        json: Some(|s, _| Ok(data::table_json(&crate::cache::show::text(s)))),
    },
    Command {
        name: "purge",
        args: "URL | prefix URL",
        help: "remove a URL (http://HOST/PATH?QUERY, every Vary variant) or every URL under a prefix from every HTTP cache, on every shard",
        run: |s, a| Ok((crate::cache::show::purge(s, a)?, Action::None)),
        json: None,
    },
    Command {
        name: "reopen logs",
        args: "",
        help: "close and reopen the access logs (also SIGUSR1; for logrotate); the traffic log is opened per period",
        run: |s, _| Ok((crate::log::reopen(s)?, Action::None)),
        json: None,
    },
    Command {
        name: "show latency",
        args: "",
        help: "time per request (HTTP: per frontend, pool, server) and per command (MySQL: per user): count and p50/p90/p99/p99.9 in ms, merged over shards",
        run: |s, _| Ok((crate::metrics::render_latency(s), Action::None)),
        json: None,
    },
    Command {
        name: "show metrics",
        args: "[--openmetrics]",
        help: "what the admin listener's /metrics serves: Prometheus text format 0.0.4 (or OpenMetrics 1.0)",
        run: |s, a| match a {
            [] => Ok((crate::metrics::render(s, false), Action::None)),
            ["--openmetrics"] => Ok((crate::metrics::render(s, true), Action::None)),
            _ => Err("expected [--openmetrics]".into()),
        },
        json: None,
    },
    Command {
        name: "show info",
        args: "",
        help: "process, version, running config generation (number, cause, when loaded), uptime",
        run: |s, _| Ok((render_info(s), Action::None)),
        json: None,
    },
    Command {
        name: "upgrade",
        args: "[--binary PATH]",
        help: "start the new binary on the same sockets, hand it the idle connections and counters, then drain and exit; answers once the new process serves",
        run: |s, a| {
            let binary = match a {
                [] => None,
                ["--binary", path] => Some(std::path::PathBuf::from(path)),
                _ => return Err("expected [--binary PATH]".into()),
            };
            Ok((crate::upgrade::start(s, binary)?, Action::None))
        },
        json: None,
    },
    Command {
        name: "stop daemon",
        args: "",
        help: "stop accepting, let in-flight requests finish (daemon.stop_timeout), exit 0",
        run: |_, _| Ok(("stopping\n".into(), Action::Stop)),
        json: None,
    },
];

fn help_text() -> String {
    let mut out = String::new();
    for c in COMMANDS {
        let usage = if c.args.is_empty() {
            c.name.to_string()
        } else {
            format!("{} {}", c.name, c.args)
        };
        let _ = writeln!(out, "{usage:<32} {}", c.help);
    }
    let json: Vec<&str> = COMMANDS
        .iter()
        .filter(|c| c.json.is_some())
        .map(|c| c.name)
        .collect();
    let _ = writeln!(
        out,
        "{:<32} the answer as one JSON document (ctl --json): {}",
        format!("{JSON_PREFIX} COMMAND"),
        json.join(", ")
    );
    out
}

fn render_info(s: &Shared) -> String {
    let gen = s.current();
    let now = std::time::SystemTime::now();
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let age = |t: std::time::SystemTime| now.duration_since(t).map_or(0, |d| d.as_secs());
    let mut out = String::new();
    let _ = writeln!(out, "pid: {}", std::process::id());
    let _ = writeln!(out, "version: {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "config: {}", gen.config.source.display());
    let _ = writeln!(out, "shards: {}", s.shards);
    let _ = writeln!(out, "started_at: {}", utc(unix(s.started)));
    let _ = writeln!(out, "uptime_s: {}", age(s.started));
    let _ = writeln!(
        out,
        "upgrades: {}",
        s.upgrade
            .upgrades
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    let prev = s
        .upgrade
        .previous_pid
        .load(std::sync::atomic::Ordering::Relaxed);
    if prev != 0 {
        let _ = writeln!(out, "previous_pid: {prev}");
    }
    let _ = writeln!(out, "generation: {}", gen.number);
    let _ = writeln!(out, "generation.cause: {}", gen.cause);
    let _ = writeln!(out, "generation.loaded_at: {}", utc(unix(gen.loaded_at)));
    let _ = writeln!(out, "generation.age_s: {}", age(gen.loaded_at));
    out
}

/// Unix seconds as an RFC 3339 UTC time (`2026-11-29T05:01:02Z`).
pub(crate) fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `show stats`: the shards' counters, the sticky totals, the command socket's refusals.
pub(crate) fn stats_text(s: &Shared) -> String {
    let mut out = crate::stats::render_stats(&s.stats);
    let gen = s.current();
    out.push_str(&crate::balance::sticky::render_stats(
        gen.pools.iter().map(|p| &**p),
    ));
    out.push_str(&server::render_stats());
    out
}

/// `show traffic http`.
pub(crate) fn http_traffic_text(s: &Shared) -> String {
    crate::stats::render_http_traffic(&s.stats, &http_names(s))
}

/// `show traffic site`: every `[[site]]` of the running config, its bill since start, from
/// the same totals the traffic log reads (HTTP per frontend and site, MySQL per user).
pub(crate) fn site_traffic_text(s: &Shared) -> String {
    let sites = &s.current().config.sites;
    let totals = crate::log::traffic::Totals::of(s);
    crate::site::render(sites, &sites.bills(totals.0.iter()))
}

/// `show cache mysql`.
fn mysql_cache_text(s: &Shared) -> String {
    let shards: Vec<&crate::proxy::mysql::qcache::QcacheShard> =
        s.mysql_qcache.iter().map(|d| &**d).collect();
    let fronts: Vec<_> = s
        .current()
        .config
        .mysql
        .iter()
        .map(|f| (f.name.clone(), f.cache.clone()))
        .collect();
    crate::proxy::mysql::qcache::render(&shards, &fronts)
}

/// `show digest mysql`: every shard's digest table, summed.
fn digest_report(s: &Shared) -> crate::proxy::mysql::digest::DigestReport {
    let shards: Vec<&crate::proxy::mysql::digest::DigestShard> =
        s.mysql_digests.iter().map(|d| &**d).collect();
    crate::proxy::mysql::digest::report(&shards)
}

/// `show digest mysql` as JSON: the report's rows and sizes, serialised as they are.
fn digest_json(s: &Shared) -> Result<serde_json::Value, String> {
    serde_json::to_value(digest_report(s)).map_err(|e| e.to_string())
}

/// The running config's HTTP frontend names, in order.
fn http_names(s: &Shared) -> Vec<String> {
    s.current()
        .config
        .http
        .iter()
        .map(|f| f.name.clone())
        .collect()
}

/// `POOL/SERVER` to the pool and the server's index.
fn find_server(
    s: &Shared,
    target: &str,
) -> Result<(Arc<crate::balance::PoolShared>, usize), String> {
    let (pool, server) = target.split_once('/').ok_or("expected POOL/SERVER")?;
    let p = s
        .current()
        .pools
        .iter()
        .find(|p| p.name == pool)
        .cloned()
        .ok_or_else(|| format!("no pool named '{pool}'"))?;
    let i = p
        .server_index(server)
        .ok_or_else(|| format!("pool '{pool}' has no server named '{server}'"))?;
    Ok((p, i))
}

fn set_admin(s: &Shared, args: &[&str], admin: Admin) -> Result<(String, Action), String> {
    let [target] = args else {
        return Err("expected POOL/SERVER".into());
    };
    let (p, i) = find_server(s, target)?;
    p.servers[i].set_admin_by_operator(admin);
    tracing::info!(event = "server_state_changed", pool = %p.name, server = %p.servers[i].name, state = admin.as_str(), "server state changed by command");
    let word = match admin {
        Admin::Maint => "disabled",
        Admin::Ready => "enabled",
        Admin::Drain => "draining",
    };
    Ok((format!("{word} {target}\n"), Action::None))
}

fn set_server(s: &Shared, args: &[&str]) -> Result<(String, Action), String> {
    const USAGE: &str =
        "expected POOL/SERVER weight N, POOL/SERVER state ready|drain|maint, or POOL/SERVER addr HOST:PORT";
    let [target, what, value] = args else {
        return Err(USAGE.into());
    };
    if *what == "addr" {
        return runtime::set_addr(s, target, value);
    }
    let (p, i) = find_server(s, target)?;
    let sv = &p.servers[i];
    match *what {
        "weight" => {
            let w: u32 = value
                .parse()
                .ok()
                .filter(|w| *w <= 1000)
                .ok_or_else(|| format!("weight '{value}': expected an integer 0-1000"))?;
            let old = sv.weight();
            sv.set_weight(w);
            tracing::info!(event = "server_weight_changed", pool = %p.name, server = %sv.name, old, weight = w, "server weight changed by command");
            Ok((format!("{target} weight {w} (was {old})\n"), Action::None))
        }
        "state" => {
            let admin = match *value {
                "ready" => Admin::Ready,
                "drain" => Admin::Drain,
                "maint" => Admin::Maint,
                _ => return Err(format!("state '{value}': expected ready, drain or maint")),
            };
            let old = sv.admin();
            sv.set_admin_by_operator(admin);
            tracing::info!(event = "server_state_changed", pool = %p.name, server = %sv.name, old = old.as_str(), state = admin.as_str(), "server state changed by command");
            Ok((
                format!("{target} state {} (was {})\n", admin.as_str(), old.as_str()),
                Action::None,
            ))
        }
        _ => Err(USAGE.into()),
    }
}

/// Run one command line; the answer text, or an `error: ...` line. A line that starts with
/// [`JSON_PREFIX`] asks for the command's answer as one JSON document (errors stay `error:`
/// lines, so that `ctl` exits 1 on them either way).
pub fn execute(shared: &Arc<Shared>, line: &str) -> (String, Action) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.split_first() {
        None => ("error: empty command; try 'help'\n".into(), Action::None),
        Some((&JSON_PREFIX, rest)) => match run_json(shared, rest) {
            Ok(v) => (format!("{v}\n"), Action::None),
            Err(e) => (format!("error: {e}\n"), Action::None),
        },
        Some(_) if find(&words).is_none() => (
            format!("error: unknown command '{}'; try 'help'\n", line.trim()),
            Action::None,
        ),
        Some(_) => run_words(shared, &words),
    }
}

/// The command `words` name, and how many words its name takes.
fn find(words: &[&str]) -> Option<(&'static Command, usize)> {
    // Longest name first wins ("show traffic http" before a hypothetical "show").
    COMMANDS
        .iter()
        .filter(|c| {
            let n: Vec<&str> = c.name.split(' ').collect();
            words.len() >= n.len() && words[..n.len()] == n[..]
        })
        .max_by_key(|c| c.name.len())
        .map(|c| (c, c.name.split(' ').count()))
}

/// Run the command made of `words` (already split): the answer text or an `error:` line. The
/// admin page's actions come here too, so they answer exactly as `ctl` does.
pub fn run_words(shared: &Arc<Shared>, words: &[&str]) -> (String, Action) {
    match find(words) {
        Some((c, n)) => match (c.run)(shared, &words[n..]) {
            Ok(v) => v,
            Err(e) => (format!("error: {}: {e}\n", c.name), Action::None),
        },
        None => (
            format!("error: unknown command '{}'; try 'help'\n", words.join(" ")),
            Action::None,
        ),
    }
}

/// The JSON answer of the command made of `words`.
pub(crate) fn run_json(shared: &Arc<Shared>, words: &[&str]) -> Result<serde_json::Value, String> {
    let (c, n) =
        find(words).ok_or_else(|| format!("unknown command '{}'; try 'help'", words.join(" ")))?;
    let json = c.json.ok_or_else(|| {
        format!(
            "{}: no JSON form (JSON answers: {})",
            c.name,
            COMMANDS
                .iter()
                .filter(|c| c.json.is_some())
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    json(shared, &words[n..]).map_err(|e| format!("{}: {e}", c.name))
}

/// The `shardgate ctl` side: send `command`, return the answer.
///
/// The daemon may close without reading the command (a refusal: permission denied, too many
/// clients): the answer it wrote is still returned even if sending failed or the connection
/// was then reset.
pub fn client(path: &Path, command: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let sent = s
        .write_all(format!("{}\n", command.trim()).as_bytes())
        .and_then(|()| s.shutdown(std::net::Shutdown::Write));
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    if out.is_empty() {
        sent?;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Default socket path when `ctl` is given none and no config is readable.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/shardgate/shardgate.sock")
}
