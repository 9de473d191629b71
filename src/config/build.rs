//! From the file ([`super::file`]) to the validated [`Config`]: defaults applied, durations and
//! sizes parsed, names resolved to indices, every cross-reference checked. This is the only
//! place that decides whether a configuration is acceptable, so the daemon and `--check` agree.
//!
//! Every [`ConfigError`] reads `FILE: [line L, column C: ][KEY.PATH: ]problem`, where the key
//! path uses TOML's own spelling with array indices (`http[0].route[2].url_regex`) so that an
//! operator can find the offending line without reading the code.

use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{
    BalanceFile, DaemonFile, FileConfig, HttpFile, IoDriverFile, MysqlFile, PoolFile, RouteFile,
    Scalar,
};
use super::{
    Balance, Config, Daemon, Glob, HostPattern, HttpFrontend, IoDriver, MysqlFrontend, Pool, Route,
    Server,
};

/// Upper bound for `daemon.shards`: far above any real core count, low enough to catch a typo.
const MAX_SHARDS: i64 = 1024;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Head limits above this would only let one client pin a lot of buffer memory.
const MAX_HEAD_LIMIT: i64 = 1 << 20;
/// Default minimum average rate of a request body and of a client reading a response, in bytes
/// per second (Apache mod_reqtimeout's `MinRate=500`, rounded to a power of two).
const DEFAULT_MIN_RATE: u64 = 512;
/// Smallest `daemon.memory_limit` accepted.
const MIN_MEMORY_LIMIT: u64 = 8 << 20;
const MAX_WEIGHT: i64 = 1000;

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
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: origin.clone(),
        position: None,
        key: None,
        problem: format!("cannot read: {e}"),
    })?;
    from_str(&text, &origin)
}

/// Validate configuration text; `origin` names it in messages (a path, or `<inline>`).
pub fn from_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
    Builder { origin }.build(file)
}

/// Turn a TOML/serde error into our format: line and column from its span, and the key path
/// it carries, completed with array indices found by locating the span in the document.
fn toml_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start);
    // The key list is private to toml's error; its Display shows it only without the input.
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let keys: Option<Vec<&str>> = shown
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|r| r.strip_suffix('`')))
        .map(|k| k.split('.').collect());
    ConfigError {
        file: origin.to_owned(),
        position: offset.map(|o| line_col(text, o)),
        key: keys.map(|k| indexed_key_path(text, &k, offset)),
        problem: e.message().trim_end().to_owned(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, col)
}

/// `["http", "route", "pool"]` + the error's offset → `http[1].route[0].pool`: for each array on
/// the way, the element that starts last before the offset is the one that holds the error
/// (array-of-tables elements are spanned by their `[[header]]`, inline ones by their braces).
fn indexed_key_path(text: &str, keys: &[&str], offset: Option<usize>) -> String {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok();
    let mut table: Option<&DeTable> = doc.as_ref().map(|d| d.get_ref());
    let mut out = String::new();
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&toml_key(key));
        let value = table.and_then(|t| t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v));
        table = None;
        let Some(value) = value else { continue };
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(items) => {
                let Some(off) = offset else { continue };
                let hit = items
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, v)| v.span().start <= off);
                if let Some((idx, item)) = hit {
                    out.push_str(&format!("[{idx}]"));
                    if let DeValue::Table(t) = item.get_ref() {
                        table = Some(t);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A key as TOML would need it written: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    if is_bare_key(key) {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn is_bare_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parse a duration: one or more `<integer><unit>` groups, units `ms`, `s`, `m`, `h`, `d`
/// (`"75s"`, `"500ms"`, `"1h30m"`). Bare numbers are refused: `75` could mean seconds or
/// milliseconds, and guessing wrong is a silent thousandfold error.
pub fn parse_duration(v: &Scalar) -> Result<Duration, String> {
    const HINT: &str = "write a number with a unit: ms, s, m, h or d, e.g. \"75s\" or \"500ms\"";
    let s = match v {
        Scalar::Int(n) => return Err(format!("{n} has no unit; {HINT}")),
        Scalar::Float(n) => return Err(format!("{n} has no unit; {HINT}")),
        Scalar::Str(s) => s,
    };
    let bytes = s.trim().as_bytes();
    if bytes.is_empty() {
        return Err(format!("empty duration; {HINT}"));
    }
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s.trim()[start..i];
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s.trim()[ustart..i];
        if digits.is_empty() {
            return Err(format!("{s:?} is not a duration; {HINT}"));
        }
        let mult: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" if i == bytes.len() => return Err(format!("{s:?} has no unit; {HINT}")),
            "" => {
                return Err(format!(
                    "{s:?} is not a duration (whole numbers only); {HINT}"
                ))
            }
            other => return Err(format!("{s:?}: unknown unit {other:?}; {HINT}")),
        };
        let n: u64 = digits.parse().map_err(|_| format!("{s:?} is too large"))?;
        total_ms = n
            .checked_mul(mult)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("{s:?} is too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parse a byte size: an integer, or a string of digits with an optional binary multiple
/// suffix `k`, `m` or `g` (1024, 1024², 1024³).
pub fn parse_size(v: &Scalar) -> Result<u64, String> {
    const HINT: &str = "write bytes as an integer, or a string such as \"10k\", \"10m\" or \"1g\"";
    match v {
        Scalar::Int(n) if *n >= 0 => Ok(*n as u64),
        Scalar::Int(n) => Err(format!("{n} is negative")),
        Scalar::Float(n) => Err(format!("{n} is not a whole number of bytes; {HINT}")),
        Scalar::Str(s) => {
            let t = s.trim();
            let (digits, mult) = match t.as_bytes().last().map(u8::to_ascii_lowercase) {
                Some(b'k') => (&t[..t.len() - 1], 1u64 << 10),
                Some(b'm') => (&t[..t.len() - 1], 1 << 20),
                Some(b'g') => (&t[..t.len() - 1], 1 << 30),
                _ => (t, 1),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s:?} is not a size; {HINT}"));
            }
            digits
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(mult))
                .ok_or_else(|| format!("{s:?} is too large"))
        }
    }
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
            for p in fe.routes.iter().map(|r| r.pool).chain(fe.default_pool) {
                used[p] = true;
            }
            http.push(fe);
        }

        let mut mysql = Vec::with_capacity(file.mysql.len());
        for (i, m) in file.mysql.iter().enumerate() {
            let key = format!("mysql[{i}]");
            self.frontend_name(&key, &m.name, &mut names)?;
            let listen = self.listen(&key, &m.listen, &mut listens)?;
            let fe = self.mysql(&key, m, listen, &find_pool)?;
            used[fe.pool] = true;
            mysql.push(fe);
        }

        for (pool, used) in pools.iter().zip(&used) {
            if !*used {
                tracing::warn!(file = self.origin, pool = %pool.name, "pool is not used by any frontend");
            }
        }

        Ok(Config {
            source: PathBuf::from(self.origin),
            daemon,
            http,
            mysql,
            pools,
        })
    }

    fn daemon(&self, d: &DaemonFile) -> Result<Daemon, ConfigError> {
        let shards = match d.shards.unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n @ 1..=MAX_SHARDS => n as usize,
            n => {
                return Err(self.err(
                    "daemon.shards",
                    format!("{n} is out of range: 0 (one per CPU) or 1..={MAX_SHARDS}"),
                ))
            }
        };
        let control_socket = d
            .control_socket
            .as_deref()
            .unwrap_or("/run/shardgate/shardgate.sock");
        if control_socket.is_empty() {
            return Err(self.err("daemon.control_socket", "must not be empty"));
        }
        if control_socket.len() > MAX_SOCKET_PATH {
            return Err(self.err(
                "daemon.control_socket",
                format!(
                    "{} bytes long; a UNIX socket path is limited to {MAX_SOCKET_PATH} bytes",
                    control_socket.len()
                ),
            ));
        }
        Ok(Daemon {
            shards,
            io_driver: match d.io_driver.unwrap_or(IoDriverFile::Auto) {
                IoDriverFile::Auto => IoDriver::Auto,
                IoDriverFile::Uring => IoDriver::Uring,
                IoDriverFile::Epoll => IoDriver::Epoll,
            },
            control_socket: PathBuf::from(control_socket),
            max_connections: self.int(
                "daemon.max_connections",
                d.max_connections,
                16000,
                1,
                i64::from(u32::MAX),
            )?,
            stop_timeout: self.duration(
                "daemon.stop_timeout",
                d.stop_timeout.as_ref(),
                30,
                true,
            )?,
            pin_cores: d.pin_cores.unwrap_or(true),
            memory_limit: match &d.memory_limit {
                None => None,
                Some(v) => {
                    let key = "daemon.memory_limit";
                    let n = parse_size(v).map_err(|m| self.err(key, m))?;
                    if n < MIN_MEMORY_LIMIT {
                        return Err(self.err(
                            key,
                            format!("{n} is below the smallest ceiling, 8m (the daemon itself needs a few MiB)"),
                        ));
                    }
                    Some(n)
                }
            },
        })
    }

    /// An integer key with a default and an inclusive range.
    fn int(
        &self,
        key: &str,
        v: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<usize, ConfigError> {
        let n = v.unwrap_or(default);
        if n < min || n > max {
            return Err(self.err(key, format!("{n} is out of range {min}..={max}")));
        }
        usize::try_from(n).map_err(|_| self.err(key, format!("{n} is out of range")))
    }

    /// A duration key with a default in seconds; zero only where it means something.
    fn duration(
        &self,
        key: &str,
        v: Option<&Scalar>,
        default_secs: u64,
        zero_ok: bool,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = v else {
            return Ok(Duration::from_secs(default_secs));
        };
        let d = parse_duration(v).map_err(|m| self.err(key, m))?;
        if d.is_zero() && !zero_ok {
            return Err(self.err(key, "must be greater than zero"));
        }
        Ok(d)
    }

    fn frontend_name<'n>(
        &self,
        key: &str,
        name: &'n str,
        names: &mut HashSet<&'n str>,
    ) -> Result<(), ConfigError> {
        self.check_name(&format!("{key}.name"), name)?;
        if !names.insert(name) {
            return Err(self.err(
                format!("{key}.name"),
                format!("{name:?} is already the name of another frontend"),
            ));
        }
        Ok(())
    }

    /// Names appear in logs, stats and command-socket arguments: keep them to one plain word.
    fn check_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        if !is_bare_key(name) {
            return Err(self.err(
                key,
                format!(
                    "{name:?}: a name must be non-empty and use only letters, digits, '-' and '_'"
                ),
            ));
        }
        Ok(())
    }

    fn listen(
        &self,
        key: &str,
        list: &[String],
        seen: &mut Vec<(SocketAddr, String)>,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        if list.is_empty() {
            return Err(self.err(
                format!("{key}.listen"),
                "must list at least one \"IP:PORT\"",
            ));
        }
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let k = format!("{key}.listen[{i}]");
            let addr: SocketAddr = s.trim().parse().map_err(|_| {
                self.err(
                    &k,
                    format!("{s:?} is not IP:PORT (e.g. \"0.0.0.0:80\" or \"[::]:80\")"),
                )
            })?;
            if addr.port() != 0 && out.contains(&addr) {
                return Err(self.err(&k, format!("{s:?} is listed twice")));
            }
            // Every shard binds with SO_REUSEPORT, so an overlapping bind would not fail: two
            // frontends would silently share the port's connections. Refuse it here. (Within
            // one frontend, 0.0.0.0:80 beside [::]:80 is harmless: both serve the same site.)
            if let Some((_, other)) = seen.iter().find(|(a, _)| listen_overlaps(a, &addr)) {
                return Err(self.err(&k, format!("{s:?} overlaps {other}")));
            }
            out.push(addr);
        }
        seen.extend(
            out.iter()
                .enumerate()
                .map(|(i, a)| (*a, format!("{key}.listen[{i}]"))),
        );
        Ok(out)
    }

    fn http(
        &self,
        key: &str,
        h: &HttpFile,
        listen: Vec<SocketAddr>,
        find_pool: &dyn Fn(&str, String) -> Result<usize, ConfigError>,
    ) -> Result<HttpFrontend, ConfigError> {
        let default_pool = match &h.default_pool {
            Some(name) => Some(find_pool(name, format!("{key}.default_pool"))?),
            None => None,
        };
        let mut routes = Vec::with_capacity(h.route.len());
        for (i, r) in h.route.iter().enumerate() {
            routes.push(self.route(&format!("{key}.route[{i}]"), r, find_pool)?);
        }
        let mut server_names = Vec::with_capacity(h.server_names.len());
        for (i, s) in h.server_names.iter().enumerate() {
            server_names.push(
                HostPattern::parse(s)
                    .map_err(|m| self.err(format!("{key}.server_names[{i}]"), m))?,
            );
        }
        let k = |name: &str| format!("{key}.{name}");
        let max_request_line = self.int(
            &k("max_request_line"),
            h.max_request_line,
            8192,
            16,
            MAX_HEAD_LIMIT,
        )?;
        let max_header_bytes = self.int(
            &k("max_header_bytes"),
            h.max_header_bytes,
            32768,
            16,
            MAX_HEAD_LIMIT,
        )?;
        if max_header_bytes < max_request_line {
            return Err(self.err(
                k("max_header_bytes"),
                format!("{max_header_bytes} is smaller than max_request_line ({max_request_line}); the head includes the request line"),
            ));
        }
        let max_body = match &h.max_body {
            Some(v) => Some(parse_size(v).map_err(|m| self.err(k("max_body"), m))?),
            None => None,
        };
        let rate = |key: &str, v: &Option<Scalar>| match v {
            Some(v) => parse_size(v).map_err(|m| self.err(k(key), m)),
            None => Ok(DEFAULT_MIN_RATE),
        };
        let client_body_min_rate = rate("client_body_min_rate", &h.client_body_min_rate)?;
        let send_min_rate = rate("send_min_rate", &h.send_min_rate)?;
        Ok(HttpFrontend {
            name: h.name.clone(),
            listen,
            default_pool,
            routes,
            server_names,
            keepalive_timeout: self.duration(
                &k("keepalive_timeout"),
                h.keepalive_timeout.as_ref(),
                75,
                false,
            )?,
            client_header_timeout: self.duration(
                &k("client_header_timeout"),
                h.client_header_timeout.as_ref(),
                60,
                false,
            )?,
            client_body_timeout: self.duration(
                &k("client_body_timeout"),
                h.client_body_timeout.as_ref(),
                60,
                false,
            )?,
            send_timeout: self.duration(&k("send_timeout"), h.send_timeout.as_ref(), 60, false)?,
            client_body_min_rate,
            send_min_rate,
            tunnel_timeout: self.duration(
                &k("tunnel_timeout"),
                h.tunnel_timeout.as_ref(),
                3600,
                false,
            )?,
            max_body,
            max_request_line,
            max_header_bytes,
            max_headers: self.int(&k("max_headers"), h.max_headers, 100, 1, 10_000)?,
            underscores_in_headers: h.underscores_in_headers.unwrap_or(false),
            keep_chunk_extensions: h.keep_chunk_extensions.unwrap_or(false),
        })
    }

    fn route(
        &self,
        key: &str,
        r: &RouteFile,
        find_pool: &dyn Fn(&str, String) -> Result<usize, ConfigError>,
    ) -> Result<Route, ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        let pool = find_pool(&r.pool, k("pool"))?;

        let mut host = Vec::new();
        if let Some(list) = &r.host {
            if list.0.is_empty() {
                return Err(self.err(k("host"), "empty list; remove the key to match any host"));
            }
            for (i, s) in list.0.iter().enumerate() {
                let kk = if list.0.len() == 1 {
                    k("host")
                } else {
                    format!("{key}.host[{i}]")
                };
                host.push(HostPattern::parse(s).map_err(|m| self.err(kk, m))?);
            }
        }

        if let Some(p) = &r.path_prefix {
            if !p.starts_with('/') {
                return Err(self.err(k("path_prefix"), format!("{p:?} must start with \"/\"")));
            }
        }

        let mut file_type = Vec::new();
        if let Some(list) = &r.file_type {
            if list.0.is_empty() {
                return Err(self.err(
                    k("file_type"),
                    "empty list; remove the key to match any file type",
                ));
            }
            for (i, s) in list.0.iter().enumerate() {
                let ext = s.strip_prefix('.').unwrap_or(s).to_ascii_lowercase();
                if ext.is_empty()
                    || ext.bytes().any(|b| {
                        b == b'/' || b == b'.' || b.is_ascii_whitespace() || b.is_ascii_control()
                    })
                {
                    let kk = if list.0.len() == 1 {
                        k("file_type")
                    } else {
                        format!("{key}.file_type[{i}]")
                    };
                    return Err(
                        self.err(kk, format!("{s:?} is not a file extension (e.g. \"pdf\")"))
                    );
                }
                file_type.push(ext);
            }
        }

        let url_regex = match &r.url_regex {
            Some(re) => Some(
                regex::bytes::Regex::new(re)
                    .map_err(|e| self.err(k("url_regex"), regex_problem(re, &e)))?,
            ),
            None => None,
        };

        let mut header = Vec::new();
        for (name, glob) in r.header.iter().flatten() {
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(self.err(
                    k("header"),
                    format!("{name:?} is not a valid header field name"),
                ));
            }
            header.push((name.to_ascii_lowercase(), Glob(glob.clone())));
        }
        if r.header.as_ref().is_some_and(|h| h.is_empty()) {
            return Err(self.err(k("header"), "empty table; remove the key or name a header"));
        }

        let mut cookie = Vec::new();
        for (name, glob) in r.cookie.iter().flatten() {
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(self.err(k("cookie"), format!("{name:?} is not a valid cookie name")));
            }
            cookie.push((name.clone(), Glob(glob.clone())));
        }
        if r.cookie.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(self.err(k("cookie"), "empty table; remove the key or name a cookie"));
        }

        let route = Route {
            pool,
            host,
            path_prefix: r.path_prefix.clone(),
            file_type,
            url_regex,
            header,
            cookie,
        };
        if route.host.is_empty()
            && route.path_prefix.is_none()
            && route.file_type.is_empty()
            && route.url_regex.is_none()
            && route.header.is_empty()
            && route.cookie.is_empty()
        {
            return Err(self.err(
                key,
                "route has no match key (host, path_prefix, file_type, url_regex, header or cookie); \
                 use default_pool for a catch-all",
            ));
        }
        Ok(route)
    }

    fn mysql(
        &self,
        key: &str,
        m: &MysqlFile,
        listen: Vec<SocketAddr>,
        find_pool: &dyn Fn(&str, String) -> Result<usize, ConfigError>,
    ) -> Result<MysqlFrontend, ConfigError> {
        Ok(MysqlFrontend {
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

    fn pool(&self, name: &str, p: &PoolFile) -> Result<Pool, ConfigError> {
        let key = format!("pool.{}", toml_key(name));
        self.check_name(&key, name)?;
        let k = |n: &str| format!("{key}.{n}");
        if p.servers.is_empty() {
            return Err(self.err(k("servers"), "must list at least one server"));
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
            let addr = resolve(&s.addr).map_err(|m| self.err(format!("{sk}.addr"), m))?;
            servers.push(Server {
                name: s.name.clone(),
                addr,
                weight,
            });
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
        Ok(Pool {
            name: name.to_owned(),
            balance: match p.balance.unwrap_or(BalanceFile::RoundRobin) {
                BalanceFile::RoundRobin => Balance::RoundRobin,
                BalanceFile::LeastRequests => Balance::LeastRequests,
            },
            connect_timeout: self.duration(
                &k("connect_timeout"),
                p.connect_timeout.as_ref(),
                5,
                false,
            )?,
            response_timeout: self.duration(
                &k("response_timeout"),
                p.response_timeout.as_ref(),
                60,
                false,
            )?,
            down_time: self.duration(&k("down_time"), p.down_time.as_ref(), 10, true)?,
            max_connections_per_server,
            max_idle_per_server,
            idle_timeout: self.duration(&k("idle_timeout"), p.idle_timeout.as_ref(), 30, false)?,
            servers,
        })
    }
}

/// Two listen addresses overlap when they share a port and either the IPs are equal or one is
/// a wildcard (`0.0.0.0` / `[::]`, which on Linux also covers IPv4 unless v6only is set).
/// Port 0 asks the kernel for a fresh port each time, so it never overlaps.
fn listen_overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let wild_any = |x: &SocketAddr| x.is_ipv6() && x.ip().is_unspecified();
    a.ip() == b.ip()
        || wild_any(a)
        || wild_any(b)
        || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified()))
}

/// A server address: `IP:PORT`, or `host:port` resolved now (first address returned), so that
/// the request path never waits on DNS. Re-resolution happens only on reload.
fn resolve(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = t.rsplit_once(':') else {
        return Err(format!("{s:?} is not IP:PORT or host:port"));
    };
    let port = match port.parse::<u16>() {
        Ok(p) if !host.is_empty() && !host.contains(':') => p,
        _ => return Err(format!("{s:?} is not IP:PORT or host:port")),
    };
    match (host, port).to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("{s:?}: the name resolved to no address")),
        Err(e) => Err(format!("{s:?}: cannot resolve: {e}")),
    }
}

/// The regex crate's message spans several lines (pattern, caret, reason); keep one line.
fn regex_problem(re: &str, e: &regex::Error) -> String {
    let text = e.to_string();
    let reason = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.lines().map(str::trim).collect::<Vec<_>>().join(" "),
            str::to_owned,
        );
    format!("invalid regex {re:?}: {reason}")
}

/// RFC 9110 §5.6.2 token characters (header names; cookie names use the same set).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "/etc/x.toml";

    fn ok(text: &str) -> Config {
        from_str(text, ORIGIN).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        match from_str(text, ORIGIN) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    /// The smallest valid file; tests append the piece they exercise.
    const BASE: &str = r#"
[[http]]
name = "www"
listen = ["127.0.0.1:8080"]
default_pool = "app"

[pool.app]
servers = [{ name = "a1", addr = "127.0.0.1:9001" }]
"#;

    const ISSUE_2: &str = r#"
[daemon]
shards = 0                      # one per CPU
io_driver = "auto"
control_socket = "/run/shardgate/shardgate.sock"

[[http]]
name = "www"
listen = ["0.0.0.0:80"]
default_pool = "app"            # where requests that match no route go
keepalive_timeout = "75s"
client_header_timeout = "60s"
client_body_timeout = "60s"     # between two reads of the body
send_timeout = "60s"            # between two writes to the client

  [[http.route]]                # first match wins; every key given must match
  pool = "static"
  host = ["static.example.com", "*.images.example.com"]

  [[http.route]]
  pool = "docs"
  file_type = ["pdf", "jpg", "png"]

  [[http.route]]
  pool = "api"
  path_prefix = "/api/"
  url_regex = "^/api/v[0-9]+/"
  header = { "X-Tier" = "gold*" }
  cookie = { "VIP" = "*" }

[pool.app]
balance = "least_requests"      # or "round_robin" (weighted)
connect_timeout = "20s"
response_timeout = "60s"        # no response head by then: 504
down_time = "10s"               # a server that refused a connect is skipped this long, on every shard
servers = [
  { name = "app1", addr = "10.0.0.11:8080", weight = 1 },
  { name = "app2", addr = "10.0.0.12:8080", weight = 2 },
]
"#;

    /// Issue 2's example names pools it never defines; these complete it.
    const ISSUE_2_POOLS: &str = r#"
[pool.static]
servers = [{ name = "s1", addr = "10.0.0.31:8080" }]
[pool.docs]
servers = [{ name = "d1", addr = "10.0.0.41:8080" }]
[pool.api]
servers = [{ name = "api1", addr = "10.0.0.51:8080" }]
"#;

    const ISSUE_4: &str = r#"
[[mysql]]
name = "db"
listen = ["0.0.0.0:3306"]
pool = "db"
client_idle_timeout = "8h"

[pool.db]
balance = "least_requests"      # fewest commands in flight across all shards
connect_timeout = "5s"
down_time = "10s"
servers = [
  { name = "db1", addr = "10.0.0.21:3306" },
  { name = "db2", addr = "10.0.0.22:3306" },
]
"#;

    #[test]
    fn issue_examples_load() {
        let c = ok(&format!("{ISSUE_2}{ISSUE_2_POOLS}"));
        assert_eq!(c.source, PathBuf::from(ORIGIN));
        let www = &c.http[0];
        assert_eq!(
            www.listen,
            vec!["0.0.0.0:80".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.pools[www.default_pool.unwrap()].name, "app");
        let pool_of = |r: &Route| c.pools[r.pool].name.as_str();
        assert_eq!(
            www.routes.iter().map(pool_of).collect::<Vec<_>>(),
            ["static", "docs", "api"]
        );
        assert_eq!(
            www.routes[0].host[1],
            HostPattern::Suffix(".images.example.com".into())
        );
        assert_eq!(www.routes[1].file_type, ["pdf", "jpg", "png"]);
        let api = &www.routes[2];
        assert_eq!(
            api.header,
            vec![("x-tier".to_owned(), Glob("gold*".into()))]
        );
        assert_eq!(api.cookie, vec![("VIP".to_owned(), Glob("*".into()))]);
        assert!(api.url_regex.as_ref().unwrap().is_match(b"/api/v2/x"));
        let app = &c.pools[www.default_pool.unwrap()];
        assert_eq!(app.balance, Balance::LeastRequests);
        assert_eq!(app.connect_timeout, Duration::from_secs(20));
        assert_eq!(app.servers[1].weight, 2);
        assert_eq!(app.servers[1].addr, "10.0.0.12:8080".parse().unwrap());

        let c = ok(ISSUE_4);
        let db = &c.mysql[0];
        assert_eq!(
            (db.name.as_str(), c.pools[db.pool].name.as_str()),
            ("db", "db")
        );
        assert_eq!(db.client_idle_timeout, Duration::from_secs(8 * 3600));
        assert_eq!(c.pools[db.pool].servers.len(), 2);

        // Both issues' examples in one file.
        ok(&format!("{ISSUE_2}{ISSUE_2_POOLS}{ISSUE_4}"));
    }

    #[test]
    fn issue_2_example_alone_names_the_missing_pool() {
        let e = err(ISSUE_2);
        assert!(
            e.starts_with("/etc/x.toml: http[0].route[0].pool: no pool named \"static\""),
            "{e}"
        );
    }

    #[test]
    fn defaults() {
        let c = ok(&format!("{BASE}{ISSUE_4}"));
        let d = &c.daemon;
        assert_eq!(
            d.shards,
            std::thread::available_parallelism().unwrap().get()
        );
        assert_eq!(d.io_driver, IoDriver::Auto);
        assert_eq!(
            d.control_socket,
            PathBuf::from("/run/shardgate/shardgate.sock")
        );
        assert_eq!(d.max_connections, 16000);
        assert_eq!(d.stop_timeout, Duration::from_secs(30));
        assert!(d.pin_cores);
        assert_eq!(d.memory_limit, None);

        let h = &c.http[0];
        assert_eq!(h.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(h.client_header_timeout, Duration::from_secs(60));
        assert_eq!(h.client_body_timeout, Duration::from_secs(60));
        assert_eq!((h.client_body_min_rate, h.send_min_rate), (512, 512));
        assert_eq!(h.send_timeout, Duration::from_secs(60));
        assert_eq!(h.tunnel_timeout, Duration::from_secs(3600));
        assert_eq!(h.max_body, None);
        assert_eq!(
            (h.max_request_line, h.max_header_bytes, h.max_headers),
            (8192, 32768, 100)
        );
        assert!(h.server_names.is_empty() && h.routes.is_empty());

        let p = &c.pools[h.default_pool.unwrap()];
        assert_eq!(p.balance, Balance::RoundRobin);
        assert_eq!(p.connect_timeout, Duration::from_secs(5));
        assert_eq!(p.response_timeout, Duration::from_secs(60));
        assert_eq!(p.down_time, Duration::from_secs(10));
        assert_eq!(
            (p.max_connections_per_server, p.max_idle_per_server),
            (512, 128)
        );
        assert_eq!(p.idle_timeout, Duration::from_secs(30));
        assert_eq!(p.servers[0].weight, 1);

        let m = &c.mysql[0];
        assert_eq!(m.client_idle_timeout, Duration::from_secs(8 * 3600));
        assert_eq!(m.client_write_timeout, Duration::from_secs(60));
        assert_eq!(m.max_connections, 4096);
    }

    #[test]
    fn explicit_values() {
        let c = ok(r#"
[daemon]
shards = 3
io_driver = "epoll"
control_socket = "/tmp/sg.sock"
max_connections = 10
stop_timeout = "0s"
pin_cores = false

[[http]]
name = "w"
listen = ["0.0.0.0:1", "[::]:1"]
max_body = "10m"
max_request_line = 100
max_header_bytes = 200
max_headers = 5
server_names = ["Example.COM.", "*.example.net"]
keepalive_timeout = "1h30m"

[[mysql]]
name = "m"
listen = ["127.0.0.1:2"]
pool = "p"
max_connections = 7
client_write_timeout = "1500ms"

[pool.p]
balance = "round_robin"
max_connections_per_server = 4
max_idle_per_server = 0
down_time = "0s"
idle_timeout = "500ms"
servers = [{ name = "x", addr = "localhost:3306", weight = 1000 }]
"#);
        assert_eq!(c.daemon.shards, 3);
        assert_eq!(c.daemon.io_driver, IoDriver::Epoll);
        assert_eq!(c.daemon.stop_timeout, Duration::ZERO);
        assert!(!c.daemon.pin_cores);
        let h = &c.http[0];
        assert_eq!(
            h.listen.len(),
            2,
            "IPv4 and IPv6 wildcards may share a frontend"
        );
        assert_eq!(h.max_body, Some(10 << 20));
        assert_eq!(h.keepalive_timeout, Duration::from_secs(5400));
        assert_eq!(h.server_names[0], HostPattern::Exact("example.com".into()));
        assert_eq!(h.default_pool, None);
        let p = &c.pools[0];
        assert!(
            p.servers[0].addr.ip().is_loopback(),
            "localhost resolves to loopback"
        );
        assert_eq!(p.servers[0].addr.port(), 3306);
        assert_eq!(p.idle_timeout, Duration::from_millis(500));
        assert_eq!(p.down_time, Duration::ZERO);
        assert_eq!(c.mysql[0].max_connections, 7);
        assert_eq!(c.mysql[0].client_write_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn durations() {
        let s = |v: &str| parse_duration(&Scalar::Str(v.into()));
        let ms = Duration::from_millis;
        for (text, want) in [
            ("75s", ms(75_000)),
            ("500ms", ms(500)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("8h", ms(28_800_000)),
            ("1d", ms(86_400_000)),
            ("1m30s", ms(90_000)),
            (" 0s ", ms(0)),
        ] {
            assert_eq!(s(text), Ok(want), "{text}");
        }
        for (text, needle) in [
            ("75", "has no unit"),
            ("", "empty duration"),
            ("s", "is not a duration"),
            ("10x", "unknown unit \"x\""),
            ("1.5s", "is not a duration (whole numbers only)"),
            ("-1s", "is not a duration"),
            ("99999999999999999999d", "too large"),
        ] {
            let e = s(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(parse_duration(&Scalar::Int(75))
            .unwrap_err()
            .contains("75 has no unit"));
        assert!(parse_duration(&Scalar::Float(1.5))
            .unwrap_err()
            .contains("has no unit"));
    }

    #[test]
    fn sizes() {
        let s = |v: &str| parse_size(&Scalar::Str(v.into()));
        for (text, want) in [
            ("0", 0),
            ("10k", 10 << 10),
            ("10M", 10 << 20),
            ("1g", 1 << 30),
            ("123", 123),
        ] {
            assert_eq!(s(text), Ok(want), "{text}");
        }
        assert_eq!(parse_size(&Scalar::Int(4096)), Ok(4096));
        for bad in ["", "k", "10kb", "1.5m", "-3", "x"] {
            assert!(s(bad).is_err(), "{bad}");
        }
        assert!(parse_size(&Scalar::Int(-1)).is_err());
        assert!(s("99999999999g").unwrap_err().contains("too large"));
    }

    /// (piece appended to BASE or a whole file, expected message prefix after the file name)
    #[test]
    fn validation_errors_name_file_and_key() {
        let cases: &[(&str, &str)] = &[
            // daemon
            ("[daemon]\nshards = -1\n", "daemon.shards: -1 is out of range"),
            ("[daemon]\nshards = 5000\n", "daemon.shards: 5000 is out of range"),
            ("[daemon]\nmax_connections = 0\n", "daemon.max_connections: 0 is out of range 1..="),
            ("[daemon]\nstop_timeout = 30\n", "daemon.stop_timeout: 30 has no unit"),
            ("[daemon]\ncontrol_socket = \"\"\n", "daemon.control_socket: must not be empty"),
            (
                "[daemon]\ncontrol_socket = \"/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\"\n",
                "daemon.control_socket: 119 bytes long",
            ),
            // http frontends
            ("[[http]]\nname = \"www\"\nlisten = [\"127.0.0.1:1\"]\n", "http[1].name: \"www\" is already the name"),
            ("[[http]]\nname = \"a b\"\nlisten = [\"127.0.0.1:1\"]\n", "http[1].name: \"a b\": a name must"),
            ("[[http]]\nname = \"b\"\nlisten = []\n", "http[1].listen: must list at least one"),
            ("[[http]]\nname = \"b\"\nlisten = [\"localhost:80\"]\n", "http[1].listen[0]: \"localhost:80\" is not IP:PORT"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:8080\"]\n", "http[1].listen[0]: \"127.0.0.1:8080\" overlaps http[0].listen[0]"),
            ("[[http]]\nname = \"b\"\nlisten = [\"0.0.0.0:8080\"]\n", "http[1].listen[0]: \"0.0.0.0:8080\" overlaps"),
            ("[[http]]\nname = \"b\"\nlisten = [\"[::]:8080\"]\n", "http[1].listen[0]: \"[::]:8080\" overlaps"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"nope\"\n", "http[1].default_pool: no pool named \"nope\" (defined pools: app)"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nkeepalive_timeout = \"0s\"\n", "http[1].keepalive_timeout: must be greater than zero"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nclient_header_timeout = \"60\"\n", "http[1].client_header_timeout: \"60\" has no unit"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nclient_body_timeout = \"0ms\"\n", "http[1].client_body_timeout: must be greater than zero"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nsend_timeout = \"1y\"\n", "http[1].send_timeout: \"1y\": unknown unit"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nmax_body = \"1t\"\n", "http[1].max_body: \"1t\" is not a size"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nmax_request_line = 0\n", "http[1].max_request_line: 0 is out of range"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nmax_header_bytes = 100\n", "http[1].max_header_bytes: 100 is smaller than max_request_line"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nmax_headers = 0\n", "http[1].max_headers: 0 is out of range"),
            ("[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\nserver_names = [\"*\"]\n", "http[1].server_names[0]: "),
            // routes
            ("[[http.route]]\npool = \"app\"\n", "http[0].route[0]: route has no match key"),
            ("[[http.route]]\npool = \"app\"\nhost = \"x\"\n[[http.route]]\npool = \"zz\"\nhost = \"x\"\n", "http[0].route[1].pool: no pool named \"zz\""),
            ("[[http.route]]\npool = \"app\"\nhost = \"*\"\n", "http[0].route[0].host: "),
            ("[[http.route]]\npool = \"app\"\nhost = \"\"\n", "http[0].route[0].host: "),
            ("[[http.route]]\npool = \"app\"\nhost = [\"a.com\", \"b.*.com\"]\n", "http[0].route[0].host[1]: "),
            ("[[http.route]]\npool = \"app\"\nhost = []\n", "http[0].route[0].host: empty list"),
            ("[[http.route]]\npool = \"app\"\npath_prefix = \"api/\"\n", "http[0].route[0].path_prefix: \"api/\" must start with \"/\""),
            ("[[http.route]]\npool = \"app\"\nfile_type = \".\"\n", "http[0].route[0].file_type: \".\" is not a file extension"),
            ("[[http.route]]\npool = \"app\"\nfile_type = [\"pdf\", \"a/b\"]\n", "http[0].route[0].file_type[1]: \"a/b\" is not"),
            ("[[http.route]]\npool = \"app\"\nurl_regex = \"^/(\"\n", "http[0].route[0].url_regex: invalid regex \"^/(\": unclosed group"),
            ("[[http.route]]\npool = \"app\"\nheader = { \"X Tier\" = \"a\" }\n", "http[0].route[0].header: \"X Tier\" is not a valid header field name"),
            ("[[http.route]]\npool = \"app\"\nheader = {}\n", "http[0].route[0].header: empty table"),
            ("[[http.route]]\npool = \"app\"\ncookie = { \"a;b\" = \"1\" }\n", "http[0].route[0].cookie: \"a;b\" is not a valid cookie name"),
            // pools
            ("[pool.b]\nservers = []\n", "pool.b.servers: must list at least one server"),
            ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }, { name = \"t\", addr = \"10.0.0.1\" }]\n", "pool.b.servers[1].addr: \"10.0.0.1\" is not IP:PORT"),
            ("[pool.b]\nservers = [{ name = \"s\", addr = \"no-such-host.invalid:80\" }]\n", "pool.b.servers[0].addr: \"no-such-host.invalid:80\": cannot resolve"),
            ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }, { name = \"s\", addr = \"10.0.0.1:2\" }]\n", "pool.b.servers[1].name: \"s\" is already the name of another server"),
            ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\", weight = 0 }]\n", "pool.b.servers[0].weight: 0 is out of range 1..=1000"),
            ("[pool.b]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\", weight = 1001 }]\n", "pool.b.servers[0].weight: 1001 is out of range"),
            ("[pool.b]\nservers = [{ name = \"\", addr = \"10.0.0.1:1\" }]\n", "pool.b.servers[0].name: \"\": a name must"),
            ("[pool.\"b c\"]\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.\"b c\": \"b c\": a name must"),
            ("[pool.b]\nconnect_timeout = \"0s\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.connect_timeout: must be greater than zero"),
            ("[pool.b]\nresponse_timeout = 60\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.response_timeout: 60 has no unit"),
            ("[pool.b]\nidle_timeout = \"0s\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.idle_timeout: must be greater than zero"),
            ("[pool.b]\ndown_time = \"soon\"\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.down_time: \"soon\" is not a duration"),
            ("[pool.b]\nmax_connections_per_server = 0\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.max_connections_per_server: 0 is out of range"),
            ("[pool.b]\nmax_connections_per_server = 2\nmax_idle_per_server = 3\nservers = [{ name = \"s\", addr = \"10.0.0.1:1\" }]\n", "pool.b.max_idle_per_server: 3 exceeds max_connections_per_server (2)"),
            (
                "[[http]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
                "http[1].listen[1]: \"127.0.0.1:1\" is listed twice",
            ),
            // mysql
            ("[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:3306\"]\npool = \"none\"\n", "mysql[0].pool: no pool named \"none\""),
            ("[[mysql]]\nname = \"www\"\nlisten = [\"127.0.0.1:3306\"]\npool = \"app\"\n", "mysql[0].name: \"www\" is already the name of another frontend"),
            ("[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:8080\"]\npool = \"app\"\n", "mysql[0].listen[0]: \"127.0.0.1:8080\" overlaps http[0].listen[0]"),
            ("[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:3306\"]\npool = \"app\"\nclient_idle_timeout = \"0s\"\n", "mysql[0].client_idle_timeout: must be greater than zero"),
            ("[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:3306\"]\npool = \"app\"\nclient_write_timeout = \"0s\"\n", "mysql[0].client_write_timeout: must be greater than zero"),
            ("[[mysql]]\nname = \"m\"\nlisten = [\"127.0.0.1:3306\"]\npool = \"app\"\nmax_connections = 0\n", "mysql[0].max_connections: 0 is out of range"),
        ];
        for (piece, want) in cases {
            // Pieces that open an array-of-tables under [[http]] must follow BASE's frontend
            // directly, before [pool.app] closes it.
            let text = if piece.starts_with("[[http.route]]") {
                BASE.replacen("\n[pool.app]", &format!("\n{piece}\n[pool.app]"), 1)
            } else {
                format!("{BASE}\n{piece}")
            };
            let e = err(&text);
            assert!(
                e.starts_with(&format!("{ORIGIN}: {want}")),
                "want {want:?}\n got {e:?}"
            );
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn no_frontend_is_an_error() {
        let e = err("[pool.app]\nservers = [{ name = \"a\", addr = \"10.0.0.1:1\" }]\n");
        assert_eq!(
            e,
            "/etc/x.toml: no frontend: define at least one [[http]] or [[mysql]]"
        );
        assert!(err("").contains("no frontend"));
    }

    #[test]
    fn unused_pool_is_accepted() {
        let c = ok(&format!(
            "{BASE}\n[pool.spare]\nservers = [{{ name = \"s\", addr = \"10.0.0.1:1\" }}]\n"
        ));
        assert_eq!(c.pools.len(), 2);
    }

    #[test]
    fn listen_overlap_rules() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listen_overlaps(&a("127.0.0.1:80"), &a("127.0.0.1:80")));
        assert!(listen_overlaps(&a("0.0.0.0:80"), &a("127.0.0.2:80")));
        assert!(listen_overlaps(&a("[::]:80"), &a("127.0.0.1:80")));
        assert!(!listen_overlaps(&a("127.0.0.1:80"), &a("127.0.0.2:80")));
        assert!(!listen_overlaps(&a("127.0.0.1:80"), &a("127.0.0.1:81")));
        assert!(!listen_overlaps(&a("127.0.0.1:0"), &a("127.0.0.1:0")));
        assert!(!listen_overlaps(&a("0.0.0.0:80"), &a("[::1]:80")));
    }

    /// TOML syntax and shape errors: file, line, column, key path with indices, serde's text.
    #[test]
    fn toml_errors_name_position_and_key_path() {
        let cases: &[(&str, &str)] = &[
            ("[daemon]\nfoo = 1\n", "line 2, column 1: daemon: unknown field `foo`, expected one of"),
            ("foo = 1\n", "line 1, column 1: unknown field `foo`, expected one of"),
            ("[[http]]\nname = \"a\"\nlisten = []\n[[http]]\nname = \"b\"\nlisten = []\n  [[http.route]]\n  pool = \"x\"\n  [[http.route]]\n  pool = \"y\"\n  hots = \"h\"\n",
             "line 11, column 3: http[1].route[1]: unknown field `hots`"),
            ("[[http]]\nname = \"a\"\nlisten = []\nmax_headers = \"many\"\n", "line 4, column 15: http[0].max_headers: invalid type: string \"many\""),
            ("[pool.app]\nservers = [ { name = \"a\", addr = \"x:1\" }, { name = \"b\", addr = \"y:1\", wt = 1 } ]\n",
             "line 2, column 71: pool.app.servers[1]: unknown field `wt`"),
            ("[[http]]\nlisten = []\n", "line 1, column 1: http[0]: missing field `name`"),
            ("[daemon]\nio_driver = \"kqueue\"\n", "line 2, column 13: daemon.io_driver: unknown variant `kqueue`, expected one of `auto`, `uring`, `epoll`"),
            ("[pool.app]\nbalance = \"random\"\nservers = []\n", "line 2, column 11: pool.app.balance: unknown variant `random`"),
            ("[[http]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\", 7]\n", "line 3, column 26: http[0].listen[1]: invalid type: integer `7`"),
            ("[daemon]\nshards = \n", "line 2, column 10: "),
            ("[[http]]\nname = \"a\"\nbar", "line 3, column 4: key with no value"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(
                e.starts_with(&format!("{ORIGIN}: {want}")),
                "want {want:?}\n got {e:?}"
            );
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn load_reads_files_and_names_them() {
        let dir =
            std::env::temp_dir().join(format!("shardgate-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, BASE).unwrap();
        assert_eq!(load(&good).unwrap().source, good);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, format!("{BASE}\n[daemon]\nshards = -2\n")).unwrap();
        assert_eq!(
            load(&bad).unwrap_err().to_string(),
            format!(
                "{}: daemon.shards: -2 is out of range: 0 (one per CPU) or 1..=1024",
                bad.display()
            )
        );
        let missing = dir.join("missing.toml");
        let e = load(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sample_config_loads() {
        let c = ok(include_str!("../../config/shardgate.toml"));
        assert!(!c.http.is_empty() && !c.mysql.is_empty());
        assert!(c.daemon.control_socket.starts_with("/run/shardgate"));
        for a in c
            .http
            .iter()
            .flat_map(|h| &h.listen)
            .chain(c.mysql.iter().flat_map(|m| &m.listen))
        {
            assert!(a.ip().is_loopback(), "{a}");
        }
        for s in c.pools.iter().flat_map(|p| &p.servers) {
            assert!(s.addr.ip().is_loopback(), "{}", s.addr);
        }
    }
}
