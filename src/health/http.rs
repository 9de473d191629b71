//! `method = "http_head"` and `"http_get"` (URLSW `http_head` / `http_get`): one request per
//! check on a fresh connection, then the status must be in `expect_status` and, for GET,
//! `expect_body_regex` must match somewhere in the response head or the first 64 KiB of body
//! (URLSW `healthcheck_regexp`).
//!
//! The request line follows the configured `uri`:
//! - relative (`/health`): `GET /health HTTP/1.0` with `User-Agent` and no Host, as URLSW
//!   sends it; HTTP/1.0 means the server closes after answering.
//! - absolute (`http://www.example.com/health`): `GET /health HTTP/1.1` with
//!   `Host: www.example.com` and `Connection: close`, for servers that route by host.
//!
//! The whole check (connect, send, read) must finish within `timeout`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use regex::bytes::Regex;
use rustls::pki_types::ServerName;

use super::Outcome;
use crate::config::{Health, HealthMethod};
use crate::proto::http::parse::parse_response;
use crate::proto::http::{Framing, Method, Status};
use crate::rt;

/// Most body bytes read and searched by `expect_body_regex`.
pub(super) const MAX_BODY: usize = 64 * 1024;
/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;

pub(super) struct Probe {
    /// The pool's TLS: the check speaks HTTPS as requests do.
    tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        Option<ServerName<'static>>,
    )>,
    request: Vec<u8>,
    method: Method,
    expect: Vec<(u16, u16)>,
    regex: Option<Regex>,
}

impl Probe {
    pub(super) fn new(h: &Health) -> Probe {
        let method = if h.method == HealthMethod::HttpHead {
            Method::Head
        } else {
            Method::Get
        };
        Probe {
            tls: None,
            request: request(method, &h.uri, &h.user_agent),
            method,
            expect: h.expect_status.clone(),
            regex: h.expect_body_regex.clone(),
        }
    }

    /// Check over TLS with the pool's settings (its own session cache: the checker's thread).
    pub(super) fn with_tls(mut self, tls: Option<&crate::tls::ClientTls>) -> Probe {
        self.tls = tls.map(|t| (t.for_shard(), t.sni.clone()));
        self
    }

    pub(super) async fn check(&self, addr: SocketAddr, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let tcp = match super::connect(addr, timeout).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        let mut stream = match &self.tls {
            None => rt::Socket::Tcp(tcp),
            Some((config, sni)) => {
                // Without `sni`, the server's address is the name verified (as requests do).
                let name = sni
                    .clone()
                    .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
                let left = deadline.saturating_duration_since(Instant::now());
                match rt::timeout(left, rt::TlsStream::connect(tcp, name, config.clone())).await {
                    Some(Ok(s)) => rt::Socket::Tls(Box::new(s)),
                    Some(Err(e)) => return Outcome::Fail(format!("TLS handshake: {e}")),
                    None => return Outcome::Fail(format!("timeout after {timeout:?}")),
                }
            }
        };
        let timed_out = || Outcome::Fail(format!("timeout after {timeout:?}"));
        let left = deadline.saturating_duration_since(Instant::now());
        let (res, _) = rt::write_all(&mut stream, self.request.clone(), left).await;
        if let Err(e) = res {
            if e.kind() == std::io::ErrorKind::TimedOut {
                return timed_out();
            }
            return Outcome::Fail(format!("send: {e}"));
        }
        let mut buf = Vec::with_capacity(4096);
        loop {
            match self.progress(&buf) {
                Err(o) => return o,
                Ok(Need::Done) => return self.judge(&buf),
                Ok(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return timed_out();
            }
            let (r, b) = rt::read_into(&mut stream, buf, 4096, left).await;
            buf = b;
            match r {
                rt::Read::Data => {}
                rt::Read::Eof => {
                    return match self.progress(&buf) {
                        Err(o) => o,
                        Ok(Need::Head) => Outcome::Fail(if buf.is_empty() {
                            "closed without a response".into()
                        } else {
                            "closed in the middle of the response head".into()
                        }),
                        Ok(_) => self.judge(&buf),
                    };
                }
                rt::Read::TimedOut | rt::Read::Drained | rt::Read::Woken => return timed_out(),
                rt::Read::Err(e) => return Outcome::Fail(format!("read: {e}")),
            }
        }
    }

    /// How far the response in `buf` is: the head still partial, the body still arriving, or
    /// enough read to judge.
    fn progress(&self, buf: &[u8]) -> Result<Need, Outcome> {
        let head = match parse_response(buf, self.method, MAX_HEAD, MAX_HEADERS, Vec::new()) {
            Ok(Status::Partial) => {
                if buf.len() >= MAX_HEAD {
                    return Err(Outcome::Fail("response head too large".into()));
                }
                return Ok(Need::Head);
            }
            Ok(Status::Complete(h)) => h,
            Err(e) => return Err(Outcome::Fail(format!("bad response: {e:?}"))),
        };
        let body = buf.len() - head.head_len;
        let done = match head.framing {
            Framing::None => true,
            Framing::Length(n) => body as u64 >= n || body >= MAX_BODY,
            Framing::Chunked => body >= MAX_BODY || buf.ends_with(b"\r\n0\r\n\r\n"),
            Framing::UntilClose => body >= MAX_BODY,
        };
        Ok(if done { Need::Done } else { Need::Body })
    }

    /// The verdict on a response read far enough (`buf` holds a complete head).
    fn judge(&self, buf: &[u8]) -> Outcome {
        let Ok(Status::Complete(head)) =
            parse_response(buf, self.method, MAX_HEAD, MAX_HEADERS, Vec::new())
        else {
            return Outcome::Fail("bad response".into());
        };
        let status = head.status;
        if !self.expect.iter().any(|&(a, b)| (a..=b).contains(&status)) {
            return Outcome::Fail(format!(
                "status {status} not in {}",
                ranges_text(&self.expect)
            ));
        }
        if let Some(re) = &self.regex {
            let end = buf.len().min(head.head_len + MAX_BODY);
            if !re.is_match(&buf[..end]) {
                return Outcome::Fail(format!("status {status}, body did not match /{re}/"));
            }
        }
        Outcome::Pass(format!("status {status}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Head,
    Body,
    Done,
}

/// The request bytes for `uri` (see the module head for the two forms).
fn request(method: Method, uri: &str, user_agent: &str) -> Vec<u8> {
    let verb = if method == Method::Head {
        "HEAD"
    } else {
        "GET"
    };
    let text = match uri.strip_prefix("http://") {
        Some(rest) => {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let path = if path.is_empty() { "/" } else { path };
            format!("{verb} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nConnection: close\r\n\r\n")
        }
        None => format!("{verb} {uri} HTTP/1.0\r\nUser-Agent: {user_agent}\r\n\r\n"),
    };
    text.into_bytes()
}

/// `[(200, 299), (404, 404), (500, 503)]` → `"2xx,404,500-503"`.
fn ranges_text(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else if a % 100 == 0 && b == a + 99 {
                format!("{}xx", a / 100)
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tests::test_health;

    fn probe(method: HealthMethod, regex: Option<&str>) -> Probe {
        let mut h = test_health(method);
        h.expect_body_regex = regex.map(|r| Regex::new(r).unwrap());
        Probe::new(&h)
    }

    #[test]
    fn relative_uri_is_http10_absolute_is_http11_with_host() {
        assert_eq!(
            request(Method::Head, "/health", "ua"),
            b"HEAD /health HTTP/1.0\r\nUser-Agent: ua\r\n\r\n"
        );
        assert_eq!(
            request(Method::Get, "http://www.example.com:8080/a?b", "ua"),
            b"GET /a?b HTTP/1.1\r\nHost: www.example.com:8080\r\nUser-Agent: ua\r\nConnection: close\r\n\r\n"
        );
        assert!(
            request(Method::Get, "http://h", "ua").starts_with(b"GET / HTTP/1.1\r\nHost: h\r\n")
        );
    }

    #[test]
    fn status_ranges_read_back_as_configured() {
        assert_eq!(
            ranges_text(&[(200, 299), (404, 404), (500, 503)]),
            "2xx,404,500-503"
        );
    }

    #[test]
    fn judging_responses() {
        let get = probe(HealthMethod::HttpGet, Some("OK"));
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK";
        assert_eq!(get.progress(ok).unwrap(), Need::Done);
        assert_eq!(get.judge(ok), Outcome::Pass("status 200".into()));
        let partial = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nO";
        assert_eq!(get.progress(partial).unwrap(), Need::Body);
        assert_eq!(get.progress(b"HTTP/1.1 200 OK\r\n").unwrap(), Need::Head);
        assert_eq!(
            get.judge(b"HTTP/1.0 500 Oops\r\n\r\nOK"),
            Outcome::Fail("status 500 not in 2xx,3xx".into())
        );
        assert_eq!(
            get.judge(b"HTTP/1.0 200 Fine\r\n\r\nKO"),
            Outcome::Fail("status 200, body did not match /OK/".into())
        );
        // The regex may match a header too.
        assert_eq!(
            get.judge(b"HTTP/1.0 200 Fine\r\nX-State: OK\r\n\r\n"),
            Outcome::Pass("status 200".into())
        );
        let head = probe(HealthMethod::HttpHead, None);
        let r = b"HTTP/1.1 301 Moved\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(head.progress(r).unwrap(), Need::Done, "HEAD has no body");
        assert_eq!(head.judge(r), Outcome::Pass("status 301".into()));
        assert!(matches!(
            head.progress(b"garbage\r\n\r\n"),
            Err(Outcome::Fail(_))
        ));
    }

    #[test]
    fn responses_fed_one_byte_at_a_time() {
        let get = probe(HealthMethod::HttpGet, Some("fine"));
        let cases: [(&[u8], &str); 3] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine",
                "status 200",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfine\r\n0\r\n\r\n",
                "status 200",
            ),
            (
                b"HTTP/1.0 204 No Content\r\nX-Note: fine\r\n\r\n",
                "status 204",
            ),
        ];
        for (full, want) in cases {
            for cut in 0..full.len() {
                assert_ne!(get.progress(&full[..cut]).ok(), Some(Need::Done), "{cut}");
            }
            assert_eq!(get.progress(full).ok(), Some(Need::Done));
            assert_eq!(get.judge(full), Outcome::Pass(want.into()));
        }
    }

    #[test]
    fn body_is_read_up_to_the_limit_only() {
        let get = probe(HealthMethod::HttpGet, Some("needle"));
        let mut r = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
        let head_len = r.len();
        r.resize(head_len + MAX_BODY, b'x');
        assert_eq!(get.progress(&r).unwrap(), Need::Done);
        r.extend_from_slice(b"needle");
        assert!(matches!(get.judge(&r), Outcome::Fail(_)));
    }
}
