//! Configuration: the TOML file as serde reads it ([`file`](mod@file)) and the validated [`Config`] the
//! daemon runs from ([`build`]). Loading is two stages so that every problem can name the file,
//! the key path and what is wrong before anything starts.
//!
//! The daemon keeps the running configuration as a [`file::FileConfig`] too: runtime changes
//! edit it ([`edit`]) and rebuild it through the same validation, and [`show`] writes it back
//! out as TOML.
//!
//! Frontends refer to pools by index into [`Config::pools`]; names are resolved once here.

pub mod build;
pub mod cidr;
pub mod edit;
pub mod file;
pub mod show;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use build::AcceptProxy;
pub use cidr::Cidr;

pub use build::{from_file, from_str, load, load_with_file, parse, ConfigError};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages), or a label such as `<inline>`.
    pub source: PathBuf,
    pub daemon: Daemon,
    pub http: Vec<HttpFrontend>,
    pub mysql: Vec<MysqlFrontend>,
    pub pools: Vec<Pool>,
    /// `[admin]`: the admin listener, when configured.
    pub admin: Option<Admin>,
    /// `[[site]]`: hosts and MySQL users billed together (`show traffic site`).
    pub sites: crate::site::Sites,
}

/// `[admin]`: where the admin page and `/metrics` listen, and who may use them.
#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Empty only on a loopback address: then no login is asked.
    pub users: Vec<AdminUser>,
}

/// What an admin user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRole {
    /// Everything: read, and change servers (enable, disable, drain, weight).
    Admin,
    /// Read only: actions are refused (403).
    Read,
}

impl AdminRole {
    pub fn as_str(&self) -> &'static str {
        match self {
            AdminRole::Admin => "admin",
            AdminRole::Read => "read",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser {
    pub name: String,
    /// The argon2 PHC string, validated at load.
    pub password_hash: String,
    pub role: AdminRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring when the kernel allows it, epoll otherwise (logged).
    Auto,
    Uring,
    Epoll,
}

#[derive(Debug, Clone)]
pub struct Daemon {
    /// Resolved shard count (0 in the file means one per online CPU; resolved here, never 0).
    pub shards: usize,
    pub io_driver: IoDriver,
    pub control_socket: PathBuf,
    /// Client connections open at once across the process; beyond it accepts pause.
    pub max_connections: usize,
    /// How long `stop daemon` / SIGTERM lets in-flight requests finish.
    pub stop_timeout: Duration,
    /// Pin shard N to core N (mod online CPUs).
    pub pin_cores: bool,
    /// Heap the daemon may hold before it sheds load (`None`: no ceiling).
    pub memory_limit: Option<u64>,
    /// DNS servers for server names and SRV discovery; empty: the system resolver for names
    /// (`/etc/hosts`, then DNS) and `/etc/resolv.conf`'s servers for SRV.
    pub resolvers: Vec<SocketAddr>,
    /// `log_statistics_period` and `traffic_log`: the traffic log, when on.
    pub traffic_log: Option<TrafficLog>,
}

/// The traffic log (`docs/logs.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficLog {
    /// Whole seconds, at least one.
    pub period: Duration,
    pub path: PathBuf,
}

/// An HTTP frontend's access log (`docs/logs.md`).
#[derive(Debug, Clone)]
pub struct AccessLog {
    pub path: std::sync::Arc<std::path::Path>,
    pub format: crate::log::Format,
    /// Fraction of requests logged, in (0, 1].
    pub sample: f64,
}

#[derive(Debug, Clone)]
pub struct HttpFrontend {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    /// Index into `Config::pools` for requests no route matches; `None` → 404.
    pub default_pool: Option<usize>,
    pub routes: Vec<Route>,
    /// Host names this frontend answers for in absolute-form targets (plus every route's hosts).
    pub server_names: Vec<HostPattern>,
    pub keepalive_timeout: Duration,
    pub client_header_timeout: Duration,
    pub client_body_timeout: Duration,
    pub send_timeout: Duration,
    /// Bytes per second a request body must average once `client_body_timeout` of waiting on
    /// the client is spent (0 = no minimum).
    pub client_body_min_rate: u64,
    /// Bytes per second a client must average reading a response once `send_timeout` of
    /// waiting on it is spent (0 = no minimum).
    pub send_min_rate: u64,
    /// A WebSocket tunnel with no bytes in either direction for this long is closed.
    pub tunnel_timeout: Duration,
    /// Largest request body accepted; `None` = unlimited.
    pub max_body: Option<u64>,
    /// Longest request line (method + target + version) → 414 beyond.
    pub max_request_line: usize,
    /// Largest request head in bytes → 431 beyond.
    pub max_header_bytes: usize,
    /// Most header fields in a request head → 431 beyond.
    pub max_headers: usize,
    /// Forward request fields whose name contains `_` (nginx's `underscores_in_headers`);
    /// dropped by default, since some servers read `Content_Length` as `Content-Length`.
    pub underscores_in_headers: bool,
    /// Forward chunk extensions (validated) instead of writing plain size lines.
    pub keep_chunk_extensions: bool,
    pub access_log: Option<AccessLog>,
    /// Clients whose `PURGE` requests are obeyed (others get 403).
    pub purge_from: Vec<Cidr>,
    /// Terminate TLS on this frontend's listeners.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// Connections start with a PROXY header, from these peers only.
    pub accept_proxy: Option<AcceptProxy>,
    /// Answer every request with a redirect to https on this port.
    pub redirect_https: Option<u16>,
}

/// Where a route sends the requests it matches.
#[derive(Debug, Clone)]
pub enum RouteTarget {
    /// Proxied to a pool (index into `Config::pools`), through a cache if the route has one
    /// (the pool's own `cache` applies otherwise).
    Pool {
        pool: usize,
        cache: Option<Arc<CacheConf>>,
    },
    /// Answered from files.
    Static(Arc<StaticConf>),
}

/// `static = {...}`: a directory served by the proxy itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConf {
    /// Absolute; the whole request path is looked up under it (nginx's `root`).
    pub root: PathBuf,
    /// File names tried, in order, for a path ending in `/`.
    pub index: Vec<String>,
    /// Serve `NAME.br` / `NAME.gz` to clients that accept them.
    pub precompressed: bool,
    pub file_cache_valid: Duration,
}

/// `cache = {...}`: an HTTP cache in front of a pool. `zone` names it (`pool NAME` or
/// `http[i].route[j]`): a reload keeps a zone's entries when its name and size stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConf {
    pub zone: String,
    /// The pool it fronts: a reload that points the route at another pool starts it empty.
    pub pool: String,
    /// Bytes of stored answers (heads and bodies) per process, split evenly between shards.
    pub size: u64,
    /// Larger answers are not stored.
    pub max_object: u64,
    pub status_header: bool,
    pub max_waiters: usize,
}

/// One `[[http.route]]`: every key given must match; first matching route wins.
#[derive(Debug, Clone)]
pub struct Route {
    pub target: RouteTarget,
    pub host: Vec<HostPattern>,
    pub path_prefix: Option<String>,
    /// Lower-cased extensions without the dot.
    pub file_type: Vec<String>,
    /// Matched against the origin-form target (path and `?query`) as bytes.
    pub url_regex: Option<regex::bytes::Regex>,
    /// (lower-cased header name, value pattern)
    pub header: Vec<(String, Glob)>,
    /// (cookie name, exact case-sensitive; value pattern)
    pub cookie: Vec<(String, Glob)>,
}

/// A host name pattern: exact (`example.com`) or wildcard (`*.example.com`, matching any
/// non-empty label sequence before `.example.com`). Stored lower-case; matching ignores case
/// and any `:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// The suffix including the leading dot, e.g. `.example.com`.
    Suffix(String),
}

/// A value pattern where `*` matches any run of bytes (including none); everything else
/// matches itself, case-sensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(pub String);

/// A pool's balancing method (`balance = ...`); one file per method under `src/balance/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round-robin, per shard.
    RoundRobin,
    /// Fewest requests in flight (weight-scaled), summed over every shard.
    LeastRequests,
    /// Weighted share of requests, counted over every shard (mod_proxy_balancer byrequests).
    ByRequests,
    /// Weighted share of bytes moved in + out, over every shard (bytraffic).
    ByTraffic,
    /// Lowest peak-EWMA of the time to the response head, times requests in flight.
    LeastTime,
    /// Power of two choices over in-flight counts.
    P2c,
    /// Consistent hash of `hash_key` (a ring of weighted points per server name).
    Hash,
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    SourceIp,
    /// The request target, path and query.
    Uri,
    /// A request header's value (name stored lower-case).
    Header(String),
    /// A request cookie's value.
    Cookie(String),
}

/// `[pool.NAME.sticky] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyMode {
    /// The application's session cookie carries the route after its last `.` (Tomcat's
    /// jvmRoute); also read from a URL parameter or a `;name=` path parameter.
    AppCookie,
    /// shardgate sets its own cookie naming the route, and strips it before forwarding.
    InsertCookie,
    /// A process-wide table client address -> server, with a TTL and a size bound.
    SourceIp,
}

/// `[pool.NAME.sticky]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    pub mode: StickyMode,
    /// Cookie name (app_cookie: the application's, e.g. JSESSIONID; insert_cookie: ours).
    pub cookie: String,
    /// app_cookie: query parameter and `;NAME=` path parameter that also carry the session id
    /// (and win over the cookie, as in Apache).
    pub url_param: Option<String>,
    /// source_ip: an entry not used for this long is forgotten.
    pub ttl: Duration,
    /// source_ip: entries kept at most (the least recently used go first).
    pub table_size: usize,
    /// insert_cookie attributes.
    pub cookie_path: String,
    pub cookie_secure: bool,
    pub cookie_httponly: bool,
    /// `SameSite=` value (`Lax`, `Strict`, `None`), if any.
    pub cookie_samesite: Option<String>,
    /// `Max-Age=` in seconds; `None` makes a session cookie.
    pub cookie_max_age: Option<u64>,
}

/// `[pool.NAME.health] method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthMethod {
    Tcp,
    HttpHead,
    HttpGet,
    /// Log in with `mysql_user` and run `mysql_query`.
    Mysql,
}

/// `[pool.NAME.health]`: one active checker per pool for the whole process.
#[derive(Debug, Clone)]
pub struct Health {
    pub method: HealthMethod,
    /// Request target as configured: relative (`/health`, sent as HTTP/1.0) or absolute
    /// (`http://host/health`, sent as HTTP/1.1 with that Host).
    pub uri: String,
    pub user_agent: String,
    /// Accepted status ranges, inclusive (`"2xx,3xx"`, `"200"`, `"200-299"`).
    pub expect_status: Vec<(u16, u16)>,
    /// Must match somewhere in the response headers or body (the first 64 KiB).
    pub expect_body_regex: Option<regex::bytes::Regex>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a down server up, failures that take an up one down.
    pub rise: u32,
    pub fall: u32,
    pub mysql_user: String,
    pub mysql_password: String,
    pub mysql_query: String,
    /// Agent checks (servers with `agent_port`): how often.
    pub agent_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// No response head within this after the request was sent → 504.
    pub response_timeout: Duration,
    /// A server that refused or timed out a connect is skipped this long on every shard.
    pub down_time: Duration,
    /// Upstream connections per server per shard (busy + idle); requests beyond it wait.
    pub max_connections_per_server: usize,
    /// MySQL replicas further behind than this take no reads (`None`: no bound, only a
    /// running replication).
    pub max_replication_lag: Option<Duration>,
    /// Idle keep-alive upstream connections kept per server per shard.
    pub max_idle_per_server: usize,
    /// An idle pooled upstream connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
    /// `balance = "hash"`: what is hashed.
    pub hash_key: Option<HashKey>,
    /// How long a request waits for a server slot (`max_connections_per_server` on this
    /// shard, `max_connections` of the server across shards) before a 503.
    pub queue_timeout: Duration,
    /// A server that comes back up ramps its weight from near zero over this long.
    pub slow_start: Option<Duration>,
    pub sticky: Option<Sticky>,
    pub health: Option<Health>,
    /// How often server names (and `discover`) are resolved again.
    pub resolve_interval: Duration,
    /// `discover = "srv:NAME"`: the SRV name whose targets are (also) the pool's servers.
    pub discover: Option<String>,
    /// `[pool.NAME.cache]`: every request sent to this pool goes through this cache, unless
    /// its route has its own.
    pub cache: Option<Arc<CacheConf>>,
    /// TLS to the servers.
    pub tls: Option<Arc<crate::tls::ClientTls>>,
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    /// Where to connect. For a server given as `host:port` this is the last address the name
    /// resolved to, or the unspecified address (`0.0.0.0:port`) until it first resolves: such
    /// a server takes no requests.
    pub addr: SocketAddr,
    /// The host name of a server given as `host:port` (resolved every `resolve_interval`).
    pub host: Option<String>,
    pub weight: u32,
    /// Sticky route name (app_cookie suffix, insert_cookie value); defaults to the name.
    pub route: String,
    /// Used only when every non-backup server is unusable.
    pub backup: bool,
    /// Connections in use to this server across all shards; beyond it requests queue.
    pub max_connections: Option<u32>,
    /// Agent check port: the server reports its weight or state there.
    pub agent_port: Option<u16>,
    /// Start every connection to it with a PROXY header naming the client.
    pub send_proxy: Option<ProxyVersion>,
    /// MySQL `role = "replica"`: takes reads only (read/write split).
    pub replica: bool,
}

/// A PROXY protocol version (HAProxy's spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct MysqlFrontend {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub pool: usize,
    pub client_idle_timeout: Duration,
    /// A write to the client that makes no progress for this long closes the session (both
    /// sides): a client that stops reading a large result must not hold a backend forever.
    pub client_write_timeout: Duration,
    /// Client connections this frontend holds at once (all shards); beyond it → MySQL ERR 1040.
    pub max_connections: usize,
    /// Offer TLS to clients (the greeting says CLIENT_SSL).
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// Connections start with a PROXY header, from these peers only.
    pub accept_proxy: Option<AcceptProxy>,
    /// Count statements per digest for `show digest mysql` (`digests`, default true).
    pub digests: bool,
    /// The query cache (`[[mysql.cache]]` rules); `None` without rules.
    pub cache: Option<Arc<MysqlCacheConf>>,
    /// shardgate terminates the protocol (multiplexing or read/write split); `None`: each
    /// client is passed through to a server connection of its own.
    pub pooled: Option<Arc<MysqlPooled>>,
}

/// A terminating MySQL frontend (docs/mysql-pooling.md).
#[derive(Debug)]
pub struct MysqlPooled {
    /// Server connections go back to the shard's pool at transaction boundaries.
    pub multiplex: bool,
    /// The pool has `role = "replica"` servers: reads go there.
    pub split: bool,
    pub read_your_writes: ReadYourWrites,
    pub read_your_writes_timeout: Duration,
    /// `(user, password)` of the replication monitor.
    pub monitor: Option<(String, String)>,
    pub users: Vec<MysqlUser>,
    pub routes: Vec<MysqlRoute>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadYourWrites {
    Wait,
    Primary,
    Off,
}

/// One `[[mysql.user]]`.
#[derive(Debug)]
pub struct MysqlUser {
    pub name: String,
    /// `SHA1(password)` when the password is in the file (empty password: `None` here and
    /// `empty` set).
    pub sha1: Option<[u8; 20]>,
    /// `SHA1(SHA1(password))`.
    pub stored: [u8; 20],
    /// The account has no password: the client's answer must be empty.
    pub empty: bool,
    pub max_connections: Option<u64>,
    pub max_server_connections: Option<u64>,
}

#[derive(Debug)]
pub struct MysqlRoute {
    pub match_digest: String,
    pub regex: regex::Regex,
    /// Send matching statements to a replica (else the primary).
    pub replica: bool,
}

/// A MySQL frontend's query cache: rules tried in order, memory per shard.
#[derive(Debug)]
pub struct MysqlCacheConf {
    pub rules: Vec<MysqlCacheRule>,
    /// Bytes of results (and their keys) kept per shard.
    pub size: usize,
    /// Results larger than this are not kept.
    pub max_result: usize,
}

#[derive(Debug)]
pub struct MysqlCacheRule {
    /// As written in the config (shown by `show cache mysql`).
    pub match_digest: String,
    pub regex: regex::Regex,
    pub user: Option<String>,
    pub schema: Option<String>,
    pub ttl: Duration,
}
