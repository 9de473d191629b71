//! Changing the running config without a restart: `reload` (the control command, SIGHUP),
//! runtime server commands and DNS answers all end here, in [`apply`], one change at a time.
//!
//! A change is validated exactly as at start (the same builder, so the same file/key/problem
//! messages) and refused whole if anything is wrong, new listening addresses included: they
//! are bound before anything else changes. Then the next [`Generation`] is built, keeping by
//! name every pool and server that did not change, and published; each shard picks it up on
//! its next tick (within 20 ms), rebuilds its view and starts or stops its accept loops, and
//! `apply` returns once every shard has. Exchanges already running finish on the view they
//! started with. Shards never restart: no two generations of shards ever run.
//!
//! What a reload cannot change in a running process (`daemon.shards`, `io_driver`,
//! `pin_cores`, `control_socket`, `admin.listen`) is reported as a warning in the answer and takes effect at
//! the next `upgrade` or restart.

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::file::FileConfig;
use crate::config::Config;
use crate::shard::{self, Listen};
use crate::shared::{Generation, ShardMsg, Shared};

/// How long `apply` waits for every shard to take the new generation.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// What a change did.
#[derive(Debug)]
pub struct Applied {
    pub generation: u64,
    /// Keys that changed but need a restart or an upgrade.
    pub warnings: Vec<String>,
}

impl Applied {
    /// The control socket's answer: `ok generation N`, then one line per warning.
    pub fn answer(&self) -> String {
        let mut out = format!("ok generation {}\n", self.generation);
        for w in &self.warnings {
            out.push_str("warning: ");
            out.push_str(w);
            out.push('\n');
        }
        out
    }
}

/// Re-read the file the running config came from and apply it.
pub fn reload(shared: &Shared) -> Result<Applied, String> {
    let _one = shared.runtime.lock().unwrap_or_else(|e| e.into_inner());
    crate::notify::reloading();
    let path = shared.current().config.source.clone();
    let applied = crate::config::load_with_file(&path)
        .map_err(|e| e.to_string())
        .and_then(|(config, file)| apply(shared, config, file, "reload".into()));
    crate::notify::reloaded(applied.is_ok());
    applied
}

/// Read the certificate files of the running config's TLS frontends and pools again and apply the
/// result as a new generation (the TOML file is not read: only the certificates change).
pub fn reload_certs(shared: &Shared) -> Result<Applied, String> {
    let _one = shared.runtime.lock().unwrap_or_else(|e| e.into_inner());
    let current = shared.current();
    let mut config = current.config.clone();
    let source = config.source.display().to_string();
    let fresh = |key: String, t: &std::sync::Arc<crate::tls::ServerTls>| {
        t.reloaded()
            .map(std::sync::Arc::new)
            .map_err(|m| format!("{source}: {key}.tls.certs: {m}"))
    };
    for (i, fe) in config.http.iter_mut().enumerate() {
        if let Some(t) = &fe.tls {
            fe.tls = Some(fresh(format!("http[{i}]"), t)?);
        }
    }
    for (i, fe) in config.mysql.iter_mut().enumerate() {
        if let Some(t) = &fe.tls {
            fe.tls = Some(fresh(format!("mysql[{i}]"), t)?);
        }
    }
    // The pools' CA bundles and client certificates too.
    for p in config.pools.iter_mut() {
        if let Some(t) = &p.tls {
            let again = t
                .reloaded()
                .map_err(|m| format!("{source}: pool.{}.tls: {m}", p.name))?;
            p.tls = Some(std::sync::Arc::new(again));
        }
    }
    apply(shared, config, current.file.clone(), "reload certs".into())
}

/// Apply a validated config as the next generation (see the module documentation).
pub fn apply(
    shared: &Shared,
    mut config: Config,
    file: FileConfig,
    cause: String,
) -> Result<Applied, String> {
    let _one_at_a_time = shared.changing.lock().unwrap_or_else(|e| e.into_inner());
    shared
        .dns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .apply(&mut config);
    let current = shared.current();
    let warnings = restart_only(&current.config, &config);

    let before: HashSet<_> = current.listen_addrs().into_iter().collect();
    let after = crate::daemon::listen_of(&config);
    let new: Vec<Listen> = after
        .iter()
        .filter(|l| !before.contains(&l.addr))
        .map(|l| Listen {
            addr: l.addr,
            name: l.name.clone(),
        })
        .collect();
    let stopped: Vec<String> = before
        .iter()
        .filter(|a| !after.iter().any(|l| l.addr == **a))
        .map(|a| a.to_string())
        .collect();
    // Bound before anything changes: an address in use refuses the whole change.
    let sockets = bind_new(shared.shards, &new, &config)?;

    let max_conns = crate::daemon::client_cap(&config);
    let memory_limit = config.daemon.memory_limit;
    let next = current.next(config, file, cause, shared.shards);
    let number = next.number;
    let listening: Vec<String> = new.iter().map(|l| l.addr.to_string()).collect();
    shared
        .life
        .max_connections
        .store(max_conns, Ordering::Relaxed);
    if let Some(limit) = memory_limit {
        crate::mem::set_limit(limit);
    }
    log_change(&current, &next, &listening, &stopped);
    shared.publish(next);
    for (id, ls) in sockets.into_iter().enumerate() {
        for l in &ls {
            if let Ok(addr) = l.local_addr() {
                shared.upgrade.register_listener(addr, l.as_raw_fd());
            }
        }
        if !ls.is_empty() {
            shared.send(id, ShardMsg::Listen(ls));
        }
    }
    let keep: Vec<_> = after.iter().map(|l| l.addr).collect();
    shared.upgrade.forget_listeners(&keep);
    let deadline = Instant::now() + APPLY_WAIT;
    while !shared.all_applied(number) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if !shared.all_applied(number) {
        tracing::warn!(
            event = "config_apply_slow",
            generation = number,
            "not every shard took the new config within 5 s (a shard busy for that long?)"
        );
    }
    Ok(Applied {
        generation: number,
        warnings,
    })
}

/// Bind the addresses a change adds, once per shard (see [`shard::bind_all`]). An address
/// that cannot be bound is reported like any other error of the file: `FILE: KEY: problem`,
/// the key being the `listen` entry that names it.
fn bind_new(
    shards: usize,
    new: &[Listen],
    config: &Config,
) -> Result<Vec<Vec<std::net::TcpListener>>, String> {
    let mut per_shard: Vec<Vec<std::net::TcpListener>> = (0..shards).map(|_| Vec::new()).collect();
    for l in new {
        let bound = shard::bind_all(shards, std::slice::from_ref(l)).map_err(|e| {
            format!(
                "{}: {}: {e}",
                config.source.display(),
                listen_key(config, l.addr)
            )
        })?;
        for (mine, ls) in per_shard.iter_mut().zip(bound) {
            mine.extend(ls);
        }
    }
    Ok(per_shard)
}

/// The config key that lists `addr`: `http[I].listen[J]` or `mysql[I].listen[J]`.
fn listen_key(config: &Config, addr: std::net::SocketAddr) -> String {
    let http = config.http.iter().map(|f| &f.listen);
    let mysql = config.mysql.iter().map(|f| &f.listen);
    for (section, fronts) in [
        ("http", http.collect::<Vec<_>>()),
        ("mysql", mysql.collect()),
    ] {
        for (i, listen) in fronts.iter().enumerate() {
            if let Some(j) = listen.iter().position(|a| *a == addr) {
                return format!("{section}[{i}].listen[{j}]");
            }
        }
    }
    "listen".into()
}

/// Daemon keys a running process cannot change, as warnings.
fn restart_only(now: &Config, next: &Config) -> Vec<String> {
    let (a, b) = (&now.daemon, &next.daemon);
    let mut out = Vec::new();
    let mut differs = |key: &str, was: String, will: String| {
        if was != will {
            let when = if key == "control_socket" {
                "the next restart (an upgrade keeps the socket it inherits)"
            } else {
                "the next upgrade or restart"
            };
            out.push(format!(
                "daemon.{key} changed ({was} -> {will}): takes effect at {when}"
            ));
        }
    };
    differs("shards", a.shards.to_string(), b.shards.to_string());
    differs(
        "io_driver",
        format!("{:?}", a.io_driver),
        format!("{:?}", b.io_driver),
    );
    differs(
        "pin_cores",
        a.pin_cores.to_string(),
        b.pin_cores.to_string(),
    );
    differs(
        "control_socket",
        a.control_socket.display().to_string(),
        b.control_socket.display().to_string(),
    );
    // The admin listener is bound once at start; its users are read per request.
    let admin = |c: &Config| {
        c.admin
            .as_ref()
            .map_or("off".to_owned(), |a| a.listen.to_string())
    };
    let (was, will) = (admin(now), admin(next));
    if was != will {
        out.push(format!(
            "admin.listen changed ({was} -> {will}): takes effect at the next upgrade or restart"
        ));
    }
    out
}

/// One log line per change, naming what moved.
fn log_change(old: &Generation, new: &Generation, listening: &[String], stopped: &[String]) {
    let names = |g: &Generation| -> Vec<String> {
        g.pools
            .iter()
            .flat_map(|p| {
                p.servers
                    .iter()
                    .map(move |s| format!("{}/{}", p.name, s.name))
            })
            .collect()
    };
    let (was, now) = (names(old), names(new));
    let added: Vec<&String> = now.iter().filter(|n| !was.contains(n)).collect();
    let removed: Vec<&String> = was.iter().filter(|n| !now.contains(n)).collect();
    tracing::info!(
        event = "config_applied",
        generation = new.number,
        cause = %new.cause,
        pools = new.pools.len(),
        servers_added = ?added,
        servers_removed = ?removed,
        listen_added = ?listening,
        listen_removed = ?stopped,
        "config generation {} applied",
        new.number
    );
}
