//! `[[mysql]]` frontends: the pool they forward to, client timeouts and the connection bound.

use std::net::SocketAddr;
use std::sync::Arc;

use super::http::regex_problem;
use super::value::parse_size;
use super::{Builder, ConfigError};
use crate::config::file::MysqlFile;
use crate::config::{MysqlCacheConf, MysqlCacheRule, MysqlFrontend};

impl Builder<'_> {
    pub(super) fn mysql(
        &self,
        key: &str,
        m: &MysqlFile,
        listen: Vec<SocketAddr>,
        find_pool: &dyn Fn(&str, String) -> Result<usize, ConfigError>,
    ) -> Result<MysqlFrontend, ConfigError> {
        let tls = match &m.tls {
            Some(t) => Some(self.tls(key, t, &[], false)?),
            None => None,
        };
        let accept_proxy = self.accept_proxy(key, m.accept_proxy, &m.trusted_proxies)?;
        let cache = self.mysql_cache(key, m)?;
        Ok(MysqlFrontend {
            digests: m.digests.unwrap_or(true),
            cache,
            tls,
            accept_proxy,
            name: m.name.clone(),
            listen,
            pool: find_pool(&m.pool, format!("{key}.pool"))?,
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
}
