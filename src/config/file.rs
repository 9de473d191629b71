//! The configuration file exactly as serde reads it: one struct per TOML table, every one with
//! `deny_unknown_fields` so that a misspelt key is an error instead of a silently ignored
//! setting. Nothing here is validated or defaulted; optional keys stay `Option` so that
//! [`super::build`] can apply the documented defaults and name the key path in every message.
//!
//! Durations and sizes are read as [`Scalar`] (string or number) rather than parsed here, so a
//! bare `keepalive_timeout = 75` reaches the builder and gets a message that explains the unit
//! syntax instead of serde's generic "invalid type".
//!
//! Every type is also `Clone + Serialize + PartialEq`: the daemon keeps the running
//! configuration in this form, edits it ([`super::edit`]) and writes it back out
//! ([`super::show`]) under the same key names it reads. Absent keys (`None`, and empty lists
//! or maps that default when omitted) are skipped, so a written file says only what was set.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The whole file.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub daemon: DaemonFile,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mysql: Vec<MysqlFile>,
    /// `[pool.NAME]` tables, keyed by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pool: BTreeMap<String, PoolFile>,
    /// `[admin]`: the admin listener (web page, `/metrics`); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminFile>,
    /// `[[site]]` tables: HTTP hosts and MySQL users billed together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub site: Vec<SiteFile>,
}

/// One `[[site]]`: a name, the HTTP hosts and the MySQL users whose traffic is its bill.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mysql_users: Vec<String>,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<AdminUserFile>,
}

/// One entry of `[admin] users`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUserFile {
    pub name: String,
    /// An argon2 PHC string (`shardgate hash-password` prints one).
    pub password_hash: String,
    /// `admin` or `read`; `read` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_driver: Option<IoDriverFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_cores: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<Scalar>,
    /// DNS servers (`"IP:PORT"`) used instead of those in /etc/resolv.conf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolvers: Option<Vec<String>>,
    /// Length of a traffic log period (e.g. `"5m"`); no traffic log when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_statistics_period: Option<Scalar>,
    /// Where the traffic log is appended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_log: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriverFile {
    Auto,
    Uring,
    Epoll,
}

/// One `[[http]]` frontend.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    pub name: String,
    pub listen: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_header_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_body_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_body_min_rate: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_min_rate: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_line: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_headers: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub underscores_in_headers: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_chunk_extensions: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogFile>,
    /// Client networks (CIDR) whose `PURGE` requests evict cached answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purge_from: Vec<String>,
    /// Terminate TLS on this frontend's listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFile>,
    /// Every connection starts with a PROXY protocol header (v1 or v2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_proxy: Option<bool>,
    /// The peers (CIDR) allowed to send a PROXY header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Answer every request with a redirect to the same URL over https (a port, or `true`
    /// for 443).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_https: Option<RedirectFile>,
}

/// `redirect_https = true` or `redirect_https = 8443`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RedirectFile {
    On(bool),
    Port(i64),
}

/// `tls = { certs = [...], ... }` of a frontend.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub certs: Vec<CertFile>,
    /// `"auto"` or `"off"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ktls: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_timeout: Option<Scalar>,
    /// `Strict-Transport-Security` value added to every answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsts: Option<String>,
    /// TLS versions offered, e.g. `["1.2", "1.3"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<String>>,
}

/// `tls = { verify, ca, sni, client_cert = { cert, key } }` of a pool.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolTlsFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<ClientCertFile>,
}

/// A client certificate and its key (PEM).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertFile {
    pub cert: String,
    pub key: String,
}

/// One certificate: a PEM chain, its key, an optional DER OCSP response to staple.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    pub cert: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocsp: Option<String>,
}

/// `access_log = { path = "...", format = "combined", sample = 0.1 }` of an `[[http]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<f64>,
}

/// One `[[http.route]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// The pool requests go to; a route has either this or `static`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Serve files from a directory instead of a pool.
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_files: Option<StaticFile>,
    /// Cache the pool's answers (RFC 9111) for requests this route takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<StrList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_type: Option<StrList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<BTreeMap<String, String>>,
}

/// `static = { root = "...", index = ["index.html"] }` of a route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFile {
    pub root: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precompressed: Option<bool>,
    /// How long an opened file (descriptor and metadata) is reused before it is looked up
    /// again (nginx's `open_file_cache_valid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_cache_valid: Option<Scalar>,
}

/// `cache = { size = "256MiB", max_object = "8MiB" }` of a route, or `[pool.NAME.cache]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    pub size: Scalar,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_object: Option<Scalar>,
    /// Add `X-Cache: HIT|MISS|...` to answers that went through the cache (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_header: Option<bool>,
    /// Most requests that wait for one in-flight fetch of the same object (default 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_waiters: Option<i64>,
}

/// One `[pool.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_time: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_server: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_idle_per_server: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<Scalar>,
    /// How often server addresses written as `name:port` are resolved again (e.g. `"5s"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve_interval: Option<Scalar>,
    /// Where the server list comes from when it is not written out, e.g.
    /// `"srv:_http._tcp.example.com"`; with it `servers` may be omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discover: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthFile>,
    /// Cache this pool's answers (RFC 9111), whichever route or default sends requests here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheFile>,
    /// Speak TLS to the servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<PoolTlsFile>,
    /// Optional in the file only so that a pool with `discover` may leave it out; the builder
    /// decides whether an empty list is acceptable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerFile>,
    /// MySQL pools with replicas: a replica further behind than this takes no reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replication_lag: Option<Scalar>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub name: String,
    pub addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_port: Option<i64>,
    /// Start every connection to this server with a PROXY header: `"v1"` or `"v2"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_proxy: Option<String>,
    /// MySQL: `primary` (default) or `replica`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl ServerFile {
    /// A server entry with only its name and address (every other key unset).
    pub fn new(name: &str, addr: &str) -> ServerFile {
        ServerFile {
            name: name.into(),
            addr: addr.into(),
            weight: None,
            route: None,
            backup: None,
            max_connections: None,
            agent_port: None,
            send_proxy: None,
            role: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StickyModeFile {
    AppCookie,
    InsertCookie,
    SourceIp,
}

/// `[pool.NAME.sticky]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StickyFile {
    pub mode: StickyModeFile,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_secure: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_httponly: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_samesite: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_max_age: Option<Scalar>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthMethodFile {
    Tcp,
    HttpHead,
    HttpGet,
    Mysql,
}

/// `[pool.NAME.health]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub method: HealthMethodFile,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_body_regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rise: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mysql_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mysql_password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mysql_query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_interval: Option<Scalar>,
}

/// One `[[mysql]]` frontend.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlFile {
    pub name: String,
    pub listen: Vec<String>,
    pub pool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_idle_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_write_timeout: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    /// Offer TLS to clients (SSLRequest after the greeting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFile>,
    /// Every connection starts with a PROXY protocol header (v1 or v2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_proxy: Option<bool>,
    /// The peers (CIDR) allowed to send a PROXY header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Per-query-digest statistics (`show digest mysql`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digests: Option<bool>,
    /// Query cache memory per shard (results kept, keys included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<Scalar>,
    /// Largest result the query cache keeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_max_result: Option<Scalar>,
    /// `[[mysql.cache]]` rules, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache: Vec<MysqlCacheFile>,
    /// Share server connections between clients at transaction boundaries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplex: Option<bool>,
    /// `wait`, `primary` or `off`: how a read after a write sees it (pools with replicas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_your_writes: Option<String>,
    /// Longest `MASTER_GTID_WAIT` before the read goes to the primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_your_writes_timeout: Option<Scalar>,
    /// The login replication lag and position are read with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_password: Option<String>,
    /// `[[mysql.user]]`: the accounts clients log in with (multiplexing, replicas).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user: Vec<MysqlUserFile>,
    /// `[[mysql.route]]`: statements sent to the primary or a replica by digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<MysqlRouteFile>,
}

/// One `[[mysql.user]]` account.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlUserFile {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `*` and 40 hex digits: `SHA1(SHA1(password))`, as MariaDB stores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_server_connections: Option<i64>,
}

/// One `[[mysql.route]]` rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlRouteFile {
    pub match_digest: String,
    /// `primary` or `replica`.
    pub to: String,
}

/// One `[[mysql.cache]]` rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlCacheFile {
    /// Regular expression over the query's digest text.
    pub match_digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub ttl: Scalar,
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

/// Written back in the form it was read: an integer, a float or a string.
impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Int(v) => s.serialize_i64(*v),
            Scalar::Float(v) => s.serialize_f64(*v),
            Scalar::Str(v) => s.serialize_str(v),
        }
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

/// Always written as a list, even of one: the reader accepts both and the list says plainly
/// that more may be added.
impl Serialize for StrList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
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
            "[daemon]\nresolver = [\"10.0.0.1:53\"]\n",
            "[pool.p]\ndiscover = \"srv:_http._tcp.example.com\"\ndiscovery = \"x\"\n",
            "[pool.p]\nservers = []\nresolve_intervals = \"5s\"\n",
        ];
        for text in table {
            let err = parse(text).expect_err(text);
            assert!(err.message().contains("unknown field"), "{text}: {err}");
        }
    }

    #[test]
    fn resolver_and_discovery_keys() {
        let f = parse(
            r#"
            [daemon]
            resolvers = ["10.0.0.1:53", "[fd00::1]:53"]

            [pool.web]
            resolve_interval = "5s"
            servers = [{ name = "a", addr = "app.internal:80" }]

            [pool.found]
            discover = "srv:_http._tcp.example.com"
            resolve_interval = 30
            "#,
        )
        .unwrap();
        assert_eq!(
            f.daemon.resolvers,
            Some(vec!["10.0.0.1:53".to_owned(), "[fd00::1]:53".to_owned()])
        );
        let web = &f.pool["web"];
        assert_eq!(web.resolve_interval, Some(Scalar::Str("5s".into())));
        assert_eq!(web.discover, None);
        assert_eq!(web.servers.len(), 1);
        let found = &f.pool["found"];
        assert_eq!(
            found.discover.as_deref(),
            Some("srv:_http._tcp.example.com")
        );
        assert_eq!(found.resolve_interval, Some(Scalar::Int(30)));
        assert!(found.servers.is_empty(), "servers may be omitted");
    }

    #[test]
    fn absent_keys_are_not_written() {
        let f = parse(
            "[pool.p]\nservers = [{ name = \"a\", addr = \"1.2.3.4:5\" }]\n\
             [[http]]\nname = \"h\"\nlisten = []\n",
        )
        .unwrap();
        let table = toml::Table::try_from(&f).unwrap();
        assert_eq!(table["daemon"].as_table().map(|t| t.len()), Some(0));
        assert!(!table.contains_key("mysql"));
        let http = table["http"][0].as_table().unwrap();
        assert!(!http.contains_key("route") && !http.contains_key("server_names"));
        assert!(!http.contains_key("default_pool"));
        let server = table["pool"]["p"]["servers"][0].as_table().unwrap();
        assert_eq!(server.len(), 2, "{server:?}");
    }

    #[test]
    fn scalars_and_lists_are_written_as_read() {
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
              file_type = ["css", "js"]
            "#,
        )
        .unwrap();
        let table = toml::Table::try_from(&f).unwrap();
        let http = &table["http"][0];
        assert_eq!(http["keepalive_timeout"].as_str(), Some("75s"));
        assert_eq!(http["client_header_timeout"].as_integer(), Some(60));
        assert_eq!(http["client_body_timeout"].as_float(), Some(1.5));
        let route = &http["route"][0];
        assert_eq!(route["host"].as_array().map(|a| a.len()), Some(1));
        assert_eq!(route["file_type"].as_array().map(|a| a.len()), Some(2));
        let back: FileConfig = toml::from_str(&toml::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
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
