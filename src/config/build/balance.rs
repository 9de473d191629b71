//! The parts of a `[pool.NAME]` that steer server choice: `hash_key`, the `sticky` and
//! `health` subtables, and the checks that a pool fits the frontends using it (a MySQL pool
//! cannot hash a URI or check with an HTTP request; an HTTP pool cannot log in to MySQL).

use std::time::Duration;

use super::syntax::toml_key;
use super::{Builder, ConfigError};
use crate::config::file::{HealthFile, HealthMethodFile, StickyFile, StickyModeFile};
use crate::config::{Balance, HashKey, Health, HealthMethod, Pool, Sticky, StickyMode};

/// Largest source_ip sticky table.
const MAX_TABLE: i64 = 10_000_000;

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Builder<'_> {
    /// A server route: it ends a cookie value after a `.`, so one plain word.
    pub(super) fn check_route(&self, key: &str, route: &str) -> Result<(), ConfigError> {
        if route.is_empty()
            || !route
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.err(
                key,
                format!("{route:?}: a route must be non-empty and use only letters, digits, '-' and '_'"),
            ));
        }
        Ok(())
    }

    pub(super) fn hash_key(
        &self,
        key: &str,
        balance: Balance,
        v: Option<&str>,
    ) -> Result<Option<HashKey>, ConfigError> {
        let Some(v) = v else {
            return Ok((balance == Balance::Hash).then_some(HashKey::SourceIp));
        };
        if balance != Balance::Hash {
            return Err(self.err(key, "applies only to balance = \"hash\""));
        }
        let named = |prefix: &str| {
            v.strip_prefix(prefix).map(|n| {
                if is_token(n) {
                    Ok(n.to_owned())
                } else {
                    Err(self.err(key, format!("{v:?}: {n:?} is not a valid name")))
                }
            })
        };
        match v {
            "source_ip" => Ok(Some(HashKey::SourceIp)),
            "uri" => Ok(Some(HashKey::Uri)),
            _ => {
                if let Some(n) = named("header:") {
                    return Ok(Some(HashKey::Header(n?.to_ascii_lowercase())));
                }
                if let Some(n) = named("cookie:") {
                    return Ok(Some(HashKey::Cookie(n?)));
                }
                Err(self.err(
                    key,
                    format!("{v:?}: expected source_ip, uri, \"header:NAME\" or \"cookie:NAME\""),
                ))
            }
        }
    }

    pub(super) fn sticky(&self, key: &str, st: &StickyFile) -> Result<Sticky, ConfigError> {
        let k = |n: &str| format!("{key}.{n}");
        let mode = match st.mode {
            StickyModeFile::AppCookie => StickyMode::AppCookie,
            StickyModeFile::InsertCookie => StickyMode::InsertCookie,
            StickyModeFile::SourceIp => StickyMode::SourceIp,
        };
        let only = |set: bool, name: &str, modes: &str| {
            if set {
                Err(self.err(k(name), format!("applies only to mode = {modes}")))
            } else {
                Ok(())
            }
        };
        let cookie_mode = mode != StickyMode::SourceIp;
        let insert = mode == StickyMode::InsertCookie;
        only(
            st.cookie.is_some() && !cookie_mode,
            "cookie",
            "\"app_cookie\" or \"insert_cookie\"",
        )?;
        only(
            st.url_param.is_some() && mode != StickyMode::AppCookie,
            "url_param",
            "\"app_cookie\"",
        )?;
        only(
            (st.ttl.is_some() || st.table_size.is_some()) && cookie_mode,
            if st.ttl.is_some() {
                "ttl"
            } else {
                "table_size"
            },
            "\"source_ip\"",
        )?;
        for (set, name) in [
            (st.cookie_path.is_some(), "cookie_path"),
            (st.cookie_secure.is_some(), "cookie_secure"),
            (st.cookie_httponly.is_some(), "cookie_httponly"),
            (st.cookie_samesite.is_some(), "cookie_samesite"),
            (st.cookie_max_age.is_some(), "cookie_max_age"),
        ] {
            only(set && !insert, name, "\"insert_cookie\"")?;
        }
        let cookie = st
            .cookie
            .clone()
            .unwrap_or_else(|| if insert { "SGROUTE" } else { "JSESSIONID" }.to_owned());
        if !is_token(&cookie) || cookie.contains(['=', ';']) {
            return Err(self.err(
                k("cookie"),
                format!("{cookie:?} is not a valid cookie name"),
            ));
        }
        if let Some(u) = &st.url_param {
            if u.is_empty()
                || !u
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(self.err(
                    k("url_param"),
                    format!("{u:?} is not a valid parameter name"),
                ));
            }
        }
        let cookie_path = st.cookie_path.clone().unwrap_or_else(|| "/".to_owned());
        if !cookie_path.starts_with('/')
            || cookie_path
                .bytes()
                .any(|b| b <= b' ' || b == b';' || b >= 0x7f)
        {
            return Err(self.err(
                k("cookie_path"),
                format!("{cookie_path:?}: must start with '/' and hold no spaces, controls or ';'"),
            ));
        }
        let cookie_secure = st.cookie_secure.unwrap_or(false);
        let cookie_samesite = match st.cookie_samesite.as_deref() {
            None => None,
            Some(v) => {
                let canon = match v.to_ascii_lowercase().as_str() {
                    "lax" => "Lax",
                    "strict" => "Strict",
                    "none" => "None",
                    _ => {
                        return Err(self.err(
                            k("cookie_samesite"),
                            format!("{v:?}: expected \"Lax\", \"Strict\" or \"None\""),
                        ))
                    }
                };
                if canon == "None" && !cookie_secure {
                    return Err(self.err(
                        k("cookie_samesite"),
                        "\"None\" needs cookie_secure = true (browsers drop the cookie otherwise)",
                    ));
                }
                Some(canon.to_owned())
            }
        };
        let cookie_max_age = match &st.cookie_max_age {
            None => None,
            Some(v) => Some(
                self.duration(&k("cookie_max_age"), Some(v), 0, false)?
                    .as_secs()
                    .max(1),
            ),
        };
        Ok(Sticky {
            mode,
            cookie,
            url_param: st.url_param.clone(),
            ttl: self.duration(&k("ttl"), st.ttl.as_ref(), 30 * 60, false)?,
            table_size: self.int(&k("table_size"), st.table_size, 100_000, 1, MAX_TABLE)?,
            cookie_path,
            cookie_secure,
            cookie_httponly: st.cookie_httponly.unwrap_or(true),
            cookie_samesite,
            cookie_max_age,
        })
    }

    pub(super) fn health(&self, key: &str, h: &HealthFile) -> Result<Health, ConfigError> {
        let k = |n: &str| format!("{key}.{n}");
        let method = match h.method {
            HealthMethodFile::Tcp => HealthMethod::Tcp,
            HealthMethodFile::HttpHead => HealthMethod::HttpHead,
            HealthMethodFile::HttpGet => HealthMethod::HttpGet,
            HealthMethodFile::Mysql => HealthMethod::Mysql,
        };
        let http = matches!(method, HealthMethod::HttpHead | HealthMethod::HttpGet);
        let only = |set: bool, name: &str, what: &str| {
            if set {
                Err(self.err(k(name), format!("applies only to {what}")))
            } else {
                Ok(())
            }
        };
        only(
            !http && h.uri.is_some(),
            "uri",
            "the http_head and http_get methods",
        )?;
        only(
            !http && h.user_agent.is_some(),
            "user_agent",
            "the http_head and http_get methods",
        )?;
        only(
            !http && h.expect_status.is_some(),
            "expect_status",
            "the http_head and http_get methods",
        )?;
        only(
            method != HealthMethod::HttpGet && h.expect_body_regex.is_some(),
            "expect_body_regex",
            "method = \"http_get\"",
        )?;
        let mysql = method == HealthMethod::Mysql;
        only(
            !mysql && h.mysql_user.is_some(),
            "mysql_user",
            "method = \"mysql\"",
        )?;
        only(
            !mysql && h.mysql_password.is_some(),
            "mysql_password",
            "method = \"mysql\"",
        )?;
        only(
            !mysql && h.mysql_query.is_some(),
            "mysql_query",
            "method = \"mysql\"",
        )?;
        let uri = h.uri.clone().unwrap_or_else(|| "/".to_owned());
        let absolute = uri.strip_prefix("http://");
        let path_ok = |p: &str| p.starts_with('/') && p.bytes().all(|b| b > b' ' && b < 0x7f);
        let uri_ok = match absolute {
            Some(rest) => {
                let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                    && (path.is_empty() || path_ok(path))
            }
            None => path_ok(&uri),
        };
        if !uri_ok {
            return Err(self.err(k("uri"), format!("{uri:?}: expected a path such as \"/health\" or an absolute \"http://host/path\"")));
        }
        let user_agent = h
            .user_agent
            .clone()
            .unwrap_or_else(|| "shardgate-health-check".to_owned());
        if user_agent.bytes().any(|b| b < b' ' || b == 0x7f) {
            return Err(self.err(k("user_agent"), "must not hold control characters"));
        }
        let expect_status = parse_statuses(h.expect_status.as_deref().unwrap_or("2xx,3xx"))
            .map_err(|m| self.err(k("expect_status"), m))?;
        let expect_body_regex = match &h.expect_body_regex {
            None => None,
            Some(r) => Some(
                regex::bytes::RegexBuilder::new(r)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| self.err(k("expect_body_regex"), format!("{r:?}: {e}")))?,
            ),
        };
        let interval = self.duration(&k("interval"), h.interval.as_ref(), 20, false)?;
        let timeout = match &h.timeout {
            None => interval.min(Duration::from_secs(2)),
            Some(v) => self.duration(&k("timeout"), Some(v), 0, false)?,
        };
        if timeout > interval {
            return Err(self.err(
                k("timeout"),
                format!("{timeout:?} is longer than interval ({interval:?})"),
            ));
        }
        let mysql_user = match (&h.mysql_user, mysql) {
            (Some(u), _) if !u.is_empty() && u.len() <= 80 && !u.contains('\0') => u.clone(),
            (Some(_), _) => return Err(self.err(k("mysql_user"), "must be 1 to 80 bytes, no NUL")),
            (None, true) => {
                return Err(self.err(
                    k("mysql_user"),
                    "required with method = \"mysql\" (an account the check logs in with)",
                ))
            }
            (None, false) => String::new(),
        };
        let agent_interval = match &h.agent_interval {
            None => interval,
            Some(v) => self.duration(&k("agent_interval"), Some(v), 0, false)?,
        };
        Ok(Health {
            method,
            uri,
            user_agent,
            expect_status,
            expect_body_regex,
            interval,
            timeout,
            rise: self.int(&k("rise"), h.rise, 2, 1, 100)? as u32,
            fall: self.int(&k("fall"), h.fall, 3, 1, 100)? as u32,
            mysql_user,
            mysql_password: h.mysql_password.clone().unwrap_or_default(),
            mysql_query: h
                .mysql_query
                .clone()
                .unwrap_or_else(|| "SELECT 1".to_owned()),
            agent_interval,
        })
    }

    /// A pool used by a MySQL frontend: nothing that needs an HTTP request.
    pub(super) fn mysql_pool(&self, pool: &Pool) -> Result<(), ConfigError> {
        let key = format!("pool.{}", toml_key(&pool.name));
        if pool.cache.is_some() {
            return Err(self.err(
                format!("{key}.cache"),
                "a pool used by a [[mysql]] frontend has no HTTP cache; remove cache",
            ));
        }

        if matches!(
            pool.hash_key,
            Some(HashKey::Uri | HashKey::Header(_) | HashKey::Cookie(_))
        ) {
            return Err(self.err(
                format!("{key}.hash_key"),
                "a pool used by a [[mysql]] frontend can only hash source_ip",
            ));
        }
        if pool
            .sticky
            .as_ref()
            .is_some_and(|s| s.mode != StickyMode::SourceIp)
        {
            return Err(self.err(
                format!("{key}.sticky.mode"),
                "a pool used by a [[mysql]] frontend can only stick by source_ip",
            ));
        }
        if pool
            .health
            .as_ref()
            .is_some_and(|h| matches!(h.method, HealthMethod::HttpHead | HealthMethod::HttpGet))
        {
            return Err(self.err(
                format!("{key}.health.method"),
                "a pool used by a [[mysql]] frontend is checked with \"tcp\" or \"mysql\"",
            ));
        }
        Ok(())
    }

    /// A pool used by an HTTP frontend: no MySQL login check.
    pub(super) fn http_pool(&self, pool: &Pool) -> Result<(), ConfigError> {
        if pool
            .health
            .as_ref()
            .is_some_and(|h| h.method == HealthMethod::Mysql)
        {
            let key = format!("pool.{}", toml_key(&pool.name));
            return Err(self.err(format!("{key}.health.method"), "a pool used by an [[http]] frontend is checked with \"tcp\", \"http_head\" or \"http_get\""));
        }
        let key = format!("pool.{}", toml_key(&pool.name));
        if let Some(i) = pool.servers.iter().position(|s| s.replica) {
            return Err(self.err(
                format!("{key}.servers[{i}].role"),
                "roles are for pools of [[mysql]] frontends",
            ));
        }
        if pool.max_replication_lag.is_some() {
            return Err(self.err(
                format!("{key}.max_replication_lag"),
                "only for pools of [[mysql]] frontends",
            ));
        }
        Ok(())
    }
}

/// `"2xx,3xx"`, `"200"`, `"200-299,404"`: inclusive ranges.
fn parse_statuses(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let bad = || {
            format!(
                "{part:?} in {s:?}: expected a status (200), a class (2xx) or a range (200-299)"
            )
        };
        let code = |t: &str| {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        let range = if let Some(class) = part.strip_suffix("xx") {
            let d = class
                .parse::<u16>()
                .ok()
                .filter(|d| (1..=5).contains(d))
                .ok_or_else(bad)?;
            (d * 100, d * 100 + 99)
        } else if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (code(a).ok_or_else(bad)?, code(b).ok_or_else(bad)?);
            if a > b {
                return Err(bad());
            }
            (a, b)
        } else {
            let c = code(part).ok_or_else(bad)?;
            (c, c)
        };
        out.push(range);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_statuses;
    use crate::config::build::from_str;
    use crate::config::{Balance, HashKey, HealthMethod, StickyMode};

    const HTTP: &str = r#"
[[http]]
name = "www"
listen = ["127.0.0.1:8080"]
default_pool = "app"
"#;

    const MYSQL: &str = r#"
[[mysql]]
name = "db"
listen = ["127.0.0.1:3306"]
pool = "app"
"#;

    /// `front` plus `[pool.app]` with `pool` (its keys, then subtables) and two servers
    /// described by `servers`.
    fn file(front: &str, keys: &str, servers: &str, subtables: &str) -> String {
        format!("{front}\n[pool.app]\n{keys}\nservers = [{servers}]\n{subtables}")
    }

    const TWO: &str =
        r#"{ name = "a", addr = "127.0.0.1:9001" }, { name = "b", addr = "127.0.0.1:9002" }"#;

    fn err(text: &str) -> String {
        match from_str(text, "x.toml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_new_key_has_its_default_and_explicit_values_are_kept() {
        let c = from_str(&file(HTTP, "", TWO, ""), "x.toml").unwrap();
        let p = &c.pools[0];
        assert_eq!(p.balance, Balance::RoundRobin);
        assert_eq!((p.hash_key.clone(), p.slow_start), (None, None));
        assert_eq!(p.queue_timeout, p.response_timeout);
        assert!(p.sticky.is_none() && p.health.is_none());
        assert_eq!(p.servers[0].route, "a");
        assert!(!p.servers[0].backup && p.servers[0].max_connections.is_none());

        let servers = r#"{ name = "a", addr = "127.0.0.1:9001", route = "n1", max_connections = 7 },
            { name = "b", addr = "127.0.0.1:9002", backup = true, agent_port = 9999 }"#;
        let sub = r#"
[pool.app.sticky]
mode = "insert_cookie"
cookie_samesite = "none"
cookie_secure = true
cookie_max_age = "1h"

[pool.app.health]
method = "http_get"
uri = "http://app.example/health"
expect_status = "200,3xx"
expect_body_regex = "OK"
interval = "500ms"
rise = 1
"#;
        let keys = "balance = \"hash\"\nhash_key = \"header:X-User\"\nqueue_timeout = \"3s\"\nslow_start = \"30s\"";
        let c = from_str(&file(HTTP, keys, servers, sub), "x.toml").unwrap();
        let p = &c.pools[0];
        assert_eq!(p.balance, Balance::Hash);
        assert_eq!(p.hash_key, Some(HashKey::Header("x-user".into())));
        assert_eq!(p.queue_timeout.as_secs(), 3);
        assert_eq!(p.slow_start.unwrap().as_secs(), 30);
        assert_eq!(
            (p.servers[0].route.as_str(), p.servers[0].max_connections),
            ("n1", Some(7))
        );
        assert!(p.servers[1].backup);
        assert_eq!(p.servers[1].agent_port, Some(9999));
        let st = p.sticky.as_ref().unwrap();
        assert_eq!(st.mode, StickyMode::InsertCookie);
        assert_eq!(st.cookie, "SGROUTE");
        assert_eq!(st.cookie_samesite.as_deref(), Some("None"));
        assert_eq!(st.cookie_max_age, Some(3600));
        assert!(st.cookie_httponly);
        let h = p.health.as_ref().unwrap();
        assert_eq!(h.method, HealthMethod::HttpGet);
        assert_eq!(h.expect_status, vec![(200, 200), (300, 399)]);
        assert_eq!((h.interval.as_millis(), h.timeout.as_millis()), (500, 500));
        assert_eq!((h.rise, h.fall), (1, 3));
        assert_eq!(h.agent_interval, h.interval);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(String, &str)] = &[
            (file(HTTP, "hash_key = \"uri\"", TWO, ""), "pool.app.hash_key: applies only to balance = \"hash\""),
            (file(HTTP, "balance = \"hash\"\nhash_key = \"path\"", TWO, ""), "pool.app.hash_key: \"path\": expected source_ip"),
            (file(HTTP, "balance = \"hash\"\nhash_key = \"header:\"", TWO, ""), "pool.app.hash_key: \"header:\": \"\" is not a valid name"),
            (file(HTTP, "balance = \"fastest\"", TWO, ""), "pool.app.balance"),
            (file(HTTP, "queue_timeout = \"0s\"", TWO, ""), "pool.app.queue_timeout: must be greater than zero"),
            (file(HTTP, "", r#"{ name = "a", addr = "127.0.0.1:1", route = "x" }, { name = "b", addr = "127.0.0.1:2", route = "x" }"#, ""), "pool.app.servers[1].route: route \"x\" is already the route of server \"a\""),
            (file(HTTP, "", r#"{ name = "a", addr = "127.0.0.1:1", route = "a.b" }"#, ""), "pool.app.servers[0].route: \"a.b\": a route must"),
            (file(HTTP, "", r#"{ name = "a", addr = "127.0.0.1:1", backup = true }"#, ""), "pool.app.servers: every server is a backup"),
            (file(HTTP, "", r#"{ name = "a", addr = "127.0.0.1:1", max_connections = 0 }"#, ""), "pool.app.servers[0].max_connections: 0 is out of range"),
            (file(HTTP, "", r#"{ name = "a", addr = "127.0.0.1:1", agent_port = 70000 }"#, ""), "pool.app.servers[0].agent_port: 70000 is out of range"),
            (file(HTTP, "", r#"{ name = "a", addr = "127.0.0.1:1", agent_port = 7000 }"#, ""), "pool.app.servers[0].agent_port: agent checks run with the active checks"),
            (file(HTTP, "", TWO, "[pool.app.sticky]\nmode = \"source_ip\"\ncookie = \"X\""), "pool.app.sticky.cookie: applies only to mode = \"app_cookie\" or \"insert_cookie\""),
            (file(HTTP, "", TWO, "[pool.app.sticky]\nmode = \"insert_cookie\"\nurl_param = \"x\""), "pool.app.sticky.url_param: applies only to mode = \"app_cookie\""),
            (file(HTTP, "", TWO, "[pool.app.sticky]\nmode = \"app_cookie\"\nttl = \"1m\""), "pool.app.sticky.ttl: applies only to mode = \"source_ip\""),
            (file(HTTP, "", TWO, "[pool.app.sticky]\nmode = \"app_cookie\"\ncookie_secure = true"), "pool.app.sticky.cookie_secure: applies only to mode = \"insert_cookie\""),
            (file(HTTP, "", TWO, "[pool.app.sticky]\nmode = \"insert_cookie\"\ncookie_samesite = \"None\""), "pool.app.sticky.cookie_samesite: \"None\" needs cookie_secure = true"),
            (file(HTTP, "", TWO, "[pool.app.sticky]\nmode = \"insert_cookie\"\ncookie_samesite = \"loose\""), "pool.app.sticky.cookie_samesite: \"loose\": expected"),
            (file(HTTP, "", TWO, "[pool.app.sticky]\nmode = \"insert_cookie\"\ncookie = \"a;b\""), "pool.app.sticky.cookie: \"a;b\" is not a valid cookie name"),
            (file(HTTP, "", TWO, "[pool.app.sticky]\nmode = \"source_ip\"\ntable_size = 0"), "pool.app.sticky.table_size: 0 is out of range"),
            (file(HTTP, "", TWO, "[pool.app.sticky]\nmode = \"sticky\""), "pool.app.sticky.mode"),
            (file(HTTP, "", TWO, "[pool.app.health]\nmethod = \"tcp\"\nuri = \"/x\""), "pool.app.health.uri: applies only to the http_head and http_get methods"),
            (file(HTTP, "", TWO, "[pool.app.health]\nmethod = \"http_head\"\nexpect_body_regex = \"x\""), "pool.app.health.expect_body_regex: applies only to method = \"http_get\""),
            (file(HTTP, "", TWO, "[pool.app.health]\nmethod = \"http_get\"\nuri = \"health\""), "pool.app.health.uri: \"health\": expected a path"),
            (file(HTTP, "", TWO, "[pool.app.health]\nmethod = \"http_get\"\nexpect_body_regex = \"(\""), "pool.app.health.expect_body_regex: \"(\":"),
            (file(HTTP, "", TWO, "[pool.app.health]\nmethod = \"http_get\"\nexpect_status = \"2xx,7xx\""), "pool.app.health.expect_status: \"7xx\""),
            (file(HTTP, "", TWO, "[pool.app.health]\nmethod = \"tcp\"\ninterval = \"1s\"\ntimeout = \"2s\""), "pool.app.health.timeout: 2s is longer than interval (1s)"),
            (file(HTTP, "", TWO, "[pool.app.health]\nmethod = \"tcp\"\nrise = 0"), "pool.app.health.rise: 0 is out of range"),
            (file(HTTP, "", TWO, "[pool.app.health]\nmethod = \"mysql\""), "pool.app.health.mysql_user: required with method = \"mysql\""),
            (file(HTTP, "", TWO, "[pool.app.health]\nmethod = \"mysql\"\nmysql_user = \"u\""), "pool.app.health.method: a pool used by an [[http]] frontend is checked with"),
            (file(MYSQL, "balance = \"hash\"\nhash_key = \"uri\"", TWO, ""), "pool.app.hash_key: a pool used by a [[mysql]] frontend can only hash source_ip"),
            (file(MYSQL, "", TWO, "[pool.app.sticky]\nmode = \"app_cookie\""), "pool.app.sticky.mode: a pool used by a [[mysql]] frontend can only stick by source_ip"),
            (file(MYSQL, "", TWO, "[pool.app.health]\nmethod = \"http_get\""), "pool.app.health.method: a pool used by a [[mysql]] frontend is checked with"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.starts_with("x.toml: "), "{e}");
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
    }

    #[test]
    fn status_lists() {
        assert_eq!(
            parse_statuses("2xx,3xx").unwrap(),
            vec![(200, 299), (300, 399)]
        );
        assert_eq!(
            parse_statuses("200, 404").unwrap(),
            vec![(200, 200), (404, 404)]
        );
        assert_eq!(parse_statuses("200-204").unwrap(), vec![(200, 204)]);
        for bad in ["", "6xx", "2x", "299-200", "abc", "99", "200,"] {
            assert!(parse_statuses(bad).is_err(), "{bad:?}");
        }
    }
}
