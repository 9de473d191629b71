//! `[[http]]` frontends: head and body limits, timeouts and minimum rates, server names, and
//! each `[[http.route]]` with its match keys (host, path prefix, file type, URL regex, header,
//! cookie) checked and compiled; the access log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::value::parse_size;
use super::{Builder, ConfigError};
use crate::config::file::{
    AccessLogFile, CacheFile, HttpFile, RedirectFile, RouteFile, Scalar, StaticFile,
};
use crate::config::{
    AccessLog, CacheConf, Cidr, Glob, HostPattern, HttpFrontend, Route, RouteTarget, StaticConf,
};

/// Head limits above this would only let one client pin a lot of buffer memory.
const MAX_HEAD_LIMIT: i64 = 1 << 20;
/// Default minimum average rate of a request body and of a client reading a response, in bytes
/// per second (Apache mod_reqtimeout's `MinRate=500`, rounded to a power of two).
const DEFAULT_MIN_RATE: u64 = 512;

impl Builder<'_> {
    pub(super) fn http(
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
            let rk = format!("{key}.route[{i}]");
            let route = self.route(&rk, r, find_pool)?;
            if route.matches_all() {
                if i + 1 < h.route.len() {
                    return Err(self.err(
                        rk,
                        "route has no match key, so it takes every request and the routes after it \
                         can never match; move it last",
                    ));
                }
                if h.default_pool.is_some() {
                    return Err(self.err(
                        rk,
                        "route has no match key, so it takes every request and default_pool is \
                         never used; remove one of them",
                    ));
                }
            }
            routes.push(route);
        }
        let mut purge_from = Vec::with_capacity(h.purge_from.len());
        for (i, c) in h.purge_from.iter().enumerate() {
            purge_from
                .push(Cidr::parse(c).map_err(|m| self.err(format!("{key}.purge_from[{i}]"), m))?);
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
        let access_log = match &h.access_log {
            None => None,
            Some(a) => Some(self.access_log(&k("access_log"), a)?),
        };
        let tls = match &h.tls {
            Some(t) => Some(self.tls(key, t, &[b"http/1.1"], true)?),
            None => None,
        };
        let accept_proxy = self.accept_proxy(key, h.accept_proxy, &h.trusted_proxies)?;
        let redirect_https = match &h.redirect_https {
            None | Some(RedirectFile::On(false)) => None,
            Some(RedirectFile::On(true)) => Some(443),
            Some(RedirectFile::Port(p)) => {
                Some(self.int(&k("redirect_https"), Some(*p), 443, 1, 65535)? as u16)
            }
        };
        if redirect_https.is_some() && tls.is_some() {
            return Err(self.err(
                k("redirect_https"),
                "this frontend already speaks TLS; redirect_https belongs on the plain one",
            ));
        }
        Ok(HttpFrontend {
            tls,
            accept_proxy,
            redirect_https,
            access_log,
            purge_from,
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

    fn access_log(&self, key: &str, a: &AccessLogFile) -> Result<AccessLog, ConfigError> {
        if a.path.trim().is_empty() {
            return Err(self.err(format!("{key}.path"), "must not be empty"));
        }
        let format = crate::log::Format::parse(a.format.as_deref().unwrap_or("combined"))
            .map_err(|m| self.err(format!("{key}.format"), m))?;
        let sample = a.sample.unwrap_or(1.0);
        if !(sample > 0.0 && sample <= 1.0) {
            return Err(self.err(
                format!("{key}.sample"),
                format!("{sample} is out of range: a fraction of requests, more than 0 and at most 1 (0.1 logs one in ten)"),
            ));
        }
        Ok(AccessLog {
            path: std::sync::Arc::from(std::path::Path::new(&a.path)),
            format,
            sample,
        })
    }

    fn route(
        &self,
        key: &str,
        r: &RouteFile,
        find_pool: &dyn Fn(&str, String) -> Result<usize, ConfigError>,
    ) -> Result<Route, ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        let target = match (&r.pool, &r.static_files) {
            (Some(pool), None) => RouteTarget::Pool {
                pool: find_pool(pool, k("pool"))?,
                cache: match &r.cache {
                    Some(c) => Some(self.cache(&k("cache"), key.to_owned(), pool, c)?),
                    None => None,
                },
            },
            (None, Some(st)) => {
                if r.cache.is_some() {
                    return Err(self.err(
                        k("cache"),
                        "a static route is not cached (its files are served from memory or \
                         the page cache already); remove cache",
                    ));
                }
                RouteTarget::Static(self.static_files(&k("static"), st)?)
            }
            (Some(_), Some(_)) => {
                return Err(self.err(k("static"), "a route has either pool or static, not both"))
            }
            (None, None) => {
                return Err(self.err(
                    k("pool"),
                    "missing: a route needs pool (proxy) or static (serve files)",
                ))
            }
        };

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

        Ok(Route {
            target,
            host,
            path_prefix: r.path_prefix.clone(),
            file_type,
            url_regex,
            header,
            cookie,
        })
    }

    fn static_files(&self, key: &str, st: &StaticFile) -> Result<Arc<StaticConf>, ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        let root = PathBuf::from(&st.root);
        if !root.is_absolute() {
            return Err(self.err(k("root"), format!("{:?} must be an absolute path", st.root)));
        }
        // A root that is not there yet is allowed (the site may be deployed after the
        // config, as nginx allows): requests get 404 until it exists. A file is a mistake.
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(self.err(k("root"), format!("{:?} is not a directory", st.root))),
            Err(e) => {
                tracing::warn!(event = "static_root_missing", file = self.origin, key = %k("root"), root = %st.root, error = %e, "static root cannot be read; its requests get 404 until it can");
            }
        }
        let index = st
            .index
            .clone()
            .unwrap_or_else(|| vec!["index.html".into()]);
        for (i, name) in index.iter().enumerate() {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(self.err(
                    format!("{key}.index[{i}]"),
                    format!("{name:?} is not a file name (no '/', not empty, not . or ..)"),
                ));
            }
        }
        Ok(Arc::new(StaticConf {
            root,
            index,
            precompressed: st.precompressed.unwrap_or(true),
            file_cache_valid: self.duration_ms(
                &k("file_cache_valid"),
                st.file_cache_valid.as_ref(),
                1000,
            )?,
        }))
    }

    /// `cache = {...}` of a route or `[pool.NAME.cache]`.
    pub(super) fn cache(
        &self,
        key: &str,
        zone: String,
        pool: &str,
        c: &CacheFile,
    ) -> Result<Arc<CacheConf>, ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        let size = parse_size(&c.size).map_err(|m| self.err(k("size"), m))?;
        if size < 64 * 1024 {
            return Err(self.err(
                k("size"),
                format!("{size} bytes is too small; at least 64KiB"),
            ));
        }
        let max_object = match &c.max_object {
            Some(v) => parse_size(v).map_err(|m| self.err(k("max_object"), m))?,
            None => (8 << 20u64).min(size / 4),
        };
        if max_object == 0 || max_object > size {
            return Err(self.err(
                k("max_object"),
                format!("{max_object} must be more than 0 and at most size ({size})"),
            ));
        }
        Ok(Arc::new(CacheConf {
            zone,
            pool: pool.to_owned(),
            size,
            max_object,
            status_header: c.status_header.unwrap_or(true),
            max_waiters: self.int(&k("max_waiters"), c.max_waiters, 256, 0, 100_000)?,
        }))
    }
}

/// The regex crate's message spans several lines (pattern, caret, reason); keep one line.
pub(super) fn regex_problem(re: &str, e: &regex::Error) -> String {
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
