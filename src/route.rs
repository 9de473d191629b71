//! Request routing: which pool a parsed request goes to. A frontend's routes are tried in
//! order and the first whose every given key matches wins; no match falls back to the
//! frontend's `default_pool` (none → the caller answers 404).
//!
//! Everything here runs once per request on a shard, so it is pure and allocation-free: it
//! reads the request through [`RequestView`], a set of slices into the read buffer, and the
//! patterns compiled at config time ([`HostPattern`], [`Glob`], `regex::bytes::Regex`).

use std::sync::Arc;

use crate::config::{CacheConf, Glob, HostPattern, HttpFrontend, Route, RouteTarget, StaticConf};
use crate::proto::http::{HeaderSpan, Span};

/// The parts of a request head routing looks at, borrowed from the read buffer.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// The read buffer the header spans index.
    pub buf: &'a [u8],
    /// Host header value or absolute-form authority; may carry `:port`.
    pub host: Option<&'a [u8]>,
    /// Path without `?query`.
    pub path: &'a [u8],
    /// Origin-form target: path plus `?query` (what `url_regex` sees).
    pub target: &'a [u8],
    /// Header name/value spans into `buf`.
    pub headers: &'a [HeaderSpan],
}

impl<'a> RequestView<'a> {
    /// A span of `buf`, or nothing if the span does not fit: routing must not panic even if
    /// handed spans from another buffer.
    fn slice(&self, span: Span) -> &'a [u8] {
        self.buf
            .get(span.start as usize..span.end as usize)
            .unwrap_or(&[])
    }

    /// Values of every header field named `name` (given lower-case), in order.
    pub(crate) fn header_values<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'a [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| self.slice(h.name).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |h| self.slice(h.value))
    }

    /// Every `name=value` pair of the `Cookie` fields, trimmed, in order.
    pub(crate) fn cookies(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        self.header_values("cookie")
            .flat_map(|v| v.split(|&b| b == b';'))
            .filter_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = memchr::memchr(b'=', pair)?;
                Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
            })
    }
}

impl HostPattern {
    /// Parse `example.com` or `*.example.com`. Case and a trailing dot are normalised away;
    /// IP literals (`10.0.0.1`, `[::1]`) are exact patterns. A port is refused because
    /// matching ignores it and a pattern that seems to select on it would mislead.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let t = s.trim();
        let t = t.strip_suffix('.').unwrap_or(t).to_ascii_lowercase();
        if t.is_empty() {
            return Err(format!("{s:?} is empty; remove the key to match any host"));
        }
        if t == "*" || t == "*." {
            return Err(format!(
                "{s:?} matches every host; remove the key to match any host"
            ));
        }
        if let Some(inner) = t.strip_prefix('[') {
            let ok = inner
                .strip_suffix(']')
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
            return if ok {
                Ok(HostPattern::Exact(t))
            } else {
                Err(format!(
                    "{s:?} is not a bracketed IPv6 address such as \"[::1]\""
                ))
            };
        }
        let (wild, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, t.as_str()),
        };
        if name.contains(':') {
            return Err(format!(
                "{s:?} has a port; ports are ignored when matching, write the host alone"
            ));
        }
        if name.contains('*') {
            return Err(format!(
                "{s:?}: '*' is allowed only as a whole first label, as in \"*.example.com\""
            ));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !name.split('.').all(label_ok) {
            return Err(format!(
                "{s:?} is not a host name (letters, digits, '-', '_' in dot-separated labels)"
            ));
        }
        Ok(if wild {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Exact(t)
        })
    }

    /// Does a Host value (or absolute-form authority) match? The port, a trailing dot and
    /// case are ignored; `*.example.com` needs at least one label before `.example.com`.
    pub fn matches(&self, host: &[u8]) -> bool {
        let host = host_name(host);
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name.as_bytes()),
            HostPattern::Suffix(suffix) => {
                let suffix = suffix.as_bytes();
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && host[0] != b'.'
            }
        }
    }
}

/// The name part of a Host value: without `:port` (`[v6]:port` keeps its brackets) and
/// without a trailing dot.
fn host_name(host: &[u8]) -> &[u8] {
    let name = if host.first() == Some(&b'[') {
        match memchr::memchr(b']', host) {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match memchr::memchr(b':', host) {
            Some(colon) => &host[..colon],
            None => host,
        }
    };
    name.strip_suffix(b".").unwrap_or(name)
}

impl Glob {
    /// `*` matches any run of bytes (including none), everything else itself, case-sensitively.
    /// Greedy with one backtrack point (the last `*`), so the cost is O(len(value) × stars) at
    /// worst rather than exponential.
    pub fn matches(&self, value: &[u8]) -> bool {
        let pat = self.0.as_bytes();
        let (mut p, mut v) = (0, 0);
        // After the last '*' seen: where the pattern resumes, and where in the value that
        // star's run currently ends.
        let mut star: Option<(usize, usize)> = None;
        while v < value.len() {
            if p < pat.len() && pat[p] == b'*' {
                star = Some((p + 1, v));
                p += 1;
            } else if p < pat.len() && pat[p] == value[v] {
                p += 1;
                v += 1;
            } else if let Some((sp, sv)) = star {
                // Let the last star swallow one more byte and retry from there.
                p = sp;
                v = sv + 1;
                star = Some((sp, sv + 1));
            } else {
                return false;
            }
        }
        pat[p..].iter().all(|&b| b == b'*')
    }
}

impl Route {
    /// A route with no match key takes every request (allowed only as the last route).
    pub fn matches_all(&self) -> bool {
        self.host.is_empty()
            && self.path_prefix.is_none()
            && self.file_type.is_empty()
            && self.url_regex.is_none()
            && self.header.is_empty()
            && self.cookie.is_empty()
    }

    /// The pool this route proxies to, if it proxies.
    pub fn pool(&self) -> Option<usize> {
        match &self.target {
            RouteTarget::Pool { pool, .. } => Some(*pool),
            RouteTarget::Static(_) => None,
        }
    }

    /// Every key the route gives must match; a key given as a list matches if any entry does.
    pub fn matches(&self, req: &RequestView) -> bool {
        if !self.host.is_empty() {
            match req.host {
                Some(h) if self.host.iter().any(|p| p.matches(h)) => {}
                _ => return false,
            }
        }
        if let Some(prefix) = &self.path_prefix {
            if !req.path.starts_with(prefix.as_bytes()) {
                return false;
            }
        }
        if !self.file_type.is_empty() {
            match extension(req.path) {
                Some(ext)
                    if self
                        .file_type
                        .iter()
                        .any(|t| ext.eq_ignore_ascii_case(t.as_bytes())) => {}
                _ => return false,
            }
        }
        if let Some(re) = &self.url_regex {
            if !re.is_match(req.target) {
                return false;
            }
        }
        for (name, glob) in &self.header {
            if !req.header_values(name).any(|v| glob.matches(v)) {
                return false;
            }
        }
        for (name, glob) in &self.cookie {
            let found = req
                .cookies()
                .any(|(n, v)| n == name.as_bytes() && glob.matches(v));
            if !found {
                return false;
            }
        }
        true
    }
}

/// The extension of the path's last segment (after its last '.'), if it has a non-empty one.
fn extension(path: &[u8]) -> Option<&[u8]> {
    let segment = match memchr::memrchr(b'/', path) {
        Some(slash) => &path[slash + 1..],
        None => path,
    };
    let dot = memchr::memrchr(b'.', segment)?;
    let ext = &segment[dot + 1..];
    (!ext.is_empty()).then_some(ext)
}

/// What serves a request.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// A pool (index into `Config::pools`), with the route's own cache if it has one.
    Pool {
        pool: usize,
        cache: Option<&'a Arc<CacheConf>>,
    },
    Static(&'a Arc<StaticConf>),
}

/// What serves a request: the first matching route's target, else the frontend's default
/// pool; `None` means nothing does (answer 404).
pub fn select<'a>(fe: &'a HttpFrontend, req: &RequestView) -> Option<Target<'a>> {
    match fe.routes.iter().find(|r| r.matches(req)) {
        Some(r) => Some(match &r.target {
            RouteTarget::Pool { pool, cache } => Target::Pool {
                pool: *pool,
                cache: cache.as_ref(),
            },
            RouteTarget::Static(s) => Target::Static(s),
        }),
        None => fe
            .default_pool
            .map(|pool| Target::Pool { pool, cache: None }),
    }
}

/// The pool for a request, when a pool serves it (see [`select`]).
#[cfg(test)]
pub fn select_pool(fe: &HttpFrontend, req: &RequestView) -> Option<usize> {
    match select(fe, req)? {
        Target::Pool { pool, .. } => Some(pool),
        Target::Static(_) => None,
    }
}

/// Whether this frontend answers for `host` in an absolute-form target: it is one of its
/// `server_names` or a host some route selects on. Anything else is refused, so shardgate is
/// never an open forward proxy.
pub fn serves_host(fe: &HttpFrontend, host: &[u8]) -> bool {
    fe.server_names
        .iter()
        .chain(fe.routes.iter().flat_map(|r| &r.host))
        .any(|p| p.matches(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_str;

    /// A request head written as text, with header spans computed the way the parser gives
    /// them (name as sent, value trimmed).
    struct Req {
        buf: Vec<u8>,
        headers: Vec<HeaderSpan>,
    }

    impl Req {
        fn new(headers: &[(&str, &str)]) -> Req {
            let mut buf = Vec::new();
            let mut spans = Vec::new();
            for (n, v) in headers {
                let ns = buf.len() as u32;
                buf.extend_from_slice(n.as_bytes());
                let ne = buf.len() as u32;
                buf.extend_from_slice(b": ");
                let vs = buf.len() as u32;
                buf.extend_from_slice(v.as_bytes());
                let ve = buf.len() as u32;
                buf.extend_from_slice(b"\r\n");
                spans.push(HeaderSpan {
                    name: Span { start: ns, end: ne },
                    value: Span { start: vs, end: ve },
                });
            }
            Req {
                buf,
                headers: spans,
            }
        }

        fn view<'a>(&'a self, host: Option<&'a str>, target: &'a str) -> RequestView<'a> {
            let path = target.split('?').next().unwrap_or("");
            RequestView {
                buf: &self.buf,
                host: host.map(str::as_bytes),
                path: path.as_bytes(),
                target: target.as_bytes(),
                headers: &self.headers,
            }
        }
    }

    #[test]
    fn host_pattern_parse() {
        use HostPattern::*;
        for (text, want) in [
            ("example.com", Exact("example.com".into())),
            ("Example.COM.", Exact("example.com".into())),
            ("*.Example.com", Suffix(".example.com".into())),
            ("10.0.0.1", Exact("10.0.0.1".into())),
            ("[::1]", Exact("[::1]".into())),
            ("localhost", Exact("localhost".into())),
            ("my_host-1.lan", Exact("my_host-1.lan".into())),
        ] {
            assert_eq!(HostPattern::parse(text), Ok(want), "{text}");
        }
        for (text, needle) in [
            ("", "is empty"),
            (".", "is empty"),
            ("*", "matches every host"),
            ("*.", "matches every host"),
            ("example.com:80", "has a port"),
            ("*example.com", "'*' is allowed only"),
            ("a.*.com", "'*' is allowed only"),
            ("**.example.com", "'*' is allowed only"),
            ("a..com", "is not a host name"),
            (".example.com", "is not a host name"),
            ("ex ample.com", "is not a host name"),
            ("[::1", "bracketed IPv6"),
            ("[nothex]", "bracketed IPv6"),
        ] {
            let e = HostPattern::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn host_pattern_matches() {
        let exact = HostPattern::parse("example.com").unwrap();
        let wild = HostPattern::parse("*.example.com").unwrap();
        let v6 = HostPattern::parse("[::1]").unwrap();
        let v4 = HostPattern::parse("127.0.0.1").unwrap();
        let table: &[(&HostPattern, &str, bool)] = &[
            (&exact, "example.com", true),
            (&exact, "EXAMPLE.com", true),
            (&exact, "example.com:8080", true),
            (&exact, "example.com.", true),
            (&exact, "example.com.:80", true),
            (&exact, "example.com:", true),
            (&exact, "www.example.com", false),
            (&exact, "example.co", false),
            (&exact, "example.com.evil", false),
            (&exact, "", false),
            (&wild, "a.example.com", true),
            (&wild, "A.B.Example.Com:443", true),
            (&wild, "example.com", false),
            (&wild, ".example.com", false),
            (&wild, "aexample.com", false),
            (&wild, "a.example.com.evil", false),
            (&v6, "[::1]:8080", true),
            (&v6, "[::1]", true),
            (&v6, "[::2]:8080", false),
            (&v6, "[::1", false),
            (&v4, "127.0.0.1:80", true),
            (&v4, "127.0.0.10", false),
        ];
        for (pat, host, want) in table {
            assert_eq!(pat.matches(host.as_bytes()), *want, "{pat:?} vs {host:?}");
        }
    }

    #[test]
    fn glob_matches() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "x", false),
            ("gold", "gold", true),
            ("gold", "Gold", false),
            ("gold*", "gold", true),
            ("gold*", "golden", true),
            ("gold*", "xgold", false),
            ("*gold", "marigold", true),
            ("*gold", "golden", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYYcZ", false),
            ("a*b*c", "acb", false),
            ("*ab*ab*", "xabyab", true),
            ("a**b", "ab", true),
            ("*.*", "file.tar.gz", true),
            ("ab*cd", "abcdcd", true),
            ("ab*cd", "abcdc", false),
        ];
        for (pat, value, want) in table {
            assert_eq!(
                Glob((*pat).into()).matches(value.as_bytes()),
                *want,
                "{pat:?} vs {value:?}"
            );
        }
        // Pathological input stays fast-ish: this would be exponential with naive recursion.
        let value = "a".repeat(10_000);
        assert!(!Glob("*a*a*a*a*a*a*b".into()).matches(value.as_bytes()));
    }

    #[test]
    fn extension_of_last_segment() {
        for (path, want) in [
            ("/a/b.pdf", Some("pdf")),
            ("/a/b.tar.GZ", Some("GZ")),
            ("/a.d/b", None),
            ("/a/b.", None),
            ("/", None),
            ("", None),
            ("/.hidden", Some("hidden")),
        ] {
            assert_eq!(
                extension(path.as_bytes()),
                want.map(str::as_bytes),
                "{path}"
            );
        }
    }

    const CONFIG: &str = r#"
[[http]]
name = "www"
listen = ["127.0.0.1:8080"]
default_pool = "app"
server_names = ["proxy.example.org"]

  [[http.route]]
  pool = "static"
  host = ["static.example.com", "*.images.example.com"]

  [[http.route]]
  pool = "docs"
  file_type = ["pdf", ".JPG"]

  [[http.route]]
  pool = "api"
  path_prefix = "/api/"
  url_regex = "^/api/v[0-9]+/"

  [[http.route]]
  pool = "gold"
  header = { "X-Tier" = "gold*", "X-Region" = "eu-*" }

  [[http.route]]
  pool = "vip"
  cookie = { "VIP" = "y*" }

  [[http.route]]
  pool = "search"
  url_regex = "[?&]q="

[[http]]
name = "bare"
listen = ["127.0.0.1:8081"]
  [[http.route]]
  pool = "api"
  path_prefix = "/only"

[pool.app]
servers = [{ name = "s", addr = "127.0.0.1:9000" }]
[pool.static]
servers = [{ name = "s", addr = "127.0.0.1:9001" }]
[pool.docs]
servers = [{ name = "s", addr = "127.0.0.1:9002" }]
[pool.api]
servers = [{ name = "s", addr = "127.0.0.1:9003" }]
[pool.gold]
servers = [{ name = "s", addr = "127.0.0.1:9004" }]
[pool.vip]
servers = [{ name = "s", addr = "127.0.0.1:9005" }]
[pool.search]
servers = [{ name = "s", addr = "127.0.0.1:9006" }]
"#;

    #[test]
    fn select_pool_by_each_key() {
        let c = from_str(CONFIG, "<inline>").unwrap();
        let www = &c.http[0];
        let name = |i: Option<usize>| i.map(|i| c.pools[i].name.as_str());
        let plain = Req::new(&[]);
        let gold = Req::new(&[("x-tier", "golden"), ("X-REGION", "eu-west")]);
        let gold_us = Req::new(&[("X-Tier", "gold"), ("X-Region", "us-east")]);
        let gold_twice = Req::new(&[
            ("X-Region", "us"),
            ("X-Tier", "silver"),
            ("X-Region", "eu-1"),
            ("X-Tier", "gold"),
        ]);
        let vip = Req::new(&[("Cookie", "a=1; VIP=yes; b=2")]);
        let vip_second_header = Req::new(&[("Cookie", "a=1"), ("cookie", "b=2;VIP=y")]);
        let vip_no = Req::new(&[("Cookie", "vip=yes; VIP=no; xVIP=yes")]);
        let vip_in_value = Req::new(&[("Cookie", "a=VIP=yes")]);

        let table: &[(&Req, Option<&str>, &str, Option<&str>)] = &[
            // host, exact and wildcard, with ports and case
            (&plain, Some("static.example.com"), "/", Some("static")),
            (
                &plain,
                Some("STATIC.example.com:8080"),
                "/x.pdf",
                Some("static"),
            ),
            (&plain, Some("a.b.images.example.com"), "/", Some("static")),
            (&plain, Some("images.example.com"), "/", Some("app")),
            (&plain, None, "/", Some("app")),
            // file type: last segment only, case-insensitive, query not part of the path
            (&plain, Some("www.example.com"), "/doc/a.PDF", Some("docs")),
            (
                &plain,
                Some("www.example.com"),
                "/img/a.jpg?size=2",
                Some("docs"),
            ),
            (&plain, Some("www.example.com"), "/a.pdf/b", Some("app")),
            (&plain, Some("www.example.com"), "/pdf", Some("app")),
            // path prefix AND regex: both must match
            (&plain, None, "/api/v2/users", Some("api")),
            (&plain, None, "/api/users", Some("app")),
            (&plain, None, "/apiv2/", Some("app")),
            // header globs: every header key must match, any field of that name may
            (&gold, None, "/", Some("gold")),
            (&gold_us, None, "/", Some("app")),
            (&gold_twice, None, "/", Some("gold")),
            // cookies: exact name, any Cookie header
            (&vip, None, "/", Some("vip")),
            (&vip_second_header, None, "/", Some("vip")),
            (&vip_no, None, "/", Some("app")),
            (&vip_in_value, None, "/", Some("app")),
            // url_regex sees the query
            (&plain, None, "/find?x=1&q=rust", Some("search")),
            (&plain, None, "/find/q=rust", Some("app")),
            // first match wins: host route before file type
            (&plain, Some("static.example.com"), "/a.pdf", Some("static")),
        ];
        for (req, host, target, want) in table {
            let got = name(select_pool(www, &req.view(*host, target)));
            assert_eq!(
                got,
                *want,
                "host {host:?} target {target:?} headers {:?}",
                String::from_utf8_lossy(&req.buf)
            );
        }

        // No default pool and no match → None (the caller answers 404).
        let bare = &c.http[1];
        assert_eq!(
            name(select_pool(bare, &plain.view(None, "/only/x"))),
            Some("api")
        );
        assert_eq!(select_pool(bare, &plain.view(None, "/other")), None);
    }

    #[test]
    fn serves_host_for_absolute_form() {
        let c = from_str(CONFIG, "<inline>").unwrap();
        let www = &c.http[0];
        for (host, want) in [
            ("proxy.example.org", true),
            ("PROXY.example.org:80", true),
            ("static.example.com", true),
            ("x.images.example.com:443", true),
            ("evil.example.net", false),
            ("example.org", false),
            ("", false),
        ] {
            assert_eq!(serves_host(www, host.as_bytes()), want, "{host}");
        }
        assert!(!serves_host(&c.http[1], b"anything.example"));
    }

    #[test]
    fn bad_spans_do_not_panic() {
        let c = from_str(CONFIG, "<inline>").unwrap();
        let headers = [HeaderSpan {
            name: Span { start: 0, end: 500 },
            value: Span { start: 7, end: 3 },
        }];
        let req = RequestView {
            buf: b"short",
            host: None,
            path: b"/",
            target: b"/",
            headers: &headers,
        };
        assert_eq!(select_pool(&c.http[0], &req), c.http[0].default_pool);
    }
}
