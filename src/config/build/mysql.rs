//! `[[mysql]]` frontends: the pool they forward to, client timeouts and the connection bound.

use std::net::SocketAddr;
use std::sync::Arc;

use super::http::regex_problem;
use super::value::parse_size;
use super::{Builder, ConfigError};
use crate::config::file::MysqlFile;
use crate::config::{
    MysqlCacheConf, MysqlCacheRule, MysqlFrontend, MysqlPooled, MysqlRoute, MysqlUser, Pool,
    ReadYourWrites,
};

impl Builder<'_> {
    pub(super) fn mysql(
        &self,
        key: &str,
        m: &MysqlFile,
        listen: Vec<SocketAddr>,
        find_pool: &dyn Fn(&str, String) -> Result<usize, ConfigError>,
        pools: &[Pool],
    ) -> Result<MysqlFrontend, ConfigError> {
        let tls = match &m.tls {
            Some(t) => Some(self.tls(key, t, &[], false)?),
            None => None,
        };
        let accept_proxy = self.accept_proxy(key, m.accept_proxy, &m.trusted_proxies)?;
        let cache = self.mysql_cache(key, m)?;
        let pool = find_pool(&m.pool, format!("{key}.pool"))?;
        let pooled = self.mysql_pooled(key, m, &pools[pool])?;
        if pooled.is_some() && cache.is_some() {
            return Err(self.err(
                format!("{key}.cache"),
                "the query cache serves pass-through frontends only, not with multiplex or replicas yet",
            ));
        }
        if pooled.is_some() && tls.is_some() {
            return Err(self.err(
                format!("{key}.tls"),
                "TLS to clients is not available with multiplex or a pool with replicas yet",
            ));
        }
        Ok(MysqlFrontend {
            pooled,
            digests: m.digests.unwrap_or(true),
            cache,
            tls,
            accept_proxy,
            name: m.name.clone(),
            listen,
            pool,
            client_idle_timeout: self.duration(
                &format!("{key}.client_idle_timeout"),
                m.client_idle_timeout.as_ref(),
                8 * 3600,
                false,
            )?,
            client_write_timeout: self.duration(
                &format!("{key}.client_write_timeout"),
                m.client_write_timeout.as_ref(),
                60,
                false,
            )?,
            max_connections: self.int(
                &format!("{key}.max_connections"),
                m.max_connections,
                4096,
                1,
                i64::from(u32::MAX),
            )?,
        })
    }

    /// `[[mysql.cache]]` rules and the cache's sizes; `None` without rules (the size keys
    /// alone are accepted and do nothing).
    fn mysql_cache(
        &self,
        key: &str,
        m: &MysqlFile,
    ) -> Result<Option<Arc<MysqlCacheConf>>, ConfigError> {
        let size = |k: &str, v: Option<&crate::config::file::Scalar>, default: u64, min: u64| {
            let kk = format!("{key}.{k}");
            let n = match v {
                Some(v) => parse_size(v).map_err(|e| self.err(kk.clone(), e))?,
                None => default,
            };
            if n < min || n > (1 << 40) {
                return Err(self.err(kk, format!("{n} bytes: must be between {min} and 1 TiB")));
            }
            usize::try_from(n).map_err(|_| self.err(kk, "too large for this machine"))
        };
        let total = size("cache_size", m.cache_size.as_ref(), 64 << 20, 64 << 10)?;
        let max_result = size("cache_max_result", m.cache_max_result.as_ref(), 1 << 20, 1)?;
        if max_result > total {
            return Err(self.err(
                format!("{key}.cache_max_result"),
                format!("{max_result} bytes is more than cache_size ({total} bytes)"),
            ));
        }
        let mut rules = Vec::new();
        for (i, r) in m.cache.iter().enumerate() {
            let k = |f: &str| format!("{key}.cache[{i}].{f}");
            let regex = regex::Regex::new(&r.match_digest)
                .map_err(|e| self.err(k("match_digest"), regex_problem(&r.match_digest, &e)))?;
            for (f, v) in [("user", &r.user), ("schema", &r.schema)] {
                if v.as_deref().is_some_and(str::is_empty) {
                    return Err(self.err(k(f), "empty; remove the key to match any"));
                }
            }
            let ttl = self.duration(&k("ttl"), Some(&r.ttl), 0, false)?;
            rules.push(MysqlCacheRule {
                match_digest: r.match_digest.clone(),
                regex,
                user: r.user.clone(),
                schema: r.schema.clone(),
                ttl,
            });
        }
        if rules.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(MysqlCacheConf {
            rules,
            size: total,
            max_result,
        })))
    }

    /// Multiplexing and read/write split (docs/mysql-pooling.md): `None` when the frontend
    /// passes clients through (no `multiplex`, no replicas), and then none of its keys may be
    /// set.
    fn mysql_pooled(
        &self,
        key: &str,
        m: &MysqlFile,
        pool: &Pool,
    ) -> Result<Option<Arc<MysqlPooled>>, ConfigError> {
        let multiplex = m.multiplex.unwrap_or(false);
        let split = pool.servers.iter().any(|s| s.replica);
        let pk = format!("pool.{}", super::syntax::toml_key(&pool.name));
        if !multiplex && !split {
            let unused = [
                ("user", !m.user.is_empty()),
                ("route", !m.route.is_empty()),
                ("read_your_writes", m.read_your_writes.is_some()),
                (
                    "read_your_writes_timeout",
                    m.read_your_writes_timeout.is_some(),
                ),
                ("monitor_user", m.monitor_user.is_some()),
                ("monitor_password", m.monitor_password.is_some()),
            ];
            if let Some((k, _)) = unused.iter().find(|(_, set)| *set) {
                return Err(self.err(
                    format!("{key}.{k}"),
                    "only used with multiplex = true or a pool with replicas",
                ));
            }
            if pool.max_replication_lag.is_some() {
                return Err(self.err(
                    format!("{pk}.max_replication_lag"),
                    "the pool has no role = \"replica\" server",
                ));
            }
            return Ok(None);
        }
        if split && !pool.servers.iter().any(|s| !s.replica) {
            return Err(self.err(
                format!("{pk}.servers"),
                "every server is a replica: writes need a role = \"primary\" server",
            ));
        }
        if let Some(i) = pool.servers.iter().position(|s| s.send_proxy.is_some()) {
            return Err(self.err(
                format!("{pk}.servers[{i}].send_proxy"),
                "server connections are shared between clients here (multiplex or replicas): no PROXY header can name one client",
            ));
        }
        if pool.tls.is_some() {
            return Err(self.err(
                format!("{pk}.tls"),
                "TLS to the servers is not available with multiplex or replicas yet",
            ));
        }
        if m.user.is_empty() {
            return Err(self.err(
                format!("{key}.user"),
                "multiplex and read/write split log clients in at shardgate: add [[mysql.user]] accounts",
            ));
        }
        let mut users: Vec<MysqlUser> = Vec::with_capacity(m.user.len());
        for (i, u) in m.user.iter().enumerate() {
            let k = |f: &str| format!("{key}.user[{i}].{f}");
            if u.name.is_empty() || u.name.len() > 128 {
                return Err(self.err(k("name"), "must be 1 to 128 bytes"));
            }
            if users.iter().any(|o| o.name == u.name) {
                return Err(self.err(k("name"), format!("user {:?} is listed twice", u.name)));
            }
            let (sha1, stored, empty) = match (&u.password, &u.password_hash) {
                (Some(_), Some(_)) => {
                    return Err(self.err(
                        k("password_hash"),
                        "give password or password_hash, not both",
                    ))
                }
                (None, None) => {
                    return Err(self.err(
                        k("password"),
                        "missing: give password (\"\" for none) or password_hash",
                    ))
                }
                (Some(pw), None) if pw.is_empty() => (None, [0; 20], true),
                (Some(pw), None) => {
                    let h1 = crate::proto::mysql::auth::sha1(pw.as_bytes());
                    (Some(h1), crate::proto::mysql::auth::sha1(&h1), false)
                }
                (None, Some(h)) => match crate::proto::mysql::auth::parse_stored_hash(h) {
                    Some(stored) => (None, stored, false),
                    None => {
                        return Err(self.err(
                            k("password_hash"),
                            "expected '*' and 40 hex digits (SELECT PASSWORD('...') or mysql.user's authentication_string)",
                        ))
                    }
                },
            };
            let bound = |f: &str, v: Option<i64>| -> Result<Option<u64>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(n) => Ok(Some(self.int(&k(f), Some(n), 0, 1, 10_000_000)? as u64)),
                }
            };
            users.push(MysqlUser {
                name: u.name.clone(),
                sha1,
                stored,
                empty,
                max_connections: bound("max_connections", u.max_connections)?,
                max_server_connections: bound("max_server_connections", u.max_server_connections)?,
            });
        }
        let mut routes = Vec::with_capacity(m.route.len());
        for (i, r) in m.route.iter().enumerate() {
            let k = |f: &str| format!("{key}.route[{i}].{f}");
            let regex = regex::Regex::new(&r.match_digest)
                .map_err(|e| self.err(k("match_digest"), regex_problem(&r.match_digest, &e)))?;
            let replica = match r.to.as_str() {
                "primary" => false,
                "replica" => true,
                other => {
                    return Err(self.err(
                        k("to"),
                        format!("{other:?}: expected \"primary\" or \"replica\""),
                    ))
                }
            };
            if replica && !split {
                return Err(self.err(k("to"), "the pool has no role = \"replica\" server"));
            }
            routes.push(MysqlRoute {
                match_digest: r.match_digest.clone(),
                regex,
                replica,
            });
        }
        let read_your_writes = match m.read_your_writes.as_deref() {
            None | Some("wait") => ReadYourWrites::Wait,
            Some("primary") => ReadYourWrites::Primary,
            Some("off") => ReadYourWrites::Off,
            Some(other) => {
                return Err(self.err(
                    format!("{key}.read_your_writes"),
                    format!("{other:?}: expected \"wait\", \"primary\" or \"off\""),
                ))
            }
        };
        let read_your_writes_timeout = self.duration(
            &format!("{key}.read_your_writes_timeout"),
            m.read_your_writes_timeout.as_ref(),
            1,
            true,
        )?;
        let monitor = match (&m.monitor_user, &m.monitor_password) {
            (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
            (None, Some(_)) => {
                return Err(self.err(format!("{key}.monitor_password"), "without monitor_user"))
            }
            (None, None) => None,
        };
        if split && monitor.is_none() {
            return Err(self.err(
                format!("{key}.monitor_user"),
                "a pool with replicas needs a monitor login: replication lag and position are read with it",
            ));
        }
        Ok(Some(Arc::new(MysqlPooled {
            multiplex,
            split,
            read_your_writes,
            read_your_writes_timeout,
            monitor,
            users,
            routes,
        })))
    }
}
