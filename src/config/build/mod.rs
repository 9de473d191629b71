//! From the file ([`super::file`]) to the validated [`Config`]: defaults applied, durations and
//! sizes parsed, names resolved to indices, every cross-reference checked. This is the only
//! place that decides whether a configuration is acceptable, so the daemon and `--check` agree.
//!
//! Every [`ConfigError`] reads `FILE: [line L, column C: ][KEY.PATH: ]problem`, where the key
//! path uses TOML's own spelling with array indices (`http[0].route[2].url_regex`) so that an
//! operator can find the offending line without reading the code.
//!
//! One file per part of the work: `syntax` renders TOML/serde errors (line, column, indexed
//! key path); `value` parses durations and sizes and applies defaults and ranges; `daemon`,
//! `http` (frontends and their routes), `mysql`, `pool` and `site` build one section each; `frontend`
//! holds the checks every frontend passes (names, listen addresses that overlap no other).
//! This file has the error type, the entry points and the cross-section work of
//! `Builder::build`: pools resolved by name, at least one frontend, unused pools reported.

mod admin;
mod balance;
mod daemon;
mod frontend;
mod http;
mod mysql;
mod pool;
mod site;
mod syntax;
#[cfg(test)]
mod tests;
mod tls;
mod value;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::file::FileConfig;
use super::Config;
use syntax::toml_error;

pub use tls::AcceptProxy;
pub use value::{parse_duration, parse_size};

/// A configuration that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or label) the text came from.
    pub file: String,
    /// 1-based line and column, when the TOML parser located the problem.
    pub position: Option<(usize, usize)>,
    /// Key path such as `http[0].route[2].url_regex`, when known.
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, "line {line}, column {col}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Read and validate the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_file(path).map(|(config, _)| config)
}

/// Validate configuration text; `origin` names it in messages (a path, or `<inline>`).
pub fn from_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    Builder { origin }.build(parse(text, origin)?)
}

/// Read configuration text as a file (no validation beyond the TOML shapes).
pub fn parse(text: &str, origin: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| toml_error(origin, text, &e))
}

/// As [`load`], also returning the file as read: the daemon keeps it to print the running
/// config (`show config`) and to apply runtime changes to it.
pub fn load_with_file(path: &Path) -> Result<(Config, FileConfig), ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: origin.clone(),
        position: None,
        key: None,
        problem: format!("cannot read: {e}"),
    })?;
    let file = parse(&text, &origin)?;
    let config = from_file(file.clone(), &origin)?;
    Ok((config, file))
}

/// Validate a file already read (e.g. the running config after a runtime change).
pub fn from_file(file: FileConfig, origin: &str) -> Result<Config, ConfigError> {
    Builder { origin }.build(file)
}

struct Builder<'a> {
    origin: &'a str,
}

impl Builder<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.origin.to_owned(),
            position: None,
            key: Some(key.into()),
            problem: problem.into(),
        }
    }

    fn top_err(&self, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.origin.to_owned(),
            position: None,
            key: None,
            problem: problem.into(),
        }
    }

    fn build(&self, file: FileConfig) -> Result<Config, ConfigError> {
        let daemon = self.daemon(&file.daemon)?;

        let mut pools = Vec::with_capacity(file.pool.len());
        let mut pool_names = Vec::with_capacity(file.pool.len());
        for (name, pool) in &file.pool {
            pools.push(self.pool(name, pool)?);
            pool_names.push(name.as_str());
        }
        let find_pool = |name: &str, key: String| -> Result<usize, ConfigError> {
            pool_names.iter().position(|n| *n == name).ok_or_else(|| {
                let known = if pool_names.is_empty() {
                    "no [pool.NAME] is defined".to_owned()
                } else {
                    format!("defined pools: {}", pool_names.join(", "))
                };
                self.err(key, format!("no pool named {name:?} ({known})"))
            })
        };

        if file.http.is_empty() && file.mysql.is_empty() {
            return Err(self.top_err("no frontend: define at least one [[http]] or [[mysql]]"));
        }

        let mut names: HashSet<&str> = HashSet::new();
        let mut listens: Vec<(SocketAddr, String)> = Vec::new();
        let mut used = vec![false; pools.len()];

        let mut http = Vec::with_capacity(file.http.len());
        for (i, h) in file.http.iter().enumerate() {
            let key = format!("http[{i}]");
            self.frontend_name(&key, &h.name, &mut names)?;
            let listen = self.listen(&key, &h.listen, &mut listens)?;
            let fe = self.http(&key, h, listen, &find_pool)?;
            for p in fe
                .routes
                .iter()
                .filter_map(|r| r.pool())
                .chain(fe.default_pool)
            {
                self.http_pool(&pools[p])?;
                used[p] = true;
            }
            http.push(fe);
        }

        let mut mysql = Vec::with_capacity(file.mysql.len());
        for (i, m) in file.mysql.iter().enumerate() {
            let key = format!("mysql[{i}]");
            self.frontend_name(&key, &m.name, &mut names)?;
            let listen = self.listen(&key, &m.listen, &mut listens)?;
            let fe = self.mysql(&key, m, listen, &find_pool, &pools)?;
            self.mysql_pool(&pools[fe.pool])?;
            used[fe.pool] = true;
            mysql.push(fe);
        }

        let sites = self.sites(&file.site)?;

        let admin = match &file.admin {
            Some(a) => Some(self.admin(a, &listens)?),
            None => None,
        };

        for (pool, used) in pools.iter().zip(&used) {
            if !*used {
                tracing::warn!(event = "pool_unused", file = self.origin, pool = %pool.name, "pool is not used by any frontend");
            }
        }

        Ok(Config {
            source: PathBuf::from(self.origin),
            daemon,
            http,
            mysql,
            pools,
            admin,
            sites,
        })
    }
}
