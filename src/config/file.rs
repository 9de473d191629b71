//! The configuration file exactly as serde reads it: one struct per TOML table, every one with
//! `deny_unknown_fields` so that a misspelt key is an error instead of a silently ignored
//! setting. Nothing here is validated or defaulted; optional keys stay `Option` so that
//! [`super::build`] can apply the documented defaults and name the key path in every message.
//!
//! Durations and sizes are read as [`Scalar`] (string or number) rather than parsed here, so a
//! bare `keepalive_timeout = 75` reaches the builder and gets a message that explains the unit
//! syntax instead of serde's generic "invalid type".

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub daemon: DaemonFile,
    #[serde(default)]
    pub http: Vec<HttpFile>,
    #[serde(default)]
    pub mysql: Vec<MysqlFile>,
    /// `[pool.NAME]` tables, keyed by name.
    #[serde(default)]
    pub pool: BTreeMap<String, PoolFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonFile {
    pub shards: Option<i64>,
    pub io_driver: Option<IoDriverFile>,
    pub control_socket: Option<String>,
    pub max_connections: Option<i64>,
    pub stop_timeout: Option<Scalar>,
    pub pin_cores: Option<bool>,
    pub memory_limit: Option<Scalar>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriverFile {
    Auto,
    Uring,
    Epoll,
}

/// One `[[http]]` frontend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    pub name: String,
    pub listen: Vec<String>,
    pub default_pool: Option<String>,
    pub keepalive_timeout: Option<Scalar>,
    pub client_header_timeout: Option<Scalar>,
    pub client_body_timeout: Option<Scalar>,
    pub send_timeout: Option<Scalar>,
    pub client_body_min_rate: Option<Scalar>,
    pub send_min_rate: Option<Scalar>,
    pub tunnel_timeout: Option<Scalar>,
    pub max_body: Option<Scalar>,
    pub max_request_line: Option<i64>,
    pub max_header_bytes: Option<i64>,
    pub max_headers: Option<i64>,
    pub underscores_in_headers: Option<bool>,
    pub keep_chunk_extensions: Option<bool>,
    #[serde(default)]
    pub server_names: Vec<String>,
    #[serde(default)]
    pub route: Vec<RouteFile>,
}

/// One `[[http.route]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub pool: String,
    pub host: Option<StrList>,
    pub path_prefix: Option<String>,
    pub file_type: Option<StrList>,
    pub url_regex: Option<String>,
    pub header: Option<BTreeMap<String, String>>,
    pub cookie: Option<BTreeMap<String, String>>,
}

/// One `[pool.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub balance: Option<BalanceFile>,
    pub connect_timeout: Option<Scalar>,
    pub response_timeout: Option<Scalar>,
    pub down_time: Option<Scalar>,
    pub max_connections_per_server: Option<i64>,
    pub max_idle_per_server: Option<i64>,
    pub idle_timeout: Option<Scalar>,
    pub hash_key: Option<String>,
    pub queue_timeout: Option<Scalar>,
    pub slow_start: Option<Scalar>,
    pub sticky: Option<StickyFile>,
    pub health: Option<HealthFile>,
    pub servers: Vec<ServerFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceFile {
    RoundRobin,
    LeastRequests,
    ByRequests,
    ByTraffic,
    LeastTime,
    P2c,
    Hash,
}

/// One entry of a pool's `servers` list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub name: String,
    pub addr: String,
    pub weight: Option<i64>,
    pub route: Option<String>,
    pub backup: Option<bool>,
    pub max_connections: Option<i64>,
    pub agent_port: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StickyModeFile {
    AppCookie,
    InsertCookie,
    SourceIp,
}

/// `[pool.NAME.sticky]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyFile {
    pub mode: StickyModeFile,
    pub cookie: Option<String>,
    pub url_param: Option<String>,
    pub ttl: Option<Scalar>,
    pub table_size: Option<i64>,
    pub cookie_path: Option<String>,
    pub cookie_secure: Option<bool>,
    pub cookie_httponly: Option<bool>,
    pub cookie_samesite: Option<String>,
    pub cookie_max_age: Option<Scalar>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthMethodFile {
    Tcp,
    HttpHead,
    HttpGet,
    Mysql,
}

/// `[pool.NAME.health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub method: HealthMethodFile,
    pub uri: Option<String>,
    pub user_agent: Option<String>,
    pub expect_status: Option<String>,
    pub expect_body_regex: Option<String>,
    pub interval: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub mysql_user: Option<String>,
    pub mysql_password: Option<String>,
    pub mysql_query: Option<String>,
    pub agent_interval: Option<Scalar>,
}

/// One `[[mysql]]` frontend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlFile {
    pub name: String,
    pub listen: Vec<String>,
    pub pool: String,
    pub client_idle_timeout: Option<Scalar>,
    pub client_write_timeout: Option<Scalar>,
    pub max_connections: Option<i64>,
}

/// A value that may be written as a string or a number (durations, sizes). The builder
/// decides which forms a key accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string such as \"75s\" or \"10m\", or a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A key that takes either one string or a list of strings (`host`, `file_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrList(pub Vec<String>);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrList, E> {
                Ok(StrList(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StrList(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let f = parse("").unwrap();
        assert!(f.http.is_empty() && f.mysql.is_empty() && f.pool.is_empty());
        assert_eq!(f.daemon.shards, None);
    }

    #[test]
    fn scalar_and_list_forms() {
        let f = parse(
            r#"
            [[http]]
            name = "a"
            listen = ["127.0.0.1:1"]
            keepalive_timeout = "75s"
            client_header_timeout = 60
            client_body_timeout = 1.5
              [[http.route]]
              pool = "p"
              host = "one.example"
              [[http.route]]
              pool = "p"
              host = ["two.example", "*.three.example"]
            "#,
        )
        .unwrap();
        let h = &f.http[0];
        assert_eq!(h.keepalive_timeout, Some(Scalar::Str("75s".into())));
        assert_eq!(h.client_header_timeout, Some(Scalar::Int(60)));
        assert_eq!(h.client_body_timeout, Some(Scalar::Float(1.5)));
        assert_eq!(h.route[0].host, Some(StrList(vec!["one.example".into()])));
        assert_eq!(h.route[1].host.as_ref().unwrap().0.len(), 2);
    }

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        let table = [
            "[daemon]\nshardz = 1\n",
            "[[http]]\nname = \"a\"\nlisten = []\nlistn = 1\n",
            "[[http]]\nname = \"a\"\nlisten = []\n[[http.route]]\npool = \"p\"\nhots = \"x\"\n",
            "[pool.p]\nservers = []\nbalanse = \"round_robin\"\n",
            "[pool.p]\nservers = [{ name = \"a\", addr = \"1.2.3.4:5\", wieght = 1 }]\n",
            "[[mysql]]\nname = \"a\"\nlisten = []\npool = \"p\"\nfoo = 1\n",
            "frontend = 1\n",
        ];
        for text in table {
            let err = parse(text).expect_err(text);
            assert!(err.message().contains("unknown field"), "{text}: {err}");
        }
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        for text in [
            "[[http]]\nname = \"a\"\nlisten = []\n[[http.route]]\npool = \"p\"\nhost = 3\n",
            "[[http]]\nname = \"a\"\nlisten = []\nkeepalive_timeout = true\n",
            "[daemon]\nio_driver = \"kqueue\"\n",
            "[pool.p]\nservers = []\nbalance = \"random\"\n",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }
}
