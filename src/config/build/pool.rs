//! `[pool.NAME]` sections: balance, backend timeouts, connection bounds, and the servers with
//! their names, weights, routes and addresses (host names resolved now, never on the request
//! path). The `sticky` and `health` subtables are built in `balance.rs`.

use std::net::SocketAddr;

use super::syntax::toml_key;
use super::{Builder, ConfigError};
use crate::config::file::{BalanceFile, PoolFile};
use crate::config::{Balance, Pool, Server};

const MAX_WEIGHT: i64 = 1000;

impl Builder<'_> {
    pub(super) fn pool(&self, name: &str, p: &PoolFile) -> Result<Pool, ConfigError> {
        let key = format!("pool.{}", toml_key(name));
        self.check_name(&key, name)?;
        let k = |n: &str| format!("{key}.{n}");
        let discover = match &p.discover {
            None => None,
            Some(d) => {
                let name = d.strip_prefix("srv:").ok_or_else(|| {
                    self.err(
                        k("discover"),
                        format!(
                            "{d:?}: expected \"srv:NAME\", e.g. \"srv:_http._tcp.example.com\""
                        ),
                    )
                })?;
                crate::dns::wire::check_name(name)
                    .map_err(|e| self.err(k("discover"), format!("{name:?}: {e}")))?;
                Some(name.to_owned())
            }
        };
        if p.servers.is_empty() && discover.is_none() {
            return Err(self.err(
                k("servers"),
                "must list at least one server (or set discover)",
            ));
        }
        let mut servers: Vec<Server> = Vec::with_capacity(p.servers.len());
        for (i, s) in p.servers.iter().enumerate() {
            let sk = format!("{key}.servers[{i}]");
            self.check_name(&format!("{sk}.name"), &s.name)?;
            if servers.iter().any(|o| o.name == s.name) {
                return Err(self.err(
                    format!("{sk}.name"),
                    format!(
                        "{:?} is already the name of another server in this pool",
                        s.name
                    ),
                ));
            }
            let weight = self.int(&format!("{sk}.weight"), s.weight, 1, 1, MAX_WEIGHT)? as u32;
            let (addr, host) =
                server_addr(&s.addr).map_err(|m| self.err(format!("{sk}.addr"), m))?;
            let route = match &s.route {
                Some(r) => {
                    self.check_route(&format!("{sk}.route"), r)?;
                    r.clone()
                }
                None => s.name.clone(),
            };
            if let Some(o) = servers.iter().find(|o| o.route == route) {
                return Err(self.err(
                    format!("{sk}.route"),
                    format!(
                        "route {route:?} is already the route of server {:?}",
                        o.name
                    ),
                ));
            }
            let max_connections = match s.max_connections {
                None => None,
                Some(n) => {
                    Some(
                        self.int(&format!("{sk}.max_connections"), Some(n), 0, 1, 1_000_000)?
                            as u32,
                    )
                }
            };
            let agent_port = match s.agent_port {
                None => None,
                Some(n) => {
                    Some(self.int(&format!("{sk}.agent_port"), Some(n), 0, 1, 65535)? as u16)
                }
            };
            let send_proxy = self.send_proxy(&sk, s.send_proxy.as_deref())?;
            let replica = match s.role.as_deref() {
                None | Some("primary") => false,
                Some("replica") => true,
                Some(other) => {
                    return Err(self.err(
                        format!("{sk}.role"),
                        format!("{other:?}: expected \"primary\" or \"replica\""),
                    ))
                }
            };
            servers.push(Server {
                send_proxy,
                replica,
                name: s.name.clone(),
                addr,
                host,
                weight,
                route,
                backup: s.backup.unwrap_or(false),
                max_connections,
                agent_port,
            });
        }
        if !servers.is_empty() && servers.iter().all(|s| s.backup) {
            return Err(self.err(
                k("servers"),
                "every server is a backup: at least one must not be",
            ));
        }
        let max_connections_per_server = self.int(
            &k("max_connections_per_server"),
            p.max_connections_per_server,
            512,
            1,
            1_000_000,
        )?;
        let max_idle_per_server = self.int(
            &k("max_idle_per_server"),
            p.max_idle_per_server,
            128,
            0,
            1_000_000,
        )?;
        if max_idle_per_server > max_connections_per_server {
            return Err(self.err(
                k("max_idle_per_server"),
                format!("{max_idle_per_server} exceeds max_connections_per_server ({max_connections_per_server})"),
            ));
        }
        let balance = match p.balance.unwrap_or(BalanceFile::RoundRobin) {
            BalanceFile::RoundRobin => Balance::RoundRobin,
            BalanceFile::LeastRequests => Balance::LeastRequests,
            BalanceFile::ByRequests => Balance::ByRequests,
            BalanceFile::ByTraffic => Balance::ByTraffic,
            BalanceFile::LeastTime => Balance::LeastTime,
            BalanceFile::P2c => Balance::P2c,
            BalanceFile::Hash => Balance::Hash,
        };
        let hash_key = self.hash_key(&k("hash_key"), balance, p.hash_key.as_deref())?;
        let response_timeout = self.duration(
            &k("response_timeout"),
            p.response_timeout.as_ref(),
            60,
            false,
        )?;
        let queue_timeout = match &p.queue_timeout {
            None => response_timeout,
            Some(v) => self.duration(&k("queue_timeout"), Some(v), 0, false)?,
        };
        let slow_start = match &p.slow_start {
            None => None,
            Some(v) => {
                Some(self.duration(&k("slow_start"), Some(v), 0, true)?).filter(|d| !d.is_zero())
            }
        };
        let sticky = match &p.sticky {
            None => None,
            Some(st) => Some(self.sticky(&k("sticky"), st)?),
        };
        let health = match &p.health {
            None => None,
            Some(h) => Some(self.health(&k("health"), h)?),
        };
        if health.is_none() {
            if let Some((i, _)) = servers
                .iter()
                .enumerate()
                .find(|(_, s)| s.agent_port.is_some())
            {
                return Err(self.err(
                    format!("{key}.servers[{i}].agent_port"),
                    format!("agent checks run with the active checks: add [{key}.health]"),
                ));
            }
        }
        let cache = match &p.cache {
            Some(c) => Some(self.cache(&k("cache"), key.clone(), name, c)?),
            None => None,
        };
        let tls = match &p.tls {
            Some(t) => Some(self.pool_tls(&k("tls"), t)?),
            None => None,
        };
        let max_replication_lag = match &p.max_replication_lag {
            None => None,
            Some(v) => Some(self.duration(&k("max_replication_lag"), Some(v), 0, false)?),
        };
        Ok(Pool {
            max_replication_lag,
            cache,
            tls,
            name: name.to_owned(),
            balance,
            hash_key,
            queue_timeout,
            slow_start,
            sticky,
            health,
            connect_timeout: self.duration(
                &k("connect_timeout"),
                p.connect_timeout.as_ref(),
                5,
                false,
            )?,
            response_timeout,
            down_time: self.duration(&k("down_time"), p.down_time.as_ref(), 10, true)?,
            max_connections_per_server,
            max_idle_per_server,
            idle_timeout: self.duration(&k("idle_timeout"), p.idle_timeout.as_ref(), 30, false)?,
            resolve_interval: self.duration(
                &k("resolve_interval"),
                p.resolve_interval.as_ref(),
                5,
                false,
            )?,
            discover,
            servers,
        })
    }
}

/// A server address: `IP:PORT`, or `host:port`. A host name is not looked up here (a config
/// check or a reload never waits on DNS): the daemon resolves it before it starts and then
/// every `resolve_interval`, so the request path never waits on DNS either. Until it resolves
/// the address is `0.0.0.0:port` and the server takes nothing.
fn server_addr(s: &str) -> Result<(SocketAddr, Option<String>), String> {
    let t = s.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok((a, None));
    }
    let Some((host, port)) = t.rsplit_once(':') else {
        return Err(format!("{s:?} is not IP:PORT or host:port"));
    };
    let port = match port.parse::<u16>() {
        Ok(p) if !host.is_empty() && !host.contains(':') => p,
        _ => return Err(format!("{s:?} is not IP:PORT or host:port")),
    };
    let host = crate::dns::wire::check_name(host).map_err(|e| format!("{s:?}: {e}"))?;
    Ok((
        SocketAddr::from(([0, 0, 0, 0], port)),
        Some(host.to_ascii_lowercase()),
    ))
}
