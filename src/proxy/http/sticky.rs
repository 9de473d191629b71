//! Sticky sessions as HTTP carries them: finding a route in a request, taking our cookie out of
//! it before it goes upstream, and adding our cookie to a response. The decisions (which server
//! may take a sticky request, counters, the client-IP table) are in `balance::sticky`.
//!
//! - `app_cookie` (mod_proxy_balancer `stickysession=JSESSIONID|jsessionid`): the application
//!   sets a session id whose part after the last `.` is a server's `route` (Tomcat's
//!   `jvmRoute`: `JSESSIONID=ABC123.node1`). The id is read from the URL first (a
//!   `;jsessionid=` path parameter, then a `jsessionid=` query parameter), then from the cookie,
//!   as Apache does. Nothing is added or removed.
//! - `insert_cookie` (HAProxy `cookie NAME insert indirect nocache`): our cookie's value is
//!   the route. A request that names a server that takes it gets no new cookie; otherwise the
//!   response carries `Set-Cookie` and `Cache-Control: no-cache="set-cookie"` (a shared cache
//!   may keep the page, never our cookie: RFC 9111 §5.2.2.4). Our cookie never reaches a server.
//! - `source_ip`: the client address, looked up in the process-wide table.
//!
//! Parsers here are pure functions of bytes the request parser already validated, and never
//! panic on any input (tested with random bytes).

use std::net::IpAddr;

use crate::balance::sticky::{Settled, StickyShared, Ticket};
use crate::balance::{PoolShared, ServerShared};
use crate::config::{Sticky, StickyMode};
use crate::proto::http::cookie::{cookie_value, route_of, sl, trim_ows, url_param};
use crate::proto::http::{RequestHead, ResponseHead};

/// The sticky state of one exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct StickyReq {
    pub ticket: Ticket,
    /// insert_cookie: the server whose route the response's Set-Cookie carries.
    pub insert: Option<usize>,
}

/// The route a request names, by the pool's sticky mode (`None` for `source_ip`).
pub fn request_route<'a>(conf: &Sticky, buf: &'a [u8], head: &RequestHead) -> Option<&'a [u8]> {
    match conf.mode {
        StickyMode::AppCookie => {
            let from_url = conf
                .url_param
                .as_deref()
                .and_then(|p| url_param(sl(buf, head.origin), p.as_bytes()));
            from_url
                .or_else(|| cookie_value(buf, &head.headers, conf.cookie.as_bytes()))
                .and_then(route_of)
        }
        StickyMode::InsertCookie => cookie_value(buf, &head.headers, conf.cookie.as_bytes()),
        StickyMode::SourceIp => None,
    }
}

/// The sticky ticket of a request to `pool` (default when the pool has no sticky section).
pub fn resolve(pool: &PoolShared, buf: &[u8], head: &RequestHead, client: IpAddr) -> StickyReq {
    let Some(st) = &pool.sticky else {
        return StickyReq::default();
    };
    let now_ms = crate::rt::now_ms();
    let ticket = match st.conf.mode {
        StickyMode::SourceIp => st.resolve_client(pool, client, now_ms),
        _ => {
            let named = request_route(&st.conf, buf, head).and_then(|r| pool.route_index(r));
            StickyShared::resolve_named(pool, named, now_ms)
        }
    };
    StickyReq {
        ticket,
        insert: None,
    }
}

/// `chosen` got the request: count the outcome, remember the client (source_ip) and say
/// whether the response gets our cookie (insert_cookie).
pub fn settle(pool: &PoolShared, shard: usize, req: &mut StickyReq, chosen: &ServerShared) {
    let Some(st) = &pool.sticky else { return };
    let Some(i) = pool.servers.iter().position(|s| std::ptr::eq(&**s, chosen)) else {
        return;
    };
    if st.settle(shard, &req.ticket, i) == Settled::Fallback {
        // mod_proxy_balancer's "route changed": which route was asked, which server took it.
        let asked = req.ticket.named.and_then(|n| pool.servers.get(n));
        tracing::debug!(pool = %pool.name, asked = asked.map_or("", |s| s.route.as_str()), server = %chosen.name, "sticky fallback: re-stuck");
    }
    if st.remember(&req.ticket, i, crate::rt::now_ms()) {
        req.insert = Some(i);
    }
}

/// Add our cookie naming `server` to the response head in `out` (see [`add_set_cookie`]).
pub fn insert(
    pool: &PoolShared,
    shard: usize,
    server: usize,
    resp_buf: &[u8],
    resp: &ResponseHead,
    out: &mut Vec<u8>,
) {
    let (Some(st), Some(s)) = (&pool.sticky, pool.servers.get(server)) else {
        return;
    };
    add_set_cookie(out, &st.conf, &s.route, resp_buf, resp);
    st.counts(shard).inserted.add(1);
}

/// The name of the cookie to take out of requests to `pool` (insert_cookie only).
pub fn strip_name(pool: &PoolShared) -> Option<&[u8]> {
    pool.sticky
        .as_ref()
        .filter(|s| s.conf.mode == StickyMode::InsertCookie)
        .map(|s| s.conf.cookie.as_bytes())
}

/// Append our `Set-Cookie` (and, unless the response is private or not stored anyway,
/// `Cache-Control: no-cache="set-cookie"`) to a response head written in `out` (which ends
/// with the blank line).
pub fn add_set_cookie(
    out: &mut Vec<u8>,
    conf: &Sticky,
    route: &str,
    resp_buf: &[u8],
    resp: &ResponseHead,
) {
    if !out.ends_with(b"\r\n\r\n") {
        return;
    }
    out.truncate(out.len() - 2);
    out.extend_from_slice(b"Set-Cookie: ");
    out.extend_from_slice(conf.cookie.as_bytes());
    out.push(b'=');
    out.extend_from_slice(route.as_bytes());
    out.extend_from_slice(b"; Path=");
    out.extend_from_slice(conf.cookie_path.as_bytes());
    if let Some(age) = conf.cookie_max_age {
        out.extend_from_slice(format!("; Max-Age={age}").as_bytes());
    }
    if conf.cookie_secure {
        out.extend_from_slice(b"; Secure");
    }
    if conf.cookie_httponly {
        out.extend_from_slice(b"; HttpOnly");
    }
    if let Some(s) = &conf.cookie_samesite {
        out.extend_from_slice(b"; SameSite=");
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let private = resp.headers.iter().any(|h| {
        sl(resp_buf, h.name).eq_ignore_ascii_case(b"cache-control")
            && sl(resp_buf, h.value)
                .split(|&b| b == b',')
                .map(|d| trim_ows(d).split(|&b| b == b'=').next().unwrap_or_default())
                .any(|d| d.eq_ignore_ascii_case(b"private") || d.eq_ignore_ascii_case(b"no-store"))
    });
    if !private {
        out.extend_from_slice(b"Cache-Control: no-cache=\"set-cookie\"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::cookie::{cookie_pair, without_cookie};
    use crate::proto::http::parse::{parse_request, parse_response, Limits};
    use crate::proto::http::{Method, Status};
    use std::time::Duration;

    fn conf(mode: StickyMode) -> Sticky {
        Sticky {
            mode,
            cookie: "JSESSIONID".into(),
            url_param: Some("jsessionid".into()),
            ttl: Duration::from_secs(60),
            table_size: 100,
            cookie_path: "/".into(),
            cookie_secure: false,
            cookie_httponly: true,
            cookie_samesite: None,
            cookie_max_age: None,
        }
    }

    fn limits() -> Limits {
        Limits {
            max_request_line: 8192,
            max_header_bytes: 65536,
            max_headers: 100,
            max_body: Some(1 << 20),
        }
    }

    fn head(raw: &[u8]) -> RequestHead {
        match parse_request(raw, &limits(), Vec::new()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    fn route(c: &Sticky, raw: &str) -> Option<String> {
        let raw = raw.as_bytes();
        let h = head(raw);
        request_route(c, raw, &h).map(|r| String::from_utf8_lossy(r).into_owned())
    }

    #[test]
    fn app_cookie_routes_url_first_then_cookie_after_the_last_dot() {
        let c = conf(StickyMode::AppCookie);
        let cases: &[(&str, Option<&str>)] = &[
            ("GET / HTTP/1.1\r\nHost: h\r\nCookie: JSESSIONID=ABC123.node1\r\n\r\n", Some("node1")),
            ("GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; JSESSIONID=\"x.y.n2\"; b=2\r\n\r\n", Some("n2")),
            ("GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: JSESSIONID=Q.n3\r\n\r\n", Some("n3")),
            ("GET / HTTP/1.1\r\nHost: h\r\nCookie: JSESSIONID=nodot\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nHost: h\r\nCookie: JSESSIONID=trailing.\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nHost: h\r\nCookie: jsessionid=A.n1\r\n\r\n", None),
            ("GET /x?jsessionid=ABC.url&b=1 HTTP/1.1\r\nHost: h\r\nCookie: JSESSIONID=A.ck\r\n\r\n", Some("url")),
            ("GET /x;jsessionid=ABC.path?q=1 HTTP/1.1\r\nHost: h\r\nCookie: JSESSIONID=A.ck\r\n\r\n", Some("path")),
            ("GET /a;jsessionid=P.path/b?jsessionid=Q.query HTTP/1.1\r\nHost: h\r\n\r\n", Some("path")),
            ("GET /x?a=1&jsessionid=ABC.q2#frag HTTP/1.1\r\nHost: h\r\n\r\n", Some("q2")),
            ("GET /x?xjsessionid=ABC.no HTTP/1.1\r\nHost: h\r\nCookie: JSESSIONID=A.ck\r\n\r\n", Some("ck")),
            ("GET http://h/x?jsessionid=ABC.abs HTTP/1.1\r\nHost: h\r\n\r\n", Some("abs")),
            ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", None),
        ];
        for (raw, want) in cases {
            assert_eq!(route(&c, raw).as_deref(), *want, "{raw}");
        }
    }

    #[test]
    fn insert_cookie_takes_the_whole_value_of_the_first_cookie() {
        let mut c = conf(StickyMode::InsertCookie);
        c.cookie = "SGROUTE".into();
        for (raw, want) in [
            ("GET /?SGROUTE=x HTTP/1.1\r\nHost: h\r\n\r\n", None),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nCookie: SGROUTE=r1\r\n\r\n",
                Some("r1"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nCookie: SGROUTE = r2 ; SGROUTE=r3\r\n\r\n",
                Some("r2"),
            ),
            ("GET / HTTP/1.1\r\nHost: h\r\nCookie: SGROUTE\r\n\r\n", None),
        ] {
            assert_eq!(route(&c, raw).as_deref(), want, "{raw}");
        }
    }

    /// A small deterministic generator (no dependency).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_bytes_never_panic_the_route_readers() {
        let alphabet = b"=;.?&/#\" \tabJSESSIONIDjsessionid";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let n = rng.below(40);
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    if rng.below(4) == 0 {
                        rng.next() as u8
                    } else {
                        alphabet[rng.below(alphabet.len())]
                    }
                })
                .collect();
            let _ = url_param(&bytes, b"jsessionid");
            let _ = url_param(&bytes, b"");
            let _ = route_of(&bytes);
            let _ = cookie_pair(&bytes);
            if let Some(r) = route_of(&bytes) {
                assert!(!r.contains(&b'.') && !r.is_empty());
            }
        }
    }

    #[test]
    fn our_cookie_leaves_the_head_and_the_rest_stays_in_order() {
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; SG=r1;b=2\r\nX: y\r\ncookie: SG=r2\r\nCookie: c=3\r\n\r\n";
        let h = head(raw);
        let (stripped, lines) = without_cookie(raw, &h, b"SG").unwrap();
        assert_eq!(
            String::from_utf8(lines).unwrap(),
            "Cookie: a=1; b=2\r\nCookie: c=3\r\n"
        );
        assert_eq!(stripped.headers.len(), 2, "Host and X");
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; SGX=2\r\n\r\n";
        assert!(without_cookie(raw, &head(raw), b"SG").is_none());
    }

    #[test]
    fn set_cookie_carries_the_configured_attributes() {
        let mut c = conf(StickyMode::InsertCookie);
        c.cookie = "SG".into();
        c.cookie_path = "/app".into();
        c.cookie_secure = true;
        c.cookie_samesite = Some("Strict".into());
        c.cookie_max_age = Some(3600);
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let r = match parse_response(raw, Method::Get, 4096, 64, Vec::new()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        add_set_cookie(&mut out, &c, "n1", raw, &r);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: SG=n1; Path=/app; Max-Age=3600; Secure; HttpOnly; SameSite=Strict\r\nCache-Control: no-cache=\"set-cookie\"\r\n\r\n"
        );
        let raw = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=5, Private\r\n\r\n";
        let r = match parse_response(raw, Method::Head, 4096, 64, Vec::new()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        let mut out = raw.to_vec();
        add_set_cookie(&mut out, &c, "n1", raw, &r);
        assert!(!String::from_utf8(out).unwrap().contains("no-cache"));
    }
}
