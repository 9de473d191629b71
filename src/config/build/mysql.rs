//! `[[mysql]]` frontends: the pool they forward to, client timeouts and the connection bound.

use std::net::SocketAddr;

use super::{Builder, ConfigError};
use crate::config::file::MysqlFile;
use crate::config::MysqlFrontend;

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
        Ok(MysqlFrontend {
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
}
