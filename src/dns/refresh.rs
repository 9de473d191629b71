//! Server names and SRV discovery, kept fresh off the request path: one `resolver` thread
//! looks up every pool's `host:port` servers and its `discover = "srv:NAME"` every
//! `resolve_interval`, and when an answer differs from what runs, applies the running config
//! again as a new generation (cause `dns`) with the new addresses or members. A failed lookup
//! keeps the last known addresses (and members): a DNS outage never takes servers away.
//!
//! Where the answers come from: with `daemon.resolvers` set, this crate's own client asks
//! those servers (A, then AAAA; SRV); without it, names go through the system resolver
//! (`getaddrinfo`: `/etc/hosts`, then DNS, as every other program on the host sees them) and
//! SRV goes to the servers of `/etc/resolv.conf`.
//!
//! The answers are an overlay on the config, never written into the file copy: `show config`
//! prints what the operator wrote, and a reload keeps the overlay for servers that are still
//! there.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Resolver, SrvTarget};
use crate::config::{Config, Pool, Server};
use crate::shared::Shared;

/// Bounds on one lookup by the resolver thread.
const TIMEOUT: Duration = Duration::from_secs(1);
const ATTEMPTS: u32 = 2;
/// Most members one SRV answer may add to a pool.
const MAX_DISCOVERED: usize = 256;

/// The latest answers: addresses of named servers, members of discovered pools.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// (pool, server) -> address.
    pub addrs: HashMap<(String, String), SocketAddr>,
    /// pool -> servers found by SRV.
    pub discovered: HashMap<String, Vec<Server>>,
}

impl Overlay {
    /// Fill `config` with the answers: named servers get their last address, discovered pools
    /// their members (after the servers the file lists).
    pub fn apply(&self, config: &mut Config) {
        for pool in &mut config.pools {
            for s in &mut pool.servers {
                if s.host.is_some() {
                    if let Some(a) = self.addrs.get(&(pool.name.clone(), s.name.clone())) {
                        s.addr = *a;
                    }
                }
            }
            if pool.discover.is_some() {
                if let Some(found) = self.discovered.get(&pool.name) {
                    for f in found {
                        if !pool
                            .servers
                            .iter()
                            .any(|s| s.name == f.name || s.route == f.route)
                        {
                            pool.servers.push(f.clone());
                        }
                    }
                }
            }
        }
    }
}

/// Does `pool` need the resolver at all?
fn has_names(pool: &Pool) -> bool {
    pool.discover.is_some() || pool.servers.iter().any(|s| s.host.is_some())
}

fn resolver(servers: &[SocketAddr]) -> Resolver {
    let mut r = if servers.is_empty() {
        Resolver::from_resolv_conf("/etc/resolv.conf")
            .unwrap_or_else(|_| Resolver::new(vec![SocketAddr::from(([127, 0, 0, 1], 53))]))
    } else {
        Resolver::new(servers.to_vec())
    };
    r.timeout = TIMEOUT;
    r.attempts = ATTEMPTS;
    r
}

/// One name to one address: the one in use if the answer still has it (a name served by DNS
/// round-robin does not move the server at every lookup), else the first, IPv4 first.
fn lookup(
    servers: &[SocketAddr],
    host: &str,
    port: u16,
    current: Option<SocketAddr>,
) -> Result<SocketAddr, String> {
    let mut ips: Vec<IpAddr> = if servers.is_empty() {
        (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
            .map(|a| a.ip())
            .collect()
    } else {
        resolver(servers)
            .lookup_ip(host)
            .map_err(|e| e.to_string())?
    };
    ips.sort_by_key(|ip| ip.is_ipv6());
    if let Some(c) = current.filter(|c| ips.contains(&c.ip())) {
        return Ok(SocketAddr::new(c.ip(), port));
    }
    let ip = ips.first().ok_or_else(|| format!("{host}: no address"))?;
    Ok(SocketAddr::new(*ip, port))
}

/// An SRV answer as servers: one per target and port, named `target:port`, with the SRV
/// weight (0 counts as 1); targets of a priority above the best one are backups.
fn discover(
    servers: &[SocketAddr],
    name: &str,
    prev: Option<&Vec<Server>>,
) -> Result<Vec<Server>, String> {
    let targets: Vec<SrvTarget> = resolver(servers)
        .lookup_srv(name)
        .map_err(|e| e.to_string())?;
    let best = targets.iter().map(|t| t.priority).min().unwrap_or(0);
    let mut out: Vec<Server> = Vec::new();
    for t in targets.iter().filter(|t| !t.addrs.is_empty()) {
        let name = format!("{}:{}", t.target, t.port);
        // The address in use while the answer still has it (rotating A records must not move
        // a member at every lookup); else the first, IPv4 first.
        let in_use = prev
            .and_then(|p| p.iter().find(|s| s.name == name))
            .map(|s| s.addr.ip())
            .filter(|ip| t.addrs.contains(ip));
        let Some(ip) = in_use
            .as_ref()
            .or(t.addrs.iter().find(|a| a.is_ipv4()))
            .or(t.addrs.first())
        else {
            continue;
        };
        if out.iter().any(|s| s.name == name) || out.len() >= MAX_DISCOVERED {
            continue;
        }
        out.push(Server {
            route: name.clone(),
            name,
            addr: SocketAddr::new(*ip, t.port),
            host: None,
            weight: u32::from(t.weight).clamp(1, 1000),
            backup: t.priority > best,
            max_connections: None,
            agent_port: None,
            send_proxy: None,
            replica: false,
        });
    }
    if out.is_empty() && !targets.is_empty() {
        return Err(format!("{name}: no SRV target resolved to an address"));
    }
    // In name order: servers that shuffle SRV answers (Consul does) are the same members.
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Look up what `pools` name, starting from `ov`. Failures keep the previous answer and are
/// returned for the log.
fn refresh(resolvers: &[SocketAddr], pools: &[&Pool], ov: &Overlay) -> (Overlay, Vec<String>) {
    let mut next = ov.clone();
    let mut failures = Vec::new();
    for pool in pools {
        for s in pool.servers.iter() {
            let Some(host) = &s.host else { continue };
            let key = (pool.name.clone(), s.name.clone());
            match lookup(resolvers, host, s.addr.port(), ov.addrs.get(&key).copied()) {
                Ok(a) => {
                    next.addrs.insert(key, a);
                }
                Err(e) => failures.push(format!("pool {} server {}: {e}", pool.name, s.name)),
            }
        }
        if let Some(name) = &pool.discover {
            match discover(resolvers, name, ov.discovered.get(&pool.name)) {
                Ok(found) => {
                    next.discovered.insert(pool.name.clone(), found);
                }
                Err(e) => failures.push(format!("pool {} discover: {e}", pool.name)),
            }
        }
    }
    (next, failures)
}

/// Resolve everything `config` names once, before the daemon starts (bounded by the lookup
/// timeouts); a name that does not resolve leaves its server down until it does.
pub fn initial(config: &mut Config) -> Overlay {
    let pools: Vec<&Pool> = config.pools.iter().filter(|p| has_names(p)).collect();
    if pools.is_empty() {
        return Overlay::default();
    }
    let (ov, failures) = refresh(&config.daemon.resolvers, &pools, &Overlay::default());
    for f in failures {
        tracing::warn!(
            event = "dns_failed",
            "cannot resolve at start: {f}; the server takes nothing until it resolves"
        );
    }
    ov.apply(config);
    ov
}

/// The resolver thread: every `resolve_interval` per pool, look again; apply what changed.
pub fn start(shared: Arc<Shared>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("resolver".into())
        .spawn(move || run(&shared))
}

fn run(shared: &Shared) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut logged: HashMap<String, String> = HashMap::new();
    while !shared.life.stopping.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let gen = shared.current();
        let now = Instant::now();
        let pools: Vec<&Pool> = gen
            .config
            .pools
            .iter()
            .filter(|p| has_names(p))
            .filter(|p| due.get(&p.name).is_none_or(|t| now >= *t))
            .collect();
        if pools.is_empty() {
            continue;
        }
        for p in &pools {
            due.insert(p.name.clone(), now + p.resolve_interval);
        }
        let before = shared.dns.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (next, failures) = refresh(&gen.config.daemon.resolvers, &pools, &before);
        for f in failures {
            // One line per failure until it changes, not one per interval.
            let key = f.split(':').next().unwrap_or_default().to_string();
            if logged.get(&key) != Some(&f) {
                tracing::warn!(
                    event = "dns_failed",
                    "{f}; keeping the last known addresses"
                );
                logged.insert(key, f);
            }
        }
        if next == before {
            continue;
        }
        let _one = shared.runtime.lock().unwrap_or_else(|e| e.into_inner());
        *shared.dns.lock().unwrap_or_else(|e| e.into_inner()) = next;
        let gen = shared.current();
        let mut config = match crate::config::from_file(gen.file.clone(), "running config") {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(event = "dns_config_invalid", error = %e, "dns: the running config does not validate any more");
                continue;
            }
        };
        config.source = gen.config.source.clone();
        match crate::reload::apply(shared, config, gen.file.clone(), "dns".into()) {
            Ok(a) => tracing::info!(
                event = "dns_changed",
                generation = a.generation,
                "dns answers changed: applied"
            ),
            Err(e) => {
                tracing::warn!(event = "dns_apply_failed", error = %e, "dns answers changed but cannot be applied")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::from_str(
            "[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:1\"]\npool = \"a\"\n\
             [pool.a]\nservers = [{ name = \"x\", addr = \"db.internal:3306\" }, { name = \"y\", addr = \"127.0.0.1:1\" }]\n\
             [pool.b]\ndiscover = \"srv:_http._tcp.example\"\n",
            "<t>",
        )
        .unwrap()
    }

    #[test]
    fn names_start_unresolved_and_the_overlay_fills_them() {
        let mut c = config();
        let x = &c.pools[0].servers[0];
        assert_eq!(x.host.as_deref(), Some("db.internal"));
        assert!(x.addr.ip().is_unspecified());
        assert_eq!(x.addr.port(), 3306);
        assert!(c.pools[1].servers.is_empty());
        let mut ov = Overlay::default();
        ov.addrs
            .insert(("a".into(), "x".into()), "10.0.0.7:3306".parse().unwrap());
        ov.discovered.insert(
            "b".into(),
            vec![Server {
                name: "t1:80".into(),
                route: "t1:80".into(),
                addr: "10.0.0.9:80".parse().unwrap(),
                host: None,
                weight: 5,
                backup: false,
                max_connections: None,
                agent_port: None,
                send_proxy: None,
                replica: false,
            }],
        );
        ov.apply(&mut c);
        assert_eq!(c.pools[0].servers[0].addr, "10.0.0.7:3306".parse().unwrap());
        assert_eq!(c.pools[0].servers[1].addr, "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.pools[1].servers.len(), 1);
        assert_eq!(c.pools[1].servers[0].weight, 5);
    }

    #[test]
    fn bad_names_and_discover_values_are_config_errors() {
        for (text, want) in [
            (
                "[pool.a]\nservers = [{ name = \"x\", addr = \"bad host:80\" }]\n",
                "pool.a.servers[0].addr",
            ),
            (
                "[pool.a]\ndiscover = \"dns:_x._tcp.e\"\n",
                "pool.a.discover",
            ),
            ("[pool.a]\ndiscover = \"srv:a..b\"\n", "pool.a.discover"),
            ("[daemon]\nresolvers = [\"nope\"]\n", "daemon.resolvers[0]"),
            ("[pool.a]\nservers = []\n", "pool.a.servers"),
        ] {
            let e = crate::config::from_str(text, "<t>")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
