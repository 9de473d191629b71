//! `[[http]]` frontends: head and body limits, timeouts and minimum rates, server names, and
//! each `[[http.route]]` with its match keys (host, path prefix, file type, URL regex, header,
//! cookie) checked and compiled; the access log.

use std::net::SocketAddr;

use super::value::parse_size;
use super::{Builder, ConfigError};
use crate::config::file::{AccessLogFile, HttpFile, RouteFile, Scalar};
use crate::config::{AccessLog, Glob, HostPattern, HttpFrontend, Route};

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
        let access_log = match &h.access_log {
            None => None,
            Some(a) => Some(self.access_log(&k("access_log"), a)?),
        };
        Ok(HttpFrontend {
            access_log,
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
